//! record_codec: every stored record decoder on arbitrary bytes, and encode/decode round trips.
//!
//! Three parts, all from one input:
//! 1. the whole input into every record decoder (`onceledger_core::store::codec::decode`): never a
//!    panic, and decoding is canonical: what decodes re-encodes to exactly the input;
//! 2. structured arbitrary records: `decode(encode(x)) == x`, and no strict prefix of `encode(x)`
//!    decodes to `x`;
//! 3. a store file planted with a mix of valid and garbage records, then read through every
//!    public reader of `Store` and through the invariant checker: errors, never panics.

use std::collections::BTreeMap;

use arbitrary::{Arbitrary, Unstructured};
use onceledger_core::idempotency::{Fingerprint, IdempotencyKey};
use onceledger_core::ids::{Role, TokenDigest};
use onceledger_core::ledger::{
    Account, AccountId, Amount, Charge, Currency, Metadata, Posting, PostingKind, PostingSide,
    TenantId,
};
use onceledger_core::store::StoreError;
use onceledger_core::store::codec::{Record, encode};
use onceledger_core::store::{
    AnswerPointer, AnswerRow, DeadLetter, Effect, Event, EventBody, EventKind, EventRecord,
    IdempotencyRecord, InboxOutcome, InboxRecord, OriginState, Store, TokenRecord, check,
};
use redb::{Database, TableDefinition};

use crate::backend::SharedMemory;

// Copies of src/store/tables.rs: names and key/value types must match exactly, or opening the
// store on the planted file fails with a table type mismatch (and this target says so).
const ACCOUNTS: TableDefinition<(u32, &str), &[u8]> = TableDefinition::new("accounts");
const IDEMPOTENCY_KEYS: TableDefinition<(u32, &str), &[u8]> =
    TableDefinition::new("idempotency_keys");
const IDEMPOTENCY_ANSWERS: TableDefinition<u64, &[u8]> =
    TableDefinition::new("idempotency_answers");
const CHARGES: TableDefinition<u64, &[u8]> = TableDefinition::new("charges");
const POSTINGS: TableDefinition<(u64, u8), &[u8]> = TableDefinition::new("postings");
const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const META_NEXT_EVENT_SEQ: &str = "next_event_seq";
const META_NEXT_CHARGE_NUMBER: &str = "next_charge_number";

/// Planted records per input: enough for a charge with its postings, event and key.
const PLANTED_RECORDS_MAX: usize = 12;
/// Account ids, keys, charge numbers and sequence numbers come from small pools so that planted
/// records refer to each other (a charge to its accounts, a key to its charge).
const POOL_SIZE: u8 = 4;

// ---------------------------------------------------------------------------------------------
// Arbitrary records. Values are built from small pools and then validated by the real
// constructors, so that most of them are records the server could have written.

#[derive(Debug, Clone, Copy, Arbitrary)]
pub struct IdChoice(u8);

impl IdChoice {
    pub fn account_id(self) -> AccountId {
        const IDS: [&str; POOL_SIZE as usize] = ["alice", "bank", "shop", "a.b:c-d_9"];
        let raw = IDS[usize::from(self.0 % POOL_SIZE)];
        AccountId::parse(raw).unwrap_or_else(|e| panic!("pool id {raw}: {e}"))
    }
}

#[derive(Debug, Clone, Copy, Arbitrary)]
pub struct CurrencyChoice(bool);

impl CurrencyChoice {
    pub fn currency(self) -> Currency {
        let raw = if self.0 { "USD" } else { "EUR" };
        Currency::parse(raw).unwrap_or_else(|e| panic!("pool currency {raw}: {e}"))
    }
}

/// Any `u64` made a valid amount: 0 and values over 2^63-1 fold into range.
fn amount(raw: u64) -> Amount {
    let folded = (raw % onceledger_core::limits::AMOUNT_MINOR_MAX).max(1);
    Amount::new(folded).unwrap_or_else(|e| panic!("folded amount {folded}: {e}"))
}

fn metadata(pairs: Vec<(String, String)>) -> Metadata {
    // Over-long or too many pairs fall back to no metadata: validation is the parser's target.
    Metadata::new(pairs.into_iter().take(4).collect::<BTreeMap<_, _>>()).unwrap_or_default()
}

#[derive(Debug, Clone, Arbitrary)]
pub struct ArbAccount {
    id: IdChoice,
    currency: CurrencyChoice,
    overdraft_limit: Option<u64>,
    debits_posted: u64,
    credits_posted: u64,
    debits_pending: u64,
    credits_pending: u64,
    created_at_ms: u64,
}

impl ArbAccount {
    pub fn build(&self) -> Account {
        Account {
            id: self.id.account_id(),
            currency: self.currency.currency(),
            overdraft_limit: self.overdraft_limit,
            debits_posted: self.debits_posted,
            credits_posted: self.credits_posted,
            debits_pending: self.debits_pending,
            credits_pending: self.credits_pending,
            created_at_ms: self.created_at_ms,
        }
    }
}

#[derive(Debug, Clone, Arbitrary)]
pub struct ArbCharge {
    number: u64,
    source: IdChoice,
    destination: IdChoice,
    amount: u64,
    currency: CurrencyChoice,
    metadata: Vec<(String, String)>,
    created_at_ms: u64,
    event_seq: u64,
}

impl ArbCharge {
    pub fn build(&self) -> Charge {
        Charge {
            number: self.number,
            source: self.source.account_id(),
            destination: self.destination.account_id(),
            amount: amount(self.amount),
            currency: self.currency.currency(),
            metadata: metadata(self.metadata.clone()),
            created_at_ms: self.created_at_ms,
            event_seq: self.event_seq,
        }
    }
}

#[derive(Debug, Clone, Arbitrary)]
pub struct ArbPosting {
    account: IdChoice,
    credit: bool,
    amount: u64,
}

impl ArbPosting {
    pub fn build(&self) -> Posting {
        Posting {
            account: self.account.account_id(),
            side: if self.credit {
                PostingSide::Credit
            } else {
                PostingSide::Debit
            },
            amount: amount(self.amount),
            // Posted only: the planted records are the immediate charges' (holds and releases
            // came with the lifecycle, which ledger_model drives through the writer).
            kind: PostingKind::Posted,
        }
    }
}

#[derive(Debug, Clone, Arbitrary)]
pub enum ArbEffect {
    None,
    AccountCreated { account: IdChoice, event_seq: u64 },
    ChargeSucceeded { charge_number: u64 },
    DeadLetterRedriven { id: u64 },
}

#[derive(Debug, Clone, Arbitrary)]
pub struct ArbIdempotencyRecord {
    fingerprint: [u8; 32],
    status: u16,
    body: Vec<u8>,
    finished_at_ms: u64,
    effect: ArbEffect,
}

impl ArbIdempotencyRecord {
    pub fn build(&self) -> IdempotencyRecord {
        IdempotencyRecord {
            fingerprint: Fingerprint(self.fingerprint),
            status: self.status,
            body: self.body.clone(),
            finished_at_ms: self.finished_at_ms,
            effect: match &self.effect {
                ArbEffect::None => Effect::None,
                ArbEffect::AccountCreated { account, event_seq } => Effect::AccountCreated {
                    account: account.account_id(),
                    event_seq: *event_seq,
                },
                ArbEffect::ChargeSucceeded { charge_number } => Effect::ChargeSucceeded {
                    charge_number: *charge_number,
                },
                ArbEffect::DeadLetterRedriven { id } => Effect::DeadLetterRedriven { id: *id },
            },
        }
    }
}

#[derive(Debug, Clone, Arbitrary)]
pub enum ArbEventKind {
    AccountCreated(ArbAccount),
    ChargeSucceeded { charge_number: u64 },
}

#[derive(Debug, Clone, Arbitrary)]
pub struct ArbEvent {
    created_at_ms: u64,
    kind: ArbEventKind,
}

impl ArbEvent {
    pub fn build(&self) -> EventRecord {
        EventRecord {
            created_at_ms: self.created_at_ms,
            kind: self.kind(),
        }
    }

    pub fn kind(&self) -> EventKind {
        match &self.kind {
            ArbEventKind::AccountCreated(account) => EventKind::AccountCreated {
                account: account.build(),
            },
            ArbEventKind::ChargeSucceeded { charge_number } => EventKind::ChargeSucceeded {
                charge_number: *charge_number,
            },
        }
    }
}

/// The replication records of a hub: origin state, inbox rows, dead letters.
#[derive(Debug, Clone, Arbitrary)]
pub struct ArbOriginState {
    applied_through: u64,
    events_applied: u64,
    events_parked: u64,
    last_applied_at_ms: u64,
}

impl ArbOriginState {
    pub fn build(&self) -> OriginState {
        OriginState {
            applied_through: self.applied_through,
            events_applied: self.events_applied,
            events_parked: self.events_parked,
            last_applied_at_ms: self.last_applied_at_ms,
        }
    }
}

#[derive(Debug, Clone, Arbitrary)]
pub struct ArbInboxRecord {
    applied_index: u64,
    at_ms: u64,
    dead_letter: Option<u64>,
}

impl ArbInboxRecord {
    pub fn build(&self) -> InboxRecord {
        InboxRecord {
            applied_index: self.applied_index,
            at_ms: self.at_ms,
            outcome: match self.dead_letter {
                None => InboxOutcome::Applied,
                Some(dead_letter_id) => InboxOutcome::DeadLettered { dead_letter_id },
            },
        }
    }
}

#[derive(Debug, Clone, Arbitrary)]
pub enum ArbReplicatedBody {
    AccountCreated(ArbAccount),
    ChargeSucceeded(ArbCharge),
}

#[derive(Debug, Clone, Arbitrary)]
pub struct ArbDeadLetter {
    id: u64,
    origin: String,
    seq: u64,
    created_at_ms: u64,
    body: ArbReplicatedBody,
    reason: String,
    attempts: u32,
    parked_at_ms: u64,
    redriven_at_ms: Option<u64>,
}

impl ArbDeadLetter {
    pub fn build(&self) -> DeadLetter {
        DeadLetter {
            id: self.id,
            origin: self.origin.clone(),
            event: Event {
                seq: self.seq,
                created_at_ms: self.created_at_ms,
                body: match &self.body {
                    ArbReplicatedBody::AccountCreated(a) => EventBody::AccountCreated(a.build()),
                    ArbReplicatedBody::ChargeSucceeded(c) => EventBody::ChargeSucceeded(c.build()),
                },
            },
            reason: self.reason.clone(),
            attempts: self.attempts,
            parked_at_ms: self.parked_at_ms,
            redriven_at_ms: self.redriven_at_ms,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Part 3: a planted store.

#[derive(Debug, Arbitrary)]
pub enum Payload<T> {
    Valid(T),
    Raw(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
pub enum Planted {
    Account {
        tenant: bool,
        id: IdChoice,
        record: Payload<ArbAccount>,
    },
    Idempotency {
        key: u8,
        record: Payload<ArbIdempotencyRecord>,
    },
    Charge {
        number: u8,
        record: Payload<ArbCharge>,
    },
    Posting {
        number: u8,
        leg: u8,
        record: Payload<ArbPosting>,
    },
    Event {
        seq: u8,
        record: Payload<ArbEvent>,
    },
    Counter {
        charge: bool,
        value: Vec<u8>,
    },
}

/// The stored form of a valid record (the real encoder's), or the raw bytes.
fn payload_bytes<T, R: Record>(payload: &Payload<T>, valid: impl FnOnce(&T) -> R) -> Vec<u8> {
    match payload {
        Payload::Valid(record) => encode(&valid(record)),
        Payload::Raw(bytes) => bytes.clone(),
    }
}

/// A small number from a pool byte: 1..=POOL_SIZE, so that numbering starts where the store's does.
fn pooled(raw: u8) -> u64 {
    u64::from(raw % POOL_SIZE) + 1
}

fn idempotency_key(raw: u8) -> String {
    format!("k{}", raw % POOL_SIZE)
}

/// Plants `records` with plain redb, then opens the real store on the same bytes.
/// `None` when opening refused the planted records as corrupt: opening replays the postings after
/// the last account flush and reads the counters, so garbage there is caught at open, with
/// an error (found by this target once open began to read them). Any other failure is a bug.
fn planted_store(records: &[Planted]) -> Option<Store> {
    let memory = SharedMemory::default();
    let db = match Database::builder().create_with_backend(memory.clone()) {
        Ok(db) => db,
        Err(error) => panic!("an in-memory database opens: {error}"),
    };
    let planted = (|| -> Result<(), redb::Error> {
        let txn = db.begin_write()?;
        {
            let mut accounts = txn.open_table(ACCOUNTS)?;
            let mut idempotency = txn.open_table(IDEMPOTENCY_KEYS)?;
            let mut answers = txn.open_table(IDEMPOTENCY_ANSWERS)?;
            let mut charges = txn.open_table(CHARGES)?;
            let mut postings = txn.open_table(POSTINGS)?;
            let mut outbox = txn.open_table(OUTBOX)?;
            let mut meta = txn.open_table(META)?;
            for record in records.iter().take(PLANTED_RECORDS_MAX) {
                match record {
                    Planted::Account { tenant, id, record } => {
                        let bytes = payload_bytes(record, ArbAccount::build);
                        let id = id.account_id();
                        accounts.insert((u32::from(*tenant), id.as_str()), bytes.as_slice())?;
                    }
                    Planted::Idempotency { key, record } => {
                        // One answer per pooled key, numbered after it; the key points at it.
                        let number = u64::from(key % POOL_SIZE) + 1;
                        let key = idempotency_key(*key);
                        let bytes = payload_bytes(record, |r| AnswerRow {
                            tenant: 0,
                            key: key.clone(),
                            record: r.build(),
                        });
                        answers.insert(number, bytes.as_slice())?;
                        let pointer = encode(&AnswerPointer { answer: number });
                        idempotency.insert((0, key.as_str()), pointer.as_slice())?;
                    }
                    Planted::Charge { number, record } => {
                        let number = pooled(*number);
                        let bytes = payload_bytes(record, |c| {
                            // A valid charge sits under its own number.
                            let mut charge = c.build();
                            charge.number = number;
                            charge
                        });
                        charges.insert(number, bytes.as_slice())?;
                    }
                    Planted::Posting {
                        number,
                        leg,
                        record,
                    } => {
                        let bytes = payload_bytes(record, ArbPosting::build);
                        postings.insert((pooled(*number), leg % 2), bytes.as_slice())?;
                    }
                    Planted::Event { seq, record } => {
                        let bytes = payload_bytes(record, ArbEvent::build);
                        outbox.insert(pooled(*seq), bytes.as_slice())?;
                    }
                    Planted::Counter { charge, value } => {
                        let name = if *charge {
                            META_NEXT_CHARGE_NUMBER
                        } else {
                            META_NEXT_EVENT_SEQ
                        };
                        meta.insert(name, value.as_slice())?;
                    }
                }
            }
        }
        txn.commit()?;
        Ok(())
    })();
    if let Err(error) = planted {
        panic!("planting records failed: {error}");
    }
    drop(db);
    match Store::open_with_backend(memory, std::path::Path::new("planted")) {
        Ok(store) => Some(store),
        Err(StoreError::Corrupt { .. }) => None,
        Err(error) => panic!(
            "the store does not open on planted records (did src/store/tables.rs change?): {error}"
        ),
    }
}

/// Reads everything through the public readers. Errors are fine (the records may be garbage);
/// panics are not, and neither is a checker that calls a corrupt store consistent.
fn read_everything(store: &Store, records: &[Planted]) {
    for tenant in [TenantId(0), TenantId(1)] {
        for id in 0..POOL_SIZE {
            let _ = store.account(tenant, &IdChoice(id).account_id());
        }
    }
    for key in 0..POOL_SIZE {
        if let Ok(key) = IdempotencyKey::parse(idempotency_key(key).as_bytes()) {
            let _ = store.idempotency_record(TenantId::DEFAULT, &key);
        }
    }
    for number in 0..=u64::from(POOL_SIZE) + 1 {
        let id = store.charge_ids().id_of(number);
        let _ = store.charge(TenantId::DEFAULT, &id);
    }
    for after in [0, 2, u64::MAX] {
        if let Ok(events) = store.events_after(after, 3) {
            assert!(events.len() <= 3, "events_after honours its limit");
            assert!(
                events.windows(2).all(|w| w[0].seq < w[1].seq),
                "events come in sequence order"
            );
            assert!(events.iter().all(|e| e.seq > after));
        }
    }
    let verified = check::verify(store);
    if records.iter().all(Planted::is_valid) {
        // Records in the stored form the server writes must all decode, and the checker must
        // count each of them once.
        let report = match verified {
            Ok(report) => report,
            Err(error) => panic!("valid records refused (did the stored form change?): {error}"),
        };
        let distinct = |key: fn(&Planted) -> Option<(u8, u64)>| {
            let keys: std::collections::BTreeSet<_> = records
                .iter()
                .take(PLANTED_RECORDS_MAX)
                .filter_map(key)
                .collect();
            keys.len() as u64
        };
        assert_eq!(report.accounts, distinct(Planted::account_key));
        assert_eq!(report.charges, distinct(Planted::charge_key));
        assert_eq!(report.events, distinct(Planted::event_key));
        assert_eq!(
            report.idempotency_records,
            distinct(Planted::idempotency_key)
        );
    }
}

impl Planted {
    fn is_valid(&self) -> bool {
        match self {
            Planted::Account { record, .. } => matches!(record, Payload::Valid(_)),
            Planted::Idempotency { record, .. } => matches!(record, Payload::Valid(_)),
            Planted::Charge { record, .. } => matches!(record, Payload::Valid(_)),
            Planted::Posting { record, .. } => matches!(record, Payload::Valid(_)),
            Planted::Event { record, .. } => matches!(record, Payload::Valid(_)),
            Planted::Counter { .. } => true,
        }
    }

    fn account_key(&self) -> Option<(u8, u64)> {
        match self {
            Planted::Account { tenant, id, .. } => {
                Some((u8::from(*tenant), u64::from(id.0 % POOL_SIZE)))
            }
            _ => None,
        }
    }

    fn charge_key(&self) -> Option<(u8, u64)> {
        match self {
            Planted::Charge { number, .. } => Some((0, pooled(*number))),
            _ => None,
        }
    }

    fn event_key(&self) -> Option<(u8, u64)> {
        match self {
            Planted::Event { seq, .. } => Some((0, pooled(*seq))),
            _ => None,
        }
    }

    fn idempotency_key(&self) -> Option<(u8, u64)> {
        match self {
            Planted::Idempotency { key, .. } => Some((0, u64::from(key % POOL_SIZE))),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Part 2: round trips.

#[derive(Debug, Arbitrary)]
pub struct RoundTrip {
    account: ArbAccount,
    charge: ArbCharge,
    posting: ArbPosting,
    idempotency: ArbIdempotencyRecord,
    event: ArbEvent,
    origin: ArbOriginState,
    inbox: ArbInboxRecord,
    dead_letter: ArbDeadLetter,
    answer_tenant: u32,
    answer_key: String,
    answer_number: u64,
    tenant: (u32, String, u64),
    token: ArbToken,
}

/// store/auth.rs's token row: never the token, only its digest and a shown prefix.
#[derive(Debug, Arbitrary)]
pub struct ArbToken {
    id: u64,
    tenant: u32,
    role: u8,
    digest: [u8; 32],
    prefix: String,
    created_at_ms: u64,
    revoked_at_ms: Option<u64>,
}

impl ArbToken {
    pub fn build(&self) -> TokenRecord {
        TokenRecord {
            id: self.id,
            tenant: self.tenant,
            role: [Role::Admin, Role::Client, Role::Replicator][usize::from(self.role % 3)],
            digest: TokenDigest(self.digest),
            prefix: self.prefix.clone(),
            created_at_ms: self.created_at_ms,
            revoked_at_ms: self.revoked_at_ms,
        }
    }
}

#[derive(Debug, Arbitrary)]
pub struct Input {
    round_trip: RoundTrip,
    planted: Vec<Planted>,
}

/// The record_codec target.
pub fn check(data: &[u8]) {
    codec::decode_everything(data);
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    codec::round_trip(&input.round_trip);
    if let Some(store) = planted_store(&input.planted) {
        read_everything(&store, &input.planted);
    }
}

mod codec {
    //! The codec itself: `onceledger_core::store::codec::{encode, decode}`.

    use onceledger_core::ledger::{Account, Charge, Posting};
    use onceledger_core::store::codec::{Record, decode, encode};
    use onceledger_core::store::{
        AnswerPointer, AnswerRow, DeadLetter, EventRecord, IdempotencyRecord, InboxRecord,
        OriginState, TenantRecord, TokenRecord,
    };

    use super::RoundTrip;

    /// Decoding is canonical: a record of the current version has one stored form, so whatever
    /// decodes is exactly what the encoder writes for it (no trailing bytes, no over-long
    /// varints, no unsorted maps). A record of an older version decodes by migration: it is
    /// written back in the current form, which must then decode to the same record.
    fn decode_one<R: Record + PartialEq + std::fmt::Debug>(data: &[u8]) {
        if let Ok(record) = decode::<R>(data) {
            let again = encode(&record);
            if data.first() == Some(&R::VERSION) {
                assert_eq!(again, data, "{}: only the encoder's form decodes", R::NAME);
            } else {
                assert!(
                    data.first() < Some(&R::VERSION),
                    "{}: a version above the current one decoded",
                    R::NAME
                );
                assert_eq!(
                    decode::<R>(&again).ok().as_ref(),
                    Some(&record),
                    "{}: an older record migrates to a current one that reads back the same",
                    R::NAME
                );
            }
        }
    }

    pub fn decode_everything(data: &[u8]) {
        decode_one::<Account>(data);
        decode_one::<Charge>(data);
        decode_one::<Posting>(data);
        decode_one::<IdempotencyRecord>(data);
        decode_one::<EventRecord>(data);
        decode_one::<OriginState>(data);
        decode_one::<InboxRecord>(data);
        decode_one::<DeadLetter>(data);
        decode_one::<AnswerRow>(data);
        decode_one::<AnswerPointer>(data);
        decode_one::<TenantRecord>(data);
        decode_one::<TokenRecord>(data);
    }

    fn round_trip_one<R: Record + PartialEq + std::fmt::Debug>(record: R) {
        let bytes = encode(&record);
        assert_eq!(bytes.first(), Some(&R::VERSION));
        assert_eq!(
            decode::<R>(&bytes).ok().as_ref(),
            Some(&record),
            "{}",
            R::NAME
        );
        // Every strict prefix is refused: a torn record is never misread as a shorter one.
        for cut in 0..bytes.len() {
            assert!(
                decode::<R>(&bytes[..cut]).ok().as_ref() != Some(&record),
                "{}: a prefix of {cut} bytes decodes to the whole record",
                R::NAME
            );
        }
    }

    pub fn round_trip(input: &RoundTrip) {
        round_trip_one(input.account.build());
        round_trip_one(input.charge.build());
        round_trip_one(input.posting.build());
        round_trip_one(input.idempotency.build());
        round_trip_one(input.event.build());
        round_trip_one(input.origin.build());
        round_trip_one(input.inbox.build());
        round_trip_one(input.dead_letter.build());
        round_trip_one(AnswerRow {
            tenant: input.answer_tenant,
            key: input.answer_key.clone(),
            record: input.idempotency.build(),
        });
        round_trip_one(AnswerPointer {
            answer: input.answer_number,
        });
        round_trip_one(TenantRecord {
            id: input.tenant.0,
            name: input.tenant.1.clone(),
            created_at_ms: input.tenant.2,
        });
        round_trip_one(input.token.build());
    }
}
