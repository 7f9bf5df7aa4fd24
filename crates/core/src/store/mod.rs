//! The store: the only module that imports redb.
//!
//! One redb file, `onceledger.redb`, in the data directory. Reads run in MVCC read transactions and
//! never block the writer. A shared store (`Arc<Store>`) is written only by the writer thread
//! (`Store::commit_batch`, crate-private), once per group of commands: one write transaction, one
//! fsync. The one owner of an unshared store may write it too (`Store::write_batch`, `&mut self`):
//! the type system, not a convention, keeps a second writer out.
//!
//! Durability: a batch is durable when `write_batch` returns `Ok`: its writes are synced in the
//! journal (`journal.rs`, one `fdatasync` of one sequential record) before its redb commit
//! (`Durability::None`) makes them visible; every few megabytes a batch commits durably in redb
//! instead (a checkpoint). Such a batch survives a process crash and a power loss; a batch whose
//! `write_batch` did not return `Ok` is absent after restart, all of it or none, except that a
//! batch whose record synced but whose commit then failed comes back (the writer answered 503,
//! "outcome unknown", and is poisoned).
//! A store opened on a custom backend (`open_with_backend`: the fuzzers) has no journal: each
//! of its batches is a durable redb commit.

mod accounts;
mod answers;
mod auth;
mod batch;
mod charge_ids;
pub mod check;
/// Public so that the record_codec fuzz target drives the real codec.
pub mod codec;
mod entries;
#[cfg(any(test, feature = "fault-injection"))]
pub mod fault;
pub mod history;
mod journal;
mod keys;
mod marks;
mod publication;
mod records;
mod recovery;
mod replication;
mod schema;
#[cfg(test)]
pub(crate) mod test_support;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{Database, ReadableDatabase};

pub use answers::{AnswerPointer, AnswerRow};
pub use auth::{AuthTables, TenantRecord, TokenEntry, TokenRecord};
use batch::AccountFlush;
pub use batch::BatchTables;
pub use records::{
    DeadLetter, Effect, Event, EventBody, EventKind, EventRecord, IdempotencyRecord, InboxOutcome,
    InboxRecord, OriginState,
};
pub use recovery::{RECOVERY_ORDER, RecoveryReport, RecoveryStep};
pub use replication::{ApplyRefusal, Redrive, ReplicationTables};

use crate::idempotency::IdempotencyKey;
use crate::ledger::{Account, AccountId, ChargeIds, TenantId};
use crate::limits::STORE_CACHE_BYTES;
use codec::decode;
use journal::Redo;
pub use journal::{JOURNAL_FILE_NAME, JournalFile, JournalRefusal, StoreId};
pub use marks::{Marks, MarksCrossed, MarksError};
use schema::{
    ACCOUNTS, IDEMPOTENCY_ANSWERS, IDEMPOTENCY_KEYS, META, META_JOURNAL_THROUGH,
    META_OUTBOX_FIRST_HELD, OUTBOX,
};

/// The file inside the data directory.
pub const STORE_FILE_NAME: &str = "onceledger.redb";

/// Errors of the store. Every variant is a reason to answer 503/500, never a client's fault.
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// redb failed: I/O, a full disk, a lock held by another process.
    Storage(redb::Error),
    /// A record did not decode: the file holds something this build did not write.
    Corrupt {
        record: &'static str,
        detail: String,
    },
    /// The data directory could not be created or read.
    Io(std::io::Error),
    /// `--node-id` names another node than the one this data directory belongs to.
    NodeIdMismatch { stored: String, requested: String },
    /// A read-only open found a file that needs redb's repair, which only a writable open does.
    NeedsRepair,
    /// The journal beside the store file is not the one it needs (missing, another store's, an
    /// older copy): opening would lose or invent acknowledged batches.
    JournalRefused(JournalRefusal),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Storage(error) => write!(f, "storage error: {error}"),
            StoreError::Corrupt { record, detail } => write!(f, "corrupt {record}: {detail}"),
            StoreError::Io(error) => write!(f, "data directory: {error}"),
            StoreError::NodeIdMismatch { stored, requested } => write!(
                f,
                "this data directory belongs to node {stored}, not {requested}; a node id is set only on a fresh directory"
            ),
            StoreError::JournalRefused(refusal) => write!(f, "journal refused: {refusal}"),
            StoreError::NeedsRepair => write!(
                f,
                "the store was not stopped cleanly and needs a repair that a read-only open does not make"
            ),
        }
    }
}

impl std::error::Error for StoreError {}

impl<E: Into<redb::Error>> From<E> for StoreError {
    fn from(error: E) -> Self {
        StoreError::Storage(error.into())
    }
}

/// What [`Store::reset_journal`] did.
#[derive(Debug)]
pub struct JournalReset {
    pub store_id: StoreId,
    /// The store file's last checkpoint: batches acknowledged after it are gone.
    pub continues_from: u64,
    /// Where the discarded journal was moved, if there was one.
    pub moved_aside: Option<PathBuf>,
}

pub struct Store {
    db: Database,
    node_id: String,
    /// How charge numbers become public ids (`ledger::ChargeIds`): fixed at open.
    charge_ids: ChargeIds,
    path: PathBuf,
    /// Accounts changed since the last account flush (see `accounts.rs`).
    overlay: accounts::AccountOverlay,
    /// Finished idempotency keys not yet in `idempotency_keys` (see `keys.rs`).
    key_overlay: keys::KeyOverlay,
    /// Statement lines not yet in `statements` (`history/overlay.rs`).
    statement_overlay: history::overlay::StatementOverlay,
    /// Makes a commit and its overlay updates one step for readers (`publication.rs`).
    publication: publication::Publication,
    /// Set by a fault point: every later checkpoint fails as on a failing disk.
    #[cfg(feature = "fault-injection")]
    checkpoints_fail: std::sync::atomic::AtomicBool,
    /// Runs between a batch's commit and its overlay updates (tests of that window).
    #[cfg(test)]
    after_commit: std::sync::Mutex<Option<Box<dyn Fn() + Send>>>,
    /// `None` on a custom backend: every batch commits durably in redb. Only the writer thread
    /// takes the lock (once per batch).
    journal: Option<std::sync::Mutex<journal::Journal>>,
    /// Durable redb commits made by `write_batch` (all of them without a journal).
    checkpoints: AtomicU64,
    /// The journal's bytes since the last checkpoint, as the writer left them: `/metrics` reads
    /// this instead of waiting for the journal's lock, which a batch holds while it runs.
    journal_bytes: AtomicU64,
    recovery: RecoveryReport,
}

/// A cleanly stopped node's store opened read-only (`check::verify_stopped`): redb's read-only
/// database, which refuses a file that needs repair (`NeedsRepair`: it was not closed cleanly)
/// rather than repair it, and the overlays a writable open would recover, rebuilt in memory.
struct StoppedStore {
    db: redb::ReadOnlyDatabase,
    recovered: recovery::ReadOnlyRecovery,
}

impl StoppedStore {
    fn open(data_dir: &Path) -> Result<StoppedStore, StoreError> {
        let path = existing_store_file(data_dir)?;
        let db = Database::builder()
            .set_cache_size(STORE_CACHE_BYTES)
            .open_read_only(&path)
            .map_err(|error| match error {
                redb::DatabaseError::RepairAborted => StoreError::NeedsRepair,
                other => StoreError::from(other),
            })?;
        let recovered = recovery::read_only(&db.begin_read()?, data_dir)?;
        Ok(StoppedStore { db, recovered })
    }
}

impl Store {
    /// Opens (creating if missing) the store in `data_dir`. After a crash redb repairs the file
    /// first (quick-repair on every durable commit makes that short, not a full scan), then the
    /// batches journaled after its last checkpoint are replayed.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        Self::open_as(data_dir, None)
    }

    /// Like [`Store::open`]; a fresh directory takes `node_id` (checked by [`is_valid_node_id`])
    /// instead of a random one, and an existing directory must already carry it.
    pub fn open_as(data_dir: &Path, node_id: Option<&str>) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(StoreError::Io)?;
        let path = data_dir.join(STORE_FILE_NAME);
        let db = Database::builder()
            .set_cache_size(STORE_CACHE_BYTES)
            .create(&path)?;
        let journal = recovery::JournalSource::Dir(data_dir.to_path_buf());
        Self::init(db, path, node_id, journal)
    }

    /// Opens a store on custom redb and journal files (fault injection in tests and benches).
    pub fn open_with_files(
        backend: impl redb::StorageBackend,
        journal: Box<dyn JournalFile>,
        label: &Path,
    ) -> Result<Store, StoreError> {
        let db = Database::builder()
            .set_cache_size(STORE_CACHE_BYTES)
            .create_with_backend(backend)?;
        Self::init(
            db,
            label.to_path_buf(),
            None,
            recovery::JournalSource::File(journal),
        )
    }

    /// Opens a store on a custom redb backend, without a journal (the fuzzers).
    pub fn open_with_backend(
        backend: impl redb::StorageBackend,
        label: &Path,
    ) -> Result<Store, StoreError> {
        let db = Database::builder()
            .set_cache_size(STORE_CACHE_BYTES)
            .create_with_backend(backend)?;
        Self::init(db, label.to_path_buf(), None, recovery::JournalSource::None)
    }

    /// Discards the journal of a stopped node on purpose (`onceledger reset-journal`): moves any
    /// journal file aside (`onceledger.journal.discarded-UNIXTIME`) and starts an empty one that
    /// continues from the store file's last checkpoint. Every batch acknowledged after that
    /// checkpoint and held only by the discarded journal is lost: the runbook says when to do it.
    pub fn reset_journal(data_dir: &Path) -> Result<JournalReset, StoreError> {
        let path = existing_store_file(data_dir)?;
        let db = Database::builder()
            .set_cache_size(STORE_CACHE_BYTES)
            .create(&path)?;
        let mut txn = db.begin_write()?;
        txn.set_quick_repair(true);
        let (store_id, continues_from) = {
            let mut meta = txn.open_table(META)?;
            let through = schema::read_counter(&meta, META_JOURNAL_THROUGH)?.unwrap_or(0);
            let store_id = recovery::read_store_id(&meta)?.unwrap_or_else(StoreId::random);
            meta.insert(schema::META_STORE_ID, store_id.0.as_slice())?;
            (store_id, through)
        };
        txn.commit()?;
        drop(db);
        let journal_path = data_dir.join(JOURNAL_FILE_NAME);
        let moved_aside = if journal_path.exists() {
            let since_epoch = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            let aside = data_dir.join(format!("{JOURNAL_FILE_NAME}.discarded-{since_epoch}"));
            std::fs::rename(&journal_path, &aside).map_err(StoreError::Io)?;
            Some(aside)
        } else {
            None
        };
        // Creating it syncs the directory, which makes the rename above durable too.
        let mut file = journal::create_file(data_dir).map_err(StoreError::Io)?;
        journal::start_empty(&mut file, store_id, continues_from).map_err(StoreError::Io)?;
        Ok(JournalReset {
            store_id,
            continues_from,
            moved_aside,
        })
    }

    /// Runs recovery (`recovery.rs`: every step, in its documented order) in one write
    /// transaction, commits it durably, and only then hands out the store.
    fn init(
        db: Database,
        path: PathBuf,
        requested: Option<&str>,
        journal_source: recovery::JournalSource,
    ) -> Result<Store, StoreError> {
        let mut txn = db.begin_write()?;
        txn.set_quick_repair(true);
        let key_overlay = keys::KeyOverlay::default();
        let statement_overlay = history::overlay::StatementOverlay::default();
        let mut recovered = recovery::run(
            &txn,
            journal_source,
            requested,
            &key_overlay,
            &statement_overlay,
        )?;
        txn.commit()?;
        if let Some(journal) = recovered.journal.as_mut() {
            // The commit made `journal_through` durable; the records that follow continue from it.
            journal.write_header().map_err(StoreError::Io)?;
        }
        let node_id = recovered.node_id;
        if let Some(requested) = requested.filter(|r| *r != node_id) {
            return Err(StoreError::NodeIdMismatch {
                stored: node_id,
                requested: requested.to_owned(),
            });
        }
        Ok(Store {
            db,
            node_id,
            charge_ids: recovered.charge_ids,
            path,
            overlay: accounts::AccountOverlay::default(),
            key_overlay,
            statement_overlay,
            publication: publication::Publication::default(),
            #[cfg(feature = "fault-injection")]
            checkpoints_fail: std::sync::atomic::AtomicBool::new(false),
            #[cfg(test)]
            after_commit: std::sync::Mutex::new(None),
            journal: recovered.journal.map(std::sync::Mutex::new),
            checkpoints: AtomicU64::new(0),
            journal_bytes: AtomicU64::new(0),
            recovery: recovered.report,
        })
    }

    /// What opening this store recovered, step by step (`recovery.rs`).
    pub fn recovery(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// This node's stable identity: made at first start, kept in the store.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// This store's charge ids: what a charge number is called, and which number an id names.
    pub fn charge_ids(&self) -> &ChargeIds {
        &self.charge_ids
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn idempotency_record(
        &self,
        tenant: TenantId,
        key: &IdempotencyKey,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        // The overlay first, then a snapshot begun after looking: the writer takes a key out of
        // the overlay only after the commit that put it in the table returned. Not under the
        // publication: a lookup that misses a key the batch being published finished goes to
        // the writer, which finds it inside its transaction and replays it (the POST path's
        // lookup is only a shortcut), so no client sees the difference, and a POST never waits.
        let in_overlay =
            keys::with_key_name(tenant.0, key.as_str(), |name| self.key_overlay.get(name));
        let txn = self.db.begin_read()?;
        let answers = txn.open_table(IDEMPOTENCY_ANSWERS)?;
        match in_overlay {
            // `None`: deleted by retention since the overlay was read.
            Some(number) => answers::answer_of(&answers, number, tenant, key.as_str()),
            None => {
                let keys = txn.open_table(IDEMPOTENCY_KEYS)?;
                answers::get(&keys, &answers, tenant, key.as_str())
            }
        }
    }

    pub fn account(&self, tenant: TenantId, id: &AccountId) -> Result<Option<Account>, StoreError> {
        // The overlay first: a row read after a miss is current, because the checkpoint that
        // empties the overlay commits the rows before it does. Between two publications, so no
        // commit is visible whose balances the overlay does not hold yet.
        self.publication.read(|| {
            if let Some(account) = self.overlay.get(tenant, id) {
                return Ok(Some(account));
            }
            let txn = self.db.begin_read()?;
            let table = txn.open_table(ACCOUNTS)?;
            let found = table.get((tenant.0, id.as_str()))?;
            found.map(|bytes| decode(bytes.value())).transpose()
        })
    }

    /// Up to `limit` events with `seq > after`, in sequence order, their entries joined in.
    pub fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        let txn = self.db.begin_read()?;
        let outbox = txn.open_table(OUTBOX)?;
        let entries = entries::EntryTables::open(&txn)?;
        entries.events_in_range(&outbox, after.saturating_add(1).., limit)
    }

    /// The outbox range still held: (first held seq, last seq). `last < first` when none is held;
    /// events below `first` were deleted by outbox retention and are never numbered again.
    pub fn outbox_bounds(&self) -> Result<(u64, u64), StoreError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let first = schema::read_counter_leniently(&meta, META_OUTBOX_FIRST_HELD)?.unwrap_or(1);
        let next = schema::read_counter_leniently(&meta, schema::META_NEXT_EVENT_SEQ)?.unwrap_or(1);
        Ok((first, next.saturating_sub(1)))
    }

    /// Runs `apply` on the tables of one write transaction and commits it durably, for the one
    /// owner of a store nobody else holds: `&mut self` is the proof. The commands that change a
    /// stopped node's tenants and tokens use it, and `serve` before it shares the store. Once the
    /// store is shared (`Arc<Store>`), only the writer thread writes ([`Store::commit_batch`]).
    /// On `Err` nothing of the batch is stored.
    pub fn write_batch<R>(
        &mut self,
        apply: impl FnOnce(&mut BatchTables<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        self.commit_batch(apply)
    }

    /// The writer thread's path: one batch on a shared store. Crate-private, so that outside
    /// this crate a shared store can only be written through `writer::WriterHandle`, which owns
    /// the one thread that calls this. On `Err` nothing of the batch is stored, and the caller
    /// must treat the error as fatal for writes.
    pub(crate) fn commit_batch<R>(
        &self,
        apply: impl FnOnce(&mut BatchTables<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        self.write_batch_with(AccountFlush::WhenDue, apply)
    }

    /// The journal's checkpoint, now: one durable redb commit holding every journaled batch, which
    /// also flushes every account changed since the last account flush (the writer calls it when
    /// it stops, so a clean restart re-applies no postings and replays no journal).
    pub(crate) fn checkpoint(&self) -> Result<(), StoreError> {
        #[cfg(feature = "fault-injection")]
        if self.checkpoints_fail.load(Ordering::SeqCst) {
            return Err(StoreError::Io(std::io::Error::other(
                "fault point: the checkpoint's disk fails",
            )));
        }
        // Every charge changes two accounts: an empty overlay means none since the last one.
        // Statement lines read back on open wait in memory without either.
        if self.overlay.len() == 0 && self.journal_bytes() == 0 && self.statement_overlay.len() == 0
        {
            return Ok(());
        }
        self.write_batch_with(AccountFlush::Now, |_| Ok(()))
    }

    /// Makes every later [`Store::checkpoint`] fail as on a disk going away (process-level tests
    /// of a stop on failing storage).
    #[cfg(feature = "fault-injection")]
    pub fn fail_checkpoints(&self) {
        self.checkpoints_fail.store(true, Ordering::SeqCst);
    }

    /// Durable redb commits made by batches since open.
    pub fn checkpoints(&self) -> u64 {
        self.checkpoints.load(Ordering::Relaxed)
    }

    /// Bytes journaled since the last durable redb commit (0 without a journal).
    pub fn journal_bytes(&self) -> u64 {
        self.journal_bytes.load(Ordering::Relaxed)
    }

    fn write_batch_with<R>(
        &self,
        account_flush: AccountFlush,
        apply: impl FnOnce(&mut BatchTables<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        // A poisoned lock: a panic in an earlier batch, whose outcome the journal's own state
        // still describes (it moves only after a record synced).
        let mut journal = self
            .journal
            .as_ref()
            .map(|j| j.lock().unwrap_or_else(|e| e.into_inner()));
        let journaled = account_flush == AccountFlush::WhenDue
            && journal.as_ref().is_some_and(|j| !j.checkpoint_due());
        let redo = Redo::new(journaled);
        let mut txn = self.db.begin_write()?;
        txn.set_durability(if journaled {
            redb::Durability::None
        } else {
            redb::Durability::Immediate
        })?;
        txn.set_quick_repair(true);
        let (result, (accounts, flushed), key_changes, line_changes) = {
            let mut tables = BatchTables::open(
                &txn,
                &redo,
                &self.overlay,
                &self.key_overlay,
                &self.statement_overlay,
                &self.charge_ids,
                account_flush,
            )?;
            let result = apply(&mut tables)?;
            tables.flush()?;
            (
                result,
                tables.take_account_changes(),
                tables.take_key_changes(),
                tables.take_line_changes(),
            )
        };
        match journal.as_deref_mut() {
            // Synced before the commit makes the batch visible to anyone.
            Some(journal) if journaled => journal.append(redo).map_err(StoreError::Io)?,
            Some(journal) => {
                let mut meta = txn.open_table(META)?;
                schema::write_counter(&mut meta, META_JOURNAL_THROUGH, journal.last_seq())?;
            }
            None => {}
        }
        // From the commit until the overlays hold the batch, readers of both wait.
        let publishing = self.publication.begin();
        txn.commit()?;
        #[cfg(test)]
        if let Some(hook) = self
            .after_commit
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            hook();
        }
        self.key_overlay.apply(key_changes);
        self.statement_overlay.apply(line_changes);
        // Only now are the batch's balances committed, so only now may readers see them.
        if flushed {
            self.overlay.clear();
        } else {
            self.overlay.merge(accounts);
        }
        drop(publishing);
        if !journaled {
            self.checkpoints.fetch_add(1, Ordering::Relaxed);
            if let Some(journal) = journal.as_deref_mut() {
                journal.checkpointed().map_err(StoreError::Io)?;
            }
        }
        if let Some(journal) = journal.as_deref() {
            self.journal_bytes
                .store(journal.bytes_since_checkpoint(), Ordering::Relaxed);
        }
        Ok(result)
    }

    /// Moves the store's marks (`marks.rs`): its checkpoints, account flushes and key merges come
    /// when these say instead of at the limits. Test builds only, and only before the store is
    /// shared (`&mut self`), so a batch never sees them change.
    #[cfg(any(test, feature = "fault-injection"))]
    pub fn set_marks(&mut self, marks: Marks) {
        if let Some(journal) = self.journal.as_mut() {
            let journal = journal.get_mut().unwrap_or_else(|e| e.into_inner());
            journal.set_checkpoint_commits(marks.journal_checkpoint_commits);
        }
        self.overlay.set_flush_charges(marks.account_flush_charges);
        self.key_overlay
            .set_marks(marks.key_merge_from, marks.key_merge_slice_min);
        self.statement_overlay
            .set_marks(marks.statement_merge_from, marks.statement_merge_slice_min);
    }

    /// How many times this store crossed each of its marks since it opened.
    pub fn marks_crossed(&self) -> MarksCrossed {
        MarksCrossed {
            checkpoints: self.checkpoints(),
            account_flushes: self.overlay.flushes(),
            key_merges: self.key_overlay.merges(),
            statement_merges: self.statement_overlay.merges(),
        }
    }

    /// Merging keys into the keyed table starts at `keys` in memory instead of the limit.
    #[cfg(test)]
    pub(crate) fn set_key_merge_from(&self, keys: usize) {
        self.key_overlay.set_merge_from(keys);
    }

    /// Finished keys in memory, not (or not yet known to be) in the keyed table.
    pub fn keys_in_memory(&self) -> usize {
        self.key_overlay.len()
    }

    /// Finished keys not yet in the keyed table, as (tenant, key, answer number), for the checker.
    pub(crate) fn keys_overlay(&self) -> Vec<(u32, String, u64)> {
        self.key_overlay.snapshot()
    }

    /// Accounts whose committed state is newer than their row, for the checker.
    pub(crate) fn accounts_overlay(&self) -> accounts::AccountMap {
        self.overlay.snapshot()
    }

    /// Read access for the invariant checker.
    pub(crate) fn database(&self) -> &Database {
        &self.db
    }
}

/// The store file of `data_dir`, which must exist: the commands on a stopped node never create one.
fn existing_store_file(data_dir: &Path) -> Result<PathBuf, StoreError> {
    let path = data_dir.join(STORE_FILE_NAME);
    if !path.exists() {
        return Err(StoreError::Io(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no store at {}", path.display()),
        )));
    }
    Ok(path)
}

/// `n` and 12 hex digits: short enough to read in logs, random enough for a fleet, and free of
/// `:` because event ids are `NODE:SEQ`.
pub(super) fn new_node_id() -> String {
    let random = uuid::Uuid::new_v4().as_u128();
    format!("n{:012x}", random & 0xffff_ffff_ffff)
}
