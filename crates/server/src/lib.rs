//! onceledger's server: the HTTP API in front of the core's writer and store, authentication,
//! the node's wiring, the replicator and its sinks, TLS and metrics. ARCHITECTURE.md at the
//! repository root maps the crates; in short: `api` (HTTP, JSON) → `auth` (token → tenant, role)
//! → the core's idempotency index → writer → store.

pub mod api;
pub mod auth;
#[cfg(feature = "fault-injection")]
mod fault;
pub mod metrics;
pub mod nats;
pub mod node;
pub mod replication;
pub mod routes;
pub mod tls;
