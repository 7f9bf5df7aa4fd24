//! A fault-injecting HTTP/1.1 proxy for tests and `onceledger prove`: it listens on 127.0.0.1,
//! forwards each request to the server, and per request, by a seeded choice (`fault`), passes
//! it, loses the answer after the server processed it, resets the connection before forwarding,
//! or delays it. Counters of each fault are kept for the caller to report.
//!
//! hyper on both sides: the proxy knows where each request and answer ends because hyper parsed
//! them, so a lost answer is exactly one whole answer the server sent.
//!
//! Determinism: the fault sequence is a function of the seed alone; the `i`-th request to reach
//! the proxy gets the `i`-th fault. With one request at a time the whole run repeats; with
//! concurrent clients, which request is `i`-th depends on timing.

mod error;
mod fault;
mod forward;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};

pub use error::{ProxyError, RatesError};
pub use fault::{Fault, FaultPlan, FaultRates};

/// How long a delayed request is held when not configured.
pub const DELAY_DEFAULT: Duration = Duration::from_millis(200);

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The server requests are forwarded to.
    pub upstream: SocketAddr,
    pub seed: u64,
    pub rates: FaultRates,
    /// How long a `Delay` fault holds a request before forwarding it.
    pub delay: Duration,
}

/// What the proxy has done so far. `requests` = `passed + lost_responses + resets + delays`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FaultCounts {
    pub requests: u64,
    pub passed: u64,
    pub lost_responses: u64,
    pub resets: u64,
    pub delays: u64,
    /// Forwards that got no answer from the server (answered 502 to the client, or lost).
    pub upstream_errors: u64,
}

/// Shared by the accept loop and every connection.
struct Shared {
    config: ProxyConfig,
    plan: Mutex<FaultPlan>,
    upstream: forward::Upstream,
    requests: AtomicU64,
    passed: AtomicU64,
    lost_responses: AtomicU64,
    resets: AtomicU64,
    delays: AtomicU64,
    upstream_errors: AtomicU64,
    /// Forwards started and not yet finished (see `Proxy::settle`).
    forwards_in_flight: AtomicU64,
    forwards_done: Notify,
}

impl Shared {
    /// The next fault of the plan, counted.
    fn next_fault(&self) -> Fault {
        let fault = self
            .plan
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .next_fault();
        self.requests.fetch_add(1, Ordering::Relaxed);
        let counter = match fault {
            Fault::Pass => &self.passed,
            Fault::LostResponse => &self.lost_responses,
            Fault::Reset => &self.resets,
            Fault::Delay => &self.delays,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        fault
    }
}

/// A running proxy; dropping it stops accepting and cuts its client connections (forwards
/// already on their way to the server still complete).
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Binds 127.0.0.1 on a free port and starts serving.
    pub async fn start(config: ProxyConfig) -> Result<Proxy, ProxyError> {
        config.rates.validate()?;
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(ProxyError::Listen)?;
        let addr = listener.local_addr().map_err(ProxyError::LocalAddr)?;
        let shared = Arc::new(Shared {
            plan: Mutex::new(FaultPlan::new(config.rates, config.seed)),
            upstream: forward::Upstream::new(config.upstream),
            config,
            requests: AtomicU64::new(0),
            passed: AtomicU64::new(0),
            lost_responses: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            delays: AtomicU64::new(0),
            upstream_errors: AtomicU64::new(0),
            forwards_in_flight: AtomicU64::new(0),
            forwards_done: Notify::new(),
        });
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(Proxy {
            addr,
            shared,
            accept,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, for clients.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits until every forward already started has finished: held (delayed) requests reached
    /// the server and lost answers were read. A test calls it before reading the server's state,
    /// so no request is still on its way.
    pub async fn settle(&self) {
        loop {
            let done = self.shared.forwards_done.notified();
            tokio::pin!(done);
            // Registered before the check, so a forward that ends in between still wakes us.
            done.as_mut().enable();
            if self.shared.forwards_in_flight.load(Ordering::Acquire) == 0 {
                return;
            }
            done.await;
        }
    }

    pub fn counts(&self) -> FaultCounts {
        let s = &self.shared;
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        FaultCounts {
            requests: load(&s.requests),
            passed: load(&s.passed),
            lost_responses: load(&s.lost_responses),
            resets: load(&s.resets),
            delays: load(&s.delays),
            upstream_errors: load(&s.upstream_errors),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // The accept task owns the connection tasks (a JoinSet): aborting it drops them all.
        self.accept.abort();
    }
}

/// After a failed accept (for example out of file descriptors), wait this long before the next.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(forward::serve_connection(Arc::clone(&shared), stream));
                }
                Err(error) => {
                    tracing::warn!(%error, "proxy accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                }
            },
            // Reap finished connections so the set does not grow with every one ever served.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}
