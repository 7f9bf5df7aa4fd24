//! Opening a store: every step that brings the file up to the last acknowledged batch, in one
//! place and in one order, and the read-only variant `onceledger check` uses.
//!
//! A writable open runs [`RECOVERY_ORDER`] inside one write transaction, committed durably before
//! the store answers anything:
//!
//! 1. **Create tables**: every table exists, so no reader meets a missing one. A store from before
//!    the `default_rows_from` mark settles it here (`auth::create_tables`).
//! 2. **Replay the journal**: the batches journaled after `meta.journal_through`, in order. First
//!    of the steps that read data, because each later one must see the tables as the last
//!    acknowledged batch left them.
//! 3. **Drop legacy tables** and 4. **migrate legacy answers**: earlier layouts into this one.
//!    After the replay (a journal only ever names this layout's tables) and before the overlays
//!    are read back, which read this layout.
//! 5. **Read back the key overlay**: the keys of the answers after `meta.keys_through_answer`,
//!    into memory (`keys.rs`).
//! 6. **Bring the accounts up to date**: the postings after `meta.accounts_through_charge`
//!    re-applied to the account rows (`accounts.rs`). After the migration, before the node id.
//! 7. **Index history** of a store from before history: statement lines, list indexes and the
//!    timeline for every posting, entry and account it holds (`history/backfill.rs`), once; a
//!    store is marked when done. After the journal replay, so it indexes the replayed batches.
//!    Then the statement lines not yet merged are worked out again from their postings, into
//!    memory (`history/read_back.rs`). After the account step: it starts from current totals.
//! 8. **Node id** and the **charge-id key**: read, or made on a fresh store; the key also on a
//!    store from before opaque ids, marked to start after its last charge (`charge_ids.rs`). Last,
//!    so that the mark counts the charges the journal replay brought back.
//!
//! The order is asserted, not assumed: [`Recovery::step`] panics on a step run out of order, and
//! the store keeps what each step did ([`RecoveryReport`]) for the log and the tests.

use redb::{ReadTransaction, ReadableTable, WriteTransaction};

use super::accounts::{self, AccountMap};
use super::answers;
use super::charge_ids;
use super::journal::{self, JournalFile};
use super::keys::{self, KeyOverlay};
use super::schema::{
    self, ACCOUNTS, CHARGE_TENANTS, IDEMPOTENCY_ANSWERS, META, META_ACCOUNTS_THROUGH_CHARGE,
    META_JOURNAL_THROUGH, META_KEYS_THROUGH_ANSWER, META_NEXT_ENTRY_NUMBER, META_NODE_ID,
    META_STORE_ID, POSTINGS,
};
use super::{JournalRefusal, StoreError, StoreId, new_node_id};
use crate::ledger::ChargeIds;

/// One step of opening a store, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryStep {
    CreateTables,
    ReplayJournal,
    DropLegacyTables,
    MigrateLegacyAnswers,
    RecoverKeyOverlay,
    RecoverAccounts,
    IndexHistory,
    NodeId,
}

/// The order of the steps; the module doc says why each comes where it does.
pub const RECOVERY_ORDER: [RecoveryStep; 8] = [
    RecoveryStep::CreateTables,
    RecoveryStep::ReplayJournal,
    RecoveryStep::DropLegacyTables,
    RecoveryStep::MigrateLegacyAnswers,
    RecoveryStep::RecoverKeyOverlay,
    RecoveryStep::RecoverAccounts,
    RecoveryStep::IndexHistory,
    RecoveryStep::NodeId,
];

/// What an open did, step by step, in the order the steps ran: how many journaled batches,
/// legacy records, keys or postings each one handled (0 for the steps that count nothing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub steps: Vec<(RecoveryStep, u64)>,
}

impl RecoveryReport {
    /// What `step` handled; 0 if it did not run.
    pub fn count(&self, step: RecoveryStep) -> u64 {
        self.steps
            .iter()
            .find(|(ran, _)| *ran == step)
            .map_or(0, |(_, count)| *count)
    }
}

/// Where an open finds the store's journal.
pub(super) enum JournalSource {
    /// None at all: a store on a custom redb backend (the fuzzers), every batch a durable commit.
    None,
    /// The journal file of this data directory, which may be missing.
    Dir(std::path::PathBuf),
    /// A journal file handed in (the fault-injecting files of tests and fuzzers).
    File(Box<dyn JournalFile>),
}

/// What a writable open hands the store.
pub(super) struct Recovered {
    pub node_id: String,
    pub charge_ids: ChargeIds,
    pub journal: Option<journal::Journal>,
    pub report: RecoveryReport,
}

/// The steps run so far on one open's transaction.
struct Recovery<'txn> {
    txn: &'txn WriteTransaction,
    report: RecoveryReport,
}

impl<'txn> Recovery<'txn> {
    /// Runs `step`, which must be the next of [`RECOVERY_ORDER`], and records its count.
    fn step<T>(
        &mut self,
        step: RecoveryStep,
        run: impl FnOnce(&'txn WriteTransaction) -> Result<(T, u64), StoreError>,
    ) -> Result<T, StoreError> {
        let expected = RECOVERY_ORDER.get(self.report.steps.len());
        assert_eq!(expected, Some(&step), "recovery step run out of order");
        let (value, count) = run(self.txn)?;
        self.report.steps.push((step, count));
        Ok(value)
    }
}

/// Runs every step of [`RECOVERY_ORDER`] in `txn`; the caller commits it. `key_overlay` receives
/// the keys read back; `requested` is the node id a fresh store takes.
pub(super) fn run(
    txn: &WriteTransaction,
    journal_source: JournalSource,
    requested: Option<&str>,
    key_overlay: &KeyOverlay,
    statement_overlay: &super::history::overlay::StatementOverlay,
) -> Result<Recovered, StoreError> {
    let mut recovery = Recovery {
        txn,
        report: RecoveryReport::default(),
    };
    recovery.step(RecoveryStep::CreateTables, |txn| {
        schema::create_all(txn).map(|()| ((), 0))
    })?;
    let journal = recovery.step(RecoveryStep::ReplayJournal, |txn| {
        replay_journal(txn, journal_source)
    })?;
    recovery.step(RecoveryStep::DropLegacyTables, |txn| {
        schema::drop_legacy(txn).map(|dropped| ((), u64::from(dropped)))
    })?;
    recovery.step(RecoveryStep::MigrateLegacyAnswers, |txn| {
        answers::migrate_legacy(txn).map(|migrated| ((), migrated))
    })?;
    recovery.step(RecoveryStep::RecoverKeyOverlay, |txn| {
        keys::recover(txn, key_overlay).map(|keys| ((), keys))
    })?;
    recovery.step(RecoveryStep::RecoverAccounts, |txn| {
        let last_charge = last_charge_number(&txn.open_table(META)?)?;
        accounts::recover(txn, last_charge).map(|postings| ((), postings))
    })?;
    recovery.step(RecoveryStep::IndexHistory, |txn| {
        let backfilled = super::history::backfill(txn)?;
        let read_back = super::history::read_back(txn, statement_overlay)?;
        Ok(((), backfilled + read_back))
    })?;
    let (node_id, charge_ids) = recovery.step(RecoveryStep::NodeId, |txn| {
        Ok(((node_id(txn, requested)?, charge_ids::recover(txn)?), 0))
    })?;
    log(&recovery.report);
    Ok(Recovered {
        node_id,
        charge_ids,
        journal,
        report: recovery.report,
    })
}

/// Step 2: checks that the journal is this store's and applies its batches after
/// `meta.journal_through`, then moves the mark to the last of them and records the store's
/// identity (made here for a fresh store or one from before journal headers). A store without a
/// journal (a custom backend) has nothing to replay.
fn replay_journal(
    txn: &WriteTransaction,
    source: JournalSource,
) -> Result<(Option<journal::Journal>, u64), StoreError> {
    // Closed before the replay, which writes `meta` too.
    let (through, store_id) = {
        let meta = txn.open_table(META)?;
        let through = schema::read_counter(&meta, META_JOURNAL_THROUGH)?.unwrap_or(0);
        (through, read_store_id(&meta)?)
    };
    let file: Box<dyn JournalFile> = match source {
        JournalSource::None => return Ok((None, 0)),
        JournalSource::File(file) => file,
        JournalSource::Dir(dir) => match journal::open_existing(&dir).map_err(StoreError::Io)? {
            Some(file) => Box::new(file),
            None => match store_id {
                // The store has had a journal (it has an identity), so the batches acknowledged
                // after `through` are in a file that is gone: never start a new one over them.
                Some(store) => {
                    return Err(StoreError::JournalRefused(JournalRefusal::Missing {
                        store,
                        through,
                    }));
                }
                None => Box::new(journal::create_file(&dir).map_err(StoreError::Io)?),
            },
        },
    };
    let (recovered, replayed) = journal::Journal::recover(file, txn, through, store_id)?;
    let mut meta = txn.open_table(META)?;
    schema::write_counter(&mut meta, META_JOURNAL_THROUGH, recovered.last_seq())?;
    meta.insert(META_STORE_ID, recovered.store_id().0.as_slice())?;
    Ok((Some(recovered), replayed))
}

/// `meta.store_id`: `None` on a fresh store or one from before journal headers.
pub(super) fn read_store_id(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Option<StoreId>, StoreError> {
    let Some(bytes) = meta.get(META_STORE_ID)? else {
        return Ok(None);
    };
    let bytes: [u8; 16] = bytes.value().try_into().map_err(|_| StoreError::Corrupt {
        record: "store id",
        detail: "not 16 bytes".into(),
    })?;
    Ok(Some(StoreId(bytes)))
}

/// Step 7: the stored node id, or `requested` (else a random one) on a fresh store.
fn node_id(txn: &WriteTransaction, requested: Option<&str>) -> Result<String, StoreError> {
    let mut meta = txn.open_table(META)?;
    let existing = meta.get(META_NODE_ID)?.map(|v| v.value().to_vec());
    match existing {
        Some(bytes) => String::from_utf8(bytes).map_err(|_| StoreError::Corrupt {
            record: "node id",
            detail: "not UTF-8".into(),
        }),
        None => {
            let fresh = requested.map_or_else(new_node_id, str::to_owned);
            meta.insert(META_NODE_ID, fresh.as_bytes())?;
            Ok(fresh)
        }
    }
}

/// The highest charge number stored (0 if none), from the counter in `meta`.
fn last_charge_number(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<u64, StoreError> {
    let next = schema::read_counter(meta, META_NEXT_ENTRY_NUMBER)?.unwrap_or(1);
    Ok(next.saturating_sub(1))
}

fn log(report: &RecoveryReport) {
    let counted = [
        (
            RecoveryStep::ReplayJournal,
            "batches journaled after the last checkpoint replayed",
        ),
        (
            RecoveryStep::DropLegacyTables,
            "retention now walks the answers: idempotency_expiry dropped",
        ),
        (
            RecoveryStep::MigrateLegacyAnswers,
            "idempotency records moved to keys + answers",
        ),
        (
            RecoveryStep::RecoverKeyOverlay,
            "finished keys read back into memory",
        ),
        (
            RecoveryStep::RecoverAccounts,
            "account balances brought up to the last commit",
        ),
    ];
    for (step, message) in counted {
        let count = report.count(step);
        if count > 0 {
            tracing::info!(count, "{message}");
        }
    }
}

/// What a read-only open rebuilds in memory instead of writing: the overlays a writable open
/// would have recovered.
pub(super) struct ReadOnlyRecovery {
    pub accounts: AccountMap,
    pub keys: KeyOverlay,
}

/// The read-only counterpart of steps 5 and 6 on a cleanly stopped store: nothing is written.
/// No replay: redb opens read-only only a file whose last commit was durable, and a clean close
/// makes every commit durable, so the file already holds every journaled batch. The journal is
/// only checked to be the store's own.
pub(super) fn read_only(
    txn: &ReadTransaction,
    data_dir: &std::path::Path,
) -> Result<ReadOnlyRecovery, StoreError> {
    let meta = txn.open_table(META)?;
    // What the next writable open would refuse, `check` reports now.
    let through = schema::read_counter(&meta, META_JOURNAL_THROUGH)?.unwrap_or(0);
    journal::inspect(data_dir, read_store_id(&meta)?, through)?;
    let keys = KeyOverlay::default();
    if let Some(through) = schema::read_counter(&meta, META_KEYS_THROUGH_ANSWER)? {
        keys::read_back(&txn.open_table(IDEMPOTENCY_ANSWERS)?, through, &keys)?;
    }
    let accounts = match schema::read_counter(&meta, META_ACCOUNTS_THROUGH_CHARGE)? {
        Some(through) if through < last_charge_number(&meta)? => {
            accounts::replay_postings(
                &txn.open_table(ACCOUNTS)?,
                &txn.open_table(POSTINGS)?,
                &txn.open_table(CHARGE_TENANTS)?,
                through,
            )?
            .0
        }
        _ => AccountMap::default(),
    };
    Ok(ReadOnlyRecovery { accounts, keys })
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{charge, crash_image, open_accounts};
    use super::super::{JOURNAL_FILE_NAME, STORE_FILE_NAME, Store, check};
    use super::*;
    use crate::ids::TenantId;

    /// Every open runs every step, in RECOVERY_ORDER, and says what each did: on a crash image
    /// the journal step replays the acknowledged batches and the key step reads their keys back.
    #[test]
    fn an_open_runs_every_step_in_order_and_counts_what_it_recovered() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("live")).expect("opens");
        let steps: Vec<RecoveryStep> = store.recovery().steps.iter().map(|s| s.0).collect();
        assert_eq!(steps, RECOVERY_ORDER);
        assert_eq!(store.recovery().count(RecoveryStep::ReplayJournal), 0);
        open_accounts(&store, TenantId::DEFAULT);
        store.checkpoint().expect("checkpoint");
        for amount in 1..=5 {
            charge(&store, amount);
        }
        let crashed = dir.path().join("crashed");
        crash_image(store, &crashed);
        let store = Store::open(&crashed).expect("reopens");
        let steps: Vec<RecoveryStep> = store.recovery().steps.iter().map(|s| s.0).collect();
        assert_eq!(steps, RECOVERY_ORDER);
        assert_eq!(store.recovery().count(RecoveryStep::ReplayJournal), 5);
        check::assert_consistent(&store);
    }

    /// The order is enforced: a step run before the one RECOVERY_ORDER puts before it panics.
    #[test]
    #[should_panic(expected = "recovery step run out of order")]
    fn a_step_out_of_order_panics() {
        let db = redb::Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .expect("db");
        let txn = db.begin_write().expect("txn");
        let mut recovery = Recovery {
            txn: &txn,
            report: RecoveryReport::default(),
        };
        let _ = recovery.step(RecoveryStep::ReplayJournal, |_| Ok(((), 0)));
    }

    /// `onceledger check` writes nothing, not even on a store that was not stopped cleanly
    /// (it recovers a copy): both files are byte for byte what they were, and what it verified
    /// includes the batches only the journal held.
    #[test]
    fn a_check_changes_no_byte_of_either_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let live = dir.path().join("live");
        let store = Store::open(&live).expect("opens");
        open_accounts(&store, TenantId::DEFAULT);
        store.checkpoint().expect("checkpoint");
        for amount in 1..=7 {
            charge(&store, amount);
        }
        let crashed = dir.path().join("crashed");
        crash_image(store, &crashed);
        let read = |name: &str| std::fs::read(crashed.join(name)).expect("file");
        let before = (read(STORE_FILE_NAME), read(JOURNAL_FILE_NAME));
        let report = check::verify_stopped(&crashed).expect("checkable");
        assert!(report.violations.is_empty(), "{:?}", report.violations);
        assert!(
            report.checked_a_recovered_copy,
            "redb cannot open it read-only"
        );
        assert_eq!(report.charges, 7, "the journaled charges were verified too");
        assert_eq!(before, (read(STORE_FILE_NAME), read(JOURNAL_FILE_NAME)));

        // Stopped cleanly (the writer's last checkpoint, then a close): checked in place.
        let store = Store::open(&crashed).expect("recovers");
        store.checkpoint().expect("checkpoint");
        drop(store);
        let before = (read(STORE_FILE_NAME), read(JOURNAL_FILE_NAME));
        let report = check::verify_stopped(&crashed).expect("readable");
        assert!(report.violations.is_empty(), "{:?}", report.violations);
        assert_eq!(
            (report.charges, report.checked_a_recovered_copy),
            (7, false)
        );
        assert_eq!(before, (read(STORE_FILE_NAME), read(JOURNAL_FILE_NAME)));
    }
}
