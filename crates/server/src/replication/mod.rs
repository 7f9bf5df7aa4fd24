//! The replicator: delivers this node's outbox to sinks, in order, at least once; and the wire
//! format a hub's inbox reads. Receivers make it effectively once by deduplicating on
//! (origin node, seq) in the same transaction as the effect (`writer::inbound`).
//!
//! One task per sink. It reads the events after the sink's cursor, sends them in batches, and
//! moves the cursor only to what the sink acknowledged (the cursor update rides with the writer's
//! next commit). A crash between delivery and cursor update re-delivers; the inbox drops the
//! duplicates. While the sink is unreachable it retries with full-jitter backoff; the node keeps
//! taking payments meanwhile, since nothing on the request path waits for a sink.

pub mod hub;
pub mod rate;
pub use onceledger_core::wire;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::sync::Notify;

use crate::metrics::{Metrics, ReplicationCounters};
use onceledger_client::backoff::Backoff;
use onceledger_client::rng::Rng;
use onceledger_core::clock::now_ms;
use onceledger_core::limits::{
    REPLICATION_BACKOFF_BASE, REPLICATION_BACKOFF_CAP, REPLICATION_BATCH_EVENTS_MAX,
    REPLICATION_IDLE_POLL, REPLICATION_REQUEST_TIMEOUT,
};
use onceledger_core::store::{Event, Store};
use onceledger_core::writer::WriterHandle;
use rate::TokenBucket;
use wire::RefusedEvent;

pub use onceledger_core::ids::origin_key;

/// Where events go: a hub over HTTP, or a log such as NATS JetStream.
///
/// `Clone`: the supervisor starts a replicator on a clone, so that a crashed one (a panic) can be
/// replaced by a new one on a fresh clone, the way a restarted process would start.
pub trait Sink: Clone + Send + 'static {
    /// Stable across restarts: the key of this sink's cursor in the store.
    fn name(&self) -> &str;
    /// A short label for metrics (`hub`, `nats`).
    fn kind(&self) -> &'static str;
    /// Delivers consecutive events of `origin`. `Ok` says how far the sink now holds this origin's
    /// events: it may be less than sent (a refusal or a gap: resend from there) or more (it had
    /// them already).
    fn deliver<'a>(
        &'a mut self,
        origin: &'a str,
        events: &'a [Event],
    ) -> impl Future<Output = Result<Delivered, SinkError>> + Send + 'a;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub through: u64,
    /// Events the sink said it had already (dropped as duplicates).
    pub duplicates: u64,
    pub refused: Option<RefusedEvent>,
}

/// Why a delivery got no acknowledgement. The replicator logs it (`delivery failed`), backs off
/// and sends the same events again; the cursor does not move.
#[derive(Debug)]
#[non_exhaustive]
pub enum SinkError {
    /// No answer within `REPLICATION_REQUEST_TIMEOUT`.
    Timeout,
    /// The sink's own failure, typed in the sink's module (`hub::HubDeliveryError`, the NATS
    /// sink's error) and erased here, so that the replicator need not know the sinks. Shown as
    /// the sink's error is.
    Failed(Box<dyn std::error::Error + Send + Sync>),
}

impl fmt::Display for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SinkError::Timeout => f.write_str("no answer in time"),
            SinkError::Failed(error) => error.fmt(f),
        }
    }
}

/// `Failed` is transparent: its message is the sink's error's, so its source is that error's.
/// Match on `Failed` to reach (and downcast) the sink's error itself.
impl std::error::Error for SinkError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SinkError::Timeout => None,
            SinkError::Failed(error) => error.source(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct ReplicatorConfig {
    /// Events per second at most (catch-up rate limit); `None`: as fast as the sink takes them.
    pub rate: Option<u32>,
    pub batch_events_max: usize,
    /// The largest backoff between failed deliveries.
    pub backoff_cap: Duration,
}

impl Default for ReplicatorConfig {
    fn default() -> Self {
        ReplicatorConfig {
            rate: None,
            batch_events_max: REPLICATION_BATCH_EVENTS_MAX,
            backoff_cap: REPLICATION_BACKOFF_CAP,
        }
    }
}

/// What the replicator needs from the node (shared handles: a clone is cheap).
#[derive(Clone)]
pub struct NodeParts {
    pub store: Arc<Store>,
    pub writer: Arc<WriterHandle>,
    pub metrics: Arc<Metrics>,
}

/// Runs until the task is aborted (node shutdown); aborting at any point is safe, since the cursor
/// only ever moves to what the sink acknowledged. Never returns; a panic ends it, and
/// [`supervise`] starts another.
pub async fn run<S: Sink>(sink: S, node: NodeParts, config: ReplicatorConfig) {
    let mut relay = Relay::start(sink, node, config).await;
    tracing::info!(
        sink = relay.name,
        cursor = relay.acked,
        "replicator started"
    );
    loop {
        relay.round().await;
    }
}

/// One replicator between rounds: its sink, how far the sink acknowledged, and how long it has
/// been failing.
struct Relay<S: Sink> {
    sink: S,
    node: NodeParts,
    /// The sink's name: the key of its cursor, and the `sink` field of every log line.
    name: String,
    kind: &'static str,
    /// This node's id: the origin of every event it sends.
    origin: String,
    counters: SinkCounters,
    /// Notified by each commit that appends to the outbox.
    appended: Arc<Notify>,
    batch_max: usize,
    /// The catch-up rate limit, if one is set.
    bucket: Option<TokenBucket>,
    pause: Pause,
    /// The sink's cursor: every event up to it is acknowledged.
    acked: u64,
    #[cfg(feature = "fault-injection")]
    deliveries: u64,
}

/// This sink's series of the replication counters, resolved once.
struct SinkCounters {
    sent: Counter,
    acknowledged: Counter,
    retried: Counter,
    failed: Counter,
    duplicates: Counter,
}

impl SinkCounters {
    fn of(counters: &ReplicationCounters, kind: &'static str) -> SinkCounters {
        let labels = [("sink", kind)];
        SinkCounters {
            sent: counters.events_sent.get_or_create_owned(&labels),
            acknowledged: counters.events_acknowledged.get_or_create_owned(&labels),
            retried: counters.events_retried.get_or_create_owned(&labels),
            failed: counters.delivery_failures.get_or_create_owned(&labels),
            duplicates: counters.events_duplicate.get_or_create_owned(&labels),
        }
    }
}

/// Fruitless rounds in a row, and the wait each one earns.
struct Pause {
    backoff: Backoff,
    rng: Rng,
    fruitless: u32,
}

impl Pause {
    /// Counts one more fruitless round and returns the wait before the next. Full jitter:
    /// uniform in [0, min(cap, base * 2^n)], so senders that failed together (a hub restart) do
    /// not come back together.
    fn next_delay(&mut self) -> Duration {
        self.fruitless = self.fruitless.saturating_add(1);
        self.backoff
            .delay(self.fruitless.saturating_sub(1), None, &mut self.rng)
    }

    async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }

    /// The sink moved forward: the next failure waits the shortest again.
    fn reset(&mut self) {
        self.fruitless = 0;
    }
}

impl<S: Sink> Relay<S> {
    /// Reads the sink's cursor (retrying until the store gives it) and resolves what every round
    /// uses.
    async fn start(sink: S, node: NodeParts, config: ReplicatorConfig) -> Relay<S> {
        let name = sink.name().to_owned();
        let kind = sink.kind();
        let batch_max = config
            .batch_events_max
            .clamp(1, REPLICATION_BATCH_EVENTS_MAX);
        let mut pause = Pause {
            backoff: Backoff {
                base: REPLICATION_BACKOFF_BASE,
                cap: config.backoff_cap,
            },
            rng: Rng::from_entropy(),
            fruitless: 0,
        };
        let acked = read_cursor(&node.store, &name, &mut pause).await;
        Relay {
            counters: SinkCounters::of(&node.metrics.replication, kind),
            origin: node.store.node_id().to_owned(),
            appended: node.writer.outbox_appended(),
            bucket: config.rate.map(|rate| TokenBucket::new(rate, batch_max)),
            sink,
            node,
            name,
            kind,
            batch_max,
            pause,
            acked,
            #[cfg(feature = "fault-injection")]
            deliveries: 0,
        }
    }

    /// Sends the events after the cursor, up to a batch (fewer when rate limited), and acts on
    /// the sink's answer; or waits for events when there are none.
    async fn round(&mut self) {
        let wanted = match self.bucket.as_mut() {
            Some(bucket) => bucket.take_up_to(self.batch_max).await,
            None => self.batch_max,
        };
        let events = match self.node.store.events_after(self.acked, wanted) {
            Ok(events) => events,
            Err(error) => {
                tracing::error!(%error, sink = self.name, "cannot read the outbox");
                self.pause.wait().await;
                return;
            }
        };
        let outbox_last = report_lag(&self.node, self.kind, self.acked, events.first());
        let Some(last_sent) = events.last().map(|e| e.seq) else {
            self.wait_for_events(wanted).await;
            return;
        };
        if events[0].seq != self.acked + 1 {
            tracing::error!(
                sink = self.name,
                needed = self.acked + 1,
                held_from = events[0].seq,
                "events this sink never acknowledged were deleted; it cannot catch up"
            );
            self.pause.wait().await;
            return;
        }
        self.counters.sent.inc_by(events.len() as u64);
        let delivery = tokio::time::timeout(
            REPLICATION_REQUEST_TIMEOUT,
            self.sink.deliver(&self.origin, &events),
        )
        .await
        .unwrap_or(Err(SinkError::Timeout));
        match delivery {
            Ok(delivered) => self.on_delivered(delivered, outbox_last, last_sent).await,
            Err(error) => self.on_failure(&error, events.len()).await,
        }
    }

    /// Nothing to send: gives back the tokens taken for it and waits for the next commit.
    async fn wait_for_events(&mut self, tokens_taken: usize) {
        if let Some(bucket) = self.bucket.as_mut() {
            bucket.refund(tokens_taken);
        }
        // Woken by the next commit that appends events, or by the poll as a fallback.
        let _ = tokio::time::timeout(REPLICATION_IDLE_POLL, self.appended.notified()).await;
    }

    /// The sink answered: moves the cursor to what it now holds, or backs off when that is no
    /// further than before (a refusal, a gap).
    async fn on_delivered(&mut self, delivered: Delivered, outbox_last: u64, last_sent: u64) {
        self.counters.duplicates.inc_by(delivered.duplicates);
        #[cfg(feature = "fault-injection")]
        {
            self.deliveries += 1;
            crate::fault::relay_delivered(self.deliveries);
        }
        if let Some(refused) = &delivered.refused {
            tracing::warn!(
                sink = self.name,
                seq = refused.seq,
                attempts = refused.attempts,
                attempts_max = refused.attempts_max,
                reason = refused.reason,
                "the sink refused an event"
            );
        }
        // A sink may hold more than was sent (it had them already), never more than exists.
        let through = delivered.through.min(outbox_last.max(last_sent));
        if through < last_sent {
            self.counters
                .retried
                .inc_by(last_sent - through.max(self.acked));
        }
        if through > self.acked {
            self.advance_cursor(through);
            return;
        }
        if through < self.acked {
            tracing::warn!(
                sink = self.name,
                cursor = self.acked,
                sink_has = through,
                "the sink holds less than it acknowledged before; resending"
            );
            self.acked = through;
        }
        self.pause.wait().await;
    }

    fn advance_cursor(&mut self, through: u64) {
        self.counters.acknowledged.inc_by(through - self.acked);
        self.acked = through;
        self.pause.reset();
        // Best effort: a cursor update lost to a full queue is made by the next one, and at
        // worst the sink gets events again and drops them.
        let _ = self.node.writer.try_advance_cursor(&self.name, self.acked);
    }

    /// No answer from the sink: every event sent goes again, after a backoff.
    async fn on_failure(&mut self, error: &SinkError, events_sent: usize) {
        self.counters.failed.inc();
        self.counters.retried.inc_by(events_sent as u64);
        let delay = self.pause.next_delay();
        tracing::warn!(sink = self.name, %error, retry_in_ms = delay.as_millis() as u64, "delivery failed");
        tokio::time::sleep(delay).await;
    }
}

/// The sink's cursor in the store, read again after a backoff until the store gives it.
async fn read_cursor(store: &Store, name: &str, pause: &mut Pause) -> u64 {
    loop {
        match store.sink_cursor(name) {
            Ok(cursor) => return cursor,
            Err(error) => {
                tracing::error!(%error, sink = name, "cannot read the sink's cursor");
                pause.wait().await;
            }
        }
    }
}

/// Runs the replicator of one sink for the life of the node. A replicator that crashes (a
/// panic: a bug, or the crash `onceledger prove` injects after a delivery) is replaced by a new
/// one on a fresh clone of the sink, after a full-jitter backoff. Like a restarted process it
/// resumes from the stored cursor, so a batch the crashed one delivered but did not record is
/// sent again and the sink's inbox drops it. Counted in
/// `onceledger_replication_restarts_total{sink}`.
pub async fn supervise<S: Sink>(sink: S, node: NodeParts, config: ReplicatorConfig) {
    let backoff = Backoff {
        base: REPLICATION_BACKOFF_BASE,
        cap: config.backoff_cap,
    };
    let mut rng = Rng::from_entropy();
    let mut crashes: u32 = 0;
    loop {
        let replicator = tokio::spawn(run(sink.clone(), node.clone(), config));
        // Aborting this supervisor (node shutdown) drops the handle, not the task: abort it too.
        let abort_on_drop = AbortOnDrop(replicator.abort_handle());
        let ended = replicator.await;
        drop(abort_on_drop);
        match ended {
            Err(error) if error.is_panic() => {
                node.metrics
                    .replication
                    .restarts
                    .get_or_create(&[("sink", sink.kind())])
                    .inc();
                tracing::error!(sink = sink.name(), "replicator crashed; starting a new one");
                let delay = backoff.delay(crashes, None, &mut rng);
                crashes = crashes.saturating_add(1);
                tokio::time::sleep(delay).await;
            }
            // Cancelled, or (never) returned: the node is stopping.
            _ => return,
        }
    }
}

/// Aborts a spawned task when dropped, so that aborting its supervisor stops it too.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One sink's replicator, ready to start on a node: what the node's `Sinks` holds, so the
/// node can run any sink (the hub, NATS, a sink a test wraps) without knowing its type.
pub struct Replicator(Box<dyn FnOnce(NodeParts) -> tokio::task::JoinHandle<()> + Send>);

impl Replicator {
    pub fn new<S: Sink>(sink: S, config: ReplicatorConfig) -> Replicator {
        Replicator(Box::new(move |node| {
            tokio::spawn(supervise(sink, node, config))
        }))
    }

    /// Starts the supervised replicator; the node aborts the returned task at shutdown.
    pub fn spawn(self, node: NodeParts) -> tokio::task::JoinHandle<()> {
        (self.0)(node)
    }
}

/// Outbox lag for this sink: events after its cursor, and the age of the first of them.
/// Returns the outbox's last seq it read (for the round to reuse rather than read again).
fn report_lag(
    node: &NodeParts,
    kind: &'static str,
    acked: u64,
    first_unacked: Option<&Event>,
) -> u64 {
    let labels = [("sink", kind)];
    let last = node.store.outbox_bounds().map_or(acked, |(_, last)| last);
    let lag = last.saturating_sub(acked);
    node.metrics
        .outbox_lag_events
        .get_or_create(&labels)
        .set(i64::try_from(lag).unwrap_or(i64::MAX));
    let age_seconds = first_unacked.filter(|_| lag > 0).map_or(0, |event| {
        now_ms().saturating_sub(event.created_at_ms) / 1000
    });
    node.metrics
        .outbox_oldest_unpublished_age_seconds
        .get_or_create(&labels)
        .set(i64::try_from(age_seconds).unwrap_or(i64::MAX));
    last
}
