//! The lifecycle entries of a batch: authorizations, their settlement (capture, void, expiry),
//! refunds and transfers. Each takes the next entry number, writes its postings under it, one
//! event, and its owners, in the batch's transaction; the caller has applied the postings to the
//! staged accounts (`ledger::lifecycle` decided them).

use redb::ReadableTable;

use super::BatchTables;
use crate::ledger::{
    Amount, Charge, ChargeProgress, ChargeStatus, EntryOf, Metadata, NewCharge, NewTransfer,
    Posting, Refund, Settlement, TenantId, Transfer,
};
use crate::store::StoreError;
use crate::store::codec::{decode, encode};
use crate::store::records::EventKind;

impl BatchTables<'_> {
    /// The charge `id` names, with its progress, if `tenant` owns it. An id this store never
    /// issued, or another tenant's, is `None` alike: the caller cannot tell them apart.
    pub fn charge_by_id(
        &self,
        tenant: TenantId,
        id: &str,
    ) -> Result<Option<(Charge, ChargeProgress)>, StoreError> {
        let Some(number) = self.charge_ids.number_of(id) else {
            return Ok(None);
        };
        let Some(bytes) = self.charges.get(number)? else {
            return Ok(None);
        };
        let charge: Charge = decode(bytes.value())?;
        if self.auth.entry_tenant(number)? != tenant {
            return Ok(None);
        }
        let progress = self.charge_progress(&charge)?;
        Ok(Some((charge, progress)))
    }

    /// A charge's progress: its row, or for a plain immediate charge (no row) succeeded and
    /// captured whole.
    pub fn charge_progress(&self, charge: &Charge) -> Result<ChargeProgress, StoreError> {
        match self.progress.get(charge.number)? {
            Some(bytes) => decode(bytes.value()),
            None => Ok(ChargeProgress::immediate(charge)),
        }
    }

    /// Stores an authorization: the charge, its two hold postings, its progress row and expiry
    /// row, and its `charge.authorized` event.
    pub fn record_authorization(
        &mut self,
        tenant: TenantId,
        charge: &NewCharge,
        postings: &[Posting; 2],
        expires_at_ms: u64,
        now_ms: u64,
    ) -> Result<(Charge, ChargeProgress), StoreError> {
        let stored = self.insert_charge(tenant, charge, postings, now_ms, |charge_number| {
            EventKind::ChargeAuthorized { charge_number }
        })?;
        let progress = ChargeProgress::authorized(expires_at_ms);
        self.progress
            .insert(stored.number, encode(&progress).as_slice())?;
        self.expiry.insert((expires_at_ms, stored.number), ())?;
        self.earliest_expiry_added = Some(
            self.earliest_expiry_added
                .map_or(expires_at_ms, |at| at.min(expires_at_ms)),
        );
        Ok((stored, progress))
    }

    /// Stores the end of an authorization (`after` is its new progress from `ledger::settle`):
    /// the releasing entry and its postings, the progress row, the expiry row removed, and the
    /// event. Returns the progress as stored.
    pub fn record_settlement(
        &mut self,
        tenant: TenantId,
        charge: &Charge,
        mut after: ChargeProgress,
        postings: &[Posting],
        now_ms: u64,
    ) -> Result<ChargeProgress, StoreError> {
        debug_assert_ne!(after.status, ChargeStatus::Authorized);
        let entry = self.take_entry_number(tenant)?;
        let made_by = (EntryOf::Settlement, charge.number);
        self.settlement_entries.insert(entry, charge.number)?;
        self.put_postings(tenant, entry, made_by, postings, now_ms)?;
        if let Some(expires_at_ms) = after.expires_at_ms {
            self.expiry.remove((expires_at_ms, charge.number))?;
        }
        let event_seq = self.append_owned_event(
            tenant,
            EventKind::ChargeSettled {
                charge_number: charge.number,
                status: after.status,
                amount_captured: after.amount_captured,
            },
            now_ms,
        )?;
        after.settled = Some(Settlement {
            entry,
            event_seq,
            at_ms: now_ms,
        });
        self.progress
            .insert(charge.number, encode(&after).as_slice())?;
        Ok(after)
    }

    /// Stores a refund of `charge` (whose progress was `before`): the refund, its two postings,
    /// the charge's progress with the refunded amount, and the `refund.succeeded` event.
    #[allow(clippy::too_many_arguments)]
    pub fn record_refund(
        &mut self,
        tenant: TenantId,
        charge: &Charge,
        before: &ChargeProgress,
        amount: Amount,
        metadata: &Metadata,
        postings: &[Posting; 2],
        now_ms: u64,
    ) -> Result<Refund, StoreError> {
        let number = self.take_entry_number(tenant)?;
        let refund = Refund {
            number,
            charge_number: charge.number,
            amount,
            currency: charge.currency,
            metadata: metadata.clone(),
            created_at_ms: now_ms,
            event_seq: self.next_event_seq,
        };
        self.refunds.insert(number, encode(&refund).as_slice())?;
        self.put_postings(tenant, number, (EntryOf::Refund, number), postings, now_ms)?;
        self.list_entry(tenant, super::history::ListedKind::Refund, number);
        self.charge_refunds
            .insert((charge.number, refund.event_seq), number)?;
        let mut after = before.clone();
        after.amount_refunded += amount.minor();
        debug_assert!(after.amount_refunded <= after.amount_captured);
        self.progress
            .insert(charge.number, encode(&after).as_slice())?;
        let seq = self.append_owned_event(
            tenant,
            EventKind::RefundSucceeded {
                refund_number: number,
            },
            now_ms,
        )?;
        debug_assert_eq!(seq, refund.event_seq);
        Ok(refund)
    }

    /// Stores a transfer: the transfer, two postings per leg in leg order, and its event.
    pub fn record_transfer(
        &mut self,
        tenant: TenantId,
        new: &NewTransfer,
        postings: &[Posting],
        now_ms: u64,
    ) -> Result<Transfer, StoreError> {
        debug_assert_eq!(postings.len(), 2 * new.legs.len());
        let number = self.take_entry_number(tenant)?;
        let transfer = Transfer {
            number,
            currency: new.currency,
            legs: new.legs.clone(),
            metadata: new.metadata.clone(),
            created_at_ms: now_ms,
            event_seq: self.next_event_seq,
        };
        self.transfers
            .insert(number, encode(&transfer).as_slice())?;
        self.put_postings(
            tenant,
            number,
            (EntryOf::Transfer, number),
            postings,
            now_ms,
        )?;
        self.list_entry(tenant, super::history::ListedKind::Transfer, number);
        let seq = self.append_owned_event(
            tenant,
            EventKind::TransferSucceeded {
                transfer_number: number,
            },
            now_ms,
        )?;
        debug_assert_eq!(seq, transfer.event_seq);
        Ok(transfer)
    }

    /// Up to `max` authorizations whose expiry is at or before `now_ms`, earliest first, as
    /// (charge, its tenant, its progress): one seek on the expiry index, however many are open.
    pub fn due_authorizations(
        &self,
        now_ms: u64,
        max: usize,
    ) -> Result<Vec<(Charge, TenantId, ChargeProgress)>, StoreError> {
        let mut due = Vec::new();
        for entry in self.expiry.range((0, 0)..=(now_ms, u64::MAX))?.take(max) {
            let number = entry?.0.value().1;
            let bytes = self
                .charges
                .get(number)?
                .ok_or_else(|| StoreError::Corrupt {
                    record: "authorization expiry",
                    detail: format!("names missing charge {number}"),
                })?;
            let charge: Charge = decode(bytes.value())?;
            let progress = self.charge_progress(&charge)?;
            due.push((charge, self.auth.entry_tenant(number)?, progress));
        }
        Ok(due)
    }

    /// The earliest expiry among the authorizations this batch made so far: the writer keeps
    /// its next wake-up from it instead of seeking the index in every commit.
    pub fn earliest_expiry_added(&self) -> Option<u64> {
        self.earliest_expiry_added
    }

    /// When the earliest open authorization expires.
    pub fn next_expiry_ms(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.expiry.first()?.map(|(key, _)| key.value().0))
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::test_support::{id, open_accounts};
    use super::*;
    use crate::ledger::{Currency, Settle, authorize, settle};
    use crate::store::Store;
    use crate::store::check::verify;

    /// Authorizes `amount` from `a` to `b` expiring at `expires_at_ms`; returns the charge.
    fn hold(store: &Store, amount: u64, expires_at_ms: u64) -> Charge {
        store
            .commit_batch(|tables| {
                let tenant = TenantId::DEFAULT;
                let mut source = tables.account(tenant, &id("a"))?.expect("a");
                let mut destination = tables.account(tenant, &id("b"))?.expect("b");
                let new = NewCharge {
                    source: id("a"),
                    destination: id("b"),
                    amount: Amount::new(amount).expect("amount"),
                    currency: Currency::parse("EUR").expect("currency"),
                    metadata: Metadata::default(),
                };
                let postings = authorize(&new, &mut source, &mut destination).expect("holds");
                tables.stage_account(tenant, source);
                tables.stage_account(tenant, destination);
                Ok(tables
                    .record_authorization(tenant, &new, &postings, expires_at_ms, 1)?
                    .0)
            })
            .expect("committed")
    }

    fn violations(store: &Store) -> Vec<String> {
        verify(store).expect("readable").violations
    }

    /// Guards the expiry index and the checker's hold invariants: an authorization is found due
    /// exactly from its expiry on, its settlement leaves no index row and no pending total, and
    /// a planted disagreement (an open authorization without its index row, a settled one whose
    /// hold was not released) is reported.
    #[test]
    fn the_expiry_index_finds_due_holds_and_check_catches_broken_ones() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("opens");
        open_accounts(&store, TenantId::DEFAULT);
        let early = hold(&store, 30, 1_000);
        let late = hold(&store, 20, 2_000);
        assert_eq!(violations(&store), Vec::<String>::new());
        let (due_before, due_at, next) = store
            .commit_batch(|tables| {
                Ok((
                    tables.due_authorizations(999, 10)?.len(),
                    tables.due_authorizations(1_000, 10)?,
                    tables.next_expiry_ms()?,
                ))
            })
            .expect("read");
        assert_eq!(due_before, 0);
        assert_eq!(due_at.len(), 1);
        assert_eq!(due_at[0].0.number, early.number);
        assert_eq!(next, Some(1_000));

        store
            .commit_batch(|tables| {
                let (charge, tenant, progress) = tables.due_authorizations(1_000, 1)?.remove(0);
                let mut source = tables.account(tenant, &charge.source)?.expect("a");
                let mut destination = tables.account(tenant, &charge.destination)?.expect("b");
                let (after, postings) = settle(
                    &charge,
                    &progress,
                    Settle::Expire,
                    &mut source,
                    &mut destination,
                )
                .expect("releases");
                tables.stage_account(tenant, source);
                tables.stage_account(tenant, destination);
                tables.record_settlement(tenant, &charge, after, &postings, 1_000)?;
                assert_eq!(tables.next_expiry_ms()?, Some(2_000));
                Ok(())
            })
            .expect("expired");
        assert_eq!(violations(&store), Vec::<String>::new());
        let a = store
            .account(TenantId::DEFAULT, &id("a"))
            .expect("read")
            .expect("a");
        assert_eq!(
            (a.debits_pending, a.debits_posted),
            (20, 0),
            "only the late hold is left"
        );

        // Planted: the late authorization loses its index row (it would never expire).
        store
            .commit_batch(|tables| {
                tables.expiry.remove((2_000, late.number))?;
                Ok(())
            })
            .expect("planted");
        let found = violations(&store);
        assert!(
            found
                .iter()
                .any(|v| v.contains(&format!("charge {}", late.number)) && v.contains("expiry")),
            "{found:?}"
        );
        // Planted: it is marked canceled without releasing its hold.
        store
            .commit_batch(|tables| {
                let mut progress = tables.charge_progress(&late)?;
                progress.status = crate::ledger::ChargeStatus::Canceled;
                tables
                    .progress
                    .insert(late.number, encode(&progress).as_slice())?;
                Ok(())
            })
            .expect("planted");
        let found = violations(&store);
        assert!(
            found.iter().any(|v| v.contains("open authorizations hold")),
            "{found:?}"
        );
    }
}
