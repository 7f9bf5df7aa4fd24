//! Every named limit of the server, in one place, with units last.
//!
//! A limit that is reached always produces a clear answer: a problem+json error for the client, or
//! back-pressure (the accept loop waits) for connections. Relationships between limits are checked
//! at compile time at the bottom of this file.

use std::time::Duration;

/// Largest request body accepted; larger bodies get 413 before they are buffered.
pub const BODY_BYTES_MAX: usize = 64 * 1024;
/// A declared body over the limit but at most this large is read and dropped before the 413, so
/// the answer reaches the client instead of a connection reset; larger ones close the connection.
pub const OVERSIZE_BODY_DRAIN_BYTES_MAX: u64 = 1024 * 1024;
/// hyper's read buffer, which bounds the request line plus headers.
pub const HEADER_BYTES_MAX: usize = 16 * 1024;
/// Most header fields in one request.
pub const HEADERS_COUNT_MAX: usize = 64;
/// A client must deliver its complete header block within this time (slowloris guard).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A client must deliver its complete body within this time once headers arrived.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; the accept loop waits for a free slot beyond this.
pub const CONNECTIONS_MAX: usize = 4096;
/// Threads of the server's blocking pool (store reads of GETs and lists, opening the store,
/// joining the writer). Tokio's default is 512; reads beyond this wait in tokio's queue, which
/// `CONNECTIONS_MAX` bounds (one request per connection at a time).
pub const BLOCKING_THREADS_MAX: usize = 32;
/// On SIGTERM, connections get this long to finish their requests before they are cut.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Idempotency-Key: 1 to 255 visible ASCII characters (IETF draft, Stripe).
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 255;
/// Client-supplied X-Request-Id values longer than this are replaced by a server-made one.
pub const REQUEST_ID_BYTES_MAX: usize = 128;
/// Account ids: `^[A-Za-z0-9_.:-]{1,64}$`.
pub const ACCOUNT_ID_BYTES_MAX: usize = 64;
/// Charge metadata: at most this many key/value pairs.
pub const METADATA_PAIRS_MAX: usize = 16;
/// Charge metadata: a key has at most this many characters (and at least one).
pub const METADATA_KEY_CHARS_MAX: usize = 40;
/// Charge metadata: a value has at most this many characters.
pub const METADATA_VALUE_CHARS_MAX: usize = 500;
/// The largest integer any JSON document or query of the API carries: JSON Schema's int64, which
/// the OpenAPI document declares for every number.
pub const JSON_INTEGER_MAX: u64 = i64::MAX as u64;
/// Amounts and posted totals are at most i64::MAX minor units, so balances fit an i64.
pub const AMOUNT_MINOR_MAX: u64 = JSON_INTEGER_MAX;

/// `GET /v1/events`: page size when `limit` is absent.
pub const EVENTS_PAGE_DEFAULT: usize = 100;
/// `GET /v1/events`: largest page.
pub const EVENTS_PAGE_MAX: usize = 1000;

/// Replication: most events in one batch a sender sends or a hub accepts.
pub const REPLICATION_BATCH_EVENTS_MAX: usize = 1000;
/// Replication: largest `POST /v1/replication/events` body (1000 events with full metadata fit).
pub const REPLICATION_BODY_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Replication: how often a hub tries an event before it parks it as a dead letter, by default.
pub const DEAD_LETTER_AFTER_ATTEMPTS_DEFAULT: u32 = 5;
/// Replication: events whose failed attempts a hub counts at once (in memory; a restart forgets
/// them, which only means a few more tries before an event is parked). When it is full, a new
/// refused event is not counted until a tracked one is parked or applied (`writer::inbound`).
pub const REFUSED_EVENTS_TRACKED_MAX: usize = 4096;
/// Replication: a sender waits this long for the sink's answer to one batch.
pub const REPLICATION_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Replication: full-jitter backoff between failed deliveries, first and largest ceiling.
pub const REPLICATION_BACKOFF_BASE: Duration = Duration::from_millis(100);
pub const REPLICATION_BACKOFF_CAP: Duration = Duration::from_secs(10);
/// Replication: an idle sender looks for new events at least this often (it is also woken by
/// every commit).
pub const REPLICATION_IDLE_POLL: Duration = Duration::from_secs(1);
/// NATS consumer: messages fetched (and committed together) at most per pull.
pub const NATS_CONSUMER_FETCH_MAX: usize = 1000;
/// NATS consumer: how long one pull waits for messages before it asks again.
pub const NATS_CONSUMER_FETCH_WAIT: Duration = Duration::from_millis(500);
/// NATS consumer: a fetched message not acknowledged within this comes again (a fetch is
/// committed in milliseconds; this only matters after a crash).
pub const NATS_CONSUMER_ACK_WAIT: Duration = Duration::from_secs(5);
/// NATS consumer: a message the hub could not take yet (a gap, a refusal) comes again after this.
pub const NATS_CONSUMER_NAK_DELAY: Duration = Duration::from_millis(200);
/// NATS consumer: messages delivered and not yet acknowledged at most (JetStream's
/// `max_ack_pending`). Messages waiting behind a gap count here while they are NAKed, and a
/// consumer at the limit gets no new message at all, so it is well above one fetch: a few origins
/// that wait for a missing event (`NATS_CONSUMER_GAP_LOOKUP_AFTER`) do not stall the partition.
pub const NATS_CONSUMER_ACK_PENDING_MAX: i64 = 20_000;
const _: () = assert!(NATS_CONSUMER_ACK_PENDING_MAX >= 10 * NATS_CONSUMER_FETCH_MAX as i64);
/// NATS consumer: an origin whose next event has not come for this long is looked up in the
/// stream: is the event still held there (it will come), or gone (retention)? Longer than a
/// redelivery (`NATS_CONSUMER_NAK_DELAY`), so an event merely re-published late is not looked up.
pub const NATS_CONSUMER_GAP_LOOKUP_AFTER: Duration = Duration::from_secs(2);
/// NATS consumer: the same origin is looked up again at most this often while it waits.
pub const NATS_CONSUMER_GAP_LOOKUP_INTERVAL: Duration = Duration::from_secs(10);
/// NATS consumer: stream lookups per fetch at most, so many waiting origins cannot stall it.
pub const NATS_CONSUMER_GAP_LOOKUPS_PER_FETCH_MAX: usize = 16;
/// NATS consumer: origins waiting for an event tracked at once; more wait unreported until one
/// moves on (the report is for the operator; applying never depends on it).
pub const NATS_CONSUMER_GAPS_TRACKED_MAX: usize = 4096;
/// NATS consumer: a message of an origin whose next event the stream no longer holds comes again
/// after this, not after `NATS_CONSUMER_NAK_DELAY`: only the operator can close that gap, and
/// redelivering its messages five times a second would only load the hub and the server.
pub const NATS_CONSUMER_MISSING_NAK_DELAY: Duration = Duration::from_secs(10);
const _: () = assert!(
    NATS_CONSUMER_NAK_DELAY.as_millis() < NATS_CONSUMER_GAP_LOOKUP_AFTER.as_millis()
        && NATS_CONSUMER_GAP_LOOKUP_AFTER.as_millis()
            < NATS_CONSUMER_GAP_LOOKUP_INTERVAL.as_millis()
);
/// NATS sink: JetStream's duplicate window, by default (it drops a re-published `Nats-Msg-Id`).
pub const NATS_DUPLICATE_WINDOW_DEFAULT: Duration = Duration::from_secs(120);

/// Outbox retention: events deleted per transaction at most, so retention never stalls charges.
pub const OUTBOX_PRUNE_EVENTS_MAX: usize = 1000;
/// Outbox retention: how long an event acknowledged by every sink is kept, by default.
pub const OUTBOX_RETENTION_DEFAULT: Duration = Duration::from_secs(7 * 24 * 3600);
/// `GET /v1/dead-letters` and the inbox listing: default and largest page.
pub const LIST_PAGE_DEFAULT: usize = 100;
pub const LIST_PAGE_MAX: usize = 1000;

/// Commands waiting for the writer; a full queue answers 503 overloaded at once.
pub const COMMIT_QUEUE_COMMANDS_DEFAULT: usize = 16 * 1024;
/// Commands committed in one write transaction (group commit) at most.
pub const BATCH_COMMANDS_DEFAULT: usize = 1024;
/// Authorizations the writer expires in one commit: a backlog of expiries (a node that was down
/// past many `expires_at`) drains over several commits instead of making one huge one.
pub const EXPIRIES_PER_COMMIT_MAX: usize = 256;
/// Legs of one transfer.
pub const TRANSFER_LEGS_MAX: usize = 16;
/// `expires_in` of an authorization, in seconds: one minute to 30 days.
pub const AUTHORIZATION_EXPIRES_IN_S_MIN: u64 = 60;
pub const AUTHORIZATION_EXPIRES_IN_S_MAX: u64 = 30 * 24 * 3600;
/// `--authorization-ttl`'s default: 7 days.
pub const AUTHORIZATION_TTL_DEFAULT: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long an idempotency record is kept after it finished, by default (API.md: 30 days).
pub const IDEMPOTENCY_RETENTION_DEFAULT: Duration = Duration::from_secs(30 * 24 * 3600);
/// Expired idempotency records deleted per sweep transaction, so a sweep never stalls charges.
pub const RETENTION_SWEEP_RECORDS_MAX: usize = 1000;
/// How long the writer polls an empty queue after a commit before it sleeps on it (see
/// `Writer::wait_briefly_for_work`).
pub const WRITER_POLL_BEFORE_SLEEP: Duration = Duration::from_micros(300);
/// How often the writer looks for expired idempotency records.
pub const RETENTION_SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// Charges between two account flushes (see `store/accounts.rs`): bounds the postings a
/// restart re-applies after a crash.
pub const ACCOUNT_FLUSH_CHARGES: u64 = 65_536;
/// Accounts held in memory between flushes at most; reaching it flushes early.
pub const ACCOUNT_OVERLAY_ACCOUNTS_MAX: usize = 100_000;

/// Finished idempotency keys held in memory before commits start merging them into the keyed
/// table (see `store/keys.rs`): ~110 bytes each, and what a restart reads back two or three times
/// over. 65,536 rather than 131,072 since sitting 5: the same rate, and a server restarted after
/// SIGKILL under load at 5 M charges peaked at 207.5 MB instead of 241 MB (BENCHMARKS.md).
pub const KEY_OVERLAY_MERGE_FROM: usize = 65_536;
/// Keys merged per commit at least, once merging started (twice the batch's keys if more).
pub const KEY_MERGE_SLICE_MIN: usize = 64;

/// Statement lines held in memory before commits start merging them into the account-ordered
/// `statements` table (see `store/history/overlay.rs`): ~130 bytes each (~17 MB in all), worked
/// out again from the postings on open. The more lines wait, the more of an account's a merge
/// writes as one block: 131,072 rather than 65,536 gave ~4 % more uniform charges per second
/// (10,000 accounts, ~13 lines a block instead of ~6; BENCHMARKS.md sitting 11).
pub const STATEMENT_OVERLAY_MERGE_FROM: usize = 131_072;
/// Statement lines merged per commit at least, once merging started (twice the batch's if more).
pub const STATEMENT_MERGE_SLICE_MIN: usize = 64;
/// Lines in one row of `statements` at most (`store/history/blocks.rs`): ~35 bytes each, so a
/// full block (~1.1 KiB) stays well inside a 4 KiB B-tree leaf, and a page read decodes at most
/// this many lines beyond its own at either end.
pub const STATEMENT_BLOCK_LINES_MAX: usize = 32;
/// Entries in one row of `tenant_entries` at most (`store/history/blocks.rs`): 16 bytes or less
/// each, so a full block stays near 1 KiB.
pub const LISTED_BLOCK_ENTRIES_MAX: usize = 64;

/// Journal (see `store/journal.rs`): a batch commits durably in redb (a checkpoint) once this
/// many bytes of records were journaled since the last one. Bounds what a restart replays.
pub const JOURNAL_CHECKPOINT_BYTES: u64 = 4 * 1024 * 1024;
/// Journal: ... or once this many batches were journaled since the last one (light load writes
/// small records; redb keeps every non-durable commit's freed pages until a durable one).
pub const JOURNAL_CHECKPOINT_COMMITS: u64 = 1024;
/// A batch stops taking commands once its journal record holds this many bytes (a command is
/// never split: one inbound replication batch of `REPLICATION_BODY_BYTES_MAX` may pass it alone);
/// the rest wait for the next batch. Bounds a record by bytes as `batch_commands_max` does by count.
pub const BATCH_RECORD_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Journal: the file is filled with zeros to this size once, so records overwrite allocated
/// blocks and their `fdatasync` writes no file metadata. A record past it extends the file.
pub const JOURNAL_FILE_BYTES: u64 = 2 * JOURNAL_CHECKPOINT_BYTES;

/// redb page cache. redb's default (1 GiB) is far more than an edge terminal should pin.
pub const STORE_CACHE_BYTES: usize = 64 * 1024 * 1024;

const _: () = assert!(
    HEADER_BYTES_MAX >= 8192,
    "hyper refuses a read buffer under 8 KiB"
);
const _: () = assert!(EVENTS_PAGE_DEFAULT <= EVENTS_PAGE_MAX);
const _: () = assert!(REPLICATION_BODY_BYTES_MAX >= BODY_BYTES_MAX);
const _: () = assert!(EVENTS_PAGE_MAX <= REPLICATION_BATCH_EVENTS_MAX);
const _: () = assert!(BATCH_COMMANDS_DEFAULT <= COMMIT_QUEUE_COMMANDS_DEFAULT);
const _: () = assert!(IDEMPOTENCY_KEY_BYTES_MAX < HEADER_BYTES_MAX);
const _: () = assert!(
    METADATA_PAIRS_MAX * (METADATA_KEY_CHARS_MAX + METADATA_VALUE_CHARS_MAX) * 4 < BODY_BYTES_MAX
);
// A transfer's postings are numbered by a `u8` leg in `postings`.
const _: () = assert!(2 * TRANSFER_LEGS_MAX <= u8::MAX as usize);
const _: () = assert!(
    AUTHORIZATION_TTL_DEFAULT.as_secs() >= AUTHORIZATION_EXPIRES_IN_S_MIN
        && AUTHORIZATION_TTL_DEFAULT.as_secs() <= AUTHORIZATION_EXPIRES_IN_S_MAX
);
