//! onceledger: an embedded, ACID payment ledger with an idempotent HTTP API.
//!
//! ARCHITECTURE.md at the repository root maps the modules; in short:
//! `api` (HTTP, JSON) → `idempotency` (keys, in-flight index) → `writer` (group commit) →
//! `store` (redb), with `ledger` holding the pure rules they all apply.

pub mod api;
pub mod auth;
pub mod bench;
pub mod client;
pub mod clock;
pub mod idempotency;
pub mod ledger;
pub mod limits;
pub mod metrics;
pub mod nats;
pub mod node;
pub mod prove;
pub mod proxy;
pub mod replication;
pub mod rng;
pub mod store;
pub mod tls;
pub mod writer;
