//! The node and the hub of a run: each a server on loopback in this process, with its store in
//! a data directory of the run.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::ProveError;
use onceledger_core::store::{Store, check};
use onceledger_core::writer::WriterConfig;
use onceledger_server::auth::{DEFAULT_TENANT_NAME, Role, TokenSecret};
use onceledger_server::node::{NodeError, Sinks, serve_store_with};

/// How long stopping the node and the hub may take.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The node's and the hub's data directories under a fresh directory in the system's temporary
/// directory, removed on drop unless kept.
pub(super) struct DataDirs {
    root: PathBuf,
    keep: bool,
}

impl DataDirs {
    pub(super) fn create(keep: bool) -> Result<DataDirs, ProveError> {
        let root = std::env::temp_dir().join(format!(
            "onceledger-prove-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir(&root).map_err(|source| ProveError::DataDir {
            path: root.clone(),
            source,
        })?;
        Ok(DataDirs { root, keep })
    }

    pub(super) fn node(&self) -> PathBuf {
        self.root.join("node")
    }

    pub(super) fn hub(&self) -> PathBuf {
        self.root.join("hub")
    }
}

impl Drop for DataDirs {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("prove: data kept in {}", self.root.display());
        } else if let Err(error) = std::fs::remove_dir_all(&self.root) {
            eprintln!("prove: cannot remove {}: {error}", self.root.display());
        }
    }
}

/// A node (or hub) served in this process.
pub(super) struct Running {
    /// The data directory: checked read-only once the server stopped, as `onceledger check` does.
    dir: PathBuf,
    pub(super) url: String,
    /// An admin token of this server (reads, account setup, charges).
    pub(super) admin: TokenSecret,
    /// A replicator token of this server (what a node sends to it as its hub).
    pub(super) replicator: TokenSecret,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), NodeError>>>,
}

impl Running {
    pub(super) async fn start(
        dir: &Path,
        node_id: &str,
        sinks: Sinks,
    ) -> Result<Running, ProveError> {
        let mut store =
            Store::open_as(dir, Some(node_id)).map_err(|source| ProveError::OpenStore {
                dir: dir.to_path_buf(),
                source,
            })?;
        // Made before serving: the server loads its token table when it starts.
        let mut token = |role| {
            onceledger_server::node::tokens::token_create(&mut store, DEFAULT_TENANT_NAME, role)
                .map(|(_, secret)| secret)
                .map_err(ProveError::Token)
        };
        let (admin, replicator) = (token(Role::Admin)?, token(Role::Replicator)?);
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(ProveError::Listen)?;
        let addr = listener.local_addr().map_err(ProveError::LocalAddr)?;
        let (stop, stopped) = oneshot::channel::<()>();
        // The listener is bound already: connections made before the task runs wait in the
        // backlog, so nothing needs to wait for readiness.
        let task = tokio::spawn(serve_store_with(
            store,
            listener,
            WriterConfig::default(),
            sinks,
            async move {
                let _ = stopped.await;
            },
        ));
        Ok(Running {
            dir: dir.to_path_buf(),
            url: format!("http://{addr}"),
            admin,
            replicator,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Stops serving (the writer commits what is queued) and runs the invariant checker.
    pub(super) async fn stop_and_check(
        &mut self,
        name: &'static str,
    ) -> Result<Vec<String>, ProveError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(STOP_TIMEOUT, task)
                .await
                .map_err(|_| ProveError::StopTimeout {
                    server: name,
                    after: STOP_TIMEOUT,
                })?
                .map_err(|source| ProveError::ServerTask {
                    server: name,
                    source,
                })?
                .map_err(ProveError::Serve)?;
        }
        let dir = self.dir.clone();
        let report = tokio::task::spawn_blocking(move || check::verify_stopped(&dir))
            .await
            .map_err(|source| ProveError::CheckTask {
                server: name,
                source,
            })?
            .map_err(|source| ProveError::CheckRead {
                server: name,
                source,
            })?;
        Ok(report
            .violations
            .into_iter()
            .map(|v| format!("{name}: {v}"))
            .collect())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
