//! What a `consume` hub shows of its feed on `GET /v1/replication/origins`: the partition it
//! applies, and the origins it cannot go on with because the stream no longer holds their next
//! event. The consumer task writes it; request tasks read it.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::partition::Partition;
use onceledger_core::clock::{now_ms, rfc3339_ms};
use onceledger_core::render::{FeedPartition, HubFeed, MissingFromStream};

/// One origin the stream cannot complete: the hub needs `needed_seq` and the stream's first
/// event of that origin (on this partition's subject) is `first_held_seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Missing {
    needed_seq: u64,
    first_held_seq: u64,
    found_at_ms: u64,
}

pub struct FeedStatus {
    partition: FeedPartition,
    /// A std Mutex: held for one map operation or a copy, never across an await, and read by
    /// request tasks only for `GET /v1/replication/origins`. Bounded by the gaps the consumer
    /// tracks (`NATS_CONSUMER_GAPS_TRACKED_MAX`).
    missing: Mutex<BTreeMap<String, Missing>>,
}

impl FeedStatus {
    pub fn new(partition: Partition, stream: &str, durable: &str, filter_subject: &str) -> Self {
        FeedStatus {
            partition: FeedPartition {
                index: partition.index(),
                count: partition.count(),
                stream: stream.to_owned(),
                durable: durable.to_owned(),
                filter_subject: filter_subject.to_owned(),
            },
            missing: Mutex::new(BTreeMap::new()),
        }
    }

    /// A snapshot for the origins page.
    pub fn view(&self) -> HubFeed {
        let missing = self.missing.lock().unwrap_or_else(|p| p.into_inner());
        HubFeed {
            partition: self.partition.clone(),
            missing_from_stream: missing
                .iter()
                .map(|(node, m)| MissingFromStream {
                    node: node.clone(),
                    needed_seq: m.needed_seq,
                    first_held_seq: m.first_held_seq,
                    since: rfc3339_ms(m.found_at_ms),
                })
                .collect(),
        }
    }

    /// Records what a lookup found; returns whether it changed (so the caller logs once).
    pub(super) fn report(&self, origin: &str, needed_seq: u64, first_held_seq: u64) -> bool {
        let mut missing = self.missing.lock().unwrap_or_else(|p| p.into_inner());
        match missing.get(origin) {
            Some(m) if m.needed_seq == needed_seq && m.first_held_seq == first_held_seq => false,
            _ => {
                let found_at_ms = now_ms();
                missing.insert(
                    origin.to_owned(),
                    Missing {
                        needed_seq,
                        first_held_seq,
                        found_at_ms,
                    },
                );
                true
            }
        }
    }

    /// The origin moved on (or the stream holds its next event after all); returns whether it
    /// was reported.
    pub(super) fn clear(&self, origin: &str) -> bool {
        let mut missing = self.missing.lock().unwrap_or_else(|p| p.into_inner());
        missing.remove(origin).is_some()
    }

    pub(super) fn is_missing(&self, origin: &str) -> bool {
        let missing = self.missing.lock().unwrap_or_else(|p| p.into_inner());
        missing.contains_key(origin)
    }

    pub(super) fn missing_count(&self) -> usize {
        let missing = self.missing.lock().unwrap_or_else(|p| p.into_inner());
        missing.len()
    }
}
