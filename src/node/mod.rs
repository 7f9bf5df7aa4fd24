//! Running a node: open the store, start the writer, serve HTTP until told to stop, then drain.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::api::{App, serve};
use crate::metrics::Metrics;
use crate::store::Store;
use crate::writer::{WriterConfig, WriterHandle};

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub writer: WriterConfig,
}

/// Runs the node until `shutdown` completes. Every command accepted before shutdown is committed
/// and answered before this returns. Errors are one sentence for the operator.
pub async fn run(config: NodeConfig, shutdown: impl Future<Output = ()>) -> Result<(), String> {
    let store = Store::open(&config.data_dir).map_err(|e| {
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
    // Scripts and tests wait for this exact line on stdout.
    println!("listening on {bound}");
    serve_store(Arc::new(store), listener, config.writer, shutdown).await
}

/// Serves an already open store on an already bound listener (tests use it to inject storage
/// faults): starts the writer, serves until `shutdown`, then lets the writer commit what is queued.
pub async fn serve_store(
    store: Arc<Store>,
    listener: TcpListener,
    writer: WriterConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    let metrics = Arc::new(Metrics::new());
    let writer = WriterHandle::spawn(Arc::clone(&store), writer, Arc::clone(&metrics))
        .map_err(|e| format!("cannot start the writer thread: {e}"))?;
    let app = Arc::new(App::new(store, writer, metrics));
    serve(listener, Arc::clone(&app), shutdown).await;
    app.writer.shutdown();
    tracing::info!("stopped");
    Ok(())
}

/// A duration flag such as `30d`, `12h` or `90s`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{text:?} is not a duration: {e}"))
}
