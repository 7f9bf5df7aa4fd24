//! The lifecycle workload's loop: each logical payment is an authorization and then a capture
//! (and perhaps a refund) or a void, each operation its own POST with its own idempotency key.
//! A payment whose operation gets no final answer (a lost answer, 409, 503) stops there and is
//! continued by the resolution phase, so that no hold is left behind and the money check is
//! exact. Kept apart from `Worker::run` so the other workloads' loop does no lifecycle work.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hdrhistogram::{AdditionError, CreationError, Histogram};
use onceledger_client::ChargeId;
use uuid::Uuid;

use super::{
    Kind, LATENCY_US_MAX, RECONNECT_BACKOFF, RESOLVE_ATTEMPTS_MAX, RESOLVE_PAUSE, SendError,
    Worker, client, excerpt, exchange,
};
use crate::bench::plan::{Operation, Shape};

/// Most operations in one payment (authorize, capture, refund).
const PAYMENT_OPERATIONS_MAX: usize = 3;

/// One logical payment: its shape, accounts, a key per operation, and how far it got.
#[derive(Debug, Clone)]
pub struct Payment {
    shape: Shape,
    source: u32,
    destination: u32,
    /// Made when the payment is drawn, one per operation of `shape`, so every re-send of an
    /// operation carries that operation's key.
    keys: [Uuid; PAYMENT_OPERATIONS_MAX],
    /// The authorization's id, from its 201.
    charge: Option<ChargeId>,
    /// Operations of `shape.operations()` that got their success answer.
    done: usize,
    /// An operation got an answer that ends the payment (an anomaly): it is not continued.
    failed: bool,
}

impl Payment {
    fn next(&self) -> Option<Operation> {
        self.shape.operations().get(self.done).copied()
    }

    fn is_complete(&self) -> bool {
        self.next().is_none()
    }

    /// The capture succeeded: the payment's amount moved.
    fn captured(&self) -> bool {
        self.shape != Shape::Void && self.done >= 2
    }

    fn refunded(&self) -> bool {
        self.shape == Shape::CaptureRefund && self.is_complete()
    }
}

/// What the lifecycle workload counted; empty for the other workloads.
pub struct LifecycleStats {
    /// Indexed by `Operation as usize`, measured phase only.
    pub latency_us: [Histogram<u64>; 4],
    /// Success answers without `Idempotent-Replayed` in the measured phase, by operation: each
    /// is one durable commit.
    pub commits: [u64; 4],
    /// Payments that finished every operation within the measured phase, by `Shape as usize`.
    pub completed: [u64; 3],
    /// Payments drawn in the measured phase.
    pub started: u64,
    /// Filled by `finish`, over the whole run (resolution included): payments whose capture
    /// succeeded, and those whose refund did.
    pub captured: u64,
    pub refunded: u64,
}

impl LifecycleStats {
    pub fn new() -> Result<LifecycleStats, CreationError> {
        let histogram = || Histogram::new_with_bounds(1, LATENCY_US_MAX, 3);
        Ok(LifecycleStats {
            latency_us: [histogram()?, histogram()?, histogram()?, histogram()?],
            commits: [0; 4],
            completed: [0; 3],
            started: 0,
            captured: 0,
            refunded: 0,
        })
    }

    pub fn merge(&mut self, other: &LifecycleStats) -> Result<(), AdditionError> {
        for (mine, theirs) in self.latency_us.iter_mut().zip(&other.latency_us) {
            mine.add(theirs)?;
        }
        for (mine, theirs) in self.commits.iter_mut().zip(other.commits) {
            *mine += theirs;
        }
        for (mine, theirs) in self.completed.iter_mut().zip(other.completed) {
            *mine += theirs;
        }
        self.started += other.started;
        self.captured += other.captured;
        self.refunded += other.refunded;
        Ok(())
    }
}

/// Why a payment stopped before its last operation.
enum Stop {
    /// No final answer (lost, 409, 503): the same operation is re-sent with its key later.
    Undecided,
    /// An answer the workload never expects: counted as an anomaly, the payment ends.
    Failed,
}

impl Worker {
    /// The measured phase of the lifecycle workload. A payment takes the budget of all its
    /// operations at once, so a `--count` run never leaves one half done for want of slots.
    pub(super) async fn run_lifecycle(mut self) -> Worker {
        let shared = std::sync::Arc::clone(&self.shared);
        loop {
            let shape = shared.plan.pick_shape(&mut self.rng);
            let needed = shape.operations().len() as u64;
            if shared.budget.take(needed) < needed {
                break;
            }
            let (source, destination) = shared.plan.pick_accounts(&mut self.rng);
            self.payments.push(Payment {
                shape,
                source,
                destination,
                keys: [Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()],
                charge: None,
                done: 0,
                failed: false,
            });
            self.stats.lifecycle.started += 1;
            let index = self.payments.len() - 1;
            if self.advance(index, true).await.is_ok() {
                self.stats.lifecycle.completed[shape as usize] += 1;
            }
        }
        self.stats.measured_until = Some(Instant::now());
        self
    }

    /// Sends the payment's operations from where it stopped until it completes or one of them
    /// has no final answer. `measured`: count the answers in the measured phase's figures.
    async fn advance(&mut self, index: usize, measured: bool) -> Result<(), Stop> {
        while let Some(operation) = self.payments[index].next() {
            let outcome = match self.operation_request(index, operation) {
                Ok(request) => exchange(&mut self.conn, &self.shared, request).await,
                Err(error) => Err(SendError::NotSent(error)),
            };
            let (reply, latency) = match outcome {
                Ok(answered) => answered,
                Err(SendError::NotSent(text) | SendError::Lost(text)) => {
                    if measured {
                        self.stats.transport_errors += 1;
                        self.stats.last_transport_error = Some(text);
                    }
                    tokio::time::sleep(RECONNECT_BACKOFF).await;
                    return Err(Stop::Undecided);
                }
            };
            if measured {
                self.count_answer(operation, &reply, latency);
            }
            let fresh = self.note_operation(index, operation, &reply)?;
            if measured && fresh {
                self.stats.lifecycle.commits[operation as usize] += 1;
            }
        }
        Ok(())
    }

    /// The figures every workload reports (answers, statuses, overall latency) plus the
    /// operation's own latency.
    fn count_answer(&mut self, operation: Operation, reply: &client::Reply, latency: Duration) {
        self.stats.answered += 1;
        self.stats.picked[Kind::New as usize] += 1;
        self.shared.requests.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        self.stats.latency_us[Kind::New as usize].saturating_record(micros);
        self.stats.lifecycle.latency_us[operation as usize].saturating_record(micros);
        *self.stats.statuses.entry(reply.status).or_default() += 1;
    }

    fn operation_request(
        &self,
        index: usize,
        operation: Operation,
    ) -> Result<http::Request<http_body_util::Full<bytes::Bytes>>, String> {
        let payment = &self.payments[index];
        let plan = &self.shared.plan;
        let (path, body) = match &payment.charge {
            None => (
                "/v1/charges".to_owned(),
                plan.authorize_body(payment.source, payment.destination),
            ),
            Some(charge) => plan
                .follow_up(operation, charge)
                .ok_or_else(|| format!("{} has no charge to act on", operation.name()))?,
        };
        let mut key = Uuid::encode_buffer();
        let key = payment.keys[payment.done]
            .hyphenated()
            .encode_lower(&mut key);
        client::post(&self.shared.target, &path, key, body)
    }

    /// Applies an operation's answer to its payment; `Ok(true)` for a fresh execution.
    fn note_operation(
        &mut self,
        index: usize,
        operation: Operation,
        reply: &client::Reply,
    ) -> Result<bool, Stop> {
        let key = self.payments[index].keys[self.payments[index].done];
        if reply.status == operation.success_status() {
            if operation == Operation::Authorize {
                let charge = charge_id(&reply.body).ok_or_else(|| {
                    self.fail(
                        index,
                        format!("key {key}: the authorization names no charge"),
                    )
                })?;
                self.payments[index].charge = Some(charge);
            }
            self.payments[index].done += 1;
            if reply.replayed {
                self.stats.replayed += 1;
            } else if operation == Operation::Authorize {
                self.stats.fresh_charges += 1;
                self.shared.fresh_charges.fetch_add(1, Ordering::Relaxed);
            }
            return Ok(!reply.replayed);
        }
        if matches!(reply.status, 409 | 503) {
            return Err(Stop::Undecided);
        }
        Err(self.fail(
            index,
            format!(
                "key {key}: {} answered {}: {}",
                operation.name(),
                reply.status,
                excerpt(&reply.body)
            ),
        ))
    }

    fn fail(&mut self, index: usize, anomaly: String) -> Stop {
        self.payments[index].failed = true;
        self.stats.anomaly(anomaly);
        Stop::Failed
    }

    /// Continues every payment that stopped without a final answer until it completes, a
    /// bounded number of rounds one `RESOLVE_PAUSE` apart, before `deadline`.
    pub(super) async fn resolve_lifecycle(&mut self, deadline: Instant) {
        let open: Vec<usize> = (0..self.payments.len())
            .filter(|&i| !self.payments[i].failed && !self.payments[i].is_complete())
            .collect();
        for index in open {
            for _ in 0..RESOLVE_ATTEMPTS_MAX {
                if Instant::now() >= deadline {
                    break;
                }
                if !matches!(self.advance(index, false).await, Err(Stop::Undecided)) {
                    break;
                }
                tokio::time::sleep(RESOLVE_PAUSE).await;
            }
            let payment = &self.payments[index];
            if payment.is_complete() {
                self.stats.resolved += 1;
            } else if !payment.failed {
                self.stats.unresolved += 1;
            }
        }
    }

    /// The money the run's payments moved, for the check: captures and refunds that succeeded.
    pub(super) fn finish_lifecycle(&mut self) {
        let lifecycle = &mut self.stats.lifecycle;
        lifecycle.captured = self.payments.iter().filter(|p| p.captured()).count() as u64;
        lifecycle.refunded = self.payments.iter().filter(|p| p.refunded()).count() as u64;
        self.stats.logical_charges = lifecycle.captured;
    }
}

/// The `id` of a charge answer, if it is one plain path segment.
fn charge_id(body: &[u8]) -> Option<ChargeId> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    ChargeId::new(value["id"].as_str()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards which payments count as money moved: a capture moves the amount, a void none,
    /// and a refund is counted only once it succeeded.
    #[test]
    fn captured_and_refunded_follow_the_operations_done() {
        let payment = |shape, done| Payment {
            shape,
            source: 0,
            destination: 0,
            keys: [Uuid::nil(); PAYMENT_OPERATIONS_MAX],
            charge: None,
            done,
            failed: false,
        };
        let states = [
            (Shape::Capture, 1, false, false),
            (Shape::Capture, 2, true, false),
            (Shape::CaptureRefund, 2, true, false),
            (Shape::CaptureRefund, 3, true, true),
            (Shape::Void, 2, false, false),
        ];
        for (shape, done, captured, refunded) in states {
            let p = payment(shape, done);
            assert_eq!(
                (p.captured(), p.refunded()),
                (captured, refunded),
                "{shape:?} {done}"
            );
        }
        assert!(
            Shape::ALL
                .iter()
                .all(|s| s.operations().len() <= PAYMENT_OPERATIONS_MAX)
        );
    }

    /// Guards reading the charge id from an authorization: only a plain id is used in a path.
    #[test]
    fn the_charge_id_comes_from_the_answer_and_is_checked() {
        let id = charge_id(br#"{"id":"ch_abc","status":"authorized"}"#);
        assert_eq!(id.map(|c| c.to_string()), Some("ch_abc".to_owned()));
        assert!(charge_id(br#"{"id":"../accounts"}"#).is_none());
        assert!(charge_id(br#"{"status":"authorized"}"#).is_none());
        assert!(charge_id(b"not json").is_none());
    }
}
