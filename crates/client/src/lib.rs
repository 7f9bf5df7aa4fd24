//! The retrying client of onceledger's API.
//!
//! One logical operation (create this account, make this charge) gets one idempotency key, a
//! UUIDv4, and every attempt of it carries that key, so however many attempts reach the server
//! the money moves once. An attempt is repeated only when a retry can change its outcome
//! (`classify`); the wait before it is full-jitter exponential backoff with the server's
//! `Retry-After` as the least wait (`backoff`); and retries draw on a token bucket shared by the
//! call site (`budget`), so that during an outage the client stops multiplying its load and fails
//! fast instead. Each attempt may be written to a transcript, one JSON line per attempt.
//!
//! ```text
//! for attempt in 1..=attempts_max:
//!     send(key)                         → 2xx or a 4xx a retry would repeat: return it
//!     retryable (transport, 409, 429, 5xx):
//!         last attempt                  → give up (attempts)
//!         Retry-After > retry_after_max → give up (retry_after)
//!         budget lacks the retry's cost → give up (budget), at once
//!         sleep(max(uniform(0, min(cap, base·2^(attempt-1))), Retry-After))
//! ```

pub mod backoff;
pub mod body;
mod budget;
mod classify;
#[cfg(feature = "cli")]
pub mod cli;
pub mod lifecycle;
pub mod list;
mod metrics;
pub mod rng;
pub mod tls;
pub mod token;
mod transcript;
pub mod transfer;
mod transport;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;

pub use backoff::{Backoff, parse_retry_after};
pub use body::{BodyError, ChargeId};
pub use budget::{
    CAPACITY_DEFAULT, NO_RETRY_INCREMENT, RETRY_COST, RetryBudget, TIMEOUT_RETRY_COST,
};
pub use classify::{RetryCause, Verdict, classify_status};
pub use lifecycle::{NewAuthorization, NewCapture, NewRefund, NewVoid};
pub use list::{ListError, ListRequest, Pages};
pub use metrics::ClientMetrics;
pub use transcript::{AttemptRecord, Decision, Transcript};
pub use transfer::{Leg, NewTransfer};

use crate::rng::Rng;
use transport::{Reply, Transport, TransportError};
pub use transport::{RequestError, SetupError, UrlError, parse_base, parse_base_url};

/// Attempts per logical operation, the first included, when not configured.
pub const ATTEMPTS_DEFAULT: u32 = 5;
/// Most attempts per logical operation that may be configured.
pub const ATTEMPTS_MAX: u32 = 100;
/// One attempt (connect, send, whole answer) may take this long when not configured.
pub const ATTEMPT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// A longer `Retry-After` than this ends the operation instead of parking it.
pub const RETRY_AFTER_MAX_DEFAULT: Duration = Duration::from_secs(60);

/// How a client retries.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub backoff: Backoff,
    /// Attempts per logical operation, the first included (1 = never retry).
    pub attempts_max: u32,
    pub attempt_timeout: Duration,
    /// The longest `Retry-After` the client waits out.
    pub retry_after_max: Duration,
    /// The call site's retry budget. Each `ClientConfig::default()` has its own full bucket;
    /// share one `Arc` between clients to make them one call site.
    pub budget: Arc<RetryBudget>,
    /// Where to write one JSON line per attempt, if anywhere.
    pub transcript: Option<Transcript>,
    /// The API token sent as `Authorization: Bearer` with every request.
    pub token: Option<crate::token::TokenSecret>,
    /// PEM CA certificates to trust for an `https://` server (default: the system's roots).
    pub ca_file: Option<std::path::PathBuf>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            backoff: Backoff::default(),
            attempts_max: ATTEMPTS_DEFAULT,
            attempt_timeout: ATTEMPT_TIMEOUT_DEFAULT,
            retry_after_max: RETRY_AFTER_MAX_DEFAULT,
            budget: Arc::new(RetryBudget::default()),
            transcript: None,
            token: None,
            ca_file: None,
        }
    }
}

/// The POSTs of API.md the client knows. Capture and void carry the charge they act on, since
/// it is part of their path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    CreateAccount,
    /// An immediate charge or an authorization (`"capture": false`): the same path.
    CreateCharge,
    CaptureCharge(ChargeId),
    VoidCharge(ChargeId),
    CreateRefund,
    CreateTransfer,
}

impl Operation {
    pub fn path(&self) -> Cow<'static, str> {
        match self {
            Operation::CreateAccount => Cow::Borrowed("/v1/accounts"),
            Operation::CreateCharge => Cow::Borrowed("/v1/charges"),
            Operation::CaptureCharge(id) => Cow::Owned(format!("/v1/charges/{id}/capture")),
            Operation::VoidCharge(id) => Cow::Owned(format!("/v1/charges/{id}/void")),
            Operation::CreateRefund => Cow::Borrowed("/v1/refunds"),
            Operation::CreateTransfer => Cow::Borrowed("/v1/transfers"),
        }
    }

    /// The name in transcripts and metric labels.
    pub fn name(&self) -> &'static str {
        match self {
            Operation::CreateAccount => "account",
            Operation::CreateCharge => "charge",
            Operation::CaptureCharge(_) => "capture",
            Operation::VoidCharge(_) => "void",
            Operation::CreateRefund => "refund",
            Operation::CreateTransfer => "transfer",
        }
    }
}

/// `POST /v1/accounts` (API.md): `overdraft_limit` `None` is sent as `null`, no limit.
#[derive(Debug, Clone, Serialize)]
pub struct NewAccount {
    pub id: String,
    pub currency: String,
    pub overdraft_limit: Option<u64>,
}

/// `POST /v1/charges` (API.md).
#[derive(Debug, Clone, Serialize)]
pub struct NewCharge {
    pub source: String,
    pub destination: String,
    pub amount: u64,
    pub currency: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// The final answer to a logical operation: a 2xx, or a 4xx that a retry would repeat (a stored
/// decline, or a request the server refuses as written). Callers check `is_success`.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
    /// `Idempotent-Replayed: true`: an earlier attempt had run the operation.
    pub replayed: bool,
    pub key: String,
    /// Attempts made, this one included.
    pub attempts: u32,
}

impl Answer {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Why a logical operation has no final answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GiveUp {
    /// Every allowed attempt was retryable.
    Attempts,
    /// The retry budget could not pay for another retry.
    Budget,
    /// The server asked to wait this long, beyond `retry_after_max`.
    RetryAfter(Duration),
}

/// The outcome of the last attempt of an operation that gave up.
#[derive(Debug, Clone)]
pub enum Failure {
    Status { status: u16, body: Bytes },
    Transport { cause: RetryCause, message: String },
}

#[derive(Debug)]
#[non_exhaustive]
pub enum ClientError {
    /// The client cannot be set up: the server URL, the CA file or the token is unusable.
    Setup(SetupError),
    /// The request could not be built (for example a key with bytes a header cannot carry).
    Request(RequestError),
    /// No final answer. The operation may or may not have run: retrying with `key` finds out
    /// without running it twice. For a GET (`read_only`), nothing ran: `key` only names its
    /// attempts (`x-request-id`), and asking again is all there is to do.
    GaveUp {
        key: String,
        attempts: u32,
        reason: GiveUp,
        last: Failure,
        read_only: bool,
    },
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Setup(error) => error.fmt(f),
            ClientError::Request(error) => error.fmt(f),
            ClientError::GaveUp {
                key,
                attempts,
                reason,
                last,
                read_only,
            } => {
                let why = match reason {
                    GiveUp::Attempts => "no attempts left".to_owned(),
                    GiveUp::Budget => "the retry budget is empty".to_owned(),
                    GiveUp::RetryAfter(wait) => {
                        format!("the server asks to wait {} s", wait.as_secs_f64())
                    }
                };
                let last = match last {
                    Failure::Status { status, body } => {
                        format!("HTTP {status} {}", String::from_utf8_lossy(body))
                    }
                    Failure::Transport { message, .. } => message.clone(),
                };
                if *read_only {
                    return write!(
                        f,
                        "gave up after {attempts} attempt(s), {why}; last: {last} (request {key}, \
                         which changes nothing: ask again)"
                    );
                }
                write!(
                    f,
                    "gave up after {attempts} attempt(s), {why}; last: {last}; the operation may \
                     have run: retry with idempotency key {key} to find out"
                )
            }
        }
    }
}

/// `Setup` and `Request` are transparent: their message is the wrapped error's, so the source is
/// the wrapped error's own.
impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Setup(error) => std::error::Error::source(error),
            ClientError::Request(error) => std::error::Error::source(error),
            ClientError::GaveUp { .. } => None,
        }
    }
}

/// A retrying client. Clones share the connection pool, the budget, the metrics and the
/// transcript: one `Client` (and its clones) is one call site.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    transport: Transport,
    config: ClientConfig,
    metrics: ClientMetrics,
    /// Every request sent, for callers that report totals without a registry.
    attempts_total: AtomicU64,
}

impl Client {
    /// A client of the server at `base_url` (`http://host:port`).
    pub fn new(base_url: &str, config: ClientConfig) -> Result<Client, ClientError> {
        assert!(
            (1..=ATTEMPTS_MAX).contains(&config.attempts_max),
            "attempts_max must be 1..={ATTEMPTS_MAX}"
        );
        let transport = Transport::with_security(
            base_url,
            config.attempt_timeout,
            config.token.clone(),
            config.ca_file.as_deref(),
        )
        .map_err(ClientError::Setup)?;
        let metrics = ClientMetrics::default();
        metrics.budget_tokens.set(i64::from(config.budget.tokens()));
        Ok(Client {
            inner: Arc::new(Inner {
                transport,
                config,
                metrics,
                attempts_total: AtomicU64::new(0),
            }),
        })
    }

    /// A fresh idempotency key for a new logical operation.
    pub fn new_key() -> String {
        uuid::Uuid::new_v4().to_string()
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Requests sent so far by this client and its clones.
    pub fn attempts_total(&self) -> u64 {
        self.inner.attempts_total.load(Ordering::Relaxed)
    }

    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.inner.metrics.register(registry);
    }

    /// Creates an account under a new key.
    pub async fn create_account(&self, account: &NewAccount) -> Result<Answer, ClientError> {
        self.send_json(Operation::CreateAccount, &Self::new_key(), account)
            .await
    }

    /// Makes a charge under a new key.
    pub async fn create_charge(&self, charge: &NewCharge) -> Result<Answer, ClientError> {
        self.send_json(Operation::CreateCharge, &Self::new_key(), charge)
            .await
    }

    /// Authorizes a charge (holds its amount) under a new key.
    pub async fn authorize(&self, authorization: &NewAuthorization) -> Result<Answer, ClientError> {
        self.send_json(Operation::CreateCharge, &Self::new_key(), authorization)
            .await
    }

    /// Captures an authorization, all of it or `capture.amount`, under a new key.
    pub async fn capture(
        &self,
        charge: &ChargeId,
        capture: &NewCapture,
    ) -> Result<Answer, ClientError> {
        let operation = Operation::CaptureCharge(charge.clone());
        self.send_json(operation, &Self::new_key(), capture).await
    }

    /// Voids an authorization (releases its hold) under a new key.
    pub async fn void(&self, charge: &ChargeId) -> Result<Answer, ClientError> {
        let operation = Operation::VoidCharge(charge.clone());
        self.send_json(operation, &Self::new_key(), &NewVoid {})
            .await
    }

    /// Refunds a succeeded charge, all that is left of it or `refund.amount`, under a new key.
    pub async fn create_refund(&self, refund: &NewRefund) -> Result<Answer, ClientError> {
        self.send_json(Operation::CreateRefund, &Self::new_key(), refund)
            .await
    }

    /// Posts a transfer's legs, all or none, under a new key.
    pub async fn create_transfer(&self, transfer: &NewTransfer) -> Result<Answer, ClientError> {
        self.send_json(Operation::CreateTransfer, &Self::new_key(), transfer)
            .await
    }

    /// Sends `body` as the JSON of `operation` under `key`: a new key for a new operation, the
    /// key of an earlier call to find out what became of it.
    pub async fn send_json(
        &self,
        operation: Operation,
        key: &str,
        body: &impl Serialize,
    ) -> Result<Answer, ClientError> {
        let body =
            serde_json::to_vec(body).map_err(|e| ClientError::Request(RequestError::Encode(e)))?;
        self.send(operation, key, Bytes::from(body)).await
    }

    /// Sends `operation` under `key` with the retry loop: every attempt sends the same key and
    /// the same bytes, so the server sees one logical operation.
    pub async fn send(
        &self,
        operation: Operation,
        key: &str,
        body: Bytes,
    ) -> Result<Answer, ClientError> {
        // Built once: every attempt goes to the same path.
        let path = operation.path();
        let transport = &self.inner.transport;
        self.retrying(operation.name(), key, false, |request_id| {
            transport.post_request(&path, key, request_id, body.clone())
        })
        .await
    }

    /// `GET path_and_query` (`/v1/accounts?limit=7`) with the same retries, backoff, budget and
    /// attempt timeout as a POST: a GET changes nothing, so a lost answer is simply asked
    /// again. `name` labels its transcript lines and metrics; the answer's `key` is a fresh
    /// UUIDv4 that only names the attempts (`x-request-id`), never sent as an idempotency key.
    pub async fn get(
        &self,
        name: &'static str,
        path_and_query: &str,
    ) -> Result<Answer, ClientError> {
        let key = Self::new_key();
        let transport = &self.inner.transport;
        self.retrying(name, &key, true, |request_id| {
            transport.get_request(path_and_query, request_id)
        })
        .await
    }

    /// The retry loop: a bounded `for` over attempts of the request `request` builds for each
    /// attempt's request id.
    async fn retrying(
        &self,
        name: &'static str,
        key: &str,
        read_only: bool,
        request: impl Fn(&str) -> Result<http::Request<http_body_util::Full<Bytes>>, RequestError>,
    ) -> Result<Answer, ClientError> {
        let config = &self.inner.config;
        let mut rng = Rng::from_entropy();
        // Tokens the latest retry took; a 2xx after it gives them back (AWS standard mode).
        let mut retry_cost_taken: Option<u32> = None;
        let mut last = Failure::Transport {
            cause: RetryCause::Connect,
            message: "no attempt made".to_owned(),
        };
        for attempt in 1..=config.attempts_max {
            let request_id = format!("{key}.{attempt}");
            let request = request(&request_id).map_err(ClientError::Request)?;
            self.inner.attempts_total.fetch_add(1, Ordering::Relaxed);
            self.inner.metrics.count_attempt(name, attempt);
            let outcome = self.inner.transport.send(request).await;
            let seen = Seen::of(&outcome);

            let cause = match &outcome {
                Ok(reply) => match classify_status(reply.status) {
                    Verdict::Final => {
                        if (200..300).contains(&reply.status) {
                            self.release(retry_cost_taken.unwrap_or(NO_RETRY_INCREMENT));
                        }
                        self.record(name, key, attempt, &seen, Decision::Done, None);
                        return Ok(Answer {
                            status: reply.status,
                            body: reply.body.clone(),
                            replayed: reply.replayed,
                            key: key.to_owned(),
                            attempts: attempt,
                        });
                    }
                    Verdict::Retry(cause) => cause,
                },
                Err(error) => error.cause,
            };
            last = Failure::from_outcome(outcome);

            let give_up = if attempt == config.attempts_max {
                Some((Decision::GiveUpAttempts, GiveUp::Attempts))
            } else if let Some(wait) = seen.retry_after.filter(|w| *w > config.retry_after_max) {
                Some((Decision::GiveUpRetryAfter, GiveUp::RetryAfter(wait)))
            } else if !config.budget.try_acquire(cause.cost()) {
                Some((Decision::GiveUpBudget, GiveUp::Budget))
            } else {
                None
            };
            if let Some((decision, reason)) = give_up {
                self.record(name, key, attempt, &seen, decision, None);
                self.inner.metrics.count_gave_up(name, reason.label());
                return Err(ClientError::GaveUp {
                    key: key.to_owned(),
                    attempts: attempt,
                    reason,
                    last,
                    read_only,
                });
            }
            retry_cost_taken = Some(cause.cost());
            self.sync_budget_gauge();
            let delay = config
                .backoff
                .delay(attempt - 1, seen.retry_after, &mut rng);
            self.record(name, key, attempt, &seen, Decision::Retry, Some(delay));
            tokio::time::sleep(delay).await;
        }
        // Only reached with attempts_max == 0, which `new` refuses.
        Err(ClientError::GaveUp {
            key: key.to_owned(),
            attempts: 0,
            reason: GiveUp::Attempts,
            last,
            read_only,
        })
    }

    fn release(&self, tokens: u32) {
        self.inner.config.budget.release(tokens);
        self.sync_budget_gauge();
    }

    fn sync_budget_gauge(&self) {
        let tokens = self.inner.config.budget.tokens();
        self.inner.metrics.budget_tokens.set(i64::from(tokens));
    }

    fn record(
        &self,
        operation: &'static str,
        key: &str,
        attempt: u32,
        seen: &Seen,
        decision: Decision,
        delay: Option<Duration>,
    ) {
        let Some(transcript) = &self.inner.config.transcript else {
            return;
        };
        transcript.record(&AttemptRecord {
            operation,
            key,
            attempt,
            status: seen.status,
            error: seen.error.as_deref(),
            cause: seen.cause,
            retry_after_ms: seen.retry_after.map(millis),
            decision,
            delay_ms: delay.map(millis),
            budget_tokens: self.inner.config.budget.tokens(),
            replayed: seen.replayed,
        });
    }
}

/// What one attempt showed, for the transcript and the decision.
struct Seen {
    status: Option<u16>,
    error: Option<String>,
    cause: Option<RetryCause>,
    retry_after: Option<Duration>,
    replayed: bool,
}

impl Seen {
    fn of(outcome: &Result<Reply, TransportError>) -> Seen {
        match outcome {
            Ok(reply) => Seen {
                status: Some(reply.status),
                error: None,
                cause: match classify_status(reply.status) {
                    Verdict::Final => None,
                    Verdict::Retry(cause) => Some(cause),
                },
                retry_after: reply.retry_after,
                replayed: reply.replayed,
            },
            Err(error) => Seen {
                status: None,
                error: Some(error.message.clone()),
                cause: Some(error.cause),
                retry_after: None,
                replayed: false,
            },
        }
    }
}

impl Failure {
    fn from_outcome(outcome: Result<Reply, TransportError>) -> Failure {
        match outcome {
            Ok(reply) => Failure::Status {
                status: reply.status,
                body: reply.body,
            },
            Err(error) => Failure::Transport {
                cause: error.cause,
                message: error.message,
            },
        }
    }
}

impl GiveUp {
    fn label(&self) -> &'static str {
        match self {
            GiveUp::Attempts => "attempts",
            GiveUp::Budget => "budget",
            GiveUp::RetryAfter(_) => "retry_after",
        }
    }
}

/// Milliseconds with microsecond precision, for the transcript.
fn millis(d: Duration) -> f64 {
    (d.as_micros().min(u128::from(u64::MAX)) as u64) as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards where each logical operation is POSTed and how transcripts name it: a capture or
    /// void goes to its charge's path, never to the collection.
    #[test]
    fn operations_post_to_their_contract_paths() {
        let id = ChargeId::new("ch_7").expect("plain id");
        let table = [
            (Operation::CreateAccount, "/v1/accounts", "account"),
            (Operation::CreateCharge, "/v1/charges", "charge"),
            (
                Operation::CaptureCharge(id.clone()),
                "/v1/charges/ch_7/capture",
                "capture",
            ),
            (Operation::VoidCharge(id), "/v1/charges/ch_7/void", "void"),
            (Operation::CreateRefund, "/v1/refunds", "refund"),
            (Operation::CreateTransfer, "/v1/transfers", "transfer"),
        ];
        for (operation, path, name) in table {
            assert_eq!(operation.path(), path);
            assert_eq!(operation.name(), name);
        }
    }
}
