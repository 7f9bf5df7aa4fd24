//! The reference model: accounts with their four totals, charges with their lifecycle, refunds,
//! transfers, the outbox, and every finished key's answer. `decide` writes the ledger rules of
//! API.md out again, in the order the core checks them (`ledger/charge.rs`,
//! `ledger/lifecycle.rs`, `writer/lifecycle.rs`), so that a decline names the same account.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use onceledger_core::idempotency::Fingerprint;
use onceledger_core::ledger::{ChargeStatus, Command, NewCharge, Settle, TransferLeg};
use onceledger_core::limits::AMOUNT_MINOR_MAX;
use onceledger_server::api::WriteIntent;
use serde_json::Value;

use crate::system::Answer;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ModelAccount {
    pub currency: String,
    pub overdraft_limit: Option<u64>,
    pub debits_posted: u64,
    pub credits_posted: u64,
    pub debits_pending: u64,
    pub credits_pending: u64,
}

impl ModelAccount {
    pub fn balance(&self) -> i128 {
        i128::from(self.credits_posted) - i128::from(self.debits_posted)
    }

    /// `balance - debits_pending`, as the core shows it: an i64, the lowest values clamped to
    /// `i64::MIN` (no limit can tell them apart).
    pub fn available(&self) -> i64 {
        let available = self.balance() - i128::from(self.debits_pending);
        i64::try_from(available).unwrap_or(i64::MIN)
    }

    fn within_limit(&self) -> bool {
        self.overdraft_limit
            .is_none_or(|limit| i128::from(self.available()) >= -i128::from(limit))
    }
}

/// A charge the model knows, by the id its first answer gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ModelCharge {
    pub id: String,
    pub source: String,
    pub destination: String,
    pub amount: u64,
    pub currency: String,
    pub metadata: BTreeMap<String, String>,
    /// Never `Expired`: no authorization of an input expires (see `EXPIRIES` in model.rs).
    pub status: ChargeStatus,
    pub captured: u64,
    pub refunded: u64,
    /// The seq of its `charge.succeeded` or `charge.authorized` event: every answer about the
    /// charge shows this one, also after a capture or void.
    pub event_seq: u64,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ModelEvent {
    AccountCreated(String),
    Charge {
        number: u64,
        source: String,
        destination: String,
        amount: u64,
    },
    Authorized {
        number: u64,
        source: String,
        destination: String,
        amount: u64,
    },
    Settled {
        charge: u64,
        status: ChargeStatus,
        captured: u64,
    },
    Refund {
        number: u64,
        charge: u64,
        amount: u64,
    },
    Transfer {
        number: u64,
        legs: Vec<(String, String, u64)>,
    },
}

/// A finished key: what it answered, byte for byte.
#[derive(Debug, Clone)]
pub(super) struct Finished {
    pub fingerprint: Fingerprint,
    pub status: u16,
    pub body: Bytes,
}

/// A request that got a 503 from a writer whose commit failed: maybe durable.
#[derive(Debug, Clone)]
pub(super) struct Uncertain {
    pub intent: WriteIntent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    Debit,
    Credit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Posted,
    Hold,
    Release,
}

/// One change of one of an account's four totals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ModelPosting {
    pub account: String,
    pub side: Side,
    pub kind: Kind,
    pub amount: u64,
}

fn posting(account: &str, side: Side, kind: Kind, amount: u64) -> ModelPosting {
    ModelPosting {
        account: account.to_owned(),
        side,
        kind,
        amount,
    }
}

/// A ledger entry the model expects a request to make (each takes the next entry number).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Entry {
    Charge {
        number: u64,
    },
    Authorization {
        number: u64,
        /// The authorization's life in seconds (`expires_at - created_at`).
        lifetime_s: u64,
    },
    /// A capture (`Succeeded`) or void (`Canceled`) of charge `charge`, as entry `entry`.
    Settlement {
        charge: u64,
        entry: u64,
        status: ChargeStatus,
        captured: u64,
    },
    Refund {
        charge: u64,
        number: u64,
        amount: u64,
    },
    Transfer {
        number: u64,
    },
}

/// A decline as its stored problem shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Declined {
    pub status: u16,
    pub problem: &'static str,
    /// `None`: not predicted (the dead letter the model never makes).
    pub detail: Option<String>,
    /// A transfer's failing leg.
    pub leg: Option<usize>,
}

fn declined(status: u16, problem: &'static str, detail: String) -> Declined {
    Declined {
        status,
        problem,
        detail: Some(detail),
        leg: None,
    }
}

fn not_found(account: &str) -> Declined {
    declined(
        404,
        "account-not-found",
        format!("account {account} does not exist"),
    )
}

fn overflow(account: &str) -> Declined {
    declined(
        400,
        "balance-overflow",
        format!("account {account} would exceed the largest posted total, 2^63-1"),
    )
}

fn insufficient(account: &str) -> Declined {
    declined(
        402,
        "insufficient-funds",
        format!(
            "account {account} cannot be debited that much: it would go below its overdraft limit"
        ),
    )
}

fn state_invalid(status: ChargeStatus) -> Declined {
    declined(
        400,
        "charge-state-invalid",
        format!("the charge is {}", status.as_str()),
    )
}

/// The ledger's decision for a new command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Decision {
    AccountCreated,
    Entry {
        entry: Entry,
        postings: Vec<ModelPosting>,
    },
    Declined(Declined),
}

impl Decision {
    pub fn status(&self) -> u16 {
        match self {
            Decision::AccountCreated => 201,
            Decision::Entry {
                entry: Entry::Settlement { .. },
                ..
            } => 200,
            Decision::Entry { .. } => 201,
            Decision::Declined(declined) => declined.status,
        }
    }
}

/// What the model expects the system to answer.
#[derive(Debug)]
pub(super) enum Expected {
    Replay(Finished),
    Mismatch,
    New(Decision),
}

#[derive(Debug, Default)]
pub(super) struct Model {
    pub accounts: BTreeMap<String, ModelAccount>,
    pub finished: HashMap<String, Finished>,
    pub events: Vec<ModelEvent>,
    /// The last ledger entry number taken (charges, settlements, refunds and transfers share
    /// one counter).
    pub entries: u64,
    /// By entry number.
    pub charges: BTreeMap<u64, ModelCharge>,
    /// Refunds and transfers by id: (entry number, amount or legs).
    pub refunds: BTreeMap<String, (u64, u64)>,
    pub transfers: BTreeMap<String, (u64, usize)>,
    /// Refund and transfer ids in the order they were learned: sent as charge ids, they name no
    /// charge.
    pub other_entry_ids: Vec<String>,
    pub uncertain: Vec<Uncertain>,
}

/// Applies `postings` to `accounts` in order, then checks the overdraft limit of each account
/// they debit (posted or held): `ledger::lifecycle::apply_all`. All or nothing.
fn post(
    accounts: &mut BTreeMap<String, ModelAccount>,
    postings: &[ModelPosting],
) -> Result<(), Declined> {
    let mut after = accounts.clone();
    for p in postings {
        let Some(account) = after.get_mut(&p.account) else {
            unreachable!("postings name accounts the model found: {p:?}");
        };
        let total = match (p.kind, p.side) {
            (Kind::Posted, Side::Debit) => &mut account.debits_posted,
            (Kind::Posted, Side::Credit) => &mut account.credits_posted,
            (Kind::Hold | Kind::Release, Side::Debit) => &mut account.debits_pending,
            (Kind::Hold | Kind::Release, Side::Credit) => &mut account.credits_pending,
        };
        *total = match p.kind {
            Kind::Release => match total.checked_sub(p.amount) {
                Some(total) => total,
                None => panic!("the model releases more than it holds: {p:?}"),
            },
            Kind::Posted | Kind::Hold => match total.checked_add(p.amount) {
                Some(total) if total <= AMOUNT_MINOR_MAX => total,
                _ => return Err(overflow(&p.account)),
            },
        };
    }
    for p in postings {
        let debited = p.side == Side::Debit && p.kind != Kind::Release;
        if debited && !after[&p.account].within_limit() {
            return Err(insufficient(&p.account));
        }
    }
    *accounts = after;
    Ok(())
}

impl Model {
    pub fn expect(&self, intent: &WriteIntent) -> Expected {
        match self.finished.get(intent.key.as_str()) {
            Some(done) if done.fingerprint == intent.fingerprint => Expected::Replay(done.clone()),
            Some(_) => Expected::Mismatch,
            None => Expected::New(self.decide(&intent.command)),
        }
    }

    /// The charge a client's id names, if the model learned that id from an answer.
    pub fn charge_named(&self, id: &str) -> Option<(u64, &ModelCharge)> {
        self.charges
            .iter()
            .find(|(_, charge)| charge.id == id)
            .map(|(number, charge)| (*number, charge))
    }

    fn decide(&self, command: &Command) -> Decision {
        let outcome = match command {
            // The model never replicates, so it holds no dead letters.
            Command::RedriveDeadLetter { .. } => Err(Declined {
                status: 404,
                problem: "dead-letter-not-found",
                detail: None,
                leg: None,
            }),
            // The model's operations are the ledger's; tenants and tokens are not among them.
            Command::CreateTenant { .. }
            | Command::CreateToken { .. }
            | Command::RevokeToken { .. } => {
                panic!("the model makes no tenant or token commands: {command:?}")
            }
            Command::CreateAccount(new) => {
                if self.accounts.contains_key(new.id.as_str()) {
                    Err(declined(
                        400,
                        "account-exists",
                        format!("account {} already exists", new.id.as_str()),
                    ))
                } else {
                    return Decision::AccountCreated;
                }
            }
            Command::CreateCharge(charge) => self.decide_charge(
                charge.source.as_str(),
                charge.destination.as_str(),
                charge.amount.minor(),
                charge.currency.as_str(),
                None,
            ),
            Command::Authorize(new) => {
                let lifetime_s = new.expires_in_s.unwrap_or(AUTHORIZATION_TTL_S);
                let charge = &new.charge;
                self.decide_charge(
                    charge.source.as_str(),
                    charge.destination.as_str(),
                    charge.amount.minor(),
                    charge.currency.as_str(),
                    Some(lifetime_s),
                )
            }
            Command::SettleCharge { charge, how } => self.decide_settle(charge, *how),
            Command::CreateRefund(new) => {
                self.decide_refund(&new.charge, new.amount.map(|a| a.minor()))
            }
            Command::CreateTransfer(new) => {
                let legs: Vec<(&str, &str, u64)> = new
                    .legs
                    .iter()
                    .map(|l| (l.source.as_str(), l.destination.as_str(), l.amount.minor()))
                    .collect();
                self.decide_transfer(new.currency.as_str(), &legs)
            }
        };
        match outcome {
            Ok((entry, postings)) => Decision::Entry { entry, postings },
            Err(declined) => Decision::Declined(declined),
        }
    }

    /// Both accounts, the source first (the writer's order), and their currencies, source first.
    fn pair(&self, source: &str, destination: &str, currency: &str) -> Result<(), Declined> {
        for id in [source, destination] {
            if !self.accounts.contains_key(id) {
                return Err(not_found(id));
            }
        }
        currency_matches(&self.accounts, [source, destination], currency)
    }

    /// An immediate charge (`lifetime_s` `None`) or an authorization. An immediate charge
    /// checks the destination's credits before the source's debits (`post_charge`); an
    /// authorization applies its holds source first (`apply_all`).
    fn decide_charge(
        &self,
        source: &str,
        destination: &str,
        amount: u64,
        currency: &str,
        lifetime_s: Option<u64>,
    ) -> Result<(Entry, Vec<ModelPosting>), Declined> {
        self.pair(source, destination, currency)?;
        let number = self.entries + 1;
        let (entry, postings) = match lifetime_s {
            None => (
                Entry::Charge { number },
                vec![
                    posting(destination, Side::Credit, Kind::Posted, amount),
                    posting(source, Side::Debit, Kind::Posted, amount),
                ],
            ),
            Some(lifetime_s) => (
                Entry::Authorization { number, lifetime_s },
                vec![
                    posting(source, Side::Debit, Kind::Hold, amount),
                    posting(destination, Side::Credit, Kind::Hold, amount),
                ],
            ),
        };
        post(&mut self.accounts.clone(), &postings)?;
        Ok((entry, postings))
    }

    fn decide_settle(&self, id: &str, how: Settle) -> Result<(Entry, Vec<ModelPosting>), Declined> {
        let Some((number, charge)) = self.charge_named(id) else {
            return Err(declined(404, "charge-not-found", format!("no charge {id}")));
        };
        if charge.status != ChargeStatus::Authorized {
            return Err(state_invalid(charge.status));
        }
        let held = charge.amount;
        let (source, destination) = (charge.source.as_str(), charge.destination.as_str());
        let mut postings = vec![
            posting(source, Side::Debit, Kind::Release, held),
            posting(destination, Side::Credit, Kind::Release, held),
        ];
        let (status, captured) = match how {
            Settle::Capture(requested) => {
                let captured = requested.map_or(held, |a| a.minor());
                if captured > held {
                    return Err(declined(
                        400,
                        "capture-exceeds-authorization",
                        format!("a capture of {captured} is more than the {held} authorized"),
                    ));
                }
                postings.push(posting(source, Side::Debit, Kind::Posted, captured));
                postings.push(posting(destination, Side::Credit, Kind::Posted, captured));
                (ChargeStatus::Succeeded, captured)
            }
            Settle::Void => (ChargeStatus::Canceled, 0),
            Settle::Expire => unreachable!("expiry is the writer's, never a request"),
        };
        post(&mut self.accounts.clone(), &postings)?;
        let entry = Entry::Settlement {
            charge: number,
            entry: self.entries + 1,
            status,
            captured,
        };
        Ok((entry, postings))
    }

    fn decide_refund(
        &self,
        id: &str,
        requested: Option<u64>,
    ) -> Result<(Entry, Vec<ModelPosting>), Declined> {
        let Some((number, charge)) = self.charge_named(id) else {
            return Err(declined(404, "charge-not-found", format!("no charge {id}")));
        };
        if charge.status != ChargeStatus::Succeeded {
            return Err(state_invalid(charge.status));
        }
        let refundable = charge.captured - charge.refunded;
        let amount = match requested {
            Some(amount) if amount <= refundable => amount,
            None if refundable > 0 => refundable,
            _ => {
                let requested = requested.unwrap_or(0);
                return Err(declined(
                    400,
                    "refund-exceeds-charge",
                    format!("{refundable} is left to refund of this charge, {requested} was asked"),
                ));
            }
        };
        let postings = vec![
            posting(&charge.destination, Side::Debit, Kind::Posted, amount),
            posting(&charge.source, Side::Credit, Kind::Posted, amount),
        ];
        post(&mut self.accounts.clone(), &postings)?;
        let entry = Entry::Refund {
            charge: number,
            number: self.entries + 1,
            amount,
        };
        Ok((entry, postings))
    }

    /// Each leg on the balances the legs before it left; a decline names its leg.
    fn decide_transfer(
        &self,
        currency: &str,
        legs: &[(&str, &str, u64)],
    ) -> Result<(Entry, Vec<ModelPosting>), Declined> {
        let mut accounts = self.accounts.clone();
        let mut postings = Vec::new();
        for (index, &(source, destination, amount)) in legs.iter().enumerate() {
            let leg = vec![
                posting(source, Side::Debit, Kind::Posted, amount),
                posting(destination, Side::Credit, Kind::Posted, amount),
            ];
            let posted = self
                .pair(source, destination, currency)
                .and_then(|()| post(&mut accounts, &leg));
            if let Err(mut declined) = posted {
                declined.detail = declined.detail.map(|d| format!("leg {index}: {d}"));
                declined.leg = Some(index);
                return Err(declined);
            }
            postings.extend(leg);
        }
        let entry = Entry::Transfer {
            number: self.entries + 1,
        };
        Ok((entry, postings))
    }

    /// Records a request that ran: its effects and its answer (whose body was checked against
    /// the decision already, so the ids and times in it are the ones to remember).
    pub fn apply(&mut self, intent: &WriteIntent, decision: &Decision, answer: &Answer) {
        match (&intent.command, decision) {
            (Command::CreateAccount(new), Decision::AccountCreated) => {
                self.accounts.insert(
                    new.id.as_str().to_owned(),
                    ModelAccount {
                        currency: new.currency.as_str().to_owned(),
                        overdraft_limit: new.overdraft_limit,
                        debits_posted: 0,
                        credits_posted: 0,
                        debits_pending: 0,
                        credits_pending: 0,
                    },
                );
                self.events
                    .push(ModelEvent::AccountCreated(new.id.as_str().to_owned()));
            }
            (command, Decision::Entry { entry, postings }) => {
                if let Err(declined) = post(&mut self.accounts, postings) {
                    unreachable!("decide() posted these: {declined:?}");
                }
                let body = super::expect::json_body(&answer.body);
                self.apply_entry(command, entry, &body);
            }
            _ => {}
        }
        self.finished.insert(
            intent.key.as_str().to_owned(),
            Finished {
                fingerprint: intent.fingerprint,
                status: answer.status,
                body: answer.body.clone(),
            },
        );
    }

    fn apply_entry(&mut self, command: &Command, entry: &Entry, body: &Value) {
        let id = body["id"].as_str().unwrap_or_default().to_owned();
        let event = match (command, entry) {
            (Command::CreateCharge(charge), &Entry::Charge { number }) => {
                self.add_charge(charge, number, id, false, body)
            }
            (Command::Authorize(new), &Entry::Authorization { number, .. }) => {
                self.add_charge(&new.charge, number, id, true, body)
            }
            (
                Command::SettleCharge { .. },
                &Entry::Settlement {
                    charge,
                    entry,
                    status,
                    captured,
                },
            ) => {
                self.entries = entry;
                let settled = self.charge_mut(charge);
                (settled.status, settled.captured) = (status, captured);
                ModelEvent::Settled {
                    charge,
                    status,
                    captured,
                }
            }
            (
                Command::CreateRefund(_),
                &Entry::Refund {
                    charge,
                    number,
                    amount,
                },
            ) => {
                self.entries = number;
                self.charge_mut(charge).refunded += amount;
                self.refunds.insert(id.clone(), (number, amount));
                self.other_entry_ids.push(id);
                ModelEvent::Refund {
                    number,
                    charge,
                    amount,
                }
            }
            (Command::CreateTransfer(new), &Entry::Transfer { number }) => {
                self.entries = number;
                self.transfers.insert(id.clone(), (number, new.legs.len()));
                self.other_entry_ids.push(id);
                ModelEvent::Transfer {
                    number,
                    legs: legs(&new.legs),
                }
            }
            (command, entry) => unreachable!("{entry:?} does not answer {command:?}"),
        };
        self.events.push(event);
    }

    /// A new charge or authorization, numbered `number`, named `id` by its answer `body`.
    fn add_charge(
        &mut self,
        charge: &NewCharge,
        number: u64,
        id: String,
        authorized: bool,
        body: &Value,
    ) -> ModelEvent {
        self.entries = number;
        let mut added = ModelCharge::new(charge, id, authorized, self.events.len() as u64 + 1);
        added.created_at = body["created_at"].as_str().unwrap_or_default().to_owned();
        let (source, destination, amount) = (
            added.source.clone(),
            added.destination.clone(),
            added.amount,
        );
        self.charges.insert(number, added);
        if authorized {
            ModelEvent::Authorized {
                number,
                source,
                destination,
                amount,
            }
        } else {
            ModelEvent::Charge {
                number,
                source,
                destination,
                amount,
            }
        }
    }

    fn charge_mut(&mut self, number: u64) -> &mut ModelCharge {
        match self.charges.get_mut(&number) {
            Some(charge) => charge,
            None => unreachable!("decide() found charge {number}"),
        }
    }
}

impl ModelCharge {
    /// `charge` as created (immediate, or `authorized`), its event the `event_seq`-th.
    pub fn new(charge: &NewCharge, id: String, authorized: bool, event_seq: u64) -> ModelCharge {
        let amount = charge.amount.minor();
        ModelCharge {
            id,
            source: charge.source.as_str().to_owned(),
            destination: charge.destination.as_str().to_owned(),
            amount,
            currency: charge.currency.as_str().to_owned(),
            metadata: charge.metadata.pairs().clone(),
            status: if authorized {
                ChargeStatus::Authorized
            } else {
                ChargeStatus::Succeeded
            },
            captured: if authorized { 0 } else { amount },
            refunded: 0,
            event_seq,
            created_at: String::new(),
        }
    }
}

/// A transfer's legs as (source, destination, amount).
pub(super) fn legs(legs: &[TransferLeg]) -> Vec<(String, String, u64)> {
    legs.iter()
        .map(|l| {
            (
                l.source.as_str().to_owned(),
                l.destination.as_str().to_owned(),
                l.amount.minor(),
            )
        })
        .collect()
}

/// `--authorization-ttl`'s default, which the system under test runs with (`WriterConfig`'s).
pub(super) const AUTHORIZATION_TTL_S: u64 =
    onceledger_core::limits::AUTHORIZATION_TTL_DEFAULT.as_secs();

/// Each account's currency against the entry's, in the order given (`same_currency`).
fn currency_matches(
    accounts: &BTreeMap<String, ModelAccount>,
    ids: [&str; 2],
    currency: &str,
) -> Result<(), Declined> {
    for id in ids {
        let held = &accounts[id].currency;
        if held != currency {
            return Err(declined(
                400,
                "currency-mismatch",
                format!("account {id} holds {held}, the charge is in {currency}"),
            ));
        }
    }
    Ok(())
}
