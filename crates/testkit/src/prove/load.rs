//! Sending the plan: many client tasks take planned items from one seeded list (`run_pool`) and
//! send each logical operation through the retrying client, one key and one body each
//! ([`Sender::once`]); a planned duplicate is sent by a second task at the same time with the
//! same key and body. Every answer a logical operation gets must be the one 2xx it expects, the
//! same bytes for both senders of a duplicate. The immediate charges (`plan`, `run`) and the
//! lifecycle mix (`super::lifecycle`) both go through here.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::time::Instant;

use super::totals::Model;
use onceledger_client::rng::Rng;
use onceledger_client::{Client, ClientError, NewCharge, Operation};

/// After the client gave up on an operation, wait this long before sending it again.
const RESEND_PAUSE: Duration = Duration::from_millis(100);
/// Failure descriptions kept for the report.
const FAILURE_SAMPLES_MAX: usize = 5;
/// The status of a created charge, authorization, refund or transfer.
pub const CREATED: u16 = 201;

/// One logical operation: where it goes, its key and body, whether two tasks send it at once,
/// and the status its final answer must have.
#[derive(Debug, Clone)]
pub struct Logical {
    pub operation: Operation,
    pub key: String,
    pub body: Bytes,
    pub duplicate: bool,
    pub expect: u16,
}

/// One logical charge.
#[derive(Debug, Clone)]
pub struct PlannedCharge {
    pub send: Logical,
    pub source: String,
    pub destination: String,
    pub amount: u64,
}

/// Encodes a request body of the client's types (plain strings and integers: always encodes).
pub fn body(value: &impl serde::Serialize) -> Bytes {
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

/// The run's charges: sources, amounts and duplicates are a function of the seed; keys are
/// fresh UUIDv4s, one per logical charge, as the client makes them.
pub fn plan(
    seed: u64,
    charges: u64,
    customers: &[String],
    merchant: &str,
    currency: &str,
    duplicate_rate: f64,
) -> Vec<PlannedCharge> {
    let mut rng = Rng::new(seed, 1);
    (0..charges)
        .map(|i| {
            let source = &customers[rng.below(customers.len() as u32) as usize];
            let amount = 1 + u64::from(rng.below(1000));
            let duplicate = rng.unit() < duplicate_rate;
            let charge = NewCharge {
                source: source.clone(),
                destination: merchant.to_owned(),
                amount,
                currency: currency.to_owned(),
                metadata: [("n".to_owned(), i.to_string())].into(),
            };
            PlannedCharge {
                send: Logical {
                    operation: Operation::CreateCharge,
                    key: Client::new_key(),
                    body: body(&charge),
                    duplicate,
                    expect: CREATED,
                },
                source: source.clone(),
                destination: merchant.to_owned(),
                amount,
            }
        })
        .collect()
}

/// What the planned charges leave on the accounts: each posted once.
pub fn model_charges(plan: &[PlannedCharge], model: &mut Model) {
    for charge in plan {
        model.post(&charge.source, &charge.destination, charge.amount);
    }
}

/// Counters the progress line and the report read.
#[derive(Default)]
pub struct LoadStats {
    /// Planned items finished (a charge, a payment with its operations, a transfer).
    pub done: AtomicU64,
    pub resent_after_giving_up: AtomicU64,
    pub failed: AtomicU64,
    pub failure_samples: Mutex<Vec<String>>,
}

impl LoadStats {
    pub fn fail(&self, message: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut samples = self
            .failure_samples
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if samples.len() < FAILURE_SAMPLES_MAX {
            samples.push(message);
        }
    }
}

/// Runs `each(0..items)` from `tasks` tasks, each task taking the next index when it is done
/// with one; returns when all are done. `each` bounds itself (the senders' deadline).
pub async fn run_pool<F, Fut>(items: usize, tasks: usize, stats: &Arc<LoadStats>, each: F)
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..tasks.max(1))
        .map(|_| {
            let (each, stats, next) = (each.clone(), Arc::clone(stats), Arc::clone(&next));
            tokio::spawn(async move {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= items {
                        break;
                    }
                    each(index).await;
                    stats.done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for worker in workers {
        if let Err(error) = worker.await {
            stats.fail(format!("a client task ended abnormally: {error}"));
        }
    }
}

/// Sends every planned charge from `tasks` tasks; returns when each has its answer or the
/// sender's deadline passed.
pub async fn run(sender: &Sender, plan: Arc<Vec<PlannedCharge>>, tasks: usize) {
    let sender = sender.clone();
    let stats = Arc::clone(&sender.stats);
    run_pool(plan.len(), tasks, &stats, move |index| {
        let (sender, plan) = (sender.clone(), Arc::clone(&plan));
        async move {
            sender.once(&plan[index].send).await;
        }
    })
    .await;
}

/// What every logical operation is sent with: the retrying client, the counters, the run's
/// deadline.
#[derive(Clone)]
pub struct Sender {
    pub client: Client,
    pub stats: Arc<LoadStats>,
    pub deadline: Instant,
}

impl Sender {
    /// Sends one logical operation (and its twin, if it is a duplicate) until it has a final
    /// answer; returns the answer's JSON when it is the expected status (the same bytes for both
    /// senders), else counts a failure and returns `None`.
    pub async fn once(&self, logical: &Logical) -> Option<Value> {
        let outcome = if logical.duplicate {
            // The twin: another task sending the same key and body now.
            let twin = tokio::spawn({
                let (sender, logical) = (self.clone(), logical.clone());
                async move { sender.until_answered(&logical).await }
            });
            let mine = self.until_answered(logical).await;
            let theirs = twin
                .await
                .unwrap_or_else(|e| Err(format!("the twin task ended abnormally: {e}")));
            match (mine, theirs) {
                (Ok(a), Ok(b)) if a == b => Ok(a),
                (Ok(a), Ok(b)) => Err(format!(
                    "the two senders were told different things: {} and {}",
                    String::from_utf8_lossy(&a),
                    String::from_utf8_lossy(&b)
                )),
                (Err(e), _) | (_, Err(e)) => Err(e),
            }
        } else {
            self.until_answered(logical).await
        };
        let json = outcome.and_then(|body| {
            serde_json::from_slice(&body).map_err(|e| format!("the answer is not JSON: {e}"))
        });
        match json {
            Ok(json) => Some(json),
            Err(error) => {
                let name = logical.operation.name();
                self.stats
                    .fail(format!("{name} key {}: {error}", logical.key));
                None
            }
        }
    }

    /// Sends one logical operation until it has a final answer; when the client gives up
    /// (attempts or budget), sends it again with the same key, as an operator would with the
    /// printed key. `Ok` carries the body of an answer with the expected status.
    async fn until_answered(&self, logical: &Logical) -> Result<Bytes, String> {
        loop {
            let sent = tokio::time::timeout_at(
                self.deadline,
                self.client.send(
                    logical.operation.clone(),
                    &logical.key,
                    logical.body.clone(),
                ),
            )
            .await
            .map_err(|_| "no answer before the run's deadline".to_owned())?;
            match sent {
                Ok(answer) if answer.status == logical.expect => return Ok(answer.body),
                Ok(answer) => {
                    return Err(format!(
                        "HTTP {} (expected {}): {}",
                        answer.status,
                        logical.expect,
                        String::from_utf8_lossy(&answer.body)
                    ));
                }
                Err(ClientError::GaveUp { .. }) => {
                    (self.stats.resent_after_giving_up).fetch_add(1, Ordering::Relaxed);
                    if Instant::now() + RESEND_PAUSE >= self.deadline {
                        return Err("the client gave up and the run's deadline is near".into());
                    }
                    tokio::time::sleep(RESEND_PAUSE).await;
                }
                Err(error) => return Err(error.to_string()),
            }
        }
    }
}
