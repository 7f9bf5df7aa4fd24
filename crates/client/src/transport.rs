//! One attempt on the wire: a pooled hyper HTTP/1.1 client, the attempt timeout, and the reduction
//! of a response or a transport failure to what the retry loop looks at.

use std::fmt;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use std::path::Path;

use http::{HeaderValue, Method, Request, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;

use crate::tls::{Connector, TlsError};
use crate::token::{TokenError, TokenSecret};
use hyper_util::rt::TokioExecutor;

use super::backoff::parse_retry_after;
use super::classify::RetryCause;

/// Largest answer body read: the server's answers are a few hundred bytes, a list page of 100
/// items some tens of kilobytes. A bound so a wrong URL cannot make the client buffer without
/// limit.
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
    ) -> Result<Transport, SetupError> {
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
    ) -> Result<Request<Full<Bytes>>, RequestError> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(format!("{}{path}", self.base))
            .header(header::CONTENT_TYPE, "application/json")
            .header("idempotency-key", key)
            .header("x-request-id", request_id)
            .body(Full::new(body))
            .map_err(|source| RequestError::Build {
                method: "POST",
                path: path.to_owned(),
                source,
            })?;
        self.authorize(&mut request);
        Ok(request)
    }

    /// A GET of `path_and_query` (already percent-encoded), with no body and no idempotency key.
    pub fn get_request(
        &self,
        path_and_query: &str,
        request_id: &str,
    ) -> Result<Request<Full<Bytes>>, RequestError> {
        let mut request = Request::builder()
            .method(Method::GET)
            .uri(format!("{}{path_and_query}", self.base))
            .header(header::ACCEPT, "application/json")
            .header("x-request-id", request_id)
            .body(Full::new(Bytes::new()))
            .map_err(|source| RequestError::Build {
                method: "GET",
                path: path_and_query.to_owned(),
                source,
            })?;
        self.authorize(&mut request);
        Ok(request)
    }

    fn authorize(&self, request: &mut Request<Full<Bytes>>) {
        if let Some(value) = &self.authorization {
            request
                .headers_mut()
                .insert(header::AUTHORIZATION, value.clone());
        }
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
pub fn parse_base_url(url: &str) -> Result<http::uri::Authority, UrlError> {
    parse_base(url).map(|(_, authority)| authority)
}

/// The scheme (`http` or `https`) and authority of a server's base URL.
pub fn parse_base(url: &str) -> Result<(&'static str, http::uri::Authority), UrlError> {
    let uri: http::Uri = url.parse().map_err(|source| UrlError::NotAUrl {
        url: url.to_owned(),
        source,
    })?;
    let scheme = match uri.scheme_str() {
        Some("http") => "http",
        Some("https") => "https",
        _ => {
            return Err(UrlError::Scheme {
                url: url.to_owned(),
            });
        }
    };
    let authority = parse_authority(url, &uri)?;
    Ok((scheme, authority))
}

fn parse_authority(url: &str, uri: &http::Uri) -> Result<http::uri::Authority, UrlError> {
    if uri.path_and_query().is_some_and(|pq| pq.as_str() != "/") {
        return Err(UrlError::Path {
            url: url.to_owned(),
        });
    }
    uri.authority().cloned().ok_or_else(|| UrlError::NoHost {
        url: url.to_owned(),
    })
}

/// Why a server's base URL is unusable. Messages quote the URL as given.
#[derive(Debug)]
#[non_exhaustive]
pub enum UrlError {
    /// Not a URI at all.
    NotAUrl {
        url: String,
        source: http::uri::InvalidUri,
    },
    /// A scheme other than `http` or `https`, or none.
    Scheme { url: String },
    /// A path other than `/`, or a query: the client adds the API's paths itself.
    Path { url: String },
    /// No host to connect to.
    NoHost { url: String },
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlError::NotAUrl { url, source } => write!(f, "{url:?} is not a URL: {source}"),
            UrlError::Scheme { url } => write!(f, "{url:?}: give an http:// or https:// URL"),
            UrlError::Path { url } => {
                write!(f, "{url:?}: give the server's root, without a path")
            }
            UrlError::NoHost { url } => write!(f, "{url:?} has no host"),
        }
    }
}

impl std::error::Error for UrlError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UrlError::NotAUrl { source, .. } => Some(source),
            UrlError::Scheme { .. } | UrlError::Path { .. } | UrlError::NoHost { .. } => None,
        }
    }
}

/// Why a client cannot be set up: its base URL, its CA file or its token is unusable. Each
/// variant shows the wrapped error's message as it is.
#[derive(Debug)]
#[non_exhaustive]
pub enum SetupError {
    Url(UrlError),
    Tls(TlsError),
    Token(TokenError),
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetupError::Url(error) => error.fmt(f),
            SetupError::Tls(error) => error.fmt(f),
            SetupError::Token(error) => error.fmt(f),
        }
    }
}

/// Transparent: the wrapped error's own source, since its message is already this one's.
impl std::error::Error for SetupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SetupError::Url(error) => std::error::Error::source(error),
            SetupError::Tls(error) => std::error::Error::source(error),
            SetupError::Token(error) => std::error::Error::source(error),
        }
    }
}

impl From<UrlError> for SetupError {
    fn from(error: UrlError) -> Self {
        SetupError::Url(error)
    }
}

impl From<TlsError> for SetupError {
    fn from(error: TlsError) -> Self {
        SetupError::Tls(error)
    }
}

impl From<TokenError> for SetupError {
    fn from(error: TokenError) -> Self {
        SetupError::Token(error)
    }
}

/// Why a request could not be built (for example a key with bytes a header cannot carry), or
/// its body not encoded.
#[derive(Debug)]
#[non_exhaustive]
pub enum RequestError {
    Build {
        method: &'static str,
        path: String,
        source: http::Error,
    },
    Encode(serde_json::Error),
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Build {
                method,
                path,
                source,
            } => write!(f, "cannot build {method} {path}: {source}"),
            RequestError::Encode(source) => write!(f, "cannot encode the body: {source}"),
        }
    }
}

impl std::error::Error for RequestError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RequestError::Build { source, .. } => Some(source),
            RequestError::Encode(source) => Some(source),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The command line prints these messages as they are: their text is the interface.
    #[test]
    fn url_errors_keep_their_wording() {
        let message = |url: &str| parse_base(url).expect_err("refused").to_string();
        assert_eq!(
            message("ftp://h:1"),
            r#""ftp://h:1": give an http:// or https:// URL"#
        );
        assert_eq!(
            message("http://h:1/v1"),
            r#""http://h:1/v1": give the server's root, without a path"#
        );
        assert!(message("http://h:1:2:3").starts_with(r#""http://h:1:2:3" is not a URL: "#));
        assert_eq!(
            parse_base_url("https://h:7070/")
                .expect("a base URL")
                .as_str(),
            "h:7070"
        );
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let error = crate::tls::client_connector(Some(Path::new("/nonexistent/ca.pem")))
            .err()
            .expect("no such file");
        assert!(
            matches!(error, TlsError::CaFileUnreadable { .. }),
            "{error:?}"
        );
        assert!(
            error
                .to_string()
                .starts_with("CA file /nonexistent/ca.pem: "),
            "{error}"
        );
        let error = SetupError::from(error);
        assert!(
            error
                .to_string()
                .starts_with("CA file /nonexistent/ca.pem: ")
        );
    }
}
