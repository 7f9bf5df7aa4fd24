//! Charges: their shape, GET by id, and the amount range at its limits.

use serde_json::{Value, json};

use crate::harness::{
    Endpoint, Resp, Server, account, all_events, assert_created, assert_problem, assert_replay_of,
    charge_body, charge_ok, create_account, is_rfc3339_utc, key, make_token,
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

/// A charge id in the opaque form: `ch_` and 26 digits of lower-case base32 (RFC 4648), never the
/// legacy `ch_` and 16 hex digits that spelled out the node's charge number.
fn is_opaque_charge_id(id: &str) -> bool {
    id.strip_prefix("ch_").is_some_and(|digits| {
        digits.len() == 26
            && digits
                .bytes()
                .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
    })
}

/// One tenant's charge: its key, body and first answer.
struct Made {
    tenant: usize,
    key: String,
    body: String,
    first: Resp,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charge_ids_are_opaque_and_reach_only_their_tenant() {
    // Guards issue 21's opaque ids end to end: two tenants charge in turns on one node, so each
    // sees every other charge number go by. Every id is in the opaque form and unique, and their
    // sorted order is not the order the charges were made in; no legacy-form guess names a
    // charge. GET by id finds a charge for its tenant and is 404 charge-not-found for the other
    // (and for the operator's own tenant); a retry of a charge's key answers the byte-identical
    // body, id included; the events show the same ids; and after a restart the same ids find the
    // same charges.
    let mut server = Server::start().await;
    let admin = server.endpoint();
    let mut tokens = Vec::new();
    for tenant in ["ids-a", "ids-b"] {
        tokens.push(make_token(&admin, tenant, "client").await);
    }
    let tenants: Vec<Endpoint> = tokens.iter().map(|t| admin.with_token(Some(t))).collect();
    for ep in &tenants {
        create_account(ep, "bank", "EUR", None).await;
        create_account(ep, "shop", "EUR", Some(0)).await;
    }
    let mut made: Vec<Made> = Vec::new();
    for round in 1..=10 {
        for (tenant, ep) in tenants.iter().enumerate() {
            let (key, body) = (key("pay"), charge_body("bank", "shop", round, "EUR"));
            let first = ep.post("/v1/charges", Some(&key), &body).await;
            assert_created(&first);
            made.push(Made {
                tenant,
                key,
                body,
                first,
            });
        }
    }
    let ids: Vec<String> = made
        .iter()
        .map(|m| m.first.json()["id"].as_str().expect("id").to_owned())
        .collect();
    for id in &ids {
        assert!(is_opaque_charge_id(id), "{id}");
    }
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), ids.len(), "ids are unique: {ids:?}");
    assert_ne!(
        sorted, ids,
        "the ids' order gives the charges' order away: {ids:?}"
    );

    for (m, id) in made.iter().zip(&ids) {
        let own = &tenants[m.tenant];
        let got = own.get(&format!("/v1/charges/{id}")).await;
        assert_eq!(got.status, 200, "{got}");
        assert_eq!(
            got.body, m.first.body,
            "GET shows the 201's charge, byte for byte"
        );
        let other = &tenants[1 - m.tenant];
        for outsider in [other, &admin] {
            let refused = outsider.get(&format!("/v1/charges/{id}")).await;
            assert_problem(&refused, 404, "charge-not-found");
        }
        let replay = own.post("/v1/charges", Some(&m.key), &m.body).await;
        assert_replay_of(&replay, &m.first);
    }
    // The old form of every number handed out so far names nothing, for anyone.
    for number in 1..=ids.len() {
        for ep in tenants.iter().chain([&admin]) {
            let guess = ep.get(&format!("/v1/charges/ch_{number:016x}")).await;
            assert_problem(&guess, 404, "charge-not-found");
        }
    }
    // Each tenant's events name its charges by the same ids.
    for (tenant, ep) in tenants.iter().enumerate() {
        let in_events: Vec<String> = all_events(ep, 100)
            .await
            .iter()
            .filter(|e| e["type"] == "charge.succeeded")
            .map(|e| e["data"]["charge"]["id"].as_str().expect("id").to_owned())
            .collect();
        let own: Vec<String> = (made.iter().zip(&ids))
            .filter(|(m, _)| m.tenant == tenant)
            .map(|(_, id)| id.clone())
            .collect();
        assert_eq!(in_events, own, "tenant {tenant}'s events");
    }

    server.restart().await;
    let admin = server.endpoint();
    for (m, id) in made.iter().zip(&ids) {
        let got = admin
            .with_token(Some(&tokens[m.tenant]))
            .get(&format!("/v1/charges/{id}"))
            .await;
        assert_eq!(got.status, 200, "{id} after a restart: {got}");
        assert_eq!(got.body, m.first.body, "{id} after a restart");
    }
    server.check().await;
}
