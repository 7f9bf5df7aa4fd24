//! onceledger's core: everything that decides what happens to money and how it is kept, with no
//! sockets. ARCHITECTURE.md at the repository root maps the crates; inside this one:
//!
//! - `ids`: tenants, roles, token digests, operator names (a leaf);
//! - `ledger`: pure rules over plain values;
//! - `idempotency`: key format, canonical body and fingerprint, the in-flight index;
//! - `store`: the only module that imports redb (schema, codec, journal, recovery, overlays, check);
//! - `writer`: the group-commit thread, the single writer of the store;
//! - `render`: the bodies of stored answers (what a replay returns, byte for byte);
//! - `wire`: the replication format between a node and a hub, its own types.

pub mod clock;
pub mod durable_fs;
pub mod idempotency;
pub mod ids;
pub mod ledger;
pub mod limits;
pub mod render;
pub mod store;
pub mod wire;
pub mod writer;
