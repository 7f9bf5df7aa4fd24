//! Charges: their shape, GET by id, and the amount range at its limits.

use serde_json::{Value, json};

use crate::harness::{
    Server, account, assert_created, assert_problem, assert_replay_of, charge_body, charge_ok,
    create_account, is_rfc3339_utc, key,
};

#[track_caller]
fn assert_charge_shape(charge: &Value) {
    for field in [
        "id",
        "status",
        "source",
        "destination",
        "amount",
        "currency",
        "metadata",
        "created_at",
        "event_seq",
    ] {
        assert!(
            charge.get(field).is_some(),
            "charge lacks {field:?}: {charge}"
        );
    }
    assert!(
        charge["id"].as_str().is_some_and(|s| !s.is_empty()),
        "charge id must be a non-empty string: {charge}"
    );
    assert_eq!(charge["status"], "succeeded", "{charge}");
    assert!(charge["metadata"].is_object(), "{charge}");
    assert!(
        charge["event_seq"].as_u64().is_some_and(|s| s >= 1),
        "{charge}"
    );
    assert!(
        is_rfc3339_utc(charge["created_at"].as_str().unwrap_or_default()),
        "created_at must be RFC 3339 UTC: {charge}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charge_moves_money_and_can_be_read_back() {
    // Guards the charge shape of API.md and CONTRACT-NOTES (metadata {} when none was sent), GET
    // /v1/charges/{id} returning the same charge, and unique ids.
    let server = Server::start().await;
    let ep = server.endpoint();
    create_account(&ep, "alice", "EUR", None).await;
    create_account(&ep, "shop", "EUR", Some(0)).await;

    let body = r#"{"source":"alice","destination":"shop","amount":1250,"currency":"EUR","metadata":{"order":"A-17"}}"#;
    let charge = assert_created(&ep.post("/v1/charges", Some("order-A-17"), body).await);
    assert_charge_shape(&charge);
    assert_eq!(charge["source"], "alice");
    assert_eq!(charge["destination"], "shop");
    assert_eq!(charge["amount"], 1250);
    assert_eq!(charge["currency"], "EUR");
    assert_eq!(charge["metadata"], json!({"order": "A-17"}));

    let plain = charge_ok(&ep, "alice", "shop", 1, "EUR").await;
    assert_charge_shape(&plain);
    assert_eq!(
        plain["metadata"],
        json!({}),
        "metadata is {{}} when none was sent"
    );
    assert_ne!(plain["id"], charge["id"], "charge ids are unique");
    assert!(
        plain["event_seq"].as_u64() > charge["event_seq"].as_u64(),
        "a later charge has a later event: {charge} then {plain}"
    );

    for c in [&charge, &plain] {
        let id = c["id"].as_str().unwrap_or_default();
        let got = ep.get(&format!("/v1/charges/{id}")).await;
        assert_eq!(got.status, 200, "GET charge {id}: {got}");
        assert_eq!(&got.json(), c, "GET returns the charge the 201 described");
    }
    assert_eq!(account(&ep, "shop").await["balance"], 1251);
    assert_eq!(account(&ep, "alice").await["balance"], -1251);
    server.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_charge_is_404() {
    // Guards GET of an id the server never assigned: 404 charge-not-found.
    let server = Server::start().await;
    let ep = server.endpoint();
    assert_problem(
        &ep.get("/v1/charges/ch_doesnotexist").await,
        404,
        "charge-not-found",
    );
    assert_problem(&ep.get("/v1/charges/0").await, 404, "charge-not-found");
    server.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_limits_are_inclusive() {
    // Guards the metadata limits from the accepted side: 16 pairs, 40-character keys and
    // 500-character values pass (counted in characters, not bytes) and are echoed back.
    let server = Server::start().await;
    let ep = server.endpoint();
    create_account(&ep, "bank", "EUR", None).await;
    create_account(&ep, "shop", "EUR", Some(0)).await;

    let sixteen: serde_json::Map<String, Value> = (0..16)
        .map(|i| (format!("{i:0>40}"), json!("v".repeat(500))))
        .collect();
    let wide = json!({ "\u{e9}".repeat(40): "\u{e9}".repeat(500) });
    for metadata in [Value::Object(sixteen), wide] {
        let body = json!({
            "source": "bank", "destination": "shop", "amount": 3, "currency": "EUR",
            "metadata": metadata
        });
        let charge = assert_created(
            &ep.post("/v1/charges", Some(&key("meta")), &body.to_string())
                .await,
        );
        assert_eq!(charge["metadata"], body["metadata"], "metadata echoed back");
    }
    server.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn largest_amount_and_balance_overflow() {
    // Guards the top of the amount range: 2^63-1 is a valid amount; a charge that would push a
    // posted total past 2^63-1 is the stored 400 balance-overflow and moves nothing.
    let server = Server::start().await;
    let ep = server.endpoint();
    create_account(&ep, "mint-a", "EUR", None).await;
    create_account(&ep, "mint-b", "EUR", None).await;
    create_account(&ep, "rich", "EUR", Some(0)).await;

    let max = i64::MAX;
    let charge = charge_ok(&ep, "mint-a", "rich", max, "EUR").await;
    assert_eq!(charge["amount"], max);
    let rich = account(&ep, "rich").await;
    assert_eq!(rich["credits_posted"], max, "{rich}");
    assert_eq!(rich["balance"], max, "{rich}");

    let body = charge_body("mint-b", "rich", 1, "EUR");
    let declined = ep.post("/v1/charges", Some("overflow"), &body).await;
    assert_problem(&declined, 400, "balance-overflow");
    let replay = ep.post("/v1/charges", Some("overflow"), &body).await;
    assert_replay_of(&replay, &declined);
    assert_eq!(account(&ep, "rich").await["balance"], max);
    assert_eq!(account(&ep, "mint-b").await["balance"], 0);
    server.check().await;
}
