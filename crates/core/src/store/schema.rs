//! The schema: every table of the store, and the counters kept in `meta`. Number keys are fixed-width big-endian (redb's integer encoding), so range
//! scans follow numeric order; tenant-scoped keys start with the tenant.

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::StoreError;
use super::journal::PutInto;

/// A counter that reads a malformed value as absent (the checker and `outbox_bounds` always did:
/// the checker's density checks then report it as a violation instead of stopping).
pub fn read_counter_leniently(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    name: &str,
) -> Result<Option<u64>, StoreError> {
    match read_counter(meta, name) {
        Err(StoreError::Corrupt { .. }) => Ok(None),
        other => other,
    }
}

/// A counter in `meta` (8 bytes, big-endian): `None` when it was never written. Any other length
/// is corruption, whoever reads it.
pub fn read_counter(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    name: &str,
) -> Result<Option<u64>, StoreError> {
    match meta.get(name)? {
        None => Ok(None),
        Some(bytes) => <[u8; 8]>::try_from(bytes.value())
            .map(|b| Some(u64::from_be_bytes(b)))
            .map_err(|_| StoreError::Corrupt {
                record: "counter",
                detail: name.into(),
            }),
    }
}

/// A table of a read transaction, or `None` when the store was written by a build before the
/// table existed. Only a read-only open (`onceledger check` of a store an older build stopped)
/// can see that: every writable open creates all tables first.
pub fn open_if_present<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &redb::ReadTransaction,
    table: TableDefinition<K, V>,
) -> Result<Option<redb::ReadOnlyTable<K, V>>, StoreError> {
    match txn.open_table(table) {
        Ok(opened) => Ok(Some(opened)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(other) => Err(other.into()),
    }
}

/// Writes a counter in `meta` in the form `read_counter` reads.
pub fn write_counter(
    meta: &mut impl PutInto<&'static str, &'static [u8]>,
    name: &str,
    value: u64,
) -> Result<(), StoreError> {
    meta.put(name, value.to_be_bytes().as_slice())
}

/// (tenant, account id) → Account.
pub const ACCOUNTS: TableDefinition<(u32, &str), &[u8]> = TableDefinition::new("accounts");
/// Before 0.1 stores split it in two: (tenant, idempotency key) → IdempotencyRecord. Read only to
/// migrate (see `answers.rs`).
pub const IDEMPOTENCY_LEGACY: TableDefinition<(u32, &str), &[u8]> =
    TableDefinition::new("idempotency");
/// (tenant, idempotency key) → AnswerPointer: the number of the key's answer.
pub const IDEMPOTENCY_KEYS: TableDefinition<(u32, &str), &[u8]> =
    TableDefinition::new("idempotency_keys");
/// answer number → AnswerRow (tenant, key, IdempotencyRecord). Dense, so inserts append.
pub const IDEMPOTENCY_ANSWERS: TableDefinition<u64, &[u8]> =
    TableDefinition::new("idempotency_answers");
/// Before the retention sweep walked `idempotency_answers` (which is in finish order too):
/// (finished at ms, tenant, key) → (). Only dropped on open.
pub const IDEMPOTENCY_EXPIRY_LEGACY: TableDefinition<(u64, u32, &str), ()> =
    TableDefinition::new("idempotency_expiry");
/// entry number → Charge, for the entries that created a charge. Every ledger entry (a charge,
/// the capture, void or expiry of an authorization, a refund, a transfer) takes the next number
/// of one dense counter (`META_NEXT_ENTRY_NUMBER`), so inserts append, and charges keep their
/// numbers from before other entries existed.
pub const CHARGES: TableDefinition<u64, &[u8]> = TableDefinition::new("charges");
/// (entry number, leg) → Posting: every change of an account's totals, in entry order. A charge
/// has legs 0 (debit) and 1 (credit); a capture 0-1 (the releases) and 2-3 (the posted amount);
/// a transfer two per leg.
pub const POSTINGS: TableDefinition<(u64, u8), &[u8]> = TableDefinition::new("postings");
/// charge number → ChargeProgress, for authorizations and refunded charges (a plain immediate
/// charge has none: it is succeeded, captured whole, not refunded).
pub const CHARGE_PROGRESS: TableDefinition<u64, &[u8]> = TableDefinition::new("charge_progress");
/// (expires at ms, charge number) → (): the open authorizations by expiry, so the writer's expiry
/// is a seek to the first row, not a scan. A row is removed when its authorization ends.
pub const AUTHORIZATION_EXPIRY: TableDefinition<(u64, u64), ()> =
    TableDefinition::new("authorization_expiry");
/// entry number → Refund.
pub const REFUNDS: TableDefinition<u64, &[u8]> = TableDefinition::new("refunds");
/// entry number → Transfer.
pub const TRANSFERS: TableDefinition<u64, &[u8]> = TableDefinition::new("transfers");
// History (`history.rs`): indexes written in the transaction of what they index, kept for ever.
/// (tenant, account id, event seq, leg) → a block of statement lines (`history/blocks.rs`): an
/// account's statement, one line per posting to it, each at the seq of the entry's event (dense
/// and in commit order, so the lines of `as_of_seq` are one seek away) and the posting's leg in
/// its entry; a block is keyed by its first line.
pub const STATEMENTS: TableDefinition<(u32, &str, u64, u8), &[u8]> =
    TableDefinition::new("statements");
/// settlement entry number → the charge it settled: where recovery finds the facts of a
/// capture's, void's or expiry's statement lines (`history/read_back.rs`).
pub const SETTLEMENT_ENTRIES: TableDefinition<u64, u64> =
    TableDefinition::new("settlement_entries");
/// (tenant, kind, event seq) → a block of (event seq, entry number) (`history/blocks.rs`): each
/// tenant's charges, refunds and transfers in creation order (`history::ListedKind`), a block per
/// commit keyed by its first.
pub const TENANT_ENTRIES: TableDefinition<(u32, u8, u64), &[u8]> =
    TableDefinition::new("tenant_entries");
/// (charge number, refund event seq) → refund number: a charge's refunds, in order.
pub const CHARGE_REFUNDS: TableDefinition<(u64, u64), u64> = TableDefinition::new("charge_refunds");
/// (tenant, created at ms, account id) → (): each tenant's accounts in creation order.
pub const ACCOUNTS_BY_CREATION: TableDefinition<(u32, u64, &str), ()> =
    TableDefinition::new("accounts_by_creation");
/// ms → the last event seq created at or before it: one row per commit (per distinct time), so
/// `as_of=` a moment is a seek here, then one in the statement. Keys and values both only grow
/// (the writer never stamps an entry earlier than the last one, `BatchTables::clock`).
pub const TIMELINE: TableDefinition<u64, u64> = TableDefinition::new("timeline");
/// (origin node, account id, origin event seq, leg) → StatementLine: a hub's mirror of each
/// origin's statements, written as the mirror applies each event (`replication/statement.rs`).
/// `made_by` is the origin's number of the charge, refund or transfer; `entry` the origin's entry
/// number, which the wire carries for a charge, refund and transfer but not for a settlement: a
/// capture's and a release's lines have `entry` 0.
pub const REPLICA_STATEMENTS: TableDefinition<(&str, &str, u64, u8), &[u8]> =
    TableDefinition::new("replica_statements");

/// event sequence number → EventRecord. Dense from 1.
pub const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");
/// sink name → highest event seq the sink acknowledged (the replicator's cursor).
pub const SINK_CURSORS: TableDefinition<&str, u64> = TableDefinition::new("sink_cursors");
/// origin node → OriginState: how far a hub applied that origin's events.
pub const ORIGINS: TableDefinition<&str, &[u8]> = TableDefinition::new("origins");
/// (origin node, seq) → InboxRecord: each replicated event a hub took, applied or dead-lettered.
pub const INBOX: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("inbox");
/// (origin node, account id) → Account: a hub's mirror of an origin's accounts.
pub const REPLICA_ACCOUNTS: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("replica_accounts");
/// (origin node, seq) → Charge: the charges a hub applied to its mirror, as the origin stored them.
pub const REPLICA_CHARGES: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("replica_charges");
/// (origin node, charge event seq) → ChargeProgress: a mirrored authorization's state (and a
/// mirrored charge's refunded amount), keyed like `replica_charges`. As on a node, a plain
/// immediate charge with nothing refunded has no row. A mirrored settlement's `entry` is 0: the
/// wire does not carry the origin's entry number of a capture, void or expiry.
pub const REPLICA_CHARGE_PROGRESS: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("replica_charge_progress");
/// (origin node, event seq) → Refund: the refunds a hub applied to its mirror.
pub const REPLICA_REFUNDS: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("replica_refunds");
/// (origin node, event seq) → Transfer: the transfers a hub applied to its mirror.
pub const REPLICA_TRANSFERS: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("replica_transfers");
/// (origin, the origin's entry number) → the event seq that carried it: each entry number of an
/// origin is mirrored at most once (a charge's, a refund's or a transfer's), so a refund names
/// exactly one mirrored charge.
pub const REPLICA_ENTRY_NUMBERS: TableDefinition<(&str, u64), u64> =
    TableDefinition::new("replica_entry_numbers");
/// dead letter id → DeadLetter. Ids are dense from 1 per hub.
pub const DEAD_LETTERS: TableDefinition<u64, &[u8]> = TableDefinition::new("dead_letters");
/// name → value: the replication counters (kept apart from META so the ledger's batch code and
/// the replication code never write the same table).
pub const REPLICATION_COUNTERS: TableDefinition<&str, u64> =
    TableDefinition::new("replication_counters");

pub const COUNTER_NEXT_DEAD_LETTER_ID: &str = "next_dead_letter_id";
pub const COUNTER_NEXT_APPLIED_INDEX: &str = "next_applied_index";

/// name → value: counters and the node id.
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

// Tenants and tokens (`auth.rs`).
/// tenant id → TenantRecord (tenant 0 has no row).
pub const TENANTS: TableDefinition<u32, &[u8]> = TableDefinition::new("tenants");
/// tenant name → tenant id.
pub const TENANT_NAMES: TableDefinition<&str, u32> = TableDefinition::new("tenant_names");
/// token id → TokenRecord. Ids are dense from 1.
pub const TOKENS: TableDefinition<u64, &[u8]> = TableDefinition::new("tokens");
/// (tenant, event seq) → (): the events each tenant owns, in seq order.
pub const TENANT_EVENTS: TableDefinition<(u32, u64), ()> = TableDefinition::new("tenant_events");
/// entry number → tenant, for the entries (charges, settlements, refunds, transfers) of tenants
/// other than 0. Named for what it held first.
pub const CHARGE_TENANTS: TableDefinition<u64, u32> = TableDefinition::new("charge_tenants");
/// name → value: the next tenant id and token id.
pub const AUTH_COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("auth_counters");

pub const META_NODE_ID: &str = "node_id";
pub const META_NEXT_EVENT_SEQ: &str = "next_event_seq";
/// The next ledger entry number. Named for what it counted before other entries than charges
/// existed: a charge's number is its entry number.
pub const META_NEXT_ENTRY_NUMBER: &str = "next_charge_number";
/// The lowest outbox seq still held (1 until outbox retention deletes events; never goes back).
pub const META_OUTBOX_FIRST_HELD: &str = "outbox_first_held";
pub const META_NEXT_ANSWER_NUMBER: &str = "next_answer_number";
/// The last charge number whose postings the `accounts` rows include (see `store/accounts.rs`).
pub const META_ACCOUNTS_THROUGH_CHARGE: &str = "accounts_through_charge";
/// The last journaled batch the redb file holds (see `store/journal.rs`): written by every
/// durable commit of a store with a journal.
pub const META_JOURNAL_THROUGH: &str = "journal_through";
/// Every statement line of the entries numbered up to this is in `statements`; those of later
/// entries may wait in memory (`history/overlay.rs`) and are worked out again on open.
pub const META_STATEMENTS_THROUGH_ENTRY: &str = "statements_through_entry";
/// Present once every posting, entry and account has its history rows (`history::backfill`):
/// set by the first open of a store by a build with history.
pub const META_HISTORY_INDEXED: &str = "history_indexed";
/// The store's identity (16 bytes, `journal::StoreId`), which its journal's header must carry.
/// Absent on a store from before journals had headers, until its next open.
pub const META_STORE_ID: &str = "store_id";
/// Every answer numbered up to this has its key in `idempotency_keys` (see `store/keys.rs`).
pub const META_KEYS_THROUGH_ANSWER: &str = "keys_through_answer";
/// The key charge ids are encrypted with (`ledger::ChargeIds`): 32 random bytes, made at the
/// store's first open by a build with opaque ids, together with the next counter.
pub const META_CHARGE_ID_KEY: &str = "charge_id_key";
/// The first charge number with an opaque id: 1 on a store made with opaque ids; on an older
/// store, its next charge number when the key was made (the charges before keep their ids).
pub const META_CHARGE_IDS_OPAQUE_FROM: &str = "charge_ids_opaque_from";

pub fn create_all(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(ACCOUNTS)?;
    txn.open_table(IDEMPOTENCY_KEYS)?;
    txn.open_table(IDEMPOTENCY_ANSWERS)?;
    txn.open_table(CHARGES)?;
    txn.open_table(POSTINGS)?;
    txn.open_table(CHARGE_PROGRESS)?;
    txn.open_table(AUTHORIZATION_EXPIRY)?;
    txn.open_table(REFUNDS)?;
    txn.open_table(TRANSFERS)?;
    txn.open_table(STATEMENTS)?;
    txn.open_table(SETTLEMENT_ENTRIES)?;
    txn.open_table(TENANT_ENTRIES)?;
    txn.open_table(CHARGE_REFUNDS)?;
    txn.open_table(ACCOUNTS_BY_CREATION)?;
    txn.open_table(TIMELINE)?;
    txn.open_table(REPLICA_STATEMENTS)?;
    txn.open_table(OUTBOX)?;
    txn.open_table(META)?;
    txn.open_table(SINK_CURSORS)?;
    txn.open_table(ORIGINS)?;
    txn.open_table(INBOX)?;
    txn.open_table(REPLICA_ACCOUNTS)?;
    txn.open_table(REPLICA_CHARGES)?;
    txn.open_table(REPLICA_CHARGE_PROGRESS)?;
    txn.open_table(REPLICA_REFUNDS)?;
    txn.open_table(REPLICA_TRANSFERS)?;
    txn.open_table(REPLICA_ENTRY_NUMBERS)?;
    txn.open_table(DEAD_LETTERS)?;
    txn.open_table(REPLICATION_COUNTERS)?;
    super::auth::create_tables(txn)?;
    Ok(())
}

/// Drops the tables of earlier layouts that nothing reads any more. Returns whether it dropped any.
pub fn drop_legacy(txn: &WriteTransaction) -> Result<bool, StoreError> {
    Ok(txn.delete_table(IDEMPOTENCY_EXPIRY_LEGACY)?)
}
