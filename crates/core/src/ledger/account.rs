//! Accounts: who holds money, in which currency, and how far below zero they may go.

use serde::{Deserialize, Serialize};

use super::charge::{Posting, PostingKind, PostingSide};
use super::values::{AccountId, Currency};
use crate::limits::AMOUNT_MINOR_MAX;

/// A request to open an account.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NewAccount {
    pub id: AccountId,
    pub currency: Currency,
    /// How far below zero the balance may go, in minor units; `None` means no limit (funding and
    /// settlement accounts).
    pub overdraft_limit: Option<u64>,
}

/// Why a posting does not fit an account's totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TotalsError {
    /// A total would pass 2^63-1 (the largest amount, so every balance fits an i64).
    Overflow,
    /// A release of more than the account holds pending: never made by the rules, so a store
    /// that holds one is corrupt.
    ReleaseExceedsHold,
}

/// An account's state. Posted totals only ever grow, pending ones go up with a hold and down with
/// its release; the balance is derived, never stored, so it cannot
/// drift from the postings that make it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: AccountId,
    pub currency: Currency,
    pub overdraft_limit: Option<u64>,
    pub debits_posted: u64,
    pub credits_posted: u64,
    pub debits_pending: u64,
    pub credits_pending: u64,
    pub created_at_ms: u64,
}

impl Account {
    pub fn open(new: &NewAccount, created_at_ms: u64) -> Self {
        Account {
            id: new.id.clone(),
            currency: new.currency,
            overdraft_limit: new.overdraft_limit,
            debits_posted: 0,
            credits_posted: 0,
            debits_pending: 0,
            credits_pending: 0,
            created_at_ms,
        }
    }

    /// `credits_posted - debits_posted`. Totals are at most i64::MAX each, so this fits an i64.
    pub fn balance(&self) -> i64 {
        let balance = i128::from(self.credits_posted) - i128::from(self.debits_posted);
        i64::try_from(balance).unwrap_or(if balance < 0 { i64::MIN } else { i64::MAX })
    }

    /// `balance - debits_pending`.
    pub fn available(&self) -> i64 {
        let available = i128::from(self.balance()) - i128::from(self.debits_pending);
        i64::try_from(available).unwrap_or(i64::MIN)
    }

    /// Applies one posting to the totals. Checks only their range: the overdraft limit is the
    /// caller's to check once all of an entry's postings to the account are applied.
    pub fn apply(&mut self, posting: &Posting) -> Result<(), TotalsError> {
        debug_assert_eq!(posting.account, self.id);
        let amount = posting.amount.minor();
        let total = match (posting.kind, posting.side) {
            (PostingKind::Posted, PostingSide::Debit) => &mut self.debits_posted,
            (PostingKind::Posted, PostingSide::Credit) => &mut self.credits_posted,
            (PostingKind::Hold | PostingKind::Release, PostingSide::Debit) => {
                &mut self.debits_pending
            }
            (PostingKind::Hold | PostingKind::Release, PostingSide::Credit) => {
                &mut self.credits_pending
            }
        };
        *total = match posting.kind {
            PostingKind::Release => total
                .checked_sub(amount)
                .ok_or(TotalsError::ReleaseExceedsHold)?,
            PostingKind::Posted | PostingKind::Hold => total
                .checked_add(amount)
                .filter(|t| *t <= AMOUNT_MINOR_MAX)
                .ok_or(TotalsError::Overflow)?,
        };
        Ok(())
    }

    /// Invariant 5 of DESIGN.md: no account is below `-overdraft_limit`.
    pub fn within_overdraft_limit(&self) -> bool {
        match self.overdraft_limit {
            None => true,
            Some(limit) => i128::from(self.available()) >= -i128::from(limit),
        }
    }
}
