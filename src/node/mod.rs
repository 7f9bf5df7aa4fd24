//! Running a node: open the store, start the writer, serve HTTP until told to stop, then drain.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::api::{App, serve};
use crate::metrics::Metrics;
use crate::nats::StreamSettings;
use crate::nats::consumer::{ConsumerConfig, default_durable};
use crate::nats::sink::JetStreamSink;
use crate::replication::hub::HubSink;
use crate::replication::{self, NodeParts, ReplicatorConfig};
use crate::store::Store;
use crate::writer::{WriterConfig, WriterHandle};

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Taken by a fresh data directory; an existing one must already carry it.
    pub node_id: Option<String>,
    pub writer: WriterConfig,
    pub replication: ReplicationConfig,
}

/// Where this node's outbox goes, how fast, and which stream it consumes as a hub.
#[derive(Debug, Clone, Default)]
pub struct ReplicationConfig {
    /// A hub's root URL (`--upstream`).
    pub upstream: Option<String>,
    /// A JetStream stream to publish the outbox to (`--nats`, `--nats-stream`).
    pub nats: Option<StreamSettings>,
    /// A JetStream stream to consume into the inbox (`onceledger consume`), and the durable name
    /// (default: derived from the node id).
    pub consume: Option<(StreamSettings, Option<String>)>,
    pub replicator: ReplicatorConfig,
}

/// Runs the node until `shutdown` completes. Every command accepted before shutdown is committed
/// and answered before this returns. Errors are one sentence for the operator.
pub async fn run(config: NodeConfig, shutdown: impl Future<Output = ()>) -> Result<(), String> {
    let upstream = config
        .replication
        .upstream
        .as_deref()
        .map(HubSink::new)
        .transpose()?;
    let store = Store::open_as(&config.data_dir, config.node_id.as_deref()).map_err(|e| {
        format!(
            "cannot open the store in {}: {e}",
            config.data_dir.display()
        )
    })?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let bound = listener
        .local_addr()
        .map_err(|e| format!("no local address: {e}"))?;
    tracing::info!(node_id = store.node_id(), data_dir = %config.data_dir.display(), "store open");
    // Scripts and tests wait for these exact lines on stdout.
    println!("node {}", store.node_id());
    println!("listening on {bound}");
    let consumer = config
        .replication
        .consume
        .map(|(stream, durable)| ConsumerConfig {
            durable: durable.unwrap_or_else(|| default_durable(store.node_id())),
            stream,
            backoff_cap: config.replication.replicator.backoff_cap,
            crash_after_commits: std::env::var("ONCELEDGER_FAULT_CONSUMER_CRASH_AFTER")
                .ok()
                .and_then(|v| v.parse().ok()),
        });
    let sinks = Sinks {
        hub: upstream,
        nats: config.replication.nats.map(JetStreamSink::new),
        consumer,
        replicator: config.replication.replicator,
    };
    serve_store_with(Arc::new(store), listener, config.writer, sinks, shutdown).await
}

/// The sinks a node replicates to, and the stream it consumes as a hub.
#[derive(Default)]
pub struct Sinks {
    pub hub: Option<HubSink>,
    pub nats: Option<JetStreamSink>,
    pub consumer: Option<ConsumerConfig>,
    pub replicator: ReplicatorConfig,
}

/// Serves an already open store on an already bound listener (tests use it to inject storage
/// faults): starts the writer, serves until `shutdown`, then lets the writer commit what is queued.
pub async fn serve_store(
    store: Arc<Store>,
    listener: TcpListener,
    writer: WriterConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    serve_store_with(store, listener, writer, Sinks::default(), shutdown).await
}

/// [`serve_store`] with replication to `sinks`.
pub async fn serve_store_with(
    store: Arc<Store>,
    listener: TcpListener,
    writer: WriterConfig,
    sinks: Sinks,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    let metrics = Arc::new(Metrics::new());
    let writer = WriterHandle::spawn(Arc::clone(&store), writer, Arc::clone(&metrics))
        .map_err(|e| format!("cannot start the writer thread: {e}"))?;
    let app = Arc::new(App::new(store, writer, metrics));
    let parts = || NodeParts {
        store: Arc::clone(&app.store),
        writer: Arc::clone(&app.writer),
        metrics: Arc::clone(&app.metrics),
    };
    let mut replicators = Vec::new();
    if let Some(hub) = sinks.hub {
        replicators.push(tokio::spawn(replication::supervise(
            hub,
            parts(),
            sinks.replicator,
        )));
    }
    if let Some(nats) = sinks.nats {
        replicators.push(tokio::spawn(replication::supervise(
            nats,
            parts(),
            sinks.replicator,
        )));
    }
    if let Some(consumer) = sinks.consumer {
        replicators.push(consumer.spawn(parts()));
    }
    serve(listener, Arc::clone(&app), shutdown).await;
    // Safe at any point: a cursor only ever moves to what its sink acknowledged.
    for replicator in replicators {
        replicator.abort();
    }
    app.writer.shutdown();
    tracing::info!("stopped");
    Ok(())
}

/// A duration flag such as `30d`, `12h` or `90s`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{text:?} is not a duration: {e}"))
}
