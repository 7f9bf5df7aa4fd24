//! Process-level fault points, compiled only with the `fault-injection` feature (the integration
//! tests turn it on; the release binary has none of this). Each is an environment variable that
//! makes the process abort at one chosen point, so a test can check what a real crash there
//! leaves behind, or makes one step fail as failing storage would; and one that moves the store's
//! rare moments:
//!
//! - `ONCELEDGER_FAULT_MARKS=journal=3,accounts=3,keys=4,key_slice=1`: the store checkpoints
//!   after every 3 journaled batches, flushes its account overlay every 3 charges, and merges
//!   finished keys into their table once 4 wait, at least 1 a commit (`Marks` in the core's
//!   `store/marks.rs`; a mark left out keeps its limit). Read once, when the store opens; a
//!   value that does not parse stops the node. The crash tests (`tests/it/rare_moments.rs`) run
//!   with it so that a SIGKILL lands on a checkpoint, a flush or a merge, not once in 65,536.
//! - `ONCELEDGER_FAULT_AUTHORIZATION_SECOND_MS=10`: an authorization's `expires_in` (and the
//!   default TTL) counts seconds of 10 ms, so a test sees an authorization of the shortest life
//!   (60 s) expire in 0.6 s. Read when a server starts (`onceledger prove`'s in-process node
//!   included), process-wide.
//! - The others: below.

use std::sync::OnceLock;

use onceledger_core::store::{Marks, MarksError};

/// The marks `ONCELEDGER_FAULT_MARKS` sets, if it is set.
pub fn store_marks() -> Result<Option<Marks>, MarksError> {
    std::env::var("ONCELEDGER_FAULT_MARKS")
        .ok()
        .map(|text| text.parse())
        .transpose()
}

/// Applies `ONCELEDGER_FAULT_AUTHORIZATION_SECOND_MS` if it is set.
pub fn shorten_authorization_seconds() {
    if let Some(ms) = std::env::var("ONCELEDGER_FAULT_AUTHORIZATION_SECOND_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        tracing::warn!(ms, "fault point: an authorization's second lasts {ms} ms");
        onceledger_core::writer::set_authorization_second_ms(ms);
    }
}

/// `ONCELEDGER_FAULT_RELAY_CRASH_AFTER=N`: abort right after the N-th delivery a sink
/// acknowledged, before the replicator moves its cursor.
pub fn relay_delivered(deliveries: u64) {
    static AFTER: OnceLock<Option<u64>> = OnceLock::new();
    abort_at(&AFTER, "ONCELEDGER_FAULT_RELAY_CRASH_AFTER", deliveries);
}

/// `ONCELEDGER_FAULT_CONSUMER_CRASH_AFTER=N`: abort right after the NATS consumer's N-th
/// committed fetch, before it acknowledges the messages.
pub fn consumer_committed(commits: u64) {
    static AFTER: OnceLock<Option<u64>> = OnceLock::new();
    abort_at(&AFTER, "ONCELEDGER_FAULT_CONSUMER_CRASH_AFTER", commits);
}

/// `ONCELEDGER_FAULT_FINAL_CHECKPOINT_FAILS=1`: the checkpoint of a clean stop fails, as on a disk
/// going away, so the stop must be reported as unclean (a non-zero exit).
pub fn before_final_checkpoint(store: &onceledger_core::store::Store) {
    if std::env::var_os("ONCELEDGER_FAULT_FINAL_CHECKPOINT_FAILS").is_some() {
        tracing::error!("fault point: the final checkpoint will fail");
        store.fail_checkpoints();
    }
}

fn abort_at(after: &OnceLock<Option<u64>>, variable: &str, count: u64) {
    let after = after.get_or_init(|| std::env::var(variable).ok().and_then(|v| v.parse().ok()));
    if *after == Some(count) {
        tracing::error!(variable, count, "fault point: aborting the process");
        std::process::abort();
    }
}
