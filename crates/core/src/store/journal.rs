//! The journal: how a batch becomes durable with one sequential write and one `fdatasync` instead
//! of a durable redb commit.
//!
//! A durable redb commit (quick-repair on) writes every B-tree page the batch touched, its
//! allocator state, and a header, with two `fdatasync`s; that was most of a commit's cost and grew
//! with the file. Instead, the writer records what a batch writes (its *redo*: every insert and
//! remove, with the resulting value) in one checksummed record, appended to a preallocated file
//! and synced, and only then commits the redb transaction with `Durability::None`: visible to
//! readers at once, persisted by redb later. Every `JOURNAL_CHECKPOINT_*` a batch commits durably
//! instead (the *checkpoint*), records in `meta.journal_through` the last journaled batch it
//! includes, and the journal starts again at offset 0.
//!
//! **Order is the whole argument.** A batch's record is synced before its commit makes it visible,
//! so nothing a reader, a retry or the replicator can see is missing from disk. A record that did
//! not finish syncing was never acknowledged (a torn tail fails its checksum and ends the replay).
//!
//! **Replay is idempotent.** A redo op is a blind write (the value, never a delta), so replaying
//! records `through+1..=k` onto a state that already holds some of them ends in the same state as
//! onto the checkpoint. That matters because redb makes pending non-durable commits durable when a
//! database closes without a crash, without moving `journal_through`.
//!
//! **Stale records cannot replay.** Batches are numbered (`seq`) for good: a checkpoint stores the
//! last one, and the records after it start at offset 0 with the next. Reading stops at the first
//! record whose checksum fails or whose seq does not follow the one before; records older than the
//! checkpoint are skipped, and the first newer one must be `through + 1` (else the file does not
//! belong with this store: open refuses).
//!
//! **The file knows its store.** A header (`journal/header.rs`: magic, format, the store's
//! identity, the batch the records continue from) is rewritten, in one of two slots, after every
//! durable commit. An open refuses a journal that is missing, another store's, or older than the
//! store file (and a store file older than its journal), because each would silently drop or
//! invent acknowledged batches ([`JournalRefusal`]).
//!
//! File: two header slots (4 KiB each), then records from [`header::RECORDS_START`]. A store from
//! before headers (no `meta.store_id`) has records from offset 0: its first open replays them and
//! gives the store an identity and the file its header.
//!
//! Record: `len: u32 LE | seq: u64 LE | payload (len bytes) | blake3(len | seq | payload)`.
//! Payload: ops, each `table: u8 | kind: u8 | key_len: u32 LE | key | [value_len: u32 LE | value]`
//! (the value only for an insert), in the order the batch made them.

use std::borrow::Borrow;
use std::cell::RefCell;
use std::io;
use std::ops::Deref;

use redb::{AccessGuard, Key, Table, TableDefinition, TableHandle, Value, WriteTransaction};

mod header;

use super::StoreError;
use super::schema::{
    ACCOUNTS, CHARGES, DEAD_LETTERS, IDEMPOTENCY_ANSWERS, IDEMPOTENCY_KEYS, INBOX, META, ORIGINS,
    OUTBOX, POSTINGS, REPLICA_ACCOUNTS, REPLICA_CHARGES, REPLICATION_COUNTERS, SINK_CURSORS,
};
use super::schema::{
    ACCOUNTS_BY_CREATION, CHARGE_REFUNDS, REPLICA_STATEMENTS, SETTLEMENT_ENTRIES, STATEMENTS,
    TENANT_ENTRIES, TIMELINE,
};
use super::schema::{AUTH_COUNTERS, CHARGE_TENANTS, TENANT_EVENTS, TENANT_NAMES, TENANTS, TOKENS};
use super::schema::{AUTHORIZATION_EXPIRY, CHARGE_PROGRESS, REFUNDS, TRANSFERS};
use super::schema::{
    REPLICA_CHARGE_PROGRESS, REPLICA_ENTRY_NUMBERS, REPLICA_REFUNDS, REPLICA_TRANSFERS,
};
use crate::limits::{JOURNAL_CHECKPOINT_BYTES, JOURNAL_CHECKPOINT_COMMITS, JOURNAL_FILE_BYTES};
use header::{Header, RECORDS_START, Slots};
pub use header::{JournalRefusal, StoreId};

/// The journal's file inside the data directory, beside the redb file.
pub const JOURNAL_FILE_NAME: &str = "onceledger.journal";

/// A record's own header: its payload's length and its batch number.
const RECORD_HEADER_BYTES: usize = 4 + 8;
const CHECKSUM_BYTES: usize = 32;
const OP_INSERT: u8 = 1;
const OP_REMOVE: u8 = 2;

/// What the journal needs of its file; the fault-injecting test file implements it too.
pub trait JournalFile: Send {
    fn read_all(&mut self) -> io::Result<Vec<u8>>;
    fn size(&self) -> io::Result<u64>;
    fn write_all_at(&mut self, bytes: &[u8], offset: u64) -> io::Result<()>;
    fn sync_data(&mut self) -> io::Result<()>;
}

impl JournalFile for std::fs::File {
    fn read_all(&mut self) -> io::Result<Vec<u8>> {
        use std::io::{Read, Seek};
        let mut bytes = Vec::new();
        self.seek(io::SeekFrom::Start(0))?;
        self.read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn write_all_at(&mut self, bytes: &[u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(self, bytes, offset)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        std::fs::File::sync_data(self)
    }
}

/// The journal file in `data_dir`, or `None` when there is none: whether a missing journal may be
/// created is the open's decision ([`Journal::recover`] knows whether the store had one).
pub(super) fn open_existing(data_dir: &std::path::Path) -> io::Result<Option<std::fs::File>> {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(data_dir.join(JOURNAL_FILE_NAME))
    {
        Ok(file) => Ok(Some(file)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

/// Creates the journal file of a store that has none yet (a fresh store, or one from before
/// journals had headers whose file was never made).
pub(super) fn create_file(data_dir: &std::path::Path) -> io::Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(data_dir.join(JOURNAL_FILE_NAME))?;
    // The new name must survive a power cut as well as the records written under it.
    crate::durable_fs::sync_dir(data_dir)?;
    Ok(file)
}

/// Makes `file` (new and empty) the journal of store `store_id` checkpointed through
/// `continues_from`: its first header, synced. What `onceledger reset-journal` writes.
pub(super) fn start_empty(
    file: &mut dyn JournalFile,
    store_id: StoreId,
    continues_from: u64,
) -> io::Result<()> {
    let header = Header {
        store_id,
        continues_from,
    };
    file.write_all_at(&header.encode(), Header::offset(0))?;
    file.sync_data()
}

/// The journal of one store: where the next record goes and which batch it is.
pub(super) struct Journal {
    file: Box<dyn JournalFile>,
    store_id: StoreId,
    /// The header slot the next header is written to: never the one holding the newest.
    next_header_slot: usize,
    /// Where the next record is written, counted from `RECORDS_START`: 0 after every checkpoint.
    write_at: u64,
    /// The last batch recorded, in the journal or by a checkpoint.
    last_seq: u64,
    commits_since_checkpoint: u64,
    /// `JOURNAL_CHECKPOINT_COMMITS`, unless lowered by `Store::set_marks` (tests only).
    checkpoint_commits: u64,
}

impl Journal {
    /// Fills the file with zeros up to `JOURNAL_FILE_BYTES` when it is shorter, once: a record
    /// then overwrites allocated blocks, so its `fdatasync` writes data and no file metadata.
    fn preallocate(file: &mut dyn JournalFile) -> io::Result<()> {
        const CHUNK: usize = 1024 * 1024;
        let mut len = file.size()?;
        if len >= JOURNAL_FILE_BYTES {
            return Ok(());
        }
        let zeros = vec![0u8; CHUNK];
        while len < JOURNAL_FILE_BYTES {
            let n = CHUNK.min((JOURNAL_FILE_BYTES - len) as usize);
            file.write_all_at(&zeros[..n], len)?;
            len += n as u64;
        }
        file.sync_data()
    }

    /// Checks that `file` is this store's journal (`store_id` is `meta.store_id`, `None` for a
    /// fresh store or one from before headers) and applies to `txn`, in order, the batches the
    /// store's checkpoint `through` lacks. Returns the journal, ready for the next batch, and
    /// how many records were replayed. The caller records `journal.store_id()` and
    /// `meta.journal_through = journal.last_seq()` in `txn`, commits it durably and then calls
    /// [`Journal::write_header`] before any new record.
    pub(super) fn recover(
        mut file: Box<dyn JournalFile>,
        txn: &WriteTransaction,
        through: u64,
        store_id: Option<StoreId>,
    ) -> Result<(Journal, u64), StoreError> {
        Self::preallocate(file.as_mut()).map_err(StoreError::Io)?;
        let image = file.read_all().map_err(StoreError::Io)?;
        let (store_id, records_image) = admit(&image, store_id, through)?;
        let mut last_seq = through;
        let mut replayed = 0u64;
        for (seq, payload) in records(records_image) {
            if seq <= through {
                continue;
            }
            if seq != last_seq + 1 {
                return Err(StoreError::Corrupt {
                    record: "journal",
                    detail: format!(
                        "the store holds batches through {through}, the journal resumes at {seq}"
                    ),
                });
            }
            for op in ops(payload) {
                replay_op(txn, &op?)?;
            }
            last_seq = seq;
            replayed += 1;
        }
        let next_header_slot = Slots::read(&image).newest().map_or(0, |(slot, _)| 1 - slot);
        let journal = Journal {
            file,
            store_id,
            next_header_slot,
            write_at: 0,
            last_seq,
            commits_since_checkpoint: 0,
            checkpoint_commits: JOURNAL_CHECKPOINT_COMMITS,
        };
        Ok((journal, replayed))
    }

    /// The identity this journal's headers carry, which `meta.store_id` must hold.
    pub(super) fn store_id(&self) -> StoreId {
        self.store_id
    }

    /// Writes and syncs the header for the records that follow: they continue from `last_seq`,
    /// which a durable commit has just recorded as `meta.journal_through`. Must complete before
    /// the next record overwrites the ones behind the previous header.
    pub(super) fn write_header(&mut self) -> io::Result<()> {
        let header = Header {
            store_id: self.store_id,
            continues_from: self.last_seq,
        };
        self.file
            .write_all_at(&header.encode(), Header::offset(self.next_header_slot))?;
        self.file.sync_data()?;
        self.next_header_slot = 1 - self.next_header_slot;
        Ok(())
    }

    /// Whether the next batch should be a checkpoint (a durable redb commit).
    pub(super) fn checkpoint_due(&self) -> bool {
        self.write_at >= JOURNAL_CHECKPOINT_BYTES
            || self.commits_since_checkpoint >= self.checkpoint_commits
    }

    /// Checkpoints after `commits` journaled batches instead (`store/marks.rs`).
    #[cfg(any(test, feature = "fault-injection"))]
    pub(super) fn set_checkpoint_commits(&mut self, commits: u64) {
        self.checkpoint_commits = commits;
    }

    pub(super) fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Bytes of records since the last checkpoint.
    pub(super) fn bytes_since_checkpoint(&self) -> u64 {
        self.write_at
    }

    /// Frames `redo` as the next batch's record, writes it and syncs it. On `Err` the record may
    /// or may not be on disk: the batch's outcome is unknown, and the store must take no more
    /// batches (the writer poisons itself).
    pub(super) fn append(&mut self, redo: Redo) -> io::Result<()> {
        let seq = self.last_seq + 1;
        let record = redo.into_record(seq)?;
        self.file
            .write_all_at(&record, RECORDS_START + self.write_at)?;
        self.file.sync_data()?;
        self.write_at += record.len() as u64;
        self.last_seq = seq;
        self.commits_since_checkpoint += 1;
        Ok(())
    }

    /// After a checkpoint's commit returned: it holds every journaled batch, so the records
    /// start again behind a new header. On `Err` the header may be torn: the other slot and the
    /// records behind it still describe the store (the next open accepts them), but this
    /// process must take no more batches.
    pub(super) fn checkpointed(&mut self) -> io::Result<()> {
        self.write_at = 0;
        self.commits_since_checkpoint = 0;
        self.write_header()
    }
}

/// Checks a stopped store's journal without writing: what a writable open would refuse
/// (`onceledger check` on a cleanly stopped store, which it opens read-only).
pub(super) fn inspect(
    data_dir: &std::path::Path,
    store_id: Option<StoreId>,
    through: u64,
) -> Result<(), StoreError> {
    match std::fs::read(data_dir.join(JOURNAL_FILE_NAME)) {
        Ok(image) => admit(&image, store_id, through).map(|_| ()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => match store_id {
            Some(store) => Err(refused(JournalRefusal::Missing { store, through })),
            None => Ok(()),
        },
        Err(error) => Err(StoreError::Io(error)),
    }
}

/// Whether the journal `image` may be replayed onto a store with identity `store_id` (`None`: a
/// fresh store, or one from before headers) checkpointed through batch `through`. Returns the
/// identity the journal keeps and the part of the image its records are in.
fn admit(
    image: &[u8],
    store_id: Option<StoreId>,
    through: u64,
) -> Result<(StoreId, &[u8]), StoreError> {
    let records_region = image.get(RECORDS_START as usize..).unwrap_or_default();
    match (store_id, Slots::read(image).newest()) {
        (Some(store), Some((_, header))) => {
            check_header(store, header, through, records_region)?;
            Ok((store, records_region))
        }
        (Some(store), None) => {
            // Only one slot is ever written at a time, so no crash leaves both unreadable, except
            // the one between the durable commit that gave the store its identity and the first
            // header: then the file holds nothing newer than the store.
            let newer = |image: &[u8]| records(image).filter(|(seq, _)| *seq > through).count();
            let newer_records = newer(image).max(newer(records_region)) as u64;
            if newer_records > 0 {
                return Err(refused(JournalRefusal::HeaderUnreadable {
                    through,
                    newer_records,
                }));
            }
            Ok((store, records_region))
        }
        (None, Some((_, header))) => Err(refused(JournalRefusal::StoreWithoutIdentity {
            journal: header.store_id,
        })),
        // A fresh store (an empty file), or one from before headers: its records start at 0.
        (None, None) => Ok((StoreId::random(), image)),
    }
}

fn refused(refusal: JournalRefusal) -> StoreError {
    StoreError::JournalRefused(refusal)
}

/// The newest header of a store's own journal against the store's checkpoint `through`.
///
/// `continues_from == through`: the normal case. `continues_from < through`: a durable commit
/// (a checkpoint, or an open) landed and the process stopped before it rewrote the header; the
/// records behind the old header then reach exactly `through`. Anything else is a copy of one
/// of the two files from another moment.
fn check_header(
    store: StoreId,
    header: Header,
    through: u64,
    records_region: &[u8],
) -> Result<(), StoreError> {
    if header.store_id != store {
        return Err(refused(JournalRefusal::Foreign {
            store,
            journal: header.store_id,
        }));
    }
    if header.continues_from > through {
        return Err(refused(JournalRefusal::StoreOlderThanJournal {
            store_through: through,
            journal_continues_from: header.continues_from,
        }));
    }
    if header.continues_from < through {
        let reaches = records(records_region)
            .map(|(seq, _)| seq)
            .last()
            .filter(|seq| *seq > header.continues_from)
            .unwrap_or(header.continues_from);
        if reaches < through {
            return Err(refused(JournalRefusal::JournalOlderThanStore {
                store_through: through,
                journal_reaches: reaches,
            }));
        }
    }
    Ok(())
}

/// The writes of one batch, in order, as they will be framed (the header's room comes first, so
/// framing copies nothing). Disabled for a batch that commits durably: it records nothing.
pub struct Redo {
    bytes: RefCell<Vec<u8>>,
    enabled: bool,
    /// Bytes the batch's ops take (counted even when disabled): what the writer bounds a batch by.
    size: std::cell::Cell<usize>,
}

impl Redo {
    pub(super) fn new(enabled: bool) -> Redo {
        let bytes = if enabled {
            let mut bytes = Vec::with_capacity(16 * 1024);
            bytes.resize(RECORD_HEADER_BYTES, 0);
            bytes
        } else {
            Vec::new()
        };
        Redo {
            bytes: RefCell::new(bytes),
            enabled,
            size: std::cell::Cell::new(0),
        }
    }

    /// The bytes of the ops recorded so far (the size of the record this batch would make).
    pub(super) fn size(&self) -> usize {
        self.size.get()
    }

    /// Whether the batch commits durably in redb (a checkpoint, or a store without a journal)
    /// rather than through a journal record: what a [`Derived`] table's mark waits for.
    pub(super) fn commits_durably(&self) -> bool {
        !self.enabled
    }

    fn record_op(&self, table: u8, kind: u8, key: &[u8], value: Option<&[u8]>) {
        let op_bytes = 2 + 4 + key.len() + value.map_or(0, |value| 4 + value.len());
        self.size.set(self.size.get() + op_bytes);
        if !self.enabled {
            return;
        }
        let mut bytes = self.bytes.borrow_mut();
        bytes.push(table);
        bytes.push(kind);
        put_slice(&mut bytes, key);
        if let Some(value) = value {
            put_slice(&mut bytes, value);
        }
    }

    /// The framed record, or an error for a payload past the 4 GiB a record's length can say
    /// (the writer bounds a batch's record far below that: `BATCH_RECORD_BYTES_MAX`).
    fn into_record(self, seq: u64) -> io::Result<Vec<u8>> {
        let mut bytes = self.bytes.into_inner();
        let payload_len = u32::try_from(bytes.len() - RECORD_HEADER_BYTES).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "a batch's journal record would pass 4 GiB",
            )
        })?;
        bytes[..4].copy_from_slice(&payload_len.to_le_bytes());
        bytes[4..RECORD_HEADER_BYTES].copy_from_slice(&seq.to_le_bytes());
        let checksum = blake3::hash(&bytes);
        bytes.extend_from_slice(checksum.as_bytes());
        Ok(bytes)
    }
}

fn put_slice(bytes: &mut Vec<u8>, slice: &[u8]) {
    let len = u32::try_from(slice.len()).expect("redb keys and values are under 4 GiB");
    bytes.extend_from_slice(&len.to_le_bytes());
    bytes.extend_from_slice(slice);
}

/// A table of a batch's transaction whose every insert and remove is also recorded in the redo.
/// Reads go to the redb table (`Deref`); there is no way to write around the record.
pub struct Logged<'txn, K: Key + 'static, V: Value + 'static> {
    table: Table<'txn, K, V>,
    id: u8,
    redo: &'txn Redo,
}

impl<'txn, K: Key + 'static, V: Value + 'static> Logged<'txn, K, V> {
    pub(super) fn open(
        txn: &'txn WriteTransaction,
        redo: &'txn Redo,
        definition: TableDefinition<K, V>,
    ) -> Result<Self, StoreError> {
        let id = table_id(definition.name()).ok_or_else(|| StoreError::Corrupt {
            record: "journal",
            detail: format!("table {} has no journal id", definition.name()),
        })?;
        Ok(Logged {
            table: txn.open_table(definition)?,
            id,
            redo,
        })
    }

    pub fn insert<'k, 'v>(
        &mut self,
        key: impl Borrow<K::SelfType<'k>>,
        value: impl Borrow<V::SelfType<'v>>,
    ) -> Result<Option<AccessGuard<'_, V>>, redb::StorageError> {
        let (key, value) = (key.borrow(), value.borrow());
        self.redo.record_op(
            self.id,
            OP_INSERT,
            K::as_bytes(key).as_ref(),
            Some(V::as_bytes(value).as_ref()),
        );
        self.table.insert(key, value)
    }

    pub fn remove<'k>(
        &mut self,
        key: impl Borrow<K::SelfType<'k>>,
    ) -> Result<Option<AccessGuard<'_, V>>, redb::StorageError> {
        let key = key.borrow();
        self.redo
            .record_op(self.id, OP_REMOVE, K::as_bytes(key).as_ref(), None);
        self.table.remove(key)
    }
}

impl<'txn, K: Key + 'static, V: Value + 'static> Deref for Logged<'txn, K, V> {
    type Target = Table<'txn, K, V>;

    fn deref(&self) -> &Self::Target {
        &self.table
    }
}

/// A table of a batch's transaction whose rows are worked out again on open from journaled ones,
/// so its writes stay out of the redo. Only `statements` is one: its lines are computed from the
/// postings, entry records and accounts (`history/read_back.rs`). A row written here survives a
/// crash only once a durable commit (a checkpoint) holds it, so the mark saying which rows the
/// table holds (`meta.statements_through_entry`) moves only in such a commit; after a crash, the
/// rows past the mark are worked out again. Why: recording each merged line (~70 bytes, two per
/// charge) made the journal ~10 % longer per charge, and checkpoints that much more frequent,
/// for rows the journal's postings already determine.
pub struct Derived<'txn, K: Key + 'static, V: Value + 'static> {
    table: Table<'txn, K, V>,
}

impl<'txn, K: Key + 'static, V: Value + 'static> Derived<'txn, K, V> {
    pub(super) fn open(
        txn: &'txn WriteTransaction,
        definition: TableDefinition<K, V>,
    ) -> Result<Self, StoreError> {
        Ok(Derived {
            table: txn.open_table(definition)?,
        })
    }

    pub fn insert<'k, 'v>(
        &mut self,
        key: impl Borrow<K::SelfType<'k>>,
        value: impl Borrow<V::SelfType<'v>>,
    ) -> Result<(), redb::StorageError> {
        self.table.insert(key, value)?;
        Ok(())
    }
}

/// What the store's shared writing helpers need of a table: redb's own in the open-time
/// transaction (recovery, migration), the logged one in a batch.
pub trait PutInto<K: Key + 'static, V: Value + 'static> {
    fn put<'k, 'v>(
        &mut self,
        key: impl Borrow<K::SelfType<'k>>,
        value: impl Borrow<V::SelfType<'v>>,
    ) -> Result<(), StoreError>;
}

impl<K: Key + 'static, V: Value + 'static> PutInto<K, V> for Table<'_, K, V> {
    fn put<'k, 'v>(
        &mut self,
        key: impl Borrow<K::SelfType<'k>>,
        value: impl Borrow<V::SelfType<'v>>,
    ) -> Result<(), StoreError> {
        self.insert(key, value)?;
        Ok(())
    }
}

impl<K: Key + 'static, V: Value + 'static> PutInto<K, V> for Logged<'_, K, V> {
    fn put<'k, 'v>(
        &mut self,
        key: impl Borrow<K::SelfType<'k>>,
        value: impl Borrow<V::SelfType<'v>>,
    ) -> Result<(), StoreError> {
        self.insert(key, value)?;
        Ok(())
    }
}

/// Every table a batch may write, under the id its redo ops carry. The ids are the file format:
/// never renumber one; a new table takes a new id.
macro_rules! journaled_tables {
    ($($id:literal => $table:expr),+ $(,)?) => {
        fn table_id(name: &str) -> Option<u8> {
            $( if name == $table.name() { return Some($id); } )+
            None
        }

        fn replay_op(txn: &WriteTransaction, op: &Op<'_>) -> Result<(), StoreError> {
            match op.table {
                $( $id => replay_in(txn, $table, op), )+
                other => Err(StoreError::Corrupt {
                    record: "journal",
                    detail: format!("op on unknown table id {other}"),
                }),
            }
        }

        #[cfg(test)]
        const JOURNALED_IDS: &[u8] = &[$($id),+];
    };
}

journaled_tables! {
    1 => ACCOUNTS,
    2 => IDEMPOTENCY_KEYS,
    3 => IDEMPOTENCY_ANSWERS,
    4 => CHARGES,
    5 => POSTINGS,
    6 => OUTBOX,
    7 => META,
    8 => SINK_CURSORS,
    9 => ORIGINS,
    10 => INBOX,
    11 => REPLICA_ACCOUNTS,
    12 => REPLICA_CHARGES,
    13 => DEAD_LETTERS,
    14 => REPLICATION_COUNTERS,
    15 => TENANTS,
    16 => TENANT_NAMES,
    17 => TOKENS,
    18 => TENANT_EVENTS,
    19 => CHARGE_TENANTS,
    20 => AUTH_COUNTERS,
    21 => CHARGE_PROGRESS,
    22 => AUTHORIZATION_EXPIRY,
    23 => REFUNDS,
    24 => TRANSFERS,
    25 => REPLICA_CHARGE_PROGRESS,
    26 => REPLICA_REFUNDS,
    27 => REPLICA_TRANSFERS,
    28 => REPLICA_ENTRY_NUMBERS,
    // Written through `Derived` now; journals written by earlier builds still hold its ops.
    29 => STATEMENTS,
    30 => TENANT_ENTRIES,
    31 => CHARGE_REFUNDS,
    32 => ACCOUNTS_BY_CREATION,
    33 => TIMELINE,
    34 => REPLICA_STATEMENTS,
    35 => SETTLEMENT_ENTRIES,
}

fn replay_in<K: Key + 'static, V: Value + 'static>(
    txn: &WriteTransaction,
    definition: TableDefinition<K, V>,
    op: &Op<'_>,
) -> Result<(), StoreError> {
    let mut table = txn.open_table(definition)?;
    match op.value {
        Some(value) => table.insert(K::from_bytes(op.key), V::from_bytes(value))?,
        None => table.remove(K::from_bytes(op.key))?,
    };
    Ok(())
}

/// One recorded write: `value` is `None` for a remove.
#[derive(Debug, PartialEq, Eq)]
struct Op<'a> {
    table: u8,
    key: &'a [u8],
    value: Option<&'a [u8]>,
}

/// The records of a journal image that form one unbroken run from its start: each checksummed and
/// numbered one after the one before. What follows a torn, stale or zeroed record is not read.
fn records(bytes: &[u8]) -> impl Iterator<Item = (u64, &[u8])> {
    let mut at = 0usize;
    let mut previous: Option<u64> = None;
    std::iter::from_fn(move || {
        let header = bytes.get(at..at + RECORD_HEADER_BYTES)?;
        let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
        let seq = u64::from_le_bytes(header[4..].try_into().ok()?);
        let end = (at + RECORD_HEADER_BYTES).checked_add(len)?;
        let checksum = bytes.get(end..end.checked_add(CHECKSUM_BYTES)?)?;
        if blake3::hash(&bytes[at..end]).as_bytes() != checksum {
            return None;
        }
        if previous.is_some_and(|p| p.checked_add(1) != Some(seq)) {
            return None;
        }
        previous = Some(seq);
        let payload = &bytes[at + RECORD_HEADER_BYTES..end];
        at = end + CHECKSUM_BYTES;
        Some((seq, payload))
    })
}

/// The ops of one checksummed payload; a malformed one is corruption (the checksum held, so this
/// build did not write it).
fn ops(payload: &[u8]) -> impl Iterator<Item = Result<Op<'_>, StoreError>> {
    let mut rest = payload;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let op = take_op(&mut rest);
        if op.is_none() {
            rest = &[];
        }
        Some(op.ok_or_else(|| StoreError::Corrupt {
            record: "journal",
            detail: "a record's op is cut short or of an unknown kind".into(),
        }))
    })
}

fn take_op<'a>(rest: &mut &'a [u8]) -> Option<Op<'a>> {
    let (&table, tail) = rest.split_first()?;
    let (&kind, tail) = tail.split_first()?;
    let (key, tail) = take_slice(tail)?;
    let (value, tail) = match kind {
        OP_INSERT => {
            let (value, tail) = take_slice(tail)?;
            (Some(value), tail)
        }
        OP_REMOVE => (None, tail),
        _ => return None,
    };
    *rest = tail;
    Some(Op { table, key, value })
}

fn take_slice(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let slice = bytes.get(4..4usize.checked_add(len)?)?;
    Some((slice, &bytes[4 + len..]))
}

#[cfg(test)]
mod tests;
