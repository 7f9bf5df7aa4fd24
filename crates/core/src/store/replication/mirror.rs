//! A hub's mirror of one origin's ledger: each replicated event applied with the same rules a
//! node applies (`ledger::post_charge`, `authorize`, `settle`, `refund`, `post_leg`), so every
//! mirror balances to zero per currency and no mirrored account goes below its limit.
//!
//! **The hub records the origin's decisions, it never re-decides them.** A settlement carries
//! how the authorization ended (captured and how much, voided, expired) and the mirror applies
//! exactly that: a mirrored hold expires when the origin's `charge.expired` arrives, never on the
//! hub's clock (mirrored authorizations are not in the hub's expiry index). A rule that still
//! declines means the two ledgers disagree (an event missing, edited or out of order): the event
//! is refused and, after `--dead-letter-after` tries, parked. A refused event changes nothing:
//! each function checks everything before it writes.
//!
//! Every entry applied also writes its statement lines, one per posting, with the origin's
//! numbers and the mirrored account's totals after it (`statement.rs`), once nothing can refuse.
//!
//! A refusal calls a charge "the charge of event N" (the event that created it): the dead letter
//! names its origin, and only the origin's key makes the charge's public id from its number.

use std::collections::HashMap;

use redb::ReadableTable;

use super::ReplicationTables;
use super::statement::{MadeBy, OriginEvent};
use crate::ledger::{
    Account, AccountId, Amount, Charge, ChargeProgress, ChargeStatus, EntryOf, NewCharge, Posting,
    Refund, Settle, Settlement, Transfer, authorize, post_charge, post_leg, refund, settle,
};
use crate::store::codec::{decode, encode};
use crate::store::{ApplyRefusal, StoreError};

/// Why applying stopped: the store failed, or the mirror refuses the event. One type, so that `?`
/// serves both inside the rules.
pub(super) enum Stop {
    Store(StoreError),
    Refused(ApplyRefusal),
}

/// Every error a store error is made from (redb's, the codec's) stops as one.
impl<E: Into<StoreError>> From<E> for Stop {
    fn from(error: E) -> Stop {
        Stop::Store(error.into())
    }
}

/// A refusal with this reason.
pub(super) fn refused<T>(reason: String) -> Result<T, Stop> {
    Err(Stop::Refused(ApplyRefusal(reason)))
}

/// Back to the shape `apply_event` answers in: a store error, or applied or refused.
pub(super) fn outcome(result: Result<(), Stop>) -> Result<Result<(), ApplyRefusal>, StoreError> {
    match result {
        Ok(()) => Ok(Ok(())),
        Err(Stop::Refused(refusal)) => Ok(Err(refusal)),
        Err(Stop::Store(error)) => Err(error),
    }
}

impl ReplicationTables<'_> {
    /// An origin numbers its entries once each (charges, refunds and transfers share one
    /// counter), so a number mirrored before means an event that no origin makes; refused, or a
    /// refund would name two mirrored charges (found by the replication_decode fuzz target).
    fn entry_number_is_new(&self, origin: &str, number: u64) -> Result<(), Stop> {
        match self.entry_numbers.get((origin, number))? {
            Some(seq) => refused(format!(
                "entry number {number} of {origin} was mirrored from event {} already",
                seq.value()
            )),
            None => Ok(()),
        }
    }

    pub(super) fn mirror_new_account(
        &mut self,
        origin: &str,
        account: &Account,
    ) -> Result<(), Stop> {
        if self.mirror_account(origin, &account.id)?.is_some() {
            return refused(format!(
                "account {} already exists in the mirror of {origin}",
                account.id
            ));
        }
        let totals = [
            account.debits_posted,
            account.credits_posted,
            account.debits_pending,
            account.credits_pending,
        ];
        if totals.iter().any(|t| *t != 0) {
            return refused(format!(
                "account {} arrives with non-zero totals",
                account.id
            ));
        }
        self.stage_mirrors([account.clone()], origin);
        Ok(())
    }

    /// A new charge: posted on both mirrored accounts when immediate (`expires_at_ms` `None`),
    /// else an authorization, held on both and stored with its progress.
    pub(super) fn mirror_charge(
        &mut self,
        origin: &str,
        at: OriginEvent,
        charge: &Charge,
        expires_at_ms: Option<u64>,
    ) -> Result<(), Stop> {
        let seq = at.seq;
        self.new_charge_fits(origin, seq, charge)?;
        self.entry_number_is_new(origin, charge.number)?;
        let (mut source, mut destination) = self.charge_mirrors(origin, charge)?;
        let new = new_charge(charge);
        let applied = match expires_at_ms {
            None => post_charge(&new, &mut source, &mut destination),
            Some(_) => authorize(&new, &mut source, &mut destination),
        };
        let postings = match applied {
            Ok(postings) => postings,
            Err(decline) => return refused(format!("the charge: {decline}")),
        };
        let made = MadeBy {
            of: EntryOf::Charge,
            number: charge.number,
            entry: charge.number,
        };
        let lines = self.mirrored_lines(origin, at, made, &postings, &[&source, &destination])?;
        self.stage_mirrors([source, destination], origin);
        self.put_mirrored_lines(origin, lines)?;
        self.entry_numbers.insert((origin, charge.number), seq)?;
        self.charges
            .insert((origin, seq), encode(charge).as_slice())?;
        if let Some(expires_at_ms) = expires_at_ms {
            let progress = ChargeProgress::authorized(expires_at_ms);
            self.progress
                .insert((origin, seq), encode(&progress).as_slice())?;
        }
        Ok(())
    }

    /// The end of a mirrored authorization, as the origin decided it: the whole hold released
    /// and, for a capture, `amount_captured` posted.
    pub(super) fn mirror_settlement(
        &mut self,
        origin: &str,
        at: OriginEvent,
        charge: &Charge,
        status: ChargeStatus,
        amount_captured: u64,
    ) -> Result<(), Stop> {
        let seq = at.seq;
        let progress = self.mirrored_progress(origin, charge)?;
        follows_its_charge(seq, charge, "settlement")?;
        let Some(expires_at_ms) = progress.expires_at_ms else {
            return refused(format!(
                "the charge of event {} is not an authorization",
                charge.event_seq
            ));
        };
        let how = match status {
            ChargeStatus::Succeeded => match Amount::new(amount_captured) {
                Ok(amount) => Settle::Capture(Some(amount)),
                Err(error) => return refused(format!("the capture: {error}")),
            },
            ChargeStatus::Canceled => Settle::Void,
            ChargeStatus::Expired => Settle::Expire,
            ChargeStatus::Authorized => {
                return refused("a settlement that leaves the charge authorized".into());
            }
        };
        let (mut source, mut destination) = self.charge_mirrors(origin, charge)?;
        let (mut after, postings) = match settle(
            charge,
            &progress,
            how,
            &mut source,
            &mut destination,
        ) {
            Ok(settled) => settled,
            Err(decline) => {
                return refused(format!(
                    "the settlement of the charge of event {} (expiring at {expires_at_ms} ms): {decline}",
                    charge.event_seq
                ));
            }
        };
        debug_assert_eq!(
            (after.status, after.amount_captured),
            (status, amount_captured)
        );
        // The origin's entry number of the settlement does not travel: 0 (entries start at 1).
        after.settled = Some(Settlement {
            entry: 0,
            event_seq: seq,
            at_ms: at.at_ms,
        });
        let made = MadeBy {
            of: EntryOf::Settlement,
            number: charge.number,
            entry: 0,
        };
        let lines = self.mirrored_lines(origin, at, made, &postings, &[&source, &destination])?;
        self.stage_mirrors([source, destination], origin);
        self.put_mirrored_lines(origin, lines)?;
        self.progress
            .insert((origin, charge.event_seq), encode(&after).as_slice())?;
        Ok(())
    }

    /// A refund of a mirrored charge: its amount back from the destination to the source, within
    /// what the mirror says is left to refund.
    pub(super) fn mirror_refund(
        &mut self,
        origin: &str,
        at: OriginEvent,
        made: &Refund,
        charge: &Charge,
    ) -> Result<(), Stop> {
        let seq = at.seq;
        if made.event_seq != seq {
            return refused(format!(
                "the refund names event {}, it came as event {seq}",
                made.event_seq
            ));
        }
        if made.charge_number != charge.number || made.currency != charge.currency {
            return refused(format!(
                "the refund does not match the charge of event {} it carries",
                charge.event_seq
            ));
        }
        if self.refunds.get((origin, seq))?.is_some() {
            return refused(format!("event {seq} was applied before"));
        }
        self.entry_number_is_new(origin, made.number)?;
        let progress = self.mirrored_progress(origin, charge)?;
        follows_its_charge(seq, charge, "refund")?;
        let (mut source, mut destination) = self.charge_mirrors(origin, charge)?;
        let (amount, postings) = match refund(
            charge,
            &progress,
            Some(made.amount),
            &mut source,
            &mut destination,
        ) {
            Ok(refunded) => refunded,
            Err(decline) => {
                return refused(format!(
                    "the refund of the charge of event {}: {decline}",
                    charge.event_seq
                ));
            }
        };
        debug_assert_eq!(amount, made.amount);
        let mut after = progress;
        after.amount_refunded += amount.minor();
        let by = MadeBy {
            of: EntryOf::Refund,
            number: made.number,
            entry: made.number,
        };
        let lines = self.mirrored_lines(origin, at, by, &postings, &[&source, &destination])?;
        self.stage_mirrors([source, destination], origin);
        self.put_mirrored_lines(origin, lines)?;
        self.progress
            .insert((origin, charge.event_seq), encode(&after).as_slice())?;
        self.refunds
            .insert((origin, seq), encode(made).as_slice())?;
        self.entry_numbers.insert((origin, made.number), seq)?;
        Ok(())
    }

    /// A transfer: its legs posted in order on the mirror, each on the balances the legs before
    /// it left, all or none.
    pub(super) fn mirror_transfer(
        &mut self,
        origin: &str,
        at: OriginEvent,
        transfer: &Transfer,
    ) -> Result<(), Stop> {
        let seq = at.seq;
        if transfer.event_seq != seq {
            return refused(format!(
                "the transfer names event {}, it came as event {seq}",
                transfer.event_seq
            ));
        }
        if self.transfers.get((origin, seq))?.is_some() {
            return refused(format!("event {seq} was applied before"));
        }
        self.entry_number_is_new(origin, transfer.number)?;
        let mut touched: HashMap<AccountId, Account> = HashMap::new();
        // The legs' postings in order, as the origin's `create_transfer` numbers them.
        let mut postings: Vec<Posting> = Vec::with_capacity(2 * transfer.legs.len());
        for (index, leg) in transfer.legs.iter().enumerate() {
            if leg.source == leg.destination {
                return refused(format!(
                    "transfer leg {index} has one account on both sides"
                ));
            }
            let mut source = self.leg_mirror(origin, &mut touched, &leg.source)?;
            let mut destination = self.leg_mirror(origin, &mut touched, &leg.destination)?;
            match post_leg(transfer.currency, leg, &mut source, &mut destination) {
                Ok(leg_postings) => postings.extend(leg_postings),
                Err(decline) => return refused(format!("transfer leg {index}: {decline}")),
            }
            touched.insert(source.id.clone(), source);
            touched.insert(destination.id.clone(), destination);
        }
        let made = MadeBy {
            of: EntryOf::Transfer,
            number: transfer.number,
            entry: transfer.number,
        };
        let after: Vec<&Account> = touched.values().collect();
        let lines = self.mirrored_lines(origin, at, made, &postings, &after)?;
        self.stage_mirrors(touched.into_values(), origin);
        self.put_mirrored_lines(origin, lines)?;
        self.transfers
            .insert((origin, seq), encode(transfer).as_slice())?;
        self.entry_numbers.insert((origin, transfer.number), seq)?;
        Ok(())
    }

    /// A charge or authorization that comes as event `seq` names that event, moves money between
    /// two accounts and is new.
    fn new_charge_fits(&self, origin: &str, seq: u64, charge: &Charge) -> Result<(), Stop> {
        if charge.event_seq != seq {
            return refused(format!(
                "the charge names event {}, it came as event {seq}",
                charge.event_seq
            ));
        }
        if charge.source == charge.destination {
            return refused("the charge has the same source and destination".into());
        }
        if self.charges.get((origin, seq))?.is_some() {
            return refused(format!("event {seq} was applied before"));
        }
        Ok(())
    }

    /// The progress of the mirrored charge `charge` names (created by its event), which must be
    /// the same charge: a row, or for a plain immediate charge succeeded and captured whole.
    fn mirrored_progress(&self, origin: &str, charge: &Charge) -> Result<ChargeProgress, Stop> {
        let at = charge.event_seq;
        let stored: Option<Charge> = match self.charges.get((origin, at))? {
            Some(bytes) => Some(decode(bytes.value())?),
            None => None,
        };
        match stored {
            None => return refused(format!("the charge of event {at} is not in the mirror")),
            Some(stored) if stored != *charge => {
                return refused(format!(
                    "the charge of event {at} differs from the mirror's"
                ));
            }
            Some(_) => {}
        }
        Ok(match self.progress.get((origin, at))? {
            Some(bytes) => decode(bytes.value())?,
            None => ChargeProgress::immediate(charge),
        })
    }

    /// The mirrors of a charge's two accounts, as this transaction left them.
    fn charge_mirrors(&self, origin: &str, charge: &Charge) -> Result<(Account, Account), Stop> {
        Ok((
            self.known_mirror(origin, &charge.source)?,
            self.known_mirror(origin, &charge.destination)?,
        ))
    }

    fn known_mirror(&self, origin: &str, id: &AccountId) -> Result<Account, Stop> {
        match self.mirror_account(origin, id)? {
            Some(account) => Ok(account),
            None => refused(format!("account {id} is not known from {origin}")),
        }
    }

    /// Account `id` as the earlier legs of a transfer left it (taken out of `touched`), or as
    /// the transaction did.
    fn leg_mirror(
        &self,
        origin: &str,
        touched: &mut HashMap<AccountId, Account>,
        id: &AccountId,
    ) -> Result<Account, Stop> {
        match touched.remove(id) {
            Some(account) => Ok(account),
            None => self.known_mirror(origin, id),
        }
    }

    fn stage_mirrors(&mut self, accounts: impl IntoIterator<Item = Account>, origin: &str) {
        for account in accounts {
            self.staged_accounts
                .insert((origin.to_owned(), account.id.clone()), account);
        }
    }
}

/// An origin makes a charge's settlement and refunds after the charge, so their events come
/// later: one numbered at or before the charge's is refused. (A redrive could otherwise apply it
/// after its charge and put its statement lines before the charge's, and `check` wants a
/// settlement later than its charge.)
fn follows_its_charge(seq: u64, charge: &Charge, what: &str) -> Result<(), Stop> {
    if seq <= charge.event_seq {
        return refused(format!(
            "the {what} (event {seq}) is not later than the charge of event {} it names",
            charge.event_seq
        ));
    }
    Ok(())
}

/// The request a mirrored charge was made from, for the rules.
fn new_charge(charge: &Charge) -> NewCharge {
    NewCharge {
        source: charge.source.clone(),
        destination: charge.destination.clone(),
        amount: charge.amount,
        currency: charge.currency,
        metadata: charge.metadata.clone(),
    }
}
