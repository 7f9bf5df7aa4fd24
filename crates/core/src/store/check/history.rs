//! The history indexes (`store/history.rs`) against what they index: invariant 8.
//!
//! Every posting has exactly one statement line and every line is a posting's; each line's
//! `after` is its account's running sum and the last one is the account's totals; the list
//! indexes hold exactly the charges, refunds, transfers and accounts; the timeline finds every
//! entry from its time on; a hub's mirrored statements sum to its mirrored accounts.
//!
//! **Bounded memory.** The entries are already in memory (`entries.rs` read them); the postings,
//! statements and index tables are walked once each and checked the other way by point lookups
//! (n log n), never loaded. The statements are keyed (tenant, account, seq, leg), so a walk meets
//! each account's lines together and in order: one running total at a time.
//!
//! A store without `META_HISTORY_INDEXED` has no history yet: a store from before history,
//! checked read-only (`verify_stopped`). Its next writable open indexes it (recovery's
//! `IndexHistory`); until then there is nothing to check, and the report says so
//! (`history_indexed: false`).

use std::collections::{BTreeMap, HashSet};

use redb::{ReadOnlyTable, ReadableTable};

use super::entries::Entries;
use super::{AccountsByKey, Report};
use crate::ledger::{Account, EntryOf, EntryType, Posting, StatementLine, Totals};
use crate::limits::{LISTED_BLOCK_ENTRIES_MAX, STATEMENT_BLOCK_LINES_MAX};
use crate::store::StoreError;
use crate::store::codec::decode;
use crate::store::history::ListedKind;
use crate::store::history::blocks::{line_at, read_block, read_listed_block};
use crate::store::history::overlay::{LineName, line_name, split_line_name};
use crate::store::schema::{
    ACCOUNTS_BY_CREATION, CHARGE_REFUNDS, META, META_HISTORY_INDEXED, META_NEXT_EVENT_SEQ,
    POSTINGS, REPLICA_ACCOUNTS, REPLICA_STATEMENTS, STATEMENTS, TENANT_ENTRIES, TIMELINE,
    open_if_present, read_counter_leniently,
};

/// `statements`, read: (tenant, account, first seq, first leg) → a block of lines
/// (`history/blocks.rs`).
type Statements = ReadOnlyTable<(u32, &'static str, u64, u8), &'static [u8]>;

/// The lines still in memory (`history/overlay.rs`), by line name.
pub(in crate::store) type MemoryLines = std::collections::BTreeMap<LineName, StatementLine>;

/// The statement as readers see it: the table's lines and the lines not merged into it yet.
/// Each line must be in one of them only.
struct StatementView {
    table: Option<Statements>,
    memory: MemoryLines,
}

impl StatementView {
    fn get(
        &self,
        tenant: u32,
        account: &str,
        seq: u64,
        leg: u8,
    ) -> Result<Option<StatementLine>, StoreError> {
        if let Some(line) = self.memory.get(&*line_name(tenant, account, seq, leg)) {
            return Ok(Some(*line));
        }
        match &self.table {
            Some(table) => Ok(line_at(table, tenant, account, (seq, leg))?.map(|l| l.line)),
            None => Ok(None),
        }
    }

    fn has_lines(&self, tenant: u32, account: &str) -> Result<bool, StoreError> {
        let low = line_name(tenant, account, 0, 0);
        let high = line_name(tenant, account, u64::MAX, u8::MAX);
        if self.memory.range(low..=high).next().is_some() {
            return Ok(true);
        }
        Ok(match &self.table {
            Some(table) => table
                .range((tenant, account, 0, 0)..=(tenant, account, u64::MAX, u8::MAX))?
                .next()
                .is_some(),
            None => false,
        })
    }

    /// Every line once, in key order, table and memory merged. A block that breaks the rules of
    /// `blocks.rs` (empty, out of order, keyed by another line, overlapping the one before) and
    /// a line in both places are reported.
    fn for_each(
        &self,
        violations: &mut Vec<String>,
        mut visit: impl FnMut(
            (u32, &str, u64, u8),
            StatementLine,
            &mut Vec<String>,
        ) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut memory = self.memory.iter().peekable();
        let mut table = TableLines {
            rows: match &self.table {
                Some(table) => Some(table.iter()?),
                None => None,
            },
            block: std::collections::VecDeque::new(),
            last: None,
        };
        let mut from_table = table.pull(violations)?;
        loop {
            let (name, line) = match (&from_table, memory.peek()) {
                (None, None) => break,
                (None, Some(_)) => {
                    let (name, line) = memory.next().expect("peeked");
                    (name.clone(), *line)
                }
                (Some((name, _)), Some((in_memory, _))) if **in_memory < *name => {
                    let (name, line) = memory.next().expect("peeked");
                    (name.clone(), *line)
                }
                (Some((name, line)), in_memory) => {
                    if in_memory.is_some_and(|(n, _)| **n == *name) {
                        let (tenant, account, seq, leg) = split_line_name(name);
                        violations.push(format!(
                            "{} is both in memory and in the table",
                            line_key(tenant, account, seq, leg)
                        ));
                        memory.next();
                    }
                    let taken = (name.clone(), *line);
                    from_table = table.pull(violations)?;
                    taken
                }
            };
            visit(split_line_name(&name), line, violations)?;
        }
        Ok(())
    }
}

/// The table's blocks, in key order.
type Blocks<'t> = redb::Range<'t, (u32, &'static str, u64, u8), &'static [u8]>;

/// The table's lines one by one, its blocks opened in key order.
struct TableLines<'t> {
    rows: Option<Blocks<'t>>,
    block: std::collections::VecDeque<(LineName, StatementLine)>,
    /// The last line of the blocks read so far: the next block's lines must come after it.
    last: Option<LineName>,
}

impl TableLines<'_> {
    fn pull(
        &mut self,
        violations: &mut Vec<String>,
    ) -> Result<Option<(LineName, StatementLine)>, StoreError> {
        loop {
            if let Some(line) = self.block.pop_front() {
                return Ok(Some(line));
            }
            let Some(row) = self.rows.as_mut().and_then(|rows| rows.next()) else {
                return Ok(None);
            };
            let (key, value) = row?;
            let (tenant, account, seq, leg) = key.value();
            let block = match read_block((seq, leg), value.value()) {
                Ok(block) => block,
                Err(StoreError::Corrupt { detail, .. }) => {
                    violations.push(format!(
                        "statement block (tenant {tenant}, {account}, seq {seq}, leg {leg}): {detail}"
                    ));
                    continue;
                }
                Err(other) => return Err(other),
            };
            let first = line_name(tenant, account, seq, leg);
            if self.last.as_ref().is_some_and(|last| *last >= first) {
                violations.push(format!(
                    "statement block (tenant {tenant}, {account}, seq {seq}, leg {leg}) overlaps the block before it"
                ));
                continue;
            }
            if block.lines.len() > STATEMENT_BLOCK_LINES_MAX {
                violations.push(format!(
                    "statement block (tenant {tenant}, {account}, seq {seq}, leg {leg}) holds {} lines, over {STATEMENT_BLOCK_LINES_MAX}",
                    block.lines.len()
                ));
            }
            self.block = block
                .lines
                .into_iter()
                .map(|line| (line_name(tenant, account, line.seq, line.leg), line.line))
                .collect();
            self.last = self.block.back().map(|(name, _)| name.clone());
        }
    }
}

/// What the earlier steps read, for the history to be checked against.
pub(super) struct Seen<'a> {
    pub accounts: &'a AccountsByKey,
    pub entries: &'a Entries,
    /// (origin, account) of every mirror account a mirrored entry moved (`mirrors.rs`).
    pub mirror_accounts_moved: &'a HashSet<(String, String)>,
    /// The statement lines not merged into `statements` yet (`history/overlay.rs`).
    pub statement_memory: &'a MemoryLines,
}

/// What made an entry, as its statement lines must say: from its record, or for a settlement
/// from its authorization's progress (the only place its entry number is kept).
#[derive(Debug, Clone, Copy)]
struct Facts {
    tenant: u32,
    of: EntryOf,
    made_by: u64,
    seq: u64,
    at_ms: u64,
}

/// The entries by number, as facts (a settlement found through its authorization).
struct EntryFacts<'a> {
    entries: &'a Entries,
    /// Settlement entry number → its authorization's charge number (ordered, so violations come
    /// out in one order run after run).
    settlements: BTreeMap<u64, u64>,
}

impl<'a> EntryFacts<'a> {
    fn new(entries: &'a Entries) -> Self {
        let settlements = entries
            .charges
            .iter()
            .filter_map(|(number, (_, progress))| progress.settled.map(|s| (s.entry, *number)))
            .collect();
        EntryFacts {
            entries,
            settlements,
        }
    }

    fn of(&self, number: u64) -> Option<Facts> {
        let entries = self.entries;
        let tenant = entries.owners.get(&number).copied().unwrap_or(0);
        let facts = |of, made_by, seq, at_ms| Facts {
            tenant,
            of,
            made_by,
            seq,
            at_ms,
        };
        if let Some((charge, _)) = entries.charges.get(&number) {
            return Some(facts(
                EntryOf::Charge,
                number,
                charge.event_seq,
                charge.created_at_ms,
            ));
        }
        if let Some(refund) = entries.refunds.get(&number) {
            return Some(facts(
                EntryOf::Refund,
                number,
                refund.event_seq,
                refund.created_at_ms,
            ));
        }
        if let Some(transfer) = entries.transfers.get(&number) {
            return Some(facts(
                EntryOf::Transfer,
                number,
                transfer.event_seq,
                transfer.created_at_ms,
            ));
        }
        let charge = *self.settlements.get(&number)?;
        let settled = entries.charges.get(&charge)?.1.settled?;
        Some(facts(
            EntryOf::Settlement,
            charge,
            settled.event_seq,
            settled.at_ms,
        ))
    }

    /// Every entry's facts, in entry number order within each kind.
    fn all(&self) -> impl Iterator<Item = (u64, Facts)> + '_ {
        let entries = self.entries;
        entries
            .charges
            .keys()
            .chain(entries.refunds.keys())
            .chain(entries.transfers.keys())
            .chain(self.settlements.keys())
            .filter_map(|number| self.of(*number).map(|facts| (*number, facts)))
    }
}

/// A statement line's key, as violations name it.
fn line_key(tenant: u32, account: &str, seq: u64, leg: u8) -> String {
    format!("statement line (tenant {tenant}, {account}, seq {seq}, leg {leg})")
}

/// Invariant 8 on a store marked indexed; on one that is not, only `history_indexed: false`.
pub(super) fn verify_history(
    txn: &redb::ReadTransaction,
    seen: &Seen<'_>,
    report: &mut Report,
    violations: &mut Vec<String>,
) -> Result<(), StoreError> {
    let meta = txn.open_table(META)?;
    report.history_indexed = meta.get(META_HISTORY_INDEXED)?.is_some();
    if !report.history_indexed {
        return Ok(());
    }
    let facts = EntryFacts::new(seen.entries);
    // Marked stores have every table (each writable open creates them all); a missing one reads
    // as empty, so everything it should index is reported missing.
    let statements = StatementView {
        table: open_if_present(txn, STATEMENTS)?,
        memory: seen.statement_memory.clone(),
    };
    verify_postings_have_lines(txn, &statements, &facts, violations)?;
    verify_statements(txn, &statements, &facts, seen.accounts, report, violations)?;
    verify_accounts_without_lines(&statements, seen.accounts, violations)?;
    verify_tenant_entries(txn, seen.entries, violations)?;
    verify_charge_refunds(txn, seen.entries, violations)?;
    verify_accounts_by_creation(txn, seen.accounts, violations)?;
    let next_event_seq = read_counter_leniently(&meta, META_NEXT_EVENT_SEQ)?.unwrap_or(1);
    verify_timeline(txn, &facts, next_event_seq, violations)?;
    verify_replica_statements(txn, seen.mirror_accounts_moved, report, violations)
}

/// The line a posting of an entry with `facts` must have, but for `after` (the running sums
/// check that).
fn line_agrees(line: &StatementLine, entry: u64, facts: &Facts, posting: &Posting) -> bool {
    line.entry == entry
        && line.made_by == facts.made_by
        && line.entry_type == EntryType::of(facts.of, posting.kind)
        && line.side == posting.side
        && line.amount == posting.amount
        && line.created_at_ms == facts.at_ms
}

/// Each posting has its line where its entry puts it, saying what the posting and its entry
/// say. A posting of no entry is `entries.rs`'s to report.
fn verify_postings_have_lines(
    txn: &redb::ReadTransaction,
    statements: &StatementView,
    facts: &EntryFacts<'_>,
    violations: &mut Vec<String>,
) -> Result<(), StoreError> {
    // One entry's postings are next to each other: its facts are looked up once.
    let mut current: Option<(u64, Option<Facts>)> = None;
    for row in txn.open_table(POSTINGS)?.iter()? {
        let (key, value) = row?;
        let (entry, leg) = key.value();
        let posting: Posting = decode(value.value())?;
        let entry_facts = match current {
            Some((number, found)) if number == entry => found,
            _ => {
                let found = facts.of(entry);
                current = Some((entry, found));
                found
            }
        };
        let Some(f) = entry_facts else { continue };
        let account = posting.account.as_str();
        let line = statements.get(f.tenant, account, f.seq, leg)?;
        match line {
            None => violations.push(format!(
                "posting {entry}/{leg} on {account} of tenant {} has no {}",
                f.tenant,
                line_key(f.tenant, account, f.seq, leg)
            )),
            Some(line) if !line_agrees(&line, entry, &f, &posting) => violations.push(format!(
                "{} is {line:?}, its posting {entry}/{leg} is {posting:?} made by {:?} {} at {} ms",
                line_key(f.tenant, account, f.seq, leg),
                f.of,
                f.made_by,
                f.at_ms
            )),
            Some(_) => {}
        }
    }
    Ok(())
}

/// The account whose lines a statement walk is in: its running totals so far.
struct Running {
    tenant: u32,
    account: String,
    totals: Totals,
}

/// Walks every statement line once: each names a posting that belongs exactly there (no
/// orphans), each `after` is the line before's plus its posting (from zero: the running sum),
/// and each account's last line is its current totals.
fn verify_statements(
    txn: &redb::ReadTransaction,
    statements: &StatementView,
    facts: &EntryFacts<'_>,
    accounts: &AccountsByKey,
    report: &mut Report,
    violations: &mut Vec<String>,
) -> Result<(), StoreError> {
    let postings = txn.open_table(POSTINGS)?;
    let mut running: Option<Running> = None;
    statements.for_each(
        violations,
        |(tenant, account, seq, leg), line, violations| {
            report.statement_lines += 1;
            let posting: Option<Posting> = postings
                .get((line.entry, leg))?
                .map(|bytes| decode(bytes.value()))
                .transpose()?;
            let belongs_here = posting.is_some_and(|p| p.account.as_str() == account)
                && facts
                    .of(line.entry)
                    .is_some_and(|f| f.tenant == tenant && f.seq == seq);
            if !belongs_here {
                violations.push(format!(
                    "{} names entry {}, which has no posting of that leg, account, tenant and seq",
                    line_key(tenant, account, seq, leg),
                    line.entry
                ));
            }
            let next_account = running
                .as_ref()
                .is_none_or(|r| r.tenant != tenant || r.account != account);
            if next_account {
                if let Some(done) = running.take() {
                    account_ends(&done, accounts, violations);
                }
                running = Some(Running {
                    tenant,
                    account: account.to_owned(),
                    totals: Totals::default(),
                });
            }
            let Some(running) = running.as_mut() else {
                unreachable!("set above");
            };
            let mut expected = running.totals;
            let applied = expected.apply(&line_posting(&line, account)?);
            if applied.is_err() || expected != line.after {
                violations.push(format!(
                    "{}: after {:?}, but the lines before it and its {:?} of {} give {}",
                    line_key(tenant, account, seq, leg),
                    line.after,
                    line.entry_type,
                    line.amount.minor(),
                    match applied {
                        Ok(()) => format!("{expected:?}"),
                        Err(error) => format!("no totals ({error:?})"),
                    }
                ));
            }
            // Each line is checked against the one before it as stored: one damaged line is
            // reported where it is, not again at every later line of its account.
            running.totals = line.after;
            Ok(())
        },
    )?;
    if let Some(done) = running {
        account_ends(&done, accounts, violations);
    }
    Ok(())
}

/// The posting a line records, rebuilt from it (the kind follows from its type).
fn line_posting(line: &StatementLine, account: &str) -> Result<Posting, StoreError> {
    let account = crate::ledger::AccountId::parse(account).map_err(|_| StoreError::Corrupt {
        record: "statement line",
        detail: format!("invalid account id {account:?}"),
    })?;
    Ok(Posting::new(
        &account,
        line.side,
        line.amount,
        line.entry_type.posting_kind(),
    ))
}

/// An account's last line against its current totals.
fn account_ends(done: &Running, accounts: &AccountsByKey, violations: &mut Vec<String>) {
    let Running {
        tenant,
        account,
        totals,
    } = done;
    match accounts.get(&(*tenant, account.clone())) {
        None => violations.push(format!(
            "statement lines of account {account} of tenant {tenant}, which does not exist"
        )),
        Some(current) if Totals::of(current) != *totals => violations.push(format!(
            "account {account} of tenant {tenant}: its last statement line says {totals:?}, its totals are {:?}",
            Totals::of(current)
        )),
        Some(_) => {}
    }
}

/// An account with no statement line never moved: its totals are zero.
fn verify_accounts_without_lines(
    statements: &StatementView,
    accounts: &AccountsByKey,
    violations: &mut Vec<String>,
) -> Result<(), StoreError> {
    for ((tenant, id), account) in accounts {
        let totals = Totals::of(account);
        if totals == Totals::default() {
            continue;
        }
        let has_lines = statements.has_lines(*tenant, id.as_str())?;
        if !has_lines {
            violations.push(format!(
                "account {id} of tenant {tenant} has totals {totals:?} and no statement lines"
            ));
        }
    }
    Ok(())
}

/// `tenant_entries` holds exactly each charge, refund and transfer under (its tenant, its kind,
/// its event seq) → its number, in blocks that keep the rules of `history/blocks.rs`.
fn verify_tenant_entries(
    txn: &redb::ReadTransaction,
    entries: &Entries,
    violations: &mut Vec<String>,
) -> Result<(), StoreError> {
    let listed_rows = listed_rows(txn, violations)?;
    let tenant_of = |number: &u64| entries.owners.get(number).copied().unwrap_or(0);
    let listed = entries
        .charges
        .iter()
        .map(|(n, (c, _))| (ListedKind::Charge, *n, c.event_seq))
        .chain(
            entries
                .refunds
                .iter()
                .map(|(n, r)| (ListedKind::Refund, *n, r.event_seq)),
        )
        .chain(
            entries
                .transfers
                .iter()
                .map(|(n, t)| (ListedKind::Transfer, *n, t.event_seq)),
        );
    for (kind, number, seq) in listed {
        let tenant = tenant_of(&number);
        let found = listed_rows.get(&(tenant, kind as u8, seq)).copied();
        if found != Some(number) {
            violations.push(format!(
                "{kind:?} {number} of tenant {tenant} is not in tenant_entries at seq {seq} (found {found:?})"
            ));
        }
    }
    for (&(tenant, kind, seq), &number) in &listed_rows {
        let is_that_entry = tenant_of(&number) == tenant
            && match kind {
                k if k == ListedKind::Charge as u8 => entries
                    .charges
                    .get(&number)
                    .is_some_and(|(c, _)| c.event_seq == seq),
                k if k == ListedKind::Refund as u8 => entries
                    .refunds
                    .get(&number)
                    .is_some_and(|r| r.event_seq == seq),
                k if k == ListedKind::Transfer as u8 => entries
                    .transfers
                    .get(&number)
                    .is_some_and(|t| t.event_seq == seq),
                _ => false,
            };
        if !is_that_entry {
            violations.push(format!(
                "tenant_entries row (tenant {tenant}, kind {kind}, seq {seq}) names entry {number}, which is not that tenant's entry of that kind and seq"
            ));
        }
    }
    Ok(())
}

/// Every (tenant, kind, seq) → number the blocks of `tenant_entries` hold. A block that breaks
/// the rules (empty, out of order, keyed by another seq, overlapping the one before, too long)
/// is reported.
fn listed_rows(
    txn: &redb::ReadTransaction,
    violations: &mut Vec<String>,
) -> Result<BTreeMap<(u32, u8, u64), u64>, StoreError> {
    let mut rows = BTreeMap::new();
    let Some(table) = open_if_present(txn, TENANT_ENTRIES)? else {
        return Ok(rows);
    };
    let mut last: Option<(u32, u8, u64)> = None;
    for row in table.iter()? {
        let (key, value) = row?;
        let (tenant, kind, first) = key.value();
        let name = format!("tenant_entries block (tenant {tenant}, kind {kind}, seq {first})");
        let block = match read_listed_block(first, value.value()) {
            Ok(block) => block,
            Err(StoreError::Corrupt { detail, .. }) => {
                violations.push(format!("{name}: {detail}"));
                continue;
            }
            Err(other) => return Err(other),
        };
        if last.is_some_and(|last| last >= (tenant, kind, first)) {
            violations.push(format!("{name} overlaps the block before it"));
            continue;
        }
        if block.entries.len() > LISTED_BLOCK_ENTRIES_MAX {
            violations.push(format!(
                "{name} holds {} entries, over {LISTED_BLOCK_ENTRIES_MAX}",
                block.entries.len()
            ));
        }
        for &(seq, number) in &block.entries {
            rows.insert((tenant, kind, seq), number);
            last = Some((tenant, kind, seq));
        }
    }
    Ok(rows)
}

/// `charge_refunds` holds exactly each refund under (its charge, its event seq) → its number.
fn verify_charge_refunds(
    txn: &redb::ReadTransaction,
    entries: &Entries,
    violations: &mut Vec<String>,
) -> Result<(), StoreError> {
    let table = open_if_present(txn, CHARGE_REFUNDS)?;
    for (number, refund) in &entries.refunds {
        let key = (refund.charge_number, refund.event_seq);
        let found = match &table {
            Some(table) => table.get(key)?.map(|n| n.value()),
            None => None,
        };
        if found != Some(*number) {
            violations.push(format!(
                "refund {number} is not in charge_refunds under charge {} at seq {} (found {found:?})",
                key.0, key.1
            ));
        }
    }
    let Some(table) = table else { return Ok(()) };
    for row in table.iter()? {
        let (key, number) = row?;
        let (charge, seq) = key.value();
        let number = number.value();
        let is_that_refund = entries
            .refunds
            .get(&number)
            .is_some_and(|r| r.charge_number == charge && r.event_seq == seq);
        if !is_that_refund {
            violations.push(format!(
                "charge_refunds row (charge {charge}, seq {seq}) names refund {number}, which is not a refund of that charge and seq"
            ));
        }
    }
    Ok(())
}

/// `accounts_by_creation` holds exactly each account under (tenant, created at, id).
fn verify_accounts_by_creation(
    txn: &redb::ReadTransaction,
    accounts: &AccountsByKey,
    violations: &mut Vec<String>,
) -> Result<(), StoreError> {
    let table = open_if_present(txn, ACCOUNTS_BY_CREATION)?;
    for ((tenant, id), account) in accounts {
        let found = match &table {
            Some(table) => table
                .get((*tenant, account.created_at_ms, id.as_str()))?
                .is_some(),
            None => false,
        };
        if !found {
            violations.push(format!(
                "account {id} of tenant {tenant} is not in accounts_by_creation at {} ms",
                account.created_at_ms
            ));
        }
    }
    let Some(table) = table else { return Ok(()) };
    for row in table.iter()? {
        let (key, _) = row?;
        let (tenant, at_ms, id) = key.value();
        let created_then = accounts
            .get(&(tenant, id.to_owned()))
            .is_some_and(|a: &Account| a.created_at_ms == at_ms);
        if !created_then {
            violations.push(format!(
                "accounts_by_creation row (tenant {tenant}, {at_ms} ms, {id}) names no account created then"
            ));
        }
    }
    Ok(())
}

/// The timeline's keys and values both strictly increase and name events taken; every entry is
/// found by an `as_of` seek exactly from its time on: the last row at or before its time reaches
/// its seq, the last row before its time does not (with increasing values, no earlier row
/// does). Two seeks per entry.
fn verify_timeline(
    txn: &redb::ReadTransaction,
    facts: &EntryFacts<'_>,
    next_event_seq: u64,
    violations: &mut Vec<String>,
) -> Result<(), StoreError> {
    let Some(timeline) = open_if_present(txn, TIMELINE)? else {
        if facts.all().next().is_some() {
            violations.push("the store has entries and no timeline".to_owned());
        }
        return Ok(());
    };
    let mut last: Option<(u64, u64)> = None;
    for row in timeline.iter()? {
        let (ms, seq) = row?;
        let (ms, seq) = (ms.value(), seq.value());
        if let Some((last_ms, last_seq)) = last
            && (ms <= last_ms || seq <= last_seq)
        {
            violations.push(format!(
                "timeline row {ms} ms → seq {seq} follows {last_ms} ms → seq {last_seq}: out of order"
            ));
        }
        if seq >= next_event_seq {
            violations.push(format!(
                "timeline row {ms} ms → seq {seq} names an event not taken yet (next {next_event_seq})"
            ));
        }
        last = Some((ms, seq));
    }
    for (number, f) in facts.all() {
        let at_or_before = timeline.range(..=f.at_ms)?.next_back().transpose()?;
        let before = timeline.range(..f.at_ms)?.next_back().transpose()?;
        let at_or_before = at_or_before.map(|(k, v)| (k.value(), v.value()));
        let before = before.map(|(k, v)| (k.value(), v.value()));
        if at_or_before.is_none_or(|(_, seq)| seq < f.seq) {
            violations.push(format!(
                "entry {number} (seq {}, {} ms) is not on the timeline at its time: the last row at or before it is {at_or_before:?}",
                f.seq, f.at_ms
            ));
        }
        if let Some((ms, seq)) = before
            && seq >= f.seq
        {
            violations.push(format!(
                "entry {number} (seq {}, {} ms) is on the timeline before its time: row {ms} ms → seq {seq}",
                f.seq, f.at_ms
            ));
        }
    }
    Ok(())
}

/// A hub's mirrored statements, per (origin, account): each `after` is the line before's plus
/// its posting, from zero, and the last is the mirror account's totals. A mirror account that
/// mirrored entries moved must have lines, once its origin has any: a hub's mirror written
/// before mirrored statements existed has none for any account of that origin.
fn verify_replica_statements(
    txn: &redb::ReadTransaction,
    mirror_accounts_moved: &HashSet<(String, String)>,
    report: &mut Report,
    violations: &mut Vec<String>,
) -> Result<(), StoreError> {
    let Some(statements) = open_if_present(txn, REPLICA_STATEMENTS)? else {
        return Ok(());
    };
    let mirror_accounts = open_if_present(txn, REPLICA_ACCOUNTS)?;
    let mirror_totals = |origin: &str, id: &str| -> Result<Option<Totals>, StoreError> {
        let Some(table) = &mirror_accounts else {
            return Ok(None);
        };
        table
            .get((origin, id))?
            .map(|bytes| decode::<Account>(bytes.value()).map(|a| Totals::of(&a)))
            .transpose()
    };
    let mut with_lines: HashSet<(String, String)> = HashSet::new();
    let mut origins_with_lines: HashSet<String> = HashSet::new();
    // (origin, account) of the lines being walked, and the last line's totals.
    let mut running: Option<(String, String, Totals)> = None;
    let mut end = |done: (String, String, Totals), violations: &mut Vec<String>| {
        let (origin, id, totals) = done;
        match mirror_totals(&origin, &id)? {
            None => violations.push(format!(
                "mirrored statement lines of {origin}/{id}, which is not a mirror account"
            )),
            Some(current) if current != totals => violations.push(format!(
                "mirror {origin}/{id}: its last mirrored statement line says {totals:?}, its totals are {current:?}"
            )),
            Some(_) => {}
        }
        origins_with_lines.insert(origin.clone());
        with_lines.insert((origin, id));
        Ok::<_, StoreError>(())
    };
    for row in statements.iter()? {
        let (key, value) = row?;
        let (origin, account, seq, leg) = key.value();
        let line: StatementLine = decode(value.value())?;
        report.mirrored_statement_lines += 1;
        let same = running
            .as_ref()
            .is_some_and(|(o, a, _)| o == origin && a == account);
        if !same {
            if let Some(done) = running.take() {
                end(done, violations)?;
            }
            running = Some((origin.to_owned(), account.to_owned(), Totals::default()));
        }
        let Some((_, _, totals)) = running.as_mut() else {
            unreachable!("set above");
        };
        let mut expected = *totals;
        let applied = expected.apply(&line_posting(&line, account)?);
        if applied.is_err() || expected != line.after {
            violations.push(format!(
                "mirrored statement line ({origin}, {account}, seq {seq}, leg {leg}): after {:?}, but the lines before it and its {:?} of {} give {}",
                line.after,
                line.entry_type,
                line.amount.minor(),
                match applied {
                    Ok(()) => format!("{expected:?}"),
                    Err(error) => format!("no totals ({error:?})"),
                }
            ));
        }
        *totals = line.after;
    }
    if let Some(done) = running {
        end(done, violations)?;
    }
    let mut missing: Vec<&(String, String)> = mirror_accounts_moved
        .iter()
        .filter(|key| origins_with_lines.contains(&key.0) && !with_lines.contains(*key))
        .collect();
    missing.sort();
    for (origin, id) in missing {
        violations.push(format!(
            "mirror {origin}/{id} was moved by mirrored entries and has no mirrored statement lines"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
