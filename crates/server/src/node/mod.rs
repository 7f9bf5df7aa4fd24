//! Running a node: open the store, start the writer, serve HTTP until told to stop, then drain.

pub mod tokens;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::api::{App, ServerSettings, serve};
use crate::auth::{Authenticator, RateLimit};
use crate::metrics::Metrics;
use crate::nats::StreamSettings;
use crate::nats::consumer::{ConsumerConfig, default_durable};
use crate::nats::partition::Partition;
use crate::nats::sink::JetStreamSink;
use crate::replication::hub::HubSink;
use crate::replication::{NodeParts, Replicator, ReplicatorConfig};
use onceledger_core::store::{Store, StoreError};
use onceledger_core::writer::{StopError, WriterConfig, WriterHandle};

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Taken by a fresh data directory; an existing one must already carry it.
    pub node_id: Option<String>,
    pub writer: WriterConfig,
    pub replication: ReplicationConfig,
    pub security: SecurityConfig,
}

/// Who may connect and how: TLS, socket limits, the token rate limit, `/metrics` access.
#[derive(Debug, Clone)]
pub struct SecurityConfig {
    /// PEM certificate chain and private key (`--tls-cert`, `--tls-key`): serve HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub header_read_timeout: Duration,
    pub connections_max: usize,
    pub metrics_auth: bool,
    /// Requests per second per token (`--rate-limit`); `None`: unlimited.
    pub rate_limit_per_second: Option<u32>,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            tls: None,
            header_read_timeout: onceledger_core::limits::HEADER_READ_TIMEOUT,
            connections_max: onceledger_core::limits::CONNECTIONS_MAX,
            metrics_auth: false,
            rate_limit_per_second: None,
        }
    }
}

/// Where this node's outbox goes, how fast, and which stream it consumes as a hub.
#[derive(Debug, Clone, Default)]
pub struct ReplicationConfig {
    /// A hub's root URL (`--upstream`).
    pub upstream: Option<String>,
    /// How this node reaches its hub: the replicator token and, for https, the CA file.
    pub upstream_auth: crate::replication::hub::HubAuth,
    /// A JetStream stream to publish the outbox to (`--nats`, `--nats-stream`).
    pub nats: Option<PublishSettings>,
    /// A JetStream stream to consume into the inbox (`onceledger consume`).
    pub consume: Option<ConsumeSettings>,
    pub replicator: ReplicatorConfig,
}

/// Where a terminal publishes its outbox.
#[derive(Debug, Clone)]
pub struct PublishSettings {
    pub stream: StreamSettings,
    /// `--nats-partitions`: the fleet's partition count, which the subject's partition is of.
    pub partitions: u32,
}

/// What a hub fed by JetStream consumes (`onceledger consume`).
#[derive(Debug, Clone)]
pub struct ConsumeSettings {
    pub stream: StreamSettings,
    /// `--partition K/N`: the origins this hub applies.
    pub partition: Partition,
    /// `--durable` (default: derived from the node id and the partition).
    pub durable: Option<String>,
}

/// Why a node could not start (or stop cleanly). The messages are one sentence for the operator.
#[derive(Debug)]
#[non_exhaustive]
pub enum NodeError {
    /// `--upstream` is not a hub URL this node can use.
    Upstream(crate::replication::hub::HubSinkError),
    /// `--tls-cert`/`--tls-key` could not be loaded.
    Tls(crate::tls::TlsError),
    OpenStore {
        data_dir: PathBuf,
        source: StoreError,
    },
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The first admin token could not be made or stored.
    AdminToken(tokens::TokenCommandError),
    WriterThread(std::io::Error),
    ReadTokens(StoreError),
    /// A task of the node's own panicked (opening the store).
    Panicked(&'static str),
    /// The writer did not stop cleanly: storage failed while serving, or at the last checkpoint.
    Stop(StopError),
    /// `ONCELEDGER_FAULT_MARKS` does not parse (test builds only: `crate::fault`).
    #[cfg(feature = "fault-injection")]
    FaultMarks(onceledger_core::store::MarksError),
}

impl std::fmt::Display for NodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeError::Upstream(error) => write!(f, "{error}"),
            NodeError::Tls(error) => write!(f, "{error}"),
            NodeError::OpenStore { data_dir, source } => {
                write!(
                    f,
                    "cannot open the store in {}: {source}",
                    data_dir.display()
                )
            }
            NodeError::Listen { addr, source } if *addr == UNBOUND => {
                write!(f, "no local address: {source}")
            }
            NodeError::Listen { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            NodeError::AdminToken(error) => write!(f, "{error}"),
            NodeError::WriterThread(source) => {
                write!(f, "cannot start the writer thread: {source}")
            }
            NodeError::ReadTokens(source) => write!(f, "cannot read the tokens: {source}"),
            NodeError::Panicked(what) => write!(f, "{what} panicked"),
            NodeError::Stop(error) => write!(f, "stopped uncleanly: {error}"),
            #[cfg(feature = "fault-injection")]
            NodeError::FaultMarks(error) => write!(f, "ONCELEDGER_FAULT_MARKS: {error}"),
        }
    }
}

impl std::error::Error for NodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            NodeError::Upstream(error) => Some(error),
            NodeError::Tls(error) => Some(error),
            NodeError::OpenStore { source, .. } | NodeError::ReadTokens(source) => Some(source),
            NodeError::Listen { source, .. } | NodeError::WriterThread(source) => Some(source),
            NodeError::AdminToken(error) => Some(error),
            NodeError::Stop(error) => Some(error),
            #[cfg(feature = "fault-injection")]
            NodeError::FaultMarks(error) => Some(error),
            NodeError::Panicked(_) => None,
        }
    }
}

/// The address a `Listen` error names when the socket was bound but has no local address.
const UNBOUND: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::UNSPECIFIED,
    0,
));

/// Runs the node until `shutdown` completes. Every command accepted before shutdown is committed
/// and answered before this returns. Errors are one sentence for the operator.
pub async fn run(config: NodeConfig, shutdown: impl Future<Output = ()>) -> Result<(), NodeError> {
    let upstream = config
        .replication
        .upstream
        .as_deref()
        .map(|url| HubSink::new(url, &config.replication.upstream_auth))
        .transpose()
        .map_err(NodeError::Upstream)?;
    let mut store = open_off_worker(config.data_dir.clone(), config.node_id.clone()).await?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| NodeError::Listen {
            addr: config.listen,
            source,
        })?;
    let bound = listener.local_addr().map_err(|source| NodeError::Listen {
        addr: UNBOUND,
        source,
    })?;
    tracing::info!(node_id = store.node_id(), data_dir = %config.data_dir.display(), "store open");
    let settings = server_settings(&config.security)?;
    // Scripts and tests wait for these exact lines on stdout.
    println!("node {}", store.node_id());
    // One small commit before anything is served: the only store write left on an async worker.
    if let Some((secret, path)) =
        tokens::ensure_admin_token(&mut store, &config.data_dir).map_err(NodeError::AdminToken)?
    {
        // Shown once, on stdout (not the log); also in the file, for scripts.
        println!("admin token {}", secret.expose());
        println!("admin token written to {}", path.display());
        tracing::info!(file = %path.display(), "first admin token made");
    }
    println!("listening on {bound}");
    let consumer = config.replication.consume.map(|consume| ConsumerConfig {
        durable: (consume.durable)
            .unwrap_or_else(|| default_durable(store.node_id(), consume.partition)),
        stream: consume.stream,
        partition: consume.partition,
        backoff_cap: config.replication.replicator.backoff_cap,
    });
    let replicator = config.replication.replicator;
    let hub = upstream.map(|hub| Replicator::new(hub, replicator));
    let nats = (config.replication.nats).map(|publish| {
        let sink = JetStreamSink::new(publish.stream, publish.partitions);
        Replicator::new(sink, replicator)
    });
    let sinks = Sinks {
        replicators: hub.into_iter().chain(nats).collect(),
        consumer,
    };
    serve_store_secured(
        Arc::new(store),
        listener,
        config.writer,
        sinks,
        settings,
        config.security.rate_limit_per_second,
        shutdown,
    )
    .await
}

/// The socket settings for `security`: loads the TLS certificate and key if given.
fn server_settings(security: &SecurityConfig) -> Result<ServerSettings, NodeError> {
    let tls = security
        .tls
        .as_ref()
        .map(|(cert, key)| crate::tls::server_acceptor(cert, key))
        .transpose()
        .map_err(NodeError::Tls)?;
    Ok(ServerSettings {
        header_read_timeout: security.header_read_timeout,
        connections_max: security.connections_max,
        metrics_auth: security.metrics_auth,
        tls,
    })
}

/// The sinks a node replicates to (one supervised replicator each), and the stream it consumes
/// as a hub.
#[derive(Default)]
pub struct Sinks {
    pub replicators: Vec<Replicator>,
    pub consumer: Option<ConsumerConfig>,
}

/// Serves an already open store on an already bound listener (tests use it to inject storage
/// faults): starts the writer, serves until `shutdown`, then lets the writer commit what is queued.
pub async fn serve_store(
    store: Store,
    listener: TcpListener,
    writer: WriterConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), NodeError> {
    serve_store_with(store, listener, writer, Sinks::default(), shutdown).await
}

/// [`serve_store`] with replication to `sinks`. Every `/v1` request needs a token of the store
/// (`admin.token` is written beside a store that has no admin token; see [`tokens`]).
pub async fn serve_store_with(
    mut store: Store,
    listener: TcpListener,
    writer: WriterConfig,
    sinks: Sinks,
    shutdown: impl Future<Output = ()>,
) -> Result<(), NodeError> {
    if let Some(data_dir) = store.path().parent().map(std::path::Path::to_path_buf) {
        tokens::ensure_admin_token(&mut store, &data_dir).map_err(NodeError::AdminToken)?;
    }
    let settings = ServerSettings::default();
    let store = Arc::new(store);
    serve_store_secured(store, listener, writer, sinks, settings, None, shutdown).await
}

/// [`serve_store_with`] with socket settings and a per-token rate limit.
pub async fn serve_store_secured(
    store: Arc<Store>,
    listener: TcpListener,
    writer: WriterConfig,
    sinks: Sinks,
    settings: ServerSettings,
    rate_limit_per_second: Option<u32>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), NodeError> {
    // Here rather than where `run` opens the store, so that every server of a test build reads
    // it, the ones `onceledger prove` serves in process included.
    #[cfg(feature = "fault-injection")]
    crate::fault::shorten_authorization_seconds();
    let metrics = Arc::new(Metrics::new());
    let writer = WriterHandle::spawn(Arc::clone(&store), writer, Arc::clone(&metrics) as _)
        .map_err(NodeError::WriterThread)?;
    let auth = Arc::new(Authenticator::new(
        rate_limit_per_second.map(|per_second| RateLimit { per_second }),
    ));
    // What `GET /v1/replication/origins` shows of the consumer: its partition, and the origins
    // the stream cannot complete (the consumer task keeps that up to date).
    let hub_feed = (sinks.consumer.as_ref()).map(|consumer| Arc::new(consumer.feed_status()));
    let app = App::new(store, writer, metrics)
        .with_settings(auth, settings)
        .with_hub_feed(hub_feed.clone());
    let app = Arc::new(app);
    app.load_tokens().map_err(NodeError::ReadTokens)?;
    let parts = NodeParts {
        store: Arc::clone(&app.store),
        writer: Arc::clone(&app.writer),
        metrics: Arc::clone(&app.metrics),
    };
    let mut replicators: Vec<_> = (sinks.replicators.into_iter())
        .map(|replicator| replicator.spawn(parts.clone()))
        .collect();
    if let Some((consumer, feed)) = sinks.consumer.zip(hub_feed) {
        replicators.push(consumer.spawn(parts, feed));
    }
    serve(listener, Arc::clone(&app), shutdown).await;
    // Safe at any point: a cursor only ever moves to what its sink acknowledged.
    for replicator in replicators {
        replicator.abort();
    }
    #[cfg(feature = "fault-injection")]
    crate::fault::before_final_checkpoint(&app.store);
    // Joining the writer thread blocks (its last batch and the final checkpoint's fsync).
    let writer = Arc::clone(&app.writer);
    let stopped = tokio::task::spawn_blocking(move || writer.shutdown()).await;
    // A stop on failing storage is no clean stop: the process exits non-zero (a supervisor must
    // see it), although nothing acknowledged is lost (the journal replays it at the next start).
    match stopped {
        Ok(Ok(())) => {}
        Ok(Err(error)) => return Err(NodeError::Stop(error)),
        Err(_) => return Err(NodeError::Stop(StopError::Panicked)),
    }
    tracing::info!("stopped");
    Ok(())
}

/// Opens the store on tokio's blocking pool: recovery reads and writes the files (a journal
/// replay, redb's repair after a crash) and must not hold an async worker while it does.
async fn open_off_worker(data_dir: PathBuf, node_id: Option<String>) -> Result<Store, NodeError> {
    let opened = tokio::task::spawn_blocking(move || {
        Store::open_as(&data_dir, node_id.as_deref())
            .map_err(|source| NodeError::OpenStore { data_dir, source })
    });
    #[allow(unused_mut)] // Changed only by the test builds' marks.
    let mut store = opened
        .await
        .map_err(|_| NodeError::Panicked("opening the store"))??;
    // Before the store is shared, once: a test build's small marks (`crate::fault`).
    #[cfg(feature = "fault-injection")]
    if let Some(marks) = crate::fault::store_marks().map_err(NodeError::FaultMarks)? {
        tracing::warn!(%marks, "test build: the store's marks moved by ONCELEDGER_FAULT_MARKS");
        store.set_marks(marks);
    }
    Ok(store)
}
