//! The payment lifecycle across replication (issue 19), with two real writers: a node makes
//! authorizations that are captured (whole and in part), voided, left to expire on the node's
//! clock and left open, refunds and a transfer; its events go through the wire (version 2) to a
//! hub, whose mirror must end with the node's four totals on every account, both stores clean.

use std::time::{Duration, Instant};

use super::test_node::Node;
use super::{InboundOutcome, InboundRequest, WriteOutcome, WriterConfig};
use crate::ledger::{
    AccountId, Amount, ChargeStatus, Command, Currency, EntryType, Metadata, NewAccount,
    NewAuthorization, NewCharge, NewRefund, NewTransfer, Settle, TenantId, TransferLeg,
};
use crate::store::history::Order;
use crate::store::test_support::{assert_running_sums, mirrored_statement, statement_pages};
use crate::store::{Event, EventBody, Store, check};
use crate::wire::{Ack, EventBatch, WIRE_VERSION, decode_batch, encode_events};

const ORIGIN: &str = "till-1";
const ACCOUNTS: [&str; 4] = ["bank", "alice", "shop", "fee"];

fn id(text: &str) -> AccountId {
    AccountId::parse(text).expect("id")
}

fn eur() -> Currency {
    Currency::parse("EUR").expect("currency")
}

fn amount(minor: u64) -> Amount {
    Amount::new(minor).expect("amount")
}

fn account(name: &str) -> Command {
    Command::CreateAccount(NewAccount {
        id: id(name),
        currency: eur(),
        // Only the bank may go below zero: the mirror's limits are checked too.
        overdraft_limit: (name != "bank").then_some(0),
    })
}

fn new_charge(source: &str, destination: &str, minor: u64) -> NewCharge {
    NewCharge {
        source: id(source),
        destination: id(destination),
        amount: amount(minor),
        currency: eur(),
        metadata: Metadata::default(),
    }
}

/// An authorization of alice's to the shop; `expires_in_s` `None`: the node's short TTL.
fn authorization(minor: u64, expires_in_s: Option<u64>) -> Command {
    Command::Authorize(NewAuthorization {
        charge: new_charge("alice", "shop", minor),
        expires_in_s,
    })
}

fn id_in(body: &[u8]) -> String {
    let body: serde_json::Value = serde_json::from_slice(body).expect("JSON");
    body["id"].as_str().expect("an id").to_owned()
}

fn settled(node: &Node, key: &str, charge: &str, how: Settle) {
    let command = Command::SettleCharge {
        charge: charge.to_owned(),
        how,
    };
    match node.run(key, command) {
        WriteOutcome::Executed(answer) if answer.status == 200 => {}
        other => panic!("{key}: {other:?}"),
    }
}

fn refund(charge: &str, minor: u64) -> Command {
    Command::CreateRefund(NewRefund {
        charge: charge.to_owned(),
        amount: Some(amount(minor)),
        metadata: Metadata::default(),
    })
}

/// Sends `events` to the hub as the wire carries them (encoded, then decoded as a hub does).
fn deliver(hub: &Node, events: &[Event]) -> Ack {
    let batch: EventBatch = decode_batch(&encode_events(ORIGIN, events)).expect("decodes");
    let (reply, answer) = tokio::sync::oneshot::channel();
    let request = InboundRequest {
        tenant: TenantId::DEFAULT,
        batch,
        park_reason: None,
        reply,
    };
    assert!(hub.writer.try_submit_inbound(request).is_ok(), "queued");
    match answer.blocking_recv().expect("answered") {
        InboundOutcome::Acknowledged(ack) => ack,
        other => panic!("{other:?}"),
    }
}

/// The node's events until one satisfies `done`, waiting (bounded) for the writer's expiry.
fn events_once(node: &Node, done: impl Fn(&Event) -> bool) -> Vec<Event> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let events = node.store.events_after(0, 1000).expect("events");
        if events.iter().any(&done) {
            return events;
        }
        assert!(Instant::now() < deadline, "the node never expired it");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn four(store: &Store, origin: Option<&str>, name: &str) -> [u64; 4] {
    let found = match origin {
        None => store.account(TenantId::DEFAULT, &id(name)),
        Some(origin) => store.mirror_account(origin, &id(name)),
    };
    let a = found.expect("readable").expect("exists");
    [
        a.debits_posted,
        a.credits_posted,
        a.debits_pending,
        a.credits_pending,
    ]
}

/// A node's lifecycle, applied by a hub in order: the mirror holds what the node holds, a mirrored
/// hold outlives its `expires_at` on the hub's clock until the node's expiry event arrives, a
/// second delivery is all duplicates, and both stores pass `check`.
#[test]
fn a_hub_mirrors_a_nodes_lifecycle_with_the_nodes_decisions() {
    let (node_dir, hub_dir) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let short_ttl = WriterConfig {
        authorization_ttl: Duration::from_millis(300),
        ..WriterConfig::default()
    };
    let node = Node::start_with(Store::open(node_dir.path()).expect("opens"), short_ttl);
    let hub = Node::start(Store::open(hub_dir.path()).expect("opens"));
    for name in ACCOUNTS {
        node.created(&format!("acct-{name}"), account(name));
    }
    let sale = id_in(&node.created(
        "sale",
        Command::CreateCharge(new_charge("bank", "alice", 1000)),
    ));
    let hour = Some(3600);
    let whole = id_in(&node.created("auth-whole", authorization(300, hour)));
    let part = id_in(&node.created("auth-part", authorization(200, hour)));
    let voided = id_in(&node.created("auth-void", authorization(100, hour)));
    node.created("auth-expiring", authorization(100, None));
    node.created("auth-open", authorization(50, hour));
    settled(&node, "capture-whole", &whole, Settle::Capture(None));
    settled(
        &node,
        "capture-part",
        &part,
        Settle::Capture(Some(amount(50))),
    );
    settled(&node, "void", &voided, Settle::Void);
    node.created("refund-capture", refund(&whole, 100));
    node.created("refund-sale", refund(&sale, 200));
    let legs = vec![
        TransferLeg {
            source: id("shop"),
            destination: id("fee"),
            amount: amount(30),
        },
        TransferLeg {
            source: id("alice"),
            destination: id("shop"),
            amount: amount(10),
        },
    ];
    let transfer = NewTransfer {
        currency: eur(),
        legs,
        metadata: Metadata::default(),
    };
    node.created("transfer", Command::CreateTransfer(transfer));
    let is_expiry = |e: &Event| {
        matches!(
            e.body,
            EventBody::ChargeSettled {
                status: ChargeStatus::Expired,
                ..
            }
        )
    };
    let events = events_once(&node, is_expiry);
    let expiry_at = events.iter().position(is_expiry).expect("an expiry");
    let EventBody::ChargeSettled {
        charge: expired, ..
    } = &events[expiry_at].body
    else {
        unreachable!("found above")
    };
    let expired_seq = expired.event_seq;
    assert_eq!(
        decode_batch(&encode_events(ORIGIN, &events))
            .expect("decodes")
            .version,
        WIRE_VERSION
    );

    // Everything before the node's expiry: past its expires_at, the mirrored hold stays.
    let before = deliver(&hub, &events[..expiry_at]);
    assert_eq!((before.applied, before.refused), (expiry_at as u64, None));
    let (_, progress) = (hub.store)
        .mirror_charge(ORIGIN, expired_seq)
        .expect("readable")
        .expect("mirrored");
    assert_eq!(progress.status, ChargeStatus::Authorized);
    assert!(
        progress
            .expires_at_ms
            .is_some_and(|at| at < crate::clock::now_ms())
    );
    // A commit of the hub's own (an empty inbound round) expires nothing of the mirror's.
    assert_eq!(deliver(&hub, &events[..1]).duplicates, 1);
    let (_, progress) = (hub.store.mirror_charge(ORIGIN, expired_seq))
        .expect("readable")
        .expect("mirrored");
    assert_eq!(
        progress.status,
        ChargeStatus::Authorized,
        "not on the hub's clock"
    );

    let rest = deliver(&hub, &events[expiry_at..]);
    assert_eq!(rest.applied, (events.len() - expiry_at) as u64, "{rest:?}");
    assert_eq!(rest.applied_through, events.len() as u64);
    for name in ACCOUNTS {
        assert_eq!(
            four(&hub.store, Some(ORIGIN), name),
            four(&node.store, None, name),
            "{name}"
        );
    }
    // The hub's statement of each account is the node's, line for line and page by page: same
    // seqs, legs, numbers, times and totals after each posting. Only a settlement's entry number
    // stays behind (the wire does not carry it): 0 on the hub.
    let mut settlement_lines = 0;
    for name in ACCOUNTS {
        let read = |query: &_| node.store.statement(TenantId::DEFAULT, &id(name), query);
        let mut expected = statement_pages(read, Order::OldestFirst, 4);
        assert!(!expected.is_empty(), "{name} has postings");
        for entry in &mut expected {
            if matches!(
                entry.line.entry_type,
                EntryType::Capture | EntryType::Release
            ) {
                assert_ne!(entry.line.entry, 0, "the node numbers its settlements");
                entry.line.entry = 0;
                settlement_lines += 1;
            }
        }
        let mirrored = mirrored_statement(&hub.store, ORIGIN, name);
        assert_eq!(mirrored, expected, "{name}");
        let account = hub.store.mirror_account(ORIGIN, &id(name));
        assert_running_sums(&mirrored, &account.expect("readable").expect("mirrored"));
    }
    // Two captures, a void and an expiry: 2 + 2 + 1 + 1 lines on each of alice and the shop.
    assert_eq!(settlement_lines, 12);
    let again = deliver(&hub, &events);
    assert_eq!((again.applied, again.duplicates), (0, events.len() as u64));

    let hub_report = check::assert_consistent(&hub.store);
    assert_eq!(
        (
            hub_report.mirrored_charges,
            hub_report.mirrored_authorizations_open,
            hub_report.mirrored_refunds,
            hub_report.mirrored_transfers
        ),
        (6, 1, 2, 1)
    );
    let node_report = check::assert_consistent(&node.store);
    assert_eq!(node_report.authorizations_open, 1);
    node.stop();
    hub.stop();
}

/// A settlement that arrives where its authorization should (the hub has no such authorization)
/// is refused, not applied; once the authorization comes in its place, both apply in order.
#[test]
fn a_settlement_before_its_authorization_is_refused() {
    let (node_dir, hub_dir) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let node = Node::start(Store::open(node_dir.path()).expect("opens"));
    let hub = Node::start(Store::open(hub_dir.path()).expect("opens"));
    for name in ACCOUNTS {
        node.created(&format!("acct-{name}"), account(name));
    }
    node.created(
        "sale",
        Command::CreateCharge(new_charge("bank", "alice", 500)),
    );
    let held = id_in(&node.created("auth", authorization(400, Some(3600))));
    settled(&node, "capture", &held, Settle::Capture(Some(amount(150))));
    let events = node.store.events_after(0, 1000).expect("events");
    let (authorized, settlement) = (events.len() - 2, events.len() - 1);
    assert_eq!(
        deliver(&hub, &events[..authorized]).applied,
        authorized as u64
    );

    let mut early = events[settlement].clone();
    early.seq = events[authorized].seq;
    let refused = deliver(&hub, &[early]);
    let refusal = refused.refused.expect("refused");
    assert!(refusal.reason.contains("not in the mirror"), "{refusal:?}");
    assert_eq!(refused.applied_through, authorized as u64);
    assert_eq!(four(&hub.store, Some(ORIGIN), "alice"), [0, 500, 0, 0]);

    let rest = deliver(&hub, &events[authorized..]);
    assert_eq!((rest.applied, rest.refused), (2, None));
    for name in ACCOUNTS {
        assert_eq!(
            four(&hub.store, Some(ORIGIN), name),
            four(&node.store, None, name),
            "{name}"
        );
    }
    check::assert_consistent(&hub.store);
    node.stop();
    hub.stop();
}
