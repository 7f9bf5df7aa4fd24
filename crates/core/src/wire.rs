//! The node-to-hub protocol: `POST /v1/replication/events` carries an [`EventBatch`] as JSON and
//! the hub answers with an [`Ack`]. The decoder is pure (no I/O, no panics) and fuzzed.
//!
//! The format has types of its own ([`WireEvent`] and what it holds), converted to and from the
//! store's `Event` at this boundary, so that changing a stored record cannot silently change what
//! goes over the network, nor the reverse. A hub re-checks every value while decoding: ids,
//! currencies, amounts and metadata are validated again (`ValueError`).
//!
//! Version 1, as JSON: `{"version":1,"origin":"NODE","events":[EVENT...]}`, an event being
//! `{"seq":N,"created_at_ms":MS,"body":{"account_created":ACCOUNT}}` or `{...,"body":
//! {"charge_succeeded":CHARGE}}`; currencies travel as three byte values (`[69,85,82]`), the form
//! version 1 has always had.
//!
//! Version 2 adds the payment lifecycle's events: `charge_authorized` (the charge and when it
//! expires), `charge_settled` (the charge, how it ended and what was captured),
//! `refund_succeeded` (the refund and the charge it refunds) and `transfer_succeeded`. **A batch
//! holding only version 1's kinds is still written as version 1, byte for byte** (a test pins
//! the bytes), so a hub of the build before keeps reading a node that sends nothing new; a batch
//! with any new kind is version 2. A hub reads both, and refuses a new kind inside a version 1
//! batch (no encoder writes one).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::is_valid_node_id;
use crate::ledger::{
    Account, AccountId, Amount, Charge, ChargeStatus, Currency, Metadata, Refund, Transfer,
    TransferLeg, ValueError,
};
use crate::limits::{JSON_INTEGER_MAX, REPLICATION_BATCH_EVENTS_MAX, TRANSFER_LEGS_MAX};
use crate::store::{Event, EventBody};

/// The newest version: bumped on any change a hub of the previous version could not read. A hub
/// reads every version from `WIRE_VERSION_MIN` to this one.
pub const WIRE_VERSION: u32 = 2;
/// The oldest version a hub still reads, and the one a batch of only its kinds is written in.
pub const WIRE_VERSION_MIN: u32 = 1;

/// The version a batch of `events` is written in: 1 when every event is of a kind version 1
/// knows (an account created, an immediate charge), else 2.
pub fn version_for(events: &[Event]) -> u32 {
    let only_version_1 = events.iter().all(|event| {
        matches!(
            event.body,
            EventBody::AccountCreated(_) | EventBody::ChargeSucceeded(_)
        )
    });
    if only_version_1 {
        WIRE_VERSION_MIN
    } else {
        WIRE_VERSION
    }
}

/// A decoded batch: its events validated and converted into the store's `Event`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventBatch {
    /// The version it travelled in (`WIRE_VERSION_MIN..=WIRE_VERSION`).
    pub version: u32,
    /// The sending node's id.
    pub origin: String,
    /// Consecutive events in sequence order.
    pub events: Vec<Event>,
}

/// A batch as it travels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireBatch {
    version: u32,
    origin: String,
    events: Vec<WireEvent>,
}

/// One outbox event as it travels. Every wire type refuses unknown fields: the decoder is as
/// strict as the OpenAPI document says (`additionalProperties: false`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireEvent {
    pub seq: u64,
    pub created_at_ms: u64,
    pub body: WireEventBody,
}

/// Externally tagged (`{"charge_succeeded": {...}}`), snake case. The first two kinds are version
/// 1's; the others need a version 2 batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireEventBody {
    AccountCreated(WireAccount),
    ChargeSucceeded(WireCharge),
    ChargeAuthorized(WireAuthorization),
    ChargeSettled(WireSettlement),
    RefundSucceeded(WireRefundEvent),
    TransferSucceeded(WireTransfer),
}

impl WireEventBody {
    /// The tag it travels under.
    pub fn kind(&self) -> &'static str {
        match self {
            WireEventBody::AccountCreated(_) => "account_created",
            WireEventBody::ChargeSucceeded(_) => "charge_succeeded",
            WireEventBody::ChargeAuthorized(_) => "charge_authorized",
            WireEventBody::ChargeSettled(_) => "charge_settled",
            WireEventBody::RefundSucceeded(_) => "refund_succeeded",
            WireEventBody::TransferSucceeded(_) => "transfer_succeeded",
        }
    }

    /// The first version that has this kind.
    pub fn since_version(&self) -> u32 {
        match self {
            WireEventBody::AccountCreated(_) | WireEventBody::ChargeSucceeded(_) => 1,
            _ => 2,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireAccount {
    pub id: String,
    pub currency: [u8; 3],
    /// Required although it may be `null` (`deserialize_with` turns off serde's default of
    /// reading a missing `Option` as `None`), as the document says.
    #[serde(deserialize_with = "Option::deserialize")]
    pub overdraft_limit: Option<u64>,
    pub debits_posted: u64,
    pub credits_posted: u64,
    pub debits_pending: u64,
    pub credits_pending: u64,
    pub created_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireCharge {
    /// The origin's charge number, not the id its clients know: that id is the number encrypted
    /// with the origin's own key (`ledger::ChargeIds`), which no hub has.
    pub number: u64,
    pub source: String,
    pub destination: String,
    pub amount: u64,
    pub currency: [u8; 3],
    pub metadata: BTreeMap<String, String>,
    pub created_at_ms: u64,
    pub event_seq: u64,
}

/// `charge_authorized`: a hold of `charge.amount` until it is captured, voided or expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireAuthorization {
    pub charge: WireCharge,
    pub expires_at_ms: u64,
}

/// `charge_settled`: how the authorization `charge` ended, as the origin decided it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireSettlement {
    pub charge: WireCharge,
    /// `succeeded` (captured), `canceled` (voided) or `expired`; never `authorized`.
    pub status: WireChargeStatus,
    /// 1 to `charge.amount` when `succeeded`, else 0.
    pub amount_captured: u64,
}

/// A charge's status as it travels: a string of its own, so renaming the store's enum changes
/// nothing here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireChargeStatus {
    Succeeded,
    Authorized,
    Canceled,
    Expired,
}

/// `refund_succeeded`: the refund, and the charge it refunds as created (so a hub finds its
/// mirror by `charge.event_seq`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireRefundEvent {
    pub refund: WireRefund,
    pub charge: WireCharge,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireRefund {
    /// The origin's entry number, like a charge's.
    pub number: u64,
    pub charge_number: u64,
    pub amount: u64,
    pub currency: [u8; 3],
    pub metadata: BTreeMap<String, String>,
    pub created_at_ms: u64,
    pub event_seq: u64,
}

/// `transfer_succeeded`: 1 to `TRANSFER_LEGS_MAX` legs, posted in order, all or none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireTransfer {
    pub number: u64,
    pub currency: [u8; 3],
    pub legs: Vec<WireTransferLeg>,
    pub metadata: BTreeMap<String, String>,
    pub created_at_ms: u64,
    pub event_seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireTransferLeg {
    pub source: String,
    pub destination: String,
    pub amount: u64,
}

impl From<&Event> for WireEvent {
    fn from(event: &Event) -> WireEvent {
        let body = match &event.body {
            EventBody::AccountCreated(a) => WireEventBody::AccountCreated(WireAccount {
                id: a.id.as_str().to_owned(),
                currency: currency_bytes(a.currency),
                overdraft_limit: a.overdraft_limit,
                debits_posted: a.debits_posted,
                credits_posted: a.credits_posted,
                debits_pending: a.debits_pending,
                credits_pending: a.credits_pending,
                created_at_ms: a.created_at_ms,
            }),
            EventBody::ChargeSucceeded(c) => WireEventBody::ChargeSucceeded(WireCharge::from(c)),
            EventBody::ChargeAuthorized {
                charge,
                expires_at_ms,
            } => WireEventBody::ChargeAuthorized(WireAuthorization {
                charge: WireCharge::from(charge),
                expires_at_ms: *expires_at_ms,
            }),
            EventBody::ChargeSettled {
                charge,
                status,
                amount_captured,
            } => WireEventBody::ChargeSettled(WireSettlement {
                charge: WireCharge::from(charge),
                status: WireChargeStatus::from(*status),
                amount_captured: *amount_captured,
            }),
            EventBody::RefundSucceeded { refund, charge } => {
                WireEventBody::RefundSucceeded(WireRefundEvent {
                    refund: WireRefund {
                        number: refund.number,
                        charge_number: refund.charge_number,
                        amount: refund.amount.minor(),
                        currency: currency_bytes(refund.currency),
                        metadata: refund.metadata.pairs().clone(),
                        created_at_ms: refund.created_at_ms,
                        event_seq: refund.event_seq,
                    },
                    charge: WireCharge::from(charge),
                })
            }
            EventBody::TransferSucceeded(t) => WireEventBody::TransferSucceeded(WireTransfer {
                number: t.number,
                currency: currency_bytes(t.currency),
                legs: (t.legs.iter())
                    .map(|leg| WireTransferLeg {
                        source: leg.source.as_str().to_owned(),
                        destination: leg.destination.as_str().to_owned(),
                        amount: leg.amount.minor(),
                    })
                    .collect(),
                metadata: t.metadata.pairs().clone(),
                created_at_ms: t.created_at_ms,
                event_seq: t.event_seq,
            }),
        };
        WireEvent {
            seq: event.seq,
            created_at_ms: event.created_at_ms,
            body,
        }
    }
}

impl From<&Charge> for WireCharge {
    fn from(c: &Charge) -> WireCharge {
        WireCharge {
            number: c.number,
            source: c.source.as_str().to_owned(),
            destination: c.destination.as_str().to_owned(),
            amount: c.amount.minor(),
            currency: currency_bytes(c.currency),
            metadata: c.metadata.pairs().clone(),
            created_at_ms: c.created_at_ms,
            event_seq: c.event_seq,
        }
    }
}

impl From<ChargeStatus> for WireChargeStatus {
    fn from(status: ChargeStatus) -> WireChargeStatus {
        match status {
            ChargeStatus::Succeeded => WireChargeStatus::Succeeded,
            ChargeStatus::Authorized => WireChargeStatus::Authorized,
            ChargeStatus::Canceled => WireChargeStatus::Canceled,
            ChargeStatus::Expired => WireChargeStatus::Expired,
        }
    }
}

impl From<WireChargeStatus> for ChargeStatus {
    fn from(status: WireChargeStatus) -> ChargeStatus {
        match status {
            WireChargeStatus::Succeeded => ChargeStatus::Succeeded,
            WireChargeStatus::Authorized => ChargeStatus::Authorized,
            WireChargeStatus::Canceled => ChargeStatus::Canceled,
            WireChargeStatus::Expired => ChargeStatus::Expired,
        }
    }
}

/// Why one event's values are refused: a value a ledger would refuse, or a rule of the event's
/// shape that no origin breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventError {
    Value(ValueError),
    /// A transfer of no legs or of more than `TRANSFER_LEGS_MAX`.
    LegCount,
    /// A transfer leg from an account to itself.
    LegToItself {
        leg: usize,
    },
    /// A settlement whose status is `authorized`.
    SettledAsAuthorized,
    /// A capture of nothing or of more than was held, or a void or expiry that captured something.
    CapturedAmount,
}

impl From<ValueError> for EventError {
    fn from(error: ValueError) -> EventError {
        EventError::Value(error)
    }
}

impl std::fmt::Display for EventError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EventError::Value(error) => error.fmt(f),
            EventError::LegCount => write!(f, "a transfer has 1 to {TRANSFER_LEGS_MAX} legs"),
            EventError::LegToItself { leg } => {
                write!(f, "transfer leg {leg} has the same source and destination")
            }
            EventError::SettledAsAuthorized => {
                f.write_str("a settlement is succeeded, canceled or expired")
            }
            EventError::CapturedAmount => {
                f.write_str("amount_captured is 1 to the charge's amount when succeeded, else 0")
            }
        }
    }
}

impl std::error::Error for EventError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            EventError::Value(error) => Some(error),
            _ => None,
        }
    }
}

/// Every number is an int64, as in every JSON document of the API.
fn in_json_range(numbers: &[u64]) -> Result<(), ValueError> {
    if numbers.iter().any(|n| *n > JSON_INTEGER_MAX) {
        return Err(ValueError::OutOfRange);
    }
    Ok(())
}

impl TryFrom<WireCharge> for Charge {
    type Error = ValueError;

    fn try_from(c: WireCharge) -> Result<Charge, ValueError> {
        in_json_range(&[c.number, c.created_at_ms, c.event_seq])?;
        Ok(Charge {
            number: c.number,
            source: AccountId::parse(&c.source)?,
            destination: AccountId::parse(&c.destination)?,
            amount: Amount::new(c.amount)?,
            currency: Currency::try_from(c.currency)?,
            metadata: Metadata::new(c.metadata)?,
            created_at_ms: c.created_at_ms,
            event_seq: c.event_seq,
        })
    }
}

impl TryFrom<WireAccount> for Account {
    type Error = ValueError;

    fn try_from(a: WireAccount) -> Result<Account, ValueError> {
        in_json_range(&[
            a.overdraft_limit.unwrap_or(0),
            a.debits_posted,
            a.credits_posted,
            a.debits_pending,
            a.credits_pending,
            a.created_at_ms,
        ])?;
        Ok(Account {
            id: AccountId::parse(&a.id)?,
            currency: Currency::try_from(a.currency)?,
            overdraft_limit: a.overdraft_limit,
            debits_posted: a.debits_posted,
            credits_posted: a.credits_posted,
            debits_pending: a.debits_pending,
            credits_pending: a.credits_pending,
            created_at_ms: a.created_at_ms,
        })
    }
}

impl TryFrom<WireRefund> for Refund {
    type Error = ValueError;

    fn try_from(r: WireRefund) -> Result<Refund, ValueError> {
        in_json_range(&[r.number, r.charge_number, r.created_at_ms, r.event_seq])?;
        Ok(Refund {
            number: r.number,
            charge_number: r.charge_number,
            amount: Amount::new(r.amount)?,
            currency: Currency::try_from(r.currency)?,
            metadata: Metadata::new(r.metadata)?,
            created_at_ms: r.created_at_ms,
            event_seq: r.event_seq,
        })
    }
}

impl TryFrom<WireTransfer> for Transfer {
    type Error = EventError;

    fn try_from(t: WireTransfer) -> Result<Transfer, EventError> {
        in_json_range(&[t.number, t.created_at_ms, t.event_seq])?;
        if t.legs.is_empty() || t.legs.len() > TRANSFER_LEGS_MAX {
            return Err(EventError::LegCount);
        }
        let mut legs = Vec::with_capacity(t.legs.len());
        for (leg, wire) in t.legs.into_iter().enumerate() {
            if wire.source == wire.destination {
                return Err(EventError::LegToItself { leg });
            }
            legs.push(TransferLeg {
                source: AccountId::parse(&wire.source)?,
                destination: AccountId::parse(&wire.destination)?,
                amount: Amount::new(wire.amount)?,
            });
        }
        Ok(Transfer {
            number: t.number,
            currency: Currency::try_from(t.currency)?,
            legs,
            metadata: Metadata::new(t.metadata)?,
            created_at_ms: t.created_at_ms,
            event_seq: t.event_seq,
        })
    }
}

/// A settlement's status and captured amount agree: a capture took 1 to the charge's amount, a
/// void or an expiry took nothing.
fn settled_body(s: WireSettlement) -> Result<EventBody, EventError> {
    let charge = Charge::try_from(s.charge)?;
    let status = ChargeStatus::from(s.status);
    let captured_fits = match status {
        ChargeStatus::Authorized => return Err(EventError::SettledAsAuthorized),
        ChargeStatus::Succeeded => (1..=charge.amount.minor()).contains(&s.amount_captured),
        ChargeStatus::Canceled | ChargeStatus::Expired => s.amount_captured == 0,
    };
    if !captured_fits {
        return Err(EventError::CapturedAmount);
    }
    Ok(EventBody::ChargeSettled {
        charge,
        status,
        amount_captured: s.amount_captured,
    })
}

impl TryFrom<WireEvent> for Event {
    type Error = EventError;

    /// Validates every value again: a hub takes nothing on trust. Every number is an int64, as
    /// in every JSON document of the API.
    fn try_from(wire: WireEvent) -> Result<Event, EventError> {
        in_json_range(&[wire.seq, wire.created_at_ms])?;
        let body = match wire.body {
            WireEventBody::AccountCreated(a) => EventBody::AccountCreated(Account::try_from(a)?),
            WireEventBody::ChargeSucceeded(c) => EventBody::ChargeSucceeded(Charge::try_from(c)?),
            WireEventBody::ChargeAuthorized(a) => {
                in_json_range(&[a.expires_at_ms])?;
                EventBody::ChargeAuthorized {
                    charge: Charge::try_from(a.charge)?,
                    expires_at_ms: a.expires_at_ms,
                }
            }
            WireEventBody::ChargeSettled(s) => settled_body(s)?,
            WireEventBody::RefundSucceeded(r) => EventBody::RefundSucceeded {
                refund: Refund::try_from(r.refund)?,
                charge: Charge::try_from(r.charge)?,
            },
            WireEventBody::TransferSucceeded(t) => {
                EventBody::TransferSucceeded(Transfer::try_from(t)?)
            }
        };
        Ok(Event {
            seq: wire.seq,
            created_at_ms: wire.created_at_ms,
            body,
        })
    }
}

fn currency_bytes(currency: Currency) -> [u8; 3] {
    let mut bytes = [0u8; 3];
    bytes.copy_from_slice(currency.as_str().as_bytes());
    bytes
}

/// The hub's answer. The sender moves its cursor to `applied_through` and resends from the event
/// after it: a duplicate, a gap or a refused event all end in the same rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ack {
    /// Every event of the origin up to this seq is applied or dead-lettered on the hub.
    pub applied_through: u64,
    pub applied: u64,
    pub duplicates: u64,
    pub dead_lettered: u64,
    /// The event the hub could not apply this time (it will be dead-lettered after enough tries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<RefusedEvent>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefusedEvent {
    pub seq: u64,
    pub reason: String,
    pub attempts: u32,
    pub attempts_max: u32,
}

/// Why a batch (or an acknowledgement) was refused as a whole (400): it is malformed, not
/// merely unappliable. `Display` is the problem's `detail`.
#[derive(Debug)]
#[non_exhaustive]
pub enum WireError {
    NotABatch(serde_json::Error),
    Version(u32),
    Origin,
    EventCount,
    FirstSeqZero,
    NotConsecutive,
    /// An event whose values a ledger would refuse (an invalid id, currency, amount, metadata),
    /// or whose shape no origin makes (a transfer of 17 legs, a void that captured something).
    InvalidEvent {
        seq: u64,
        source: EventError,
    },
    /// An event of a kind newer than the batch's version (no encoder writes one).
    KindNewerThanBatch {
        seq: u64,
        kind: &'static str,
        version: u32,
    },
    NotAnAck(serde_json::Error),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::NotABatch(e) => write!(f, "not an event batch: {e}"),
            WireError::Version(version) => write!(
                f,
                "batch version {version} is not supported (this hub reads {WIRE_VERSION_MIN} to {WIRE_VERSION})"
            ),
            WireError::Origin => f.write_str("origin is not a valid node id"),
            WireError::EventCount => {
                write!(
                    f,
                    "a batch holds 1 to {REPLICATION_BATCH_EVENTS_MAX} events"
                )
            }
            WireError::FirstSeqZero => f.write_str("sequence numbers start at 1"),
            WireError::NotConsecutive => {
                f.write_str("events must be consecutive, in sequence order")
            }
            WireError::InvalidEvent { seq, source } => write!(f, "event {seq}: {source}"),
            WireError::KindNewerThanBatch { seq, kind, version } => write!(
                f,
                "event {seq}: {kind} events are not part of batch version {version}"
            ),
            WireError::NotAnAck(e) => write!(f, "not an acknowledgement: {e}"),
        }
    }
}

impl std::error::Error for WireError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WireError::NotABatch(e) | WireError::NotAnAck(e) => Some(e),
            WireError::InvalidEvent { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Decodes and validates a batch: known version, a valid origin id, 1 to
/// `REPLICATION_BATCH_EVENTS_MAX` events numbered consecutively from at least 1, each of a kind
/// its version has.
pub fn decode_batch(body: &[u8]) -> Result<EventBatch, WireError> {
    let batch: WireBatch = serde_json::from_slice(body).map_err(WireError::NotABatch)?;
    if !(WIRE_VERSION_MIN..=WIRE_VERSION).contains(&batch.version) {
        return Err(WireError::Version(batch.version));
    }
    if !is_valid_node_id(&batch.origin) {
        return Err(WireError::Origin);
    }
    if batch.events.is_empty() || batch.events.len() > REPLICATION_BATCH_EVENTS_MAX {
        return Err(WireError::EventCount);
    }
    let first = batch.events[0].seq;
    if first == 0 {
        return Err(WireError::FirstSeqZero);
    }
    let consecutive = batch
        .events
        .iter()
        .zip(first..)
        .all(|(event, expected)| event.seq == expected);
    if !consecutive {
        return Err(WireError::NotConsecutive);
    }
    if let Some(newer) = (batch.events.iter()).find(|e| e.body.since_version() > batch.version) {
        return Err(WireError::KindNewerThanBatch {
            seq: newer.seq,
            kind: newer.body.kind(),
            version: batch.version,
        });
    }
    let events = (batch.events.into_iter())
        .map(|wire| {
            let seq = wire.seq;
            Event::try_from(wire).map_err(|source| WireError::InvalidEvent { seq, source })
        })
        .collect::<Result<_, _>>()?;
    Ok(EventBatch {
        version: batch.version,
        origin: batch.origin,
        events,
    })
}

/// Encodes `batch`'s events (in the version `version_for` says: a decoded version 2 batch of
/// only version 1's kinds is written as version 1).
pub fn encode_batch(batch: &EventBatch) -> Vec<u8> {
    encode_events(&batch.origin, &batch.events)
}

/// Encodes a batch from the sender's events, in the oldest version that has all their kinds
/// (`version_for`).
pub fn encode_events(origin: &str, events: &[Event]) -> Vec<u8> {
    #[derive(Serialize)]
    struct WireBatchRef<'a> {
        version: u32,
        origin: &'a str,
        events: Vec<WireEvent>,
    }
    // Plain structs with string keys: serialising into a Vec cannot fail.
    serde_json::to_vec(&WireBatchRef {
        version: version_for(events),
        origin,
        events: events.iter().map(WireEvent::from).collect(),
    })
    .unwrap_or_default()
}

pub fn decode_ack(body: &[u8]) -> Result<Ack, WireError> {
    serde_json::from_slice(body).map_err(WireError::NotAnAck)
}

pub fn encode_ack(ack: &Ack) -> Vec<u8> {
    serde_json::to_vec(ack).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(seqs: &[u64]) -> EventBatch {
        EventBatch {
            version: WIRE_VERSION_MIN,
            origin: "n0123456789ab".into(),
            events: seqs
                .iter()
                .map(|s| Event::account_created_for_test(*s, &format!("a{s}")))
                .collect(),
        }
    }

    #[test]
    fn a_batch_round_trips() {
        let sent = batch(&[3, 4, 5]);
        assert_eq!(decode_batch(&encode_batch(&sent)).ok(), Some(sent));
    }

    /// Version 1's bytes, written out: a change to the stored records (or to the wire types)
    /// that would change them fails here instead of reaching a hub of another build.
    #[test]
    fn version_1_bytes_are_fixed() {
        let text = String::from_utf8(encode_batch(&batch(&[7]))).expect("utf-8");
        let event = &text[text.find("\"events\"").expect("events")..];
        assert!(
            event.starts_with(
                "\"events\":[{\"seq\":7,\"created_at_ms\":1,\"body\":{\"account_created\":\
                 {\"id\":\"a7\",\"currency\":[69,85,82],\"overdraft_limit\":0,"
            ),
            "{text}"
        );
        assert!(
            text.starts_with("{\"version\":1,\"origin\":\"n0123456789ab\","),
            "{text}"
        );
    }

    #[test]
    fn malformed_batches_are_refused() {
        for (bad, why) in [
            (batch(&[]), "empty"),
            (batch(&[0, 1]), "seq 0"),
            (batch(&[1, 3]), "gap"),
            (batch(&[2, 1]), "order"),
            (
                EventBatch {
                    origin: "n:1".into(),
                    ..batch(&[1])
                },
                "origin",
            ),
        ] {
            assert!(decode_batch(&encode_batch(&bad)).is_err(), "{why} accepted");
        }
        let text = String::from_utf8(encode_batch(&batch(&[1]))).expect("utf-8");
        let invalid_id = text.replace("\"a1\"", "\"a 1\"");
        assert_ne!(invalid_id, text);
        assert!(decode_batch(invalid_id.as_bytes()).is_err());
        let future_version = text.replace("\"version\":1", "\"version\":3");
        assert_ne!(future_version, text);
        assert!(decode_batch(future_version.as_bytes()).is_err());
        let unknown_field = text.replacen("{", "{\"extra\":1,", 1);
        assert!(decode_batch(unknown_field.as_bytes()).is_err());
    }

    fn charge(number: u64, event_seq: u64, amount: u64) -> Charge {
        Charge {
            number,
            source: AccountId::parse("alice").expect("id"),
            destination: AccountId::parse("shop").expect("id"),
            amount: Amount::new(amount).expect("amount"),
            currency: Currency::parse("EUR").expect("currency"),
            metadata: Metadata::new(BTreeMap::from([("order".into(), "A-17".into())]))
                .expect("metadata"),
            created_at_ms: 10,
            event_seq,
        }
    }

    /// Two accounts, then one event of each lifecycle kind, numbered from 1.
    fn lifecycle_batch() -> EventBatch {
        let leg = |source: &str, destination: &str, amount: u64| TransferLeg {
            source: AccountId::parse(source).expect("id"),
            destination: AccountId::parse(destination).expect("id"),
            amount: Amount::new(amount).expect("amount"),
        };
        let bodies = vec![
            Event::account_created_for_test(1, "alice").body,
            Event::account_created_for_test(2, "shop").body,
            EventBody::ChargeAuthorized {
                charge: charge(1, 3, 100),
                expires_at_ms: 60_010,
            },
            EventBody::ChargeSettled {
                charge: charge(1, 3, 100),
                status: ChargeStatus::Succeeded,
                amount_captured: 70,
            },
            EventBody::RefundSucceeded {
                refund: Refund {
                    number: 3,
                    charge_number: 1,
                    amount: Amount::new(20).expect("amount"),
                    currency: Currency::parse("EUR").expect("currency"),
                    metadata: Metadata::default(),
                    created_at_ms: 12,
                    event_seq: 5,
                },
                charge: charge(1, 3, 100),
            },
            EventBody::TransferSucceeded(Transfer {
                number: 4,
                currency: Currency::parse("EUR").expect("currency"),
                legs: vec![leg("shop", "alice", 5), leg("alice", "shop", 1)],
                metadata: Metadata::default(),
                created_at_ms: 13,
                event_seq: 6,
            }),
            EventBody::ChargeSettled {
                charge: charge(5, 7, 9),
                status: ChargeStatus::Expired,
                amount_captured: 0,
            },
        ];
        EventBatch {
            version: WIRE_VERSION,
            origin: "n0123456789ab".into(),
            events: (1..)
                .zip(bodies)
                .map(|(seq, body)| Event {
                    seq,
                    created_at_ms: 1,
                    body,
                })
                .collect(),
        }
    }

    #[test]
    fn lifecycle_events_round_trip_in_version_2() {
        let sent = lifecycle_batch();
        let bytes = encode_batch(&sent);
        let text = String::from_utf8(bytes.clone()).expect("utf-8");
        assert!(text.starts_with("{\"version\":2,"), "{text}");
        assert_eq!(decode_batch(&bytes).ok(), Some(sent.clone()));
        // One new event is enough for version 2; none keeps version 1.
        assert_eq!(version_for(&sent.events[..2]), WIRE_VERSION_MIN);
        assert_eq!(version_for(&sent.events[1..3]), WIRE_VERSION);
    }

    /// Version 2's bytes of each new kind, written out, like version 1's above.
    #[test]
    fn version_2_bytes_are_fixed() {
        let text = String::from_utf8(encode_batch(&lifecycle_batch())).expect("utf-8");
        for fragment in [
            "{\"charge_authorized\":{\"charge\":{\"number\":1,\"source\":\"alice\",\
             \"destination\":\"shop\",\"amount\":100,\"currency\":[69,85,82],\
             \"metadata\":{\"order\":\"A-17\"},\"created_at_ms\":10,\"event_seq\":3},\
             \"expires_at_ms\":60010}}",
            "\"status\":\"succeeded\",\"amount_captured\":70}}",
            "{\"refund_succeeded\":{\"refund\":{\"number\":3,\"charge_number\":1,\"amount\":20,\
             \"currency\":[69,85,82],\"metadata\":{},\"created_at_ms\":12,\"event_seq\":5},\
             \"charge\":{\"number\":1,",
            "{\"transfer_succeeded\":{\"number\":4,\"currency\":[69,85,82],\"legs\":[\
             {\"source\":\"shop\",\"destination\":\"alice\",\"amount\":5},\
             {\"source\":\"alice\",\"destination\":\"shop\",\"amount\":1}],\"metadata\":{},\
             \"created_at_ms\":13,\"event_seq\":6}}",
            "\"status\":\"expired\",\"amount_captured\":0}}",
        ] {
            assert!(text.contains(fragment), "{fragment} not in {text}");
        }
    }

    #[test]
    fn a_new_kind_in_a_version_1_batch_is_refused() {
        let text = String::from_utf8(encode_batch(&lifecycle_batch())).expect("utf-8");
        let as_version_1 = text.replacen("\"version\":2", "\"version\":1", 1);
        assert!(matches!(
            decode_batch(as_version_1.as_bytes()),
            Err(WireError::KindNewerThanBatch {
                seq: 3,
                kind: "charge_authorized",
                version: 1
            })
        ));
        // Version 2 may carry old kinds only (no encoder writes that; a hub reads it).
        let old_kinds = String::from_utf8(encode_batch(&batch(&[1, 2]))).expect("utf-8");
        let as_version_2 = old_kinds.replacen("\"version\":1", "\"version\":2", 1);
        let read = decode_batch(as_version_2.as_bytes()).expect("version 2 of old kinds");
        assert_eq!((read.version, read.events), (2, batch(&[1, 2]).events));
    }

    /// Each edit of a valid version 2 batch that no origin would send, and why it is refused.
    #[test]
    fn malformed_lifecycle_events_are_refused() {
        let text = String::from_utf8(encode_batch(&lifecycle_batch())).expect("utf-8");
        let legs = "\"legs\":[{\"source\":\"shop\",\"destination\":\"alice\",\"amount\":5},\
                    {\"source\":\"alice\",\"destination\":\"shop\",\"amount\":1}]";
        assert!(text.contains(legs));
        let leg = "{\"source\":\"shop\",\"destination\":\"alice\",\"amount\":5}";
        let seventeen = format!("\"legs\":[{}]", vec![leg; 17].join(","));
        let sixteen = format!("\"legs\":[{}]", vec![leg; 16].join(","));
        assert!(decode_batch(text.replace(legs, &sixteen).as_bytes()).is_ok());
        let edits: Vec<(String, &str)> = vec![
            (text.replace(legs, "\"legs\":[]"), "no legs"),
            (text.replace(legs, &seventeen), "17 legs"),
            (
                text.replace(
                    "\"destination\":\"alice\",\"amount\":5",
                    "\"destination\":\"shop\",\"amount\":5",
                ),
                "a leg to itself",
            ),
            (
                text.replace("\"amount\":5}", "\"amount\":0}"),
                "a leg of nothing",
            ),
            (
                text.replace("\"status\":\"succeeded\"", "\"status\":\"authorized\""),
                "settled as authorized",
            ),
            (
                text.replace("\"status\":\"succeeded\"", "\"status\":\"captured\""),
                "an unknown status",
            ),
            (
                text.replace("\"amount_captured\":70", "\"amount_captured\":0"),
                "a capture of nothing",
            ),
            (
                text.replace("\"amount_captured\":70", "\"amount_captured\":101"),
                "a capture above the hold",
            ),
            (
                text.replace(
                    "\"status\":\"expired\",\"amount_captured\":0",
                    "\"status\":\"expired\",\"amount_captured\":1",
                ),
                "an expiry that captured",
            ),
            (
                text.replace(
                    "\"expires_at_ms\":60010",
                    "\"expires_at_ms\":9223372036854775808",
                ),
                "an expiry past int64",
            ),
            (
                text.replace(
                    "\"charge_number\":1",
                    "\"charge_number\":9223372036854775808",
                ),
                "a refund's charge number past int64",
            ),
            (
                text.replace("\"amount\":20,", "\"amount\":20,\"reason\":\"x\","),
                "an unknown field in a refund",
            ),
            (
                text.replace(
                    "\"currency\":[69,85,82],\"legs\"",
                    "\"currency\":[101,117,114],\"legs\"",
                ),
                "a lower-case transfer currency",
            ),
            (
                text.replace(
                    "\"expires_at_ms\":60010}",
                    "\"expires_at_ms\":60010,\"x\":1}",
                ),
                "an unknown field in an authorization",
            ),
        ];
        for (bad, why) in edits {
            assert_ne!(bad, text, "{why}: the edit changed nothing");
            assert!(decode_batch(bad.as_bytes()).is_err(), "{why} accepted");
        }
    }
}
