//! The history rows of a batch (`store/history.rs` reads them): each entry's place in its
//! tenant's lists and the timeline, in the transaction of what they index, so a list never shows
//! what a crash could take back and never misses a commit; and each posting's statement line,
//! which goes to the statement overlay once the commit returned `Ok` (`history/overlay.rs`: the
//! postings it indexes are in the transaction, and an open works the line out again from them).

use super::BatchTables;
use crate::ledger::{EntryOf, EntryType, Posting, StatementLine, TenantId, totals_after_each};
use crate::limits::{LISTED_BLOCK_ENTRIES_MAX, STATEMENT_BLOCK_LINES_MAX};
use crate::store::StoreError;
use crate::store::codec::encode;
pub(super) use crate::store::history::ListedKind;
use crate::store::history::blocks::{ListedBlock, block_row};
use crate::store::history::overlay::{Line, account_name, split_account_name};
use crate::store::schema::{META_STATEMENTS_THROUGH_ENTRY, write_counter};

impl BatchTables<'_> {
    /// The statement lines of an entry's postings: for each account it touches, the account's
    /// totals after each of its postings, worked back from the staged account (the totals after
    /// the whole entry). Keyed by the seq the entry's event is about to take.
    pub(super) fn put_statement_lines(
        &mut self,
        tenant: TenantId,
        entry: u64,
        (made_by_kind, made_by): (EntryOf, u64),
        postings: &[Posting],
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let seq = self.next_event_seq;
        let mut done: Vec<&crate::ledger::AccountId> = Vec::with_capacity(2);
        for posting in postings {
            if done.contains(&&posting.account) {
                continue;
            }
            done.push(&posting.account);
            let lines = {
                let account = self
                    .staged_accounts
                    .get(&tenant)
                    .and_then(|accounts| accounts.get(&posting.account))
                    .ok_or_else(|| StoreError::Corrupt {
                        record: "statement line",
                        detail: format!(
                            "entry {entry} posts to unstaged account {}",
                            posting.account
                        ),
                    })?;
                totals_after_each(account, postings).map_err(|error| StoreError::Corrupt {
                    record: "statement line",
                    detail: format!("entry {entry} on {}: {error:?}", posting.account),
                })?
            };
            for (index, after) in lines {
                let leg = u8::try_from(index).map_err(|_| StoreError::Corrupt {
                    record: "statement line",
                    detail: format!("entry {entry} has more than 256 postings"),
                })?;
                let line = StatementLine {
                    entry,
                    made_by,
                    entry_type: EntryType::of(made_by_kind, postings[index].kind),
                    side: postings[index].side,
                    amount: postings[index].amount,
                    after,
                    created_at_ms: now_ms,
                };
                self.line_changes.added.push((
                    account_name(tenant.0, posting.account.as_str()),
                    Line { seq, leg, line },
                ));
            }
        }
        Ok(())
    }

    /// Puts an entry in its tenant's list of its kind, under the seq its event is about to take
    /// (written at `flush_listed`).
    pub(super) fn list_entry(&mut self, tenant: TenantId, kind: ListedKind, number: u64) {
        self.listed_added
            .push((tenant.0, kind as u8, self.next_event_seq, number));
    }

    /// The batch's entries in their tenants' lists: one block per tenant and kind (more past
    /// `LISTED_BLOCK_ENTRIES_MAX`), each after every block before it, since seqs only grow.
    pub(super) fn flush_listed(&mut self) -> Result<(), StoreError> {
        let mut added = std::mem::take(&mut self.listed_added);
        // Stable: each list keeps its seq order.
        added.sort_by_key(|&(tenant, kind, _, _)| (tenant, kind));
        for list in added.chunk_by(|a, b| (a.0, a.1) == (b.0, b.1)) {
            for chunk in list.chunks(LISTED_BLOCK_ENTRIES_MAX) {
                let (tenant, kind, first, _) = chunk[0];
                let block = ListedBlock {
                    entries: chunk.iter().map(|&(_, _, seq, n)| (seq, n)).collect(),
                };
                self.tenant_entries
                    .insert((tenant, kind, first), encode(&block).as_slice())?;
            }
        }
        Ok(())
    }

    /// Moves a slice of the statement overlay into `statements` when it is due (all of it, and
    /// this batch's lines, on the final checkpoint). In a checkpoint, also moves the mark to just
    /// below the lowest entry left in memory: the merges are outside the journal (`Derived`), so
    /// only a durable commit may say the table holds them.
    pub(super) fn merge_statement_lines(&mut self) -> Result<(), StoreError> {
        let statements = &mut self.statements;
        // An account's run, as blocks of at most `STATEMENT_BLOCK_LINES_MAX` lines.
        let mut put = |tenant: u32, account: &str, run: &mut dyn Iterator<Item = &Line>| {
            let mut run = run.peekable();
            while run.peek().is_some() {
                let chunk = run.by_ref().take(STATEMENT_BLOCK_LINES_MAX);
                if let Some(((seq, leg), bytes)) = block_row(chunk) {
                    statements.insert((tenant, account, seq, leg), bytes.as_slice())?;
                }
            }
            Ok(())
        };
        if self.account_flush == super::AccountFlush::Now {
            // The final checkpoint: every line in memory, then this batch's, each after the
            // lines of its account in memory.
            self.statement_overlay
                .merge_slice(usize::MAX, |tenant, account, mut run| {
                    put(tenant, account, &mut run)
                })?;
            for (name, line) in &self.line_changes.added {
                let (tenant, account) = split_account_name(name);
                put(tenant, account, &mut std::iter::once(line))?;
            }
            self.line_changes.merged_all = true;
        } else {
            let count = self
                .statement_overlay
                .slice_len(self.line_changes.added.len());
            if count > 0 {
                self.line_changes.merged = self
                    .statement_overlay
                    .merge_slice(count, |tenant, account, mut run| {
                        put(tenant, account, &mut run)
                    })?;
            }
        }
        // The lowest entry held once this commit applied is at least the lowest held before it
        // (merges only take lines out; this batch's entries are the newest), so the mark may be
        // taken from the overlay as committed.
        let through = if self.line_changes.merged_all {
            Some(self.next_entry_number - 1)
        } else if self.redo.commits_durably() {
            let lowest_added = self
                .line_changes
                .added
                .iter()
                .map(|(_, l)| l.line.entry)
                .min();
            let lowest = self.statement_overlay.lowest_entry().or(lowest_added);
            Some(lowest.map_or(self.next_entry_number - 1, |entry| entry - 1))
        } else {
            None
        };
        if let Some(through) = through.filter(|t| *t > self.statements_through_entry) {
            write_counter(&mut self.meta, META_STATEMENTS_THROUGH_ENTRY, through)?;
        }
        Ok(())
    }

    /// Notes an event on the timeline (written by `flush_timeline`). A time before the last one
    /// noted counts as the last one, so the timeline's keys and values both only grow.
    pub(super) fn note_on_timeline(&mut self, seq: u64, now_ms: u64) {
        let ms = now_ms.max(self.timeline_floor_ms);
        self.timeline_floor_ms = ms;
        match self.timeline_added.last_mut() {
            Some((last_ms, last_seq)) if *last_ms == ms => *last_seq = seq,
            _ => self.timeline_added.push((ms, seq)),
        }
    }

    /// The batch's timeline rows: at most one per distinct time, however many events.
    pub(super) fn flush_timeline(&mut self) -> Result<(), StoreError> {
        for (ms, seq) in std::mem::take(&mut self.timeline_added) {
            self.timeline.insert(ms, seq)?;
        }
        Ok(())
    }

    /// The time the next entry may be stamped with at the earliest: the last committed event's.
    /// The writer stamps `max(now, this)`, so a wall clock stepped back never puts an entry
    /// before an earlier one (`as_of` seeks rely on it).
    pub fn clock_floor_ms(&self) -> u64 {
        self.timeline_floor_ms
    }
}
