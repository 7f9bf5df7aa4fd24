//! The invariant checker: reads the whole store and verifies DESIGN.md's invariants.
//!
//! Run by `onceledger check` (with the server stopped) and by the tests after every test that
//! writes. It recomputes every account's totals from the postings, so a balance that drifted from
//! its postings is caught, not only a sum that is off.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};
use serde::{Deserialize, Serialize};

use super::accounts::AccountMap;
use super::answers::{AnswerPointer, answer};
use super::codec::decode;
use super::records::{
    DeadLetter, Effect, EventKind, EventRecord, IdempotencyRecord, InboxOutcome, InboxRecord,
    OriginState,
};
use super::schema::read_counter_leniently;
use super::schema::{
    ACCOUNTS, DEAD_LETTERS, IDEMPOTENCY_ANSWERS, IDEMPOTENCY_KEYS, INBOX, META,
    META_NEXT_EVENT_SEQ, META_OUTBOX_FIRST_HELD, ORIGINS, OUTBOX,
};
use super::{JOURNAL_FILE_NAME, STORE_FILE_NAME, StoppedStore, Store, StoreError};
use crate::ledger::{Account, ChargeIds, ChargeStatus, EntryKind};

mod entries;
mod history;
mod mirrors;

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub accounts: u64,
    pub charges: u64,
    /// Authorizations not captured, voided or expired yet.
    pub authorizations_open: u64,
    pub refunds: u64,
    pub transfers: u64,
    pub events: u64,
    pub idempotency_records: u64,
    /// Charges no idempotency record answers for. 0 unless records were swept by retention.
    pub charges_without_record: u64,
    /// The outbox seqs below this were deleted by outbox retention.
    pub outbox_first_held: u64,
    /// As a hub: origins, inbox rows, mirrored entries and parked dead letters.
    pub origins: u64,
    pub inbox_rows: u64,
    /// Immediate charges and authorizations.
    pub mirrored_charges: u64,
    pub mirrored_authorizations_open: u64,
    pub mirrored_refunds: u64,
    pub mirrored_transfers: u64,
    pub dead_letters_parked: u64,
    /// The store has its history indexes (`META_HISTORY_INDEXED`), and they were checked
    /// (invariant 8). `false`: a store from before history checked read-only, which has none yet;
    /// its next start indexes it.
    pub history_indexed: bool,
    pub statement_lines: u64,
    /// As a hub: the lines of its mirrored statements.
    pub mirrored_statement_lines: u64,
    /// Invariant 1: every value must be 0.
    pub balance_sum_by_currency: BTreeMap<String, i128>,
    /// Invariant 6: per currency, pending credits minus pending debits; every value must be 0.
    pub pending_sum_by_currency: BTreeMap<String, i128>,
    /// `verify_stopped` found a store that was not stopped cleanly and verified a recovered copy
    /// of it (the data directory itself is never written).
    pub checked_a_recovered_copy: bool,
    /// Every broken invariant, in words. Empty means the store is consistent.
    #[serde(skip)]
    pub violations: Vec<String>,
}

/// For tests: verifies `store`, fails on any violation (listing them), and returns the report for
/// further checks.
#[cfg(test)]
pub(crate) fn assert_consistent(store: &Store) -> Report {
    let report = verify(store).expect("the store is readable");
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    report
}

/// Verifies a live store (the tests, `prove`). Exact when no commit runs while it reads: a commit
/// between its snapshot and its look at the overlays would show as a mismatch.
pub fn verify(store: &Store) -> Result<Report, StoreError> {
    let txn = store.database().begin_read()?;
    let lines = store.statement_overlay.read().by_name();
    verify_snapshot(&txn, store.accounts_overlay(), store.keys_overlay(), lines)
}

/// Verifies a stopped node's store and changes nothing (`onceledger check`). A store stopped
/// cleanly is opened read-only in place, its overlays rebuilt in memory. A store that was not
/// (a crash: redb would repair it, and the journal holds acknowledged batches its file lacks) is
/// copied to a scratch directory, recovered there as a restart would, verified and deleted:
/// `checked_a_recovered_copy` says so.
pub fn verify_stopped(data_dir: &Path) -> Result<Report, StoreError> {
    let stopped = match StoppedStore::open(data_dir) {
        Ok(stopped) => stopped,
        Err(StoreError::NeedsRepair) => return verify_recovered_copy(data_dir),
        Err(error) => return Err(error),
    };
    let txn = stopped.db.begin_read()?;
    let keys = stopped.recovered.keys.snapshot();
    // None waits in memory: a clean stop's final checkpoint merges every line (a store that did
    // not stop cleanly is checked as a recovered copy, whose open works them out again).
    let lines = history::MemoryLines::default();
    verify_snapshot(&txn, stopped.recovered.accounts, keys, lines)
}

/// Copies the store's two files into a fresh scratch directory (under the system's temporary
/// directory, `TMPDIR`), opens the copy writable (recovery and journal replay run there), verifies
/// it and removes it. The data directory is only read.
fn verify_recovered_copy(data_dir: &Path) -> Result<Report, StoreError> {
    let scratch = ScratchDir::create()?;
    for name in [STORE_FILE_NAME, JOURNAL_FILE_NAME] {
        let from = data_dir.join(name);
        if from.exists() {
            std::fs::copy(&from, scratch.0.join(name)).map_err(StoreError::Io)?;
        }
    }
    let store = Store::open(&scratch.0)?;
    let mut report = verify(&store)?;
    report.checked_a_recovered_copy = true;
    Ok(report)
}

/// A directory removed with everything in it when dropped.
struct ScratchDir(std::path::PathBuf);

impl ScratchDir {
    fn create() -> Result<ScratchDir, StoreError> {
        let unique = format!(
            "onceledger-check-{}-{}",
            std::process::id(),
            super::new_node_id()
        );
        let path = std::env::temp_dir().join(unique);
        std::fs::create_dir(&path).map_err(StoreError::Io)?;
        Ok(ScratchDir(path))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn verify_snapshot(
    txn: &redb::ReadTransaction,
    accounts_overlay: AccountMap,
    keys_overlay: Vec<(u32, String, u64)>,
    statement_memory: history::MemoryLines,
) -> Result<Report, StoreError> {
    let mut report = Report::default();
    let mut violations: Vec<String> = Vec::new();
    let accounts = verify_accounts(txn, accounts_overlay, &mut report, &mut violations)?;
    let outbox = verify_outbox(txn, &mut report, &mut violations)?;
    let entries = entries::verify_entries(txn, &accounts, &outbox, &mut report, &mut violations)?;
    verify_event_owners(txn, &outbox, &mut violations)?;
    // Dead letters, read once: redrive answers and the hub's inbox rows refer to them.
    let mut letters: BTreeMap<u64, DeadLetter> = BTreeMap::new();
    for entry in txn.open_table(DEAD_LETTERS)?.iter()? {
        let (id, bytes) = entry?;
        letters.insert(id.value(), decode(bytes.value())?);
    }
    // A store no build with opaque ids has opened yet is read as it is: legacy ids only.
    let charge_ids =
        super::charge_ids::read(&txn.open_table(META)?)?.unwrap_or_else(ChargeIds::legacy);
    let seen = Seen {
        charge_ids: &charge_ids,
        accounts: &accounts,
        outbox: &outbox,
        entries: &entries,
        letters: &letters,
    };
    verify_idempotency(txn, keys_overlay, &seen, &mut report, &mut violations)?;
    let mirror_accounts_moved = verify_hub(txn, &letters, &mut report, &mut violations)?;
    let history_seen = history::Seen {
        accounts: &accounts,
        entries: &entries,
        mirror_accounts_moved: &mirror_accounts_moved,
        statement_memory: &statement_memory,
    };
    history::verify_history(txn, &history_seen, &mut report, &mut violations)?;
    report.violations = violations;
    Ok(report)
}

type AccountsByKey = HashMap<(u32, String), Account>;

/// The held outbox: its events by seq, from the first held seq on.
struct Outbox {
    events: BTreeMap<u64, EventRecord>,
    /// Events below this seq were deleted by retention: their absence is no violation.
    first_held: u64,
}

impl Outbox {
    fn held(&self, seq: u64) -> bool {
        seq >= self.first_held
    }
}

/// What the earlier steps read, for the idempotency records to be checked against.
struct Seen<'a> {
    charge_ids: &'a ChargeIds,
    accounts: &'a AccountsByKey,
    outbox: &'a Outbox,
    entries: &'a entries::Entries,
    letters: &'a BTreeMap<u64, DeadLetter>,
}

/// Invariant 5, and the per-currency sum of invariant 1.
fn verify_accounts(
    txn: &redb::ReadTransaction,
    accounts_overlay: AccountMap,
    report: &mut Report,
    violations: &mut Vec<String>,
) -> Result<AccountsByKey, StoreError> {
    let mut accounts: HashMap<(u32, String), Account> = HashMap::new();
    // Balances newer than their rows (changed since the last account flush) count as stored.
    let mut overlay: HashMap<(u32, String), Account> = HashMap::new();
    for (tenant, changed) in accounts_overlay {
        for (id, account) in changed {
            overlay.insert((tenant.0, id.as_str().to_owned()), account);
        }
    }
    for entry in txn.open_table(ACCOUNTS)?.iter()? {
        let (key, bytes) = entry?;
        let (tenant, id) = key.value();
        let account: Account = match overlay.remove(&(tenant, id.to_owned())) {
            Some(account) => account,
            None => decode(bytes.value())?,
        };
        if id != account.id.as_str() {
            violations.push(format!("account row {id} holds account {}", account.id));
        }
        if !account.within_overdraft_limit() {
            violations.push(format!("account {id} is below its overdraft limit"));
        }
        *report
            .balance_sum_by_currency
            .entry(account.currency.to_string())
            .or_default() += i128::from(account.balance());
        *report
            .pending_sum_by_currency
            .entry(account.currency.to_string())
            .or_default() +=
            i128::from(account.credits_pending) - i128::from(account.debits_pending);
        accounts.insert((tenant, id.to_owned()), account);
        report.accounts += 1;
    }
    for (currency, sum) in &report.balance_sum_by_currency {
        if *sum != 0 {
            violations.push(format!("balances in {currency} sum to {sum}, not 0"));
        }
    }
    for (currency, sum) in &report.pending_sum_by_currency {
        if *sum != 0 {
            violations.push(format!("pending totals in {currency} sum to {sum}, not 0"));
        }
    }

    Ok(accounts)
}

/// Invariant 3: dense from the first held seq up to the counter.
fn verify_outbox(
    txn: &redb::ReadTransaction,
    report: &mut Report,
    violations: &mut Vec<String>,
) -> Result<Outbox, StoreError> {
    let meta = txn.open_table(META)?;
    let counter =
        |name: &str| Ok::<_, StoreError>(read_counter_leniently(&meta, name)?.unwrap_or(1));
    let mut events: BTreeMap<u64, EventRecord> = BTreeMap::new();
    for entry in txn.open_table(OUTBOX)?.iter()? {
        let (seq, bytes) = entry?;
        events.insert(seq.value(), decode(bytes.value())?);
    }
    report.events = events.len() as u64;
    let first_held = counter(META_OUTBOX_FIRST_HELD)?;
    report.outbox_first_held = first_held;
    for (expected, seq) in (first_held..).zip(events.keys()) {
        if *seq != expected {
            violations.push(format!(
                "outbox sequence jumps to {seq} where {expected} was due"
            ));
            break;
        }
    }
    let next_seq = counter(META_NEXT_EVENT_SEQ)?;
    if next_seq != first_held + report.events {
        violations.push(format!(
            "next event seq is {next_seq} with {} events",
            report.events
        ));
    }

    Ok(Outbox { events, first_held })
}

/// Invariant 2 for one finished record: its status fits its effect, and the effect is in the
/// store (the charge, the account and its event, the redriven letter). Counts each charge a
/// record claims, for "no charge answers two keys".
fn effect_is_consistent(
    record: &IdempotencyRecord,
    tenant: u32,
    seen: &Seen<'_>,
    charges_claimed: &mut HashMap<u64, u32>,
) -> bool {
    match &record.effect {
        Effect::None => record.status != 201,
        // Tenants and tokens live in their own tables; the cache reload checks them.
        Effect::Administrative => matches!(record.status, 200 | 201),
        Effect::DeadLetterRedriven { id } => {
            record.status == 200
                && seen
                    .letters
                    .get(id)
                    .is_some_and(|letter| letter.redriven_at_ms.is_some())
        }
        Effect::ChargeSucceeded { charge_number } => {
            *charges_claimed.entry(*charge_number).or_default() += 1;
            record.status == 201
                && seen
                    .entries
                    .charges
                    .get(charge_number)
                    .is_some_and(|(_, p)| p.expires_at_ms.is_none())
        }
        Effect::ChargeAuthorized { charge_number } => {
            *charges_claimed.entry(*charge_number).or_default() += 1;
            record.status == 201
                && seen
                    .entries
                    .charges
                    .get(charge_number)
                    .is_some_and(|(_, p)| p.expires_at_ms.is_some())
        }
        // At most one key ends an authorization: its state changes once (the checker's
        // "ended twice" looks at the events), so this asks only that it did end.
        Effect::ChargeSettled {
            charge_number,
            status,
        } => {
            record.status == 200
                && matches!(status, ChargeStatus::Succeeded | ChargeStatus::Canceled)
                && seen
                    .entries
                    .charges
                    .get(charge_number)
                    .is_some_and(|(_, p)| p.settled.is_some() && p.status == *status)
        }
        Effect::RefundSucceeded { refund_number } => {
            *charges_claimed.entry(*refund_number).or_default() += 1;
            record.status == 201 && seen.entries.refunds.contains_key(refund_number)
        }
        Effect::TransferSucceeded { transfer_number } => {
            *charges_claimed.entry(*transfer_number).or_default() += 1;
            record.status == 201 && seen.entries.transfers.contains_key(transfer_number)
        }
        Effect::AccountCreated { account, event_seq } => {
            record.status == 201
                && seen
                    .accounts
                    .contains_key(&(tenant, account.as_str().to_owned()))
                && (!seen.outbox.held(*event_seq)
                    || matches!(seen.outbox.events.get(event_seq),
                    Some(EventRecord { kind: EventKind::AccountCreated { account: a }, .. }) if a.id == *account))
        }
    }
}

/// An entry's stored answer names it by the id that finds it: what `ChargeIds` makes of its
/// number (legacy below an upgraded store's mark, opaque from it on). A replay returns the
/// stored body, so an answer whose id the store no longer resolves would send its client to a 404.
fn charge_answer_misnamed(record: &IdempotencyRecord, ids: &ChargeIds) -> Option<String> {
    #[derive(Deserialize)]
    struct Named {
        id: String,
    }
    let (kind, charge_number) = match record.effect {
        Effect::ChargeSucceeded { charge_number }
        | Effect::ChargeAuthorized { charge_number }
        | Effect::ChargeSettled { charge_number, .. } => (EntryKind::Charge, charge_number),
        Effect::RefundSucceeded { refund_number } => (EntryKind::Refund, refund_number),
        Effect::TransferSucceeded { transfer_number } => (EntryKind::Transfer, transfer_number),
        _ => return None,
    };
    let expected = ids.entry_id(kind, charge_number);
    match serde_json::from_slice::<Named>(&record.body) {
        Ok(named) if named.id == expected => None,
        Ok(named) => Some(format!(
            "the answer calls charge {charge_number} {}, its id is {expected}",
            named.id
        )),
        Err(error) => Some(format!(
            "the answer of charge {charge_number} names no id: {error}"
        )),
    }
}

/// Every held event has exactly one owning tenant: its row, or below `default_rows_from` tenant
/// 0 without one (a store from before the mark may still have tenant 0's row there).
fn verify_event_owners(
    txn: &redb::ReadTransaction,
    outbox: &Outbox,
    violations: &mut Vec<String>,
) -> Result<(), StoreError> {
    let (event_owners, default_rows_from) = super::auth::event_owners(txn)?;
    for seq in outbox.events.keys() {
        let owners = event_owners.get(seq).map_or(&[][..], Vec::as_slice);
        let owned_once = match owners {
            [_] if *seq >= default_rows_from => true,
            [] | [0] => *seq < default_rows_from,
            _ => false,
        };
        if !owned_once {
            violations.push(format!(
                "event {seq} has owning tenants {owners:?} (rows for tenant 0 from {default_rows_from})"
            ));
        }
    }

    Ok(())
}

/// Invariant 2: a 201 has exactly its effects, a decline has none; every key names one answer
/// and every answer one key.
fn verify_idempotency(
    txn: &redb::ReadTransaction,
    keys_overlay: Vec<(u32, String, u64)>,
    seen: &Seen<'_>,
    report: &mut Report,
    violations: &mut Vec<String>,
) -> Result<(), StoreError> {
    let mut charges_claimed: HashMap<u64, u32> = HashMap::new();
    let answers = txn.open_table(IDEMPOTENCY_ANSWERS)?;
    let mut answers_named: HashMap<u64, u32> = HashMap::new();
    // Finished keys are in the keyed table or the in-memory overlay (or both, with one number).
    let mut finished_keys: BTreeMap<(u32, String), u64> = BTreeMap::new();
    for entry in txn.open_table(IDEMPOTENCY_KEYS)?.iter()? {
        let (key, bytes) = entry?;
        let (tenant, key) = key.value();
        let pointer: AnswerPointer = decode(bytes.value())?;
        finished_keys.insert((tenant, key.to_owned()), pointer.answer);
    }
    for (tenant, key, number) in keys_overlay {
        match finished_keys.insert((tenant, key.clone()), number) {
            Some(in_table) if in_table != number => violations.push(format!(
                "key {key:?} points at answer {in_table} in the table and {number} in memory"
            )),
            _ => {}
        }
    }
    for ((tenant, key), number) in finished_keys {
        *answers_named.entry(number).or_default() += 1;
        let stored = answer(&answers, number)?;
        if stored.tenant != tenant || stored.key != key {
            violations.push(format!(
                "key {key:?} points at answer {number}, which answers {:?}",
                stored.key
            ));
        }
        let record: IdempotencyRecord = stored.record;
        report.idempotency_records += 1;
        let consistent = effect_is_consistent(&record, tenant, seen, &mut charges_claimed);
        if !consistent {
            violations.push(format!(
                "key {key:?}: status {} with effect {:?}",
                record.status, record.effect
            ));
        }
        if let Some(mismatch) = charge_answer_misnamed(&record, seen.charge_ids) {
            violations.push(format!("key {key:?}: {mismatch}"));
        }
    }
    if answers.len()? != report.idempotency_records {
        violations.push(format!(
            "{} idempotency answers for {} keys",
            answers.len()?,
            report.idempotency_records
        ));
    }
    for (number, keys) in answers_named {
        if keys != 1 {
            violations.push(format!("answer {number} is named by {keys} keys"));
        }
    }
    // Count only claims of charges that exist: a record naming a missing charge is already a
    // violation above, and must not make this subtraction underflow (found by fuzzing).
    let claimed_existing = charges_claimed
        .keys()
        .filter(|n| seen.entries.charges.contains_key(n))
        .count() as u64;
    report.charges_without_record = report.charges.saturating_sub(claimed_existing);
    for (number, claims) in charges_claimed {
        if claims != 1 {
            violations.push(format!("entry {number} is the answer of {claims} keys"));
        }
    }
    Ok(())
}

/// Invariant 4 and the mirrors: per origin, inbox rows are exactly 1..=applied_through, each
/// applied or dead-lettered once; mirrored totals are what the mirrored entries add up to, and
/// every mirror balances to zero per currency (`mirrors`). Returns the mirror accounts mirrored
/// entries moved.
fn verify_hub(
    txn: &redb::ReadTransaction,
    letters: &BTreeMap<u64, DeadLetter>,
    report: &mut Report,
    violations: &mut Vec<String>,
) -> Result<std::collections::HashSet<(String, String)>, StoreError> {
    verify_inboxes(txn, letters, report, violations)?;
    mirrors::verify_mirrors(txn, report, violations)
}

/// Per origin: inbox rows 1..=applied_through, each applied or parked in a dead letter that
/// holds it; the origin's counters agree; every dead letter names a known origin.
fn verify_inboxes(
    txn: &redb::ReadTransaction,
    letters: &BTreeMap<u64, DeadLetter>,
    report: &mut Report,
    violations: &mut Vec<String>,
) -> Result<(), StoreError> {
    report.dead_letters_parked = letters
        .values()
        .filter(|l| l.redriven_at_ms.is_none())
        .count() as u64;
    let inbox = txn.open_table(INBOX)?;
    let mut origin_names: Vec<String> = Vec::new();
    for entry in txn.open_table(ORIGINS)?.iter()? {
        let (origin, bytes) = entry?;
        let origin = origin.value().to_owned();
        let state: OriginState = decode(bytes.value())?;
        report.origins += 1;
        let (mut applied, mut parked, mut expected) = (0u64, 0u64, 1u64);
        for row in inbox.range((origin.as_str(), 0u64)..=(origin.as_str(), u64::MAX))? {
            let (key, bytes) = row?;
            let seq = key.value().1;
            let row: InboxRecord = decode(bytes.value())?;
            report.inbox_rows += 1;
            if seq != expected {
                violations.push(format!(
                    "inbox of {origin}: seq {seq} where {expected} was due"
                ));
            }
            expected = seq + 1;
            match row.outcome {
                InboxOutcome::Applied => applied += 1,
                InboxOutcome::DeadLettered { dead_letter_id } => {
                    parked += 1;
                    let matches = letters.get(&dead_letter_id).is_some_and(|l| {
                        l.origin == origin && l.event.seq == seq && l.redriven_at_ms.is_none()
                    });
                    if !matches {
                        violations.push(format!(
                            "inbox of {origin}: seq {seq} names dead letter {dead_letter_id}, which does not hold it"
                        ));
                    }
                }
            }
        }
        if expected - 1 != state.applied_through
            || applied != state.events_applied
            || parked != state.events_parked
        {
            violations.push(format!(
                "origin {origin}: state {state:?} but the inbox holds {} rows, {applied} applied, {parked} parked",
                expected - 1
            ));
        }
        origin_names.push(origin);
    }
    for letter in letters.values() {
        if !origin_names.contains(&letter.origin) {
            violations.push(format!("dead letter {} names unknown origin", letter.id));
        }
    }
    Ok(())
}
