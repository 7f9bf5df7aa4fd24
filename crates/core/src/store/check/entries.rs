//! The ledger's entries against their postings, events and accounts: invariants 1, 5, 6 and 7.
//!
//! Every entry number from 1 to the counter belongs to exactly one entry: a charge (immediate or
//! an authorization), the settlement of an authorization (capture, void, expiry), a refund or a
//! transfer. From each entry the checker derives the postings it must have made, compares them
//! with the `postings` table, and recomputes every account's four totals from them.

use std::collections::{BTreeMap, HashMap};

use redb::{ReadableTable, ReadableTableMetadata};

use super::{AccountsByKey, Outbox, Report};
use crate::ledger::{
    Account, Charge, ChargeProgress, ChargeStatus, Posting, PostingKind, Refund, Transfer,
};
use crate::store::StoreError;
use crate::store::codec::decode;
use crate::store::records::{EventKind, EventRecord};
use crate::store::schema::{
    AUTHORIZATION_EXPIRY, CHARGE_PROGRESS, CHARGES, META, META_NEXT_ENTRY_NUMBER, POSTINGS,
    REFUNDS, TRANSFERS, open_if_present, read_counter_leniently,
};

/// What the entries are, for the idempotency records to be checked against.
pub(super) struct Entries {
    pub charges: BTreeMap<u64, (Charge, ChargeProgress)>,
    pub refunds: BTreeMap<u64, Refund>,
    pub transfers: BTreeMap<u64, Transfer>,
    /// Entry number → its tenant, for the entries of tenants other than 0.
    pub owners: HashMap<u64, u32>,
    /// Progress rows whose charge does not exist.
    orphan_progress: Vec<u64>,
}

/// Totals recomputed from postings, per (tenant, account): an account of zero totals that each
/// posting was applied to.
type Recomputed = HashMap<(u32, String), Account>;

pub(super) fn verify_entries(
    txn: &redb::ReadTransaction,
    accounts: &AccountsByKey,
    outbox: &Outbox,
    report: &mut Report,
    violations: &mut Vec<String>,
) -> Result<Entries, StoreError> {
    let entries = read_entries(txn)?;
    for number in &entries.orphan_progress {
        violations.push(format!("progress row {number} names no charge"));
    }
    let owners = &entries.owners;
    let tenant_of = |number: u64| owners.get(&number).copied().unwrap_or(0);
    // Every entry's expected postings and event, by entry number.
    let mut expected: BTreeMap<u64, Expected> = BTreeMap::new();
    let mut claim = |number: u64, what: Expected, violations: &mut Vec<String>| {
        if let Some(before) = expected.insert(number, what) {
            violations.push(format!("entry {number} is claimed twice ({})", before.name));
        }
    };
    let mut open_holds: HashMap<(u32, String), (u64, u64)> = HashMap::new();
    for (number, (charge, progress)) in &entries.charges {
        report.charges += 1;
        if charge.number != *number {
            violations.push(format!(
                "charge row {number} holds charge {}",
                charge.number
            ));
        }
        for (entry, what) in charge_entries(charge, progress, violations) {
            claim(entry, what, violations);
        }
        if progress.status == ChargeStatus::Authorized {
            report.authorizations_open += 1;
            let tenant = tenant_of(*number);
            let amount = charge.amount.minor();
            open_holds
                .entry((tenant, charge.source.as_str().to_owned()))
                .or_default()
                .0 += amount;
            open_holds
                .entry((tenant, charge.destination.as_str().to_owned()))
                .or_default()
                .1 += amount;
        }
    }
    let mut refunded: HashMap<u64, u64> = HashMap::new();
    for (number, refund) in &entries.refunds {
        report.refunds += 1;
        match entries.charges.get(&refund.charge_number) {
            Some((charge, _)) => {
                *refunded.entry(charge.number).or_default() += refund.amount.minor();
                let postings = Posting::pair(
                    &charge.destination,
                    &charge.source,
                    refund.amount,
                    PostingKind::Posted,
                )
                .to_vec();
                let event = EventKind::RefundSucceeded {
                    refund_number: *number,
                };
                claim(
                    *number,
                    Expected::new("refund", postings, refund.event_seq, event),
                    violations,
                );
            }
            None => violations.push(format!(
                "refund {number} refunds missing charge {}",
                refund.charge_number
            )),
        }
    }
    for (number, transfer) in &entries.transfers {
        report.transfers += 1;
        let postings = transfer
            .legs
            .iter()
            .flat_map(|leg| {
                Posting::pair(
                    &leg.source,
                    &leg.destination,
                    leg.amount,
                    PostingKind::Posted,
                )
            })
            .collect();
        let event = EventKind::TransferSucceeded {
            transfer_number: *number,
        };
        claim(
            *number,
            Expected::new("transfer", postings, transfer.event_seq, event),
            violations,
        );
    }
    verify_refund_totals(&entries, &refunded, violations);
    verify_numbering(txn, &expected, violations)?;
    let recomputed = verify_postings(txn, &expected, &tenant_of, violations)?;
    verify_events(&expected, outbox, violations);
    verify_settled_once(outbox, violations);
    verify_account_totals(accounts, recomputed, &open_holds, violations);
    verify_expiry_index(txn, &entries, violations)?;
    Ok(entries)
}

/// An entry's postings and its event as the entry says they must be.
struct Expected {
    name: &'static str,
    postings: Vec<Posting>,
    event_seq: u64,
    event: EventKind,
}

impl Expected {
    fn new(name: &'static str, postings: Vec<Posting>, event_seq: u64, event: EventKind) -> Self {
        Expected {
            name,
            postings,
            event_seq,
            event,
        }
    }
}

/// Every row of a table of records by number; none if the table predates this store.
fn records<R: crate::store::codec::Record>(
    txn: &redb::ReadTransaction,
    table: redb::TableDefinition<u64, &[u8]>,
) -> Result<BTreeMap<u64, R>, StoreError> {
    let mut rows = BTreeMap::new();
    if let Some(table) = open_if_present(txn, table)? {
        for entry in table.iter()? {
            let (number, bytes) = entry?;
            rows.insert(number.value(), decode(bytes.value())?);
        }
    }
    Ok(rows)
}

fn read_entries(txn: &redb::ReadTransaction) -> Result<Entries, StoreError> {
    let mut progress: BTreeMap<u64, ChargeProgress> = records(txn, CHARGE_PROGRESS)?;
    let charges = records::<Charge>(txn, CHARGES)?
        .into_iter()
        .map(|(number, charge)| {
            let progress = progress
                .remove(&number)
                .unwrap_or_else(|| ChargeProgress::immediate(&charge));
            (number, (charge, progress))
        })
        .collect();
    let refunds = records(txn, REFUNDS)?;
    let transfers = records(txn, TRANSFERS)?;
    let orphan_progress = progress.into_keys().collect();
    Ok(Entries {
        charges,
        refunds,
        transfers,
        owners: super::super::auth::charge_owners(txn)?,
        orphan_progress,
    })
}

/// The entries a charge made: itself, and for an ended authorization its settlement.
fn charge_entries(
    charge: &Charge,
    progress: &ChargeProgress,
    violations: &mut Vec<String>,
) -> Vec<(u64, Expected)> {
    let number = charge.number;
    let amount = charge.amount;
    let pair = |amount, kind| Posting::pair(&charge.source, &charge.destination, amount, kind);
    let Some(_expires_at) = progress.expires_at_ms else {
        // Immediate: succeeded from the start, captured whole.
        if progress.status != ChargeStatus::Succeeded || progress.amount_captured != amount.minor()
        {
            violations.push(format!(
                "immediate charge {number} has progress {progress:?}"
            ));
        }
        let event = EventKind::ChargeSucceeded {
            charge_number: number,
        };
        return vec![(
            number,
            Expected::new(
                "charge",
                pair(amount, PostingKind::Posted).to_vec(),
                charge.event_seq,
                event,
            ),
        )];
    };
    let authorized = EventKind::ChargeAuthorized {
        charge_number: number,
    };
    let mut made = vec![(
        number,
        Expected::new(
            "authorization",
            pair(amount, PostingKind::Hold).to_vec(),
            charge.event_seq,
            authorized,
        ),
    )];
    match (progress.status, progress.settled) {
        (ChargeStatus::Authorized, None) => {
            if progress.amount_captured != 0 || progress.amount_refunded != 0 {
                violations.push(format!(
                    "open authorization {number} has progress {progress:?}"
                ));
            }
        }
        (ChargeStatus::Authorized, Some(_)) | (_, None) => {
            violations.push(format!("authorization {number} has progress {progress:?}"));
        }
        (status, Some(settled)) => {
            let mut postings = pair(amount, PostingKind::Release).to_vec();
            if status == ChargeStatus::Succeeded {
                match crate::ledger::Amount::new(progress.amount_captured) {
                    Ok(captured) if captured.minor() <= amount.minor() => {
                        postings.extend(pair(captured, PostingKind::Posted));
                    }
                    _ => violations.push(format!(
                        "authorization {number} of {amount:?} captured {}",
                        progress.amount_captured
                    )),
                }
            } else if progress.amount_captured != 0 {
                violations.push(format!(
                    "{status:?} authorization {number} captured something"
                ));
            }
            let event = EventKind::ChargeSettled {
                charge_number: number,
                status,
                amount_captured: progress.amount_captured,
            };
            made.push((
                settled.entry,
                Expected::new("settlement", postings, settled.event_seq, event),
            ));
        }
    }
    made
}

/// Invariant 7: the refunds of a charge add up to its `amount_refunded`, at most what was
/// captured, and only a succeeded charge has any.
fn verify_refund_totals(
    entries: &Entries,
    refunded: &HashMap<u64, u64>,
    violations: &mut Vec<String>,
) {
    for (number, (_, progress)) in &entries.charges {
        let sum = refunded.get(number).copied().unwrap_or(0);
        if sum != progress.amount_refunded {
            violations.push(format!(
                "charge {number}: refunds add up to {sum}, its progress says {}",
                progress.amount_refunded
            ));
        }
        if progress.amount_refunded > progress.amount_captured {
            violations.push(format!(
                "charge {number}: refunded {} of {} captured",
                progress.amount_refunded, progress.amount_captured
            ));
        }
        if sum > 0 && progress.status != ChargeStatus::Succeeded {
            violations.push(format!(
                "charge {number} is {:?} and has refunds",
                progress.status
            ));
        }
    }
}

/// Entry numbers are dense: exactly 1..next, each claimed once.
fn verify_numbering(
    txn: &redb::ReadTransaction,
    expected: &BTreeMap<u64, Expected>,
    violations: &mut Vec<String>,
) -> Result<(), StoreError> {
    let next = read_counter_leniently(&txn.open_table(META)?, META_NEXT_ENTRY_NUMBER)?.unwrap_or(1);
    for (want, number) in (1u64..).zip(expected.keys()) {
        if *number != want {
            violations.push(format!(
                "entry numbers jump to {number} where {want} was due"
            ));
            break;
        }
    }
    if next != expected.len() as u64 + 1 {
        violations.push(format!(
            "next entry number is {next} with {} entries",
            expected.len()
        ));
    }
    Ok(())
}

/// Every stored posting is one an entry made, every posting an entry made is stored; the totals
/// they add up to, per account.
fn verify_postings(
    txn: &redb::ReadTransaction,
    expected: &BTreeMap<u64, Expected>,
    tenant_of: &impl Fn(u64) -> u32,
    violations: &mut Vec<String>,
) -> Result<Recomputed, StoreError> {
    let table = txn.open_table(POSTINGS)?;
    let mut recomputed: Recomputed = HashMap::new();
    let mut stored_count = 0u64;
    for (entry, what) in expected {
        let tenant = tenant_of(*entry);
        for (leg, want) in (0u8..).zip(&what.postings) {
            let stored: Option<Posting> = table
                .get((*entry, leg))?
                .map(|b| decode(b.value()))
                .transpose()?;
            if stored.as_ref() != Some(want) {
                violations.push(format!(
                    "{} {entry} leg {leg}: posting {stored:?}, expected {want:?}",
                    what.name
                ));
                continue;
            }
            stored_count += 1;
            let account = recomputed
                .entry((tenant, want.account.as_str().to_owned()))
                .or_insert_with(|| empty_totals(want));
            if account.apply(want).is_err() {
                violations.push(format!(
                    "{} {entry} leg {leg} takes account {} out of range",
                    what.name, want.account
                ));
            }
        }
    }
    if table.len()? != stored_count {
        violations.push(format!(
            "{} postings stored, {stored_count} made by entries",
            table.len()?
        ));
    }
    Ok(recomputed)
}

/// An account with zero totals, to add an account's postings to.
fn empty_totals(posting: &Posting) -> Account {
    Account {
        id: posting.account.clone(),
        // Not compared: only the totals are.
        currency: crate::ledger::Currency::parse("XXX").expect("three upper-case letters"),
        overdraft_limit: None,
        debits_posted: 0,
        credits_posted: 0,
        debits_pending: 0,
        credits_pending: 0,
        created_at_ms: 0,
    }
}

/// Each entry's event is in the outbox (or was pruned after every sink had it).
fn verify_events(
    expected: &BTreeMap<u64, Expected>,
    outbox: &Outbox,
    violations: &mut Vec<String>,
) {
    for (entry, what) in expected {
        match outbox.events.get(&what.event_seq) {
            Some(EventRecord { kind, .. }) if *kind == what.event => {}
            None if !outbox.held(what.event_seq) => {}
            other => violations.push(format!(
                "{} {entry}: event {} is {other:?}, expected {:?}",
                what.name, what.event_seq, what.event
            )),
        }
    }
}

/// Invariant 6's last part, from the events' side: no authorization has two terminal events.
fn verify_settled_once(outbox: &Outbox, violations: &mut Vec<String>) {
    let mut settled: HashMap<u64, u64> = HashMap::new();
    for (seq, event) in &outbox.events {
        if let EventKind::ChargeSettled { charge_number, .. } = event.kind
            && let Some(first) = settled.insert(charge_number, *seq)
        {
            violations.push(format!(
                "charge {charge_number} ended twice: events {first} and {seq}"
            ));
        }
    }
}

/// Each account's four stored totals are what its postings add up to, and its pending totals are
/// its open authorizations' (invariant 6); every posting names an account that exists.
fn verify_account_totals(
    accounts: &AccountsByKey,
    mut recomputed: Recomputed,
    open_holds: &HashMap<(u32, String), (u64, u64)>,
    violations: &mut Vec<String>,
) {
    for ((tenant, id), account) in accounts {
        let key = (*tenant, id.clone());
        let stored = (
            account.debits_posted,
            account.credits_posted,
            account.debits_pending,
            account.credits_pending,
        );
        let from_postings = recomputed.remove(&key).map_or((0, 0, 0, 0), |a| {
            (
                a.debits_posted,
                a.credits_posted,
                a.debits_pending,
                a.credits_pending,
            )
        });
        if stored != from_postings {
            violations.push(format!(
                "account {id}: stored totals {stored:?} but postings give {from_postings:?}"
            ));
        }
        let holds = open_holds.get(&key).copied().unwrap_or((0, 0));
        if (account.debits_pending, account.credits_pending) != holds {
            violations.push(format!(
                "account {id}: pending {}/{} but its open authorizations hold {}/{}",
                account.debits_pending, account.credits_pending, holds.0, holds.1
            ));
        }
    }
    for (tenant, id) in recomputed.keys() {
        violations.push(format!(
            "postings name account {id} of tenant {tenant}, which does not exist"
        ));
    }
}

/// The expiry index holds exactly the open authorizations, each at its expiry.
fn verify_expiry_index(
    txn: &redb::ReadTransaction,
    entries: &Entries,
    violations: &mut Vec<String>,
) -> Result<(), StoreError> {
    let mut indexed: BTreeMap<u64, u64> = BTreeMap::new();
    for entry in txn.open_table(AUTHORIZATION_EXPIRY)?.iter()? {
        let (at, number) = entry?.0.value();
        if indexed.insert(number, at).is_some() {
            violations.push(format!(
                "authorization {number} is indexed twice for expiry"
            ));
        }
    }
    for (number, (_, progress)) in &entries.charges {
        let open = progress.status == ChargeStatus::Authorized;
        match (open, indexed.remove(number)) {
            (true, Some(at)) if Some(at) == progress.expires_at_ms => {}
            (false, None) => {}
            (_, found) => violations.push(format!(
                "charge {number} ({:?}) has expiry row {found:?}",
                progress.status
            )),
        }
    }
    for number in indexed.keys() {
        violations.push(format!("the expiry index names missing charge {number}"));
    }
    Ok(())
}
