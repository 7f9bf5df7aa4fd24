//! A fleet on NATS JetStream split into partitions (API.md, "Fleets on NATS JetStream: partitions
//! of origins"): terminals publish with `--nats-partitions N`, each hub runs
//! `consume --partition K/N` and applies exactly the terminals of its partition, each event once
//! and in order, without ever waiting (NAKing) for an event another hub holds. Real nats-server
//! and real `onceledger` processes on loopback (helpers of `nats`).

use std::time::Duration;

use serde_json::Value;

use crate::harness::{Endpoint, Server, create_accounts_and_fund, eventually, metric, metrics};
use crate::nats::{
    Nats, STREAM, assert_delivered_once, inbox_count, publish_event, publisher_args,
    start_consumer, start_publisher,
};
use crate::replication::{
    account_event, assert_mirrors_match, assert_once_in_order, inbox, last_seq, take_charges,
    wait_applied_through,
};

/// Bounds each wait for something another process does (a hub applying, a report).
const FLEET_DEADLINE: Duration = Duration::from_secs(90);

/// The partition of `node` among `count`, computed here from the contract's words (the first 8
/// bytes of blake3(node id), big endian, modulo N), not by the code under test.
fn partition_of(node: &str, count: u32) -> u32 {
    let hash = blake3::hash(node.as_bytes());
    let first = u64::from_be_bytes(hash.as_bytes()[..8].try_into().expect("8 bytes"));
    (first % u64::from(count)) as u32
}

/// `per_partition` node ids in each of `count` partitions, partition by partition.
fn node_ids_by_partition(prefix: &str, count: u32, per_partition: usize) -> Vec<Vec<String>> {
    let mut ids = vec![Vec::new(); count as usize];
    for n in 0.. {
        if ids.iter().all(|p| p.len() == per_partition) {
            return ids;
        }
        let id = format!("{prefix}-{n}");
        let slot = &mut ids[partition_of(&id, count) as usize];
        if slot.len() < per_partition {
            slot.push(id);
        }
    }
    unreachable!("the loop returns")
}

/// A terminal of the fleet, its accounts and what it sent.
struct Terminal {
    server: Server,
    node: String,
    partition: u32,
    customers: Vec<String>,
    merchant: String,
}

impl Terminal {
    async fn start(nats: &Nats, node: &str, partitions: u32) -> Terminal {
        let count = partitions.to_string();
        let args = ["--nats-partitions", &count, "--node-id", node];
        let server = start_publisher(nats, &args, &[]).await;
        let (customers, merchant) = create_accounts_and_fund(&server.endpoint(), 3).await;
        Terminal {
            server,
            node: node.to_owned(),
            partition: partition_of(node, partitions),
            customers,
            merchant,
        }
    }

    fn accounts(&self) -> Vec<String> {
        let mut ids = self.customers.clone();
        ids.push(self.merchant.clone());
        ids
    }
}

/// `count` charges on every terminal at once; returns when all are answered.
async fn charge_all(terminals: &[Terminal], count: usize) {
    let mut tasks = tokio::task::JoinSet::new();
    for terminal in terminals {
        let (ep, customers, merchant) = (
            terminal.server.endpoint(),
            terminal.customers.clone(),
            terminal.merchant.clone(),
        );
        tasks.spawn(async move { take_charges(&ep, &customers, &merchant, count).await });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a charging task");
    }
}

/// `--partition K/N` hubs, one per partition, in partition order.
async fn start_hubs(nats: &Nats, count: u32) -> Vec<Server> {
    let mut hubs = Vec::new();
    for index in 0..count {
        let partition = format!("{index}/{count}");
        hubs.push(start_consumer(nats, &["--partition", &partition], &[]).await);
    }
    hubs
}

async fn origins_page(hub: &Endpoint) -> Value {
    let page = hub.get("/v1/replication/origins").await;
    assert_eq!(page.status, 200, "{page}");
    page.json()
}

fn has_origin(page: &Value, node: &str) -> bool {
    (page["origins"].as_array()).is_some_and(|o| o.iter().any(|o| o["node"] == node))
}

/// Every terminal's events are on its partition's hub once, in order, with exact mirrors, and
/// on no other hub; the origins page names the hub's partition and misses nothing.
async fn assert_each_origin_on_its_hub_only(hubs: &[Server], terminals: &[Terminal]) {
    for terminal in terminals {
        let hub = &hubs[terminal.partition as usize];
        let ep = terminal.server.endpoint();
        assert_delivered_once(
            &hub.endpoint(),
            &ep,
            &terminal.customers,
            &terminal.merchant,
        )
        .await;
        let last = last_seq(&ep).await;
        let state = wait_applied_through(&hub.endpoint(), &terminal.node, last).await;
        assert_eq!(state["events_applied"], last, "{state}");
        assert_eq!(state["events_parked"], 0, "{state}");
    }
    let count = hubs.len() as u32;
    for (index, hub) in hubs.iter().enumerate() {
        let page = origins_page(&hub.endpoint()).await;
        assert_eq!(page["partition"]["index"], index, "{page}");
        assert_eq!(page["partition"]["count"], count, "{page}");
        assert_eq!(page["partition"]["stream"], STREAM, "{page}");
        assert_eq!(
            page["partition"]["filter_subject"],
            format!("onceledger.events.{index}.>"),
            "{page}"
        );
        assert_eq!(page["missing_from_stream"], serde_json::json!([]), "{page}");
        for terminal in terminals {
            let ours = terminal.partition as usize == index;
            assert_eq!(
                has_origin(&page, &terminal.node),
                ours,
                "{}: {page}",
                terminal.node
            );
        }
    }
}

/// The events of `terminals` in `partition`, from their outboxes.
async fn events_of_partition(terminals: &[Terminal], partition: u32) -> u64 {
    let mut total = 0;
    for terminal in terminals.iter().filter(|t| t.partition == partition) {
        total += last_seq(&terminal.server.endpoint()).await;
    }
    total
}

/// A hub's NATS consumer messages with this result.
fn consumer_messages(text: &str, result: &str) -> f64 {
    metric(
        text,
        "onceledger_nats_consumer_messages_total",
        &[("result", result)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_partitions_each_hub_applies_exactly_its_terminals_once_in_order() {
    // Guards the partitioned fleet: 6 terminals publish with --nats-partitions 2 and one hub per
    // partition consumes through a filter subject. Each origin is applied on exactly its
    // partition's hub, every event once and in order, mirrors exact, no dead letters, and the
    // hubs NAK at most 1% of the events (before partitions, hubs sharing a durable NAKed each
    // event dozens of times while they waited for events the other hub held).
    let nats = Nats::start().await;
    let hubs = start_hubs(&nats, 2).await;
    let mut terminals = Vec::new();
    for node in node_ids_by_partition("till", 2, 3).concat() {
        terminals.push(Terminal::start(&nats, &node, 2).await);
    }
    charge_all(&terminals, 300).await;
    assert_each_origin_on_its_hub_only(&hubs, &terminals).await;
    for (index, hub) in hubs.iter().enumerate() {
        let events = events_of_partition(&terminals, index as u32).await;
        assert!(events >= 3 * 300, "partition {index} has its 3 terminals");
        let text = metrics(&hub.endpoint()).await;
        assert_eq!(inbox_count(&text, "applied"), events as f64, "hub {index}");
        assert_eq!(inbox_count(&text, "duplicate"), 0.0, "hub {index}");
        assert_eq!(inbox_count(&text, "dead_lettered"), 0.0, "hub {index}");
        assert_eq!(consumer_messages(&text, "outside_partition"), 0.0);
        let nacked = consumer_messages(&text, "nacked");
        assert!(
            nacked <= events as f64 / 100.0,
            "hub {index} NAKed {nacked} messages for {events} events"
        );
    }
    for terminal in terminals {
        terminal.server.check().await;
    }
    for hub in hubs {
        hub.check().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_keeps_every_event_once_through_a_hub_sigkill_and_a_nats_restart() {
    // Guards the fleet under faults (the shape of `prove` for a fleet): 6 terminals, 2
    // partitions, 2 hubs. One hub is SIGKILLed while events flow and restarted while they still
    // flow; then nats-server restarts while the terminals keep taking payments. In the end every
    // event is applied exactly once, in order, on its partition's hub, with exact mirrors:
    // nothing applied twice (one inbox row per event, and the counters say so).
    let mut nats = Nats::start().await;
    let mut hubs = start_hubs(&nats, 2).await;
    let mut terminals = Vec::new();
    for node in node_ids_by_partition("pos", 2, 3).concat() {
        terminals.push(Terminal::start(&nats, &node, 2).await);
    }
    charge_all(&terminals, 100).await;
    let before_kill = events_of_partition(&terminals, 0).await as f64;
    // The kill lands while the terminals publish their next 100 charges each, once hub 0 has
    // applied some of them.
    let flowing = charge_all(&terminals, 100);
    let kill = async {
        let hub = &mut hubs[0];
        let ep = hub.endpoint();
        eventually("hub 0 applies the next events", FLEET_DEADLINE, || async {
            let text = metrics(&ep).await;
            (inbox_count(&text, "applied") > before_kill).then_some(())
        })
        .await;
        hub.kill_hard().await;
    };
    tokio::join!(flowing, kill);
    // Restarted while more events flow.
    tokio::join!(charge_all(&terminals, 50), hubs[0].restart());

    nats.down().await;
    charge_all(&terminals, 50).await;
    for terminal in &terminals {
        let text = metrics(&terminal.server.endpoint()).await;
        let lag = metric(&text, "onceledger_outbox_lag_events", &[]);
        assert!(
            lag > 0.0,
            "{}: events wait while NATS is down",
            terminal.node
        );
    }
    nats.up().await;

    assert_each_origin_on_its_hub_only(&hubs, &terminals).await;
    // The hub that ran throughout applied each of its events once, by its own counters; the
    // restarted one's store counts every event once (its counters began at its restart).
    let events = events_of_partition(&terminals, 1).await;
    let text = metrics(&hubs[1].endpoint()).await;
    assert_eq!(inbox_count(&text, "applied"), events as f64);
    assert_eq!(inbox_count(&text, "dead_lettered"), 0.0);
    let text = metrics(&hubs[0].endpoint()).await;
    assert!(inbox_count(&text, "applied") <= events_of_partition(&terminals, 0).await as f64);
    assert_eq!(inbox_count(&text, "dead_lettered"), 0.0);
    let totals = [
        events_of_partition(&terminals, 0).await,
        events_of_partition(&terminals, 1).await,
    ];
    for terminal in terminals {
        terminal.server.check().await;
    }
    for (hub, total) in hubs.into_iter().zip(totals) {
        let summary = hub.check().await;
        assert_eq!(
            summary["inbox_rows"], total,
            "one inbox row per event: {summary}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_and_a_fresh_hub_of_a_partition_end_with_the_first_hubs_mirrors() {
    // Guards replicas and rebuilding: a second hub of the same partition with another durable
    // name applies all of it too, and a hub started empty after everything was published
    // rebuilds every mirror from the stream. All three end with the same inboxes and mirrors.
    let nats = Nats::start().await;
    let first = start_consumer(&nats, &["--partition", "0/2"], &[]).await;
    let replica = start_consumer(
        &nats,
        &["--partition", "0/2", "--durable", "replica-of-0"],
        &[],
    )
    .await;
    let mut terminals = Vec::new();
    for node in node_ids_by_partition("shop", 2, 2).swap_remove(0) {
        terminals.push(Terminal::start(&nats, &node, 2).await);
    }
    charge_all(&terminals, 100).await;
    for terminal in &terminals {
        let ep = terminal.server.endpoint();
        assert_delivered_once(
            &first.endpoint(),
            &ep,
            &terminal.customers,
            &terminal.merchant,
        )
        .await;
        assert_delivered_once(
            &replica.endpoint(),
            &ep,
            &terminal.customers,
            &terminal.merchant,
        )
        .await;
    }
    let fresh = start_consumer(&nats, &["--partition", "0/2"], &[]).await;
    for terminal in &terminals {
        let ep = terminal.server.endpoint();
        let last = last_seq(&ep).await;
        wait_applied_through(&fresh.endpoint(), &terminal.node, last).await;
        for hub in [&first, &replica, &fresh] {
            assert_once_in_order(&inbox(&hub.endpoint(), &terminal.node).await, last);
            assert_mirrors_match(&hub.endpoint(), &ep, &terminal.node, &terminal.accounts()).await;
        }
        for id in terminal.accounts() {
            let path = format!("/v1/replication/origins/{}/accounts/{id}", terminal.node);
            let mirror = first.endpoint().get(&path).await.json();
            assert_eq!(replica.endpoint().get(&path).await.json(), mirror);
            assert_eq!(fresh.endpoint().get(&path).await.json(), mirror);
        }
    }
    let durables: Vec<Value> = {
        let mut names = Vec::new();
        for hub in [&first, &replica, &fresh] {
            names.push(origins_page(&hub.endpoint()).await["partition"]["durable"].clone());
        }
        names
    };
    assert_eq!(durables[1], "replica-of-0");
    assert_ne!(
        durables[0], durables[2],
        "each hub has a durable of its own"
    );
    for terminal in terminals {
        terminal.server.check().await;
    }
    for hub in [first, replica, fresh] {
        hub.check().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_with_another_partition_count_is_parked_on_the_hub_that_receives_it() {
    // Guards a misconfigured fleet: hubs run --partition K/2, and one terminal publishes with
    // --nats-partitions 3, on the subject of a hub that does not own it under N = 2. That hub
    // applies none of its events: each is parked as a dead letter whose reason names the
    // partitions, the terminal's real hub never sees it, and a well configured terminal of the
    // same hub is applied as usual. Then the runbook's fix completes the terminal's own hub.
    let nats = Nats::start().await;
    let hubs = start_hubs(&nats, 2).await;
    let misrouted = (0..)
        .map(|n| format!("stray-{n}"))
        .find(|id| partition_of(id, 3) < 2 && partition_of(id, 3) != partition_of(id, 2))
        .expect("some id");
    let wrong_hub = &hubs[partition_of(&misrouted, 3) as usize];
    let right_hub = &hubs[partition_of(&misrouted, 2) as usize];
    let mut stray = Terminal::start(&nats, &misrouted, 3).await;
    let neighbour_id = (0..)
        .map(|n| format!("till-{n}"))
        .find(|id| partition_of(id, 2) == partition_of(&misrouted, 3))
        .expect("some id");
    let neighbour = Terminal::start(&nats, &neighbour_id, 2).await;
    charge_all(std::slice::from_ref(&stray), 20).await;
    charge_all(std::slice::from_ref(&neighbour), 20).await;

    let last = last_seq(&stray.server.endpoint()).await;
    let state = wait_applied_through(&wrong_hub.endpoint(), &misrouted, last).await;
    assert_eq!(state["events_parked"], last, "{state}");
    assert_eq!(state["events_applied"], 0, "{state}");
    let letters = wrong_hub
        .endpoint()
        .get("/v1/dead-letters?limit=1000")
        .await
        .json();
    let letters = letters["dead_letters"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(letters.len() as u64, last, "one dead letter per event");
    for letter in &letters {
        assert_eq!(letter["origin"], misrouted.as_str(), "{letter}");
        let reason = letter["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains(&format!("partition {} of 2", partition_of(&misrouted, 2)))
                && reason.contains("--nats-partitions"),
            "{reason}"
        );
    }
    // The terminal itself warns: the hubs' consumers say they split the fleet in 2.
    eventually(
        "the terminal warns of the hubs' N",
        FLEET_DEADLINE,
        || async {
            let lines = stray.server.log_lines();
            lines
                .iter()
                .any(|l| l.contains("another number of partitions"))
                .then_some(())
        },
    )
    .await;
    let text = metrics(&wrong_hub.endpoint()).await;
    assert_eq!(inbox_count(&text, "dead_lettered"), last as f64);
    assert_eq!(consumer_messages(&text, "outside_partition"), last as f64);
    assert!(!has_origin(
        &origins_page(&right_hub.endpoint()).await,
        &misrouted
    ));
    let ep = neighbour.server.endpoint();
    assert_delivered_once(
        &wrong_hub.endpoint(),
        &ep,
        &neighbour.customers,
        &neighbour.merchant,
    )
    .await;

    // The runbook's fix: the terminal restarts with the hubs' N, and delivers what it published
    // before to its own hub over HTTP; that hub ends with every event once, in order.
    let token = crate::harness::make_token(&right_hub.endpoint(), "default", "replicator").await;
    let token_file = stray.server.data_dir().with_file_name("right-hub.token");
    std::fs::write(&token_file, format!("{token}\n")).expect("write the token file");
    let mut args = publisher_args(&nats);
    let upstream = format!("http://{}", right_hub.addr());
    args.extend(["--nats-partitions", "2", "--node-id", &misrouted].map(str::to_owned));
    args.extend(["--upstream", &upstream, "--upstream-token-file"].map(str::to_owned));
    args.push(token_file.display().to_string());
    stray
        .server
        .set_args(&args.iter().map(String::as_str).collect::<Vec<_>>());
    stray.server.restart().await;
    charge_all(std::slice::from_ref(&stray), 10).await;
    let (ep, hub) = (stray.server.endpoint(), right_hub.endpoint());
    assert_delivered_once(&hub, &ep, &stray.customers, &stray.merchant).await;
    let page = eventually(
        "the right hub clears its report",
        FLEET_DEADLINE,
        || async {
            let page = origins_page(&hub).await;
            (page["missing_from_stream"] == serde_json::json!([])).then_some(page)
        },
    )
    .await;
    assert!(has_origin(&page, &misrouted), "{page}");
    stray.server.check().await;
    neighbour.server.check().await;
    for hub in hubs {
        hub.check().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_reports_an_origin_whose_first_events_the_stream_no_longer_holds() {
    // Guards the retention report: the stream keeps 3 messages per subject, so of an origin's
    // events 1..=5 it holds 3..=5 when an empty hub starts. The hub cannot apply event 3 before
    // 1 and 2, which will never come; instead of waiting in silence it lists the origin under
    // `missing_from_stream` (what it needs, what the stream holds first), sets the gauge and
    // logs it, and applies nothing of that origin.
    let nats = Nats::start().await;
    let client = async_nats::connect(nats.url())
        .await
        .expect("connect to nats");
    let jetstream = async_nats::jetstream::new(client);
    jetstream
        .create_stream(async_nats::jetstream::stream::Config {
            name: STREAM.to_owned(),
            subjects: vec!["onceledger.events.>".to_owned()],
            max_messages_per_subject: 3,
            storage: async_nats::jetstream::stream::StorageType::File,
            ..Default::default()
        })
        .await
        .expect("create the stream");
    let origin = "till-gone";
    let partition = partition_of(origin, 2);
    let subject = format!("onceledger.events.{partition}.{origin}");
    for seq in 1..=5u64 {
        let event = account_event(seq, &format!("acct-{seq}"));
        publish_event(&jetstream, &subject, origin, event).await;
    }
    let arg = format!("{partition}/2");
    let hub = start_consumer(&nats, &["--partition", &arg], &[]).await;
    let page = eventually(
        "the hub reports the missing events",
        FLEET_DEADLINE,
        || async {
            let page = origins_page(&hub.endpoint()).await;
            (page["missing_from_stream"].as_array()?.len() == 1).then_some(page)
        },
    )
    .await;
    let missing = &page["missing_from_stream"][0];
    assert_eq!(missing["node"], origin, "{page}");
    assert_eq!(missing["needed_seq"], 1, "{page}");
    assert_eq!(missing["first_held_seq"], 3, "{page}");
    assert!(
        !has_origin(&page, origin),
        "nothing of it is applied: {page}"
    );
    let text = metrics(&hub.endpoint()).await;
    assert_eq!(
        metric(
            &text,
            "onceledger_nats_consumer_origins_missing_from_stream",
            &[]
        ),
        1.0
    );
    assert_eq!(inbox_count(&text, "applied"), 0.0);
    assert!(
        hub.log_lines()
            .iter()
            .any(|l| l.contains("no longer holds")),
        "the log says so:\n{}",
        hub.log_tail()
    );
    hub.check().await;
}
