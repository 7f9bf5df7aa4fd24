//! The HTTP edge: the only code that knows hyper and JSON.
//!
//! `parse` turns a request into a typed [`ApiRequest`] (pure, fuzzed); `handler` runs it against
//! the idempotency layer, the store and the writer, and `history` the lists, statements and
//! as-of balances; `present` renders bodies; `server` owns sockets, connection limits, timeouts
//! and graceful shutdown.

#[cfg(test)]
mod contract;
mod handler;
mod history;
pub mod parse;
mod server;

use std::sync::Arc;

pub use handler::App;
pub use onceledger_core::render::{Problem, ProblemKind};
pub use parse::{ApiRequest, WriteIntent, parse_request};
pub use server::{ServerSettings, serve};

/// The OpenAPI 3.1 document, served verbatim at `/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

pub type SharedApp = Arc<App>;
