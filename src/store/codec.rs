//! Stored records: one version byte, then postcard.
//!
//! The version byte lets a later release read old records and migrate them; a record with a
//! version this build does not know is reported as corrupt rather than misread.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::StoreError;

/// A value stored in a table, with its format version.
pub trait Record: Serialize + DeserializeOwned {
    /// Bump when the serialised shape changes, and teach `decode` the old one.
    const VERSION: u8;
    /// Shown in corruption errors.
    const NAME: &'static str;
}

pub fn encode<R: Record>(record: &R) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(R::VERSION);
    // Serialising our own plain types into a Vec has no failure mode (no maps with non-string
    // keys, no I/O); an error here would be a bug in a type, found by the codec tests.
    match postcard::to_extend(record, out) {
        Ok(out) => out,
        Err(error) => panic!("{} cannot be encoded: {error}", R::NAME),
    }
}

pub fn decode<R: Record>(bytes: &[u8]) -> Result<R, StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt {
        record: R::NAME,
        detail,
    };
    match bytes.split_first() {
        Some((&version, body)) if version == R::VERSION => {
            postcard::from_bytes(body).map_err(|error| corrupt(format!("undecodable: {error}")))
        }
        Some((&version, _)) => Err(corrupt(format!("unknown version {version}"))),
        None => Err(corrupt("empty".into())),
    }
}
