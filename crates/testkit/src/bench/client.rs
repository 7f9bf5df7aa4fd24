//! One HTTP/1.1 keep-alive connection of the load generator, on hyper's low-level client.
//!
//! hyper's `client::conn` rather than a pooled client: each worker owns exactly one TCP
//! connection, so `--connections N` is exactly the number of sockets the server sees (plus the
//! partner connections of duplicates), and a request's latency never includes pool checkout.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// Largest response body read; the server's answers are small, /metrics a few KiB. A bound so a
/// wrong URL (some other server) cannot make the load generator buffer without limit.
const RESPONSE_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Where the server is: the socket address to connect to and the `Host` header to send.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub authority: String,
    /// The host name a TLS certificate must carry (the URL's host).
    pub host: String,
    /// Set for an `https://` URL.
    pub tls: Option<onceledger_client::tls::TlsConnector>,
    /// `Bearer TOKEN`, marked sensitive; sent with every request.
    pub authorization: Option<http::HeaderValue>,
}

impl Target {
    /// Adds the token and, for an `https://` URL, TLS with `ca_file` (default: system roots).
    pub fn secured(
        mut self,
        url: &str,
        token: Option<onceledger_client::token::TokenSecret>,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Target, String> {
        let (scheme, _) = onceledger_client::parse_base(url).map_err(|e| format!("--url {e}"))?;
        if scheme == "https" {
            self.tls =
                Some(onceledger_client::tls::client_connector(ca_file).map_err(|e| e.to_string())?);
        }
        self.authorization = token
            .map(|t| t.header_value())
            .transpose()
            .map_err(|e| e.to_string())?;
        Ok(self)
    }

    /// Parses `http://host:port` (a path of `/` or none) and resolves the host once, up front, so
    /// DNS is never part of a measured request. Of several addresses (`localhost` may give `::1`
    /// and `127.0.0.1`) the first that accepts a connection is used.
    pub async fn resolve(url: &str, timeout: Duration) -> Result<Target, String> {
        let authority = onceledger_client::parse_base_url(url).map_err(|e| format!("--url {e}"))?;
        let port = authority.port_u16().unwrap_or(80);
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .collect();
        let mut last_error = format!("{host} resolves to no address");
        for addr in addrs {
            match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
                Ok(Ok(_probe)) => {
                    return Ok(Target {
                        addr,
                        authority: authority.as_str().to_owned(),
                        host: host.to_owned(),
                        tls: None,
                        authorization: None,
                    });
                }
                Ok(Err(e)) => last_error = format!("cannot connect to {addr}: {e}"),
                Err(_) => last_error = format!("connecting to {addr} timed out"),
            }
        }
        Err(format!("no server at {url}: {last_error}"))
    }
}

/// A response, reduced to what the load generator looks at.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// `Idempotent-Replayed: true` was present.
    pub replayed: bool,
    pub body: Bytes,
}

pub struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
    /// Drives the socket; aborted when the connection is dropped.
    driver: JoinHandle<()>,
}

impl Conn {
    pub async fn open(target: &Target, timeout: Duration) -> Result<Conn, String> {
        let addr = target.addr;
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| format!("connecting to {addr} timed out"))?
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        // Requests are one small write each; Nagle would hold them back waiting for ACKs.
        let _ = stream.set_nodelay(true);
        let Some(tls) = &target.tls else {
            return Conn::handshake(stream, addr, timeout).await;
        };
        let stream = tokio::time::timeout(
            timeout,
            onceledger_client::tls::connect(tls, &target.host, stream),
        )
        .await
        .map_err(|_| format!("TLS handshake with {addr} timed out"))?
        .map_err(|e| format!("TLS handshake with {addr} failed: {e}"))?;
        Conn::handshake(stream, addr, timeout).await
    }

    async fn handshake<S>(stream: S, addr: SocketAddr, timeout: Duration) -> Result<Conn, String>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, connection) =
            tokio::time::timeout(timeout, http1::handshake(TokioIo::new(stream)))
                .await
                .map_err(|_| format!("HTTP handshake with {addr} timed out"))?
                .map_err(|e| format!("HTTP handshake with {addr} failed: {e}"))?;
        let driver = tokio::spawn(async move {
            // Errors surface on the next send as well; nothing to do with them here.
            let _ = connection.await;
        });
        Ok(Conn { sender, driver })
    }

    /// False once the server closed the connection (for example after `Connection: close`);
    /// the caller then opens a new one instead of failing a request on a dead socket.
    pub fn is_usable(&self) -> bool {
        !self.sender.is_closed() && !self.driver.is_finished()
    }

    /// One exchange, bounded by `timeout` from the first byte sent to the last byte read.
    pub async fn send(
        &mut self,
        request: Request<Full<Bytes>>,
        timeout: Duration,
    ) -> Result<Reply, String> {
        let exchange = async {
            self.sender
                .ready()
                .await
                .map_err(|e| format!("connection unusable: {e}"))?;
            let response = self
                .sender
                .send_request(request)
                .await
                .map_err(|e| format!("request failed: {e}"))?;
            let status = response.status().as_u16();
            let replayed = response
                .headers()
                .get("idempotent-replayed")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
            let body = Limited::new(response.into_body(), RESPONSE_BYTES_MAX)
                .collect()
                .await
                .map_err(|e| format!("reading the response body failed: {e}"))?
                .to_bytes();
            Ok(Reply {
                status,
                replayed,
                body,
            })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| format!("no complete answer within {} s", timeout.as_secs_f64()))?
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// `POST path` with a JSON body and an `Idempotency-Key`.
pub fn post(
    target: &Target,
    path: &str,
    key: &str,
    body: Bytes,
) -> Result<Request<Full<Bytes>>, String> {
    let request = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::HOST, target.authority.as_str())
        .header(header::CONTENT_TYPE, "application/json")
        .header("idempotency-key", key)
        .body(Full::new(body))
        .map_err(|e| format!("cannot build POST {path}: {e}"))?;
    Ok(authorized(target, request))
}

fn authorized(target: &Target, mut request: Request<Full<Bytes>>) -> Request<Full<Bytes>> {
    if let Some(value) = &target.authorization {
        request
            .headers_mut()
            .insert(header::AUTHORIZATION, value.clone());
    }
    request
}

pub fn get(target: &Target, path: &str) -> Result<Request<Full<Bytes>>, String> {
    let request = Request::builder()
        .method(Method::GET)
        .uri(path)
        .header(header::HOST, target.authority.as_str())
        .body(Full::new(Bytes::new()))
        .map_err(|e| format!("cannot build GET {path}: {e}"))?;
    Ok(authorized(target, request))
}
