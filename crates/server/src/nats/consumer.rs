//! `onceledger consume`: a hub fed by a JetStream stream, for one partition of the fleet's origins.
//!
//! A durable pull consumer whose filter subject is the hub's partition (`partition`) fetches
//! messages in batches, so the hub never receives another partition's messages. Each message is
//! one event of one origin. The events of a fetch are grouped per origin, in seq order, and go to
//! the writer as inbound batches, exactly like `POST /v1/replication/events`: each event takes
//! effect together with its inbox row, duplicates are dropped, an unappliable event is parked
//! after `--dead-letter-after` tries. Only after that commit is a message acknowledged, and with
//! a double ack (the server confirms it), so a crash before the ack means a redelivery, which the
//! inbox drops.
//!
//! A message the hub could not take yet (a gap, a refusal) is NAKed with a delay and comes again.
//! Every origin of the partition reaches this hub alone, so a NAK only ever waits for an event
//! this hub will itself receive, never for one another hub holds. If the stream no longer holds
//! that event (retention), the wait is reported (`gaps`, `feed`). An origin outside the partition
//! (a terminal configured with another N) is never applied: its events are parked as dead
//! letters whose reason says so.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{AckPolicy, Consumer, DeliverPolicy, pull};
use async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream};
use async_nats::jetstream::{AckKind, Message};
use futures_util::StreamExt;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use super::feed::FeedStatus;
use super::gaps::{Gaps, Lookup};
use super::partition::{Partition, hub_description};
use super::{StreamError, StreamSettings, connect};
use crate::replication::NodeParts;
use onceledger_client::backoff::Backoff;
use onceledger_client::rng::Rng;
use onceledger_core::limits::{
    NATS_CONSUMER_ACK_PENDING_MAX, NATS_CONSUMER_ACK_WAIT, NATS_CONSUMER_FETCH_MAX,
    NATS_CONSUMER_FETCH_WAIT, NATS_CONSUMER_MISSING_NAK_DELAY, NATS_CONSUMER_NAK_DELAY,
    REPLICATION_BACKOFF_BASE,
};
use onceledger_core::store::Event;
use onceledger_core::wire::{Ack, EventBatch, WIRE_VERSION, decode_batch};
use onceledger_core::writer::{InboundOutcome, InboundRequest};

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub stream: StreamSettings,
    /// The origins this hub applies (`--partition K/N`).
    pub partition: Partition,
    /// The durable consumer's name: a restarted hub resumes where it acknowledged.
    pub durable: String,
    pub backoff_cap: Duration,
}

impl ConsumerConfig {
    /// The JetStream filter subject of the hub's partition (empty: every subject).
    pub fn filter_subject(&self) -> String {
        self.partition.filter_subject(&self.stream.subject_prefix)
    }

    /// What `GET /v1/replication/origins` shows of this consumer.
    pub fn feed_status(&self) -> FeedStatus {
        FeedStatus::new(
            self.partition,
            &self.stream.stream,
            &self.durable,
            &self.filter_subject(),
        )
    }

    pub fn spawn(self, node: NodeParts, feed: Arc<FeedStatus>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(run(self, node, feed))
    }
}

/// The default durable name of a hub: its node id, `K` and `N` (`onceledger-NODE-pK-of-N`).
/// `K` so that one node's consumers of two partitions never share a durable (they would split
/// a partition's messages between them). `N` so that a hub restarted with another partition
/// count starts a new consumer: an old position means nothing once origins changed partitions.
/// Dots are not allowed in a durable name.
pub fn default_durable(node_id: &str, partition: Partition) -> String {
    format!(
        "onceledger-{}-p{}-of-{}",
        node_id.replace('.', "_"),
        partition.index(),
        partition.count()
    )
}

/// Runs until the task is aborted (node shutdown); reconnects with backoff when NATS is away.
pub async fn run(config: ConsumerConfig, node: NodeParts, feed: Arc<FeedStatus>) {
    let backoff = Backoff {
        base: REPLICATION_BACKOFF_BASE,
        cap: config.backoff_cap,
    };
    let mut rng = Rng::from_entropy();
    let mut failures: u32 = 0;
    let mut hub = Hub {
        config: &config,
        node: &node,
        feed: &feed,
        gaps: Gaps::default(),
        commits: 0,
    };
    loop {
        if let Err(error) = hub.consume().await {
            let delay = backoff.delay(failures, None, &mut rng);
            failures = failures.saturating_add(1);
            match error {
                // Retrying cannot help until the operator acts; said at error level.
                ConsumeError::DurableOfAnotherPartition { .. } => {
                    tracing::error!(%error, retry_in_ms = delay.as_millis() as u64, "NATS consumer refused")
                }
                _ => {
                    tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "NATS consumer stopped")
                }
            }
            tokio::time::sleep(delay).await;
        } else {
            failures = 0;
        }
    }
}

/// The consumer's state across reconnects.
struct Hub<'a> {
    config: &'a ConsumerConfig,
    node: &'a NodeParts,
    feed: &'a FeedStatus,
    gaps: Gaps,
    commits: u64,
}

impl Hub<'_> {
    /// One connection's worth of consuming; returns on the first error.
    async fn consume(&mut self) -> Result<(), ConsumeError> {
        let settings = &self.config.stream;
        let context = connect(settings).await.map_err(ConsumeError::Stream)?;
        let stream = context
            .get_stream(&settings.stream)
            .await
            .map_err(|source| ConsumeError::NoStream {
                stream: settings.stream.clone(),
                source,
            })?;
        let consumer = self.durable_consumer(&stream).await?;
        tracing::info!(
            stream = settings.stream,
            durable = self.config.durable,
            partition = %self.config.partition,
            filter_subject = self.config.filter_subject(),
            "consuming"
        );
        loop {
            let messages = fetch(&consumer).await?;
            if !messages.is_empty() {
                self.apply_and_ack(messages).await;
            }
            self.look_up_gaps(&stream).await;
        }
    }

    /// Gets or creates the durable consumer of this hub's partition, and refuses one of the same
    /// name that filters another partition (JetStream keeps the first config of a durable: using
    /// it would apply another partition's origins, or share one hub's messages with another).
    async fn durable_consumer(
        &self,
        stream: &Stream,
    ) -> Result<Consumer<pull::Config>, ConsumeError> {
        let durable = &self.config.durable;
        let filter_subject = self.config.filter_subject();
        let consumer = stream
            .get_or_create_consumer(
                durable,
                pull::Config {
                    durable_name: Some(durable.clone()),
                    description: Some(hub_description(self.config.partition)),
                    filter_subject: filter_subject.clone(),
                    deliver_policy: DeliverPolicy::All,
                    ack_policy: AckPolicy::Explicit,
                    // Unlimited: the hub parks an unappliable event itself; JetStream giving up
                    // would leave a gap the inbox can never close.
                    max_deliver: -1,
                    // A fetched message not acknowledged by then (the hub died) comes again.
                    ack_wait: NATS_CONSUMER_ACK_WAIT,
                    max_ack_pending: NATS_CONSUMER_ACK_PENDING_MAX,
                    ..Default::default()
                },
            )
            .await
            .map_err(|source| ConsumeError::Consumer {
                durable: durable.clone(),
                source,
            })?;
        let found = &consumer.cached_info().config.filter_subject;
        if *found != filter_subject {
            return Err(ConsumeError::DurableOfAnotherPartition {
                durable: durable.clone(),
                found: found.clone(),
                expected: filter_subject,
            });
        }
        Ok(consumer)
    }

    async fn apply_and_ack(&mut self, messages: Vec<Message>) {
        let received: Vec<Received> = messages.into_iter().map(Received::decode).collect();
        let acks = apply(self.node, self.config.partition, &received).await;
        self.commits += 1;
        #[cfg(feature = "fault-injection")]
        crate::fault::consumer_committed(self.commits);
        self.note_gaps(&received, &acks);
        acknowledge(self.node, self.config.partition, self.feed, received, &acks).await;
    }

    /// After a commit: which origins wait for an event, and which moved on.
    fn note_gaps(&mut self, received: &[Received], acks: &BTreeMap<String, Ack>) {
        let now = Instant::now();
        for (origin, ack) in acks {
            if self.gaps.applied_through(origin, ack.applied_through) && self.feed.clear(origin) {
                tracing::info!(origin, "the origin moved on: its events are held again");
                self.set_missing_gauge();
            }
            if ack.refused.is_some() {
                // Not a gap: its next event came and was refused (it will be parked).
                continue;
            }
            let behind = received.iter().find(|r| {
                r.event
                    .as_ref()
                    .is_some_and(|(o, e)| o == origin && e.seq > ack.applied_through)
            });
            if let Some(behind) = behind {
                let needed = ack.applied_through + 1;
                self.gaps
                    .waits(origin, needed, behind.message.subject.as_str(), now);
            }
        }
    }

    /// Asks the stream about origins that waited long enough (bounded per fetch).
    async fn look_up_gaps(&mut self, stream: &Stream) {
        for lookup in self.gaps.due(Instant::now()) {
            match first_held_seq(stream, &lookup).await {
                Ok(Some(first_held)) if first_held > lookup.needed_seq => {
                    if self
                        .feed
                        .report(&lookup.origin, lookup.needed_seq, first_held)
                    {
                        tracing::warn!(
                            origin = lookup.origin,
                            needed_seq = lookup.needed_seq,
                            first_held_seq = first_held,
                            stream = self.config.stream.stream,
                            subject = lookup.subject,
                            "the stream no longer holds this origin's next event (its retention \
                             removed it, or it was published on another partition's subject): \
                             this hub cannot apply the origin's later events (RUNBOOK: \"An \
                             origin missing from the stream\")"
                        );
                        self.set_missing_gauge();
                    }
                }
                // Held (it will come), or nothing held any more on the subject: no report.
                Ok(_) => {
                    if self.feed.clear(&lookup.origin) {
                        self.set_missing_gauge();
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, origin = lookup.origin, "stream lookup failed")
                }
            }
        }
    }

    fn set_missing_gauge(&self) {
        let count = i64::try_from(self.feed.missing_count()).unwrap_or(i64::MAX);
        (self.node.metrics.nats_consumer)
            .origins_missing_from_stream
            .set(count);
    }
}

/// One fetch: up to `NATS_CONSUMER_FETCH_MAX` messages, waiting at most `NATS_CONSUMER_FETCH_WAIT`.
async fn fetch(consumer: &Consumer<pull::Config>) -> Result<Vec<Message>, ConsumeError> {
    let mut fetched = consumer
        .fetch()
        .max_messages(NATS_CONSUMER_FETCH_MAX)
        .expires(NATS_CONSUMER_FETCH_WAIT)
        .messages()
        .await
        .map_err(|source| ConsumeError::Fetch(source.into()))?;
    let mut messages = Vec::new();
    while let Some(message) = fetched.next().await {
        messages.push(message.map_err(ConsumeError::Fetch)?);
    }
    Ok(messages)
}

/// The seq of the first event the stream holds on `lookup.subject`; `None` when it holds none.
async fn first_held_seq(stream: &Stream, lookup: &Lookup) -> Result<Option<u64>, LookupError> {
    match stream
        .get_first_raw_message_by_subject(&lookup.subject, 1)
        .await
    {
        Ok(message) => match Received::event_of(&message.payload) {
            Some((_, event)) => Ok(Some(event.seq)),
            None => Err(LookupError::Undecodable {
                subject: lookup.subject.clone(),
            }),
        },
        Err(error) if error.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(source) => Err(LookupError::Request {
            subject: lookup.subject.clone(),
            source,
        }),
    }
}

/// One fetched message, decoded.
struct Received {
    message: Message,
    event: Option<(String, Event)>,
}

impl Received {
    fn decode(message: Message) -> Received {
        let event = Received::event_of(&message.payload);
        Received { message, event }
    }

    /// A message holds one event of one origin; anything else is undecodable (`None`).
    fn event_of(payload: &[u8]) -> Option<(String, Event)> {
        decode_batch(payload).ok().and_then(|batch| {
            let EventBatch { origin, events, .. } = batch;
            match <[Event; 1]>::try_from(events) {
                Ok([event]) => Some((origin, event)),
                Err(_) => None,
            }
        })
    }
}

/// One inbound batch per origin, in seq order (what the inbox expects), through the writer. An
/// origin outside `partition` goes with a park reason: parked, never applied. Returns each
/// origin's acknowledgement; an origin the writer did not take is absent, so all its messages
/// are NAKed.
async fn apply(
    node: &NodeParts,
    partition: Partition,
    received: &[Received],
) -> BTreeMap<String, Ack> {
    let mut per_origin: BTreeMap<&str, Vec<Event>> = BTreeMap::new();
    for (origin, event) in received.iter().filter_map(|r| r.event.as_ref()) {
        per_origin.entry(origin).or_default().push(event.clone());
    }
    let mut answers = Vec::with_capacity(per_origin.len());
    for (origin, mut events) in per_origin {
        events.sort_by_key(|e| e.seq);
        events.dedup_by_key(|e| e.seq);
        let (reply, answer) = oneshot::channel();
        let batch = EventBatch {
            version: WIRE_VERSION,
            origin: origin.to_owned(),
            events,
        };
        let submitted = node.writer.try_submit_inbound(InboundRequest {
            // NATS has its own authentication; what the stream carries is the operator's.
            tenant: onceledger_core::ledger::TenantId::DEFAULT,
            batch,
            park_reason: (!partition.holds(origin)).then(|| partition.misrouted_reason(origin)),
            reply,
        });
        if submitted.is_ok() {
            answers.push((origin.to_owned(), answer));
        }
    }
    let mut acks = BTreeMap::new();
    for (origin, answer) in answers {
        if let Ok(InboundOutcome::Acknowledged(ack)) = answer.await {
            acks.insert(origin, ack);
        }
    }
    acks
}

/// After the commit: double-ack what the inbox holds, NAK the rest (a gap or a refusal: it comes
/// again), terminate what no build can read.
async fn acknowledge(
    node: &NodeParts,
    partition: Partition,
    feed: &FeedStatus,
    received: Vec<Received>,
    acks: &BTreeMap<String, Ack>,
) {
    let counters = &node.metrics.nats_consumer;
    let mut pending = JoinSet::new();
    for Received { message, event } in received {
        let Some((origin, event)) = event else {
            // Not an event this build can read: no retry can change that.
            tracing::error!(subject = %message.subject, "undecodable message terminated");
            counters.terminated.inc();
            pending.spawn(async move { message.ack_with(AckKind::Term).await });
            continue;
        };
        let held = acks
            .get(&origin)
            .is_some_and(|ack| event.seq <= ack.applied_through);
        if held {
            let counter = if partition.holds(&origin) {
                &counters.acknowledged
            } else {
                &counters.outside_partition
            };
            counter.inc();
            pending.spawn(async move { message.double_ack().await });
        } else {
            counters.redelivered.inc();
            let delay = if feed.is_missing(&origin) {
                NATS_CONSUMER_MISSING_NAK_DELAY
            } else {
                NATS_CONSUMER_NAK_DELAY
            };
            pending.spawn(async move { message.ack_with(AckKind::Nak(Some(delay))).await });
        }
    }
    while let Some(done) = pending.join_next().await {
        // A lost ack only means a redelivery, which the inbox drops.
        if let Ok(Err(error)) = done {
            tracing::warn!(%error, "acknowledgement not confirmed");
        }
    }
}

/// Why the consumer stopped; it reconnects with backoff. One sentence for the operator each.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConsumeError {
    /// NATS or the stream cannot be reached.
    Stream(StreamError),
    NoStream {
        stream: String,
        source: async_nats::jetstream::context::GetStreamError,
    },
    Consumer {
        durable: String,
        source: async_nats::jetstream::stream::ConsumerError,
    },
    /// A durable of this name exists and filters other subjects (another partition's hub, or a
    /// hub started with another N): this hub will not take it over.
    DurableOfAnotherPartition {
        durable: String,
        found: String,
        expected: String,
    },
    Fetch(async_nats::Error),
}

impl fmt::Display for ConsumeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConsumeError::Stream(error) => error.fmt(f),
            ConsumeError::NoStream { stream, source } => write!(f, "no stream {stream}: {source}"),
            ConsumeError::Consumer { durable, source } => {
                write!(f, "cannot create consumer {durable}: {source}")
            }
            ConsumeError::DurableOfAnotherPartition {
                durable,
                found,
                expected,
            } => write!(
                f,
                "the durable consumer {durable} exists with filter subject {found:?}, and this \
                 hub's partition needs {expected:?}: give this hub another --durable, or delete \
                 that consumer if no hub uses it"
            ),
            ConsumeError::Fetch(source) => write!(f, "fetch failed: {source}"),
        }
    }
}

impl std::error::Error for ConsumeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            // Transparent: the message is the stream error's, so the source is its own.
            ConsumeError::Stream(error) => std::error::Error::source(error),
            ConsumeError::NoStream { source, .. } => Some(source),
            ConsumeError::Consumer { source, .. } => Some(source),
            ConsumeError::DurableOfAnotherPartition { .. } => None,
            ConsumeError::Fetch(source) => Some(source.as_ref()),
        }
    }
}

/// Why the consumer could not learn which event the stream holds first for an origin. Logged;
/// the lookup is tried again later and applying does not depend on it.
#[derive(Debug)]
#[non_exhaustive]
pub enum LookupError {
    Request {
        subject: String,
        source: async_nats::jetstream::stream::RawMessageError,
    },
    /// The first message on the subject is not one event of one origin.
    Undecodable { subject: String },
}

impl fmt::Display for LookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LookupError::Request { subject, source } => {
                write!(f, "cannot read the first message on {subject}: {source}")
            }
            LookupError::Undecodable { subject } => {
                write!(f, "the first message on {subject} is not an event")
            }
        }
    }
}

impl std::error::Error for LookupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LookupError::Request { source, .. } => Some(source),
            LookupError::Undecodable { .. } => None,
        }
    }
}
