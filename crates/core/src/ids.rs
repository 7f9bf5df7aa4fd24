//! The identities every layer names: tenants, token roles and digests, and the rule for operator
//! names (node ids, tenant names). A leaf module: it imports nothing of the crate, so the ledger,
//! the store and the server's authentication can all depend on it without depending on each other.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The owner of keys, accounts and charges. One default tenant until authentication exists; the
/// storage keys carry it already so that tenants never share a key space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TenantId(pub u32);

impl TenantId {
    pub const DEFAULT: TenantId = TenantId(0);
}

/// The name of the tenant that exists in every store, id 0: the operator's own tenant, and the
/// one every record written before tenants existed belongs to.
pub const DEFAULT_TENANT_NAME: &str = "default";

/// What a token may do; the matrix is in the server's `auth::policy` and in
/// docs/CONTRACT-NOTES.md.
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

/// blake3 of a token: all the store ever keeps of one. Compared in constant time.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TokenDigest(pub [u8; 32]);

impl fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenDigest(<hidden>)")
    }
}

impl TokenDigest {
    /// The digest of a presented or generated token's text.
    pub fn of(token: &[u8]) -> TokenDigest {
        TokenDigest(*blake3::hash(token).as_bytes())
    }

    /// Constant-time comparison (blake3::Hash's `==` is constant time).
    pub fn matches(&self, other: &TokenDigest) -> bool {
        blake3::Hash::from_bytes(self.0) == blake3::Hash::from_bytes(other.0)
    }
}

/// A node id: 1 to 64 of `A-Z a-z 0-9 _ . -`. No `:`, because event ids are `NODE:SEQ`.
pub fn is_valid_node_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// A tenant name: 1 to 64 of `A-Z a-z 0-9 _ . -` (no `:`, which joins a tenant to a node id in a
/// hub's origin keys). The same pattern as node ids: one rule for operator names.
pub fn is_valid_tenant_name(name: &str) -> bool {
    is_valid_node_id(name)
}

/// Whether `key` has the form [`origin_key`] makes: a node id, or `TENANT_ID:NODE` with a
/// tenant id of 1 to 10 digits (the OpenAPI document's pattern; a well-formed key that names no
/// origin is simply not found). What a hub's origin paths accept.
pub fn is_valid_origin_key(key: &str) -> bool {
    match key.split_once(':') {
        None => is_valid_node_id(key),
        Some((tenant, node)) => {
            (1..=10).contains(&tenant.len())
                && tenant.bytes().all(|b| b.is_ascii_digit())
                && is_valid_node_id(node)
        }
    }
}

/// The key a hub files a replicated origin under: the node id for the default tenant (so stores
/// from before tenants keep their keys), `TENANT_ID:NODE` otherwise. `:` never occurs in a node
/// id, so two tenants' nodes never share a key.
pub fn origin_key(tenant: TenantId, node: &str) -> String {
    if tenant == TenantId::DEFAULT {
        node.to_owned()
    } else {
        format!("{}:{node}", tenant.0)
    }
}
