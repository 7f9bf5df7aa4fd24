//! A hub's mirrors (invariants 1, 4, 5, 6 and 7, per origin): every mirrored account's four
//! totals are what the mirrored charges, authorizations, settlements, refunds and transfers add
//! up to, its pending totals are exactly its open mirrored authorizations, each origin's mirror
//! balances to zero per currency (posted and pending), no mirrored account is below its limit,
//! and the refunds of a mirrored charge never exceed what was captured. Every mirrored entry
//! needs an applied inbox row.

use std::collections::{BTreeMap, HashMap, HashSet};

use redb::ReadableTable;

use super::Report;
use crate::ledger::{Account, AccountId, Charge, ChargeProgress, ChargeStatus, Currency, Refund};
use crate::ledger::{Transfer, TransferLeg};
use crate::limits::TRANSFER_LEGS_MAX;
use crate::store::StoreError;
use crate::store::codec::decode;
use crate::store::records::{InboxOutcome, InboxRecord};
use crate::store::schema::{
    INBOX, REPLICA_ACCOUNTS, REPLICA_CHARGE_PROGRESS, REPLICA_CHARGES, REPLICA_REFUNDS,
    REPLICA_TRANSFERS,
};

/// Per (origin, account id): the four totals the mirrored entries add up to, and the currencies
/// they moved (each must be the account's). u128: a corrupt store cannot overflow the sums.
#[derive(Debug, Default)]
struct Totals {
    debits_posted: u128,
    credits_posted: u128,
    debits_pending: u128,
    credits_pending: u128,
    currencies: Vec<Currency>,
}

impl Totals {
    fn four(&self) -> [u128; 4] {
        [
            self.debits_posted,
            self.credits_posted,
            self.debits_pending,
            self.credits_pending,
        ]
    }
}

/// What the mirror tables hold, keyed (origin, event seq) as stored.
struct Mirrored {
    charges: BTreeMap<(String, u64), Charge>,
    progress: BTreeMap<(String, u64), ChargeProgress>,
    refunds: BTreeMap<(String, u64), Refund>,
    transfers: BTreeMap<(String, u64), Transfer>,
}

/// Returns the (origin, account) of every mirror account a mirrored entry moved: those must have
/// mirrored statement lines (`history.rs`).
pub(super) fn verify_mirrors(
    txn: &redb::ReadTransaction,
    report: &mut Report,
    violations: &mut Vec<String>,
) -> Result<HashSet<(String, String)>, StoreError> {
    let mirrored = read_mirrored(txn)?;
    report.mirrored_charges = mirrored.charges.len() as u64;
    report.mirrored_refunds = mirrored.refunds.len() as u64;
    report.mirrored_transfers = mirrored.transfers.len() as u64;
    verify_applied(txn, &mirrored, violations)?;
    let mut totals: HashMap<(String, String), Totals> = HashMap::new();
    let refunded = add_refunds(&mirrored, &mut totals, violations);
    for ((origin, seq), charge) in &mirrored.charges {
        let progress = mirrored.progress.get(&(origin.clone(), *seq));
        let progress = progress
            .cloned()
            .unwrap_or_else(|| ChargeProgress::immediate(charge));
        let refunds = refunded.get(&(origin.clone(), *seq)).copied().unwrap_or(0);
        verify_progress(origin, *seq, charge, &progress, refunds, violations);
        if progress.status == ChargeStatus::Authorized {
            report.mirrored_authorizations_open += 1;
        }
        add_charge(origin, charge, &progress, &mut totals);
    }
    for (key, _) in mirrored.progress.iter() {
        if !mirrored.charges.contains_key(key) {
            violations.push(format!(
                "mirror progress {}:{} has no mirrored charge",
                key.0, key.1
            ));
        }
    }
    for ((origin, seq), transfer) in &mirrored.transfers {
        verify_legs(origin, *seq, transfer, violations);
        for leg in &transfer.legs {
            add_leg(origin, leg, transfer.currency, &mut totals);
        }
    }
    let moved = totals.keys().cloned().collect();
    verify_accounts(txn, totals, violations)?;
    Ok(moved)
}

fn read_mirrored(txn: &redb::ReadTransaction) -> Result<Mirrored, StoreError> {
    Ok(Mirrored {
        charges: read_table(txn, REPLICA_CHARGES)?,
        progress: read_table(txn, REPLICA_CHARGE_PROGRESS)?,
        refunds: read_table(txn, REPLICA_REFUNDS)?,
        transfers: read_table(txn, REPLICA_TRANSFERS)?,
    })
}

type MirrorTable = redb::TableDefinition<'static, (&'static str, u64), &'static [u8]>;

fn read_table<R: crate::store::codec::Record>(
    txn: &redb::ReadTransaction,
    table: MirrorTable,
) -> Result<BTreeMap<(String, u64), R>, StoreError> {
    let mut rows = BTreeMap::new();
    for entry in txn.open_table(table)?.iter()? {
        let (key, bytes) = entry?;
        let (origin, seq) = key.value();
        rows.insert((origin.to_owned(), seq), decode(bytes.value())?);
    }
    Ok(rows)
}

/// Every mirrored charge, refund and transfer, and every mirrored settlement, was applied by its
/// event: an applied inbox row at (origin, its seq).
fn verify_applied(
    txn: &redb::ReadTransaction,
    mirrored: &Mirrored,
    violations: &mut Vec<String>,
) -> Result<(), StoreError> {
    let inbox = txn.open_table(INBOX)?;
    let settlements = mirrored.progress.iter().filter_map(|((origin, _), p)| {
        p.settled
            .map(|s| ("mirrored settlement", (origin.clone(), s.event_seq)))
    });
    let entries = (mirrored
        .charges
        .keys()
        .map(|k| ("mirrored charge", k.clone())))
    .chain(
        mirrored
            .refunds
            .keys()
            .map(|k| ("mirrored refund", k.clone())),
    )
    .chain(
        mirrored
            .transfers
            .keys()
            .map(|k| ("mirrored transfer", k.clone())),
    )
    .chain(settlements);
    for (what, (origin, seq)) in entries {
        let row: Option<InboxRecord> = inbox
            .get((origin.as_str(), seq))?
            .map(|b| decode(b.value()))
            .transpose()?;
        if !matches!(
            row,
            Some(InboxRecord {
                outcome: InboxOutcome::Applied,
                ..
            })
        ) {
            violations.push(format!("{what} {origin}:{seq} has no applied inbox row"));
        }
    }
    Ok(())
}

/// A mirrored charge's progress is one the rules make: an immediate charge succeeded and
/// captured whole; an open authorization nothing captured or refunded; a captured one 1 to its
/// amount, a voided or expired one nothing, each settled by a later event; refunds add up to
/// `amount_refunded`, at most what was captured, and only on a succeeded charge (invariant 7).
fn verify_progress(
    origin: &str,
    seq: u64,
    charge: &Charge,
    progress: &ChargeProgress,
    refunds: u64,
    violations: &mut Vec<String>,
) {
    let amount = charge.amount.minor();
    let captured = progress.amount_captured;
    let settled_later = progress.settled.is_some_and(|s| s.event_seq > seq);
    let consistent = match (progress.expires_at_ms, progress.status) {
        (None, status) => {
            status == ChargeStatus::Succeeded && captured == amount && progress.settled.is_none()
        }
        (Some(_), ChargeStatus::Authorized) => {
            progress.settled.is_none() && captured == 0 && progress.amount_refunded == 0
        }
        (Some(_), ChargeStatus::Succeeded) => settled_later && (1..=amount).contains(&captured),
        (Some(_), ChargeStatus::Canceled | ChargeStatus::Expired) => settled_later && captured == 0,
    };
    if !consistent {
        violations.push(format!(
            "mirrored charge {origin}:{seq} of {amount} has progress {progress:?}"
        ));
    }
    if charge.event_seq != seq {
        violations.push(format!(
            "mirrored charge {origin}:{seq} names event {}",
            charge.event_seq
        ));
    }
    if refunds != progress.amount_refunded {
        violations.push(format!(
            "mirrored charge {origin}:{seq}: refunds add up to {refunds}, its progress says {}",
            progress.amount_refunded
        ));
    }
    if refunds > captured || (refunds > 0 && progress.status != ChargeStatus::Succeeded) {
        violations.push(format!(
            "mirrored charge {origin}:{seq} ({:?}, {captured} captured) has {refunds} refunded",
            progress.status
        ));
    }
}

/// Adds each mirrored refund to its charge's accounts (the destination debited, the source
/// credited); returns the refunded amount per mirrored charge, keyed (origin, charge seq).
fn add_refunds(
    mirrored: &Mirrored,
    totals: &mut HashMap<(String, String), Totals>,
    violations: &mut Vec<String>,
) -> HashMap<(String, u64), u64> {
    // Refunds name their charge by number; mirrors key charges by the event that created them.
    let mut by_number: HashMap<(&str, u64), (u64, &Charge)> = HashMap::new();
    for ((origin, seq), c) in &mirrored.charges {
        if let Some((first, _)) = by_number.insert((origin.as_str(), c.number), (*seq, c)) {
            violations.push(format!(
                "mirrored charges {origin}:{first} and {origin}:{seq} have one entry number {}",
                c.number
            ));
        }
    }
    let mut refunded: HashMap<(String, u64), u64> = HashMap::new();
    for ((origin, seq), refund) in &mirrored.refunds {
        let Some((charge_seq, charge)) = by_number.get(&(origin.as_str(), refund.charge_number))
        else {
            violations.push(format!(
                "mirrored refund {origin}:{seq} refunds charge {}, which is not mirrored",
                refund.charge_number
            ));
            continue;
        };
        if refund.currency != charge.currency || refund.event_seq != *seq {
            violations.push(format!(
                "mirrored refund {origin}:{seq} is {refund:?} for charge {charge:?}"
            ));
        }
        *refunded.entry((origin.clone(), *charge_seq)).or_default() += refund.amount.minor();
        let amount = u128::from(refund.amount.minor());
        let destination = totals_of(totals, origin, &charge.destination, refund.currency);
        destination.debits_posted += amount;
        let source = totals_of(totals, origin, &charge.source, refund.currency);
        source.credits_posted += amount;
    }
    refunded
}

/// A charge's effect on its accounts as it stands: an open authorization holds its amount, an
/// ended one has released it (and a capture posted what it took), an immediate charge posted it.
fn add_charge(
    origin: &str,
    charge: &Charge,
    progress: &ChargeProgress,
    totals: &mut HashMap<(String, String), Totals>,
) {
    let currency = charge.currency;
    let (posted, pending) = match progress.status {
        ChargeStatus::Authorized => (0, charge.amount.minor()),
        _ => (progress.amount_captured, 0),
    };
    let source = totals_of(totals, origin, &charge.source, currency);
    source.debits_posted += u128::from(posted);
    source.debits_pending += u128::from(pending);
    let destination = totals_of(totals, origin, &charge.destination, currency);
    destination.credits_posted += u128::from(posted);
    destination.credits_pending += u128::from(pending);
}

fn add_leg(
    origin: &str,
    leg: &TransferLeg,
    currency: Currency,
    totals: &mut HashMap<(String, String), Totals>,
) {
    let amount = u128::from(leg.amount.minor());
    totals_of(totals, origin, &leg.source, currency).debits_posted += amount;
    totals_of(totals, origin, &leg.destination, currency).credits_posted += amount;
}

fn verify_legs(origin: &str, seq: u64, transfer: &Transfer, violations: &mut Vec<String>) {
    let legs = transfer.legs.len();
    let to_itself = transfer.legs.iter().any(|l| l.source == l.destination);
    if !(1..=TRANSFER_LEGS_MAX).contains(&legs) || to_itself || transfer.event_seq != seq {
        violations.push(format!("mirrored transfer {origin}:{seq} is {transfer:?}"));
    }
}

/// The totals of (origin, id), noting that an entry in `currency` moved them.
fn totals_of<'a>(
    totals: &'a mut HashMap<(String, String), Totals>,
    origin: &str,
    id: &AccountId,
    currency: Currency,
) -> &'a mut Totals {
    let entry = totals
        .entry((origin.to_owned(), id.as_str().to_owned()))
        .or_default();
    if !entry.currencies.contains(&currency) {
        entry.currencies.push(currency);
    }
    entry
}

/// Each mirrored account against what its entries add up to; each origin's sums per currency.
fn verify_accounts(
    txn: &redb::ReadTransaction,
    mut totals: HashMap<(String, String), Totals>,
    violations: &mut Vec<String>,
) -> Result<(), StoreError> {
    // (origin, currency) → (posted balances, pending credits minus debits).
    let mut sums: BTreeMap<(String, String), (i128, i128)> = BTreeMap::new();
    for entry in txn.open_table(REPLICA_ACCOUNTS)?.iter()? {
        let (key, bytes) = entry?;
        let (origin, id) = key.value();
        let account: Account = decode(bytes.value())?;
        let expected = totals
            .remove(&(origin.to_owned(), id.to_owned()))
            .unwrap_or_default();
        let [
            debits_posted,
            credits_posted,
            debits_pending,
            credits_pending,
        ] = expected.four();
        let stored = |total: u64| u128::from(total);
        if (
            stored(account.debits_posted),
            stored(account.credits_posted),
        ) != (debits_posted, credits_posted)
        {
            violations.push(format!(
                "mirror {origin}/{id}: posted totals {}/{} but its entries give {debits_posted}/{credits_posted}",
                account.debits_posted, account.credits_posted
            ));
        }
        if (
            stored(account.debits_pending),
            stored(account.credits_pending),
        ) != (debits_pending, credits_pending)
        {
            violations.push(format!(
                "mirror {origin}/{id}: pending {}/{} but its open authorizations hold {debits_pending}/{credits_pending}",
                account.debits_pending, account.credits_pending
            ));
        }
        if expected.currencies.iter().any(|c| *c != account.currency) {
            violations.push(format!(
                "mirror {origin}/{id} holds {} and mirrored entries in {:?} moved it",
                account.currency, expected.currencies
            ));
        }
        if id != account.id.as_str() {
            violations.push(format!(
                "mirror row {origin}/{id} holds account {}",
                account.id
            ));
        }
        if !account.within_overdraft_limit() {
            violations.push(format!("mirror {origin}/{id} is below its overdraft limit"));
        }
        let sum = sums
            .entry((origin.to_owned(), account.currency.to_string()))
            .or_default();
        sum.0 += i128::from(account.balance());
        sum.1 += i128::from(account.credits_pending) - i128::from(account.debits_pending);
    }
    for (origin, id) in totals.keys() {
        violations.push(format!(
            "mirrored entries name {origin}/{id}, which does not exist"
        ));
    }
    for ((origin, currency), (posted, pending)) in sums {
        if posted != 0 {
            violations.push(format!(
                "mirror of {origin}: {currency} balances sum to {posted}"
            ));
        }
        if pending != 0 {
            violations.push(format!(
                "mirror of {origin}: {currency} pending totals sum to {pending}"
            ));
        }
    }
    Ok(())
}
