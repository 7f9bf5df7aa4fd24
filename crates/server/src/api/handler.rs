//! Runs a parsed request: the idempotency state machine of API.md for POSTs, reads for GETs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use tokio::sync::oneshot;

use super::parse::{ApiRequest, WriteIntent};
use super::server::ServerSettings;
use crate::auth::{Authenticator, Principal, Role, TokenSecret};
use crate::metrics::{KeyOutcome, Metrics};
use crate::nats::feed::FeedStatus;
use onceledger_core::idempotency::InFlightIndex;
use onceledger_core::ledger::{AccountId, Command, TenantId};
use onceledger_core::render as present;
use onceledger_core::render::problem::{Problem, ProblemKind};
use onceledger_core::store::{Store, TokenRecord};
use onceledger_core::wire::EventBatch;
use onceledger_core::writer::{
    InboundOutcome, InboundRequest, StoredAnswer, SubmitError, WriteOutcome, WriteRequest,
    WriterHandle,
};

const JSON: &str = "application/json";
const PROBLEM_JSON: &str = "application/problem+json";

/// Everything a request task needs, shared by all connections.
pub struct App {
    pub store: Arc<Store>,
    pub writer: Arc<WriterHandle>,
    pub inflight: Arc<InFlightIndex>,
    pub metrics: Arc<Metrics>,
    /// The token table every `/v1` request is checked against.
    pub auth: Arc<Authenticator>,
    /// Sockets, timeouts, TLS and whether `/metrics` needs a token.
    pub server: ServerSettings,
    /// A hub fed by JetStream (`onceledger consume`): its partition and the origins its stream
    /// cannot complete, for `GET /v1/replication/origins`.
    pub hub_feed: Option<Arc<FeedStatus>>,
    request_ids: RequestIds,
}

impl App {
    /// An app with an empty token table (every `/v1` request is refused until
    /// [`App::load_tokens`]) and the default server settings.
    pub fn new(store: Arc<Store>, writer: WriterHandle, metrics: Arc<Metrics>) -> Self {
        App {
            store,
            writer: Arc::new(writer),
            inflight: InFlightIndex::new(),
            metrics,
            auth: Arc::new(Authenticator::new(None)),
            server: ServerSettings::default(),
            hub_feed: None,
            request_ids: RequestIds::new(),
        }
    }

    pub fn with_hub_feed(mut self, hub_feed: Option<Arc<FeedStatus>>) -> Self {
        self.hub_feed = hub_feed;
        self
    }

    pub fn with_settings(mut self, auth: Arc<Authenticator>, server: ServerSettings) -> Self {
        self.auth = auth;
        self.server = server;
        self
    }

    /// Loads the store's tokens into the in-memory table (at start, and after every change).
    pub fn load_tokens(&self) -> Result<(), onceledger_core::store::StoreError> {
        let tokens = self.store.tokens()?;
        self.auth.reload(tokens.iter().map(TokenRecord::entry));
        Ok(())
    }

    pub(super) fn next_request_id(&self) -> String {
        self.request_ids.next()
    }

    /// Runs a request as the operator (the default tenant, admin). Public so that the ledger_model
    /// fuzz target submits through the real idempotency steps.
    pub async fn run(self: &Arc<Self>, request: ApiRequest) -> Response<Full<Bytes>> {
        let operator = Principal {
            token_id: 0,
            tenant: TenantId::DEFAULT,
            role: Role::Admin,
        };
        self.run_as(operator, request).await
    }

    /// Runs a parsed request for `principal` (already authenticated and allowed the route).
    /// Writes go to the writer thread; reads of the store run on tokio's blocking pool
    /// ([`App::off_worker`]); what memory alone answers stays on the async worker.
    pub(super) async fn run_as(
        self: &Arc<Self>,
        principal: Principal,
        request: ApiRequest,
    ) -> Response<Full<Bytes>> {
        match request {
            ApiRequest::Write(intent) => self.write(principal.tenant, intent).await,
            ApiRequest::Replicate(batch) => self.replicate(principal.tenant, batch).await,
            ApiRequest::Healthz => json(StatusCode::OK, present::health(self.store.node_id())),
            ApiRequest::Readyz if self.writer.is_poisoned() => problem(&Problem::new(
                ProblemKind::StorageUnavailable,
                "the store refuses writes until restart",
            )),
            ApiRequest::Readyz => text(StatusCode::OK, "text/plain; charset=utf-8", "ready\n"),
            ApiRequest::Metrics => self.metrics_page(),
            ApiRequest::OpenApi => text(StatusCode::OK, JSON, super::OPENAPI_JSON),
            read => self
                .off_worker(move |app| app.read(principal, read))
                .await
                .unwrap_or_else(|| {
                    problem(&Problem::new(ProblemKind::Internal, "the read failed"))
                }),
        }
    }

    /// Runs `work` on tokio's blocking pool, not on an async worker. A redb read may wait for the
    /// disk (a page outside its cache, a page of 1,000 events), and an async worker that waits
    /// stalls every other connection it serves; mini-redis's `db.rs` gives the same reason for its
    /// own blocking calls. `None` if `work` panicked. Not for a POST's finished-key lookup (see
    /// `write_command`): the hand-off costs more than that read.
    async fn off_worker<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&App) -> T + Send + 'static,
    ) -> Option<T> {
        let app = Arc::clone(self);
        tokio::task::spawn_blocking(move || work(&app)).await.ok()
    }

    /// `/metrics`: the gauges read at scrape time come from memory (no store read).
    fn metrics_page(&self) -> Response<Full<Bytes>> {
        self.metrics.inflight_keys.set(self.inflight.len() as i64);
        self.metrics
            .commit_queue_commands
            .set(self.writer.queued() as i64);
        self.metrics
            .idempotency_keys_in_memory
            .set(self.store.keys_in_memory() as i64);
        self.metrics
            .journal_bytes
            .set(i64::try_from(self.store.journal_bytes()).unwrap_or(i64::MAX));
        text(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            self.metrics.render(),
        )
    }

    /// Every request answered by reading the store; blocking, so it runs off the async workers.
    fn read(&self, principal: Principal, request: ApiRequest) -> Response<Full<Bytes>> {
        let tenant = principal.tenant;
        let answer = |read: Result<Vec<u8>, onceledger_core::store::StoreError>| match read {
            Ok(body) => json(StatusCode::OK, body),
            Err(error) => storage_failure(&error),
        };
        match request {
            ApiRequest::ListTenants => {
                answer(self.store.tenants().map(|t| present::tenants_page(&t)))
            }
            ApiRequest::ListTokens => answer(self.store.tenants().and_then(|tenants| {
                let tokens = self.store.tokens()?;
                let names = tenants.into_iter().map(|t| (t.id, t.name)).collect();
                Ok(present::tokens_page(&tokens, &names))
            })),
            ApiRequest::GetAccount(id) => self.get_account(tenant, &id),
            ApiRequest::GetCharge(id) => self.get_charge(tenant, &id),
            ApiRequest::GetRefund(id) => match self.store.refund(tenant, &id) {
                Ok(Some((refund, charge))) => json(
                    StatusCode::OK,
                    present::refund(&refund, &charge, self.store.charge_ids()),
                ),
                Ok(None) => problem(&Problem::new(
                    ProblemKind::RefundNotFound,
                    format!("no refund {}", shorten(&id)),
                )),
                Err(error) => storage_failure(&error),
            },
            ApiRequest::GetTransfer(id) => match self.store.transfer(tenant, &id) {
                Ok(Some(transfer)) => json(
                    StatusCode::OK,
                    present::transfer(&transfer, self.store.charge_ids()),
                ),
                Ok(None) => problem(&Problem::new(
                    ProblemKind::TransferNotFound,
                    format!("no transfer {}", shorten(&id)),
                )),
                Err(error) => storage_failure(&error),
            },
            ApiRequest::ListEvents { after, limit } => {
                answer(self.store.outbox_bounds().and_then(|held| {
                    // The operator sees the node's whole outbox; anyone else their tenant's events.
                    let events = if principal.role == Role::Admin {
                        self.store.events_after(after, limit)?
                    } else {
                        self.store.tenant_events_after(tenant, after, limit)?
                    };
                    Ok(present::events_page(
                        self.store.node_id(),
                        &events,
                        after,
                        held,
                        self.store.charge_ids(),
                    ))
                }))
            }
            ApiRequest::ListDeadLetters { after, limit } => answer(
                (self.store.dead_letters_after(after, limit))
                    .map(|letters| present::dead_letters_page(&letters, after)),
            ),
            ApiRequest::ListOrigins => {
                let feed = self.hub_feed.as_ref().map(|feed| feed.view());
                answer((self.store.origins()).map(|o| present::origins(&o, feed.as_ref())))
            }
            ApiRequest::ListInbox {
                origin,
                after,
                limit,
            } => answer(
                (self.store.inbox_after(&origin, after, limit))
                    .map(|rows| present::inbox_page(&rows, after)),
            ),
            ApiRequest::GetMirrorAccount { origin, id } => self.get_mirror_account(&origin, &id),
            ApiRequest::ListAccounts(query) => self.list_accounts(tenant, &query),
            ApiRequest::ListCharges { filter, query } => self.list_charges(tenant, &filter, &query),
            ApiRequest::ListRefunds { charge, query } => {
                self.list_refunds(tenant, charge.as_deref(), &query)
            }
            ApiRequest::ListTransfers { account, query } => {
                self.list_transfers(tenant, account.as_ref(), &query)
            }
            ApiRequest::ListPostings { account, query } => {
                self.list_postings(tenant, &account, &query)
            }
            ApiRequest::GetBalance { account, at } => self.get_balance(tenant, &account, at),
            ApiRequest::ListMirrorPostings {
                origin,
                account,
                query,
            } => self.list_mirror_postings(&origin, &account, &query),
            // Writes and memory-only answers never reach here (`run_as`).
            other => {
                tracing::error!(?other, "not a read");
                problem(&Problem::new(ProblemKind::Internal, "not a read"))
            }
        }
    }

    fn get_mirror_account(&self, origin: &str, raw_id: &str) -> Response<Full<Bytes>> {
        let not_found = || {
            problem(&Problem::new(
                ProblemKind::AccountNotFound,
                format!(
                    "no account {} from node {}",
                    shorten(raw_id),
                    shorten(origin)
                ),
            ))
        };
        let Ok(id) = AccountId::parse(raw_id) else {
            return not_found();
        };
        match self.store.mirror_account(origin, &id) {
            Ok(Some(account)) => json(StatusCode::OK, present::account(&account)),
            Ok(None) => not_found(),
            Err(error) => storage_failure(&error),
        }
    }

    /// The hub side of replication: the batch goes through the writer like any write, so its
    /// inbox rows commit with its effects.
    async fn replicate(&self, tenant: TenantId, batch: EventBatch) -> Response<Full<Bytes>> {
        let (reply, answer) = oneshot::channel();
        match self.writer.try_submit_inbound(InboundRequest {
            tenant,
            batch,
            park_reason: None,
            reply,
        }) {
            Ok(()) => {}
            Err(SubmitError::Overloaded) => {
                self.metrics.count_overloaded();
                return problem(&Problem::new(
                    ProblemKind::Overloaded,
                    "the commit queue is full; resend shortly",
                ));
            }
            // Unavailable, or a refusal this build does not know: nothing was queued.
            Err(_) => return self.unavailable(),
        }
        match answer.await {
            Ok(InboundOutcome::Acknowledged(ack)) => json(StatusCode::OK, present::ack(&ack)),
            Ok(InboundOutcome::Unavailable) | Err(_) => self.unavailable(),
        }
    }

    fn get_account(&self, tenant: TenantId, raw_id: &str) -> Response<Full<Bytes>> {
        let not_found = || {
            problem(&Problem::new(
                ProblemKind::AccountNotFound,
                format!("no account {}", shorten(raw_id)),
            ))
        };
        let Ok(id) = AccountId::parse(raw_id) else {
            return not_found();
        };
        match self.store.account(tenant, &id) {
            Ok(Some(account)) => json(StatusCode::OK, present::account(&account)),
            Ok(None) => not_found(),
            Err(error) => storage_failure(&error),
        }
    }

    /// Another tenant's charge is answered exactly like a missing one.
    fn get_charge(&self, tenant: TenantId, raw_id: &str) -> Response<Full<Bytes>> {
        let not_found = || {
            problem(&Problem::new(
                ProblemKind::ChargeNotFound,
                format!("no charge {}", shorten(raw_id)),
            ))
        };
        match self.store.charge(tenant, raw_id) {
            Ok(Some((charge, progress))) => json(
                StatusCode::OK,
                present::charge(&charge, &progress, self.store.charge_ids()),
            ),
            Ok(None) => not_found(),
            Err(error) => storage_failure(&error),
        }
    }

    /// A POST. Tenant and token changes run in a task of their own, so that the token table is
    /// reloaded after their commit even when the client hangs up before the answer.
    async fn write(
        self: &Arc<Self>,
        tenant: TenantId,
        intent: WriteIntent,
    ) -> Response<Full<Bytes>> {
        if !matches!(
            intent.command,
            Command::CreateTenant { .. }
                | Command::CreateToken { .. }
                | Command::RevokeToken { .. }
        ) {
            return self.write_command(tenant, intent, None).await;
        }
        let app = Arc::clone(self);
        tokio::spawn(async move { app.write_admin(tenant, intent).await })
            .await
            .unwrap_or_else(|_| problem(&Problem::new(ProblemKind::Internal, "the request failed")))
    }

    async fn write_admin(
        self: &Arc<Self>,
        tenant: TenantId,
        mut intent: WriteIntent,
    ) -> Response<Full<Bytes>> {
        let mut shown = None;
        if let Command::CreateToken { secret, .. } = &mut intent.command {
            let token = match TokenSecret::generate() {
                Ok(token) => token,
                Err(error) => {
                    tracing::error!(%error, "cannot make a token");
                    return problem(&Problem::new(
                        ProblemKind::Internal,
                        "no token could be made",
                    ));
                }
            };
            *secret = Some((crate::auth::digest(&token), token.shown_prefix()));
            shown = Some(token);
        }
        let response = self.write_command(tenant, intent, shown).await;
        match self.off_worker(|app| app.load_tokens()).await {
            Some(Ok(())) => {}
            Some(Err(error)) => tracing::error!(%error, "cannot reload the token table"),
            None => tracing::error!("the token table's reload panicked"),
        }
        response
    }

    /// API.md's idempotency table, in order: in flight? finished? then the writer. `shown`: a
    /// new token's secret, added to the first answer only.
    async fn write_command(
        self: &Arc<Self>,
        tenant: TenantId,
        intent: WriteIntent,
        shown: Option<TokenSecret>,
    ) -> Response<Full<Bytes>> {
        let Some(claim) = self.inflight.claim(tenant, &intent.key) else {
            self.metrics.count_key(KeyOutcome::InFlight);
            return problem(&Problem::new(
                ProblemKind::IdempotencyKeyInFlight,
                "a request with this key has not finished; retry after it does",
            ));
        };
        // A finished key is answered from a read snapshot, without a write transaction. The one
        // store read left on the async worker, on purpose: the key overlay answers most keys
        // from memory, and the rest is a point read of a table whose upper pages stay in redb's
        // cache. On the blocking pool it cost 15-25 % of the new-charge rate and half the replay
        // rate (BENCHMARKS.md, sitting 7), for a wait that is rarely there.
        match self.store.idempotency_record(tenant, &intent.key) {
            Ok(Some(record)) if record.fingerprint == intent.fingerprint => {
                return self.replay(StoredAnswer {
                    status: record.status,
                    body: Bytes::from(record.body),
                });
            }
            Ok(Some(_)) => return self.mismatch(),
            Ok(None) => {}
            Err(error) => return storage_failure(&error),
        }
        let (reply, answer) = oneshot::channel();
        let request = WriteRequest {
            tenant,
            key: intent.key,
            fingerprint: intent.fingerprint,
            command: intent.command,
            claim,
            reply,
        };
        match self.writer.try_submit(request) {
            Ok(()) => {}
            Err(SubmitError::Overloaded) => {
                self.metrics.count_overloaded();
                return problem(&Problem::new(
                    ProblemKind::Overloaded,
                    "the commit queue is full; retry shortly",
                ));
            }
            // Unavailable, or a refusal this build does not know: nothing was queued.
            Err(_) => return self.unavailable(),
        }
        match answer.await {
            Ok(WriteOutcome::Executed(mut answer)) => {
                self.metrics.count_key(KeyOutcome::New);
                if let Some(token) = shown.filter(|_| answer.status == 201) {
                    answer.body = Bytes::from(present::with_secret(&answer.body, token.expose()));
                }
                stored(answer, false)
            }
            Ok(WriteOutcome::Replayed(answer)) => self.replay(answer),
            Ok(WriteOutcome::FingerprintMismatch) => self.mismatch(),
            Ok(WriteOutcome::Unavailable) | Err(_) => self.unavailable(),
        }
    }

    fn replay(&self, answer: StoredAnswer) -> Response<Full<Bytes>> {
        self.metrics.count_key(KeyOutcome::Replayed);
        stored(answer, true)
    }

    fn mismatch(&self) -> Response<Full<Bytes>> {
        self.metrics.count_key(KeyOutcome::Mismatch);
        problem(&Problem::new(
            ProblemKind::IdempotencyKeyReused,
            "this key was used for a different request; use a new key for a new operation",
        ))
    }

    /// A commit failed, or the writer is poisoned. A commit whose last sync failed may still be
    /// durable, so the answer does not say "nothing was stored" (docs/CONTRACT-NOTES.md).
    fn unavailable(&self) -> Response<Full<Bytes>> {
        self.metrics.count_unavailable();
        problem(&Problem::new(
            ProblemKind::StorageUnavailable,
            "the outcome is unknown; retry with the same Idempotency-Key",
        ))
    }
}

/// A finished request's answer: status and body exactly as stored.
fn stored(answer: StoredAnswer, replayed: bool) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let content_type = if status.is_success() {
        JSON
    } else {
        PROBLEM_JSON
    };
    let mut response = body(status, content_type, answer.body);
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

pub(super) fn storage_failure(error: &onceledger_core::store::StoreError) -> Response<Full<Bytes>> {
    tracing::error!(%error, "store read failed");
    problem(&Problem::new(
        ProblemKind::StorageUnavailable,
        "the store could not be read; retry later",
    ))
}

pub(super) fn problem(problem: &Problem) -> Response<Full<Bytes>> {
    let status =
        StatusCode::from_u16(problem.kind.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = body(status, PROBLEM_JSON, Bytes::from(present::problem(problem)));
    let headers = response.headers_mut();
    if let Some(seconds) = problem.kind.retry_after_seconds() {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    if let Some(allow) = problem.allow {
        headers.insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    response
}

pub(super) fn json(status: StatusCode, bytes: Vec<u8>) -> Response<Full<Bytes>> {
    body(status, JSON, Bytes::from(bytes))
}

fn text(
    status: StatusCode,
    content_type: &'static str,
    content: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    body(status, content_type, content.into())
}

fn body(status: StatusCode, content_type: &'static str, bytes: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(bytes));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

pub(super) fn shorten(text: &str) -> String {
    text.chars().take(64).collect()
}

/// Server-made request ids: a random per-process prefix and a counter. Unique without a syscall
/// per request.
struct RequestIds {
    prefix: u64,
    counter: AtomicU64,
}

impl RequestIds {
    fn new() -> Self {
        RequestIds {
            prefix: uuid::Uuid::new_v4().as_u64_pair().0,
            counter: AtomicU64::new(0),
        }
    }

    fn next(&self) -> String {
        format!(
            "{:016x}{:08x}",
            self.prefix,
            self.counter.fetch_add(1, Ordering::Relaxed)
        )
    }
}

/// Measures the request for the latency histogram when dropped, whatever path it took.
pub(super) struct RequestTimer<'a> {
    pub metrics: &'a Metrics,
    pub started: Instant,
}

impl Drop for RequestTimer<'_> {
    fn drop(&mut self) {
        self.metrics.observe_request(self.started.elapsed());
    }
}
