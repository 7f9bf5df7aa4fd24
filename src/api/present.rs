//! JSON bodies of answers. The writer calls these inside its transaction, because a finished
//! request's body is stored and replayed byte for byte: what is rendered here once is what every
//! retry of that key receives.

use std::collections::BTreeMap;

use serde::Serialize;

use super::problem::{Problem, ProblemKind};
use crate::clock::rfc3339_ms;
use crate::ledger::{Account, Charge, Decline};
use crate::store::{Event, EventBody};

#[derive(Serialize)]
struct AccountView<'a> {
    id: &'a str,
    currency: &'a str,
    overdraft_limit: Option<u64>,
    debits_posted: u64,
    credits_posted: u64,
    debits_pending: u64,
    credits_pending: u64,
    balance: i64,
    available: i64,
    created_at: String,
}

impl<'a> From<&'a Account> for AccountView<'a> {
    fn from(a: &'a Account) -> Self {
        AccountView {
            id: a.id.as_str(),
            currency: a.currency.as_str(),
            overdraft_limit: a.overdraft_limit,
            debits_posted: a.debits_posted,
            credits_posted: a.credits_posted,
            debits_pending: a.debits_pending,
            credits_pending: a.credits_pending,
            balance: a.balance(),
            available: a.available(),
            created_at: rfc3339_ms(a.created_at_ms),
        }
    }
}

#[derive(Serialize)]
struct ChargeView<'a> {
    id: String,
    status: &'static str,
    source: &'a str,
    destination: &'a str,
    amount: u64,
    currency: &'a str,
    metadata: &'a BTreeMap<String, String>,
    created_at: String,
    event_seq: u64,
}

impl<'a> From<&'a Charge> for ChargeView<'a> {
    fn from(c: &'a Charge) -> Self {
        ChargeView {
            id: c.id(),
            status: "succeeded",
            source: c.source.as_str(),
            destination: c.destination.as_str(),
            amount: c.amount.minor(),
            currency: c.currency.as_str(),
            metadata: c.metadata.pairs(),
            created_at: rfc3339_ms(c.created_at_ms),
            event_seq: c.event_seq,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum EventData<'a> {
    Account(AccountView<'a>),
    Charge(ChargeView<'a>),
}

#[derive(Serialize)]
struct EventView<'a> {
    seq: u64,
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    created_at: String,
    data: EventData<'a>,
}

#[derive(Serialize)]
struct EventPage<'a> {
    events: Vec<EventView<'a>>,
    next_after: u64,
}

#[derive(Serialize)]
struct ProblemView<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
}

/// Serialising these plain structs into a Vec cannot fail: every map key is a string.
fn to_json(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec())
}

pub fn account(account: &Account) -> Vec<u8> {
    to_json(&AccountView::from(account))
}

pub fn charge(charge: &Charge) -> Vec<u8> {
    to_json(&ChargeView::from(charge))
}

pub fn events_page(node_id: &str, events: &[Event], after: u64) -> Vec<u8> {
    let views = events
        .iter()
        .map(|event| {
            let (kind, data) = match &event.body {
                EventBody::AccountCreated(a) => ("account.created", EventData::Account(a.into())),
                EventBody::ChargeSucceeded(c) => ("charge.succeeded", EventData::Charge(c.into())),
            };
            EventView {
                seq: event.seq,
                id: format!("{node_id}:{}", event.seq),
                kind,
                created_at: rfc3339_ms(event.created_at_ms),
                data,
            }
        })
        .collect();
    let next_after = events.last().map_or(after, |e| e.seq);
    to_json(&EventPage {
        events: views,
        next_after,
    })
}

pub fn problem(problem: &Problem) -> Vec<u8> {
    to_json(&ProblemView {
        kind: problem.kind.type_uri(),
        title: problem.kind.title(),
        status: problem.kind.status(),
        detail: &problem.detail,
    })
}

/// A decline as the stored answer: status and problem body.
pub fn decline(decline: &Decline) -> (u16, Vec<u8>) {
    let problem = match decline {
        Decline::InsufficientFunds { account } => Problem::new(
            ProblemKind::InsufficientFunds,
            format!(
                "account {account} cannot be debited that much: it would go below its overdraft limit"
            ),
        ),
        Decline::AccountNotFound { account } => Problem::new(
            ProblemKind::AccountNotFound,
            format!("account {account} does not exist"),
        ),
        Decline::CurrencyMismatch {
            account,
            account_currency,
            charge_currency,
        } => Problem::new(
            ProblemKind::CurrencyMismatch,
            format!(
                "account {account} holds {account_currency}, the charge is in {charge_currency}"
            ),
        ),
        Decline::AccountExists { account } => Problem::new(
            ProblemKind::AccountExists,
            format!("account {account} already exists"),
        ),
        Decline::BalanceOverflow { account } => Problem::new(
            ProblemKind::BalanceOverflow,
            format!("account {account} would exceed the largest posted total, 2^63-1"),
        ),
    };
    (problem.kind.status(), self::problem(&problem))
}
