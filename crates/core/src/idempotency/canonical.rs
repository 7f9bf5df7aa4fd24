//! The canonical form of a command: what the fingerprint hashes, so that key order, whitespace
//! and omitted defaults do not change it, and any value does.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::ledger::Command;

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
    Tenant {
        name: &'a str,
    },
    Token {
        tenant: &'a str,
        role: &'static str,
    },
    Empty {},
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
        Command::RedriveDeadLetter { .. } | Command::RevokeToken { .. } => CanonicalBody::Empty {},
        Command::CreateTenant { name } => CanonicalBody::Tenant { name },
        Command::CreateToken { tenant, role, .. } => CanonicalBody::Token {
            tenant,
            role: role.as_str(),
        },
    };
    serde_json::to_vec(&body).unwrap_or_default()
}
