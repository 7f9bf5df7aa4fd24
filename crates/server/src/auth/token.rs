//! API tokens on the server's side: recognising a bearer credential and digesting it. The
//! token itself (`TokenSecret`: format, generation, redacted `Debug`) is the client crate's;
//! the store keeps only the blake3 digest of the whole string (`ids::TokenDigest`).

use onceledger_client::token::{TOKEN_CHARS, TOKEN_SCHEME, TokenSecret};
use onceledger_core::ids::TokenDigest;

/// The digest the store keeps of a token.
pub fn digest(secret: &TokenSecret) -> TokenDigest {
    TokenDigest::of(secret.expose().as_bytes())
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
        assert!(TokenDigest::of(a.expose().as_bytes()).matches(&digest(&a)));
        assert!(!digest(&a).matches(&digest(&b)));
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
