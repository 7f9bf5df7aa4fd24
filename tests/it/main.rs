//! The black-box integration tests of onceledger: each test starts the real binary as a child
//! process on a free loopback port with a fresh data directory (see `harness`), speaks HTTP to
//! it, and ends by stopping it and running `onceledger check` on its store.
//!
//! The contract they hold the server to is ../shared/design/API.md completed by
//! docs/CONTRACT-NOTES.md.

mod harness;
mod load;

mod accounts;
mod auth;
mod charges;
mod client;
mod concurrency;
mod crash;
mod declines;
mod disconnect;
mod durability;
mod events;
mod fleet;
mod history;
mod idempotency;
mod lifecycle;
mod lifecycle_crash;
mod nats;
mod ops;
mod parser;
mod prove;
mod rare_moments;
mod replication;
mod shutdown;
