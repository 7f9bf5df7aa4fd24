//! Statement lines not yet in the account-ordered `statements` table: kept in memory, merged into
//! it a key-ordered slice per commit, as `keys.rs` does for idempotency keys and for the same
//! reason.
//!
//! Why: a statement is ordered by account, so the two lines of a charge between random accounts
//! land on two B-tree leaves of their own, and each commit rewrote two leaves per charge. With the
//! lines inserted directly, `put_statement_lines` was 22 % of the writer thread's time under the
//! uniform load and the rate fell to ~75-80 % of the build before history (BENCHMARKS.md,
//! sitting 10). Merged in slices of neighbours, a leaf is rewritten once for several lines. (A
//! first version also appended each line to a tail table for crashes: two more B-tree inserts and
//! two deletes per charge, for what the postings already hold.)
//!
//! So:
//! - A commit writes its lines only here, once it returned `Ok`: the postings it appends, its
//!   entry records and the accounts already hold everything a line says. Readers see the table
//!   and the overlay together, between two publications.
//! - Once the overlay holds `STATEMENT_OVERLAY_MERGE_FROM` lines, every commit also moves the next
//!   `max(STATEMENT_MERGE_SLICE_MIN, 2 × the batch's lines)` lines after a cursor, in key order,
//!   wrapping round, into `statements`. A shutdown's final checkpoint merges all of them.
//! - `meta.statements_through_entry` is below the lowest entry still in the overlay: every line
//!   of the entries up to it is in the table. On open, the lines of the entries after it are
//!   worked out again from their postings (`read_back.rs`); a crash loses nothing.
//!
//! Invariant: a line is in the overlay, or in `statements`, or both (after a restart, until its
//! slice comes round), always with the same bytes.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::limits::{STATEMENT_MERGE_SLICE_MIN, STATEMENT_OVERLAY_MERGE_FROM};

/// `(tenant, account, seq, leg)` as one byte string: the tenant big-endian, the account id, a 0
/// byte (no account id holds one), the seq big-endian and the leg. It sorts like the table's
/// tuple key, so a slice of the overlay is a contiguous range of the table.
pub(in crate::store) type LineName = Box<[u8]>;

pub(in crate::store) fn line_name(tenant: u32, account: &str, seq: u64, leg: u8) -> LineName {
    let mut name = Vec::with_capacity(4 + account.len() + 1 + 9);
    name.extend_from_slice(&tenant.to_be_bytes());
    name.extend_from_slice(account.as_bytes());
    name.push(0);
    name.extend_from_slice(&seq.to_be_bytes());
    name.push(leg);
    name.into_boxed_slice()
}

/// The `(tenant, account, seq, leg)` a name was made from.
pub(in crate::store) fn split_line_name(name: &[u8]) -> (u32, &str, u64, u8) {
    let (tenant, rest) = name.split_at(4);
    let (account, tail) = rest.split_at(rest.len() - 10);
    let tenant = u32::from_be_bytes(tenant.try_into().expect("a name starts with 4 bytes"));
    let account = std::str::from_utf8(account).expect("a name is made from a str");
    let seq = u64::from_be_bytes(tail[1..9].try_into().expect("8 bytes of seq"));
    (tenant, account, seq, tail[9])
}

#[derive(Debug, Default)]
pub(in crate::store) struct Lines {
    /// Line name → (its entry, the encoded `StatementLine`).
    pub(in crate::store) by_name: BTreeMap<LineName, (u64, Box<[u8]>)>,
    /// How many lines of each entry the overlay holds, for the lowest one (the mark).
    entries: BTreeMap<u64, u32>,
    /// The next slice starts after this name (empty: at the start).
    cursor: LineName,
}

impl Lines {
    fn insert(&mut self, name: LineName, entry: u64, line: Box<[u8]>) {
        if self.by_name.insert(name, (entry, line)).is_none() {
            *self.entries.entry(entry).or_default() += 1;
        }
    }

    fn remove(&mut self, name: &[u8]) {
        if let Some((entry, _)) = self.by_name.remove(name) {
            if let Some(count) = self.entries.get_mut(&entry) {
                *count -= 1;
                if *count == 0 {
                    self.entries.remove(&entry);
                }
            }
        }
    }

    /// The lines of one account between two (seq, leg) positions, inclusive, in key order.
    pub(in crate::store) fn of_account(
        &self,
        tenant: u32,
        account: &str,
        from: (u64, u8),
        to: (u64, u8),
    ) -> std::collections::btree_map::Range<'_, LineName, (u64, Box<[u8]>)> {
        let low = line_name(tenant, account, from.0, from.1);
        let high = line_name(tenant, account, to.0, to.1);
        self.by_name
            .range::<[u8], _>((Bound::Included(&*low), Bound::Included(&*high)))
    }
}

#[derive(Debug)]
pub(in crate::store) struct StatementOverlay {
    lines: RwLock<Lines>,
    /// `STATEMENT_OVERLAY_MERGE_FROM`, unless lowered by `Store::set_marks` (tests only).
    merge_from: AtomicUsize,
    /// `STATEMENT_MERGE_SLICE_MIN`, likewise.
    slice_min: usize,
    /// Commits that merged lines since open.
    merges: AtomicU64,
}

impl Default for StatementOverlay {
    fn default() -> Self {
        StatementOverlay {
            lines: RwLock::default(),
            merge_from: AtomicUsize::new(STATEMENT_OVERLAY_MERGE_FROM),
            slice_min: STATEMENT_MERGE_SLICE_MIN,
            merges: AtomicU64::new(0),
        }
    }
}

/// What one commit changes in the overlay, applied only once it returned `Ok`.
#[derive(Debug, Default)]
pub(in crate::store) struct LineChanges {
    /// Lines this commit wrote: name, entry, encoded line.
    pub(in crate::store) added: Vec<(LineName, u64, Box<[u8]>)>,
    /// Lines this commit wrote to `statements` (out of the overlay).
    pub(in crate::store) merged: Vec<LineName>,
}

impl StatementOverlay {
    pub(in crate::store) fn read(&self) -> std::sync::RwLockReadGuard<'_, Lines> {
        self.lines.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Lines> {
        self.lines.write().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(any(test, feature = "fault-injection"))]
    pub(in crate::store) fn set_marks(&mut self, merge_from: usize, slice_min: usize) {
        *self.merge_from.get_mut() = merge_from;
        self.slice_min = slice_min;
    }

    pub(in crate::store) fn merges(&self) -> u64 {
        self.merges.load(Ordering::Relaxed)
    }

    pub(in crate::store) fn len(&self) -> usize {
        self.read().by_name.len()
    }

    /// How many lines the next commit merges, given it adds `adding`: none below the mark.
    pub(in crate::store) fn slice_len(&self, adding: usize) -> usize {
        if self.len() + adding >= self.merge_from.load(Ordering::Relaxed) {
            self.slice_min.max(2 * adding)
        } else {
            0
        }
    }

    /// Up to `count` lines after the cursor in key order, wrapping round once.
    pub(in crate::store) fn next_slice(&self, count: usize) -> Vec<(LineName, u64, Box<[u8]>)> {
        let lines = self.read();
        let after = lines
            .by_name
            .range::<[u8], _>((Bound::Excluded(&*lines.cursor), Bound::Unbounded))
            .chain(
                lines
                    .by_name
                    .range::<[u8], _>((Bound::Unbounded, Bound::Included(&*lines.cursor))),
            );
        after
            .take(count)
            .map(|(name, (entry, line))| (name.clone(), *entry, line.clone()))
            .collect()
    }

    /// Every line, for the shutdown's merge.
    pub(in crate::store) fn all(&self) -> Vec<(LineName, u64, Box<[u8]>)> {
        let lines = self.read();
        lines
            .by_name
            .iter()
            .map(|(name, (entry, line))| (name.clone(), *entry, line.clone()))
            .collect()
    }

    /// The lowest entry the overlay holds lines of once `changes` applied.
    pub(in crate::store) fn lowest_entry_after(&self, changes: &LineChanges) -> Option<u64> {
        let lines = self.read();
        let mut leaving: BTreeMap<u64, u32> = BTreeMap::new();
        for name in &changes.merged {
            if let Some((entry, _)) = lines.by_name.get(name) {
                *leaving.entry(*entry).or_default() += 1;
            }
        }
        let kept = lines
            .entries
            .iter()
            .find(|(entry, count)| leaving.get(entry).is_none_or(|gone| gone < count))
            .map(|(entry, _)| *entry);
        let merged_now: std::collections::HashSet<&[u8]> =
            changes.merged.iter().map(|name| &**name).collect();
        let added = changes
            .added
            .iter()
            .filter(|(name, _, _)| !merged_now.contains(&**name))
            .map(|(_, entry, _)| *entry)
            .min();
        match (kept, added) {
            (Some(kept), Some(added)) => Some(kept.min(added)),
            (kept, added) => kept.or(added),
        }
    }

    /// After a commit returned `Ok`.
    pub(in crate::store) fn apply(&self, changes: LineChanges) {
        let mut lines = self.write();
        for (name, entry, line) in changes.added {
            lines.insert(name, entry, line);
        }
        if let Some(last) = changes.merged.last() {
            lines.cursor = last.clone();
            self.merges.fetch_add(1, Ordering::Relaxed);
        }
        for name in &changes.merged {
            lines.remove(name);
        }
    }

    /// A line worked out again on open (`read_back.rs`).
    pub(in crate::store) fn insert(&self, name: LineName, entry: u64, line: Box<[u8]>) {
        self.write().insert(name, entry, line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_like_the_tables_tuple_key_and_split_back() {
        let mut tuples = vec![
            (1u32, "a", 5u64, 0u8),
            (0, "b", 1, 1),
            (0, "ab", 9, 0),
            (0, "a", 300, 2),
            (0, "a", 300, 1),
            (0, "a", 2, 7),
            (256, "", 0, 0),
        ];
        let mut names: Vec<LineName> = tuples
            .iter()
            .map(|(t, a, s, l)| line_name(*t, a, *s, *l))
            .collect();
        tuples.sort();
        names.sort();
        let back: Vec<(u32, &str, u64, u8)> = names.iter().map(|n| split_line_name(n)).collect();
        assert_eq!(back, tuples);
    }

    /// The mark follows the lowest entry left: a merge of the oldest line moves it, one of a
    /// newer line does not, and a line added and merged in one commit never holds it back.
    #[test]
    fn the_lowest_entry_counts_what_stays() {
        let overlay = StatementOverlay::default();
        let line = || vec![1u8].into_boxed_slice();
        overlay.insert(line_name(0, "a", 3, 0), 3, line());
        overlay.insert(line_name(0, "b", 3, 1), 3, line());
        overlay.insert(line_name(0, "a", 7, 0), 7, line());
        let merged_one_of_seq_3 = LineChanges {
            added: vec![],
            merged: vec![line_name(0, "a", 3, 0)],
        };
        assert_eq!(overlay.lowest_entry_after(&merged_one_of_seq_3), Some(3));
        let merged_seq_3 = LineChanges {
            added: vec![(line_name(0, "c", 9, 0), 9, line())],
            merged: vec![line_name(0, "a", 3, 0), line_name(0, "b", 3, 1)],
        };
        assert_eq!(overlay.lowest_entry_after(&merged_seq_3), Some(7));
        let everything = LineChanges {
            added: vec![(line_name(0, "c", 9, 0), 9, line())],
            merged: vec![
                line_name(0, "a", 3, 0),
                line_name(0, "b", 3, 1),
                line_name(0, "a", 7, 0),
                line_name(0, "c", 9, 0),
            ],
        };
        assert_eq!(overlay.lowest_entry_after(&everything), None);
        overlay.apply(everything);
        assert_eq!(overlay.len(), 0);
    }
}
