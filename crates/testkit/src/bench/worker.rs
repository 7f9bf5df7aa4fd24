//! The measured phase: one task per connection sends charges until the budget is spent, and
//! remembers every logical charge and every answer so the run can be reconciled afterwards.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use hdrhistogram::{AdditionError, CreationError};
use http_body_util::Full;
use uuid::Uuid;

use super::client::{self, Conn, Reply, Target};
use super::plan::{Pick, Plan, Rng, Workload};

mod lifecycle;
pub use lifecycle::LifecycleStats;

/// After a send failed, wait this long before reconnecting, so a dead server makes the workers
/// idle rather than spin through connection attempts until the deadline.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(100);
/// Anomalies kept verbatim for the report; the rest are only counted.
const ANOMALY_SAMPLES_MAX: usize = 20;
/// Attempts per undecided charge in the resolution phase, one `RESOLVE_PAUSE` apart.
const RESOLVE_ATTEMPTS_MAX: u32 = 10;
/// Pause between resolution attempts: the server's `Retry-After` for 409 and 503 is 1 s.
const RESOLVE_PAUSE: Duration = Duration::from_secs(1);
/// Latencies are recorded in microseconds, from 1 µs to one hour, to 3 significant digits.
const LATENCY_US_MAX: u64 = 3_600_000_000;

/// State every worker reads or counts into.
pub struct Shared {
    pub plan: Plan,
    pub target: Target,
    pub timeout: Duration,
    pub budget: Budget,
    /// Answered requests so far (for the progress line).
    pub requests: AtomicU64,
    /// Charges executed by the server so far, i.e. non-replayed 201s (for the progress line).
    pub fresh_charges: AtomicU64,
}

/// How long the measured phase runs.
pub enum Budget {
    /// This many more requests may be sent.
    Count(AtomicU64),
    /// No request is started after this instant.
    Until(Instant),
}

impl Budget {
    /// Grants up to `want` request slots; 0 means the measured phase is over.
    fn take(&self, want: u64) -> u64 {
        match self {
            Budget::Until(deadline) => {
                if Instant::now() < *deadline {
                    want
                } else {
                    0
                }
            }
            Budget::Count(left) => {
                // Each failed exchange means another worker took slots; slots only go down, so
                // this ends after at most as many rounds as there are slots.
                let mut current = left.load(Ordering::Relaxed);
                loop {
                    if current == 0 {
                        return 0;
                    }
                    let granted = current.min(want);
                    match left.compare_exchange_weak(
                        current,
                        current - granted,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    ) {
                        Ok(_) => return granted,
                        Err(actual) => current = actual,
                    }
                }
            }
        }
    }
}

/// Which latency histogram a request counts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The first send of a new charge.
    New,
    /// A re-send of a charge that already got its 201.
    Retry,
    /// One of the two simultaneous sends of a new charge.
    Duplicate,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::New, Kind::Retry, Kind::Duplicate];

    pub fn name(self) -> &'static str {
        match self {
            Kind::New => "new",
            Kind::Retry => "retry",
            Kind::Duplicate => "duplicate",
        }
    }
}

/// One logical charge: one idempotency key and one body, however often it was sent.
#[derive(Debug, Clone)]
struct Logical {
    key: Uuid,
    source: u32,
    destination: u32,
    /// 201s without `Idempotent-Replayed`: the server executed the charge. More than one is a bug.
    fresh_201s: u32,
    /// Any 201, fresh or replayed: the charge happened.
    got_201: bool,
    /// A send reached the wire but no answer came back: the charge may or may not have happened.
    undecided: bool,
    /// blake3 of the first 201 body: every replay must carry the same bytes.
    body_hash: Option<[u8; 32]>,
}

/// Everything a worker counted.
pub struct Stats {
    /// Indexed by `Kind as usize`.
    pub latency_us: [Histogram<u64>; 3],
    pub statuses: BTreeMap<u16, u64>,
    /// Requests answered during the measured phase.
    pub answered: u64,
    /// Sends without an answer (connect failure, reset, timeout).
    pub transport_errors: u64,
    pub replayed: u64,
    /// 409 in-flight answers to requests that had no concurrent twin: a retry arrived after its
    /// answer but before the server released the key.
    pub in_flight_without_twin: u64,
    /// Non-replayed 201s in the measured phase.
    pub fresh_charges: u64,
    /// Request slots used per kind: new charges, retries, duplicate pairs.
    pub picked: [u64; 3],
    pub anomalies: u64,
    pub anomaly_samples: Vec<String>,
    /// Filled by the resolution phase.
    pub resolved: u64,
    pub unresolved: u64,
    /// Distinct logical charges that got a 201 (filled by `finish`).
    pub logical_charges: u64,
    /// When this worker stopped starting requests.
    pub measured_until: Option<Instant>,
    pub last_transport_error: Option<String>,
    /// The lifecycle workload's own figures (empty for the others).
    pub lifecycle: LifecycleStats,
}

impl Stats {
    pub fn new() -> Result<Stats, CreationError> {
        let histogram = || Histogram::new_with_bounds(1, LATENCY_US_MAX, 3);
        Ok(Stats {
            latency_us: [histogram()?, histogram()?, histogram()?],
            statuses: BTreeMap::new(),
            answered: 0,
            transport_errors: 0,
            replayed: 0,
            in_flight_without_twin: 0,
            fresh_charges: 0,
            picked: [0; 3],
            anomalies: 0,
            anomaly_samples: Vec::new(),
            resolved: 0,
            unresolved: 0,
            logical_charges: 0,
            measured_until: None,
            last_transport_error: None,
            lifecycle: LifecycleStats::new()?,
        })
    }

    pub fn merge(&mut self, other: &Stats) -> Result<(), AdditionError> {
        for (mine, theirs) in self.latency_us.iter_mut().zip(&other.latency_us) {
            mine.add(theirs)?;
        }
        for (status, count) in &other.statuses {
            *self.statuses.entry(*status).or_default() += count;
        }
        self.answered += other.answered;
        self.transport_errors += other.transport_errors;
        self.replayed += other.replayed;
        self.in_flight_without_twin += other.in_flight_without_twin;
        self.fresh_charges += other.fresh_charges;
        for (mine, theirs) in self.picked.iter_mut().zip(other.picked) {
            *mine += theirs;
        }
        self.anomalies += other.anomalies;
        let room = ANOMALY_SAMPLES_MAX.saturating_sub(self.anomaly_samples.len());
        self.anomaly_samples
            .extend(other.anomaly_samples.iter().take(room).cloned());
        self.resolved += other.resolved;
        self.unresolved += other.unresolved;
        self.logical_charges += other.logical_charges;
        self.measured_until = self.measured_until.max(other.measured_until);
        if other.last_transport_error.is_some() {
            self.last_transport_error = other.last_transport_error.clone();
        }
        self.lifecycle.merge(&other.lifecycle)
    }

    fn anomaly(&mut self, text: String) {
        self.anomalies += 1;
        if self.anomaly_samples.len() < ANOMALY_SAMPLES_MAX {
            self.anomaly_samples.push(text);
        }
    }
}

/// Why a send produced no answer, and whether the server may have seen it.
enum SendError {
    /// No connection could be opened: the request never left.
    NotSent(String),
    /// The request may have reached the server: its effect is unknown until resolved.
    Lost(String),
}

pub struct Worker {
    shared: Arc<Shared>,
    rng: Rng,
    conn: Option<Conn>,
    /// The second connection of concurrent duplicates (opened only when duplicates are asked for).
    partner: Option<Conn>,
    charges: Vec<Logical>,
    /// Indexes into `charges` of the charges that got a 201: the pool retries draw from.
    finished: Vec<usize>,
    /// The lifecycle workload's payments (it uses these instead of `charges`).
    payments: Vec<lifecycle::Payment>,
    stats: Stats,
}

impl Worker {
    pub fn new(
        shared: Arc<Shared>,
        seed: u64,
        index: u64,
        conn: Conn,
        partner: Option<Conn>,
    ) -> Result<Worker, CreationError> {
        Ok(Worker {
            shared,
            rng: Rng::new(seed, index),
            conn: Some(conn),
            partner,
            charges: Vec::new(),
            finished: Vec::new(),
            payments: Vec::new(),
            stats: Stats::new()?,
        })
    }

    /// Sends until the budget is spent; each iteration either takes budget or ends the loop.
    pub async fn run(mut self) -> Worker {
        let shared = Arc::clone(&self.shared);
        // Decided once per worker, outside the loop: the single-request workloads' loop below
        // stays as it was.
        if shared.plan.workload == Workload::Lifecycle {
            return self.run_lifecycle().await;
        }
        loop {
            let pick = shared.plan.pick(&mut self.rng, !self.finished.is_empty());
            let granted = shared
                .budget
                .take(if pick == Pick::Duplicate { 2 } else { 1 });
            if granted == 0 {
                break;
            }
            // The last slot of a --count run cannot hold a pair.
            let pick = if pick == Pick::Duplicate && granted < 2 {
                Pick::New
            } else {
                pick
            };
            match pick {
                Pick::New => {
                    self.stats.picked[Kind::New as usize] += 1;
                    let index = self.new_charge();
                    self.send_one(index, Kind::New).await;
                }
                Pick::Retry => {
                    self.stats.picked[Kind::Retry as usize] += 1;
                    let pool = u32::try_from(self.finished.len()).unwrap_or(u32::MAX);
                    let index = self.finished[self.rng.below(pool) as usize];
                    self.send_one(index, Kind::Retry).await;
                }
                Pick::Duplicate => {
                    self.stats.picked[Kind::Duplicate as usize] += 1;
                    let index = self.new_charge();
                    self.send_pair(index).await;
                }
            }
        }
        self.stats.measured_until = Some(Instant::now());
        self
    }

    fn new_charge(&mut self) -> usize {
        let (source, destination) = self.shared.plan.pick_accounts(&mut self.rng);
        self.charges.push(Logical {
            key: Uuid::new_v4(),
            source,
            destination,
            fresh_201s: 0,
            got_201: false,
            undecided: false,
            body_hash: None,
        });
        self.charges.len() - 1
    }

    fn request(&self, index: usize) -> Result<http::Request<Full<Bytes>>, String> {
        let charge = &self.charges[index];
        let body = self
            .shared
            .plan
            .charge_body(charge.source, charge.destination);
        let mut key = Uuid::encode_buffer();
        let key = charge.key.hyphenated().encode_lower(&mut key);
        client::post(&self.shared.target, "/v1/charges", key, body)
    }

    async fn send_one(&mut self, index: usize, kind: Kind) {
        let outcome = match self.request(index) {
            Ok(request) => exchange(&mut self.conn, &self.shared, request).await,
            Err(error) => Err(SendError::NotSent(error)),
        };
        self.record(index, kind, outcome).await;
    }

    /// The same key and body on two connections at once: the server must execute it once and
    /// answer the other with 409 (or a replay, if the first finished before the second arrived).
    async fn send_pair(&mut self, index: usize) {
        let (first, second) = match (self.request(index), self.request(index)) {
            (Ok(first), Ok(second)) => (first, second),
            (Err(error), _) | (_, Err(error)) => {
                self.record(index, Kind::Duplicate, Err(SendError::NotSent(error)))
                    .await;
                return;
            }
        };
        let shared = &self.shared;
        let (a, b) = tokio::join!(
            exchange(&mut self.conn, shared, first),
            exchange(&mut self.partner, shared, second)
        );
        self.record(index, Kind::Duplicate, a).await;
        self.record(index, Kind::Duplicate, b).await;
    }

    async fn record(
        &mut self,
        index: usize,
        kind: Kind,
        outcome: Result<(Reply, Duration), SendError>,
    ) {
        let (reply, latency) = match outcome {
            Ok(answered) => answered,
            Err(error) => {
                self.stats.transport_errors += 1;
                let text = match error {
                    SendError::NotSent(text) => text,
                    SendError::Lost(text) => {
                        self.charges[index].undecided = true;
                        text
                    }
                };
                self.stats.last_transport_error = Some(text);
                tokio::time::sleep(RECONNECT_BACKOFF).await;
                return;
            }
        };
        self.stats.answered += 1;
        self.shared.requests.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.stats.latency_us[kind as usize].saturating_record(micros.max(1));
        *self.stats.statuses.entry(reply.status).or_default() += 1;
        if reply.status == 409 && kind != Kind::Duplicate {
            self.stats.in_flight_without_twin += 1;
        }
        if self.note_answer(index, &reply, kind.name()) {
            self.stats.fresh_charges += 1;
            self.shared.fresh_charges.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Applies an answer to its logical charge; true if it was a fresh execution.
    fn note_answer(&mut self, index: usize, reply: &Reply, context: &str) -> bool {
        match reply.status {
            201 => {
                let hash = *blake3::hash(&reply.body).as_bytes();
                let charge = &mut self.charges[index];
                let key = charge.key;
                let mut problems = Vec::new();
                if reply.replayed {
                    self.stats.replayed += 1;
                } else {
                    charge.fresh_201s += 1;
                    if charge.fresh_201s > 1 {
                        problems.push(format!(
                            "key {key} executed {} times ({context})",
                            charge.fresh_201s
                        ));
                    }
                }
                match charge.body_hash {
                    None => charge.body_hash = Some(hash),
                    Some(first) if first != hash => problems.push(format!(
                        "key {key}: a 201 body differs from the first one ({context}): {}",
                        excerpt(&reply.body)
                    )),
                    Some(_) => {}
                }
                let fresh = !reply.replayed;
                if !charge.got_201 {
                    charge.got_201 = true;
                    self.finished.push(index);
                }
                for problem in problems {
                    self.stats.anomaly(problem);
                }
                fresh
            }
            // In flight (a twin holds the key) or overloaded: nothing stored; storage unavailable:
            // outcome unknown. Either way not settled here: the key is re-sent until it is.
            409 | 503 => false,
            other => {
                let key = self.charges[index].key;
                self.stats.anomaly(format!(
                    "key {key}: unexpected status {other} ({context}): {}",
                    excerpt(&reply.body)
                ));
                false
            }
        }
    }

    /// Re-sends every charge whose fate is unknown (a send without an answer and no 201 seen)
    /// until the server gives a final answer: the idempotency key makes this safe, and it is
    /// what turns "maybe" into a number the money check can use. Bounded by attempts and by
    /// `deadline`.
    pub async fn resolve(&mut self, deadline: Instant) {
        if self.shared.plan.workload == Workload::Lifecycle {
            return self.resolve_lifecycle(deadline).await;
        }
        let undecided: Vec<usize> = (0..self.charges.len())
            .filter(|&i| self.charges[i].undecided && !self.charges[i].got_201)
            .collect();
        for index in undecided {
            let mut settled = false;
            for _ in 0..RESOLVE_ATTEMPTS_MAX {
                if Instant::now() >= deadline {
                    break;
                }
                let outcome = match self.request(index) {
                    Ok(request) => exchange(&mut self.conn, &self.shared, request).await,
                    Err(error) => Err(SendError::NotSent(error)),
                };
                if let Ok((reply, _)) = &outcome
                    && !matches!(reply.status, 409 | 503)
                {
                    self.note_answer(index, reply, "resolution");
                    settled = true;
                    break;
                }
                tokio::time::sleep(RESOLVE_PAUSE).await;
            }
            if settled {
                self.stats.resolved += 1;
            } else {
                self.stats.unresolved += 1;
            }
        }
    }

    /// Ends the worker: its counts, and the connection for reuse by the verification phase.
    pub fn finish(mut self) -> (Stats, Option<Conn>) {
        self.stats.logical_charges = self.charges.iter().filter(|c| c.got_201).count() as u64;
        if self.shared.plan.workload == Workload::Lifecycle {
            self.finish_lifecycle();
        }
        (self.stats, self.conn)
    }
}

/// One request on a connection slot, reconnecting first if the slot is empty or dead. On a lost
/// answer the connection is dropped: its state (a half-read response) is unknown.
async fn exchange(
    slot: &mut Option<Conn>,
    shared: &Shared,
    request: http::Request<Full<Bytes>>,
) -> Result<(Reply, Duration), SendError> {
    if !slot.as_ref().is_some_and(Conn::is_usable) {
        *slot = None;
        let conn = Conn::open(&shared.target, shared.timeout)
            .await
            .map_err(SendError::NotSent)?;
        *slot = Some(conn);
    }
    let Some(conn) = slot.as_mut() else {
        return Err(SendError::NotSent("no connection".into()));
    };
    let started = Instant::now();
    match conn.send(request, shared.timeout).await {
        Ok(reply) => Ok((reply, started.elapsed())),
        Err(error) => {
            *slot = None;
            Err(SendError::Lost(error))
        }
    }
}

/// The start of a response body, for anomaly messages.
fn excerpt(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_budget_grants_exactly_its_slots() {
        let budget = Budget::Count(AtomicU64::new(5));
        assert_eq!(budget.take(2), 2);
        assert_eq!(budget.take(2), 2);
        assert_eq!(budget.take(2), 1, "a pair cannot be granted from one slot");
        assert_eq!(budget.take(1), 0);
        let over = Budget::Until(Instant::now());
        assert_eq!(over.take(1), 0);
    }
}
