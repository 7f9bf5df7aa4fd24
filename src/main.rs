//! The `onceledger` command line: parses flags and starts the runtime; nothing else.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::builder::TypedValueParser;
use clap::{Parser, Subcommand};

use onceledger_client::cli::parse_duration;
use onceledger_core::limits::{
    BATCH_COMMANDS_DEFAULT, COMMIT_QUEUE_COMMANDS_DEFAULT, CONNECTIONS_MAX,
    DEAD_LETTER_AFTER_ATTEMPTS_DEFAULT, REPLICATION_BATCH_EVENTS_MAX,
};
use onceledger_core::store::check;
use onceledger_core::writer::WriterConfig;
use onceledger_server::auth::Role;
use onceledger_server::nats::StreamSettings;
use onceledger_server::nats::partition::{PARTITIONS_MAX, Partition, partition_of};
use onceledger_server::node::tokens;
use onceledger_server::node::{
    self, ConsumeSettings, NodeConfig, PublishSettings, ReplicationConfig, SecurityConfig,
};
use onceledger_server::replication::ReplicatorConfig;
use onceledger_server::replication::hub::HubAuth;

#[derive(Parser)]
#[command(
    name = "onceledger",
    version,
    about = "An embedded payment ledger whose HTTP API moves money exactly once, however often a request is sent"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP API (ready when GET /readyz answers 200; SIGTERM or Ctrl-C drains and exits 0).
    Serve(ServeArgs),
    /// Verify the ledger invariants of a stopped node's data directory (exit 1 on any violation).
    Check {
        /// Data directory of the node to check.
        #[arg(long, env = "ONCELEDGER_DATA_DIR", default_value = "./onceledger-data")]
        data_dir: PathBuf,
    },
    /// Discard a stopped node's journal on purpose (docs/RUNBOOK.md, "The journal is refused"):
    /// the journal is moved aside and a new one continues from the store file's last
    /// checkpoint. Batches acknowledged after it and held only by the old journal are lost.
    ResetJournal {
        /// Data directory of the stopped node.
        #[arg(long, env = "ONCELEDGER_DATA_DIR", default_value = "./onceledger-data")]
        data_dir: PathBuf,
    },
    /// Run a hub fed by a NATS JetStream stream: `serve` plus a durable pull consumer that
    /// applies one partition of the fleet's terminals (--partition K/N) through the inbox, each
    /// event once and in order, and acknowledges after commit. GET /v1/replication/origins names
    /// the partition and lists origins whose next event the stream no longer holds.
    Consume(ConsumeArgs),
    /// Print the partition of each node id among N (`NODE K` per line): which hub of a fleet
    /// started with `consume --partition K/N` applies that terminal's events.
    PartitionOf {
        /// N, the fleet's partition count (--nats-partitions of its terminals).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=PARTITIONS_MAX as i64))]
        partitions: u32,
        /// Node ids (1 to 64 of A-Z a-z 0-9 _ . -).
        #[arg(required = true, value_parser = parse_node_id)]
        node_ids: Vec<String>,
    },
    /// Drive a running server with charges over HTTP/1.1 keep-alive, report throughput and latency,
    /// and check that the money moved equals the logical operations (exit 3 if not).
    Bench(onceledger_testkit::bench::BenchArgs),
    /// Create an account through the retrying client: one idempotency key for every attempt,
    /// full-jitter backoff, Retry-After honoured. Exit 0 on 2xx, 4 on a final refusal (body on
    /// stdout), 1 when it gave up (run again with the printed --idempotency-key).
    Account(onceledger_client::cli::AccountArgs),
    /// Make a charge through the retrying client (same retry rules and exit status as `account`);
    /// with --no-capture, authorize it instead: the amount is held until `capture`, `void` or
    /// --expires-in.
    Charge(onceledger_client::cli::ChargeArgs),
    /// Capture an authorization, all of it or --amount (the rest of the hold is released).
    /// Exit 4 with the stored 400 charge-state-invalid if it was voided, expired or captured.
    Capture(onceledger_client::cli::CaptureArgs),
    /// Void (cancel) an authorization: its hold is released and it can no longer be captured.
    Void(onceledger_client::cli::VoidArgs),
    /// Refund a succeeded charge, all that is left or --amount (the refunds of a charge never add
    /// up to more than it captured).
    Refund(onceledger_client::cli::RefundArgs),
    /// Post a transfer of 1 to 16 legs (--leg SRC:DST:AMOUNT, repeated) in one transaction: all
    /// legs or none. The legs are checked against API.md's limits before anything is sent.
    Transfer(onceledger_client::cli::TransferArgs),
    /// Client commands that read: `client list PATH` walks a list (following has_more) and
    /// prints each item as a JSON line.
    #[command(subcommand)]
    Client(onceledger_client::cli::ClientCommand),
    /// Prove effectively-once in one process on loopback: a node, a hub it replicates to and a
    /// fault proxy; many client tasks make logical charges through lost answers, resets and
    /// concurrent duplicates while the replicator crashes once between delivery and cursor
    /// update. Prints a table; exit 0 only if the charges applied on the node and the charge
    /// events applied on the hub both equal the logical operations (3 if not).
    Prove(onceledger_testkit::prove::ProveArgs),
    /// Tenants of a stopped node's data directory (on a running node: POST/GET /v1/tenants).
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// API tokens of a stopped node's data directory (on a running node: /v1/tokens). A token is
    /// shown once, when it is made; the store keeps only its blake3 hash.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Create a tenant (1 to 64 of A-Z a-z 0-9 _ . -); prints it as JSON.
    Create {
        name: String,
        #[arg(long, env = "ONCELEDGER_DATA_DIR", default_value = "./onceledger-data")]
        data_dir: PathBuf,
    },
    /// List the tenants as JSON (`default`, id 0, always exists).
    List {
        #[arg(long, env = "ONCELEDGER_DATA_DIR", default_value = "./onceledger-data")]
        data_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token and print it (alone, on one line, on stdout; the only time it is shown).
    Create {
        /// The tenant the token acts for (admin tokens: `default` only).
        #[arg(long)]
        tenant: String,
        /// admin (everything), client (accounts, charges, events of its tenant), replicator
        /// (only POST /v1/replication/events, filed under its tenant).
        #[arg(long, value_parser = ["admin", "client", "replicator"])]
        role: String,
        #[arg(long, env = "ONCELEDGER_DATA_DIR", default_value = "./onceledger-data")]
        data_dir: PathBuf,
    },
    /// List tokens as JSON: ids, tenants, roles and a short prefix, never the tokens.
    List {
        #[arg(long, env = "ONCELEDGER_DATA_DIR", default_value = "./onceledger-data")]
        data_dir: PathBuf,
    },
    /// Revoke a token by id. The store of a running server is locked: revoke through
    /// POST /v1/tokens/ID/revoke there, which takes effect at once.
    Revoke {
        id: u64,
        #[arg(long, env = "ONCELEDGER_DATA_DIR", default_value = "./onceledger-data")]
        data_dir: PathBuf,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (printed as `listening on ADDR`).
    #[arg(long, env = "ONCELEDGER_LISTEN", default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Directory of the store (created if missing).
    #[arg(long, env = "ONCELEDGER_DATA_DIR", default_value = "./onceledger-data")]
    data_dir: PathBuf,
    /// How long a finished idempotency record is kept at least (e.g. 30d, 12h).
    #[arg(long, env = "ONCELEDGER_IDEMPOTENCY_RETENTION", default_value = "30d", value_parser = parse_duration)]
    idempotency_retention: Duration,
    /// Most commands committed in one write transaction (one fsync).
    #[arg(long, env = "ONCELEDGER_BATCH_COMMANDS_MAX", default_value_t = BATCH_COMMANDS_DEFAULT, value_parser = clap::value_parser!(u32).range(1..=65536).map(|v| v as usize))]
    batch_commands_max: usize,
    /// Most commands waiting for the writer; beyond it POSTs get 503 overloaded at once.
    #[arg(long, env = "ONCELEDGER_COMMIT_QUEUE_MAX", default_value_t = COMMIT_QUEUE_COMMANDS_DEFAULT, value_parser = clap::value_parser!(u32).range(1..=1_048_576).map(|v| v as usize))]
    commit_queue_max: usize,
    /// This node's id, on a fresh data directory only (default: random, `n` + 12 hex digits).
    /// 1 to 64 of A-Z a-z 0-9 _ . -
    #[arg(long, env = "ONCELEDGER_NODE_ID", value_parser = parse_node_id)]
    node_id: Option<String>,
    /// Replicate the outbox to this hub (another onceledger), e.g. http://127.0.0.1:7071
    #[arg(long, env = "ONCELEDGER_UPSTREAM")]
    upstream: Option<String>,
    /// Replicate at most this many events per second (catch-up rate limit; default: unlimited).
    #[arg(long, env = "ONCELEDGER_REPLICATE_RATE", value_parser = clap::value_parser!(u32).range(1..))]
    replicate_rate: Option<u32>,
    /// Events per replication batch at most.
    #[arg(long, env = "ONCELEDGER_REPLICATE_BATCH_MAX", default_value_t = REPLICATION_BATCH_EVENTS_MAX, value_parser = clap::value_parser!(u32).range(1..=REPLICATION_BATCH_EVENTS_MAX as i64).map(|v| v as usize))]
    replicate_batch_max: usize,
    /// Largest wait between failed deliveries to the upstream (full-jitter backoff ceiling).
    #[arg(long, env = "ONCELEDGER_REPLICATE_BACKOFF_MAX", default_value = "10s", value_parser = parse_duration)]
    replicate_backoff_max: Duration,
    /// As a hub: park a replicated event as a dead letter after this many failed attempts.
    #[arg(long, env = "ONCELEDGER_DEAD_LETTER_AFTER", default_value_t = DEAD_LETTER_AFTER_ATTEMPTS_DEFAULT, value_parser = clap::value_parser!(u32).range(1..=1000))]
    dead_letter_after: u32,
    /// NATS server URL (e.g. nats://127.0.0.1:4222): with --nats-stream, publish the outbox to
    /// JetStream; with `consume`, the server to consume from.
    #[arg(long, env = "ONCELEDGER_NATS")]
    nats: Option<String>,
    /// Publish the outbox to this JetStream stream (created if missing, file storage).
    #[arg(long, env = "ONCELEDGER_NATS_STREAM")]
    nats_stream: Option<String>,
    /// Subject prefix: each node publishes on PREFIX.<partition>.<node id>; the stream takes
    /// PREFIX.>
    #[arg(
        long,
        env = "ONCELEDGER_NATS_SUBJECT",
        default_value = "onceledger.events"
    )]
    nats_subject: String,
    /// How many partitions the fleet's hubs split the terminals into (each hub runs
    /// `consume --partition K/N`): this node publishes on the subject of its partition, the first
    /// 8 bytes of blake3(node id), big endian, modulo N. Every terminal and hub of a stream must
    /// use the same N; a hub parks the events of a terminal with another one as dead letters.
    #[arg(long, env = "ONCELEDGER_NATS_PARTITIONS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=PARTITIONS_MAX as i64))]
    nats_partitions: u32,
    /// JetStream duplicate window of a stream this node creates (drops a re-published event id).
    #[arg(long, env = "ONCELEDGER_NATS_DUPLICATE_WINDOW", default_value = "2m", value_parser = parse_duration)]
    nats_duplicate_window: Duration,
    /// Delete outbox events acknowledged by every sink once older than this (e.g. 7d, 12h).
    #[arg(long, env = "ONCELEDGER_OUTBOX_RETENTION", default_value = "7d", value_parser = parse_duration)]
    outbox_retention: Duration,
    /// How long an authorization (a charge with "capture": false) holds its amount when the
    /// request names no expires_in; then the server expires it and releases the hold.
    #[arg(long, env = "ONCELEDGER_AUTHORIZATION_TTL", default_value = "7d", value_parser = parse_authorization_ttl)]
    authorization_ttl: Duration,
    /// A replicator token of the upstream hub (sent as Authorization: Bearer).
    #[arg(
        long,
        env = "ONCELEDGER_UPSTREAM_TOKEN",
        hide_env_values = true,
        conflicts_with = "upstream_token_file"
    )]
    upstream_token: Option<String>,
    /// A file whose first line is the upstream hub's replicator token (read before each delivery).
    #[arg(long, env = "ONCELEDGER_UPSTREAM_TOKEN_FILE")]
    upstream_token_file: Option<PathBuf>,
    /// PEM CA certificates to trust for an https:// upstream (default: the system's roots).
    #[arg(long, env = "ONCELEDGER_UPSTREAM_CA")]
    upstream_ca: Option<PathBuf>,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key).
    #[arg(long, env = "ONCELEDGER_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "ONCELEDGER_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// A client must send a request's headers within this; also how long a kept-alive connection
    /// may sit idle, and how long a TLS handshake may take (slowloris guard).
    #[arg(long, env = "ONCELEDGER_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    header_read_timeout: Duration,
    /// Connections served at once; more wait in the kernel's accept queue.
    #[arg(long, env = "ONCELEDGER_CONNECTIONS_MAX", default_value_t = CONNECTIONS_MAX, value_parser = clap::value_parser!(u32).range(1..=1_000_000).map(|v| v as usize))]
    connections_max: usize,
    /// Requests per second per token (burst: one second's worth); beyond it 429 with Retry-After.
    /// Default: unlimited.
    #[arg(long, env = "ONCELEDGER_RATE_LIMIT", value_parser = clap::value_parser!(u32).range(1..))]
    rate_limit: Option<u32>,
    /// Require an admin token for GET /metrics (default: open, like /healthz).
    #[arg(long, env = "ONCELEDGER_METRICS_AUTH")]
    metrics_auth: bool,
}

#[derive(clap::Args)]
struct ConsumeArgs {
    #[command(flatten)]
    serve: ServeArgs,
    /// The JetStream stream to consume (created if missing, on subjects `--nats-subject`.>).
    #[arg(long, env = "ONCELEDGER_CONSUME_STREAM")]
    stream: String,
    /// The partition of the fleet this hub applies, K/N (0 <= K < N): it consumes only the
    /// subjects of partition K (a JetStream filter subject), so it never receives another hub's
    /// terminals, and parks as dead letters the events of a terminal whose partition under N is
    /// not K (a terminal with another --nats-partitions). Run one hub per partition; a second one
    /// with another --durable is a replica that also applies all of it. Default 0/1: one hub
    /// applies every terminal.
    #[arg(long, env = "ONCELEDGER_CONSUME_PARTITION", default_value = "0/1")]
    partition: Partition,
    /// The durable consumer's name (default: onceledger-NODE_ID-pK-of-N). Hubs with the same
    /// name share one position in the stream: give each hub its own (a replica too).
    #[arg(long, env = "ONCELEDGER_CONSUME_DURABLE")]
    durable: Option<String>,
}

/// A duration within what `expires_in` allows (one minute to 30 days).
fn parse_authorization_ttl(raw: &str) -> Result<Duration, String> {
    use onceledger_core::limits::{AUTHORIZATION_EXPIRES_IN_S_MAX, AUTHORIZATION_EXPIRES_IN_S_MIN};
    let ttl = parse_duration(raw).map_err(|e| e.to_string())?;
    if !(AUTHORIZATION_EXPIRES_IN_S_MIN..=AUTHORIZATION_EXPIRES_IN_S_MAX).contains(&ttl.as_secs()) {
        return Err(format!(
            "the authorization TTL must be from {AUTHORIZATION_EXPIRES_IN_S_MIN}s to {AUTHORIZATION_EXPIRES_IN_S_MAX}s"
        ));
    }
    Ok(ttl)
}

fn parse_node_id(text: &str) -> Result<String, String> {
    if onceledger_core::ids::is_valid_node_id(text) {
        Ok(text.to_owned())
    } else {
        Err("a node id is 1 to 64 of A-Z a-z 0-9 _ . - (no ':')".into())
    }
}

/// mimalloc instead of glibc's malloc, for the server's memory more than its speed. glibc gives
/// each thread that allocates an arena of its own and rarely hands freed memory back: a server
/// restarted on a 5 M-charge store (after SIGKILL or not) held 183-207 MB under load, ~70 MB more
/// than the same run with one arena (which cost a third of the rate). With mimalloc it peaked at 167 MB, the
/// uniform load ran 13-16 % faster, and small stores hold 18-38 MB more (BENCHMARKS.md, sitting
/// 6). Only the binary sets it: the library's unit tests, benches and fuzz targets (built with
/// sanitizers) keep the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ONCELEDGER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match Cli::parse().command {
        Command::Serve(args) => serve(args, None),
        Command::Consume(args) => {
            let consume = Consume {
                stream: args.stream,
                partition: args.partition,
                durable: args.durable,
            };
            serve(args.serve, Some(consume))
        }
        Command::Check { data_dir } => check_store(&data_dir),
        Command::ResetJournal { data_dir } => reset_journal(&data_dir),
        Command::PartitionOf {
            partitions,
            node_ids,
        } => {
            for node_id in node_ids {
                println!("{node_id} {}", partition_of(&node_id, partitions));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(args) => onceledger_testkit::bench::run(args).map_err(|e| e.to_string()),
        Command::Account(args) => {
            onceledger_client::cli::run_account(args).map_err(|e| e.to_string())
        }
        Command::Charge(args) => {
            onceledger_client::cli::run_charge(args).map_err(|e| e.to_string())
        }
        Command::Capture(args) => {
            onceledger_client::cli::run_capture(args).map_err(|e| e.to_string())
        }
        Command::Void(args) => onceledger_client::cli::run_void(args).map_err(|e| e.to_string()),
        Command::Refund(args) => {
            onceledger_client::cli::run_refund(args).map_err(|e| e.to_string())
        }
        Command::Transfer(args) => {
            onceledger_client::cli::run_transfer(args).map_err(|e| e.to_string())
        }
        Command::Client(command) => {
            onceledger_client::cli::run_client(command).map_err(|e| e.to_string())
        }
        Command::Prove(args) => onceledger_testkit::prove::run(args).map_err(|e| e.to_string()),
        Command::Tenant(command) => tenant_command(command).map_err(|e| e.to_string()),
        Command::Token(command) => token_command(command).map_err(|e| e.to_string()),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("onceledger: {message}");
            ExitCode::FAILURE
        }
    }
}

/// What `onceledger consume` adds to `serve`.
struct Consume {
    stream: String,
    partition: Partition,
    durable: Option<String>,
}

fn serve(args: ServeArgs, consume: Option<Consume>) -> Result<ExitCode, String> {
    let stream_settings = |stream: String| StreamSettings {
        url: args.nats.clone().unwrap_or_default(),
        stream,
        subject_prefix: args.nats_subject.clone(),
        duplicate_window: args.nats_duplicate_window,
    };
    if args.nats.is_none() && (args.nats_stream.is_some() || consume.is_some()) {
        return Err("give the NATS server with --nats URL".into());
    }
    if args.nats.is_some() && args.nats_stream.is_none() && consume.is_none() {
        return Err("--nats needs --nats-stream NAME to publish the outbox".into());
    }
    let nats = args.nats_stream.clone().map(|stream| PublishSettings {
        stream: stream_settings(stream),
        partitions: args.nats_partitions,
    });
    let consume = consume.map(|consume| ConsumeSettings {
        stream: stream_settings(consume.stream),
        partition: consume.partition,
        durable: consume.durable,
    });
    let config = NodeConfig {
        listen: args.listen,
        data_dir: args.data_dir,
        node_id: args.node_id,
        writer: WriterConfig {
            batch_commands_max: args.batch_commands_max,
            commit_queue_max: args.commit_queue_max.max(args.batch_commands_max),
            idempotency_retention: args.idempotency_retention,
            outbox_retention: args.outbox_retention,
            dead_letter_after: args.dead_letter_after,
            authorization_ttl: args.authorization_ttl,
        },
        security: SecurityConfig {
            tls: args.tls_cert.zip(args.tls_key),
            header_read_timeout: args.header_read_timeout,
            connections_max: args.connections_max,
            metrics_auth: args.metrics_auth,
            rate_limit_per_second: args.rate_limit,
        },
        replication: ReplicationConfig {
            upstream: args.upstream,
            upstream_auth: HubAuth {
                token: args.upstream_token,
                token_file: args.upstream_token_file,
                ca_file: args.upstream_ca,
            },
            nats,
            consume,
            replicator: ReplicatorConfig {
                rate: args.replicate_rate,
                batch_events_max: args.replicate_batch_max,
                backoff_cap: args.replicate_backoff_max,
            },
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(onceledger_core::limits::BLOCKING_THREADS_MAX)
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime
        .block_on(async {
            // The handlers are in place before `listening on` is printed: a SIGTERM sent the moment
            // a script sees that line drains the server instead of killing it.
            let shutdown = shutdown_signal();
            node::run(config, shutdown).await
        })
        .map_err(|e| e.to_string())?;
    Ok(ExitCode::SUCCESS)
}

/// Registers the SIGTERM and Ctrl-C handlers now (within the runtime) and returns a future that
/// completes on either.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let handlers = {
        use tokio::signal::unix::{SignalKind, signal};
        signal(SignalKind::terminate())
            .and_then(|term| Ok((term, signal(SignalKind::interrupt())?)))
    };
    async move {
        #[cfg(unix)]
        match handlers {
            Ok((mut term, mut interrupt)) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = interrupt.recv() => {},
                }
            }
            Err(error) => {
                tracing::warn!(%error, "no SIGTERM handler; only Ctrl-C stops the server");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutdown requested");
    }
}

fn check_store(data_dir: &std::path::Path) -> Result<ExitCode, String> {
    if !data_dir
        .join(onceledger_core::store::STORE_FILE_NAME)
        .exists()
    {
        return Err(format!("no store in {}", data_dir.display()));
    }
    // Read-only: check changes nothing, not even a journal replay (see `verify_stopped`).
    let report =
        check::verify_stopped(data_dir).map_err(|e| format!("cannot check the store: {e}"))?;
    println!("{}", serde_json::to_string(&report).unwrap_or_default());
    if report.checked_a_recovered_copy {
        eprintln!(
            "note: the store was not stopped cleanly; checked a recovered copy (the data directory was not changed)"
        );
    }
    if !report.history_indexed {
        eprintln!(
            "note: the store is from before history: it has no history indexes to check yet (its next start makes them)"
        );
    }
    if report.violations.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for violation in &report.violations {
        eprintln!("violation: {violation}");
    }
    Ok(ExitCode::FAILURE)
}

fn reset_journal(data_dir: &std::path::Path) -> Result<ExitCode, String> {
    let reset = onceledger_core::store::Store::reset_journal(data_dir)
        .map_err(|e| format!("cannot reset the journal: {e}"))?;
    if let Some(aside) = &reset.moved_aside {
        eprintln!("the old journal was moved to {}", aside.display());
    }
    eprintln!(
        "store {} now continues from batch {}: batches acknowledged after it and held only by the old journal are lost",
        reset.store_id, reset.continues_from
    );
    Ok(ExitCode::SUCCESS)
}

fn tenant_command(command: TenantCommand) -> Result<ExitCode, Box<dyn std::error::Error>> {
    match command {
        TenantCommand::Create { name, data_dir } => {
            let mut store = tokens::open_for_command(&data_dir)?;
            let tenant = tokens::tenant_create(&mut store, &name)?;
            println!(
                "{}",
                String::from_utf8_lossy(&onceledger_core::render::tenant(&tenant))
            );
        }
        TenantCommand::List { data_dir } => {
            let store = tokens::open_for_command(&data_dir)?;
            let tenants = store
                .tenants()
                .map_err(|e| format!("cannot read tenants: {e}"))?;
            println!(
                "{}",
                String::from_utf8_lossy(&onceledger_core::render::tenants_page(&tenants))
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn token_command(command: TokenCommand) -> Result<ExitCode, Box<dyn std::error::Error>> {
    match command {
        TokenCommand::Create {
            tenant,
            role,
            data_dir,
        } => {
            let role = Role::parse(&role).ok_or("role must be admin, client or replicator")?;
            let mut store = tokens::open_for_command(&data_dir)?;
            let (record, secret) = tokens::token_create(&mut store, &tenant, role)?;
            // The token alone on stdout, so `TOKEN=$(onceledger token create ...)` works.
            println!("{}", secret.expose());
            eprintln!(
                "token {} ({} of tenant {tenant}, {}...): shown once, keep it",
                record.id,
                role.as_str(),
                record.prefix
            );
        }
        TokenCommand::List { data_dir } => {
            let store = tokens::open_for_command(&data_dir)?;
            let read = store.tenants().and_then(|t| Ok((t, store.tokens()?)));
            let (tenants, all) = read.map_err(|e| format!("cannot read tokens: {e}"))?;
            let names = tenants.into_iter().map(|t| (t.id, t.name)).collect();
            println!(
                "{}",
                String::from_utf8_lossy(&onceledger_core::render::tokens_page(&all, &names))
            );
        }
        TokenCommand::Revoke { id, data_dir } => {
            let mut store = tokens::open_for_command(&data_dir)?;
            let record = tokens::token_revoke(&mut store, id)?;
            eprintln!("token {} revoked", record.id);
        }
    }
    Ok(ExitCode::SUCCESS)
}
