//! The fuzz targets' logic, kept out of the `fuzz_targets/` binaries so that
//! `tests/replay_corpus.rs` can run every committed corpus file through exactly the same checks
//! under a plain `cargo test`, without libFuzzer or a nightly toolchain.

pub mod backend;
pub mod checks;
pub mod model;
pub mod records;
pub mod replication;
pub mod request;
pub mod system;
