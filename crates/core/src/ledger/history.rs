//! History: an account's statement, one line per posting, each with the account's totals right
//! after it. Pure: the store writes the lines in the transaction of the postings, the checker and
//! a hub's mirror compute them the same way.
//!
//! Why each line keeps all four totals, not only the balance: `GET .../balance?as_of=` then is one
//! seek to the last line at or before the moment, never a replay of the statement.

use serde::{Deserialize, Serialize};

use super::account::{Account, TotalsError};
use super::charge::{Posting, PostingKind, PostingSide};
use super::values::Amount;
use crate::limits::AMOUNT_MINOR_MAX;

/// What kind of entry made a statement line (the statement's `entry_type`). Together with the
/// entry's kind it fixes the posting's kind: an authorization holds, a release releases, every
/// other line is posted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EntryType {
    /// An immediate charge.
    Charge,
    /// The hold of a charge with `capture: false`.
    Authorization,
    /// The posted amount of an authorization's capture.
    Capture,
    /// The end of a hold: a capture, void or expiry takes it back.
    Release,
    Refund,
    Transfer,
}

impl EntryType {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryType::Charge => "charge",
            EntryType::Authorization => "authorization",
            EntryType::Capture => "capture",
            EntryType::Release => "release",
            EntryType::Refund => "refund",
            EntryType::Transfer => "transfer",
        }
    }

    /// The kind of posting a line of this type records.
    pub fn posting_kind(self) -> PostingKind {
        match self {
            EntryType::Authorization => PostingKind::Hold,
            EntryType::Release => PostingKind::Release,
            EntryType::Charge | EntryType::Capture | EntryType::Refund | EntryType::Transfer => {
                PostingKind::Posted
            }
        }
    }

    /// The line type of a posting of `kind` made by an entry of `made_by`'s kind.
    pub fn of(made_by: EntryOf, kind: PostingKind) -> EntryType {
        match (made_by, kind) {
            (_, PostingKind::Hold) => EntryType::Authorization,
            (_, PostingKind::Release) => EntryType::Release,
            (EntryOf::Charge, PostingKind::Posted) => EntryType::Charge,
            (EntryOf::Settlement, PostingKind::Posted) => EntryType::Capture,
            (EntryOf::Refund, PostingKind::Posted) => EntryType::Refund,
            (EntryOf::Transfer, PostingKind::Posted) => EntryType::Transfer,
        }
    }

    /// Whether `made_by` on a line of this type is a charge number (else a refund's or a
    /// transfer's).
    pub fn names_a_charge(self) -> bool {
        !matches!(self, EntryType::Refund | EntryType::Transfer)
    }
}

/// Which kind of ledger entry wrote a set of postings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryOf {
    /// A charge or an authorization (its own number).
    Charge,
    /// The capture, void or expiry of an authorization.
    Settlement,
    Refund,
    Transfer,
}

/// An account's four totals at one point of its history.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub debits_posted: u64,
    pub credits_posted: u64,
    pub debits_pending: u64,
    pub credits_pending: u64,
}

impl Totals {
    pub fn of(account: &Account) -> Totals {
        Totals {
            debits_posted: account.debits_posted,
            credits_posted: account.credits_posted,
            debits_pending: account.debits_pending,
            credits_pending: account.credits_pending,
        }
    }

    /// Writes these totals into `account`.
    pub fn set_on(self, account: &mut Account) {
        account.debits_posted = self.debits_posted;
        account.credits_posted = self.credits_posted;
        account.debits_pending = self.debits_pending;
        account.credits_pending = self.credits_pending;
    }

    /// The total a posting of this kind and side changes.
    fn total_of(&mut self, posting: &Posting) -> &mut u64 {
        match (posting.kind, posting.side) {
            (PostingKind::Posted, PostingSide::Debit) => &mut self.debits_posted,
            (PostingKind::Posted, PostingSide::Credit) => &mut self.credits_posted,
            (PostingKind::Hold | PostingKind::Release, PostingSide::Debit) => {
                &mut self.debits_pending
            }
            (PostingKind::Hold | PostingKind::Release, PostingSide::Credit) => {
                &mut self.credits_pending
            }
        }
    }

    /// Applies one posting: a posted or held amount adds, a release takes its hold back out.
    pub fn apply(&mut self, posting: &Posting) -> Result<(), TotalsError> {
        let amount = posting.amount.minor();
        let total = self.total_of(posting);
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

    /// The inverse of `apply`.
    pub fn unapply(&mut self, posting: &Posting) -> Result<(), TotalsError> {
        let amount = posting.amount.minor();
        let total = self.total_of(posting);
        *total = match posting.kind {
            PostingKind::Release => total
                .checked_add(amount)
                .filter(|t| *t <= AMOUNT_MINOR_MAX)
                .ok_or(TotalsError::Overflow)?,
            PostingKind::Posted | PostingKind::Hold => {
                total.checked_sub(amount).ok_or(TotalsError::Underflow)?
            }
        };
        Ok(())
    }

    /// `credits_posted - debits_posted`, as `Account::balance`.
    pub fn balance(&self) -> i64 {
        let balance = i128::from(self.credits_posted) - i128::from(self.debits_posted);
        i64::try_from(balance).unwrap_or(if balance < 0 { i64::MIN } else { i64::MAX })
    }

    /// `balance - debits_pending`, as `Account::available`.
    pub fn available(&self) -> i64 {
        let available = i128::from(self.balance()) - i128::from(self.debits_pending);
        i64::try_from(available).unwrap_or(i64::MIN)
    }

    /// `account` with these totals in place of its own (a balance as of a moment).
    pub fn on(self, account: &Account) -> Account {
        Account {
            debits_posted: self.debits_posted,
            credits_posted: self.credits_posted,
            debits_pending: self.debits_pending,
            credits_pending: self.credits_pending,
            ..account.clone()
        }
    }
}

/// One line of an account's statement: a posting to it, what made it, and the account's totals
/// right after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementLine {
    /// The ledger entry whose postings hold this one (`(entry, leg)`; the leg is in the key).
    pub entry: u64,
    /// The charge, refund or transfer the line belongs to: for a capture or a release, the
    /// authorization's charge (the statement's `entry`).
    pub made_by: u64,
    pub entry_type: EntryType,
    pub side: PostingSide,
    pub amount: Amount,
    pub after: Totals,
    pub created_at_ms: u64,
}

/// The totals of `account` right after each of `postings` that names it, in order, given its
/// totals `after_all` once every posting applied: the entry's postings to one account are undone
/// from the end, then replayed. `Err` only for totals the postings cannot have come from
/// (corruption).
pub fn totals_after_each(
    account: &Account,
    postings: &[Posting],
) -> Result<Vec<(usize, Totals)>, TotalsError> {
    let mine: Vec<usize> = (0..postings.len())
        .filter(|&i| postings[i].account == account.id)
        .collect();
    let mut before = account.clone();
    for &i in mine.iter().rev() {
        before.unapply(&postings[i])?;
    }
    let mut lines = Vec::with_capacity(mine.len());
    for i in mine {
        before.apply(&postings[i])?;
        lines.push((i, Totals::of(&before)));
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{AccountId, Currency, NewAccount};

    fn account(name: &str) -> Account {
        Account::open(
            &NewAccount {
                id: AccountId::parse(name).expect("id"),
                currency: Currency::parse("EUR").expect("currency"),
                overdraft_limit: None,
            },
            0,
        )
    }

    /// A capture's four postings on its source (a release, then the captured debit) give two
    /// lines whose totals are the running sums, and the last is the account's.
    #[test]
    fn lines_carry_running_totals_of_their_account_only() {
        let a = AccountId::parse("a").expect("id");
        let b = AccountId::parse("b").expect("id");
        let amount = |m| Amount::new(m).expect("amount");
        let mut source = account("a");
        source.debits_pending = 100;
        source.debits_posted = 5;
        let postings = [
            Posting::new(&a, PostingSide::Debit, amount(100), PostingKind::Release),
            Posting::new(&b, PostingSide::Credit, amount(100), PostingKind::Release),
            Posting::new(&a, PostingSide::Debit, amount(60), PostingKind::Posted),
            Posting::new(&b, PostingSide::Credit, amount(60), PostingKind::Posted),
        ];
        for posting in postings.iter().filter(|p| p.account == a) {
            source.apply(posting).expect("applies");
        }
        let lines = totals_after_each(&source, &postings).expect("consistent");
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].0, 0);
        assert_eq!(
            (lines[0].1.debits_pending, lines[0].1.debits_posted),
            (0, 5)
        );
        assert_eq!(lines[1].0, 2);
        assert_eq!(lines[1].1, Totals::of(&source));
        assert_eq!(Totals::of(&source).debits_posted, 65);
    }

    /// Totals a posting cannot have come from (more posted than the account holds) are refused.
    #[test]
    fn impossible_totals_are_refused() {
        let a = AccountId::parse("a").expect("id");
        let posting = Posting::posted(&a, PostingSide::Debit, Amount::new(10).expect("amount"));
        assert!(totals_after_each(&account("a"), &[posting]).is_err());
    }

    #[test]
    fn line_types_follow_the_entry_and_the_kind() {
        assert_eq!(
            EntryType::of(EntryOf::Settlement, PostingKind::Posted),
            EntryType::Capture
        );
        assert_eq!(
            EntryType::of(EntryOf::Settlement, PostingKind::Release),
            EntryType::Release
        );
        assert_eq!(
            EntryType::of(EntryOf::Charge, PostingKind::Hold),
            EntryType::Authorization
        );
        for t in [
            EntryType::Charge,
            EntryType::Authorization,
            EntryType::Capture,
            EntryType::Release,
            EntryType::Refund,
            EntryType::Transfer,
        ] {
            assert_eq!(
                EntryType::of(
                    match t {
                        EntryType::Charge | EntryType::Authorization => EntryOf::Charge,
                        EntryType::Capture | EntryType::Release => EntryOf::Settlement,
                        EntryType::Refund => EntryOf::Refund,
                        EntryType::Transfer => EntryOf::Transfer,
                    },
                    t.posting_kind()
                ),
                t
            );
        }
    }
}
