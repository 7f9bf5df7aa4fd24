//! `onceledger prove`: effectively-once, shown end to end in one process on loopback.
//!
//! ```text
//! client tasks ──► proxy (lost answers, resets, delays) ──► node ──replicator──► hub
//!  (one key per                                              │  relay crash after delivery N,
//!   logical charge,                                          │  before the cursor moves; a new
//!   twins at once)                                           │  replicator resends from the cursor
//! ```
//!
//! Phases: start the hub, the node (replicating to the hub through a sink that crashes its
//! replicator once, `relay_crash`)
//! and the proxy; create the accounts directly on the node; send the logical charges through the
//! proxy from many tasks (`load`); let the proxy settle; wait until the hub holds every event of
//! the node and the node's outbox lag is 0; read `/metrics` of both and the merchant's account on
//! both; stop both and run the invariant checker on both stores; report (`report`).
//!
//! The verdict ([`Report::failures`]): charges applied on the node (its
//! `onceledger_charges_applied_total`) and charge events applied on the hub (its
//! `onceledger_inbox_events_total{result="applied"}` minus the node's
//! `onceledger_accounts_created_total`, the account events among them) both equal the logical
//! operations; the merchant's credits on the node and in the hub's mirror both equal the sum of
//! the logical charges' amounts; every logical charge got one agreed 201; both stores pass check.

mod load;
mod relay_crash;
mod report;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use report::Report;

use crate::bench::prom::Scrape;
use crate::bench::share;
use crate::proxy::{FaultRates, Proxy, ProxyConfig};
use onceledger_client::cli::parse_duration;
use onceledger_client::{Backoff, Client, ClientConfig, NewAccount};
use onceledger_core::store::{Store, check};
use onceledger_core::writer::WriterConfig;
use onceledger_server::auth::{DEFAULT_TENANT_NAME, Role, TokenSecret};
use onceledger_server::node::{Sinks, serve_store_with};
use onceledger_server::replication::hub::{HubAuth, HubSink};
use onceledger_server::replication::{Replicator, ReplicatorConfig};
use relay_crash::CrashAfterDelivery;

const NODE_ID: &str = "prove-node";
const HUB_ID: &str = "prove-hub";
const MERCHANT: &str = "merchant";
const CURRENCY: &str = "EUR";
/// Interval of the progress line, and of the polls while waiting for the hub.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// One GET of a node's state (metrics, events, an account) may take this long.
const GET_TIMEOUT: Duration = Duration::from_secs(10);
/// How long stopping the node and the hub may take.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest GET answer read (`/metrics` is a few KiB).
const GET_BYTES_MAX: usize = 4 * 1024 * 1024;

#[derive(clap::Args, Debug, Clone)]
pub struct ProveArgs {
    /// Logical charges to make (each one idempotency key).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub charges: u64,
    /// Concurrent client tasks.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub tasks: u32,
    /// Customer accounts the charges are taken from (no overdraft limit); one merchant takes them.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub customers: u32,
    /// Share of logical charges sent by two tasks at once (same key, same body).
    #[arg(long, default_value_t = 0.05, value_parser = share)]
    pub duplicate_rate: f64,
    /// Share of requests whose answer the proxy drops after the node processed them.
    #[arg(long, default_value_t = 0.1, value_parser = share)]
    pub lost_response_rate: f64,
    /// Share of requests whose connection the proxy resets before forwarding them.
    #[arg(long, default_value_t = 0.05, value_parser = share)]
    pub reset_rate: f64,
    /// Share of requests the proxy holds for --delay before forwarding them.
    #[arg(long, default_value_t = 0.0, value_parser = share)]
    pub delay_rate: f64,
    /// How long a delayed request is held (e.g. 200ms).
    #[arg(long, default_value = "200ms", value_parser = parse_duration)]
    pub delay: Duration,
    /// The replicator crashes once, right after this many acknowledged deliveries and before its
    /// cursor moves [default: accounts + 1, so the crash falls among the charges].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub relay_crash_after: Option<u64>,
    /// Seed of the plan (sources, amounts, duplicates) and of the proxy's faults [default:
    /// random, printed]. Which request gets which fault still depends on timing.
    #[arg(long)]
    pub seed: Option<u64>,
    /// The whole run (charges, then the hub catching up) must finish within this.
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Keep the node's and the hub's data directories (their paths are printed).
    #[arg(long)]
    pub keep_data: bool,
}

/// What a run does; [`ProveArgs`] with defaults filled in.
#[derive(Debug, Clone)]
pub struct ProveConfig {
    pub charges: u64,
    pub tasks: usize,
    pub customers: u32,
    pub duplicate_rate: f64,
    pub rates: FaultRates,
    pub delay: Duration,
    pub relay_crash_after: Option<u64>,
    pub seed: u64,
    pub timeout: Duration,
    pub keep_data: bool,
    /// Print the progress line on stderr.
    pub progress: bool,
}

impl ProveConfig {
    pub fn from_args(args: &ProveArgs) -> Result<ProveConfig, String> {
        let rates = FaultRates {
            lost_response: args.lost_response_rate,
            reset: args.reset_rate,
            delay: args.delay_rate,
        };
        rates.validate()?;
        Ok(ProveConfig {
            charges: args.charges,
            tasks: args.tasks as usize,
            customers: args.customers,
            duplicate_rate: args.duplicate_rate,
            rates,
            delay: args.delay,
            relay_crash_after: args.relay_crash_after,
            seed: args
                .seed
                .unwrap_or_else(|| uuid::Uuid::new_v4().as_u64_pair().0),
            timeout: args.timeout,
            keep_data: args.keep_data,
            progress: true,
        })
    }
}

/// The command: runs, prints the table on stdout, exits 0 only if the run proves effectively-once
/// (exit 3 if it does not, 1 if it could not be carried out).
pub fn run(args: ProveArgs) -> Result<ExitCode, String> {
    let config = ProveConfig::from_args(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let report = runtime.block_on(prove(&config));
    // Pooled client connections may still be parked on their sockets; do not wait for them.
    runtime.shutdown_timeout(Duration::from_secs(1));
    let report = report?;
    print!("{}", report.table());
    Ok(if report.holds() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

/// The node's and the hub's data directories under a fresh directory in the system's temporary
/// directory, removed on drop unless kept.
struct DataDirs {
    root: PathBuf,
    keep: bool,
}

impl DataDirs {
    fn create(keep: bool) -> Result<DataDirs, String> {
        let root = std::env::temp_dir().join(format!(
            "onceledger-prove-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir(&root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
        Ok(DataDirs { root, keep })
    }

    fn node(&self) -> PathBuf {
        self.root.join("node")
    }

    fn hub(&self) -> PathBuf {
        self.root.join("hub")
    }
}

impl Drop for DataDirs {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("prove: data kept in {}", self.root.display());
        } else if let Err(error) = std::fs::remove_dir_all(&self.root) {
            eprintln!("prove: cannot remove {}: {error}", self.root.display());
        }
    }
}

/// A node (or hub) served in this process.
struct Running {
    /// The data directory: checked read-only once the node stopped, as `onceledger check` does.
    dir: PathBuf,
    url: String,
    /// An admin token of this server (reads, account setup, charges).
    admin: TokenSecret,
    /// A replicator token of this server (what a node sends to it as its hub).
    replicator: TokenSecret,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), onceledger_server::node::NodeError>>>,
}

impl Running {
    async fn start(dir: &Path, node_id: &str, sinks: Sinks) -> Result<Running, String> {
        let mut store = Store::open_as(dir, Some(node_id))
            .map_err(|e| format!("cannot open the store in {}: {e}", dir.display()))?;
        // Made before serving: the server loads its token table when it starts.
        let mut token = |role| {
            onceledger_server::node::tokens::token_create(&mut store, DEFAULT_TENANT_NAME, role)
                .map(|(_, secret)| secret)
                .map_err(|e| e.to_string())
        };
        let (admin, replicator) = (token(Role::Admin)?, token(Role::Replicator)?);
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|e| format!("cannot listen on 127.0.0.1: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("no local address: {e}"))?;
        let (stop, stopped) = oneshot::channel::<()>();
        // The listener is bound already: connections made before the task runs wait in the
        // backlog, so nothing needs to wait for readiness.
        let task = tokio::spawn(serve_store_with(
            store,
            listener,
            WriterConfig::default(),
            sinks,
            async move {
                let _ = stopped.await;
            },
        ));
        Ok(Running {
            dir: dir.to_path_buf(),
            url: format!("http://{addr}"),
            admin,
            replicator,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Stops serving (the writer commits what is queued) and runs the invariant checker.
    async fn stop_and_check(&mut self, name: &str) -> Result<Vec<String>, String> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(STOP_TIMEOUT, task)
                .await
                .map_err(|_| format!("the {name} did not stop within {STOP_TIMEOUT:?}"))?
                .map_err(|e| format!("the {name} task failed: {e}"))?
                .map_err(|e| e.to_string())?;
        }
        let dir = self.dir.clone();
        let report = tokio::task::spawn_blocking(move || check::verify_stopped(&dir))
            .await
            .map_err(|e| format!("the {name}'s check failed: {e}"))?
            .map_err(|e| format!("cannot read the {name}'s store: {e}"))?;
        Ok(report
            .violations
            .into_iter()
            .map(|v| format!("{name}: {v}"))
            .collect())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Plain GETs of the node's and the hub's state, not through the proxy.
struct Reader {
    http: HyperClient<HttpConnector, Full<Bytes>>,
}

impl Reader {
    fn new() -> Reader {
        Reader {
            http: HyperClient::builder(TokioExecutor::new()).build_http(),
        }
    }

    async fn get(&self, url: &str, token: Option<&TokenSecret>) -> Result<Bytes, String> {
        let uri: Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
        let mut request = Request::get(uri);
        if let Some(token) = token {
            request = request.header(
                http::header::AUTHORIZATION,
                token.header_value().map_err(|e| e.to_string())?,
            );
        }
        let request = request
            .body(Full::new(Bytes::new()))
            .map_err(|e| format!("GET {url}: {e}"))?;
        let fetch = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| format!("GET {url}: {e}"))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), GET_BYTES_MAX)
                .collect()
                .await
                .map_err(|e| format!("GET {url}: {e}"))?
                .to_bytes();
            if !status.is_success() {
                return Err(format!(
                    "GET {url}: {status} {}",
                    String::from_utf8_lossy(&body)
                ));
            }
            Ok(body)
        };
        tokio::time::timeout(GET_TIMEOUT, fetch)
            .await
            .map_err(|_| format!("GET {url}: no answer within {GET_TIMEOUT:?}"))?
    }

    async fn json(&self, url: &str, token: &TokenSecret) -> Result<Value, String> {
        let body = self.get(url, Some(token)).await?;
        serde_json::from_slice(&body).map_err(|e| format!("GET {url}: not JSON: {e}"))
    }

    async fn metrics(&self, base: &str) -> Result<Scrape, String> {
        let body = self.get(&format!("{base}/metrics"), None).await?;
        Ok(Scrape::parse(&String::from_utf8_lossy(&body)))
    }

    /// `credits_posted` of the account at `url` (a node's account or a hub's mirror of one).
    async fn credits(&self, url: &str, token: &TokenSecret) -> Result<u64, String> {
        let account = self.json(url, token).await?;
        account["credits_posted"]
            .as_u64()
            .ok_or_else(|| format!("GET {url}: no credits_posted in {account}"))
    }
}

/// A counter's value, 0 when the scrape does not have it yet (a labelled counter that never
/// counted).
fn counter(scrape: &Scrape, name: &str) -> u64 {
    scrape.get(name).map_or(0, |v| v.round() as u64)
}

const REPLAYED: &str = r#"onceledger_idempotency_requests_total{outcome="replayed"}"#;
const IN_FLIGHT: &str = r#"onceledger_idempotency_requests_total{outcome="in_flight"}"#;
const CHARGES_APPLIED: &str = "onceledger_charges_applied_total";
const ACCOUNTS_CREATED: &str = "onceledger_accounts_created_total";
const OUTBOX_LAG: &str = r#"onceledger_outbox_lag_events{sink="hub"}"#;
const RESTARTS: &str = r#"onceledger_replication_restarts_total{sink="hub"}"#;
const INBOX_APPLIED: &str = r#"onceledger_inbox_events_total{result="applied"}"#;
const INBOX_DUPLICATE: &str = r#"onceledger_inbox_events_total{result="duplicate"}"#;
const INBOX_DEAD_LETTERED: &str = r#"onceledger_inbox_events_total{result="dead_lettered"}"#;

/// Runs one proof and reports what it saw. `Err` when the run could not be carried out (a
/// server did not start, the deadline passed while waiting for the hub).
pub async fn prove(config: &ProveConfig) -> Result<Report, String> {
    let started = Instant::now();
    let deadline = started + config.timeout;
    let dirs = DataDirs::create(config.keep_data)?;
    let accounts = u64::from(config.customers) + 1;
    let crash_after = config.relay_crash_after.unwrap_or(accounts + 1);

    let mut hub = Running::start(&dirs.hub(), HUB_ID, Sinks::default()).await?;
    let hub_sink = HubSink::new(
        &hub.url,
        &HubAuth {
            token: Some(hub.replicator.expose().to_owned()),
            ..HubAuth::default()
        },
    )
    .map_err(|e| e.to_string())?;
    let replicator = ReplicatorConfig {
        backoff_cap: Duration::from_millis(500),
        ..ReplicatorConfig::default()
    };
    let sinks = Sinks {
        replicators: vec![Replicator::new(
            CrashAfterDelivery::new(hub_sink, crash_after),
            replicator,
        )],
        ..Sinks::default()
    };
    let mut node = Running::start(&dirs.node(), NODE_ID, sinks).await?;
    let proxy = Arc::new(
        Proxy::start(ProxyConfig {
            upstream: node
                .url
                .trim_start_matches("http://")
                .parse()
                .map_err(|e| format!("node address: {e}"))?,
            seed: config.seed,
            rates: config.rates,
            delay: config.delay,
        })
        .await?,
    );
    let reader = Reader::new();
    if config.progress {
        eprintln!(
            "prove: seed {}; node {} replicating to hub {}; proxy {}; {} charges from {} tasks; \
             relay crash after delivery {crash_after}",
            config.seed,
            node.url,
            hub.url,
            proxy.url(),
            config.charges,
            config.tasks
        );
    }

    // Accounts, straight to the node: the faults are for the charges.
    let setup = Client::new(
        &node.url,
        ClientConfig {
            token: Some(node.admin.clone()),
            ..ClientConfig::default()
        },
    )
    .map_err(|e| e.to_string())?;
    let customers: Vec<String> = (0..config.customers).map(|i| format!("c{i}")).collect();
    for (id, overdraft_limit) in customers
        .iter()
        .map(|c| (c.as_str(), None))
        .chain([(MERCHANT, Some(0))])
    {
        let answer = setup
            .create_account(&NewAccount {
                id: id.to_owned(),
                currency: CURRENCY.to_owned(),
                overdraft_limit,
            })
            .await
            .map_err(|e| format!("cannot create account {id}: {e}"))?;
        if answer.status != 201 {
            return Err(format!(
                "account {id}: HTTP {} {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            ));
        }
    }
    let before = reader.metrics(&node.url).await?;

    // The charges, through the proxy.
    let plan = Arc::new(load::plan(
        config.seed,
        config.charges,
        &customers,
        MERCHANT,
        CURRENCY,
        config.duplicate_rate,
    ));
    let budget = Arc::new(onceledger_client::RetryBudget::default());
    let client = Client::new(
        &proxy.url(),
        ClientConfig {
            backoff: Backoff {
                base: Duration::from_millis(5),
                cap: Duration::from_millis(250),
            },
            attempts_max: 10,
            attempt_timeout: Duration::from_secs(5),
            budget: Arc::clone(&budget),
            token: Some(node.admin.clone()),
            ..ClientConfig::default()
        },
    )
    .map_err(|e| e.to_string())?;
    let stats = Arc::new(load::LoadStats::default());
    let progress = config.progress.then(|| {
        let (client, stats, total, proxy) = (
            client.clone(),
            Arc::clone(&stats),
            config.charges,
            Arc::clone(&proxy),
        );
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(
                Instant::now() + PROGRESS_INTERVAL,
                PROGRESS_INTERVAL,
            );
            loop {
                ticks.tick().await;
                let faults = proxy.counts();
                eprintln!(
                    "prove: {:5.1} s  charges {}/{total}  attempts {}  lost {}  resets {}  gave up and re-sent {}",
                    started.elapsed().as_secs_f64(),
                    stats.done.load(Ordering::Relaxed),
                    client.attempts_total(),
                    faults.lost_responses,
                    faults.resets,
                    stats.resent_after_giving_up.load(Ordering::Relaxed),
                );
            }
        })
    });
    load::run(
        &client,
        Arc::clone(&plan),
        config.tasks,
        Arc::clone(&stats),
        deadline,
    )
    .await;
    if let Some(progress) = progress {
        progress.abort();
    }
    // Held requests reach the node before its state is read.
    tokio::time::timeout_at(deadline, proxy.settle())
        .await
        .map_err(|_| "the proxy's held requests did not finish before the deadline".to_owned())?;

    // The hub catches up: it applied every event of the node, and the node's replicator has
    // recorded that (lag 0 is set only after an acknowledgement, so a crashed batch's resend is
    // counted by then).
    let events = reader
        .json(&format!("{}/v1/events?limit=1", node.url), &node.admin)
        .await?;
    let last = events["held"]["last"]
        .as_u64()
        .ok_or_else(|| format!("the node's events page has no held.last: {events}"))?;
    let mut announced = Instant::now();
    loop {
        let origins = reader
            .json(&format!("{}/v1/replication/origins", hub.url), &hub.admin)
            .await?;
        let through = origins["origins"]
            .as_array()
            .and_then(|o| o.iter().find(|o| o["node"] == NODE_ID))
            .and_then(|o| o["applied_through"].as_u64())
            .unwrap_or(0);
        let lag = reader
            .metrics(&node.url)
            .await?
            .get(OUTBOX_LAG)
            .unwrap_or(f64::NAN);
        if through >= last && lag == 0.0 {
            break;
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the hub did not catch up before the deadline: applied through {through} of {last}, node outbox lag {lag}"
            ));
        }
        if config.progress && announced.elapsed() >= PROGRESS_INTERVAL {
            eprintln!("prove: waiting for the hub: applied through {through} of {last}");
            announced = Instant::now();
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }

    let node_metrics = reader.metrics(&node.url).await?;
    let hub_metrics = reader.metrics(&hub.url).await?;
    let node_merchant_credits = reader
        .credits(&format!("{}/v1/accounts/{MERCHANT}", node.url), &node.admin)
        .await?;
    let hub_merchant_credits = reader
        .credits(
            &format!(
                "{}/v1/replication/origins/{NODE_ID}/accounts/{MERCHANT}",
                hub.url
            ),
            &hub.admin,
        )
        .await?;
    let faults = proxy.counts();
    drop(proxy);
    let mut invariant_violations = node.stop_and_check("node").await?;
    invariant_violations.extend(hub.stop_and_check("hub").await?);

    let node_accounts_created = counter(&node_metrics, ACCOUNTS_CREATED);
    let hub_events_applied = counter(&hub_metrics, INBOX_APPLIED);
    let failure_samples = stats
        .failure_samples
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    Ok(Report {
        seed: config.seed,
        tasks: config.tasks,
        logical_operations: config.charges,
        concurrent_duplicates: plan.iter().filter(|c| c.duplicate).count() as u64,
        attempts: client.attempts_total(),
        replays: counter(&node_metrics, REPLAYED).saturating_sub(counter(&before, REPLAYED)),
        conflicts_409: counter(&node_metrics, IN_FLIGHT)
            .saturating_sub(counter(&before, IN_FLIGHT)),
        lost_responses: faults.lost_responses,
        resets: faults.resets,
        delays: faults.delays,
        resent_after_giving_up: stats.resent_after_giving_up.load(Ordering::Relaxed),
        node_charges_applied: counter(&node_metrics, CHARGES_APPLIED),
        node_accounts_created,
        hub_events_applied,
        hub_charge_events_applied: hub_events_applied.saturating_sub(node_accounts_created),
        inbox_duplicates_dropped: counter(&hub_metrics, INBOX_DUPLICATE),
        inbox_dead_lettered: counter(&hub_metrics, INBOX_DEAD_LETTERED),
        relay_crashes: counter(&node_metrics, RESTARTS),
        amount_sum: plan.iter().map(|c| c.amount).sum(),
        node_merchant_credits,
        hub_merchant_credits,
        retry_budget_left: budget.tokens(),
        retry_budget_capacity: budget.capacity(),
        failed_operations: stats.failed.load(Ordering::Relaxed),
        failure_samples,
        invariant_violations,
        seconds: started.elapsed().as_secs_f64(),
    })
}
