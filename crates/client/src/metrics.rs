//! The client's Prometheus metrics. A process that embeds the client (the CLI does not live
//! long enough to be scraped; a replicator does) registers them into its own registry with
//! `Client::register_metrics`. RUNBOOK.md says how to read them.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = [(&'static str, &'static str); 2];

/// Attempt numbers get their own label value up to this; later ones share `ATTEMPT_LABELS`' last.
const ATTEMPT_LABELS: [&str; 5] = ["1", "2", "3", "4", "5+"];

#[derive(Debug, Clone, Default)]
pub struct ClientMetrics {
    /// `onceledger_client_attempts_total{operation, attempt}`: every request sent, by its
    /// attempt number within its logical operation.
    pub attempts: Family<Labels, Counter>,
    /// `onceledger_client_gave_up_total{operation, reason="attempts|budget|retry_after"}`.
    pub gave_up: Family<Labels, Counter>,
    /// `onceledger_client_retry_budget_tokens`: tokens left in the call site's bucket.
    pub budget_tokens: Gauge,
}

impl ClientMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "onceledger_client_attempts",
            "Requests sent by the retrying client, by attempt number within the operation",
            self.attempts.clone(),
        );
        registry.register(
            "onceledger_client_gave_up",
            "Logical operations the client stopped retrying, by reason",
            self.gave_up.clone(),
        );
        registry.register(
            "onceledger_client_retry_budget_tokens",
            "Tokens left in the client's retry budget",
            self.budget_tokens.clone(),
        );
    }

    pub fn count_attempt(&self, operation: &'static str, attempt: u32) {
        let index = (attempt.max(1) as usize - 1).min(ATTEMPT_LABELS.len() - 1);
        self.attempts
            .get_or_create(&[("operation", operation), ("attempt", ATTEMPT_LABELS[index])])
            .inc();
    }

    pub fn count_gave_up(&self, operation: &'static str, reason: &'static str) {
        self.gave_up
            .get_or_create(&[("operation", operation), ("reason", reason)])
            .inc();
    }
}
