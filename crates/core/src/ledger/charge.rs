//! Charges: one debit of the source and one credit of the destination, of the same amount.

use serde::{Deserialize, Serialize};

use super::account::Account;
use super::values::{AccountId, Amount, Currency, Metadata};
use crate::limits::AMOUNT_MINOR_MAX;

/// A request to move `amount` from `source` to `destination`. The parser guarantees
/// `source != destination`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NewCharge {
    pub source: AccountId,
    pub destination: AccountId,
    pub amount: Amount,
    pub currency: Currency,
    pub metadata: Metadata,
}

/// A succeeded charge as stored. `number` is dense per node; clients never see it, only the id
/// the store's `ChargeIds` makes of it (`charge_id.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Charge {
    pub number: u64,
    pub source: AccountId,
    pub destination: AccountId,
    pub amount: Amount,
    pub currency: Currency,
    pub metadata: Metadata,
    pub created_at_ms: u64,
    pub event_seq: u64,
}

/// One leg of a charge: which account, which side, how much.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PostingSide {
    Debit,
    Credit,
}

/// What a posting changes: the posted totals, or the pending ones (a hold adds to them, a
/// release takes a hold back out). Every change of an account's totals is exactly one posting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PostingKind {
    Posted,
    Hold,
    Release,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posting {
    pub account: AccountId,
    pub side: PostingSide,
    pub amount: Amount,
    pub kind: PostingKind,
}

impl Posting {
    /// The two postings of moving `amount` from `source` to `destination`: a debit of the
    /// source and a credit of the destination, of one kind.
    pub fn pair(
        source: &AccountId,
        destination: &AccountId,
        amount: Amount,
        kind: PostingKind,
    ) -> [Posting; 2] {
        [
            Posting::new(source, PostingSide::Debit, amount, kind),
            Posting::new(destination, PostingSide::Credit, amount, kind),
        ]
    }

    pub fn posted(account: &AccountId, side: PostingSide, amount: Amount) -> Posting {
        Posting::new(account, side, amount, PostingKind::Posted)
    }

    pub fn new(
        account: &AccountId,
        side: PostingSide,
        amount: Amount,
        kind: PostingKind,
    ) -> Posting {
        Posting {
            account: account.clone(),
            side,
            amount,
            kind,
        }
    }
}

/// Why a charge was declined. A decline is a final answer: it is stored with the idempotency key
/// and replayed, because retrying the same request against the same ledger decides the same way
/// only if we remember the first decision.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decline {
    InsufficientFunds {
        account: AccountId,
    },
    AccountNotFound {
        account: AccountId,
    },
    CurrencyMismatch {
        account: AccountId,
        account_currency: Currency,
        charge_currency: Currency,
    },
    AccountExists {
        account: AccountId,
    },
    BalanceOverflow {
        account: AccountId,
    },
    /// A redrive named a dead letter this hub does not have.
    DeadLetterNotFound {
        id: u64,
    },
    /// A redrive tried the event again and it still cannot be applied.
    RedriveRefused {
        id: u64,
        reason: String,
    },
    /// A tenant of that name exists already (`default` always does).
    TenantExists {
        name: String,
    },
    /// A capture, void or refund named a charge this tenant does not have.
    ChargeNotFound {
        id: String,
    },
    /// A capture or void of a charge that is not `authorized`, or a refund of one that is not
    /// `succeeded`.
    ChargeStateInvalid {
        status: super::ChargeStatus,
    },
    CaptureExceedsAuthorization {
        authorized: u64,
        requested: u64,
    },
    /// A refund of more than is left to refund (captured minus refunded).
    RefundExceedsCharge {
        refundable: u64,
        requested: u64,
    },
    /// Leg `leg` (from 0) of a transfer was declined, so none was posted.
    TransferLeg {
        leg: usize,
        decline: Box<Decline>,
    },
    /// A release of more than an account holds pending: the store is inconsistent. Never made by
    /// the rules; reported rather than posted.
    HoldInconsistent {
        account: AccountId,
    },
    /// A token was asked for a tenant that does not exist.
    TenantNotFound {
        name: String,
    },
    /// A revocation named a token that does not exist.
    TokenNotFound {
        id: u64,
    },
}

impl std::fmt::Display for Decline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Decline::InsufficientFunds { account } => {
                write!(f, "account {account} would go below its overdraft limit")
            }
            Decline::AccountNotFound { account } => write!(f, "account {account} does not exist"),
            Decline::CurrencyMismatch {
                account,
                account_currency,
                charge_currency,
            } => write!(
                f,
                "account {account} holds {account_currency}, the charge is in {charge_currency}"
            ),
            Decline::AccountExists { account } => write!(f, "account {account} already exists"),
            Decline::BalanceOverflow { account } => {
                write!(f, "account {account} would exceed the largest posted total")
            }
            Decline::DeadLetterNotFound { id } => write!(f, "no dead letter {id}"),
            Decline::RedriveRefused { id, reason } => {
                write!(f, "dead letter {id} still cannot be applied: {reason}")
            }
            Decline::TenantExists { name } => write!(f, "tenant {name} already exists"),
            Decline::TenantNotFound { name } => write!(f, "no tenant {name}"),
            Decline::ChargeNotFound { id } => write!(f, "no charge {id}"),
            Decline::ChargeStateInvalid { status } => {
                write!(f, "the charge is {}", status.as_str())
            }
            Decline::CaptureExceedsAuthorization {
                authorized,
                requested,
            } => write!(
                f,
                "a capture of {requested} is more than the {authorized} authorized"
            ),
            Decline::RefundExceedsCharge {
                refundable,
                requested,
            } => write!(
                f,
                "{refundable} is left to refund of this charge, {requested} was asked"
            ),
            Decline::TransferLeg { leg, decline } => write!(f, "leg {leg}: {decline}"),
            Decline::HoldInconsistent { account } => {
                write!(
                    f,
                    "account {account} holds less pending than a release takes back"
                )
            }
            Decline::TokenNotFound { id } => write!(f, "no token {id}"),
        }
    }
}

/// Applies `charge` to its two accounts, or declines it and leaves both untouched.
///
/// Checks, in order: currencies, the destination's credit total, the source's debit total, and the
/// source's overdraft limit after the debit.
pub fn post_charge(
    charge: &NewCharge,
    source: &mut Account,
    destination: &mut Account,
) -> Result<[Posting; 2], Decline> {
    debug_assert_eq!(source.id, charge.source);
    debug_assert_eq!(destination.id, charge.destination);
    for account in [&*source, &*destination] {
        if account.currency != charge.currency {
            return Err(Decline::CurrencyMismatch {
                account: account.id.clone(),
                account_currency: account.currency,
                charge_currency: charge.currency,
            });
        }
    }
    let amount = charge.amount.minor();
    let grown = |total: u64| total.checked_add(amount).filter(|t| *t <= AMOUNT_MINOR_MAX);
    let Some(credits_after) = grown(destination.credits_posted) else {
        return Err(Decline::BalanceOverflow {
            account: destination.id.clone(),
        });
    };
    let Some(debits_after) = grown(source.debits_posted) else {
        return Err(Decline::BalanceOverflow {
            account: source.id.clone(),
        });
    };
    let mut debited = source.clone();
    debited.debits_posted = debits_after;
    if !debited.within_overdraft_limit() {
        return Err(Decline::InsufficientFunds {
            account: source.id.clone(),
        });
    }
    *source = debited;
    destination.credits_posted = credits_after;
    debug_assert!(source.within_overdraft_limit());
    Ok(Posting::pair(
        &charge.source,
        &charge.destination,
        charge.amount,
        PostingKind::Posted,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::NewAccount;

    fn account(id: &str, currency: &str, overdraft_limit: Option<u64>) -> Account {
        let new = NewAccount {
            id: AccountId::parse(id).expect("valid id"),
            currency: Currency::parse(currency).expect("valid currency"),
            overdraft_limit,
        };
        Account::open(&new, 0)
    }

    fn charge(amount: u64, currency: &str) -> NewCharge {
        NewCharge {
            source: AccountId::parse("src").expect("valid id"),
            destination: AccountId::parse("dst").expect("valid id"),
            amount: Amount::new(amount).expect("valid amount"),
            currency: Currency::parse(currency).expect("valid currency"),
            metadata: Metadata::default(),
        }
    }

    #[test]
    fn moves_money_and_keeps_the_sum_zero() {
        let (mut src, mut dst) = (account("src", "EUR", None), account("dst", "EUR", Some(0)));
        let legs = post_charge(&charge(1250, "EUR"), &mut src, &mut dst).expect("posts");
        assert_eq!((src.balance(), dst.balance()), (-1250, 1250));
        assert_eq!(legs[0].side, PostingSide::Debit);
        assert_eq!(legs[1].side, PostingSide::Credit);
        assert_eq!(src.balance() + dst.balance(), 0);
    }

    #[test]
    fn overdraft_limit_is_exact() {
        let (mut src, mut dst) = (
            account("src", "EUR", Some(100)),
            account("dst", "EUR", Some(0)),
        );
        post_charge(&charge(100, "EUR"), &mut src, &mut dst).expect("reaches the limit exactly");
        let before = (src.clone(), dst.clone());
        let declined = post_charge(&charge(1, "EUR"), &mut src, &mut dst);
        assert!(matches!(declined, Err(Decline::InsufficientFunds { .. })));
        assert_eq!(
            (src, dst),
            before,
            "a decline leaves both accounts untouched"
        );
    }

    #[test]
    fn currency_mismatch_on_either_side() {
        let (mut src, mut dst) = (account("src", "USD", None), account("dst", "EUR", None));
        let declined = post_charge(&charge(1, "EUR"), &mut src, &mut dst);
        assert!(
            matches!(declined, Err(Decline::CurrencyMismatch { ref account, .. }) if account.as_str() == "src")
        );
        let (mut src, mut dst) = (account("src", "EUR", None), account("dst", "USD", None));
        let declined = post_charge(&charge(1, "EUR"), &mut src, &mut dst);
        assert!(
            matches!(declined, Err(Decline::CurrencyMismatch { ref account, .. }) if account.as_str() == "dst")
        );
    }

    #[test]
    fn totals_never_exceed_i64_max() {
        let (mut src, mut dst) = (account("src", "EUR", None), account("dst", "EUR", None));
        let max = i64::MAX as u64;
        post_charge(&charge(max, "EUR"), &mut src, &mut dst).expect("one maximal charge fits");
        let declined = post_charge(&charge(1, "EUR"), &mut src, &mut dst);
        assert!(matches!(declined, Err(Decline::BalanceOverflow { .. })));
        assert_eq!(src.balance(), -i64::MAX);
    }
}
