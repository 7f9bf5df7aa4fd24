//! The outbox as clients see it: GET /v1/events pages, dense sequence numbers, and events that
//! carry exactly the charges and accounts they announce.

use std::collections::HashSet;

use crate::harness::{
    Server, all_events, assert_dense, assert_problem, charge_ok, create_account, is_rfc3339_utc,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_dense_paged_and_match_their_charges() {
    // Guards the events endpoint: seq dense from 1, paging with after/limit and next_after, the
    // default limit of 100, account.created events for accounts, and each charge's event_seq
    // pointing at a charge.succeeded event whose data.charge equals the charge.
    let server = Server::start().await;
    let ep = server.endpoint();
    let accounts = [
        create_account(&ep, "bank", "EUR", None).await,
        create_account(&ep, "shop", "EUR", Some(0)).await,
    ];
    const CHARGES: usize = 102;
    let mut charges = Vec::with_capacity(CHARGES);
    for i in 0..CHARGES {
        charges.push(charge_ok(&ep, "bank", "shop", 1 + i as i64, "EUR").await);
    }
    let total = 2 + CHARGES;

    let first_page = ep.get("/v1/events").await;
    assert_eq!(first_page.status, 200, "{first_page}");
    let page = first_page.json();
    assert_eq!(
        page["events"].as_array().map(Vec::len),
        Some(100),
        "limit defaults to 100"
    );
    assert_eq!(page["next_after"], 100);

    let all = all_events(&ep, 7).await;
    assert_eq!(all.len(), total, "one event per account and per charge");
    assert_dense(&all);
    let whole = all_events(&ep, 1000).await;
    assert_eq!(whole, all, "page size does not change what is read");

    let mut ids = HashSet::new();
    for event in &all {
        let seq = event["seq"].as_u64().unwrap_or_default();
        let id = event["id"].as_str().unwrap_or_default();
        assert!(ids.insert(id.to_owned()), "event ids are unique: {event}");
        assert!(
            id.ends_with(&format!(":{seq}")),
            "event id is NODE:SEQ: {event}"
        );
        assert!(
            is_rfc3339_utc(event["created_at"].as_str().unwrap_or_default()),
            "event created_at must be RFC 3339 UTC: {event}"
        );
    }
    for (event, created) in all.iter().zip(&accounts) {
        assert_eq!(event["type"], "account.created", "{event}");
        assert_eq!(
            &event["data"]["account"], created,
            "an account.created event carries the account as created"
        );
    }
    for charge in &charges {
        let seq = charge["event_seq"]
            .as_u64()
            .unwrap_or_else(|| panic!("charge without event_seq: {charge}"));
        let event = all
            .get(seq as usize - 1)
            .unwrap_or_else(|| panic!("event_seq {seq} beyond the last event"));
        assert_eq!(event["type"], "charge.succeeded", "{event}");
        assert_eq!(
            &event["data"]["charge"], charge,
            "event {seq} carries its charge"
        );
    }

    // Reading past the end: an empty page whose next_after is the `after` asked for.
    for after in [total as u64, total as u64 + 1000] {
        let resp = ep.get(&format!("/v1/events?after={after}&limit=5")).await;
        assert_eq!(resp.status, 200, "{resp}");
        let page = resp.json();
        assert_eq!(page["events"].as_array().map(Vec::len), Some(0), "{page}");
        assert_eq!(page["next_after"], after, "{page}");
    }
    // A page in the middle starts right after `after`.
    let resp = ep.get("/v1/events?after=50&limit=3").await;
    let page = resp.json();
    let seqs: Vec<u64> = page["events"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["seq"].as_u64()).collect())
        .unwrap_or_default();
    assert_eq!(seqs, [51, 52, 53], "{page}");
    assert_eq!(page["next_after"], 53);
    let resp = ep.get("/v1/events?limit=1000").await;
    assert_eq!(resp.json()["events"].as_array().map(Vec::len), Some(total));
    server.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_event_queries_are_400() {
    // Guards the query bounds: limit 1..=1000 and after >= 0, anything else 400 invalid-request.
    let server = Server::start().await;
    let ep = server.endpoint();
    for query in [
        "limit=0",
        "limit=1001",
        "limit=-1",
        "limit=abc",
        "after=-1",
        "after=x",
        "after=1.5",
    ] {
        let resp = ep.get(&format!("/v1/events?{query}")).await;
        assert_eq!(resp.status, 400, "GET /v1/events?{query}: {resp}");
        assert_problem(&resp, 400, "invalid-request");
    }
    for query in ["limit=1", "limit=1000", "after=0"] {
        let resp = ep.get(&format!("/v1/events?{query}")).await;
        assert_eq!(resp.status, 200, "GET /v1/events?{query}: {resp}");
    }
    server.check().await;
}
