//! Finished idempotency keys: a small keyed index over an append-ordered table of answers.
//!
//! Why two tables: idempotency keys are random (UUIDs), so every insert into a table keyed by
//! them lands on its own B-tree leaf. When that table also held the ~400-byte answer (the
//! response body), it was large (it outgrew the page cache after ~150k charges) and had many
//! leaves and branches to rewrite per commit. Now the keyed table `idempotency_keys` holds only a
//! pointer (a version byte and a varint answer number), and the answer itself is appended to
//! `idempotency_answers` under a dense number, where consecutive commands share pages.
//!
//! A lookup is two point reads: key → number → answer. The answer repeats its tenant and key, so a
//! pointer that names another key's answer is reported as corruption rather than replayed.

use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use super::StoreError;
use super::codec::{Record, decode, encode};
use super::journal::PutInto;
use super::records::IdempotencyRecord;
use super::schema::read_counter;
use crate::ids::TenantId;

/// `idempotency_keys` value: where the key's answer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnswerPointer {
    pub answer: u64,
}

impl Record for AnswerPointer {
    const VERSION: u8 = 1;
    const NAME: &'static str = "idempotency key";
}

/// `idempotency_answers` value: the finished request, with the key it answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnswerRow {
    pub tenant: u32,
    pub key: String,
    pub record: IdempotencyRecord,
}

impl Record for AnswerRow {
    const VERSION: u8 = 1;
    const NAME: &'static str = "idempotency answer";
}

/// The finished record of `(tenant, key)` in the keyed table, if any.
pub(super) fn get(
    keys: &impl ReadableTable<(u32, &'static str), &'static [u8]>,
    answers: &impl ReadableTable<u64, &'static [u8]>,
    tenant: TenantId,
    key: &str,
) -> Result<Option<IdempotencyRecord>, StoreError> {
    let Some(pointer) = keys.get((tenant.0, key))? else {
        return Ok(None);
    };
    let pointer: AnswerPointer = decode(pointer.value())?;
    pointed_answer(answers, pointer.answer, tenant, key).map(Some)
}

/// Like [`answer_of`], for a pointer that must lead to an answer: a missing one is corruption.
pub(super) fn pointed_answer(
    answers: &impl ReadableTable<u64, &'static [u8]>,
    number: u64,
    tenant: TenantId,
    key: &str,
) -> Result<IdempotencyRecord, StoreError> {
    answer_of(answers, number, tenant, key)?.ok_or_else(|| StoreError::Corrupt {
        record: AnswerRow::NAME,
        detail: format!("answer {number} is missing"),
    })
}

/// Answer `number`, which `(tenant, key)` points at: `None` if it is gone (deleted by retention),
/// corruption if it answers another key.
pub(super) fn answer_of(
    answers: &impl ReadableTable<u64, &'static [u8]>,
    number: u64,
    tenant: TenantId,
    key: &str,
) -> Result<Option<IdempotencyRecord>, StoreError> {
    let Some(bytes) = answers.get(number)? else {
        return Ok(None);
    };
    let stored: AnswerRow = decode(bytes.value())?;
    if stored.tenant != tenant.0 || stored.key != key {
        return Err(StoreError::Corrupt {
            record: AnswerRow::NAME,
            detail: format!(
                "key {key:?} points at answer {number}, which answers {:?}",
                stored.key
            ),
        });
    }
    Ok(Some(stored.record))
}

/// The answer numbered `number`; missing is corruption (a pointer names it).
pub(super) fn answer(
    answers: &impl ReadableTable<u64, &'static [u8]>,
    number: u64,
) -> Result<AnswerRow, StoreError> {
    let bytes = answers.get(number)?.ok_or_else(|| StoreError::Corrupt {
        record: AnswerRow::NAME,
        detail: format!("answer {number} is missing"),
    })?;
    decode(bytes.value())
}

/// Appends the answer of `(tenant, key)` under `number`. Its key goes to the key overlay (see
/// `keys.rs`), not to the keyed table.
pub(super) fn append(
    answers: &mut impl PutInto<u64, &'static [u8]>,
    number: u64,
    tenant: TenantId,
    key: &str,
    record: &IdempotencyRecord,
) -> Result<(), StoreError> {
    let stored = AnswerRow {
        tenant: tenant.0,
        key: key.to_owned(),
        record: record.clone(),
    };
    answers.put(number, encode(&stored).as_slice())
}

/// Moves the records of the one-table layout (`idempotency`, key → whole record) into keys and
/// answers, and drops that table. Returns how many records moved.
pub(super) fn migrate_legacy(txn: &redb::WriteTransaction) -> Result<u64, StoreError> {
    use super::schema::{
        IDEMPOTENCY_ANSWERS, IDEMPOTENCY_KEYS, IDEMPOTENCY_LEGACY, META, META_NEXT_ANSWER_NUMBER,
    };
    use redb::TableHandle;
    let legacy_exists = txn
        .list_tables()?
        .any(|table| table.name() == IDEMPOTENCY_LEGACY.name());
    if !legacy_exists {
        return Ok(0);
    }
    let mut moved = 0u64;
    {
        let legacy = txn.open_table(IDEMPOTENCY_LEGACY)?;
        let mut keys = txn.open_table(IDEMPOTENCY_KEYS)?;
        let mut answers = txn.open_table(IDEMPOTENCY_ANSWERS)?;
        let mut meta = txn.open_table(META)?;
        let mut next = read_counter(&meta, META_NEXT_ANSWER_NUMBER)?.unwrap_or(1);
        for entry in legacy.iter()? {
            let (key, bytes) = entry?;
            let (tenant, key) = key.value();
            let record: IdempotencyRecord = decode(bytes.value())?;
            append(&mut answers, next, TenantId(tenant), key, &record)?;
            let pointer = AnswerPointer { answer: next };
            keys.insert((tenant, key), encode(&pointer).as_slice())?;
            next += 1;
            moved += 1;
        }
        super::schema::write_counter(&mut meta, META_NEXT_ANSWER_NUMBER, next)?;
    }
    txn.delete_table(IDEMPOTENCY_LEGACY)?;
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::super::codec::encode;
    use super::super::records::Effect;
    use super::super::schema::IDEMPOTENCY_LEGACY;
    use super::super::{STORE_FILE_NAME, Store};
    use super::*;
    use crate::idempotency::{Fingerprint, IdempotencyKey};

    /// A store of the one-table layout opens with every record readable, and checks clean.
    #[test]
    fn legacy_records_are_migrated_on_open() {
        let dir = tempfile::tempdir().expect("temp dir");
        let record = IdempotencyRecord {
            fingerprint: Fingerprint([3; 32]),
            status: 402,
            body: b"{\"type\":\"/problems/insufficient-funds\"}".to_vec(),
            finished_at_ms: 9,
            effect: Effect::None,
        };
        {
            let db = redb::Database::create(dir.path().join(STORE_FILE_NAME)).expect("db");
            let txn = db.begin_write().expect("txn");
            {
                let mut legacy = txn.open_table(IDEMPOTENCY_LEGACY).expect("table");
                for key in ["k1", "k2"] {
                    legacy
                        .insert((0, key), encode(&record).as_slice())
                        .expect("insert");
                }
            }
            txn.commit().expect("commit");
        }
        let store = Store::open(dir.path()).expect("opens");
        for key in ["k1", "k2"] {
            let key = IdempotencyKey::parse(key.as_bytes()).expect("key");
            let found = store.idempotency_record(TenantId::DEFAULT, &key);
            assert_eq!(found.expect("readable"), Some(record.clone()));
        }
        let report = super::super::check::assert_consistent(&store);
        assert_eq!(report.idempotency_records, 2);
    }
}
