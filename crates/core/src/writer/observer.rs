//! What the writer reports as it commits. The core has no metrics registry of its own: the server
//! implements this trait with its Prometheus counters, the writer's tests with plain atomics. One
//! call per batch (not per command), so a virtual call costs nothing measurable.

use std::time::Duration;

use crate::store::{Effect, MarksCrossed};
use crate::wire::Ack;

pub trait CommitObserver: Send + Sync + 'static {
    /// A batch of `commands` committed in `duration` (journal sync and redb commit included).
    fn observe_commit(&self, commands: usize, duration: Duration);
    /// The store's running counts of checkpoints, account flushes and key merges, after a batch.
    fn observe_marks_crossed(&self, totals: MarksCrossed);
    /// The effect of one finished command of a committed batch.
    fn count_effect(&self, effect: &Effect);
    /// A committed inbound (replicated) batch's acknowledgement.
    fn count_inbox(&self, ack: &Ack);
    /// Outbox events deleted by retention in a committed batch.
    fn count_outbox_pruned(&self, events: usize);
    /// Authorizations the writer expired in a committed batch (its own, not a command's).
    fn count_expired_authorizations(&self, authorizations: usize);
}

/// An observer that looks at nothing: for an embedding without metrics, and for benches.
pub struct Unobserved;

impl CommitObserver for Unobserved {
    fn observe_commit(&self, _commands: usize, _duration: Duration) {}
    fn observe_marks_crossed(&self, _totals: MarksCrossed) {}
    fn count_effect(&self, _effect: &Effect) {}
    fn count_inbox(&self, _ack: &Ack) {}
    fn count_outbox_pruned(&self, _events: usize) {}
    fn count_expired_authorizations(&self, _authorizations: usize) {}
}
