//! The canonical form of a command: what the fingerprint hashes, so that key order, whitespace
//! and omitted defaults do not change it, and any value does.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::ledger::{Amount, Command, Settle};

/// The canonical body: fixed field order, defaults filled in, metadata sorted. It is also valid
/// input, and parses back to the same command (the fuzz target checks this).
#[derive(Serialize)]
#[serde(untagged)]
enum CanonicalBody<'a> {
    Account {
        id: &'a str,
        currency: &'a str,
        overdraft_limit: Option<u64>,
    },
    Charge {
        source: &'a str,
        destination: &'a str,
        amount: u64,
        currency: &'a str,
        metadata: &'a BTreeMap<String, String>,
    },
    /// An immediate charge's form is unchanged (`capture` true is the default and left out), so
    /// keys stored before authorizations existed keep their fingerprints.
    Authorization {
        source: &'a str,
        destination: &'a str,
        amount: u64,
        currency: &'a str,
        metadata: &'a BTreeMap<String, String>,
        capture: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        expires_in: Option<u64>,
    },
    /// A capture names its amount when the request did; the charge is in the path.
    Capture {
        #[serde(skip_serializing_if = "Option::is_none")]
        amount: Option<u64>,
    },
    Refund {
        charge: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        amount: Option<u64>,
        metadata: &'a BTreeMap<String, String>,
    },
    Transfer {
        currency: &'a str,
        legs: Vec<CanonicalLeg<'a>>,
        metadata: &'a BTreeMap<String, String>,
    },
    Tenant {
        name: &'a str,
    },
    Token {
        tenant: &'a str,
        role: &'static str,
    },
    Empty {},
}

#[derive(Serialize)]
struct CanonicalLeg<'a> {
    source: &'a str,
    destination: &'a str,
    amount: u64,
}

/// Re-encodes a command in canonical form.
pub fn canonical_body(command: &Command) -> Vec<u8> {
    let body = match command {
        Command::CreateAccount(a) => CanonicalBody::Account {
            id: a.id.as_str(),
            currency: a.currency.as_str(),
            overdraft_limit: a.overdraft_limit,
        },
        Command::CreateCharge(c) => CanonicalBody::Charge {
            source: c.source.as_str(),
            destination: c.destination.as_str(),
            amount: c.amount.minor(),
            currency: c.currency.as_str(),
            metadata: c.metadata.pairs(),
        },
        Command::Authorize(a) => CanonicalBody::Authorization {
            source: a.charge.source.as_str(),
            destination: a.charge.destination.as_str(),
            amount: a.charge.amount.minor(),
            currency: a.charge.currency.as_str(),
            metadata: a.charge.metadata.pairs(),
            capture: false,
            expires_in: a.expires_in_s,
        },
        Command::SettleCharge {
            how: Settle::Capture(amount),
            ..
        } => CanonicalBody::Capture {
            amount: amount.map(Amount::minor),
        },
        Command::CreateRefund(r) => CanonicalBody::Refund {
            charge: &r.charge,
            amount: r.amount.map(Amount::minor),
            metadata: r.metadata.pairs(),
        },
        Command::CreateTransfer(t) => CanonicalBody::Transfer {
            currency: t.currency.as_str(),
            legs: (t.legs.iter())
                .map(|leg| CanonicalLeg {
                    source: leg.source.as_str(),
                    destination: leg.destination.as_str(),
                    amount: leg.amount.minor(),
                })
                .collect(),
            metadata: t.metadata.pairs(),
        },
        Command::RedriveDeadLetter { .. }
        | Command::RevokeToken { .. }
        | Command::SettleCharge { .. } => CanonicalBody::Empty {},
        Command::CreateTenant { name } => CanonicalBody::Tenant { name },
        Command::CreateToken { tenant, role, .. } => CanonicalBody::Token {
            tenant,
            role: role.as_str(),
        },
    };
    serde_json::to_vec(&body).unwrap_or_default()
}
