//! A replicated batch inside the commit's transaction: each event is applied to its origin's
//! mirror together with its inbox row, in sequence order. A duplicate is counted and skipped, a
//! gap stops the batch, and an event that cannot be applied stops it too, until it has failed
//! `dead_letter_after` times; then it is parked as a dead letter and the events behind it flow.

use std::collections::HashMap;

use crate::limits::REFUSED_EVENTS_TRACKED_MAX;
use crate::store::{ApplyRefusal, BatchTables, StoreError};
use crate::wire::{Ack, EventBatch, RefusedEvent};

/// Failed attempts per (origin, seq), in memory, for at most `REFUSED_EVENTS_TRACKED_MAX`
/// events. When it is full, an event not tracked yet is refused without being counted until an
/// entry frees up (parked or applied, which forgets it). First come, first counted: every tracked
/// event reaches `dead_letter_after` and leaves, so with any number of stuck origins every one
/// is parked in the end. (Clearing the table when full, as before, reset every count, and past
/// the bound no event ever reached `dead_letter_after`.) Each origin has at most one refused event
/// at a time, since a batch stops at the first refusal, so entries count stuck origins.
pub(super) struct RefusedEvents {
    attempts: HashMap<(String, u64), u32>,
    capacity: usize,
}

impl Default for RefusedEvents {
    fn default() -> Self {
        RefusedEvents::with_capacity(REFUSED_EVENTS_TRACKED_MAX)
    }
}

impl RefusedEvents {
    fn with_capacity(capacity: usize) -> RefusedEvents {
        RefusedEvents {
            attempts: HashMap::new(),
            capacity,
        }
    }

    /// Counts one more failed attempt and returns the count; 0 when the table is full and the
    /// event is not tracked (an attempt not counted yet).
    fn attempt(&mut self, origin: &str, seq: u64) -> u32 {
        let key = (origin.to_owned(), seq);
        if self.attempts.len() >= self.capacity && !self.attempts.contains_key(&key) {
            return 0;
        }
        let attempts = self.attempts.entry(key).or_insert(0);
        *attempts = attempts.saturating_add(1);
        *attempts
    }

    fn forget(&mut self, origin: &str, seq: u64) {
        if !self.attempts.is_empty() {
            self.attempts.remove(&(origin.to_owned(), seq));
        }
    }
}

/// When a refused event is parked.
pub(super) struct Parking<'a> {
    /// After this many failed attempts (`--dead-letter-after`).
    pub after_attempts: u32,
    /// `Some`: every new event is parked at its first attempt with this reason, never applied
    /// (`InboundRequest::park_reason`).
    pub at_once_because: Option<&'a str>,
}

/// `origin` is the batch's origin node as the hub files it: qualified by the sender's tenant
/// (`crate::ids::origin_key`).
pub(super) fn apply(
    tables: &mut BatchTables<'_>,
    origin: &str,
    batch: &EventBatch,
    now_ms: u64,
    refused: &mut RefusedEvents,
    parking: Parking<'_>,
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
        let outcome = match parking.at_once_because {
            Some(reason) => Err(ApplyRefusal(reason.to_owned())),
            None => replication.apply_event(origin, event)?,
        };
        match outcome {
            Ok(()) => {
                replication.record_applied(origin, event.seq, now_ms)?;
                refused.forget(origin, event.seq);
                ack.applied += 1;
            }
            Err(ApplyRefusal(reason)) => {
                let attempts = match parking.at_once_because {
                    Some(_) => 1,
                    None => refused.attempt(origin, event.seq),
                };
                if parking.at_once_because.is_none() && attempts < parking.after_attempts {
                    ack.refused = Some(RefusedEvent {
                        seq: event.seq,
                        reason,
                        attempts,
                        attempts_max: parking.after_attempts,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// More stuck origins than the table holds, each retrying in turn (as their senders do):
    /// every one is parked after `dead_letter_after` counted attempts, within a bounded number
    /// of rounds. With the old clear-when-full table none ever was.
    #[test]
    fn with_more_stuck_origins_than_the_bound_every_event_is_parked() {
        let (capacity, origins, dead_letter_after) = (64, 200, 5u32);
        let mut refused = RefusedEvents::with_capacity(capacity);
        let mut parked = vec![false; origins];
        let mut rounds = 0;
        while parked.contains(&false) {
            rounds += 1;
            assert!(
                rounds <= 100,
                "stuck: {} parked",
                parked.iter().filter(|p| **p).count()
            );
            for (origin, done) in parked.iter_mut().enumerate() {
                if *done {
                    continue;
                }
                let name = format!("till-{origin}");
                if refused.attempt(&name, 1) >= dead_letter_after {
                    refused.forget(&name, 1);
                    *done = true;
                }
            }
        }
        // Each slot serves its event for `dead_letter_after` rounds: origins / capacity waves.
        let waves = origins.div_ceil(capacity) as u32;
        assert!(rounds <= dead_letter_after * waves, "{rounds} rounds");
        assert!(refused.attempts.is_empty());
    }
}
