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
//! - A merge's inserts stay out of the journal (`statements` is a `Derived` table): they survive
//!   a crash once a checkpoint commits them. So `meta.statements_through_entry` moves only in a
//!   checkpoint, to just below the lowest entry still in the overlay: every line of the entries
//!   up to it is in the table, durably. On open, the lines of the entries after it are worked
//!   out again from their postings (`read_back.rs`); a crash loses nothing.
//! - A merge writes an account's run of lines as blocks (`blocks.rs`): one B-tree insert for up to
//!   `STATEMENT_BLOCK_LINES_MAX` lines instead of one per line, which under the uniform load was
//!   the rest of the merges' cost (the rate rose ~11 %, BENCHMARKS.md sitting 11).
//!
//! Invariant: each line is in exactly one of the overlay and `statements`, and an account's lines
//! in the overlay all come after its lines in the table (merges take the oldest first; an open
//! leaves out the lines the table already holds).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};

use crate::ledger::StatementLine;
use crate::store::StoreError;

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

/// An account's key in the overlay: the tenant big-endian, then the account id; it sorts like
/// the table's key, so accounts in this order are neighbours in the table.
pub(in crate::store) type AccountName = Box<[u8]>;

pub(in crate::store) fn account_name(tenant: u32, account: &str) -> AccountName {
    let mut name = Vec::with_capacity(4 + account.len());
    name.extend_from_slice(&tenant.to_be_bytes());
    name.extend_from_slice(account.as_bytes());
    name.into_boxed_slice()
}

pub(in crate::store) fn split_account_name(name: &[u8]) -> (u32, &str) {
    let (tenant, account) = name.split_at(4);
    let tenant = u32::from_be_bytes(tenant.try_into().expect("a name starts with 4 bytes"));
    (
        tenant,
        std::str::from_utf8(account).expect("a name is made from a str"),
    )
}

/// One line and its position in the account's statement: in memory, and as a block holds it.
/// Kept decoded: a commit's lines are encoded once, as blocks, when they are merged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(in crate::store) struct Line {
    pub seq: u64,
    pub leg: u8,
    pub line: StatementLine,
}

impl Line {
    pub(in crate::store) fn position(&self) -> (u64, u8) {
        (self.seq, self.leg)
    }
}

/// The lines in memory, by account. Why not one ordered map of lines: its keys (long byte
/// strings on the heap) cost a cache miss per comparison, and a commit adds and removes lines
/// by the hundred; it was 11 % of the writer thread. An account's lines are appended in
/// statement order (commits follow seq order), so each account keeps a queue, found by hashing;
/// only the set of accounts is ordered, for the merge's slices.
#[derive(Debug, Default)]
pub(in crate::store) struct Lines {
    by_account: HashMap<AccountName, VecDeque<Line>>,
    /// The accounts with lines, in the table's order.
    order: BTreeSet<AccountName>,
    len: usize,
    /// The next slice starts at this account (empty: at the first).
    cursor: AccountName,
}

impl Lines {
    fn push(&mut self, name: AccountName, line: Line) {
        self.len += 1;
        match self.by_account.get_mut(&name) {
            Some(queue) => {
                debug_assert!(
                    queue
                        .back()
                        .is_none_or(|l| (l.seq, l.leg) < (line.seq, line.leg))
                );
                queue.push_back(line);
            }
            None => {
                self.order.insert(name.clone());
                self.by_account.insert(name, VecDeque::from([line]));
            }
        }
    }

    /// Takes the first `count` lines of an account out (a merge takes the oldest first).
    fn drop_front(&mut self, name: &[u8], count: usize) {
        let Some(queue) = self.by_account.get_mut(name) else {
            return;
        };
        let taken = count.min(queue.len());
        queue.drain(..taken);
        self.len -= taken;
        if queue.is_empty() {
            self.by_account.remove(name);
            self.order.remove(name);
        }
    }

    /// The lines of one account between two (seq, leg) positions, inclusive, in order.
    pub(in crate::store) fn of_account(
        &self,
        tenant: u32,
        account: &str,
        from: (u64, u8),
        to: (u64, u8),
    ) -> std::collections::vec_deque::Iter<'_, Line> {
        let Some(queue) = self.by_account.get(&*account_name(tenant, account)) else {
            return EMPTY.iter();
        };
        let start = queue.partition_point(|l| (l.seq, l.leg) < from);
        let end = queue.partition_point(|l| (l.seq, l.leg) <= to);
        queue.range(start..end.max(start))
    }

    /// Every line by its name, for the checker.
    pub(in crate::store) fn by_name(&self) -> BTreeMap<LineName, StatementLine> {
        let mut all = BTreeMap::new();
        for (name, queue) in &self.by_account {
            let (tenant, account) = split_account_name(name);
            for line in queue {
                all.insert(line_name(tenant, account, line.seq, line.leg), line.line);
            }
        }
        all
    }
}

static EMPTY: VecDeque<Line> = VecDeque::new();

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
    /// Lines this commit wrote, under their account's name (made once, here, and moved into the
    /// overlay after the commit, not made again there).
    pub(in crate::store) added: Vec<(AccountName, Line)>,
    /// How many of the oldest lines of some accounts this commit wrote to `statements`, in the
    /// table's order.
    pub(in crate::store) merged: Vec<(AccountName, usize)>,
    /// Set by the final checkpoint, which merged every line, its own too.
    pub(in crate::store) merged_all: bool,
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
        self.read().len
    }

    /// How many lines the next commit merges, given it adds `adding`: none below the mark.
    pub(in crate::store) fn slice_len(&self, adding: usize) -> usize {
        if self.len() + adding >= self.merge_from.load(Ordering::Relaxed) {
            self.slice_min.max(2 * adding)
        } else {
            0
        }
    }

    /// Hands `put` up to `count` lines (all of them: `usize::MAX`): the oldest run of each
    /// account from the cursor on, in the table's order, wrapping round once. Returns how many
    /// of each account's it handed over, for `LineChanges::merged`. The lines are read in place,
    /// under the lock that only this (the writer's) thread ever takes to write.
    pub(in crate::store) fn merge_slice(
        &self,
        count: usize,
        mut put: impl FnMut(
            u32,
            &str,
            std::collections::vec_deque::Iter<'_, Line>,
        ) -> Result<(), StoreError>,
    ) -> Result<Vec<(AccountName, usize)>, StoreError> {
        let lines = self.read();
        let accounts = lines
            .order
            .range::<[u8], _>((Bound::Included(&*lines.cursor), Bound::Unbounded))
            .chain(
                lines
                    .order
                    .range::<[u8], _>((Bound::Unbounded, Bound::Excluded(&*lines.cursor))),
            );
        let mut left = count;
        let mut runs = Vec::new();
        for name in accounts {
            if left == 0 {
                break;
            }
            let (tenant, account) = split_account_name(name);
            let queue = &lines.by_account[name];
            let taken = queue.len().min(left);
            put(tenant, account, queue.range(..taken))?;
            left -= taken;
            runs.push((name.clone(), taken));
        }
        Ok(runs)
    }

    /// The lowest entry the overlay holds lines of: the lowest of the accounts' oldest lines
    /// (each account's lines are in entry order). A walk over the accounts, so the writer asks
    /// only in a checkpoint, the one commit that may move the mark.
    pub(in crate::store) fn lowest_entry(&self) -> Option<u64> {
        let lines = self.read();
        lines
            .by_account
            .values()
            .filter_map(|queue| queue.front().map(|line| line.line.entry))
            .min()
    }

    /// After a commit returned `Ok`.
    pub(in crate::store) fn apply(&self, changes: LineChanges) {
        let mut lines = self.write();
        if changes.merged_all {
            *lines = Lines::default();
            self.merges.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // Merged first: a run is the oldest lines of its account as the commit saw them, and
        // this commit's own lines come after them.
        for (name, count) in &changes.merged {
            lines.drop_front(name, *count);
        }
        if let Some((last, _)) = changes.merged.into_iter().last() {
            lines.cursor = last;
            self.merges.fetch_add(1, Ordering::Relaxed);
        }
        for (name, line) in changes.added {
            lines.push(name, line);
        }
    }

    /// A line worked out again on open (`read_back.rs`), in statement order per account.
    pub(in crate::store) fn insert(&self, tenant: u32, account: &str, line: Line) {
        self.write().push(account_name(tenant, account), line);
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

    fn line(seq: u64, entry: u64) -> Line {
        Line {
            seq,
            leg: 0,
            line: StatementLine {
                entry,
                made_by: entry,
                entry_type: crate::ledger::EntryType::Charge,
                side: crate::ledger::PostingSide::Debit,
                amount: crate::ledger::Amount::new(1).expect("an amount"),
                after: crate::ledger::Totals::default(),
                created_at_ms: 0,
            },
        }
    }

    /// The mark follows the lowest entry left: a merge of the oldest line moves it, one of a
    /// newer line does not, and the final checkpoint's merge of everything leaves none.
    #[test]
    fn the_lowest_entry_is_the_oldest_line_left() {
        let overlay = StatementOverlay::default();
        overlay.insert(0, "a", line(3, 3));
        overlay.insert(0, "b", line(3, 3));
        overlay.insert(0, "a", line(7, 7));
        assert_eq!(overlay.lowest_entry(), Some(3));
        overlay.apply(LineChanges {
            merged: vec![(account_name(0, "a"), 1)],
            ..LineChanges::default()
        });
        assert_eq!(overlay.lowest_entry(), Some(3), "b still holds entry 3");
        overlay.apply(LineChanges {
            added: vec![(account_name(0, "c"), line(9, 9))],
            merged: vec![(account_name(0, "b"), 1)],
            merged_all: false,
        });
        assert_eq!(overlay.lowest_entry(), Some(7));
        assert_eq!(overlay.len(), 2);
        let mut handed = Vec::new();
        let merged = overlay
            .merge_slice(usize::MAX, |_, account, run| {
                handed.extend(run.map(|line| (account.to_owned(), line.seq)));
                Ok(())
            })
            .expect("nothing fails");
        assert_eq!(
            handed,
            [("c".to_owned(), 9), ("a".to_owned(), 7)],
            "the next slice starts at the last merged account's place and wraps round"
        );
        assert_eq!(
            merged,
            [(account_name(0, "c"), 1), (account_name(0, "a"), 1)]
        );
        overlay.apply(LineChanges {
            merged_all: true,
            ..LineChanges::default()
        });
        assert_eq!((overlay.len(), overlay.lowest_entry()), (0, None));
    }

    /// An account's lines between two positions, both ways, from its queue.
    #[test]
    fn an_accounts_lines_are_found_by_position() {
        let overlay = StatementOverlay::default();
        for seq in [2, 4, 6, 8] {
            overlay.insert(1, "a", line(seq, seq));
        }
        overlay.insert(1, "b", line(5, 5));
        let lines = overlay.read();
        let seqs: Vec<u64> = lines
            .of_account(1, "a", (3, 0), (6, 255))
            .map(|l| l.seq)
            .collect();
        assert_eq!(seqs, [4, 6]);
        let back: Vec<u64> = lines
            .of_account(1, "a", (0, 0), (8, 0))
            .rev()
            .map(|l| l.seq)
            .collect();
        assert_eq!(back, [8, 6, 4, 2]);
        assert_eq!(
            lines.of_account(0, "a", (0, 0), (9, 0)).count(),
            0,
            "another tenant's"
        );
    }
}
