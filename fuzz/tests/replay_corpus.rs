//! Replays every committed corpus file through its target's checks, so that `cargo test` (CI)
//! guards what the fuzzers once found, without libFuzzer or a nightly toolchain:
//! `cargo test --release --manifest-path fuzz/Cargo.toml`.
//!
//! A crash artifact (`fuzz/artifacts/<target>/crash-*`) becomes a regression test by being copied
//! into `fuzz/corpus/<target>/` once its bug is fixed.

use std::fs;
use std::path::{Path, PathBuf};

use onceledger_fuzz::checks;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut files: Vec<PathBuf> = match fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            // An interrupted libFuzzer merge leaves `.tmp*` directories behind.
            .filter(|path| path.is_file())
            .collect(),
        Err(error) => panic!("{}: {error}", dir.display()),
    };
    files.sort();
    assert!(!files.is_empty(), "{} holds no seed", dir.display());
    for file in files {
        let data = match fs::read(&file) {
            Ok(data) => data,
            Err(error) => panic!("{}: {error}", file.display()),
        };
        // The file's name in the panic message: rerun it alone with
        // `RUSTC_BOOTSTRAP=1 cargo fuzz run <target> <file>`.
        let outcome = std::panic::catch_unwind(|| check(&data));
        if let Err(panic) = outcome {
            eprintln!("{} fails its check", file.display());
            std::panic::resume_unwind(panic);
        }
    }
}

#[test]
fn request_parse_corpus() {
    replay("request_parse", checks::request_parse);
}

#[test]
fn record_codec_corpus() {
    replay("record_codec", checks::record_codec);
}

#[test]
fn ledger_model_corpus() {
    replay("ledger_model", checks::ledger_model);
}

#[test]
fn replication_decode_corpus() {
    replay("replication_decode", checks::replication_decode);
}

/// Runs one file, for diagnosing an artifact without libFuzzer:
/// `FUZZ_REPLAY=ledger_model:fuzz/artifacts/ledger_model/crash-... cargo test --release
/// --manifest-path fuzz/Cargo.toml --test replay_corpus one_file -- --nocapture`.
/// Without the variable it does nothing.
#[test]
fn one_file() {
    let Ok(spec) = std::env::var("FUZZ_REPLAY") else {
        return;
    };
    let Some((target, path)) = spec.split_once(':') else {
        panic!("FUZZ_REPLAY is TARGET:PATH, not {spec:?}");
    };
    let Some((_, check)) = checks::TARGETS.iter().find(|(name, _)| *name == target) else {
        panic!("no target {target}");
    };
    let data = match fs::read(path) {
        Ok(data) => data,
        Err(error) => panic!("{path}: {error}"),
    };
    check(&data);
}
