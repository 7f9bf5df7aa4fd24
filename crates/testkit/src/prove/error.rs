//! Why a prove run could not be carried out (a run that was carried out and did not prove
//! effectively-once is a [`Report`](super::Report) with failures, not an error).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::proxy::{ProxyError, RatesError};
use onceledger_client::ClientError;
use onceledger_core::store::StoreError;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug)]
#[non_exhaustive]
pub enum ProveError {
    /// The fault rates of the command line do not make a plan.
    Rates(RatesError),
    /// The tokio runtime could not be built.
    Runtime(std::io::Error),
    /// The run's data directory could not be created.
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    OpenStore {
        dir: PathBuf,
        source: StoreError,
    },
    /// Making the admin or replicator token of a server failed (the server's message).
    Token(onceledger_server::node::tokens::TokenCommandError),
    /// A server could not bind 127.0.0.1 on a free port.
    Listen(std::io::Error),
    LocalAddr(std::io::Error),
    /// The node's sink to the hub could not be made (the replication module's message).
    HubSink(onceledger_server::replication::hub::HubSinkError),
    /// The node's URL did not give a socket address for the proxy.
    NodeAddress(std::net::AddrParseError),
    Proxy(ProxyError),
    /// A retrying client could not be made.
    Client(ClientError),
    CreateAccount {
        id: String,
        source: ClientError,
    },
    /// The node answered an account creation with something other than 201.
    AccountRefused {
        id: String,
        status: u16,
        body: String,
    },
    /// A token could not be put in an `Authorization` header (the client's message).
    Header(onceledger_client::token::TokenError),
    /// A GET of a server's state: the URL is not one.
    Url {
        url: String,
        source: http::uri::InvalidUri,
    },
    /// A GET of a server's state failed on the way (building it, sending it, reading the body).
    Get {
        url: String,
        source: BoxError,
    },
    /// A GET of a server's state was answered with a status other than 2xx.
    Status {
        url: String,
        status: http::StatusCode,
        body: String,
    },
    GetTimeout {
        url: String,
        after: Duration,
    },
    NotJson {
        url: String,
        source: serde_json::Error,
    },
    /// The account read lacks one of its four totals (or one is not a whole number).
    NoTotals {
        url: String,
        account: Value,
    },
    /// The node's events page has no integer `held.last`.
    NoHeldLast {
        events: Value,
    },
    /// Requests the proxy held were still on their way at the deadline.
    ProxySettle,
    /// The deadline passed before the hub applied every event of the node.
    HubBehind {
        through: u64,
        last: u64,
        lag: f64,
    },
    StopTimeout {
        server: &'static str,
        after: Duration,
    },
    /// A server's task panicked or was cancelled.
    ServerTask {
        server: &'static str,
        source: tokio::task::JoinError,
    },
    /// A server stopped with an error (the server's message).
    Serve(onceledger_server::node::NodeError),
    /// The invariant checker's task panicked or was cancelled.
    CheckTask {
        server: &'static str,
        source: tokio::task::JoinError,
    },
    /// The invariant checker could not read a server's store.
    CheckRead {
        server: &'static str,
        source: StoreError,
    },
}

impl fmt::Display for ProveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProveError::Rates(error) => error.fmt(f),
            ProveError::Runtime(error) => write!(f, "cannot start the runtime: {error}"),
            ProveError::DataDir { path, source } => {
                write!(f, "cannot create {}: {source}", path.display())
            }
            ProveError::OpenStore { dir, source } => {
                write!(f, "cannot open the store in {}: {source}", dir.display())
            }
            ProveError::Token(error) => error.fmt(f),
            ProveError::HubSink(error) => error.fmt(f),
            ProveError::Serve(error) => error.fmt(f),
            ProveError::Header(error) => error.fmt(f),
            ProveError::Listen(error) => write!(f, "cannot listen on 127.0.0.1: {error}"),
            ProveError::LocalAddr(error) => write!(f, "no local address: {error}"),
            ProveError::NodeAddress(error) => write!(f, "node address: {error}"),
            ProveError::Proxy(error) => error.fmt(f),
            ProveError::Client(error) => error.fmt(f),
            ProveError::CreateAccount { id, source } => {
                write!(f, "cannot create account {id}: {source}")
            }
            ProveError::AccountRefused { id, status, body } => {
                write!(f, "account {id}: HTTP {status} {body}")
            }
            ProveError::Url { url, source } => write!(f, "{url}: {source}"),
            ProveError::Get { url, source } => write!(f, "GET {url}: {source}"),
            ProveError::Status { url, status, body } => write!(f, "GET {url}: {status} {body}"),
            ProveError::GetTimeout { url, after } => {
                write!(f, "GET {url}: no answer within {after:?}")
            }
            ProveError::NotJson { url, source } => write!(f, "GET {url}: not JSON: {source}"),
            ProveError::NoTotals { url, account } => {
                write!(f, "GET {url}: not the four totals of an account: {account}")
            }
            ProveError::NoHeldLast { events } => {
                write!(f, "the node's events page has no held.last: {events}")
            }
            ProveError::ProxySettle => {
                f.write_str("the proxy's held requests did not finish before the deadline")
            }
            ProveError::HubBehind { through, last, lag } => write!(
                f,
                "the hub did not catch up before the deadline: applied through {through} of {last}, node outbox lag {lag}"
            ),
            ProveError::StopTimeout { server, after } => {
                write!(f, "the {server} did not stop within {after:?}")
            }
            ProveError::ServerTask { server, source } => {
                write!(f, "the {server} task failed: {source}")
            }
            ProveError::CheckTask { server, source } => {
                write!(f, "the {server}'s check failed: {source}")
            }
            ProveError::CheckRead { server, source } => {
                write!(f, "cannot read the {server}'s store: {source}")
            }
        }
    }
}

impl std::error::Error for ProveError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProveError::Rates(error) => Some(error),
            ProveError::Runtime(error)
            | ProveError::Listen(error)
            | ProveError::LocalAddr(error)
            | ProveError::DataDir { source: error, .. } => Some(error),
            ProveError::OpenStore { source, .. } | ProveError::CheckRead { source, .. } => {
                Some(source)
            }
            ProveError::NodeAddress(error) => Some(error),
            ProveError::Token(error) => Some(error),
            ProveError::HubSink(error) => Some(error),
            ProveError::Serve(error) => Some(error),
            ProveError::Header(error) => Some(error),
            ProveError::Proxy(error) => Some(error),
            ProveError::Client(error) | ProveError::CreateAccount { source: error, .. } => {
                Some(error)
            }
            ProveError::Url { source, .. } => Some(source),
            ProveError::Get { source, .. } => Some(source.as_ref()),
            ProveError::NotJson { source, .. } => Some(source),
            ProveError::ServerTask { source, .. } | ProveError::CheckTask { source, .. } => {
                Some(source)
            }
            _ => None,
        }
    }
}

impl From<RatesError> for ProveError {
    fn from(error: RatesError) -> Self {
        ProveError::Rates(error)
    }
}

impl From<ProxyError> for ProveError {
    fn from(error: ProxyError) -> Self {
        ProveError::Proxy(error)
    }
}
