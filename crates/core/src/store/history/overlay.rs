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
//! - `meta.statements_through_entry` is below the lowest entry still in the overlay (moved every
//!   `MARK_EVERY_COMMITS` commits, so it may lag): every line of the entries up to it is in the
//!   table. On open, the lines of the entries after it are
//!   worked out again from their postings (`read_back.rs`); a crash loses nothing.
//!
//! Invariant: a line is in the overlay, or in `statements`, or both (after a restart, until its
//! slice comes round), always with the same bytes.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
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

/// An account's key in the overlay: the tenant big-endian, then the account id; it sorts like
/// the table's key, so accounts in this order are neighbours in the table.
type AccountName = Box<[u8]>;

fn account_name(tenant: u32, account: &str) -> AccountName {
    let mut name = Vec::with_capacity(4 + account.len());
    name.extend_from_slice(&tenant.to_be_bytes());
    name.extend_from_slice(account.as_bytes());
    name.into_boxed_slice()
}

fn split_account_name(name: &[u8]) -> (u32, &str) {
    let (tenant, account) = name.split_at(4);
    let tenant = u32::from_be_bytes(tenant.try_into().expect("a name starts with 4 bytes"));
    (
        tenant,
        std::str::from_utf8(account).expect("a name is made from a str"),
    )
}

/// One line in memory: its position in the account's statement, its entry, its bytes.
#[derive(Debug, Clone)]
pub(in crate::store) struct Line {
    pub seq: u64,
    pub leg: u8,
    pub entry: u64,
    pub bytes: Box<[u8]>,
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
    fn push(&mut self, tenant: u32, account: &str, line: Line) {
        let name = account_name(tenant, account);
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
    pub(in crate::store) fn by_name(&self) -> BTreeMap<LineName, (u64, Box<[u8]>)> {
        let mut all = BTreeMap::new();
        for (name, queue) in &self.by_account {
            let (tenant, account) = split_account_name(name);
            for line in queue {
                all.insert(
                    line_name(tenant, account, line.seq, line.leg),
                    (line.entry, line.bytes.clone()),
                );
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
    /// Commits since open, for `mark_due`.
    commits: AtomicU64,
}

/// How often the mark (`meta.statements_through_entry`) moves: it bounds what an open works out
/// again, which `STATEMENT_OVERLAY_MERGE_FROM` bounds anyway, so it need not move every commit.
const MARK_EVERY_COMMITS: u64 = 256;

impl Default for StatementOverlay {
    fn default() -> Self {
        StatementOverlay {
            lines: RwLock::default(),
            merge_from: AtomicUsize::new(STATEMENT_OVERLAY_MERGE_FROM),
            slice_min: STATEMENT_MERGE_SLICE_MIN,
            merges: AtomicU64::new(0),
            commits: AtomicU64::new(0),
        }
    }
}

/// The first `lines` of one account's queue, written to the table by a commit.
#[derive(Debug, Clone)]
pub(in crate::store) struct MergedRun {
    pub tenant: u32,
    pub account: String,
    pub lines: Vec<Line>,
}

/// What one commit changes in the overlay, applied only once it returned `Ok`.
#[derive(Debug, Default)]
pub(in crate::store) struct LineChanges {
    /// Lines this commit wrote: tenant, account, line.
    pub(in crate::store) added: Vec<(u32, String, Line)>,
    /// The oldest lines of some accounts, written to `statements` by this commit.
    pub(in crate::store) merged: Vec<MergedRun>,
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

    /// Up to `count` lines: the oldest of each account from the cursor on, in the table's order,
    /// wrapping round once (all of them: `usize::MAX`).
    pub(in crate::store) fn next_slice(&self, count: usize) -> Vec<MergedRun> {
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
            let queue = &lines.by_account[name];
            let taken: Vec<Line> = queue.iter().take(left).cloned().collect();
            left -= taken.len();
            let (tenant, account) = split_account_name(name);
            runs.push(MergedRun {
                tenant,
                account: account.to_owned(),
                lines: taken,
            });
        }
        runs
    }

    /// The lowest entry the overlay holds lines of: the lowest of the accounts' oldest lines
    /// (each account's lines are in entry order). A walk over the accounts, so the writer asks
    /// only every `MARK_EVERY_COMMITS` commits: the mark may lag, which only makes an open work
    /// out again lines the table already holds.
    pub(in crate::store) fn lowest_entry(&self) -> Option<u64> {
        let lines = self.read();
        lines
            .by_account
            .values()
            .filter_map(|queue| queue.front().map(|line| line.entry))
            .min()
    }

    /// Whether this commit moves the mark (every `MARK_EVERY_COMMITS` commits).
    pub(in crate::store) fn mark_due(&self) -> bool {
        self.commits
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(MARK_EVERY_COMMITS)
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
        if let Some(last) = changes.merged.last() {
            lines.cursor = account_name(last.tenant, &last.account);
            self.merges.fetch_add(1, Ordering::Relaxed);
        }
        for run in &changes.merged {
            lines.drop_front(&account_name(run.tenant, &run.account), run.lines.len());
        }
        for (tenant, account, line) in changes.added {
            lines.push(tenant, &account, line);
        }
    }

    /// A line worked out again on open (`read_back.rs`), in statement order per account.
    pub(in crate::store) fn insert(&self, tenant: u32, account: &str, line: Line) {
        self.write().push(tenant, account, line);
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
            entry,
            bytes: vec![1u8].into_boxed_slice(),
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
        let run = |account: &str, lines| MergedRun {
            tenant: 0,
            account: account.into(),
            lines,
        };
        overlay.apply(LineChanges {
            merged: vec![run("a", vec![line(3, 3)])],
            ..LineChanges::default()
        });
        assert_eq!(overlay.lowest_entry(), Some(3), "b still holds entry 3");
        overlay.apply(LineChanges {
            added: vec![(0, "c".into(), line(9, 9))],
            merged: vec![run("b", vec![line(3, 3)])],
            merged_all: false,
        });
        assert_eq!(overlay.lowest_entry(), Some(7));
        assert_eq!(overlay.len(), 2);
        assert_eq!(
            overlay
                .next_slice(usize::MAX)
                .iter()
                .map(|r| r.account.as_str())
                .collect::<Vec<_>>(),
            ["c", "a"],
            "the next slice starts at the last merged account's place and wraps round"
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
