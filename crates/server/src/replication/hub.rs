//! The sink that delivers to another onceledger (a hub) over HTTP/1.1.

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
use onceledger_client::tls::Connector;
use onceledger_client::token::TokenSecret;
use onceledger_core::store::Event;

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
    fn header(&self) -> Result<Option<HeaderValue>, SinkError> {
        // Read before each delivery, so a token rotated on disk is picked up without a restart.
        TokenSecret::for_client(self.token.as_deref(), self.token_file.as_deref(), None)
            .and_then(|token| token.map(|t| t.header_value()).transpose())
            .map_err(|e| SinkError(format!("upstream token: {e}")))
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
    pub fn new(base: &str, auth: &HubAuth) -> Result<Self, String> {
        let uri: Uri = base
            .parse()
            .map_err(|e| format!("--upstream {base:?} is not a URL: {e}"))?;
        let scheme = match uri.scheme_str() {
            Some(scheme @ ("http" | "https")) => scheme.to_owned(),
            _ => {
                return Err(format!(
                    "--upstream {base:?}: give an http:// or https:// URL"
                ));
            }
        };
        let tls = if scheme == "https" {
            Some(onceledger_client::tls::client_connector(
                auth.ca_file.as_deref(),
            )?)
        } else {
            None
        };
        let authority = uri
            .authority()
            .ok_or_else(|| format!("--upstream {base:?} has no host"))?;
        if uri.path_and_query().is_some_and(|pq| pq.as_str() != "/") {
            return Err(format!(
                "--upstream {base:?}: give the hub's root, without a path"
            ));
        }
        let endpoint = Uri::builder()
            .scheme(scheme.as_str())
            .authority(authority.as_str())
            .path_and_query(REPLICATION_EVENTS_PATH)
            .build()
            .map_err(|e| format!("--upstream {base:?}: {e}"))?;
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
            .map_err(|e| SinkError(format!("cannot build the request: {e}")))?;
        if let Some(value) = self.auth.header()? {
            request.headers_mut().insert(header::AUTHORIZATION, value);
        }
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| SinkError(format!("hub unreachable: {e}")))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), ACK_BYTES_MAX)
            .collect()
            .await
            .map_err(|e| SinkError(format!("hub answer unreadable: {e}")))?
            .to_bytes();
        if status != StatusCode::OK {
            let text: String = String::from_utf8_lossy(&body).chars().take(300).collect();
            return Err(SinkError(format!("hub answered {status}: {text}")));
        }
        let ack = decode_ack(&body).map_err(|e| SinkError(e.0))?;
        Ok(Delivered {
            through: ack.applied_through,
            duplicates: ack.duplicates,
            refused: ack.refused,
        })
    }
}
