//! A charge workload for the crash and shutdown tests: several tasks send charges with fresh
//! keys until told to stop, recording every key they sent and what (if anything) came back;
//! then the reconciliation that proves each key moved money at most once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::harness::{
    Endpoint, Resp, account, all_events, assert_dense, assert_replay_of, charge_body,
    create_account, new_client,
};

/// The accounts of the workload: per currency one funding account (no limit) and shops.
pub const CURRENCIES: [&str; 2] = ["EUR", "USD"];
pub const SHOPS_PER_CURRENCY: usize = 3;
/// Upper bound on the requests of one worker in one run (the loop is bounded).
const REQUESTS_PER_WORKER_MAX: usize = 5_000;
/// How long the workload may take to reach its acknowledgement target.
const ACKS_DEADLINE: Duration = Duration::from_secs(60);
/// How long the workers may take to stop once told to.
const STOP_DEADLINE: Duration = Duration::from_secs(60);

pub fn funding(currency: &str) -> String {
    format!("fund-{currency}")
}

pub fn shop(currency: &str, i: usize) -> String {
    format!("shop-{currency}-{i}")
}

pub fn all_accounts() -> Vec<String> {
    let mut ids = Vec::new();
    for c in CURRENCIES {
        ids.push(funding(c));
        for i in 0..SHOPS_PER_CURRENCY {
            ids.push(shop(c, i));
        }
    }
    ids
}

pub async fn create_accounts(ep: &Endpoint) {
    for c in CURRENCIES {
        create_account(ep, &funding(c), c, None).await;
        for i in 0..SHOPS_PER_CURRENCY {
            create_account(ep, &shop(c, i), c, Some(0)).await;
        }
    }
}

/// One request the workload sent.
pub struct Sent {
    pub key: String,
    pub body: String,
    pub source: String,
    pub destination: String,
    pub amount: i64,
    /// The answer, or the transport error when none came.
    pub answer: Result<Resp, String>,
}

impl Sent {
    /// The answer if it acknowledged the charge (201).
    pub fn acked(&self) -> Option<&Resp> {
        self.answer.as_ref().ok().filter(|r| r.status == 201)
    }
}

pub struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
    progress: Arc<Notify>,
    workers: Vec<JoinHandle<Vec<Sent>>>,
}

impl Load {
    /// Starts `workers` tasks, each on its own client, sending charges with keys
    /// `{run}-w{worker}-{i}`.
    pub fn start(ep: &Endpoint, run: &str, workers: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicUsize::new(0));
        let progress = Arc::new(Notify::new());
        let workers = (0..workers)
            .map(|w| {
                let ep = ep.with_client(new_client());
                let run = run.to_owned();
                let (stop, acked, progress) = (stop.clone(), acked.clone(), progress.clone());
                tokio::spawn(async move {
                    let mut sent = Vec::new();
                    for i in 0..REQUESTS_PER_WORKER_MAX {
                        if stop.load(Ordering::Acquire) {
                            break;
                        }
                        let currency = CURRENCIES[(w + i) % CURRENCIES.len()];
                        let source = funding(currency);
                        let destination = shop(currency, (i / 2 + w) % SHOPS_PER_CURRENCY);
                        let amount = 1 + ((i * 7 + w * 13) % 97) as i64;
                        let key = format!("{run}-w{w}-{i}");
                        let body = charge_body(&source, &destination, amount, currency);
                        let answer = ep.try_post("/v1/charges", Some(&key), &body).await;
                        let failed = answer.is_err();
                        if answer.as_ref().is_ok_and(|r| r.status == 201) {
                            acked.fetch_add(1, Ordering::AcqRel);
                            progress.notify_waiters();
                        }
                        sent.push(Sent {
                            key,
                            body,
                            source,
                            destination,
                            amount,
                            answer,
                        });
                        if failed {
                            // The server is gone (killed or shutting down): stop this worker.
                            break;
                        }
                    }
                    progress.notify_waiters();
                    sent
                })
            })
            .collect();
        Load {
            stop,
            acked,
            progress,
            workers,
        }
    }

    /// Waits until at least `target` charges were acknowledged in this run.
    pub async fn wait_for_acks(&self, target: usize) {
        let wait = async {
            loop {
                let notified = self.progress.notified();
                if self.acked.load(Ordering::Acquire) >= target {
                    return;
                }
                if self.workers.iter().all(JoinHandle::is_finished) {
                    panic!(
                        "every worker stopped after {} acknowledged charges (target {target})",
                        self.acked.load(Ordering::Acquire)
                    );
                }
                notified.await;
            }
        };
        if tokio::time::timeout(ACKS_DEADLINE, wait).await.is_err() {
            panic!(
                "only {} charges acknowledged within {ACKS_DEADLINE:?} (target {target})",
                self.acked.load(Ordering::Acquire)
            );
        }
    }

    /// Tells the workers to stop and collects everything they sent.
    pub async fn finish(self) -> Vec<Sent> {
        self.stop.store(true, Ordering::Release);
        join_workers(self.workers).await
    }
}

/// Everything the workers sent, once each has stopped (each within `STOP_DEADLINE`).
pub async fn join_workers<T>(workers: Vec<JoinHandle<Vec<T>>>) -> Vec<T> {
    let mut all = Vec::new();
    for worker in workers {
        match tokio::time::timeout(STOP_DEADLINE, worker).await {
            Ok(Ok(sent)) => all.extend(sent),
            Ok(Err(e)) => panic!("a load worker panicked: {e}"),
            Err(_) => panic!("a load worker did not stop within {STOP_DEADLINE:?}"),
        }
    }
    all
}

/// Every acknowledged charge is still there (GET) and its key replays the same bytes.
pub async fn verify_acked(ep: &Endpoint, sent: &[Sent]) -> usize {
    let mut verified = 0;
    for s in sent {
        let Some(acked) = s.acked() else { continue };
        let charge = acked.json();
        let id = charge["id"].as_str().unwrap_or_default();
        let got = ep.get(&format!("/v1/charges/{id}")).await;
        assert_eq!(
            got.status, 200,
            "acknowledged charge {id} (key {}) lost: {got}",
            s.key
        );
        assert_eq!(got.json(), charge, "charge {id} changed");
        let replay = ep.post("/v1/charges", Some(&s.key), &s.body).await;
        assert_replay_of(&replay, acked);
        verified += 1;
    }
    verified
}

/// Re-sends every key ever sent. Each must now answer 201 (fresh or replayed), acknowledged
/// keys with their original charge; then the balances must equal exactly one application per
/// key, sum to zero per currency, and the events must be dense and carry those charges.
pub struct Reconciled {
    /// Distinct charges, one per key.
    pub charges: usize,
    /// Keys that got no 201 when first sent but had been applied (their re-send was a replay).
    pub applied_unanswered: Vec<String>,
}

pub async fn resend_all_and_reconcile(ep: &Endpoint, sent: &[Sent]) -> Reconciled {
    let mut keys = HashSet::new();
    let mut charge_ids = HashSet::new();
    let mut charges: Vec<Value> = Vec::new();
    let mut expected: HashMap<String, i64> = HashMap::new();
    let mut unacked = 0usize;
    let mut applied_unanswered = Vec::new();
    for s in sent {
        assert!(
            keys.insert(s.key.clone()),
            "the workload reused key {}",
            s.key
        );
        let resp = ep.post("/v1/charges", Some(&s.key), &s.body).await;
        assert_eq!(
            resp.status, 201,
            "re-sending key {} must apply it or replay it: {resp}",
            s.key
        );
        match s.acked() {
            Some(acked) => assert_replay_of(&resp, acked),
            None => {
                unacked += 1;
                if resp.replayed() {
                    applied_unanswered.push(format!("{} (first answer: {:?})", s.key, s.answer));
                }
            }
        }
        let charge = resp.json();
        assert_eq!(charge["amount"], s.amount, "{charge}");
        let id = charge["id"].as_str().unwrap_or_default().to_owned();
        assert!(
            charge_ids.insert(id.clone()),
            "two keys answered with the same charge {id}"
        );
        charges.push(charge);
        *expected.entry(s.source.clone()).or_default() -= s.amount;
        *expected.entry(s.destination.clone()).or_default() += s.amount;
    }
    eprintln!(
        "reconcile: {} keys sent, {} acknowledged, {unacked} unacknowledged of which {} had \
         been applied",
        sent.len(),
        sent.len() - unacked,
        applied_unanswered.len()
    );

    let mut sums: BTreeMap<String, i64> = BTreeMap::new();
    for id in all_accounts() {
        let acct = account(ep, &id).await;
        let bal = acct["balance"].as_i64().unwrap_or_else(|| panic!("{acct}"));
        assert_eq!(
            bal,
            expected.get(&id).copied().unwrap_or_default(),
            "account {id}: the balance must be one application of each key: {acct}"
        );
        let currency = acct["currency"].as_str().unwrap_or_default().to_owned();
        *sums.entry(currency).or_default() += bal;
    }
    for (currency, sum) in &sums {
        assert_eq!(*sum, 0, "balances of {currency} must sum to zero: {sums:?}");
    }

    let events = all_events(ep, 1000).await;
    assert_dense(&events);
    assert_eq!(
        events.len(),
        all_accounts().len() + charges.len(),
        "one event per account and per distinct charge"
    );
    for charge in &charges {
        let seq = charge["event_seq"].as_u64().unwrap_or_default();
        let event = events
            .get((seq as usize).wrapping_sub(1))
            .unwrap_or_else(|| panic!("charge {charge} points at missing event {seq}"));
        assert_eq!(&event["data"]["charge"], charge, "event {seq}");
    }
    Reconciled {
        charges: charges.len(),
        applied_unanswered,
    }
}
