//! Which outcomes a retry can change. The table follows API.md's idempotency section: what the
//! server stores is final and a retry would only replay it; what it does not store because the
//! moment was wrong (in flight, overloaded, storage down) may go differently next time. The
//! lifecycle's declines (400 charge-state-invalid, capture-exceeds-authorization,
//! refund-exceeds-charge; 404 refund-not-found) are decided against the ledger and stored, so
//! they are final like 402: a capture of a voided charge stays refused however often it is sent.

use serde::Serialize;

use super::budget::{RETRY_COST, TIMEOUT_RETRY_COST};

/// What to do with one attempt's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The answer stands: a 2xx, or a 4xx that a retry would repeat (a stored decline such as
    /// 402, or a request the server refuses as written such as 400, 413, 422).
    Final,
    /// Another attempt with the same key may get a different answer.
    Retry(RetryCause),
}

/// Why an attempt is worth repeating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryCause {
    /// No connection: refused, unreachable, or the connect did not finish.
    Connect,
    /// No complete answer within the attempt timeout.
    Timeout,
    /// The connection broke after the request may have been sent (reset, closed mid-answer):
    /// the operation may have run; the retry with the same key finds out.
    ConnectionLost,
    /// 409: a request with this key has not finished.
    InFlight,
    /// 429: the server asks the client to slow down.
    TooManyRequests,
    /// 503: overloaded or storage unavailable.
    Unavailable,
    /// Any other 5xx.
    ServerError,
}

impl RetryCause {
    /// Tokens a retry for this cause takes from the budget.
    pub fn cost(self) -> u32 {
        match self {
            RetryCause::Timeout => TIMEOUT_RETRY_COST,
            _ => RETRY_COST,
        }
    }
}

/// The verdict on an HTTP status: 409, 429 and every 5xx are retried, nothing else is. In
/// particular no other 4xx: 408 and 413 are answers to this exact request and would come again.
pub fn classify_status(status: u16) -> Verdict {
    match status {
        409 => Verdict::Retry(RetryCause::InFlight),
        429 => Verdict::Retry(RetryCause::TooManyRequests),
        503 => Verdict::Retry(RetryCause::Unavailable),
        500..=599 => Verdict::Retry(RetryCause::ServerError),
        _ => Verdict::Final,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards the retry classification table of the client (issue 6): what is retried, what is
    /// not, and what each retry costs.
    #[test]
    fn the_classification_table() {
        use RetryCause::*;
        let table: &[(u16, Option<RetryCause>)] = &[
            (200, None),
            (201, None),
            (204, None),
            (301, None),
            // invalid-request, currency-mismatch, account-exists; and the lifecycle's stored
            // declines: charge-state-invalid, capture-exceeds-authorization, refund-exceeds-charge.
            (400, None),
            (401, None),
            (402, None), // insufficient-funds (stored)
            (403, None),
            (404, None), // account-not-found (stored), charge-not-found, refund-not-found
            (405, None),
            (408, None),
            (409, Some(InFlight)),
            (413, None),
            (415, None),
            (422, None), // idempotency-key-reused
            (429, Some(TooManyRequests)),
            (500, Some(ServerError)),
            (501, Some(ServerError)),
            (502, Some(ServerError)),
            (503, Some(Unavailable)),
            (504, Some(ServerError)),
            (599, Some(ServerError)),
        ];
        for &(status, expected) in table {
            let verdict = classify_status(status);
            let want = expected.map_or(Verdict::Final, Verdict::Retry);
            assert_eq!(verdict, want, "status {status}");
        }
        // No 4xx other than 409 and 429 is ever retried.
        for status in 400..500 {
            if status != 409 && status != 429 {
                assert_eq!(classify_status(status), Verdict::Final, "status {status}");
            }
        }
        assert!((500..600).all(|s| classify_status(s) != Verdict::Final));
        assert_eq!(Timeout.cost(), 10);
        for cause in [
            Connect,
            ConnectionLost,
            InFlight,
            TooManyRequests,
            Unavailable,
            ServerError,
        ] {
            assert_eq!(cause.cost(), 5, "{cause:?}");
        }
    }
}
