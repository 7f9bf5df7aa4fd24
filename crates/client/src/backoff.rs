//! How long to wait before the next attempt: full-jitter exponential backoff, with the server's
//! `Retry-After` as the least wait.
//!
//! Full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter"): the wait before retry
//! `n` (0 for the first retry) is uniform in `[0, min(cap, base * 2^n)]`. Spreading retries over
//! the whole window keeps many clients that failed together from retrying together.

use std::time::{Duration, SystemTime};

use crate::rng::Rng;

/// The backoff parameters of one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The window of the first retry.
    pub base: Duration,
    /// No window grows beyond this.
    pub cap: Duration,
}

impl Backoff {
    pub const BASE_DEFAULT: Duration = Duration::from_millis(50);
    pub const CAP_DEFAULT: Duration = Duration::from_secs(5);

    /// The upper end of the window of retry `retry` (0-based): `min(cap, base * 2^retry)`,
    /// computed without overflow for any `retry`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The wait before retry `retry`: uniform in `[0, ceiling(retry)]` (nanosecond resolution),
    /// raised to `retry_after` when the server asked for more.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>, rng: &mut Rng) -> Duration {
        let ceiling_ns = u64::try_from(self.ceiling(retry).as_nanos()).unwrap_or(u64::MAX);
        let jittered = Duration::from_nanos(rng.up_to(ceiling_ns));
        match retry_after {
            Some(floor) => jittered.max(floor),
            None => jittered,
        }
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Self::BASE_DEFAULT,
            cap: Self::CAP_DEFAULT,
        }
    }
}

/// Parses a `Retry-After` value (RFC 9110 §10.2.3): delay-seconds (`120`) or an HTTP-date
/// (`Fri, 31 Dec 1999 23:59:59 GMT`, and the two obsolete forms), measured from `now`.
/// A date already past means no wait. `None` for anything else: an unreadable value is ignored
/// rather than trusted.
pub fn parse_retry_after(value: &[u8], now: SystemTime) -> Option<Duration> {
    let text = std::str::from_utf8(value).ok()?.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        // Longer than u64 seconds: as good as forever; saturate.
        return Some(Duration::from_secs(text.parse::<u64>().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn ceiling_doubles_from_base_up_to_cap_and_never_overflows() {
        let b = Backoff::default();
        let ceilings: Vec<Duration> = (0..9).map(|n| b.ceiling(n)).collect();
        assert_eq!(
            ceilings,
            [50, 100, 200, 400, 800, 1600, 3200, 5000, 5000].map(ms)
        );
        for n in [31, 32, 63, 64, 1000, u32::MAX] {
            assert_eq!(b.ceiling(n), b.cap, "retry {n}");
        }
        let huge = Backoff {
            base: Duration::MAX,
            cap: Duration::MAX,
        };
        assert_eq!(huge.ceiling(40), Duration::MAX);
    }

    /// Guards the full-jitter bound: every delay lies in [0, min(cap, base * 2^n)], and the
    /// window is used (not always 0, not always the ceiling).
    #[test]
    fn delay_stays_within_the_window() {
        let b = Backoff {
            base: ms(50),
            cap: ms(5000),
        };
        let mut rng = Rng::new(17, 0);
        for retry in 0..12 {
            let ceiling = b.ceiling(retry);
            assert_eq!(ceiling, (ms(50) * 2u32.pow(retry)).min(ms(5000)));
            let delays: Vec<Duration> = (0..2000).map(|_| b.delay(retry, None, &mut rng)).collect();
            assert!(delays.iter().all(|d| *d <= ceiling), "retry {retry}");
            let (low, high) = (ceiling / 4, ceiling * 3 / 4);
            assert!(
                delays.iter().any(|d| *d < low),
                "retry {retry}: no low delay"
            );
            assert!(
                delays.iter().any(|d| *d > high),
                "retry {retry}: no high delay"
            );
        }
    }

    /// Guards Retry-After as a floor: the delay is never below it, even above the cap, and a
    /// floor below the window leaves the jitter alone.
    #[test]
    fn retry_after_is_the_least_delay() {
        let b = Backoff::default();
        let mut rng = Rng::new(5, 1);
        for retry in 0..8 {
            for floor in [ms(0), ms(1), ms(30), ms(1000), ms(7000)] {
                for _ in 0..200 {
                    let d = b.delay(retry, Some(floor), &mut rng);
                    assert!(d >= floor, "retry {retry}: {d:?} < {floor:?}");
                    assert!(d <= floor.max(b.ceiling(retry)), "retry {retry}: {d:?}");
                }
            }
        }
        // A zero window gives exactly the floor.
        let zero = Backoff {
            base: Duration::ZERO,
            cap: Duration::ZERO,
        };
        assert_eq!(zero.delay(3, Some(ms(1000)), &mut rng), ms(1000));
        assert_eq!(zero.delay(3, None, &mut rng), Duration::ZERO);
    }

    #[test]
    fn retry_after_seconds_form() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let parse = |v: &str| parse_retry_after(v.as_bytes(), now);
        assert_eq!(parse("1"), Some(Duration::from_secs(1)));
        assert_eq!(parse("0"), Some(Duration::ZERO));
        assert_eq!(parse(" 120 "), Some(Duration::from_secs(120)));
        assert_eq!(
            parse("99999999999999999999999"),
            Some(Duration::from_secs(u64::MAX))
        );
        for bad in ["", " ", "-1", "1.5", "+3", "1s", "0x10", "soon"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        assert_eq!(parse_retry_after(b"\xff1", now), None);
    }

    #[test]
    fn retry_after_http_date_form() {
        // 1994-11-06 08:49:37 UTC, RFC 9110's example, in all three forms it allows.
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        let now = at - Duration::from_secs(90);
        for form in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(
                parse_retry_after(form.as_bytes(), now),
                Some(Duration::from_secs(90)),
                "{form}"
            );
        }
        // A date in the past asks for no wait.
        let later = at + Duration::from_secs(5);
        assert_eq!(
            parse_retry_after(b"Sun, 06 Nov 1994 08:49:37 GMT", later),
            Some(Duration::ZERO)
        );
        // Round trip with the formatter.
        let soon = now + Duration::from_secs(42);
        let text = httpdate::fmt_http_date(soon);
        assert_eq!(
            parse_retry_after(text.as_bytes(), now),
            Some(Duration::from_secs(42))
        );
        assert_eq!(
            parse_retry_after(b"Sun, 32 Nov 1994 08:49:37 GMT", now),
            None
        );
    }
}
