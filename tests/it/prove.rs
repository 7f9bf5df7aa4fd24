//! `onceledger prove` (issue 6, second half; the lifecycle mix, issue 19) with small numbers: in
//! process through the library, where the report's numbers can be asserted one by one, and as
//! the command, for its exit status and table. All are bounded by deadlines; none asserts times.

use std::process::Command;
use std::time::Duration;

use onceledger_testkit::prove::{LifecycleCounts, LifecycleMix, ProveConfig, Report, prove};
use onceledger_testkit::proxy::FaultRates;

use crate::harness::{BIN, Finished, run_bounded};

/// How long one prove run may take in all (its own deadline is shorter, so it reports first).
const PROVE_DEADLINE: Duration = Duration::from_secs(240);
/// An authorization's second in the lifecycle runs: `expires_in` 60 is then 0.6 s. The test
/// build's fault point (`writer::set_authorization_second_ms` in process,
/// `ONCELEDGER_FAULT_AUTHORIZATION_SECOND_MS` for the command); a release build waits the minute.
const SHORT_SECOND_MS: u64 = 10;

/// An in-process run from 8 tasks and 4 customers, with twins, lost answers and resets often
/// enough that each happens in a run of a hundred operations.
fn small_run(charges: u64, lifecycle: Option<LifecycleMix>, seed: u64) -> ProveConfig {
    ProveConfig {
        charges,
        lifecycle,
        tasks: 8,
        customers: 4,
        duplicate_rate: 0.1,
        rates: FaultRates {
            lost_response: 0.15,
            reset: 0.1,
            delay: 0.0,
        },
        delay: Duration::ZERO,
        relay_crash_after: None,
        seed,
        timeout: PROVE_DEADLINE - Duration::from_secs(30),
        keep_data: false,
        progress: false,
    }
}

/// Runs `config` in process and prints its table; panics if it could not run or did not hold.
async fn prove_holds(config: &ProveConfig) -> Report {
    let report = tokio::time::timeout(PROVE_DEADLINE, prove(config))
        .await
        .expect("prove finishes within its deadline")
        .unwrap_or_else(|e| panic!("prove could not run: {e}"));
    eprintln!("{}", report.table());
    assert!(report.holds(), "{:?}", report.failures());
    report
}

/// Runs `onceledger prove` with `args` (and `env`) and asserts that it exited 0.
async fn prove_command(args: &[&str], env: &[(&str, String)]) -> Finished {
    let mut command = Command::new(BIN);
    command.arg("prove").args(args);
    command.envs(env.iter().map(|(k, v)| (k, v)));
    let done = run_bounded(&mut command, PROVE_DEADLINE).await;
    assert_eq!(
        done.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        done.stdout,
        done.stderr
    );
    done
}

/// The value column of the table's row `name` (columns are apart by two spaces at least).
fn row_value<'a>(table: &'a str, name: &str) -> &'a str {
    let row = table.lines().find_map(|l| l.strip_prefix(name));
    let row = row.unwrap_or_else(|| panic!("no row {name:?} in:\n{table}"));
    row.trim_start().split("  ").next().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prove_applies_each_logical_charge_once_on_node_and_hub_through_every_fault() {
    // Guards the prove run: 100 logical charges from 8 tasks through lost answers, resets and
    // concurrent duplicates, with one relay crash between delivery and cursor update. Each
    // fault must actually have happened, and still the node applied exactly 100 charges and the
    // hub exactly 100 charge events, with matching merchant credits and clean stores.
    let report = prove_holds(&small_run(100, None, 0x0e1f_0ce5)).await;
    assert_eq!(report.logical_operations, 100);
    assert_eq!(report.node_charges_applied, 100);
    assert_eq!(report.hub_charge_events_applied, 100);
    assert_eq!(
        report.hub_events_applied,
        100 + report.node_accounts_created,
        "the hub applied each account and charge event once"
    );
    assert_eq!(
        report.node_accounts_created, 5,
        "4 customers and a merchant"
    );
    assert_eq!(report.failed_operations, 0, "{:?}", report.failure_samples);
    assert!(report.invariant_violations.is_empty());
    assert_eq!(
        report.node_lifecycle,
        LifecycleCounts::default(),
        "charges only"
    );
    assert_eq!(report.accounts.len(), 5, "every account is compared");
    assert!(report.accounts.iter().all(|a| a.matches()));
    // Each fault happened.
    assert!(report.lost_responses > 0, "no answer was lost");
    assert!(report.resets > 0, "no connection was reset");
    assert!(
        report.concurrent_duplicates > 0,
        "no charge was sent twice at once"
    );
    assert!(
        report.replays > 0,
        "a retry after a lost answer is answered by a replay"
    );
    assert!(report.attempts > report.logical_operations);
    assert_eq!(report.relay_crashes, 1, "the replicator crashed once");
    assert!(
        report.inbox_duplicates_dropped > 0,
        "the batch resent after the relay crash was dropped by the hub's inbox"
    );
    assert_eq!(report.inbox_dead_lettered, 0);
    assert!(report.retry_budget_left <= report.retry_budget_capacity);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prove_takes_each_lifecycle_operation_once_on_node_and_hub_through_every_fault() {
    // Guards the lifecycle mix (issue 19): 80 payments (authorized, then captured whole or in
    // part, voided, left to expire or left open), refunds of some captures and 20 two-leg
    // transfers, next to 30 charges, through lost answers, resets, twins and the relay crash.
    // The node counts each lifecycle operation exactly as planned, the hub applies every event
    // of the node, and every account's four totals are the plan's on the node and the hub.
    onceledger_core::writer::set_authorization_second_ms(SHORT_SECOND_MS);
    let mix = LifecycleMix {
        payments: 80,
        transfers: 20,
        expire_rate: 0.15,
    };
    let report = prove_holds(&small_run(30, Some(mix), 0x19_0ce5)).await;
    assert_eq!(report.node_lifecycle, report.planned);
    assert_eq!(report.planned.authorized, 80);
    assert_eq!(report.planned.transferred, 20);
    for operation in LifecycleCounts::OPERATIONS {
        assert!(report.planned.get(operation) > 0, "no {operation} planned");
    }
    assert_eq!(report.node_charges_applied, 30);
    assert_eq!(report.hub_charge_events_applied, 30);
    assert_eq!(
        report.hub_lifecycle_events_applied,
        report.planned.total(),
        "the hub applied each lifecycle event once"
    );
    assert_eq!(report.hub_events_applied, report.node_events);
    assert_eq!(report.inbox_dead_lettered, 0);
    assert_eq!(
        report.accounts.len(),
        6,
        "4 customers, the merchant and the platform"
    );
    assert!(report.accounts.iter().all(|a| a.matches()));
    let pending: u64 = report.accounts.iter().map(|a| a.node.debits_pending).sum();
    assert!(pending > 0, "authorizations left open hold their amounts");
    assert_eq!(report.failed_operations, 0, "{:?}", report.failure_samples);
    assert!(report.lost_responses > 0 && report.resets > 0 && report.replays > 0);
    assert!(report.concurrent_duplicates > 0);
    assert_eq!(report.relay_crashes, 1, "the replicator crashed once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prove_command_prints_the_table_and_exits_0() {
    // Guards the command line: `onceledger prove` with small counts prints the table with every
    // row the issue names on stdout, progress on stderr, and exits 0.
    let args = [
        "--charges",
        "40",
        "--tasks",
        "4",
        "--customers",
        "2",
        "--duplicate-rate",
        "0.2",
        "--lost-response-rate",
        "0.2",
        "--reset-rate",
        "0.1",
        "--seed",
        "7",
        "--timeout",
        "200s",
    ];
    let done = prove_command(&args, &[]).await;
    for row in [
        "logical operations",
        "attempts",
        "replays",
        "409s",
        "lost responses",
        "charges applied on the node",
        "events applied on the hub",
        "duplicates dropped by the inbox",
        "retry budget left",
        "PASS",
    ] {
        assert!(done.stdout.contains(row), "no {row:?} in:\n{}", done.stdout);
    }
    assert_eq!(row_value(&done.stdout, "logical operations"), "40");
    assert!(done.stderr.contains("prove:"), "{}", done.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prove_command_with_the_lifecycle_mix_prints_its_rows_and_exits_0() {
    // Guards `onceledger prove --mix lifecycle`: the table has a row per lifecycle operation
    // (node / plan) and the accounts row, the PASS line names the lifecycle counts, and the
    // run waits for its expiries (shortened by the test build's fault point) and exits 0.
    let args = [
        "--mix",
        "lifecycle",
        "--charges",
        "20",
        "--payments",
        "40",
        "--transfers",
        "10",
        "--expire-rate",
        "0.2",
        "--tasks",
        "4",
        "--customers",
        "2",
        "--seed",
        "19",
        "--timeout",
        "200s",
    ];
    let second = (
        "ONCELEDGER_FAULT_AUTHORIZATION_SECOND_MS",
        SHORT_SECOND_MS.to_string(),
    );
    let done = prove_command(&args, &[second]).await;
    for row in [
        "  of which charges",
        "authorized node / plan",
        "captured node / plan",
        "canceled node / plan",
        "expired node / plan",
        "refunded node / plan",
        "transferred node / plan",
        "  of which lifecycle events",
        "accounts matching the plan",
        "PASS: each logical operation took effect once",
    ] {
        assert!(done.stdout.contains(row), "no {row:?} in:\n{}", done.stdout);
    }
    assert_eq!(row_value(&done.stdout, "authorized node / plan"), "40 / 40");
    assert_eq!(row_value(&done.stdout, "  of which charges"), "20");
}
