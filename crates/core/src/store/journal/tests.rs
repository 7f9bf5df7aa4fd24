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
    redo.into_record(seq).expect("framed")
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
    image[third + RECORD_HEADER_BYTES + 1] ^= 1; // a write torn inside the third record
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
    let record = redo.into_record(1).expect("framed");
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
    // The same image without its journal: the redb file holds none of the charges, so the open
    // refuses rather than start a new journal over them.
    std::fs::create_dir_all(&without).expect("dir");
    std::fs::copy(
        store_copy.join(STORE_FILE_NAME),
        without.join(STORE_FILE_NAME),
    )
    .expect("copy");
    match Store::open(&without) {
        Err(StoreError::JournalRefused(JournalRefusal::Missing { .. })) => {}
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("a store whose journal is gone must not open"),
    }
    assert!(
        !without.join(JOURNAL_FILE_NAME).exists(),
        "the refusal creates no journal, so the next open refuses too"
    );

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
    let mut file = open_existing(dir.path()).expect("journal").expect("exists");
    JournalFile::write_all_at(&mut file, &frame(through + 2, b""), RECORDS_START).expect("write");
    match Store::open(dir.path()) {
        Err(StoreError::Corrupt { record, .. }) => assert_eq!(record, "journal"),
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("a gap in the journal must refuse to open"),
    }
}

fn journal_of(dir: &std::path::Path) -> std::path::PathBuf {
    dir.join(JOURNAL_FILE_NAME)
}

fn refusal(dir: &std::path::Path) -> JournalRefusal {
    match Store::open(dir) {
        Err(StoreError::JournalRefused(refusal)) => refusal,
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("the journal should have been refused"),
    }
}

/// A live store with accounts, a checkpoint and `charges` journaled charges of 1 each, crashed
/// into `dir/name`.
fn crashed_store(dir: &std::path::Path, name: &str, charges: u64) -> std::path::PathBuf {
    let store = Store::open(&dir.join(format!("{name}-live"))).expect("opens");
    open_accounts(&store);
    store.checkpoint().expect("checkpoint");
    for _ in 0..charges {
        charge(&store, 1);
    }
    let crashed = dir.join(name);
    crash_image(store, &crashed);
    crashed
}

/// The journal's header names its store: a journal from another store (same layout, same batch
/// numbers) is refused, and so is this journal beside a store file that has no identity.
#[test]
fn another_stores_journal_is_refused_and_so_is_a_replaced_store_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ours = crashed_store(dir.path(), "ours", 3);
    let theirs = crashed_store(dir.path(), "theirs", 3);
    let mixed = dir.path().join("mixed");
    std::fs::create_dir_all(&mixed).expect("dir");
    std::fs::copy(ours.join(STORE_FILE_NAME), mixed.join(STORE_FILE_NAME)).expect("copy");
    std::fs::copy(journal_of(&theirs), journal_of(&mixed)).expect("copy");
    assert!(matches!(refusal(&mixed), JournalRefusal::Foreign { .. }));

    // A new, empty store file beside a journal in use.
    let replaced = dir.path().join("replaced");
    std::fs::create_dir_all(&replaced).expect("dir");
    std::fs::copy(journal_of(&ours), journal_of(&replaced)).expect("copy");
    assert!(matches!(
        refusal(&replaced),
        JournalRefusal::StoreWithoutIdentity { .. }
    ));

    // Its own journal back: everything acknowledged is there.
    let store = Store::open(&ours).expect("its own journal opens");
    assert_eq!(balance(&store, "b"), 3);
    check::assert_consistent(&store);
}

/// Copies of one of the two files from another moment: an older journal (it may lack acknowledged
/// batches the real one held) and an older store file (its journal continues from a batch it
/// lacks) are both refused, and the pair from one moment opens.
#[test]
fn an_older_copy_of_either_file_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let live = dir.path().join("live");
    let store = Store::open(&live).expect("opens");
    open_accounts(&store);
    store.checkpoint().expect("checkpoint");
    charge(&store, 1);
    let old = dir.path().join("old");
    std::fs::create_dir_all(&old).expect("dir");
    for name in [STORE_FILE_NAME, JOURNAL_FILE_NAME] {
        std::fs::copy(live.join(name), old.join(name)).expect("copy");
    }
    for _ in 0..3 {
        charge(&store, 10);
        store.checkpoint().expect("checkpoint");
    }
    charge(&store, 100);
    let now = dir.path().join("now");
    crash_image(store, &now);

    let old_journal = dir.path().join("old-journal");
    std::fs::create_dir_all(&old_journal).expect("dir");
    std::fs::copy(now.join(STORE_FILE_NAME), old_journal.join(STORE_FILE_NAME)).expect("copy");
    std::fs::copy(journal_of(&old), journal_of(&old_journal)).expect("copy");
    assert!(matches!(
        refusal(&old_journal),
        JournalRefusal::JournalOlderThanStore { .. }
    ));

    let old_store = dir.path().join("old-store");
    std::fs::create_dir_all(&old_store).expect("dir");
    std::fs::copy(old.join(STORE_FILE_NAME), old_store.join(STORE_FILE_NAME)).expect("copy");
    std::fs::copy(journal_of(&now), journal_of(&old_store)).expect("copy");
    assert!(matches!(
        refusal(&old_store),
        JournalRefusal::StoreOlderThanJournal { .. }
    ));

    let store = Store::open(&now).expect("the pair from one moment opens");
    assert_eq!(balance(&store, "b"), 131);
    check::assert_consistent(&store);
}

/// A power cut between a checkpoint's durable commit and its header (or tearing the header being
/// written) leaves the previous header, whose records reach the checkpoint: that opens, with
/// every batch, and the journal goes on.
#[test]
fn a_checkpoint_whose_header_was_lost_or_torn_still_opens() {
    let dir = tempfile::tempdir().expect("temp dir");
    let live = dir.path().join("live");
    let store = Store::open(&live).expect("opens");
    open_accounts(&store);
    store.checkpoint().expect("checkpoint");
    for _ in 0..4 {
        charge(&store, 1);
    }
    let before = std::fs::read(journal_of(&live)).expect("journal");
    let newest_before = Slots::read(&before).newest().expect("a header").0;
    store.checkpoint().expect("checkpoint");
    let after = std::fs::read(journal_of(&live)).expect("journal");
    let newest_after = Slots::read(&after).newest().expect("a header");
    assert_ne!(newest_after.0, newest_before, "the other slot was written");
    let crashed = dir.path().join("crashed");
    crash_image(store, &crashed);

    let slot = Header::offset(newest_after.0) as usize;
    let lost = dir.path().join("lost");
    let torn = dir.path().join("torn");
    for (target, header_bytes) in [
        (&lost, before[slot..slot + header::HEADER_BYTES].to_vec()),
        (&torn, {
            let mut torn = after[slot..slot + header::HEADER_BYTES].to_vec();
            torn[30] ^= 0xff;
            torn
        }),
    ] {
        std::fs::create_dir_all(target).expect("dir");
        std::fs::copy(crashed.join(STORE_FILE_NAME), target.join(STORE_FILE_NAME)).expect("copy");
        let mut image = std::fs::read(journal_of(&crashed)).expect("journal");
        image[slot..slot + header::HEADER_BYTES].copy_from_slice(&header_bytes);
        std::fs::write(journal_of(target), &image).expect("write");
        let store = Store::open(target).expect("opens after a lost header");
        assert_eq!(balance(&store, "b"), 4);
        charge(&store, 1);
        check::assert_consistent(&store);
        let target = target.join("again");
        crash_image(store, &target);
        let store = Store::open(&target).expect("reopens");
        assert_eq!(balance(&store, "b"), 5);
    }
}

/// A store from before journal headers (no identity, records from offset 0) opens with every
/// journaled batch, gets an identity and a header, and is protected from then on.
#[test]
fn a_store_from_before_headers_replays_its_journal_and_gets_an_identity() {
    let dir = tempfile::tempdir().expect("temp dir");
    let crashed = crashed_store(dir.path(), "crashed", 5);
    // Make it what the previous format left: records from offset 0, no `meta.store_id`.
    let image = std::fs::read(journal_of(&crashed)).expect("journal");
    let mut legacy = image[RECORDS_START as usize..].to_vec();
    legacy.resize(image.len(), 0);
    std::fs::write(journal_of(&crashed), &legacy).expect("write");
    {
        let db = redb::Database::create(crashed.join(STORE_FILE_NAME)).expect("db");
        let txn = db.begin_write().expect("txn");
        txn.open_table(META)
            .expect("meta")
            .remove(crate::store::schema::META_STORE_ID)
            .expect("remove")
            .expect("had one");
        txn.commit().expect("commit");
    }
    let store = Store::open(&crashed).expect("the old layout opens");
    assert_eq!(
        store
            .recovery()
            .count(crate::store::RecoveryStep::ReplayJournal),
        5
    );
    assert_eq!(balance(&store, "b"), 5);
    check::assert_consistent(&store);
    charge(&store, 1);
    let again = dir.path().join("again");
    crash_image(store, &again);
    std::fs::remove_file(journal_of(&again)).expect("remove");
    assert!(matches!(refusal(&again), JournalRefusal::Missing { .. }));
}

/// `onceledger reset-journal`: on purpose, an operator discards a lost or foreign journal. The
/// store then opens at its last checkpoint (the journaled charges are gone, as the runbook warns),
/// a journal that was there is kept aside, and the store is protected again from then on.
#[test]
fn a_reset_journal_opens_at_the_last_checkpoint_and_keeps_the_old_one_aside() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ours = crashed_store(dir.path(), "ours", 4);
    let theirs = crashed_store(dir.path(), "theirs", 1);
    std::fs::copy(journal_of(&theirs), journal_of(&ours)).expect("a foreign journal");
    assert!(matches!(refusal(&ours), JournalRefusal::Foreign { .. }));
    let reset = Store::reset_journal(&ours).expect("reset");
    let aside = reset.moved_aside.expect("the foreign journal was kept");
    assert_eq!(
        std::fs::read(&aside).expect("kept"),
        std::fs::read(journal_of(&theirs)).expect("theirs")
    );
    let store = Store::open(&ours).expect("opens after the reset");
    assert_eq!(
        balance(&store, "b"),
        0,
        "only the checkpointed state is left"
    );
    charge(&store, 2);
    check::assert_consistent(&store);
    let again = dir.path().join("again");
    crash_image(store, &again);
    let store = Store::open(&again).expect("reopens with the new journal");
    assert_eq!(balance(&store, "b"), 2);
}
