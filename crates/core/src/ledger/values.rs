//! Validated value types. Each constructor is the single place its rule lives.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::limits::{
    ACCOUNT_ID_BYTES_MAX, AMOUNT_MINOR_MAX, METADATA_KEY_CHARS_MAX, METADATA_PAIRS_MAX,
    METADATA_VALUE_CHARS_MAX,
};

/// Why a value was refused; its `Display` is shown to the client in a 400's `detail`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ValueError {
    AccountId,
    Currency,
    CurrencyNotAscii,
    Amount,
    MetadataPairs,
    MetadataKey,
    MetadataValue,
    /// A number past int64, the range every JSON document of the API declares.
    OutOfRange,
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueError::AccountId => write!(
                f,
                "account id must match ^[A-Za-z0-9_.:-]{{1,{ACCOUNT_ID_BYTES_MAX}}}$"
            ),
            ValueError::Currency => {
                f.write_str("currency must be three upper-case letters, e.g. EUR")
            }
            ValueError::CurrencyNotAscii => f.write_str("currency is not ASCII"),
            ValueError::Amount => write!(
                f,
                "amount must be an integer from 1 to {AMOUNT_MINOR_MAX} minor units"
            ),
            ValueError::MetadataPairs => {
                write!(f, "metadata has at most {METADATA_PAIRS_MAX} pairs")
            }
            ValueError::MetadataKey => write!(
                f,
                "metadata keys have 1 to {METADATA_KEY_CHARS_MAX} characters"
            ),
            ValueError::OutOfRange => f.write_str("a number is past 2^63-1"),
            ValueError::MetadataValue => write!(
                f,
                "metadata values have at most {METADATA_VALUE_CHARS_MAX} characters"
            ),
        }
    }
}

impl std::error::Error for ValueError {}

pub use crate::ids::TenantId;

/// A client-chosen account id: `^[A-Za-z0-9_.:-]{1,64}$`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct AccountId(String);

impl AccountId {
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-');
        if raw.is_empty() || raw.len() > ACCOUNT_ID_BYTES_MAX || !raw.bytes().all(allowed) {
            return Err(ValueError::AccountId);
        }
        Ok(AccountId(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Lets maps keyed by account id be searched with a `&str`.
impl std::borrow::Borrow<str> for AccountId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Three upper-case ASCII letters (ISO 4217 form). Stored as bytes so it is `Copy` and compact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "[u8; 3]")]
pub struct Currency([u8; 3]);

impl Currency {
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        match raw.as_bytes() {
            &[a, b, c] if [a, b, c].iter().all(u8::is_ascii_uppercase) => Ok(Currency([a, b, c])),
            _ => Err(ValueError::Currency),
        }
    }

    pub fn as_str(&self) -> &str {
        // The constructor admits only ASCII upper-case letters, and decoding re-validates.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A positive amount in minor units: `1 ..= 2^63-1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64")]
pub struct Amount(u64);

impl Amount {
    pub fn new(minor: u64) -> Result<Self, ValueError> {
        if minor == 0 || minor > AMOUNT_MINOR_MAX {
            return Err(ValueError::Amount);
        }
        Ok(Amount(minor))
    }

    pub fn minor(self) -> u64 {
        self.0
    }
}

/// Charge metadata: at most 16 pairs, keys 1..=40 characters, values up to 500 characters.
/// A sorted map, so the canonical form (and the fingerprint) ignores the order the client used.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "BTreeMap<String, String>")]
pub struct Metadata(BTreeMap<String, String>);

impl Metadata {
    pub fn new(pairs: BTreeMap<String, String>) -> Result<Self, ValueError> {
        if pairs.len() > METADATA_PAIRS_MAX {
            return Err(ValueError::MetadataPairs);
        }
        for (key, value) in &pairs {
            let key_chars = key.chars().count();
            if key_chars == 0 || key_chars > METADATA_KEY_CHARS_MAX {
                return Err(ValueError::MetadataKey);
            }
            if value.chars().count() > METADATA_VALUE_CHARS_MAX {
                return Err(ValueError::MetadataValue);
            }
        }
        Ok(Metadata(pairs))
    }

    pub fn pairs(&self) -> &BTreeMap<String, String> {
        &self.0
    }
}

// Decoding a stored record re-checks every rule, so a damaged file cannot smuggle in a value the
// constructors would refuse.
impl TryFrom<String> for AccountId {
    type Error = ValueError;
    fn try_from(raw: String) -> Result<Self, ValueError> {
        AccountId::parse(&raw)
    }
}

impl TryFrom<[u8; 3]> for Currency {
    type Error = ValueError;
    fn try_from(raw: [u8; 3]) -> Result<Self, ValueError> {
        Currency::parse(std::str::from_utf8(&raw).map_err(|_| ValueError::CurrencyNotAscii)?)
    }
}

impl TryFrom<u64> for Amount {
    type Error = ValueError;
    fn try_from(minor: u64) -> Result<Self, ValueError> {
        Amount::new(minor)
    }
}

impl TryFrom<BTreeMap<String, String>> for Metadata {
    type Error = ValueError;
    fn try_from(pairs: BTreeMap<String, String>) -> Result<Self, ValueError> {
        Metadata::new(pairs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_id_pattern() {
        assert!(AccountId::parse("alice").is_ok());
        assert!(AccountId::parse("a.b:c-d_9").is_ok());
        assert!(AccountId::parse(&"x".repeat(64)).is_ok());
        assert!(AccountId::parse(&"x".repeat(65)).is_err());
        assert!(AccountId::parse("").is_err());
        assert!(AccountId::parse("a b").is_err());
        assert!(AccountId::parse("a/b").is_err());
        assert!(AccountId::parse("é").is_err());
    }

    #[test]
    fn currency_is_three_upper_case_letters() {
        assert_eq!(
            Currency::parse("EUR").map(|c| c.to_string()),
            Ok("EUR".into())
        );
        for bad in ["eur", "EURO", "EU", "E1R", "", "ÄUR"] {
            assert!(Currency::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn amount_bounds() {
        assert!(Amount::new(0).is_err());
        assert!(Amount::new(1).is_ok());
        assert!(Amount::new(i64::MAX as u64).is_ok());
        assert!(Amount::new(i64::MAX as u64 + 1).is_err());
    }

    #[test]
    fn metadata_limits_count_characters_not_bytes() {
        let pairs = |n: usize| (0..n).map(|i| (format!("k{i}"), "v".to_string())).collect();
        assert!(Metadata::new(pairs(16)).is_ok());
        assert!(Metadata::new(pairs(17)).is_err());
        let one = |k: String, v: String| Metadata::new(BTreeMap::from([(k, v)]));
        assert!(one("é".repeat(40), "é".repeat(500)).is_ok());
        assert!(one("k".repeat(41), String::new()).is_err());
        assert!(one(String::new(), "v".into()).is_err());
        assert!(one("k".into(), "v".repeat(501)).is_err());
    }
}
