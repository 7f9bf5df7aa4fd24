//! A replicated batch inside the commit's transaction: each event is applied to its origin's
//! mirror together with its inbox row, in sequence order. A duplicate is counted and skipped, a
//! gap stops the batch, and an event that cannot be applied stops it too, until it has failed
//! `dead_letter_after` times; then it is parked as a dead letter and the events behind it flow.

use std::collections::HashMap;

use crate::limits::REFUSED_EVENTS_TRACKED_MAX;
use crate::store::{ApplyRefusal, BatchTables, StoreError};
use crate::wire::{Ack, EventBatch, RefusedEvent};

/// Failed attempts per (origin, seq), in memory. Bounded: when full it starts over, which only
/// grants the events it forgot a few more tries before they are parked.
#[derive(Default)]
pub(super) struct RefusedEvents(HashMap<(String, u64), u32>);

impl RefusedEvents {
    fn attempt(&mut self, origin: &str, seq: u64) -> u32 {
        let key = (origin.to_owned(), seq);
        if self.0.len() >= REFUSED_EVENTS_TRACKED_MAX && !self.0.contains_key(&key) {
            self.0.clear();
        }
        let attempts = self.0.entry(key).or_insert(0);
        *attempts = attempts.saturating_add(1);
        *attempts
    }

    fn forget(&mut self, origin: &str, seq: u64) {
        if !self.0.is_empty() {
            self.0.remove(&(origin.to_owned(), seq));
        }
    }
}

/// `origin` is the batch's origin node as the hub files it: qualified by the sender's tenant
/// (`crate::ids::origin_key`).
pub(super) fn apply(
    tables: &mut BatchTables<'_>,
    origin: &str,
    batch: &EventBatch,
    now_ms: u64,
    refused: &mut RefusedEvents,
    dead_letter_after: u32,
) -> Result<Ack, StoreError> {
    let replication = tables.replication();
    let mut ack = Ack {
        applied_through: replication.origin(origin)?.applied_through,
        applied: 0,
        duplicates: 0,
        dead_lettered: 0,
        refused: None,
    };
    for event in &batch.events {
        if event.seq <= ack.applied_through {
            ack.duplicates += 1;
            continue;
        }
        if event.seq != ack.applied_through + 1 {
            // A gap: the acknowledgement tells the sender where to resend from.
            break;
        }
        match replication.apply_event(origin, event)? {
            Ok(()) => {
                replication.record_applied(origin, event.seq, now_ms)?;
                refused.forget(origin, event.seq);
                ack.applied += 1;
            }
            Err(ApplyRefusal(reason)) => {
                let attempts = refused.attempt(origin, event.seq);
                if attempts < dead_letter_after {
                    ack.refused = Some(RefusedEvent {
                        seq: event.seq,
                        reason,
                        attempts,
                        attempts_max: dead_letter_after,
                    });
                    break;
                }
                let id = replication.park(origin, event, reason, attempts, now_ms)?;
                tracing::warn!(
                    origin,
                    seq = event.seq,
                    dead_letter = id,
                    attempts,
                    "replicated event parked as a dead letter"
                );
                refused.forget(origin, event.seq);
                ack.dead_lettered += 1;
            }
        }
        ack.applied_through = event.seq;
    }
    Ok(ack)
}
