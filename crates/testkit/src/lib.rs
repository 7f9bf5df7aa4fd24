//! onceledger's tooling, kept out of the server's library: `bench` (the load generator),
//! `prove` (effectively-once under faults, in one process) and `proxy` (the fault-injecting
//! HTTP proxy). The binary's `bench` and `prove` commands and the integration tests use it.

pub mod bench;
pub mod prove;
pub mod proxy;
