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

use crate::metrics::Metrics;
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
pub async fn run<S: Sink>(mut sink: S, node: NodeParts, config: ReplicatorConfig) {
    let name = sink.name().to_owned();
    let kind = sink.kind();
    let labels = [("sink", kind)];
    let counters = &node.metrics.replication;
    let (sent, acknowledged, retried, failed, duplicates) = (
        counters.events_sent.get_or_create_owned(&labels),
        counters.events_acknowledged.get_or_create_owned(&labels),
        counters.events_retried.get_or_create_owned(&labels),
        counters.delivery_failures.get_or_create_owned(&labels),
        counters.events_duplicate.get_or_create_owned(&labels),
    );
    let origin = node.store.node_id().to_owned();
    let appended = node.writer.outbox_appended();
    let batch_max = config
        .batch_events_max
        .clamp(1, REPLICATION_BATCH_EVENTS_MAX);
    let mut bucket = config.rate.map(|rate| TokenBucket::new(rate, batch_max));
    let mut fruitless: u32 = 0;
    #[cfg(feature = "fault-injection")]
    let mut deliveries: u64 = 0;
    let backoff = Backoff {
        base: REPLICATION_BACKOFF_BASE,
        cap: config.backoff_cap,
    };
    let mut rng = Rng::from_entropy();
    // Full jitter: uniform in [0, min(cap, base * 2^n)], so senders that failed together (a hub
    // restart) do not come back together.
    let mut full_jitter =
        |fruitless: u32| backoff.delay(fruitless.saturating_sub(1), None, &mut rng);
    let mut acked = loop {
        match node.store.sink_cursor(&name) {
            Ok(cursor) => break cursor,
            Err(error) => {
                tracing::error!(%error, sink = name, "cannot read the sink's cursor");
                fruitless = fruitless.saturating_add(1);
                tokio::time::sleep(full_jitter(fruitless)).await;
            }
        }
    };
    tracing::info!(sink = name, cursor = acked, "replicator started");
    loop {
        let wanted = match bucket.as_mut() {
            Some(bucket) => bucket.take_up_to(batch_max).await,
            None => batch_max,
        };
        let events = match node.store.events_after(acked, wanted) {
            Ok(events) => events,
            Err(error) => {
                tracing::error!(%error, sink = name, "cannot read the outbox");
                fruitless = fruitless.saturating_add(1);
                tokio::time::sleep(full_jitter(fruitless)).await;
                continue;
            }
        };
        let outbox_last = report_lag(&node, kind, acked, events.first());
        let Some(last_sent) = events.last().map(|e| e.seq) else {
            if let Some(bucket) = bucket.as_mut() {
                bucket.refund(wanted);
            }
            // Woken by the next commit that appends events, or by the poll as a fallback.
            let _ = tokio::time::timeout(REPLICATION_IDLE_POLL, appended.notified()).await;
            continue;
        };
        if events[0].seq != acked + 1 {
            tracing::error!(
                sink = name,
                needed = acked + 1,
                held_from = events[0].seq,
                "events this sink never acknowledged were deleted; it cannot catch up"
            );
            fruitless = fruitless.saturating_add(1);
            tokio::time::sleep(full_jitter(fruitless)).await;
            continue;
        }
        sent.inc_by(events.len() as u64);
        let delivery =
            tokio::time::timeout(REPLICATION_REQUEST_TIMEOUT, sink.deliver(&origin, &events))
                .await
                .unwrap_or(Err(SinkError::Timeout));
        match delivery {
            Ok(delivered) => {
                duplicates.inc_by(delivered.duplicates);
                #[cfg(feature = "fault-injection")]
                {
                    deliveries += 1;
                    crate::fault::relay_delivered(deliveries);
                }
                if let Some(refused) = &delivered.refused {
                    tracing::warn!(
                        sink = name,
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
                    retried.inc_by(last_sent - through.max(acked));
                }
                if through > acked {
                    acknowledged.inc_by(through - acked);
                    acked = through;
                    fruitless = 0;
                    // Best effort: a cursor update lost to a full queue is made by the next one,
                    // and at worst the sink gets events again and drops them.
                    let _ = node.writer.try_advance_cursor(&name, acked);
                } else {
                    if through < acked {
                        tracing::warn!(
                            sink = name,
                            cursor = acked,
                            sink_has = through,
                            "the sink holds less than it acknowledged before; resending"
                        );
                        acked = through;
                    }
                    fruitless = fruitless.saturating_add(1);
                    tokio::time::sleep(full_jitter(fruitless)).await;
                }
            }
            Err(error) => {
                failed.inc();
                retried.inc_by(events.len() as u64);
                fruitless = fruitless.saturating_add(1);
                let delay = full_jitter(fruitless);
                tracing::warn!(sink = name, %error, retry_in_ms = delay.as_millis() as u64, "delivery failed");
                tokio::time::sleep(delay).await;
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
