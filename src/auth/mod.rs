//! Authentication and authorisation: who is calling (a bearer token → tenant and role) and what
//! that role may do. The boundary every `/v1` request crosses before its body is read.
//!
//! - `token`: the secret's format, generation (256 bits from the OS) and its blake3 digest; the
//!   store keeps only the digest.
//! - `policy`: the role matrix, a pure function of (role, request).
//! - `cache`: the in-memory token table the request path reads (digest → tenant, role, revoked),
//!   reloaded from the store after every token or tenant change, and the per-token rate limit.

mod cache;
mod policy;
mod token;

pub use cache::{Authenticated, Authenticator, RateLimit, Refusal, TokenEntry};
pub use policy::{Access, access};
pub use token::{
    TOKEN_PREFIX_SHOWN_CHARS, TokenDigest, TokenSecret, digest_of, is_valid_tenant_name,
    parse_bearer,
};

use serde::{Deserialize, Serialize};

use crate::ledger::TenantId;

/// The name of the tenant that exists in every store, id 0: the operator's own tenant, and the
/// one every record written before tenants existed belongs to.
pub const DEFAULT_TENANT_NAME: &str = "default";

/// What a token may do; the matrix is in `policy` and in docs/CONTRACT-NOTES.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// The operator: everything, in every tenant (tenants, tokens, dead letters, all events).
    Admin,
    /// A tenant's application: its accounts, charges and events.
    Client,
    /// A node that replicates its outbox to this hub: only `POST /v1/replication/events`.
    Replicator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Client => "client",
            Role::Replicator => "replicator",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "admin" => Some(Role::Admin),
            "client" => Some(Role::Client),
            "replicator" => Some(Role::Replicator),
            _ => None,
        }
    }
}

/// Who made a request, once its token checked out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    pub token_id: u64,
    pub tenant: TenantId,
    pub role: Role,
}
