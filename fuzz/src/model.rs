//! ledger_model: a sequence of operations against the real store, writer and idempotency steps,
//! compared with a small in-memory reference model after every step.
//!
//! Operations: create an account, charge, retry an earlier request (also re-formatted: other key
//! order and whitespace), retry with a changed body, send a burst of requests at once (one
//! writer batch), arm a one-shot storage fault, and stop the store (power loss, process kill or a
//! clean stop) and open it again. Every input ends with a power loss and a reopen: nothing
//! acknowledged may be lost.
//!
//! What must match the model: each answer's status, replays byte for byte with
//! `Idempotent-Replayed`, the fields of each new answer, every balance, every stored answer, the
//! outbox (dense, in order, one event per account and per charge), and the invariant checker.
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

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method};
use onceledger_core::idempotency::{Fingerprint, IdempotencyKey};
use onceledger_core::ledger::{AccountId, ChargeIds, Command, TenantId};
use onceledger_core::limits::AMOUNT_MINOR_MAX;
use onceledger_core::store::{EventBody, check};
use onceledger_server::api::{ApiRequest, WriteIntent, parse_request};
use serde_json::{Value, json};

use crate::backend::FaultKind;
use crate::system::{Answer, Crossings, Stop, System};

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

const OPCODES: u8 = 7;

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

    fn decode(r: &mut Reader<'_>) -> Op {
        match r.byte() % OPCODES {
            0 => Op::CreateAccount(AccountSpec {
                key: r.byte(),
                account: r.byte(),
                currency: r.byte(),
                limit: r.byte(),
            }),
            1 => Op::Charge(ChargeSpec {
                key: r.byte(),
                source: r.byte(),
                destination: r.byte(),
                amount: r.byte(),
                currency: r.byte(),
                metadata: r.byte(),
            }),
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
            _ => Op::Restart { how: r.byte() },
        }
    }

    /// The inverse of `decode`, for writing seed files.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match *self {
            Op::CreateAccount(a) => out.extend([0, a.key, a.account, a.currency, a.limit]),
            Op::Charge(c) => out.extend([
                1,
                c.key,
                c.source,
                c.destination,
                c.amount,
                c.currency,
                c.metadata,
            ]),
            Op::Retry { nth, reformat } => out.extend([2, nth, u8::from(reformat)]),
            Op::RetryChanged { nth } => out.extend([3, nth]),
            Op::Burst { count } => out.extend([4, count]),
            Op::ArmFault { after, lose_pages } => out.extend([5, after, u8::from(lose_pages)]),
            Op::Restart { how } => out.extend([6, how]),
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

// ---------------------------------------------------------------------------------------------
// Requests as a client sends them.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    Account(AccountSpec),
    Charge(ChargeSpec),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

impl Request {
    fn path(&self) -> &'static str {
        match self.body {
            Body::Account(_) => "/v1/accounts",
            Body::Charge(_) => "/v1/charges",
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

    /// The JSON body, with its fields in one of two orders and styles.
    fn body(&self) -> Vec<u8> {
        let fields: Vec<(&str, String)> = match self.body {
            Body::Account(a) => {
                let mut fields = vec![
                    ("id", json!(pick(&ACCOUNT_IDS, a.account)).to_string()),
                    ("currency", json!(pick(&CURRENCIES, a.currency)).to_string()),
                ];
                match pick(&LIMITS, a.limit) {
                    Limit::Value(limit) => fields.push(("overdraft_limit", limit.to_string())),
                    Limit::Unlimited => fields.push(("overdraft_limit", "null".into())),
                    Limit::Absent => {}
                }
                fields
            }
            Body::Charge(c) => {
                let mut fields = vec![
                    ("source", json!(pick(&ACCOUNT_IDS, c.source)).to_string()),
                    (
                        "destination",
                        json!(pick(&ACCOUNT_IDS, c.destination)).to_string(),
                    ),
                    ("amount", pick(&AMOUNTS, c.amount).to_string()),
                    ("currency", json!(pick(&CURRENCIES, c.currency)).to_string()),
                ];
                if let Some(metadata) = metadata(c.metadata, self.reformat) {
                    fields.push(("metadata", metadata));
                }
                fields
            }
        };
        let (open, separator, colon, close) = if self.reformat {
            ("{\n  ", ",\n  ", " : ", "\n}\n")
        } else {
            ("{", ",", ":", "}")
        };
        let mut fields: Vec<String> = fields
            .into_iter()
            .map(|(name, value)| format!("\"{name}\"{colon}{value}"))
            .collect();
        if self.reformat {
            fields.reverse();
        }
        format!("{open}{}{close}", fields.join(separator)).into_bytes()
    }

    fn parse(&self) -> Result<WriteIntent, String> {
        match parse_request(&Method::POST, self.path(), &self.headers(), &self.body()) {
            Ok(ApiRequest::Write(intent)) => Ok(intent),
            Ok(other) => panic!("a POST parsed as {other:?}"),
            Err(problem) => Err(format!("{problem:?}")),
        }
    }

    /// Whether the parser must refuse it (API.md: bad amount, bad currency, same accounts).
    fn invalid(&self) -> bool {
        match self.body {
            Body::Account(a) => pick(&CURRENCIES, a.currency) == "eur",
            Body::Charge(c) => {
                let amount = pick(&AMOUNTS, c.amount);
                pick(&CURRENCIES, c.currency) == "eur"
                    || amount == 0
                    || amount > AMOUNT_MINOR_MAX
                    || pick(&ACCOUNT_IDS, c.source) == pick(&ACCOUNT_IDS, c.destination)
            }
        }
    }

    /// The same key with a body that means something else.
    fn changed(&self) -> Request {
        let body = match self.body {
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
        };
        Request { body, ..*self }
    }
}

/// Charge metadata by selector, in the requested key order (the meaning is the sorted map).
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
// The reference model.

#[derive(Debug, Clone, PartialEq, Eq)]
struct ModelAccount {
    currency: String,
    overdraft_limit: Option<u64>,
    debits: u64,
    credits: u64,
}

impl ModelAccount {
    fn balance(&self) -> i128 {
        i128::from(self.credits) - i128::from(self.debits)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ModelEvent {
    AccountCreated(String),
    Charge {
        number: u64,
        source: String,
        destination: String,
        amount: u64,
    },
}

/// A finished key: what it answered, byte for byte.
#[derive(Debug, Clone)]
struct Finished {
    fingerprint: Fingerprint,
    status: u16,
    body: Bytes,
}

/// A request that got a 503 from a writer whose commit failed: maybe durable.
#[derive(Debug, Clone)]
struct Uncertain {
    intent: WriteIntent,
}

/// The ledger's decision for a new command, and what it changes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Decision {
    AccountCreated,
    Charged { number: u64 },
    Declined { status: u16, problem: &'static str },
}

impl Decision {
    fn status(&self) -> u16 {
        match self {
            Decision::AccountCreated | Decision::Charged { .. } => 201,
            Decision::Declined { status, .. } => *status,
        }
    }
}

#[derive(Debug, Default)]
struct Model {
    accounts: BTreeMap<String, ModelAccount>,
    finished: HashMap<String, Finished>,
    events: Vec<ModelEvent>,
    charges: u64,
    uncertain: Vec<Uncertain>,
}

/// What the model expects the system to answer.
#[derive(Debug)]
enum Expected {
    Replay(Finished),
    Mismatch,
    New(Decision),
}

impl Model {
    fn expect(&self, intent: &WriteIntent) -> Expected {
        match self.finished.get(intent.key.as_str()) {
            Some(done) if done.fingerprint == intent.fingerprint => Expected::Replay(done.clone()),
            Some(_) => Expected::Mismatch,
            None => Expected::New(self.decide(&intent.command)),
        }
    }

    /// The ledger rules of API.md, written out again: the order of the checks is
    /// src/ledger/charge.rs's (currencies, then the destination's credit total, then the
    /// source's debit total, then the overdraft limit).
    fn decide(&self, command: &Command) -> Decision {
        let declined = |status, problem| Decision::Declined { status, problem };
        match command {
            // The model never replicates, so it holds no dead letters.
            Command::RedriveDeadLetter { .. } => declined(404, "dead-letter-not-found"),
            // The model's operations are the ledger's; tenants and tokens are not among them.
            Command::CreateTenant { .. }
            | Command::CreateToken { .. }
            | Command::RevokeToken { .. } => {
                panic!("the model makes no tenant or token commands: {command:?}")
            }
            Command::CreateAccount(new) => {
                if self.accounts.contains_key(new.id.as_str()) {
                    declined(400, "account-exists")
                } else {
                    Decision::AccountCreated
                }
            }
            Command::CreateCharge(charge) => {
                let (Some(source), Some(destination)) = (
                    self.accounts.get(charge.source.as_str()),
                    self.accounts.get(charge.destination.as_str()),
                ) else {
                    return declined(404, "account-not-found");
                };
                let amount = charge.amount.minor();
                if source.currency != charge.currency.as_str()
                    || destination.currency != charge.currency.as_str()
                {
                    return declined(400, "currency-mismatch");
                }
                let within = |total: u64| {
                    total
                        .checked_add(amount)
                        .is_some_and(|t| t <= AMOUNT_MINOR_MAX)
                };
                if !within(destination.credits) || !within(source.debits) {
                    return declined(400, "balance-overflow");
                }
                let limit_passed = source.overdraft_limit.is_some_and(|limit| {
                    source.balance() - i128::from(amount) < -i128::from(limit)
                });
                if limit_passed {
                    return declined(402, "insufficient-funds");
                }
                Decision::Charged {
                    number: self.charges + 1,
                }
            }
        }
    }

    /// Records a request that ran: its effects and its answer.
    fn apply(&mut self, intent: &WriteIntent, decision: &Decision, answer: &Answer) {
        match (&intent.command, decision) {
            (Command::CreateAccount(new), Decision::AccountCreated) => {
                self.accounts.insert(
                    new.id.as_str().to_owned(),
                    ModelAccount {
                        currency: new.currency.as_str().to_owned(),
                        overdraft_limit: new.overdraft_limit,
                        debits: 0,
                        credits: 0,
                    },
                );
                self.events
                    .push(ModelEvent::AccountCreated(new.id.as_str().to_owned()));
            }
            (Command::CreateCharge(charge), Decision::Charged { number }) => {
                let amount = charge.amount.minor();
                for (id, debit) in [(&charge.source, true), (&charge.destination, false)] {
                    let Some(account) = self.accounts.get_mut(id.as_str()) else {
                        unreachable!("decide() found both accounts");
                    };
                    if debit {
                        account.debits += amount;
                    } else {
                        account.credits += amount;
                    }
                }
                self.charges = *number;
                self.events.push(ModelEvent::Charge {
                    number: *number,
                    source: charge.source.as_str().to_owned(),
                    destination: charge.destination.as_str().to_owned(),
                    amount,
                });
            }
            _ => {}
        }
        self.finished.insert(
            intent.key.as_str().to_owned(),
            Finished {
                fingerprint: intent.fingerprint,
                status: answer.status,
                body: answer.body.clone(),
            },
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Checking answers.

fn json_body(body: &[u8]) -> Value {
    match serde_json::from_slice(body) {
        Ok(value) => value,
        Err(error) => panic!(
            "answer body is not JSON ({error}): {}",
            String::from_utf8_lossy(body)
        ),
    }
}

/// The body of a new answer says what the model decided. A charge is named by the id the
/// store's `ChargeIds` give its number, and that id leads back to the number.
fn check_new_body(
    model: &Model,
    ids: &ChargeIds,
    intent: &WriteIntent,
    decision: &Decision,
    body: &[u8],
) {
    let body = json_body(body);
    match (&intent.command, decision) {
        (Command::CreateAccount(new), Decision::AccountCreated) => {
            let limit = new.overdraft_limit.map_or(Value::Null, |l| json!(l));
            for (field, expected) in [
                ("id", json!(new.id.as_str())),
                ("currency", json!(new.currency.as_str())),
                ("overdraft_limit", limit),
                ("balance", json!(0)),
                ("available", json!(0)),
                ("debits_posted", json!(0)),
                ("credits_posted", json!(0)),
            ] {
                assert_eq!(body[field], expected, "new account's {field}: {body}");
            }
        }
        (Command::CreateCharge(charge), Decision::Charged { number }) => {
            let metadata: serde_json::Map<String, Value> = charge
                .metadata
                .pairs()
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect();
            let id = ids.id_of(*number);
            assert_eq!(
                ids.number_of(&id),
                Some(*number),
                "{id} names charge {number}"
            );
            for (field, expected) in [
                ("id", json!(id)),
                ("status", json!("succeeded")),
                ("source", json!(charge.source.as_str())),
                ("destination", json!(charge.destination.as_str())),
                ("amount", json!(charge.amount.minor())),
                ("currency", json!(charge.currency.as_str())),
                ("metadata", Value::Object(metadata)),
                // The charge's event is the next one in the outbox.
                ("event_seq", json!(model.events.len() + 1)),
            ] {
                assert_eq!(body[field], expected, "new charge's {field}: {body}");
            }
        }
        (_, Decision::Declined { status, problem }) => {
            assert_eq!(
                body["type"],
                json!(format!("/problems/{problem}")),
                "{body}"
            );
            assert_eq!(body["status"], json!(status), "{body}");
        }
        (command, decision) => unreachable!("{decision:?} does not answer {command:?}"),
    }
}

fn problem_type(answer: &Answer) -> String {
    json_body(&answer.body)["type"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The whole store against the model: accounts, stored answers, events, the invariant checker.
fn check_store(system: &System, model: &Model) {
    let store = system.store();
    let tenant = TenantId::DEFAULT;
    for id in ACCOUNT_IDS {
        let Ok(account_id) = AccountId::parse(id) else {
            unreachable!("pool ids are valid");
        };
        let stored = match store.account(tenant, &account_id) {
            Ok(stored) => stored,
            Err(error) => panic!("account {id} unreadable: {error}"),
        };
        match (stored, model.accounts.get(id)) {
            (None, None) => {}
            (Some(stored), Some(expected)) => {
                let seen = ModelAccount {
                    currency: stored.currency.as_str().to_owned(),
                    overdraft_limit: stored.overdraft_limit,
                    debits: stored.debits_posted,
                    credits: stored.credits_posted,
                };
                assert_eq!(&seen, expected, "account {id}");
            }
            (stored, expected) => panic!("account {id}: stored {stored:?}, model {expected:?}"),
        }
    }
    for k in 0..KEYS_COUNT {
        let name = key_name(k);
        let Ok(key) = IdempotencyKey::parse(name.as_bytes()) else {
            unreachable!("pool keys are valid");
        };
        let stored = match store.idempotency_record(tenant, &key) {
            Ok(stored) => stored,
            Err(error) => panic!("key {name} unreadable: {error}"),
        };
        match (stored, model.finished.get(&name)) {
            (None, None) => {}
            (Some(stored), Some(expected)) => {
                assert_eq!(stored.fingerprint, expected.fingerprint, "key {name}");
                assert_eq!(stored.status, expected.status, "key {name}");
                assert_eq!(
                    stored.body,
                    expected.body.as_ref(),
                    "key {name}: the stored answer is the one the client got"
                );
            }
            (stored, expected) => panic!("key {name}: stored {stored:?}, model {expected:?}"),
        }
    }
    let events = match store.events_after(0, OPS_MAX * BURST_MAX + 1) {
        Ok(events) => events,
        Err(error) => panic!("outbox unreadable: {error}"),
    };
    let seen: Vec<ModelEvent> = events
        .iter()
        .enumerate()
        .map(|(i, event)| {
            assert_eq!(event.seq, i as u64 + 1, "the outbox is dense from 1");
            match &event.body {
                EventBody::AccountCreated(account) => {
                    ModelEvent::AccountCreated(account.id.as_str().to_owned())
                }
                EventBody::ChargeSucceeded(charge) => {
                    assert_eq!(charge.event_seq, event.seq, "a charge names its event");
                    ModelEvent::Charge {
                        number: charge.number,
                        source: charge.source.as_str().to_owned(),
                        destination: charge.destination.as_str().to_owned(),
                        amount: charge.amount.minor(),
                    }
                }
            }
        })
        .collect();
    assert_eq!(seen, model.events, "the outbox");
    let report = match check::verify(store) {
        Ok(report) => report,
        Err(error) => panic!("the invariant checker cannot read the store: {error}"),
    };
    assert!(
        report.violations.is_empty(),
        "invariants: {:?}",
        report.violations
    );
    assert_eq!(report.accounts, model.accounts.len() as u64);
    assert_eq!(report.charges, model.charges);
    assert_eq!(report.events, model.events.len() as u64);
    assert_eq!(report.idempotency_records, model.finished.len() as u64);
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
    /// Sends requests together and checks every answer against the model, in order.
    fn send(&mut self, requests: &[Request]) {
        self.history.extend_from_slice(requests);
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

/// After every step on a healthy store: balances match the model. These reads count towards an
/// armed fault too; one that strikes here ends the check.
fn check_balances(system: &System, model: &Model) {
    for (id, expected) in &model.accounts {
        let Ok(account_id) = AccountId::parse(id) else {
            unreachable!("model ids are valid");
        };
        match system.store().account(TenantId::DEFAULT, &account_id) {
            Ok(Some(account)) => {
                assert_eq!(
                    (account.debits_posted, account.credits_posted),
                    (expected.debits, expected.credits),
                    "account {id}"
                );
                assert_eq!(i128::from(account.balance()), expected.balance());
            }
            Err(_) if system.disk.fault_struck() => return,
            other => panic!("account {id} is {other:?}"),
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
        let request = |op: &Op, history: &[Request]| -> Option<Request> {
            match *op {
                Op::CreateAccount(spec) => Some(Request {
                    key: spec.key,
                    body: Body::Account(spec),
                    reformat: false,
                }),
                Op::Charge(spec) => Some(Request {
                    key: spec.key,
                    body: Body::Charge(spec),
                    reformat: false,
                }),
                Op::Retry { nth, reformat } if !history.is_empty() => {
                    let earlier = history[usize::from(nth) % history.len()];
                    Some(Request {
                        reformat: reformat != earlier.reformat,
                        ..earlier
                    })
                }
                Op::RetryChanged { nth } if !history.is_empty() => {
                    Some(history[usize::from(nth) % history.len()].changed())
                }
                _ => None,
            }
        };
        match op {
            Op::Burst { count } => {
                let mut burst = Vec::new();
                while burst.len() < usize::from(count).clamp(2, BURST_MAX) {
                    let Some(next) = ops.peek() else { break };
                    let mut history = run.history.clone();
                    history.extend_from_slice(&burst);
                    let Some(next) = request(next, &history) else {
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
                if let Some(next) = request(&other, &run.history) {
                    run.send(&[next]);
                }
            }
        }
    }
    // Whatever happened, a power loss now must keep everything acknowledged.
    run.restart(Stop::PowerLoss);
    run.system.crossings()
}
