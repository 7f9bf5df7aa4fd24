//! API tokens: `olt_` and 64 lower-case hex digits (256 bits from the operating system's
//! generator). Shown once; the store keeps only the blake3 digest of the whole string.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Every token starts with this, so a leaked one is recognisable (secret scanners, logs).
const TOKEN_SCHEME: &str = "olt_";
/// Random bytes per token: 256 bits.
const TOKEN_RANDOM_BYTES: usize = 32;
const TOKEN_CHARS: usize = TOKEN_SCHEME.len() + 2 * TOKEN_RANDOM_BYTES;
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
        file: Option<&std::path::Path>,
        fallback_file: Option<&std::path::Path>,
    ) -> Result<Option<TokenSecret>, String> {
        if let Some(token) = token {
            return Ok(Some(TokenSecret::presented(token)));
        }
        let read = |path: &std::path::Path| {
            std::fs::read_to_string(path)
                .map(|text| TokenSecret::presented(text.lines().next().unwrap_or_default()))
                .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))
        };
        match (file, fallback_file) {
            (Some(file), _) => read(file).map(Some),
            (None, Some(fallback)) if fallback.exists() => read(fallback).map(Some),
            _ => Ok(None),
        }
    }

    /// `Bearer TOKEN`, marked sensitive (hyper and http never print sensitive values).
    pub fn header_value(&self) -> Result<http::HeaderValue, String> {
        let mut value = http::HeaderValue::from_str(&format!("Bearer {}", self.0))
            .map_err(|_| "the token has characters a header cannot carry".to_owned())?;
        value.set_sensitive(true);
        Ok(value)
    }

    /// 256 random bits from the operating system (getrandom). Fails only when the OS has no
    /// entropy source at all.
    pub fn generate() -> Result<TokenSecret, String> {
        let mut bytes = [0u8; TOKEN_RANDOM_BYTES];
        getrandom::getrandom(&mut bytes)
            .map_err(|e| format!("no randomness from the operating system: {e}"))?;
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

    pub fn digest(&self) -> TokenDigest {
        digest_of(self.0.as_bytes())
    }

    /// What listings show: `olt_` and the first 8 hex digits.
    pub fn shown_prefix(&self) -> String {
        self.0.chars().take(TOKEN_PREFIX_SHOWN_CHARS).collect()
    }
}

impl fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSecret(<hidden>)")
    }
}

/// blake3 of a token. Compared with `blake3::Hash`'s constant-time equality.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TokenDigest(pub [u8; 32]);

impl fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenDigest(<hidden>)")
    }
}

impl TokenDigest {
    /// Constant-time comparison (blake3::Hash's `==` is constant time).
    pub fn matches(&self, other: &TokenDigest) -> bool {
        blake3::Hash::from_bytes(self.0) == blake3::Hash::from_bytes(other.0)
    }
}

pub fn digest_of(token: &[u8]) -> TokenDigest {
    TokenDigest(*blake3::hash(token).as_bytes())
}

/// The token of an `Authorization: Bearer TOKEN` value (RFC 6750; the scheme is
/// case-insensitive). `None` when the header is not a bearer credential of our token format, which
/// saves hashing garbage; the answer is the same 401 either way.
pub fn parse_bearer(value: &[u8]) -> Option<&[u8]> {
    let space = value.iter().position(|b| *b == b' ')?;
    let (scheme, rest) = value.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = rest.trim_ascii();
    let well_formed = token.len() == TOKEN_CHARS
        && token.starts_with(TOKEN_SCHEME.as_bytes())
        && token[TOKEN_SCHEME.len()..]
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b));
    well_formed.then_some(token)
}

/// A tenant name: 1 to 64 of `A-Z a-z 0-9 _ . -` (no `:`, which joins a tenant to a node id in a
/// hub's origin keys).
pub fn is_valid_tenant_name(name: &str) -> bool {
    // The same pattern as node ids (1 to 64 of A-Z a-z 0-9 _ . -): one rule for operator names.
    crate::store::is_valid_node_id(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_parse_hash_stably_and_do_not_repeat() {
        let a = TokenSecret::generate().expect("entropy");
        let b = TokenSecret::generate().expect("entropy");
        assert_ne!(a.expose(), b.expose());
        assert_eq!(a.expose().len(), TOKEN_CHARS);
        let header = format!("Bearer {}", a.expose());
        assert_eq!(parse_bearer(header.as_bytes()), Some(a.expose().as_bytes()));
        let lower = format!("bearer  {} ", a.expose());
        assert_eq!(parse_bearer(lower.as_bytes()), Some(a.expose().as_bytes()));
        assert!(digest_of(a.expose().as_bytes()).matches(&a.digest()));
        assert!(!a.digest().matches(&b.digest()));
        assert!(a.shown_prefix().starts_with("olt_") && a.shown_prefix().len() == 12);
        assert!(!format!("{a:?}").contains(&a.expose()[4..]));
    }

    #[test]
    fn malformed_credentials_are_refused() {
        let good = TokenSecret::generate().expect("entropy");
        for bad in [
            String::new(),
            "Bearer".into(),
            "Bearer ".into(),
            format!("Basic {}", good.expose()),
            format!("Bearer {}x", good.expose()),
            format!("Bearer {}", &good.expose()[..60]),
            format!("Bearer {}", good.expose().to_uppercase()),
            format!("Bearer xlt_{}", &good.expose()[4..]),
        ] {
            assert_eq!(parse_bearer(bad.as_bytes()), None, "{bad:?}");
        }
    }
}
