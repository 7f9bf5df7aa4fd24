//! The catch-up rate limit: a token bucket of events per second.

use std::time::Duration;

use tokio::time::Instant;

pub struct TokenBucket {
    per_second: f64,
    capacity: f64,
    tokens: f64,
    refilled_at: Instant,
}

impl TokenBucket {
    /// `per_second` events on average; bursts of at most `burst_max` (and at most one second's
    /// worth), so a backlog drains at the set rate rather than in a flood.
    pub fn new(per_second: u32, burst_max: usize) -> Self {
        let per_second = f64::from(per_second.max(1));
        let capacity = per_second.min(burst_max.max(1) as f64).max(1.0);
        TokenBucket {
            per_second,
            capacity,
            tokens: capacity,
            refilled_at: Instant::now(),
        }
    }

    fn refill(&mut self) {
        let now = Instant::now();
        let elapsed = now.duration_since(self.refilled_at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        self.refilled_at = now;
    }

    /// Waits until at least one token is there, then takes as many as are there, up to `wanted`.
    pub async fn take_up_to(&mut self, wanted: usize) -> usize {
        loop {
            self.refill();
            if self.tokens >= 1.0 {
                let taken = self.tokens.floor().min(wanted.max(1) as f64);
                self.tokens -= taken;
                return taken as usize;
            }
            let missing = 1.0 - self.tokens;
            tokio::time::sleep(Duration::from_secs_f64(missing / self.per_second)).await;
        }
    }

    /// Gives back tokens taken for events that were not there to send.
    pub fn refund(&mut self, tokens: usize) {
        self.tokens = (self.tokens + tokens as f64).min(self.capacity);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn drains_at_the_set_rate() {
        let mut bucket = TokenBucket::new(100, 1000);
        let started = Instant::now();
        let mut taken = 0;
        while taken < 1000 {
            taken += bucket.take_up_to(1000).await;
        }
        // The first 100 are a burst; the other 900 take 9 s of (paused, virtual) time.
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(8990), "{elapsed:?}");
        assert!(elapsed <= Duration::from_millis(9100), "{elapsed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_capped() {
        let mut bucket = TokenBucket::new(10_000, 250);
        assert_eq!(bucket.take_up_to(1000).await, 250);
        bucket.refund(1000);
        assert_eq!(bucket.take_up_to(1000).await, 250);
    }
}
