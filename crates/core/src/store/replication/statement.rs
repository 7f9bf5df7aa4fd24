//! A hub's mirrored statements: one `StatementLine` per posting the mirror applies, keyed (origin,
//! account, the origin's event seq, leg), so that "what did terminal X do to account Y" reads
//! like the terminal's own statement (`Store::mirrored_statement`). The lines carry the origin's
//! numbers (`made_by`, `entry`) and the event's time, so a mirrored line equals the origin's
//! line, except `entry` on a settlement's lines (0: the wire does not carry it).
//!
//! **Origin order, even for a redrive.** Events arrive in seq order, so the mirrored account's
//! totals after an entry are the origin's and each line's `after` is worked back from them
//! (`totals_after_each`), as a node does. A redriven dead letter is the one exception: it is
//! applied after events the origin made later, and its lines go in before theirs. Those later
//! lines are then replayed on top of it, so every line's `after` is still the running sum in key
//! order and the last line still equals the account (what `check` and `as_of` rely on). That
//! costs the account's lines after the redriven event; in order, it is one empty range seek.

use redb::ReadableTable;

use super::ReplicationTables;
use super::mirror::{Stop, refused};
use crate::ledger::{
    Account, AccountId, EntryOf, EntryType, Posting, StatementLine, Totals, totals_after_each,
};
use crate::store::StoreError;
use crate::store::codec::{decode, encode};

/// What made an entry's postings, in the origin's numbers.
#[derive(Debug, Clone, Copy)]
pub(super) struct MadeBy {
    pub of: EntryOf,
    /// The charge (for a charge, an authorization and its settlement), refund or transfer.
    pub number: u64,
    /// The origin's entry number of the postings: the charge's, refund's or transfer's own; 0 for
    /// a settlement, whose entry number the wire does not carry.
    pub entry: u64,
}

/// The event whose postings the lines record, as the origin numbered and stamped it.
#[derive(Debug, Clone, Copy)]
pub(super) struct OriginEvent {
    pub seq: u64,
    pub at_ms: u64,
}

/// Lines to write: (account, seq, leg) → line. New lines and, after a redrive, rewritten ones.
pub(super) type Lines = Vec<(AccountId, u64, u8, StatementLine)>;

impl ReplicationTables<'_> {
    /// The statement lines of an entry the mirror just applied (nothing written yet: a refusal
    /// must still change nothing). `accounts` are the mirrored accounts as the entry left them,
    /// every account of `postings` among them.
    pub(super) fn mirrored_lines(
        &self,
        origin: &str,
        event: OriginEvent,
        made: MadeBy,
        postings: &[Posting],
        accounts: &[&Account],
    ) -> Result<Lines, Stop> {
        let mut lines = Vec::with_capacity(postings.len());
        let mut done: Vec<&AccountId> = Vec::with_capacity(2);
        for posting in postings {
            if done.contains(&&posting.account) {
                continue;
            }
            done.push(&posting.account);
            let Some(account) = accounts.iter().find(|a| a.id == posting.account) else {
                return Err(corrupt(format!(
                    "event {} of {origin} posts to {}, which it did not apply",
                    event.seq, posting.account
                )));
            };
            let later = self.lines_after(origin, &account.id, event.seq)?;
            let afters = if later.is_empty() {
                totals_after_each(account, postings).map_err(|error| {
                    corrupt(format!(
                        "event {} of {origin} on {}: {error:?}",
                        event.seq, account.id
                    ))
                })?
            } else {
                replay_before(account, postings, &later, &mut lines)
                    .or_else(|reason| {
                        refused(format!(
                            "the statement of {} cannot take event {} before the events after it: {reason}",
                            account.id, event.seq
                        ))
                    })?
            };
            for (index, after) in afters {
                let Ok(leg) = u8::try_from(index) else {
                    return refused(format!("event {} has over 256 postings", event.seq));
                };
                let line = StatementLine {
                    entry: made.entry,
                    made_by: made.number,
                    entry_type: EntryType::of(made.of, postings[index].kind),
                    side: postings[index].side,
                    amount: postings[index].amount,
                    after,
                    created_at_ms: event.at_ms,
                };
                lines.push((account.id.clone(), event.seq, leg, line));
            }
        }
        Ok(lines)
    }

    /// Writes lines `mirrored_lines` made.
    pub(super) fn put_mirrored_lines(&mut self, origin: &str, lines: Lines) -> Result<(), Stop> {
        for (account, seq, leg, line) in lines {
            self.statements.insert(
                (origin, account.as_str(), seq, leg),
                encode(&line).as_slice(),
            )?;
        }
        Ok(())
    }

    /// The lines of `account` from events after `seq`: none, unless a redrive applies `seq` late.
    fn lines_after(
        &self,
        origin: &str,
        account: &AccountId,
        seq: u64,
    ) -> Result<Vec<(u64, u8, StatementLine)>, Stop> {
        let Some(next) = seq.checked_add(1) else {
            return Ok(Vec::new());
        };
        let id = account.as_str();
        let mut later = Vec::new();
        for row in self
            .statements
            .range((origin, id, next, 0)..=(origin, id, u64::MAX, u8::MAX))?
        {
            let (key, value) = row?;
            let (_, _, seq, leg) = key.value();
            later.push((seq, leg, decode::<StatementLine>(value.value())?));
        }
        Ok(later)
    }
}

/// For a redrive: the totals of `account` after each of the entry's postings in the origin's
/// order (this entry before the `later` lines already mirrored), and the `later` lines
/// rewritten on top of it into `rewritten`. `account` holds every posting, the entry's and
/// the later lines', whichever order the hub applied them in; sums do not depend on it.
fn replay_before(
    account: &Account,
    postings: &[Posting],
    later: &[(u64, u8, StatementLine)],
    rewritten: &mut Lines,
) -> Result<Vec<(usize, Totals)>, String> {
    let mine: Vec<usize> = (0..postings.len())
        .filter(|&i| postings[i].account == account.id)
        .collect();
    let line_posting = |line: &StatementLine| {
        Posting::new(
            &account.id,
            line.side,
            line.amount,
            line.entry_type.posting_kind(),
        )
    };
    let why = |error| format!("{error:?}");
    let mut totals = Totals::of(account);
    for &i in mine.iter().rev() {
        totals.unapply(&postings[i]).map_err(why)?;
    }
    for (_, _, line) in later.iter().rev() {
        totals.unapply(&line_posting(line)).map_err(why)?;
    }
    let mut afters = Vec::with_capacity(mine.len());
    for i in mine {
        totals.apply(&postings[i]).map_err(why)?;
        afters.push((i, totals));
    }
    for (seq, leg, line) in later {
        totals.apply(&line_posting(line)).map_err(why)?;
        let mut line = *line;
        line.after = totals;
        rewritten.push((account.id.clone(), *seq, *leg, line));
    }
    debug_assert_eq!(totals, Totals::of(account));
    Ok(afters)
}

fn corrupt(detail: String) -> Stop {
    Stop::Store(StoreError::Corrupt {
        record: "mirrored statement line",
        detail,
    })
}
