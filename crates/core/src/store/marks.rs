//! The store's marks: when its rare moments come. Each is a write that happens once every many
//! batches in production, and each is where a crash finds state half-way between two layouts:
//!
//! - the journal's **checkpoint** (a durable redb commit that empties the journal,
//!   `journal.rs`), every `JOURNAL_CHECKPOINT_COMMITS` batches;
//! - the **account flush** (the account overlay written back to its rows, `accounts.rs`), every
//!   `ACCOUNT_FLUSH_CHARGES` charges;
//! - the **key merge** (finished keys moved from memory into the keyed table, `keys.rs`), once
//!   `KEY_OVERLAY_MERGE_FROM` keys wait, `KEY_MERGE_SLICE_MIN` keys or more per commit;
//! - the **statement merge** (statement lines moved from memory into the account-ordered table,
//!   `history/overlay.rs`), likewise from `STATEMENT_OVERLAY_MERGE_FROM` lines.
//!
//! A store always runs with [`Marks::default`], the limits. Tests, the fuzz targets and the crash
//! tests (`--features fault-injection`) lower them with `Store::set_marks`, so that a few batches
//! cross each moment and a crash can land on it; the release binary has no way to change them.
//! What a store crossed since it opened is [`MarksCrossed`] (`/metrics` shows it, so a crash test
//! can prove its kills went past each moment).

use std::fmt;

use crate::limits::{
    ACCOUNT_FLUSH_CHARGES, JOURNAL_CHECKPOINT_COMMITS, KEY_MERGE_SLICE_MIN, KEY_OVERLAY_MERGE_FROM,
    STATEMENT_MERGE_SLICE_MIN, STATEMENT_OVERLAY_MERGE_FROM,
};

/// When the store checkpoints, flushes accounts and merges keys. Only settable with the
/// `fault-injection` feature (`Store::set_marks`); every field is read where the moment is
/// decided, as a plain field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marks {
    /// Batches journaled between two checkpoints at most (`JOURNAL_CHECKPOINT_COMMITS`).
    pub journal_checkpoint_commits: u64,
    /// Charges between two account flushes (`ACCOUNT_FLUSH_CHARGES`).
    pub account_flush_charges: u64,
    /// Finished keys in memory from which commits merge them (`KEY_OVERLAY_MERGE_FROM`).
    pub key_merge_from: usize,
    /// Keys merged per commit at least, once merging started (`KEY_MERGE_SLICE_MIN`).
    pub key_merge_slice_min: usize,
    /// Statement lines in memory from which commits merge them (`STATEMENT_OVERLAY_MERGE_FROM`).
    pub statement_merge_from: usize,
    /// Lines merged per commit at least (`STATEMENT_MERGE_SLICE_MIN`).
    pub statement_merge_slice_min: usize,
}

impl Default for Marks {
    fn default() -> Self {
        Marks {
            journal_checkpoint_commits: JOURNAL_CHECKPOINT_COMMITS,
            account_flush_charges: ACCOUNT_FLUSH_CHARGES,
            key_merge_from: KEY_OVERLAY_MERGE_FROM,
            key_merge_slice_min: KEY_MERGE_SLICE_MIN,
            statement_merge_from: STATEMENT_OVERLAY_MERGE_FROM,
            statement_merge_slice_min: STATEMENT_MERGE_SLICE_MIN,
        }
    }
}

impl Marks {
    /// The marks of the crash tests and the ledger_model fuzz target: a checkpoint after every
    /// three journaled batches, an account flush every three charges, and keys merged from four
    /// waiting on, one or more a commit (so a merge can leave keys behind, as a large one does).
    /// Small enough that one fuzz input of a few dozen operations crosses each several times.
    pub const SMALL: Marks = Marks {
        journal_checkpoint_commits: 3,
        account_flush_charges: 3,
        key_merge_from: 4,
        key_merge_slice_min: 1,
        statement_merge_from: 4,
        statement_merge_slice_min: 1,
    };
}

/// The text form: `journal=N,accounts=N,keys=N,key_slice=N`, any of them, in any order; a field
/// left out keeps its limit. What `ONCELEDGER_FAULT_MARKS` holds (the server's `fault.rs`).
impl std::str::FromStr for Marks {
    type Err = MarksError;

    fn from_str(text: &str) -> Result<Marks, MarksError> {
        let mut marks = Marks::default();
        for field in text.split(',').map(str::trim).filter(|f| !f.is_empty()) {
            let (name, value) = field
                .split_once('=')
                .ok_or_else(|| MarksError(format!("{field:?} is not NAME=NUMBER")))?;
            let value: u64 = value
                .trim()
                .parse()
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(|| MarksError(format!("{field:?}: a mark is a positive integer")))?;
            let as_usize = || {
                usize::try_from(value).map_err(|_| MarksError(format!("{field:?} is too large")))
            };
            match name.trim() {
                "journal" => marks.journal_checkpoint_commits = value,
                "accounts" => marks.account_flush_charges = value,
                "keys" => marks.key_merge_from = as_usize()?,
                "key_slice" => marks.key_merge_slice_min = as_usize()?,
                "lines" => marks.statement_merge_from = as_usize()?,
                "line_slice" => marks.statement_merge_slice_min = as_usize()?,
                other => {
                    return Err(MarksError(format!(
                        "unknown mark {other:?} (journal, accounts, keys, key_slice, lines, \
                         line_slice)"
                    )));
                }
            }
        }
        Ok(marks)
    }
}

impl fmt::Display for Marks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "journal={},accounts={},keys={},key_slice={},lines={},line_slice={}",
            self.journal_checkpoint_commits,
            self.account_flush_charges,
            self.key_merge_from,
            self.key_merge_slice_min,
            self.statement_merge_from,
            self.statement_merge_slice_min
        )
    }
}

/// A text form of [`Marks`] that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarksError(String);

impl fmt::Display for MarksError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "marks: {}", self.0)
    }
}

impl std::error::Error for MarksError {}

/// How many times a store crossed each mark since it opened: durable commits (checkpoints),
/// commits that flushed the account overlay, commits that merged keys into the keyed table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MarksCrossed {
    pub checkpoints: u64,
    pub account_flushes: u64,
    pub key_merges: u64,
    pub statement_merges: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_form_round_trips_and_keeps_unnamed_marks_at_their_limits() {
        assert_eq!(Marks::SMALL.to_string().parse(), Ok(Marks::SMALL));
        let some: Marks = "keys=9, journal=2".parse().expect("parses");
        assert_eq!(
            some,
            Marks {
                journal_checkpoint_commits: 2,
                key_merge_from: 9,
                ..Marks::default()
            }
        );
        assert_eq!("".parse(), Ok(Marks::default()));
    }

    #[test]
    fn a_malformed_mark_is_refused_not_ignored() {
        for bad in ["journal", "journal=0", "journal=-1", "journal=x", "flush=3"] {
            assert!(bad.parse::<Marks>().is_err(), "{bad} was accepted");
        }
    }

    /// A process crash right after each rare moment, many times: the store runs with the small
    /// marks, commits batches of charges that each finish a key, and after a random number of
    /// batches is dropped without a close (`crash_image`: the files as the kernel holds them, as
    /// after SIGKILL) and opened again. After every reopen each committed charge and key is there
    /// once, the balances are their sum, and the checker is clean; over the run, crashes came right
    /// after a checkpoint, an account flush and a key merge many times each. (The same under a
    /// simulated power loss is `fuzz/tests/marks.rs`, on the fuzz targets' disk.)
    mod crashes {
        use super::super::super::test_support::stage_charge;
        use super::super::super::test_support::{balance, crash_image, open_accounts};
        use super::super::super::{Effect, IdempotencyRecord, Store, check};
        use super::super::{Marks, MarksCrossed};
        use crate::idempotency::{Fingerprint, IdempotencyKey};
        use crate::ids::TenantId;

        const CRASHES: u64 = 64;
        const BATCHES_BETWEEN_CRASHES_MAX: u64 = 4;
        const CHARGES_PER_BATCH_MAX: u64 = 3;

        fn open(dir: &std::path::Path) -> Store {
            let mut store = Store::open(dir).expect("opens");
            store.set_marks(Marks::SMALL);
            store
        }

        fn key(n: u64) -> IdempotencyKey {
            IdempotencyKey::parse(format!("k{:016x}", n.wrapping_mul(0x9e37_79b9)).as_bytes())
                .expect("key")
        }

        /// One batch of `charges` charges of 1..=3 each, each finishing its own key.
        fn write(store: &Store, keys: &mut u64, charges: u64) -> i64 {
            store
                .commit_batch(|tables| {
                    let mut moved = 0;
                    for _ in 0..charges {
                        let amount = 1 + *keys % 3;
                        let charge = stage_charge(tables, TenantId::DEFAULT, amount)?;
                        let record = IdempotencyRecord {
                            fingerprint: Fingerprint([*keys as u8; 32]),
                            status: 201,
                            // The shape `check` reads of a charge's answer: its public id.
                            body: format!(
                                "{{\"id\":\"{}\"}}",
                                tables.charge_ids().id_of(charge.number)
                            )
                            .into_bytes(),
                            finished_at_ms: 1,
                            effect: Effect::ChargeSucceeded {
                                charge_number: charge.number,
                            },
                        };
                        tables.put_idempotency_record(TenantId::DEFAULT, &key(*keys), &record)?;
                        *keys += 1;
                        moved += amount as i64;
                    }
                    Ok(moved)
                })
                .expect("commit")
        }

        fn assert_everything_there(store: &Store, keys: u64, moved: i64) {
            assert_eq!((balance(store, "a"), balance(store, "b")), (-moved, moved));
            for n in 0..keys {
                let found = store.idempotency_record(TenantId::DEFAULT, &key(n));
                assert!(found.expect("readable").is_some(), "key {n} lost");
            }
            let report = check::assert_consistent(store);
            assert_eq!((report.charges, report.idempotency_records), (keys, keys));
        }

        #[test]
        fn crashes_right_after_checkpoints_flushes_and_merges_lose_nothing() {
            let dir = tempfile::tempdir().expect("temp dir");
            let mut store = open(&dir.path().join("0"));
            open_accounts(&store, TenantId::DEFAULT);
            let (mut keys, mut moved, mut seed) = (0u64, 0i64, 7u64);
            let mut random = |bound: u64| {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                1 + (seed >> 33) % bound
            };
            let mut right_after = MarksCrossed::default();
            for crash in 1..=CRASHES {
                let mut before = store.marks_crossed();
                for _ in 0..random(BATCHES_BETWEEN_CRASHES_MAX) {
                    before = store.marks_crossed();
                    moved += write(&store, &mut keys, random(CHARGES_PER_BATCH_MAX));
                }
                let last = store.marks_crossed();
                right_after.checkpoints += u64::from(last.checkpoints > before.checkpoints);
                right_after.account_flushes +=
                    u64::from(last.account_flushes > before.account_flushes);
                right_after.key_merges += u64::from(last.key_merges > before.key_merges);
                let previous = store.path().parent().expect("data dir").to_path_buf();
                let next = dir.path().join(crash.to_string());
                crash_image(store, &next);
                // The leaked store keeps its files open; only the copy is needed from now on.
                std::fs::remove_dir_all(previous).expect("remove the crashed directory");
                store = open(&next);
                assert_everything_there(&store, keys, moved);
            }
            eprintln!("{CRASHES} crashes, right after: {right_after:?}");
            // Each kind came right before a crash in one crash out of eight or more (a checkpoint comes
            // on every fourth batch after an open, and a crash after one to four batches).
            for (moment, count) in [
                ("a checkpoint", right_after.checkpoints),
                ("an account flush", right_after.account_flushes),
                ("a key merge", right_after.key_merges),
            ] {
                assert!(
                    count >= CRASHES / 8,
                    "{count} crashes right after {moment}: {right_after:?}"
                );
            }
        }
    }
}
