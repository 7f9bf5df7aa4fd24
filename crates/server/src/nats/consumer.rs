//! `onceledger consume`: a hub fed by a JetStream stream instead of (or besides) HTTP.
//!
//! A durable pull consumer fetches messages in batches. Each message is one event of one origin.
//! The events of a fetch are grouped per origin, in seq order, and go to the writer as inbound
//! batches, exactly like `POST /v1/replication/events`: each event takes effect together with its
//! inbox row, duplicates are dropped, an unappliable event is parked after `--dead-letter-after`
//! tries. Only after that commit is a message acknowledged, and with a double ack (the server
//! confirms it), so a crash before the ack means a redelivery, which the inbox drops. A message
//! the hub could not take yet (a gap, a refusal) is NAKed with a delay and comes again.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::{AckKind, Message};
use futures_util::StreamExt;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use super::{StreamSettings, connect};
use crate::replication::NodeParts;
use onceledger_client::backoff::Backoff;
use onceledger_client::rng::Rng;
use onceledger_core::limits::{
    NATS_CONSUMER_ACK_WAIT, NATS_CONSUMER_FETCH_MAX, NATS_CONSUMER_FETCH_WAIT,
    NATS_CONSUMER_NAK_DELAY, REPLICATION_BACKOFF_BASE,
};
use onceledger_core::store::Event;
use onceledger_core::wire::{EventBatch, WIRE_VERSION, decode_batch};
use onceledger_core::writer::{InboundOutcome, InboundRequest};

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub stream: StreamSettings,
    /// The durable consumer's name: a restarted hub resumes where it acknowledged.
    pub durable: String,
    pub backoff_cap: Duration,
}

/// Runs until the task is aborted (node shutdown); reconnects with backoff when NATS is away.
pub async fn run(config: ConsumerConfig, node: NodeParts) {
    let backoff = Backoff {
        base: REPLICATION_BACKOFF_BASE,
        cap: config.backoff_cap,
    };
    let mut rng = Rng::from_entropy();
    let mut failures: u32 = 0;
    let mut commits: u64 = 0;
    loop {
        if let Err(error) = consume(&config, &node, &mut commits).await {
            let delay = backoff.delay(failures, None, &mut rng);
            failures = failures.saturating_add(1);
            tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "NATS consumer stopped");
            tokio::time::sleep(delay).await;
        } else {
            failures = 0;
        }
    }
}

/// One connection's worth of consuming; returns on the first error.
async fn consume(
    config: &ConsumerConfig,
    node: &NodeParts,
    commits: &mut u64,
) -> Result<(), String> {
    let context = connect(&config.stream).await.map_err(|e| e.to_string())?;
    let stream = context
        .get_stream(&config.stream.stream)
        .await
        .map_err(|e| format!("no stream {}: {e}", config.stream.stream))?;
    let consumer = stream
        .get_or_create_consumer(
            &config.durable,
            pull::Config {
                durable_name: Some(config.durable.clone()),
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::Explicit,
                // Unlimited: the hub parks an unappliable event itself; JetStream giving up
                // would leave a gap the inbox can never close.
                max_deliver: -1,
                // A fetched message not acknowledged by then (the hub died) comes again.
                ack_wait: NATS_CONSUMER_ACK_WAIT,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| format!("cannot create consumer {}: {e}", config.durable))?;
    tracing::info!(
        stream = config.stream.stream,
        durable = config.durable,
        "consuming"
    );
    loop {
        let mut fetched = consumer
            .fetch()
            .max_messages(NATS_CONSUMER_FETCH_MAX)
            .expires(NATS_CONSUMER_FETCH_WAIT)
            .messages()
            .await
            .map_err(|e| format!("fetch failed: {e}"))?;
        let mut messages = Vec::new();
        while let Some(message) = fetched.next().await {
            messages.push(message.map_err(|e| format!("fetch failed: {e}"))?);
        }
        if messages.is_empty() {
            continue;
        }
        apply_and_ack(node, messages, commits).await;
    }
}

/// One fetched message, decoded.
struct Received {
    message: Message,
    event: Option<(String, Event)>,
}

async fn apply_and_ack(node: &NodeParts, messages: Vec<Message>, commits: &mut u64) {
    let received: Vec<Received> = messages.into_iter().map(Received::decode).collect();
    let applied = apply(node, &received).await;
    *commits += 1;
    #[cfg(feature = "fault-injection")]
    crate::fault::consumer_committed(*commits);
    acknowledge(node, received, &applied).await;
}

impl Received {
    /// A message holds one event of one origin; anything else is undecodable (`event: None`).
    fn decode(message: Message) -> Received {
        let event = decode_batch(&message.payload).ok().and_then(|batch| {
            let EventBatch { origin, events, .. } = batch;
            match <[Event; 1]>::try_from(events) {
                Ok([event]) => Some((origin, event)),
                Err(_) => None,
            }
        });
        Received { message, event }
    }
}

/// One inbound batch per origin, in seq order (what the inbox expects), through the writer.
/// Returns how far each origin is applied; an origin the writer did not take is absent, so all
/// its messages are NAKed.
async fn apply(node: &NodeParts, received: &[Received]) -> BTreeMap<String, u64> {
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
            reply,
        });
        if submitted.is_ok() {
            answers.push((origin.to_owned(), answer));
        }
    }
    let mut applied = BTreeMap::new();
    for (origin, answer) in answers {
        if let Ok(InboundOutcome::Acknowledged(ack)) = answer.await {
            applied.insert(origin, ack.applied_through);
        }
    }
    applied
}

/// After the commit: double-ack what the inbox holds, NAK the rest (a gap or a refusal: it comes
/// again), terminate what no build can read.
async fn acknowledge(node: &NodeParts, received: Vec<Received>, applied: &BTreeMap<String, u64>) {
    let counters = &node.metrics.nats_consumer;
    let mut acks = JoinSet::new();
    for Received { message, event } in received {
        let Some((origin, event)) = event else {
            // Not an event this build can read: no retry can change that.
            tracing::error!(subject = %message.subject, "undecodable message terminated");
            counters.terminated.inc();
            acks.spawn(async move { message.ack_with(AckKind::Term).await });
            continue;
        };
        if applied
            .get(&origin)
            .is_some_and(|through| event.seq <= *through)
        {
            counters.acknowledged.inc();
            acks.spawn(async move { message.double_ack().await });
        } else {
            counters.redelivered.inc();
            acks.spawn(async move {
                message
                    .ack_with(AckKind::Nak(Some(NATS_CONSUMER_NAK_DELAY)))
                    .await
            });
        }
    }
    while let Some(done) = acks.join_next().await {
        // A lost ack only means a redelivery, which the inbox drops.
        if let Ok(Err(error)) = done {
            tracing::warn!(%error, "acknowledgement not confirmed");
        }
    }
}

/// Shared so tests and `main` build the default durable name the same way.
pub fn default_durable(node_id: &str) -> String {
    format!("onceledger-{}", node_id.replace('.', "_"))
}

impl ConsumerConfig {
    pub fn spawn(self, node: NodeParts) -> tokio::task::JoinHandle<()> {
        tokio::spawn(run(self, node))
    }
}
