//! TLS for every client (the retrying client, the replicator's hub sink, the load generator):
//! rustls through tokio-rustls with the ring provider. They take `https://` URLs and an optional
//! CA file (default: the system's roots). With the server's `tls` module, the only code that
//! imports rustls.

use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
pub use tokio_rustls::TlsConnector;

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Why no client TLS configuration could be made. Each message is one sentence for the operator.
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsError {
    /// The CA file cannot be read, or is not PEM.
    CaFileUnreadable {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    /// A certificate of the CA file is not one rustls takes as a root.
    CaCertificateRejected {
        path: PathBuf,
        source: rustls::Error,
    },
    /// The CA file holds no certificate.
    NoCertificate { path: PathBuf },
    /// rustls refused the configuration (the provider's protocol versions).
    Config(rustls::Error),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::CaFileUnreadable { path, source } => {
                write!(f, "CA file {}: {source}", path.display())
            }
            TlsError::CaCertificateRejected { path, source } => {
                write!(f, "CA file {}: {source}", path.display())
            }
            TlsError::NoCertificate { path } => {
                write!(f, "CA file {}: no certificate in it", path.display())
            }
            TlsError::Config(source) => write!(f, "TLS: {source}"),
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TlsError::CaFileUnreadable { source, .. } => Some(source),
            TlsError::CaCertificateRejected { source, .. } | TlsError::Config(source) => {
                Some(source)
            }
            TlsError::NoCertificate { .. } => None,
        }
    }
}

/// The client side: trust the certificates of `ca_file` (PEM), or the system's roots without one.
pub fn client_connector(ca_file: Option<&Path>) -> Result<TlsConnector, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|source| TlsError::CaFileUnreadable {
                    path: path.to_owned(),
                    source,
                })?;
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|source| TlsError::CaCertificateRejected {
                        path: path.to_owned(),
                        source,
                    })?;
            }
            if roots.is_empty() {
                return Err(TlsError::NoCertificate {
                    path: path.to_owned(),
                });
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
        }
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Opens TLS on a connected socket, checking the certificate against `host`.
pub async fn connect(
    connector: &TlsConnector,
    host: &str,
    tcp: TcpStream,
) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{host}: {e}")))?;
    connector.connect(name, tcp).await
}

/// A connector for hyper's pooled client: plain TCP for `http://`, TLS for `https://`.
#[derive(Clone)]
pub struct Connector {
    http: HttpConnector,
    tls: Option<TlsConnector>,
}

impl Connector {
    /// `tls`: required for `https://` URLs (an `https` request without it fails to connect).
    pub fn new(mut http: HttpConnector, tls: Option<TlsConnector>) -> Connector {
        http.enforce_http(false);
        Connector { http, tls }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<http::Uri> for Connector {
    type Response = Stream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Stream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let https = uri.scheme_str() == Some("https");
        let host = uri.host().unwrap_or_default().to_owned();
        let tls = self.tls.clone();
        let connecting = self.http.call(uri);
        Box::pin(async move {
            let tcp = connecting.await?;
            if !https {
                return Ok(Stream::Plain(tcp));
            }
            let tls = tls.ok_or("an https URL needs TLS settings")?;
            let stream = connect(&tls, &host, tcp.into_inner()).await?;
            Ok(Stream::Tls(TokioIo::new(Box::new(stream))))
        })
    }
}

/// A client connection, plain or TLS.
pub enum Stream {
    Plain(TokioIo<TcpStream>),
    Tls(TokioIo<Box<tokio_rustls::client::TlsStream<TcpStream>>>),
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
