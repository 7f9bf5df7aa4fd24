//! The sink that delivers to another onceledger (a hub) over HTTP/1.1.

use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::wire::{decode_ack, encode_events};
use super::{Delivered, Sink, SinkError};
use crate::api::parse::REPLICATION_EVENTS_PATH;
use crate::store::Event;

/// A hub's answers are small acknowledgements; anything larger is not a hub.
const ACK_BYTES_MAX: usize = 64 * 1024;

pub struct HubSink {
    client: Client<HttpConnector, Full<Bytes>>,
    endpoint: Uri,
    name: String,
}

impl HubSink {
    /// `base` is the hub's root URL, `http://host:port`.
    pub fn new(base: &str) -> Result<Self, String> {
        let uri: Uri = base
            .parse()
            .map_err(|e| format!("--upstream {base:?} is not a URL: {e}"))?;
        if uri.scheme_str() != Some("http") {
            return Err(format!("--upstream {base:?}: only http:// is supported"));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("--upstream {base:?} has no host"))?;
        if uri.path_and_query().is_some_and(|pq| pq.as_str() != "/") {
            return Err(format!(
                "--upstream {base:?}: give the hub's root, without a path"
            ));
        }
        let endpoint = Uri::builder()
            .scheme("http")
            .authority(authority.as_str())
            .path_and_query(REPLICATION_EVENTS_PATH)
            .build()
            .map_err(|e| format!("--upstream {base:?}: {e}"))?;
        Ok(HubSink {
            client: Client::builder(TokioExecutor::new()).build_http(),
            endpoint,
            name: format!("hub:http://{authority}"),
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
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.endpoint.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(encode_events(origin, events))))
            .map_err(|e| SinkError(format!("cannot build the request: {e}")))?;
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
