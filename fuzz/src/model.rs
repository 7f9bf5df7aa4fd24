//! ledger_model: a sequence of operations against the real store, writer and idempotency steps,
//! compared with a small in-memory reference model after every step.
//!
//! Operations: create an account, charge, authorize (a charge with `"capture": false`), capture
//! (all of the hold, part of it, or more), void, refund (part, the rest, too much), transfer (one
//! to three legs, each on the balances the legs before it left), retry an earlier request (also
//! re-formatted: other key order and whitespace), retry with a changed body, send a burst of
//! requests at once (one writer batch), arm a one-shot storage fault, and stop the store (power
//! loss, process kill or a clean stop) and open it again. Every input ends with a power loss and
//! a reopen: nothing acknowledged may be lost.
//!
//! Captures, voids and refunds name a charge by an id that an earlier answer gave (the model
//! learns each one from the answer that created it), picked by a selector, newest first; or an
//! id that names no charge: one never issued, the legacy form of charge 1 (refused, since this
//! store's ids are opaque from 1 on), or a refund's or transfer's id.
//!
//! What must match the model: each answer's status, replays byte for byte with
//! `Idempotent-Replayed`, the fields of each new answer (a decline's type, status, detail and a
//! transfer's failing `leg`), every account's four totals and `available`, every charge's status
//! and its captured and refunded amounts, every stored answer, the outbox (dense, in order, one
//! event per account, charge, settlement, refund and transfer), and the invariant checker.
//!
//! **No authorization expires within an input.** Expiry is the writer's, against the wall clock;
//! an input that waited for it would run a minute at least (60 s is the shortest `expires_in`),
//! and `test_clock::set_authorization_second_ms` shortens every authorization of the process at
//! once, so the moment of expiry would depend on how fast the input ran, not on its bytes. So
//! authorizations take the default TTL (7 days), an hour, or 30 days (`EXPIRIES`), each far
//! longer than an input; the model checks each one's `expires_at - created_at`, and that it is
//! still `authorized` at every restart. Expiry itself is covered by `tests/it/lifecycle.rs`.
//!
//! A request answered 503 after the writer failed a commit is *uncertain*: redb may have made the
//! batch durable before the failing I/O, and the contract (docs/CONTRACT-NOTES.md) says a 503
//! means "outcome unknown; retry with the same key". The model accepts both outcomes and resolves
//! the key on its next observation: a retry answered from a stored record (a replay, or a 422 for
//! a changed body), or the reopen, where the store decides. If the key's record is there, the
//! model applies the request then (and checks the record against what the request would have
//! done), otherwise it never happened. Either way the request's effects appear at most once, and
//! no acknowledged request may be missing.
//!
//! The input is a byte code, not an `Arbitrary` derive, so seeds can be written by hand
//! ([`Op::encode`]) and a mutated byte changes one operation, not the framing of all that follow.

mod expect;
mod reference;

use std::ops::RangeInclusive;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method};
use onceledger_core::ledger::TenantId;
use onceledger_core::limits::{
    AMOUNT_MINOR_MAX, AUTHORIZATION_EXPIRES_IN_S_MAX, AUTHORIZATION_EXPIRES_IN_S_MIN,
};
use onceledger_server::api::{ApiRequest, WriteIntent, parse_request};
use serde_json::json;

use crate::backend::FaultKind;
use crate::system::{Answer, Crossings, Stop, System};
use expect::{check_balances, check_new_body, check_store, problem_type};
use reference::{Expected, Model, Uncertain};

/// Operations per input at most: enough for a few accounts, charges, retries and restarts, and,
/// with the store's small marks (`Marks::SMALL`), for several checkpoints, account flushes and key
/// merges with crashes between them (32 reached a checkpoint or two, rarely a flush twice).
pub const OPS_MAX: usize = 64;
/// Requests sent together in one burst at most (the writer's batch holds more).
pub const BURST_MAX: usize = 4;
/// Account ids; "x.y:z-9_" uses every punctuation character the pattern allows.
pub const ACCOUNT_IDS: [&str; 4] = ["alice", "bank", "shop", "x.y:z-9_"];
/// Idempotency keys k0..k15: few enough that retries and reuse are common, enough that an input
/// finishes keys past the key merge's mark and charges past the account flush's more than once
/// (each finished key is one commit; six kept an input below most marks). A divisor of 128, so
/// the quoted form of a selector (its high bit) names the same key.
pub const KEYS_COUNT: u8 = 16;
/// Amounts by selector: small ones, the largest valid ones, and two the parser refuses.
pub const AMOUNTS: [u64; 10] = [
    1,
    7,
    50,
    100,
    1000,
    9_999,
    AMOUNT_MINOR_MAX,
    AMOUNT_MINOR_MAX - 1,
    0,
    u64::MAX,
];
/// Currencies by selector; the lower-case one is refused by the parser.
pub const CURRENCIES: [&str; 5] = ["EUR", "EUR", "EUR", "USD", "eur"];
/// Overdraft limits by selector; `Absent` leaves the field out (meaning 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Value(u64),
    Unlimited,
    Absent,
}
pub const LIMITS: [Limit; 5] = [
    Limit::Value(0),
    Limit::Unlimited,
    Limit::Value(100),
    Limit::Value(AMOUNT_MINOR_MAX),
    Limit::Absent,
];

/// How an authorization's body ends, by selector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// `"capture": false` alone: the default TTL (7 days).
    Default,
    /// `"capture": false, "expires_in": N`: valid ones are an hour or more, so that none expires
    /// within an input (see the module's doc); 59 and 2592001 are refused by the parser.
    ExpiresIn(u64),
    /// `"capture": true`: an immediate charge after all.
    CaptureTrue,
}
pub const EXPIRIES: [Expiry; 6] = [
    Expiry::Default,
    Expiry::ExpiresIn(3600),
    Expiry::ExpiresIn(AUTHORIZATION_EXPIRES_IN_S_MAX),
    Expiry::Default,
    Expiry::ExpiresIn(AUTHORIZATION_EXPIRES_IN_S_MIN - 1),
    Expiry::ExpiresIn(AUTHORIZATION_EXPIRES_IN_S_MAX + 1),
];
const _: () = assert!(3600 >= 60 * AUTHORIZATION_EXPIRES_IN_S_MIN);

/// A capture's amount by selector, from the hold of the charge it names (100 for an id that
/// names none): absent (all of it), all, about half, 1, one more than the hold, and 0 (refused
/// by the parser; so is one more than the largest hold).
pub const CAPTURES: usize = 6;
fn capture_amount(selector: u8, held: u64) -> Option<u64> {
    match usize::from(selector) % CAPTURES {
        0 => None,
        1 => Some(held),
        2 => Some(held.div_ceil(2)),
        3 => Some(1),
        4 => Some(held + 1),
        _ => Some(0),
    }
}

/// A refund's amount by selector, from what is left to refund of the charge it names when the
/// request is made (100 for an id that names none): absent (the rest), the rest (at least 1), 1,
/// one more than the rest, the largest amount, and 0 (refused by the parser).
pub const REFUNDS: usize = 6;
fn refund_amount(selector: u8, refundable: u64) -> Option<u64> {
    match usize::from(selector) % REFUNDS {
        0 => None,
        1 => Some(refundable.max(1)),
        2 => Some(1),
        3 => Some(refundable + 1),
        4 => Some(AMOUNT_MINOR_MAX),
        _ => Some(0),
    }
}

/// Charge ids that name no charge: one never issued (26 base32 digits, like an opaque id), and
/// the legacy form of charge 1, which a store whose ids are opaque from 1 on refuses.
pub const UNKNOWN_CHARGE_IDS: [&str; 2] = ["ch_aaaaaaaaaaaaaaaaaaaaaaaaaa", "ch_0000000000000001"];
/// The hold or refundable amount assumed for an id that names no charge.
const UNKNOWN_CHARGE_AMOUNT: u64 = 100;

// ---------------------------------------------------------------------------------------------
// The operations and their byte code.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// POST /v1/accounts.
    CreateAccount(AccountSpec),
    /// POST /v1/charges.
    Charge(ChargeSpec),
    /// Sends the `nth` earlier request again with its key; `reformat` changes key order and
    /// whitespace, which must not change its meaning.
    Retry { nth: u8, reformat: bool },
    /// Sends the `nth` earlier request's key with a different body.
    RetryChanged { nth: u8 },
    /// The next `count` request operations are sent together, before any answer is read.
    Burst { count: u8 },
    /// The `after`-th storage operation from now fails, once.
    ArmFault { after: u8, lose_pages: bool },
    /// Stops the store and opens it again.
    Restart { how: u8 },
    /// POST /v1/charges with `"capture": false`.
    Authorize(AuthorizeSpec),
    /// POST /v1/charges/{id}/capture.
    Capture(CaptureSpec),
    /// POST /v1/charges/{id}/void.
    Void(VoidSpec),
    /// POST /v1/refunds.
    Refund(RefundSpec),
    /// POST /v1/transfers.
    Transfer(TransferSpec),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountSpec {
    pub key: u8,
    pub account: u8,
    pub currency: u8,
    pub limit: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChargeSpec {
    pub key: u8,
    pub source: u8,
    pub destination: u8,
    pub amount: u8,
    pub currency: u8,
    pub metadata: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthorizeSpec {
    pub charge: ChargeSpec,
    /// Into [`EXPIRIES`].
    pub expires: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureSpec {
    pub key: u8,
    /// Which charge: see [`Op`]'s doc and `Run::charge_id`.
    pub charge: u8,
    /// See [`capture_amount`].
    pub amount: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VoidSpec {
    pub key: u8,
    pub charge: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefundSpec {
    pub key: u8,
    pub charge: u8,
    /// See [`refund_amount`].
    pub amount: u8,
    pub metadata: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegSpec {
    pub source: u8,
    pub destination: u8,
    pub amount: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferSpec {
    pub key: u8,
    pub currency: u8,
    /// `1 + legs % TRANSFER_LEGS` of `leg` are sent.
    pub legs: u8,
    pub leg: [LegSpec; TRANSFER_LEGS],
    pub metadata: u8,
}

/// Legs of a transfer at most (the API allows 16; three are enough for a later leg to fail on
/// what an earlier one did).
pub const TRANSFER_LEGS: usize = 3;

/// The opcodes of the operations that came first; a byte `b` outside the ranges below is opcode
/// `b % 7`, as it always was.
const OPCODES_FIRST: u8 = 7;
/// The lifecycle operations' own opcodes, 7 to 11 (what `encode` writes).
const OPCODES_LIFECYCLE: RangeInclusive<u8> = 7..=11;
/// More bytes that decode as lifecycle operations (`7 + (b - 136) % 5`), so that a random byte
/// picks one about a third of the time. No input committed before these operations existed uses
/// one of 7..=11 or 136..=223 as an opcode (`tests/seeds.rs` checks that those inputs decode as
/// they did), so every committed input means what it meant.
const OPCODES_LIFECYCLE_ALIASES: RangeInclusive<u8> = 136..=223;

fn opcode(byte: u8) -> u8 {
    let lifecycle = *OPCODES_LIFECYCLE.start();
    let count = OPCODES_LIFECYCLE.end() - lifecycle + 1;
    if OPCODES_LIFECYCLE.contains(&byte) {
        byte
    } else if OPCODES_LIFECYCLE_ALIASES.contains(&byte) {
        lifecycle + (byte - OPCODES_LIFECYCLE_ALIASES.start()) % count
    } else {
        byte % OPCODES_FIRST
    }
}

/// Reads bytes for the operations; past the end every byte reads as 0.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&first, rest)) => {
                self.0 = rest;
                first
            }
            None => 0,
        }
    }
}

impl Op {
    /// Decodes up to [`OPS_MAX`] operations: an opcode byte, then a fixed number of argument bytes.
    pub fn decode_all(data: &[u8]) -> Vec<Op> {
        let mut reader = Reader(data);
        let mut ops = Vec::new();
        while !reader.0.is_empty() && ops.len() < OPS_MAX {
            ops.push(Op::decode(&mut reader));
        }
        ops
    }

    /// Whether this is one of the lifecycle operations (opcodes 7 to 11).
    pub fn is_lifecycle(&self) -> bool {
        matches!(
            self,
            Op::Authorize(_) | Op::Capture(_) | Op::Void(_) | Op::Refund(_) | Op::Transfer(_)
        )
    }

    fn decode(r: &mut Reader<'_>) -> Op {
        match opcode(r.byte()) {
            0 => Op::CreateAccount(AccountSpec {
                key: r.byte(),
                account: r.byte(),
                currency: r.byte(),
                limit: r.byte(),
            }),
            1 => Op::Charge(charge_spec(r)),
            2 => Op::Retry {
                nth: r.byte(),
                reformat: r.byte() & 1 == 1,
            },
            3 => Op::RetryChanged { nth: r.byte() },
            4 => Op::Burst { count: r.byte() },
            5 => Op::ArmFault {
                after: r.byte(),
                lose_pages: r.byte() & 1 == 1,
            },
            6 => Op::Restart { how: r.byte() },
            7 => Op::Authorize(AuthorizeSpec {
                charge: charge_spec(r),
                expires: r.byte(),
            }),
            8 => Op::Capture(CaptureSpec {
                key: r.byte(),
                charge: r.byte(),
                amount: r.byte(),
            }),
            9 => Op::Void(VoidSpec {
                key: r.byte(),
                charge: r.byte(),
            }),
            10 => Op::Refund(RefundSpec {
                key: r.byte(),
                charge: r.byte(),
                amount: r.byte(),
                metadata: r.byte(),
            }),
            _ => Op::Transfer(TransferSpec {
                key: r.byte(),
                currency: r.byte(),
                legs: r.byte(),
                leg: [(); TRANSFER_LEGS].map(|()| LegSpec {
                    source: r.byte(),
                    destination: r.byte(),
                    amount: r.byte(),
                }),
                metadata: r.byte(),
            }),
        }
    }

    /// The inverse of `decode`, for writing seed files.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let charge = |c: ChargeSpec| {
            [
                c.key,
                c.source,
                c.destination,
                c.amount,
                c.currency,
                c.metadata,
            ]
        };
        match *self {
            Op::CreateAccount(a) => out.extend([0, a.key, a.account, a.currency, a.limit]),
            Op::Charge(c) => {
                out.push(1);
                out.extend(charge(c));
            }
            Op::Retry { nth, reformat } => out.extend([2, nth, u8::from(reformat)]),
            Op::RetryChanged { nth } => out.extend([3, nth]),
            Op::Burst { count } => out.extend([4, count]),
            Op::ArmFault { after, lose_pages } => out.extend([5, after, u8::from(lose_pages)]),
            Op::Restart { how } => out.extend([6, how]),
            Op::Authorize(a) => {
                out.push(7);
                out.extend(charge(a.charge));
                out.push(a.expires);
            }
            Op::Capture(c) => out.extend([8, c.key, c.charge, c.amount]),
            Op::Void(v) => out.extend([9, v.key, v.charge]),
            Op::Refund(r) => out.extend([10, r.key, r.charge, r.amount, r.metadata]),
            Op::Transfer(t) => {
                out.extend([11, t.key, t.currency, t.legs]);
                for leg in t.leg {
                    out.extend([leg.source, leg.destination, leg.amount]);
                }
                out.push(t.metadata);
            }
        }
    }

    pub fn encode_all(ops: &[Op]) -> Vec<u8> {
        let mut out = Vec::new();
        for op in ops {
            op.encode(&mut out);
        }
        out
    }
}

fn charge_spec(r: &mut Reader<'_>) -> ChargeSpec {
    ChargeSpec {
        key: r.byte(),
        source: r.byte(),
        destination: r.byte(),
        amount: r.byte(),
        currency: r.byte(),
        metadata: r.byte(),
    }
}

// ---------------------------------------------------------------------------------------------
// Requests as a client sends them.

/// A request's body, with every selector that depends on the model's state (which charge, how
/// much of it) resolved when the request was first made, so that a retry sends the same one.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Body {
    Account(AccountSpec),
    Charge(ChargeSpec),
    Authorize(AuthorizeSpec),
    Capture {
        charge: String,
        amount: Option<u64>,
    },
    Void {
        charge: String,
    },
    Refund {
        charge: String,
        amount: Option<u64>,
        metadata: u8,
    },
    Transfer(TransferSpec),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Request {
    /// Low bits: which key; the high bit sends it in the Structured Field string form, which
    /// must mean the same key.
    key: u8,
    body: Body,
    /// Field order and whitespace of the body; never part of the request's meaning.
    reformat: bool,
}

fn pick<T: Copy>(choices: &[T], selector: u8) -> T {
    choices[usize::from(selector) % choices.len()]
}

fn key_name(selector: u8) -> String {
    format!("k{}", selector % KEYS_COUNT)
}

fn json_text(value: &str) -> String {
    json!(value).to_string()
}

fn invalid_amount(amount: u64) -> bool {
    amount == 0 || amount > AMOUNT_MINOR_MAX
}

impl TransferSpec {
    fn legs(&self) -> &[LegSpec] {
        &self.leg[..1 + usize::from(self.legs) % TRANSFER_LEGS]
    }
}

impl Request {
    fn path(&self) -> String {
        match &self.body {
            Body::Account(_) => "/v1/accounts".into(),
            Body::Charge(_) | Body::Authorize(_) => "/v1/charges".into(),
            Body::Capture { charge, .. } => format!("/v1/charges/{charge}/capture"),
            Body::Void { charge } => format!("/v1/charges/{charge}/void"),
            Body::Refund { .. } => "/v1/refunds".into(),
            Body::Transfer(_) => "/v1/transfers".into(),
        }
    }

    fn headers(&self) -> HeaderMap {
        let name = key_name(self.key);
        let value = if self.key & 0x80 != 0 {
            format!("\"{name}\"")
        } else {
            name
        };
        let mut headers = HeaderMap::new();
        headers.insert(
            "content-type",
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        match HeaderValue::from_str(&value) {
            Ok(value) => headers.insert("idempotency-key", value),
            Err(error) => panic!("key {value:?}: {error}"),
        };
        headers
    }

    /// The body's fields as (name, JSON text), in the order a client would write them.
    fn fields(&self) -> Vec<(&'static str, String)> {
        match &self.body {
            Body::Account(a) => {
                let mut fields = vec![
                    ("id", json_text(pick(&ACCOUNT_IDS, a.account))),
                    ("currency", json_text(pick(&CURRENCIES, a.currency))),
                ];
                match pick(&LIMITS, a.limit) {
                    Limit::Value(limit) => fields.push(("overdraft_limit", limit.to_string())),
                    Limit::Unlimited => fields.push(("overdraft_limit", "null".into())),
                    Limit::Absent => {}
                }
                fields
            }
            Body::Charge(c) => self.charge_fields(c),
            Body::Authorize(a) => {
                let mut fields = self.charge_fields(&a.charge);
                match pick(&EXPIRIES, a.expires) {
                    Expiry::Default => fields.push(("capture", "false".into())),
                    Expiry::ExpiresIn(seconds) => {
                        fields.push(("capture", "false".into()));
                        fields.push(("expires_in", seconds.to_string()));
                    }
                    Expiry::CaptureTrue => fields.push(("capture", "true".into())),
                }
                fields
            }
            Body::Capture { amount, .. } => amount
                .map(|amount| ("amount", amount.to_string()))
                .into_iter()
                .collect(),
            Body::Void { .. } => Vec::new(),
            Body::Refund {
                charge,
                amount,
                metadata: selector,
            } => {
                let mut fields = vec![("charge", json_text(charge))];
                if let Some(amount) = amount {
                    fields.push(("amount", amount.to_string()));
                }
                self.push_metadata(&mut fields, *selector);
                fields
            }
            Body::Transfer(t) => self.transfer_fields(t),
        }
    }

    fn charge_fields(&self, c: &ChargeSpec) -> Vec<(&'static str, String)> {
        let mut fields = vec![
            ("source", json_text(pick(&ACCOUNT_IDS, c.source))),
            ("destination", json_text(pick(&ACCOUNT_IDS, c.destination))),
            ("amount", pick(&AMOUNTS, c.amount).to_string()),
            ("currency", json_text(pick(&CURRENCIES, c.currency))),
        ];
        self.push_metadata(&mut fields, c.metadata);
        fields
    }

    fn transfer_fields(&self, t: &TransferSpec) -> Vec<(&'static str, String)> {
        let legs: Vec<String> = t
            .legs()
            .iter()
            .map(|leg| {
                json!({
                    "source": pick(&ACCOUNT_IDS, leg.source),
                    "destination": pick(&ACCOUNT_IDS, leg.destination),
                    "amount": pick(&AMOUNTS, leg.amount),
                })
                .to_string()
            })
            .collect();
        let mut fields = vec![
            ("currency", json_text(pick(&CURRENCIES, t.currency))),
            ("legs", format!("[{}]", legs.join(","))),
        ];
        self.push_metadata(&mut fields, t.metadata);
        fields
    }

    fn push_metadata(&self, fields: &mut Vec<(&'static str, String)>, selector: u8) {
        if let Some(metadata) = metadata(selector, self.reformat) {
            fields.push(("metadata", metadata));
        }
    }

    /// The JSON body, with its fields in one of two orders and styles.
    fn body(&self) -> Vec<u8> {
        let (open, separator, colon, close) = if self.reformat {
            ("{\n  ", ",\n  ", " : ", "\n}\n")
        } else {
            ("{", ",", ":", "}")
        };
        let mut fields: Vec<String> = self
            .fields()
            .into_iter()
            .map(|(name, value)| format!("\"{name}\"{colon}{value}"))
            .collect();
        if self.reformat {
            fields.reverse();
        }
        format!("{open}{}{close}", fields.join(separator)).into_bytes()
    }

    fn parse(&self) -> Result<WriteIntent, String> {
        match parse_request(&Method::POST, &self.path(), &self.headers(), &self.body()) {
            Ok(ApiRequest::Write(intent)) => Ok(intent),
            Ok(other) => panic!("a POST parsed as {other:?}"),
            Err(problem) => Err(format!("{problem:?}")),
        }
    }

    /// Whether the parser must refuse it (API.md: bad amount, bad currency, same accounts, an
    /// `expires_in` out of range).
    fn invalid(&self) -> bool {
        let charge_invalid = |c: &ChargeSpec| {
            pick(&CURRENCIES, c.currency) == "eur"
                || invalid_amount(pick(&AMOUNTS, c.amount))
                || pick(&ACCOUNT_IDS, c.source) == pick(&ACCOUNT_IDS, c.destination)
        };
        match &self.body {
            Body::Account(a) => pick(&CURRENCIES, a.currency) == "eur",
            Body::Charge(c) => charge_invalid(c),
            Body::Authorize(a) => {
                let expires = match pick(&EXPIRIES, a.expires) {
                    Expiry::ExpiresIn(seconds) => !(AUTHORIZATION_EXPIRES_IN_S_MIN
                        ..=AUTHORIZATION_EXPIRES_IN_S_MAX)
                        .contains(&seconds),
                    Expiry::Default | Expiry::CaptureTrue => false,
                };
                charge_invalid(&a.charge) || expires
            }
            Body::Capture { amount, .. } | Body::Refund { amount, .. } => {
                amount.is_some_and(invalid_amount)
            }
            Body::Void { .. } => false,
            Body::Transfer(t) => {
                pick(&CURRENCIES, t.currency) == "eur"
                    || t.legs().iter().any(|leg| {
                        invalid_amount(pick(&AMOUNTS, leg.amount))
                            || pick(&ACCOUNT_IDS, leg.source) == pick(&ACCOUNT_IDS, leg.destination)
                    })
            }
        }
    }

    /// The same key with a body that means something else.
    fn changed(&self) -> Request {
        let other_amount = |amount: &Option<u64>| match amount {
            None => Some(1),
            Some(_) => None,
        };
        let body = match self.body.clone() {
            Body::Account(mut a) => {
                // Another currency (EUR <-> USD); an invalid one becomes valid.
                a.currency = if pick(&CURRENCIES, a.currency) == "USD" {
                    0
                } else {
                    3
                };
                Body::Account(a)
            }
            Body::Charge(mut c) => {
                c.amount = c.amount.wrapping_add(1);
                Body::Charge(c)
            }
            Body::Authorize(mut a) => {
                a.charge.amount = a.charge.amount.wrapping_add(1);
                Body::Authorize(a)
            }
            Body::Capture { charge, amount } => Body::Capture {
                amount: other_amount(&amount),
                charge,
            },
            // The same charge, captured instead: another path.
            Body::Void { charge } => Body::Capture {
                charge,
                amount: None,
            },
            Body::Refund {
                charge,
                amount,
                metadata,
            } => Body::Refund {
                amount: other_amount(&amount),
                charge,
                metadata,
            },
            Body::Transfer(mut t) => {
                t.legs = t.legs.wrapping_add(1);
                Body::Transfer(t)
            }
        };
        Request {
            body,
            ..self.clone()
        }
    }
}

/// Metadata by selector, in the requested key order (the meaning is the sorted map).
fn metadata(selector: u8, reversed: bool) -> Option<String> {
    let mut pairs: Vec<(&str, &str)> = match selector % 4 {
        0 => return None,
        1 => vec![("order", "A-17")],
        2 => vec![("a", "1"), ("b", "é\"\\\n")],
        _ => return Some("{}".into()),
    };
    if reversed {
        pairs.reverse();
    }
    let body: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}:{}", json!(k), json!(v)))
        .collect();
    Some(format!("{{{}}}", body.join(",")))
}

// ---------------------------------------------------------------------------------------------
// The run.

struct Run {
    system: System,
    model: Model,
    /// Every request sent so far, for retries.
    history: Vec<Request>,
}

impl Run {
    /// The request an operation makes, if it makes one; `burst` holds the requests made before it
    /// in its burst and not sent yet (a retry may name them too).
    fn request(&self, op: &Op, burst: &[Request]) -> Option<Request> {
        let earlier = |nth: u8| {
            let count = self.history.len() + burst.len();
            let nth = usize::from(nth).checked_rem(count)?;
            Some(match nth.checked_sub(self.history.len()) {
                None => self.history[nth].clone(),
                Some(in_burst) => burst[in_burst].clone(),
            })
        };
        let (key, body) = match *op {
            Op::CreateAccount(spec) => (spec.key, Body::Account(spec)),
            Op::Charge(spec) => (spec.key, Body::Charge(spec)),
            Op::Authorize(spec) => (spec.charge.key, Body::Authorize(spec)),
            Op::Capture(spec) => {
                let (charge, held, _) = self.charge_id(spec.charge);
                let amount = capture_amount(spec.amount, held);
                (spec.key, Body::Capture { charge, amount })
            }
            Op::Void(spec) => {
                let (charge, ..) = self.charge_id(spec.charge);
                (spec.key, Body::Void { charge })
            }
            Op::Refund(spec) => {
                let (charge, _, refundable) = self.charge_id(spec.charge);
                let amount = refund_amount(spec.amount, refundable);
                let metadata = spec.metadata;
                let body = Body::Refund {
                    charge,
                    amount,
                    metadata,
                };
                (spec.key, body)
            }
            Op::Transfer(spec) => (spec.key, Body::Transfer(spec)),
            Op::Retry { nth, reformat } => {
                let earlier = earlier(nth)?;
                return Some(Request {
                    reformat: reformat != earlier.reformat,
                    ..earlier
                });
            }
            Op::RetryChanged { nth } => return Some(earlier(nth)?.changed()),
            Op::Burst { .. } | Op::ArmFault { .. } | Op::Restart { .. } => return None,
        };
        Some(Request {
            key,
            body,
            reformat: false,
        })
    }

    /// The charge id a selector picks, with the charge's hold and what is left to refund of it
    /// as the model knows them now: the charges' ids newest first, then the ids that name no
    /// charge (`UNKNOWN_CHARGE_IDS`, then refunds' and transfers' newest first).
    fn charge_id(&self, selector: u8) -> (String, u64, u64) {
        let charges = self.model.charges.values().rev();
        let others = self.model.other_entry_ids.iter().rev();
        let known = charges.len();
        let count = known + UNKNOWN_CHARGE_IDS.len() + others.len();
        let at = usize::from(selector) % count;
        match self.model.charges.values().rev().nth(at) {
            Some(charge) => (
                charge.id.clone(),
                charge.amount,
                charge.captured - charge.refunded,
            ),
            None => {
                let mut unknown = UNKNOWN_CHARGE_IDS
                    .iter()
                    .map(|id| (*id).to_owned())
                    .chain(others.cloned());
                let Some(id) = unknown.nth(at - known) else {
                    unreachable!("{at} is below {count}");
                };
                (id, UNKNOWN_CHARGE_AMOUNT, UNKNOWN_CHARGE_AMOUNT)
            }
        }
    }

    /// Sends requests together and checks every answer against the model, in order.
    fn send(&mut self, requests: &[Request]) {
        self.history.extend(requests.iter().cloned());
        let mut intents = Vec::new();
        for request in requests {
            match request.parse() {
                Ok(intent) => {
                    assert!(!request.invalid(), "the parser accepted {request:?}");
                    intents.push(intent);
                }
                // Refused before any key is claimed: nothing to send, the key stays unused.
                Err(problem) => assert!(request.invalid(), "{request:?} refused: {problem}"),
            }
        }
        if intents.is_empty() {
            return;
        }
        let poisoned_before = self.system.writer_poisoned();
        let answers = self.system.post(intents.clone());
        for answer in &answers {
            trace(|| {
                let body = String::from_utf8_lossy(&answer.body);
                format!("  -> {} replayed={} {body}", answer.status, answer.replayed)
            });
        }
        assert_eq!(answers.len(), intents.len());
        let mut in_this_burst: Vec<&str> = Vec::new();
        for (intent, answer) in intents.iter().zip(&answers) {
            let first_in_burst = !in_this_burst.contains(&intent.key.as_str());
            in_this_burst.push(intent.key.as_str());
            self.check_answer(intent, answer, poisoned_before, first_in_burst);
        }
        if !self.system.writer_poisoned() && !self.system.disk.fault_struck() {
            check_balances(&self.system, &self.model);
        }
    }

    fn check_answer(
        &mut self,
        intent: &WriteIntent,
        answer: &Answer,
        poisoned_before: bool,
        first_in_burst: bool,
    ) {
        let context = || {
            format!(
                "{} {:?} answered {answer:?}",
                intent.key.as_str(),
                intent.command
            )
        };
        if answer.status == 409 {
            // A second request with a key still held by the first one of the same burst.
            assert!(
                !first_in_burst,
                "409 without a concurrent request: {}",
                context()
            );
            assert_eq!(problem_type(answer), "/problems/idempotency-key-in-flight");
            return;
        }
        if answer.status == 503 {
            assert_eq!(
                problem_type(answer),
                "/problems/storage-unavailable",
                "{}",
                context()
            );
            assert!(
                self.system.disk.fault_struck(),
                "503 without a storage fault: {}",
                context()
            );
            // Only a request that reached a failing commit can have been stored.
            let is_new = !self.model.finished.contains_key(intent.key.as_str())
                && !self
                    .model
                    .uncertain
                    .iter()
                    .any(|u| u.intent.key == intent.key);
            if is_new && !poisoned_before && self.system.writer_poisoned() {
                self.model.uncertain.push(Uncertain {
                    intent: intent.clone(),
                });
            }
            return;
        }
        if self
            .model
            .uncertain
            .iter()
            .any(|u| u.intent.key == intent.key)
        {
            // The key's first request is in doubt, and the writer is poisoned: the only answers
            // besides a 503 (above) and a 409 are those read from a stored record, a replay or
            // a 422. Either one says the failed commit landed: resolve the doubt now, then check
            // this answer against the model like any other.
            assert!(
                answer.replayed || answer.status == 422,
                "a poisoned writer answered an uncertain key without a stored record: {}",
                context()
            );
            self.resolve_uncertain("a retry");
            assert!(
                self.model.finished.contains_key(intent.key.as_str()),
                "a retry read a record that the store no longer has: {}",
                context()
            );
        }
        match self.model.expect(intent) {
            Expected::Replay(done) => {
                assert!(answer.replayed, "a finished key replays: {}", context());
                assert_eq!(answer.status, done.status, "{}", context());
                assert_eq!(
                    answer.body,
                    done.body,
                    "replays are byte-identical: {}",
                    context()
                );
            }
            Expected::Mismatch => {
                assert_eq!(answer.status, 422, "{}", context());
                assert_eq!(problem_type(answer), "/problems/idempotency-key-reused");
            }
            Expected::New(decision) => {
                assert!(!poisoned_before, "a poisoned writer answered {}", context());
                assert!(!answer.replayed, "a new key is not a replay: {}", context());
                assert_eq!(answer.status, decision.status(), "{}", context());
                let ids = self.system.store().charge_ids();
                check_new_body(&self.model, ids, intent, &decision, &answer.body);
                self.model.apply(intent, &decision, answer);
            }
        }
    }

    fn restart(&mut self, how: Stop) {
        trace(|| format!("restart after {how:?}"));
        self.system.restart(how);
        // The reopened store decides every request still in doubt: what is not there never
        // happened.
        self.resolve_uncertain("the reopen");
        self.model.uncertain.clear();
        check_store(&self.system, &self.model);
    }

    /// Reads the record of every uncertain request from the store, in the order they were sent,
    /// and applies those that are stored, checking each record against what the request would
    /// have done. Those not stored stay uncertain (the caller clears them when the store's word is
    /// final).
    fn resolve_uncertain(&mut self, observation: &str) {
        let uncertain = std::mem::take(&mut self.model.uncertain);
        for Uncertain { intent } in uncertain {
            let stored = match self
                .system
                .store()
                .idempotency_record(TenantId::DEFAULT, &intent.key)
            {
                Ok(stored) => stored,
                Err(error) => panic!(
                    "key {} unreadable at {observation}: {error}",
                    intent.key.as_str()
                ),
            };
            trace(|| {
                let state = if stored.is_some() { "stored" } else { "absent" };
                format!(
                    "uncertain {} at {observation}: {state}",
                    intent.key.as_str()
                )
            });
            let Some(record) = stored else {
                self.model.uncertain.push(Uncertain { intent });
                continue;
            };
            assert_eq!(
                record.fingerprint,
                intent.fingerprint,
                "key {} holds another request",
                intent.key.as_str()
            );
            let Expected::New(decision) = self.model.expect(&intent) else {
                unreachable!("an uncertain key was not finished");
            };
            assert_eq!(record.status, decision.status(), "{intent:?}");
            let ids = self.system.store().charge_ids();
            check_new_body(&self.model, ids, &intent, &decision, &record.body);
            let answer = Answer {
                status: record.status,
                body: Bytes::from(record.body),
                replayed: false,
            };
            self.model.apply(&intent, &decision, &answer);
        }
    }
}

/// With `LEDGER_MODEL_TRACE=1`, prints every operation and answer: the story of a crash input,
/// when replayed with `tests/replay_corpus.rs`'s `one_file`.
fn trace(line: impl FnOnce() -> String) {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *ENABLED.get_or_init(|| std::env::var_os("LEDGER_MODEL_TRACE").is_some()) {
        eprintln!("{}", line());
    }
}

/// The ledger_model target.
pub fn check(data: &[u8]) {
    run(data);
}

/// Runs an input through the model and says which of the store's rare moments it crossed, and
/// how many of its power losses came right after one (`tests/marks.rs` sums them over inputs).
pub fn run(data: &[u8]) -> Crossings {
    let ops = Op::decode_all(data);
    let mut run = Run {
        system: System::start(),
        model: Model::default(),
        history: Vec::new(),
    };
    let mut ops = ops.into_iter().peekable();
    while let Some(op) = ops.next() {
        trace(|| format!("{op:?}"));
        match op {
            Op::Burst { count } => {
                let mut burst = Vec::new();
                while burst.len() < usize::from(count).clamp(2, BURST_MAX) {
                    let Some(next) = ops.peek() else { break };
                    let Some(next) = run.request(next, &burst) else {
                        break;
                    };
                    burst.push(next);
                    ops.next();
                }
                run.send(&burst);
            }
            Op::ArmFault { after, lose_pages } => {
                let kind = if lose_pages {
                    FaultKind::FailSyncAndLosePages
                } else {
                    FaultKind::FailOperation
                };
                // A commit of one command takes about 15 storage operations (reads, writes,
                // syncs), so 1..=256 reaches every step of the next dozen or so commits.
                run.system.disk.arm_fault(1 + u64::from(after), kind);
            }
            Op::Restart { how } => {
                let how = match how % 3 {
                    0 => Stop::PowerLoss,
                    1 => Stop::ProcessKill,
                    _ => Stop::Clean,
                };
                run.restart(how);
            }
            other => {
                if let Some(next) = run.request(&other, &[]) {
                    run.send(&[next]);
                }
            }
        }
    }
    // Whatever happened, a power loss now must keep everything acknowledged.
    run.restart(Stop::PowerLoss);
    run.system.crossings()
}
