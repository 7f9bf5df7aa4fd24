use super::*;
use crate::ids::TenantId;
use crate::store::test_support::{balance, charge, crash_image};
use crate::store::{STORE_FILE_NAME, Store, check};

fn open_accounts(store: &Store) {
    crate::store::test_support::open_accounts(store, TenantId::DEFAULT);
}
use redb::ReadableDatabase;

fn frame(seq: u64, payload: &[u8]) -> Vec<u8> {
    let redo = Redo::new(true);
    redo.bytes.borrow_mut().extend_from_slice(payload);
    redo.into_record(seq)
}

fn seqs(image: &[u8]) -> Vec<u64> {
    records(image).map(|(seq, _)| seq).collect()
}

#[test]
fn reading_stops_at_a_torn_record_and_at_zeros() {
    let mut image = [frame(5, b"aaaa"), frame(6, b"bbbb"), frame(7, b"cccc")].concat();
    image.extend_from_slice(&[0u8; 64]);
    assert_eq!(seqs(&image), [5, 6, 7]);
    let third = 2 * frame(5, b"aaaa").len();
    image[third + HEADER_BYTES + 1] ^= 1; // a write torn inside the third record
    assert_eq!(seqs(&image), [5, 6]);
    assert_eq!(seqs(&[0u8; 256]), Vec::<u64>::new());
}

/// After a checkpoint the next record overwrites offset 0: the old records behind it have lower
/// seqs and must not be read as if they followed it, even where a boundary lines up.
#[test]
fn stale_records_behind_a_new_one_are_not_read() {
    let old = [frame(5, b"aaaa"), frame(6, b"bbbb"), frame(7, b"cccc")].concat();
    let mut image = old.clone();
    let new = frame(8, b"dddd"); // same length as frame 5: frame 6 starts right after it
    image[..new.len()].copy_from_slice(&new);
    assert_eq!(seqs(&image), [8]);
}

#[test]
fn ops_round_trip_and_a_cut_op_is_corruption() {
    let redo = Redo::new(true);
    redo.record_op(7, OP_INSERT, b"key", Some(b"value"));
    redo.record_op(3, OP_REMOVE, b"k2", None);
    let record = redo.into_record(1);
    let (_, payload) = records(&record).next().expect("one record");
    let read: Vec<Op<'_>> = ops(payload).collect::<Result<_, _>>().expect("well formed");
    assert_eq!(
        read,
        [
            Op {
                table: 7,
                key: b"key",
                value: Some(b"value")
            },
            Op {
                table: 3,
                key: b"k2",
                value: None
            }
        ]
    );
    let cut = &payload[..payload.len() - 1];
    assert!(ops(cut).any(|op| op.is_err()));
}

#[test]
fn every_journaled_table_has_one_id_and_a_table_of_the_store() {
    let mut ids = JOURNALED_IDS.to_vec();
    ids.dedup();
    assert_eq!(ids.len(), JOURNALED_IDS.len(), "ids are unique");
    assert!(table_id("no such table").is_none());
    let dir = tempfile::tempdir().expect("temp dir");
    let db = redb::Database::create(dir.path().join("t.redb")).expect("db");
    let txn = db.begin_write().expect("txn");
    crate::store::schema::create_all(&txn).expect("tables");
    let names: Vec<String> = txn
        .list_tables()
        .expect("list")
        .map(|t| t.name().to_owned())
        .collect();
    for name in &names {
        assert!(table_id(name).is_some(), "table {name} is not journaled");
    }
    assert_eq!(names.len(), JOURNALED_IDS.len());
}

/// Acknowledged batches after the last checkpoint live only in the journal: after a crash the
/// redb file alone lacks them, and the replay brings every one back.
#[test]
fn a_crash_loses_no_journaled_batch() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("live")).expect("opens");
    open_accounts(&store);
    store.checkpoint().expect("checkpoint"); // the accounts are in the redb file
    for amount in 1..=20 {
        charge(&store, amount);
    }
    assert!(store.journal_bytes() > 0, "the charges were journaled");
    let (store_copy, without) = (dir.path().join("crashed"), dir.path().join("no-journal"));
    crash_image(store, &store_copy);
    // The same image without its journal: the redb file holds none of the charges.
    std::fs::create_dir_all(&without).expect("dir");
    std::fs::copy(
        store_copy.join(STORE_FILE_NAME),
        without.join(STORE_FILE_NAME),
    )
    .expect("copy");
    let bare = Store::open(&without).expect("opens without its journal");
    assert_eq!(balance(&bare, "b"), 0, "no charge reached the redb file");
    drop(bare);

    let store = Store::open(&store_copy).expect("reopens");
    assert_eq!((balance(&store, "a"), balance(&store, "b")), (-210, 210));
    check::assert_consistent(&store);
    // Numbers go on where the replayed batches left them.
    charge(&store, 1);
    assert_eq!(balance(&store, "b"), 211);
    check::assert_consistent(&store);
}

/// A clean close makes redb's non-durable commits durable without moving `journal_through`, so
/// the next open replays records the file already holds: blind writes end in the same state.
#[test]
fn replaying_onto_batches_the_file_already_holds_changes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("opens");
    open_accounts(&store);
    for amount in [3, 4, 5] {
        charge(&store, amount);
    }
    drop(store); // no checkpoint of ours; redb promotes its commits on close
    let store = Store::open(dir.path()).expect("reopens");
    assert_eq!((balance(&store, "a"), balance(&store, "b")), (-12, 12));
    check::assert_consistent(&store);
    assert_eq!(
        store.journal_bytes(),
        0,
        "the open's commit is a checkpoint"
    );
}

/// A journal that does not continue the store's last checkpoint (a redb file restored from an
/// older backup beside a newer journal) is refused, not half applied.
#[test]
fn a_journal_that_skips_batches_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("opens");
    open_accounts(&store);
    drop(store);
    let through = {
        let db = redb::Database::create(dir.path().join(STORE_FILE_NAME)).expect("db");
        let txn = db.begin_read().expect("read");
        let meta = txn.open_table(META).expect("meta");
        crate::store::schema::read_counter(&meta, crate::store::schema::META_JOURNAL_THROUGH)
            .expect("counter")
            .expect("set by every open")
    };
    let mut file = open_file(dir.path()).expect("journal");
    JournalFile::write_all_at(&mut file, &frame(through + 2, b""), 0).expect("write");
    match Store::open(dir.path()) {
        Err(StoreError::Corrupt { record, .. }) => assert_eq!(record, "journal"),
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("a gap in the journal must refuse to open"),
    }
}
