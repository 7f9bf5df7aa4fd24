//! The proxy's two sides: a hyper server per client connection, a pooled hyper client to the
//! server, and the cut of a client connection (close or reset) that the faults need.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::{Fault, Shared};

/// Largest request body the proxy buffers (the server refuses over 64 KiB anyway).
const REQUEST_BYTES_MAX: usize = 1024 * 1024;
/// Largest answer body the proxy buffers (a full events page is well below).
const RESPONSE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// A forward that takes longer than this is answered 502.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);

/// Headers of one hop only (RFC 9110 §7.6.1), plus the length, which hyper sets from the
/// buffered body.
const HOP_HEADERS: [header::HeaderName; 7] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::CONTENT_LENGTH,
];

/// How a fault ends a client connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// Close (FIN) without sending the answer.
    Close,
    /// Reset (RST): SO_LINGER 0, then close.
    Reset,
}

pub(super) struct Upstream {
    addr: SocketAddr,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl Upstream {
    pub(super) fn new(addr: SocketAddr) -> Upstream {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(UPSTREAM_TIMEOUT));
        Upstream {
            addr,
            http: Client::builder(TokioExecutor::new()).build(connector),
        }
    }
}

/// Serves one client connection until the client closes it or a fault cuts it.
pub(super) async fn serve_connection(shared: Arc<Shared>, stream: TcpStream) {
    // A second descriptor of the same socket, kept here, so a fault can set SO_LINGER and decide
    // when the socket really closes while hyper owns the stream.
    let Some((stream, control)) = split_control(stream) else {
        return;
    };
    let _ = stream.set_nodelay(true);
    let (cut_tx, mut cut_rx) = mpsc::channel::<Cut>(1);
    let service = service_fn(move |request| {
        let shared = Arc::clone(&shared);
        let cut_tx = cut_tx.clone();
        async move { Ok::<_, Infallible>(handle(&shared, &cut_tx, request).await) }
    });
    {
        let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
        tokio::pin!(connection);
        tokio::select! {
            _ = &mut connection => {}
            Some(cut) = cut_rx.recv() => {
                if cut == Cut::Reset {
                    let _ = socket2::SockRef::from(&control).set_linger(Some(Duration::ZERO));
                }
            }
        }
        // Dropping the connection closes hyper's descriptor; the socket stays open until...
    }
    // ...`control`, the last descriptor, closes here: FIN, or RST after SO_LINGER 0.
    drop(control);
}

fn split_control(stream: TcpStream) -> Option<(TcpStream, std::net::TcpStream)> {
    let std_stream = stream.into_std().ok()?;
    let control = std_stream.try_clone().ok()?;
    let stream = TcpStream::from_std(std_stream).ok()?;
    Some((stream, control))
}

async fn handle(
    shared: &Arc<Shared>,
    cut_tx: &mpsc::Sender<Cut>,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, REQUEST_BYTES_MAX).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return plain(StatusCode::BAD_REQUEST, "proxy: unreadable request body"),
    };
    // The fault is chosen once the whole request is in: it is the request's fault, not the
    // connection's.
    let fault = shared.next_fault();
    if fault == Fault::Reset {
        return cut(cut_tx, Cut::Reset).await;
    }
    let delay = if fault == Fault::Delay {
        shared.config.delay
    } else {
        Duration::ZERO
    };
    // Spawned: once forwarded, the request reaches the server even if this client is gone.
    let in_flight = InFlight::start(shared);
    let forwarded = tokio::spawn(async move {
        let response = forward(Arc::clone(&in_flight.0), parts, body, delay).await;
        drop(in_flight);
        response
    });
    let response = match forwarded.await {
        Ok(Some(response)) => response,
        Ok(None) | Err(_) => {
            shared.upstream_errors.fetch_add(1, Ordering::Relaxed);
            plain(StatusCode::BAD_GATEWAY, "proxy: the server did not answer")
        }
    };
    if fault == Fault::LostResponse {
        return cut(cut_tx, Cut::Close).await;
    }
    response
}

/// Counts a forward in `forwards_in_flight` from creation to drop (also when its task is
/// aborted), and wakes `Proxy::settle` at the end.
struct InFlight(Arc<Shared>);

impl InFlight {
    fn start(shared: &Arc<Shared>) -> InFlight {
        shared.forwards_in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(Arc::clone(shared))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.forwards_in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.forwards_done.notify_waiters();
        }
    }
}

/// Asks the connection task to cut the connection, and never answers.
async fn cut(cut_tx: &mpsc::Sender<Cut>, how: Cut) -> Response<Full<Bytes>> {
    let _ = cut_tx.try_send(how);
    std::future::pending().await
}

/// Sends the request to the server after `delay`; `None` when no whole answer came back.
async fn forward(
    shared: Arc<Shared>,
    parts: http::request::Parts,
    body: Bytes,
    delay: Duration,
) -> Option<Response<Full<Bytes>>> {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let mut request = Request::builder()
        .method(parts.method)
        .uri(format!("http://{}{path}", shared.upstream.addr))
        .body(Full::new(body))
        .ok()?;
    *request.headers_mut() = end_to_end(parts.headers);
    let exchange = async {
        let response = shared.upstream.http.request(request).await.ok()?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, RESPONSE_BYTES_MAX)
            .collect()
            .await
            .ok()?
            .to_bytes();
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = parts.status;
        *response.headers_mut() = end_to_end(parts.headers);
        Some(response)
    };
    tokio::time::timeout(UPSTREAM_TIMEOUT, exchange)
        .await
        .ok()
        .flatten()
}

fn end_to_end(mut headers: HeaderMap) -> HeaderMap {
    for name in &HOP_HEADERS {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response
}
