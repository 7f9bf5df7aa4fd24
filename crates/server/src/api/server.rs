//! Sockets: the accept loop, per-connection limits and timeouts, body reading, graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::handler::{App, RequestTimer, problem};
use super::parse::parse_request;
use crate::auth::{Access, Principal, Refusal, Role, access};
use onceledger_core::ledger::TenantId;
use onceledger_core::limits::{
    BODY_BYTES_MAX, BODY_READ_TIMEOUT, CONNECTIONS_MAX, HEADER_BYTES_MAX, HEADER_READ_TIMEOUT,
    HEADERS_COUNT_MAX, OVERSIZE_BODY_DRAIN_BYTES_MAX, REQUEST_ID_BYTES_MAX, SHUTDOWN_GRACE,
};
use onceledger_core::render::problem::{Problem, ProblemKind};

/// After a failed accept (for example out of file descriptors), wait this long before the next.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Socket-level settings of a server: limits, timeouts, TLS, and whether `/metrics` needs a token.
#[derive(Clone)]
pub struct ServerSettings {
    /// A client must deliver a request's header block within this; hyper also runs it while a
    /// kept-alive connection waits for its next request, so it is the idle timeout too. The TLS
    /// handshake gets the same time.
    pub header_read_timeout: Duration,
    /// Connections served at once; the accept loop waits for a free slot beyond this.
    pub connections_max: usize,
    /// `/metrics` answers only to an admin token (`--metrics-auth`).
    pub metrics_auth: bool,
    /// Serve HTTPS with this certificate (`--tls-cert`, `--tls-key`).
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            header_read_timeout: HEADER_READ_TIMEOUT,
            connections_max: CONNECTIONS_MAX,
            metrics_auth: false,
            tls: None,
        }
    }
}

/// Serves until `shutdown` completes, then stops accepting and gives open connections
/// `SHUTDOWN_GRACE` to finish their requests. Returns when every connection has ended or the
/// grace ran out.
pub async fn serve(listener: TcpListener, app: Arc<App>, shutdown: impl Future<Output = ()>) {
    let connections = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(app.server.connections_max));
    tokio::pin!(shutdown);
    loop {
        // Waiting for a slot before accepting leaves excess clients in the kernel's backlog.
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => slot,
            () = &mut shutdown => break,
        };
        let Ok(slot) = slot else { break };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        match app.server.tls.clone() {
            None => serve_connection(stream, Arc::clone(&app), &connections, slot),
            Some(acceptor) => {
                // The handshake runs in the connection's own task, bounded like a header block,
                // so a client that stalls it holds one slot for a bounded time and nothing else.
                let app = Arc::clone(&app);
                let timeout = app.server.header_read_timeout;
                let watcher = connections.watcher();
                tokio::spawn(async move {
                    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => serve_watched(tls, app, watcher, slot).await,
                        Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                });
            }
        }
    }
    drop(listener);
    tracing::info!("stopped accepting; finishing open requests");
    tokio::select! {
        () = connections.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(SHUTDOWN_GRACE) => tracing::warn!("shutdown grace ran out; cutting connections"),
    }
}

fn serve_connection(
    stream: tokio::net::TcpStream,
    app: Arc<App>,
    connections: &GracefulShutdown,
    slot: OwnedSemaphorePermit,
) {
    let watcher = connections.watcher();
    tokio::spawn(serve_watched(stream, app, watcher, slot));
}

/// Serves HTTP/1.1 on one connection (plain or TLS) until it ends; frees its slot after.
async fn serve_watched<S>(stream: S, app: Arc<App>, watcher: Watcher, slot: OwnedSemaphorePermit)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let timeout = app.server.header_read_timeout;
    let service = service_fn(move |request| {
        let app = Arc::clone(&app);
        async move { Ok::<_, Infallible>(handle(&app, request).await) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .max_buf_size(HEADER_BYTES_MAX)
        .max_headers(HEADERS_COUNT_MAX)
        .serve_connection(TokioIo::new(stream), service);
    if let Err(error) = watcher.watch(connection).await {
        tracing::debug!(%error, "connection ended with an error");
    }
    drop(slot);
}

/// Authenticates a request for a protected path (every `/v1` path, and `/metrics` with
/// `--metrics-auth`) and applies the role matrix, before its body is read. Open paths get the
/// operator principal, which none of them uses for anything.
fn authorize(
    app: &App,
    parts: &http::request::Parts,
) -> Result<Principal, Box<Response<Full<Bytes>>>> {
    let path = parts.uri.path();
    let protected = path == "/v1"
        || path.starts_with("/v1/")
        || (path == "/metrics" && app.server.metrics_auth);
    if !protected {
        return Ok(Principal {
            token_id: 0,
            tenant: TenantId::DEFAULT,
            role: Role::Admin,
        });
    }
    let presented = parts.headers.get(header::AUTHORIZATION);
    match app.auth.authenticate(presented.map(HeaderValue::as_bytes)) {
        Ok(principal) => match access(principal.role, path) {
            Access::Allowed => Ok(principal),
            Access::Forbidden => {
                app.metrics.count_auth_refusal("forbidden");
                Err(Box::new(problem(&Problem::new(
                    ProblemKind::Forbidden,
                    format!("a {} token may not use {path}", principal.role.as_str()),
                ))))
            }
        },
        Err(Refusal::Unauthenticated) => {
            app.metrics.count_auth_refusal("unauthorized");
            let (detail, challenge) = if presented.is_some() {
                (
                    "the bearer token is not valid (unknown, revoked or malformed)",
                    r#"Bearer realm="onceledger", error="invalid_token""#,
                )
            } else {
                (
                    "send Authorization: Bearer TOKEN",
                    r#"Bearer realm="onceledger""#,
                )
            };
            let mut response = problem(&Problem::new(ProblemKind::Unauthorized, detail));
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
            Err(Box::new(response))
        }
        Err(Refusal::RateLimited { retry_after_s }) => {
            app.metrics.count_auth_refusal("rate_limited");
            let mut response = problem(&Problem::new(
                ProblemKind::RateLimited,
                format!("this token's request rate is limited; retry after {retry_after_s} s"),
            ));
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
            Err(Box::new(response))
        }
    }
}

/// Reads and drops the body of a request refused before its body was wanted. A small body is
/// read so the answer is not destroyed by a reset; `false` means the connection must close.
async fn discard_body(headers: &http::HeaderMap, mut body: Incoming) -> bool {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared == Some(0)
        || (declared.is_none() && !headers.contains_key(header::TRANSFER_ENCODING))
    {
        return true;
    }
    if declared.is_some_and(|length| length > BODY_BYTES_MAX as u64) {
        return false;
    }
    let drain = async {
        let mut read = 0usize;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return false };
            read += frame.data_ref().map_or(0, Bytes::len);
            if read > BODY_BYTES_MAX {
                return false;
            }
        }
        true
    };
    tokio::time::timeout(BODY_READ_TIMEOUT, drain)
        .await
        .unwrap_or(false)
}

async fn handle(app: &Arc<App>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let _timer = RequestTimer {
        metrics: &app.metrics,
        started: Instant::now(),
    };
    let request_id = request
        .headers()
        .get("x-request-id")
        .filter(|v| is_usable_request_id(v.as_bytes()))
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_str(&app.next_request_id()).unwrap_or(HeaderValue::from_static("-"))
        });
    let (parts, body) = request.into_parts();
    let principal = match authorize(app, &parts) {
        Ok(principal) => principal,
        Err(response) => {
            let mut response = *response;
            if !discard_body(&parts.headers, body).await {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            response.headers_mut().insert("x-request-id", request_id);
            return response;
        }
    };
    let body_limit = super::parse::body_bytes_max(parts.uri.path());
    let mut response = match read_body(&parts.headers, body, body_limit).await {
        Ok(bytes) => {
            let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
            match parse_request(&parts.method, target, &parts.headers, &bytes) {
                Ok(parsed) => app.run_as(principal, parsed).await,
                Err(refused) => {
                    count_refused_key(app, &refused);
                    problem(&refused)
                }
            }
        }
        Err(BodyRefused {
            problem: refused,
            body_consumed,
        }) => {
            let mut response = problem(&refused);
            if !body_consumed {
                // The rest of the body may still be on the wire: close rather than read it.
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            response
        }
    };
    response.headers_mut().insert("x-request-id", request_id);
    response
}

fn count_refused_key(app: &App, refused: &Problem) {
    use crate::metrics::KeyOutcome;
    match refused.kind {
        ProblemKind::IdempotencyKeyMissing => app.metrics.count_key(KeyOutcome::Missing),
        ProblemKind::IdempotencyKeyInvalid
        | ProblemKind::InvalidRequest
        | ProblemKind::UnsupportedMediaType => app.metrics.count_key(KeyOutcome::Invalid),
        _ => {}
    }
}

/// Reads the whole body, refusing more than `limit` bytes (`BODY_BYTES_MAX` but for replication)
/// or a body slower than `BODY_READ_TIMEOUT`.
async fn read_body(
    headers: &http::HeaderMap,
    mut body: Incoming,
    limit: usize,
) -> Result<Bytes, BodyRefused> {
    let too_large = || {
        Problem::new(
            ProblemKind::BodyTooLarge,
            format!("the body limit is {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if let Some(length) = declared.filter(|length| *length > limit as u64) {
        // A modest excess is read and dropped before answering: closing a socket with unread
        // bytes makes the kernel send a reset, which can destroy the 413 before the client
        // reads it. A large excess is not worth reading; that connection is closed.
        let mut body_consumed = false;
        if length <= OVERSIZE_BODY_DRAIN_BYTES_MAX {
            let drain = async {
                while let Some(frame) = body.frame().await {
                    if frame.is_err() {
                        return false;
                    }
                }
                true
            };
            body_consumed = tokio::time::timeout(BODY_READ_TIMEOUT, drain)
                .await
                .unwrap_or(false);
        }
        return Err(BodyRefused {
            problem: too_large(),
            body_consumed,
        });
    }
    let refused = |problem| {
        Err(BodyRefused {
            problem,
            body_consumed: false,
        })
    };
    let collected =
        tokio::time::timeout(BODY_READ_TIMEOUT, Limited::new(body, limit).collect()).await;
    match collected {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if error.downcast_ref::<LengthLimitError>().is_some() => {
            refused(too_large())
        }
        Ok(Err(_)) => refused(Problem::new(
            ProblemKind::InvalidRequest,
            "the request body could not be read",
        )),
        Err(_) => refused(Problem::new(
            ProblemKind::RequestTimeout,
            format!(
                "the body did not arrive within {} s",
                BODY_READ_TIMEOUT.as_secs()
            ),
        )),
    }
}

/// A request refused while its body was read; `body_consumed` says the connection can be reused.
struct BodyRefused {
    problem: Problem,
    body_consumed: bool,
}

fn is_usable_request_id(value: &[u8]) -> bool {
    !value.is_empty()
        && value.len() <= REQUEST_ID_BYTES_MAX
        && value.iter().all(|b| (0x21..=0x7E).contains(b))
}
