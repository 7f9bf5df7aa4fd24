//! Crashes at the rare moments (issue 21): SIGKILL lands on a checkpoint, an account flush or a
//! key merge, again and again.
//!
//! In production the store checkpoints its journal every 1,024 batches, flushes its account
//! overlay every 65,536 charges and starts merging keys at 65,536 in memory, so a kill almost never
//! meets one of them. Here the server runs with the small marks of `Marks::SMALL`
//! (`ONCELEDGER_FAULT_MARKS`, a test-build knob): each happens every few batches, and a kill at a
//! random depth of a concurrent load (new charges, new accounts, replays) lands before, inside or
//! just after one. After every kill: `onceledger check` on the killed directory is clean; the
//! restart reaches /readyz having replayed no more than the marks allow (work, not time); every
//! key whose answer was lost is re-sent and must apply or replay; every key ever answered
//! replays byte for byte; every balance is exactly one application of each key. At the end the
//! events are dense and `onceledger check` counts exactly the charges, events and keys sent.
//!
//! `ONCELEDGER_CRASH_CYCLES` sets the number of kills (CI runs a few; `scripts/crash/cycles.sh`
//! runs 100 or more) and `ONCELEDGER_CRASH_SEED` replays a run's kill depths and workload.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use onceledger_core::store::Marks;
use tokio::sync::watch;

use crate::crash::check_command;
use crate::harness::{
    BIN, Endpoint, Resp, STARTUP_DEADLINE, Server, account, account_body, all_events, assert_dense,
    assert_replay_of, charge_body, eventually, metric, metrics, new_client, run_bounded,
};
use crate::load::{CURRENCIES, all_accounts, create_accounts, funding, join_workers, shop};

/// Kills in a CI run: enough to cross every mark many times, in well under a minute.
const CYCLES_DEFAULT: usize = 25;
const WORKERS: usize = 4;
/// A kill comes after this many acknowledged new keys of its cycle, drawn at random: deep enough
/// to cross every mark, shallow enough that kills are many.
const ACKS_BEFORE_KILL_MIN: usize = 20;
const ACKS_BEFORE_KILL_MAX: usize = 120;
/// Requests of one worker in one cycle at most (the loop is bounded; the kill comes far sooner).
const REQUESTS_PER_WORKER_MAX: usize = 10_000;
const ACKS_DEADLINE: Duration = Duration::from_secs(60);
/// How long a restarted server may take to answer /readyz (a deadline against hangs, not a
/// speed claim: the figures are printed and BENCHMARKS.md has them).
const READY_DEADLINE: Duration = Duration::from_secs(60);
/// Concurrent re-senders in the verification after each restart.
const VERIFIERS: usize = 4;

/// What the recovery of one open logged (`store/recovery.rs`), for the work bounds.
const LOG_REPLAYED_BATCHES: &str = "batches journaled after the last checkpoint replayed";
const LOG_KEYS_READ_BACK: &str = "finished keys read back into memory";
const LOG_POSTINGS_REAPPLIED: &str = "account balances brought up to the last commit";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_checkpoints_flushes_and_merges_loses_nothing_and_doubles_nothing() {
    let cycles = env_number("ONCELEDGER_CRASH_CYCLES").unwrap_or(CYCLES_DEFAULT as u64) as usize;
    let seed = env_number("ONCELEDGER_CRASH_SEED").unwrap_or_else(seed_from_clock);
    eprintln!(
        "rare moments: {cycles} kill cycles, seed {seed}, marks {}",
        Marks::SMALL
    );
    let marks = Marks::SMALL.to_string();
    let mut server = Server::start_with_env(&[], &[("ONCELEDGER_FAULT_MARKS", &marks)]).await;
    assert!(
        server
            .log_tail()
            .contains("marks moved by ONCELEDGER_FAULT_MARKS"),
        "the test build took the marks:\n{}",
        server.log_tail()
    );
    create_accounts(&server.endpoint()).await;
    let mut book = Book::new();
    let mut figures = Figures::default();
    let mut rng = Rng(seed);

    for cycle in 0..cycles {
        let target = ACKS_BEFORE_KILL_MIN + rng.below(ACKS_BEFORE_KILL_MAX - ACKS_BEFORE_KILL_MIN);
        let load = CycleLoad::start(&server.endpoint(), cycle, rng.next(), &book);
        load.wait_for_acks(target).await;
        // The last count of this process's moments before it dies: a lower bound of what the kill
        // went past (the counters restart at zero with each process).
        figures.count_moments(&metrics(&server.endpoint()).await);
        server.kill_hard().await;
        let sent = load.finish().await;
        book.take_answered(&sent);

        // `onceledger check` on what the kill left (it verifies a recovered copy).
        let report = check_command(server.data_dir()).await;
        assert!(
            report["charges"].as_u64() >= Some(book.charges() as u64),
            "cycle {cycle}: check counts fewer charges than were acknowledged: {report}"
        );

        let started = Instant::now();
        server.restart().await;
        wait_ready(&server.endpoint()).await;
        figures.recovered(started.elapsed(), &recovery_counts(&server.log_tail()));
        book.resolve_unanswered(&server.endpoint(), &sent).await;
        book.verify(&server.endpoint()).await;
        eprintln!(
            "cycle {cycle}: killed after {target} acks; {} keys answered so far, {} charges; \
             recovery {:?}",
            book.answered.len(),
            book.charges(),
            figures.last
        );
    }

    let events = all_events(&server.endpoint(), 1000).await;
    assert_dense(&events);
    assert_eq!(
        events.len(),
        book.accounts.len() + book.charges(),
        "one event per account and per charge"
    );
    figures.report(cycles, &book);
    figures.assert_crossed_each_mark(cycles);

    let summary = server.check().await;
    assert_eq!(summary["charges"], book.charges(), "{summary}");
    assert_eq!(
        summary["events"],
        book.accounts.len() + book.charges(),
        "{summary}"
    );
    assert_eq!(
        summary["idempotency_records"],
        all_accounts().len() + book.answered.len(),
        "one record per setup account and per key sent: {summary}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_marks_variable_stops_the_node() {
    // Guards the knob itself: a typo in ONCELEDGER_FAULT_MARKS must stop the test build's node,
    // not let a crash test run at the production marks, where it would cross nothing.
    let dir = tempfile::tempdir().expect("temp dir");
    let done = run_bounded(
        std::process::Command::new(BIN)
            .env("ONCELEDGER_FAULT_MARKS", "journal=0")
            .env_remove("ONCELEDGER_DATA_DIR")
            .env_remove("ONCELEDGER_LISTEN")
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data")),
        STARTUP_DEADLINE,
    )
    .await;
    assert!(!done.status.success(), "it started: {}", done.stdout);
    assert!(
        done.stderr.contains("ONCELEDGER_FAULT_MARKS") && done.stderr.contains("journal=0"),
        "{}",
        done.stderr
    );
    assert!(!done.stdout.contains("listening on"), "{}", done.stdout);
}

fn env_number(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    Some(
        text.parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} is not a number")),
    )
}

fn seed_from_clock() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}

/// splitmix64: the kill depths and the workload's choices, replayable from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }
}

async fn wait_ready(ep: &Endpoint) {
    eventually("GET /readyz answers 200", READY_DEADLINE, || async {
        let ready = ep.try_request(http::Method::GET, "/readyz", &[], Default::default());
        ready.await.ok().filter(|r| r.status == 200).map(|_| ())
    })
    .await;
}

/// One new key the workload sent.
#[derive(Clone)]
struct Sent {
    key: String,
    path: &'static str,
    body: String,
    what: What,
    /// The answer, or the transport error when none came (the kill).
    answer: Result<Resp, String>,
}

#[derive(Clone)]
enum What {
    Account {
        id: String,
        currency: &'static str,
    },
    Charge {
        source: String,
        destination: String,
        amount: i64,
    },
}

/// Everything known to be stored: each key with the answer it must replay, the accounts, and the
/// balances one application of each charge gives.
struct Book {
    answered: Vec<(Sent, Resp)>,
    /// Every account (setup ones included) and its currency.
    accounts: BTreeMap<String, &'static str>,
    expected: HashMap<String, i64>,
    charge_ids: HashSet<String>,
    /// Keys whose answer the kill took, found applied after the restart.
    applied_unanswered: usize,
    unanswered: usize,
}

impl Book {
    fn new() -> Book {
        let mut accounts = BTreeMap::new();
        for currency in CURRENCIES {
            accounts.insert(funding(currency), currency);
            for i in 0..crate::load::SHOPS_PER_CURRENCY {
                accounts.insert(shop(currency, i), currency);
            }
        }
        Book {
            answered: Vec::new(),
            accounts,
            expected: HashMap::new(),
            charge_ids: HashSet::new(),
            applied_unanswered: 0,
            unanswered: 0,
        }
    }

    fn charges(&self) -> usize {
        self.charge_ids.len()
    }

    /// The accounts charges may go to, per currency.
    fn destinations(&self) -> HashMap<&'static str, Vec<String>> {
        let mut by_currency: HashMap<&'static str, Vec<String>> = HashMap::new();
        for (id, currency) in &self.accounts {
            if !id.starts_with("fund-") {
                by_currency.entry(currency).or_default().push(id.clone());
            }
        }
        by_currency
    }

    /// Records a key as stored, with the answer every later send must replay.
    fn record(&mut self, sent: &Sent, answer: Resp) {
        assert_eq!(answer.status, 201, "key {}: {answer}", sent.key);
        let body = answer.json();
        match &sent.what {
            What::Account { id, currency } => {
                assert_eq!(body["id"], id.as_str(), "{body}");
                assert!(self.accounts.insert(id.clone(), currency).is_none());
            }
            What::Charge {
                source,
                destination,
                amount,
            } => {
                assert_eq!(body["amount"], *amount, "{body}");
                let id = body["id"].as_str().unwrap_or_default().to_owned();
                assert!(
                    self.charge_ids.insert(id.clone()),
                    "key {}: charge {id} answered a second key too",
                    sent.key
                );
                *self.expected.entry(source.clone()).or_default() -= amount;
                *self.expected.entry(destination.clone()).or_default() += amount;
            }
        }
        self.answered.push((sent.clone(), answer));
    }

    /// The keys of a cycle that were answered before the kill.
    fn take_answered(&mut self, sent: &[Sent]) {
        for s in sent {
            if let Ok(answer) = &s.answer {
                self.record(s, answer.clone());
            }
        }
    }

    /// Re-sends every key of the cycle whose answer the kill took: it must apply now (201) or
    /// replay what the store committed before the kill, never anything else.
    async fn resolve_unanswered(&mut self, ep: &Endpoint, sent: &[Sent]) {
        for s in sent.iter().filter(|s| s.answer.is_err()) {
            let resp = ep.post(s.path, Some(&s.key), &s.body).await;
            self.unanswered += 1;
            if resp.replayed() {
                self.applied_unanswered += 1;
            }
            self.record(s, resp);
        }
    }

    /// Every answered key replays byte for byte, and every balance is one application of each
    /// charge (so nothing acknowledged was lost and nothing applied twice).
    async fn verify(&self, ep: &Endpoint) {
        let answered = Arc::new(self.answered.clone());
        let verifiers: Vec<_> = (0..VERIFIERS)
            .map(|v| {
                let (ep, answered) = (ep.with_client(new_client()), Arc::clone(&answered));
                tokio::spawn(async move {
                    for (sent, answer) in answered.iter().skip(v).step_by(VERIFIERS) {
                        let replay = ep.post(sent.path, Some(&sent.key), &sent.body).await;
                        assert_replay_of(&replay, answer);
                    }
                })
            })
            .collect();
        for verifier in verifiers {
            verifier.await.expect("a verifier panicked");
        }
        let mut sums: BTreeMap<&str, i64> = BTreeMap::new();
        for (id, currency) in &self.accounts {
            let stored = account(ep, id).await;
            let expected = self.expected.get(id).copied().unwrap_or_default();
            assert_eq!(
                stored["balance"].as_i64(),
                Some(expected),
                "account {id}: one application of each charge: {stored}"
            );
            *sums.entry(currency).or_default() += expected;
        }
        assert!(sums.values().all(|sum| *sum == 0), "{sums:?}");
    }
}

/// One cycle's concurrent load: each worker sends new charges (mostly), opens new accounts and
/// replays keys it was answered earlier in the cycle, until the kill or the stop.
struct CycleLoad {
    stop: Arc<AtomicBool>,
    acked: watch::Receiver<usize>,
    workers: Vec<tokio::task::JoinHandle<Vec<Sent>>>,
}

impl CycleLoad {
    fn start(ep: &Endpoint, cycle: usize, seed: u64, book: &Book) -> CycleLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let (acked_tx, acked) = watch::channel(0usize);
        let acked_tx = Arc::new(acked_tx);
        let destinations = Arc::new(book.destinations());
        let workers = (0..WORKERS)
            .map(|w| {
                let worker = Worker {
                    ep: ep.with_client(new_client()),
                    name: format!("c{cycle}-w{w}"),
                    rng: Rng(seed ^ (w as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d)),
                    destinations: Arc::clone(&destinations),
                    opened: Vec::new(),
                };
                let (stop, acked_tx) = (Arc::clone(&stop), Arc::clone(&acked_tx));
                tokio::spawn(worker.run(stop, acked_tx))
            })
            .collect();
        CycleLoad {
            stop,
            acked,
            workers,
        }
    }

    async fn wait_for_acks(&self, target: usize) {
        let mut acked = self.acked.clone();
        let reached = tokio::time::timeout(ACKS_DEADLINE, acked.wait_for(|n| *n >= target)).await;
        match reached {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => panic!("every worker stopped before {target} acknowledged keys"),
            Err(_) => panic!(
                "only {} keys acknowledged within {ACKS_DEADLINE:?} (target {target})",
                *self.acked.borrow()
            ),
        }
    }

    async fn finish(self) -> Vec<Sent> {
        self.stop.store(true, Ordering::Release);
        join_workers(self.workers).await
    }
}

struct Worker {
    ep: Endpoint,
    /// Unique per cycle and worker: the prefix of its keys and new account ids.
    name: String,
    rng: Rng,
    destinations: Arc<HashMap<&'static str, Vec<String>>>,
    /// EUR accounts this worker opened in this cycle and was answered for.
    opened: Vec<String>,
}

impl Worker {
    async fn run(mut self, stop: Arc<AtomicBool>, acked: Arc<watch::Sender<usize>>) -> Vec<Sent> {
        let mut sent: Vec<Sent> = Vec::new();
        for i in 0..REQUESTS_PER_WORKER_MAX {
            if stop.load(Ordering::Acquire) {
                break;
            }
            let roll = self.rng.below(10);
            if roll == 0 {
                // A replay of a key answered in this cycle: served from the store, no commit.
                let answered: Vec<&Sent> = sent.iter().filter(|s| s.answer.is_ok()).collect();
                if let Some(earlier) = answered.get(self.rng.below(answered.len().max(1))) {
                    let Ok(original) = &earlier.answer else {
                        continue;
                    };
                    match self
                        .ep
                        .try_post(earlier.path, Some(&earlier.key), &earlier.body)
                        .await
                    {
                        Ok(replay) => assert_replay_of(&replay, original),
                        Err(_) => break, // The kill.
                    }
                    continue;
                }
            }
            let new = if roll == 1 {
                self.new_account(i)
            } else {
                self.new_charge(i)
            };
            let answer = new.send(&self.ep).await;
            let killed = answer.is_err();
            if let Ok(resp) = &answer {
                assert_eq!(resp.status, 201, "key {}: {resp}", new.key);
                if let What::Account { id, .. } = &new.what {
                    self.opened.push(id.clone());
                }
                acked.send_modify(|n| *n += 1);
            }
            sent.push(Sent { answer, ..new });
            if killed {
                break;
            }
        }
        sent
    }

    fn new_account(&mut self, i: usize) -> Sent {
        let id = format!("new-{}-{i}", self.name);
        Sent {
            key: format!("{}-{i}", self.name),
            path: "/v1/accounts",
            body: account_body(&id, "EUR", Some(0)),
            what: What::Account {
                id,
                currency: "EUR",
            },
            answer: Err("not sent".into()),
        }
    }

    fn new_charge(&mut self, i: usize) -> Sent {
        let currency = CURRENCIES[usize::from(self.rng.below(4) == 0)];
        let mut choices = self.destinations[currency].clone();
        if currency == "EUR" {
            choices.extend(self.opened.iter().cloned());
        }
        let destination = choices[self.rng.below(choices.len())].clone();
        let amount = 1 + self.rng.below(500) as i64;
        let source = funding(currency);
        Sent {
            key: format!("{}-{i}", self.name),
            path: "/v1/charges",
            body: charge_body(&source, &destination, amount, currency),
            what: What::Charge {
                source,
                destination,
                amount,
            },
            answer: Err("not sent".into()),
        }
    }
}

impl Sent {
    async fn send(&self, ep: &Endpoint) -> Result<Resp, String> {
        ep.try_post(self.path, Some(&self.key), &self.body).await
    }
}

/// What one restart's recovery logged: (journaled batches replayed, keys read back, postings
/// re-applied). A step that had nothing to do logs nothing: 0.
fn recovery_counts(log: &str) -> [u64; 3] {
    let this_start = log.rsplit("---- restart #").next().unwrap_or_default();
    [
        LOG_REPLAYED_BATCHES,
        LOG_KEYS_READ_BACK,
        LOG_POSTINGS_REAPPLIED,
    ]
    .map(|message| {
        this_start
            .lines()
            .filter(|line| line.contains(message))
            .find_map(|line| {
                let count = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("count="));
                count.and_then(|c| c.parse().ok())
            })
            .unwrap_or(0)
    })
}

/// The run's figures: what the kills went past, and what each recovery had to do.
#[derive(Default)]
struct Figures {
    checkpoints: u64,
    account_flushes: u64,
    key_merges: u64,
    /// Per restart: journaled batches replayed, keys read back, postings re-applied.
    recoveries: Vec<[u64; 3]>,
    last: Option<[u64; 3]>,
    ready_max: Duration,
}

impl Figures {
    fn count_moments(&mut self, text: &str) {
        let count = |name| metric(text, name, &[]) as u64;
        self.checkpoints += count("onceledger_store_checkpoints_total");
        self.account_flushes += count("onceledger_store_account_flushes_total");
        self.key_merges += count("onceledger_store_key_merges_total");
    }

    /// One restart's recovery. Its work is bounded by the marks, whatever the kill interrupted:
    /// at most `journal` batches journaled since the last checkpoint, and the postings of at most
    /// `accounts - 1` charges since the last account flush (two each).
    fn recovered(&mut self, ready_after: Duration, counts: &[u64; 3]) {
        let [replayed, _keys, postings] = *counts;
        let marks = Marks::SMALL;
        assert!(
            replayed <= marks.journal_checkpoint_commits,
            "a restart replayed {replayed} journaled batches, more than the mark {}",
            marks.journal_checkpoint_commits
        );
        assert!(
            postings <= 2 * (marks.account_flush_charges - 1),
            "a restart re-applied {postings} postings: more charges than the flush mark allows"
        );
        self.recoveries.push(*counts);
        self.last = Some(*counts);
        self.ready_max = self.ready_max.max(ready_after);
    }

    /// Every kind of moment was crossed at least once per cycle on average (each cycle's load
    /// makes dozens of commits: a checkpoint every 4, a flush every 3 charges).
    fn assert_crossed_each_mark(&self, cycles: usize) {
        let cycles = cycles as u64;
        assert!(
            self.checkpoints >= cycles,
            "checkpoints: {}",
            self.checkpoints
        );
        assert!(
            self.account_flushes >= cycles,
            "account flushes: {}",
            self.account_flushes
        );
        assert!(self.key_merges >= cycles, "key merges: {}", self.key_merges);
        let replayed_some = self.recoveries.iter().filter(|r| r[0] > 0).count();
        assert!(
            replayed_some > 0,
            "no restart replayed the journal: {:?}",
            self.recoveries
        );
    }

    fn report(&self, cycles: usize, book: &Book) {
        let mut replayed: BTreeMap<u64, usize> = BTreeMap::new();
        for r in &self.recoveries {
            *replayed.entry(r[0]).or_default() += 1;
        }
        let max = |i: usize| self.recoveries.iter().map(|r| r[i]).max().unwrap_or(0);
        eprintln!(
            "rare moments figures: cycles={cycles} keys_answered={} charges={} accounts={} \
             unanswered={} of_which_applied={} checkpoints>={} account_flushes>={} \
             key_merges>={} restarts_by_batches_replayed={replayed:?} keys_read_back_max={} \
             postings_reapplied_max={} ready_after_restart_max={:?}",
            book.answered.len(),
            book.charges(),
            book.accounts.len(),
            book.unanswered,
            book.applied_unanswered,
            self.checkpoints,
            self.account_flushes,
            self.key_merges,
            max(1),
            max(2),
            self.ready_max
        );
    }
}
