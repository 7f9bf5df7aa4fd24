//! The journal's header: which store the file belongs to and which batch its records continue
//! from, so that an open can tell a journal that is missing, foreign or older than the store
//! instead of starting a new one over acknowledged batches.
//!
//! Two slots, one per 4 KiB block at the start of the file; a checkpoint rewrites the slot that
//! does not hold the newest header, so a write torn by a power cut leaves the other one intact.
//! Slot: `magic (8) | format: u32 LE | store id (16) | continues_from: u64 LE | blake3 of the
//! preceding 36 bytes (32)`.
//!
//! `continues_from` is the `meta.journal_through` of the durable commit just made (a checkpoint or
//! an open): the records after the header are numbered from `continues_from + 1`.

use std::fmt;

/// Where the records start: after the two header slots, each in a block of its own.
pub(super) const RECORDS_START: u64 = 2 * SLOT_BYTES;
const SLOT_BYTES: u64 = 4096;
const MAGIC: [u8; 8] = *b"OLJOURNL";
/// Version 1 was the header-less file (records from offset 0) of stores without an identity.
const FORMAT: u32 = 2;
const FIELDS_BYTES: usize = 8 + 4 + 16 + 8;
pub(super) const HEADER_BYTES: usize = FIELDS_BYTES + 32;

/// A store's identity: random, made when the store first gets a journal with a header, kept in
/// `meta.store_id` and in every header of its journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreId(pub [u8; 16]);

impl StoreId {
    pub(crate) fn random() -> StoreId {
        StoreId(uuid::Uuid::new_v4().into_bytes())
    }
}

impl fmt::Display for StoreId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Header {
    pub store_id: StoreId,
    pub continues_from: u64,
}

impl Header {
    pub(super) fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut bytes = [0u8; HEADER_BYTES];
        bytes[..8].copy_from_slice(&MAGIC);
        bytes[8..12].copy_from_slice(&FORMAT.to_le_bytes());
        bytes[12..28].copy_from_slice(&self.store_id.0);
        bytes[28..FIELDS_BYTES].copy_from_slice(&self.continues_from.to_le_bytes());
        let checksum = blake3::hash(&bytes[..FIELDS_BYTES]);
        bytes[FIELDS_BYTES..].copy_from_slice(checksum.as_bytes());
        bytes
    }

    /// The header in `bytes` (a slot), or `None` when the slot is empty, torn or not a header.
    fn decode(bytes: &[u8]) -> Option<Header> {
        let bytes = bytes.get(..HEADER_BYTES)?;
        if bytes[..8] != MAGIC
            || blake3::hash(&bytes[..FIELDS_BYTES]).as_bytes() != &bytes[FIELDS_BYTES..]
            || u32::from_le_bytes(bytes[8..12].try_into().ok()?) != FORMAT
        {
            return None;
        }
        Some(Header {
            store_id: StoreId(bytes[12..28].try_into().ok()?),
            continues_from: u64::from_le_bytes(bytes[28..FIELDS_BYTES].try_into().ok()?),
        })
    }

    /// The offset of slot `slot` (0 or 1).
    pub(super) fn offset(slot: usize) -> u64 {
        slot as u64 * SLOT_BYTES
    }
}

/// The valid headers of a journal image, by slot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Slots(pub [Option<Header>; 2]);

impl Slots {
    pub(super) fn read(image: &[u8]) -> Slots {
        let slot = |n: usize| {
            let start = Header::offset(n) as usize;
            image.get(start..).and_then(Header::decode)
        };
        Slots([slot(0), slot(1)])
    }

    /// The newest valid header and its slot.
    pub(super) fn newest(&self) -> Option<(usize, Header)> {
        (0..2)
            .filter_map(|n| self.0[n].map(|header| (n, header)))
            .max_by_key(|(_, header)| header.continues_from)
    }
}

/// Why an open refuses a journal: each would otherwise lose or invent acknowledged batches. The
/// runbook has an entry for each ("The journal is refused").
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JournalRefusal {
    /// The store has an identity (so it had a journal) but the file is gone.
    Missing { store: StoreId, through: u64 },
    /// The journal's header names another store.
    Foreign { store: StoreId, journal: StoreId },
    /// The journal has a header, the store file has no identity: the store file was replaced by
    /// a new one (or one from before journals had headers) beside a journal that was in use.
    StoreWithoutIdentity { journal: StoreId },
    /// The journal continues from a batch the store file does not hold yet: the store file is an
    /// older copy than the journal.
    StoreOlderThanJournal {
        store_through: u64,
        journal_continues_from: u64,
    },
    /// The journal stops short of the store's last checkpoint: an older copy of the journal,
    /// which may lack acknowledged batches the real one held.
    JournalOlderThanStore {
        store_through: u64,
        journal_reaches: u64,
    },
    /// The store has an identity but neither header slot is readable while the file holds
    /// records newer than the store: a damaged header, not a crash (only one slot is written
    /// at a time).
    HeaderUnreadable { through: u64, newer_records: u64 },
}

impl fmt::Display for JournalRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JournalRefusal::Missing { store, through } => write!(
                f,
                "the journal is missing: store {store} was checkpointed through batch {through} and every batch acknowledged after that is only in the journal; put the journal file back (RUNBOOK: \"The journal is refused\")"
            ),
            JournalRefusal::Foreign { store, journal } => write!(
                f,
                "the journal belongs to store {journal}, not to this store {store}; put this store's own journal back (RUNBOOK: \"The journal is refused\")"
            ),
            JournalRefusal::StoreWithoutIdentity { journal } => write!(
                f,
                "the journal belongs to store {journal} but the store file has no identity: it was replaced by a new or an older store file; put the store file that goes with this journal back (RUNBOOK: \"The journal is refused\")"
            ),
            JournalRefusal::StoreOlderThanJournal {
                store_through,
                journal_continues_from,
            } => write!(
                f,
                "the store file holds batches through {store_through} but its journal continues from {journal_continues_from}: the store file is an older copy; put the current one back (RUNBOOK: \"The journal is refused\")"
            ),
            JournalRefusal::JournalOlderThanStore {
                store_through,
                journal_reaches,
            } => write!(
                f,
                "the journal reaches batch {journal_reaches} but the store was checkpointed through {store_through} after it: the journal is an older copy that may lack acknowledged batches; put the current journal back (RUNBOOK: \"The journal is refused\")"
            ),
            JournalRefusal::HeaderUnreadable {
                through,
                newer_records,
            } => write!(
                f,
                "the journal's header is unreadable and it holds {newer_records} batches after the store's {through}; the file is damaged (RUNBOOK: \"The journal is refused\")"
            ),
        }
    }
}

impl std::error::Error for JournalRefusal {}
