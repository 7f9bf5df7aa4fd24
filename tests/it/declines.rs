//! Outcomes decided against the ledger are final: stored with the key, replayed byte for byte
//! even after the world changed, and they move no money and write no event.

use crate::harness::{
    Endpoint, Server, account, account_body, all_events, assert_problem, assert_replay_of, balance,
    charge_body, charge_ok, create_account,
};

async fn event_count(ep: &Endpoint) -> usize {
    all_events(ep, 1000).await.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insufficient_funds_is_stored_and_replayed_after_funding() {
    // Guards the stored 402: a charge from an empty overdraft-0 account is 402
    // insufficient-funds, moves nothing, and its key replays the same 402 even once the account
    // has the money, and after a restart.
    let mut server = Server::start().await;
    let ep = server.endpoint();
    create_account(&ep, "bank", "EUR", None).await;
    create_account(&ep, "poor", "EUR", Some(0)).await;
    create_account(&ep, "shop", "EUR", Some(0)).await;
    let events_before = event_count(&ep).await;

    let body = charge_body("poor", "shop", 100, "EUR");
    let declined = ep.post("/v1/charges", Some("poor-1"), &body).await;
    assert_problem(&declined, 402, "insufficient-funds");
    assert!(!declined.replayed());
    let replay = ep.post("/v1/charges", Some("poor-1"), &body).await;
    assert_replay_of(&replay, &declined);
    assert_eq!(balance(&ep, "poor").await, 0);
    assert_eq!(balance(&ep, "shop").await, 0);
    assert_eq!(
        event_count(&ep).await,
        events_before,
        "a decline writes no event"
    );

    charge_ok(&ep, "bank", "poor", 1000, "EUR").await;
    let replay = ep.post("/v1/charges", Some("poor-1"), &body).await;
    assert_replay_of(&replay, &declined);
    // Stored means durable: the same bytes after a restart.
    server.restart().await;
    let ep = server.endpoint();
    let replay = ep.post("/v1/charges", Some("poor-1"), &body).await;
    assert_replay_of(&replay, &declined);
    let poor = account(&ep, "poor").await;
    assert_eq!(poor["balance"], 1000, "{poor}");
    assert_eq!(poor["debits_posted"], 0, "{poor}");
    assert_eq!(balance(&ep, "shop").await, 0);

    // A stored decline is still a finished key: another body with it is a reuse.
    let other = ep
        .post(
            "/v1/charges",
            Some("poor-1"),
            &charge_body("poor", "shop", 50, "EUR"),
        )
        .await;
    assert_problem(&other, 422, "idempotency-key-reused");
    assert_eq!(balance(&ep, "shop").await, 0);
    server.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_account_is_stored_even_after_it_is_created() {
    // Guards the stored 404: a charge naming a missing destination (or source) is 404
    // account-not-found; after the account is created (and after a restart), the key still
    // replays the stored 404.
    let mut server = Server::start().await;
    let ep = server.endpoint();
    create_account(&ep, "bank", "EUR", None).await;
    let events_before = event_count(&ep).await;

    let to_ghost = charge_body("bank", "ghost", 300, "EUR");
    let declined = ep.post("/v1/charges", Some("ghost-1"), &to_ghost).await;
    assert_problem(&declined, 404, "account-not-found");
    let from_ghost = charge_body("phantom", "bank", 300, "EUR");
    let declined_src = ep.post("/v1/charges", Some("ghost-2"), &from_ghost).await;
    assert_problem(&declined_src, 404, "account-not-found");
    assert_eq!(event_count(&ep).await, events_before);

    create_account(&ep, "ghost", "EUR", Some(0)).await;
    create_account(&ep, "phantom", "EUR", None).await;
    let replay = ep.post("/v1/charges", Some("ghost-1"), &to_ghost).await;
    assert_replay_of(&replay, &declined);
    let replay = ep.post("/v1/charges", Some("ghost-2"), &from_ghost).await;
    assert_replay_of(&replay, &declined_src);
    server.restart().await;
    let ep = server.endpoint();
    let replay = ep.post("/v1/charges", Some("ghost-1"), &to_ghost).await;
    assert_replay_of(&replay, &declined);
    for id in ["bank", "ghost", "phantom"] {
        assert_eq!(balance(&ep, id).await, 0, "{id} moved by a declined charge");
    }
    server.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn currency_mismatch_is_stored_and_replayed() {
    // Guards the stored 400 currency-mismatch: a charge whose currency differs from either
    // account's is declined, stored, replayed byte for byte, and moves nothing.
    let server = Server::start().await;
    let ep = server.endpoint();
    create_account(&ep, "bank", "EUR", None).await;
    create_account(&ep, "shop", "EUR", Some(0)).await;
    create_account(&ep, "usd-shop", "USD", Some(0)).await;

    let cases = [
        ("mm-1", charge_body("bank", "usd-shop", 10, "EUR")),
        ("mm-2", charge_body("bank", "usd-shop", 10, "USD")),
        ("mm-3", charge_body("bank", "shop", 10, "USD")),
    ];
    for (k, body) in &cases {
        let declined = ep.post("/v1/charges", Some(k), body).await;
        assert_problem(&declined, 400, "currency-mismatch");
        let replay = ep.post("/v1/charges", Some(k), body).await;
        assert_replay_of(&replay, &declined);
    }
    for id in ["bank", "shop", "usd-shop"] {
        assert_eq!(balance(&ep, id).await, 0, "{id} moved by a declined charge");
    }
    assert_eq!(event_count(&ep).await, 3, "only the three account events");
    server.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_exists_is_stored_and_replayed() {
    // Guards the stored 400 account-exists: creating a taken id under a new key is declined and
    // stored; the original key still replays its 201, and the account is unchanged.
    let server = Server::start().await;
    let ep = server.endpoint();
    let body = account_body("alice", "EUR", Some(0));
    let created = ep.post("/v1/accounts", Some("alice-1"), &body).await;
    assert_eq!(created.status, 201, "{created}");

    let taken = ep.post("/v1/accounts", Some("alice-2"), &body).await;
    assert_problem(&taken, 400, "account-exists");
    let replay = ep.post("/v1/accounts", Some("alice-2"), &body).await;
    assert_replay_of(&replay, &taken);

    let other = account_body("alice", "USD", None);
    let taken_other = ep.post("/v1/accounts", Some("alice-3"), &other).await;
    assert_problem(&taken_other, 400, "account-exists");
    let replay = ep.post("/v1/accounts", Some("alice-3"), &other).await;
    assert_replay_of(&replay, &taken_other);

    let replay = ep.post("/v1/accounts", Some("alice-1"), &body).await;
    assert_replay_of(&replay, &created);
    let alice = account(&ep, "alice").await;
    assert_eq!(alice["currency"], "EUR", "{alice}");
    assert_eq!(alice["overdraft_limit"], 0, "{alice}");
    assert_eq!(event_count(&ep).await, 1, "one account.created event only");
    server.check().await;
}
