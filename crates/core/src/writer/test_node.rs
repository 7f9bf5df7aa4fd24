//! A store and its real writer thread, for the writer's tests that drive it command by command.

use std::sync::Arc;

use super::{Unobserved, WriteOutcome, WriteRequest, WriterConfig, WriterHandle};
use crate::idempotency::{Fingerprint, IdempotencyKey, InFlightIndex, canonical_body};
use crate::ledger::{Command, TenantId};
use crate::store::Store;

/// A store and its running writer.
pub(super) struct Node {
    pub(super) store: Arc<Store>,
    pub(super) writer: WriterHandle,
    index: Arc<InFlightIndex>,
}

impl Node {
    pub(super) fn start(store: Store) -> Node {
        Node::start_with(store, WriterConfig::default())
    }

    pub(super) fn start_with(store: Store, config: WriterConfig) -> Node {
        let store = Arc::new(store);
        let writer =
            WriterHandle::spawn(Arc::clone(&store), config, Arc::new(Unobserved)).expect("writer");
        Node {
            store,
            writer,
            index: InFlightIndex::new(),
        }
    }

    pub(super) fn run(&self, key: &str, command: Command) -> WriteOutcome {
        let key = IdempotencyKey::parse(key.as_bytes()).expect("key");
        let claim = (self.index)
            .claim(TenantId::DEFAULT, &key)
            .expect("key is free");
        let fingerprint = Fingerprint::of("POST", "/v1/test", &canonical_body(&command));
        let (reply, answer) = tokio::sync::oneshot::channel();
        let request = WriteRequest {
            tenant: TenantId::DEFAULT,
            key,
            fingerprint,
            command,
            claim,
            reply,
        };
        let queued = self.writer.try_submit(request);
        assert!(queued.is_ok(), "queued");
        answer.blocking_recv().expect("answered")
    }

    /// Runs a new command and returns its 201 body.
    pub(super) fn created(&self, key: &str, command: Command) -> Vec<u8> {
        match self.run(key, command) {
            WriteOutcome::Executed(answer) if answer.status == 201 => answer.body.to_vec(),
            other => panic!("{key}: {other:?}"),
        }
    }

    /// A clean stop: the writer's last checkpoint, then the store closes.
    pub(super) fn stop(self) {
        self.writer.shutdown().expect("a clean stop");
        drop(self.writer);
        assert_eq!(
            Arc::strong_count(&self.store),
            1,
            "nothing else holds the store"
        );
    }
}
