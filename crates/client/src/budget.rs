//! The retry budget of one call site: a token bucket as in the AWS SDKs' "standard" retry mode
//! (botocore `retries/standard.py`, the AWS SDKs and Tools reference guide, "Retry behavior").
//!
//! The bucket starts full. A retry takes `RETRY_COST` tokens (`TIMEOUT_RETRY_COST` after a
//! timeout, which ties up the server longer); with too few tokens left the client does not
//! retry at all and reports the last failure at once. Success puts tokens back: a 2xx on the
//! first attempt adds `NO_RETRY_INCREMENT`; a 2xx after retries returns what its last retry took.
//! Non-2xx answers return nothing.
//!
//! Why: with a fixed attempt limit alone, an outage multiplies the load by the limit (every call
//! makes `attempts_max` attempts); with the bucket the retries of a whole call site during an
//! outage are bounded by `capacity / RETRY_COST`, however long it lasts, and first attempts are
//! all that is left.

use std::sync::atomic::{AtomicU32, Ordering};

/// Tokens in a full bucket.
pub const CAPACITY_DEFAULT: u32 = 500;
/// Tokens one retry takes.
pub const RETRY_COST: u32 = 5;
/// Tokens one retry after a timeout takes.
pub const TIMEOUT_RETRY_COST: u32 = 10;
/// Tokens a first-attempt success puts back.
pub const NO_RETRY_INCREMENT: u32 = 1;

const _: () = assert!(NO_RETRY_INCREMENT < RETRY_COST && RETRY_COST <= TIMEOUT_RETRY_COST);
const _: () = assert!(TIMEOUT_RETRY_COST <= CAPACITY_DEFAULT);

/// A token bucket shared by every call through one client (clones of a `Client` share it).
#[derive(Debug)]
pub struct RetryBudget {
    tokens: AtomicU32,
    capacity: u32,
}

impl RetryBudget {
    /// A full bucket of `capacity` tokens.
    pub fn new(capacity: u32) -> RetryBudget {
        RetryBudget {
            tokens: AtomicU32::new(capacity),
            capacity,
        }
    }

    /// Takes `cost` tokens if that many are left; false (and nothing taken) otherwise.
    pub fn try_acquire(&self, cost: u32) -> bool {
        self.tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| t.checked_sub(cost))
            .is_ok()
    }

    /// Puts `amount` tokens back, never beyond the capacity.
    pub fn release(&self, amount: u32) {
        let _ = self
            .tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                Some(t.saturating_add(amount).min(self.capacity))
            });
    }

    pub fn tokens(&self) -> u32 {
        self.tokens.load(Ordering::Acquire)
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget::new(CAPACITY_DEFAULT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards the arithmetic the outage bound rests on: a full bucket pays for exactly
    /// capacity / RETRY_COST retries, then refuses without taking anything.
    #[test]
    fn a_full_bucket_pays_for_capacity_over_cost_retries() {
        let budget = RetryBudget::default();
        assert_eq!(budget.tokens(), 500);
        let granted = (0..1000)
            .take_while(|_| budget.try_acquire(RETRY_COST))
            .count();
        assert_eq!(granted, 100);
        assert_eq!(budget.tokens(), 0);
        assert!(!budget.try_acquire(RETRY_COST));
        assert!(!budget.try_acquire(1));
        assert_eq!(budget.tokens(), 0, "a refused acquire takes nothing");
    }

    #[test]
    fn timeouts_cost_double_and_a_short_bucket_refuses_whole() {
        let budget = RetryBudget::new(25);
        assert!(budget.try_acquire(TIMEOUT_RETRY_COST));
        assert!(budget.try_acquire(TIMEOUT_RETRY_COST));
        assert_eq!(budget.tokens(), 5);
        assert!(!budget.try_acquire(TIMEOUT_RETRY_COST), "5 left, 10 needed");
        assert_eq!(budget.tokens(), 5);
        assert!(budget.try_acquire(RETRY_COST));
        assert_eq!(budget.tokens(), 0);
    }

    #[test]
    fn successes_refill_up_to_capacity_only() {
        let budget = RetryBudget::default();
        for _ in 0..10 {
            assert!(budget.try_acquire(RETRY_COST));
        }
        assert_eq!(budget.tokens(), 450);
        // A success after a retry returns that retry's cost; first-attempt successes add one.
        budget.release(RETRY_COST);
        assert_eq!(budget.tokens(), 455);
        for _ in 0..44 {
            budget.release(NO_RETRY_INCREMENT);
        }
        assert_eq!(budget.tokens(), 499);
        for _ in 0..10 {
            budget.release(NO_RETRY_INCREMENT);
        }
        assert_eq!(budget.tokens(), 500, "never beyond the capacity");
        budget.release(u32::MAX);
        assert_eq!(budget.tokens(), budget.capacity());
    }

    #[test]
    fn concurrent_acquires_never_overdraw() {
        let budget = std::sync::Arc::new(RetryBudget::default());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let budget = budget.clone();
                std::thread::spawn(move || {
                    (0..100).filter(|_| budget.try_acquire(RETRY_COST)).count()
                })
            })
            .collect();
        let granted: usize = threads.into_iter().map(|t| t.join().unwrap_or(0)).sum();
        assert_eq!(granted, 100);
        assert_eq!(budget.tokens(), 0);
    }
}
