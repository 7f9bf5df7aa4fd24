//! The writer against a real redb file whose fsyncs the tests can hold or fail.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tokio::sync::oneshot;

use super::*;
use crate::idempotency::canonical_body;
use crate::idempotency::{Fingerprint, IdempotencyKey, InFlightIndex};
use crate::ledger::{AccountId, Amount, Currency, Metadata, NewAccount, NewCharge};
use crate::store::Store;
use crate::store::fault::{self, FaultSwitches};

struct Rig {
    store: Arc<Store>,
    writer: WriterHandle,
    index: Arc<InFlightIndex>,
    switches: Arc<FaultSwitches>,
    metrics: Arc<CountingObserver>,
    dir: tempfile::TempDir,
}

fn rig(commit_queue_max: usize, batch_commands_max: usize) -> Rig {
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, switches) = fault::open_store(dir.path()).expect("store opens");
    let store = Arc::new(store);
    let metrics = Arc::new(CountingObserver::default());
    let config = WriterConfig {
        batch_commands_max,
        commit_queue_max,
        idempotency_retention: Duration::from_secs(3600),
        ..WriterConfig::default()
    };
    let writer =
        WriterHandle::spawn(Arc::clone(&store), config, Arc::clone(&metrics) as _).expect("writer");
    Rig {
        store,
        writer,
        index: InFlightIndex::new(),
        switches,
        metrics,
        dir,
    }
}

fn account(id: &str, overdraft_limit: Option<u64>) -> Command {
    Command::CreateAccount(NewAccount {
        id: AccountId::parse(id).expect("id"),
        currency: Currency::parse("EUR").expect("currency"),
        overdraft_limit,
    })
}

fn charge(source: &str, destination: &str, amount: u64) -> Command {
    Command::CreateCharge(NewCharge {
        source: AccountId::parse(source).expect("id"),
        destination: AccountId::parse(destination).expect("id"),
        amount: Amount::new(amount).expect("amount"),
        currency: Currency::parse("EUR").expect("currency"),
        metadata: Metadata::default(),
    })
}

impl Rig {
    fn request(
        &self,
        index: &Arc<InFlightIndex>,
        key: &str,
        command: Command,
    ) -> (WriteRequest, oneshot::Receiver<WriteOutcome>) {
        let key = IdempotencyKey::parse(key.as_bytes()).expect("key");
        let claim = index.claim(TenantId::DEFAULT, &key).expect("key is free");
        let fingerprint = Fingerprint::of("POST", "/test", &canonical_body(&command));
        let (reply, answer) = oneshot::channel();
        (
            WriteRequest {
                tenant: TenantId::DEFAULT,
                key,
                fingerprint,
                command,
                claim,
                reply,
            },
            answer,
        )
    }

    fn submit(&self, key: &str, command: Command) -> oneshot::Receiver<WriteOutcome> {
        let (request, answer) = self.request(&self.index, key, command);
        self.writer
            .try_submit(request)
            .map_err(|e| format!("{e:?}"))
            .expect("queued");
        answer
    }

    fn run(&self, key: &str, command: Command) -> WriteOutcome {
        self.submit(key, command).blocking_recv().expect("answered")
    }

    fn balance(&self, id: &str) -> i64 {
        let account = self
            .store
            .account(TenantId::DEFAULT, &AccountId::parse(id).expect("id"));
        account.expect("readable").expect("exists").balance()
    }

    /// `(commits, commands)` from the commit batch histogram.
    fn commits_and_commands(&self) -> (u64, u64) {
        (
            self.metrics.commits.load(Ordering::SeqCst),
            self.metrics.commands.load(Ordering::SeqCst),
        )
    }
}

fn status(outcome: &WriteOutcome) -> u16 {
    match outcome {
        WriteOutcome::Executed(answer) => answer.status,
        other => panic!("expected an executed command, got {other:?}"),
    }
}

#[test]
fn commands_in_one_batch_see_each_others_balances_and_a_decline_fails_no_neighbour() {
    let rig = rig(64, 64);
    for (key, command) in [
        ("a1", account("bank", None)),
        ("a2", account("alice", Some(0))),
        ("a3", account("shop", Some(0))),
    ] {
        assert_eq!(status(&rig.run(key, command)), 201);
    }
    // Hold the next commit in its fsync so that the four charges below queue up behind it and are
    // taken as one batch when it is released.
    let (entered, release) = rig.switches.hold_syncs();
    let warm_up = rig.submit("a4", account("other", Some(0)));
    entered
        .recv_timeout(Duration::from_secs(10))
        .expect("the writer reached its fsync");
    let answers = [
        rig.submit("c1", charge("bank", "alice", 100)),
        rig.submit("c2", charge("alice", "shop", 100)), // needs c1's credit
        rig.submit("c3", charge("alice", "shop", 1)),   // alice is at 0 now: declined
        rig.submit("c4", charge("bank", "alice", 5)),   // unaffected by c3's decline
    ];
    drop(release);
    assert_eq!(status(&warm_up.blocking_recv().expect("answered")), 201);
    let statuses: Vec<u16> = answers
        .into_iter()
        .map(|a| status(&a.blocking_recv().expect("answered")))
        .collect();
    assert_eq!(statuses, [201, 201, 402, 201]);
    assert_eq!(
        (
            rig.balance("bank"),
            rig.balance("alice"),
            rig.balance("shop")
        ),
        (-105, 5, 100)
    );
    assert_eq!(
        rig.commits_and_commands(),
        (5, 8),
        "3 + 1 single commits, then one batch of 4"
    );
    assert!(
        rig.index.is_empty(),
        "every claim released after its answer"
    );
}

#[test]
fn a_failed_commit_poisons_the_writer_and_reads_keep_working() {
    let rig = rig(64, 64);
    assert_eq!(status(&rig.run("a1", account("kept", None))), 201);
    rig.switches.fail_syncs();
    assert_eq!(
        rig.run("a2", account("lost", None)),
        WriteOutcome::Unavailable
    );
    assert!(rig.writer.is_poisoned());
    let (request, _answer) = rig.request(&rig.index, "a3", account("never", None));
    assert!(
        matches!(
            rig.writer.try_submit(request),
            Err(SubmitError::Unavailable)
        ),
        "later writes refused at once"
    );
    assert!(rig.index.is_empty(), "a refused request releases its key");
    assert_eq!(rig.balance("kept"), 0, "reads still work");

    // After a restart on a healthy disk, exactly the acknowledged state is there.
    let dir_path = rig.dir.path().to_path_buf();
    assert!(
        matches!(rig.writer.shutdown(), Err(StopError::Poisoned)),
        "a writer poisoned by a storage failure does not stop cleanly"
    );
    let Rig {
        store, writer, dir, ..
    } = rig;
    drop(writer);
    drop(store);
    let reopened = Store::open(&dir_path).expect("reopens");
    let tenant = TenantId::DEFAULT;
    assert!(
        reopened
            .account(tenant, &AccountId::parse("kept").expect("id"))
            .expect("read")
            .is_some()
    );
    assert!(
        reopened
            .account(tenant, &AccountId::parse("lost").expect("id"))
            .expect("read")
            .is_none()
    );
    crate::store::check::assert_consistent(&reopened);
    drop(dir);
}

#[test]
fn a_full_commit_queue_refuses_at_once_and_frees_the_key() {
    let rig = rig(2, 1);
    let (entered, release) = rig.switches.hold_syncs();
    let first = rig.submit("k1", account("a1", None));
    entered
        .recv_timeout(Duration::from_secs(10))
        .expect("the writer holds k1 in its fsync");
    let queued = [
        rig.submit("k2", account("a2", None)),
        rig.submit("k3", account("a3", None)),
    ];
    let (overflow, _answer) = rig.request(&rig.index, "k4", account("a4", None));
    assert!(matches!(
        rig.writer.try_submit(overflow),
        Err(SubmitError::Overloaded)
    ));
    let key = IdempotencyKey::parse(b"k4").expect("key");
    assert!(
        rig.index.claim(TenantId::DEFAULT, &key).is_some(),
        "the refused key is free again"
    );
    drop(release);
    assert_eq!(status(&first.blocking_recv().expect("answered")), 201);
    for answer in queued {
        assert_eq!(status(&answer.blocking_recv().expect("answered")), 201);
    }
}

#[test]
fn the_writer_rechecks_each_key_inside_the_transaction() {
    // Two requests with one key reach the queue together, as if the in-flight index had failed:
    // the second must be answered from the first's record, never executed.
    let rig = rig(64, 64);
    assert_eq!(status(&rig.run("setup-1", account("bank", None))), 201);
    assert_eq!(status(&rig.run("setup-2", account("shop", None))), 201);
    let (entered, release) = rig.switches.hold_syncs();
    let warm_up = rig.submit("w", account("other", None));
    entered
        .recv_timeout(Duration::from_secs(10))
        .expect("writer in fsync");
    let (other_index_a, other_index_b) = (InFlightIndex::new(), InFlightIndex::new());
    let mut answers = Vec::new();
    for (index, amount) in [(&other_index_a, 7), (&other_index_b, 7), (&rig.index, 8)] {
        let (request, answer) = rig.request(index, "dup", charge("bank", "shop", amount));
        rig.writer
            .try_submit(request)
            .map_err(|e| format!("{e:?}"))
            .expect("queued");
        answers.push(answer);
    }
    drop(release);
    assert_eq!(status(&warm_up.blocking_recv().expect("answered")), 201);
    let outcomes: Vec<WriteOutcome> = answers
        .into_iter()
        .map(|a| a.blocking_recv().expect("answered"))
        .collect();
    let WriteOutcome::Executed(first) = &outcomes[0] else {
        panic!("{outcomes:?}")
    };
    assert_eq!(
        outcomes[1],
        WriteOutcome::Replayed(first.clone()),
        "same fingerprint: the stored answer"
    );
    assert_eq!(
        outcomes[2],
        WriteOutcome::FingerprintMismatch,
        "changed amount: 422"
    );
    assert_eq!(rig.balance("shop"), 7, "one charge, not two or three");
}

#[test]
fn shutdown_commits_everything_already_queued() {
    let rig = rig(64, 2);
    let (entered, release) = rig.switches.hold_syncs();
    let first = rig.submit("s0", account("acct-0", None));
    entered
        .recv_timeout(Duration::from_secs(10))
        .expect("writer in fsync");
    let queued: Vec<_> = (1..=5)
        .map(|i| rig.submit(&format!("s{i}"), account(&format!("acct-{i}"), None)))
        .collect();
    std::thread::scope(|s| {
        let stopping = s.spawn(|| rig.writer.shutdown());
        drop(release);
        let stopped = stopping.join().expect("shutdown returns");
        assert!(stopped.is_ok(), "{stopped:?}");
    });
    for answer in std::iter::once(first).chain(queued) {
        assert_eq!(
            status(
                &answer
                    .blocking_recv()
                    .expect("answered before the writer stopped")
            ),
            201
        );
    }
    assert!(rig.writer.is_poisoned(), "a stopped writer refuses writes");
}

#[test]
fn outbox_retention_deletes_only_what_every_sink_acknowledged_and_never_reuses_numbers() {
    // Guards outbox retention: events are deleted oldest first, only up to the lowest sink
    // cursor and only when old enough, in bounded steps; the held range says what is left,
    // numbering continues after the deleted events, and the invariant checker stays clean.
    let rig = rig(64, 16);
    assert_eq!(status(&rig.run("a", account("a", None))), 201);
    assert_eq!(status(&rig.run("b", account("b", Some(0)))), 201);
    for i in 0..8 {
        assert_eq!(status(&rig.run(&format!("c{i}"), charge("a", "b", 1))), 201);
    }
    assert_eq!(rig.store.outbox_bounds().expect("bounds"), (1, 10));
    let future = u64::MAX;
    let prune = |through: u64, cutoff: u64, max: usize| {
        rig.store
            .commit_batch(|tables| tables.prune_outbox(through, cutoff, max))
            .expect("prune commits")
    };
    // Nothing is old enough yet: a cutoff in the past deletes nothing.
    assert_eq!(prune(10, 0, 100), 0);
    // Two sinks, one at 6 and one at 4: only events every sink has may go.
    rig.store
        .commit_batch(|tables| {
            tables.replication().advance_cursor("fast", 6)?;
            tables.replication().advance_cursor("slow", 4)?;
            // A cursor never moves back.
            tables.replication().advance_cursor("fast", 2)
        })
        .expect("cursors commit");
    let lowest = rig
        .store
        .sink_cursors()
        .expect("cursors")
        .iter()
        .map(|(_, through)| *through)
        .min()
        .expect("two sinks");
    assert_eq!(lowest, 4);
    assert_eq!(prune(lowest, future, 3), 3, "bounded by events_max");
    assert_eq!(
        prune(lowest, future, 100),
        1,
        "then the rest up to the cursor"
    );
    assert_eq!(rig.store.outbox_bounds().expect("bounds"), (5, 10));
    let held = rig.store.events_after(0, 100).expect("events");
    assert_eq!(held.first().map(|e| e.seq), Some(5));
    assert_eq!(held.len(), 6);
    // New events continue the numbering.
    assert_eq!(status(&rig.run("c-last", charge("a", "b", 1))), 201);
    assert_eq!(rig.store.outbox_bounds().expect("bounds"), (5, 11));
    let report = crate::store::check::assert_consistent(&rig.store);
    assert_eq!(report.outbox_first_held, 5);
}

/// Counts what the writer reports, as the server's metrics would (commits and their commands).
#[derive(Default)]
struct CountingObserver {
    commits: AtomicU64,
    commands: AtomicU64,
    /// The most commands one commit held.
    largest: AtomicU64,
}

impl CommitObserver for CountingObserver {
    fn observe_commit(&self, commands: usize, _duration: std::time::Duration) {
        self.commits.fetch_add(1, Ordering::SeqCst);
        self.commands.fetch_add(commands as u64, Ordering::SeqCst);
        self.largest.fetch_max(commands as u64, Ordering::SeqCst);
    }
    fn observe_marks_crossed(&self, _totals: crate::store::MarksCrossed) {}
    fn count_effect(&self, _effect: &crate::store::Effect) {}
    fn count_inbox(&self, _ack: &crate::wire::Ack) {}
    fn count_outbox_pruned(&self, _events: usize) {}
    fn count_expired_authorizations(&self, _authorizations: usize) {}
}

/// A stop whose final checkpoint fails is reported (the process then exits non-zero), and
/// nothing acknowledged is lost: the journal brings it back at the next start.
#[test]
fn a_failed_final_checkpoint_is_reported_and_loses_nothing() {
    let rig = rig(64, 8);
    assert_eq!(status(&rig.run("f0", account("kept", None))), 201);
    rig.switches.fail_syncs();
    assert!(
        matches!(rig.writer.shutdown(), Err(StopError::FinalCheckpoint(_))),
        "the failed checkpoint is the stop's outcome"
    );
    let Rig {
        store, writer, dir, ..
    } = rig;
    drop(writer);
    drop(store);
    let reopened = Store::open(dir.path()).expect("reopens");
    let kept = AccountId::parse("kept").expect("id");
    assert!(
        reopened
            .account(TenantId::DEFAULT, &kept)
            .expect("read")
            .is_some()
    );
    crate::store::check::assert_consistent(&reopened);
}

/// A charge of 1 from `bank` to `shop` carrying the most metadata a request may: ~8.6 KB that its
/// charge record and its stored answer each hold.
fn charge_with_full_metadata(n: usize) -> Command {
    let pairs = (0..crate::limits::METADATA_PAIRS_MAX)
        .map(|i| {
            let key = format!(
                "{i:02}{}",
                "k".repeat(crate::limits::METADATA_KEY_CHARS_MAX - 2)
            );
            let value = format!(
                "{n:08}{}",
                "v".repeat(crate::limits::METADATA_VALUE_CHARS_MAX - 8)
            );
            (key, value)
        })
        .collect();
    Command::CreateCharge(NewCharge {
        source: AccountId::parse("bank").expect("id"),
        destination: AccountId::parse("shop").expect("id"),
        amount: Amount::new(1).expect("amount"),
        currency: Currency::parse("EUR").expect("currency"),
        metadata: Metadata::new(pairs).expect("at the limits"),
    })
}

/// A batch is bounded by its journal record's bytes as well as by its count of commands: queued
/// commands whose records together pass `BATCH_RECORD_BYTES_MAX` are committed in several
/// batches, in order, each answered; none is refused and nothing panics.
#[test]
fn a_batch_whose_record_would_pass_its_byte_bound_is_split() {
    const CHARGES: usize = 600; // ~18 KB of record each: ~10 MB, more than two batches' bound
    let rig = rig(2 * CHARGES, 2 * CHARGES);
    assert_eq!(status(&rig.run("a1", account("bank", None))), 201);
    assert_eq!(status(&rig.run("a2", account("shop", Some(0)))), 201);
    let (entered, release) = rig.switches.hold_syncs();
    let warm_up = rig.submit("a3", account("other", Some(0)));
    entered
        .recv_timeout(Duration::from_secs(10))
        .expect("the writer reached its fsync");
    let answers: Vec<_> = (0..CHARGES)
        .map(|n| rig.submit(&format!("big{n}"), charge_with_full_metadata(n)))
        .collect();
    drop(release);
    assert_eq!(status(&warm_up.blocking_recv().expect("answered")), 201);
    for answer in answers {
        assert_eq!(status(&answer.blocking_recv().expect("answered")), 201);
    }
    assert_eq!(rig.balance("shop"), CHARGES as i64);
    let (commits, commands) = rig.commits_and_commands();
    assert_eq!(commands, 3 + CHARGES as u64);
    assert!(
        commits >= 3 + 3,
        "the queued charges took at least three batches, not one: {commits} commits"
    );
    let largest = rig.metrics.largest.load(Ordering::SeqCst);
    assert!(
        largest < CHARGES as u64 / 2,
        "no batch held more than its byte bound allows: {largest} commands"
    );
    crate::store::check::verify(&rig.store)
        .map(|report| assert!(report.violations.is_empty(), "{:?}", report.violations))
        .expect("checkable");
}
