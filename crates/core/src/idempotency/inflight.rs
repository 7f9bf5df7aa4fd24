//! The in-flight index: (tenant, key) pairs whose request has not finished.
//!
//! A lock-free skip list (crossbeam-skiplist), because every POST touches it from every runtime
//! thread and a second request with a taken key must be refused at once, never made to wait.
//! Only unfinished requests live here; finished keys live in the store, so a crash loses nothing:
//! a request that was in flight never committed, and its key is free again after restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_skiplist::SkipMap;

use super::key::IdempotencyKey;
use crate::ids::TenantId;

type ClaimKey = (TenantId, IdempotencyKey);

#[derive(Debug, Default)]
pub struct InFlightIndex {
    /// Value: the token of the claim that owns the key, so a claimer can tell whether it won.
    claims: SkipMap<ClaimKey, u64>,
    next_token: AtomicU64,
}

/// Ownership of a key while its request runs. Dropping it releases the key, whatever ended the
/// request: an answer, an error, or the connection task being dropped when the client went away.
/// A claim handed to the writer is dropped by the writer after the commit, so a client that
/// disconnects cannot free its key while its command may still commit.
#[derive(Debug)]
pub struct Claim {
    index: Arc<InFlightIndex>,
    key: ClaimKey,
}

impl InFlightIndex {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Claims the key, or returns `None` at once if another request holds it.
    pub fn claim(self: &Arc<Self>, tenant: TenantId, key: &IdempotencyKey) -> Option<Claim> {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let claim_key = (tenant, key.clone());
        let entry = self.claims.get_or_insert(claim_key.clone(), token);
        (*entry.value() == token).then(|| Claim {
            index: Arc::clone(self),
            key: claim_key,
        })
    }

    /// Keys held right now (a gauge for /metrics, and a check that nothing stays stuck).
    pub fn len(&self) -> usize {
        self.claims.len()
    }

    pub fn is_empty(&self) -> bool {
        self.claims.is_empty()
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        // Only the owner removes a key, and nobody can claim it before this removal, so removing
        // by key cannot remove somebody else's claim.
        self.index.claims.remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(raw: &str) -> IdempotencyKey {
        IdempotencyKey::parse(raw.as_bytes()).expect("valid key")
    }

    #[test]
    fn second_claim_is_refused_until_the_first_is_dropped() {
        let index = InFlightIndex::new();
        let first = index
            .claim(TenantId::DEFAULT, &key("k1"))
            .expect("free key");
        assert!(index.claim(TenantId::DEFAULT, &key("k1")).is_none());
        assert!(
            index.claim(TenantId(7), &key("k1")).is_some(),
            "tenants do not share keys"
        );
        drop(first);
        assert!(index.claim(TenantId::DEFAULT, &key("k1")).is_some());
        assert!(index.is_empty(), "every claim released on drop");
    }

    #[test]
    fn concurrent_claims_have_exactly_one_winner() {
        let index = InFlightIndex::new();
        for round in 0..200 {
            let k = key(&format!("round-{round}"));
            let barrier = std::sync::Barrier::new(4);
            let winners: usize = std::thread::scope(|s| {
                let handles: Vec<_> = (0..4)
                    .map(|_| {
                        s.spawn(|| {
                            barrier.wait();
                            index.claim(TenantId::DEFAULT, &k)
                        })
                    })
                    .collect();
                // Keep every claim alive until all threads tried, then count the winners.
                let claims: Vec<_> = handles
                    .into_iter()
                    .map(|h| h.join().expect("no panic"))
                    .collect();
                claims.iter().filter(|c| c.is_some()).count()
            });
            assert_eq!(winners, 1, "round {round}");
        }
        assert!(index.is_empty());
    }
}
