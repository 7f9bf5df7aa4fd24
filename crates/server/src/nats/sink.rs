//! The JetStream sink of the replicator.

use std::collections::BTreeSet;
use std::fmt;
use std::future::IntoFuture;

use async_nats::HeaderMap;
use async_nats::jetstream::Context;
use async_nats::jetstream::context::{PublishAckFuture, PublishError};
use bytes::Bytes;
use futures_util::StreamExt;

use super::partition::{filter_takes, partition_in_description, subject_of};
use super::{NATS_REQUEST_TIMEOUT, StreamError, StreamSettings, connect};
use crate::replication::{Delivered, Sink, SinkError};
use onceledger_core::store::Event;
use onceledger_core::wire::encode_events;

#[derive(Clone)]
pub struct JetStreamSink {
    settings: StreamSettings,
    /// `--nats-partitions`: the subject names this node's partition among them.
    partitions: u32,
    name: String,
    /// Connected lazily, so a node whose NATS is down at start still starts and takes payments.
    context: Option<Context>,
}

impl JetStreamSink {
    /// `partitions`: how many partitions the fleet's hubs split the origins into (1 or more).
    pub fn new(settings: StreamSettings, partitions: u32) -> Self {
        assert!(partitions >= 1, "a fleet has at least one partition");
        // Not the partition count: a node restarted with another one keeps its cursor (its
        // events are in the stream already, on the subject of the count they were sent with).
        let name = format!("nats:{}/{}", settings.url, settings.stream);
        JetStreamSink {
            settings,
            partitions,
            name,
            context: None,
        }
    }
}

impl Sink for JetStreamSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "nats"
    }

    /// Publishes every event without waiting (pipelined), then awaits the acknowledgements in
    /// order. The cursor may move over the longest prefix that JetStream acknowledged; an
    /// acknowledgement flagged duplicate counts as delivered (it was stored before).
    async fn deliver<'a>(
        &'a mut self,
        origin: &'a str,
        events: &'a [Event],
    ) -> Result<Delivered, SinkError> {
        let context = match &self.context {
            Some(context) => context.clone(),
            None => {
                let context = connect(&self.settings)
                    .await
                    .map_err(JetStreamDeliveryError::Stream)?;
                self.context = Some(context.clone());
                let subject = subject_of(&self.settings.subject_prefix, origin, self.partitions);
                let stream = self.settings.stream.clone();
                // Advice only, once per connection: it must not hold the delivery up.
                tokio::spawn(look_for_hubs(
                    context.clone(),
                    stream,
                    subject,
                    self.partitions,
                ));
                context
            }
        };
        let subject = subject_of(&self.settings.subject_prefix, origin, self.partitions);
        let mut pending: Vec<(u64, PublishAckFuture)> = Vec::with_capacity(events.len());
        let mut failure = None;
        for event in events {
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", format!("{origin}:{}", event.seq).as_str());
            let payload = Bytes::from(encode_events(origin, std::slice::from_ref(event)));
            match context
                .publish_with_headers(subject.clone(), headers, payload)
                .await
            {
                Ok(ack) => pending.push((event.seq, ack)),
                Err(error) => {
                    failure = Some(JetStreamDeliveryError::Publish(error));
                    break;
                }
            }
        }
        let mut through = events.first().map_or(0, |e| e.seq.saturating_sub(1));
        let mut duplicates = 0;
        for (seq, ack) in pending {
            match ack.into_future().await {
                Ok(ack) => {
                    through = seq;
                    duplicates += u64::from(ack.duplicate);
                }
                Err(error) => {
                    failure.get_or_insert(JetStreamDeliveryError::NoAcknowledgement(error));
                    break;
                }
            }
        }
        let first = events.first().map_or(0, |e| e.seq);
        match failure {
            // Nothing acknowledged: a failed delivery (backoff); the connection may be stale.
            Some(error) if through < first => {
                self.context = None;
                Err(error.into())
            }
            _ => Ok(Delivered {
                through,
                duplicates,
                refused: None,
            }),
        }
    }
}

/// Warns when no consumer of the stream takes this node's `subject`, or when hubs run with
/// another partition count than this node's: its events would then wait in the stream with no
/// hub to apply them, or be parked as dead letters on a hub that does not own this node. Looks
/// at `HUB_CONSUMERS_LOOKED_AT_MAX` consumers at most; a failure to list them is only logged.
async fn look_for_hubs(context: Context, stream: String, subject: String, partitions: u32) {
    let listed = async {
        let stream = context.get_stream(&stream).await?;
        let mut consumers = stream.consumers().take(HUB_CONSUMERS_LOOKED_AT_MAX);
        let (mut taken, mut other_counts) = (false, BTreeSet::new());
        while let Some(info) = consumers.next().await {
            let config = info?.config;
            taken |= filter_takes(&config.filter_subject, &subject);
            let hub = config
                .description
                .as_deref()
                .and_then(partition_in_description);
            other_counts.extend(hub.map(|p| p.count()).filter(|&count| count != partitions));
        }
        Ok::<_, async_nats::Error>((taken, other_counts))
    };
    match tokio::time::timeout(NATS_REQUEST_TIMEOUT, listed).await {
        Ok(Ok((taken, other_counts))) => {
            if !other_counts.is_empty() {
                tracing::warn!(
                    partitions,
                    hubs_partitions = ?other_counts,
                    "hubs of the stream split the fleet into another number of partitions than \
                     this node's --nats-partitions: its events may be parked on a hub that does \
                     not own it (RUNBOOK: \"Dead letters outside the hub's partition\")"
                );
            }
            if !taken {
                tracing::warn!(
                    subject,
                    "no consumer of the stream takes this node's subject (yet): no hub applies \
                     its events until one runs `consume --partition K/N` for its partition"
                );
            }
        }
        Ok(Err(error)) => tracing::debug!(%error, "cannot list the stream's consumers"),
        Err(_) => tracing::debug!("listing the stream's consumers timed out"),
    }
}

/// Consumers `look_for_hubs` reads at most (hubs and their replicas; a stream has few).
const HUB_CONSUMERS_LOOKED_AT_MAX: usize = 1000;

/// Why a delivery to JetStream got no acknowledgement. The replicator logs it and sends again.
#[derive(Debug)]
#[non_exhaustive]
pub enum JetStreamDeliveryError {
    /// NATS or the stream cannot be reached (shown as the stream error says it).
    Stream(StreamError),
    /// A publish was not sent.
    Publish(PublishError),
    /// A publish was sent but its acknowledgement did not come back.
    NoAcknowledgement(PublishError),
}

impl fmt::Display for JetStreamDeliveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JetStreamDeliveryError::Stream(error) => error.fmt(f),
            JetStreamDeliveryError::Publish(source) => write!(f, "publish failed: {source}"),
            JetStreamDeliveryError::NoAcknowledgement(source) => {
                write!(f, "no publish acknowledgement: {source}")
            }
        }
    }
}

impl std::error::Error for JetStreamDeliveryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            // Transparent: the message is the stream error's, so the source is its own.
            JetStreamDeliveryError::Stream(error) => std::error::Error::source(error),
            JetStreamDeliveryError::Publish(source)
            | JetStreamDeliveryError::NoAcknowledgement(source) => Some(source),
        }
    }
}

impl From<JetStreamDeliveryError> for SinkError {
    fn from(error: JetStreamDeliveryError) -> Self {
        SinkError::Failed(Box::new(error))
    }
}
