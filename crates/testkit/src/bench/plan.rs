//! What the load generator sends: the accounts of a run, the charge bodies, and the per-request
//! choice between a new charge, a retry of a finished one, and a concurrent duplicate.

use bytes::Bytes;
use serde::Serialize;

/// The currency of every account and charge of a run: one currency keeps the money check a
/// single sum.
pub const CURRENCY: &str = "EUR";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// Random customer to random merchant: little contention on accounts.
    Uniform,
    /// Every charge to one merchant: one account touched by every command of every batch.
    Hot,
    /// Like uniform, but half the requests are retries of finished keys (answered from storage).
    Replay,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Uniform => "uniform",
            Workload::Hot => "hot",
            Workload::Replay => "replay",
        }
    }

    /// Share of retries when `--retry-share` is not given.
    pub fn default_retry_share(self) -> f64 {
        match self {
            Workload::Replay => 0.5,
            Workload::Uniform | Workload::Hot => 0.0,
        }
    }
}

/// The accounts and amounts of one run; ids carry the run id so that runs against the same server
/// never share an account and each run's money check sees only its own charges.
#[derive(Debug, Clone)]
pub struct Plan {
    pub run_id: String,
    pub workload: Workload,
    pub customers: u32,
    pub merchants: u32,
    pub amount: u64,
    pub retry_share: f64,
    pub duplicate_share: f64,
}

#[derive(Debug, Clone)]
pub struct PlannedAccount {
    pub id: String,
    pub overdraft_limit: Option<u64>,
    /// Customers are charge sources, merchants destinations.
    pub is_customer: bool,
}

/// What one request slot becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    New,
    Retry,
    Duplicate,
}

impl Plan {
    pub fn customer_id(&self, index: u32) -> String {
        format!("{}-c{index}", self.run_id)
    }

    pub fn merchant_id(&self, index: u32) -> String {
        format!("{}-m{index}", self.run_id)
    }

    /// Accounts to create. Customers pay and have no limit (`null`) so no charge is ever declined
    /// for funds; merchants only receive and keep the default limit 0.
    pub fn accounts(&self) -> Vec<PlannedAccount> {
        let customers = (0..self.customers).map(|i| PlannedAccount {
            id: self.customer_id(i),
            overdraft_limit: None,
            is_customer: true,
        });
        let merchants = (0..self.merchants).map(|i| PlannedAccount {
            id: self.merchant_id(i),
            overdraft_limit: Some(0),
            is_customer: false,
        });
        customers.chain(merchants).collect()
    }

    pub fn account_body(id: &str, overdraft_limit: Option<u64>) -> Bytes {
        let limit = overdraft_limit.map_or_else(|| "null".to_owned(), |l| l.to_string());
        Bytes::from(format!(
            r#"{{"id":"{id}","currency":"{CURRENCY}","overdraft_limit":{limit}}}"#
        ))
    }

    /// The (source, destination) of a new charge.
    pub fn pick_accounts(&self, rng: &mut Rng) -> (u32, u32) {
        let source = rng.below(self.customers);
        let destination = match self.workload {
            Workload::Hot => 0,
            Workload::Uniform | Workload::Replay => rng.below(self.merchants),
        };
        (source, destination)
    }

    /// A charge body. The same (source, destination) always gives the same bytes, so a retry
    /// rebuilt from the indexes is byte for byte the request that was sent first.
    pub fn charge_body(&self, source: u32, destination: u32) -> Bytes {
        Bytes::from(format!(
            r#"{{"source":"{}","destination":"{}","amount":{},"currency":"{CURRENCY}"}}"#,
            self.customer_id(source),
            self.merchant_id(destination),
            self.amount
        ))
    }

    /// Draws the kind of the next request. A retry needs a finished key; before the first one
    /// finished, the slot becomes a new charge (so early in a run the retry share is lower).
    pub fn pick(&self, rng: &mut Rng, have_finished: bool) -> Pick {
        let roll = rng.unit();
        if roll < self.retry_share {
            if have_finished {
                Pick::Retry
            } else {
                Pick::New
            }
        } else if roll < self.retry_share + self.duplicate_share {
            Pick::Duplicate
        } else {
            Pick::New
        }
    }
}

/// The seeded source of account and request-kind picks (per worker, from `--seed`).
pub use onceledger_client::rng::Rng;

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(workload: Workload) -> Plan {
        Plan {
            run_id: "bt".into(),
            workload,
            customers: 10,
            merchants: 5,
            amount: 1,
            retry_share: 0.25,
            duplicate_share: 0.25,
        }
    }

    #[test]
    fn bodies_are_valid_requests_for_the_parser() {
        use onceledger_server::api::{ApiRequest, parse_request};
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "content-type",
            http::HeaderValue::from_static("application/json"),
        );
        headers.insert("idempotency-key", http::HeaderValue::from_static("k-1"));
        let parses = |path: &str, body: &Bytes| {
            matches!(
                parse_request(&http::Method::POST, path, &headers, body),
                Ok(ApiRequest::Write(_))
            )
        };
        let plan = plan(Workload::Uniform);
        let body = plan.charge_body(3, 4);
        assert!(parses("/v1/charges", &body));
        let value: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(value["source"], "bt-c3");
        assert_eq!(value["destination"], "bt-m4");
        assert_eq!(body, plan.charge_body(3, 4), "stable bytes for retries");
        let accounts = plan.accounts();
        assert_eq!(accounts.len(), 15);
        for account in [&accounts[0], &accounts[14]] {
            let body = Plan::account_body(&account.id, account.overdraft_limit);
            assert!(parses("/v1/accounts", &body), "{body:?}");
        }
        let customer: serde_json::Value =
            serde_json::from_slice(&Plan::account_body("bt-c0", None)).expect("json");
        assert!(customer["overdraft_limit"].is_null());
    }

    #[test]
    fn hot_goes_to_one_merchant_and_picks_stay_in_range() {
        let hot = plan(Workload::Hot);
        let uniform = plan(Workload::Uniform);
        let mut rng = Rng::new(7, 0);
        for _ in 0..1000 {
            assert_eq!(hot.pick_accounts(&mut rng).1, 0);
            let (s, d) = uniform.pick_accounts(&mut rng);
            assert!(s < 10 && d < 5);
        }
    }

    #[test]
    fn shares_are_roughly_respected() {
        let plan = plan(Workload::Uniform);
        let mut rng = Rng::new(42, 1);
        let mut counts = [0u32; 3];
        for _ in 0..100_000 {
            counts[plan.pick(&mut rng, true) as usize] += 1;
        }
        for (count, expected) in counts.iter().zip([50_000, 25_000, 25_000]) {
            assert!(count.abs_diff(expected) < 1_500, "{counts:?}");
        }
        let mut rng = Rng::new(1, 1);
        assert!((0..1000).all(|_| plan.pick(&mut rng, false) != Pick::Retry));
    }
}
