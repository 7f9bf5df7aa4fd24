//! The system under test for ledger_model: the real store on a [`CrashDisk`] in a temporary
//! directory, the real group-commit writer thread, and the real HTTP handler (`App::run`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use onceledger_core::store::{Marks, MarksCrossed, Store};
use onceledger_core::writer::{WriterConfig, WriterHandle};
use onceledger_server::api::WriteIntent;
use onceledger_server::metrics::Metrics;

use crate::backend::CrashDisk;

/// A small queue and batch, so a burst of requests fills a batch the way load would.
const COMMIT_QUEUE_MAX: usize = 16;
const BATCH_COMMANDS_MAX: usize = 8;
/// Far longer than any fuzz run: no record expires while the model holds it.
const IDEMPOTENCY_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// What a client receives for one POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
    /// `Idempotent-Replayed: true` was set.
    pub replayed: bool,
}

/// How a running store ends, before it is opened again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The machine loses power: unsynced writes are gone.
    PowerLoss,
    /// The process is killed: no further I/O, but everything written stays in the page cache.
    ProcessKill,
    /// A graceful stop: the writer drains, the database closes cleanly.
    Clean,
}

pub struct System {
    /// Dropped last: the store file lives in it.
    dir: tempfile::TempDir,
    pub disk: CrashDisk,
    running: Option<Running>,
    /// What the stores opened so far crossed, up to the current one's open.
    crossings: Crossings,
    /// The current store's count before the last `post`.
    before_last_post: MarksCrossed,
}

/// The store's rare moments a run crossed (`Marks::SMALL` makes them every few commits), summed
/// over every open, and the power losses that came right after a `post` that crossed one: a
/// checkpoint, an account flush, a key merge or a statement merge, and then the unsynced writes
/// are gone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Crossings {
    pub crossed: MarksCrossed,
    pub power_losses: u64,
    pub power_losses_right_after: MarksCrossed,
}

/// `after - before`, field by field.
fn crossed_between(before: MarksCrossed, after: MarksCrossed) -> MarksCrossed {
    MarksCrossed {
        checkpoints: after.checkpoints - before.checkpoints,
        account_flushes: after.account_flushes - before.account_flushes,
        key_merges: after.key_merges - before.key_merges,
        statement_merges: after.statement_merges - before.statement_merges,
    }
}

impl Crossings {
    fn add(&mut self, crossed: MarksCrossed) {
        self.crossed.checkpoints += crossed.checkpoints;
        self.crossed.account_flushes += crossed.account_flushes;
        self.crossed.key_merges += crossed.key_merges;
        self.crossed.statement_merges += crossed.statement_merges;
    }

    fn power_loss_after(&mut self, last_post: MarksCrossed) {
        self.power_losses += 1;
        let right_after = &mut self.power_losses_right_after;
        right_after.checkpoints += u64::from(last_post.checkpoints > 0);
        right_after.account_flushes += u64::from(last_post.account_flushes > 0);
        right_after.key_merges += u64::from(last_post.key_merges > 0);
        right_after.statement_merges += u64::from(last_post.statement_merges > 0);
    }
}

/// Everything that a restart throws away.
struct Running {
    app: Arc<onceledger_server::api::App>,
    runtime: tokio::runtime::Runtime,
}

impl System {
    pub fn start() -> System {
        // /dev/shm when it is usable: the fuzzer creates and deletes a file per input.
        let mut builder = tempfile::Builder::new();
        builder.prefix("onceledger-fuzz");
        let dir = match builder
            .tempdir_in("/dev/shm")
            .or_else(|_| builder.tempdir())
        {
            Ok(dir) => dir,
            Err(error) => panic!("no temporary directory: {error}"),
        };
        let disk = match CrashDisk::create(dir.path()) {
            Ok(disk) => disk,
            Err(error) => panic!("cannot create the store file: {error}"),
        };
        let mut system = System {
            dir,
            disk,
            running: None,
            crossings: Crossings::default(),
            before_last_post: MarksCrossed::default(),
        };
        system.open();
        system
    }

    fn open(&mut self) {
        let backend = match self.disk.backend() {
            Ok(backend) => backend,
            Err(error) => panic!("cannot open the store file: {error}"),
        };
        let journal = match self.disk.journal() {
            Ok(journal) => journal,
            Err(error) => panic!("cannot open the journal: {error}"),
        };
        let mut store = match Store::open_with_files(backend, Box::new(journal), self.dir.path()) {
            Ok(store) => store,
            Err(error) => panic!("the store does not open after a restart: {error}"),
        };
        // Checkpoints, account flushes and key merges every few commits, so that an input of a
        // few dozen operations crosses each, and its crashes and faults land on them.
        store.set_marks(Marks::SMALL);
        let store = Arc::new(store);
        self.before_last_post = MarksCrossed::default();
        let metrics = Arc::new(Metrics::new());
        let config = WriterConfig {
            batch_commands_max: BATCH_COMMANDS_MAX,
            commit_queue_max: COMMIT_QUEUE_MAX,
            idempotency_retention: IDEMPOTENCY_RETENTION,
            ..WriterConfig::default()
        };
        let writer =
            match WriterHandle::spawn(Arc::clone(&store), config, Arc::clone(&metrics) as _) {
                Ok(writer) => writer,
                Err(error) => panic!("cannot start the writer thread: {error}"),
            };
        self.running = Some(Running::new(store, writer, metrics));
    }

    fn running(&self) -> &Running {
        match &self.running {
            Some(running) => running,
            None => unreachable!("the store is always open between operations"),
        }
    }

    pub fn store(&self) -> &Store {
        self.running().store()
    }

    pub fn writer_poisoned(&self) -> bool {
        self.running().writer().is_poisoned()
    }

    /// Sends POSTs as concurrent clients would: all of them before any answer is awaited, so the
    /// writer may take them as one batch. Answers come back in the order given.
    pub fn post(&mut self, intents: Vec<WriteIntent>) -> Vec<Answer> {
        self.before_last_post = self.store().marks_crossed();
        self.running().post(intents)
    }

    /// What the run crossed so far, the current store included.
    pub fn crossings(&self) -> Crossings {
        let mut crossings = self.crossings;
        if let Some(running) = &self.running {
            crossings.add(running.store().marks_crossed());
        }
        crossings
    }

    /// Stops the store as `how` says and opens it again on what the disk then holds.
    pub fn restart(&mut self, how: Stop) {
        if let Some(running) = &self.running {
            let crossed = running.store().marks_crossed();
            self.crossings.add(crossed);
            if how == Stop::PowerLoss {
                let last_post = crossed_between(self.before_last_post, crossed);
                self.crossings.power_loss_after(last_post);
            }
        }
        if how != Stop::Clean {
            // Before anything is dropped: a dead process or machine writes nothing on its way out.
            self.disk.cut_power();
        }
        if let Some(running) = self.running.take() {
            running.stop();
        }
        let reset = match how {
            Stop::PowerLoss => self.disk.lose_unsynced_writes(),
            Stop::ProcessKill | Stop::Clean => {
                self.disk.keep_unsynced_writes();
                Ok(())
            }
        };
        if let Err(error) = reset {
            panic!("cannot roll the store file back: {error}");
        }
        self.open();
    }
}

impl Drop for System {
    fn drop(&mut self) {
        // Join the writer thread before the directory goes, also when a check failed.
        self.disk.cut_power();
        if let Some(running) = self.running.take() {
            running.stop();
        }
    }
}

impl Running {
    fn new(store: Arc<Store>, writer: WriterHandle, metrics: Arc<Metrics>) -> Running {
        let runtime = match tokio::runtime::Builder::new_current_thread().build() {
            Ok(runtime) => runtime,
            Err(error) => panic!("no tokio runtime: {error}"),
        };
        Running {
            app: Arc::new(onceledger_server::api::App::new(store, writer, metrics)),
            runtime,
        }
    }

    fn store(&self) -> &Store {
        &self.app.store
    }

    fn writer(&self) -> &WriterHandle {
        &self.app.writer
    }

    fn post(&self, intents: Vec<WriteIntent>) -> Vec<Answer> {
        use http_body_util::BodyExt;
        use onceledger_server::api::ApiRequest;

        // Spawned in order on a single-threaded runtime, so each task reaches the writer's queue
        // before the next one starts: the submission order is the order given.
        let tasks: Vec<_> = intents
            .into_iter()
            .map(|intent| {
                let app = Arc::clone(&self.app);
                self.runtime.spawn(async move {
                    let response = app.run(ApiRequest::Write(intent)).await;
                    let status = response.status().as_u16();
                    let replayed = response
                        .headers()
                        .get("idempotent-replayed")
                        .is_some_and(|v| v.as_bytes() == b"true");
                    let body = match response.into_body().collect().await {
                        Ok(collected) => collected.to_bytes(),
                        Err(never) => match never {},
                    };
                    Answer {
                        status,
                        body,
                        replayed,
                    }
                })
            })
            .collect();
        self.runtime.block_on(async move {
            let mut answers = Vec::with_capacity(tasks.len());
            for task in tasks {
                match task.await {
                    Ok(answer) => answers.push(answer),
                    Err(error) => panic!("a request task failed: {error}"),
                }
            }
            answers
        })
    }

    fn stop(self) {
        // Injected storage faults make some stops unclean (`StopError`); what survives them is
        // what the model checks after the next open, so the outcome itself is not asserted here.
        let _ = self.app.writer.shutdown();
    }
}
