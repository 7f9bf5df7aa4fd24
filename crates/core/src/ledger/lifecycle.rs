//! The payment lifecycle: authorizations (holds), their capture, void or expiry, refunds, and
//! multi-leg transfers. Pure rules over accounts, like `post_charge`: each returns the postings
//! it applied, or a decline and leaves every account untouched.
//!
//! **Holds are postings too.** An authorization posts a `Hold` on both accounts (the source's
//! `debits_pending`, the destination's `credits_pending`); its capture, void or expiry posts the
//! matching `Release`, and a capture then posts the captured amount. So every change of an
//! account's totals is one posting, and recovery, the checker and a hub's mirror all replay the
//! same thing.

use serde::{Deserialize, Serialize};

use super::account::{Account, TotalsError};
use super::charge::{Charge, Decline, NewCharge, Posting, PostingKind, PostingSide};
use super::values::{AccountId, Amount, Currency, Metadata};

/// A charge's state. An immediate charge is `Succeeded` from the start; an authorization is
/// `Authorized` until exactly one of capture (`Succeeded`), void (`Canceled`) or expiry
/// (`Expired`) happens to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChargeStatus {
    Succeeded,
    Authorized,
    Canceled,
    Expired,
}

impl ChargeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ChargeStatus::Succeeded => "succeeded",
            ChargeStatus::Authorized => "authorized",
            ChargeStatus::Canceled => "canceled",
            ChargeStatus::Expired => "expired",
        }
    }
}

/// The entry that ended an authorization (its capture, void or expiry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settlement {
    /// The ledger entry whose postings released the hold (and posted a capture).
    pub entry: u64,
    pub event_seq: u64,
    pub at_ms: u64,
}

/// What happened to a charge since it was created. Stored only for charges that are not plain
/// immediate charges with nothing refunded: those, the common case, cost no extra row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargeProgress {
    pub status: ChargeStatus,
    pub amount_captured: u64,
    pub amount_refunded: u64,
    /// When an authorization expires; `None` for an immediate charge.
    pub expires_at_ms: Option<u64>,
    /// Set once an authorization reached its terminal state.
    pub settled: Option<Settlement>,
}

impl ChargeProgress {
    /// An immediate charge as created: captured whole, nothing refunded.
    pub fn immediate(charge: &Charge) -> ChargeProgress {
        ChargeProgress {
            status: ChargeStatus::Succeeded,
            amount_captured: charge.amount.minor(),
            amount_refunded: 0,
            expires_at_ms: None,
            settled: None,
        }
    }

    /// A new authorization: nothing captured yet.
    pub fn authorized(expires_at_ms: u64) -> ChargeProgress {
        ChargeProgress {
            status: ChargeStatus::Authorized,
            amount_captured: 0,
            amount_refunded: 0,
            expires_at_ms: Some(expires_at_ms),
            settled: None,
        }
    }

    /// What a refund may still take back.
    pub fn refundable(&self) -> u64 {
        self.amount_captured.saturating_sub(self.amount_refunded)
    }
}

/// A charge with `"capture": false`: a hold until captured, voided or expired.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NewAuthorization {
    pub charge: NewCharge,
    /// Seconds until it expires; `None`: the server's `--authorization-ttl`.
    pub expires_in_s: Option<u64>,
}

/// How an authorization ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Settle {
    /// Post this much (default: all of it) and release the whole hold.
    Capture(Option<Amount>),
    Void,
    Expire,
}

impl Settle {
    /// The state the authorization ends in.
    pub fn status(self) -> ChargeStatus {
        match self {
            Settle::Capture(_) => ChargeStatus::Succeeded,
            Settle::Void => ChargeStatus::Canceled,
            Settle::Expire => ChargeStatus::Expired,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NewRefund {
    /// The charge's public id, as the client sent it (resolved by the writer).
    pub charge: String,
    /// `None`: what is left to refund.
    pub amount: Option<Amount>,
    pub metadata: Metadata,
}

/// A succeeded refund as stored. `number` is its ledger entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    pub number: u64,
    pub charge_number: u64,
    pub amount: Amount,
    pub currency: Currency,
    pub metadata: Metadata,
    pub created_at_ms: u64,
    pub event_seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TransferLeg {
    pub source: AccountId,
    pub destination: AccountId,
    pub amount: Amount,
}

/// The parser guarantees 1..=`TRANSFER_LEGS_MAX` legs, each between two different accounts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NewTransfer {
    pub currency: Currency,
    pub legs: Vec<TransferLeg>,
    pub metadata: Metadata,
}

/// A succeeded transfer as stored. `number` is its ledger entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    pub number: u64,
    pub currency: Currency,
    pub legs: Vec<TransferLeg>,
    pub metadata: Metadata,
    pub created_at_ms: u64,
    pub event_seq: u64,
}

/// Applies `postings` to the two accounts (each posting to the one it names), then checks the
/// overdraft limit of every account that was debited. All or nothing.
fn apply_all(
    postings: &[Posting],
    first: &mut Account,
    second: &mut Account,
) -> Result<(), Decline> {
    let (mut a, mut b) = (first.clone(), second.clone());
    for posting in postings {
        let account = if posting.account == a.id {
            &mut a
        } else {
            &mut b
        };
        debug_assert_eq!(account.id, posting.account);
        match account.apply(posting) {
            Ok(()) => {}
            Err(TotalsError::Overflow) => {
                return Err(Decline::BalanceOverflow {
                    account: account.id.clone(),
                });
            }
            // The rules release exactly what they held; the caller read a corrupt hold.
            // (`apply` never underflows; only `unapply` does.)
            Err(TotalsError::ReleaseExceedsHold | TotalsError::Underflow) => {
                return Err(Decline::HoldInconsistent {
                    account: account.id.clone(),
                });
            }
        }
    }
    for after in [&a, &b] {
        let debited = postings.iter().any(|p| {
            p.account == after.id
                && p.side == PostingSide::Debit
                && matches!(p.kind, PostingKind::Posted | PostingKind::Hold)
        });
        // Only a debit can take an account below its limit (a release or a credit raises
        // `available`), so only a debited account is checked, after all of the entry's postings.
        if debited && !after.within_overdraft_limit() {
            return Err(Decline::InsufficientFunds {
                account: after.id.clone(),
            });
        }
    }
    *first = a;
    *second = b;
    Ok(())
}

fn same_currency(currency: Currency, accounts: [&Account; 2]) -> Result<(), Decline> {
    for account in accounts {
        if account.currency != currency {
            return Err(Decline::CurrencyMismatch {
                account: account.id.clone(),
                account_currency: account.currency,
                charge_currency: currency,
            });
        }
    }
    Ok(())
}

/// Holds `charge.amount`: the source's available balance (`balance - debits_pending`) may not go
/// below its overdraft limit.
pub fn authorize(
    charge: &NewCharge,
    source: &mut Account,
    destination: &mut Account,
) -> Result<[Posting; 2], Decline> {
    same_currency(charge.currency, [source, destination])?;
    let postings = Posting::pair(
        &charge.source,
        &charge.destination,
        charge.amount,
        PostingKind::Hold,
    );
    apply_all(&postings, source, destination)?;
    Ok(postings)
}

/// Ends an authorization: releases its whole hold and, for a capture, posts the captured amount.
/// `source` and `destination` are the charge's. The caller has checked that it has not expired
/// (a capture at or after `expires_at` is an expiry).
pub fn settle(
    charge: &Charge,
    progress: &ChargeProgress,
    how: Settle,
    source: &mut Account,
    destination: &mut Account,
) -> Result<(ChargeProgress, Vec<Posting>), Decline> {
    if progress.status != ChargeStatus::Authorized {
        return Err(Decline::ChargeStateInvalid {
            status: progress.status,
        });
    }
    let held = charge.amount;
    let mut postings = Posting::pair(
        &charge.source,
        &charge.destination,
        held,
        PostingKind::Release,
    )
    .to_vec();
    let mut after = progress.clone();
    after.status = how.status();
    if let Settle::Capture(requested) = how {
        let captured = requested.unwrap_or(held);
        if captured.minor() > held.minor() {
            return Err(Decline::CaptureExceedsAuthorization {
                authorized: held.minor(),
                requested: captured.minor(),
            });
        }
        postings.extend(Posting::pair(
            &charge.source,
            &charge.destination,
            captured,
            PostingKind::Posted,
        ));
        after.amount_captured = captured.minor();
    }
    apply_all(&postings, source, destination)?;
    Ok((after, postings))
}

/// Takes back `requested` (default: all that is left) of a succeeded charge: debits the charge's
/// destination and credits its source. Returns the amount refunded and its postings.
pub fn refund(
    charge: &Charge,
    progress: &ChargeProgress,
    requested: Option<Amount>,
    charge_source: &mut Account,
    charge_destination: &mut Account,
) -> Result<(Amount, [Posting; 2]), Decline> {
    if progress.status != ChargeStatus::Succeeded {
        return Err(Decline::ChargeStateInvalid {
            status: progress.status,
        });
    }
    let refundable = progress.refundable();
    let amount = match requested {
        Some(amount) if amount.minor() <= refundable => amount,
        None if refundable > 0 => {
            Amount::new(refundable).map_err(|_| Decline::RefundExceedsCharge {
                refundable,
                requested: refundable,
            })?
        }
        _ => {
            return Err(Decline::RefundExceedsCharge {
                refundable,
                requested: requested.map_or(0, Amount::minor),
            });
        }
    };
    // Back along the charge: from its destination to its source.
    let postings = Posting::pair(
        &charge.destination,
        &charge.source,
        amount,
        PostingKind::Posted,
    );
    apply_all(&postings, charge_destination, charge_source)?;
    Ok((amount, postings))
}

/// One leg of a transfer: like an immediate charge of `leg.amount` in `currency`.
pub fn post_leg(
    currency: Currency,
    leg: &TransferLeg,
    source: &mut Account,
    destination: &mut Account,
) -> Result<[Posting; 2], Decline> {
    same_currency(currency, [source, destination])?;
    let postings = Posting::pair(
        &leg.source,
        &leg.destination,
        leg.amount,
        PostingKind::Posted,
    );
    apply_all(&postings, source, destination)?;
    Ok(postings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::NewAccount;

    fn account(id: &str, overdraft_limit: Option<u64>) -> Account {
        let new = NewAccount {
            id: AccountId::parse(id).expect("valid id"),
            currency: Currency::parse("EUR").expect("valid currency"),
            overdraft_limit,
        };
        Account::open(&new, 0)
    }

    fn amount(minor: u64) -> Amount {
        Amount::new(minor).expect("valid amount")
    }

    fn new_charge(minor: u64) -> NewCharge {
        NewCharge {
            source: AccountId::parse("src").expect("valid"),
            destination: AccountId::parse("dst").expect("valid"),
            amount: amount(minor),
            currency: Currency::parse("EUR").expect("valid"),
            metadata: Metadata::default(),
        }
    }

    fn stored(new: &NewCharge) -> Charge {
        Charge {
            number: 1,
            source: new.source.clone(),
            destination: new.destination.clone(),
            amount: new.amount,
            currency: new.currency,
            metadata: new.metadata.clone(),
            created_at_ms: 0,
            event_seq: 1,
        }
    }

    /// Per currency, posted and pending totals each sum to zero (invariant 6's first half).
    fn sums_are_zero(accounts: &[&Account]) -> bool {
        let posted: i128 = accounts.iter().map(|a| i128::from(a.balance())).sum();
        let pending: i128 = accounts
            .iter()
            .map(|a| i128::from(a.credits_pending) - i128::from(a.debits_pending))
            .sum();
        posted == 0 && pending == 0
    }

    #[test]
    fn a_hold_counts_against_available_and_the_limit() {
        let (mut src, mut dst) = (account("src", Some(100)), account("dst", Some(0)));
        authorize(&new_charge(60), &mut src, &mut dst).expect("within the limit");
        assert_eq!(
            (src.balance(), src.available(), src.debits_pending),
            (0, -60, 60)
        );
        assert_eq!(dst.credits_pending, 60);
        let before = (src.clone(), dst.clone());
        let declined = authorize(&new_charge(41), &mut src, &mut dst);
        assert!(matches!(declined, Err(Decline::InsufficientFunds { .. })));
        assert_eq!(
            (src.clone(), dst.clone()),
            before,
            "a decline changes nothing"
        );
        authorize(&new_charge(40), &mut src, &mut dst).expect("reaches the limit exactly");
        assert!(sums_are_zero(&[&src, &dst]));
    }

    #[test]
    fn a_partial_capture_posts_part_and_releases_the_whole_hold() {
        let (mut src, mut dst) = (account("src", None), account("dst", Some(0)));
        let new = new_charge(100);
        authorize(&new, &mut src, &mut dst).expect("holds");
        let held = ChargeProgress::authorized(10);
        let (after, postings) = settle(
            &stored(&new),
            &held,
            Settle::Capture(Some(amount(70))),
            &mut src,
            &mut dst,
        )
        .expect("captures");
        assert_eq!(postings.len(), 4);
        assert_eq!(
            (after.status, after.amount_captured),
            (ChargeStatus::Succeeded, 70)
        );
        assert_eq!((src.balance(), src.debits_pending), (-70, 0));
        assert_eq!((dst.balance(), dst.credits_pending), (70, 0));
        assert!(sums_are_zero(&[&src, &dst]));
        let again = settle(&stored(&new), &after, Settle::Void, &mut src, &mut dst);
        assert_eq!(
            again.map(|_| ()),
            Err(Decline::ChargeStateInvalid {
                status: ChargeStatus::Succeeded
            }),
            "one terminal state"
        );
    }

    #[test]
    fn a_capture_above_the_hold_is_declined() {
        let (mut src, mut dst) = (account("src", None), account("dst", None));
        let new = new_charge(100);
        authorize(&new, &mut src, &mut dst).expect("holds");
        let declined = settle(
            &stored(&new),
            &ChargeProgress::authorized(10),
            Settle::Capture(Some(amount(101))),
            &mut src,
            &mut dst,
        );
        assert!(matches!(
            declined,
            Err(Decline::CaptureExceedsAuthorization {
                authorized: 100,
                requested: 101
            })
        ));
        assert_eq!(src.debits_pending, 100, "the hold stays");
    }

    #[test]
    fn void_and_expiry_release_everything() {
        for how in [Settle::Void, Settle::Expire] {
            let (mut src, mut dst) = (account("src", None), account("dst", None));
            let new = new_charge(5);
            authorize(&new, &mut src, &mut dst).expect("holds");
            let (after, _) = settle(
                &stored(&new),
                &ChargeProgress::authorized(10),
                how,
                &mut src,
                &mut dst,
            )
            .expect("settles");
            assert_eq!(after.status, how.status());
            assert_eq!(after.amount_captured, 0);
            assert_eq!(src, account("src", None), "as if nothing happened");
            assert_eq!(dst, account("dst", None));
        }
    }

    #[test]
    fn refunds_are_capped_at_what_was_captured() {
        let (mut src, mut dst) = (account("src", None), account("dst", Some(0)));
        let new = new_charge(100);
        let charge = stored(&new);
        crate::ledger::post_charge(&new, &mut src, &mut dst).expect("charges");
        let mut progress = ChargeProgress::immediate(&charge);
        let (first, _) =
            refund(&charge, &progress, Some(amount(30)), &mut src, &mut dst).expect("refunds");
        progress.amount_refunded += first.minor();
        let over = refund(&charge, &progress, Some(amount(71)), &mut src, &mut dst);
        assert!(matches!(
            over,
            Err(Decline::RefundExceedsCharge {
                refundable: 70,
                requested: 71
            })
        ));
        let (rest, _) = refund(&charge, &progress, None, &mut src, &mut dst).expect("the rest");
        assert_eq!(rest.minor(), 70);
        progress.amount_refunded += rest.minor();
        assert!(matches!(
            refund(&charge, &progress, None, &mut src, &mut dst),
            Err(Decline::RefundExceedsCharge { refundable: 0, .. })
        ));
        assert_eq!((src.balance(), dst.balance()), (0, 0));
    }

    #[test]
    fn a_refund_respects_the_destinations_limit() {
        let (mut src, mut dst) = (account("src", None), account("dst", Some(0)));
        let new = new_charge(100);
        let charge = stored(&new);
        crate::ledger::post_charge(&new, &mut src, &mut dst).expect("charges");
        // The merchant paid 80 of it out elsewhere: dst's balance is 20.
        dst.debits_posted += 80;
        let declined = refund(
            &charge,
            &ChargeProgress::immediate(&charge),
            None,
            &mut src,
            &mut dst,
        );
        assert!(
            matches!(declined, Err(Decline::InsufficientFunds { ref account }) if account.as_str() == "dst")
        );
    }

    #[test]
    fn only_succeeded_charges_are_refunded() {
        let (mut src, mut dst) = (account("src", None), account("dst", None));
        let new = new_charge(100);
        authorize(&new, &mut src, &mut dst).expect("holds");
        let declined = refund(
            &stored(&new),
            &ChargeProgress::authorized(10),
            None,
            &mut src,
            &mut dst,
        );
        assert_eq!(
            declined.map(|_| ()),
            Err(Decline::ChargeStateInvalid {
                status: ChargeStatus::Authorized
            })
        );
    }
}
