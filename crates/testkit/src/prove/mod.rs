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

mod error;
mod load;
mod reader;
mod relay_crash;
mod report;
mod servers;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use error::ProveError;
pub use report::Report;

use crate::bench::prom::Scrape;
use crate::bench::share;
use crate::proxy::{FaultCounts, FaultRates, Proxy, ProxyConfig, RatesError};
use load::{LoadStats, PlannedCharge};
use onceledger_client::cli::parse_duration;
use onceledger_client::{Backoff, Client, ClientConfig, NewAccount, RetryBudget};
use onceledger_server::auth::TokenSecret;
use onceledger_server::node::Sinks;
use onceledger_server::replication::hub::{HubAuth, HubSink};
use onceledger_server::replication::{Replicator, ReplicatorConfig};
use reader::Reader;
use relay_crash::CrashAfterDelivery;
use servers::{DataDirs, Running};

const NODE_ID: &str = "prove-node";
const HUB_ID: &str = "prove-hub";
const MERCHANT: &str = "merchant";
const CURRENCY: &str = "EUR";
/// Interval of the progress line, and of the polls while waiting for the hub.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
const POLL_INTERVAL: Duration = Duration::from_millis(50);

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
    pub fn from_args(args: &ProveArgs) -> Result<ProveConfig, RatesError> {
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
pub fn run(args: ProveArgs) -> Result<ExitCode, ProveError> {
    let config = ProveConfig::from_args(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(ProveError::Runtime)?;
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
pub async fn prove(config: &ProveConfig) -> Result<Report, ProveError> {
    let started = Instant::now();
    let deadline = started + config.timeout;
    let dirs = DataDirs::create(config.keep_data)?;
    let accounts = u64::from(config.customers) + 1;
    let crash_after = config.relay_crash_after.unwrap_or(accounts + 1);
    let servers = Servers::start(&dirs, config, crash_after).await?;
    let reader = Reader::new();
    if config.progress {
        servers.announce(config, crash_after);
    }
    let customers = create_accounts(&servers.node, config.customers).await?;
    let before = reader.metrics(&servers.node.url).await?;
    let charged = charge(config, &customers, &servers, started, deadline).await?;
    wait_for_hub(&reader, &servers, deadline, config.progress).await?;
    let observed = servers.observe_and_stop(&reader).await?;
    Ok(report(
        config,
        &charged,
        &before,
        observed,
        started.elapsed().as_secs_f64(),
    ))
}

/// The hub, the node replicating to it, and the fault proxy in front of the node. Fields drop
/// in order: the proxy's client connections are cut before the node is told to stop.
struct Servers {
    proxy: Arc<Proxy>,
    node: Running,
    hub: Running,
}

impl Servers {
    /// Starts the hub, then the node (its replicator crashes once, after delivery `crash_after`),
    /// then the proxy in front of the node.
    async fn start(
        dirs: &DataDirs,
        config: &ProveConfig,
        crash_after: u64,
    ) -> Result<Servers, ProveError> {
        let hub = Running::start(&dirs.hub(), HUB_ID, Sinks::default()).await?;
        let sinks = replication_to(&hub, crash_after)?;
        let node = Running::start(&dirs.node(), NODE_ID, sinks).await?;
        let proxy = Arc::new(
            Proxy::start(ProxyConfig {
                upstream: node
                    .url
                    .trim_start_matches("http://")
                    .parse()
                    .map_err(ProveError::NodeAddress)?,
                seed: config.seed,
                rates: config.rates,
                delay: config.delay,
            })
            .await?,
        );
        Ok(Servers { proxy, node, hub })
    }

    /// The first progress line: what runs where, and when the relay crashes.
    fn announce(&self, config: &ProveConfig, crash_after: u64) {
        eprintln!(
            "prove: seed {}; node {} replicating to hub {}; proxy {}; {} charges from {} tasks; \
             relay crash after delivery {crash_after}",
            config.seed,
            self.node.url,
            self.hub.url,
            self.proxy.url(),
            config.charges,
            config.tasks
        );
    }

    /// Reads what the verdict compares from both servers, then stops both and checks their
    /// stores. The proxy goes first: nothing may reach the node while it stops.
    async fn observe_and_stop(self, reader: &Reader) -> Result<Observed, ProveError> {
        let Servers {
            mut hub,
            mut node,
            proxy,
        } = self;
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
        Ok(Observed {
            node_metrics,
            hub_metrics,
            node_merchant_credits,
            hub_merchant_credits,
            faults,
            invariant_violations,
        })
    }
}

/// The node's one sink: the hub, behind the relay crash.
fn replication_to(hub: &Running, crash_after: u64) -> Result<Sinks, ProveError> {
    let hub_sink = HubSink::new(
        &hub.url,
        &HubAuth {
            token: Some(hub.replicator.expose().to_owned()),
            ..HubAuth::default()
        },
    )
    .map_err(ProveError::HubSink)?;
    let replicator = ReplicatorConfig {
        backoff_cap: Duration::from_millis(500),
        ..ReplicatorConfig::default()
    };
    Ok(Sinks {
        replicators: vec![Replicator::new(
            CrashAfterDelivery::new(hub_sink, crash_after),
            replicator,
        )],
        ..Sinks::default()
    })
}

/// Creates the customers and the merchant straight on the node: the faults are for the
/// charges. Returns the customers' ids.
async fn create_accounts(node: &Running, customers: u32) -> Result<Vec<String>, ProveError> {
    let setup = Client::new(
        &node.url,
        ClientConfig {
            token: Some(node.admin.clone()),
            ..ClientConfig::default()
        },
    )
    .map_err(ProveError::Client)?;
    let customers: Vec<String> = (0..customers).map(|i| format!("c{i}")).collect();
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
            .map_err(|source| ProveError::CreateAccount {
                id: id.to_owned(),
                source,
            })?;
        if answer.status != 201 {
            return Err(ProveError::AccountRefused {
                id: id.to_owned(),
                status: answer.status,
                body: String::from_utf8_lossy(&answer.body).into_owned(),
            });
        }
    }
    Ok(customers)
}

/// What the charge phase leaves for the report.
struct Charged {
    plan: Arc<Vec<PlannedCharge>>,
    client: Client,
    budget: Arc<RetryBudget>,
    stats: Arc<LoadStats>,
}

/// Sends the planned charges through the proxy from many tasks, then lets the proxy settle.
async fn charge(
    config: &ProveConfig,
    customers: &[String],
    servers: &Servers,
    started: Instant,
    deadline: Instant,
) -> Result<Charged, ProveError> {
    let plan = Arc::new(load::plan(
        config.seed,
        config.charges,
        customers,
        MERCHANT,
        CURRENCY,
        config.duplicate_rate,
    ));
    let budget = Arc::new(RetryBudget::default());
    let client = charge_client(&servers.proxy, &servers.node.admin, Arc::clone(&budget))?;
    let stats = Arc::new(LoadStats::default());
    let progress = config.progress.then(|| {
        let proxy = Arc::clone(&servers.proxy);
        spawn_progress(
            client.clone(),
            Arc::clone(&stats),
            config.charges,
            proxy,
            started,
        )
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
    tokio::time::timeout_at(deadline, servers.proxy.settle())
        .await
        .map_err(|_| ProveError::ProxySettle)?;
    Ok(Charged {
        plan,
        client,
        budget,
        stats,
    })
}

/// The retrying client of the charges, through the proxy: quick backoff and many attempts, so
/// the faults are retried within the run rather than waited out.
fn charge_client(
    proxy: &Proxy,
    token: &TokenSecret,
    budget: Arc<RetryBudget>,
) -> Result<Client, ProveError> {
    Client::new(
        &proxy.url(),
        ClientConfig {
            backoff: Backoff {
                base: Duration::from_millis(5),
                cap: Duration::from_millis(250),
            },
            attempts_max: 10,
            attempt_timeout: Duration::from_secs(5),
            budget,
            token: Some(token.clone()),
            ..ClientConfig::default()
        },
    )
    .map_err(ProveError::Client)
}

/// Prints the progress line of the charge phase every `PROGRESS_INTERVAL` until aborted.
fn spawn_progress(
    client: Client,
    stats: Arc<LoadStats>,
    total: u64,
    proxy: Arc<Proxy>,
    started: Instant,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks =
            tokio::time::interval_at(Instant::now() + PROGRESS_INTERVAL, PROGRESS_INTERVAL);
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
}

/// Waits until the hub applied every event of the node and the node's replicator has recorded
/// that (lag 0 is set only after an acknowledgement, so a crashed batch's resend is counted by
/// then).
async fn wait_for_hub(
    reader: &Reader,
    servers: &Servers,
    deadline: Instant,
    progress: bool,
) -> Result<(), ProveError> {
    let (node, hub) = (&servers.node, &servers.hub);
    let events = reader
        .json(&format!("{}/v1/events?limit=1", node.url), &node.admin)
        .await?;
    let Some(last) = events["held"]["last"].as_u64() else {
        return Err(ProveError::NoHeldLast { events });
    };
    let mut announced = Instant::now();
    loop {
        let (through, lag) = replication_state(reader, node, hub).await?;
        if through >= last && lag == 0.0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(ProveError::HubBehind { through, last, lag });
        }
        if progress && announced.elapsed() >= PROGRESS_INTERVAL {
            eprintln!("prove: waiting for the hub: applied through {through} of {last}");
            announced = Instant::now();
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// The node's event the hub applied through (0 before the first), and the node's outbox lag
/// (NaN while the gauge is missing).
async fn replication_state(
    reader: &Reader,
    node: &Running,
    hub: &Running,
) -> Result<(u64, f64), ProveError> {
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
    Ok((through, lag))
}

/// What was read from both servers after the hub caught up, and their stores' checks.
struct Observed {
    node_metrics: Scrape,
    hub_metrics: Scrape,
    node_merchant_credits: u64,
    hub_merchant_credits: u64,
    faults: FaultCounts,
    invariant_violations: Vec<String>,
}

/// The report of a run: counters during the charges are the node's now minus `before`.
fn report(
    config: &ProveConfig,
    charged: &Charged,
    before: &Scrape,
    observed: Observed,
    seconds: f64,
) -> Report {
    let (node, hub) = (&observed.node_metrics, &observed.hub_metrics);
    let node_accounts_created = counter(node, ACCOUNTS_CREATED);
    let hub_events_applied = counter(hub, INBOX_APPLIED);
    let (stats, plan) = (&charged.stats, &charged.plan);
    let failure_samples = stats
        .failure_samples
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    Report {
        seed: config.seed,
        tasks: config.tasks,
        logical_operations: config.charges,
        concurrent_duplicates: plan.iter().filter(|c| c.duplicate).count() as u64,
        attempts: charged.client.attempts_total(),
        replays: counter(node, REPLAYED).saturating_sub(counter(before, REPLAYED)),
        conflicts_409: counter(node, IN_FLIGHT).saturating_sub(counter(before, IN_FLIGHT)),
        lost_responses: observed.faults.lost_responses,
        resets: observed.faults.resets,
        delays: observed.faults.delays,
        resent_after_giving_up: stats.resent_after_giving_up.load(Ordering::Relaxed),
        node_charges_applied: counter(node, CHARGES_APPLIED),
        node_accounts_created,
        hub_events_applied,
        hub_charge_events_applied: hub_events_applied.saturating_sub(node_accounts_created),
        inbox_duplicates_dropped: counter(hub, INBOX_DUPLICATE),
        inbox_dead_lettered: counter(hub, INBOX_DEAD_LETTERED),
        relay_crashes: counter(node, RESTARTS),
        amount_sum: plan.iter().map(|c| c.amount).sum(),
        node_merchant_credits: observed.node_merchant_credits,
        hub_merchant_credits: observed.hub_merchant_credits,
        retry_budget_left: charged.budget.tokens(),
        retry_budget_capacity: charged.budget.capacity(),
        failed_operations: stats.failed.load(Ordering::Relaxed),
        failure_samples,
        invariant_violations: observed.invariant_violations,
        seconds,
    }
}
