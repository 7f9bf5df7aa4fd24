//! What a prove run saw, the table it prints, and the verdict.

use std::fmt::Write as _;

use serde::Serialize;

use super::Mix;
use super::lifecycle::LifecycleCounts;
use super::totals::AccountTotals;

/// Account mismatches spelled out in the failures; the rest are counted.
const ACCOUNT_FAILURES_MAX: usize = 5;

/// The lifecycle rows: the operation label and the row's name.
const LIFECYCLE_ROWS: [(&str, &str); 6] = [
    ("authorized", "authorized node / plan"),
    ("captured", "captured node / plan"),
    ("canceled", "canceled node / plan"),
    ("expired", "expired node / plan"),
    ("refunded", "refunded node / plan"),
    ("transferred", "transferred node / plan"),
];

/// One row of the table: the name, the value, where the value comes from.
type Row = (&'static str, String, &'static str);

/// The numbers of one run. Server numbers are read from `/metrics` of the node and the hub (and
/// every account of the run on both), client numbers from the retrying client, fault numbers from
/// the proxy.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub seed: u64,
    pub tasks: usize,
    pub mix: Mix,
    /// Logical operations: each one key and one body, however many times and by how many tasks
    /// sent. The charges, and in the lifecycle mix the authorizations, captures, voids, refunds
    /// and transfers (an expiry is the server's own, not sent).
    pub logical_operations: u64,
    /// Of those, immediate charges.
    pub charges: u64,
    /// The lifecycle operations the plan makes take effect (zero in the charges mix).
    pub planned: LifecycleCounts,
    /// Node: `onceledger_lifecycle_operations_total` by operation, during the run.
    pub node_lifecycle: LifecycleCounts,
    /// Of those, sent by two tasks at once (counted once above).
    pub concurrent_duplicates: u64,
    /// Requests the charge client sent (every attempt of every task, through the proxy).
    pub attempts: u64,
    /// Node: `onceledger_idempotency_requests_total{outcome="replayed"}` during the charges.
    pub replays: u64,
    /// Node: `onceledger_idempotency_requests_total{outcome="in_flight"}` (409s) during the charges.
    pub conflicts_409: u64,
    /// Proxy: answers the server sent that the proxy dropped with the client's connection.
    pub lost_responses: u64,
    /// Proxy: connections reset before forwarding.
    pub resets: u64,
    /// Proxy: requests held before forwarding.
    pub delays: u64,
    /// Times the client gave up on an operation (attempts or budget) and prove sent it again
    /// with the same key, as an operator would with the printed key.
    pub resent_after_giving_up: u64,
    /// Node: `onceledger_charges_applied_total`.
    pub node_charges_applied: u64,
    /// Node: `onceledger_accounts_created_total` (the account events in its outbox).
    pub node_accounts_created: u64,
    /// Hub: `onceledger_inbox_events_total{result="applied"}`, accounts and charges.
    pub hub_events_applied: u64,
    /// The events the node made: its accounts, charges and lifecycle operations (each one
    /// event), what the hub must have applied.
    pub node_events: u64,
    /// `hub_events_applied - node_accounts_created - node lifecycle operations`: the charge
    /// events the hub applied.
    pub hub_charge_events_applied: u64,
    /// `hub_events_applied - node_accounts_created - node_charges_applied`.
    pub hub_lifecycle_events_applied: u64,
    /// Hub: `onceledger_inbox_events_total{result="duplicate"}`.
    pub inbox_duplicates_dropped: u64,
    /// Hub: `onceledger_inbox_events_total{result="dead_lettered"}`.
    pub inbox_dead_lettered: u64,
    /// Node: `onceledger_replication_restarts_total{sink="hub"}`.
    pub relay_crashes: u64,
    /// What the merchant must have been credited: the charges' amounts (and in the lifecycle
    /// mix the captures and the transfers' first legs).
    pub merchant_credits_planned: u64,
    /// The merchant's `credits_posted` on the node and in the hub's mirror of the node.
    pub node_merchant_credits: u64,
    pub hub_merchant_credits: u64,
    /// Every account of the run: the four totals the plan implies, the node's, the hub's mirror's.
    pub accounts: Vec<AccountTotals>,
    /// Tokens left in the charge client's retry budget, of its capacity.
    pub retry_budget_left: u32,
    pub retry_budget_capacity: u32,
    /// Logical operations without one agreed final answer of the expected status (a failure, a
    /// decline, or two tasks told different things).
    pub failed_operations: u64,
    pub failure_samples: Vec<String>,
    /// `onceledger check` on both stores after shutdown; violations in words, empty when clean.
    pub invariant_violations: Vec<String>,
    pub seconds: f64,
}

impl Report {
    /// Why the run does not prove effectively-once; empty when it does. Exit 0 only if empty.
    pub fn failures(&self) -> Vec<String> {
        let mut failures = self.event_failures();
        if self.hub_merchant_credits != self.merchant_credits_planned
            || self.node_merchant_credits != self.merchant_credits_planned
        {
            failures.push(format!(
                "merchant credits: node {}, hub mirror {}, planned {}",
                self.node_merchant_credits,
                self.hub_merchant_credits,
                self.merchant_credits_planned
            ));
        }
        let mismatched: Vec<_> = self.accounts.iter().filter(|a| !a.matches()).collect();
        for account in mismatched.iter().take(ACCOUNT_FAILURES_MAX) {
            failures.push(format!(
                "account {}: plan {}; node {}; hub mirror {}",
                account.id, account.plan, account.node, account.hub
            ));
        }
        if mismatched.len() > ACCOUNT_FAILURES_MAX {
            failures.push(format!(
                "{} more accounts do not match",
                mismatched.len() - ACCOUNT_FAILURES_MAX
            ));
        }
        if self.failed_operations > 0 {
            failures.push(format!(
                "{} logical operations had no agreed final answer of the expected status: {:?}",
                self.failed_operations, self.failure_samples
            ));
        }
        for violation in &self.invariant_violations {
            failures.push(format!("invariant: {violation}"));
        }
        failures
    }

    /// What the node applied against the plan, and the hub against the node.
    fn event_failures(&self) -> Vec<String> {
        let mut failures = Vec::new();
        let c = self.charges;
        if self.node_charges_applied != c {
            failures.push(format!(
                "charges applied on the node {} != planned charges {c}",
                self.node_charges_applied
            ));
        }
        if self.hub_charge_events_applied != c {
            failures.push(format!(
                "charge events applied on the hub {} != planned charges {c}",
                self.hub_charge_events_applied
            ));
        }
        for operation in LifecycleCounts::OPERATIONS {
            let (node, planned) = (
                self.node_lifecycle.get(operation),
                self.planned.get(operation),
            );
            if node != planned {
                failures.push(format!(
                    "{operation} on the node {node} != planned {planned}"
                ));
            }
        }
        if self.hub_events_applied != self.node_events {
            failures.push(format!(
                "events applied on the hub {} != events the node made {}",
                self.hub_events_applied, self.node_events
            ));
        }
        if self.inbox_dead_lettered > 0 {
            failures.push(format!(
                "{} events dead-lettered on the hub",
                self.inbox_dead_lettered
            ));
        }
        failures
    }

    pub fn holds(&self) -> bool {
        self.failures().is_empty()
    }

    /// The table printed on stdout: a title, one row per number (name, value, where it comes
    /// from), then the verdict.
    pub fn table(&self) -> String {
        let mut rows = self.traffic_rows();
        rows.extend(self.outcome_rows());
        let name_width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        let value_width = rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "onceledger prove: seed {}, {} tasks, {:.1} s",
            self.seed, self.tasks, self.seconds
        );
        for (name, value, source) in &rows {
            let _ = writeln!(out, "{name:<name_width$}  {value:>value_width$}  {source}");
        }
        self.write_verdict(&mut out);
        out
    }

    /// What was sent, and what the faults and the server's idempotency did to it.
    fn traffic_rows(&self) -> Vec<Row> {
        let lifecycle = self.mix == Mix::Lifecycle;
        let mut rows = vec![(
            "logical operations",
            self.logical_operations.to_string(),
            if lifecycle {
                "charges and lifecycle operations planned, one key each"
            } else {
                "charges planned, one key each"
            },
        )];
        if lifecycle {
            rows.push((
                "  of which charges",
                self.charges.to_string(),
                "the rest: authorize, capture, void, refund, transfer",
            ));
        }
        rows.extend([
            (
                "  sent by two tasks at once",
                self.concurrent_duplicates.to_string(),
                "same key and body, counted once above",
            ),
            (
                "attempts",
                self.attempts.to_string(),
                "client requests through the proxy",
            ),
            (
                "replays",
                self.replays.to_string(),
                "node idempotency outcome=replayed",
            ),
            (
                "409s",
                self.conflicts_409.to_string(),
                "node idempotency outcome=in_flight",
            ),
            ("lost responses", self.lost_responses.to_string(), "proxy"),
            ("resets", self.resets.to_string(), "proxy"),
            ("delays", self.delays.to_string(), "proxy"),
            (
                "re-sent after giving up",
                self.resent_after_giving_up.to_string(),
                "client, same key",
            ),
        ]);
        rows
    }

    /// What the node and the hub applied, the accounts on both, and what was left of the retry
    /// budget.
    fn outcome_rows(&self) -> Vec<Row> {
        let lifecycle = self.mix == Mix::Lifecycle;
        let mut rows = vec![(
            "charges applied on the node",
            self.node_charges_applied.to_string(),
            "node onceledger_charges_applied_total",
        )];
        if lifecycle {
            rows.extend(self.lifecycle_rows());
        }
        rows.extend([
            (
                "events applied on the hub",
                self.hub_events_applied.to_string(),
                "hub inbox result=applied",
            ),
            (
                "  of which account events",
                self.node_accounts_created.to_string(),
                "node onceledger_accounts_created_total",
            ),
            (
                "  of which charge events",
                self.hub_charge_events_applied.to_string(),
                if lifecycle {
                    "applied minus account and lifecycle events"
                } else {
                    "applied minus account events"
                },
            ),
        ]);
        if lifecycle {
            rows.push((
                "  of which lifecycle events",
                self.hub_lifecycle_events_applied.to_string(),
                "applied minus account and charge events",
            ));
        }
        rows.extend(self.store_rows());
        rows
    }

    /// One row per lifecycle operation: the node's count during the run and the plan's.
    fn lifecycle_rows(&self) -> Vec<Row> {
        LIFECYCLE_ROWS
            .iter()
            .map(|&(operation, name)| {
                (
                    name,
                    format!(
                        "{} / {}",
                        self.node_lifecycle.get(operation),
                        self.planned.get(operation)
                    ),
                    "node onceledger_lifecycle_operations_total",
                )
            })
            .collect()
    }

    /// The inbox, the relay, the accounts on both servers, the retry budget.
    fn store_rows(&self) -> Vec<Row> {
        let matching = self.accounts.iter().filter(|a| a.matches()).count();
        vec![
            (
                "duplicates dropped by the inbox",
                self.inbox_duplicates_dropped.to_string(),
                "hub inbox result=duplicate",
            ),
            (
                "dead-lettered on the hub",
                self.inbox_dead_lettered.to_string(),
                "hub inbox result=dead_lettered",
            ),
            (
                "relay crashes",
                self.relay_crashes.to_string(),
                "node onceledger_replication_restarts_total",
            ),
            (
                "merchant credits node / hub",
                format!(
                    "{} / {}",
                    self.node_merchant_credits, self.hub_merchant_credits
                ),
                if self.mix == Mix::Lifecycle {
                    "planned: charges, captures, transfers' first legs"
                } else {
                    "sum of the logical charges' amounts"
                },
            ),
            (
                "accounts matching the plan",
                format!("{matching}/{}", self.accounts.len()),
                "four totals each, node and hub mirror",
            ),
            (
                "retry budget left",
                format!("{}/{}", self.retry_budget_left, self.retry_budget_capacity),
                "client token bucket",
            ),
        ]
    }

    /// The NOTE when the relay crash did not happen, then PASS or one FAIL line per failure.
    fn write_verdict(&self, out: &mut String) {
        if self.relay_crashes == 0 {
            let _ = writeln!(
                out,
                "NOTE: the relay crash did not happen (the replicator made fewer deliveries than \
                 --relay-crash-after); this run did not exercise it"
            );
        }
        let failures = self.failures();
        if failures.is_empty() && self.mix == Mix::Lifecycle {
            let p = &self.planned;
            let _ = writeln!(
                out,
                "PASS: each logical operation took effect once on the node and on the hub \
                 (charges {}, authorized {}, captured {}, canceled {}, expired {}, refunded {}, \
                 transferred {}); every account's four totals match the plan on both; both \
                 stores pass check",
                self.charges,
                p.authorized,
                p.captured,
                p.canceled,
                p.expired,
                p.refunded,
                p.transferred
            );
        } else if failures.is_empty() {
            let _ = writeln!(
                out,
                "PASS: charges applied on the node = charge events applied on the hub = logical \
                 operations = {}; merchant credits and every account's four totals match on \
                 both; both stores pass check",
                self.logical_operations
            );
        } else {
            for failure in failures {
                let _ = writeln!(out, "FAIL: {failure}");
            }
        }
    }
}
