//! JSON bodies of answers. The writer calls these inside its transaction, because a finished
//! request's body is stored and replayed byte for byte: what is rendered here once is what every
//! retry of that key receives.

use std::collections::BTreeMap;

use serde::Serialize;

pub mod problem;

use crate::clock::rfc3339_ms;
use crate::ledger::{Account, Charge, ChargeIds, Decline};
use crate::store::{DeadLetter, Event, EventBody, InboxOutcome, InboxRecord, OriginState};
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
    currency: &'a str,
    metadata: &'a BTreeMap<String, String>,
    created_at: String,
    event_seq: u64,
}

impl<'a> ChargeView<'a> {
    /// `ids` are the charge's own store's: the id is rendered, never stored with the charge.
    fn of(c: &'a Charge, ids: &ChargeIds) -> Self {
        ChargeView {
            id: ids.id_of(c.number),
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

fn event_type(body: &EventBody) -> &'static str {
    match body {
        EventBody::AccountCreated(_) => "account.created",
        EventBody::ChargeSucceeded(_) => "charge.succeeded",
    }
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

/// A charge as its 201 answer and `GET /v1/charges/{id}` show it, named by its store's `ids`.
pub fn charge(charge: &Charge, ids: &ChargeIds) -> Vec<u8> {
    to_json(&ChargeView::of(charge, ids))
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
            let data = match &event.body {
                EventBody::AccountCreated(a) => EventData::Account(a.into()),
                EventBody::ChargeSucceeded(c) => EventData::Charge(ChargeView::of(c, ids)),
            };
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
    };
    (problem.kind.status(), self::problem(&problem))
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
