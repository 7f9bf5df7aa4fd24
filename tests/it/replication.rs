//! The replicator end to end: a terminal node and a hub, both real processes on loopback.
//! Every test ends with `onceledger check` on both stores, which verifies the hub's inbox (dense
//! per origin, each event once) and that its mirrors balance.

use std::net::SocketAddr;
use std::time::Duration;

use onceledger_core::ledger::{AccountId, EntryType, TenantId};
use onceledger_core::store::Store;
use onceledger_core::store::history::{Cursor, ListError, ListQuery, Order, Page, StatementEntry};
use serde_json::{Value, json};

use crate::harness::{
    Endpoint, Server, assert_problem, charge_ok, create_account, create_accounts_and_fund,
    eventually, free_loopback_addr, key, metric, metrics,
};

/// Replication in these tests is small and local; this bounds every wait for it.
const CATCH_UP_DEADLINE: Duration = Duration::from_secs(90);
/// Short backoff ceiling, so a node notices a hub that came up without a long wait.
const TEST_BACKOFF: &str = "300ms";

fn upstream_args(hub: SocketAddr) -> Vec<String> {
    vec![
        "--upstream".into(),
        format!("http://{hub}"),
        "--replicate-backoff-max".into(),
        TEST_BACKOFF.into(),
    ]
}

/// Where a terminal reads its hub's replicator token from (`--upstream-token-file`), by hub
/// address. The file appears once the hub is up and provisioned; until then the terminal's
/// deliveries fail and back off, as they do while the hub is down.
fn hub_token_file(hub: SocketAddr) -> std::path::PathBuf {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| tempfile::tempdir().expect("a temporary directory"));
    dir.path().join(format!("hub-{}.token", hub.port()))
}

/// Starts a hub and gives its terminals a replicator token of it (through the admin endpoint).
pub(crate) async fn start_hub_at(addr: SocketAddr, args: &[&str], env: &[(&str, &str)]) -> Server {
    let hub = Server::start_at(addr, args, env).await;
    let token = crate::harness::make_token(&hub.endpoint(), "default", "replicator").await;
    let path = hub_token_file(addr);
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, format!("{token}\n")).expect("write the token file");
    std::fs::rename(&temporary, &path).expect("move the token file in place");
    hub
}

pub(crate) async fn start_terminal(
    hub: SocketAddr,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Server {
    let mut args = upstream_args(hub);
    args.push("--upstream-token-file".into());
    args.push(hub_token_file(hub).display().to_string());
    args.extend(extra.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start_at(free_loopback_addr(), &args, env).await
}

/// The node id a server reports in /healthz.
pub(crate) async fn node_id(ep: &Endpoint) -> String {
    let health = ep.get("/healthz").await;
    assert_eq!(health.status, 200, "{health}");
    health.json()["node_id"]
        .as_str()
        .unwrap_or_else(|| panic!("/healthz names no node_id: {health}"))
        .to_owned()
}

/// The last seq of a node's outbox.
pub(crate) async fn last_seq(ep: &Endpoint) -> u64 {
    let page = ep.get("/v1/events?limit=1").await.json();
    page["held"]["last"]
        .as_u64()
        .unwrap_or_else(|| panic!("events page without held.last: {page}"))
}

/// The hub's view of one origin, if it has taken any of its events.
async fn origin_state(hub: &Endpoint, origin: &str) -> Option<Value> {
    let page = hub.get("/v1/replication/origins").await.json();
    page["origins"]
        .as_array()?
        .iter()
        .find(|o| o["node"] == origin)
        .cloned()
}

/// Waits until the hub applied (or parked) every event of `origin` up to `through`.
pub(crate) async fn wait_applied_through(hub: &Endpoint, origin: &str, through: u64) -> Value {
    eventually(
        &format!("hub applies {origin} through {through}"),
        CATCH_UP_DEADLINE,
        || async {
            let state = origin_state(hub, origin).await?;
            (state["applied_through"].as_u64()? >= through).then_some(state)
        },
    )
    .await
}

/// Every inbox row of `origin` on the hub, in seq order.
pub(crate) async fn inbox(hub: &Endpoint, origin: &str) -> Vec<Value> {
    let mut rows = Vec::new();
    let mut after = 0;
    loop {
        let page = hub
            .get(&format!(
                "/v1/replication/origins/{origin}/inbox?after={after}&limit=1000"
            ))
            .await;
        assert_eq!(page.status, 200, "{page}");
        let page = page.json();
        let batch = page["inbox"].as_array().cloned().unwrap_or_default();
        if batch.is_empty() {
            return rows;
        }
        after = page["next_after"].as_u64().expect("next_after");
        rows.extend(batch);
    }
}

/// Every event 1..=last arrived once and took effect in sequence order.
pub(crate) fn assert_once_in_order(rows: &[Value], last: u64) {
    assert_eq!(rows.len() as u64, last, "one inbox row per event");
    let mut previous_index = 0;
    for (row, seq) in rows.iter().zip(1u64..) {
        assert_eq!(row["seq"], seq, "inbox rows are dense: {row}");
        assert_eq!(row["outcome"], "applied", "{row}");
        let index = row["applied_index"].as_u64().expect("applied_index");
        assert!(
            index > previous_index,
            "event {seq} took effect before event {}: {row}",
            seq - 1
        );
        previous_index = index;
    }
}

/// The hub's mirror of each account equals the account on the terminal, every field of it (the
/// four totals, balance and available included).
pub(crate) async fn assert_mirrors_match(
    hub: &Endpoint,
    terminal: &Endpoint,
    origin: &str,
    ids: &[String],
) {
    for id in ids {
        let local = terminal.get(&format!("/v1/accounts/{id}")).await.json();
        let mirror = hub
            .get(&format!("/v1/replication/origins/{origin}/accounts/{id}"))
            .await;
        assert_eq!(mirror.status, 200, "mirror of {id}: {mirror}");
        let mirror = mirror.json();
        for field in crate::accounts::ACCOUNT_FIELDS {
            assert_eq!(mirror[field], local[field], "{field} of {id}");
        }
    }
}

/// `count` charges of 1 from customers to the merchant, sent sequentially.
pub(crate) async fn take_charges(
    ep: &Endpoint,
    customers: &[String],
    merchant: &str,
    count: usize,
) {
    for i in 0..count {
        charge_ok(ep, &customers[i % customers.len()], merchant, 1, "EUR").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_terminal_delivers_every_charge_once_and_in_order_when_the_hub_comes_up() {
    // Guards the offline terminal: the hub is down while the terminal takes 1,000 charges (it
    // keeps answering at once); when the hub comes up every event arrives once, in order, and
    // the hub's mirrors hold the terminal's balances.
    let hub_addr = free_loopback_addr();
    let terminal = start_terminal(hub_addr, &[], &[]).await;
    let ep = terminal.endpoint();
    let (customers, merchant) = create_accounts_and_fund(&ep, 4).await;
    take_charges(&ep, &customers, &merchant, 1000).await;
    let last = last_seq(&ep).await;
    let lag = metric(&metrics(&ep).await, "onceledger_outbox_lag_events", &[]);
    assert!(lag > 0.0, "with the hub down the outbox lags");

    let hub = start_hub_at(hub_addr, &[], &[]).await;
    let origin = node_id(&ep).await;
    let state = wait_applied_through(&hub.endpoint(), &origin, last).await;
    assert_eq!(state["events_applied"], last, "{state}");
    assert_once_in_order(&inbox(&hub.endpoint(), &origin).await, last);
    let mut ids = customers.clone();
    ids.push(merchant.clone());
    assert_mirrors_match(&hub.endpoint(), &ep, &origin, &ids).await;

    let hub_metrics = metrics(&hub.endpoint()).await;
    assert_eq!(
        metric(
            &hub_metrics,
            "onceledger_inbox_events_total",
            &[("result", "applied")]
        ),
        last as f64
    );
    // The terminal's cursor reaches the end: its lag drains to zero.
    eventually("terminal lag drains", CATCH_UP_DEADLINE, || async {
        let text = metrics(&ep).await;
        (metric(&text, "onceledger_outbox_lag_events", &[]) == 0.0).then_some(())
    })
    .await;
    let sent = metric(
        &metrics(&ep).await,
        "onceledger_replication_events_acknowledged_total",
        &[("sink", "hub")],
    );
    assert_eq!(sent, last as f64, "every event acknowledged once");
    terminal.check().await;
    let summary = hub.check().await;
    assert_eq!(summary["inbox_rows"], last, "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_offline_for_1000_authorizations_lifecycles_delivers_them_all() {
    // Guards the offline terminal with the payment lifecycle: with the hub down, 1,000
    // authorizations live their whole lives on the terminal (captured whole or in part, voided,
    // expired on the terminal's clock, some refunded, some left open) next to transfers; when the
    // hub comes up it applies every event once and in order, and every mirrored account ends with
    // the terminal's four totals, pending included. Seconds last 10 ms (a test-build knob).
    const AUTHORIZATIONS: usize = 1000;
    let hub_addr = free_loopback_addr();
    let env = [("ONCELEDGER_FAULT_AUTHORIZATION_SECOND_MS", "10")];
    let terminal = start_terminal(hub_addr, &[], &env).await;
    let ep = terminal.endpoint();
    let (customers, merchant) = create_accounts_and_fund(&ep, 4).await;
    create_account(&ep, "platform", "EUR", Some(0)).await;
    let mut short_lived = Vec::new();
    for i in 0..AUTHORIZATIONS {
        let source = &customers[i % customers.len()];
        let amount = 10 + (i % 50) as i64;
        let mut body = json!({"source": source, "destination": merchant, "amount": amount,
                              "currency": "EUR", "capture": false});
        if i % 5 == 3 {
            body["expires_in"] = json!(60);
        }
        let held = ep
            .post("/v1/charges", Some(&format!("auth-{i}")), &body.to_string())
            .await;
        assert_eq!(held.status, 201, "{held}");
        let id = held.json()["id"].as_str().expect("id").to_owned();
        let path = |what: &str| format!("/v1/charges/{id}/{what}");
        let settled = match i % 5 {
            0 => {
                ep.post(&path("capture"), Some(&format!("cap-{i}")), "{}")
                    .await
            }
            1 => {
                let part = json!({"amount": amount / 2}).to_string();
                ep.post(&path("capture"), Some(&format!("cap-{i}")), &part)
                    .await
            }
            2 => {
                ep.post(&path("void"), Some(&format!("void-{i}")), "{}")
                    .await
            }
            3 => {
                short_lived.push(id.clone());
                continue;
            }
            // Left open: the hub must hold it pending too.
            _ => continue,
        };
        assert_eq!(settled.status, 200, "{settled}");
        if i % 10 == 0 {
            let refund = json!({"charge": id, "amount": amount / 3}).to_string();
            let refunded = ep
                .post("/v1/refunds", Some(&format!("ref-{i}")), &refund)
                .await;
            assert_eq!(refunded.status, 201, "{refunded}");
        }
        if i % 25 == 0 {
            let legs = json!({"currency": "EUR", "legs": [
                {"source": source, "destination": merchant, "amount": 3},
                {"source": merchant, "destination": "platform", "amount": 1}]});
            let moved = ep
                .post("/v1/transfers", Some(&format!("tr-{i}")), &legs.to_string())
                .await;
            assert_eq!(moved.status, 201, "{moved}");
        }
    }
    for id in &short_lived {
        eventually("a short authorization expires", CATCH_UP_DEADLINE, || {
            let (ep, path) = (ep.clone(), format!("/v1/charges/{id}"));
            async move { (ep.get(&path).await.json()["status"] == "expired").then_some(()) }
        })
        .await;
    }
    let last = last_seq(&ep).await;
    let lag = metric(&metrics(&ep).await, "onceledger_outbox_lag_events", &[]);
    assert!(lag > 0.0, "with the hub down the outbox lags");

    let hub = start_hub_at(hub_addr, &[], &[]).await;
    let origin = node_id(&ep).await;
    let state = wait_applied_through(&hub.endpoint(), &origin, last).await;
    assert_eq!(state["events_applied"], last, "{state}");
    assert_once_in_order(&inbox(&hub.endpoint(), &origin).await, last);
    let mut ids = customers.clone();
    ids.extend([merchant.clone(), "platform".to_owned()]);
    assert_mirrors_match(&hub.endpoint(), &ep, &origin, &ids).await;
    let merchant_mirror = hub
        .endpoint()
        .get(&format!(
            "/v1/replication/origins/{origin}/accounts/{merchant}"
        ))
        .await
        .json();
    assert!(
        merchant_mirror["credits_pending"]
            .as_i64()
            .is_some_and(|p| p > 0),
        "the open authorizations are pending on the hub too: {merchant_mirror}"
    );
    terminal.check().await;
    let summary = hub.check().await;
    assert_eq!(summary["inbox_rows"], last, "{summary}");
    assert_eq!(
        summary["mirrored_authorizations_open"],
        (AUTHORIZATIONS / 5) as u64,
        "{summary}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_crash_between_delivery_and_cursor_update_resends_and_the_inbox_drops_it() {
    // Guards the relay crash: the terminal aborts right after the hub acknowledged its first
    // batch and before its cursor moved. After a restart it sends that batch again; the hub's
    // inbox counts it as duplicates, and every event is applied exactly once.
    const BATCH: u64 = 50;
    let hub_addr = free_loopback_addr();
    let batch = BATCH.to_string();
    let mut terminal = start_terminal(
        hub_addr,
        &["--replicate-batch-max", &batch],
        &[("ONCELEDGER_FAULT_RELAY_CRASH_AFTER", "1")],
    )
    .await;
    let ep = terminal.endpoint();
    let origin = node_id(&ep).await;
    let (customers, merchant) = create_accounts_and_fund(&ep, 3).await;
    take_charges(&ep, &customers, &merchant, 200).await;
    let first_part = last_seq(&ep).await;
    assert!(first_part > BATCH);

    // The hub comes up; the terminal delivers one full batch and dies before moving its cursor.
    let hub = start_hub_at(hub_addr, &[], &[]).await;
    let status = terminal.wait_crashed(CATCH_UP_DEADLINE).await;
    assert!(!status.success(), "the fault point aborts the process");
    let state = origin_state(&hub.endpoint(), &origin)
        .await
        .expect("the hub took the batch");
    assert_eq!(state["applied_through"], BATCH, "{state}");

    terminal.set_env(&[]);
    terminal.restart().await;
    let ep = terminal.endpoint();
    take_charges(&ep, &customers, &merchant, 100).await;
    let last = last_seq(&ep).await;
    wait_applied_through(&hub.endpoint(), &origin, last).await;

    let hub_metrics = metrics(&hub.endpoint()).await;
    assert_eq!(
        metric(
            &hub_metrics,
            "onceledger_inbox_events_total",
            &[("result", "duplicate")]
        ),
        BATCH as f64,
        "exactly the batch whose cursor update was lost came twice"
    );
    assert_eq!(
        metric(
            &hub_metrics,
            "onceledger_inbox_events_total",
            &[("result", "applied")]
        ),
        last as f64,
        "and every event was applied once"
    );
    assert_once_in_order(&inbox(&hub.endpoint(), &origin).await, last);
    let mut ids = customers.clone();
    ids.push(merchant.clone());
    assert_mirrors_match(&hub.endpoint(), &ep, &origin, &ids).await;
    terminal.check().await;
    hub.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_of_18000_events_drains_under_a_rate_limit_while_the_hub_serves() {
    // Guards the catch-up rate limit: 18,000 events wait on the terminal; with
    // --replicate-rate they drain to the hub in order and complete, while the hub keeps
    // answering its own API. Counts and order are asserted, not times.
    const EVENTS: u64 = 18_000;
    let hub_addr = free_loopback_addr();
    let terminal = start_terminal(hub_addr, &["--replicate-rate", "6000"], &[]).await;
    let ep = terminal.endpoint();
    let (customers, merchant) = create_accounts_and_fund(&ep, 8).await;
    let accounts_events = last_seq(&ep).await;
    let charges = (EVENTS - accounts_events) as usize;
    // Concurrent senders so the backlog builds quickly; each charge is 1 cent.
    let senders = 16;
    let mut tasks = Vec::new();
    for s in 0..senders {
        let ep = ep.clone();
        let customers = customers.clone();
        let merchant = merchant.clone();
        let share = charges / senders + usize::from(s < charges % senders);
        tasks.push(tokio::spawn(async move {
            for i in 0..share {
                charge_ok(
                    &ep,
                    &customers[(s + i) % customers.len()],
                    &merchant,
                    1,
                    "EUR",
                )
                .await;
            }
        }));
    }
    for task in tasks {
        task.await.expect("sender task");
    }
    assert_eq!(last_seq(&ep).await, EVENTS);

    let hub = start_hub_at(hub_addr, &[], &[]).await;
    let hub_ep = hub.endpoint();
    let origin = node_id(&ep).await;
    // While the backlog drains, the hub serves its own API.
    let own = hub_ep
        .post(
            "/v1/accounts",
            Some(&key("hub-own")),
            &json!({"id": "hub-own", "currency": "EUR"}).to_string(),
        )
        .await;
    assert_eq!(own.status, 201, "{own}");
    wait_applied_through(&hub_ep, &origin, EVENTS).await;
    assert_once_in_order(&inbox(&hub_ep, &origin).await, EVENTS);
    let mut ids = customers.clone();
    ids.push(merchant.clone());
    assert_mirrors_match(&hub_ep, &ep, &origin, &ids).await;
    terminal.check().await;
    let summary = hub.check().await;
    assert_eq!(summary["inbox_rows"], EVENTS, "{summary}");
    assert_eq!(summary["accounts"], 1, "the hub's own account: {summary}");
}

/// A batch as an origin node would send it, for the poison test.
pub(crate) fn account_event(seq: u64, id: &str) -> Value {
    json!({"seq": seq, "created_at_ms": 1_700_000_000_000u64, "body": {"account_created": {
        "id": id, "currency": [69, 85, 82], "overdraft_limit": null,
        "debits_posted": 0, "credits_posted": 0, "debits_pending": 0, "credits_pending": 0,
        "created_at_ms": 1_700_000_000_000u64}}})
}

pub(crate) fn charge_event(
    seq: u64,
    number: u64,
    source: &str,
    destination: &str,
    amount: u64,
) -> Value {
    json!({"seq": seq, "created_at_ms": 1_700_000_000_000u64, "body": {"charge_succeeded": {
        "number": number, "source": source, "destination": destination, "amount": amount,
        "currency": [69, 85, 82], "metadata": {}, "created_at_ms": 1_700_000_000_000u64,
        "event_seq": seq}}})
}

async fn send_batch(hub: &Endpoint, origin: &str, events: &[Value]) -> Value {
    let body = json!({"version": 1, "origin": origin, "events": events}).to_string();
    let resp = hub
        .post_raw(
            "/v1/replication/events",
            &[("content-type", b"application/json")],
            body.as_bytes(),
        )
        .await;
    assert_eq!(resp.status, 200, "{resp}");
    resp.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_is_dead_lettered_after_n_attempts_and_a_redrive_applies_it_once() {
    // Guards dead letters: an event the hub cannot apply (a charge to an account it never saw)
    // is refused, retried, and parked after --dead-letter-after attempts; the events behind it
    // keep flowing. Once the cause is fixed (the account's creation arrives), a redrive applies
    // it once; replaying the redrive or redriving again changes nothing.
    let hub = Server::start_with(&["--dead-letter-after", "3"]).await;
    let ep = hub.endpoint();
    let origin = "terminal-7";
    let first = [
        account_event(1, "alice"),
        charge_event(2, 1, "alice", "bob", 250),
        account_event(3, "carol"),
    ];
    for attempt in 1..=2u64 {
        let ack = send_batch(&ep, origin, &first[(attempt.min(2) as usize - 1)..]).await;
        assert_eq!(ack["applied_through"], 1, "attempt {attempt}: {ack}");
        assert_eq!(ack["refused"]["seq"], 2, "{ack}");
        assert_eq!(ack["refused"]["attempts"], attempt, "{ack}");
        assert!(
            ack["refused"]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("bob")),
            "{ack}"
        );
    }
    let ack = send_batch(&ep, origin, &first[1..]).await;
    assert_eq!(
        ack["applied_through"], 3,
        "parked, and carol behind it applied: {ack}"
    );
    assert_eq!(ack["dead_lettered"], 1, "{ack}");
    assert_eq!(ack["applied"], 1, "{ack}");
    let ack = send_batch(&ep, origin, &[account_event(4, "bob")]).await;
    assert_eq!(ack["applied_through"], 4, "{ack}");

    let letters = ep.get("/v1/dead-letters").await.json();
    let letter = &letters["dead_letters"][0];
    assert_eq!(letter["status"], "parked", "{letters}");
    assert_eq!(letter["event_id"], format!("{origin}:2"), "{letters}");
    assert_eq!(letter["attempts"], 3, "{letters}");
    let id = letter["id"].as_u64().expect("id");
    let mirror = |who: &'static str| {
        let ep = ep.clone();
        async move {
            let resp = ep
                .get(&format!("/v1/replication/origins/{origin}/accounts/{who}"))
                .await;
            assert_eq!(resp.status, 200, "{resp}");
            resp.json()["balance"].as_i64().expect("balance")
        }
    };
    assert_eq!((mirror("alice").await, mirror("bob").await), (0, 0));

    let redrive_key = key("redrive");
    let path = format!("/v1/dead-letters/{id}/redrive");
    let redriven = ep.post(&path, Some(&redrive_key), "").await;
    assert_eq!(redriven.status, 200, "{redriven}");
    assert_eq!(redriven.json()["status"], "redriven", "{redriven}");
    assert_eq!((mirror("alice").await, mirror("bob").await), (-250, 250));
    let replay = ep.post(&path, Some(&redrive_key), "").await;
    assert!(replay.replayed(), "{replay}");
    assert_eq!(replay.body, redriven.body);
    let again = ep.post(&path, Some(&key("redrive")), "{}").await;
    assert_eq!(again.status, 200, "{again}");
    assert_eq!((mirror("alice").await, mirror("bob").await), (-250, 250));
    let unknown = ep
        .post("/v1/dead-letters/999/redrive", Some(&key("redrive")), "")
        .await;
    assert_problem(&unknown, 404, "dead-letter-not-found");

    let text = metrics(&ep).await;
    let inbox = |result| {
        metric(
            &text,
            "onceledger_inbox_events_total",
            &[("result", result)],
        )
    };
    assert_eq!(inbox("dead_lettered"), 1.0);
    assert_eq!(
        inbox("applied"),
        4.0,
        "alice, carol, bob and the redriven charge"
    );
    let summary = hub.check().await;
    assert_eq!(summary["dead_letters_parked"], 0, "{summary}");
    assert_eq!(summary["mirrored_charges"], 1, "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_refuses_gaps_and_acknowledges_duplicates_without_effect() {
    // Guards the inbox rules at the protocol level: a batch that starts past the next expected
    // seq changes nothing and names where to resend from; a batch sent twice applies once.
    let hub = Server::start().await;
    let ep = hub.endpoint();
    let origin = "terminal-9";
    let gap = send_batch(&ep, origin, &[account_event(2, "a2")]).await;
    assert_eq!(
        (gap["applied_through"].clone(), gap["applied"].clone()),
        (json!(0), json!(0))
    );
    let batch = [account_event(1, "a1"), account_event(2, "a2")];
    let first = send_batch(&ep, origin, &batch).await;
    assert_eq!(first["applied"], 2, "{first}");
    let again = send_batch(&ep, origin, &batch).await;
    assert_eq!(
        (
            again["applied"].clone(),
            again["duplicates"].clone(),
            again["applied_through"].clone()
        ),
        (json!(0), json!(2), json!(2)),
        "{again}"
    );
    let malformed = ep
        .post_raw(
            "/v1/replication/events",
            &[("content-type", b"application/json")],
            br#"{"version":1,"origin":"x","events":[]}"#,
        )
        .await;
    assert_problem(&malformed, 400, "invalid-request");
    let summary = hub.check().await;
    assert_eq!(summary["inbox_rows"], 2, "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_id_is_stable_and_settable_only_on_a_fresh_directory() {
    // Guards node identity: --node-id names a fresh directory's node, /healthz shows it, a
    // restart keeps it, and a different --node-id on that directory is refused at start.
    let mut server = Server::start_with(&["--node-id", "till-04"]).await;
    assert_eq!(node_id(&server.endpoint()).await, "till-04");
    server.restart().await;
    assert_eq!(node_id(&server.endpoint()).await, "till-04");
    let data_dir = server.data_dir().to_owned();
    server.terminate().await;
    let refused = crate::harness::run_bounded(
        std::process::Command::new(crate::harness::BIN)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--node-id",
                "other",
                "--data-dir",
            ])
            .arg(&data_dir),
        crate::harness::EXIT_DEADLINE,
    )
    .await;
    assert!(!refused.status.success());
    assert!(refused.stderr.contains("till-04"), "{}", refused.stderr);
}

/// Every line of a statement, oldest first, following `has_more` a page of 7 at a time.
fn whole_statement(
    read: impl Fn(&ListQuery) -> Result<Page<StatementEntry>, ListError>,
) -> Vec<StatementEntry> {
    let mut lines: Vec<StatementEntry> = Vec::new();
    let mut query = ListQuery {
        limit: 7,
        order: Order::OldestFirst,
        cursor: None,
    };
    loop {
        let page = read(&query).expect("a statement page");
        lines.extend(page.data);
        if !page.has_more {
            return lines;
        }
        let last = lines.last().expect("a page with more has lines");
        query.cursor = Some(Cursor::StartingAfter(last.id()));
    }
}

/// POSTs `body` to `path` with a fresh key and returns the 2xx answer.
async fn lifecycle_ok(ep: &Endpoint, path: &str, body: Value) -> Value {
    let resp = ep.post(path, Some(&key("lc")), &body.to_string()).await;
    assert!(matches!(resp.status, 200 | 201), "{path} {body}: {resp}");
    resp.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_mirrors_captures_voids_expiries_refunds_and_transfers_as_the_terminal_decided() {
    // Guards issue 19's replication: a terminal's authorizations captured whole and in part,
    // voided, expired by the terminal's own clock (seconds last 10 ms there, a test build's
    // knob) and left open, its refunds and a two-leg transfer reach the hub once, in order,
    // through wire version 2; every mirrored account ends with the terminal's four totals, and
    // `onceledger check` is clean on both.
    let hub_addr = free_loopback_addr();
    let mut hub = start_hub_at(hub_addr, &[], &[]).await;
    let env = [("ONCELEDGER_FAULT_AUTHORIZATION_SECOND_MS", "10")];
    let mut terminal = start_terminal(hub_addr, &[], &env).await;
    let ep = terminal.endpoint();
    create_account(&ep, "bank", "EUR", None).await;
    for id in ["alice", "shop", "fee"] {
        create_account(&ep, id, "EUR", Some(0)).await;
    }
    let sale = charge_ok(&ep, "bank", "alice", 10_000, "EUR").await;
    let authorize = |amount: i64, expires_in: i64| {
        let ep = ep.clone();
        async move {
            let body = json!({"source": "alice", "destination": "shop", "amount": amount,
                              "currency": "EUR", "capture": false, "expires_in": expires_in});
            let held = lifecycle_ok(&ep, "/v1/charges", body).await;
            assert_eq!(held["status"], "authorized", "{held}");
            held["id"].as_str().expect("an id").to_owned()
        }
    };
    // 30 days of 10 ms seconds: over 7 hours, open for the whole test.
    let long = 2_592_000;
    let whole = authorize(3000, long).await;
    let part = authorize(2000, long).await;
    let voided = authorize(1000, long).await;
    let expiring = authorize(700, 60).await;
    authorize(400, long).await;
    lifecycle_ok(&ep, &format!("/v1/charges/{whole}/capture"), json!({})).await;
    let partly = json!({"amount": 500});
    lifecycle_ok(&ep, &format!("/v1/charges/{part}/capture"), partly).await;
    lifecycle_ok(&ep, &format!("/v1/charges/{voided}/void"), json!({})).await;
    eventually(
        "the terminal expires its authorization",
        CATCH_UP_DEADLINE,
        || {
            let (ep, path) = (ep.clone(), format!("/v1/charges/{expiring}"));
            async move { (ep.get(&path).await.json()["status"] == "expired").then_some(()) }
        },
    )
    .await;
    let sale_id = sale["id"].as_str().expect("an id");
    for body in [
        json!({"charge": whole, "amount": 1000}),
        json!({"charge": sale_id, "amount": 2500}),
        json!({"charge": part}),
    ] {
        lifecycle_ok(&ep, "/v1/refunds", body).await;
    }
    let legs = json!([{"source": "shop", "destination": "fee", "amount": 300},
                      {"source": "alice", "destination": "shop", "amount": 100}]);
    let transfer = json!({"currency": "EUR", "legs": legs});
    lifecycle_ok(&ep, "/v1/transfers", transfer).await;

    let last = last_seq(&ep).await;
    let origin = node_id(&ep).await;
    wait_applied_through(&hub.endpoint(), &origin, last).await;
    assert_once_in_order(&inbox(&hub.endpoint(), &origin).await, last);
    let ids = ["bank", "alice", "shop", "fee"].map(String::from);
    assert_mirrors_match(&hub.endpoint(), &ep, &origin, &ids).await;
    let alice = ep.get("/v1/accounts/alice").await.json();
    assert_eq!(
        alice["debits_pending"], 400,
        "the open authorization: {alice}"
    );

    // The hub's statement of each account is the terminal's, line for line (read from both
    // stores, stopped): the same postings at the same seqs and legs, numbers, times and totals
    // after each; only a settlement's entry number, which the wire does not carry, is 0.
    terminal.terminate().await;
    hub.terminate().await;
    let (node_store, hub_store) = (
        Store::open(terminal.data_dir()).expect("the terminal's store"),
        Store::open(hub.data_dir()).expect("the hub's store"),
    );
    for name in ids {
        let account = AccountId::parse(&name).expect("an id");
        let mut expected =
            whole_statement(|q| node_store.statement(TenantId::DEFAULT, &account, q));
        for entry in &mut expected {
            if matches!(
                entry.line.entry_type,
                EntryType::Capture | EntryType::Release
            ) {
                entry.line.entry = 0;
            }
        }
        let mirrored = whole_statement(|q| hub_store.mirrored_statement(&origin, &account, q));
        assert!(!mirrored.is_empty(), "{name} has postings");
        assert_eq!(mirrored, expected, "the statement of {name}");
    }
    drop((node_store, hub_store));

    terminal.check().await;
    let summary = hub.check().await;
    assert_eq!(summary["mirrored_charges"], 6, "{summary}");
    assert_eq!(summary["mirrored_authorizations_open"], 1, "{summary}");
    assert_eq!(summary["mirrored_refunds"], 3, "{summary}");
    assert_eq!(summary["mirrored_transfers"], 1, "{summary}");
    assert_eq!(summary["dead_letters_parked"], 0, "{summary}");
}
