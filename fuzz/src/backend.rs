//! redb storage backends for the fuzz targets.
//!
//! - [`SharedMemory`]: a database image in memory that several opens can share in turn, so that
//!   record_codec can plant raw bytes with plain redb and then open the real `Store` on them.
//! - [`CrashDisk`]: the store's two real files (redb's and the journal) in a temporary directory,
//!   whose unsynced writes can be lost, and whose I/O can fail on a chosen operation (counted
//!   across both files: one disk). ledger_model uses it to check that a reopened store holds
//!   exactly what was committed.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use redb::StorageBackend;
use redb::backends::FileBackend;

/// Locks a mutex even if a panicking holder poisoned it: the fuzz targets panic on purpose (a
/// failed check), and the backend must still answer while the database unwinds.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn out_of_range() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "read past the end")
}

/// An in-memory database image; every clone is a backend over the same bytes.
#[derive(Clone, Default)]
pub struct SharedMemory(Arc<Mutex<Vec<u8>>>);

impl fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SharedMemory({} bytes)", lock(&self.0).len())
    }
}

impl StorageBackend for SharedMemory {
    fn len(&self) -> io::Result<u64> {
        Ok(lock(&self.0).len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let image = lock(&self.0);
        let start = usize::try_from(offset).map_err(|_| out_of_range())?;
        let source = start
            .checked_add(out.len())
            .and_then(|end| image.get(start..end))
            .ok_or_else(out_of_range)?;
        out.copy_from_slice(source);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let len = usize::try_from(len).map_err(|_| out_of_range())?;
        lock(&self.0).resize(len, 0);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut image = lock(&self.0);
        let start = usize::try_from(offset).map_err(|_| out_of_range())?;
        let end = start.checked_add(data.len()).ok_or_else(out_of_range)?;
        if image.len() < end {
            image.resize(end, 0);
        }
        image[start..end].copy_from_slice(data);
        Ok(())
    }
}

/// How the armed fault strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// The operation returns an error and has no effect.
    FailOperation,
    /// The first sync at or after the chosen operation fails, and the kernel "drops" the dirty
    /// pages: every write since the last good sync is undone on the file at once, while redb
    /// still believes them written (the fsyncgate behaviour).
    FailSyncAndLosePages,
}

/// One write or resize of one of the disk's files, remembered with what it replaced until the
/// next successful sync of that file.
enum Undo {
    Bytes {
        file: Which,
        offset: u64,
        old: Vec<u8>,
    },
    Len {
        file: Which,
        len: u64,
    },
}

/// The disk's two files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Redb,
    Journal,
}

impl Undo {
    fn file(&self) -> Which {
        match self {
            Undo::Bytes { file, .. } | Undo::Len { file, .. } => *file,
        }
    }
}

#[derive(Default)]
struct DiskState {
    /// Undo records since the last successful sync, oldest first.
    undo: Vec<Undo>,
    /// Counted operations (read, write, set_len, sync) since the fault was armed.
    operations: u64,
    /// The armed fault strikes on this operation (counted from 1), once.
    fault_at: Option<(u64, FaultKind)>,
    /// Some fault struck since the database was last opened on this disk: from then on a 503
    /// has a cause.
    fault_struck: bool,
    /// After a simulated crash every operation fails and changes nothing.
    crashed: bool,
}

/// A disk that a test controls: where unsynced writes go, and when an I/O fails.
pub struct CrashDisk {
    path: PathBuf,
    journal_path: PathBuf,
    state: Arc<Mutex<DiskState>>,
}

impl CrashDisk {
    /// A new disk in `dir`: empty files where the store keeps its redb file and its journal.
    pub fn create(dir: &Path) -> io::Result<CrashDisk> {
        let path = dir.join(onceledger_core::store::STORE_FILE_NAME);
        let journal_path = dir.join(onceledger_core::store::JOURNAL_FILE_NAME);
        File::create(&path)?;
        // Already at the journal's size (sparse, outside the undo log), so the store does not
        // write its megabytes of zeros through the undo log at every open of every input.
        File::create(&journal_path)?.set_len(onceledger_core::limits::JOURNAL_FILE_BYTES)?;
        Ok(CrashDisk {
            path,
            journal_path,
            state: Arc::default(),
        })
    }

    /// The journal for one open of the store, on the same disk as [`CrashDisk::backend`]'s file.
    pub fn journal(&self) -> io::Result<CrashJournal> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.journal_path)?;
        Ok(CrashJournal {
            file,
            state: Arc::clone(&self.state),
        })
    }

    fn files(&self) -> io::Result<(File, File)> {
        let open = |path: &Path| OpenOptions::new().write(true).open(path);
        Ok((open(&self.path)?, open(&self.journal_path)?))
    }

    /// A backend for one open of the database. Call after the previous open was dropped.
    pub fn backend(&self) -> Result<CrashBackend, redb::DatabaseError> {
        let file = OpenOptions::new().read(true).write(true).open(&self.path)?;
        Ok(CrashBackend {
            file: FileBackend::new(file.try_clone()?)?,
            raw: file,
            state: Arc::clone(&self.state),
        })
    }

    /// Fails the `after_operations`-th counted I/O from now, once. Replaces a fault that is
    /// armed and has not struck yet.
    pub fn arm_fault(&self, after_operations: u64, kind: FaultKind) {
        let mut state = lock(&self.state);
        state.operations = 0;
        state.fault_at = Some((after_operations.max(1), kind));
    }

    /// Counted operations since the last `arm_fault` (or open): how far apart faults can be.
    pub fn operations(&self) -> u64 {
        lock(&self.state).operations
    }

    /// True once a fault has struck since the database was last opened.
    pub fn fault_struck(&self) -> bool {
        lock(&self.state).fault_struck
    }

    /// The power goes out: from now on no I/O reaches the file. Call before dropping the store,
    /// so that nothing the dropped database writes on its way out lands on the "disk".
    pub fn cut_power(&self) {
        lock(&self.state).crashed = true;
    }

    /// After `cut_power` and after the database was dropped: undoes every write that was not
    /// synced, newest first, so the file holds exactly what the last successful sync made durable.
    /// Then the disk works again, with no fault armed.
    pub fn lose_unsynced_writes(&self) -> io::Result<()> {
        let mut state = lock(&self.state);
        let (redb, journal) = self.files()?;
        let file_of = |which| {
            if which == Which::Redb {
                &redb
            } else {
                &journal
            }
        };
        roll_back(&file_of, &mut state.undo, None)?;
        *state = DiskState::default();
        Ok(())
    }

    /// The process died but the machine did not: every write, synced or not, stays on the file.
    pub fn keep_unsynced_writes(&self) {
        *lock(&self.state) = DiskState::default();
    }
}

/// Undoes, newest first, the unsynced writes of `only` that file (of both when `None`), on the
/// files `file_of` names.
fn roll_back<'f>(
    file_of: &dyn Fn(Which) -> &'f File,
    undo: &mut Vec<Undo>,
    only: Option<Which>,
) -> io::Result<()> {
    let (mine, others): (Vec<Undo>, Vec<Undo>) = std::mem::take(undo)
        .into_iter()
        .partition(|record| only.is_none_or(|which| record.file() == which));
    *undo = others;
    for record in mine.into_iter().rev() {
        match record {
            Undo::Bytes { file, offset, old } => file_of(file).write_all_at(&old, offset)?,
            Undo::Len { file, len } => file_of(file).set_len(len)?,
        }
    }
    Ok(())
}

/// Counts one operation on the disk; `Err` if the power is off or the fault strikes on it. A
/// failing sync (`sync_of`: the file synced) that loses pages loses that file's unsynced writes.
fn gate(state: &mut DiskState, sync_of: Option<(&File, Which)>) -> io::Result<()> {
    if state.crashed {
        return Err(io::Error::other("the power is off"));
    }
    state.operations += 1;
    match state.fault_at {
        Some((at, kind)) if state.operations == at => {
            state.fault_at = None;
            state.fault_struck = true;
            if let Some((file, which)) = sync_of
                && kind == FaultKind::FailSyncAndLosePages
            {
                roll_back(&|_| file, &mut state.undo, Some(which))?;
            }
            Err(io::Error::other(format!(
                "injected fault on operation {at}"
            )))
        }
        _ => Ok(()),
    }
}

/// Remembers what a write of `data` at `offset` to `file` replaces, for a crash to restore.
fn remember_write(
    state: &mut DiskState,
    which: Which,
    file: &File,
    offset: u64,
    len: usize,
) -> io::Result<()> {
    let old_len = file.metadata()?.len();
    let end = offset.saturating_add(len as u64);
    if end > old_len {
        // The write grows the file: a crash shrinks it back.
        state.undo.push(Undo::Len {
            file: which,
            len: old_len,
        });
    }
    let overlap_end = end.min(old_len);
    if offset < overlap_end {
        let mut old = vec![0; usize::try_from(overlap_end - offset).map_err(io::Error::other)?];
        file.read_exact_at(&mut old, offset)?;
        state.undo.push(Undo::Bytes {
            file: which,
            offset,
            old,
        });
    }
    Ok(())
}

/// The store's journal file on a [`CrashDisk`].
pub struct CrashJournal {
    file: File,
    state: Arc<Mutex<DiskState>>,
}

impl onceledger_core::store::JournalFile for CrashJournal {
    fn read_all(&mut self) -> io::Result<Vec<u8>> {
        gate(&mut lock(&self.state), None)?;
        let mut bytes =
            vec![0; usize::try_from(self.file.metadata()?.len()).map_err(io::Error::other)?];
        self.file.read_exact_at(&mut bytes, 0)?;
        Ok(bytes)
    }

    fn size(&self) -> io::Result<u64> {
        if lock(&self.state).crashed {
            return Err(io::Error::other("the power is off"));
        }
        Ok(self.file.metadata()?.len())
    }

    fn write_all_at(&mut self, bytes: &[u8], offset: u64) -> io::Result<()> {
        let mut state = lock(&self.state);
        gate(&mut state, None)?;
        remember_write(&mut state, Which::Journal, &self.file, offset, bytes.len())?;
        self.file.write_all_at(bytes, offset)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let mut state = lock(&self.state);
        gate(&mut state, Some((&self.file, Which::Journal)))?;
        state.undo.retain(|record| record.file() != Which::Journal);
        Ok(())
    }
}

pub struct CrashBackend {
    file: FileBackend,
    /// The same file, for reading what a write is about to replace.
    raw: File,
    state: Arc<Mutex<DiskState>>,
}

impl fmt::Debug for CrashBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CrashBackend")
    }
}

impl CrashBackend {
    fn current_len(&self) -> io::Result<u64> {
        Ok(self.raw.metadata()?.len())
    }
}

impl StorageBackend for CrashBackend {
    fn len(&self) -> io::Result<u64> {
        if lock(&self.state).crashed {
            return Err(io::Error::other("the power is off"));
        }
        self.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        gate(&mut lock(&self.state), None)?;
        self.file.read(offset, out)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut state = lock(&self.state);
        gate(&mut state, None)?;
        let old_len = self.current_len()?;
        let file = Which::Redb;
        state.undo.push(Undo::Len { file, len: old_len });
        if len < old_len {
            // Shrinking destroys the tail; keep it so that a crash can bring it back.
            let mut old = vec![0; usize::try_from(old_len - len).map_err(io::Error::other)?];
            self.raw.read_exact_at(&mut old, len)?;
            state.undo.push(Undo::Bytes {
                file,
                offset: len,
                old,
            });
        }
        self.file.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut state = lock(&self.state);
        gate(&mut state, Some((&self.raw, Which::Redb)))?;
        // No real fsync: durability is what the undo log says, and the fuzzer would spend its time
        // waiting for the disk otherwise.
        state.undo.retain(|record| record.file() != Which::Redb);
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut state = lock(&self.state);
        gate(&mut state, None)?;
        remember_write(&mut state, Which::Redb, &self.raw, offset, data.len())?;
        self.file.write(offset, data)
    }

    fn close(&self) -> io::Result<()> {
        // Always release the file, even after a crash: the reopen needs it.
        self.file.close()
    }
}
