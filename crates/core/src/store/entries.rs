//! Reading ledger entries: charges with their progress, refunds, transfers, by public id for a
//! tenant, and joined into the outbox events that name them.

use redb::{ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable};

use super::codec::decode;
use super::records::{Event, EventBody, EventKind, EventRecord};
use super::schema::{
    AUTHORIZATION_EXPIRY, CHARGE_PROGRESS, CHARGE_TENANTS, CHARGES, REFUNDS, TRANSFERS,
};
use super::{Store, StoreError};
use crate::ledger::{Charge, ChargeProgress, EntryKind, Refund, TenantId, Transfer};

/// The entry tables of one read transaction.
pub(super) struct EntryTables {
    pub(super) charges: ReadOnlyTable<u64, &'static [u8]>,
    progress: ReadOnlyTable<u64, &'static [u8]>,
    pub(super) refunds: ReadOnlyTable<u64, &'static [u8]>,
    pub(super) transfers: ReadOnlyTable<u64, &'static [u8]>,
    owners: ReadOnlyTable<u64, u32>,
}

impl EntryTables {
    pub(super) fn open(txn: &ReadTransaction) -> Result<EntryTables, StoreError> {
        Ok(EntryTables {
            charges: txn.open_table(CHARGES)?,
            progress: txn.open_table(CHARGE_PROGRESS)?,
            refunds: txn.open_table(REFUNDS)?,
            transfers: txn.open_table(TRANSFERS)?,
            owners: txn.open_table(CHARGE_TENANTS)?,
        })
    }

    fn charge(&self, number: u64) -> Result<Option<Charge>, StoreError> {
        let found = self.charges.get(number)?;
        found.map(|bytes| decode(bytes.value())).transpose()
    }

    /// A charge that exists, for an event or a refund that names it.
    pub(super) fn named_charge(&self, number: u64, by: &str) -> Result<Charge, StoreError> {
        self.charge(number)?.ok_or_else(|| StoreError::Corrupt {
            record: "ledger entry",
            detail: format!("{by} names missing charge {number}"),
        })
    }

    pub(super) fn progress(&self, charge: &Charge) -> Result<ChargeProgress, StoreError> {
        match self.progress.get(charge.number)? {
            Some(bytes) => decode(bytes.value()),
            None => Ok(ChargeProgress::immediate(charge)),
        }
    }

    pub(super) fn owner(&self, number: u64) -> Result<TenantId, StoreError> {
        Ok(TenantId(self.owners.get(number)?.map_or(0, |t| t.value())))
    }

    pub(super) fn record<R: super::codec::Record>(
        table: &ReadOnlyTable<u64, &'static [u8]>,
        number: u64,
    ) -> Result<Option<R>, StoreError> {
        let found = table.get(number)?;
        found.map(|bytes| decode(bytes.value())).transpose()
    }

    /// Up to `limit` held events with seqs in `seqs`, in sequence order, entries joined in.
    pub(super) fn events_in_range(
        &self,
        outbox: &ReadOnlyTable<u64, &'static [u8]>,
        seqs: impl std::ops::RangeBounds<u64> + 'static,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let mut events = Vec::with_capacity(limit.min(256));
        for entry in outbox.range(seqs)?.take(limit) {
            let (seq, bytes) = entry?;
            events.push(self.join_event(seq.value(), bytes.value())?);
        }
        Ok(events)
    }

    /// An outbox record as shown and sent: the entry it names joined in, as it was at the event
    /// (a charge's later refunds change its progress row, never what an event shows).
    pub(super) fn join_event(&self, seq: u64, bytes: &[u8]) -> Result<Event, StoreError> {
        let record: EventRecord = decode(bytes)?;
        let by = format!("event {seq}");
        let body = match record.kind {
            EventKind::AccountCreated { account } => EventBody::AccountCreated(account),
            EventKind::ChargeSucceeded { charge_number } => {
                EventBody::ChargeSucceeded(self.named_charge(charge_number, &by)?)
            }
            EventKind::ChargeAuthorized { charge_number } => {
                let charge = self.named_charge(charge_number, &by)?;
                let progress = self.progress(&charge)?;
                let expires_at_ms = progress.expires_at_ms.ok_or_else(|| StoreError::Corrupt {
                    record: "charge progress",
                    detail: format!("authorization {charge_number} has no expiry"),
                })?;
                EventBody::ChargeAuthorized {
                    charge,
                    expires_at_ms,
                }
            }
            EventKind::ChargeSettled {
                charge_number,
                status,
                amount_captured,
            } => EventBody::ChargeSettled {
                charge: self.named_charge(charge_number, &by)?,
                status,
                amount_captured,
            },
            EventKind::RefundSucceeded { refund_number } => {
                let refund: Refund =
                    Self::record(&self.refunds, refund_number)?.ok_or_else(|| {
                        StoreError::Corrupt {
                            record: "outbox event",
                            detail: format!("{by} names missing refund {refund_number}"),
                        }
                    })?;
                let charge = self.named_charge(refund.charge_number, &by)?;
                EventBody::RefundSucceeded { refund, charge }
            }
            EventKind::TransferSucceeded { transfer_number } => {
                let transfer: Transfer = Self::record(&self.transfers, transfer_number)?
                    .ok_or_else(|| StoreError::Corrupt {
                        record: "outbox event",
                        detail: format!("{by} names missing transfer {transfer_number}"),
                    })?;
                EventBody::TransferSucceeded(transfer)
            }
        };
        Ok(Event {
            seq,
            created_at_ms: record.created_at_ms,
            body,
        })
    }
}

impl Store {
    /// `tenant`'s charge with public id `id`, and its progress. Another tenant's charge and an id
    /// this store never issued are both `None`.
    pub fn charge(
        &self,
        tenant: TenantId,
        id: &str,
    ) -> Result<Option<(Charge, ChargeProgress)>, StoreError> {
        // Decrypting the id is the lookup's first half: no index maps ids to numbers.
        let Some(number) = self.charge_ids().entry_number(EntryKind::Charge, id) else {
            return Ok(None);
        };
        let entries = EntryTables::open(&self.database().begin_read()?)?;
        if entries.owner(number)? != tenant {
            return Ok(None);
        }
        let Some(charge) = entries.charge(number)? else {
            return Ok(None);
        };
        let progress = entries.progress(&charge)?;
        Ok(Some((charge, progress)))
    }

    /// `tenant`'s refund `id`, with the charge it refunded.
    pub fn refund(
        &self,
        tenant: TenantId,
        id: &str,
    ) -> Result<Option<(Refund, Charge)>, StoreError> {
        let Some(number) = self.charge_ids().entry_number(EntryKind::Refund, id) else {
            return Ok(None);
        };
        let entries = EntryTables::open(&self.database().begin_read()?)?;
        if entries.owner(number)? != tenant {
            return Ok(None);
        }
        let Some(refund) = EntryTables::record::<Refund>(&entries.refunds, number)? else {
            return Ok(None);
        };
        let charge = entries.named_charge(refund.charge_number, "a refund")?;
        Ok(Some((refund, charge)))
    }

    /// `tenant`'s transfer `id`.
    pub fn transfer(&self, tenant: TenantId, id: &str) -> Result<Option<Transfer>, StoreError> {
        let Some(number) = self.charge_ids().entry_number(EntryKind::Transfer, id) else {
            return Ok(None);
        };
        let entries = EntryTables::open(&self.database().begin_read()?)?;
        if entries.owner(number)? != tenant {
            return Ok(None);
        }
        EntryTables::record(&entries.transfers, number)
    }

    /// When the earliest open authorization expires (the writer's first wake-up).
    pub fn next_authorization_expiry_ms(&self) -> Result<Option<u64>, StoreError> {
        let txn = self.database().begin_read()?;
        let expiry = txn.open_table(AUTHORIZATION_EXPIRY)?;
        Ok(expiry.first()?.map(|(key, _)| key.value().0))
    }
}
