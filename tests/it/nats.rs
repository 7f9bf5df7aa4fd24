//! Replication through a real NATS JetStream server (Debian's nats-server, started by each test
//! on a free loopback port with its own store directory): nodes publish their outbox, a hub
//! started with `onceledger consume` applies it through its inbox.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{
    EXIT_DEADLINE, Endpoint, Server, create_accounts_and_fund, free_loopback_addr, metric, metrics,
};
use crate::replication::{
    assert_mirrors_match, assert_once_in_order, inbox, last_seq, node_id, take_charges,
    wait_applied_through,
};

pub(crate) const STREAM: &str = "ONCELEDGER";
const NATS_START_DEADLINE: Duration = Duration::from_secs(20);

/// A nats-server child process with JetStream on a fixed loopback port, restartable on the same
/// port and store directory.
pub(crate) struct Nats {
    addr: SocketAddr,
    store: tempfile::TempDir,
    child: Option<Child>,
}

impl Nats {
    fn binary() -> PathBuf {
        // .ci/run installs Debian's nats-server; a missing server is a failure, not a skip.
        for candidate in ["/usr/sbin/nats-server", "/usr/bin/nats-server"] {
            if std::path::Path::new(candidate).exists() {
                return candidate.into();
            }
        }
        PathBuf::from("nats-server")
    }

    /// An address for a server not started yet (nodes may be pointed at it first).
    fn planned() -> Nats {
        Nats {
            addr: free_loopback_addr(),
            store: tempfile::Builder::new()
                .prefix("onceledger-nats-")
                .tempdir()
                .expect("temporary directory"),
            child: None,
        }
    }

    pub(crate) async fn start() -> Nats {
        let mut nats = Nats::planned();
        nats.up().await;
        nats
    }

    pub(crate) fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    pub(crate) async fn up(&mut self) {
        assert!(self.child.is_none(), "nats-server already runs");
        let child = Command::new(Nats::binary())
            .args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(self.addr.port().to_string())
            .arg("-sd")
            .arg(self.store.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start nats-server (apt-get install nats-server): {e}")
            });
        self.child = Some(child);
        let started = Instant::now();
        while tokio::net::TcpStream::connect(self.addr).await.is_err() {
            assert!(
                started.elapsed() < NATS_START_DEADLINE,
                "nats-server did not listen on {} within {NATS_START_DEADLINE:?}",
                self.addr
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then a bounded wait for the exit.
    pub(crate) async fn down(&mut self) {
        let mut child = self.child.take().expect("nats-server runs");
        let pid = child.id().to_string();
        let _ =
            crate::harness::run_bounded(Command::new("kill").args(["-TERM", &pid]), EXIT_DEADLINE)
                .await;
        let started = Instant::now();
        while child.try_wait().ok().flatten().is_none() {
            if started.elapsed() > EXIT_DEADLINE {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub(crate) fn publisher_args(nats: &Nats) -> Vec<String> {
    [
        "--nats",
        &nats.url(),
        "--nats-stream",
        STREAM,
        "--replicate-backoff-max",
        "300ms",
    ]
    .map(str::to_owned)
    .to_vec()
}

pub(crate) async fn start_publisher(nats: &Nats, extra: &[&str], env: &[(&str, &str)]) -> Server {
    let mut args = publisher_args(nats);
    args.extend(extra.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start_at(free_loopback_addr(), &args, env).await
}

/// `onceledger consume` on the stream: a hub fed by JetStream.
pub(crate) async fn start_consumer(nats: &Nats, extra: &[&str], env: &[(&str, &str)]) -> Server {
    let url = nats.url();
    let mut args = vec![
        "--nats",
        url.as_str(),
        "--stream",
        STREAM,
        "--replicate-backoff-max",
        "300ms",
    ];
    args.extend_from_slice(extra);
    Server::start_command_at("consume", free_loopback_addr(), &args, env).await
}

/// Publishes one event of `origin` on `subject` as a terminal would (one event per message,
/// `Nats-Msg-Id: <origin>:<seq>`) and waits for JetStream's acknowledgement.
pub(crate) async fn publish_event(
    jetstream: &async_nats::jetstream::Context,
    subject: &str,
    origin: &str,
    event: serde_json::Value,
) {
    let seq = event["seq"].as_u64().expect("seq");
    let body = serde_json::json!({"version": 1, "origin": origin, "events": [event]});
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", format!("{origin}:{seq}").as_str());
    jetstream
        .publish_with_headers(subject.to_owned(), headers, body.to_string().into())
        .await
        .expect("publish")
        .await
        .expect("publish acknowledged");
}

pub(crate) fn inbox_count(text: &str, result: &str) -> f64 {
    metric(text, "onceledger_inbox_events_total", &[("result", result)])
}

pub(crate) async fn assert_delivered_once(
    hub: &Endpoint,
    node: &Endpoint,
    customers: &[String],
    merchant: &str,
) {
    let origin = node_id(node).await;
    let last = last_seq(node).await;
    wait_applied_through(hub, &origin, last).await;
    assert_once_in_order(&inbox(hub, &origin).await, last);
    let mut ids = customers.to_vec();
    ids.push(merchant.to_owned());
    assert_mirrors_match(hub, node, &origin, &ids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_publish_1000_charges_each_and_the_hub_applies_each_once_in_order() {
    // Guards the fleet path: two nodes publish into one stream; a consuming hub applies every
    // event of both exactly once, in per-node order, and its mirrors hold each node's balances.
    let nats = Nats::start().await;
    let hub = start_consumer(&nats, &[], &[]).await;
    let a = start_publisher(&nats, &[], &[]).await;
    let b = start_publisher(&nats, &[], &[]).await;
    let (customers, merchant) = create_accounts_and_fund(&a.endpoint(), 4).await;
    create_accounts_and_fund(&b.endpoint(), 4).await;
    let (ea, eb) = (a.endpoint(), b.endpoint());
    let (ca, cb) = (customers.clone(), customers.clone());
    let (ma, mb) = (merchant.clone(), merchant.clone());
    let first = tokio::spawn(async move { take_charges(&ea, &ca, &ma, 1000).await });
    let second = tokio::spawn(async move { take_charges(&eb, &cb, &mb, 1000).await });
    first.await.expect("node a");
    second.await.expect("node b");
    let hub_ep = hub.endpoint();
    assert_delivered_once(&hub_ep, &a.endpoint(), &customers, &merchant).await;
    assert_delivered_once(&hub_ep, &b.endpoint(), &customers, &merchant).await;
    let total = last_seq(&a.endpoint()).await + last_seq(&b.endpoint()).await;
    let text = metrics(&hub_ep).await;
    assert_eq!(inbox_count(&text, "applied"), total as f64);
    assert_eq!(inbox_count(&text, "duplicate"), 0.0);
    let published = metric(
        &metrics(&a.endpoint()).await,
        "onceledger_replication_events_acknowledged_total",
        &[("sink", "nats")],
    );
    assert_eq!(published, last_seq(&a.endpoint()).await as f64);
    a.check().await;
    b.check().await;
    let summary = hub.check().await;
    assert_eq!(summary["inbox_rows"], total, "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_events_travel_through_jetstream_and_the_hub_mirrors_them() {
    // Guards the NATS path for the payment lifecycle: authorizations captured whole and in part,
    // voided, expired on the terminal's clock and left open, refunds and a transfer are published
    // as version 2 events; a consuming hub applies each once, in order, and its mirrors hold the
    // terminal's four totals. Seconds last 10 ms on the terminal (a test-build knob).
    let nats = Nats::start().await;
    let hub = start_consumer(&nats, &[], &[]).await;
    let node = start_publisher(
        &nats,
        &[],
        &[("ONCELEDGER_FAULT_AUTHORIZATION_SECOND_MS", "10")],
    )
    .await;
    let ep = node.endpoint();
    let (customers, merchant) = create_accounts_and_fund(&ep, 2).await;
    let mut expiring = Vec::new();
    for i in 0..40usize {
        let mut body = serde_json::json!({"source": customers[i % 2], "destination": merchant,
            "amount": 20 + i, "currency": "EUR", "capture": false});
        if i % 5 == 3 {
            body["expires_in"] = serde_json::json!(60);
        }
        let held = ep
            .post("/v1/charges", Some(&format!("auth-{i}")), &body.to_string())
            .await;
        assert_eq!(held.status, 201, "{held}");
        let id = held.json()["id"].as_str().expect("id").to_owned();
        let (path, settle) = match i % 5 {
            0 => (format!("/v1/charges/{id}/capture"), "{}".to_owned()),
            1 => (
                format!("/v1/charges/{id}/capture"),
                r#"{"amount":10}"#.to_owned(),
            ),
            2 => (format!("/v1/charges/{id}/void"), "{}".to_owned()),
            3 => {
                expiring.push(id);
                continue;
            }
            _ => continue,
        };
        let settled = ep.post(&path, Some(&format!("settle-{i}")), &settle).await;
        assert_eq!(settled.status, 200, "{settled}");
        if i % 5 == 0 {
            let refund = serde_json::json!({"charge": id, "amount": 5}).to_string();
            let refunded = ep
                .post("/v1/refunds", Some(&format!("refund-{i}")), &refund)
                .await;
            assert_eq!(refunded.status, 201, "{refunded}");
        }
    }
    let legs = serde_json::json!({"currency": "EUR", "legs": [
        {"source": customers[0], "destination": merchant, "amount": 7},
        {"source": merchant, "destination": customers[1], "amount": 2}]});
    assert_eq!(
        ep.post("/v1/transfers", Some("tr"), &legs.to_string())
            .await
            .status,
        201
    );
    for id in &expiring {
        crate::harness::eventually(
            "a short authorization expires",
            Duration::from_secs(30),
            || {
                let (ep, path) = (ep.clone(), format!("/v1/charges/{id}"));
                async move { (ep.get(&path).await.json()["status"] == "expired").then_some(()) }
            },
        )
        .await;
    }
    assert_delivered_once(&hub.endpoint(), &ep, &customers, &merchant).await;
    let text = metrics(&hub.endpoint()).await;
    assert_eq!(inbox_count(&text, "dead_lettered"), 0.0);
    node.check().await;
    let summary = hub.check().await;
    assert_eq!(summary["mirrored_authorizations_open"], 8, "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_that_dies_before_its_cursor_moved_republishes_and_nothing_doubles() {
    // Guards the publisher crash: the node publishes a batch, JetStream acknowledges it, and
    // the node aborts before moving its cursor. After a restart it publishes the batch again;
    // JetStream's duplicate window (same Nats-Msg-Id) or the hub's inbox drops it, and the hub
    // applies every event exactly once.
    let mut nats = Nats::planned();
    let mut node = start_publisher(
        &nats,
        &["--replicate-batch-max", "50"],
        &[("ONCELEDGER_FAULT_RELAY_CRASH_AFTER", "1")],
    )
    .await;
    let (customers, merchant) = create_accounts_and_fund(&node.endpoint(), 3).await;
    take_charges(&node.endpoint(), &customers, &merchant, 150).await;
    nats.up().await;
    let status = node.wait_crashed(Duration::from_secs(90)).await;
    assert!(!status.success(), "the fault point aborts the node");
    node.set_env(&[]);
    node.restart().await;
    let hub = start_consumer(&nats, &[], &[]).await;
    take_charges(&node.endpoint(), &customers, &merchant, 50).await;
    assert_delivered_once(&hub.endpoint(), &node.endpoint(), &customers, &merchant).await;
    let last = last_seq(&node.endpoint()).await;
    let text = metrics(&hub.endpoint()).await;
    assert_eq!(
        inbox_count(&text, "applied"),
        last as f64,
        "the count stays exact"
    );
    node.check().await;
    hub.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_nats_is_down_nodes_keep_taking_payments_and_catch_up_after() {
    // Guards an outage of the log: nats-server stops; the node keeps answering charges at once;
    // when nats-server is back (same store), publisher and consumer reconnect and the hub
    // catches up with every event once.
    let mut nats = Nats::start().await;
    let hub = start_consumer(&nats, &[], &[]).await;
    let node = start_publisher(&nats, &[], &[]).await;
    let (customers, merchant) = create_accounts_and_fund(&node.endpoint(), 3).await;
    take_charges(&node.endpoint(), &customers, &merchant, 100).await;
    let origin = node_id(&node.endpoint()).await;
    wait_applied_through(&hub.endpoint(), &origin, last_seq(&node.endpoint()).await).await;

    nats.down().await;
    take_charges(&node.endpoint(), &customers, &merchant, 300).await;
    let lag = metric(
        &metrics(&node.endpoint()).await,
        "onceledger_outbox_lag_events",
        &[],
    );
    assert!(lag > 0.0, "the outbox lags while NATS is down");
    nats.up().await;
    assert_delivered_once(&hub.endpoint(), &node.endpoint(), &customers, &merchant).await;
    node.check().await;
    hub.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_dies_after_applying_and_before_acking_gets_redeliveries_the_inbox_drops() {
    // Guards the consumer crash: the hub commits a fetched batch and aborts before
    // acknowledging it. JetStream redelivers those messages to the restarted hub; its inbox
    // counts them as duplicates, and every event is applied exactly once.
    let nats = Nats::start().await;
    let node = start_publisher(&nats, &[], &[]).await;
    let (customers, merchant) = create_accounts_and_fund(&node.endpoint(), 3).await;
    take_charges(&node.endpoint(), &customers, &merchant, 200).await;
    let last = last_seq(&node.endpoint()).await;
    // Everything is in the stream before the hub starts, so its first fetch takes a full batch.
    crate::harness::eventually(
        "the node published everything",
        Duration::from_secs(60),
        || async {
            let text = metrics(&node.endpoint()).await;
            (metric(&text, "onceledger_outbox_lag_events", &[]) == 0.0).then_some(())
        },
    )
    .await;
    let mut hub = start_consumer(
        &nats,
        &[],
        &[("ONCELEDGER_FAULT_CONSUMER_CRASH_AFTER", "1")],
    )
    .await;
    let status = hub.wait_crashed(Duration::from_secs(90)).await;
    assert!(!status.success(), "the fault point aborts the hub");
    hub.set_env(&[]);
    hub.restart().await;
    assert_delivered_once(&hub.endpoint(), &node.endpoint(), &customers, &merchant).await;
    // This incarnation applies what the first had not committed; what the first committed but
    // never acknowledged comes again after the ack wait, and the inbox drops it.
    let hub_ep = hub.endpoint();
    let duplicates = crate::harness::eventually(
        "the unacknowledged messages are redelivered",
        Duration::from_secs(60),
        || async {
            let text = metrics(&hub_ep).await;
            let (applied, duplicates) = (
                inbox_count(&text, "applied"),
                inbox_count(&text, "duplicate"),
            );
            (applied + duplicates >= last as f64).then_some((applied, duplicates))
        },
    )
    .await;
    assert!(
        duplicates.1 > 0.0,
        "the first incarnation committed something: {duplicates:?}"
    );
    assert_eq!(duplicates.0 + duplicates.1, last as f64, "{duplicates:?}");
    node.check().await;
    let summary = hub.check().await;
    assert_eq!(summary["inbox_rows"], last, "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_hub_cannot_apply_is_dead_lettered_after_n_deliveries() {
    // Guards dead letters on the JetStream path: a charge naming an account the hub never saw
    // is NAKed and redelivered; at the --dead-letter-after'th delivery it is parked, and the
    // event behind it (which had to wait) is applied.
    let nats = Nats::start().await;
    let hub = start_consumer(&nats, &["--dead-letter-after", "3"], &[]).await;
    let client = async_nats::connect(nats.url())
        .await
        .expect("connect to nats");
    let jetstream = async_nats::jetstream::new(client);
    // The hub's consumer creates the stream once it is connected.
    crate::harness::eventually(
        "the hub created the stream",
        Duration::from_secs(30),
        || async { jetstream.get_stream(STREAM).await.ok().map(|_| ()) },
    )
    .await;
    let origin = "rogue-till";
    let poison = crate::replication::charge_event(1, 1, "ghost", "shop", 5);
    let account = crate::replication::account_event(2, "shop");
    for event in [poison, account] {
        // The subject of builds before partitions: a hub of one partition takes every subject.
        publish_event(
            &jetstream,
            &format!("onceledger.events.{origin}"),
            origin,
            event,
        )
        .await;
    }
    let state = crate::replication::wait_applied_through(&hub.endpoint(), origin, 2).await;
    assert_eq!(state["events_parked"], 1, "{state}");
    assert_eq!(state["events_applied"], 1, "{state}");
    let letters = hub.endpoint().get("/v1/dead-letters").await.json();
    assert_eq!(
        letters["dead_letters"][0]["event_id"],
        format!("{origin}:1"),
        "{letters}"
    );
    assert_eq!(letters["dead_letters"][0]["attempts"], 3, "{letters}");
    let text = metrics(&hub.endpoint()).await;
    assert_eq!(inbox_count(&text, "dead_lettered"), 1.0);
    let nacked = metric(
        &text,
        "onceledger_nats_consumer_messages_total",
        &[("result", "nacked")],
    );
    assert!(
        nacked >= 2.0,
        "the poison event was NAKed before it was parked: {nacked}"
    );
    hub.check().await;
}
