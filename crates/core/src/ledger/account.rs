//! Accounts: who holds money, in which currency, and how far below zero they may go.

use serde::{Deserialize, Serialize};

use super::charge::Posting;
use super::history::Totals;
use super::values::{AccountId, Currency};

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
    /// Taking a posting back out (`unapply`) of totals smaller than it: they cannot have
    /// included it, so the store that paired them is corrupt.
    Underflow,
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
        Totals::of(self).balance()
    }

    /// `balance - debits_pending`.
    pub fn available(&self) -> i64 {
        Totals::of(self).available()
    }

    /// Applies one posting to the totals. Checks only their range: the overdraft limit is the
    /// caller's to check once all of an entry's postings to the account are applied.
    pub fn apply(&mut self, posting: &Posting) -> Result<(), TotalsError> {
        debug_assert_eq!(posting.account, self.id);
        let mut totals = Totals::of(self);
        totals.apply(posting)?;
        totals.set_on(self);
        Ok(())
    }

    /// Takes one posting back out of the totals: the inverse of `apply` (a statement's totals
    /// before an entry, from the account after it). `Err` when the totals cannot have included it.
    pub fn unapply(&mut self, posting: &Posting) -> Result<(), TotalsError> {
        debug_assert_eq!(posting.account, self.id);
        let mut totals = Totals::of(self);
        totals.unapply(posting)?;
        totals.set_on(self);
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
