//! The retrying client (src/client) and the fault proxy (src/proxy) against the real server:
//! logical charges sent through lost answers, resets and delays move money exactly once and
//! reuse one key per operation; the `onceledger charge` command does the same; and during an
//! outage the retry budget bounds the attempts of a whole call site.
//!
//! The proxy's faults come from a seeded plan and the client sends one request at a time in the
//! exactly-once tests, so those runs repeat fault for fault. No sleeps stand in for
//! synchronisation; the only timing is the proxy's delay fault, which always outlasts the
//! client's attempt timeout by seconds.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use onceledger_client::{
    ATTEMPT_TIMEOUT_DEFAULT, Backoff, CAPACITY_DEFAULT, Client, ClientConfig, ClientError, GiveUp,
    NO_RETRY_INCREMENT, NewCharge, RETRY_COST, RetryBudget, TIMEOUT_RETRY_COST, Transcript,
};
use onceledger_testkit::proxy::{Fault, FaultPlan, FaultRates, Proxy, ProxyConfig};

use crate::harness::{
    BIN, Endpoint, REQUEST_DEADLINE, Server, account, all_events, balance, create_account, metric,
    metrics, run_bounded,
};

/// How long a whole batch of client operations may take before the test fails.
const OPERATIONS_DEADLINE: Duration = Duration::from_secs(120);

fn fast_backoff() -> Backoff {
    Backoff {
        base: Duration::from_millis(1),
        cap: Duration::from_millis(20),
    }
}

fn charge(n: u64) -> NewCharge {
    NewCharge {
        source: "payer".into(),
        destination: "payee".into(),
        amount: n,
        currency: "EUR".into(),
        metadata: BTreeMap::from([("n".to_owned(), n.to_string())]),
    }
}

async fn create_payer_and_payee(ep: &Endpoint) {
    create_account(ep, "payer", "EUR", None).await;
    create_account(ep, "payee", "EUR", Some(0)).await;
}

async fn start_proxy(server: &Server, seed: u64, rates: FaultRates, delay: Duration) -> Proxy {
    Proxy::start(ProxyConfig {
        upstream: server.addr(),
        seed,
        rates,
        delay,
    })
    .await
    .expect("start the proxy")
}

/// A client of the proxy that may try 20 times, quickly, writing its transcript to `path`.
fn client_with_transcript(
    proxy: &Proxy,
    token: Option<&str>,
    path: &Path,
    attempt_timeout: Duration,
) -> Client {
    let config = ClientConfig {
        token: token.map(onceledger_server::auth::TokenSecret::presented),
        backoff: fast_backoff(),
        attempts_max: 20,
        attempt_timeout,
        transcript: Some(Transcript::create(path).expect("create the transcript")),
        ..ClientConfig::default()
    };
    Client::new(&proxy.url(), config).expect("client")
}

fn read_transcript(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read transcript {}: {e}", path.display()));
    text.lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("transcript line {line:?}: {e}"))
        })
        .collect()
}

/// The transcript lines of each key, in order.
fn lines_by_key(lines: &[Value]) -> BTreeMap<String, Vec<Value>> {
    let mut by_key: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for line in lines {
        let key = line["key"]
            .as_str()
            .expect("every line has a key")
            .to_owned();
        by_key.entry(key).or_default().push(line.clone());
    }
    by_key
}

/// Every key's lines are attempts 1, 2, ... of one operation: retries until the last, which
/// is the decision that ended it.
#[track_caller]
fn assert_one_key_per_operation(by_key: &BTreeMap<String, Vec<Value>>, operation: &str) {
    for (key, lines) in by_key {
        for (i, line) in lines.iter().enumerate() {
            assert_eq!(line["attempt"], i as u64 + 1, "key {key}: {lines:?}");
            assert_eq!(line["operation"], operation, "key {key}: {line}");
            let last = i + 1 == lines.len();
            if !last {
                assert_eq!(line["decision"], "retry", "key {key}: {lines:?}");
                assert!(line["delay_ms"].is_number(), "a retry has a delay: {line}");
            }
        }
    }
}

/// Replays the budget arithmetic along a transcript written by one operation at a time: a
/// retry takes 5 (10 after a timeout), a 2xx on the first attempt returns 1, a 2xx after
/// retries returns what its last retry took, never beyond the capacity.
#[track_caller]
fn assert_budget_arithmetic(lines: &[Value]) {
    let mut tokens = CAPACITY_DEFAULT;
    let mut last_retry_cost: Option<u32> = None;
    for line in lines {
        let status = line["status"].as_u64();
        match line["decision"].as_str() {
            Some("retry") => {
                let cost = if line["cause"] == "timeout" {
                    TIMEOUT_RETRY_COST
                } else {
                    RETRY_COST
                };
                tokens -= cost;
                last_retry_cost = Some(cost);
            }
            Some("done") => {
                if status.is_some_and(|s| (200..300).contains(&s)) {
                    let back = last_retry_cost.unwrap_or(NO_RETRY_INCREMENT);
                    tokens = (tokens + back).min(CAPACITY_DEFAULT);
                }
                last_retry_cost = None;
            }
            other => panic!("unexpected decision {other:?}: {line}"),
        }
        assert_eq!(line["budget_tokens"], tokens, "budget after {line}");
    }
}

/// Sends charges 1..=n one at a time and returns (key, answer body, replayed) per charge.
async fn charge_sequentially(client: &Client, n: u64) -> Vec<(String, Value, bool)> {
    let run = async {
        let mut answers = Vec::new();
        for i in 1..=n {
            let answer = match client.create_charge(&charge(i)).await {
                Ok(answer) => answer,
                Err(e) => panic!("charge {i}: {e}"),
            };
            assert_eq!(answer.status, 201, "charge {i}: {answer:?}");
            let body: Value = serde_json::from_slice(&answer.body).expect("JSON charge");
            answers.push((answer.key, body, answer.replayed));
        }
        answers
    };
    tokio::time::timeout(OPERATIONS_DEADLINE, run)
        .await
        .expect("the charges finish within the deadline")
}

/// Each of charges 1..=n moved its amount exactly once: one `charge.succeeded` event per amount,
/// balances equal to the sum, the applied-charges counter equal to n.
async fn assert_each_charge_applied_once(ep: &Endpoint, n: u64, answers: &[(String, Value, bool)]) {
    let events = all_events(ep, 1000).await;
    let mut amounts: Vec<u64> = events
        .iter()
        .filter(|e| e["type"] == "charge.succeeded")
        .map(|e| e["data"]["charge"]["amount"].as_u64().expect("amount"))
        .collect();
    amounts.sort_unstable();
    assert_eq!(
        amounts,
        (1..=n).collect::<Vec<_>>(),
        "every logical charge exactly once in the outbox"
    );
    let total: i64 = (1..=n as i64).sum();
    assert_eq!(balance(ep, "payer").await, -total);
    assert_eq!(balance(ep, "payee").await, total);
    let applied = metric(&metrics(ep).await, "onceledger_charges_applied_total", &[]);
    assert_eq!(applied, n as f64, "one side effect per logical charge");
    let ids: BTreeSet<&str> = answers
        .iter()
        .map(|(_, body, _)| body["id"].as_str().expect("charge id"))
        .collect();
    assert_eq!(ids.len() as u64, n, "one charge id per logical charge");
    for (i, (_, body, _)) in answers.iter().enumerate() {
        assert_eq!(body["amount"], i as u64 + 1, "answer {i}: {body}");
    }
}

/// Guards exactly-once through the fault proxy: 40 logical charges sent one at a time through
/// lost answers (the server committed, the client saw the connection close) and resets (the
/// server never saw the request) each move money once; every retry reuses its operation's key;
/// retries after a lost answer come back as replays; the budget arithmetic holds line by line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charges_through_lost_answers_and_resets_apply_exactly_once() {
    const CHARGES: u64 = 40;
    let server = Server::start().await;
    let ep = server.endpoint();
    create_payer_and_payee(&ep).await;
    let rates = FaultRates {
        lost_response: 0.3,
        reset: 0.2,
        delay: 0.0,
    };
    let seed = 0x0c11_e417;
    let proxy = start_proxy(&server, seed, rates, Duration::ZERO).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let transcript_path = dir.path().join("transcript.jsonl");
    let client = client_with_transcript(
        &proxy,
        ep.token(),
        &transcript_path,
        ATTEMPT_TIMEOUT_DEFAULT,
    );

    let answers = charge_sequentially(&client, CHARGES).await;
    assert_each_charge_applied_once(&ep, CHARGES, &answers).await;

    // The proxy saw every attempt, and its faults are the seed's plan, in order.
    let counts = proxy.counts();
    assert_eq!(counts.requests, client.attempts_total(), "{counts:?}");
    let mut plan = FaultPlan::new(rates, seed);
    let planned: Vec<Fault> = (0..counts.requests).map(|_| plan.next_fault()).collect();
    let planned_count = |f| planned.iter().filter(|x| **x == f).count() as u64;
    assert_eq!(counts.lost_responses, planned_count(Fault::LostResponse));
    assert_eq!(counts.resets, planned_count(Fault::Reset));
    assert_eq!(counts.passed, planned_count(Fault::Pass));
    assert!(counts.lost_responses > 0 && counts.resets > 0, "{counts:?}");
    assert_eq!(counts.upstream_errors, 0, "{counts:?}");

    let lines = read_transcript(&transcript_path);
    assert_eq!(
        lines.len() as u64,
        client.attempts_total(),
        "one line per attempt"
    );
    let by_key = lines_by_key(&lines);
    assert_eq!(by_key.len() as u64, CHARGES, "one key per logical charge");
    assert_one_key_per_operation(&by_key, "charge");
    for (key, _, replayed) in &answers {
        let last = by_key[key].last().expect("lines");
        assert_eq!(last["decision"], "done");
        assert_eq!(last["status"], 201);
        assert_eq!(last["replayed"], *replayed);
    }
    let retried = by_key.values().filter(|l| l.len() > 1).count();
    let replayed = answers.iter().filter(|(_, _, r)| *r).count();
    assert!(retried > 0, "the seed must make some operation retry");
    assert!(
        replayed > 0,
        "an answer lost after commit comes back as a replay on retry"
    );
    assert_budget_arithmetic(&lines);
    eprintln!(
        "{CHARGES} charges, {} attempts, {retried} retried, {replayed} answered by replay; proxy {counts:?}",
        client.attempts_total()
    );
    drop(proxy);
    server.check().await;
}

/// Guards the timeout path: requests the proxy holds far beyond the client's attempt timeout
/// are retried with the same key at the timeout price (10 tokens); the held originals reach the
/// server later and change nothing. Each logical charge still moves money once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charges_through_delays_beyond_the_timeout_apply_exactly_once() {
    const CHARGES: u64 = 6;
    let server = Server::start().await;
    let ep = server.endpoint();
    create_payer_and_payee(&ep).await;
    let proxy = start_proxy(
        &server,
        11,
        FaultRates {
            lost_response: 0.0,
            reset: 0.0,
            delay: 0.4,
        },
        Duration::from_secs(4),
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let transcript_path = dir.path().join("transcript.jsonl");
    let client = client_with_transcript(
        &proxy,
        ep.token(),
        &transcript_path,
        Duration::from_millis(500),
    );

    let answers = charge_sequentially(&client, CHARGES).await;
    // Every held original reaches the server before its state is read.
    tokio::time::timeout(OPERATIONS_DEADLINE, proxy.settle())
        .await
        .expect("the held requests are forwarded within the deadline");
    let counts = proxy.counts();
    assert!(counts.delays > 0, "{counts:?}");
    assert_eq!(counts.upstream_errors, 0, "{counts:?}");
    let lines = read_transcript(&transcript_path);
    let by_key = lines_by_key(&lines);
    assert_eq!(by_key.len() as u64, CHARGES);
    assert_one_key_per_operation(&by_key, "charge");
    let timeouts = lines.iter().filter(|l| l["cause"] == "timeout").count() as u64;
    // Each held request timed out; on a slow machine a passed one may too.
    assert!(
        timeouts >= counts.delays,
        "{timeouts} timeouts, {counts:?}: {lines:?}"
    );
    assert_budget_arithmetic(&lines);
    // The held originals arrived too; each key ran once (the two accounts and the charges), so
    // they were answered from the store (or as in flight) and moved nothing.
    assert_each_charge_applied_once(&ep, CHARGES, &answers).await;
    let text = metrics(&ep).await;
    let outcome = |o| {
        metric(
            &text,
            "onceledger_idempotency_requests_total",
            &[("outcome", o)],
        )
    };
    assert_eq!(
        outcome("new"),
        (CHARGES + 2) as f64,
        "one execution per key"
    );
    assert!(
        outcome("replayed") + outcome("in_flight") >= counts.delays as f64,
        "the held originals reached the server: {counts:?}"
    );
    eprintln!(
        "{CHARGES} charges, {} attempts, {timeouts} timeouts; proxy {counts:?}",
        client.attempts_total()
    );
    drop(proxy);
    server.check().await;
}

/// Guards the command line: `onceledger charge` through a proxy that loses its first answer
/// retries with the same key, gets the stored charge back as a replay, exits 0, and its
/// transcript shows both attempts under one key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charge_command_retries_a_lost_answer_with_the_same_key() {
    let server = Server::start().await;
    let ep = server.endpoint();
    create_payer_and_payee(&ep).await;
    let rates = FaultRates {
        lost_response: 0.5,
        reset: 0.0,
        delay: 0.0,
    };
    // The first seed whose plan loses the first answer and passes the second.
    let seed = (0..1000u64)
        .find(|&seed| {
            let mut plan = FaultPlan::new(rates, seed);
            plan.next_fault() == Fault::LostResponse && plan.next_fault() == Fault::Pass
        })
        .expect("such a seed");
    let proxy = start_proxy(&server, seed, rates, Duration::ZERO).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let transcript = dir.path().join("charge.jsonl");
    let done = run_bounded(
        Command::new(BIN)
            .env_remove("ONCELEDGER_URL")
            .env("ONCELEDGER_TOKEN", ep.token().expect("admin token"))
            .args([
                "charge", "--from", "payer", "--to", "payee", "--amount", "1250",
            ])
            .args(["--currency", "EUR", "--metadata", "order=A-17"])
            .args([
                "--backoff-base",
                "1ms",
                "--url",
                &proxy.url(),
                "--transcript",
            ])
            .arg(&transcript),
        REQUEST_DEADLINE,
    )
    .await;
    assert_eq!(
        done.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        done.stdout,
        done.stderr
    );
    let body: Value = serde_json::from_str(done.stdout.trim()).expect("the charge on stdout");
    assert_eq!(body["amount"], 1250);
    assert_eq!(body["metadata"]["order"], "A-17");
    assert!(
        done.stderr.contains("attempts=2 status=201 replayed"),
        "{}",
        done.stderr
    );

    let lines = read_transcript(&transcript);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(
        lines[0]["key"], lines[1]["key"],
        "one key for both attempts"
    );
    assert_eq!(lines[0]["decision"], "retry");
    assert_eq!(lines[0]["cause"], "connection_lost");
    assert!(lines[0]["status"].is_null());
    assert_eq!(lines[1]["status"], 201);
    assert_eq!(lines[1]["replayed"], true);
    assert_eq!(balance(&ep, "payee").await, 1250, "the money moved once");
    assert_eq!(proxy.counts().lost_responses, 1);
    drop(proxy);
    server.check().await;
}

/// Guards the retry budget during an outage: 200 tasks of one call site keep trying a server
/// that is not there (a closed port), each allowed 50 attempts. Without the budget that is up
/// to 10,000 attempts and more the longer it lasts; with it, every task gets its first attempt
/// and the call site as a whole at most capacity / retry cost = 100 retries, then fails fast.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_attempts_stay_bounded_by_the_retry_budget() {
    const TASKS: u64 = 200;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
        // Dropped here: nothing listens on the port any more.
    };
    let budget = Arc::new(RetryBudget::default());
    let client = Client::new(
        &format!("http://{closed}"),
        ClientConfig {
            backoff: fast_backoff(),
            attempts_max: 50,
            budget: Arc::clone(&budget),
            ..ClientConfig::default()
        },
    )
    .expect("client");
    let tasks: Vec<_> = (0..TASKS)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { client.create_charge(&charge(i + 1)).await })
        })
        .collect();
    let mut by_reason: BTreeMap<String, u64> = BTreeMap::new();
    for task in tasks {
        let result = tokio::time::timeout(OPERATIONS_DEADLINE, task)
            .await
            .expect("every task ends within the deadline")
            .expect("task");
        match result {
            Err(ClientError::GaveUp { reason, .. }) => {
                let reason = match reason {
                    GiveUp::Budget => "budget",
                    GiveUp::Attempts => "attempts",
                    GiveUp::RetryAfter(_) => "retry_after",
                };
                *by_reason.entry(reason.to_owned()).or_default() += 1;
            }
            other => panic!("nothing listens, yet: {other:?}"),
        }
    }
    let attempts = client.attempts_total();
    let bound = TASKS + u64::from(CAPACITY_DEFAULT / RETRY_COST);
    eprintln!(
        "outage: {TASKS} operations made {attempts} attempts (bound {bound}); gave up by {by_reason:?}; \
         {} tokens left",
        budget.tokens()
    );
    assert!(attempts >= TASKS, "every operation gets its first attempt");
    assert!(attempts <= bound, "{attempts} attempts exceed {bound}");
    assert!(
        budget.tokens() < RETRY_COST,
        "the outage drained the bucket"
    );
    assert_eq!(
        by_reason.get("budget").copied().unwrap_or(0),
        TASKS,
        "{by_reason:?}"
    );
}

/// Runs `onceledger ARGS` against `url` with the admin token of `ep`; returns (exit code,
/// stdout as JSON, stderr).
async fn cli(ep: &Endpoint, url: &str, args: &[&str]) -> (Option<i32>, Value, String) {
    let done = run_bounded(
        Command::new(BIN)
            .env_remove("ONCELEDGER_URL")
            .env("ONCELEDGER_TOKEN", ep.token().expect("admin token"))
            .args(args)
            .args(["--backoff-base", "1ms", "--attempts", "20", "--url", url]),
        REQUEST_DEADLINE,
    )
    .await;
    let body = serde_json::from_str(done.stdout.trim()).unwrap_or(Value::Null);
    (done.status.code(), body, done.stderr)
}

/// Guards the lifecycle commands through a proxy that loses half the answers: `charge
/// --no-capture`, `capture --amount`, `refund`, `void` and `transfer` each retry with their one
/// key and the money moves once; a capture of a voided authorization exits 4 with the stored
/// charge-state-invalid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_commands_retry_lost_answers_and_move_money_once() {
    let server = Server::start().await;
    let ep = server.endpoint();
    create_payer_and_payee(&ep).await;
    let rates = FaultRates {
        lost_response: 0.5,
        reset: 0.0,
        delay: 0.0,
    };
    let proxy = start_proxy(&server, 7, rates, Duration::ZERO).await;
    let url = proxy.url();
    let held_args = [
        "charge",
        "--from",
        "payer",
        "--to",
        "payee",
        "--amount",
        "900",
        "--currency",
        "EUR",
        "--no-capture",
        "--expires-in",
        "3600",
    ];
    let (code, held, err) = cli(&ep, &url, &held_args).await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(held["status"], "authorized", "{held}");
    let id = held["id"].as_str().expect("an id").to_owned();
    let (code, captured, err) = cli(&ep, &url, &["capture", &id, "--amount", "700"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        (&captured["status"], &captured["amount_captured"]),
        (&Value::from("succeeded"), &Value::from(700))
    );
    let (code, refund, err) = cli(&ep, &url, &["refund", &id, "--amount", "200"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(refund["amount"], 200, "{refund}");
    let (code, transfer, err) = cli(
        &ep,
        &url,
        &["transfer", "--currency", "EUR", "--leg", "payer:payee:50"],
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(transfer["legs"][0]["amount"], 50, "{transfer}");

    let second = cli(&ep, &url, &held_args).await.1;
    let second = second["id"].as_str().expect("an id").to_owned();
    let (code, voided, err) = cli(&ep, &url, &["void", &second]).await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(voided["status"], "canceled");
    let (code, refused, _) = cli(&ep, &url, &["capture", &second]).await;
    assert_eq!(code, Some(4), "a final decline: {refused}");
    assert_eq!(
        refused["type"], "/problems/charge-state-invalid",
        "{refused}"
    );

    let payee = account(&ep, "payee").await;
    assert_eq!(
        (
            &payee["credits_posted"],
            &payee["debits_posted"],
            &payee["credits_pending"]
        ),
        (&Value::from(750), &Value::from(200), &Value::from(0)),
        "700 captured and 50 transferred in, 200 refunded out, nothing held: {payee}"
    );
    assert!(proxy.counts().lost_responses > 0, "the proxy lost answers");
    drop(proxy);
    server.check().await;
}

/// Runs `onceledger client list ARGS` against `url` with the admin token of `ep`; returns (exit
/// code, the items printed, one JSON line each, stderr).
async fn list_cli(ep: &Endpoint, url: &str, args: &[&str]) -> (Option<i32>, Vec<Value>, String) {
    let done = run_bounded(
        Command::new(BIN)
            .env_remove("ONCELEDGER_URL")
            .env("ONCELEDGER_TOKEN", ep.token().expect("admin token"))
            .args(["client", "list"])
            .args(args)
            .args(["--backoff-base", "1ms", "--attempts", "20", "--url", url]),
        REQUEST_DEADLINE,
    )
    .await;
    let items = done
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect();
    (done.status.code(), items, done.stderr)
}

fn ids_of(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|item| item["id"].as_str().expect("an id").to_owned())
        .collect()
}

/// Guards `onceledger client list` against the server's lists (issue 20): 25 accounts walked 7
/// at a time through a proxy that loses a third of the answers come out once each, in creation
/// order; newest first is the reverse; `--max` stops early and says the list goes on; an unknown
/// cursor exits 4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_command_follows_has_more_through_lost_answers() {
    let server = Server::start().await;
    let ep = server.endpoint();
    // Zero-padded, so creation order is also id order within one millisecond.
    let created: Vec<String> = (0..25).map(|i| format!("list-{i:02}")).collect();
    for id in &created {
        create_account(&ep, id, "EUR", Some(0)).await;
    }
    let rates = FaultRates {
        lost_response: 0.33,
        reset: 0.0,
        delay: 0.0,
    };
    let proxy = start_proxy(&server, 11, rates, Duration::ZERO).await;
    let url = proxy.url();

    let (code, items, err) = list_cli(
        &ep,
        &url,
        &["/v1/accounts", "--limit", "7", "--order", "asc"],
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(ids_of(&items), created, "each account once, oldest first");
    assert!(err.contains("items=25 pages=4 has_more=false"), "{err}");
    assert!(
        items.iter().all(|a| a["currency"] == "EUR"),
        "whole accounts"
    );

    let (code, items, err) = list_cli(&ep, &url, &["/v1/accounts", "--limit", "7"]).await;
    assert_eq!(code, Some(0), "{err}");
    let mut newest_first = created.clone();
    newest_first.reverse();
    assert_eq!(ids_of(&items), newest_first, "newest first by default");

    let (code, items, err) = list_cli(
        &ep,
        &url,
        &[
            "/v1/accounts",
            "--order",
            "asc",
            "--limit",
            "7",
            "--max",
            "10",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(ids_of(&items), created[..10]);
    assert!(err.contains("items=10 pages=2 has_more=true"), "{err}");

    let (code, items, err) = list_cli(
        &ep,
        &url,
        &["/v1/accounts", "--param", "starting_after=no-such-account"],
    )
    .await;
    assert_eq!(code, Some(4), "an unknown cursor is a 400: {err}");
    assert!(items.is_empty() && err.contains("HTTP 400"), "{err}");
    assert!(proxy.counts().lost_responses > 0, "the proxy lost answers");
    drop(proxy);
    server.check().await;
}
