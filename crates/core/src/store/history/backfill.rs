//! The history rows of a store written before history existed: one pass over its postings in
//! entry order, at the first open by a build with history (a recovery step). A store made by
//! such a build is marked at its first open, with nothing to index.
//!
//! Each entry's kind, seq and time come from its record: a charge's, a refund's or a transfer's
//! own, and a settlement's from the progress row of the authorization it ended (the only place
//! its entry number is kept). Postings with no such record are corruption: the open stops.
//!
//! The timeline gets every event the outbox still holds (an account opened, too), merged in seq
//! order with the entries, as the writer notes every event it appends: `as_of=` a moment then
//! answers with the same event seq on an indexed store as on one the writer indexed. Events
//! retention deleted are only on it through their entries.

use std::collections::HashMap;
use std::iter::Peekable;

use redb::{ReadableTable, WriteTransaction};

use super::ListedKind;
use super::blocks::{ListedBlock, block_row};
use super::overlay::Line;
use crate::ledger::{
    AccountId, Charge, ChargeProgress, EntryOf, EntryType, Posting, Refund, StatementLine, Totals,
    Transfer,
};
use crate::store::StoreError;
use crate::store::codec::{decode, encode};
use crate::store::records::EventRecord;
use crate::store::schema::{
    ACCOUNTS, ACCOUNTS_BY_CREATION, CHARGE_PROGRESS, CHARGE_REFUNDS, CHARGE_TENANTS, CHARGES, META,
    META_HISTORY_INDEXED, OUTBOX, POSTINGS, REFUNDS, STATEMENTS, TENANT_ENTRIES, TIMELINE,
    TRANSFERS,
};
use crate::store::schema::{META_NEXT_ENTRY_NUMBER, META_STATEMENTS_THROUGH_ENTRY};
use crate::store::schema::{read_counter, write_counter};

/// What made an entry, found from its record.
struct EntryFacts {
    of: EntryOf,
    made_by: u64,
    seq: u64,
    at_ms: u64,
}

/// Writes every history row the store lacks, unless it is marked indexed; marks it. Returns the
/// postings indexed.
/// An entry in its tenant's list: a block of one (`blocks.rs`), as a store indexed once, in entry
/// order, has them.
fn list(
    table: &mut redb::Table<'_, (u32, u8, u64), &'static [u8]>,
    tenant: u32,
    kind: ListedKind,
    seq: u64,
    number: u64,
) -> Result<(), StoreError> {
    let block = ListedBlock {
        entries: vec![(seq, number)],
    };
    table.insert((tenant, kind as u8, seq), encode(&block).as_slice())?;
    Ok(())
}

pub(in crate::store) fn run(txn: &WriteTransaction) -> Result<u64, StoreError> {
    if txn.open_table(META)?.get(META_HISTORY_INDEXED)?.is_some() {
        return Ok(0);
    }
    let settlements = settlements(txn)?;
    let charges = txn.open_table(CHARGES)?;
    let refunds = txn.open_table(REFUNDS)?;
    let transfers = txn.open_table(TRANSFERS)?;
    let owners = txn.open_table(CHARGE_TENANTS)?;
    let postings = txn.open_table(POSTINGS)?;
    let mut statements = txn.open_table(STATEMENTS)?;
    let mut tenant_entries = txn.open_table(TENANT_ENTRIES)?;
    let mut charge_refunds = txn.open_table(CHARGE_REFUNDS)?;
    let mut timeline = txn.open_table(TIMELINE)?;
    let outbox = txn.open_table(OUTBOX)?;
    let mut events = outbox.iter()?.peekable();
    let mut totals: HashMap<(u32, AccountId), Totals> = HashMap::new();
    // The timeline's last (ms, seq) so far: no row goes below either.
    let mut noted = (0u64, 0u64);
    let mut indexed = 0u64;
    let mut current: Option<(u64, EntryFacts, u32)> = None;
    for row in postings.iter()? {
        let (key, value) = row?;
        let (entry, leg) = key.value();
        let posting: Posting = decode(value.value())?;
        if current
            .as_ref()
            .is_none_or(|(number, _, _)| *number != entry)
        {
            let tenant = owners.get(entry)?.map_or(0, |t| t.value());
            let facts = if let Some(bytes) = charges.get(entry)? {
                let charge: Charge = decode(bytes.value())?;
                list(
                    &mut tenant_entries,
                    tenant,
                    ListedKind::Charge,
                    charge.event_seq,
                    entry,
                )?;
                EntryFacts {
                    of: EntryOf::Charge,
                    made_by: entry,
                    seq: charge.event_seq,
                    at_ms: charge.created_at_ms,
                }
            } else if let Some(bytes) = refunds.get(entry)? {
                let refund: Refund = decode(bytes.value())?;
                list(
                    &mut tenant_entries,
                    tenant,
                    ListedKind::Refund,
                    refund.event_seq,
                    entry,
                )?;
                charge_refunds.insert((refund.charge_number, refund.event_seq), entry)?;
                EntryFacts {
                    of: EntryOf::Refund,
                    made_by: entry,
                    seq: refund.event_seq,
                    at_ms: refund.created_at_ms,
                }
            } else if let Some(bytes) = transfers.get(entry)? {
                let transfer: Transfer = decode(bytes.value())?;
                list(
                    &mut tenant_entries,
                    tenant,
                    ListedKind::Transfer,
                    transfer.event_seq,
                    entry,
                )?;
                EntryFacts {
                    of: EntryOf::Transfer,
                    made_by: entry,
                    seq: transfer.event_seq,
                    at_ms: transfer.created_at_ms,
                }
            } else if let Some(&(charge, seq, at_ms)) = settlements.get(&entry) {
                EntryFacts {
                    of: EntryOf::Settlement,
                    made_by: charge,
                    seq,
                    at_ms,
                }
            } else {
                return Err(StoreError::Corrupt {
                    record: "posting",
                    detail: format!("entry {entry} has postings but no record"),
                });
            };
            let before = facts.seq.saturating_sub(1);
            note_events(&mut events, before, &mut noted, &mut timeline)?;
            noted = (noted.0.max(facts.at_ms), facts.seq);
            timeline.insert(noted.0, facts.seq)?;
            current = Some((entry, facts, tenant));
        }
        let Some((_, facts, tenant)) = current.as_ref() else {
            unreachable!("set above for every entry");
        };
        let account_totals = totals
            .entry((*tenant, posting.account.clone()))
            .or_default();
        account_totals
            .apply(&posting)
            .map_err(|error| StoreError::Corrupt {
                record: "posting",
                detail: format!("entry {entry} on {}: {error:?}", posting.account),
            })?;
        let line = StatementLine {
            entry,
            made_by: facts.made_by,
            entry_type: EntryType::of(facts.of, posting.kind),
            side: posting.side,
            amount: posting.amount,
            after: *account_totals,
            created_at_ms: facts.at_ms,
        };
        // A block of one line: a store indexed once, at its first open, in entry order.
        let line = Line {
            seq: facts.seq,
            leg,
            line,
        };
        if let Some(((seq, leg), bytes)) = block_row(std::iter::once(&line)) {
            statements.insert(
                (*tenant, posting.account.as_str(), seq, leg),
                bytes.as_slice(),
            )?;
        }
        indexed += 1;
    }
    note_events(&mut events, u64::MAX, &mut noted, &mut timeline)?;
    let accounts = txn.open_table(ACCOUNTS)?;
    let mut by_creation = txn.open_table(ACCOUNTS_BY_CREATION)?;
    for row in accounts.iter()? {
        let (key, value) = row?;
        let (tenant, id) = key.value();
        let account: crate::ledger::Account = decode(value.value())?;
        by_creation.insert((tenant, account.created_at_ms, id), ())?;
    }
    let mut meta = txn.open_table(META)?;
    meta.insert(META_HISTORY_INDEXED, [1u8].as_slice())?;
    // Every line written here is in `statements` already; none waits in memory.
    let next_entry = read_counter(&meta, META_NEXT_ENTRY_NUMBER)?.unwrap_or(1);
    write_counter(&mut meta, META_STATEMENTS_THROUGH_ENTRY, next_entry - 1)?;
    if indexed > 0 {
        tracing::info!(
            postings = indexed,
            "history indexed for a store from before history"
        );
    }
    Ok(indexed)
}

/// Notes the held events up to seq `through` on the timeline, each at its time or at the last
/// time noted if that is later (as the writer's floor does), so keys and values both only grow.
/// `noted`: (the last time, the last seq) on the timeline; an event at or below that seq (an
/// entry's own, noted with its entry) is skipped.
fn note_events(
    events: &mut Peekable<redb::Range<'_, u64, &'static [u8]>>,
    through: u64,
    noted: &mut (u64, u64),
    timeline: &mut redb::Table<'_, u64, u64>,
) -> Result<(), StoreError> {
    while let Some(row) =
        events.next_if(|row| row.as_ref().map_or(true, |(seq, _)| seq.value() <= through))
    {
        let (seq, value) = row?;
        let seq = seq.value();
        if seq <= noted.1 {
            continue;
        }
        let event: EventRecord = decode(value.value())?;
        noted.0 = noted.0.max(event.created_at_ms);
        noted.1 = seq;
        timeline.insert(noted.0, seq)?;
    }
    Ok(())
}

/// Settlement entry → (the authorization's charge number, its event seq, its time).
fn settlements(txn: &WriteTransaction) -> Result<HashMap<u64, (u64, u64, u64)>, StoreError> {
    let progress = txn.open_table(CHARGE_PROGRESS)?;
    let mut found = HashMap::new();
    for row in progress.iter()? {
        let (number, value) = row?;
        let progress: ChargeProgress = decode(value.value())?;
        if let Some(settled) = progress.settled {
            found.insert(
                settled.entry,
                (number.value(), settled.event_seq, settled.at_ms),
            );
        }
    }
    Ok(found)
}
