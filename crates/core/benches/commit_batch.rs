//! One group-commit batch of 1, 32 and 256 charges through the real writer thread, against a real
//! store in a temporary directory (one write transaction, one journal record and its fsync per
//! batch; a durable redb commit, the checkpoint, once every 4 MiB of records or 1,024 batches, so
//! the measured mean carries its share).
//!
//! The writer's `apply` is private, so a batch is driven through `WriterHandle::spawn` and
//! `try_submit` with a oneshot reply per request. To make the N charges land in ONE batch (rather
//! than 1 + N-1, as the writer wakes on the first), the writer is first parked inside the fsync of
//! a single "plug" charge, using the store's fault-injection files (a plain `FileBackend` and
//! journal file whose `sync_data` can be held). The N charges queue up behind it; the hold is lifted; the time is
//! taken from the plug's answer (the writer is then starting the batch) to the last of the N
//! answers. The plug's own fsync is not in the measurement.
//!
//! Two key patterns: `random` is what `onceledger bench --workload uniform` sends (UUIDv4
//! idempotency keys, 9,000 customers and 1,000 merchants picked at random), so each command
//! touches B-tree leaves of its own; `sequential` (ascending keys, accounts in rotation) is the
//! best case where consecutive commands share leaves. The gap between them is the cost of
//! scattered B-tree work per batch (and, at the checkpoints, of scattered page writes).

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use onceledger_core::idempotency::{Fingerprint, IdempotencyKey, InFlightIndex, canonical_body};
use onceledger_core::ledger::{
    AccountId, Amount, Command, Currency, Metadata, NewAccount, NewCharge, TenantId,
};
use onceledger_core::store::fault::{self, FaultSwitches};
use onceledger_core::writer::{
    CommitObserver, WriteOutcome, WriteRequest, WriterConfig, WriterHandle,
};
use tokio::sync::oneshot;

/// As `onceledger bench`'s defaults.
const CUSTOMERS: usize = 9000;
const MERCHANTS: usize = 1000;
/// Accounts are created this many at a time, below the commit queue's bound.
const SETUP_CHUNK: usize = 1000;
const BATCH_SIZES: [usize; 3] = [1, 32, 256];
/// How long the writer may take to reach an fsync or to answer.
const WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keys {
    Random,
    Sequential,
}

impl Keys {
    fn name(self) -> &'static str {
        match self {
            Keys::Random => "random",
            Keys::Sequential => "sequential",
        }
    }
}

struct Rig {
    keys: Keys,
    /// xorshift64 state for the random account picks.
    rng: u64,
    writer: WriterHandle,
    index: Arc<InFlightIndex>,
    switches: Arc<FaultSwitches>,
    metrics: Arc<CommitCounter>,
    customers: Vec<AccountId>,
    merchants: Vec<AccountId>,
    next: u64,
    // Dropped last: the store file lives in it.
    _dir: tempfile::TempDir,
}

impl Rig {
    fn new(keys: Keys) -> Rig {
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, switches) = fault::open_store(dir.path()).expect("store");
        let store = Arc::new(store);
        let metrics = Arc::new(CommitCounter::default());
        let config = WriterConfig {
            batch_commands_max: 1024,
            commit_queue_max: 4096,
            idempotency_retention: Duration::from_secs(30 * 24 * 3600),
            ..WriterConfig::default()
        };
        let writer = WriterHandle::spawn(store, config, Arc::clone(&metrics) as _).expect("writer");
        let id = |prefix: &str, i: usize| AccountId::parse(&format!("{prefix}{i}")).expect("id");
        let mut rig = Rig {
            keys,
            rng: 0x9E37_79B9_7F4A_7C15,
            writer,
            index: InFlightIndex::new(),
            switches,
            metrics,
            customers: (0..CUSTOMERS).map(|i| id("c", i)).collect(),
            merchants: (0..MERCHANTS).map(|i| id("m", i)).collect(),
            next: 0,
            _dir: dir,
        };
        let accounts: Vec<Command> = rig
            .customers
            .iter()
            .map(|id| (id.clone(), None))
            .chain(rig.merchants.iter().map(|id| (id.clone(), Some(0))))
            .map(|(id, overdraft_limit)| {
                Command::CreateAccount(NewAccount {
                    id,
                    currency: Currency::parse("EUR").expect("currency"),
                    overdraft_limit,
                })
            })
            .collect();
        for chunk in accounts.chunks(SETUP_CHUNK) {
            let answers: Vec<_> = chunk.iter().map(|c| rig.submit(c.clone())).collect();
            for answer in answers {
                expect_created(answer);
            }
        }
        rig
    }

    /// A charge between two accounts picked by the key pattern.
    fn charge(&mut self) -> Command {
        let (source, destination) = match self.keys {
            Keys::Random => {
                // xorshift64: enough to scatter picks; the bench needs no statistical quality.
                self.rng ^= self.rng << 13;
                self.rng ^= self.rng >> 7;
                self.rng ^= self.rng << 17;
                let r = self.rng as usize;
                (r % CUSTOMERS, (r >> 32) % MERCHANTS)
            }
            Keys::Sequential => {
                let n = self.next as usize;
                (n % CUSTOMERS, n % MERCHANTS)
            }
        };
        Command::CreateCharge(NewCharge {
            source: self.customers[source].clone(),
            destination: self.merchants[destination].clone(),
            amount: Amount::new(1).expect("amount"),
            currency: Currency::parse("EUR").expect("currency"),
            metadata: Metadata::default(),
        })
    }

    fn submit(&mut self, command: Command) -> oneshot::Receiver<WriteOutcome> {
        self.next += 1;
        let raw = match self.keys {
            Keys::Random => uuid::Uuid::new_v4().to_string(),
            // Zero-padded so that byte order is numeric order.
            Keys::Sequential => format!("bench-{:012}", self.next),
        };
        let key = IdempotencyKey::parse(raw.as_bytes()).expect("key");
        let claim = self
            .index
            .claim(TenantId::DEFAULT, &key)
            .expect("fresh key");
        let fingerprint = Fingerprint::of("POST", "/v1/charges", &canonical_body(&command));
        let (reply, answer) = oneshot::channel();
        let request = WriteRequest {
            tenant: TenantId::DEFAULT,
            key,
            fingerprint,
            command,
            claim,
            reply,
        };
        if let Err(error) = self.writer.try_submit(request) {
            panic!("the writer refused a command: {error:?}");
        }
        answer
    }

    /// One batch of `n` charges; returns the time from the writer starting it to the last answer.
    fn one_batch(&mut self, n: usize) -> Duration {
        let (entered, release) = self.switches.hold_syncs();
        let plug_command = self.charge();
        let plug = self.submit(plug_command);
        // Wait until the writer sits in the plug's fsync. The periodic retention sweep commits too;
        // if its fsync is the one caught, the plug is still queued: let the sweep through.
        for _ in 0..10 {
            entered
                .recv_timeout(WAIT)
                .expect("the writer reached an fsync");
            if self.writer.queued() == 0 {
                break;
            }
            release.send(()).expect("the backend waits for a release");
        }
        let answers: Vec<_> = (0..n)
            .map(|_| {
                let command = self.charge();
                self.submit(command)
            })
            .collect();
        // Lift the hold for good: the plug's fsync and the batch's pass.
        drop(release);
        expect_created(plug);
        let started = Instant::now();
        for answer in answers {
            expect_created(answer);
        }
        started.elapsed()
    }

    fn commits(&self) -> u64 {
        self.metrics
            .commits
            .load(std::sync::atomic::Ordering::SeqCst)
    }
}

fn expect_created(answer: oneshot::Receiver<WriteOutcome>) {
    // The writer answers from its own thread; a blocking wait is right outside a runtime. It is
    // bounded by the writer committing, which the test controls.
    match answer.blocking_recv() {
        Ok(WriteOutcome::Executed(stored)) if stored.status == 201 => {}
        other => panic!("expected an executed 201, got {other:?}"),
    }
}

fn commit_batch(c: &mut Criterion) {
    let mut group = c.benchmark_group("commit_batch");
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(8));
    for (keys, n) in [Keys::Random, Keys::Sequential]
        .into_iter()
        .flat_map(|keys| BATCH_SIZES.map(|n| (keys, n)))
    {
        let mut rig = Rig::new(keys);
        // The set-up must produce exactly two commits per batch (plug, then the N): check once.
        let before = rig.commits();
        rig.one_batch(n);
        let commits = rig.commits() - before;
        assert_eq!(
            commits, 2,
            "batch of {n} took {commits} commits, not plug + 1"
        );
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new(keys.name(), n), &n, |b, &n| {
            b.iter_custom(|iters| (0..iters).map(|_| rig.one_batch(n)).sum())
        });
        rig.writer
            .shutdown()
            .expect("a healthy store stops cleanly");
    }
    group.finish();
}

criterion_group!(benches, commit_batch);
criterion_main!(benches);

/// Counts the writer's commits (what the server's `onceledger_commits_total` counts).
#[derive(Default)]
struct CommitCounter {
    commits: std::sync::atomic::AtomicU64,
}

impl CommitObserver for CommitCounter {
    fn observe_commit(&self, _commands: usize, _duration: Duration) {
        self.commits
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    fn observe_marks_crossed(&self, _totals: onceledger_core::store::MarksCrossed) {}
    fn count_effect(&self, _effect: &onceledger_core::store::Effect) {}
    fn count_inbox(&self, _ack: &onceledger_core::wire::Ack) {}
    fn count_outbox_pruned(&self, _events: usize) {}
    fn count_expired_authorizations(&self, _authorizations: usize) {}
}
