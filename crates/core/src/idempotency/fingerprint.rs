//! The request fingerprint: blake3 over the method, the path and the canonical body.

use serde::{Deserialize, Serialize};

/// Two requests with the same key are "the same request" exactly when their fingerprints match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The canonical body is the parsed command re-encoded (sorted metadata, fixed field order,
    /// defaults filled in), so key order and whitespace do not change it but any value does.
    /// Fields are length-prefixed so that no two (method, path, body) triples hash alike.
    pub fn of(method: &str, path: &str, canonical_body: &[u8]) -> Self {
        let mut hasher = blake3::Hasher::new_derive_key("onceledger 2026 request fingerprint v1");
        for part in [method.as_bytes(), path.as_bytes(), canonical_body] {
            hasher.update(&(part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        Fingerprint(*hasher.finalize().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_counts_and_parts_do_not_run_together() {
        let base = Fingerprint::of("POST", "/v1/charges", b"{}");
        assert_eq!(base, Fingerprint::of("POST", "/v1/charges", b"{}"));
        assert_ne!(base, Fingerprint::of("POST", "/v1/accounts", b"{}"));
        assert_ne!(base, Fingerprint::of("PUT", "/v1/charges", b"{}"));
        assert_ne!(base, Fingerprint::of("POST", "/v1/charges", b"{ }"));
        assert_ne!(
            Fingerprint::of("POST", "/a", b"b"),
            Fingerprint::of("POST", "/ab", b"")
        );
    }
}
