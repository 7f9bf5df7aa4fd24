//! The replication tables: sink cursors on a sending node; origins, inbox, mirrored accounts,
//! mirrored charges and dead letters on a hub.
//!
//! A hub keeps each origin's ledger apart, as a mirror keyed by (origin node, account id): a
//! terminal's `alice` and another terminal's `alice` are different accounts, and the hub's own
//! accounts are untouched by replication. Mirrored accounts follow the same rules as local ones
//! (`mirror`), so every mirror balances to zero per currency, and an event that would break a
//! rule is refused rather than applied half.

mod mirror;
mod statement;

use std::collections::HashMap;

use redb::{ReadableDatabase, ReadableTable, WriteTransaction};

use super::codec::{decode, encode};
use super::journal::{Logged, Redo};
use super::records::{DeadLetter, Event, EventBody, InboxOutcome, InboxRecord, OriginState};
use super::schema::{
    COUNTER_NEXT_APPLIED_INDEX, COUNTER_NEXT_DEAD_LETTER_ID, DEAD_LETTERS, INBOX, ORIGINS,
    REPLICA_ACCOUNTS, REPLICA_CHARGE_PROGRESS, REPLICA_CHARGES, REPLICA_ENTRY_NUMBERS,
    REPLICA_REFUNDS, REPLICA_STATEMENTS, REPLICA_TRANSFERS, REPLICATION_COUNTERS, SINK_CURSORS,
};
use super::{Store, StoreError};
use crate::ledger::{Account, AccountId, Charge, ChargeProgress};

/// Why this hub cannot apply an event; it becomes the dead letter's reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyRefusal(pub String);

/// What a redrive found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redrive {
    NotFound,
    /// Applied now; the dead letter is marked redriven.
    Applied(DeadLetter),
    /// Redriven before: nothing done.
    AlreadyApplied(DeadLetter),
    /// Still refused; the dead letter keeps its place with the new reason and one more attempt.
    StillRefused(DeadLetter),
}

pub struct ReplicationTables<'txn> {
    cursors: Logged<'txn, &'static str, u64>,
    origins: Logged<'txn, &'static str, &'static [u8]>,
    inbox: Logged<'txn, (&'static str, u64), &'static [u8]>,
    accounts: Logged<'txn, (&'static str, &'static str), &'static [u8]>,
    charges: Logged<'txn, (&'static str, u64), &'static [u8]>,
    /// Keyed like `charges`, by the event that created the charge.
    progress: Logged<'txn, (&'static str, u64), &'static [u8]>,
    refunds: Logged<'txn, (&'static str, u64), &'static [u8]>,
    transfers: Logged<'txn, (&'static str, u64), &'static [u8]>,
    entry_numbers: Logged<'txn, (&'static str, u64), u64>,
    /// (origin, account, origin event seq, leg): the mirrored statements (`statement.rs`).
    statements: Logged<'txn, (&'static str, &'static str, u64, u8), &'static [u8]>,
    dead_letters: Logged<'txn, u64, &'static [u8]>,
    counters: Logged<'txn, &'static str, u64>,
    /// Mirrored accounts changed by this transaction, written once by `flush`.
    staged_accounts: HashMap<(String, AccountId), Account>,
    staged_origins: HashMap<String, OriginState>,
    next_dead_letter_id: u64,
    next_applied_index: u64,
    /// The two counters as read at open: `flush` writes them only if they moved, so a commit
    /// that replicated nothing rewrites no page of the counters table.
    counters_at_open: (u64, u64),
}

impl<'txn> ReplicationTables<'txn> {
    pub(super) fn open(txn: &'txn WriteTransaction, redo: &'txn Redo) -> Result<Self, StoreError> {
        let counters = Logged::open(txn, redo, REPLICATION_COUNTERS)?;
        let counter = |name: &str| -> Result<u64, StoreError> {
            Ok(counters.get(name)?.map_or(1, |v| v.value()))
        };
        let next_dead_letter_id = counter(COUNTER_NEXT_DEAD_LETTER_ID)?;
        let next_applied_index = counter(COUNTER_NEXT_APPLIED_INDEX)?;
        Ok(ReplicationTables {
            cursors: Logged::open(txn, redo, SINK_CURSORS)?,
            origins: Logged::open(txn, redo, ORIGINS)?,
            inbox: Logged::open(txn, redo, INBOX)?,
            accounts: Logged::open(txn, redo, REPLICA_ACCOUNTS)?,
            charges: Logged::open(txn, redo, REPLICA_CHARGES)?,
            progress: Logged::open(txn, redo, REPLICA_CHARGE_PROGRESS)?,
            refunds: Logged::open(txn, redo, REPLICA_REFUNDS)?,
            transfers: Logged::open(txn, redo, REPLICA_TRANSFERS)?,
            entry_numbers: Logged::open(txn, redo, REPLICA_ENTRY_NUMBERS)?,
            statements: Logged::open(txn, redo, REPLICA_STATEMENTS)?,
            dead_letters: Logged::open(txn, redo, DEAD_LETTERS)?,
            counters,
            staged_accounts: HashMap::new(),
            staged_origins: HashMap::new(),
            next_dead_letter_id,
            next_applied_index,
            counters_at_open: (next_dead_letter_id, next_applied_index),
        })
    }

    /// Moves a sink's cursor forward; a cursor never moves back (a late, stale update is ignored).
    pub fn advance_cursor(&mut self, sink: &str, through: u64) -> Result<(), StoreError> {
        let current = self.cursors.get(sink)?.map_or(0, |v| v.value());
        if through > current {
            self.cursors.insert(sink, through)?;
        }
        Ok(())
    }

    /// The origin as this transaction left it, or as stored, or new.
    pub fn origin(&self, origin: &str) -> Result<OriginState, StoreError> {
        if let Some(staged) = self.staged_origins.get(origin) {
            return Ok(staged.clone());
        }
        Ok(self
            .origins
            .get(origin)?
            .map(|bytes| decode(bytes.value()))
            .transpose()?
            .unwrap_or_default())
    }

    fn mirror_account(&self, origin: &str, id: &AccountId) -> Result<Option<Account>, StoreError> {
        if let Some(staged) = self.staged_accounts.get(&(origin.to_owned(), id.clone())) {
            return Ok(Some(staged.clone()));
        }
        let found = self.accounts.get((origin, id.as_str()))?;
        found.map(|bytes| decode(bytes.value())).transpose()
    }

    /// Applies one event's effects to `origin`'s mirror, or refuses it and changes nothing.
    pub fn apply_event(
        &mut self,
        origin: &str,
        event: &Event,
    ) -> Result<Result<(), ApplyRefusal>, StoreError> {
        // The origin's seq and time of the event key and date its statement lines.
        let at = statement::OriginEvent {
            seq: event.seq,
            at_ms: event.created_at_ms,
        };
        mirror::outcome(match &event.body {
            EventBody::AccountCreated(account) => self.mirror_new_account(origin, account),
            EventBody::ChargeSucceeded(charge) => self.mirror_charge(origin, at, charge, None),
            EventBody::ChargeAuthorized {
                charge,
                expires_at_ms,
            } => self.mirror_charge(origin, at, charge, Some(*expires_at_ms)),
            EventBody::ChargeSettled {
                charge,
                status,
                amount_captured,
            } => self.mirror_settlement(origin, at, charge, *status, *amount_captured),
            EventBody::RefundSucceeded { refund, charge } => {
                self.mirror_refund(origin, at, refund, charge)
            }
            EventBody::TransferSucceeded(transfer) => self.mirror_transfer(origin, at, transfer),
        })
    }

    fn take_applied_index(&mut self) -> u64 {
        let index = self.next_applied_index;
        self.next_applied_index += 1;
        index
    }

    fn put_inbox(
        &mut self,
        origin: &str,
        seq: u64,
        outcome: InboxOutcome,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let record = InboxRecord {
            applied_index: self.take_applied_index(),
            at_ms: now_ms,
            outcome,
        };
        self.inbox
            .insert((origin, seq), encode(&record).as_slice())?;
        Ok(())
    }

    /// Records that event `seq`, the next one of `origin`, was applied.
    pub fn record_applied(
        &mut self,
        origin: &str,
        seq: u64,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let mut state = self.origin(origin)?;
        debug_assert_eq!(seq, state.applied_through + 1);
        self.put_inbox(origin, seq, InboxOutcome::Applied, now_ms)?;
        state.applied_through = seq;
        state.events_applied += 1;
        state.last_applied_at_ms = now_ms;
        self.staged_origins.insert(origin.to_owned(), state);
        Ok(())
    }

    /// Parks `event`, the next one of `origin`, as a dead letter, so the events behind it can flow.
    pub fn park(
        &mut self,
        origin: &str,
        event: &Event,
        reason: String,
        attempts: u32,
        now_ms: u64,
    ) -> Result<u64, StoreError> {
        let mut state = self.origin(origin)?;
        debug_assert_eq!(event.seq, state.applied_through + 1);
        let id = self.next_dead_letter_id;
        self.next_dead_letter_id += 1;
        let letter = DeadLetter {
            id,
            origin: origin.to_owned(),
            event: event.clone(),
            reason,
            attempts,
            parked_at_ms: now_ms,
            redriven_at_ms: None,
        };
        self.dead_letters.insert(id, encode(&letter).as_slice())?;
        self.put_inbox(
            origin,
            event.seq,
            InboxOutcome::DeadLettered { dead_letter_id: id },
            now_ms,
        )?;
        state.applied_through = event.seq;
        state.events_parked += 1;
        self.staged_origins.insert(origin.to_owned(), state);
        Ok(id)
    }

    /// Tries a dead letter again. Applying it turns its inbox row to applied; it happens once.
    pub fn redrive(&mut self, id: u64, now_ms: u64) -> Result<Redrive, StoreError> {
        let Some(mut letter) = self
            .dead_letters
            .get(id)?
            .map(|bytes| decode::<DeadLetter>(bytes.value()))
            .transpose()?
        else {
            return Ok(Redrive::NotFound);
        };
        if letter.redriven_at_ms.is_some() {
            return Ok(Redrive::AlreadyApplied(letter));
        }
        let outcome = match self.apply_event(&letter.origin, &letter.event)? {
            Ok(()) => {
                letter.redriven_at_ms = Some(now_ms);
                self.put_inbox(
                    &letter.origin,
                    letter.event.seq,
                    InboxOutcome::Applied,
                    now_ms,
                )?;
                let mut state = self.origin(&letter.origin)?;
                state.events_applied += 1;
                state.events_parked = state.events_parked.saturating_sub(1);
                state.last_applied_at_ms = now_ms;
                self.staged_origins.insert(letter.origin.clone(), state);
                Redrive::Applied(letter.clone())
            }
            Err(refusal) => {
                letter.attempts = letter.attempts.saturating_add(1);
                letter.reason = refusal.0;
                Redrive::StillRefused(letter.clone())
            }
        };
        self.dead_letters.insert(id, encode(&letter).as_slice())?;
        Ok(outcome)
    }

    /// Writes staged mirrors, origin states and counters. Called once, just before commit.
    pub(super) fn flush(&mut self) -> Result<(), StoreError> {
        for ((origin, id), account) in self.staged_accounts.drain() {
            debug_assert!(account.within_overdraft_limit());
            self.accounts
                .insert((origin.as_str(), id.as_str()), encode(&account).as_slice())?;
        }
        for (origin, state) in self.staged_origins.drain() {
            self.origins
                .insert(origin.as_str(), encode(&state).as_slice())?;
        }
        let (dead_letter_id_at_open, applied_index_at_open) = self.counters_at_open;
        if self.next_dead_letter_id != dead_letter_id_at_open {
            self.counters
                .insert(COUNTER_NEXT_DEAD_LETTER_ID, self.next_dead_letter_id)?;
        }
        if self.next_applied_index != applied_index_at_open {
            self.counters
                .insert(COUNTER_NEXT_APPLIED_INDEX, self.next_applied_index)?;
        }
        self.counters_at_open = (self.next_dead_letter_id, self.next_applied_index);
        Ok(())
    }
}

/// Read side, from MVCC snapshots: never blocks the writer.
impl Store {
    /// Every sink's cursor: (sink name, highest acknowledged seq).
    pub fn sink_cursors(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(SINK_CURSORS)?;
        table
            .iter()?
            .map(|entry| {
                let (name, through) = entry?;
                Ok((name.value().to_owned(), through.value()))
            })
            .collect()
    }

    pub fn sink_cursor(&self, sink: &str) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(SINK_CURSORS)?;
        Ok(table.get(sink)?.map_or(0, |v| v.value()))
    }

    /// Every origin this hub has taken events from, in node id order.
    pub fn origins(&self) -> Result<Vec<(String, OriginState)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(ORIGINS)?;
        table
            .iter()?
            .map(|entry| {
                let (origin, bytes) = entry?;
                Ok((origin.value().to_owned(), decode(bytes.value())?))
            })
            .collect()
    }

    /// Up to `limit` inbox rows of `origin` with `seq > after`, in sequence order.
    pub fn inbox_after(
        &self,
        origin: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, InboxRecord)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(INBOX)?;
        let start = after.saturating_add(1);
        table
            .range((origin, start)..=(origin, u64::MAX))?
            .take(limit)
            .map(|entry| {
                let (key, bytes) = entry?;
                Ok((key.value().1, decode(bytes.value())?))
            })
            .collect()
    }

    pub fn mirror_account(
        &self,
        origin: &str,
        id: &AccountId,
    ) -> Result<Option<Account>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(REPLICA_ACCOUNTS)?;
        let found = table.get((origin, id.as_str()))?;
        found.map(|bytes| decode(bytes.value())).transpose()
    }

    /// The mirrored charge that `origin`'s event `seq` created, with its progress (a plain
    /// immediate charge with nothing refunded has no row: succeeded, captured whole).
    pub fn mirror_charge(
        &self,
        origin: &str,
        seq: u64,
    ) -> Result<Option<(Charge, ChargeProgress)>, StoreError> {
        let txn = self.db.begin_read()?;
        let Some(bytes) = txn.open_table(REPLICA_CHARGES)?.get((origin, seq))? else {
            return Ok(None);
        };
        let charge: Charge = decode(bytes.value())?;
        let progress = match txn
            .open_table(REPLICA_CHARGE_PROGRESS)?
            .get((origin, seq))?
        {
            Some(bytes) => decode(bytes.value())?,
            None => ChargeProgress::immediate(&charge),
        };
        Ok(Some((charge, progress)))
    }

    /// Up to `limit` dead letters with `id > after`, parked and redriven alike, in id order.
    pub fn dead_letters_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(DEAD_LETTERS)?;
        table
            .range(after.saturating_add(1)..)?
            .take(limit)
            .map(|entry| decode(entry?.1.value()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::Store;
    use super::super::records::Event;

    /// Applies `seq` of `origin` (a new account); returns the inbox row's applied index.
    fn apply(store: &Store, origin: &str, seq: u64) -> u64 {
        store
            .commit_batch(|tables| {
                let tables = tables.replication();
                let event = Event::account_created_for_test(seq, &format!("acct-{seq}"));
                tables.apply_event(origin, &event)?.expect("applies");
                tables.record_applied(origin, seq, 1)
            })
            .expect("committed");
        let rows = store.inbox_after(origin, seq - 1, 1).expect("inbox");
        rows[0].1.applied_index
    }

    fn park(store: &Store, origin: &str, seq: u64) -> u64 {
        store
            .commit_batch(|tables| {
                let event = Event::account_created_for_test(seq, &format!("acct-{seq}"));
                tables
                    .replication()
                    .park(origin, &event, "refused".into(), 3, 1)
            })
            .expect("committed")
    }

    #[test]
    fn counters_skipped_by_a_commit_still_continue_after_a_reopen() {
        // The counters are written only by commits that moved them: a commit that replicated
        // nothing, and a reopen, must neither reset nor reuse an id.
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("opens");
        assert_eq!(apply(&store, "node-a", 1), 1);
        assert_eq!(park(&store, "node-a", 2), 1);
        store.commit_batch(|_| Ok(())).expect("an empty commit");
        drop(store);

        let store = Store::open(dir.path()).expect("reopens");
        assert_eq!(
            apply(&store, "node-a", 3),
            3,
            "inbox index 2 went to the parked event"
        );
        assert_eq!(park(&store, "node-a", 4), 2);
        drop(store);

        let store = Store::open(dir.path()).expect("reopens again");
        assert_eq!(apply(&store, "node-b", 1), 5);
        let letters = store.dead_letters_after(0, 10).expect("letters");
        let ids: Vec<u64> = letters.iter().map(|l| l.id).collect();
        assert_eq!(ids, [1, 2]);
    }

    mod lifecycle {
        use super::super::ApplyRefusal;
        use crate::ledger::{
            Account, AccountId, Amount, Charge, ChargeStatus, Currency, EntryType, Metadata,
            NewAccount, PostingSide, Refund, Transfer, TransferLeg,
        };
        use crate::store::records::{Event, EventBody};
        use crate::store::test_support::{assert_running_sums, mirrored_statement};
        use crate::store::{Redrive, Store, check};

        const ORIGIN: &str = "till-1";

        fn id(text: &str) -> AccountId {
            AccountId::parse(text).expect("id")
        }

        fn amount(minor: u64) -> Amount {
            Amount::new(minor).expect("amount")
        }

        fn eur() -> Currency {
            Currency::parse("EUR").expect("currency")
        }

        fn charge(number: u64, event_seq: u64, source: &str, minor: u64) -> Charge {
            Charge {
                number,
                source: id(source),
                destination: id(if source == "shop" { "alice" } else { "shop" }),
                amount: amount(minor),
                currency: eur(),
                metadata: Metadata::default(),
                created_at_ms: 1,
                event_seq,
            }
        }

        /// Offers `body` as `ORIGIN`'s next event; records it when the mirror applies it.
        fn offer(store: &Store, body: EventBody) -> Result<(), ApplyRefusal> {
            store
                .commit_batch(|tables| {
                    let tables = tables.replication();
                    let seq = tables.origin(ORIGIN)?.applied_through + 1;
                    let event = Event {
                        seq,
                        created_at_ms: 2,
                        body,
                    };
                    let outcome = tables.apply_event(ORIGIN, &event)?;
                    if outcome.is_ok() {
                        tables.record_applied(ORIGIN, seq, 2)?;
                    }
                    Ok(outcome)
                })
                .expect("committed")
        }

        fn refused_because(store: &Store, body: EventBody, why: &str) {
            let before = store.mirror_account(ORIGIN, &id("shop")).expect("readable");
            let lines_before = ["alice", "shop"].map(|a| mirrored_statement(store, ORIGIN, a));
            match offer(store, body) {
                Err(ApplyRefusal(reason)) => assert!(reason.contains(why), "{reason}"),
                Ok(()) => panic!("applied; expected a refusal for {why}"),
            }
            let after = store.mirror_account(ORIGIN, &id("shop")).expect("readable");
            assert_eq!(before, after, "a refusal changes nothing");
            let lines_after = ["alice", "shop"].map(|a| mirrored_statement(store, ORIGIN, a));
            assert_eq!(
                lines_before, lines_after,
                "a refusal writes no statement line"
            );
        }

        /// The mirror of `name`, which must exist.
        fn mirrored(store: &Store, name: &str) -> Account {
            store
                .mirror_account(ORIGIN, &id(name))
                .expect("readable")
                .expect("mirrored")
        }

        /// `ORIGIN`'s events `first..` with these bodies, numbered in order.
        fn events_from(first: u64, bodies: Vec<EventBody>) -> Vec<Event> {
            (first..)
                .zip(bodies)
                .map(|(seq, body)| Event {
                    seq,
                    created_at_ms: 1000 + seq,
                    body,
                })
                .collect()
        }

        /// Applies `event` (the origin's next) and records it; or parks it when `park`.
        fn deliver(store: &Store, event: &Event, park: bool) -> Result<(), ApplyRefusal> {
            store
                .commit_batch(|tables| {
                    let tables = tables.replication();
                    assert_eq!(tables.origin(ORIGIN)?.applied_through + 1, event.seq);
                    if park {
                        tables.park(ORIGIN, event, "held back".into(), 1, 3)?;
                        return Ok(Ok(()));
                    }
                    let outcome = tables.apply_event(ORIGIN, event)?;
                    if outcome.is_ok() {
                        tables.record_applied(ORIGIN, event.seq, 3)?;
                    }
                    Ok(outcome)
                })
                .expect("committed")
        }

        fn redrive(store: &Store, dead_letter: u64) -> Redrive {
            store
                .commit_batch(|tables| tables.replication().redrive(dead_letter, 4))
                .expect("committed")
        }

        /// Seqs 1-3 open the bank, alice and the shop; the rest are one of each kind of entry.
        fn mixed_events() -> Vec<Event> {
            let mut bodies = Vec::new();
            for (name, overdraft_limit) in [("bank", None), ("alice", Some(0)), ("shop", Some(0))] {
                let new = NewAccount {
                    id: id(name),
                    currency: eur(),
                    overdraft_limit,
                };
                bodies.push(EventBody::AccountCreated(Account::open(&new, 1)));
            }
            let mut sale = charge(1, 4, "bank", 100);
            sale.destination = id("alice");
            bodies.push(EventBody::ChargeSucceeded(sale));
            bodies.push(EventBody::ChargeSucceeded(charge(2, 5, "alice", 30)));
            let held = charge(3, 6, "alice", 20);
            bodies.push(EventBody::ChargeAuthorized {
                charge: held.clone(),
                expires_at_ms: 1,
            });
            bodies.push(settled(&held, ChargeStatus::Succeeded, 15));
            bodies.push(refund(4, 8, &held, 5));
            let voided = charge(5, 9, "alice", 7);
            bodies.push(EventBody::ChargeAuthorized {
                charge: voided.clone(),
                expires_at_ms: 1,
            });
            bodies.push(settled(&voided, ChargeStatus::Canceled, 0));
            let leg = |source: &str, destination: &str, minor| TransferLeg {
                source: id(source),
                destination: id(destination),
                amount: amount(minor),
            };
            bodies.push(EventBody::TransferSucceeded(Transfer {
                number: 6,
                currency: eur(),
                legs: vec![leg("shop", "alice", 8), leg("alice", "bank", 3)],
                metadata: Metadata::default(),
                created_at_ms: 1011,
                event_seq: 11,
            }));
            events_from(1, bodies)
        }

        /// One batch of every kind of entry: each mirrored account's statement, paged either
        /// way, has one line per posting in the origin's order, with the origin's numbers and
        /// times, and each line's totals are the running sum, the last the account's.
        #[test]
        fn a_mirrored_statement_has_a_line_per_posting_with_running_totals() {
            let dir = tempfile::tempdir().expect("temp dir");
            let store = Store::open(dir.path()).expect("opens");
            let events = mixed_events();
            store
                .commit_batch(|tables| {
                    let tables = tables.replication();
                    for event in &events {
                        tables.apply_event(ORIGIN, event)?.expect("applies");
                        tables.record_applied(ORIGIN, event.seq, 3)?;
                    }
                    Ok(())
                })
                .expect("committed");
            for name in ["bank", "alice", "shop"] {
                let lines = mirrored_statement(&store, ORIGIN, name);
                assert_running_sums(&lines, &mirrored(&store, name));
                for entry in &lines {
                    assert_eq!(entry.line.created_at_ms, 1000 + entry.seq, "{}", entry.id());
                }
            }
            use EntryType::{Authorization, Capture, Charge, Refund, Release, Transfer};
            use PostingSide::{Credit, Debit};
            // (seq, leg, type, side, amount, made_by, entry): a settlement's entry is 0.
            let expected = [
                (4, 1, Charge, Credit, 100, 1, 1),
                (5, 0, Charge, Debit, 30, 2, 2),
                (6, 0, Authorization, Debit, 20, 3, 3),
                (7, 0, Release, Debit, 20, 3, 0),
                (7, 2, Capture, Debit, 15, 3, 0),
                (8, 1, Refund, Credit, 5, 4, 4),
                (9, 0, Authorization, Debit, 7, 5, 5),
                (10, 0, Release, Debit, 7, 5, 0),
                (11, 1, Transfer, Credit, 8, 6, 6),
                (11, 2, Transfer, Debit, 3, 6, 6),
            ];
            let alice: Vec<_> = mirrored_statement(&store, ORIGIN, "alice")
                .into_iter()
                .map(|e| {
                    let l = e.line;
                    let made = (l.made_by, l.entry);
                    (
                        e.seq,
                        e.leg,
                        l.entry_type,
                        l.side,
                        l.amount.minor(),
                        made.0,
                        made.1,
                    )
                })
                .collect();
            assert_eq!(alice, expected);
            let alice = mirrored(&store, "alice");
            assert_eq!(
                (alice.balance(), alice.debits_pending),
                (100 - 30 - 15 + 5 + 8 - 3, 0)
            );
            check::assert_consistent(&store);
        }

        /// A dead letter redriven after the events behind it: its lines go in at its seq and the
        /// later lines are replayed on top, so the statements are those of an in-order mirror.
        /// A settlement numbered before its charge is refused at redrive.
        #[test]
        fn a_redriven_event_takes_its_place_in_the_origin_order_of_the_statement() {
            let events = mixed_events();
            let (in_order_dir, redriven_dir) = (
                tempfile::tempdir().expect("temp dir"),
                tempfile::tempdir().expect("temp dir"),
            );
            let in_order = Store::open(in_order_dir.path()).expect("opens");
            let redriven = Store::open(redriven_dir.path()).expect("opens");
            for event in &events {
                deliver(&in_order, event, false).expect("applies");
                // The immediate charge of seq 5 is held back while the lifecycle behind it flows.
                deliver(&redriven, event, event.seq == 5).expect("applies");
            }
            assert!(
                mirrored_statement(&redriven, ORIGIN, "alice")
                    .iter()
                    .all(|l| l.seq != 5)
            );
            assert!(matches!(redrive(&redriven, 1), Redrive::Applied(_)));
            for name in ["bank", "alice", "shop"] {
                let lines = mirrored_statement(&redriven, ORIGIN, name);
                assert_eq!(lines, mirrored_statement(&in_order, ORIGIN, name), "{name}");
                assert_running_sums(&lines, &mirrored(&redriven, name));
            }

            // A capture numbered 12, of an authorization numbered 13: no origin sends that.
            let late = charge(7, 13, "alice", 4);
            let early = events_from(
                12,
                vec![
                    settled(&late, ChargeStatus::Succeeded, 4),
                    EventBody::ChargeAuthorized {
                        charge: late,
                        expires_at_ms: 1,
                    },
                ],
            );
            deliver(&redriven, &early[0], true).expect("parked");
            deliver(&redriven, &early[1], false).expect("applies");
            let Redrive::StillRefused(letter) = redrive(&redriven, 2) else {
                panic!("a settlement before its charge was applied");
            };
            assert!(
                letter.reason.contains("not later than"),
                "{}",
                letter.reason
            );
            let alice = mirrored_statement(&redriven, ORIGIN, "alice");
            assert_running_sums(&alice, &mirrored(&redriven, "alice"));
            assert_eq!(alice.last().map(|l| l.seq), Some(13));
            check::assert_consistent(&redriven);
        }

        fn settled(charge: &Charge, status: ChargeStatus, amount_captured: u64) -> EventBody {
            EventBody::ChargeSettled {
                charge: charge.clone(),
                status,
                amount_captured,
            }
        }

        fn refund(number: u64, event_seq: u64, charge: &Charge, minor: u64) -> EventBody {
            EventBody::RefundSucceeded {
                refund: Refund {
                    number,
                    charge_number: charge.number,
                    amount: amount(minor),
                    currency: eur(),
                    metadata: Metadata::default(),
                    created_at_ms: 2,
                    event_seq,
                },
                charge: charge.clone(),
            }
        }

        /// Seqs 1-3: the bank (no limit), alice and the shop (limit 0); 4: the bank pays alice
        /// 100; 5: alice authorizes 60 to the shop.
        fn hub_with_an_authorization() -> (tempfile::TempDir, Store, Charge, Charge) {
            let dir = tempfile::tempdir().expect("temp dir");
            let store = Store::open(dir.path()).expect("opens");
            for (name, overdraft_limit) in [("bank", None), ("alice", Some(0)), ("shop", Some(0))] {
                let new = NewAccount {
                    id: id(name),
                    currency: eur(),
                    overdraft_limit,
                };
                offer(&store, EventBody::AccountCreated(Account::open(&new, 1))).expect("opens");
            }
            let mut sale = charge(1, 4, "bank", 100);
            sale.destination = id("alice");
            offer(&store, EventBody::ChargeSucceeded(sale.clone())).expect("posts");
            let held = charge(2, 5, "alice", 60);
            let authorized = EventBody::ChargeAuthorized {
                charge: held.clone(),
                // Long past on any clock: only the origin's event ends it.
                expires_at_ms: 1,
            };
            offer(&store, authorized).expect("holds");
            (dir, store, sale, held)
        }

        /// Each event a correct origin could not have sent next is refused and changes nothing;
        /// the ones it could are applied; the mirror stays consistent throughout.
        #[test]
        fn the_mirror_refuses_what_the_origin_could_not_have_decided() {
            let (_dir, store, sale, held) = hub_with_an_authorization();
            let unknown = charge(9, 99, "alice", 60);
            refused_because(
                &store,
                settled(&unknown, ChargeStatus::Canceled, 0),
                "not in the mirror",
            );
            let mut other = held.clone();
            other.amount = amount(61);
            refused_because(
                &store,
                settled(&other, ChargeStatus::Canceled, 0),
                "differs",
            );
            refused_because(
                &store,
                settled(&sale, ChargeStatus::Canceled, 0),
                "not an authorization",
            );
            refused_because(&store, refund(3, 6, &held, 1), "the charge is authorized");
            refused_because(
                &store,
                settled(&held, ChargeStatus::Succeeded, 61),
                "more than the 60 authorized",
            );
            offer(&store, settled(&held, ChargeStatus::Succeeded, 40)).expect("captures 40");
            refused_because(
                &store,
                settled(&held, ChargeStatus::Canceled, 0),
                "the charge is succeeded",
            );
            refused_because(&store, refund(3, 7, &held, 41), "40 is left to refund");
            offer(&store, refund(3, 7, &held, 40)).expect("refunds all 40");
            let overdraw = EventBody::TransferSucceeded(Transfer {
                number: 4,
                currency: eur(),
                legs: vec![
                    TransferLeg {
                        source: id("alice"),
                        destination: id("shop"),
                        amount: amount(10),
                    },
                    TransferLeg {
                        source: id("shop"),
                        destination: id("alice"),
                        amount: amount(11),
                    },
                ],
                metadata: Metadata::default(),
                created_at_ms: 2,
                event_seq: 8,
            });
            // The shop has 10 after the first leg: the second one would take it below 0.
            refused_because(&store, overdraw, "transfer leg 1");
            let (_, progress) = store
                .mirror_charge(ORIGIN, 5)
                .expect("readable")
                .expect("mirrored");
            assert_eq!(
                (
                    progress.status,
                    progress.amount_captured,
                    progress.amount_refunded
                ),
                (ChargeStatus::Succeeded, 40, 40)
            );
            let alice = store
                .mirror_account(ORIGIN, &id("alice"))
                .expect("readable");
            let alice = alice.expect("mirrored");
            assert_eq!((alice.balance(), alice.debits_pending), (100, 0));
            let report = check::assert_consistent(&store);
            assert_eq!((report.mirrored_charges, report.mirrored_refunds), (2, 1));
        }

        /// The checker recomputes all four totals: a mirrored hold that drifted from the open
        /// authorizations is reported.
        #[test]
        fn check_reports_a_mirrored_hold_that_no_authorization_makes() {
            let (_dir, store, _, _) = hub_with_an_authorization();
            assert_eq!(
                check::assert_consistent(&store).mirrored_authorizations_open,
                1
            );
            store
                .commit_batch(|tables| {
                    let tables = tables.replication();
                    let mut shop = tables
                        .mirror_account(ORIGIN, &id("shop"))?
                        .expect("mirrored");
                    shop.credits_pending += 1;
                    tables
                        .staged_accounts
                        .insert((ORIGIN.to_owned(), shop.id.clone()), shop);
                    Ok(())
                })
                .expect("committed");
            let report = check::verify(&store).expect("readable");
            let found = |text: &str| report.violations.iter().any(|v| v.contains(text));
            assert!(
                found("open authorizations hold 0/60"),
                "{:?}",
                report.violations
            );
            assert!(found("pending totals sum to 1"), "{:?}", report.violations);
        }
    }
}
