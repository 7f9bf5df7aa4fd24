//! Checking the system against the reference model: each new answer's fields, every account's
//! totals after a step, and the whole store after a restart.

use std::collections::BTreeMap;

use onceledger_core::idempotency::IdempotencyKey;
use onceledger_core::ledger::{
    AccountId, Charge, ChargeIds, ChargeStatus, Command, EntryKind, TenantId,
};
use onceledger_core::store::{Event, EventBody, check};
use onceledger_server::api::WriteIntent;
use serde_json::{Value, json};

use super::reference::{
    Decision, Declined, Entry, Model, ModelAccount, ModelCharge, ModelEvent, legs,
};
use super::{ACCOUNT_IDS, BURST_MAX, KEYS_COUNT, OPS_MAX, UNKNOWN_CHARGE_IDS, key_name};
use crate::system::{Answer, System};

pub(super) fn json_body(body: &[u8]) -> Value {
    match serde_json::from_slice(body) {
        Ok(value) => value,
        Err(error) => panic!(
            "answer body is not JSON ({error}): {}",
            String::from_utf8_lossy(body)
        ),
    }
}

pub(super) fn problem_type(answer: &Answer) -> String {
    json_body(&answer.body)["type"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn assert_fields(what: &str, body: &Value, fields: &[(&str, Value)]) {
    for (field, expected) in fields {
        assert_eq!(&body[*field], expected, "{what}'s {field}: {body}");
    }
}

/// Milliseconds since the epoch of an RFC 3339 answer field.
fn time_ms(body: &Value, field: &str) -> u128 {
    let text = body[field].as_str().unwrap_or_default();
    match humantime::parse_rfc3339(text) {
        Ok(time) => match time.duration_since(std::time::UNIX_EPOCH) {
            Ok(since) => since.as_millis(),
            Err(error) => panic!("{field} {text:?} before 1970: {error}"),
        },
        Err(error) => panic!("{field} {text:?} is not RFC 3339 ({error}): {body}"),
    }
}

/// The fields every charge answer has, for `charge` as the model holds it after the request.
fn charge_fields(charge: &ModelCharge) -> Vec<(&'static str, Value)> {
    vec![
        ("id", json!(charge.id)),
        ("status", json!(charge.status.as_str())),
        ("source", json!(charge.source)),
        ("destination", json!(charge.destination)),
        ("amount", json!(charge.amount)),
        ("amount_captured", json!(charge.captured)),
        ("amount_refunded", json!(charge.refunded)),
        (
            "refunded",
            json!(charge.refunded > 0 && charge.refunded == charge.captured),
        ),
        ("currency", json!(charge.currency)),
        ("metadata", metadata_json(&charge.metadata)),
        ("event_seq", json!(charge.event_seq)),
    ]
}

/// The body of a new answer says what the model decided. An entry is named by the id the
/// store's `ChargeIds` give its number, and that id leads back to the number.
pub(super) fn check_new_body(
    model: &Model,
    ids: &ChargeIds,
    intent: &WriteIntent,
    decision: &Decision,
    body: &[u8],
) {
    let body = json_body(body);
    let next_event_seq = json!(model.events.len() + 1);
    match (&intent.command, decision) {
        (Command::CreateAccount(new), Decision::AccountCreated) => {
            let limit = new.overdraft_limit.map_or(Value::Null, |l| json!(l));
            let mut fields = vec![
                ("id", json!(new.id.as_str())),
                ("currency", json!(new.currency.as_str())),
                ("overdraft_limit", limit),
                ("balance", json!(0)),
                ("available", json!(0)),
            ];
            for total in [
                "debits_posted",
                "credits_posted",
                "debits_pending",
                "credits_pending",
            ] {
                fields.push((total, json!(0)));
            }
            assert_fields("new account", &body, &fields);
        }
        (command, Decision::Entry { entry, .. }) => {
            check_entry_body(model, ids, command, entry, &body, next_event_seq);
        }
        (_, Decision::Declined(declined)) => check_problem(declined, &body),
        (command, decision) => unreachable!("{decision:?} does not answer {command:?}"),
    }
}

fn check_entry_body(
    model: &Model,
    ids: &ChargeIds,
    command: &Command,
    entry: &Entry,
    body: &Value,
    next_event_seq: Value,
) {
    let named = |kind: EntryKind, number: u64| {
        let id = ids.entry_id(kind, number);
        assert_eq!(
            ids.entry_number(kind, &id),
            Some(number),
            "{id} names entry {number}"
        );
        id
    };
    match (command, entry) {
        (Command::CreateCharge(charge), &Entry::Charge { number }) => {
            let id = named(EntryKind::Charge, number);
            let charge = ModelCharge::new(charge, id, false, model.events.len() as u64 + 1);
            assert_fields("new charge", body, &charge_fields(&charge));
            assert_eq!(body.get("expires_at"), None, "{body}");
        }
        (Command::Authorize(new), &Entry::Authorization { number, lifetime_s }) => {
            let id = named(EntryKind::Charge, number);
            let charge = ModelCharge::new(&new.charge, id, true, model.events.len() as u64 + 1);
            assert_fields("new authorization", body, &charge_fields(&charge));
            let life_ms = time_ms(body, "expires_at") - time_ms(body, "created_at");
            assert_eq!(life_ms, u128::from(lifetime_s) * 1000, "expires_at: {body}");
        }
        (
            Command::SettleCharge { .. },
            &Entry::Settlement {
                charge,
                status,
                captured,
                ..
            },
        ) => {
            let mut settled = model.charges[&charge].clone();
            (settled.status, settled.captured) = (status, captured);
            assert_fields("settled charge", body, &charge_fields(&settled));
            assert_eq!(body["created_at"], json!(settled.created_at), "{body}");
            assert_eq!(body.get("expires_at"), None, "a settled charge: {body}");
        }
        (
            Command::CreateRefund(new),
            &Entry::Refund {
                charge,
                number,
                amount,
            },
        ) => {
            let refunded = &model.charges[&charge];
            let fields = [
                ("id", json!(named(EntryKind::Refund, number))),
                ("charge", json!(refunded.id)),
                ("amount", json!(amount)),
                ("currency", json!(refunded.currency)),
                ("status", json!("succeeded")),
                ("metadata", metadata_json(new.metadata.pairs())),
                ("event_seq", next_event_seq),
            ];
            assert_fields("new refund", body, &fields);
        }
        (Command::CreateTransfer(new), &Entry::Transfer { number }) => {
            let legs: Vec<Value> = legs(&new.legs)
                .into_iter()
                .map(|(source, destination, amount)| {
                    json!({"source": source, "destination": destination, "amount": amount})
                })
                .collect();
            let fields = [
                ("id", json!(named(EntryKind::Transfer, number))),
                ("status", json!("succeeded")),
                ("currency", json!(new.currency.as_str())),
                ("legs", Value::Array(legs)),
                ("metadata", metadata_json(new.metadata.pairs())),
                ("event_seq", next_event_seq),
            ];
            assert_fields("new transfer", body, &fields);
        }
        (command, entry) => unreachable!("{entry:?} does not answer {command:?}"),
    }
}

fn metadata_json(pairs: &BTreeMap<String, String>) -> Value {
    Value::Object(pairs.iter().map(|(k, v)| (k.clone(), json!(v))).collect())
}

fn check_problem(declined: &Declined, body: &Value) {
    let mut fields = vec![
        ("type", json!(format!("/problems/{}", declined.problem))),
        ("status", json!(declined.status)),
    ];
    if let Some(detail) = &declined.detail {
        fields.push(("detail", json!(detail)));
    }
    assert_fields("decline", body, &fields);
    assert_eq!(
        body.get("leg"),
        declined.leg.map(|leg| json!(leg)).as_ref(),
        "only a transfer's decline names a leg: {body}"
    );
}

fn model_view(stored: &onceledger_core::ledger::Account) -> ModelAccount {
    ModelAccount {
        currency: stored.currency.as_str().to_owned(),
        overdraft_limit: stored.overdraft_limit,
        debits_posted: stored.debits_posted,
        credits_posted: stored.credits_posted,
        debits_pending: stored.debits_pending,
        credits_pending: stored.credits_pending,
    }
}

/// After every step on a healthy store: every account's four totals and `available` match the
/// model. These reads count towards an armed fault too; one that strikes here ends the check.
pub(super) fn check_balances(system: &System, model: &Model) {
    for (id, expected) in &model.accounts {
        let Ok(account_id) = AccountId::parse(id) else {
            unreachable!("model ids are valid");
        };
        match system.store().account(TenantId::DEFAULT, &account_id) {
            Ok(Some(account)) => {
                assert_eq!(&model_view(&account), expected, "account {id}");
                assert_eq!(i128::from(account.balance()), expected.balance());
                assert_eq!(account.available(), expected.available(), "account {id}");
            }
            Err(_) if system.disk.fault_struck() => return,
            other => panic!("account {id} is {other:?}"),
        }
    }
}

/// The whole store against the model: accounts, charges and their progress, refunds,
/// transfers, stored answers, events, the invariant checker.
pub(super) fn check_store(system: &System, model: &Model) {
    let store = system.store();
    let tenant = TenantId::DEFAULT;
    for id in ACCOUNT_IDS {
        let Ok(account_id) = AccountId::parse(id) else {
            unreachable!("pool ids are valid");
        };
        let stored = match store.account(tenant, &account_id) {
            Ok(stored) => stored,
            Err(error) => panic!("account {id} unreadable: {error}"),
        };
        match (stored, model.accounts.get(id)) {
            (None, None) => {}
            (Some(stored), Some(expected)) => {
                assert_eq!(&model_view(&stored), expected, "account {id}");
                assert_eq!(stored.available(), expected.available(), "account {id}");
            }
            (stored, expected) => panic!("account {id}: stored {stored:?}, model {expected:?}"),
        }
    }
    check_entries(system, model);
    for k in 0..KEYS_COUNT {
        let name = key_name(k);
        let Ok(key) = IdempotencyKey::parse(name.as_bytes()) else {
            unreachable!("pool keys are valid");
        };
        let stored = match store.idempotency_record(tenant, &key) {
            Ok(stored) => stored,
            Err(error) => panic!("key {name} unreadable: {error}"),
        };
        match (stored, model.finished.get(&name)) {
            (None, None) => {}
            (Some(stored), Some(expected)) => {
                assert_eq!(stored.fingerprint, expected.fingerprint, "key {name}");
                assert_eq!(stored.status, expected.status, "key {name}");
                assert_eq!(
                    stored.body,
                    expected.body.as_ref(),
                    "key {name}: the stored answer is the one the client got"
                );
            }
            (stored, expected) => panic!("key {name}: stored {stored:?}, model {expected:?}"),
        }
    }
    check_events(system, model);
    let report = match check::verify(store) {
        Ok(report) => report,
        Err(error) => panic!("the invariant checker cannot read the store: {error}"),
    };
    assert!(
        report.violations.is_empty(),
        "invariants: {:?}",
        report.violations
    );
    let open = model
        .charges
        .values()
        .filter(|c| c.status == ChargeStatus::Authorized)
        .count();
    assert_eq!(report.accounts, model.accounts.len() as u64);
    assert_eq!(report.charges, model.charges.len() as u64);
    assert_eq!(report.authorizations_open, open as u64);
    assert_eq!(report.refunds, model.refunds.len() as u64);
    assert_eq!(report.transfers, model.transfers.len() as u64);
    assert_eq!(report.events, model.events.len() as u64);
    assert_eq!(report.idempotency_records, model.finished.len() as u64);
}

/// Every charge, refund and transfer the model knows, read by its id; ids it never learned name
/// nothing.
fn check_entries(system: &System, model: &Model) {
    let store = system.store();
    let tenant = TenantId::DEFAULT;
    for (number, expected) in &model.charges {
        let (charge, progress) = match store.charge(tenant, &expected.id) {
            Ok(Some(found)) => found,
            other => panic!("charge {} ({number}) is {other:?}", expected.id),
        };
        assert_eq!(charge.number, *number, "{}", expected.id);
        assert_eq!(
            (
                charge.amount.minor(),
                progress.status,
                progress.amount_captured,
                progress.amount_refunded,
                charge.event_seq
            ),
            (
                expected.amount,
                expected.status,
                expected.captured,
                expected.refunded,
                expected.event_seq
            ),
            "charge {} ({number}): amount, status, captured, refunded, event",
            expected.id
        );
    }
    for (id, &(number, amount)) in &model.refunds {
        match store.refund(tenant, id) {
            Ok(Some((refund, _))) => {
                assert_eq!((refund.number, refund.amount.minor()), (number, amount));
            }
            other => panic!("refund {id} is {other:?}"),
        }
    }
    for (id, &(number, legs)) in &model.transfers {
        match store.transfer(tenant, id) {
            Ok(Some(transfer)) => {
                assert_eq!((transfer.number, transfer.legs.len()), (number, legs))
            }
            other => panic!("transfer {id} is {other:?}"),
        }
    }
    let unknown = UNKNOWN_CHARGE_IDS.iter().map(|id| (*id).to_owned());
    for id in unknown.chain(model.other_entry_ids.iter().cloned()) {
        match store.charge(tenant, &id) {
            Ok(None) => {}
            other => panic!("{id} names no charge, yet it is {other:?}"),
        }
    }
}

fn check_events(system: &System, model: &Model) {
    let events = match system.store().events_after(0, OPS_MAX * BURST_MAX + 1) {
        Ok(events) => events,
        Err(error) => panic!("outbox unreadable: {error}"),
    };
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event.seq, i as u64 + 1, "the outbox is dense from 1");
    }
    let seen: Vec<ModelEvent> = events.iter().map(model_event).collect();
    assert_eq!(seen, model.events, "the outbox");
}

/// An event as the model records it; an entry's own event names it.
fn model_event(event: &Event) -> ModelEvent {
    let created = |charge: &Charge| {
        assert_eq!(charge.event_seq, event.seq, "a charge names its event");
        (
            charge.number,
            charge.source.as_str().to_owned(),
            charge.destination.as_str().to_owned(),
            charge.amount.minor(),
        )
    };
    match &event.body {
        EventBody::AccountCreated(account) => {
            ModelEvent::AccountCreated(account.id.as_str().to_owned())
        }
        EventBody::ChargeSucceeded(charge) => {
            let (number, source, destination, amount) = created(charge);
            ModelEvent::Charge {
                number,
                source,
                destination,
                amount,
            }
        }
        EventBody::ChargeAuthorized { charge, .. } => {
            let (number, source, destination, amount) = created(charge);
            ModelEvent::Authorized {
                number,
                source,
                destination,
                amount,
            }
        }
        EventBody::ChargeSettled {
            charge,
            status,
            amount_captured,
        } => ModelEvent::Settled {
            charge: charge.number,
            status: *status,
            captured: *amount_captured,
        },
        EventBody::RefundSucceeded { refund, charge } => {
            assert_eq!(refund.event_seq, event.seq, "a refund names its event");
            ModelEvent::Refund {
                number: refund.number,
                charge: charge.number,
                amount: refund.amount.minor(),
            }
        }
        EventBody::TransferSucceeded(transfer) => {
            assert_eq!(transfer.event_seq, event.seq, "a transfer names its event");
            ModelEvent::Transfer {
                number: transfer.number,
                legs: legs(&transfer.legs),
            }
        }
    }
}
