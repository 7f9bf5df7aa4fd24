//! SIGKILL under load, again and again: nothing acknowledged is lost, nothing applies twice.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{BIN, Server, eventually, free_loopback_addr, metric, metrics, run_bounded};
use crate::load::{Load, Sent, create_accounts, resend_all_and_reconcile, verify_acked};

const CRASHES: usize = 5;
const WORKERS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_nothing_and_applies_nothing_twice() {
    // Guards durability and exactly-once across crashes: several times, SIGKILL the server
    // while tasks send charges, restart on the same data directory, and require that every
    // acknowledged charge is still readable and replays byte for byte; at the end every key
    // ever sent is re-sent and must have moved money exactly once, balances sum to zero per
    // currency, events are dense, and `onceledger check` passes.
    let mut server = Server::start().await;
    create_accounts(&server.endpoint()).await;

    let mut sent: Vec<Sent> = Vec::new();
    for crash in 0..CRASHES {
        let load = Load::start(&server.endpoint(), &format!("crash{crash}"), WORKERS);
        // Kill at a different depth each time.
        load.wait_for_acks(30 + 40 * crash).await;
        // Far below a checkpoint's size: the acknowledged charges are in the journal, not yet
        // in a durable redb commit, so the restart must replay them.
        let journaled = metric(
            &metrics(&server.endpoint()).await,
            "onceledger_journal_bytes",
            &[],
        );
        assert!(journaled > 0.0, "charges journaled before the kill");
        server.kill_hard().await;
        sent.extend(load.finish().await);

        server.restart().await;
        let verified = verify_acked(&server.endpoint(), &sent).await;
        eprintln!(
            "crash {crash}: {} keys sent so far, {verified} acknowledged and verified",
            sent.len()
        );
    }
    let charges = resend_all_and_reconcile(&server.endpoint(), &sent)
        .await
        .charges;
    // And once more after a restart: the reconciled state is durable too.
    server.restart().await;
    verify_acked(&server.endpoint(), &sent).await;

    let summary = server.check().await;
    assert_eq!(
        summary["charges"], charges,
        "check counts the same charges: {summary}"
    );
    assert_eq!(
        summary["events"],
        charges + crate::load::all_accounts().len(),
        "check counts the same events: {summary}"
    );
    assert_eq!(
        summary["idempotency_records"],
        charges + crate::load::all_accounts().len(),
        "one idempotency record per account creation and per charge key: {summary}"
    );
}

/// How long the bench in the test below runs its load; the crash and restart happen early in it.
const BENCH_LOAD_SECS: &str = "15";
/// How long that bench may take in all (load, resolution of lost answers, read-back), debug build.
const BENCH_DEADLINE: Duration = Duration::from_secs(240);
/// How long the bench may take to get this many charges applied before the kill.
const CHARGES_BEFORE_KILL: f64 = 200.0;
const CHARGES_DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_across_a_sigkill_checks_the_money_and_passes() {
    // Guards `onceledger bench` as a crash test: the server is SIGKILLed under its load and
    // started again on the same address. The restarted process counts from zero, so the bench
    // must see the restart (process_start_time_seconds), leave the counters out, and still
    // prove from the money read back that every logical charge moved money exactly once.
    let listen = free_loopback_addr();
    let mut server = Server::start_at(listen, &[], &[]).await;
    let mut bench = Command::new(BIN);
    bench
        .args(["bench", "--json", "--seed", "7", "--connections", "4"])
        .args(["--customers", "50", "--merchants", "5"])
        .args(["--duration", BENCH_LOAD_SECS])
        .arg("--url")
        .arg(format!("http://{listen}"))
        .arg("--token-file")
        .arg(server.data_dir().join("admin.token"))
        .env_remove("ONCELEDGER_TOKEN");
    let bench = tokio::spawn(async move { run_bounded(&mut bench, BENCH_DEADLINE).await });

    let endpoint = server.endpoint();
    eventually("the bench's first charges", CHARGES_DEADLINE, || async {
        let applied = metric(
            &metrics(&endpoint).await,
            "onceledger_charges_applied_total",
            &[],
        );
        (applied >= CHARGES_BEFORE_KILL).then_some(())
    })
    .await;
    server.kill_hard().await;
    server.restart().await;

    let finished = bench.await.expect("the bench task");
    let context = format!(
        "stdout:\n{}\nstderr:\n{}\nserver log:\n{}",
        finished.stdout,
        finished.stderr,
        server.log_tail()
    );
    assert!(finished.status.success(), "bench failed\n{context}");
    let report: Value = finished
        .stdout
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| panic!("no JSON report\n{context}"));
    let check = &report["check"];
    assert_eq!(check["ok"], true, "{context}");
    assert!(
        report["server"].is_null() && check["charges_applied_delta"].is_null(),
        "the restart was seen and the counters left out\n{context}"
    );
    assert!(
        report["transport_errors"].as_u64() > Some(0),
        "the kill cut requests off mid-run\n{context}"
    );
    let logical = check["logical_charges"].as_u64().expect("logical_charges");
    let amount = report["amount"].as_u64().expect("amount");
    assert!(logical as f64 >= CHARGES_BEFORE_KILL, "{context}");
    assert_eq!(
        check["debits"].as_u64(),
        Some(logical * amount),
        "{context}"
    );
    assert_eq!(
        check["credits"].as_u64(),
        Some(logical * amount),
        "{context}"
    );
    assert_eq!(check["unresolved"], 0, "{context}");
    assert_eq!(check["anomalies"], 0, "{context}");

    // The store agrees: exactly the charges the bench saw succeed, nothing twice.
    let summary = server.check().await;
    assert_eq!(summary["charges"], logical, "{summary}\n{context}");
}

/// The two files `onceledger check` must not change, read whole.
fn store_files(data_dir: &std::path::Path) -> (Vec<u8>, Vec<u8>) {
    let read = |name: &str| std::fs::read(data_dir.join(name)).expect("store file");
    (read("onceledger.redb"), read("onceledger.journal"))
}

/// Runs the real `onceledger check` on `data_dir` and returns its JSON report; exit 0 required.
pub(crate) async fn check_command(data_dir: &std::path::Path) -> Value {
    let done = run_bounded(
        Command::new(BIN)
            .env_remove("ONCELEDGER_DATA_DIR")
            .arg("check")
            .arg("--data-dir")
            .arg(data_dir),
        crate::harness::CHECK_DEADLINE,
    )
    .await;
    assert_eq!(done.status.code(), Some(0), "check failed: {}", done.stderr);
    serde_json::from_str(done.stdout.trim()).expect("check prints its report as JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_writes_nothing_after_a_sigkill_or_a_clean_stop() {
    // Guards README's promise for `onceledger check`: it verifies a stopped node and writes
    // nothing. After SIGKILL (acknowledged charges only in the journal) it checks a recovered
    // copy and still counts every acknowledged charge; after a clean stop it reads in place.
    // Both files are byte for byte what they were, each time.
    let mut server = Server::start().await;
    create_accounts(&server.endpoint()).await;
    let load = Load::start(&server.endpoint(), "check", WORKERS);
    load.wait_for_acks(50).await;
    server.kill_hard().await;
    let acked = load
        .finish()
        .await
        .iter()
        .filter(|s| s.acked().is_some())
        .count();

    let before = store_files(server.data_dir());
    let report = check_command(server.data_dir()).await;
    assert_eq!(
        before,
        store_files(server.data_dir()),
        "check changed a file"
    );
    assert_eq!(report["checked_a_recovered_copy"], true, "{report}");
    let charges = report["charges"].as_u64().expect("charges");
    assert!(
        charges >= acked as u64,
        "{charges} charges, {acked} acknowledged"
    );

    server.restart().await;
    server.terminate().await;
    let before = store_files(server.data_dir());
    let report = check_command(server.data_dir()).await;
    assert_eq!(
        before,
        store_files(server.data_dir()),
        "check changed a file"
    );
    assert_eq!(report["checked_a_recovered_copy"], false, "{report}");
    assert_eq!(report["charges"].as_u64(), Some(charges), "{report}");
}
