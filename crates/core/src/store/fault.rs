//! A redb storage backend and a journal file, both real files, that can fail or hold their fsyncs
//! on demand (one set of switches for both).
//!
//! Tests and the fuzz targets use it to reach the paths a healthy disk never takes: a failed
//! commit (the writer must poison itself) and a commit that is slow to sync (the commit queue must
//! fill and answer 503, and commands must pile up into one batch). Production never builds one.

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender};
use redb::StorageBackend;
use redb::backends::FileBackend;

/// Switches shared between a test and the backend it handed to the store.
#[derive(Debug, Default)]
pub struct FaultSwitches {
    /// Every later `sync_data` fails.
    fail_syncs: AtomicBool,
    /// While set, `sync_data` announces itself on `entered` and waits for a `release`.
    hold: Mutex<Option<(Sender<()>, Receiver<()>)>>,
}

impl FaultSwitches {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn fail_syncs(&self) {
        self.fail_syncs.store(true, Ordering::SeqCst);
    }

    /// Holds every later sync until released. Returns (entered, release): `entered` receives one
    /// message each time a sync starts waiting; each message sent on `release` lets one through.
    pub fn hold_syncs(&self) -> (Receiver<()>, Sender<()>) {
        let (entered_tx, entered_rx) = crossbeam_channel::unbounded();
        let (release_tx, release_rx) = crossbeam_channel::unbounded();
        if let Ok(mut hold) = self.hold.lock() {
            *hold = Some((entered_tx, release_rx));
        }
        (entered_rx, release_tx)
    }

    fn before_sync(&self) -> io::Result<()> {
        if self.fail_syncs.load(Ordering::SeqCst) {
            return Err(io::Error::other("injected fsync failure"));
        }
        let held = self.hold.lock().ok().and_then(|hold| hold.clone());
        if let Some((entered, release)) = held {
            let _ = entered.send(());
            // A dropped release sender ends the hold for good.
            let _ = release.recv();
        }
        Ok(())
    }
}

#[derive(Debug)]
pub struct FaultyFileBackend {
    file: FileBackend,
    switches: Arc<FaultSwitches>,
}

impl FaultyFileBackend {
    pub fn new(file: File, switches: Arc<FaultSwitches>) -> Result<Self, super::StoreError> {
        Ok(FaultyFileBackend {
            file: FileBackend::new(file)?,
            switches,
        })
    }
}

/// The journal's file, whose syncs the same switches control.
struct FaultyJournalFile {
    file: File,
    switches: Arc<FaultSwitches>,
}

impl super::JournalFile for FaultyJournalFile {
    fn read_all(&mut self) -> io::Result<Vec<u8>> {
        super::JournalFile::read_all(&mut self.file)
    }

    fn size(&self) -> io::Result<u64> {
        super::JournalFile::size(&self.file)
    }

    fn write_all_at(&mut self, bytes: &[u8], offset: u64) -> io::Result<()> {
        super::JournalFile::write_all_at(&mut self.file, bytes, offset)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.switches.before_sync()?;
        super::JournalFile::sync_data(&mut self.file)
    }
}

/// Opens (creating) the store in `dir` on a faulty backend and journal; the switches control
/// their syncs.
pub fn open_store(
    dir: &std::path::Path,
) -> Result<(super::Store, Arc<FaultSwitches>), super::StoreError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(super::STORE_FILE_NAME))
        .map_err(super::StoreError::Io)?;
    let switches = FaultSwitches::new();
    let backend = FaultyFileBackend::new(file, Arc::clone(&switches))?;
    let journal = FaultyJournalFile {
        file: match super::journal::open_existing(dir).map_err(super::StoreError::Io)? {
            Some(file) => file,
            None => super::journal::create_file(dir).map_err(super::StoreError::Io)?,
        },
        switches: Arc::clone(&switches),
    };
    let store = super::Store::open_with_files(backend, Box::new(journal), dir)?;
    Ok((store, switches))
}

impl StorageBackend for FaultyFileBackend {
    fn len(&self) -> io::Result<u64> {
        self.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.file.read(offset, out)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.switches.before_sync()?;
        self.file.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.file.write(offset, data)
    }

    fn close(&self) -> io::Result<()> {
        self.file.close()
    }
}
