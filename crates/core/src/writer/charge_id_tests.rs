//! Charge ids across the upgrade of a store written before opaque ids (issue 21), with answers
//! stored by the real writer: the old charges keep the ids their answers carry, new ones get
//! opaque ids, and the checker `onceledger check` runs finds the store consistent.

use super::WriteOutcome;
use super::test_node::Node;
use crate::ledger::{AccountId, Amount, Command, Currency, Metadata, NewAccount, NewCharge};
use crate::ledger::{ChargeIds, TenantId};
use crate::render;
use crate::store::{Store, check};

impl Node {
    /// What `GET /v1/charges/{id}` answers for the default tenant (`api::handler::get_charge`).
    fn get(&self, id: &str) -> Option<Vec<u8>> {
        let ids = self.store.charge_ids();
        let (charge, progress) = self
            .store
            .charge(TenantId::DEFAULT, id)
            .expect("readable")?;
        Some(render::charge(&charge, &progress, ids))
    }
}

fn account(id: &str) -> Command {
    Command::CreateAccount(NewAccount {
        id: AccountId::parse(id).expect("id"),
        currency: Currency::parse("EUR").expect("currency"),
        overdraft_limit: None,
    })
}

fn charge(amount: u64) -> Command {
    Command::CreateCharge(NewCharge {
        source: AccountId::parse("bank").expect("id"),
        destination: AccountId::parse("shop").expect("id"),
        amount: Amount::new(amount).expect("amount"),
        currency: Currency::parse("EUR").expect("currency"),
        metadata: Metadata::default(),
    })
}

fn id_in(body: &[u8]) -> String {
    let body: serde_json::Value = serde_json::from_slice(body).expect("JSON");
    body["id"].as_str().expect("an id").to_owned()
}

/// Guards "old stores keep working": a store written by the build before opaque ids (its
/// charges answered `ch_` and 16 hex digits, no key in `meta`) is upgraded by its next open.
/// Each old charge is still found by the id its stored answer carries, GET shows it with that
/// id, a retry of its key replays the stored bytes; the charges made after the upgrade get
/// opaque ids, their legacy-form names find nothing, and `check` is clean. A second restart
/// changes no id.
#[test]
fn a_store_from_before_opaque_ids_keeps_its_ids_and_replays_and_names_new_charges_opaquely() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut old = Store::open(dir.path()).expect("opens");
    old.forget_charge_ids();
    let node = Node::start(old);
    node.created("a1", account("bank"));
    node.created("a2", account("shop"));
    let old_answers: Vec<(u64, Vec<u8>)> = (1..=3)
        .map(|n| (n, node.created(&format!("old-{n}"), charge(n))))
        .collect();
    for (number, body) in &old_answers {
        assert_eq!(
            id_in(body),
            format!("ch_{number:016x}"),
            "the old build's form"
        );
    }
    node.stop();

    let node = Node::start(Store::open(dir.path()).expect("upgrades"));
    assert_eq!(
        node.store.charge_ids().opaque_from(),
        4,
        "after the 3 old charges"
    );
    for (number, body) in &old_answers {
        let id = id_in(body);
        assert_eq!(
            node.get(&id).as_ref(),
            Some(body),
            "GET {id} shows the 201's bytes"
        );
        // The old key with its old request: the stored bytes, not a rendering under new rules.
        match node.run(&format!("old-{number}"), charge(*number)) {
            WriteOutcome::Replayed(answer) => assert_eq!(&answer.body[..], &body[..], "{id}"),
            other => panic!("{id}: {other:?}"),
        }
    }
    let new_answers: Vec<Vec<u8>> = (4..=5)
        .map(|n| node.created(&format!("new-{n}"), charge(n)))
        .collect();
    let new_ids: Vec<String> = new_answers.iter().map(|b| id_in(b)).collect();
    for (number, (id, body)) in (4u64..).zip(new_ids.iter().zip(&new_answers)) {
        assert_eq!(id.len(), "ch_".len() + 26, "the opaque form: {id}");
        assert_eq!(node.store.charge_ids().number_of(id), Some(number));
        assert_eq!(node.get(id).as_ref(), Some(body), "GET {id}");
        assert_eq!(
            node.get(&format!("ch_{number:016x}")),
            None,
            "no legacy name"
        );
    }
    node.stop();

    let report = check::verify_stopped(dir.path()).expect("checkable");
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert_eq!((report.charges, report.idempotency_records), (5, 7));
    let node = Node::start(Store::open(dir.path()).expect("reopens"));
    let ids: &ChargeIds = node.store.charge_ids();
    assert_eq!(ids.opaque_from(), 4, "the mark is set once");
    assert_eq!(
        [ids.id_of(4), ids.id_of(5)],
        [&new_ids[0], &new_ids[1]].map(String::clone)
    );
    assert_eq!(ids.id_of(3), id_in(&old_answers[2].1));
    node.stop();
}

/// Guards the checker's side of the same promise: an answer whose id is not the one its charge
/// is found by (here: the store renamed under it, as losing the key would) is a violation.
#[test]
fn check_reports_an_answer_whose_id_no_longer_finds_its_charge() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(Store::open(dir.path()).expect("opens"));
    node.created("a1", account("bank"));
    node.created("a2", account("shop"));
    node.created("c1", charge(1));
    node.stop();
    let mut renamed = Store::open(dir.path()).expect("reopens");
    renamed.forget_charge_ids();
    drop(renamed);
    let report = check::verify_stopped(dir.path()).expect("checkable");
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.contains("its id is ch_0000000000000001")),
        "{:?}",
        report.violations
    );
}
