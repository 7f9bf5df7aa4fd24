//! What the load generator sends: the accounts of a run, the charge bodies, and the per-request
//! choice between a new charge, a retry of a finished one, and a concurrent duplicate.

use bytes::Bytes;
use onceledger_client::ChargeId;
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
    /// Payments in several operations, uniform accounts: authorize then capture in full; one
    /// payment in ten is also partly refunded after the capture, one in twenty is voided instead
    /// of captured.
    Lifecycle,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Uniform => "uniform",
            Workload::Hot => "hot",
            Workload::Replay => "replay",
            Workload::Lifecycle => "lifecycle",
        }
    }

    /// Share of retries when `--retry-share` is not given.
    pub fn default_retry_share(self) -> f64 {
        match self {
            Workload::Replay => 0.5,
            Workload::Uniform | Workload::Hot | Workload::Lifecycle => 0.0,
        }
    }

    /// `--amount` when not given: a lifecycle payment must leave room for a partial refund.
    pub fn default_amount(self) -> u64 {
        match self {
            Workload::Lifecycle => LIFECYCLE_AMOUNT_DEFAULT,
            Workload::Uniform | Workload::Hot | Workload::Replay => 1,
        }
    }
}

/// Share of lifecycle payments voided instead of captured: one in twenty.
pub const VOID_SHARE: f64 = 1.0 / 20.0;
/// Share of lifecycle payments captured and then partly refunded: one in ten.
pub const REFUND_SHARE: f64 = 1.0 / 10.0;
const _: () = assert!(VOID_SHARE + REFUND_SHARE <= 1.0);
/// A lifecycle payment's amount when `--amount` is not given.
pub const LIFECYCLE_AMOUNT_DEFAULT: u64 = 100;
/// The least amount of a lifecycle payment: its partial refund (half, rounded down) must be at
/// least 1 and less than the amount.
pub const LIFECYCLE_AMOUNT_MIN: u64 = 2;
const _: () = assert!(LIFECYCLE_AMOUNT_DEFAULT >= LIFECYCLE_AMOUNT_MIN);

/// What a lifecycle payment does after its authorization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Capture the whole authorized amount.
    Capture,
    /// Capture in full, then refund `Plan::refund_amount` of it.
    CaptureRefund,
    /// Void the authorization: no money moves.
    Void,
}

impl Shape {
    pub const ALL: [Shape; 3] = [Shape::Capture, Shape::CaptureRefund, Shape::Void];

    pub fn name(self) -> &'static str {
        match self {
            Shape::Capture => "capture",
            Shape::CaptureRefund => "capture_refund",
            Shape::Void => "void",
        }
    }

    /// The operations of a payment of this shape, in order; each is one durable commit.
    pub fn operations(self) -> &'static [Operation] {
        match self {
            Shape::Capture => &[Operation::Authorize, Operation::Capture],
            Shape::CaptureRefund => &[Operation::Authorize, Operation::Capture, Operation::Refund],
            Shape::Void => &[Operation::Authorize, Operation::Void],
        }
    }
}

/// One operation of a lifecycle payment, one POST with its own idempotency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Authorize,
    Capture,
    Void,
    Refund,
}

impl Operation {
    pub const ALL: [Operation; 4] = [
        Operation::Authorize,
        Operation::Capture,
        Operation::Void,
        Operation::Refund,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Operation::Authorize => "authorize",
            Operation::Capture => "capture",
            Operation::Void => "void",
            Operation::Refund => "refund",
        }
    }

    /// The status of the operation's success (API.md): a new object is 201, a changed charge 200.
    pub fn success_status(self) -> u16 {
        match self {
            Operation::Authorize | Operation::Refund => 201,
            Operation::Capture | Operation::Void => 200,
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
            Workload::Uniform | Workload::Replay | Workload::Lifecycle => rng.below(self.merchants),
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

    /// An authorization body: the charge body of the same accounts with `"capture": false`, so
    /// the money check's accounts are the same as the other workloads'.
    pub fn authorize_body(&self, source: u32, destination: u32) -> Bytes {
        Bytes::from(format!(
            r#"{{"source":"{}","destination":"{}","amount":{},"currency":"{CURRENCY}","capture":false}}"#,
            self.customer_id(source),
            self.merchant_id(destination),
            self.amount
        ))
    }

    /// The partial refund of a lifecycle payment: half its amount, rounded down (at least 1 and
    /// less than the amount since `amount >= LIFECYCLE_AMOUNT_MIN`).
    pub fn refund_amount(&self) -> u64 {
        self.amount / 2
    }

    /// The path and body of `operation` on the authorization `charge` (capture, void, refund);
    /// `None` for the authorization itself, which has no charge yet. `ChargeId` makes sure the
    /// id the server answered is one plain path segment.
    pub fn follow_up(&self, operation: Operation, charge: &ChargeId) -> Option<(String, Bytes)> {
        let empty = || Bytes::from_static(b"{}");
        match operation {
            Operation::Authorize => None,
            Operation::Capture => Some((format!("/v1/charges/{charge}/capture"), empty())),
            Operation::Void => Some((format!("/v1/charges/{charge}/void"), empty())),
            Operation::Refund => Some((
                "/v1/refunds".to_owned(),
                Bytes::from(format!(
                    r#"{{"charge":"{charge}","amount":{}}}"#,
                    self.refund_amount()
                )),
            )),
        }
    }

    /// Draws what a lifecycle payment does after its authorization: `VOID_SHARE` of them are
    /// voided, `REFUND_SHARE` captured and partly refunded, the rest captured.
    pub fn pick_shape(&self, rng: &mut Rng) -> Shape {
        let roll = rng.unit();
        if roll < VOID_SHARE {
            Shape::Void
        } else if roll < VOID_SHARE + REFUND_SHARE {
            Shape::CaptureRefund
        } else {
            Shape::Capture
        }
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

    /// Guards the lifecycle mix: over a seeded run of 100,000 payments, one in twenty is voided
    /// and one in ten refunded, within three binomial standard deviations, and
    /// the same seed draws the same payments.
    #[test]
    fn lifecycle_mix_is_what_it_says() {
        let plan = plan(Workload::Lifecycle);
        let payments = 100_000u32;
        let draw = |seed| {
            let mut rng = Rng::new(seed, 0);
            let mut counts = [0u32; 3];
            for _ in 0..payments {
                counts[plan.pick_shape(&mut rng) as usize] += 1;
            }
            counts
        };
        let counts = draw(19);
        let expected = |share: f64| (f64::from(payments) * share).round() as u32;
        let tolerance =
            |share: f64| (3.0 * (f64::from(payments) * share * (1.0 - share)).sqrt()) as u32;
        let void = Shape::Void as usize;
        let refund = Shape::CaptureRefund as usize;
        assert!(
            counts[void].abs_diff(expected(VOID_SHARE)) <= tolerance(VOID_SHARE),
            "{counts:?}"
        );
        assert!(
            counts[refund].abs_diff(expected(REFUND_SHARE)) <= tolerance(REFUND_SHARE),
            "{counts:?}"
        );
        assert_eq!(counts.iter().sum::<u32>(), payments);
        assert_eq!(draw(19), counts, "a seed replays the same mix");
    }

    /// Guards the lifecycle's requests: an authorization is the charge body with
    /// `"capture": false`, and each follow-up goes to its contract path with its body.
    #[test]
    fn lifecycle_requests_match_the_contract() {
        let mut plan = plan(Workload::Lifecycle);
        plan.amount = 101;
        let body: serde_json::Value =
            serde_json::from_slice(&plan.authorize_body(3, 4)).expect("json");
        assert_eq!(
            body,
            serde_json::json!({"source": "bt-c3", "destination": "bt-m4", "amount": 101,
                               "currency": "EUR", "capture": false})
        );
        let charge = ChargeId::new("ch_x").expect("plain id");
        let request = |op| plan.follow_up(op, &charge);
        assert_eq!(request(Operation::Authorize), None);
        assert_eq!(
            request(Operation::Capture),
            Some(("/v1/charges/ch_x/capture".into(), Bytes::from_static(b"{}")))
        );
        assert_eq!(
            request(Operation::Void),
            Some(("/v1/charges/ch_x/void".into(), Bytes::from_static(b"{}")))
        );
        assert_eq!(
            request(Operation::Refund),
            Some((
                "/v1/refunds".into(),
                Bytes::from_static(br#"{"charge":"ch_x","amount":50}"#)
            ))
        );
        assert_eq!(
            plan.refund_amount(),
            50,
            "half, rounded down: a partial refund"
        );
        plan.amount = LIFECYCLE_AMOUNT_MIN;
        assert!((1..plan.amount).contains(&plan.refund_amount()));
        for shape in Shape::ALL {
            let operations = shape.operations();
            assert_eq!(operations[0], Operation::Authorize, "{shape:?}");
            assert_eq!(operations.contains(&Operation::Void), shape == Shape::Void);
        }
    }
}
