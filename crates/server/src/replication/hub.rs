//! The sink that delivers to another onceledger (a hub) over HTTP/1.1.

use std::fmt;
use std::path::PathBuf;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::wire::{decode_ack, encode_events};
use super::{Delivered, Sink, SinkError};
use crate::routes::REPLICATION_EVENTS_PATH;
use onceledger_client::tls::{Connector, TlsError};
use onceledger_client::token::{TokenError, TokenSecret};
use onceledger_core::store::Event;
use onceledger_core::wire::WireError;

/// A hub's answers are small acknowledgements; anything larger is not a hub.
const ACK_BYTES_MAX: usize = 64 * 1024;

/// How a node authenticates to its hub. `Debug` hides the token.
#[derive(Clone, Default)]
pub struct HubAuth {
    /// A replicator token of the hub (`--upstream-token`). Read from `token_file` when absent.
    pub token: Option<String>,
    /// A file holding the token on its first line (`--upstream-token-file`), read before each
    /// delivery, so a token rotated on disk is picked up without a restart.
    pub token_file: Option<PathBuf>,
    /// PEM CA certificates to trust for an `https://` hub (default: the system's roots).
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for HubAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubAuth")
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .field("token_file", &self.token_file)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl HubAuth {
    /// The `Authorization` value, or why there is none. Never logged.
    fn header(&self) -> Result<Option<HeaderValue>, TokenError> {
        // Read before each delivery, so a token rotated on disk is picked up without a restart.
        TokenSecret::for_client(self.token.as_deref(), self.token_file.as_deref(), None)
            .and_then(|token| token.map(|t| t.header_value()).transpose())
    }
}

#[derive(Clone)]
pub struct HubSink {
    client: Client<Connector, Full<Bytes>>,
    endpoint: Uri,
    name: String,
    auth: HubAuth,
}

impl HubSink {
    /// `base` is the hub's root URL, `http://host:port` or `https://host:port`.
    pub fn new(base: &str, auth: &HubAuth) -> Result<Self, HubSinkError> {
        let uri: Uri = base.parse().map_err(|source| HubSinkError::NotAUrl {
            base: base.to_owned(),
            source,
        })?;
        let scheme = match uri.scheme_str() {
            Some(scheme @ ("http" | "https")) => scheme.to_owned(),
            _ => {
                return Err(HubSinkError::Scheme {
                    base: base.to_owned(),
                });
            }
        };
        let tls = if scheme == "https" {
            Some(
                onceledger_client::tls::client_connector(auth.ca_file.as_deref())
                    .map_err(HubSinkError::Tls)?,
            )
        } else {
            None
        };
        let authority = uri.authority().ok_or_else(|| HubSinkError::NoHost {
            base: base.to_owned(),
        })?;
        if uri.path_and_query().is_some_and(|pq| pq.as_str() != "/") {
            return Err(HubSinkError::Path {
                base: base.to_owned(),
            });
        }
        let endpoint = Uri::builder()
            .scheme(scheme.as_str())
            .authority(authority.as_str())
            .path_and_query(REPLICATION_EVENTS_PATH)
            .build()
            .map_err(|source| HubSinkError::Endpoint {
                base: base.to_owned(),
                source,
            })?;
        Ok(HubSink {
            client: Client::builder(TokioExecutor::new())
                .build(Connector::new(HttpConnector::new(), tls)),
            endpoint,
            // The cursor's key: the plain-HTTP form is kept, so a hub moved to https keeps it.
            name: format!("hub:http://{authority}"),
            auth: auth.clone(),
        })
    }
}

/// Why no hub sink could be made from `--upstream` (and `--upstream-ca-file`). Each message is
/// one sentence for the operator.
#[derive(Debug)]
#[non_exhaustive]
pub enum HubSinkError {
    /// `--upstream` is not a URI.
    NotAUrl {
        base: String,
        source: http::uri::InvalidUri,
    },
    /// A scheme other than `http` or `https`, or none.
    Scheme { base: String },
    /// The CA file to trust for an `https` hub is unusable (shown as the TLS error says it).
    Tls(TlsError),
    /// No host to connect to.
    NoHost { base: String },
    /// A path other than `/`: the sink adds the replication path itself.
    Path { base: String },
    /// The replication endpoint's URI could not be built from the hub's authority.
    Endpoint { base: String, source: http::Error },
}

impl fmt::Display for HubSinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HubSinkError::NotAUrl { base, source } => {
                write!(f, "--upstream {base:?} is not a URL: {source}")
            }
            HubSinkError::Scheme { base } => {
                write!(f, "--upstream {base:?}: give an http:// or https:// URL")
            }
            HubSinkError::Tls(error) => error.fmt(f),
            HubSinkError::NoHost { base } => write!(f, "--upstream {base:?} has no host"),
            HubSinkError::Path { base } => {
                write!(
                    f,
                    "--upstream {base:?}: give the hub's root, without a path"
                )
            }
            HubSinkError::Endpoint { base, source } => write!(f, "--upstream {base:?}: {source}"),
        }
    }
}

impl std::error::Error for HubSinkError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HubSinkError::NotAUrl { source, .. } => Some(source),
            // Transparent: the message is the TLS error's, so the source is its own.
            HubSinkError::Tls(error) => std::error::Error::source(error),
            HubSinkError::Endpoint { source, .. } => Some(source),
            HubSinkError::Scheme { .. }
            | HubSinkError::NoHost { .. }
            | HubSinkError::Path { .. } => None,
        }
    }
}

/// Why a delivery to the hub got no acknowledgement. The replicator logs it and sends again.
#[derive(Debug)]
#[non_exhaustive]
pub enum HubDeliveryError {
    /// The upstream token could not be read (its file) or sent.
    Token(TokenError),
    /// The request could not be built.
    Request(http::Error),
    /// No answer: the hub cannot be reached or the connection failed.
    Unreachable(hyper_util::client::legacy::Error),
    /// The answer's body could not be read (or was longer than an acknowledgement can be).
    Unreadable(Box<dyn std::error::Error + Send + Sync>),
    /// The hub answered with a status other than 200; `text` is the start of its body.
    Refused { status: StatusCode, text: String },
    /// A 200 whose body is not an acknowledgement.
    Ack(WireError),
}

impl fmt::Display for HubDeliveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HubDeliveryError::Token(error) => write!(f, "upstream token: {error}"),
            HubDeliveryError::Request(source) => write!(f, "cannot build the request: {source}"),
            HubDeliveryError::Unreachable(source) => write!(f, "hub unreachable: {source}"),
            HubDeliveryError::Unreadable(source) => write!(f, "hub answer unreadable: {source}"),
            HubDeliveryError::Refused { status, text } => {
                write!(f, "hub answered {status}: {text}")
            }
            HubDeliveryError::Ack(error) => write!(f, "{error}"),
        }
    }
}

impl std::error::Error for HubDeliveryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HubDeliveryError::Token(error) => Some(error),
            HubDeliveryError::Request(source) => Some(source),
            HubDeliveryError::Unreachable(source) => Some(source),
            HubDeliveryError::Unreadable(source) => Some(source.as_ref()),
            HubDeliveryError::Ack(source) => Some(source),
            HubDeliveryError::Refused { .. } => None,
        }
    }
}

impl From<HubDeliveryError> for SinkError {
    fn from(error: HubDeliveryError) -> Self {
        SinkError::Failed(Box::new(error))
    }
}

impl Sink for HubSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "hub"
    }

    async fn deliver<'a>(
        &'a mut self,
        origin: &'a str,
        events: &'a [Event],
    ) -> Result<Delivered, SinkError> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(self.endpoint.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(encode_events(origin, events))))
            .map_err(HubDeliveryError::Request)?;
        if let Some(value) = self.auth.header().map_err(HubDeliveryError::Token)? {
            request.headers_mut().insert(header::AUTHORIZATION, value);
        }
        let response = self
            .client
            .request(request)
            .await
            .map_err(HubDeliveryError::Unreachable)?;
        let status = response.status();
        let body = Limited::new(response.into_body(), ACK_BYTES_MAX)
            .collect()
            .await
            .map_err(HubDeliveryError::Unreadable)?
            .to_bytes();
        if status != StatusCode::OK {
            let text: String = String::from_utf8_lossy(&body).chars().take(300).collect();
            return Err(HubDeliveryError::Refused { status, text }.into());
        }
        let ack = decode_ack(&body).map_err(HubDeliveryError::Ack)?;
        Ok(Delivered {
            through: ack.applied_through,
            duplicates: ack.duplicates,
            refused: ack.refused,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `serve` prints these messages as they are: their text is the interface.
    #[test]
    fn upstream_errors_keep_their_wording() {
        let message = |base: &str| {
            HubSink::new(base, &HubAuth::default())
                .err()
                .expect("refused")
                .to_string()
        };
        assert_eq!(
            message("ftp://hub:1"),
            r#"--upstream "ftp://hub:1": give an http:// or https:// URL"#
        );
        assert_eq!(
            message("http://hub:1/x"),
            r#"--upstream "http://hub:1/x": give the hub's root, without a path"#
        );
        assert!(message("http://a b").starts_with(r#"--upstream "http://a b" is not a URL: "#));
    }

    #[test]
    fn a_delivery_failure_shows_as_the_sink_said_it() {
        let error = SinkError::from(HubDeliveryError::Refused {
            status: StatusCode::SERVICE_UNAVAILABLE,
            text: "later".to_owned(),
        });
        assert_eq!(
            error.to_string(),
            "hub answered 503 Service Unavailable: later"
        );
        assert_eq!(SinkError::Timeout.to_string(), "no answer in time");
    }
}
