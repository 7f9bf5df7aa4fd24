//! The JetStream sink of the replicator.

use std::future::IntoFuture;

use async_nats::HeaderMap;
use async_nats::jetstream::Context;
use async_nats::jetstream::context::PublishAckFuture;
use bytes::Bytes;

use super::{StreamSettings, connect};
use crate::replication::{Delivered, Sink, SinkError};
use onceledger_core::store::Event;
use onceledger_core::wire::encode_events;

#[derive(Clone)]
pub struct JetStreamSink {
    settings: StreamSettings,
    name: String,
    /// Connected lazily, so a node whose NATS is down at start still starts and takes payments.
    context: Option<Context>,
}

impl JetStreamSink {
    pub fn new(settings: StreamSettings) -> Self {
        let name = format!("nats:{}/{}", settings.url, settings.stream);
        JetStreamSink {
            settings,
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
                let context = connect(&self.settings).await.map_err(SinkError)?;
                self.context = Some(context.clone());
                context
            }
        };
        let subject = format!("{}.{origin}", self.settings.subject_prefix);
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
                    failure = Some(format!("publish failed: {error}"));
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
                    failure.get_or_insert(format!("no publish acknowledgement: {error}"));
                    break;
                }
            }
        }
        let first = events.first().map_or(0, |e| e.seq);
        match failure {
            // Nothing acknowledged: a failed delivery (backoff); the connection may be stale.
            Some(error) if through < first => {
                self.context = None;
                Err(SinkError(error))
            }
            _ => Ok(Delivered {
                through,
                duplicates,
                refused: None,
            }),
        }
    }
}
