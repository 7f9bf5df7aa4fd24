//! NATS JetStream: the only code that imports async-nats.
//!
//! `sink`: a replicator sink that publishes each outbox event as one message on
//! `PREFIX.<k>.<node>` (`k`: the node's partition, `partition`) with `Nats-Msg-Id: <node>:<seq>`,
//! so JetStream's duplicate window drops a re-publish; the cursor moves only over events whose
//! publish acknowledgement came back.
//! `consumer`: `onceledger consume` applies one partition's events (a filter subject) through the
//! same inbox as the HTTP receiver, and acknowledges a message (double ack) only after its
//! transaction committed. `gaps` and `feed`: what it reports when the stream no longer holds an
//! origin's next event, and what `GET /v1/replication/origins` shows of its feed.

pub mod consumer;
pub mod feed;
mod gaps;
pub mod partition;
pub mod sink;

use std::fmt;
use std::time::Duration;

use async_nats::jetstream::{self, Context};

/// Where the stream is and what it is called.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// `nats://host:port` (or `host:port`).
    pub url: String,
    pub stream: String,
    /// Subjects are `PREFIX.<partition>.<node>`; the stream takes `PREFIX.>`.
    pub subject_prefix: String,
    /// JetStream drops a message whose `Nats-Msg-Id` it saw within this window.
    pub duplicate_window: Duration,
}

/// How long a connect, a stream lookup or a publish acknowledgement may take.
pub(crate) const NATS_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects and makes sure the stream exists (file storage), creating it if missing.
pub(crate) async fn connect(settings: &StreamSettings) -> Result<Context, StreamError> {
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(NATS_REQUEST_TIMEOUT)
        .connect(settings.url.as_str())
        .await
        .map_err(|source| StreamError::Connect {
            url: settings.url.clone(),
            source,
        })?;
    let context = jetstream::new(client);
    context
        .get_or_create_stream(jetstream::stream::Config {
            name: settings.stream.clone(),
            subjects: vec![format!("{}.>", settings.subject_prefix)],
            storage: jetstream::stream::StorageType::File,
            duplicate_window: settings.duplicate_window,
            ..Default::default()
        })
        .await
        .map_err(|source| StreamError::Stream {
            stream: settings.stream.clone(),
            source,
        })?;
    Ok(context)
}

/// Why the stream of [`StreamSettings`] cannot be used: NATS is away, or the stream can be
/// neither found nor created. Each message is one sentence for the operator.
#[derive(Debug)]
#[non_exhaustive]
pub enum StreamError {
    Connect {
        url: String,
        source: async_nats::ConnectError,
    },
    Stream {
        stream: String,
        source: jetstream::context::CreateStreamError,
    },
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamError::Connect { url, source } => {
                write!(f, "cannot connect to NATS at {url}: {source}")
            }
            StreamError::Stream { stream, source } => {
                write!(f, "cannot create or find stream {stream}: {source}")
            }
        }
    }
}

impl std::error::Error for StreamError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StreamError::Connect { source, .. } => Some(source),
            StreamError::Stream { source, .. } => Some(source),
        }
    }
}
