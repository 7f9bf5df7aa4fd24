//! Origins waiting for their next event, and whether the stream still holds it.
//!
//! Within one partition an origin's next event can be late for good reasons: a publish whose
//! acknowledgement was lost is published again behind later ones, a redelivery after a crash
//! comes after the ack wait. Then the hub NAKs what is behind the gap and the event comes. But
//! if the stream no longer holds it (its retention removed the origin's first events before this
//! hub read them), it never comes. A stream's limits remove messages oldest first, so the
//! messages it still holds of one origin are the latest ones: when the first of them is past the
//! event the hub needs, that event is gone. The consumer asks exactly that, once an origin has
//! waited `NATS_CONSUMER_GAP_LOOKUP_AFTER`, and reports it instead of waiting in silence.

use std::collections::HashMap;
use std::time::Instant;

use onceledger_core::limits::{
    NATS_CONSUMER_GAP_LOOKUP_AFTER, NATS_CONSUMER_GAP_LOOKUP_INTERVAL,
    NATS_CONSUMER_GAP_LOOKUPS_PER_FETCH_MAX, NATS_CONSUMER_GAPS_TRACKED_MAX,
};

/// An origin that waits for `needed_seq`, seen on `subject`.
struct Waiting {
    needed_seq: u64,
    subject: String,
    since: Instant,
    looked_up: Option<Instant>,
}

/// A lookup to make: the first event the stream holds on `subject`, against `needed_seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Lookup {
    pub origin: String,
    pub needed_seq: u64,
    pub subject: String,
}

#[derive(Default)]
pub(super) struct Gaps {
    waiting: HashMap<String, Waiting>,
}

impl Gaps {
    /// `origin` cannot go on before `needed_seq`, and a later event of it came on `subject`.
    /// Its wait starts now unless it already waited for that same event.
    pub fn waits(&mut self, origin: &str, needed_seq: u64, subject: &str, now: Instant) {
        if let Some(waiting) = self.waiting.get_mut(origin) {
            if waiting.needed_seq != needed_seq {
                *waiting = Waiting::new(needed_seq, subject, now);
            }
            return;
        }
        if self.waiting.len() < NATS_CONSUMER_GAPS_TRACKED_MAX {
            let waiting = Waiting::new(needed_seq, subject, now);
            self.waiting.insert(origin.to_owned(), waiting);
        }
    }

    /// `origin` is applied through `applied_through`: a wait for an event at or below it is over.
    /// Returns whether one ended.
    pub fn applied_through(&mut self, origin: &str, applied_through: u64) -> bool {
        let over = self
            .waiting
            .get(origin)
            .is_some_and(|w| w.needed_seq <= applied_through);
        if over {
            self.waiting.remove(origin);
        }
        over
    }

    /// The origins that waited long enough to be looked up (and not looked up lately), at most
    /// `NATS_CONSUMER_GAP_LOOKUPS_PER_FETCH_MAX`; each is marked looked up.
    pub fn due(&mut self, now: Instant) -> Vec<Lookup> {
        let mut due = Vec::new();
        for (origin, waiting) in &mut self.waiting {
            if due.len() >= NATS_CONSUMER_GAP_LOOKUPS_PER_FETCH_MAX {
                break;
            }
            let waited = now.saturating_duration_since(waiting.since);
            let lately = waiting.looked_up.is_some_and(|at| {
                now.saturating_duration_since(at) < NATS_CONSUMER_GAP_LOOKUP_INTERVAL
            });
            if waited >= NATS_CONSUMER_GAP_LOOKUP_AFTER && !lately {
                waiting.looked_up = Some(now);
                due.push(Lookup {
                    origin: origin.clone(),
                    needed_seq: waiting.needed_seq,
                    subject: waiting.subject.clone(),
                });
            }
        }
        due
    }
}

impl Waiting {
    fn new(needed_seq: u64, subject: &str, since: Instant) -> Waiting {
        Waiting {
            needed_seq,
            subject: subject.to_owned(),
            since,
            looked_up: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_origin_is_looked_up_after_waiting_and_then_only_every_interval() {
        let mut gaps = Gaps::default();
        let start = Instant::now();
        gaps.waits("till-1", 5, "p.0.till-1", start);
        assert!(gaps.due(start).is_empty(), "not before it waited");
        // A later delivery of the same wait keeps its start.
        gaps.waits(
            "till-1",
            5,
            "p.0.till-1",
            start + NATS_CONSUMER_GAP_LOOKUP_AFTER,
        );
        let at = start + NATS_CONSUMER_GAP_LOOKUP_AFTER;
        let lookups = gaps.due(at);
        assert_eq!(
            lookups,
            vec![Lookup {
                origin: "till-1".into(),
                needed_seq: 5,
                subject: "p.0.till-1".into()
            }]
        );
        assert!(gaps.due(at).is_empty(), "not again at once");
        assert_eq!(gaps.due(at + NATS_CONSUMER_GAP_LOOKUP_INTERVAL).len(), 1);
    }

    #[test]
    fn a_wait_ends_when_the_origin_is_applied_past_it_and_restarts_for_a_new_event() {
        let mut gaps = Gaps::default();
        let start = Instant::now();
        gaps.waits("till-1", 5, "s", start);
        assert!(!gaps.applied_through("till-1", 4));
        assert!(gaps.applied_through("till-1", 5));
        assert!(!gaps.applied_through("till-1", 9), "already over");
        gaps.waits("till-1", 5, "s", start);
        // Waiting for another event starts a new wait.
        gaps.waits("till-1", 9, "s", start + NATS_CONSUMER_GAP_LOOKUP_AFTER);
        assert!(gaps.due(start + NATS_CONSUMER_GAP_LOOKUP_AFTER).is_empty());
    }

    #[test]
    fn lookups_per_fetch_and_tracked_origins_are_bounded() {
        let mut gaps = Gaps::default();
        let start = Instant::now();
        for n in 0..NATS_CONSUMER_GAPS_TRACKED_MAX + 10 {
            gaps.waits(&format!("till-{n}"), 1, "s", start);
        }
        assert_eq!(gaps.waiting.len(), NATS_CONSUMER_GAPS_TRACKED_MAX);
        let later = start + NATS_CONSUMER_GAP_LOOKUP_AFTER;
        assert_eq!(
            gaps.due(later).len(),
            NATS_CONSUMER_GAP_LOOKUPS_PER_FETCH_MAX
        );
    }
}
