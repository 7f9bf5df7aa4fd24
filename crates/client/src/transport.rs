//! One attempt on the wire: a pooled hyper HTTP/1.1 client, the attempt timeout, and the reduction
//! of a response or a transport failure to what the retry loop looks at.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use std::path::Path;

use http::{HeaderValue, Method, Request, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;

use crate::tls::Connector;
use crate::token::TokenSecret;
use hyper_util::rt::TokioExecutor;

use super::backoff::parse_retry_after;
use super::classify::RetryCause;

/// Largest answer body read: the server's answers are a few hundred bytes. A bound so a wrong
/// URL cannot make the client buffer without limit.
const RESPONSE_BYTES_MAX: usize = 1024 * 1024;
/// Idle pooled connections are dropped after this, before the server's 10 s header read timeout
/// closes them under a request.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// An answer, reduced to what the client needs.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub replayed: bool,
    pub retry_after: Option<Duration>,
    pub body: Bytes,
}

/// No answer: why, and the underlying error as text.
#[derive(Debug, Clone)]
pub struct TransportError {
    pub cause: RetryCause,
    pub message: String,
}

#[derive(Clone)]
pub struct Transport {
    http: HyperClient<Connector, Full<Bytes>>,
    /// `http://host:port` or `https://host:port`, without a trailing slash.
    base: String,
    attempt_timeout: Duration,
    /// `Bearer TOKEN`, marked sensitive.
    authorization: Option<HeaderValue>,
}

impl Transport {
    /// `base_url` is `http://` or `https://host[:port]`; `token` goes with every request;
    /// `ca_file` is trusted for https (default: the system's roots).
    pub fn with_security(
        base_url: &str,
        attempt_timeout: Duration,
        token: Option<TokenSecret>,
        ca_file: Option<&Path>,
    ) -> Result<Transport, String> {
        let (scheme, authority) = parse_base(base_url)?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(attempt_timeout));
        connector.set_nodelay(true);
        let tls = if scheme == "https" {
            Some(crate::tls::client_connector(ca_file)?)
        } else {
            None
        };
        let http = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(Connector::new(connector, tls));
        let authorization = token.map(|t| t.header_value()).transpose()?;
        Ok(Transport {
            http,
            base: format!("{scheme}://{authority}"),
            attempt_timeout,
            authorization,
        })
    }

    pub fn post_request(
        &self,
        path: &str,
        key: &str,
        request_id: &str,
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, String> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(format!("{}{path}", self.base))
            .header(header::CONTENT_TYPE, "application/json")
            .header("idempotency-key", key)
            .header("x-request-id", request_id)
            .body(Full::new(body))
            .map_err(|e| format!("cannot build POST {path}: {e}"))?;
        if let Some(value) = &self.authorization {
            request
                .headers_mut()
                .insert(header::AUTHORIZATION, value.clone());
        }
        Ok(request)
    }

    /// One exchange, bounded by the attempt timeout from the connect to the last body byte.
    pub async fn send(&self, request: Request<Full<Bytes>>) -> Result<Reply, TransportError> {
        let exchange = async {
            let response = self.http.request(request).await.map_err(|e| {
                let cause = if e.is_connect() {
                    RetryCause::Connect
                } else {
                    RetryCause::ConnectionLost
                };
                TransportError {
                    cause,
                    message: error_chain(&e),
                }
            })?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, RESPONSE_BYTES_MAX)
                .collect()
                .await
                .map_err(|e| TransportError {
                    cause: RetryCause::ConnectionLost,
                    message: format!("reading the answer failed: {e}"),
                })?
                .to_bytes();
            let retry_after = parts
                .headers
                .get(header::RETRY_AFTER)
                .and_then(|v| parse_retry_after(v.as_bytes(), SystemTime::now()));
            Ok(Reply {
                status: parts.status.as_u16(),
                replayed: parts
                    .headers
                    .get("idempotent-replayed")
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true")),
                retry_after,
                body,
            })
        };
        tokio::time::timeout(self.attempt_timeout, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(TransportError {
                    cause: RetryCause::Timeout,
                    message: format!(
                        "no complete answer within {} s",
                        self.attempt_timeout.as_secs_f64()
                    ),
                })
            })
    }
}

/// The authority of a server's base URL: `http://host[:port]`, with a path of `/` or none.
pub fn parse_base_url(url: &str) -> Result<http::uri::Authority, String> {
    parse_base(url).map(|(_, authority)| authority)
}

/// The scheme (`http` or `https`) and authority of a server's base URL.
pub fn parse_base(url: &str) -> Result<(&'static str, http::uri::Authority), String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let scheme = match uri.scheme_str() {
        Some("http") => "http",
        Some("https") => "https",
        _ => return Err(format!("{url:?}: give an http:// or https:// URL")),
    };
    let authority = parse_authority(url, &uri)?;
    Ok((scheme, authority))
}

fn parse_authority(url: &str, uri: &http::Uri) -> Result<http::uri::Authority, String> {
    if uri.path_and_query().is_some_and(|pq| pq.as_str() != "/") {
        return Err(format!("{url:?}: give the server's root, without a path"));
    }
    uri.authority()
        .cloned()
        .ok_or_else(|| format!("{url:?} has no host"))
}

/// The error and its sources on one line (hyper's top-level messages alone say little).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}
