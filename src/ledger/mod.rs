//! The ledger rules: plain types and pure functions, no I/O.
//!
//! Everything here can be tested and fuzzed against a model without a disk or a socket. The writer
//! feeds these functions with accounts read from the store and writes back what they return.

mod account;
mod charge;
mod values;

pub use account::{Account, NewAccount};
pub use charge::{Charge, Decline, NewCharge, Posting, PostingSide, post_charge};
/// A write the ledger can execute: what a POST asks for, once parsed and validated.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Command {
    CreateAccount(NewAccount),
    CreateCharge(NewCharge),
    /// Try a parked replicated event again (a hub's dead letter).
    RedriveDeadLetter {
        id: u64,
    },
}

pub use values::{AccountId, Amount, Currency, Metadata, TenantId, ValueError};
