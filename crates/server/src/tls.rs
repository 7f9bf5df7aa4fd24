//! TLS for the server (`--tls-cert`, `--tls-key`): rustls through tokio-rustls with the ring
//! provider. The clients' side is `onceledger_client::tls`; these two are the only code that
//! imports rustls.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
pub use tokio_rustls::TlsAcceptor;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Why the server's TLS acceptor could not be made from `--tls-cert` and `--tls-key`. Each
/// message is one sentence for the operator and names the flag at fault.
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsError {
    /// The certificate file cannot be read, or is not PEM.
    CertFile { path: PathBuf, source: pem::Error },
    /// The certificate file holds no certificate.
    NoCertificate { path: PathBuf },
    /// The key file cannot be read, or holds no PEM private key.
    KeyFile { path: PathBuf, source: pem::Error },
    /// rustls refused the provider's protocol versions.
    Config(rustls::Error),
    /// rustls refused the chain and key together (for example a key of another certificate).
    CertKey(rustls::Error),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::CertFile { path, source } => {
                write!(f, "--tls-cert {}: {source}", path.display())
            }
            TlsError::NoCertificate { path } => {
                write!(f, "--tls-cert {}: no certificate in it", path.display())
            }
            TlsError::KeyFile { path, source } => {
                write!(f, "--tls-key {}: {source}", path.display())
            }
            TlsError::Config(source) => write!(f, "TLS: {source}"),
            TlsError::CertKey(source) => write!(f, "--tls-cert/--tls-key: {source}"),
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TlsError::CertFile { source, .. } | TlsError::KeyFile { source, .. } => Some(source),
            TlsError::Config(source) | TlsError::CertKey(source) => Some(source),
            TlsError::NoCertificate { .. } => None,
        }
    }
}

/// The server side: a PEM certificate chain and its PEM private key. HTTP/1.1 only (ALPN).
pub fn server_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::CertFile {
            path: cert.to_owned(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.to_owned(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::KeyFile {
        path: key.to_owned(),
        source,
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(TlsError::CertKey)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
