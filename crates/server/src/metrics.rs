//! Prometheus metrics (names in API.md). Counters the hot path touches are resolved once at
//! start-up, so counting is one atomic add, never a label lookup.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

use onceledger_core::ledger::ChargeStatus;
use onceledger_core::store::{Effect, MarksCrossed};
use onceledger_core::wire::Ack;
use onceledger_core::writer::CommitObserver;

type Labels = [(&'static str, &'static str); 1];

/// `onceledger_idempotency_requests_total{outcome=...}`.
#[derive(Debug, Clone, Copy)]
pub enum KeyOutcome {
    New,
    Replayed,
    InFlight,
    Mismatch,
    Missing,
    Invalid,
}

pub struct Metrics {
    registry: Registry,
    key_outcomes: [Counter; 6],
    charges_applied: Counter,
    accounts_created: Counter,
    lifecycle: LifecycleCounters,
    write_rejected_overloaded: Counter,
    write_rejected_unavailable: Counter,
    commits: Counter,
    commit_batch_commands: Histogram,
    commit_duration_seconds: Histogram,
    request_duration_seconds: Histogram,
    pub inflight_keys: Gauge,
    pub commit_queue_commands: Gauge,
    pub idempotency_keys_in_memory: Gauge,
    pub journal_bytes: Gauge,
    store_checkpoints: Counter,
    store_account_flushes: Counter,
    store_key_merges: Counter,
    store_statement_merges: Counter,
    /// Per sink kind (`hub`, `nats`); no series without a sink.
    pub outbox_lag_events: Family<Labels, Gauge>,
    pub outbox_oldest_unpublished_age_seconds: Family<Labels, Gauge>,
    inbox_applied: Counter,
    inbox_duplicate: Counter,
    inbox_dead_lettered: Counter,
    outbox_events_deleted: Counter,
    pub replication: ReplicationCounters,
    pub nats_consumer: NatsConsumerCounters,
    /// Requests refused at the authentication boundary, by reason.
    auth_refusals: Family<Labels, Counter>,
}

/// `onceledger consume`: what happened to each JetStream message.
#[derive(Clone)]
pub struct NatsConsumerCounters {
    pub acknowledged: Counter,
    pub redelivered: Counter,
    pub terminated: Counter,
    /// Messages of an origin outside the hub's partition: parked as dead letters, then
    /// acknowledged (counted here, not in `acknowledged`).
    pub outside_partition: Counter,
    /// Origins whose next event the stream no longer holds (GET /v1/replication/origins lists
    /// them under `missing_from_stream`).
    pub origins_missing_from_stream: Gauge,
}

/// The sending side of replication, per sink kind.
#[derive(Clone, Default)]
pub struct ReplicationCounters {
    pub events_sent: Family<Labels, Counter>,
    pub events_acknowledged: Family<Labels, Counter>,
    pub events_retried: Family<Labels, Counter>,
    pub delivery_failures: Family<Labels, Counter>,
    pub events_duplicate: Family<Labels, Counter>,
    pub restarts: Family<Labels, Counter>,
}

impl Metrics {
    /// Registers every metric. The groups register in the order the exposition lists them.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let key_outcomes = register_key_outcomes(&mut registry);
        register_process_start_time(&mut registry);
        let WriteOutcomes {
            charges_applied,
            accounts_created,
            lifecycle,
            write_rejected_overloaded,
            write_rejected_unavailable,
            auth_refusals,
        } = WriteOutcomes::register(&mut registry);
        let Timings {
            commits,
            commit_batch_commands,
            commit_duration_seconds,
            request_duration_seconds,
        } = Timings::register(&mut registry);
        let Backlogs {
            inflight_keys,
            commit_queue_commands,
            idempotency_keys_in_memory,
            journal_bytes,
            store_checkpoints,
            store_account_flushes,
            store_key_merges,
            store_statement_merges,
        } = Backlogs::register(&mut registry);
        let OutboxAndInbox {
            outbox_lag_events,
            outbox_oldest_unpublished_age_seconds,
            inbox_applied,
            inbox_duplicate,
            inbox_dead_lettered,
            outbox_events_deleted,
        } = OutboxAndInbox::register(&mut registry);
        let replication = ReplicationCounters::register(&mut registry);
        let nats_consumer = NatsConsumerCounters::register(&mut registry);
        Metrics {
            registry,
            nats_consumer,
            auth_refusals,
            key_outcomes,
            charges_applied,
            accounts_created,
            lifecycle,
            write_rejected_overloaded,
            write_rejected_unavailable,
            commits,
            commit_batch_commands,
            commit_duration_seconds,
            request_duration_seconds,
            inflight_keys,
            commit_queue_commands,
            idempotency_keys_in_memory,
            journal_bytes,
            store_checkpoints,
            store_account_flushes,
            store_key_merges,
            store_statement_merges,
            outbox_lag_events,
            outbox_oldest_unpublished_age_seconds,
            inbox_applied,
            inbox_duplicate,
            inbox_dead_lettered,
            outbox_events_deleted,
            replication,
        }
    }

    pub fn count_key(&self, outcome: KeyOutcome) {
        self.key_outcomes[outcome as usize].inc();
    }

    /// `reason`: `unauthorized`, `forbidden` or `rate_limited`.
    pub fn count_auth_refusal(&self, reason: &'static str) {
        self.auth_refusals
            .get_or_create(&[("reason", reason)])
            .inc();
    }

    pub fn count_overloaded(&self) {
        self.write_rejected_overloaded.inc();
    }

    pub fn count_unavailable(&self) {
        self.write_rejected_unavailable.inc();
    }

    pub fn observe_request(&self, duration: Duration) {
        self.request_duration_seconds
            .observe(duration.as_secs_f64());
    }

    /// The Prometheus text exposition (OpenMetrics flavour).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Registers `metric` and returns it: the registry holds a clone, which shares the value.
fn registered<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

/// `onceledger_idempotency_requests{outcome}`, one series per [`KeyOutcome`], in its order.
fn register_key_outcomes(registry: &mut Registry) -> [Counter; 6] {
    let outcomes: Family<Labels, Counter> = registered(
        registry,
        "onceledger_idempotency_requests",
        "POST requests by what the idempotency layer decided",
        Family::default(),
    );
    let outcome = |name| outcomes.get_or_create_owned(&[("outcome", name)]);
    [
        "new",
        "replayed",
        "in_flight",
        "mismatch",
        "missing",
        "invalid",
    ]
    .map(outcome)
}

fn register_process_start_time(registry: &mut Registry) {
    // The standard name Prometheus tooling knows: a value that changed between two scrapes
    // means the counters of the second scrape started again from zero (the load generator's
    // check relies on it). Milliseconds, so two starts in one second still differ.
    let process_start_time_seconds = Gauge::<f64, AtomicU64>::default();
    process_start_time_seconds.set(onceledger_core::clock::now_ms() as f64 / 1000.0);
    registry.register(
        "process_start_time_seconds",
        "When this process started, in seconds since the Unix epoch",
        process_start_time_seconds,
    );
}

/// What became of writes: committed, or refused before the ledger or at authentication.
struct WriteOutcomes {
    charges_applied: Counter,
    accounts_created: Counter,
    lifecycle: LifecycleCounters,
    write_rejected_overloaded: Counter,
    write_rejected_unavailable: Counter,
    auth_refusals: Family<Labels, Counter>,
}

impl WriteOutcomes {
    fn register(registry: &mut Registry) -> WriteOutcomes {
        let charges_applied = registered(
            registry,
            "onceledger_charges_applied",
            "Charges committed (one per succeeded charge)",
            Counter::default(),
        );
        let accounts_created = registered(
            registry,
            "onceledger_accounts_created",
            "Accounts committed",
            Counter::default(),
        );
        let operations: Family<Labels, Counter> = registered(
            registry,
            "onceledger_lifecycle_operations",
            "Lifecycle operations committed, by what they did: authorized, captured, canceled, expired (by the server's clock), refunded, transferred",
            Family::default(),
        );
        let operation = |name: &'static str| operations.get_or_create_owned(&[("operation", name)]);
        let lifecycle = LifecycleCounters {
            authorized: operation("authorized"),
            captured: operation("captured"),
            canceled: operation("canceled"),
            expired: operation("expired"),
            refunded: operation("refunded"),
            transferred: operation("transferred"),
        };
        let rejected: Family<Labels, Counter> = registered(
            registry,
            "onceledger_write_rejections",
            "Writes refused before the ledger: commit queue full or store unavailable",
            Family::default(),
        );
        let auth_refusals = registered(
            registry,
            "onceledger_auth_refusals",
            "Requests refused before they ran: unauthorized (401), forbidden (403), rate_limited (429)",
            Family::default(),
        );
        WriteOutcomes {
            charges_applied,
            accounts_created,
            lifecycle,
            write_rejected_overloaded: rejected.get_or_create_owned(&[("reason", "overloaded")]),
            write_rejected_unavailable: rejected
                .get_or_create_owned(&[("reason", "storage_unavailable")]),
            auth_refusals,
        }
    }
}

/// `onceledger_lifecycle_operations_total`, one counter per operation, resolved once.
struct LifecycleCounters {
    authorized: Counter,
    captured: Counter,
    canceled: Counter,
    expired: Counter,
    refunded: Counter,
    transferred: Counter,
}

/// Commits and how long the work takes: a batch's commit, a request from head to response.
struct Timings {
    commits: Counter,
    commit_batch_commands: Histogram,
    commit_duration_seconds: Histogram,
    request_duration_seconds: Histogram,
}

impl Timings {
    fn register(registry: &mut Registry) -> Timings {
        Timings {
            commits: registered(
                registry,
                "onceledger_commits",
                "Write transactions committed (one fsync each)",
                Counter::default(),
            ),
            commit_batch_commands: registered(
                registry,
                "onceledger_commit_batch_commands",
                "Commands per write transaction",
                Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            ),
            commit_duration_seconds: registered(
                registry,
                "onceledger_commit_duration_seconds",
                "Time to apply and commit one batch",
                Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            ),
            request_duration_seconds: registered(
                registry,
                "onceledger_http_request_duration_seconds",
                "Time from request head to response",
                Histogram::new(exponential_buckets(0.000_05, 2.0, 18)),
            ),
        }
    }
}

/// What waits: requests in flight, the commit queue, keys not yet merged, journal bytes not yet
/// checkpointed; and the moments that drain them: checkpoints (the journal), account flushes
/// (the account overlay), key merges (the keys in memory).
struct Backlogs {
    inflight_keys: Gauge,
    commit_queue_commands: Gauge,
    idempotency_keys_in_memory: Gauge,
    journal_bytes: Gauge,
    store_checkpoints: Counter,
    store_account_flushes: Counter,
    store_key_merges: Counter,
    store_statement_merges: Counter,
}

impl Backlogs {
    fn register(registry: &mut Registry) -> Backlogs {
        Backlogs {
            inflight_keys: registered(
                registry,
                "onceledger_inflight_keys",
                "Idempotency keys whose request has not finished",
                Gauge::default(),
            ),
            commit_queue_commands: registered(
                registry,
                "onceledger_commit_queue_commands",
                "Commands waiting for the writer",
                Gauge::default(),
            ),
            idempotency_keys_in_memory: registered(
                registry,
                "onceledger_idempotency_keys_in_memory",
                "Finished idempotency keys held in memory, not yet merged into the keyed table",
                Gauge::default(),
            ),
            journal_bytes: registered(
                registry,
                "onceledger_journal_bytes",
                "Bytes of batches journaled since the last durable redb commit (replayed after a crash)",
                Gauge::default(),
            ),
            store_checkpoints: registered(
                registry,
                "onceledger_store_checkpoints",
                "Durable redb commits (checkpoints); the other commits are made durable by the journal",
                Counter::default(),
            ),
            store_account_flushes: registered(
                registry,
                "onceledger_store_account_flushes",
                "Commits that wrote the accounts changed since the last flush back to their rows",
                Counter::default(),
            ),
            store_key_merges: registered(
                registry,
                "onceledger_store_key_merges",
                "Commits that moved finished idempotency keys from memory into their table",
                Counter::default(),
            ),
            store_statement_merges: registered(
                registry,
                "onceledger_store_statement_merges",
                "Commits that moved statement lines from memory into the account-ordered table",
                Counter::default(),
            ),
        }
    }
}

/// The outbox (lag per sink, retention) and the inbox (replicated events received).
struct OutboxAndInbox {
    outbox_lag_events: Family<Labels, Gauge>,
    outbox_oldest_unpublished_age_seconds: Family<Labels, Gauge>,
    inbox_applied: Counter,
    inbox_duplicate: Counter,
    inbox_dead_lettered: Counter,
    outbox_events_deleted: Counter,
}

impl OutboxAndInbox {
    fn register(registry: &mut Registry) -> OutboxAndInbox {
        let outbox_lag_events = registered(
            registry,
            "onceledger_outbox_lag_events",
            "Committed events the sink has not acknowledged, per sink",
            Family::default(),
        );
        let outbox_oldest_unpublished_age_seconds = registered(
            registry,
            "onceledger_outbox_oldest_unpublished_age_seconds",
            "Age of the oldest event the sink has not acknowledged, per sink (0 when none)",
            Family::default(),
        );
        let inbox_events: Family<Labels, Counter> = registered(
            registry,
            "onceledger_inbox_events",
            "Replicated events received, by result",
            Family::default(),
        );
        let inbox_result = |result| inbox_events.get_or_create_owned(&[("result", result)]);
        let outbox_events_deleted = registered(
            registry,
            "onceledger_outbox_events_deleted",
            "Outbox events deleted by retention (acknowledged by every sink and old enough)",
            Counter::default(),
        );
        OutboxAndInbox {
            outbox_lag_events,
            outbox_oldest_unpublished_age_seconds,
            inbox_applied: inbox_result("applied"),
            inbox_duplicate: inbox_result("duplicate"),
            inbox_dead_lettered: inbox_result("dead_lettered"),
            outbox_events_deleted,
        }
    }
}

impl ReplicationCounters {
    fn register(registry: &mut Registry) -> ReplicationCounters {
        let replication = ReplicationCounters::default();
        for (name, help, family) in [
            (
                "onceledger_replication_events_sent",
                "Events sent to a sink, resends included",
                &replication.events_sent,
            ),
            (
                "onceledger_replication_events_acknowledged",
                "Events a sink acknowledged (its cursor moved past them)",
                &replication.events_acknowledged,
            ),
            (
                "onceledger_replication_events_retried",
                "Events sent again because a delivery failed, was refused or found a gap",
                &replication.events_retried,
            ),
            (
                "onceledger_replication_events_duplicate",
                "Events a sink acknowledged as already held (inbox duplicate, JetStream dedup window)",
                &replication.events_duplicate,
            ),
            (
                "onceledger_replication_delivery_failures",
                "Deliveries that got no acknowledgement (sink unreachable, error, timeout)",
                &replication.delivery_failures,
            ),
            (
                "onceledger_replication_restarts",
                "Replicator tasks started again after a relay-crash fault point ended one",
                &replication.restarts,
            ),
        ] {
            registry.register(name, help, family.clone());
        }
        replication
    }
}

impl NatsConsumerCounters {
    fn register(registry: &mut Registry) -> NatsConsumerCounters {
        let nats_messages: Family<Labels, Counter> = registered(
            registry,
            "onceledger_nats_consumer_messages",
            "JetStream messages a consuming hub handled: acknowledged after commit, NAKed to come again, terminated (undecodable), or of an origin outside its partition (parked, then acknowledged)",
            Family::default(),
        );
        let nats_result = |result| nats_messages.get_or_create_owned(&[("result", result)]);
        NatsConsumerCounters {
            acknowledged: nats_result("acknowledged"),
            redelivered: nats_result("nacked"),
            terminated: nats_result("terminated"),
            outside_partition: nats_result("outside_partition"),
            origins_missing_from_stream: registered(
                registry,
                "onceledger_nats_consumer_origins_missing_from_stream",
                "Origins whose next event the consumed stream no longer holds (retention): the hub cannot go on with them",
                Gauge::default(),
            ),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The writer reports each committed batch here (one thread calls it: no race).
impl CommitObserver for Metrics {
    /// The writer's view of the store's running counts, after each commit (one thread: no race).
    fn observe_marks_crossed(&self, totals: MarksCrossed) {
        for (counter, total) in [
            (&self.store_checkpoints, totals.checkpoints),
            (&self.store_account_flushes, totals.account_flushes),
            (&self.store_key_merges, totals.key_merges),
            (&self.store_statement_merges, totals.statement_merges),
        ] {
            let seen = counter.get();
            if total > seen {
                counter.inc_by(total - seen);
            }
        }
    }

    fn observe_commit(&self, commands: usize, duration: Duration) {
        self.commits.inc();
        self.commit_batch_commands.observe(commands as f64);
        self.commit_duration_seconds.observe(duration.as_secs_f64());
    }

    /// Side effects, counted by the writer after its commit returned.
    fn count_effect(&self, effect: &Effect) {
        match effect {
            Effect::None | Effect::Administrative => {}
            Effect::ChargeSucceeded { .. } => {
                self.charges_applied.inc();
            }
            Effect::AccountCreated { .. } => {
                self.accounts_created.inc();
            }
            Effect::DeadLetterRedriven { .. } => {
                self.inbox_applied.inc();
            }
            Effect::ChargeAuthorized { .. } => {
                self.lifecycle.authorized.inc();
            }
            Effect::ChargeSettled { status, .. } => {
                match status {
                    ChargeStatus::Succeeded => self.lifecycle.captured.inc(),
                    _ => self.lifecycle.canceled.inc(),
                };
            }
            Effect::RefundSucceeded { .. } => {
                self.lifecycle.refunded.inc();
            }
            Effect::TransferSucceeded { .. } => {
                self.lifecycle.transferred.inc();
            }
        }
    }

    fn count_expired_authorizations(&self, authorizations: usize) {
        self.lifecycle.expired.inc_by(authorizations as u64);
    }

    /// A hub's inbox results for one replicated batch, counted after its commit returned.
    fn count_inbox(&self, ack: &Ack) {
        self.inbox_applied.inc_by(ack.applied);
        self.inbox_duplicate.inc_by(ack.duplicates);
        self.inbox_dead_lettered.inc_by(ack.dead_lettered);
    }

    fn count_outbox_pruned(&self, events: usize) {
        self.outbox_events_deleted.inc_by(events as u64);
    }
}
