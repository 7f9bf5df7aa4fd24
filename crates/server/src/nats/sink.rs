//! The JetStream sink of the replicator.

use std::fmt;
use std::future::IntoFuture;

use async_nats::HeaderMap;
use async_nats::jetstream::Context;
use async_nats::jetstream::context::{PublishAckFuture, PublishError};
use bytes::Bytes;

use super::partition::subject_of;
use super::{StreamError, StreamSettings, connect};
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
