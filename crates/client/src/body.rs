//! The checks a request body can pass before it is sent, where API.md sets limits the client can
//! see (amounts, currencies, account ids, metadata), and the charge id a path is built from.
//!
//! The server checks all of this again; checking here too turns a request that could only earn a
//! 400 into an error that names the bad part, before a key is spent on it.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

/// Largest amount in minor units (API.md: `1 ..= 2^63-1`).
pub const AMOUNT_MAX: u64 = i64::MAX as u64;
/// Most characters of an account id (API.md: `^[A-Za-z0-9_.:-]{1,64}$`).
pub const ACCOUNT_ID_CHARS_MAX: usize = 64;
/// Most metadata pairs of one object.
pub const METADATA_PAIRS_MAX: usize = 16;
/// Most characters of a metadata key.
pub const METADATA_KEY_CHARS_MAX: usize = 40;
/// Most characters of a metadata value.
pub const METADATA_VALUE_CHARS_MAX: usize = 500;
/// Most characters of a charge id put into a path. Ids are opaque and today 29 characters
/// (`ch_` and 26 base32 digits); the bound only keeps a wrong argument from making a long URL.
pub const CHARGE_ID_CHARS_MAX: usize = 255;
/// Shortest `expires_in` of an authorization (API.md: `60..=2592000` seconds).
pub const EXPIRES_IN_SECS_MIN: u32 = 60;
/// Longest `expires_in` of an authorization: 30 days.
pub const EXPIRES_IN_SECS_MAX: u32 = 2_592_000;
const _: () = assert!(EXPIRES_IN_SECS_MAX == 30 * 24 * 60 * 60);
/// Most legs of one transfer (API.md: `1..=16`).
pub const TRANSFER_LEGS_MAX: usize = 16;

/// A body part that API.md would refuse, found before sending.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BodyError {
    /// An amount outside `1..=AMOUNT_MAX`; `leg` is the transfer leg it is in, if any.
    Amount { amount: u64, leg: Option<usize> },
    /// Not three upper-case ASCII letters.
    Currency(String),
    /// Not `^[A-Za-z0-9_.:-]{1,64}$`.
    AccountId(String),
    /// More than `METADATA_PAIRS_MAX` pairs.
    MetadataPairs(usize),
    /// A key longer than `METADATA_KEY_CHARS_MAX` characters, or a value longer than
    /// `METADATA_VALUE_CHARS_MAX`, or an empty key.
    MetadataPair(String),
    /// A transfer with no leg or with more than `TRANSFER_LEGS_MAX`.
    LegCount(usize),
    /// A charge id that cannot stand as one path segment.
    ChargeId(String),
    /// An authorization's `expires_in` outside `EXPIRES_IN_SECS_MIN..=EXPIRES_IN_SECS_MAX`.
    ExpiresIn(u32),
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::Amount { amount, leg } => {
                if let Some(leg) = leg {
                    write!(f, "leg {leg}: ")?;
                }
                write!(f, "amount {amount} is not 1 to {AMOUNT_MAX} minor units")
            }
            BodyError::Currency(text) => {
                write!(f, "currency {text:?} is not three upper-case letters")
            }
            BodyError::AccountId(text) => write!(
                f,
                "account id {text:?} is not 1 to {ACCOUNT_ID_CHARS_MAX} of A-Z a-z 0-9 _ . : -"
            ),
            BodyError::MetadataPairs(count) => write!(
                f,
                "{count} metadata pairs; at most {METADATA_PAIRS_MAX} are allowed"
            ),
            BodyError::MetadataPair(key) => write!(
                f,
                "metadata key {key:?}: keys are 1 to {METADATA_KEY_CHARS_MAX} characters, values \
                 at most {METADATA_VALUE_CHARS_MAX}"
            ),
            BodyError::LegCount(count) => write!(
                f,
                "{count} legs; a transfer has 1 to {TRANSFER_LEGS_MAX} legs"
            ),
            BodyError::ChargeId(text) => write!(
                f,
                "{text:?} is not a charge id (1 to {CHARGE_ID_CHARS_MAX} of A-Z a-z 0-9 _ . : -, \
                 starting with a letter or digit)"
            ),
            BodyError::ExpiresIn(secs) => write!(
                f,
                "expires_in {secs} s is not {EXPIRES_IN_SECS_MIN} to {EXPIRES_IN_SECS_MAX} s"
            ),
        }
    }
}

impl std::error::Error for BodyError {}

/// An amount the contract accepts, or the error naming it (and its leg, in a transfer).
pub fn check_amount(amount: u64, leg: Option<usize>) -> Result<u64, BodyError> {
    if (1..=AMOUNT_MAX).contains(&amount) {
        Ok(amount)
    } else {
        Err(BodyError::Amount { amount, leg })
    }
}

pub fn check_currency(currency: &str) -> Result<(), BodyError> {
    if currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(BodyError::Currency(currency.to_owned()))
    }
}

/// Account ids and charge ids share one alphabet: what API.md allows for client-chosen ids.
fn is_id_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b':' | b'-')
}

pub fn check_account_id(id: &str) -> Result<(), BodyError> {
    if (1..=ACCOUNT_ID_CHARS_MAX).contains(&id.len()) && id.bytes().all(is_id_byte) {
        Ok(())
    } else {
        Err(BodyError::AccountId(id.to_owned()))
    }
}

pub fn check_metadata(metadata: &BTreeMap<String, String>) -> Result<(), BodyError> {
    if metadata.len() > METADATA_PAIRS_MAX {
        return Err(BodyError::MetadataPairs(metadata.len()));
    }
    for (key, value) in metadata {
        let key_chars = key.chars().count();
        if key_chars == 0
            || key_chars > METADATA_KEY_CHARS_MAX
            || value.chars().count() > METADATA_VALUE_CHARS_MAX
        {
            return Err(BodyError::MetadataPair(key.clone()));
        }
    }
    Ok(())
}

/// The id of a charge, checked to be one safe path segment: `/v1/charges/{id}/capture` must not
/// become another path (an id such as `../accounts` would, after a proxy normalises it). Ids are
/// opaque to the client; only their alphabet is checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ChargeId(String);

impl ChargeId {
    pub fn new(id: &str) -> Result<ChargeId, BodyError> {
        let starts_plain = id.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric());
        if starts_plain && id.len() <= CHARGE_ID_CHARS_MAX && id.bytes().all(is_id_byte) {
            Ok(ChargeId(id.to_owned()))
        } else {
            Err(BodyError::ChargeId(id.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ChargeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for ChargeId {
    type Err = BodyError;

    fn from_str(text: &str) -> Result<ChargeId, BodyError> {
        ChargeId::new(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards the path a capture or void is sent to: only a plain segment becomes a charge id.
    #[test]
    fn charge_ids_are_single_plain_path_segments() {
        for good in [
            "ch_abcdefghijklmnopqrstuvwxyz",
            "ch_00000000000000ff",
            "a",
            "x.y:z-1",
        ] {
            assert_eq!(ChargeId::new(good).map(|id| id.0), Ok(good.to_owned()));
        }
        let too_long = "c".repeat(CHARGE_ID_CHARS_MAX + 1);
        for bad in [
            "",
            ".",
            "..",
            "../accounts",
            "ch/1",
            "ch 1",
            "ch%2F",
            "-x",
            "ch?x=1",
        ] {
            assert_eq!(ChargeId::new(bad), Err(BodyError::ChargeId(bad.to_owned())));
        }
        assert!(ChargeId::new(&too_long).is_err());
    }

    /// Guards the limits API.md sets on amounts, currencies, account ids and metadata.
    #[test]
    fn the_contract_limits_are_checked_at_their_edges() {
        assert_eq!(check_amount(1, None), Ok(1));
        assert_eq!(check_amount(AMOUNT_MAX, Some(2)), Ok(AMOUNT_MAX));
        assert_eq!(
            check_amount(0, Some(3)),
            Err(BodyError::Amount {
                amount: 0,
                leg: Some(3)
            })
        );
        assert!(check_amount(AMOUNT_MAX + 1, None).is_err());
        assert!(check_currency("EUR").is_ok());
        for bad in ["eur", "EU", "EURO", "E1R", "ÉUR"] {
            assert!(check_currency(bad).is_err(), "{bad}");
        }
        assert!(check_account_id(&"a".repeat(ACCOUNT_ID_CHARS_MAX)).is_ok());
        assert!(check_account_id(&"a".repeat(ACCOUNT_ID_CHARS_MAX + 1)).is_err());
        assert!(check_account_id("").is_err());
        assert!(check_account_id("al ice").is_err());
        let pairs = |n: usize| (0..n).map(|i| (format!("k{i}"), "v".to_owned())).collect();
        assert!(check_metadata(&pairs(METADATA_PAIRS_MAX)).is_ok());
        assert_eq!(
            check_metadata(&pairs(METADATA_PAIRS_MAX + 1)),
            Err(BodyError::MetadataPairs(METADATA_PAIRS_MAX + 1))
        );
        let one = |k: String, v: String| BTreeMap::from([(k, v)]);
        let long_key = "k".repeat(METADATA_KEY_CHARS_MAX + 1);
        assert!(check_metadata(&one(long_key, String::new())).is_err());
        let long_value = "é".repeat(METADATA_VALUE_CHARS_MAX);
        assert!(
            check_metadata(&one("k".into(), long_value)).is_ok(),
            "characters, not bytes"
        );
        assert!(check_metadata(&one(String::new(), "v".into())).is_err());
    }
}
