//! SIGKILL under a mixed lifecycle load (authorizations captured whole or in part, voided, left
//! to expire; refunds; transfers), with the store's rare moments every few batches: nothing
//! acknowledged is lost, nothing is doubled, holds are exact, and expiry still happens after
//! the restart.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::harness::{
    Endpoint, Resp, Server, account, assert_replay_of, create_account, eventually, new_client,
};
use crate::load::join_workers;

const CRASHES: usize = 3;
const WORKERS: usize = 3;
const CUSTOMERS: [&str; 3] = ["cust-0", "cust-1", "cust-2"];
const SHOPS: [&str; 2] = ["shop-0", "shop-1"];
const PAYMENTS_PER_WORKER_MAX: usize = 2_000;
const ACKS_DEADLINE: Duration = Duration::from_secs(60);
const EXPIRY_DEADLINE: Duration = Duration::from_secs(30);

/// One request a worker sent, and its answer (or the transport error).
struct Sent {
    path: String,
    key: String,
    body: String,
    answer: Result<Resp, String>,
}

impl Sent {
    /// A final answer: anything but a retryable one (409, 5xx) or none.
    fn final_answer(&self) -> Option<&Resp> {
        self.answer
            .as_ref()
            .ok()
            .filter(|r| r.status != 409 && r.status < 500)
    }
}

/// What payment `i` of worker `w` does after its authorization: mostly a capture (every third
/// one partial), a void, or nothing (a short authorization, left to expire); a refund after some
/// captures; and a transfer every seventh payment.
#[derive(Clone, Copy)]
enum Plan {
    CaptureWhole { refund: bool },
    CapturePart,
    Void,
    Expire,
}

fn plan(w: usize, i: usize) -> Plan {
    match (w * 7 + i) % 6 {
        0 | 1 => Plan::CaptureWhole {
            refund: i.is_multiple_of(2),
        },
        2 => Plan::CapturePart,
        3 => Plan::Void,
        4 => Plan::Expire,
        _ => Plan::CaptureWhole { refund: false },
    }
}

async fn send(
    ep: &Endpoint,
    sent: &mut Vec<Sent>,
    path: &str,
    key: String,
    body: String,
) -> Option<Value> {
    let answer = ep.try_post(path, Some(&key), &body).await;
    let ok = answer
        .as_ref()
        .ok()
        .filter(|r| matches!(r.status, 200 | 201))
        .map(Resp::json);
    sent.push(Sent {
        path: path.to_owned(),
        key,
        body,
        answer,
    });
    ok
}

/// Worker `w`'s payments of run `run`, until told to stop or the server is gone.
async fn worker(
    ep: Endpoint,
    run: usize,
    w: usize,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
    progress: Arc<Notify>,
) -> Vec<Sent> {
    let mut sent = Vec::new();
    for i in 0..PAYMENTS_PER_WORKER_MAX {
        if stop.load(Ordering::Acquire) || sent.last().is_some_and(|s: &Sent| s.answer.is_err()) {
            break;
        }
        let source = CUSTOMERS[(w + i) % CUSTOMERS.len()];
        let destination = SHOPS[i % SHOPS.len()];
        let amount = 10 + ((i * 13 + w * 7) % 90) as i64;
        let plan = plan(w, i);
        let mut body = json!({"source": source, "destination": destination, "amount": amount,
                              "currency": "EUR", "capture": false});
        if matches!(plan, Plan::Expire) {
            body["expires_in"] = json!(60);
        }
        let prefix = format!("r{run}-w{w}-p{i}");
        let Some(charge) = send(
            &ep,
            &mut sent,
            "/v1/charges",
            format!("{prefix}-auth"),
            body.to_string(),
        )
        .await
        else {
            continue;
        };
        let id = charge["id"].as_str().unwrap_or_default().to_owned();
        let settled = match plan {
            Plan::CaptureWhole { .. } => {
                send(
                    &ep,
                    &mut sent,
                    &format!("/v1/charges/{id}/capture"),
                    format!("{prefix}-cap"),
                    "{}".into(),
                )
                .await
            }
            Plan::CapturePart => {
                send(
                    &ep,
                    &mut sent,
                    &format!("/v1/charges/{id}/capture"),
                    format!("{prefix}-cap"),
                    json!({"amount": amount / 2}).to_string(),
                )
                .await
            }
            Plan::Void => {
                send(
                    &ep,
                    &mut sent,
                    &format!("/v1/charges/{id}/void"),
                    format!("{prefix}-void"),
                    "{}".into(),
                )
                .await
            }
            Plan::Expire => None,
        };
        if settled.is_some() {
            acked.fetch_add(1, Ordering::AcqRel);
            progress.notify_waiters();
        }
        if matches!(plan, Plan::CaptureWhole { refund: true }) && settled.is_some() {
            let refund = json!({"charge": id, "amount": amount / 3}).to_string();
            send(
                &ep,
                &mut sent,
                "/v1/refunds",
                format!("{prefix}-ref"),
                refund,
            )
            .await;
        }
        if i.is_multiple_of(7) {
            let transfer = json!({"currency": "EUR", "legs": [
                {"source": source, "destination": destination, "amount": 5},
                {"source": destination, "destination": "platform", "amount": 1}]});
            send(
                &ep,
                &mut sent,
                "/v1/transfers",
                format!("{prefix}-tr"),
                transfer.to_string(),
            )
            .await;
        }
    }
    progress.notify_waiters();
    sent
}

/// Starts the workers, waits for `target` settled payments, SIGKILLs the server, and returns
/// everything sent.
async fn run_until_killed(server: &mut Server, run: usize, target: usize) -> Vec<Sent> {
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let progress = Arc::new(Notify::new());
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let ep = server.endpoint().with_client(new_client());
            tokio::spawn(worker(
                ep,
                run,
                w,
                stop.clone(),
                acked.clone(),
                progress.clone(),
            ))
        })
        .collect();
    let reached = tokio::time::timeout(ACKS_DEADLINE, async {
        while acked.load(Ordering::Acquire) < target {
            let notified = progress.notified();
            if workers.iter().all(|w| w.is_finished()) {
                return;
            }
            notified.await;
        }
    })
    .await;
    assert!(
        reached.is_ok(),
        "{target} payments not settled within {ACKS_DEADLINE:?}"
    );
    server.kill_hard().await;
    stop.store(true, Ordering::Release);
    join_workers(workers).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_a_lifecycle_load_loses_nothing_and_doubles_nothing() {
    // Guards durability and exactly-once for the lifecycle: SIGKILL three times under a load of
    // authorizations (captured whole or in part, voided, left to expire in 0.6 s), refunds and
    // transfers, with checkpoints, account flushes and key merges every few batches; after each
    // restart every final answer replays byte for byte; at the end every key is sent again, every
    // short authorization left alone has expired (some of them after a restart), and the four
    // totals of every account are exactly what the charges, refunds and transfers say. Statement
    // lines merge a slice per commit here, so each kill leaves some in the table and some only
    // in memory: after the restarts every statement is each posting once, its balances the
    // running sums, ending at the account's, and `check` finds the indexes agree.
    let env = [
        ("ONCELEDGER_FAULT_AUTHORIZATION_SECOND_MS", "10"),
        (
            "ONCELEDGER_FAULT_MARKS",
            "journal=3,accounts=3,keys=4,key_slice=1,lines=4,line_slice=1",
        ),
    ];
    let mut server = Server::start_with_env(&[], &env).await;
    let ep = server.endpoint();
    for id in CUSTOMERS {
        create_account(&ep, id, "EUR", None).await;
    }
    for id in SHOPS.iter().chain(&["platform"]) {
        create_account(&ep, id, "EUR", Some(0)).await;
    }
    let mut sent: Vec<Sent> = Vec::new();
    for run in 0..CRASHES {
        sent.extend(run_until_killed(&mut server, run, 20 + 25 * run).await);
        server.restart().await;
        let ep = server.endpoint();
        let replayed = replay_final_answers(&ep, &sent).await;
        eprintln!(
            "crash {run}: {} requests sent, {replayed} final answers replayed",
            sent.len()
        );
    }
    // Every key once more: the unanswered ones get their answer now (stored, or run now).
    let ep = server.endpoint();
    let mut answers: Vec<Resp> = Vec::with_capacity(sent.len());
    for s in &sent {
        let again = ep.post(&s.path, Some(&s.key), &s.body).await;
        if let Some(first) = s.final_answer() {
            assert_replay_of(&again, first);
        }
        assert!(
            again.status < 500 && again.status != 409,
            "{} {}: {again}",
            s.path,
            s.key
        );
        answers.push(again);
    }
    resolve_unfinished(&ep, &sent, &answers).await;
    wait_for_expiries(&ep, &charges_of(&answers)).await;
    assert_totals_exact(&ep, &sent, &answers).await;
    for id in CUSTOMERS.iter().chain(&SHOPS).chain(&["platform"]) {
        assert_statement_sums(&ep, id).await;
    }
    let summary = server.check().await;
    assert_eq!(summary["authorizations_open"], 0, "{summary}");
}

/// Walks `id`'s statement oldest first, 7 postings a page: each posting once, `balance_after`
/// the running sum of its posted lines and `available_after` that less what is held, the last
/// of them the account's own balance and available.
async fn assert_statement_sums(ep: &Endpoint, id: &str) {
    let (mut balance, mut held, mut seen) = (0i64, 0i64, std::collections::HashSet::new());
    let mut cursor = String::new();
    loop {
        let page = ep
            .get(&format!(
                "/v1/accounts/{id}/postings?order=asc&limit=7{cursor}"
            ))
            .await;
        assert_eq!(page.status, 200, "{page}");
        let page = page.json();
        for posting in page["data"].as_array().into_iter().flatten() {
            assert!(
                seen.insert(posting["id"].to_string()),
                "{id}: twice {posting}"
            );
            let amount = posting["amount"].as_i64().unwrap_or_default();
            let sign = if posting["direction"] == "credit" {
                1
            } else {
                -1
            };
            match posting["entry_type"].as_str() {
                Some("authorization") if sign < 0 => held += amount,
                Some("release") if sign < 0 => held -= amount,
                Some("authorization" | "release") => {}
                _ => balance += sign * amount,
            }
            assert_eq!(posting["balance_after"], json!(balance), "{id}: {posting}");
            assert_eq!(
                posting["available_after"],
                json!(balance - held),
                "{id}: {posting}"
            );
            cursor = format!(
                "&starting_after={}",
                posting["id"].as_str().unwrap_or_default()
            );
        }
        if page["has_more"] != json!(true) {
            break;
        }
    }
    let a = account(ep, id).await;
    assert_eq!(
        (a["balance"].clone(), a["available"].clone()),
        (json!(balance), json!(balance - held)),
        "{id}: {a}"
    );
}

/// Every final answer so far replays byte for byte; returns how many.
async fn replay_final_answers(ep: &Endpoint, sent: &[Sent]) -> usize {
    let mut replayed = 0;
    for s in sent {
        if let Some(first) = s.final_answer() {
            assert_replay_of(&ep.post(&s.path, Some(&s.key), &s.body).await, first);
            replayed += 1;
        }
    }
    replayed
}

/// The ids of every authorization that was made.
fn charges_of(answers: &[Resp]) -> Vec<String> {
    answers
        .iter()
        .filter(|a| a.status == 201)
        .filter_map(|a| {
            a.json()["id"]
                .as_str()
                .filter(|id| id.starts_with("ch_"))
                .map(str::to_owned)
        })
        .collect()
}

/// A long authorization whose answer a kill took never got its capture or void (the worker did
/// not know its id); it ran when its key was sent again. A client resolves it: void.
async fn resolve_unfinished(ep: &Endpoint, sent: &[Sent], answers: &[Resp]) {
    for (s, answer) in sent.iter().zip(answers) {
        if s.path != "/v1/charges" || answer.status != 201 || s.body.contains("expires_in") {
            continue;
        }
        let id = answer.json()["id"].as_str().unwrap_or_default().to_owned();
        if ep.get(&format!("/v1/charges/{id}")).await.json()["status"] == "authorized" {
            let voided = ep
                .post(
                    &format!("/v1/charges/{id}/void"),
                    Some(&format!("resolve-{id}")),
                    "{}",
                )
                .await;
            assert_eq!(voided.status, 200, "{voided}");
        }
    }
}

/// Short authorizations nobody captured or voided all end expired.
async fn wait_for_expiries(ep: &Endpoint, charges: &[String]) {
    for id in charges {
        let path = format!("/v1/charges/{id}");
        eventually(&format!("charge {id} ends"), EXPIRY_DEADLINE, || {
            let (ep, path) = (ep.clone(), path.clone());
            async move { (ep.get(&path).await.json()["status"] != "authorized").then_some(()) }
        })
        .await;
    }
}

/// Every account's four totals, recomputed from the charges as they stand (GET), the refunds
/// and the transfers that succeeded: posted, and nothing pending.
async fn assert_totals_exact(ep: &Endpoint, sent: &[Sent], answers: &[Resp]) {
    let mut posted: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    let debit = |posted: &mut BTreeMap<String, (i64, i64)>, from: &str, to: &str, amount: i64| {
        posted.entry(from.to_owned()).or_default().0 += amount;
        posted.entry(to.to_owned()).or_default().1 += amount;
    };
    let (mut captured, mut expired) = (0, 0);
    for id in charges_of(answers) {
        let charge = ep.get(&format!("/v1/charges/{id}")).await.json();
        let (from, to) = (
            charge["source"].as_str().unwrap_or_default(),
            charge["destination"].as_str().unwrap_or_default(),
        );
        debit(
            &mut posted,
            from,
            to,
            charge["amount_captured"].as_i64().unwrap_or_default(),
        );
        // A refund moves back along the charge.
        debit(
            &mut posted,
            to,
            from,
            charge["amount_refunded"].as_i64().unwrap_or_default(),
        );
        match charge["status"].as_str() {
            Some("succeeded") => captured += 1,
            Some("expired") => expired += 1,
            _ => {}
        }
    }
    for (s, answer) in sent.iter().zip(answers) {
        if s.path == "/v1/transfers" && answer.status == 201 {
            for leg in answer.json()["legs"].as_array().into_iter().flatten() {
                let amount = leg["amount"].as_i64().unwrap_or_default();
                debit(
                    &mut posted,
                    leg["source"].as_str().unwrap_or_default(),
                    leg["destination"].as_str().unwrap_or_default(),
                    amount,
                );
            }
        }
    }
    eprintln!(
        "{captured} captured, {expired} expired; totals of {} accounts checked",
        posted.len()
    );
    assert!(
        captured > 0 && expired > 0,
        "the load captured {captured} and expired {expired}"
    );
    for (id, (debits, credits)) in posted {
        let a = account(ep, &id).await;
        let totals = (
            &a["debits_posted"],
            &a["credits_posted"],
            &a["debits_pending"],
            &a["credits_pending"],
        );
        assert_eq!(
            totals,
            (&json!(debits), &json!(credits), &json!(0), &json!(0)),
            "account {id}: {a}"
        );
    }
}
