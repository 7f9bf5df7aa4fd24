//! The token table the request path reads: digest → (id, tenant, role, revoked), in memory.
//!
//! Every token change goes through this process (the admin endpoints; the CLI cannot open the
//! store while a server holds it, because redb locks the file), so the in-memory table is
//! reloaded from the store right after each such commit and is never stale: a revoked token is
//! refused from the moment its revocation was answered.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use super::Principal;
use super::token::parse_bearer;
use onceledger_core::ids::TokenDigest;
use onceledger_core::store::TokenEntry;

/// Requests per second per token, with a burst of one second's worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: u32,
}

/// Why a request was not let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 401: no credential, a malformed one, an unknown token or a revoked one. One answer for
    /// all, so a caller learns nothing about which.
    Unauthenticated,
    /// 429: the token's rate limit; retry after this many seconds.
    RateLimited { retry_after_s: u32 },
}

/// A principal that passed the checks.
pub type Authenticated = Result<Principal, Refusal>;

pub struct Authenticator {
    tokens: RwLock<HashMap<TokenDigest, Arc<TokenState>>>,
    rate: Option<RateLimit>,
}

struct TokenState {
    entry: TokenEntry,
    revoked: AtomicBool,
    bucket: Mutex<Bucket>,
}

struct Bucket {
    tokens: f64,
    refilled: Instant,
}

impl Authenticator {
    pub fn new(rate: Option<RateLimit>) -> Authenticator {
        Authenticator {
            tokens: RwLock::new(HashMap::new()),
            rate,
        }
    }

    /// Replaces the table with the store's tokens. A token already known keeps its rate-limit
    /// bucket; a revocation takes effect for every request checked after this returns.
    pub fn reload(&self, entries: impl IntoIterator<Item = TokenEntry>) {
        let mut tokens = self.tokens.write().unwrap_or_else(|p| p.into_inner());
        let mut fresh = HashMap::with_capacity(tokens.len() + 1);
        for entry in entries {
            let state = match tokens.remove(&entry.digest) {
                Some(state) if state.entry.id == entry.id => {
                    state.revoked.store(entry.revoked, Ordering::Release);
                    state
                }
                _ => Arc::new(TokenState {
                    entry,
                    revoked: AtomicBool::new(entry.revoked),
                    bucket: Mutex::new(Bucket {
                        tokens: self.burst(),
                        refilled: Instant::now(),
                    }),
                }),
            };
            fresh.insert(entry.digest, state);
        }
        *tokens = fresh;
    }

    fn burst(&self) -> f64 {
        self.rate.map_or(0.0, |r| f64::from(r.per_second.max(1)))
    }

    /// Checks an `Authorization` header value. The table is keyed by the presented token's
    /// blake3 digest, so a lookup's timing depends on digests, which an attacker cannot steer
    /// towards a stored token; the final comparison is blake3's constant-time equality.
    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Authenticated {
        let token = authorization
            .and_then(parse_bearer)
            .ok_or(Refusal::Unauthenticated)?;
        let digest = TokenDigest::of(token);
        let state = {
            let tokens = self.tokens.read().unwrap_or_else(|p| p.into_inner());
            tokens.get(&digest).cloned()
        };
        let state = state.ok_or(Refusal::Unauthenticated)?;
        if !state.entry.digest.matches(&digest) || state.revoked.load(Ordering::Acquire) {
            return Err(Refusal::Unauthenticated);
        }
        if let Some(rate) = self.rate {
            let mut bucket = state.bucket.lock().unwrap_or_else(|p| p.into_inner());
            bucket.take(rate, self.burst(), Instant::now())?;
        }
        Ok(Principal {
            token_id: state.entry.id,
            tenant: state.entry.tenant,
            role: state.entry.role,
        })
    }
}

impl Bucket {
    fn take(&mut self, rate: RateLimit, burst: f64, now: Instant) -> Result<(), Refusal> {
        let per_second = f64::from(rate.per_second.max(1));
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_second).min(burst);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        let wait = Duration::from_secs_f64((1.0 - self.tokens) / per_second);
        let retry_after_s = u32::try_from(wait.as_secs()).unwrap_or(u32::MAX).max(1);
        Err(Refusal::RateLimited { retry_after_s })
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Role, TenantId, TokenSecret, digest};
    use super::*;

    fn entry(secret: &TokenSecret, id: u64, revoked: bool) -> TokenEntry {
        TokenEntry {
            id,
            tenant: TenantId(3),
            role: Role::Client,
            digest: digest(secret),
            revoked,
        }
    }

    fn header(secret: &TokenSecret) -> Vec<u8> {
        format!("Bearer {}", secret.expose()).into_bytes()
    }

    #[test]
    fn known_tokens_pass_unknown_and_revoked_do_not() {
        let auth = Authenticator::new(None);
        let known = TokenSecret::generate().expect("entropy");
        let other = TokenSecret::generate().expect("entropy");
        auth.reload([entry(&known, 1, false)]);
        let principal = auth.authenticate(Some(&header(&known))).expect("known");
        assert_eq!((principal.token_id, principal.tenant), (1, TenantId(3)));
        assert_eq!(
            auth.authenticate(Some(&header(&other))),
            Err(Refusal::Unauthenticated)
        );
        assert_eq!(auth.authenticate(None), Err(Refusal::Unauthenticated));
        auth.reload([entry(&known, 1, true)]);
        assert_eq!(
            auth.authenticate(Some(&header(&known))),
            Err(Refusal::Unauthenticated)
        );
    }

    #[test]
    fn the_rate_limit_refuses_beyond_the_burst_and_names_a_wait() {
        let auth = Authenticator::new(Some(RateLimit { per_second: 5 }));
        let known = TokenSecret::generate().expect("entropy");
        auth.reload([entry(&known, 1, false)]);
        for _ in 0..5 {
            assert!(auth.authenticate(Some(&header(&known))).is_ok());
        }
        assert_eq!(
            auth.authenticate(Some(&header(&known))),
            Err(Refusal::RateLimited { retry_after_s: 1 })
        );
        // A reload keeps the bucket: reloading is not a way around the limit.
        auth.reload([entry(&known, 1, false)]);
        assert!(matches!(
            auth.authenticate(Some(&header(&known))),
            Err(Refusal::RateLimited { .. })
        ));
    }
}
