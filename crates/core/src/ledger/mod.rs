//! The ledger rules: plain types and pure functions, no I/O.
//!
//! Everything here can be tested and fuzzed against a model without a disk or a socket. The writer
//! feeds these functions with accounts read from the store and writes back what they return.

mod account;
mod charge;
mod charge_id;
mod history;
mod lifecycle;
mod values;

pub use account::TotalsError;
pub use account::{Account, NewAccount};
pub use charge::{Charge, Decline, NewCharge, Posting, PostingKind, PostingSide, post_charge};
pub use charge_id::{CHARGE_ID_KEY_BYTES, ChargeIds, EntryKind};
pub use history::{EntryOf, EntryType, StatementLine, Totals, totals_after_each};
pub use lifecycle::{
    ChargeProgress, ChargeStatus, NewAuthorization, NewRefund, NewTransfer, Refund, Settle,
    Settlement, Transfer, TransferLeg, authorize, post_leg, refund, settle,
};
/// A write the ledger can execute: what a POST asks for, once parsed and validated.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Command {
    CreateAccount(NewAccount),
    CreateCharge(NewCharge),
    /// A charge with `"capture": false`.
    Authorize(NewAuthorization),
    /// Capture (`Settle::Capture`) or void (`Settle::Void`) the charge with this public id.
    /// Expiry is the writer's own, never a client's command.
    SettleCharge {
        charge: String,
        how: Settle,
    },
    CreateRefund(NewRefund),
    CreateTransfer(NewTransfer),
    /// Try a parked replicated event again (a hub's dead letter).
    RedriveDeadLetter {
        id: u64,
    },
    /// Admin: a new tenant with this (validated) name.
    CreateTenant {
        name: String,
    },
    /// Admin: a new token for the tenant named `tenant`. The parser leaves `secret` empty (it is
    /// pure; the token is random); the handler fills in the new token's digest and shown prefix
    /// before the writer runs it. Neither is part of the fingerprint.
    CreateToken {
        tenant: String,
        role: crate::ids::Role,
        secret: Option<(crate::ids::TokenDigest, String)>,
    },
    /// Admin: refuse a token from now on.
    RevokeToken {
        id: u64,
    },
}

pub use values::{AccountId, Amount, Currency, Metadata, TenantId, ValueError};
