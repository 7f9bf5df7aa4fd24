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
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::handler::{App, RequestTimer, problem};
use super::parse::parse_request;
use super::problem::{Problem, ProblemKind};
use crate::limits::{
    BODY_READ_TIMEOUT, CONNECTIONS_MAX, HEADER_BYTES_MAX, HEADER_READ_TIMEOUT, HEADERS_COUNT_MAX,
    OVERSIZE_BODY_DRAIN_BYTES_MAX, REQUEST_ID_BYTES_MAX, SHUTDOWN_GRACE,
};

/// After a failed accept (for example out of file descriptors), wait this long before the next.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Serves until `shutdown` completes, then stops accepting and gives open connections
/// `SHUTDOWN_GRACE` to finish their requests. Returns when every connection has ended or the
/// grace ran out.
pub async fn serve(listener: TcpListener, app: Arc<App>, shutdown: impl Future<Output = ()>) {
    let connections = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(CONNECTIONS_MAX));
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
        let app = Arc::clone(&app);
        let service = service_fn(move |request| {
            let app = Arc::clone(&app);
            async move { Ok::<_, Infallible>(handle(&app, request).await) }
        });
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .max_buf_size(HEADER_BYTES_MAX)
            .max_headers(HEADERS_COUNT_MAX)
            .serve_connection(TokioIo::new(stream), service);
        let connection = connections.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    tracing::info!("stopped accepting; finishing open requests");
    tokio::select! {
        () = connections.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(SHUTDOWN_GRACE) => tracing::warn!("shutdown grace ran out; cutting connections"),
    }
}

async fn handle(app: &App, request: Request<Incoming>) -> Response<Full<Bytes>> {
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
    let body_limit = super::parse::body_bytes_max(parts.uri.path());
    let mut response = match read_body(&parts.headers, body, body_limit).await {
        Ok(bytes) => {
            let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
            match parse_request(&parts.method, target, &parts.headers, &bytes) {
                Ok(parsed) => app.run(parsed).await,
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
