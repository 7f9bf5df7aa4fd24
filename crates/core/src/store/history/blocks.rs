//! How `statements` stores an account's lines: in blocks, each a run of up to
//! `STATEMENT_BLOCK_LINES_MAX` consecutive lines of one account, keyed by its first line's
//! `(tenant, account, seq, leg)`.
//!
//! Why blocks: the statement overlay (`overlay.rs`) merges an account's oldest lines together,
//! so one insert can carry all of them. With a row per line, the merges' B-tree inserts (two per
//! charge, each a descent and a leaf rewrite) were a tenth of the writer thread under the uniform
//! load; a block per account run cut the inserts by the lines each account had waiting (~6 at
//! 10,000 accounts), and the rate rose ~11 % (BENCHMARKS.md, sitting 11).
//!
//! The rules every reader relies on, which `onceledger check` verifies:
//! - a block is never empty, its lines are in statement order, and its key is its first line's;
//! - an account's blocks do not overlap: every line of one comes before the next one's key;
//! - a block is written once and never changed (merges only append new blocks after the last).
//!
//! So the line at or before a position is in the last block keyed at or before it: one seek
//! back, then the blocks after it in key order.

use redb::ReadableTable;

use super::overlay::Line;
use crate::store::StoreError;
use crate::store::codec::{Record, decode, encode};

/// One row of `statements`: lines of one account, in order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(in crate::store) struct StatementBlock {
    pub lines: Vec<Line>,
}

impl Record for StatementBlock {
    const VERSION: u8 = 1;
    const NAME: &'static str = "statement block";
}

/// The key of the row that holds `lines` (their first), and its bytes; `None` for no lines.
pub(in crate::store) fn block_row<'a>(
    lines: impl Iterator<Item = &'a Line>,
) -> Option<((u64, u8), Vec<u8>)> {
    let block = StatementBlock {
        lines: lines.cloned().collect(),
    };
    let first = block.lines.first()?.position();
    Some((first, encode(&block)))
}

/// The rules every block keeps (see the module's note), on its rows' positions in order: not
/// empty, the first at `key`, each after the one before. `describe` names a position in the
/// message.
fn check_rules<P: PartialOrd + Copy>(
    record: &'static str,
    key: P,
    mut positions: impl Iterator<Item = P>,
    describe: impl Fn(P) -> String,
) -> Result<(), StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt { record, detail };
    let at = describe(key);
    let Some(first) = positions.next() else {
        return Err(corrupt(format!("the block at {at} is empty")));
    };
    if first != key {
        return Err(corrupt(format!(
            "the block at {at} starts at {}",
            describe(first)
        )));
    }
    let mut last = first;
    for position in positions {
        if position <= last {
            return Err(corrupt(format!("the block at {at} is out of order")));
        }
        last = position;
    }
    Ok(())
}

/// A block as read, with its rules checked: `Corrupt` if it breaks one, since a reader would
/// otherwise skip or repeat lines without a word.
pub(in crate::store) fn read_block(
    key: (u64, u8),
    bytes: &[u8],
) -> Result<StatementBlock, StoreError> {
    let block: StatementBlock = decode(bytes)?;
    let positions = block.lines.iter().map(Line::position);
    check_rules(StatementBlock::NAME, key, positions, |p| format!("{p:?}"))?;
    Ok(block)
}

/// A row of `statements` as found: its key's (seq, leg) and its bytes.
type FoundRow<'t> = ((u64, u8), redb::AccessGuard<'t, &'static [u8]>);

/// The last row of `account` keyed at or before `position`.
fn last_row_through<'t, T>(
    table: &'t T,
    tenant: u32,
    account: &str,
    position: (u64, u8),
) -> Result<Option<FoundRow<'t>>, StoreError>
where
    T: ReadableTable<(u32, &'static str, u64, u8), &'static [u8]>,
{
    let found = table
        .range((tenant, account, 0, 0)..=(tenant, account, position.0, position.1))?
        .next_back()
        .transpose()?;
    Ok(found.map(|(key, bytes)| {
        let (_, _, seq, leg) = key.value();
        ((seq, leg), bytes)
    }))
}

/// The last block of `account` keyed at or before `position`, read: the one that holds the line
/// at `position` if any does.
fn last_block_through<T>(
    table: &T,
    tenant: u32,
    account: &str,
    position: (u64, u8),
) -> Result<Option<StatementBlock>, StoreError>
where
    T: ReadableTable<(u32, &'static str, u64, u8), &'static [u8]>,
{
    last_row_through(table, tenant, account, position)?
        .map(|(key, bytes)| read_block(key, bytes.value()))
        .transpose()
}

/// The key (seq, leg) of the block of `account` that holds the line at `position` if there is
/// one: the last block keyed at or before it.
pub(in crate::store) fn block_at_or_before<T>(
    table: &T,
    tenant: u32,
    account: &str,
    position: (u64, u8),
) -> Result<Option<(u64, u8)>, StoreError>
where
    T: ReadableTable<(u32, &'static str, u64, u8), &'static [u8]>,
{
    Ok(last_row_through(table, tenant, account, position)?.map(|(key, _)| key))
}

/// The line of `account` at `position`, if the table holds it.
pub(in crate::store) fn line_at<T>(
    table: &T,
    tenant: u32,
    account: &str,
    position: (u64, u8),
) -> Result<Option<Line>, StoreError>
where
    T: ReadableTable<(u32, &'static str, u64, u8), &'static [u8]>,
{
    let block = last_block_through(table, tenant, account, position)?;
    Ok(block.and_then(|block| {
        block
            .lines
            .into_iter()
            .find(|line| line.position() == position)
    }))
}

/// The position of the last line of `account` the table holds.
pub(in crate::store) fn last_position<T>(
    table: &T,
    tenant: u32,
    account: &str,
) -> Result<Option<(u64, u8)>, StoreError>
where
    T: ReadableTable<(u32, &'static str, u64, u8), &'static [u8]>,
{
    let block = last_block_through(table, tenant, account, (u64::MAX, u8::MAX))?;
    Ok(block.and_then(|block| block.lines.last().map(Line::position)))
}

/// One row of `tenant_entries`: a tenant's entries of one kind that one commit made, as
/// `(event seq, entry number)` in seq order, keyed `(tenant, kind, first seq)`. The same rules
/// as a statement block (see the module's note). Why: one insert per commit instead of one per
/// charge; that insert, a descent to the right edge of a large B-tree, was ~3 % of the writer
/// thread under the uniform load.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(in crate::store) struct ListedBlock {
    pub entries: Vec<(u64, u64)>,
}

impl Record for ListedBlock {
    const VERSION: u8 = 1;
    const NAME: &'static str = "tenant entries block";
}

/// A `tenant_entries` block as read, with its rules checked: `Corrupt` if it breaks one.
pub(in crate::store) fn read_listed_block(
    key_seq: u64,
    bytes: &[u8],
) -> Result<ListedBlock, StoreError> {
    let block: ListedBlock = decode(bytes)?;
    let seqs = block.entries.iter().map(|&(seq, _)| seq);
    check_rules(ListedBlock::NAME, key_seq, seqs, |seq| format!("seq {seq}"))?;
    Ok(block)
}

/// The first seq of the block of `tenant`'s entries of `kind` that holds `seq` if there is one:
/// the last block keyed at or before it.
pub(in crate::store) fn listed_block_at_or_before<T>(
    table: &T,
    tenant: u32,
    kind: u8,
    seq: u64,
) -> Result<Option<u64>, StoreError>
where
    T: ReadableTable<(u32, u8, u64), &'static [u8]>,
{
    let found = table
        .range((tenant, kind, 0)..=(tenant, kind, seq))?
        .next_back()
        .transpose()?;
    Ok(found.map(|(key, _)| key.value().2))
}
