//! The unmeasured phases around a run: opening connections, creating the run's accounts, reading
//! them back for the money check, and scraping /metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::task::JoinSet;
use uuid::Uuid;

use super::client::{self, Conn, Target};
use super::plan::{Plan, PlannedAccount};
use super::prom::Scrape;

/// Attempts per account creation or account read before the run is abandoned. Retrying a POST is
/// safe: every attempt carries the same idempotency key.
const ATTEMPTS_MAX: u32 = 10;
/// Pause between attempts; the server asks for 1 s on 409 and 503.
const ATTEMPT_PAUSE: Duration = Duration::from_millis(500);

/// Opens `count` connections at once, each bounded by `timeout`.
pub async fn open_connections(
    target: &Target,
    count: usize,
    timeout: Duration,
) -> Result<Vec<Conn>, String> {
    let mut opening = JoinSet::new();
    for _ in 0..count {
        let target = target.clone();
        opening.spawn(async move { Conn::open(&target, timeout).await });
    }
    let mut conns = Vec::with_capacity(count);
    while let Some(joined) = opening.join_next().await {
        conns.push(joined.map_err(|e| format!("a connect task failed: {e}"))??);
    }
    Ok(conns)
}

/// Runs `job` over `items` with one task per connection, each task taking the next item until
/// none are left. Returns the connections (for reuse) and the results in item order.
async fn fan_out<I, R, F, Fut>(
    conns: Vec<Conn>,
    items: Arc<Vec<I>>,
    job: F,
) -> Result<(Vec<Conn>, Vec<R>), String>
where
    I: Send + Sync + 'static,
    R: Send + 'static,
    F: Fn(Conn, Arc<Vec<I>>, usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = (Conn, Result<R, String>)> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for conn in conns {
        let (items, next, job) = (Arc::clone(&items), Arc::clone(&next), job.clone());
        tasks.spawn(async move {
            let mut conn = conn;
            let mut done = Vec::new();
            // Bounded: every iteration takes one of `items.len()` indexes.
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= items.len() {
                    return (conn, Ok(done));
                }
                let (back, result) = job(conn, Arc::clone(&items), index).await;
                conn = back;
                match result {
                    Ok(value) => done.push((index, value)),
                    Err(error) => return (conn, Err(error)),
                }
            }
        });
    }
    let mut conns = Vec::new();
    let mut results = Vec::with_capacity(items.len());
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        let (conn, outcome) = joined.map_err(|e| format!("a setup task failed: {e}"))?;
        conns.push(conn);
        match outcome {
            Ok(done) => results.extend(done),
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    if let Some(error) = first_error {
        return Err(error);
    }
    results.sort_by_key(|(index, _)| *index);
    Ok((conns, results.into_iter().map(|(_, r)| r).collect()))
}

/// One exchange with retries on the transient answers (409, 503) and on transport errors,
/// reconnecting as needed. `make` builds the request afresh for each attempt.
async fn with_retries(
    mut conn: Conn,
    target: &Target,
    timeout: Duration,
    what: &str,
    make: impl Fn() -> Result<http::Request<http_body_util::Full<bytes::Bytes>>, String>,
) -> (Conn, Result<client::Reply, String>) {
    let mut last = String::new();
    for attempt in 0..ATTEMPTS_MAX {
        if attempt > 0 {
            tokio::time::sleep(ATTEMPT_PAUSE).await;
        }
        if !conn.is_usable() {
            match Conn::open(target, timeout).await {
                Ok(fresh) => conn = fresh,
                Err(error) => {
                    last = error;
                    continue;
                }
            }
        }
        let request = match make() {
            Ok(request) => request,
            Err(error) => return (conn, Err(error)),
        };
        match conn.send(request, timeout).await {
            Ok(reply) if matches!(reply.status, 409 | 503) => {
                last = format!("status {}", reply.status);
            }
            Ok(reply) => return (conn, Ok(reply)),
            Err(error) => {
                // The connection's state is unknown after a failed exchange.
                if let Ok(fresh) = Conn::open(target, timeout).await {
                    conn = fresh;
                }
                last = error;
            }
        }
    }
    (
        conn,
        Err(format!(
            "{what}: no answer after {ATTEMPTS_MAX} attempts ({last})"
        )),
    )
}

/// Creates the run's accounts through the API, `conns.len()` at a time.
pub async fn create_accounts(
    conns: Vec<Conn>,
    target: &Target,
    timeout: Duration,
    plan: &Plan,
) -> Result<Vec<Conn>, String> {
    let accounts = Arc::new(plan.accounts());
    let target = target.clone();
    let job = move |conn: Conn, items: Arc<Vec<PlannedAccount>>, index: usize| {
        let target = target.clone();
        async move {
            let account = &items[index];
            let id = &account.id;
            // One key for all attempts of this account, so a retry after a lost answer is a replay.
            let key = Uuid::new_v4().to_string();
            let body = Plan::account_body(id, account.overdraft_limit);
            let (conn, reply) = with_retries(conn, &target, timeout, id, || {
                client::post(&target, "/v1/accounts", &key, body.clone())
            })
            .await;
            let result = reply.and_then(|reply| match reply.status {
                201 => Ok(()),
                status => Err(format!(
                    "creating account {id} answered {status}: {}",
                    String::from_utf8_lossy(&reply.body)
                )),
            });
            (conn, result)
        }
    };
    let (conns, _) = fan_out(conns, accounts, job).await?;
    Ok(conns)
}

/// Totals over the run's accounts, read back through `GET /v1/accounts/{id}`.
#[derive(Debug, Default, Clone, Copy)]
pub struct MoneyTotals {
    /// Sum of `debits_posted` over the customers (who pay).
    pub customer_debits: u64,
    /// Sum of `credits_posted` over the merchants (who are paid).
    pub merchant_credits: u64,
    /// Money that moved the other way: customers credited or merchants debited. Must be 0,
    /// but for the lifecycle workload's refunds.
    pub wrong_way: u64,
    /// Sum of `debits_pending` and `credits_pending` over every account: holds not yet captured,
    /// voided or expired. `None` if an account answer carries no pending totals.
    pub pending: Option<u64>,
}

pub async fn read_totals(
    conns: Vec<Conn>,
    target: &Target,
    timeout: Duration,
    plan: &Plan,
) -> Result<(Vec<Conn>, MoneyTotals), String> {
    let accounts = Arc::new(plan.accounts());
    let target = target.clone();
    let job = move |conn: Conn, items: Arc<Vec<PlannedAccount>>, index: usize| {
        let target = target.clone();
        async move {
            let id = &items[index].id;
            let path = format!("/v1/accounts/{id}");
            let (conn, reply) =
                with_retries(conn, &target, timeout, id, || client::get(&target, &path)).await;
            let result = reply.and_then(|reply| {
                if reply.status != 200 {
                    return Err(format!(
                        "GET {path} answered {}: {}",
                        reply.status,
                        String::from_utf8_lossy(&reply.body)
                    ));
                }
                let value: Value = serde_json::from_slice(&reply.body)
                    .map_err(|e| format!("GET {path}: not JSON: {e}"))?;
                let field = |name: &str| {
                    value[name]
                        .as_u64()
                        .ok_or_else(|| format!("GET {path}: no integer {name}"))
                };
                // Optional: only the lifecycle check needs them, and says so if they are missing.
                let pending = value["debits_pending"]
                    .as_u64()
                    .zip(value["credits_pending"].as_u64())
                    .and_then(|(debits, credits)| debits.checked_add(credits));
                Ok((field("debits_posted")?, field("credits_posted")?, pending))
            });
            (conn, result)
        }
    };
    let (conns, postings) = fan_out(conns, Arc::clone(&accounts), job).await?;
    let mut totals = MoneyTotals {
        pending: Some(0),
        ..MoneyTotals::default()
    };
    let overflow = || "money totals overflow u64".to_owned();
    for (account, (debits, credits, pending)) in accounts.iter().zip(postings) {
        totals.pending = totals
            .pending
            .zip(pending)
            .and_then(|(sum, more)| sum.checked_add(more));
        let (paid, moved, wrong) = if account.is_customer {
            (&mut totals.customer_debits, debits, credits)
        } else {
            (&mut totals.merchant_credits, credits, debits)
        };
        *paid = paid.checked_add(moved).ok_or_else(overflow)?;
        totals.wrong_way = totals.wrong_way.checked_add(wrong).ok_or_else(overflow)?;
    }
    Ok((conns, totals))
}

/// `GET /metrics`, parsed.
pub async fn scrape(target: &Target, timeout: Duration) -> Result<Scrape, String> {
    // A server killed and started again during the run (a crash test) may still be starting
    // when the load ends: wait for it as every other unmeasured request does.
    let mut attempts = 0;
    let conn = loop {
        attempts += 1;
        match Conn::open(target, timeout).await {
            Ok(conn) => break conn,
            Err(error) if attempts >= ATTEMPTS_MAX => {
                return Err(format!(
                    "GET /metrics: cannot connect after {ATTEMPTS_MAX} attempts ({error})"
                ));
            }
            Err(_) => tokio::time::sleep(ATTEMPT_PAUSE).await,
        }
    };
    let (_, reply) = with_retries(conn, target, timeout, "GET /metrics", || {
        client::get(target, "/metrics")
    })
    .await;
    let reply = reply?;
    if reply.status != 200 {
        return Err(format!("GET /metrics answered {}", reply.status));
    }
    let text = std::str::from_utf8(&reply.body).map_err(|_| "/metrics is not UTF-8".to_owned())?;
    Ok(Scrape::parse(text))
}
