//! Table definitions. Number keys are fixed-width big-endian (redb's integer encoding), so range
//! scans follow numeric order; tenant-scoped keys start with the tenant.

use redb::{TableDefinition, WriteTransaction};

use super::StoreError;

/// (tenant, account id) → Account.
pub const ACCOUNTS: TableDefinition<(u32, &str), &[u8]> = TableDefinition::new("accounts");
/// Before 0.1 stores split it in two: (tenant, idempotency key) → IdempotencyRecord. Read only to
/// migrate (see `answers.rs`).
pub const IDEMPOTENCY_LEGACY: TableDefinition<(u32, &str), &[u8]> =
    TableDefinition::new("idempotency");
/// (tenant, idempotency key) → AnswerPointer: the number of the key's answer.
pub const IDEMPOTENCY_KEYS: TableDefinition<(u32, &str), &[u8]> =
    TableDefinition::new("idempotency_keys");
/// answer number → StoredAnswer (tenant, key, IdempotencyRecord). Dense, so inserts append.
pub const IDEMPOTENCY_ANSWERS: TableDefinition<u64, &[u8]> =
    TableDefinition::new("idempotency_answers");
/// (finished at ms, tenant, key) → (): the retention sweep walks this in time order.
pub const IDEMPOTENCY_EXPIRY: TableDefinition<(u64, u32, &str), ()> =
    TableDefinition::new("idempotency_expiry");
/// charge number → Charge. Numbers are dense per node, so inserts append.
pub const CHARGES: TableDefinition<u64, &[u8]> = TableDefinition::new("charges");
/// (charge number, leg: 0 debit, 1 credit) → Posting.
pub const POSTINGS: TableDefinition<(u64, u8), &[u8]> = TableDefinition::new("postings");
/// event sequence number → EventRecord. Dense from 1.
pub const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");
/// name → value: counters and the node id.
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

pub const META_NODE_ID: &str = "node_id";
pub const META_NEXT_EVENT_SEQ: &str = "next_event_seq";
pub const META_NEXT_CHARGE_NUMBER: &str = "next_charge_number";
/// The last charge number whose postings the `accounts` rows include (see `store/accounts.rs`).
pub const META_NEXT_ANSWER_NUMBER: &str = "next_answer_number";
pub const META_ACCOUNTS_THROUGH_CHARGE: &str = "accounts_through_charge";

pub fn create_all(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(ACCOUNTS)?;
    txn.open_table(IDEMPOTENCY_KEYS)?;
    txn.open_table(IDEMPOTENCY_ANSWERS)?;
    txn.open_table(IDEMPOTENCY_EXPIRY)?;
    txn.open_table(CHARGES)?;
    txn.open_table(POSTINGS)?;
    txn.open_table(OUTBOX)?;
    txn.open_table(META)?;
    Ok(())
}
