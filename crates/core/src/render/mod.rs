//! JSON bodies of answers. The writer calls these inside its transaction, because a finished
//! request's body is stored and replayed byte for byte: what is rendered here once is what every
//! retry of that key receives.

use std::collections::BTreeMap;

use serde::Serialize;

mod lists;
pub mod problem;

use crate::clock::rfc3339_ms;
use crate::ledger::{
    Account, Charge, ChargeIds, ChargeProgress, ChargeStatus, Decline, EntryKind, Refund, Transfer,
    TransferLeg,
};
use crate::store::{DeadLetter, Event, EventBody, InboxOutcome, InboxRecord, OriginState};
pub use lists::{
    accounts_page, balance_as_of, charges_page, mirrored_postings_page, postings_page,
    refunds_page, transfers_page,
};
pub use problem::{Problem, ProblemKind};

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
    amount_captured: u64,
    amount_refunded: u64,
    refunded: bool,
    currency: &'a str,
    metadata: &'a BTreeMap<String, String>,
    created_at: String,
    /// Open authorizations only.
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<String>,
    event_seq: u64,
}

impl<'a> ChargeView<'a> {
    /// `ids` are the charge's own store's: the id is rendered, never stored with the charge.
    fn of(c: &'a Charge, progress: &ChargeProgress, ids: &ChargeIds) -> Self {
        ChargeView {
            id: ids.id_of(c.number),
            status: progress.status.as_str(),
            source: c.source.as_str(),
            destination: c.destination.as_str(),
            amount: c.amount.minor(),
            amount_captured: progress.amount_captured,
            amount_refunded: progress.amount_refunded,
            // Stripe's meaning: refunded in full.
            refunded: progress.amount_refunded > 0
                && progress.amount_refunded == progress.amount_captured,
            currency: c.currency.as_str(),
            metadata: c.metadata.pairs(),
            created_at: rfc3339_ms(c.created_at_ms),
            // Only while it can still expire: a settled authorization's is history.
            expires_at: progress
                .expires_at_ms
                .filter(|_| progress.status == ChargeStatus::Authorized)
                .map(rfc3339_ms),
            event_seq: c.event_seq,
        }
    }
}

#[derive(Serialize)]
struct RefundView<'a> {
    id: String,
    charge: String,
    amount: u64,
    currency: &'a str,
    status: &'static str,
    metadata: &'a BTreeMap<String, String>,
    created_at: String,
    event_seq: u64,
}

impl<'a> RefundView<'a> {
    fn of(r: &'a Refund, charge: &Charge, ids: &ChargeIds) -> Self {
        debug_assert_eq!(r.charge_number, charge.number);
        RefundView {
            id: ids.entry_id(EntryKind::Refund, r.number),
            charge: ids.id_of(charge.number),
            amount: r.amount.minor(),
            currency: r.currency.as_str(),
            status: "succeeded",
            metadata: r.metadata.pairs(),
            created_at: rfc3339_ms(r.created_at_ms),
            event_seq: r.event_seq,
        }
    }
}

#[derive(Serialize)]
struct LegView<'a> {
    source: &'a str,
    destination: &'a str,
    amount: u64,
}

impl<'a> From<&'a TransferLeg> for LegView<'a> {
    fn from(leg: &'a TransferLeg) -> Self {
        LegView {
            source: leg.source.as_str(),
            destination: leg.destination.as_str(),
            amount: leg.amount.minor(),
        }
    }
}

#[derive(Serialize)]
struct TransferView<'a> {
    id: String,
    status: &'static str,
    currency: &'a str,
    legs: Vec<LegView<'a>>,
    metadata: &'a BTreeMap<String, String>,
    created_at: String,
    event_seq: u64,
}

impl<'a> TransferView<'a> {
    fn of(t: &'a Transfer, ids: &ChargeIds) -> Self {
        TransferView {
            id: ids.entry_id(EntryKind::Transfer, t.number),
            status: "succeeded",
            currency: t.currency.as_str(),
            legs: t.legs.iter().map(LegView::from).collect(),
            metadata: t.metadata.pairs(),
            created_at: rfc3339_ms(t.created_at_ms),
            event_seq: t.event_seq,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum EventData<'a> {
    Account(AccountView<'a>),
    Charge(ChargeView<'a>),
    Refund(RefundView<'a>),
    Transfer(TransferView<'a>),
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
    /// The seqs still held: outbox retention deletes events every sink acknowledged.
    held: HeldRange,
}

#[derive(Serialize)]
struct HeldRange {
    first: u64,
    last: u64,
}

#[derive(Serialize)]
struct DeadLetterView<'a> {
    id: u64,
    status: &'static str,
    origin: &'a str,
    event_id: String,
    event_seq: u64,
    #[serde(rename = "type")]
    kind: &'static str,
    reason: &'a str,
    attempts: u32,
    parked_at: String,
    redriven_at: Option<String>,
}

impl<'a> From<&'a DeadLetter> for DeadLetterView<'a> {
    fn from(d: &'a DeadLetter) -> Self {
        DeadLetterView {
            id: d.id,
            status: if d.redriven_at_ms.is_some() {
                "redriven"
            } else {
                "parked"
            },
            origin: &d.origin,
            event_id: format!("{}:{}", d.origin, d.event.seq),
            event_seq: d.event.seq,
            kind: event_type(&d.event.body),
            reason: &d.reason,
            attempts: d.attempts,
            parked_at: rfc3339_ms(d.parked_at_ms),
            redriven_at: d.redriven_at_ms.map(rfc3339_ms),
        }
    }
}

/// The event's `type`, as `/v1/events` and dead letters show it.
pub fn event_type_name(body: &EventBody) -> &'static str {
    event_type(body)
}

fn event_type(body: &EventBody) -> &'static str {
    match body {
        EventBody::AccountCreated(_) => "account.created",
        EventBody::ChargeSucceeded(_) => "charge.succeeded",
        EventBody::ChargeAuthorized { .. } => "charge.authorized",
        EventBody::ChargeSettled { status, .. } => match status {
            ChargeStatus::Succeeded => "charge.captured",
            ChargeStatus::Canceled => "charge.canceled",
            // An authorization never settles into `authorized`; shown as what it would mean.
            ChargeStatus::Expired | ChargeStatus::Authorized => "charge.expired",
        },
        EventBody::RefundSucceeded { .. } => "refund.succeeded",
        EventBody::TransferSucceeded(_) => "transfer.succeeded",
    }
}

/// An event's data, with the entry as it was at the event: a charge's later capture or refunds
/// do not change what its `charge.authorized` showed.
fn event_data<'a>(body: &'a EventBody, ids: &ChargeIds) -> EventData<'a> {
    match body {
        EventBody::AccountCreated(a) => EventData::Account(a.into()),
        EventBody::ChargeSucceeded(c) => {
            EventData::Charge(ChargeView::of(c, &ChargeProgress::immediate(c), ids))
        }
        EventBody::ChargeAuthorized {
            charge,
            expires_at_ms,
        } => EventData::Charge(ChargeView::of(
            charge,
            &ChargeProgress::authorized(*expires_at_ms),
            ids,
        )),
        EventBody::ChargeSettled {
            charge,
            status,
            amount_captured,
        } => {
            let progress = ChargeProgress {
                status: *status,
                amount_captured: *amount_captured,
                amount_refunded: 0,
                expires_at_ms: None,
                settled: None,
            };
            EventData::Charge(ChargeView::of(charge, &progress, ids))
        }
        EventBody::RefundSucceeded { refund, charge } => {
            EventData::Refund(RefundView::of(refund, charge, ids))
        }
        EventBody::TransferSucceeded(t) => EventData::Transfer(TransferView::of(t, ids)),
    }
}

#[derive(Serialize)]
struct ProblemView<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    /// A declined transfer's failing leg, from 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    leg: Option<usize>,
}

/// Serialising these plain structs into a Vec cannot fail: every map key is a string.
fn to_json(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec())
}

pub fn account(account: &Account) -> Vec<u8> {
    to_json(&AccountView::from(account))
}

/// A charge as its answers and `GET /v1/charges/{id}` show it, named by its store's `ids`.
pub fn charge(charge: &Charge, progress: &ChargeProgress, ids: &ChargeIds) -> Vec<u8> {
    to_json(&ChargeView::of(charge, progress, ids))
}

pub fn refund(refund: &Refund, charge: &Charge, ids: &ChargeIds) -> Vec<u8> {
    to_json(&RefundView::of(refund, charge, ids))
}

pub fn transfer(transfer: &Transfer, ids: &ChargeIds) -> Vec<u8> {
    to_json(&TransferView::of(transfer, ids))
}

/// This node's own events (`ids` are its store's): a hub's mirrored charges never come here.
pub fn events_page(
    node_id: &str,
    events: &[Event],
    after: u64,
    held: (u64, u64),
    ids: &ChargeIds,
) -> Vec<u8> {
    let views = events
        .iter()
        .map(|event| {
            let data = event_data(&event.body, ids);
            EventView {
                seq: event.seq,
                id: format!("{node_id}:{}", event.seq),
                kind: event_type(&event.body),
                created_at: rfc3339_ms(event.created_at_ms),
                data,
            }
        })
        .collect();
    let next_after = events.last().map_or(after, |e| e.seq);
    to_json(&EventPage {
        events: views,
        next_after,
        held: HeldRange {
            first: held.0,
            last: held.1,
        },
    })
}

pub fn dead_letter(letter: &DeadLetter) -> Vec<u8> {
    to_json(&DeadLetterView::from(letter))
}

pub fn dead_letters_page(letters: &[DeadLetter], after: u64) -> Vec<u8> {
    #[derive(Serialize)]
    struct Page<'a> {
        dead_letters: Vec<DeadLetterView<'a>>,
        next_after: u64,
    }
    to_json(&Page {
        dead_letters: letters.iter().map(DeadLetterView::from).collect(),
        next_after: letters.last().map_or(after, |d| d.id),
    })
}

/// What a hub fed by a JetStream stream (`onceledger consume`) adds to its origins page: the
/// partition of the fleet it applies, and the origins it cannot go on with because the stream no
/// longer holds their next event. Plain values: the server's consumer keeps them up to date.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HubFeed {
    pub partition: FeedPartition,
    pub missing_from_stream: Vec<MissingFromStream>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FeedPartition {
    /// `K` of `--partition K/N`.
    pub index: u32,
    /// `N` of `--partition K/N`.
    pub count: u32,
    pub stream: String,
    pub durable: String,
    /// The consumer's JetStream filter subject; empty with one partition (every subject).
    pub filter_subject: String,
}

/// One origin whose next event (`needed_seq`) the stream does not hold: its first held event on
/// this partition's subject is `first_held_seq`. Retention removed the events between, or they
/// were published on another partition's subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MissingFromStream {
    pub node: String,
    pub needed_seq: u64,
    pub first_held_seq: u64,
    /// RFC 3339: when the consumer found it.
    pub since: String,
}

/// `GET /v1/replication/origins`. `feed` is `None` on a hub fed over HTTP only (`partition` is
/// then `null`).
pub fn origins(origins: &[(String, OriginState)], feed: Option<&HubFeed>) -> Vec<u8> {
    #[derive(Serialize)]
    struct OriginView<'a> {
        node: &'a str,
        applied_through: u64,
        events_applied: u64,
        events_parked: u64,
        last_applied_at: Option<String>,
    }
    #[derive(Serialize)]
    struct Page<'a> {
        origins: Vec<OriginView<'a>>,
        partition: Option<&'a FeedPartition>,
        missing_from_stream: &'a [MissingFromStream],
    }
    to_json(&Page {
        partition: feed.map(|f| &f.partition),
        missing_from_stream: feed.map_or(&[], |f| &f.missing_from_stream),
        origins: origins
            .iter()
            .map(|(node, state)| OriginView {
                node,
                applied_through: state.applied_through,
                events_applied: state.events_applied,
                events_parked: state.events_parked,
                last_applied_at: (state.last_applied_at_ms > 0)
                    .then(|| rfc3339_ms(state.last_applied_at_ms)),
            })
            .collect(),
    })
}

pub fn inbox_page(rows: &[(u64, InboxRecord)], after: u64) -> Vec<u8> {
    #[derive(Serialize)]
    struct RowView {
        seq: u64,
        applied_index: u64,
        outcome: &'static str,
        dead_letter_id: Option<u64>,
        at: String,
    }
    #[derive(Serialize)]
    struct Page {
        inbox: Vec<RowView>,
        next_after: u64,
    }
    to_json(&Page {
        inbox: rows
            .iter()
            .map(|(seq, row)| {
                let (outcome, dead_letter_id) = match row.outcome {
                    InboxOutcome::Applied => ("applied", None),
                    InboxOutcome::DeadLettered { dead_letter_id } => {
                        ("dead_lettered", Some(dead_letter_id))
                    }
                };
                RowView {
                    seq: *seq,
                    applied_index: row.applied_index,
                    outcome,
                    dead_letter_id,
                    at: rfc3339_ms(row.at_ms),
                }
            })
            .collect(),
        next_after: rows.last().map_or(after, |(seq, _)| *seq),
    })
}

pub fn health(node_id: &str) -> Vec<u8> {
    #[derive(Serialize)]
    struct Health<'a> {
        status: &'static str,
        node_id: &'a str,
    }
    to_json(&Health {
        status: "ok",
        node_id,
    })
}

pub fn ack(ack: &crate::wire::Ack) -> Vec<u8> {
    crate::wire::encode_ack(ack)
}

pub fn problem(problem: &Problem) -> Vec<u8> {
    problem_with_leg(problem, None)
}

fn problem_with_leg(problem: &Problem, leg: Option<usize>) -> Vec<u8> {
    to_json(&ProblemView {
        kind: problem.kind.type_uri(),
        title: problem.kind.title(),
        status: problem.kind.status(),
        detail: &problem.detail,
        leg,
    })
}

/// A decline as the stored answer: status and problem body. A transfer's names its leg.
pub fn decline(decline: &Decline) -> (u16, Vec<u8>) {
    let (problem, leg) = match decline {
        Decline::TransferLeg { leg, decline } => {
            let mut problem = decline_problem(decline);
            problem.detail = format!("leg {leg}: {}", problem.detail);
            (problem, Some(*leg))
        }
        other => (decline_problem(other), None),
    };
    (problem.kind.status(), problem_with_leg(&problem, leg))
}

fn decline_problem(decline: &Decline) -> Problem {
    match decline {
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
        Decline::DeadLetterNotFound { .. } => {
            Problem::new(ProblemKind::DeadLetterNotFound, decline.to_string())
        }
        Decline::RedriveRefused { .. } => {
            Problem::new(ProblemKind::RedriveRefused, decline.to_string())
        }
        Decline::TenantExists { .. } => {
            Problem::new(ProblemKind::TenantExists, decline.to_string())
        }
        Decline::TenantNotFound { .. } => {
            Problem::new(ProblemKind::TenantNotFound, decline.to_string())
        }
        Decline::TokenNotFound { .. } => {
            Problem::new(ProblemKind::TokenNotFound, decline.to_string())
        }
        Decline::ChargeNotFound { .. } => {
            Problem::new(ProblemKind::ChargeNotFound, decline.to_string())
        }
        Decline::ChargeStateInvalid { status } => Problem::new(
            ProblemKind::ChargeStateInvalid,
            format!("the charge is {}", status.as_str()),
        ),
        Decline::CaptureExceedsAuthorization { .. } => Problem::new(
            ProblemKind::CaptureExceedsAuthorization,
            decline.to_string(),
        ),
        Decline::RefundExceedsCharge { .. } => {
            Problem::new(ProblemKind::RefundExceedsCharge, decline.to_string())
        }
        // Nested legs do not happen (a leg is never a transfer); shown plainly if they did.
        Decline::TransferLeg { decline, .. } => decline_problem(decline),
        // The writer turns it into a storage error before anything is stored.
        Decline::HoldInconsistent { .. } => {
            Problem::new(ProblemKind::Internal, decline.to_string())
        }
    }
}

pub fn tenant(tenant: &crate::store::TenantRecord) -> Vec<u8> {
    to_json(&TenantView::from(tenant))
}

pub fn tenants_page(tenants: &[crate::store::TenantRecord]) -> Vec<u8> {
    #[derive(Serialize)]
    struct Page<'a> {
        tenants: Vec<TenantView<'a>>,
    }
    to_json(&Page {
        tenants: tenants.iter().map(TenantView::from).collect(),
    })
}

#[derive(Serialize)]
struct TenantView<'a> {
    id: u32,
    name: &'a str,
    created_at: String,
}

impl<'a> From<&'a crate::store::TenantRecord> for TenantView<'a> {
    fn from(t: &'a crate::store::TenantRecord) -> Self {
        TenantView {
            id: t.id,
            name: &t.name,
            created_at: rfc3339_ms(t.created_at_ms),
        }
    }
}

/// A token as listed and as stored in a creation's idempotency record: never the secret.
pub fn token(token: &crate::store::TokenRecord, tenant_name: &str) -> Vec<u8> {
    to_json(&TokenView::of(token, tenant_name))
}

/// `names`: tenant id → name.
pub fn tokens_page(
    tokens: &[crate::store::TokenRecord],
    names: &std::collections::HashMap<u32, String>,
) -> Vec<u8> {
    #[derive(Serialize)]
    struct Page<'a> {
        tokens: Vec<TokenView<'a>>,
    }
    to_json(&Page {
        tokens: tokens
            .iter()
            .map(|t| TokenView::of(t, names.get(&t.tenant).map_or("?", String::as_str)))
            .collect(),
    })
}

#[derive(Serialize)]
struct TokenView<'a> {
    id: u64,
    tenant: &'a str,
    role: &'static str,
    prefix: &'a str,
    created_at: String,
    revoked_at: Option<String>,
}

impl<'a> TokenView<'a> {
    fn of(t: &'a crate::store::TokenRecord, tenant: &'a str) -> Self {
        TokenView {
            id: t.id,
            tenant,
            role: t.role.as_str(),
            prefix: &t.prefix,
            created_at: rfc3339_ms(t.created_at_ms),
            revoked_at: t.revoked_at_ms.map(rfc3339_ms),
        }
    }
}

/// The first answer to a token creation: the stored body plus the secret, which is shown this
/// once and stored nowhere (a replay of the same key answers the stored body, without it).
pub fn with_secret(stored_body: &[u8], secret: &str) -> Vec<u8> {
    // The stored body is a JSON object rendered by `token`; the secret is `olt_` and hex, which
    // needs no escaping. Appending keeps the stored fields in their order.
    match stored_body.strip_suffix(b"}") {
        Some(open) => {
            let mut body = open.to_vec();
            body.extend_from_slice(format!(",\"token\":\"{secret}\"}}").as_bytes());
            body
        }
        None => stored_body.to_vec(),
    }
}
