//! Finished idempotency keys not yet in `idempotency_keys`: kept in memory, merged into the table a
//! key-ordered slice per commit.
//!
//! Why: keys are random (UUIDs), so each key inserted into the keyed table lands on a B-tree leaf
//! of its own, and a commit of 32 charges rewrote ~32 leaves and most of the branch level above
//! them. That was over half of all bytes written per charge: with the key inserts switched off
//! (an experiment, not a design) the uniform load went from ~21,000 to ~34,000 charges/s and from
//! 11.9 to 5.2 KB written per charge (BENCHMARKS.md). The answers themselves are appended in
//! number order, so they are already cheap; only the key → number index was scattered.
//!
//! So:
//! - A commit appends its answers as before, but its keys go to this overlay (after the commit
//!   returned `Ok`, so readers never see an uncommitted key). The writer and readers look here
//!   first, then in the table.
//! - Once the overlay holds `KEY_OVERLAY_MERGE_FROM` keys, every commit also moves a slice of it
//!   into the table: the next `max(KEY_MERGE_SLICE_MIN, 2 × the batch's keys)` keys after a
//!   cursor, in key order, wrapping around. Neighbours in a sorted overlay of 65,536 keys share
//!   leaves, so the slice rewrites a few leaves instead of one per key, and the overlay shrinks
//!   by at least the batch's keys per commit.
//! - `meta.keys_through_answer` is below the lowest answer number still in the overlay: every
//!   answer up to it has its key in the table (or was deleted by retention). On open, the answers
//!   after it are read back into the overlay; a crash loses nothing, since the answers (which
//!   name their keys) are committed.
//!
//! Invariant: a finished key is in the overlay, or in `idempotency_keys`, or both (just after a
//! restart, until its slice comes round), always with the same answer number.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use redb::{ReadableTable, WriteTransaction};

use super::StoreError;
use super::answers::{AnswerPointer, AnswerRow};
use super::codec::{decode, encode};
use super::journal::Logged;
use super::schema::{
    IDEMPOTENCY_ANSWERS, META, META_KEYS_THROUGH_ANSWER, META_NEXT_ANSWER_NUMBER, read_counter,
    write_counter,
};
use crate::limits::{IDEMPOTENCY_KEY_BYTES_MAX, KEY_MERGE_SLICE_MIN, KEY_OVERLAY_MERGE_FROM};

/// `(tenant, key)` as one byte string: the tenant big-endian, then the key. It sorts like the
/// table's `(u32, &str)` key, so a slice of the overlay is a contiguous range of the table.
pub(super) type KeyName = Box<[u8]>;

pub(super) fn key_name(tenant: u32, key: &str) -> KeyName {
    let mut name = Vec::with_capacity(4 + key.len());
    name.extend_from_slice(&tenant.to_be_bytes());
    name.extend_from_slice(key.as_bytes());
    name.into_boxed_slice()
}

/// Runs `look_up` on the name of `(tenant, key)`, built on the stack: every POST looks a key up,
/// and a heap allocation per lookup showed in profiles. A key longer than the API allows can only
/// come from a damaged store; its name goes on the heap.
pub(super) fn with_key_name<R>(tenant: u32, key: &str, look_up: impl FnOnce(&[u8]) -> R) -> R {
    let mut buffer = [0u8; 4 + IDEMPOTENCY_KEY_BYTES_MAX];
    let Some(name) = buffer.get_mut(..4 + key.len()) else {
        return look_up(&key_name(tenant, key));
    };
    name[..4].copy_from_slice(&tenant.to_be_bytes());
    name[4..].copy_from_slice(key.as_bytes());
    look_up(name)
}

/// The `(tenant, key)` a name was made from.
pub(super) fn split_name(name: &[u8]) -> (u32, &str) {
    let (tenant, key) = name.split_at(4);
    let tenant = u32::from_be_bytes(tenant.try_into().expect("a name starts with 4 bytes"));
    let key = std::str::from_utf8(key).expect("a name is made from a str");
    (tenant, key)
}

#[derive(Debug)]
pub(super) struct KeyOverlay {
    pending: RwLock<Pending>,
    /// `KEY_OVERLAY_MERGE_FROM`, lowered by tests to see merges without 65,536 commands.
    merge_from: AtomicUsize,
    /// `KEY_MERGE_SLICE_MIN`, unless lowered by `Store::set_marks` (tests only).
    slice_min: usize,
    /// Commits that merged keys since open (`apply` counts them), for `/metrics`.
    merges: AtomicU64,
}

impl Default for KeyOverlay {
    fn default() -> Self {
        KeyOverlay {
            pending: RwLock::default(),
            merge_from: AtomicUsize::new(KEY_OVERLAY_MERGE_FROM),
            slice_min: KEY_MERGE_SLICE_MIN,
            merges: AtomicU64::new(0),
        }
    }
}

#[derive(Debug, Default)]
struct Pending {
    by_name: BTreeMap<KeyName, u64>,
    /// The answer numbers of `by_name`, for the lowest one.
    numbers: BTreeSet<u64>,
    /// The next slice starts after this name (empty: at the start).
    cursor: KeyName,
}

/// What one commit changes in the overlay, applied only once it returned `Ok`.
#[derive(Debug, Default)]
pub(super) struct KeyChanges {
    /// Keys finished by this commit, in answer order.
    pub(super) added: Vec<(KeyName, u64)>,
    /// Keys this commit wrote to the table (removed from the overlay).
    pub(super) merged: Vec<(KeyName, u64)>,
    /// Keys deleted by retention (removed from the overlay, if there).
    pub(super) swept: Vec<KeyName>,
}

impl KeyOverlay {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Pending> {
        self.pending.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The answer number of the key `name` (see [`with_key_name`]).
    pub(super) fn get(&self, name: &[u8]) -> Option<u64> {
        self.read().by_name.get(name).copied()
    }

    #[cfg(test)]
    pub(super) fn set_merge_from(&self, keys: usize) {
        self.merge_from.store(keys, Ordering::Relaxed);
    }

    /// Merges from `merge_from` keys on, `slice_min` or more a commit (`store/marks.rs`).
    #[cfg(any(test, feature = "fault-injection"))]
    pub(super) fn set_marks(&mut self, merge_from: usize, slice_min: usize) {
        *self.merge_from.get_mut() = merge_from;
        self.slice_min = slice_min;
    }

    /// Commits that merged keys since open.
    pub(super) fn merges(&self) -> u64 {
        self.merges.load(Ordering::Relaxed)
    }

    pub(super) fn len(&self) -> usize {
        self.read().by_name.len()
    }

    /// Every key in the overlay as (tenant, key, answer number), for the checker.
    pub(super) fn snapshot(&self) -> Vec<(u32, String, u64)> {
        let pending = self.read();
        pending
            .by_name
            .iter()
            .map(|(name, number)| {
                let (tenant, key) = split_name(name);
                (tenant, key.to_owned(), *number)
            })
            .collect()
    }

    /// Up to `count` keys after the cursor in key order, wrapping round once, leaving out `skip`.
    pub(super) fn next_slice(&self, count: usize, skip: &[KeyName]) -> Vec<(KeyName, u64)> {
        let pending = self.read();
        let after = pending
            .by_name
            .range::<[u8], _>((
                std::ops::Bound::Excluded(&*pending.cursor),
                std::ops::Bound::Unbounded,
            ))
            .chain(pending.by_name.range::<[u8], _>((
                std::ops::Bound::Unbounded,
                std::ops::Bound::Included(&*pending.cursor),
            )));
        after
            .filter(|(name, _)| !skip.contains(name))
            .take(count)
            .map(|(name, number)| (name.clone(), *number))
            .collect()
    }

    /// The lowest answer number that stays in the overlay after `changes`.
    fn lowest_number_after(&self, changes: &KeyChanges) -> Option<u64> {
        let pending = self.read();
        let leaving: HashSet<u64> = changes
            .merged
            .iter()
            .map(|(_, number)| *number)
            .chain(
                changes
                    .swept
                    .iter()
                    .filter_map(|name| pending.by_name.get(name).copied()),
            )
            .collect();
        let kept = pending.numbers.iter().find(|n| !leaving.contains(n));
        let added = changes.added.first().map(|(_, number)| *number);
        match (kept.copied(), added) {
            (Some(kept), Some(added)) => Some(kept.min(added)),
            (kept, added) => kept.or(added),
        }
    }

    /// After a commit returned `Ok`.
    pub(super) fn apply(&self, changes: KeyChanges) {
        let mut pending = self.pending.write().unwrap_or_else(|e| e.into_inner());
        for name in &changes.swept {
            if let Some(number) = pending.by_name.remove(name) {
                pending.numbers.remove(&number);
            }
        }
        if let Some((last, _)) = changes.merged.last() {
            pending.cursor = last.clone();
            self.merges.fetch_add(1, Ordering::Relaxed);
        }
        for (name, number) in &changes.merged {
            // Only if still the same answer: a merged key is never finished again while it
            // is in the overlay, but a plain equality check costs nothing and keeps it exact.
            if pending.by_name.get(name) == Some(number) {
                pending.by_name.remove(name);
                pending.numbers.remove(number);
            }
        }
        for (name, number) in changes.added {
            pending.numbers.insert(number);
            pending.by_name.insert(name, number);
        }
    }

    fn insert(&self, name: KeyName, number: u64) {
        let mut pending = self.pending.write().unwrap_or_else(|e| e.into_inner());
        pending.numbers.insert(number);
        // Two answers for one key only in a damaged store (the checker reports it); the older
        // number must not stay behind, or it would hold the mark back for good.
        if let Some(replaced) = pending.by_name.insert(name, number) {
            pending.numbers.remove(&replaced);
        }
    }
}

/// In the commit, before `flush` writes the counters: moves a slice of the overlay into the table
/// when the overlay is due, and records how far the table is complete.
pub(super) fn merge_slice(
    overlay: &KeyOverlay,
    keys: &mut Logged<'_, (u32, &'static str), &'static [u8]>,
    meta: &mut Logged<'_, &'static str, &'static [u8]>,
    changes: &mut KeyChanges,
    next_answer_number: u64,
) -> Result<(), StoreError> {
    if overlay.len() + changes.added.len() >= overlay.merge_from.load(Ordering::Relaxed) {
        let count = overlay.slice_min.max(2 * changes.added.len());
        changes.merged = overlay.next_slice(count, &changes.swept);
        for (name, number) in &changes.merged {
            let pointer = AnswerPointer { answer: *number };
            keys.insert(split_name(name), encode(&pointer).as_slice())?;
        }
    }
    let through = overlay
        .lowest_number_after(changes)
        .map_or(next_answer_number - 1, |lowest| lowest - 1);
    write_counter(meta, META_KEYS_THROUGH_ANSWER, through)
}

/// On open: the keys of answers after `meta.keys_through_answer` go back into the overlay. A store
/// without the mark (written before the overlay existed) has every key in the table. Returns how
/// many keys were read back.
pub(super) fn recover(txn: &WriteTransaction, overlay: &KeyOverlay) -> Result<u64, StoreError> {
    let mut meta = txn.open_table(META)?;
    let Some(through) = read_counter(&meta, META_KEYS_THROUGH_ANSWER)? else {
        let next = read_counter(&meta, META_NEXT_ANSWER_NUMBER)?.unwrap_or(1);
        let through = next.saturating_sub(1);
        write_counter(&mut meta, META_KEYS_THROUGH_ANSWER, through)?;
        return Ok(0);
    };
    let answers = txn.open_table(IDEMPOTENCY_ANSWERS)?;
    read_back(&answers, through, overlay)
}

/// Puts the key of every answer numbered after `through` into `overlay`; returns how many.
/// Reads only, so a read-only open (`onceledger check`) rebuilds the same overlay.
pub(super) fn read_back(
    answers: &impl ReadableTable<u64, &'static [u8]>,
    through: u64,
    overlay: &KeyOverlay,
) -> Result<u64, StoreError> {
    let mut recovered = 0u64;
    for entry in answers.range(through.saturating_add(1)..)? {
        let (number, bytes) = entry?;
        let stored: AnswerRow = decode(bytes.value())?;
        overlay.insert(key_name(stored.tenant, &stored.key), number.value());
        recovered += 1;
    }
    Ok(recovered)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(key: &str) -> KeyName {
        key_name(0, key)
    }

    fn overlay_of(keys: &[(&str, u64)]) -> KeyOverlay {
        let overlay = KeyOverlay::default();
        for (key, number) in keys {
            overlay.insert(name(key), *number);
        }
        overlay
    }

    #[test]
    fn names_sort_like_the_tables_tuple_key() {
        let mut tuples = vec![(1u32, "a"), (0, "b"), (0, "ab"), (256, ""), (0, "")];
        let mut names: Vec<KeyName> = tuples.iter().map(|(t, k)| key_name(*t, k)).collect();
        tuples.sort();
        names.sort();
        let back: Vec<(u32, &str)> = names.iter().map(|n| split_name(n)).collect();
        assert_eq!(back, tuples);
    }

    #[test]
    fn lookups_find_keys_of_any_length() {
        let long = "x".repeat(IDEMPOTENCY_KEY_BYTES_MAX + 1);
        let overlay = overlay_of(&[("short", 1), (long.as_str(), 2)]);
        let get = |tenant, key: &str| with_key_name(tenant, key, |name| overlay.get(name));
        assert_eq!(get(0, "short"), Some(1));
        assert_eq!(get(0, &long), Some(2));
        assert_eq!(get(1, "short"), None, "another tenant's key");
    }

    #[test]
    fn slices_walk_the_keys_in_order_and_wrap_round() {
        let overlay = overlay_of(&[("d", 4), ("a", 1), ("c", 3), ("b", 2)]);
        let first = overlay.next_slice(3, &[]);
        assert_eq!(first, vec![(name("a"), 1), (name("b"), 2), (name("c"), 3)]);
        overlay.apply(KeyChanges {
            merged: first,
            ..KeyChanges::default()
        });
        assert_eq!(overlay.len(), 1);
        overlay.apply(KeyChanges {
            added: vec![(name("a2"), 5), (name("e"), 6)],
            ..KeyChanges::default()
        });
        // After "c": "d", "e", then round to "a2".
        let second = overlay.next_slice(3, &[]);
        assert_eq!(
            second,
            vec![(name("d"), 4), (name("e"), 6), (name("a2"), 5)]
        );
        // A key swept in the same commit is never merged.
        assert_eq!(
            overlay.next_slice(2, &[name("d")]),
            vec![(name("e"), 6), (name("a2"), 5)]
        );
    }

    #[test]
    fn the_lowest_number_left_counts_merges_sweeps_and_additions() {
        let overlay = overlay_of(&[("a", 7), ("b", 3), ("c", 9)]);
        let mut changes = KeyChanges::default();
        assert_eq!(overlay.lowest_number_after(&changes), Some(3));
        changes.merged = vec![(name("b"), 3)];
        assert_eq!(overlay.lowest_number_after(&changes), Some(7));
        changes.swept = vec![name("a")];
        assert_eq!(overlay.lowest_number_after(&changes), Some(9));
        changes.added = vec![(name("z"), 10)];
        changes.swept.push(name("c"));
        assert_eq!(overlay.lowest_number_after(&changes), Some(10));
        changes.added.clear();
        assert_eq!(overlay.lowest_number_after(&changes), None);
    }

    /// Through a real store: keys written in batches, merged a slice per commit.
    mod on_a_store {
        use super::super::super::{Effect, IdempotencyRecord, Store, check};
        use crate::idempotency::{Fingerprint, IdempotencyKey};
        use crate::ids::TenantId;

        /// Key `i`, scattered so that key order differs from answer order.
        fn key(i: u32) -> IdempotencyKey {
            let text = format!("k{:08x}", i.wrapping_mul(2_654_435_761));
            IdempotencyKey::parse(text.as_bytes()).expect("key")
        }

        fn record(i: u32, finished_at_ms: u64) -> IdempotencyRecord {
            IdempotencyRecord {
                fingerprint: Fingerprint([i as u8; 32]),
                status: 402,
                body: format!("{{\"declined\":{i}}}").into_bytes(),
                finished_at_ms,
                effect: Effect::None,
            }
        }

        fn write(store: &Store, keys: std::ops::Range<u32>, finished_at_ms: u64) {
            store
                .commit_batch(|tables| {
                    for i in keys {
                        tables.put_idempotency_record(
                            TenantId::DEFAULT,
                            &key(i),
                            &record(i, finished_at_ms),
                        )?;
                    }
                    Ok(())
                })
                .expect("commit");
        }

        fn assert_readable(store: &Store, keys: std::ops::Range<u32>, finished_at_ms: u64) {
            for i in keys {
                let found = store.idempotency_record(TenantId::DEFAULT, &key(i));
                assert_eq!(
                    found.expect("readable"),
                    Some(record(i, finished_at_ms)),
                    "key {i}"
                );
            }
        }

        fn assert_checks_clean(store: &Store, records: u64) {
            let report = check::assert_consistent(store);
            assert_eq!(report.idempotency_records, records);
        }

        #[test]
        fn keys_merge_into_the_table_a_slice_per_commit_and_survive_a_reopen() {
            let dir = tempfile::tempdir().expect("temp dir");
            let store = Store::open(dir.path()).expect("opens");
            store.set_key_merge_from(100);
            for batch in 0..40 {
                write(&store, batch * 10..batch * 10 + 10, 7);
            }
            // Each commit adds 10 keys and, from 100 on, merges 64: memory stays near the mark.
            let in_memory = store.keys_in_memory();
            assert!((1..110).contains(&in_memory), "{in_memory} keys in memory");
            assert_readable(&store, 0..400, 7);
            assert_checks_clean(&store, 400);
            drop(store);

            // Reopened: only the answers after the mark are read back, and nothing is lost.
            let store = Store::open(dir.path()).expect("reopens");
            let in_memory = store.keys_in_memory();
            assert!(
                (1..=200).contains(&in_memory),
                "{in_memory} keys read back of 400"
            );
            assert_readable(&store, 0..400, 7);
            assert_checks_clean(&store, 400);
            // Commits after the reopen go on from the mark.
            write(&store, 400..410, 7);
            assert_readable(&store, 0..410, 7);
            assert_checks_clean(&store, 410);
        }

        /// A store written before the overlay: every key in the table, no mark, and the old
        /// `idempotency_expiry` index. It opens with nothing to read back and the index gone.
        #[test]
        fn a_store_from_before_the_overlay_opens_with_its_keys_in_the_table() {
            use super::super::super::answers::{AnswerPointer, AnswerRow};
            use super::super::super::codec::encode;
            use super::super::super::schema::{
                IDEMPOTENCY_ANSWERS, IDEMPOTENCY_EXPIRY_LEGACY, IDEMPOTENCY_KEYS, META,
                META_NEXT_ANSWER_NUMBER,
            };
            use super::super::super::{STORE_FILE_NAME, schema};
            use redb::TableHandle;

            let dir = tempfile::tempdir().expect("temp dir");
            {
                let db = redb::Database::create(dir.path().join(STORE_FILE_NAME)).expect("db");
                let txn = db.begin_write().expect("txn");
                schema::create_all(&txn).expect("tables");
                {
                    let mut keys = txn.open_table(IDEMPOTENCY_KEYS).expect("keys");
                    let mut answers = txn.open_table(IDEMPOTENCY_ANSWERS).expect("answers");
                    let mut expiry = txn.open_table(IDEMPOTENCY_EXPIRY_LEGACY).expect("expiry");
                    for i in 0..3u32 {
                        let number = u64::from(i) + 1;
                        let stored = AnswerRow {
                            tenant: 0,
                            key: key(i).as_str().to_owned(),
                            record: record(i, 7),
                        };
                        answers
                            .insert(number, encode(&stored).as_slice())
                            .expect("answer");
                        let pointer = AnswerPointer { answer: number };
                        keys.insert((0, key(i).as_str()), encode(&pointer).as_slice())
                            .expect("key");
                        expiry.insert((7, 0, key(i).as_str()), ()).expect("expiry");
                    }
                    let mut meta = txn.open_table(META).expect("meta");
                    schema::write_counter(&mut meta, META_NEXT_ANSWER_NUMBER, 4).expect("counter");
                }
                txn.commit().expect("commit");
            }
            let store = Store::open(dir.path()).expect("opens");
            assert_eq!(store.keys_in_memory(), 0, "every key is in the table");
            assert_readable(&store, 0..3, 7);
            assert_checks_clean(&store, 3);
            write(&store, 3..5, 7);
            assert_readable(&store, 0..5, 7);
            let txn = redb::ReadableDatabase::begin_read(store.database()).expect("read");
            let names: Vec<String> = txn
                .list_tables()
                .expect("tables")
                .map(|t| t.name().to_owned())
                .collect();
            assert!(
                !names.iter().any(|n| n == IDEMPOTENCY_EXPIRY_LEGACY.name()),
                "the old index is dropped: {names:?}"
            );
        }

        #[test]
        fn retention_deletes_expired_keys_from_memory_and_from_the_table() {
            let dir = tempfile::tempdir().expect("temp dir");
            let store = Store::open(dir.path()).expect("opens");
            store.set_key_merge_from(20);
            for batch in 0..6 {
                write(&store, batch * 10..batch * 10 + 10, 1_000);
            }
            write(&store, 60..70, 5_000);
            let in_memory_before = store.keys_in_memory();
            assert!(in_memory_before > 0 && in_memory_before < 70);

            let swept = store
                .commit_batch(|tables| tables.sweep_idempotency(2_000, 1_000))
                .expect("sweep");
            assert_eq!(swept, 60, "every record finished before the cutoff");
            for i in 0..60 {
                let found = store.idempotency_record(TenantId::DEFAULT, &key(i));
                assert_eq!(found.expect("readable"), None, "key {i} expired");
            }
            assert_readable(&store, 60..70, 5_000);
            assert_checks_clean(&store, 10);
            drop(store);

            let store = Store::open(dir.path()).expect("reopens");
            assert_readable(&store, 60..70, 5_000);
            assert_checks_clean(&store, 10);
        }
    }
}
