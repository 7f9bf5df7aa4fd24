//! `onceledger prove`: effectively-once, shown end to end in one process on loopback.
//!
//! ```text
//! client tasks ──► proxy (lost answers, resets, delays) ──► node ──replicator──► hub
//!  (one key per                                              │  relay crash after delivery N,
//!   logical operation,                                       │  before the cursor moves; a new
//!   twins at once)                                           │  replicator resends from the cursor
//! ```
//!
//! Phases: start the hub, the node (replicating to the hub through a sink that crashes its
//! replicator once, `relay_crash`) and the proxy; create the accounts directly on the node; send
//! the plan through the proxy from many tasks (`load`): with `--mix lifecycle` first the
//! lifecycle mix (`lifecycle`; its authorizations left to expire first of all), then the
//! immediate charges; let the proxy settle; wait (bounded, with a progress line) until the node
//! expired the authorizations left to expire; wait until the hub holds every event of the node
//! and the node's outbox lag is 0; read `/metrics` of both and every account of the run on both;
//! stop both and run the invariant checker on both stores; report (`report`).
//!
//! The verdict ([`Report::failures`]): charges applied on the node (its
//! `onceledger_charges_applied_total`) and charge events applied on the hub both equal the
//! planned charges; each lifecycle operation the node counted during the run
//! (`onceledger_lifecycle_operations_total{operation=...}`) equals the plan's; the hub applied
//! (`onceledger_inbox_events_total{result="applied"}`) every event the node made (its accounts,
//! charges and lifecycle operations, one event each) and dead-lettered none; every account's
//! four totals on the node and in the hub's mirror equal what the plan implies (`totals`); every
//! logical operation got one agreed answer of its expected status (a decline is a failure: the
//! plan's amounts are never declined); both stores pass check.

mod error;
mod lifecycle;
mod load;
mod reader;
mod relay_crash;
mod report;
mod servers;
mod totals;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use error::ProveError;
pub use lifecycle::{LifecycleCounts, LifecycleMix};
pub use report::Report;
pub use totals::{AccountTotals, Totals};

use crate::bench::prom::Scrape;
use crate::bench::share;
use crate::proxy::{FaultCounts, FaultRates, Proxy, ProxyConfig, RatesError};
use lifecycle::{Item, Parties};
use load::{LoadStats, PlannedCharge, Sender};
use onceledger_client::cli::parse_duration;
use onceledger_client::lifecycle::EXPIRES_IN_SECS_MIN;
use onceledger_client::{Backoff, Client, ClientConfig, NewAccount, RetryBudget};
use onceledger_server::auth::TokenSecret;
use onceledger_server::node::Sinks;
use onceledger_server::replication::hub::{HubAuth, HubSink};
use onceledger_server::replication::{Replicator, ReplicatorConfig};
use reader::Reader;
use relay_crash::CrashAfterDelivery;
use servers::{DataDirs, Running};
use totals::Model;

const NODE_ID: &str = "prove-node";
const HUB_ID: &str = "prove-hub";
const MERCHANT: &str = "merchant";
/// The lifecycle mix's transfers pay a fee to it.
const PLATFORM: &str = "platform";
const CURRENCY: &str = "EUR";
/// Interval of the progress line, and of the polls while waiting for the hub.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Polls of the node's expiry counter (the expiries come within a second of `expires_at`).
const EXPIRY_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// What a run sends.
///
/// The immediate charges stay the default, and the lifecycle mix is asked for: its
/// authorizations left to expire live at least `expires_in` 60 s, and a release build has no
/// clock knob, so a lifecycle run takes over a minute where the default takes seconds (and its
/// table and promises, README "Proving effectively-once", stay as they were).
#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mix {
    /// Immediate charges only.
    #[default]
    Charges,
    /// The charges, and payments authorized then captured (whole or part), voided, left to
    /// expire or left open, refunds of some captured ones, and two-leg transfers.
    Lifecycle,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ProveArgs {
    /// What to send: the immediate charges, or those and the lifecycle mix.
    #[arg(long, value_enum, default_value_t = Mix::Charges)]
    pub mix: Mix,
    /// Logical charges to make (each one idempotency key).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub charges: u64,
    /// With --mix lifecycle: payments, each an authorization then (by the seed) a capture of the
    /// whole or a part, a void, nothing until it expires, or nothing (left open).
    #[arg(long, default_value_t = 400, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    pub payments: u64,
    /// With --mix lifecycle: two-leg transfers (customer to merchant, merchant to platform).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    pub transfers: u64,
    /// With --mix lifecycle: share of payments left to expire (`expires_in` 60 s; the run waits
    /// for their expiry, over a minute). 0 leaves none and does not wait.
    #[arg(long, default_value_t = 0.1, value_parser = share)]
    pub expire_rate: f64,
    /// Concurrent client tasks.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub tasks: u32,
    /// Customer accounts the payments are taken from (no overdraft limit); one merchant takes them.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub customers: u32,
    /// Share of logical operations sent by two tasks at once (same key, same body).
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
    /// cursor moves [default: accounts + 1, so the crash falls among the payments].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub relay_crash_after: Option<u64>,
    /// Seed of the plan (sources, amounts, duplicates) and of the proxy's faults [default:
    /// random, printed]. Which request gets which fault still depends on timing.
    #[arg(long)]
    pub seed: Option<u64>,
    /// The whole run (payments, the expiries of the lifecycle mix, then the hub catching up) must
    /// finish within this.
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
    /// The lifecycle mix, sent before the charges; `None`: charges only.
    pub lifecycle: Option<LifecycleMix>,
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
            lifecycle: (args.mix == Mix::Lifecycle).then_some(LifecycleMix {
                payments: args.payments,
                transfers: args.transfers,
                expire_rate: args.expire_rate,
            }),
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
const LIFECYCLE: &str = "onceledger_lifecycle_operations_total";
const EXPIRED: &str = r#"onceledger_lifecycle_operations_total{operation="expired"}"#;
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
    let platform = config.lifecycle.map(|_| PLATFORM);
    let accounts = u64::from(config.customers) + 1 + u64::from(platform.is_some());
    let crash_after = config.relay_crash_after.unwrap_or(accounts + 1);
    let servers = Servers::start(&dirs, config, crash_after).await?;
    let reader = Reader::new();
    if config.progress {
        servers.announce(config, crash_after);
    }
    let customers = create_accounts(&servers.node, config.customers, platform).await?;
    let before = reader.metrics(&servers.node.url).await?;
    let sent = send(config, &customers, &servers, started, deadline).await?;
    let expiries = lifecycle::counts(&sent.lifecycle).expired;
    wait_for_expiries(
        &reader,
        &servers.node,
        &before,
        expiries,
        deadline,
        config.progress,
    )
    .await?;
    wait_for_hub(&reader, &servers, deadline, config.progress).await?;
    let observed = servers.observe_and_stop(&reader, &sent.model).await?;
    Ok(report(
        config,
        &sent,
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
        let lifecycle = config.lifecycle.map_or(String::new(), |mix| {
            format!(
                ", {} payments ({} % left to expire) and {} transfers",
                mix.payments,
                (mix.expire_rate * 100.0).round(),
                mix.transfers
            )
        });
        eprintln!(
            "prove: seed {}; node {} replicating to hub {}; proxy {}; {} charges{lifecycle} from \
             {} tasks; relay crash after delivery {crash_after}",
            config.seed,
            self.node.url,
            self.hub.url,
            self.proxy.url(),
            config.charges,
            config.tasks
        );
    }

    /// Reads what the verdict compares from both servers (metrics, every account of `model` on
    /// the node and in the hub's mirror), then stops both and checks their stores. The proxy
    /// goes first: nothing may reach the node while it stops.
    async fn observe_and_stop(
        self,
        reader: &Reader,
        model: &Model,
    ) -> Result<Observed, ProveError> {
        let Servers {
            mut hub,
            mut node,
            proxy,
        } = self;
        let node_metrics = reader.metrics(&node.url).await?;
        let hub_metrics = reader.metrics(&hub.url).await?;
        let mut accounts = Vec::new();
        for (id, plan) in model.accounts() {
            let node_url = format!("{}/v1/accounts/{id}", node.url);
            let hub_url = format!("{}/v1/replication/origins/{NODE_ID}/accounts/{id}", hub.url);
            accounts.push(AccountTotals {
                id: id.to_owned(),
                plan: *plan,
                node: reader.totals(&node_url, &node.admin).await?,
                hub: reader.totals(&hub_url, &hub.admin).await?,
            });
        }
        let faults = proxy.counts();
        drop(proxy);
        let mut invariant_violations = node.stop_and_check("node").await?;
        invariant_violations.extend(hub.stop_and_check("hub").await?);
        Ok(Observed {
            node_metrics,
            hub_metrics,
            accounts,
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

/// Creates the customers, the merchant and (for the lifecycle mix) the platform straight on the
/// node: the faults are for the payments. Returns the customers' ids.
async fn create_accounts(
    node: &Running,
    customers: u32,
    platform: Option<&str>,
) -> Result<Vec<String>, ProveError> {
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
        .chain(platform.map(|p| (p, Some(0))))
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

/// What the sending phase leaves for the report.
struct Sent {
    charges: Arc<Vec<PlannedCharge>>,
    lifecycle: Arc<Vec<Item>>,
    /// What the plan implies for every account of the run.
    model: Model,
    client: Client,
    budget: Arc<RetryBudget>,
    stats: Arc<LoadStats>,
}

/// Sends the planned lifecycle mix (if any; its expiring authorizations first of all), then the
/// planned charges, through the proxy from many tasks, then lets the proxy settle.
async fn send(
    config: &ProveConfig,
    customers: &[String],
    servers: &Servers,
    started: Instant,
    deadline: Instant,
) -> Result<Sent, ProveError> {
    let charges = Arc::new(load::plan(
        config.seed,
        config.charges,
        customers,
        MERCHANT,
        CURRENCY,
        config.duplicate_rate,
    ));
    let parties = Parties {
        customers,
        merchant: MERCHANT,
        platform: PLATFORM,
        currency: CURRENCY,
    };
    let lifecycle = Arc::new(config.lifecycle.map_or_else(Vec::new, |mix| {
        lifecycle::plan(config.seed, &mix, &parties, config.duplicate_rate)
    }));
    let platform = config.lifecycle.map(|_| PLATFORM);
    let ids = customers.iter().map(String::as_str).chain([MERCHANT]);
    let mut model = Model::with_accounts(ids.chain(platform));
    load::model_charges(&charges, &mut model);
    lifecycle::model(&lifecycle, &mut model);
    let budget = Arc::new(RetryBudget::default());
    let sender = Sender {
        client: charge_client(&servers.proxy, &servers.node.admin, Arc::clone(&budget))?,
        stats: Arc::new(LoadStats::default()),
        deadline,
    };
    let progress = config.progress.then(|| {
        let items = (charges.len() + lifecycle.len()) as u64;
        spawn_progress(&sender, items, Arc::clone(&servers.proxy), started)
    });
    lifecycle::run(&sender, Arc::clone(&lifecycle), config.tasks).await;
    load::run(&sender, Arc::clone(&charges), config.tasks).await;
    if let Some(progress) = progress {
        progress.abort();
    }
    // Held requests reach the node before its state is read.
    tokio::time::timeout_at(deadline, servers.proxy.settle())
        .await
        .map_err(|_| ProveError::ProxySettle)?;
    Ok(Sent {
        charges,
        lifecycle,
        model,
        client: sender.client,
        budget,
        stats: sender.stats,
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

/// Prints the progress line of the sending phase every `PROGRESS_INTERVAL` until aborted: planned
/// items done (a charge, a payment with all its operations, a transfer) of `total`.
fn spawn_progress(
    sender: &Sender,
    total: u64,
    proxy: Arc<Proxy>,
    started: Instant,
) -> JoinHandle<()> {
    let (client, stats) = (sender.client.clone(), Arc::clone(&sender.stats));
    tokio::spawn(async move {
        let mut ticks =
            tokio::time::interval_at(Instant::now() + PROGRESS_INTERVAL, PROGRESS_INTERVAL);
        loop {
            ticks.tick().await;
            let faults = proxy.counts();
            eprintln!(
                "prove: {:5.1} s  done {}/{total}  attempts {}  lost {}  resets {}  gave up and re-sent {}",
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

/// Waits until the node expired the `planned` authorizations left to expire (its
/// `expired` counter grew by that much since `before`), with a progress line. At the deadline it
/// stops waiting: the verdict then shows the expiries that did not happen.
async fn wait_for_expiries(
    reader: &Reader,
    node: &Running,
    before: &Scrape,
    planned: u64,
    deadline: Instant,
    progress: bool,
) -> Result<(), ProveError> {
    let target = counter(before, EXPIRED) + planned;
    let mut announced = Instant::now();
    loop {
        let expired = counter(&reader.metrics(&node.url).await?, EXPIRED);
        if expired >= target {
            return Ok(());
        }
        let so_far = expired.saturating_sub(target - planned);
        if Instant::now() >= deadline {
            eprintln!("prove: the deadline passed with {so_far} of {planned} expiries");
            return Ok(());
        }
        if progress && announced.elapsed() >= PROGRESS_INTERVAL {
            eprintln!(
                "prove: waiting for the expiries: {so_far} of {planned} authorizations expired \
                 (expires_in {EXPIRES_IN_SECS_MIN} s)"
            );
            announced = Instant::now();
        }
        tokio::time::sleep(EXPIRY_POLL_INTERVAL).await;
    }
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
    accounts: Vec<AccountTotals>,
    faults: FaultCounts,
    invariant_violations: Vec<String>,
}

/// The report of a run: counters during the run are the node's now minus `before`.
fn report(
    config: &ProveConfig,
    sent: &Sent,
    before: &Scrape,
    observed: Observed,
    seconds: f64,
) -> Report {
    let (node, hub) = (&observed.node_metrics, &observed.hub_metrics);
    let during = |name: &str| counter(node, name).saturating_sub(counter(before, name));
    let node_accounts_created = counter(node, ACCOUNTS_CREATED);
    let node_charges_applied = counter(node, CHARGES_APPLIED);
    let node_lifecycle = LifecycleCounts::from_fn(|operation| {
        during(&format!("{LIFECYCLE}{{operation=\"{operation}\"}}"))
    });
    let hub_events_applied = counter(hub, INBOX_APPLIED);
    let stats = &sent.stats;
    let failure_samples = stats
        .failure_samples
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let (lifecycle_sent, lifecycle_duplicates) = lifecycle::operations(&sent.lifecycle);
    let charges = sent.charges.len() as u64;
    let merchant = observed.accounts.iter().find(|a| a.id == MERCHANT);
    Report {
        seed: config.seed,
        tasks: config.tasks,
        mix: if config.lifecycle.is_some() {
            Mix::Lifecycle
        } else {
            Mix::Charges
        },
        logical_operations: charges + lifecycle_sent,
        charges,
        planned: lifecycle::counts(&sent.lifecycle),
        node_lifecycle,
        concurrent_duplicates: sent.charges.iter().filter(|c| c.send.duplicate).count() as u64
            + lifecycle_duplicates,
        attempts: sent.client.attempts_total(),
        replays: during(REPLAYED),
        conflicts_409: during(IN_FLIGHT),
        lost_responses: observed.faults.lost_responses,
        resets: observed.faults.resets,
        delays: observed.faults.delays,
        resent_after_giving_up: stats.resent_after_giving_up.load(Ordering::Relaxed),
        node_charges_applied,
        node_accounts_created,
        hub_events_applied,
        node_events: node_accounts_created + node_charges_applied + node_lifecycle.total(),
        hub_charge_events_applied: hub_events_applied
            .saturating_sub(node_accounts_created + node_lifecycle.total()),
        hub_lifecycle_events_applied: hub_events_applied
            .saturating_sub(node_accounts_created + node_charges_applied),
        inbox_duplicates_dropped: counter(hub, INBOX_DUPLICATE),
        inbox_dead_lettered: counter(hub, INBOX_DEAD_LETTERED),
        relay_crashes: counter(node, RESTARTS),
        merchant_credits_planned: merchant.map_or(0, |m| m.plan.credits_posted),
        node_merchant_credits: merchant.map_or(0, |m| m.node.credits_posted),
        hub_merchant_credits: merchant.map_or(0, |m| m.hub.credits_posted),
        accounts: observed.accounts,
        retry_budget_left: sent.budget.tokens(),
        retry_budget_capacity: sent.budget.capacity(),
        failed_operations: stats.failed.load(Ordering::Relaxed),
        failure_samples,
        invariant_violations: observed.invariant_violations,
        seconds,
    }
}
