//! Simultaneous identical requests: exactly one runs, the others are told to retry (409) or get
//! its replay.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::Barrier;

use crate::harness::{
    Resp, Server, account, charge_body, create_account, fresh_connection_client, metric, metrics,
};

const ROUNDS: usize = 100;
const CONCURRENT_REQUESTS: usize = 6;
const AMOUNT: i64 = 7;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_identical_requests_apply_once() {
    // Guards the in-flight claim: per key exactly one charge however many identical requests
    // race (each on its own connection); every other answer is 409 idempotency-key-in-flight
    // with Retry-After or a byte-identical replay; the money moved is rounds x amount, and the
    // metrics count the same outcomes the clients saw.
    let server = Server::start().await;
    let ep = server.endpoint();
    create_account(&ep, "bank", "EUR", None).await;
    create_account(&ep, "shop", "EUR", Some(0)).await;
    const REQS: &str = "onceledger_idempotency_requests_total";
    let text = metrics(&ep).await;
    let before = (
        metric(&text, REQS, &[("outcome", "new")]),
        metric(&text, REQS, &[("outcome", "replayed")]),
        metric(&text, REQS, &[("outcome", "in_flight")]),
        metric(&text, "onceledger_charges_applied_total", &[]),
    );
    const KEYS_IN_MEMORY: &str = "onceledger_idempotency_keys_in_memory";
    let keys_in_memory_before = metric(&text, KEYS_IN_MEMORY, &[]);

    let body = charge_body("bank", "shop", AMOUNT, "EUR");
    let (mut in_flight_total, mut replayed_total) = (0usize, 0usize);
    let mut charge_ids = HashSet::new();
    for round in 0..ROUNDS {
        let key = format!("race-{round}");
        let barrier = Arc::new(Barrier::new(CONCURRENT_REQUESTS));
        let tasks: Vec<_> = (0..CONCURRENT_REQUESTS)
            .map(|_| {
                let ep = ep.with_client(fresh_connection_client());
                let (key, body, barrier) = (key.clone(), body.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    ep.try_post("/v1/charges", Some(&key), &body).await
                })
            })
            .collect();
        let mut answers: Vec<Resp> = Vec::with_capacity(CONCURRENT_REQUESTS);
        for task in tasks {
            match task.await {
                Ok(Ok(resp)) => answers.push(resp),
                Ok(Err(e)) => panic!("round {round}: a request failed: {e}"),
                Err(e) => panic!("round {round}: a task panicked: {e}"),
            }
        }

        let fresh: Vec<&Resp> = answers
            .iter()
            .filter(|r| r.status == 201 && !r.replayed())
            .collect();
        assert_eq!(
            fresh.len(),
            1,
            "round {round}: exactly one request runs the charge; answers: {answers:#?}"
        );
        let original = fresh[0];
        for resp in &answers {
            match resp.status {
                201 if resp.replayed() => {
                    assert_eq!(
                        resp.body, original.body,
                        "round {round}: a replay differs from the original"
                    );
                    replayed_total += 1;
                }
                201 => {}
                409 => {
                    assert_eq!(
                        resp.problem_type(),
                        "/problems/idempotency-key-in-flight",
                        "round {round}: {resp}"
                    );
                    assert_eq!(
                        resp.header("retry-after"),
                        Some("1"),
                        "round {round}: a 409 in flight carries Retry-After: 1: {resp}"
                    );
                    in_flight_total += 1;
                }
                _ => panic!("round {round}: unexpected answer {resp}"),
            }
        }
        let ids: HashSet<String> = answers
            .iter()
            .filter(|r| r.status == 201)
            .map(|r| r.json()["id"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(
            ids.len(),
            1,
            "round {round}: one charge id per key: {ids:?}"
        );
        charge_ids.extend(ids);
    }
    eprintln!(
        "concurrency: {ROUNDS} rounds x {CONCURRENT_REQUESTS}: {in_flight_total} answered 409, \
         {replayed_total} replayed"
    );
    assert_eq!(charge_ids.len(), ROUNDS, "one distinct charge per round");
    let moved = ROUNDS as i64 * AMOUNT;
    assert_eq!(account(&ep, "shop").await["balance"], moved);
    assert_eq!(account(&ep, "bank").await["balance"], -moved);

    let text = metrics(&ep).await;
    let after = (
        metric(&text, REQS, &[("outcome", "new")]),
        metric(&text, REQS, &[("outcome", "replayed")]),
        metric(&text, REQS, &[("outcome", "in_flight")]),
        metric(&text, "onceledger_charges_applied_total", &[]),
    );
    // Each round finished one key, far below the point where keys are merged into the table.
    assert_eq!(
        metric(&text, KEYS_IN_MEMORY, &[]) - keys_in_memory_before,
        ROUNDS as f64,
        "finished keys held in memory"
    );
    assert_eq!(
        (
            after.0 - before.0,
            after.1 - before.1,
            after.2 - before.2,
            after.3 - before.3
        ),
        (
            ROUNDS as f64,
            replayed_total as f64,
            in_flight_total as f64,
            ROUNDS as f64
        ),
        "metric deltas (new, replayed, in_flight, charges applied) must match what clients saw"
    );
    server.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_commit_queue_is_503_and_not_stored() {
    // Guards the "server overloaded" row: with a commit queue of one command, a burst of
    // distinct charges gets some 503 overloaded answers with Retry-After, never anything else
    // but 201; a 503 is not stored (its key later runs fresh) and every key moves money once.
    let server =
        Server::start_with(&["--commit-queue-max", "1", "--batch-commands-max", "1"]).await;
    let ep = server.endpoint();
    create_account(&ep, "bank", "EUR", None).await;
    create_account(&ep, "shop", "EUR", Some(0)).await;
    const BURST: usize = 32;
    const BURSTS_MAX: usize = 20;
    let body = charge_body("bank", "shop", AMOUNT, "EUR");
    let mut overloaded_keys = Vec::new();
    let mut keys_total = 0usize;
    for burst in 0..BURSTS_MAX {
        let barrier = Arc::new(Barrier::new(BURST));
        let tasks: Vec<_> = (0..BURST)
            .map(|i| {
                let ep = ep.with_client(fresh_connection_client());
                let key = format!("burst-{burst}-{i}");
                let (body, barrier) = (body.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    (
                        key.clone(),
                        ep.try_post("/v1/charges", Some(&key), &body).await,
                    )
                })
            })
            .collect();
        for task in tasks {
            let (key, answer) = task.await.expect("a burst task panicked");
            let resp = answer.unwrap_or_else(|e| panic!("burst {burst}: {e}"));
            keys_total += 1;
            match resp.status {
                201 => {}
                503 => {
                    assert_eq!(resp.problem_type(), "/problems/overloaded", "{resp}");
                    assert!(
                        resp.header("retry-after").is_some(),
                        "503 needs Retry-After: {resp}"
                    );
                    overloaded_keys.push(key);
                }
                _ => panic!("burst {burst}: unexpected answer {resp}"),
            }
        }
        if !overloaded_keys.is_empty() {
            break;
        }
    }
    assert!(
        !overloaded_keys.is_empty(),
        "{BURSTS_MAX} bursts of {BURST} against a queue of 1 never answered 503 overloaded"
    );
    for key in &overloaded_keys {
        let resp = ep.post("/v1/charges", Some(key), &body).await;
        assert_eq!(resp.status, 201, "key {key} after its 503: {resp}");
        assert!(
            !resp.replayed(),
            "a 503 must not be stored, key {key}: {resp}"
        );
    }
    eprintln!(
        "overload: {keys_total} keys, {} answered 503",
        overloaded_keys.len()
    );
    assert_eq!(
        account(&ep, "shop").await["balance"],
        keys_total as i64 * AMOUNT,
        "every key moved money exactly once"
    );
    server.check().await;
}
