//! SIGKILL under load, again and again: nothing acknowledged is lost, nothing applies twice.

use crate::harness::{Server, metric, metrics};
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
