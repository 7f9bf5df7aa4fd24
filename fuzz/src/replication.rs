//! `replication_decode`: arbitrary bytes into the hub's decoder of replicated event batches (the
//! body of `POST /v1/replication/events`, and each JetStream message), and into the sender's
//! decoder of acknowledgements.
//!
//! Properties: no decoder panics; an accepted batch is within the protocol's limits, consecutive,
//! and re-encodes to bytes that decode to the same batch; and applied to a fresh hub store
//! through the real writer it leaves a store whose invariants hold, whatever values it carried
//! (a batch the mirror cannot take is refused or parked, never applied in part).

use std::sync::Arc;

use onceledger_core::limits::REPLICATION_BATCH_EVENTS_MAX;
use onceledger_core::store::{Store, check};
use onceledger_core::wire::{
    EventBatch, decode_ack, decode_batch, encode_ack, encode_batch, version_for,
};
use onceledger_core::writer::{InboundOutcome, InboundRequest, WriterConfig, WriterHandle};
use onceledger_server::metrics::Metrics;

pub fn check(data: &[u8]) {
    if let Ok(ack) = decode_ack(data) {
        assert_eq!(
            decode_ack(&encode_ack(&ack)).ok(),
            Some(ack),
            "an ack round-trips"
        );
    }
    let Ok(batch) = decode_batch(data) else {
        return;
    };
    assert!(!batch.events.is_empty() && batch.events.len() <= REPLICATION_BATCH_EVENTS_MAX);
    for pair in batch.events.windows(2) {
        assert_eq!(
            pair[1].seq,
            pair[0].seq + 1,
            "accepted events are consecutive"
        );
    }
    let again = decode_batch(&encode_batch(&batch)).expect("a re-encoded batch decodes");
    // The encoder writes the oldest version that has every kind the batch holds: a version 2
    // batch of only version 1's kinds comes back as version 1, with the same events.
    assert_eq!(
        again.version,
        version_for(&batch.events),
        "the version follows the kinds"
    );
    assert!(
        again.version <= batch.version,
        "never a newer version than was read"
    );
    assert_eq!(
        (again.origin.as_str(), &again.events),
        (batch.origin.as_str(), &batch.events),
        "a batch round-trips"
    );
    apply_to_fresh_hub(batch);
}

/// Applies the batch twice (the second time every event is a duplicate or still refused), then
/// verifies the store. `dead_letter_after` 2: the second delivery parks a refused event.
fn apply_to_fresh_hub(batch: EventBatch) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(Store::open(dir.path()).expect("store opens"));
    let config = WriterConfig {
        batch_commands_max: 16,
        commit_queue_max: 16,
        dead_letter_after: 2,
        ..WriterConfig::default()
    };
    let writer = WriterHandle::spawn(Arc::clone(&store), config, Arc::new(Metrics::new()) as _)
        .expect("writer starts");
    let events = batch.events.len() as u64;
    let first = batch.events[0].seq;
    let mut acks = Vec::new();
    for _ in 0..2 {
        let (reply, answer) = tokio::sync::oneshot::channel();
        writer
            .try_submit_inbound(InboundRequest {
                tenant: onceledger_core::ledger::TenantId::DEFAULT,
                batch: batch.clone(),
                park_reason: None,
                reply,
            })
            .map_err(|e| format!("{e:?}"))
            .expect("queued");
        match answer.blocking_recv() {
            Ok(InboundOutcome::Acknowledged(ack)) => acks.push(ack),
            other => panic!("a fresh hub must take the batch: {other:?}"),
        }
    }
    writer
        .shutdown()
        .expect("a fresh hub on a healthy disk stops cleanly");
    let [once, twice] = <[_; 2]>::try_from(acks).expect("two acks");
    // A fresh hub expects seq 1: a batch that starts later is a gap and changes nothing.
    if first != 1 {
        assert_eq!((once.applied_through, once.applied), (0, 0), "{once:?}");
    }
    assert!(once.applied + once.dead_lettered <= events);
    assert!(twice.applied_through >= once.applied_through);
    assert!(
        twice.duplicates >= once.applied + once.dead_lettered,
        "what took effect once is a duplicate the second time: {once:?} then {twice:?}"
    );
    let report = check::verify(&store).expect("store readable");
    assert!(report.violations.is_empty(), "{:?}", report.violations);
}
