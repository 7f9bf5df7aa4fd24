//! One plain function per fuzz target: raw input bytes in, a panic on any broken property.
//!
//! The libFuzzer binaries in `fuzz_targets/` and the corpus replay in `tests/replay_corpus.rs`
//! both call these, so a corpus file means the same thing to both.

/// `fuzz_targets/request_parse.rs`: see [`crate::request`].
pub fn request_parse(data: &[u8]) {
    crate::request::check(data);
}

/// `fuzz_targets/record_codec.rs`: see [`crate::records`].
pub fn record_codec(data: &[u8]) {
    crate::records::check(data);
}

/// `fuzz_targets/ledger_model.rs`: see [`crate::model`].
pub fn ledger_model(data: &[u8]) {
    crate::model::check(data);
}

/// `fuzz_targets/replication_decode.rs`: see [`crate::replication`].
pub fn replication_decode(data: &[u8]) {
    crate::replication::check(data);
}

/// A target's checks: they panic on a broken property.
pub type Check = fn(&[u8]);

/// Every target by its name, as `fuzz/corpus/<name>/` and `cargo fuzz run <name>` spell it.
pub const TARGETS: [(&str, Check); 4] = [
    ("request_parse", request_parse),
    ("record_codec", record_codec),
    ("ledger_model", ledger_model),
    ("replication_decode", replication_decode),
];
