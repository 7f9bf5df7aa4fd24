//! History: the lists (accounts, charges, refunds, transfers), an account's statement, and its
//! balance as of any moment, read from the indexes each batch writes with what they index
//! (`batch/history.rs`). Nothing here is ever deleted: outbox and idempotency retention touch
//! other tables.
//!
//! **Pages cost their length.** Every list is a range of one index under the caller's tenant,
//! walked from the cursor in the list's direction, `limit + 1` rows at most (the extra one answers
//! `has_more`). A list filtered by account walks that account's statement and skips the lines of
//! other kinds: its cost grows with the account's activity between two matches, never with the
//! store. `created_gte` and `created_lt` become seq bounds through the timeline (one seek each).
//!
//! **Positions.** Rows of a list are ordered by the seq of the event that created them (dense, in
//! commit order); a statement's by (seq, leg). Both map to one `u64` (`seq << 8 | leg` for a
//! statement) so one pager serves every list; seqs stay below 2^56 for as long as any store will
//! live (2^56 events at a million a second is two thousand years).

mod backfill;
pub(super) mod blocks;
pub(super) mod overlay;
mod read_back;

use std::ops::RangeInclusive;

use redb::{ReadOnlyTable, ReadTransaction, ReadableDatabase};

use super::codec::{Record, decode};
use super::entries::EntryTables;
use super::schema::{
    ACCOUNTS_BY_CREATION, CHARGE_REFUNDS, REPLICA_STATEMENTS, STATEMENTS, TENANT_ENTRIES, TIMELINE,
};
use super::{Store, StoreError};
use crate::ledger::{
    Account, AccountId, Charge, ChargeProgress, ChargeStatus, EntryKind, EntryType, Refund,
    StatementLine, TenantId, Totals, Transfer,
};

/// The history rows of a store from before history (a recovery step).
pub(super) fn backfill(txn: &redb::WriteTransaction) -> Result<u64, StoreError> {
    backfill::run(txn)
}

impl Record for StatementLine {
    const VERSION: u8 = 1;
    const NAME: &'static str = "statement line";
}

/// On open: the lines of the entries after `meta.statements_through_entry` back into memory.
pub(super) fn read_back(
    txn: &redb::WriteTransaction,
    statements: &overlay::StatementOverlay,
) -> Result<u64, StoreError> {
    read_back::run(txn, statements)
}

/// The lists of `tenant_entries`, by the byte stored in its key: the file format, never renumber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ListedKind {
    Charge = 1,
    Refund = 2,
    Transfer = 3,
}

/// The largest and the default page (API.md, "Lists").
pub const LIST_LIMIT_MAX: usize = 100;
pub const LIST_LIMIT_DEFAULT: usize = 10;

/// Newest first is every list's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    #[default]
    NewestFirst,
    OldestFirst,
}

/// Where a page starts: after an item, or before one, in the list's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursor {
    StartingAfter(String),
    EndingBefore(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// 1..=`LIST_LIMIT_MAX` (the parser checks).
    pub limit: usize,
    pub order: Order,
    pub cursor: Option<Cursor>,
}

impl Default for ListQuery {
    fn default() -> Self {
        ListQuery {
            limit: LIST_LIMIT_DEFAULT,
            order: Order::NewestFirst,
            cursor: None,
        }
    }
}

/// One page of a list, in the list's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub has_more: bool,
}

/// Filters of `GET /v1/charges`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChargeFilter {
    pub account: Option<AccountId>,
    pub status: Option<ChargeStatus>,
    pub created_gte_ms: Option<u64>,
    pub created_lt_ms: Option<u64>,
}

/// A moment of an account's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    /// After the last posting created at or before this time (ms since the epoch).
    Time(u64),
    /// After the last posting whose event seq is at most this.
    Seq(u64),
}

/// Why a list cannot be answered (the caller's mistakes, told apart from the store's).
#[derive(Debug)]
pub enum ListError {
    /// A cursor that names nothing in this list for this tenant (400): another tenant's id is
    /// refused the same way, so nothing leaks.
    UnknownCursor(String),
    /// A filter naming an id this tenant does not have (400).
    UnknownFilter {
        field: &'static str,
        id: String,
    },
    /// The account of a statement or balance does not exist for this tenant (404).
    UnknownAccount(AccountId),
    Store(StoreError),
}

impl<E: Into<StoreError>> From<E> for ListError {
    fn from(error: E) -> Self {
        ListError::Store(error.into())
    }
}

/// A posting as its statement shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementEntry {
    pub seq: u64,
    pub leg: u8,
    pub line: StatementLine,
}

impl StatementEntry {
    /// The posting's public id: `po_`, its event seq and its leg in hex. Not encrypted like
    /// entry ids: the seq is shown beside it (`event_seq`), so it tells nothing more.
    pub fn id(&self) -> String {
        posting_id(self.seq, self.leg)
    }

    /// The public id of the charge, refund or transfer that made the line.
    pub fn entry_id(&self, ids: &crate::ledger::ChargeIds) -> String {
        let kind = match self.line.entry_type {
            EntryType::Refund => EntryKind::Refund,
            EntryType::Transfer => EntryKind::Transfer,
            _ => EntryKind::Charge,
        };
        ids.entry_id(kind, self.line.made_by)
    }
}

impl From<&overlay::Line> for StatementEntry {
    fn from(line: &overlay::Line) -> StatementEntry {
        StatementEntry {
            seq: line.seq,
            leg: line.leg,
            line: line.line,
        }
    }
}

/// The lines of one account's blocks (`blocks.rs`) between two positions, in a walk's
/// direction: each block read decoded whole, its lines outside the range left out.
struct BlockLines<'t> {
    rows: Rows<'t, (u32, &'static str, u64, u8), &'static [u8]>,
    /// The current block's lines, in the walk's direction.
    block: std::vec::IntoIter<overlay::Line>,
    lo: (u64, u8),
    hi: (u64, u8),
    backwards: bool,
}

impl Iterator for BlockLines<'_> {
    type Item = Positioned;

    fn next(&mut self) -> Option<Positioned> {
        loop {
            for line in self.block.by_ref() {
                let at = line.position();
                if (self.lo..=self.hi).contains(&at) {
                    return Some(Ok((at, StatementEntry::from(&line))));
                }
            }
            let (key, value) = match self.rows.next()? {
                Ok(row) => row,
                Err(error) => return Some(Err(StoreError::from(error).into())),
            };
            let (_, _, seq, leg) = key.value();
            let mut lines = match blocks::read_block((seq, leg), value.value()) {
                Ok(block) => block.lines,
                Err(error) => return Some(Err(error.into())),
            };
            if self.backwards {
                lines.reverse();
            }
            self.block = lines.into_iter();
        }
    }
}

/// Two walks of one statement in the same direction, the table's and the overlay's, as one.
struct MergedLines<A: Iterator, B: Iterator> {
    table: std::iter::Peekable<A>,
    memory: std::iter::Peekable<B>,
    backwards: bool,
}

type Positioned = Result<((u64, u8), StatementEntry), ListError>;

impl<A: Iterator<Item = Positioned>, B: Iterator<Item = Positioned>> Iterator
    for MergedLines<A, B>
{
    type Item = Result<StatementEntry, ListError>;

    fn next(&mut self) -> Option<Self::Item> {
        let order = match (self.table.peek(), self.memory.peek()) {
            (None, None) => return None,
            (Some(Err(_)) | Some(Ok(_)), None) => std::cmp::Ordering::Less,
            (None, Some(_)) | (Some(Ok(_)), Some(Err(_))) => std::cmp::Ordering::Greater,
            (Some(Err(_)), Some(_)) => std::cmp::Ordering::Less,
            (Some(Ok((a, _))), Some(Ok((b, _)))) => {
                let order = a.cmp(b);
                if self.backwards {
                    order.reverse()
                } else {
                    order
                }
            }
        };
        let taken = match order {
            std::cmp::Ordering::Less => self.table.next(),
            std::cmp::Ordering::Greater => self.memory.next(),
            std::cmp::Ordering::Equal => {
                self.memory.next();
                self.table.next()
            }
        };
        taken.map(|item| item.map(|(_, entry)| entry))
    }
}

pub fn posting_id(seq: u64, leg: u8) -> String {
    format!("po_{seq:016x}{leg:02x}")
}

/// `(seq, leg)` of a posting id, if it is one.
pub fn parse_posting_id(id: &str) -> Option<(u64, u8)> {
    let hex = id.strip_prefix("po_")?;
    if hex.len() != 18 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let seq = u64::from_str_radix(&hex[..16], 16).ok()?;
    let leg = u8::from_str_radix(&hex[16..], 16).ok()?;
    Some((seq, leg))
}

/// The largest seq a statement position holds (see the module's note).
const LINE_SEQ_MAX: u64 = (1 << 56) - 1;

/// A statement position: see the module's note.
fn line_position(seq: u64, leg: u8) -> u64 {
    (seq << 8) | u64::from(leg)
}

fn line_of_position(position: u64) -> (u64, u8) {
    (position >> 8, (position & 0xff) as u8)
}

/// How a page walks its index: the inclusive range of positions (empty when `lo > hi`), from
/// which end, and whether the rows found come out in the list's order or must be turned round.
struct Walk {
    lo: u64,
    hi: u64,
    backwards: bool,
    turn_round: bool,
}

impl Walk {
    /// `span`: the list's positions after its filters; `cursor`: the cursor item's position
    /// (exclusive), with its kind.
    fn new(query: &ListQuery, span: RangeInclusive<u64>, cursor: Option<(bool, u64)>) -> Walk {
        let (mut lo, mut hi) = (*span.start(), *span.end());
        let newest_first = query.order == Order::NewestFirst;
        // `after`: the cursor is `starting_after`; the page lies beyond it in the list's order.
        let (backwards, turn_round) = match cursor {
            None => (newest_first, false),
            Some((after, at)) => {
                // Beyond the cursor in storage order: later positions.
                let later = after != newest_first;
                if later {
                    lo = lo.max(at.saturating_add(1));
                    if at == u64::MAX {
                        hi = 0;
                        lo = 1;
                    }
                } else {
                    match at.checked_sub(1) {
                        Some(below) => hi = hi.min(below),
                        None => (lo, hi) = (1, 0),
                    }
                }
                // Walk away from the cursor; an `ending_before` page is turned round into the
                // list's order afterwards.
                (!later, !after)
            }
        };
        Walk {
            lo,
            hi,
            backwards,
            turn_round,
        }
    }

    fn is_empty(&self) -> bool {
        self.lo > self.hi
    }

    /// The rows of `range` in the walk's direction.
    fn rows<'t, K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        range: redb::Range<'t, K, V>,
    ) -> Rows<'t, K, V> {
        if self.backwards {
            Box::new(range.rev())
        } else {
            Box::new(range)
        }
    }

    /// Takes up to `limit + 1` kept rows (`Ok(None)` rows are skipped) into a page.
    fn collect<T>(
        &self,
        limit: usize,
        rows: impl Iterator<Item = Result<Option<T>, ListError>>,
    ) -> Result<Page<T>, ListError> {
        let mut data = Vec::with_capacity(limit.min(LIST_LIMIT_MAX) + 1);
        for row in rows {
            if let Some(item) = row? {
                data.push(item);
                if data.len() > limit {
                    break;
                }
            }
        }
        let has_more = data.len() > limit;
        data.truncate(limit);
        if self.turn_round {
            data.reverse();
        }
        Ok(Page { data, has_more })
    }
}

/// A table's rows as a walk yields them.
type Rows<'t, K, V> = Box<
    dyn Iterator<
            Item = Result<(redb::AccessGuard<'t, K>, redb::AccessGuard<'t, V>), redb::StorageError>,
        > + 't,
>;

/// The tables a list reads, in one snapshot: the history indexes, and the entries they name
/// (read as `GET` of one entry reads them, `entries.rs`).
struct HistoryTables {
    statements: ReadOnlyTable<(u32, &'static str, u64, u8), &'static [u8]>,
    tenant_entries: ReadOnlyTable<(u32, u8, u64), &'static [u8]>,
    charge_refunds: ReadOnlyTable<(u64, u64), u64>,
    timeline: ReadOnlyTable<u64, u64>,
    entries: EntryTables,
}

impl HistoryTables {
    fn open(txn: &ReadTransaction) -> Result<HistoryTables, StoreError> {
        Ok(HistoryTables {
            statements: txn.open_table(STATEMENTS)?,
            tenant_entries: txn.open_table(TENANT_ENTRIES)?,
            charge_refunds: txn.open_table(CHARGE_REFUNDS)?,
            timeline: txn.open_table(TIMELINE)?,
            entries: EntryTables::open(txn)?,
        })
    }

    /// An entry an index names: missing is corruption.
    fn record<R: Record>(
        table: &ReadOnlyTable<u64, &'static [u8]>,
        number: u64,
        what: &'static str,
    ) -> Result<R, StoreError> {
        EntryTables::record(table, number)?.ok_or_else(|| StoreError::Corrupt {
            record: what,
            detail: format!("an index names missing entry {number}"),
        })
    }

    fn charge(&self, number: u64) -> Result<(Charge, ChargeProgress), StoreError> {
        let charge = self.entries.named_charge(number, "an index")?;
        let progress = self.entries.progress(&charge)?;
        Ok((charge, progress))
    }

    /// The highest event seq created before `ms` (0: none).
    fn last_seq_before(&self, ms: u64) -> Result<u64, StoreError> {
        Ok(self
            .timeline
            .range(..ms)?
            .next_back()
            .transpose()?
            .map_or(0, |(_, seq)| seq.value()))
    }

    /// The event seq of `tenant`'s entry of `kind` with public id `id`, for a cursor.
    fn entry_seq(
        &self,
        ids: &crate::ledger::ChargeIds,
        tenant: TenantId,
        kind: EntryKind,
        id: &str,
    ) -> Result<Option<(u64, u64)>, StoreError> {
        let Some(number) = ids.entry_number(kind, id) else {
            return Ok(None);
        };
        if self.entries.owner(number)? != tenant {
            return Ok(None);
        }
        let table = match kind {
            EntryKind::Charge => &self.entries.charges,
            EntryKind::Refund => &self.entries.refunds,
            EntryKind::Transfer => &self.entries.transfers,
        };
        let Some(bytes) = table.get(number)? else {
            return Ok(None);
        };
        let seq = match kind {
            EntryKind::Charge => decode::<Charge>(bytes.value())?.event_seq,
            EntryKind::Refund => decode::<Refund>(bytes.value())?.event_seq,
            EntryKind::Transfer => decode::<Transfer>(bytes.value())?.event_seq,
        };
        Ok(Some((number, seq)))
    }

    /// The cursor of a list of entries of `kind`, as a walk's cursor of seq positions (mapped
    /// to statement positions when the list walks a statement).
    fn entry_cursor(
        &self,
        ids: &crate::ledger::ChargeIds,
        tenant: TenantId,
        kind: EntryKind,
        query: &ListQuery,
        on_statement: bool,
    ) -> Result<Option<(bool, u64)>, ListError> {
        let Some(cursor) = &query.cursor else {
            return Ok(None);
        };
        let (after, id) = match cursor {
            Cursor::StartingAfter(id) => (true, id),
            Cursor::EndingBefore(id) => (false, id),
        };
        let (_, seq) = self
            .entry_seq(ids, tenant, kind, id)?
            .ok_or_else(|| ListError::UnknownCursor(id.clone()))?;
        if !on_statement {
            return Ok(Some((after, seq)));
        }
        // Every line of the cursor's entry lies on the cursor's side: its first leg when the
        // page lies below it, its last above.
        let later = after != (query.order == Order::NewestFirst);
        let leg = if later { u8::MAX } else { 0 };
        Ok(Some((after, line_position(seq, leg))))
    }

    /// The lines of `account`'s statement in `walk`, decoded: the table's and the overlay's
    /// (`overlay.rs`: lines not merged yet), merged in the walk's direction. The table's walk
    /// starts at the block holding the range's first line (one seek back, `blocks.rs`).
    fn lines<'t>(
        &'t self,
        overlay: &'t overlay::Lines,
        tenant: TenantId,
        account: &'t str,
        walk: &Walk,
    ) -> Result<impl Iterator<Item = Result<StatementEntry, ListError>> + 't, ListError> {
        let (lo, hi) = if walk.is_empty() {
            // Any empty range: the filter below drops what it finds.
            ((0, 0), (0, 0))
        } else {
            (line_of_position(walk.lo), line_of_position(walk.hi))
        };
        let empty = walk.is_empty();
        let start =
            blocks::block_at_or_before(&self.statements, tenant.0, account, lo)?.unwrap_or(lo);
        let range = self
            .statements
            .range((tenant.0, account, start.0, start.1)..=(tenant.0, account, hi.0, hi.1))?;
        let table = BlockLines {
            rows: walk.rows(range),
            block: Vec::new().into_iter(),
            lo,
            hi,
            backwards: walk.backwards,
        };
        let memory = overlay.of_account(tenant.0, account, lo, hi);
        let memory: Box<dyn Iterator<Item = _> + 't> = if walk.backwards {
            Box::new(memory.rev())
        } else {
            Box::new(memory)
        };
        let memory = memory.map(|line| Ok((line.position(), StatementEntry::from(line))));
        Ok(MergedLines {
            table: table.peekable(),
            memory: memory.peekable(),
            backwards: walk.backwards,
        }
        .filter(move |_| !empty))
    }

    /// The last line of `account` at or before `(seq, 255)`, from the table or the overlay.
    fn last_line_through(
        &self,
        overlay: &overlay::Lines,
        tenant: TenantId,
        account: &str,
        seq: u64,
    ) -> Result<Option<StatementEntry>, ListError> {
        let walk = Walk {
            lo: 0,
            hi: line_position(seq, u8::MAX),
            backwards: true,
            turn_round: false,
        };
        self.lines(overlay, tenant, account, &walk)?
            .next()
            .transpose()
    }

    /// Whether `account` has the line `(seq, leg)`.
    fn has_line(
        &self,
        overlay: &overlay::Lines,
        tenant: TenantId,
        account: &str,
        (seq, leg): (u64, u8),
    ) -> Result<bool, ListError> {
        let in_memory = overlay
            .of_account(tenant.0, account, (seq, leg), (seq, leg))
            .next()
            .is_some();
        Ok(
            in_memory
                || blocks::line_at(&self.statements, tenant.0, account, (seq, leg))?.is_some(),
        )
    }

    /// The seq span of the `created_gte` / `created_lt` filters.
    fn created_span(
        &self,
        gte_ms: Option<u64>,
        lt_ms: Option<u64>,
    ) -> Result<(u64, u64), StoreError> {
        let lo = match gte_ms {
            Some(ms) => self.last_seq_before(ms)?.saturating_add(1),
            None => 0,
        };
        let hi = match lt_ms {
            Some(ms) => self.last_seq_before(ms)?,
            None => u64::MAX >> 8,
        };
        Ok((lo, hi))
    }

    /// A page of `tenant`'s entries of `kind`, by the `tenant_entries` index.
    fn listed<T>(
        &self,
        tenant: TenantId,
        kind: ListedKind,
        walk: &Walk,
        limit: usize,
        mut item: impl FnMut(u64) -> Result<Option<T>, ListError>,
    ) -> Result<Page<T>, ListError> {
        if walk.is_empty() {
            return walk.collect(limit, std::iter::empty());
        }
        let k = kind as u8;
        // From the block holding the range's first seq (`blocks.rs`).
        let start = blocks::listed_block_at_or_before(&self.tenant_entries, tenant.0, k, walk.lo)?
            .unwrap_or(walk.lo);
        let range = self
            .tenant_entries
            .range((tenant.0, k, start)..=(tenant.0, k, walk.hi))?;
        let (lo, hi, backwards) = (walk.lo, walk.hi, walk.backwards);
        let numbers = walk.rows(range).flat_map(move |row| {
            let block = row
                .map_err(StoreError::from)
                .and_then(|(key, value)| blocks::read_listed_block(key.value().2, value.value()));
            let numbers: Vec<Result<u64, ListError>> = match block {
                Err(error) => vec![Err(error.into())],
                Ok(block) => {
                    let mut numbers: Vec<_> = block
                        .entries
                        .into_iter()
                        .filter(|(seq, _)| (lo..=hi).contains(seq))
                        .map(|(_, number)| Ok(number))
                        .collect();
                    if backwards {
                        numbers.reverse();
                    }
                    numbers
                }
            };
            numbers
        });
        walk.collect(limit, numbers.map(|number| item(number?)))
    }
}

impl Store {
    fn history(&self) -> Result<(ReadTransaction, HistoryTables), StoreError> {
        let txn = self.database().begin_read()?;
        let tables = HistoryTables::open(&txn)?;
        Ok((txn, tables))
    }

    /// `GET /v1/accounts`: `tenant`'s accounts in creation order.
    pub fn list_accounts(
        &self,
        tenant: TenantId,
        query: &ListQuery,
    ) -> Result<Page<Account>, ListError> {
        let cursor = match &query.cursor {
            None => None,
            Some(Cursor::StartingAfter(id) | Cursor::EndingBefore(id)) => {
                let account = AccountId::parse(id)
                    .ok()
                    .map(|parsed| self.account(tenant, &parsed))
                    .transpose()?
                    .flatten()
                    .ok_or_else(|| ListError::UnknownCursor(id.clone()))?;
                Some((
                    matches!(query.cursor, Some(Cursor::StartingAfter(_))),
                    (account.created_at_ms, account.id),
                ))
            }
        };
        let txn = self.database().begin_read()?;
        let index = txn.open_table(ACCOUNTS_BY_CREATION)?;
        let newest_first = query.order == Order::NewestFirst;
        let start = (tenant.0, 0u64, "");
        // Account ids are shorter than this string, which sorts after every valid one.
        let end = (tenant.0, u64::MAX, "\u{10ffff}");
        let (range, backwards, turn_round) = match &cursor {
            None => (index.range(start..=end)?, newest_first, false),
            Some((after, (ms, id))) => {
                let at = (tenant.0, *ms, id.as_str());
                let later = *after != newest_first;
                let range = if later {
                    index.range((
                        std::ops::Bound::Excluded(at),
                        std::ops::Bound::Included(end),
                    ))?
                } else {
                    index.range((
                        std::ops::Bound::Included(start),
                        std::ops::Bound::Excluded(at),
                    ))?
                };
                (range, !later, !after)
            }
        };
        let walk = Walk {
            lo: 0,
            hi: 0,
            backwards,
            turn_round,
        };
        let accounts = walk.rows(range).map(|row| {
            let (key, _) = row?;
            let (_, _, id) = key.value();
            let id = AccountId::parse(id).map_err(|_| StoreError::Corrupt {
                record: "account index",
                detail: format!("invalid account id {id:?}"),
            })?;
            let account = self
                .account(tenant, &id)?
                .ok_or_else(|| StoreError::Corrupt {
                    record: "account index",
                    detail: format!("names missing account {id}"),
                })?;
            Ok(Some(account))
        });
        walk.collect(query.limit, accounts)
    }

    /// `GET /v1/charges`: `tenant`'s charges, newest first by default, filtered.
    pub fn list_charges(
        &self,
        tenant: TenantId,
        filter: &ChargeFilter,
        query: &ListQuery,
    ) -> Result<Page<(Charge, ChargeProgress)>, ListError> {
        if let Some(account) = &filter.account {
            self.known_account(tenant, account, "account")?;
        }
        self.publication.read(|| {
            let (_txn, tables) = self.history()?;
            let ids = self.charge_ids();
            let (lo, hi) = tables.created_span(filter.created_gte_ms, filter.created_lt_ms)?;
            let wanted =
                |progress: &ChargeProgress| filter.status.is_none_or(|s| s == progress.status);
            let Some(account) = &filter.account else {
                let cursor = tables.entry_cursor(ids, tenant, EntryKind::Charge, query, false)?;
                let walk = Walk::new(query, lo..=hi, cursor);
                return tables.listed(tenant, ListedKind::Charge, &walk, query.limit, |number| {
                    let (charge, progress) = tables.charge(number)?;
                    Ok(wanted(&progress).then_some((charge, progress)))
                });
            };
            let cursor = tables.entry_cursor(ids, tenant, EntryKind::Charge, query, true)?;
            let span = line_position(lo, 0)..=line_position(hi, u8::MAX);
            let walk = Walk::new(query, span, cursor);
            let overlay = self.statement_overlay.read();
            let lines = tables.lines(&overlay, tenant, account.as_str(), &walk)?;
            walk.collect(
                query.limit,
                lines.map(|entry| {
                    let entry = entry?;
                    // A charge's one line on each of its accounts is its hold or its posting.
                    if !matches!(
                        entry.line.entry_type,
                        EntryType::Charge | EntryType::Authorization
                    ) {
                        return Ok(None);
                    }
                    let (charge, progress) = tables.charge(entry.line.made_by)?;
                    Ok(wanted(&progress).then_some((charge, progress)))
                }),
            )
        })
    }

    /// `GET /v1/refunds`: `tenant`'s refunds, or one charge's, each with its charge.
    pub fn list_refunds(
        &self,
        tenant: TenantId,
        charge: Option<&str>,
        query: &ListQuery,
    ) -> Result<Page<(Refund, Charge)>, ListError> {
        let (_txn, tables) = self.history()?;
        let ids = self.charge_ids();
        let cursor = tables.entry_cursor(ids, tenant, EntryKind::Refund, query, false)?;
        let walk = Walk::new(query, 0..=u64::MAX >> 8, cursor);
        let with_charge = |number: u64| -> Result<Option<(Refund, Charge)>, ListError> {
            let refund: Refund = HistoryTables::record(&tables.entries.refunds, number, "refund")?;
            let (charge, _) = tables.charge(refund.charge_number)?;
            Ok(Some((refund, charge)))
        };
        let Some(charge_id) = charge else {
            return tables.listed(tenant, ListedKind::Refund, &walk, query.limit, with_charge);
        };
        let (charge_number, _) = tables
            .entry_seq(ids, tenant, EntryKind::Charge, charge_id)?
            .ok_or_else(|| ListError::UnknownFilter {
                field: "charge",
                id: charge_id.to_owned(),
            })?;
        if walk.is_empty() {
            return walk.collect(query.limit, std::iter::empty());
        }
        let range = tables
            .charge_refunds
            .range((charge_number, walk.lo)..=(charge_number, walk.hi))?;
        walk.collect(
            query.limit,
            walk.rows(range).map(|row| {
                let (_, number) = row?;
                with_charge(number.value())
            }),
        )
    }

    /// `GET /v1/transfers`: `tenant`'s transfers, or those with a leg on one account.
    pub fn list_transfers(
        &self,
        tenant: TenantId,
        account: Option<&AccountId>,
        query: &ListQuery,
    ) -> Result<Page<Transfer>, ListError> {
        if let Some(account) = account {
            self.known_account(tenant, account, "account")?;
        }
        self.publication.read(|| {
            let (_txn, tables) = self.history()?;
            let ids = self.charge_ids();
            let transfer = |number: u64| -> Result<Transfer, ListError> {
                Ok(HistoryTables::record(
                    &tables.entries.transfers,
                    number,
                    "transfer",
                )?)
            };
            let Some(account) = account else {
                let cursor = tables.entry_cursor(ids, tenant, EntryKind::Transfer, query, false)?;
                let walk = Walk::new(query, 0..=u64::MAX >> 8, cursor);
                return tables.listed(tenant, ListedKind::Transfer, &walk, query.limit, |n| {
                    transfer(n).map(Some)
                });
            };
            let cursor = tables.entry_cursor(ids, tenant, EntryKind::Transfer, query, true)?;
            let walk = Walk::new(query, 0..=u64::MAX, cursor);
            let overlay = self.statement_overlay.read();
            let lines = tables.lines(&overlay, tenant, account.as_str(), &walk)?;
            // A transfer with several legs on the account has several lines, next to each other
            // (one seq): it is listed once.
            let mut last_seq = None;
            walk.collect(
                query.limit,
                lines.map(|entry| {
                    let entry = entry?;
                    if entry.line.entry_type != EntryType::Transfer || last_seq == Some(entry.seq) {
                        return Ok(None);
                    }
                    last_seq = Some(entry.seq);
                    transfer(entry.line.made_by).map(Some)
                }),
            )
        })
    }

    /// `GET /v1/accounts/{id}/postings`: the account's statement.
    pub fn statement(
        &self,
        tenant: TenantId,
        account: &AccountId,
        query: &ListQuery,
    ) -> Result<Page<StatementEntry>, ListError> {
        self.known_account(tenant, account, "")?;
        self.publication.read(|| {
            let (_txn, tables) = self.history()?;
            let overlay = self.statement_overlay.read();
            let cursor = match &query.cursor {
                None => None,
                Some(Cursor::StartingAfter(id) | Cursor::EndingBefore(id)) => {
                    let line = parse_posting_id(id).filter(|&(seq, _)| seq < 1 << 56);
                    let known = match line {
                        Some(line) => tables.has_line(&overlay, tenant, account.as_str(), line)?,
                        None => false,
                    };
                    let (seq, leg) = line
                        .filter(|_| known)
                        .ok_or_else(|| ListError::UnknownCursor(id.clone()))?;
                    Some((
                        matches!(query.cursor, Some(Cursor::StartingAfter(_))),
                        line_position(seq, leg),
                    ))
                }
            };
            let walk = Walk::new(query, 0..=u64::MAX, cursor);
            let lines = tables.lines(&overlay, tenant, account.as_str(), &walk)?;
            walk.collect(query.limit, lines.map(|line| line.map(Some)))
        })
    }

    /// `GET /v1/accounts/{id}/balance?as_of=`: the account with its totals as they were after
    /// the last posting at or before `at`, and the event seq they are as of (for a time, the
    /// last event created at or before it; 0: before any). Two seeks: the timeline (for a
    /// time), then the statement.
    pub fn balance_as_of(
        &self,
        tenant: TenantId,
        account: &AccountId,
        at: AsOf,
    ) -> Result<(Account, u64), ListError> {
        let current = self.known_account(tenant, account, "")?;
        self.publication.read(|| {
            let (_txn, tables) = self.history()?;
            let seq = match at {
                AsOf::Seq(seq) => seq,
                AsOf::Time(ms) => tables.last_seq_before(ms.saturating_add(1))?,
            };
            let overlay = self.statement_overlay.read();
            let last = tables.last_line_through(
                &overlay,
                tenant,
                account.as_str(),
                seq.min(LINE_SEQ_MAX),
            )?;
            let totals = last.map_or_else(Totals::default, |entry| entry.line.after);
            Ok((totals.on(&current), seq))
        })
    }

    /// A hub's statement of `account` as mirrored from `origin`, newest first unless asked.
    pub fn mirrored_statement(
        &self,
        origin: &str,
        account: &AccountId,
        query: &ListQuery,
    ) -> Result<Page<StatementEntry>, ListError> {
        let txn = self.database().begin_read()?;
        let statements = txn.open_table(REPLICA_STATEMENTS)?;
        let cursor = match &query.cursor {
            None => None,
            Some(Cursor::StartingAfter(id) | Cursor::EndingBefore(id)) => {
                let (seq, leg) = parse_posting_id(id)
                    .filter(|&(seq, leg)| {
                        seq < 1 << 56
                            && statements
                                .get((origin, account.as_str(), seq, leg))
                                .is_ok_and(|found| found.is_some())
                    })
                    .ok_or_else(|| ListError::UnknownCursor(id.clone()))?;
                Some((
                    matches!(query.cursor, Some(Cursor::StartingAfter(_))),
                    line_position(seq, leg),
                ))
            }
        };
        let walk = Walk::new(query, 0..=u64::MAX, cursor);
        if walk.is_empty() {
            return walk.collect(query.limit, std::iter::empty());
        }
        let (lo, hi) = (line_of_position(walk.lo), line_of_position(walk.hi));
        let range = statements.range(
            (origin, account.as_str(), lo.0, lo.1)..=(origin, account.as_str(), hi.0, hi.1),
        )?;
        walk.collect(
            query.limit,
            walk.rows(range).map(|row| {
                let (key, value) = row?;
                let (_, _, seq, leg) = key.value();
                Ok(Some(StatementEntry {
                    seq,
                    leg,
                    line: decode(value.value())?,
                }))
            }),
        )
    }

    /// `tenant`'s account `id`, or the list error for a missing one: 404 for the account of a
    /// path (`field` empty), 400 for a filter's.
    fn known_account(
        &self,
        tenant: TenantId,
        id: &AccountId,
        field: &'static str,
    ) -> Result<Account, ListError> {
        self.account(tenant, id)?.ok_or_else(|| {
            if field.is_empty() {
                ListError::UnknownAccount(id.clone())
            } else {
                ListError::UnknownFilter {
                    field,
                    id: id.as_str().to_owned(),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{id, open_accounts, stage_charge};
    use super::*;

    /// 21 charges from `a` to `b`, one to five per batch (so several per millisecond of the clock).
    fn store_with_charges() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("opens");
        open_accounts(&store, TenantId::DEFAULT);
        for batch in 0..8u64 {
            store
                .commit_batch(|tables| {
                    for i in 0..(1 + batch % 5) {
                        stage_charge(tables, TenantId::DEFAULT, 1 + batch * 10 + i)?;
                    }
                    Ok(())
                })
                .expect("charges");
        }
        (dir, store)
    }

    fn query(limit: usize, order: Order, cursor: Option<Cursor>) -> ListQuery {
        ListQuery {
            limit,
            order,
            cursor,
        }
    }

    /// Guards the pager's arithmetic: for every limit and both orders, walking forwards with
    /// `starting_after` and backwards with `ending_before` yields every posting exactly once, in
    /// the list's order, and `has_more` is false exactly on the last page.
    #[test]
    fn pages_in_both_directions_concatenate_to_the_full_statement() {
        let (_dir, store) = store_with_charges();
        let tenant = TenantId::DEFAULT;
        let a = id("a");
        let full = store
            .statement(tenant, &a, &query(100, Order::OldestFirst, None))
            .map_err(|e| format!("{e:?}"))
            .expect("statement");
        assert!(!full.has_more);
        let full: Vec<String> = full.data.iter().map(StatementEntry::id).collect();
        assert_eq!(full.len(), 1 + 2 + 3 + 4 + 5 + 1 + 2 + 3);
        assert_pages_walk_the_full_list(&full, |limit, order, cursor| {
            let page = store
                .statement(tenant, &a, &query(limit, order, cursor))
                .map_err(|e| format!("{e:?}"))
                .expect("page");
            let ids = page.data.iter().map(StatementEntry::id).collect();
            (ids, page.has_more)
        });
    }

    /// For every limit 1..=40 and both orders: pages walked forwards with `starting_after`, and
    /// backwards from the last item with `ending_before`, each concatenate to `full` (oldest
    /// first) in the list's order; a page holds `limit` ids at most. `page` answers a query with
    /// its ids and `has_more`.
    fn assert_pages_walk_the_full_list(
        full: &[String],
        page: impl Fn(usize, Order, Option<Cursor>) -> (Vec<String>, bool),
    ) {
        for order in [Order::OldestFirst, Order::NewestFirst] {
            let mut expected = full.to_vec();
            if order == Order::NewestFirst {
                expected.reverse();
            }
            for limit in 1..=40 {
                let mut seen: Vec<String> = Vec::new();
                let mut cursor = None;
                loop {
                    let (ids, has_more) = page(limit, order, cursor);
                    assert!(ids.len() <= limit);
                    seen.extend(ids);
                    if !has_more {
                        break;
                    }
                    cursor = Some(Cursor::StartingAfter(seen.last().expect("item").clone()));
                }
                assert_eq!(seen, expected, "forwards, limit {limit}, {order:?}");

                let last = expected.last().expect("item").clone();
                let mut before = vec![last.clone()];
                let mut cursor = Cursor::EndingBefore(last);
                loop {
                    let (ids, has_more) = page(limit, order, Some(cursor));
                    assert!(ids.len() <= limit);
                    before.splice(0..0, ids);
                    if !has_more {
                        break;
                    }
                    cursor = Cursor::EndingBefore(before[0].clone());
                }
                assert_eq!(before, expected, "backwards, limit {limit}, {order:?}");
            }
        }
    }

    /// Guards the `tenant_entries` blocks (`blocks.rs`): a commit of 70 charges (two blocks, 64
    /// and 6) among commits of one to five; for every limit and both orders, the pages walked
    /// with `starting_after` and back with `ending_before` are every charge once, in the order
    /// of their numbers.
    #[test]
    fn the_charges_list_pages_across_blocks_of_every_size() {
        let (_dir, store) = store_with_charges();
        let tenant = TenantId::DEFAULT;
        store
            .commit_batch(|tables| {
                for i in 0..70 {
                    stage_charge(tables, tenant, 500 + i)?;
                }
                Ok(())
            })
            .expect("charges");
        stage_one_charge(&store, 900);
        let ids = store.charge_ids();
        let id_of = |charge: &Charge| ids.entry_id(EntryKind::Charge, charge.number);
        let page = |limit, order, cursor| {
            store
                .list_charges(
                    tenant,
                    &ChargeFilter::default(),
                    &query(limit, order, cursor),
                )
                .map_err(|e| format!("{e:?}"))
                .expect("page")
        };
        let mut numbers: Vec<u64> = Vec::new();
        let mut cursor = None;
        loop {
            let got = page(7, Order::OldestFirst, cursor);
            numbers.extend(got.data.iter().map(|(c, _)| c.number));
            if !got.has_more {
                break;
            }
            cursor = Some(Cursor::StartingAfter(id_of(
                &got.data.last().expect("item").0,
            )));
        }
        assert_eq!(numbers.len(), 21 + 70 + 1);
        assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
        let full: Vec<String> = numbers
            .iter()
            .map(|n| ids.entry_id(EntryKind::Charge, *n))
            .collect();
        assert_pages_walk_the_full_list(&full, |limit, order, cursor| {
            let got = page(limit, order, cursor);
            (
                got.data.iter().map(|(c, _)| id_of(c)).collect(),
                got.has_more,
            )
        });
        super::super::check::assert_consistent(&store);
    }

    fn stage_one_charge(store: &Store, amount: u64) {
        store
            .commit_batch(|tables| stage_charge(tables, TenantId::DEFAULT, amount).map(|_| ()))
            .expect("charge");
    }

    /// Each line's totals are the balance as of its seq, and before the first posting they are
    /// zero; the charges list filtered by account walks the statement and finds each charge once.
    #[test]
    fn as_of_a_seq_is_the_line_at_or_before_it_and_filters_find_each_charge_once() {
        let (_dir, store) = store_with_charges();
        let tenant = TenantId::DEFAULT;
        let b = id("b");
        let lines = store
            .statement(tenant, &b, &query(100, Order::OldestFirst, None))
            .map_err(|e| format!("{e:?}"))
            .expect("statement")
            .data;
        let (before, _) = store
            .balance_as_of(tenant, &b, AsOf::Seq(lines[0].seq - 1))
            .map_err(|e| format!("{e:?}"))
            .expect("balance");
        assert_eq!(before.credits_posted, 0);
        let mut running = 0;
        for line in &lines {
            running += line.line.amount.minor();
            assert_eq!(line.line.after.credits_posted, running);
            let (then, seq) = store
                .balance_as_of(tenant, &b, AsOf::Seq(line.seq))
                .map_err(|e| format!("{e:?}"))
                .expect("balance");
            assert_eq!((then.credits_posted, seq), (running, line.seq));
        }
        let now = store.account(tenant, &b).expect("read").expect("b");
        assert_eq!(now.credits_posted, running);

        let filter = ChargeFilter {
            account: Some(b.clone()),
            ..ChargeFilter::default()
        };
        let charges = store
            .list_charges(tenant, &filter, &query(100, Order::NewestFirst, None))
            .map_err(|e| format!("{e:?}"))
            .expect("charges");
        assert_eq!(charges.data.len(), lines.len());
        let unfiltered = store
            .list_charges(
                tenant,
                &ChargeFilter::default(),
                &query(100, Order::NewestFirst, None),
            )
            .map_err(|e| format!("{e:?}"))
            .expect("charges");
        assert_eq!(charges.data, unfiltered.data);
        assert_eq!(charges.data[0].0.event_seq, lines.last().expect("line").seq);
    }

    /// Guards the statement overlay (`overlay.rs`): with the small marks, lines are merged a
    /// slice per commit, so a statement is part table, part memory, with lines in both after a
    /// restart (worked out again from the postings); every page still shows each line once, and
    /// the final checkpoint leaves nothing in memory and the mark at the last entry.
    #[test]
    fn statements_split_between_table_and_memory_read_as_one() {
        statements_survive_a_crash_image(super::super::marks::Marks::SMALL, false);
    }

    /// The merges are outside the journal (`Derived`): with no checkpoint after them, the crash
    /// image's table holds none of them and the mark has not moved, so the open works every line
    /// out again from the postings.
    #[test]
    fn statement_merges_without_a_checkpoint_are_worked_out_again_after_a_crash() {
        statements_survive_a_crash_image(
            super::super::marks::Marks {
                journal_checkpoint_commits: 1_000,
                ..super::super::marks::Marks::SMALL
            },
            true,
        );
    }

    /// 40 charges from "a" to "b" under `marks`, a crash image, an open: the statement reads as
    /// before. `all_worked_out`: no checkpoint came after the first merge, so the open must work
    /// out every line again (both legs of all 40).
    fn statements_survive_a_crash_image(marks: super::super::marks::Marks, all_worked_out: bool) {
        use super::super::test_support::crash_image;
        let dir = tempfile::tempdir().expect("temp dir");
        let mut store = Store::open(&dir.path().join("a")).expect("opens");
        store.set_marks(marks);
        open_accounts(&store, TenantId::DEFAULT);
        for amount in 1..=40 {
            store
                .commit_batch(|tables| stage_charge(tables, TenantId::DEFAULT, amount).map(|_| ()))
                .expect("charge");
        }
        let all = |store: &Store| -> Vec<(String, u64)> {
            store
                .statement(
                    TenantId::DEFAULT,
                    &id("b"),
                    &query(100, Order::OldestFirst, None),
                )
                .map_err(|e| format!("{e:?}"))
                .expect("statement")
                .data
                .iter()
                .map(|entry| (entry.id(), entry.line.after.credits_posted))
                .collect()
        };
        let expected: Vec<u64> = (1..=40u64)
            .scan(0, |sum, a| {
                *sum += a;
                Some(*sum)
            })
            .collect();
        let before = all(&store);
        assert_eq!(before.iter().map(|l| l.1).collect::<Vec<_>>(), expected);
        assert!(
            store.marks_crossed().statement_merges > 0,
            "slices were merged"
        );
        assert!(
            store.statement_overlay.len() > 0,
            "and some lines wait in memory"
        );

        let image = dir.path().join("b");
        crash_image(store, &image);
        let reopened = Store::open(&image).expect("reopens");
        assert_eq!(
            all(&reopened),
            before,
            "worked out again on open, merged or not"
        );
        if all_worked_out {
            assert_eq!(reopened.statement_overlay.len(), 80);
        }
        super::super::check::assert_consistent(&reopened);
        reopened.checkpoint().expect("final checkpoint");
        assert_eq!(reopened.statement_overlay.len(), 0);
        assert_eq!(all(&reopened), before);
        let txn = reopened.database().begin_read().expect("read");
        let meta = txn.open_table(super::super::schema::META).expect("meta");
        let read = |name| super::super::schema::read_counter(&meta, name).expect("counter");
        assert_eq!(
            read(super::super::schema::META_STATEMENTS_THROUGH_ENTRY),
            read(super::super::schema::META_NEXT_ENTRY_NUMBER).map(|next| next - 1),
            "the mark is the last entry once all merged"
        );
    }

    /// A cursor another tenant owns, or that names nothing, is refused, never used.
    #[test]
    fn foreign_and_unknown_cursors_are_refused() {
        let (_dir, store) = store_with_charges();
        let other = TenantId(7);
        open_accounts(&store, other);
        let mine = store
            .statement(
                TenantId::DEFAULT,
                &id("a"),
                &query(1, Order::NewestFirst, None),
            )
            .map_err(|e| format!("{e:?}"))
            .expect("statement")
            .data[0]
            .id();
        for cursor in [mine.clone(), "po_zz".into(), posting_id(1 << 60, 0)] {
            let refused = store.statement(
                other,
                &id("a"),
                &query(
                    10,
                    Order::NewestFirst,
                    Some(Cursor::StartingAfter(cursor.clone())),
                ),
            );
            assert!(
                matches!(refused, Err(ListError::UnknownCursor(ref c)) if *c == cursor),
                "{cursor}: {refused:?}"
            );
        }
    }
}
