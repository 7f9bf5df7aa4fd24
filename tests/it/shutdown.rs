//! SIGTERM under load: exit 0, and everything acknowledged survives.

use crate::harness::Server;
use crate::load::{Load, create_accounts, resend_all_and_reconcile, verify_acked};

const WORKERS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_zero_and_keeps_every_ack() {
    // Guards graceful shutdown: SIGTERM while charges are in flight makes the server finish and
    // exit 0; after a restart every charge that was acknowledged is there and replays, every
    // key sent applies at most once, and no charge was committed without its answer reaching
    // the client.
    let mut server = Server::start().await;
    create_accounts(&server.endpoint()).await;

    let load = Load::start(&server.endpoint(), "term", WORKERS);
    load.wait_for_acks(40).await;
    server.terminate().await; // asserts exit status 0
    let sent = load.finish().await;
    let answered = sent.iter().filter(|s| s.answer.is_ok()).count();
    eprintln!(
        "shutdown: {} requests, {answered} answered, {} acknowledged",
        sent.len(),
        sent.iter().filter(|s| s.acked().is_some()).count()
    );

    server.restart().await;
    verify_acked(&server.endpoint(), &sent).await;
    let reconciled = resend_all_and_reconcile(&server.endpoint(), &sent).await;
    // A request the server committed was in flight; a graceful stop delivers its answer.
    assert!(
        reconciled.applied_unanswered.is_empty(),
        "SIGTERM committed these charges but their clients got no answer: {:#?}",
        reconciled.applied_unanswered
    );
    server.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_when_idle_exits_zero_and_keeps_data() {
    // Guards the plain stop/start cycle: SIGTERM on an idle server exits 0, and accounts and
    // charges written before are all there after a restart.
    let mut server = Server::start().await;
    let ep = server.endpoint();
    crate::harness::create_account(&ep, "bank", "EUR", None).await;
    crate::harness::create_account(&ep, "shop", "EUR", Some(0)).await;
    let charge = crate::harness::charge_ok(&ep, "bank", "shop", 42, "EUR").await;
    server.terminate().await;
    assert!(!server.is_running());
    server.restart().await;
    assert!(server.is_running());
    let ep = server.endpoint();
    let id = charge["id"].as_str().unwrap_or_default();
    let got = ep.get(&format!("/v1/charges/{id}")).await;
    assert_eq!(got.status, 200, "{got}");
    assert_eq!(got.json(), charge);
    assert_eq!(crate::harness::balance(&ep, "shop").await, 42);
    assert_eq!(ep.get("/readyz").await.status, 200);
    server.check().await;
}
