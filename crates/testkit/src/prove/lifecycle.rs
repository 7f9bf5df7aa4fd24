//! The lifecycle mix (`--mix lifecycle`): payments that are authorized and then captured whole,
//! captured in part, voided, left to expire or left open, refunds of some captured ones, and
//! two-leg transfers (customer to merchant, merchant to platform). Each is a logical operation
//! of its own key, sent through the same path as the charges (`load::Sender::once`), so the
//! same faults and duplicates apply to every one.
//!
//! Amounts are planned so that the ledger declines none: customers have no overdraft limit, a
//! refund is at most its payment's capture and follows it, a transfer's fee is at most what its
//! first leg brought the merchant. A decline is therefore a failure of the run.

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;

use super::load::{self, CREATED, Logical, Sender};
use super::totals::Model;
use onceledger_client::lifecycle::EXPIRES_IN_SECS_MIN;
use onceledger_client::rng::Rng;
use onceledger_client::{
    ChargeId, Client, Leg, NewAuthorization, NewCapture, NewCharge, NewRefund, NewTransfer,
    NewVoid, Operation,
};

/// The status of a capture or a void.
const SETTLED: u16 = 200;
/// The random stream of the lifecycle plan (the charges' is 1), so that adding the mix leaves
/// the charges of a seed as they were.
const PLAN_STREAM: u64 = 2;
/// Share of captured payments that are refunded (in part or whole).
const REFUND_RATE: f64 = 0.5;

/// How big the lifecycle mix is.
#[derive(Debug, Clone, Copy)]
pub struct LifecycleMix {
    /// Authorizations, each one payment.
    pub payments: u64,
    /// Two-leg transfers.
    pub transfers: u64,
    /// Share of payments left to expire (`expires_in` 60 s, the shortest): the run then waits
    /// for their expiry, a minute on a release build. The rest are split 3:2:2:2 between
    /// capture whole, capture part, void and left open.
    pub expire_rate: f64,
}

/// Lifecycle operations by what they did: the labels of the node's
/// `onceledger_lifecycle_operations_total`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LifecycleCounts {
    pub authorized: u64,
    pub captured: u64,
    pub canceled: u64,
    pub expired: u64,
    pub refunded: u64,
    pub transferred: u64,
}

impl LifecycleCounts {
    /// The label values, in the order of the table.
    pub const OPERATIONS: [&'static str; 6] = [
        "authorized",
        "captured",
        "canceled",
        "expired",
        "refunded",
        "transferred",
    ];

    /// Made from a count per label of `OPERATIONS`.
    pub fn from_fn(mut count: impl FnMut(&'static str) -> u64) -> LifecycleCounts {
        LifecycleCounts {
            authorized: count("authorized"),
            captured: count("captured"),
            canceled: count("canceled"),
            expired: count("expired"),
            refunded: count("refunded"),
            transferred: count("transferred"),
        }
    }

    pub fn get(&self, operation: &str) -> u64 {
        match operation {
            "authorized" => self.authorized,
            "captured" => self.captured,
            "canceled" => self.canceled,
            "expired" => self.expired,
            "refunded" => self.refunded,
            "transferred" => self.transferred,
            _ => 0,
        }
    }

    /// Every lifecycle operation makes one event.
    pub fn total(&self) -> u64 {
        Self::OPERATIONS.iter().map(|o| self.get(o)).sum()
    }
}

/// What becomes of an authorization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Captured: the whole amount (`None`, body `{}`) or part of it.
    Capture(Option<u64>),
    Void,
    Expire,
    Open,
}

/// A logical operation whose path or body names the authorization, known once it is answered.
#[derive(Debug, Clone)]
pub struct Later {
    pub key: String,
    pub duplicate: bool,
}

#[derive(Debug, Clone)]
pub struct PlannedPayment {
    pub authorize: Logical,
    pub source: String,
    pub destination: String,
    pub amount: u64,
    pub fate: Fate,
    /// The capture or the void (`None` for expire and open).
    pub settle: Option<Later>,
    /// A refund of this amount after the capture.
    pub refund: Option<(Later, u64)>,
}

impl PlannedPayment {
    fn captured(&self) -> Option<u64> {
        match self.fate {
            Fate::Capture(part) => Some(part.unwrap_or(self.amount)),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct PlannedTransfer {
    pub send: Logical,
    pub legs: [Leg; 2],
}

#[derive(Debug, Clone)]
pub enum Item {
    Payment(PlannedPayment),
    Transfer(PlannedTransfer),
}

/// The accounts a lifecycle plan runs between.
pub struct Parties<'a> {
    pub customers: &'a [String],
    pub merchant: &'a str,
    pub platform: &'a str,
    pub currency: &'a str,
}

/// The lifecycle plan of a seed. The payments left to expire come first, so that their minute
/// starts as early as possible; the rest are shuffled by the seed.
pub fn plan(
    seed: u64,
    mix: &LifecycleMix,
    parties: &Parties<'_>,
    duplicate_rate: f64,
) -> Vec<Item> {
    let mut rng = Rng::new(seed, PLAN_STREAM);
    let payments =
        (0..mix.payments).map(|n| plan_payment(&mut rng, n, mix, parties, duplicate_rate));
    let (mut items, mut rest): (Vec<Item>, Vec<Item>) = payments
        .map(Item::Payment)
        .partition(|item| matches!(item, Item::Payment(p) if p.fate == Fate::Expire));
    rest.extend(
        (0..mix.transfers)
            .map(|n| Item::Transfer(plan_transfer(&mut rng, n, parties, duplicate_rate))),
    );
    // Fisher-Yates from the seed.
    for i in (1..rest.len()).rev() {
        rest.swap(i, rng.below(i as u32 + 1) as usize);
    }
    items.extend(rest);
    items
}

fn plan_payment(
    rng: &mut Rng,
    n: u64,
    mix: &LifecycleMix,
    parties: &Parties<'_>,
    duplicate_rate: f64,
) -> PlannedPayment {
    let source = parties.customers[rng.below(parties.customers.len() as u32) as usize].clone();
    let amount = 2 + u64::from(rng.below(999));
    let fate = if rng.unit() < mix.expire_rate {
        Fate::Expire
    } else {
        match rng.below(9) {
            0..=2 => Fate::Capture(None),
            3..=4 => Fate::Capture(Some(1 + rng.up_to(amount - 2))),
            5..=6 => Fate::Void,
            _ => Fate::Open,
        }
    };
    let later = |rng: &mut Rng| Later {
        key: Client::new_key(),
        duplicate: rng.unit() < duplicate_rate,
    };
    let authorize = NewAuthorization::new(
        NewCharge {
            source: source.clone(),
            destination: parties.merchant.to_owned(),
            amount,
            currency: parties.currency.to_owned(),
            metadata: [("payment".to_owned(), n.to_string())].into(),
        },
        (fate == Fate::Expire).then_some(EXPIRES_IN_SECS_MIN),
    )
    // The shortest expires_in is in range by definition.
    .unwrap_or_else(|e| unreachable!("{e}"));
    let authorize = Logical {
        operation: Operation::CreateCharge,
        key: Client::new_key(),
        body: load::body(&authorize),
        duplicate: rng.unit() < duplicate_rate,
        expect: CREATED,
    };
    let settle = matches!(fate, Fate::Capture(_) | Fate::Void).then(|| later(rng));
    let mut payment = PlannedPayment {
        authorize,
        source,
        destination: parties.merchant.to_owned(),
        amount,
        fate,
        settle,
        refund: None,
    };
    if let Some(captured) = payment.captured()
        && rng.unit() < REFUND_RATE
    {
        payment.refund = Some((later(rng), 1 + rng.up_to(captured - 1)));
    }
    payment
}

/// A sale with a platform fee: customer to merchant, then merchant to platform (at most what
/// the first leg brought, so the merchant's zero overdraft limit never declines it).
fn plan_transfer(
    rng: &mut Rng,
    n: u64,
    parties: &Parties<'_>,
    duplicate_rate: f64,
) -> PlannedTransfer {
    let source = parties.customers[rng.below(parties.customers.len() as u32) as usize].clone();
    let amount = 1 + u64::from(rng.below(1000));
    let fee = 1 + rng.up_to((amount / 10).max(1) - 1);
    let legs = [
        Leg {
            source,
            destination: parties.merchant.to_owned(),
            amount,
        },
        Leg {
            source: parties.merchant.to_owned(),
            destination: parties.platform.to_owned(),
            amount: fee,
        },
    ];
    let transfer = NewTransfer::new(
        parties.currency.to_owned(),
        legs.to_vec(),
        [("transfer".to_owned(), n.to_string())].into(),
    )
    // Two legs of valid ids and amounts 1..=1000.
    .unwrap_or_else(|e| unreachable!("{e}"));
    PlannedTransfer {
        send: Logical {
            operation: Operation::CreateTransfer,
            key: Client::new_key(),
            body: load::body(&transfer),
            duplicate: rng.unit() < duplicate_rate,
            expect: CREATED,
        },
        legs,
    }
}

/// What the plan must make the node count, each operation once.
pub fn counts(plan: &[Item]) -> LifecycleCounts {
    let mut counts = LifecycleCounts::default();
    for item in plan {
        match item {
            Item::Payment(p) => {
                counts.authorized += 1;
                match p.fate {
                    Fate::Capture(_) => counts.captured += 1,
                    Fate::Void => counts.canceled += 1,
                    Fate::Expire => counts.expired += 1,
                    Fate::Open => {}
                }
                counts.refunded += u64::from(p.refund.is_some());
            }
            Item::Transfer(_) => counts.transferred += 1,
        }
    }
    counts
}

/// The logical operations the client sends (each one key) and how many of them are sent by two
/// tasks at once. An expiry is the server's, not an operation sent.
pub fn operations(plan: &[Item]) -> (u64, u64) {
    let mut sent = (0, 0);
    let mut add = |duplicate: bool| {
        sent.0 += 1;
        sent.1 += u64::from(duplicate);
    };
    for item in plan {
        match item {
            Item::Payment(p) => {
                add(p.authorize.duplicate);
                let later = p.settle.iter().chain(p.refund.as_ref().map(|(r, _)| r));
                later.for_each(|l| add(l.duplicate));
            }
            Item::Transfer(t) => add(t.send.duplicate),
        }
    }
    sent
}

/// What the plan leaves on the accounts: captures, refunds and transfer legs posted, open
/// authorizations held; voided and expired ones leave nothing.
pub fn model(plan: &[Item], model: &mut Model) {
    for item in plan {
        match item {
            Item::Payment(p) => {
                if let Some(captured) = p.captured() {
                    model.post(&p.source, &p.destination, captured);
                }
                if p.fate == Fate::Open {
                    model.hold(&p.source, &p.destination, p.amount);
                }
                if let Some((_, refunded)) = &p.refund {
                    model.post(&p.destination, &p.source, *refunded);
                }
            }
            Item::Transfer(t) => {
                for leg in &t.legs {
                    model.post(&leg.source, &leg.destination, leg.amount);
                }
            }
        }
    }
}

/// Sends every planned item from `tasks` tasks: a payment's operations one after another (each
/// needs the authorization's id), different items at once.
pub async fn run(sender: &Sender, plan: Arc<Vec<Item>>, tasks: usize) {
    let sender = sender.clone();
    let stats = Arc::clone(&sender.stats);
    load::run_pool(plan.len(), tasks, &stats, move |index| {
        let (sender, plan) = (sender.clone(), Arc::clone(&plan));
        async move {
            match &plan[index] {
                Item::Payment(payment) => pay(&sender, payment).await,
                Item::Transfer(transfer) => {
                    sender.once(&transfer.send).await;
                }
            }
        }
    })
    .await;
}

/// Authorizes, then captures or voids, then refunds, as planned; stops at the first operation
/// without its answer (already counted as a failure).
async fn pay(sender: &Sender, payment: &PlannedPayment) {
    let Some(authorized) = sender.once(&payment.authorize).await else {
        return;
    };
    let id = match authorized["id"].as_str().map(ChargeId::new) {
        Some(Ok(id)) => id,
        _ => {
            let key = &payment.authorize.key;
            sender.stats.fail(format!(
                "authorization key {key}: no charge id in {authorized}"
            ));
            return;
        }
    };
    let (Some(settle), Some(settled)) = (&payment.settle, settle_request(payment.fate, &id)) else {
        return;
    };
    let (operation, body) = settled;
    let settle = Logical {
        operation,
        key: settle.key.clone(),
        body,
        duplicate: settle.duplicate,
        expect: SETTLED,
    };
    if sender.once(&settle).await.is_none() {
        return;
    }
    if let Some((refund, amount)) = &payment.refund {
        let body = load::body(&NewRefund {
            charge: id,
            amount: Some(*amount),
            metadata: Default::default(),
        });
        let refund = Logical {
            operation: Operation::CreateRefund,
            key: refund.key.clone(),
            body,
            duplicate: refund.duplicate,
            expect: CREATED,
        };
        sender.once(&refund).await;
    }
}

/// The capture or void of authorization `id`, for a fate that has one.
fn settle_request(fate: Fate, id: &ChargeId) -> Option<(Operation, Bytes)> {
    match fate {
        Fate::Capture(amount) => Some((
            Operation::CaptureCharge(id.clone()),
            load::body(&NewCapture { amount }),
        )),
        Fate::Void => Some((Operation::VoidCharge(id.clone()), load::body(&NewVoid {}))),
        Fate::Expire | Fate::Open => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parties(customers: &[String]) -> Parties<'_> {
        Parties {
            customers,
            merchant: "merchant",
            platform: "platform",
            currency: "EUR",
        }
    }

    /// Guards the plan: the expiring payments come first, every fate appears in a plan of a
    /// few hundred, refunds stay within their capture, fees within their first leg, and the
    /// counts and the model agree with the items.
    #[test]
    fn the_plan_has_every_fate_and_nothing_the_ledger_would_decline() {
        let customers: Vec<String> = (0..3).map(|i| format!("c{i}")).collect();
        let mix = LifecycleMix {
            payments: 300,
            transfers: 50,
            expire_rate: 0.1,
        };
        let plan = plan(42, &mix, &parties(&customers), 0.1);
        let counts = counts(&plan);
        assert_eq!(counts.authorized, 300);
        assert_eq!(counts.transferred, 50);
        for operation in LifecycleCounts::OPERATIONS {
            assert!(counts.get(operation) > 0, "no {operation} in the plan");
        }
        let expiring = counts.expired as usize;
        assert!(
            plan[..expiring]
                .iter()
                .all(|i| matches!(i, Item::Payment(p) if p.fate == Fate::Expire))
        );
        for item in &plan {
            match item {
                Item::Payment(p) => {
                    if let Fate::Capture(Some(part)) = p.fate {
                        assert!((1..p.amount).contains(&part));
                    }
                    if let Some((_, refund)) = p.refund {
                        assert!((1..=p.captured().unwrap_or(0)).contains(&refund));
                    }
                }
                Item::Transfer(t) => assert!((1..=t.legs[0].amount).contains(&t.legs[1].amount)),
            }
        }
        let (sent, duplicates) = operations(&plan);
        let settled = counts.captured + counts.canceled;
        assert_eq!(sent, 300 + settled + counts.refunded + 50);
        assert!(duplicates > 0 && duplicates < sent);
        let mut totals = Model::default();
        model(&plan, &mut totals);
        let pending: u64 = totals.accounts().map(|(_, t)| t.debits_pending).sum();
        let credited: u64 = totals.accounts().map(|(_, t)| t.credits_pending).sum();
        assert_eq!(pending, credited, "every hold has two sides");
    }
}
