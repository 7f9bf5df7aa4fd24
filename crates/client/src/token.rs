//! API tokens as a client holds them: `olt_` and 64 lower-case hex digits (256 bits from the
//! operating system's generator). The server keeps only the blake3 digest of the whole string.

use std::fmt;
use std::path::{Path, PathBuf};

/// The file in a data directory where `serve` writes the first admin token at first start, and
/// where the client commands look for a token when none is given.
pub const ADMIN_TOKEN_FILE_NAME: &str = "admin.token";

/// Every token starts with this, so a leaked one is recognisable (secret scanners, logs).
pub const TOKEN_SCHEME: &str = "olt_";
/// Random bytes per token: 256 bits.
const TOKEN_RANDOM_BYTES: usize = 32;
pub const TOKEN_CHARS: usize = TOKEN_SCHEME.len() + 2 * TOKEN_RANDOM_BYTES;
/// Characters of a token shown in listings (`olt_` and 8 hex digits: 32 of the 256 bits), so an
/// operator can tell tokens apart without the listing being a credential.
pub const TOKEN_PREFIX_SHOWN_CHARS: usize = TOKEN_SCHEME.len() + 8;

/// A token in clear text: one just made (to show once), or one a client presents. `Debug` does
/// not print it, so it cannot reach a log by accident.
#[derive(Clone)]
pub struct TokenSecret(String);

impl TokenSecret {
    /// A token given to a client (a flag, a file's first line), surrounding whitespace removed.
    pub fn presented(text: &str) -> TokenSecret {
        TokenSecret(text.trim().to_owned())
    }

    /// A client's token: `token` if given, else the first line of `file`, else the first line of
    /// `fallback_file` if that exists (the default data directory's `admin.token`).
    pub fn for_client(
        token: Option<&str>,
        file: Option<&Path>,
        fallback_file: Option<&Path>,
    ) -> Result<Option<TokenSecret>, TokenError> {
        if let Some(token) = token {
            return Ok(Some(TokenSecret::presented(token)));
        }
        let read = |path: &Path| {
            std::fs::read_to_string(path)
                .map(|text| TokenSecret::presented(text.lines().next().unwrap_or_default()))
                .map_err(|source| TokenError::FileUnreadable {
                    path: path.to_owned(),
                    source,
                })
        };
        match (file, fallback_file) {
            (Some(file), _) => read(file).map(Some),
            (None, Some(fallback)) if fallback.exists() => read(fallback).map(Some),
            _ => Ok(None),
        }
    }

    /// `Bearer TOKEN`, marked sensitive (hyper and http never print sensitive values).
    pub fn header_value(&self) -> Result<http::HeaderValue, TokenError> {
        let mut value = http::HeaderValue::from_str(&format!("Bearer {}", self.0))
            .map_err(TokenError::NotAHeaderValue)?;
        value.set_sensitive(true);
        Ok(value)
    }

    /// 256 random bits from the operating system (getrandom). Fails only when the OS has no
    /// entropy source at all.
    pub fn generate() -> Result<TokenSecret, TokenError> {
        let mut bytes = [0u8; TOKEN_RANDOM_BYTES];
        getrandom::getrandom(&mut bytes).map_err(TokenError::NoEntropy)?;
        let mut text = String::with_capacity(TOKEN_CHARS);
        text.push_str(TOKEN_SCHEME);
        for byte in bytes {
            text.push_str(&format!("{byte:02x}"));
        }
        Ok(TokenSecret(text))
    }

    /// The clear text, to show once (stdout, `admin.token`, a 201 body). Never to a log.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What listings show: `olt_` and the first 8 hex digits.
    pub fn shown_prefix(&self) -> String {
        self.0.chars().take(TOKEN_PREFIX_SHOWN_CHARS).collect()
    }
}

/// Why no token could be read, made or sent. Messages never hold the token itself.
#[derive(Debug)]
#[non_exhaustive]
pub enum TokenError {
    /// The token file (`--token-file`, a data directory's `admin.token`) cannot be read.
    FileUnreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The operating system has no entropy source.
    NoEntropy(getrandom::Error),
    /// The token has bytes an HTTP header cannot carry. The source does not name them.
    NotAHeaderValue(http::header::InvalidHeaderValue),
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::FileUnreadable { path, source } => {
                write!(f, "cannot read the token file {}: {source}", path.display())
            }
            TokenError::NoEntropy(source) => {
                write!(f, "no randomness from the operating system: {source}")
            }
            TokenError::NotAHeaderValue(_) => {
                f.write_str("the token has characters a header cannot carry")
            }
        }
    }
}

impl std::error::Error for TokenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TokenError::FileUnreadable { source, .. } => Some(source),
            TokenError::NoEntropy(source) => Some(source),
            TokenError::NotAHeaderValue(source) => Some(source),
        }
    }
}

impl fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSecret(<hidden>)")
    }
}
