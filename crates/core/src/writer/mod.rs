//! The group-commit writer: one thread owns every write transaction.
//!
//! Request tasks put commands on a bounded crossbeam channel (full: 503 at once, never a wait). The
//! writer takes everything queued, up to `batch_commands_max`, applies each command in order inside
//! ONE redb write transaction, commits with one fsync, and only then answers each waiter and
//! releases its key. Under light load a batch is one command (lowest latency); under heavy load the
//! queue fills during each fsync and batches grow by themselves.
//!
//! **A failed commit poisons the writer.** Every waiter of that batch gets a retryable 503, and every
//! later command gets 503 until restart: an fsync that failed may have lost pages the kernel already
//! dropped, so retrying it could report success for data that is gone.

mod apply;
mod inbound;
mod lifecycle;
mod observer;

#[cfg(feature = "fault-injection")]
pub use lifecycle::test_clock::set_authorization_second_ms;
pub use observer::{CommitObserver, Unobserved};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use tokio::sync::oneshot;

use crate::clock::now_ms;
use crate::idempotency::{Claim, Fingerprint, IdempotencyKey};
use crate::ledger::{Command, TenantId};
use crate::limits::{
    BATCH_RECORD_BYTES_MAX, EXPIRIES_PER_COMMIT_MAX, OUTBOX_PRUNE_EVENTS_MAX,
    RETENTION_SWEEP_INTERVAL, RETENTION_SWEEP_RECORDS_MAX, WRITER_POLL_BEFORE_SLEEP,
};
use crate::store::{Store, StoreError};
use crate::wire::{Ack, EventBatch};

#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    pub batch_commands_max: usize,
    pub commit_queue_max: usize,
    pub idempotency_retention: Duration,
    /// Outbox events acknowledged by every sink are deleted once older than this.
    pub outbox_retention: Duration,
    /// A hub parks a replicated event as a dead letter after this many failed attempts.
    pub dead_letter_after: u32,
    /// How long an authorization lives when its request names no `expires_in`.
    pub authorization_ttl: Duration,
}

impl Default for WriterConfig {
    /// The embedded defaults of `onceledger serve`.
    fn default() -> Self {
        WriterConfig {
            batch_commands_max: crate::limits::BATCH_COMMANDS_DEFAULT,
            commit_queue_max: crate::limits::COMMIT_QUEUE_COMMANDS_DEFAULT,
            idempotency_retention: crate::limits::IDEMPOTENCY_RETENTION_DEFAULT,
            outbox_retention: crate::limits::OUTBOX_RETENTION_DEFAULT,
            dead_letter_after: crate::limits::DEAD_LETTER_AFTER_ATTEMPTS_DEFAULT,
            authorization_ttl: crate::limits::AUTHORIZATION_TTL_DEFAULT,
        }
    }
}

/// One POST on its way to the ledger. It carries its key's claim: the writer releases it once the
/// batch committed (or failed), just before answering, so a client that retries the moment it
/// reads its answer finds the key free and its record readable.
pub struct WriteRequest {
    pub tenant: TenantId,
    pub key: IdempotencyKey,
    pub fingerprint: Fingerprint,
    pub command: Command,
    pub claim: Claim,
    pub reply: oneshot::Sender<WriteOutcome>,
}

/// A finished request's answer, exactly as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    pub status: u16,
    pub body: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The command ran in this batch; its answer is committed.
    Executed(StoredAnswer),
    /// The key had already finished with the same fingerprint (found inside the transaction).
    Replayed(StoredAnswer),
    /// The key had already finished with another fingerprint.
    FingerprintMismatch,
    /// Nothing was stored: the commit failed now or earlier (poisoned), or the writer stopped.
    Unavailable,
}

#[derive(Debug)]
#[non_exhaustive]
pub enum SubmitError {
    /// The commit queue is at `commit_queue_max`.
    Overloaded,
    /// The writer is poisoned or stopped.
    Unavailable,
}

/// A batch of replicated events from an origin node, for this node's inbox.
pub struct InboundRequest {
    /// The tenant of the replicator token that sent it: the batch is filed under
    /// (tenant, origin), so two tenants' nodes never share a mirror or an inbox.
    pub tenant: TenantId,
    pub batch: EventBatch,
    /// `Some`: this node must not apply the batch's origin at all (a `consume` hub received an
    /// origin of another partition), so each new event is parked as a dead letter with this
    /// reason at its first attempt, never applied. `None`: applied as usual.
    pub park_reason: Option<String>,
    pub reply: oneshot::Sender<InboundOutcome>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundOutcome {
    Acknowledged(Ack),
    /// Nothing was stored (commit failed or the writer is poisoned); the sender will resend.
    Unavailable,
}

enum Message {
    Write(WriteRequest),
    Inbound(InboundRequest),
    /// A sink acknowledged events up to `through`. Not answered: a lost cursor update only means
    /// the sink gets those events again, and its inbox drops them.
    Cursor {
        sink: String,
        through: u64,
    },
    /// Commit what is queued before this message, then stop.
    Shutdown,
}

/// The handle request tasks use. Cheap to share behind an `Arc`.
pub struct WriterHandle {
    sender: Sender<Message>,
    poisoned: Arc<AtomicBool>,
    outbox_appended: Arc<tokio::sync::Notify>,
    thread: std::sync::Mutex<Option<JoinHandle<Result<(), StopError>>>>,
}

impl WriterHandle {
    pub fn spawn(
        store: Arc<Store>,
        config: WriterConfig,
        metrics: Arc<dyn CommitObserver>,
    ) -> std::io::Result<Self> {
        assert!(config.batch_commands_max >= 1 && config.commit_queue_max >= 1);
        let (sender, receiver) = crossbeam_channel::bounded(config.commit_queue_max);
        let poisoned = Arc::new(AtomicBool::new(false));
        let outbox_appended = Arc::new(tokio::sync::Notify::new());
        // Where the expiry index starts; unreadable: look at once (the first commit reads it).
        let next_expiry_ms = store.next_authorization_expiry_ms().unwrap_or(Some(0));
        let writer = Writer {
            next_expiry_ms,
            outbox_appended: Arc::clone(&outbox_appended),
            refused: inbound::RefusedEvents::default(),
            store,
            config,
            metrics,
            receiver,
            poisoned: PoisonOnExit(Arc::clone(&poisoned)),
            last_sweep: Instant::now(),
        };
        let thread = std::thread::Builder::new()
            .name("onceledger-writer".into())
            .spawn(move || writer.run())?;
        Ok(WriterHandle {
            sender,
            poisoned,
            outbox_appended,
            thread: std::sync::Mutex::new(Some(thread)),
        })
    }

    /// Queues a write without waiting. On error the request comes back dropped, releasing its claim.
    pub fn try_submit(&self, request: WriteRequest) -> Result<(), SubmitError> {
        self.try_send(Message::Write(request))
    }

    /// Queues a replicated batch for the inbox, without waiting.
    pub fn try_submit_inbound(&self, request: InboundRequest) -> Result<(), SubmitError> {
        self.try_send(Message::Inbound(request))
    }

    /// Queues a cursor update; it rides along with the next commit instead of taking an fsync.
    pub fn try_advance_cursor(&self, sink: &str, through: u64) -> Result<(), SubmitError> {
        self.try_send(Message::Cursor {
            sink: sink.to_owned(),
            through,
        })
    }

    fn try_send(&self, message: Message) -> Result<(), SubmitError> {
        if self.is_poisoned() {
            return Err(SubmitError::Unavailable);
        }
        match self.sender.try_send(message) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(SubmitError::Overloaded),
            Err(TrySendError::Disconnected(_)) => Err(SubmitError::Unavailable),
        }
    }

    /// A future that completes after the next commit that appended outbox events (the replicator
    /// waits on it instead of polling).
    pub fn outbox_appended(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.outbox_appended)
    }

    /// True once a commit failed or the writer thread ended: writes are refused until restart.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    /// Commands waiting in the queue right now.
    pub fn queued(&self) -> usize {
        self.sender.len()
    }

    /// Lets the writer commit everything queued so far, then waits for its thread to end. `Err`
    /// when the stop was not clean: the store refused writes (poisoned) or the final checkpoint
    /// failed. Nothing acknowledged is lost either way (the journal holds it and the next start
    /// replays it), but a process stopping on failing storage must not look like a clean stop.
    /// A second call returns `Ok`: the first one reported.
    pub fn shutdown(&self) -> Result<(), StopError> {
        // A blocking send: the queue may be full, and everything in it must still be committed.
        let _ = self.sender.send(Message::Shutdown);
        let thread = self.thread.lock().map(|mut t| t.take()).unwrap_or(None);
        match thread.map(JoinHandle::join) {
            None => Ok(()),
            Some(Ok(stopped)) => stopped,
            Some(Err(_)) => Err(StopError::Panicked),
        }
    }
}

/// How a writer's stop was not clean.
#[derive(Debug)]
#[non_exhaustive]
pub enum StopError {
    /// A write failed earlier (an fsync, a commit): the writer refused writes since.
    Poisoned,
    /// The checkpoint at shutdown failed; the next start replays the journal.
    FinalCheckpoint(StoreError),
    /// The writer thread panicked.
    Panicked,
}

impl std::fmt::Display for StopError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopError::Poisoned => f.write_str(
                "the store refused writes after a storage failure; restart on healthy storage (nothing acknowledged is lost)",
            ),
            StopError::FinalCheckpoint(error) => write!(
                f,
                "the final checkpoint failed ({error}); the next start replays the journal"
            ),
            StopError::Panicked => f.write_str("the writer thread panicked"),
        }
    }
}

impl std::error::Error for StopError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StopError::FinalCheckpoint(error) => Some(error),
            _ => None,
        }
    }
}

/// Marks the writer unusable when its thread ends for any reason, a panic included, so that no
/// request waits for a writer that is gone and /readyz stops answering 200.
struct PoisonOnExit(Arc<AtomicBool>);

impl PoisonOnExit {
    fn poison(&self) {
        self.0.store(true, Ordering::Release);
    }

    fn is_poisoned(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

impl Drop for PoisonOnExit {
    fn drop(&mut self) {
        self.poison();
    }
}

/// Releases the key, then answers. The order matters: the outcome is final (committed, or nothing
/// stored), so the key may be reused at once, and a client that retries as soon as it reads its
/// answer must not be told its own finished request is still in flight.
fn answer(request: WriteRequest, outcome: WriteOutcome) {
    let WriteRequest { claim, reply, .. } = request;
    drop(claim);
    // The client may have gone away; its outcome is stored either way.
    let _ = reply.send(outcome);
}

struct Writer {
    /// When the earliest open authorization expires, as of the last commit: the writer wakes
    /// for it when idle, so an expiry happens within moments of `expires_at`.
    next_expiry_ms: Option<u64>,
    outbox_appended: Arc<tokio::sync::Notify>,
    /// Failed attempts per replicated event, until it is applied or parked.
    refused: inbound::RefusedEvents,
    store: Arc<Store>,
    config: WriterConfig,
    metrics: Arc<dyn CommitObserver>,
    receiver: Receiver<Message>,
    poisoned: PoisonOnExit,
    last_sweep: Instant,
}

impl Writer {
    fn run(mut self) -> Result<(), StopError> {
        let mut batch: Vec<Job> = Vec::with_capacity(self.config.batch_commands_max);
        let mut stopping = false;
        let mut last_batch_len = 0;
        while !stopping {
            if last_batch_len == 1 {
                self.wait_briefly_for_work();
            }
            // Commands left over from a batch cut at its byte bound go first, without waiting.
            if batch.is_empty() {
                match self.receiver.recv_timeout(self.idle_wait()) {
                    Ok(Message::Shutdown) => stopping = true,
                    Ok(message) => batch.extend(Job::of(message)),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => stopping = true,
                }
            }
            // Group commit: take whatever else is already waiting, without waiting for more.
            while !stopping && batch.len() < self.config.batch_commands_max {
                match self.receiver.try_recv() {
                    Ok(Message::Shutdown) => stopping = true,
                    Ok(message) => batch.extend(Job::of(message)),
                    Err(_) => break,
                }
            }
            last_batch_len = batch.len();
            // A batch cut at its byte bound leaves the rest in `batch`: commit until it is empty,
            // so a shutdown still commits everything queued before it.
            while !batch.is_empty() {
                self.commit(&mut batch);
            }
            // Nothing came, and an authorization may be due: a commit of no commands expires it.
            if self.expiry_due() && self.expiry_still_due() {
                self.commit(&mut batch);
            }
            if self.last_sweep.elapsed() >= RETENTION_SWEEP_INTERVAL {
                self.sweep_expired_keys();
            }
        }
        // Anything still queued arrived after shutdown began; answer it rather than drop it silently.
        while let Ok(message) = self.receiver.try_recv() {
            if let Some(job) = Job::of(message) {
                job.fail();
            }
        }
        if self.poisoned.is_poisoned() {
            tracing::error!("writer stopped after a storage failure");
            return Err(StopError::Poisoned);
        }
        // A clean stop leaves current account rows and every journaled batch in the redb file, so
        // the next start re-applies no postings and replays no journal.
        if let Err(error) = self.store.checkpoint() {
            tracing::error!(%error, "final checkpoint failed; the next start re-applies postings and replays the journal");
            return Err(StopError::FinalCheckpoint(error));
        }
        tracing::info!("writer stopped");
        Ok(())
    }

    /// After a commit of one command (light load), polls the queue for up to
    /// `WRITER_POLL_BEFORE_SLEEP` before blocking on it, yielding the core to any other runnable
    /// thread between looks. Why: waking a sleeping thread costs tens of microseconds here (a
    /// futex wake, then the scheduler, in a VM an idle vCPU's exit); a lone client's next command
    /// arrives a round trip after its answer, and polling takes it without that wake: one
    /// connection's p50 dropped by ~0.05 ms (BENCHMARKS.md). Under load batches are larger
    /// and nothing changes; when idle it costs one bounded poll.
    fn wait_briefly_for_work(&self) {
        let started = Instant::now();
        while self.receiver.is_empty() && started.elapsed() < WRITER_POLL_BEFORE_SLEEP {
            std::thread::yield_now();
        }
    }

    /// How long the idle writer may sleep: until the next sweep, or the next expiry if sooner.
    fn idle_wait(&self) -> Duration {
        let until_expiry = self.next_expiry_ms.map_or(RETENTION_SWEEP_INTERVAL, |at| {
            Duration::from_millis(at.saturating_sub(now_ms()))
        });
        until_expiry.min(RETENTION_SWEEP_INTERVAL)
    }

    fn expiry_due(&self) -> bool {
        !self.poisoned.is_poisoned() && self.next_expiry_ms.is_some_and(|at| at <= now_ms())
    }

    /// `next_expiry_ms` may be early (the authorization it came from was captured or voided
    /// since): looks again in the store before a commit is spent on it.
    fn expiry_still_due(&mut self) -> bool {
        match self.store.next_authorization_expiry_ms() {
            Ok(next) => self.next_expiry_ms = next,
            // Unreadable: let the commit look (and fail there, poisoning, if the store is gone).
            Err(error) => tracing::warn!(%error, "cannot read the expiry index"),
        }
        self.expiry_due()
    }

    fn commit(&mut self, batch: &mut Vec<Job>) {
        if self.poisoned.is_poisoned() {
            batch.drain(..).for_each(Job::fail);
            return;
        }
        let started = Instant::now();
        let now = now_ms();
        let context = apply::Context {
            now_ms: now,
            authorization_ttl_ms: u64::try_from(self.config.authorization_ttl.as_millis())
                .unwrap_or(u64::MAX),
        };
        let dead_letter_after = self.config.dead_letter_after;
        let refused = &mut self.refused;
        let expiry_due = self.next_expiry_ms.is_some_and(|at| at <= now);
        let self_next_expiry_ms = self.next_expiry_ms;
        let result = self.store.commit_batch(|tables| {
            // Entries are stamped no earlier than the last committed one: a wall clock stepped
            // back must not put history out of order (`as_of` and `created_*` seek by time).
            let now = now.max(tables.clock_floor_ms());
            let context = apply::Context {
                now_ms: now,
                ..context
            };
            let outbox_before = tables.next_event_seq();
            // Expiries first: a capture in this batch of an authorization that expired before it
            // finds it expired (and would expire it itself otherwise, see `lifecycle`).
            let expired = if expiry_due {
                lifecycle::expire_due(tables, now, EXPIRIES_PER_COMMIT_MAX)?
            } else {
                0
            };
            let mut outcomes = Vec::with_capacity(batch.len());
            for job in batch.iter() {
                // Past the byte bound the batch ends here; the rest form the next one.
                if !outcomes.is_empty() && tables.record_bytes() >= BATCH_RECORD_BYTES_MAX {
                    break;
                }
                outcomes.push(match job {
                    Job::Write(request) => {
                        apply::apply(tables, request, &context).map(JobOutcome::Write)
                    }
                    Job::Inbound(request) => {
                        let origin = crate::ids::origin_key(request.tenant, &request.batch.origin);
                        inbound::apply(
                            tables,
                            &origin,
                            &request.batch,
                            now,
                            refused,
                            inbound::Parking {
                                after_attempts: dead_letter_after,
                                at_once_because: request.park_reason.as_deref(),
                            },
                        )
                        .map(JobOutcome::Inbound)
                    }
                    Job::Cursor { sink, through } => tables
                        .replication()
                        .advance_cursor(sink, *through)
                        .map(|()| JobOutcome::Cursor),
                }?);
            }
            // The index is looked at again only after an expiry pass; otherwise the earliest
            // new authorization of this batch is all that can move the next expiry earlier (a
            // capture or void can only make it later: `expiry_still_due` catches that).
            let next_expiry_ms = if expiry_due {
                tables.next_expiry_ms()?
            } else {
                earliest(self_next_expiry_ms, tables.earliest_expiry_added())
            };
            let appended = tables.next_event_seq() > outbox_before;
            Ok((outcomes, appended, (expired, next_expiry_ms)))
        });
        let committed = match &result {
            Ok((outcomes, _, _)) => outcomes.len(),
            Err(_) => batch.len(),
        };
        self.metrics.observe_commit(committed, started.elapsed());
        self.metrics
            .observe_marks_crossed(self.store.marks_crossed());
        match result {
            Ok((outcomes, appended, (expired, next_expiry_ms))) => {
                self.next_expiry_ms = next_expiry_ms;
                if expired > 0 {
                    self.metrics.count_expired_authorizations(expired);
                }
                if appended {
                    self.outbox_appended.notify_one();
                }
                for (job, outcome) in batch.drain(..outcomes.len()).zip(outcomes) {
                    match (job, outcome) {
                        (Job::Write(request), JobOutcome::Write((outcome, effect))) => {
                            if let Some(effect) = &effect {
                                self.metrics.count_effect(effect);
                            }
                            answer(request, outcome);
                        }
                        (Job::Inbound(request), JobOutcome::Inbound(ack)) => {
                            self.metrics.count_inbox(&ack);
                            let _ = request.reply.send(InboundOutcome::Acknowledged(ack));
                        }
                        _ => {}
                    }
                }
            }
            Err(error) => {
                tracing::error!(%error, commands = batch.len(), "commit failed; refusing all writes until restart");
                self.poisoned.poison();
                batch.drain(..).for_each(Job::fail);
            }
        }
    }

    /// Deletes idempotency records older than the retention, a bounded number per transaction.
    fn sweep_expired_keys(&mut self) {
        self.last_sweep = Instant::now();
        if self.poisoned.is_poisoned() {
            return;
        }
        let retention_ms =
            u64::try_from(self.config.idempotency_retention.as_millis()).unwrap_or(u64::MAX);
        let cutoff_ms = now_ms().saturating_sub(retention_ms);
        let outbox_retention_ms =
            u64::try_from(self.config.outbox_retention.as_millis()).unwrap_or(u64::MAX);
        let outbox_cutoff_ms = now_ms().saturating_sub(outbox_retention_ms);
        // Events every sink acknowledged. No sink ever registered: nobody waits for them.
        let acknowledged_by_all = match self.store.sink_cursors() {
            Ok(cursors) => cursors
                .iter()
                .map(|(_, through)| *through)
                .min()
                .unwrap_or(u64::MAX),
            Err(error) => {
                tracing::warn!(%error, "cannot read sink cursors; outbox retention skipped");
                0
            }
        };
        // This thread is the only writer: the snapshot's first held seq is the transaction's.
        let first_held = self.store.outbox_bounds().map_or(1, |(first, _)| first);
        match self.store.commit_batch(|tables| {
            let keys = tables.sweep_idempotency(cutoff_ms, RETENTION_SWEEP_RECORDS_MAX)?;
            let events = tables.prune_outbox(
                acknowledged_by_all,
                outbox_cutoff_ms,
                OUTBOX_PRUNE_EVENTS_MAX,
            )?;
            // The owners of deleted events go too (bounded like the events themselves).
            tables
                .auth()
                .prune_event_owners(first_held + events as u64, OUTBOX_PRUNE_EVENTS_MAX)?;
            Ok((keys, events))
        }) {
            Ok((0, 0)) => {}
            Ok((keys, events)) => {
                self.metrics.count_outbox_pruned(events);
                tracing::info!(
                    keys,
                    events,
                    "expired idempotency records and outbox events deleted"
                );
            }
            Err(error) => {
                tracing::error!(%error, "retention sweep failed; refusing all writes until restart");
                self.poisoned.poison();
            }
        }
    }
}

/// The earlier of two optional instants.
fn earliest(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// One unit of work in a commit.
enum Job {
    Write(WriteRequest),
    Inbound(InboundRequest),
    Cursor { sink: String, through: u64 },
}

enum JobOutcome {
    /// The answer, and the effect when the command executed in this commit.
    Write((WriteOutcome, Option<crate::store::Effect>)),
    Inbound(Ack),
    Cursor,
}

impl Job {
    fn of(message: Message) -> Option<Job> {
        match message {
            Message::Write(request) => Some(Job::Write(request)),
            Message::Inbound(request) => Some(Job::Inbound(request)),
            Message::Cursor { sink, through } => Some(Job::Cursor { sink, through }),
            Message::Shutdown => None,
        }
    }

    /// Answers the job's waiter with "nothing stored".
    fn fail(self) {
        match self {
            Job::Write(request) => answer(request, WriteOutcome::Unavailable),
            Job::Inbound(request) => {
                let _ = request.reply.send(InboundOutcome::Unavailable);
            }
            Job::Cursor { .. } => {}
        }
    }
}

#[cfg(test)]
mod charge_id_tests;
#[cfg(test)]
mod replication_tests;
#[cfg(test)]
mod test_node;
#[cfg(test)]
mod tests;
