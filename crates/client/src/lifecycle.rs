//! The bodies of the payment lifecycle (API.md, "Payment lifecycle"): an authorization is a
//! charge with `"capture": false`, later captured, voided or refunded, each its own logical
//! operation with its own idempotency key.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::NewCharge;
use crate::body::{BodyError, ChargeId};
// Defined with the other limits in `body` (the leaf every request module uses), here by name.
pub use crate::body::{EXPIRES_IN_SECS_MAX, EXPIRES_IN_SECS_MIN};

/// `POST /v1/charges` with `"capture": false`: the amount is held, not moved, until a capture,
/// a void or the expiry.
#[derive(Debug, Clone, Serialize)]
pub struct NewAuthorization {
    #[serde(flatten)]
    charge: NewCharge,
    /// Always false: an authorization is the charge that does not capture. Private so that a
    /// `NewAuthorization` cannot be an immediate charge under another name.
    capture: bool,
    /// `None`: the server's `--authorization-ttl` (7 days by default).
    #[serde(rename = "expires_in", skip_serializing_if = "Option::is_none")]
    expires_in_secs: Option<u32>,
}

impl NewAuthorization {
    /// `expires_in_secs` must be `EXPIRES_IN_SECS_MIN..=EXPIRES_IN_SECS_MAX`.
    pub fn new(
        charge: NewCharge,
        expires_in_secs: Option<u32>,
    ) -> Result<NewAuthorization, BodyError> {
        if let Some(secs) = expires_in_secs
            && !(EXPIRES_IN_SECS_MIN..=EXPIRES_IN_SECS_MAX).contains(&secs)
        {
            return Err(BodyError::ExpiresIn(secs));
        }
        Ok(NewAuthorization {
            charge,
            capture: false,
            expires_in_secs,
        })
    }

    pub fn charge(&self) -> &NewCharge {
        &self.charge
    }

    pub fn expires_in_secs(&self) -> Option<u32> {
        self.expires_in_secs
    }
}

/// `POST /v1/charges/{id}/capture`: `{}` captures the authorized amount, `{"amount": N}` part
/// of it (the rest of the hold is released).
#[derive(Debug, Clone, Default, Serialize)]
pub struct NewCapture {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<u64>,
}

/// `POST /v1/charges/{id}/void`: the body is always `{}`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NewVoid {}

/// `POST /v1/refunds`. `amount` `None`: what is left to refund of the charge.
#[derive(Debug, Clone, Serialize)]
pub struct NewRefund {
    pub charge: ChargeId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<u64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn charge() -> NewCharge {
        NewCharge {
            source: "alice".into(),
            destination: "shop".into(),
            amount: 1250,
            currency: "EUR".into(),
            metadata: BTreeMap::new(),
        }
    }

    fn as_json(body: &impl Serialize) -> Value {
        serde_json::to_value(body).expect("plain structs serialize")
    }

    fn bytes(body: &impl Serialize) -> String {
        serde_json::to_string(body).expect("plain structs serialize")
    }

    /// Guards the authorize body: a charge plus `"capture": false`, `expires_in` only when given
    /// and only within API.md's range.
    #[test]
    fn an_authorization_is_a_charge_that_does_not_capture() {
        let plain = NewAuthorization::new(charge(), None).expect("no expiry is valid");
        assert_eq!(
            as_json(&plain),
            json!({"source": "alice", "destination": "shop", "amount": 1250,
                   "currency": "EUR", "capture": false})
        );
        let timed = NewAuthorization::new(charge(), Some(EXPIRES_IN_SECS_MIN)).expect("min");
        assert_eq!(as_json(&timed)["expires_in"], json!(60));
        assert!(NewAuthorization::new(charge(), Some(EXPIRES_IN_SECS_MAX)).is_ok());
        for bad in [0, EXPIRES_IN_SECS_MIN - 1, EXPIRES_IN_SECS_MAX + 1] {
            assert_eq!(
                NewAuthorization::new(charge(), Some(bad)).map(|_| ()),
                Err(BodyError::ExpiresIn(bad))
            );
        }
    }

    /// Guards the capture, void and refund bodies byte for byte: the server fingerprints the
    /// canonical body, and unknown fields are a 400.
    #[test]
    fn capture_void_and_refund_bodies_match_the_contract() {
        assert_eq!(bytes(&NewCapture::default()), "{}");
        assert_eq!(bytes(&NewCapture { amount: Some(7) }), r#"{"amount":7}"#);
        assert_eq!(bytes(&NewVoid {}), "{}");
        let id = ChargeId::new("ch_abc").expect("plain id");
        let full = NewRefund {
            charge: id.clone(),
            amount: None,
            metadata: BTreeMap::new(),
        };
        assert_eq!(bytes(&full), r#"{"charge":"ch_abc"}"#);
        let partial = NewRefund {
            charge: id,
            amount: Some(5),
            metadata: BTreeMap::from([("reason".to_owned(), "damaged".to_owned())]),
        };
        assert_eq!(
            bytes(&partial),
            r#"{"charge":"ch_abc","amount":5,"metadata":{"reason":"damaged"}}"#
        );
    }
}
