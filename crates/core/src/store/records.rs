//! The records the store keeps besides the ledger's own types.

use serde::{Deserialize, Serialize};

use super::codec::{Record, decode_body_strictly};
use crate::idempotency::Fingerprint;
use crate::ledger::{
    Account, AccountId, Amount, Charge, ChargeProgress, ChargeStatus, Posting, PostingKind,
    PostingSide, Refund, Transfer,
};

impl Record for Account {
    const VERSION: u8 = 1;
    const NAME: &'static str = "account";
}

impl Record for Charge {
    const VERSION: u8 = 1;
    const NAME: &'static str = "charge";
}

impl Record for Posting {
    /// 2: `kind` (holds and releases); a version 1 posting is a posted one.
    const VERSION: u8 = 2;
    const NAME: &'static str = "posting";

    fn decode_older(version: u8, body: &[u8]) -> Result<Self, String> {
        #[derive(Serialize, Deserialize)]
        struct PostingV1 {
            account: AccountId,
            side: PostingSide,
            amount: Amount,
        }
        if version != 1 {
            return Err(format!("unknown version {version}"));
        }
        let old: PostingV1 = decode_body_strictly(body)?;
        Ok(Posting::new(
            &old.account,
            old.side,
            old.amount,
            PostingKind::Posted,
        ))
    }
}

impl Record for ChargeProgress {
    const VERSION: u8 = 1;
    const NAME: &'static str = "charge progress";
}

impl Record for Refund {
    const VERSION: u8 = 1;
    const NAME: &'static str = "refund";
}

impl Record for Transfer {
    const VERSION: u8 = 1;
    const NAME: &'static str = "transfer";
}

/// A finished request: its fingerprint and the exact answer to replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    pub fingerprint: Fingerprint,
    pub status: u16,
    /// The response body, byte for byte.
    pub body: Vec<u8>,
    pub finished_at_ms: u64,
    /// What the request did, so the invariant checker can match answers to effects.
    pub effect: Effect,
}

impl Record for IdempotencyRecord {
    const VERSION: u8 = 1;
    const NAME: &'static str = "idempotency record";
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Effect {
    /// A decline: nothing but the record itself was written.
    None,
    AccountCreated {
        account: AccountId,
        event_seq: u64,
    },
    ChargeSucceeded {
        charge_number: u64,
    },
    /// A redrive applied this dead letter's event.
    DeadLetterRedriven {
        id: u64,
    },
    /// A tenant or token was created or revoked (no ledger effect).
    Administrative,
    ChargeAuthorized {
        charge_number: u64,
    },
    /// A capture (`Succeeded`) or void (`Canceled`) ended this authorization (the answer is
    /// the charge, 200).
    ChargeSettled {
        charge_number: u64,
        status: ChargeStatus,
    },
    RefundSucceeded {
        refund_number: u64,
    },
    TransferSucceeded {
        transfer_number: u64,
    },
}

/// An outbox event as stored. Charge events refer to the charge (stored once, in `charges`);
/// account events carry the account as it was created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    pub created_at_ms: u64,
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    AccountCreated {
        account: Account,
    },
    ChargeSucceeded {
        charge_number: u64,
    },
    ChargeAuthorized {
        charge_number: u64,
    },
    /// The authorization's capture, void or expiry: its progress row says which, and `status`
    /// keeps what this event showed (a later refund changes the row, not the event).
    ChargeSettled {
        charge_number: u64,
        status: ChargeStatus,
        amount_captured: u64,
    },
    RefundSucceeded {
        refund_number: u64,
    },
    TransferSucceeded {
        transfer_number: u64,
    },
}

impl Record for EventRecord {
    const VERSION: u8 = 1;
    const NAME: &'static str = "outbox event";
}

/// An event ready to be shown or sent: the charge is joined in. This is also what the replicator
/// sends and what a dead letter keeps, so it is serde both ways (JSON on the wire, postcard stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    pub seq: u64,
    pub created_at_ms: u64,
    pub body: EventBody,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
// Externally tagged (`{"charge_succeeded": {...}}`): the one enum form both postcard and JSON read.
#[serde(rename_all = "snake_case")]
pub enum EventBody {
    AccountCreated(Account),
    ChargeSucceeded(Charge),
    // New kinds go at the end: dead letters stored by older builds keep decoding.
    ChargeAuthorized {
        charge: Charge,
        expires_at_ms: u64,
    },
    /// `status` is `succeeded` (captured), `canceled` or `expired`.
    ChargeSettled {
        charge: Charge,
        status: ChargeStatus,
        amount_captured: u64,
    },
    RefundSucceeded {
        refund: Refund,
        /// The refunded charge as created, so a hub finds its mirror and its accounts.
        charge: Charge,
    },
    TransferSucceeded(Transfer),
}

/// A hub's view of one origin node: how far its events are applied. `applied_through` is the highest
/// sequence number of which every event up to it was applied or dead-lettered; the next event the
/// hub accepts from that origin is `applied_through + 1`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginState {
    pub applied_through: u64,
    pub events_applied: u64,
    /// Dead letters of this origin not redriven yet.
    pub events_parked: u64,
    pub last_applied_at_ms: u64,
}

impl Record for OriginState {
    const VERSION: u8 = 1;
    const NAME: &'static str = "origin state";
}

/// One inbox row: what happened to event (origin, seq) on this hub. Written in the same transaction
/// as the event's effects, so "applied" and "effects present" cannot disagree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxRecord {
    /// Hub-wide order in which events took effect (dense from 1), so tests and operators can see
    /// that an origin's events were applied in sequence order.
    pub applied_index: u64,
    pub at_ms: u64,
    pub outcome: InboxOutcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InboxOutcome {
    Applied,
    DeadLettered { dead_letter_id: u64 },
}

impl Record for InboxRecord {
    const VERSION: u8 = 1;
    const NAME: &'static str = "inbox record";
}

/// An event the hub could not apply after the allowed attempts, parked with the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub id: u64,
    pub origin: String,
    pub event: Event,
    pub reason: String,
    pub attempts: u32,
    pub parked_at_ms: u64,
    /// When a redrive applied it; `None` while it is parked.
    pub redriven_at_ms: Option<u64>,
}

impl Record for DeadLetter {
    const VERSION: u8 = 1;
    const NAME: &'static str = "dead letter";
}

/// A test's `account.created` event: a new EUR account `id` with overdraft limit 0.
#[cfg(test)]
impl Event {
    pub(crate) fn account_created_for_test(seq: u64, id: &str) -> Event {
        let new = crate::ledger::NewAccount {
            id: crate::ledger::AccountId::parse(id).expect("valid id"),
            currency: crate::ledger::Currency::parse("EUR").expect("currency"),
            overdraft_limit: Some(0),
        };
        Event {
            seq,
            created_at_ms: 1,
            body: EventBody::AccountCreated(crate::ledger::Account::open(&new, 1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::codec::{decode, encode};
    use super::*;
    use crate::ledger::{Currency, Metadata, NewAccount};
    use std::collections::BTreeMap;

    fn round_trip<R: Record + PartialEq + std::fmt::Debug>(record: R) {
        let bytes = encode(&record);
        assert_eq!(bytes[0], R::VERSION);
        assert_eq!(decode::<R>(&bytes).expect("decodes"), record);
        let mut future = bytes.clone();
        future[0] = R::VERSION + 1;
        assert!(
            decode::<R>(&future).is_err(),
            "unknown versions are refused"
        );
        assert!(decode::<R>(&[]).is_err());
        assert!(decode::<R>(&bytes[..bytes.len() - 1]).is_err() || bytes.len() == 1);
    }

    #[test]
    fn every_record_round_trips() {
        let id = AccountId::parse("alice").expect("valid");
        let account = Account::open(
            &NewAccount {
                id: id.clone(),
                currency: Currency::parse("EUR").expect("valid"),
                overdraft_limit: None,
            },
            1,
        );
        let charge = Charge {
            number: 9,
            source: id.clone(),
            destination: AccountId::parse("shop").expect("valid"),
            amount: Amount::new(1250).expect("valid"),
            currency: Currency::parse("EUR").expect("valid"),
            metadata: Metadata::new(BTreeMap::from([("order".into(), "A-17".into())]))
                .expect("valid"),
            created_at_ms: 2,
            event_seq: 3,
        };
        round_trip(account.clone());
        round_trip(charge);
        round_trip(Posting::posted(
            &id,
            PostingSide::Credit,
            Amount::new(5).expect("valid"),
        ));
        round_trip(Posting::new(
            &id,
            PostingSide::Debit,
            Amount::new(6).expect("valid"),
            PostingKind::Release,
        ));
        round_trip(IdempotencyRecord {
            fingerprint: Fingerprint([7; 32]),
            status: 402,
            body: b"{\"type\":\"/problems/insufficient-funds\"}".to_vec(),
            finished_at_ms: 4,
            effect: Effect::ChargeSucceeded { charge_number: 9 },
        });
        round_trip(EventRecord {
            created_at_ms: 5,
            kind: EventKind::AccountCreated { account },
        });
        round_trip(EventRecord {
            created_at_ms: 6,
            kind: EventKind::ChargeSucceeded { charge_number: 9 },
        });
    }

    /// Postings stored before holds existed (version 1) read as posted ones, strictly.
    #[test]
    fn a_version_1_posting_reads_as_posted() {
        let id = AccountId::parse("alice").expect("valid");
        let amount = Amount::new(300).expect("valid");
        // Version byte, then postcard: the id (length, bytes), the side (variant 1: credit), the
        // amount (varint 300 = 0xac 0x02).
        let mut v1 = vec![1u8, 5];
        v1.extend_from_slice(b"alice");
        v1.extend_from_slice(&[1, 0xac, 0x02]);
        let read: Posting = super::super::codec::decode(&v1).expect("a version 1 posting");
        assert_eq!(read, Posting::posted(&id, PostingSide::Credit, amount));
        let mut long = v1.clone();
        long.push(0);
        assert!(super::super::codec::decode::<Posting>(&long).is_err());
        let over_long = [&v1[..7], &[0x81, 0x00, 0xac, 0x02][..]].concat();
        assert!(super::super::codec::decode::<Posting>(&over_long).is_err());
    }
}
