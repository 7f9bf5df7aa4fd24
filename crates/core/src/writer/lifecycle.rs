//! The lifecycle commands inside the batch's transaction: authorize, capture or void, refund,
//! transfer, and the writer's own expiry of authorizations.
//!
//! **One terminal state per authorization, decided here.** Every capture, void and expiry runs
//! on the writer thread inside a write transaction, one after another, and each first reads the
//! authorization's progress as the batch left it: whichever comes first ends it, and the others
//! find it ended and get a stored `charge-state-invalid` naming its state. An authorization past
//! its `expires_at` is expired by whichever command touches it first (before the expiry sweep
//! gets to it), so a capture at or after `expires_at` is refused whatever the sweep's timing.

use super::apply::{Context, Execution};
use crate::ledger::{
    Account, AccountId, Charge, ChargeProgress, ChargeStatus, Decline, EntryKind, NewAuthorization,
    NewRefund, NewTransfer, Settle, TenantId, authorize as hold, post_leg, refund, settle,
};
use crate::render as present;
use crate::store::{BatchTables, Effect, StoreError};

pub(super) fn authorize(
    tables: &mut BatchTables<'_>,
    tenant: TenantId,
    new: &NewAuthorization,
    context: &Context,
) -> Execution {
    let charge = &new.charge;
    let (mut source, mut destination) =
        match accounts(tables, tenant, [&charge.source, &charge.destination])? {
            Ok(pair) => pair,
            Err(decline) => return Ok(Err(decline)),
        };
    let postings = match hold(charge, &mut source, &mut destination) {
        Ok(postings) => postings,
        Err(decline) => return Ok(Err(decline)),
    };
    let second_ms = test_clock::authorization_second_ms();
    let lifetime_ms = new.expires_in_s.map_or_else(
        || context.authorization_ttl_ms.saturating_mul(second_ms) / 1000,
        |s| s.saturating_mul(second_ms),
    );
    let expires_at_ms = context.now_ms.saturating_add(lifetime_ms);
    tables.stage_account(tenant, source);
    tables.stage_account(tenant, destination);
    let (stored, progress) =
        tables.record_authorization(tenant, charge, &postings, expires_at_ms, context.now_ms)?;
    let body = present::charge(&stored, &progress, tables.charge_ids());
    let effect = Effect::ChargeAuthorized {
        charge_number: stored.number,
    };
    Ok(Ok((201, body, effect)))
}

/// A client's capture or void.
pub(super) fn settle_charge(
    tables: &mut BatchTables<'_>,
    tenant: TenantId,
    id: &str,
    how: Settle,
    now_ms: u64,
) -> Execution {
    let (charge, progress) = match current_charge(tables, tenant, id, now_ms)? {
        Ok(found) => found,
        Err(decline) => return Ok(Err(decline)),
    };
    let after = match end_authorization(tables, tenant, &charge, &progress, how, now_ms)? {
        Ok(after) => after,
        Err(decline) => return Ok(Err(decline)),
    };
    let body = present::charge(&charge, &after, tables.charge_ids());
    let effect = Effect::ChargeSettled {
        charge_number: charge.number,
        status: after.status,
    };
    Ok(Ok((200, body, effect)))
}

pub(super) fn create_refund(
    tables: &mut BatchTables<'_>,
    tenant: TenantId,
    new: &NewRefund,
    now_ms: u64,
) -> Execution {
    let (charge, progress) = match current_charge(tables, tenant, &new.charge, now_ms)? {
        Ok(found) => found,
        Err(decline) => return Ok(Err(decline)),
    };
    let (mut source, mut destination) = charge_accounts(tables, tenant, &charge)?;
    let (amount, postings) = match refund(
        &charge,
        &progress,
        new.amount,
        &mut source,
        &mut destination,
    ) {
        Ok(refunded) => refunded,
        Err(decline) => return Ok(Err(decline)),
    };
    tables.stage_account(tenant, source);
    tables.stage_account(tenant, destination);
    let stored = tables.record_refund(
        tenant,
        &charge,
        &progress,
        amount,
        &new.metadata,
        &postings,
        now_ms,
    )?;
    let body = present::refund(&stored, &charge, tables.charge_ids());
    let effect = Effect::RefundSucceeded {
        refund_number: stored.number,
    };
    Ok(Ok((201, body, effect)))
}

/// Posts the legs in order, each on the balances the legs before it left (kept here, staged only
/// if every leg posts): a decline names its leg and leaves every account untouched.
pub(super) fn create_transfer(
    tables: &mut BatchTables<'_>,
    tenant: TenantId,
    new: &NewTransfer,
    now_ms: u64,
) -> Execution {
    let mut touched: Vec<Account> = Vec::new();
    let mut postings = Vec::with_capacity(2 * new.legs.len());
    for (index, leg) in new.legs.iter().enumerate() {
        let declined = |decline| {
            Ok(Err(Decline::TransferLeg {
                leg: index,
                decline: Box::new(decline),
            }))
        };
        let Some(mut source) = leg_account(tables, tenant, &mut touched, &leg.source)? else {
            return declined(Decline::AccountNotFound {
                account: leg.source.clone(),
            });
        };
        // The parser refuses a leg from an account to itself, so this is another account.
        let Some(mut destination) = leg_account(tables, tenant, &mut touched, &leg.destination)?
        else {
            return declined(Decline::AccountNotFound {
                account: leg.destination.clone(),
            });
        };
        match post_leg(new.currency, leg, &mut source, &mut destination) {
            Ok(leg_postings) => postings.extend(leg_postings),
            Err(decline) => return declined(decline),
        }
        touched.push(source);
        touched.push(destination);
    }
    for account in touched {
        tables.stage_account(tenant, account);
    }
    let stored = tables.record_transfer(tenant, new, &postings, now_ms)?;
    let body = present::transfer(&stored, tables.charge_ids());
    let effect = Effect::TransferSucceeded {
        transfer_number: stored.number,
    };
    Ok(Ok((201, body, effect)))
}

/// The writer's expiry: ends up to `max` authorizations whose `expires_at` has come. Runs at the
/// start of every commit, so it is ordered with the batch's captures and voids like any command.
/// Returns how many it expired.
pub(super) fn expire_due(
    tables: &mut BatchTables<'_>,
    now_ms: u64,
    max: usize,
) -> Result<usize, StoreError> {
    let due = tables.due_authorizations(now_ms, max)?;
    for (charge, tenant, progress) in &due {
        expire(tables, *tenant, charge, progress, now_ms)?;
    }
    Ok(due.len())
}

/// The charge `id` names as it stands now: an authorization past its expiry is expired first.
fn current_charge(
    tables: &mut BatchTables<'_>,
    tenant: TenantId,
    id: &str,
    now_ms: u64,
) -> Result<Result<(Charge, ChargeProgress), Decline>, StoreError> {
    let Some((charge, progress)) = tables.charge_by_id(tenant, id)? else {
        return Ok(Err(Decline::ChargeNotFound { id: id.to_owned() }));
    };
    let due = progress.status == ChargeStatus::Authorized
        && progress.expires_at_ms.is_some_and(|at| at <= now_ms);
    if !due {
        return Ok(Ok((charge, progress)));
    }
    let expired = expire(tables, tenant, &charge, &progress, now_ms)?;
    Ok(Ok((charge, expired)))
}

fn expire(
    tables: &mut BatchTables<'_>,
    tenant: TenantId,
    charge: &Charge,
    progress: &ChargeProgress,
    now_ms: u64,
) -> Result<ChargeProgress, StoreError> {
    end_authorization(tables, tenant, charge, progress, Settle::Expire, now_ms)?.map_err(
        |decline| {
            // Releasing a hold the store holds cannot be declined; if it is, the store is wrong.
            StoreError::Corrupt {
                record: "authorization",
                detail: format!(
                    "charge {} cannot expire: {decline}",
                    tables
                        .charge_ids()
                        .entry_id(EntryKind::Charge, charge.number)
                ),
            }
        },
    )
}

/// Capture, void or expiry: the rules decide, then the settlement is stored.
fn end_authorization(
    tables: &mut BatchTables<'_>,
    tenant: TenantId,
    charge: &Charge,
    progress: &ChargeProgress,
    how: Settle,
    now_ms: u64,
) -> Result<Result<ChargeProgress, Decline>, StoreError> {
    let (mut source, mut destination) = charge_accounts(tables, tenant, charge)?;
    let (after, postings) = match settle(charge, progress, how, &mut source, &mut destination) {
        Ok(settled) => settled,
        // Not a client's answer: the store's holds disagree with its authorizations.
        Err(decline @ Decline::HoldInconsistent { .. }) => {
            return Err(StoreError::Corrupt {
                record: "authorization",
                detail: format!("charge {}: {decline}", charge.number),
            });
        }
        Err(decline) => return Ok(Err(decline)),
    };
    tables.stage_account(tenant, source);
    tables.stage_account(tenant, destination);
    let stored = tables.record_settlement(tenant, charge, after, &postings, now_ms)?;
    Ok(Ok(stored))
}

/// The two accounts of a stored charge, which exist (accounts are never deleted).
fn charge_accounts(
    tables: &BatchTables<'_>,
    tenant: TenantId,
    charge: &Charge,
) -> Result<(Account, Account), StoreError> {
    accounts(tables, tenant, [&charge.source, &charge.destination])?.map_err(|decline| {
        StoreError::Corrupt {
            record: "charge",
            detail: format!("charge {}: {decline}", charge.number),
        }
    })
}

/// Two accounts of `tenant` as the batch left them, or a decline naming the first missing one.
pub(super) fn accounts(
    tables: &BatchTables<'_>,
    tenant: TenantId,
    [first, second]: [&AccountId; 2],
) -> Result<Result<(Account, Account), Decline>, StoreError> {
    let missing = |id: &AccountId| {
        Ok(Err(Decline::AccountNotFound {
            account: id.clone(),
        }))
    };
    let Some(first) = tables.account(tenant, first)? else {
        return missing(first);
    };
    let Some(second) = tables.account(tenant, second)? else {
        return missing(second);
    };
    Ok(Ok((first, second)))
}

/// Account `id` as the earlier legs of a transfer left it (taken out of `touched`), or as the
/// batch did.
fn leg_account(
    tables: &BatchTables<'_>,
    tenant: TenantId,
    touched: &mut Vec<Account>,
    id: &AccountId,
) -> Result<Option<Account>, StoreError> {
    match touched.iter().position(|a| &a.id == id) {
        Some(at) => Ok(Some(touched.swap_remove(at))),
        None => tables.account(tenant, id),
    }
}

/// How long an authorization's second lasts: 1000 ms, except in a test build told otherwise, so
/// that a test can watch an authorization of the shortest allowed life (60 s) expire in 0.6 s.
pub mod test_clock {
    #[cfg(feature = "fault-injection")]
    static SECOND_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1000);

    pub(crate) fn authorization_second_ms() -> u64 {
        #[cfg(feature = "fault-injection")]
        return SECOND_MS.load(std::sync::atomic::Ordering::Relaxed);
        #[cfg(not(feature = "fault-injection"))]
        1000
    }

    /// Test builds only: an authorization's `expires_in` (and the default TTL) counts seconds of
    /// `ms` milliseconds from now on, process-wide.
    #[cfg(feature = "fault-injection")]
    pub fn set_authorization_second_ms(ms: u64) {
        SECOND_MS.store(ms.max(1), std::sync::atomic::Ordering::Relaxed);
    }
}
