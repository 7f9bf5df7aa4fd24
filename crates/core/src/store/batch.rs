//! The tables of one write transaction, as the writer sees them while it applies a batch.
//!
//! Accounts touched by the batch are kept in memory and written once at the end, so a hot account
//! charged a hundred times in one batch costs one B-tree update, and every command sees the
//! balances left by the commands before it in the same batch.

use std::collections::HashMap;

use redb::{ReadableTable, WriteTransaction};

use super::StoreError;
use super::accounts::{self, AccountMap, AccountOverlay};
use super::answers::{self, AnswerRow};
use super::auth::AuthTables;
use super::codec::{decode, encode};
use super::history::overlay::{LineChanges, StatementOverlay};
use super::journal::{Derived, Logged, Redo};
use super::keys::{self, KeyChanges, KeyName, KeyOverlay, key_name, with_key_name};
use super::records::{EventKind, EventRecord, IdempotencyRecord};
use super::replication::ReplicationTables;
use super::schema::{
    ACCOUNTS, CHARGES, IDEMPOTENCY_ANSWERS, IDEMPOTENCY_KEYS, META, META_NEXT_ANSWER_NUMBER,
    META_NEXT_ENTRY_NUMBER, META_NEXT_EVENT_SEQ, META_OUTBOX_FIRST_HELD, OUTBOX, POSTINGS,
};
use super::schema::{ACCOUNTS_BY_CREATION, CHARGE_REFUNDS, STATEMENTS, TENANT_ENTRIES, TIMELINE};
use super::schema::{AUTHORIZATION_EXPIRY, CHARGE_PROGRESS, REFUNDS, TRANSFERS};
use super::schema::{META_STATEMENTS_THROUGH_ENTRY, SETTLEMENT_ENTRIES};
use super::schema::{read_counter, write_counter};
use crate::idempotency::IdempotencyKey;
use crate::ledger::{Account, AccountId, Charge, ChargeIds, EntryOf, NewCharge, Posting, TenantId};

mod history;
mod lifecycle;

pub struct BatchTables<'txn> {
    redo: &'txn Redo,
    accounts: Logged<'txn, (u32, &'static str), &'static [u8]>,
    idempotency: Logged<'txn, (u32, &'static str), &'static [u8]>,
    answers: Logged<'txn, u64, &'static [u8]>,
    next_answer_number: u64,
    /// Finished keys not yet in `idempotency`, as committed (see `store/keys.rs`).
    key_overlay: &'txn KeyOverlay,
    /// Keys this batch finished, merged and swept: what the key overlay learns after the commit.
    key_changes: KeyChanges,
    /// `key_changes.added` by name, for the re-check of later commands in the same batch.
    keys_finished_in_batch: HashMap<KeyName, u64>,
    charges: Logged<'txn, u64, &'static [u8]>,
    postings: Logged<'txn, (u64, u8), &'static [u8]>,
    progress: Logged<'txn, u64, &'static [u8]>,
    expiry: Logged<'txn, (u64, u64), ()>,
    refunds: Logged<'txn, u64, &'static [u8]>,
    transfers: Logged<'txn, u64, &'static [u8]>,
    outbox: Logged<'txn, u64, &'static [u8]>,
    /// Written only by merges of the statement overlay, outside the redo (see `Derived`).
    statements: Derived<'txn, (u32, &'static str, u64, u8), &'static [u8]>,
    settlement_entries: Logged<'txn, u64, u64>,
    /// `meta.statements_through_entry` as this batch found it.
    statements_through_entry: u64,
    /// Lines not yet in `statements` (see `history/overlay.rs`).
    statement_overlay: &'txn StatementOverlay,
    /// Lines this batch wrote and merged: what the statement overlay learns after the commit.
    line_changes: LineChanges,
    tenant_entries: Logged<'txn, (u32, u8, u64), &'static [u8]>,
    /// (tenant, kind, seq, number) of the entries this batch made, written as blocks at `flush`.
    listed_added: Vec<(u32, u8, u64, u64)>,
    charge_refunds: Logged<'txn, (u64, u64), u64>,
    accounts_by_creation: Logged<'txn, (u32, u64, &'static str), ()>,
    timeline: Logged<'txn, u64, u64>,
    /// The time of the last event committed (the timeline's last key): no row goes below it.
    timeline_floor_ms: u64,
    /// (ms, last seq at that ms) of this batch's events, written once at `flush`.
    timeline_added: Vec<(u64, u64)>,
    meta: Logged<'txn, &'static str, &'static [u8]>,
    replication: ReplicationTables<'txn>,
    auth: AuthTables<'txn>,
    /// Accounts created or changed by this batch; see `flush_accounts`.
    staged_accounts: AccountMap,
    /// Committed account changes since the last account flush (see `store/accounts.rs`).
    overlay: &'txn AccountOverlay,
    /// The last charge whose postings the `accounts` rows include.
    accounts_through_charge: u64,
    /// Set by `flush_accounts` when this commit writes every changed account.
    account_flush: AccountFlush,
    next_event_seq: u64,
    next_entry_number: u64,
    charge_ids: &'txn ChargeIds,
    /// The earliest `expires_at` of the authorizations this batch made (`earliest_expiry_added`).
    earliest_expiry_added: Option<u64>,
}

/// Whether a commit flushes the account overlay into the `accounts` rows (`accounts.rs`). Not
/// the journal's checkpoint (a durable redb commit), though a checkpoint requested with `Now`
/// does both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AccountFlush {
    /// Only when due (`ACCOUNT_FLUSH_CHARGES`, `ACCOUNT_OVERLAY_ACCOUNTS_MAX`).
    WhenDue,
    /// Now (shutdown).
    Now,
    /// This commit writes it (set by `flush_accounts`).
    Written,
}

impl<'txn> BatchTables<'txn> {
    /// Every table through `Logged`, so each write of the batch is in `redo` too (the journal),
    /// but the derived `statements`.
    pub(super) fn open(
        txn: &'txn WriteTransaction,
        redo: &'txn Redo,
        overlay: &'txn AccountOverlay,
        key_overlay: &'txn KeyOverlay,
        statement_overlay: &'txn StatementOverlay,
        charge_ids: &'txn ChargeIds,
        account_flush: AccountFlush,
    ) -> Result<Self, StoreError> {
        let meta = Logged::open(txn, redo, META)?;
        let counter = |name: &str| Ok::<_, StoreError>(read_counter(&*meta, name)?.unwrap_or(1));
        let next_event_seq = counter(META_NEXT_EVENT_SEQ)?;
        let next_entry_number = counter(META_NEXT_ENTRY_NUMBER)?;
        let accounts_through_charge =
            accounts::through_charge(&*meta)?.unwrap_or(next_entry_number - 1);
        let timeline = Logged::open(txn, redo, TIMELINE)?;
        let timeline_floor_ms = timeline.last()?.map_or(0, |(ms, _)| ms.value());
        Ok(BatchTables {
            redo,
            accounts: Logged::open(txn, redo, ACCOUNTS)?,
            idempotency: Logged::open(txn, redo, IDEMPOTENCY_KEYS)?,
            answers: Logged::open(txn, redo, IDEMPOTENCY_ANSWERS)?,
            next_answer_number: counter(META_NEXT_ANSWER_NUMBER)?,
            key_overlay,
            key_changes: KeyChanges::default(),
            keys_finished_in_batch: HashMap::new(),
            charges: Logged::open(txn, redo, CHARGES)?,
            postings: Logged::open(txn, redo, POSTINGS)?,
            progress: Logged::open(txn, redo, CHARGE_PROGRESS)?,
            expiry: Logged::open(txn, redo, AUTHORIZATION_EXPIRY)?,
            refunds: Logged::open(txn, redo, REFUNDS)?,
            transfers: Logged::open(txn, redo, TRANSFERS)?,
            outbox: Logged::open(txn, redo, OUTBOX)?,
            statements: Derived::open(txn, STATEMENTS)?,
            settlement_entries: Logged::open(txn, redo, SETTLEMENT_ENTRIES)?,
            statements_through_entry: read_counter(&*meta, META_STATEMENTS_THROUGH_ENTRY)?
                .unwrap_or(0),
            statement_overlay,
            line_changes: LineChanges::default(),
            tenant_entries: Logged::open(txn, redo, TENANT_ENTRIES)?,
            listed_added: Vec::new(),
            charge_refunds: Logged::open(txn, redo, CHARGE_REFUNDS)?,
            accounts_by_creation: Logged::open(txn, redo, ACCOUNTS_BY_CREATION)?,
            timeline,
            timeline_floor_ms,
            timeline_added: Vec::new(),
            meta,
            replication: ReplicationTables::open(txn, redo)?,
            auth: AuthTables::open(txn, redo)?,
            staged_accounts: HashMap::new(),
            overlay,
            accounts_through_charge,
            account_flush,
            next_event_seq,
            next_entry_number,
            charge_ids,
            earliest_expiry_added: None,
        })
    }

    /// The bytes this batch's journal record holds so far: the writer stops adding commands to
    /// a batch past `BATCH_RECORD_BYTES_MAX`.
    pub fn record_bytes(&self) -> usize {
        self.redo.size()
    }

    /// The store's charge ids, for the answers this batch renders (`render::charge`).
    pub fn charge_ids(&self) -> &ChargeIds {
        self.charge_ids
    }

    /// Sees records written earlier in this same batch too.
    pub fn idempotency_record(
        &self,
        tenant: TenantId,
        key: &IdempotencyKey,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let in_memory = with_key_name(tenant.0, key.as_str(), |name| {
            let finished_in_batch = self.keys_finished_in_batch.get(name).copied();
            finished_in_batch.or_else(|| self.key_overlay.get(name))
        });
        let Some(number) = in_memory else {
            return answers::get(&*self.idempotency, &*self.answers, tenant, key.as_str());
        };
        // Only this thread deletes answers, and it takes their keys out of the overlay before
        // the next batch: an overlay key without its answer is corruption here.
        answers::pointed_answer(&*self.answers, number, tenant, key.as_str()).map(Some)
    }

    pub fn put_idempotency_record(
        &mut self,
        tenant: TenantId,
        key: &IdempotencyKey,
        record: &IdempotencyRecord,
    ) -> Result<(), StoreError> {
        let number = self.next_answer_number;
        self.next_answer_number += 1;
        answers::append(&mut self.answers, number, tenant, key.as_str(), record)?;
        let name = key_name(tenant.0, key.as_str());
        self.keys_finished_in_batch.insert(name.clone(), number);
        self.key_changes.added.push((name, number));
        Ok(())
    }

    /// The account as this batch left it, or as committed.
    pub fn account(&self, tenant: TenantId, id: &AccountId) -> Result<Option<Account>, StoreError> {
        if let Some(staged) = self.staged_accounts.get(&tenant).and_then(|m| m.get(id)) {
            return Ok(Some(staged.clone()));
        }
        if let Some(committed) = self.overlay.get(tenant, id) {
            return Ok(Some(committed));
        }
        let found = self.accounts.get((tenant.0, id.as_str()))?;
        found.map(|bytes| decode(bytes.value())).transpose()
    }

    /// Keeps a changed account for this batch; see `flush_accounts`.
    pub fn stage_account(&mut self, tenant: TenantId, account: Account) {
        self.staged_accounts
            .entry(tenant)
            .or_default()
            .insert(account.id.clone(), account);
    }

    /// Opens an account and appends its `account.created` event; returns the event's seq. The row
    /// is written now, as opened, so that recovery finds it for any later posting.
    pub fn create_account(
        &mut self,
        tenant: TenantId,
        account: Account,
        now_ms: u64,
    ) -> Result<u64, StoreError> {
        self.accounts
            .insert((tenant.0, account.id.as_str()), encode(&account).as_slice())?;
        self.accounts_by_creation
            .insert((tenant.0, account.created_at_ms, account.id.as_str()), ())?;
        let seq = self.append_event(
            EventKind::AccountCreated {
                account: account.clone(),
            },
            now_ms,
        )?;
        // The event's owner is written with the event, here, so no caller can forget it.
        self.auth.own_event(tenant, seq)?;
        self.stage_account(tenant, account);
        Ok(seq)
    }

    /// Stores a succeeded charge of `tenant`: the charge, its two postings, its `charge.succeeded`
    /// event, and who owns both. The caller has already applied the postings to the staged
    /// accounts.
    pub fn record_charge(
        &mut self,
        tenant: TenantId,
        charge: &NewCharge,
        postings: &[Posting; 2],
        now_ms: u64,
    ) -> Result<Charge, StoreError> {
        self.insert_charge(tenant, charge, postings, now_ms, |charge_number| {
            EventKind::ChargeSucceeded { charge_number }
        })
    }

    /// A charge of either kind: its entry, postings, event (made by `event` of its number) and
    /// owners.
    fn insert_charge(
        &mut self,
        tenant: TenantId,
        charge: &NewCharge,
        postings: &[Posting; 2],
        now_ms: u64,
        event: impl FnOnce(u64) -> EventKind,
    ) -> Result<Charge, StoreError> {
        let number = self.take_entry_number(tenant)?;
        let stored = Charge {
            number,
            source: charge.source.clone(),
            destination: charge.destination.clone(),
            amount: charge.amount,
            currency: charge.currency,
            metadata: charge.metadata.clone(),
            created_at_ms: now_ms,
            event_seq: self.next_event_seq,
        };
        self.charges.insert(number, encode(&stored).as_slice())?;
        self.put_postings(tenant, number, (EntryOf::Charge, number), postings, now_ms)?;
        self.list_entry(tenant, history::ListedKind::Charge, number);
        let seq = self.append_owned_event(tenant, event(number), now_ms)?;
        debug_assert_eq!(seq, stored.event_seq);
        Ok(stored)
    }

    /// The next ledger entry number, owned by `tenant` (account recovery finds each posting's
    /// tenant by its entry).
    fn take_entry_number(&mut self, tenant: TenantId) -> Result<u64, StoreError> {
        let number = self.next_entry_number;
        self.next_entry_number += 1;
        self.auth.own_entry(tenant, number)?;
        Ok(number)
    }

    /// An entry's postings, legs numbered from 0 in the order given, each with its statement
    /// line (`history.rs`). The entry's event takes the next seq, which keys the lines; the caller
    /// has staged the accounts as the entry left them.
    fn put_postings(
        &mut self,
        tenant: TenantId,
        entry: u64,
        made_by: (EntryOf, u64),
        postings: &[Posting],
        now_ms: u64,
    ) -> Result<(), StoreError> {
        for (leg, posting) in (0u8..).zip(postings) {
            self.postings
                .insert((entry, leg), encode(posting).as_slice())?;
        }
        debug_assert!(postings.len() <= usize::from(u8::MAX));
        self.put_statement_lines(tenant, entry, made_by, postings, now_ms)
    }

    /// Appends an event and records its owner, together, so no caller can forget the owner.
    fn append_owned_event(
        &mut self,
        tenant: TenantId,
        kind: EventKind,
        now_ms: u64,
    ) -> Result<u64, StoreError> {
        let seq = self.append_event(kind, now_ms)?;
        self.auth.own_event(tenant, seq)?;
        Ok(seq)
    }

    /// The only place a sequence number is taken: taken and used together, so they stay dense.
    fn append_event(&mut self, kind: EventKind, now_ms: u64) -> Result<u64, StoreError> {
        let seq = self.next_event_seq;
        let record = EventRecord {
            created_at_ms: now_ms,
            kind,
        };
        let taken = self
            .outbox
            .insert(seq, encode(&record).as_slice())?
            .is_some();
        if taken {
            return Err(StoreError::Corrupt {
                record: "outbox event",
                detail: format!("sequence {seq} was already taken"),
            });
        }
        self.next_event_seq += 1;
        self.note_on_timeline(seq, now_ms);
        Ok(seq)
    }

    /// Deletes up to `records_max` idempotency records that finished before `cutoff_ms`, oldest
    /// first. Answers are numbered in commit order, so the walk stops at the first one kept (a
    /// clock stepped back only delays the records after it).
    pub fn sweep_idempotency(
        &mut self,
        cutoff_ms: u64,
        records_max: usize,
    ) -> Result<usize, StoreError> {
        let mut expired: Vec<(u64, u32, String)> = Vec::new();
        for entry in self.answers.iter()?.take(records_max) {
            let (number, bytes) = entry?;
            let stored: AnswerRow = decode(bytes.value())?;
            if stored.record.finished_at_ms >= cutoff_ms {
                break;
            }
            expired.push((number.value(), stored.tenant, stored.key));
        }
        for (number, tenant, key) in &expired {
            self.answers.remove(*number)?;
            // Not in the table while the key is still in the overlay; then the overlay drops it.
            self.idempotency.remove((*tenant, key.as_str()))?;
            self.key_changes.swept.push(key_name(*tenant, key));
        }
        Ok(expired.len())
    }

    /// The seq the next outbox event will take.
    pub fn next_event_seq(&self) -> u64 {
        self.next_event_seq
    }

    /// Cursors, inbox, mirrors and dead letters, in the same transaction as the ledger's tables.
    pub fn replication(&mut self) -> &mut ReplicationTables<'txn> {
        &mut self.replication
    }

    /// Tenants, tokens and the owners of events and charges, in the same transaction.
    pub fn auth(&mut self) -> &mut AuthTables<'txn> {
        &mut self.auth
    }

    /// Outbox retention: deletes, oldest first, up to `events_max` events numbered at most
    /// `through` (what every sink acknowledged) and created before `cutoff_ms`. Numbers are never
    /// reused: the counter is untouched, and the first held seq moves up.
    pub fn prune_outbox(
        &mut self,
        through: u64,
        cutoff_ms: u64,
        events_max: usize,
    ) -> Result<usize, StoreError> {
        let first_held = read_counter(&*self.meta, META_OUTBOX_FIRST_HELD)?.unwrap_or(1);
        let mut seq = first_held;
        while seq - first_held < events_max as u64 && seq <= through && seq < self.next_event_seq {
            let created_at_ms = match self.outbox.get(seq)? {
                Some(bytes) => decode::<EventRecord>(bytes.value())?.created_at_ms,
                None => {
                    return Err(StoreError::Corrupt {
                        record: "outbox event",
                        detail: format!("event {seq} is missing below the last seq"),
                    });
                }
            };
            if created_at_ms >= cutoff_ms {
                break;
            }
            self.outbox.remove(seq)?;
            seq += 1;
        }
        if seq > first_held {
            write_counter(&mut self.meta, META_OUTBOX_FIRST_HELD, seq)?;
        }
        Ok((seq - first_held) as usize)
    }

    /// Writes staged accounts and counters. Called once, just before commit.
    pub(super) fn flush(&mut self) -> Result<(), StoreError> {
        self.replication.flush()?;
        self.flush_timeline()?;
        self.flush_listed()?;
        self.merge_statement_lines()?;
        self.flush_accounts()?;
        keys::merge_slice(
            self.key_overlay,
            &mut self.idempotency,
            &mut self.meta,
            &mut self.key_changes,
            self.next_answer_number,
        )?;
        write_counter(&mut self.meta, META_NEXT_EVENT_SEQ, self.next_event_seq)?;
        write_counter(
            &mut self.meta,
            META_NEXT_ANSWER_NUMBER,
            self.next_answer_number,
        )?;
        write_counter(
            &mut self.meta,
            META_NEXT_ENTRY_NUMBER,
            self.next_entry_number,
        )
    }
}

impl BatchTables<'_> {
    /// Writes every account changed since the last flush when one is due; otherwise leaves
    /// the batch's accounts for the overlay (their postings are what makes them durable).
    fn flush_accounts(&mut self) -> Result<(), StoreError> {
        let last_charge = self.next_entry_number - 1;
        let due = match self.account_flush {
            AccountFlush::Now | AccountFlush::Written => true,
            AccountFlush::WhenDue => {
                last_charge.saturating_sub(self.accounts_through_charge)
                    >= self.overlay.flush_charges()
                    || self.overlay.len() >= crate::limits::ACCOUNT_OVERLAY_ACCOUNTS_MAX
            }
        };
        for accounts in self.staged_accounts.values() {
            for (id, account) in accounts {
                debug_assert!(
                    account.within_overdraft_limit(),
                    "invariant 5 broken for {id}"
                );
            }
        }
        if !due {
            return Ok(());
        }
        let mut all = self.overlay.snapshot();
        for (tenant, changed) in &self.staged_accounts {
            let mine = all.entry(*tenant).or_default();
            for (id, account) in changed {
                mine.insert(id.clone(), account.clone());
            }
        }
        accounts::write_rows(&mut self.accounts, &all)?;
        accounts::set_through_charge(&mut self.meta, last_charge)?;
        self.account_flush = AccountFlush::Written;
        Ok(())
    }

    /// What the statement overlay must learn once the commit returned `Ok`.
    pub(super) fn take_line_changes(&mut self) -> LineChanges {
        std::mem::take(&mut self.line_changes)
    }

    /// What the key overlay must learn once the commit returned `Ok`.
    pub(super) fn take_key_changes(&mut self) -> KeyChanges {
        std::mem::take(&mut self.key_changes)
    }

    /// The batch's accounts, and whether this commit flushed the overlay: what the overlay must
    /// learn once the commit returned `Ok`.
    pub(super) fn take_account_changes(&mut self) -> (AccountMap, bool) {
        (
            std::mem::take(&mut self.staged_accounts),
            self.account_flush == AccountFlush::Written,
        )
    }
}
