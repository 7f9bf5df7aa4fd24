//! The relay crash `prove` injects: a sink wrapper whose replicator panics right after the
//! `after`-th delivery the hub acknowledged, before the replicator could move its cursor. The
//! node's supervisor (`replication::supervise`) then starts a new replicator, which resumes from
//! the stored cursor and sends that batch again: the hub's inbox must drop it. The crash lives
//! here, outside the server, so the server has no fault point for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use onceledger_core::store::Event;
use onceledger_server::replication::{Delivered, Sink, SinkError};

#[derive(Clone)]
pub struct CrashAfterDelivery<S> {
    inner: S,
    after: u64,
    /// Shared by every clone, so the replicator started after the crash does not crash again.
    deliveries: Arc<AtomicU64>,
}

impl<S> CrashAfterDelivery<S> {
    pub fn new(inner: S, after: u64) -> Self {
        CrashAfterDelivery {
            inner,
            after,
            deliveries: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl<S: Sink + Sync> Sink for CrashAfterDelivery<S> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    async fn deliver(&mut self, origin: &str, events: &[Event]) -> Result<Delivered, SinkError> {
        let delivered = self.inner.deliver(origin, events).await?;
        let deliveries = self.deliveries.fetch_add(1, Ordering::SeqCst) + 1;
        if deliveries == self.after {
            tracing::error!(
                deliveries,
                "prove: relay crash after an acknowledged delivery"
            );
            panic!("relay crash injected by prove after delivery {deliveries}");
        }
        Ok(delivered)
    }
}
