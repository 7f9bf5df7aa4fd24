//! `POST /v1/transfers` (API.md, "Transfers"): several legs posted in one transaction, all or
//! none. A `NewTransfer` can only be made valid, so a transfer the contract refuses for its
//! shape (no legs, too many, a zero amount, a bad currency) never reaches the wire.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::body::{BodyError, check_account_id, check_amount, check_currency, check_metadata};

pub use crate::body::TRANSFER_LEGS_MAX as LEGS_MAX;

/// One leg: `amount` moves from `source` to `destination`, seeing the balances the legs before
/// it left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Leg {
    pub source: String,
    pub destination: String,
    pub amount: u64,
}

/// A transfer checked against API.md's limits: 1 to `LEGS_MAX` legs, each amount in range and
/// each account id well formed, one currency, metadata within its limits.
#[derive(Debug, Clone, Serialize)]
pub struct NewTransfer {
    currency: String,
    legs: Vec<Leg>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    metadata: BTreeMap<String, String>,
}

impl NewTransfer {
    pub fn new(
        currency: String,
        legs: Vec<Leg>,
        metadata: BTreeMap<String, String>,
    ) -> Result<NewTransfer, BodyError> {
        if !(1..=LEGS_MAX).contains(&legs.len()) {
            return Err(BodyError::LegCount(legs.len()));
        }
        check_currency(&currency)?;
        for (index, leg) in legs.iter().enumerate() {
            check_account_id(&leg.source)?;
            check_account_id(&leg.destination)?;
            check_amount(leg.amount, Some(index))?;
        }
        check_metadata(&metadata)?;
        Ok(NewTransfer {
            currency,
            legs,
            metadata,
        })
    }

    pub fn currency(&self) -> &str {
        &self.currency
    }

    pub fn legs(&self) -> &[Leg] {
        &self.legs
    }

    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }
}

/// Why `SRC:DST:AMOUNT` is not a leg. Account ids may themselves hold `:`, so the form is read
/// from both ends: the amount after the last `:`, and then exactly one `:` between the ids.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LegParseError {
    /// Not three parts, or the ids hold a `:` of their own (the split would be a guess).
    Form(String),
    /// The part after the last `:` is not a whole number.
    Amount(String),
}

impl fmt::Display for LegParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LegParseError::Form(text) => write!(
                f,
                "{text:?} is not SRC:DST:AMOUNT (ids that contain ':' cannot be given this way)"
            ),
            LegParseError::Amount(text) => write!(f, "{text:?} is not an amount in minor units"),
        }
    }
}

impl std::error::Error for LegParseError {}

impl std::str::FromStr for Leg {
    type Err = LegParseError;

    /// `SRC:DST:AMOUNT`. Only the form is checked here; `NewTransfer::new` checks the values.
    fn from_str(text: &str) -> Result<Leg, LegParseError> {
        let form = || LegParseError::Form(text.to_owned());
        let (ids, amount) = text.rsplit_once(':').ok_or_else(form)?;
        let (source, destination) = ids.split_once(':').ok_or_else(form)?;
        if destination.contains(':') {
            return Err(form());
        }
        let amount = amount
            .parse()
            .map_err(|_| LegParseError::Amount(amount.to_owned()))?;
        Ok(Leg {
            source: source.to_owned(),
            destination: destination.to_owned(),
            amount,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::AMOUNT_MAX;

    fn leg(source: &str, destination: &str, amount: u64) -> Leg {
        Leg {
            source: source.into(),
            destination: destination.into(),
            amount,
        }
    }

    fn transfer(legs: Vec<Leg>) -> Result<NewTransfer, BodyError> {
        NewTransfer::new("EUR".into(), legs, BTreeMap::new())
    }

    /// Guards the leg count (1..=16) and that each leg's error names the leg.
    #[test]
    fn legs_are_validated_before_sending() {
        assert_eq!(transfer(vec![]).map(|_| ()), Err(BodyError::LegCount(0)));
        let many = |n: usize| (0..n).map(|i| leg("a", "b", i as u64 + 1)).collect();
        assert_eq!(transfer(many(LEGS_MAX)).map(|t| t.legs.len()), Ok(LEGS_MAX));
        assert_eq!(
            transfer(many(LEGS_MAX + 1)).map(|_| ()),
            Err(BodyError::LegCount(LEGS_MAX + 1))
        );
        let zero_in_second = vec![leg("a", "b", 1), leg("b", "c", 0)];
        assert_eq!(
            transfer(zero_in_second).map(|_| ()),
            Err(BodyError::Amount {
                amount: 0,
                leg: Some(1)
            })
        );
        assert!(transfer(vec![leg("a", "b", AMOUNT_MAX + 1)]).is_err());
        assert_eq!(
            transfer(vec![leg("a", "b c", 1)]).map(|_| ()),
            Err(BodyError::AccountId("b c".into()))
        );
        let lower = NewTransfer::new("eur".into(), vec![leg("a", "b", 1)], BTreeMap::new());
        assert_eq!(lower.map(|_| ()), Err(BodyError::Currency("eur".into())));
    }

    /// Guards the transfer body: the legs in their order, metadata only when given.
    #[test]
    fn the_body_is_the_contract_shape() {
        let sale = transfer(vec![
            leg("customer", "merchant", 1000),
            leg("merchant", "platform", 30),
        ])
        .expect("valid");
        assert_eq!(
            serde_json::to_string(&sale).expect("serializes"),
            r#"{"currency":"EUR","legs":[{"source":"customer","destination":"merchant","amount":1000},{"source":"merchant","destination":"platform","amount":30}]}"#
        );
        let tagged = NewTransfer::new(
            "EUR".into(),
            vec![leg("a", "b", 1)],
            BTreeMap::from([("order".to_owned(), "A-17".to_owned())]),
        )
        .expect("valid");
        let value = serde_json::to_value(&tagged).expect("serializes");
        assert_eq!(value["metadata"]["order"], "A-17");
    }

    /// Guards the command line's `--leg SRC:DST:AMOUNT` reading, ambiguous forms refused.
    #[test]
    fn legs_parse_from_the_command_line_form() {
        assert_eq!("alice:shop:125".parse(), Ok(leg("alice", "shop", 125)));
        for ambiguous in ["a:b:c:1", "a:1", "a", "a:b:c:d:1"] {
            assert_eq!(
                ambiguous.parse::<Leg>(),
                Err(LegParseError::Form(ambiguous.into()))
            );
        }
        assert_eq!(
            "a:b:x".parse::<Leg>(),
            Err(LegParseError::Amount("x".into()))
        );
        assert_eq!(
            "a:b:-1".parse::<Leg>(),
            Err(LegParseError::Amount("-1".into()))
        );
    }
}
