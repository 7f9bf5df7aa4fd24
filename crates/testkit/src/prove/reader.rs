//! Plain GETs of the node's and the hub's state, not through the proxy.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use super::ProveError;
use super::totals::Totals;
use crate::bench::prom::Scrape;
use onceledger_server::auth::TokenSecret;

/// One GET of a node's state (metrics, events, an account) may take this long.
const GET_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest GET answer read (`/metrics` is a few KiB).
const GET_BYTES_MAX: usize = 4 * 1024 * 1024;

pub(super) struct Reader {
    http: HyperClient<HttpConnector, Full<Bytes>>,
}

impl Reader {
    pub(super) fn new() -> Reader {
        Reader {
            http: HyperClient::builder(TokioExecutor::new()).build_http(),
        }
    }

    async fn get(&self, url: &str, token: Option<&TokenSecret>) -> Result<Bytes, ProveError> {
        let uri: Uri = url.parse().map_err(|source| ProveError::Url {
            url: url.to_owned(),
            source,
        })?;
        let failed = |source: Box<dyn std::error::Error + Send + Sync>| ProveError::Get {
            url: url.to_owned(),
            source,
        };
        let mut request = Request::get(uri);
        if let Some(token) = token {
            let value = token.header_value().map_err(ProveError::Header)?;
            request = request.header(http::header::AUTHORIZATION, value);
        }
        let request = request
            .body(Full::new(Bytes::new()))
            .map_err(|e| failed(e.into()))?;
        let fetch = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| failed(e.into()))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), GET_BYTES_MAX)
                .collect()
                .await
                .map_err(failed)?
                .to_bytes();
            if !status.is_success() {
                return Err(ProveError::Status {
                    url: url.to_owned(),
                    status,
                    body: String::from_utf8_lossy(&body).into_owned(),
                });
            }
            Ok(body)
        };
        tokio::time::timeout(GET_TIMEOUT, fetch)
            .await
            .map_err(|_| ProveError::GetTimeout {
                url: url.to_owned(),
                after: GET_TIMEOUT,
            })?
    }

    pub(super) async fn json(&self, url: &str, token: &TokenSecret) -> Result<Value, ProveError> {
        let body = self.get(url, Some(token)).await?;
        serde_json::from_slice(&body).map_err(|source| ProveError::NotJson {
            url: url.to_owned(),
            source,
        })
    }

    pub(super) async fn metrics(&self, base: &str) -> Result<Scrape, ProveError> {
        let body = self.get(&format!("{base}/metrics"), None).await?;
        Ok(Scrape::parse(&String::from_utf8_lossy(&body)))
    }

    /// The four totals of the account at `url` (a node's account or a hub's mirror of one).
    pub(super) async fn totals(
        &self,
        url: &str,
        token: &TokenSecret,
    ) -> Result<Totals, ProveError> {
        let account = self.json(url, token).await?;
        Totals::of_account(&account).ok_or_else(|| ProveError::NoTotals {
            url: url.to_owned(),
            account,
        })
    }
}
