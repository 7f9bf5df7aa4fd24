//! The node-to-hub protocol: `POST /v1/replication/events` carries an [`EventBatch`] as JSON and
//! the hub answers with an [`Ack`]. The decoder is pure (no I/O, no panics) and fuzzed.
//!
//! Events travel as the origin stored them (the same `Event` a dead letter keeps), so a hub can
//! re-check every value: ids, currencies and amounts are validated again while decoding.

use serde::{Deserialize, Serialize};

use crate::ids::is_valid_node_id;
use crate::limits::REPLICATION_BATCH_EVENTS_MAX;
use crate::store::Event;

/// Bumped on any change a hub of the previous version could not read.
pub const WIRE_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventBatch {
    pub version: u32,
    /// The sending node's id.
    pub origin: String,
    /// Consecutive events in sequence order.
    pub events: Vec<Event>,
}

/// The hub's answer. The sender moves its cursor to `applied_through` and resends from the event
/// after it: a duplicate, a gap or a refused event all end in the same rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ack {
    /// Every event of the origin up to this seq is applied or dead-lettered on the hub.
    pub applied_through: u64,
    pub applied: u64,
    pub duplicates: u64,
    pub dead_lettered: u64,
    /// The event the hub could not apply this time (it will be dead-lettered after enough tries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<RefusedEvent>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefusedEvent {
    pub seq: u64,
    pub reason: String,
    pub attempts: u32,
    pub attempts_max: u32,
}

/// Why a batch (or an acknowledgement) was refused as a whole (400): it is malformed, not
/// merely unappliable. `Display` is the problem's `detail`.
#[derive(Debug)]
#[non_exhaustive]
pub enum WireError {
    NotABatch(serde_json::Error),
    Version(u32),
    Origin,
    EventCount,
    FirstSeqZero,
    NotConsecutive,
    NotAnAck(serde_json::Error),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::NotABatch(e) => write!(f, "not an event batch: {e}"),
            WireError::Version(version) => write!(
                f,
                "batch version {version} is not supported (this hub reads {WIRE_VERSION})"
            ),
            WireError::Origin => f.write_str("origin is not a valid node id"),
            WireError::EventCount => {
                write!(
                    f,
                    "a batch holds 1 to {REPLICATION_BATCH_EVENTS_MAX} events"
                )
            }
            WireError::FirstSeqZero => f.write_str("sequence numbers start at 1"),
            WireError::NotConsecutive => {
                f.write_str("events must be consecutive, in sequence order")
            }
            WireError::NotAnAck(e) => write!(f, "not an acknowledgement: {e}"),
        }
    }
}

impl std::error::Error for WireError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WireError::NotABatch(e) | WireError::NotAnAck(e) => Some(e),
            _ => None,
        }
    }
}

/// Decodes and validates a batch: known version, a valid origin id, 1 to
/// `REPLICATION_BATCH_EVENTS_MAX` events numbered consecutively from at least 1.
pub fn decode_batch(body: &[u8]) -> Result<EventBatch, WireError> {
    let batch: EventBatch = serde_json::from_slice(body).map_err(WireError::NotABatch)?;
    if batch.version != WIRE_VERSION {
        return Err(WireError::Version(batch.version));
    }
    if !is_valid_node_id(&batch.origin) {
        return Err(WireError::Origin);
    }
    if batch.events.is_empty() || batch.events.len() > REPLICATION_BATCH_EVENTS_MAX {
        return Err(WireError::EventCount);
    }
    let first = batch.events[0].seq;
    if first == 0 {
        return Err(WireError::FirstSeqZero);
    }
    let consecutive = batch
        .events
        .iter()
        .zip(first..)
        .all(|(event, expected)| event.seq == expected);
    if !consecutive {
        return Err(WireError::NotConsecutive);
    }
    Ok(batch)
}

pub fn encode_batch(batch: &EventBatch) -> Vec<u8> {
    encode_events(&batch.origin, &batch.events)
}

/// Encodes a batch from borrowed parts, as the sender has them (no copy of the events).
pub fn encode_events(origin: &str, events: &[Event]) -> Vec<u8> {
    #[derive(Serialize)]
    struct EventBatchRef<'a> {
        version: u32,
        origin: &'a str,
        events: &'a [Event],
    }
    // Plain structs with string keys: serialising into a Vec cannot fail.
    serde_json::to_vec(&EventBatchRef {
        version: WIRE_VERSION,
        origin,
        events,
    })
    .unwrap_or_default()
}

pub fn decode_ack(body: &[u8]) -> Result<Ack, WireError> {
    serde_json::from_slice(body).map_err(WireError::NotAnAck)
}

pub fn encode_ack(ack: &Ack) -> Vec<u8> {
    serde_json::to_vec(ack).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(seqs: &[u64]) -> EventBatch {
        EventBatch {
            version: WIRE_VERSION,
            origin: "n0123456789ab".into(),
            events: seqs
                .iter()
                .map(|s| Event::account_created_for_test(*s, &format!("a{s}")))
                .collect(),
        }
    }

    #[test]
    fn a_batch_round_trips() {
        let sent = batch(&[3, 4, 5]);
        assert_eq!(decode_batch(&encode_batch(&sent)).ok(), Some(sent));
    }

    #[test]
    fn malformed_batches_are_refused() {
        for (bad, why) in [
            (batch(&[]), "empty"),
            (batch(&[0, 1]), "seq 0"),
            (batch(&[1, 3]), "gap"),
            (batch(&[2, 1]), "order"),
            (
                EventBatch {
                    origin: "n:1".into(),
                    ..batch(&[1])
                },
                "origin",
            ),
        ] {
            assert!(decode_batch(&encode_batch(&bad)).is_err(), "{why} accepted");
        }
        let text = String::from_utf8(encode_batch(&batch(&[1]))).expect("utf-8");
        let invalid_id = text.replace("\"a1\"", "\"a 1\"");
        assert_ne!(invalid_id, text);
        assert!(decode_batch(invalid_id.as_bytes()).is_err());
        let future_version = text.replace("\"version\":1", "\"version\":2");
        assert_ne!(future_version, text);
        assert!(decode_batch(future_version.as_bytes()).is_err());
        let unknown_field = text.replacen("{", "{\"extra\":1,", 1);
        assert!(decode_batch(unknown_field.as_bytes()).is_err());
    }
}
