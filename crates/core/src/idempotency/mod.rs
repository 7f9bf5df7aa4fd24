//! Idempotency: what a key is, how a request is fingerprinted, and which keys are in flight.
//!
//! The state machine of a key (API.md's table) is spread over three places on purpose:
//! the in-flight index here answers "is a request with this key running now?" without touching the
//! disk; the store answers "did a request with this key finish?"; the writer re-checks the store
//! inside the write transaction, which is the only check that cannot race.

mod canonical;
mod fingerprint;
mod inflight;
mod key;

pub use canonical::canonical_body;
pub use fingerprint::Fingerprint;
pub use inflight::{Claim, InFlightIndex};
pub use key::{IdempotencyKey, KeyError};
