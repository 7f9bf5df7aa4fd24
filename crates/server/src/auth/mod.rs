//! Authentication and authorisation: who is calling (a bearer token → tenant and role) and what
//! that role may do. The boundary every `/v1` request crosses before its body is read.
//!
//! - `token`: bearer parsing and the blake3 digest of a token (the store keeps only the digest;
//!   the token's format and generation are the client crate's `token`).
//! - `policy`: the role matrix, a pure function of (role, request).
//! - `cache`: the in-memory token table the request path reads (digest → tenant, role, revoked),
//!   reloaded from the store after every token or tenant change, and the per-token rate limit.

mod cache;
mod policy;
mod token;

pub use cache::{Authenticated, Authenticator, RateLimit, Refusal};
pub use onceledger_client::token::{TOKEN_PREFIX_SHOWN_CHARS, TokenSecret};
pub use onceledger_core::ids::{
    DEFAULT_TENANT_NAME, Role, TenantId, TokenDigest, is_valid_tenant_name,
};
pub use onceledger_core::store::TokenEntry;
pub use policy::{Access, access};
pub use token::{digest, parse_bearer};

/// Who made a request, once its token checked out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    pub token_id: u64,
    pub tenant: TenantId,
    pub role: Role,
}
