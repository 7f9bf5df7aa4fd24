//! On open: the statement lines of the entries after `meta.statements_through_entry`, worked out
//! again from their postings into the overlay (`overlay.rs`). No table keeps them apart: the
//! postings, the entry records and the accounts already say everything a line holds, so a commit
//! writes a line only to memory, and a crash loses nothing.
//!
//! The account totals before the first of those entries are the accounts' current totals (the
//! account recovery step ran before this one) with those entries' postings taken back out; then
//! each posting is applied again, in order, and its line noted.
//!
//! Lines the table holds already are left out (the overlay's invariant: each line in one place).
//! The table may hold lines past the mark: merges after the mark's checkpoint that a later
//! durable commit kept (the mark moves only when a checkpoint finds the overlay's oldest entry).

use std::collections::HashMap;

use redb::{ReadableTable, WriteTransaction};

use super::blocks::last_position;
use super::overlay::{Line, StatementOverlay};
use crate::ledger::{
    Account, AccountId, Charge, ChargeProgress, EntryOf, EntryType, Posting, Refund, StatementLine,
    Totals, Transfer,
};
use crate::store::StoreError;
use crate::store::codec::decode;
use crate::store::schema::{
    ACCOUNTS, CHARGE_PROGRESS, CHARGE_TENANTS, CHARGES, META, META_STATEMENTS_THROUGH_ENTRY,
    POSTINGS, REFUNDS, SETTLEMENT_ENTRIES, STATEMENTS, TRANSFERS, read_counter,
};

/// What made an entry, from its record.
struct Facts {
    of: EntryOf,
    made_by: u64,
    seq: u64,
    at_ms: u64,
    tenant: u32,
}

/// Puts the lines of every entry after the mark that the table lacks into `overlay`; returns how
/// many.
pub(in crate::store) fn run(
    txn: &WriteTransaction,
    overlay: &StatementOverlay,
) -> Result<u64, StoreError> {
    let Some(through) = read_counter(&txn.open_table(META)?, META_STATEMENTS_THROUGH_ENTRY)? else {
        // A fresh store (the backfill marks an old one).
        return Ok(0);
    };
    let postings = txn.open_table(POSTINGS)?;
    let mut pending: Vec<(u64, u8, Posting)> = Vec::new();
    for row in postings.range((through.saturating_add(1), 0)..)? {
        let (key, value) = row?;
        let (entry, leg) = key.value();
        pending.push((entry, leg, decode(value.value())?));
    }
    if pending.is_empty() {
        return Ok(0);
    }
    let sources = Sources::open(txn)?;
    let mut facts: HashMap<u64, Facts> = HashMap::new();
    for (entry, _, _) in &pending {
        if !facts.contains_key(entry) {
            facts.insert(*entry, sources.facts(*entry)?);
        }
    }
    // The totals before the first pending entry: now, minus the pending postings.
    let accounts = txn.open_table(ACCOUNTS)?;
    let mut totals: HashMap<(u32, AccountId), Totals> = HashMap::new();
    for (entry, _, posting) in pending.iter().rev() {
        let tenant = facts[entry].tenant;
        let key = (tenant, posting.account.clone());
        if !totals.contains_key(&key) {
            let account: Account = accounts
                .get((tenant, posting.account.as_str()))?
                .map(|bytes| decode(bytes.value()))
                .transpose()?
                .ok_or_else(|| StoreError::Corrupt {
                    record: "posting",
                    detail: format!("entry {entry} posts to missing account {}", posting.account),
                })?;
            totals.insert(key.clone(), Totals::of(&account));
        }
        let account_totals = totals.get_mut(&key).expect("inserted above");
        account_totals
            .unapply(posting)
            .map_err(|error| corrupt(*entry, posting, error))?;
    }
    // The last line each account has in the table: the lines up to it are not put back.
    let statements = txn.open_table(STATEMENTS)?;
    let mut in_table: HashMap<(u32, AccountId), Option<(u64, u8)>> = HashMap::new();
    for (tenant, account) in totals.keys() {
        let last = last_position(&statements, *tenant, account.as_str())?;
        in_table.insert((*tenant, account.clone()), last);
    }
    let mut read = 0;
    for (entry, leg, posting) in &pending {
        let f = &facts[entry];
        let account_totals = totals
            .get_mut(&(f.tenant, posting.account.clone()))
            .expect("every pending account has totals");
        account_totals
            .apply(posting)
            .map_err(|error| corrupt(*entry, posting, error))?;
        let table_through = in_table[&(f.tenant, posting.account.clone())];
        if table_through.is_some_and(|through| (f.seq, *leg) <= through) {
            continue;
        }
        let line = StatementLine {
            entry: *entry,
            made_by: f.made_by,
            entry_type: EntryType::of(f.of, posting.kind),
            side: posting.side,
            amount: posting.amount,
            after: *account_totals,
            created_at_ms: f.at_ms,
        };
        overlay.insert(
            f.tenant,
            posting.account.as_str(),
            Line {
                seq: f.seq,
                leg: *leg,
                line,
            },
        );
        read += 1;
    }
    Ok(read)
}

fn corrupt(entry: u64, posting: &Posting, error: crate::ledger::TotalsError) -> StoreError {
    StoreError::Corrupt {
        record: "posting",
        detail: format!("entry {entry} on {}: {error:?}", posting.account),
    }
}

/// The tables an entry's facts come from.
struct Sources<'txn> {
    charges: redb::Table<'txn, u64, &'static [u8]>,
    refunds: redb::Table<'txn, u64, &'static [u8]>,
    transfers: redb::Table<'txn, u64, &'static [u8]>,
    settlements: redb::Table<'txn, u64, u64>,
    progress: redb::Table<'txn, u64, &'static [u8]>,
    owners: redb::Table<'txn, u64, u32>,
}

impl<'txn> Sources<'txn> {
    fn open(txn: &'txn WriteTransaction) -> Result<Self, StoreError> {
        Ok(Sources {
            charges: txn.open_table(CHARGES)?,
            refunds: txn.open_table(REFUNDS)?,
            transfers: txn.open_table(TRANSFERS)?,
            settlements: txn.open_table(SETTLEMENT_ENTRIES)?,
            progress: txn.open_table(CHARGE_PROGRESS)?,
            owners: txn.open_table(CHARGE_TENANTS)?,
        })
    }

    fn facts(&self, entry: u64) -> Result<Facts, StoreError> {
        let tenant = self.owners.get(entry)?.map_or(0, |t| t.value());
        let facts = |of, made_by, seq, at_ms| Facts {
            of,
            made_by,
            seq,
            at_ms,
            tenant,
        };
        if let Some(bytes) = self.charges.get(entry)? {
            let charge: Charge = decode(bytes.value())?;
            return Ok(facts(
                EntryOf::Charge,
                entry,
                charge.event_seq,
                charge.created_at_ms,
            ));
        }
        if let Some(bytes) = self.refunds.get(entry)? {
            let refund: Refund = decode(bytes.value())?;
            return Ok(facts(
                EntryOf::Refund,
                entry,
                refund.event_seq,
                refund.created_at_ms,
            ));
        }
        if let Some(bytes) = self.transfers.get(entry)? {
            let transfer: Transfer = decode(bytes.value())?;
            return Ok(facts(
                EntryOf::Transfer,
                entry,
                transfer.event_seq,
                transfer.created_at_ms,
            ));
        }
        if let Some(charge) = self.settlements.get(entry)? {
            let charge = charge.value();
            let settled = self
                .progress
                .get(charge)?
                .map(|bytes| decode::<ChargeProgress>(bytes.value()))
                .transpose()?
                .and_then(|progress| progress.settled)
                .filter(|settled| settled.entry == entry)
                .ok_or_else(|| StoreError::Corrupt {
                    record: "settlement",
                    detail: format!(
                        "entry {entry} settles charge {charge}, whose progress does not say so"
                    ),
                })?;
            return Ok(facts(
                EntryOf::Settlement,
                charge,
                settled.event_seq,
                settled.at_ms,
            ));
        }
        Err(StoreError::Corrupt {
            record: "posting",
            detail: format!("entry {entry} has postings but no record"),
        })
    }
}
