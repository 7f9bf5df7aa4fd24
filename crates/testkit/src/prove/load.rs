//! The charge phase: many client tasks take logical charges from one seeded plan and send each
//! through the retrying client (one key, one body per charge); a planned duplicate is sent by a
//! second task at the same time with the same key and body. Every answer a logical charge gets
//! must be a 201 naming the same charge.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::time::Instant;

use onceledger_client::rng::Rng;
use onceledger_client::{Client, ClientError, NewCharge, Operation};

/// After the client gave up on an operation, wait this long before sending it again.
const RESEND_PAUSE: Duration = Duration::from_millis(100);
/// Failure descriptions kept for the report.
const FAILURE_SAMPLES_MAX: usize = 5;

/// One logical charge.
#[derive(Debug, Clone)]
pub struct PlannedCharge {
    pub key: String,
    pub body: Bytes,
    pub amount: u64,
    /// Sent by two tasks at once.
    pub duplicate: bool,
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
            // A NewCharge of plain strings and integers always encodes.
            let body = serde_json::to_vec(&charge).unwrap_or_default();
            PlannedCharge {
                key: Client::new_key(),
                body: Bytes::from(body),
                amount,
                duplicate,
            }
        })
        .collect()
}

/// Counters the progress line and the report read.
#[derive(Default)]
pub struct LoadStats {
    pub done: AtomicU64,
    pub resent_after_giving_up: AtomicU64,
    pub failed: AtomicU64,
    pub failure_samples: Mutex<Vec<String>>,
}

impl LoadStats {
    fn fail(&self, message: String) {
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

/// Sends every planned charge from `tasks` tasks; returns when each has its answer or `deadline`
/// passed.
pub async fn run(
    client: &Client,
    plan: Arc<Vec<PlannedCharge>>,
    tasks: usize,
    stats: Arc<LoadStats>,
    deadline: Instant,
) {
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..tasks.max(1))
        .map(|_| {
            let (client, plan, stats, next) = (
                client.clone(),
                Arc::clone(&plan),
                Arc::clone(&stats),
                Arc::clone(&next),
            );
            tokio::spawn(async move {
                while let Some(charge) = plan.get(next.fetch_add(1, Ordering::Relaxed)) {
                    one_logical_charge(&client, charge, &stats, deadline).await;
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

async fn one_logical_charge(
    client: &Client,
    charge: &PlannedCharge,
    stats: &Arc<LoadStats>,
    deadline: Instant,
) {
    let outcome = if charge.duplicate {
        // The twin: another task sending the same key and body now.
        let twin = tokio::spawn(send_until_answered(
            client.clone(),
            charge.key.clone(),
            charge.body.clone(),
            Arc::clone(stats),
            deadline,
        ));
        let mine = send_until_answered(
            client.clone(),
            charge.key.clone(),
            charge.body.clone(),
            Arc::clone(stats),
            deadline,
        )
        .await;
        let theirs = twin
            .await
            .unwrap_or_else(|e| Err(format!("the twin task ended abnormally: {e}")));
        match (mine, theirs) {
            (Ok(a), Ok(b)) if a == b => Ok(a),
            (Ok(a), Ok(b)) => Err(format!("the two senders were told of charges {a} and {b}")),
            (Err(e), _) | (_, Err(e)) => Err(e),
        }
    } else {
        send_until_answered(
            client.clone(),
            charge.key.clone(),
            charge.body.clone(),
            Arc::clone(stats),
            deadline,
        )
        .await
    };
    if let Err(error) = outcome {
        stats.fail(format!("key {}: {error}", charge.key));
    }
}

/// Sends one logical charge until it has a final answer; when the client gives up (attempts or
/// budget), sends it again with the same key, as an operator would with the printed key. `Ok`
/// carries the charge id of a 201.
async fn send_until_answered(
    client: Client,
    key: String,
    body: Bytes,
    stats: Arc<LoadStats>,
    deadline: Instant,
) -> Result<String, String> {
    loop {
        let sent = tokio::time::timeout_at(
            deadline,
            client.send(Operation::CreateCharge, &key, body.clone()),
        )
        .await
        .map_err(|_| "no answer before the run's deadline".to_owned())?;
        match sent {
            Ok(answer) if answer.status == 201 => {
                let charge: Value = serde_json::from_slice(&answer.body)
                    .map_err(|e| format!("the 201 is not JSON: {e}"))?;
                return charge["id"]
                    .as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("the 201 names no charge: {charge}"));
            }
            Ok(answer) => {
                return Err(format!(
                    "HTTP {}: {}",
                    answer.status,
                    String::from_utf8_lossy(&answer.body)
                ));
            }
            Err(ClientError::GaveUp { .. }) => {
                stats.resent_after_giving_up.fetch_add(1, Ordering::Relaxed);
                if Instant::now() + RESEND_PAUSE >= deadline {
                    return Err("the client gave up and the run's deadline is near".into());
                }
                tokio::time::sleep(RESEND_PAUSE).await;
            }
            Err(error) => return Err(error.to_string()),
        }
    }
}
