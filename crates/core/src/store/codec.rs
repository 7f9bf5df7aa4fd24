//! Stored records: one version byte, then postcard.
//!
//! The version byte lets a later release read old records and migrate them; a record with a
//! version this build does not know is reported as corrupt rather than misread. Decoding is
//! strict: a record has exactly one stored form, the one `encode` writes. Bytes left over after a
//! complete record, and postcard's over-long varints (which `postcard` itself accepts), are
//! corruption, so that a damaged record is never read as another valid one (found by the
//! record_codec fuzz target).

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::StoreError;

/// A value stored in a table, with its format version.
pub trait Record: Serialize + DeserializeOwned {
    /// Bump when the serialised shape changes, and teach `decode` the old one.
    const VERSION: u8;
    /// Shown in corruption errors.
    const NAME: &'static str;

    /// Reads the body of a record stored with an older `version` (below `VERSION`), or refuses
    /// it. Only a type whose shape changed overrides this, and it checks the old form is
    /// canonical as `decode` does.
    fn decode_older(version: u8, body: &[u8]) -> Result<Self, String> {
        let _ = body;
        Err(format!("unknown version {version}"))
    }
}

/// Decodes a record body of another (older) shape strictly: complete, nothing left over, and in
/// the one form postcard writes.
pub fn decode_body_strictly<T: Serialize + DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    let (value, rest) =
        postcard::take_from_bytes(body).map_err(|error| format!("undecodable: {error}"))?;
    if !rest.is_empty() {
        return Err(format!("{} bytes after the record", rest.len()));
    }
    if postcard::to_allocvec(&value).map_err(|e| e.to_string())? != body {
        return Err("not in canonical form".into());
    }
    Ok(value)
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
            let (record, rest) = postcard::take_from_bytes(body)
                .map_err(|error| corrupt(format!("undecodable: {error}")))?;
            if !rest.is_empty() {
                return Err(corrupt(format!("{} bytes after the record", rest.len())));
            }
            // Postcard reads an over-long varint (`0x80 0x00` for 0) as the short one; only the
            // encoder's own form is accepted. Records are small, so encoding again is cheap.
            if encode(&record) != bytes {
                return Err(corrupt("not in canonical form".into()));
            }
            Ok(record)
        }
        Some((&version, body)) if version < R::VERSION => {
            R::decode_older(version, body).map_err(corrupt)
        }
        Some((&version, _)) => Err(corrupt(format!("unknown version {version}"))),
        None => Err(corrupt("empty".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::{decode, encode};
    use crate::ledger::{AccountId, Amount, Posting, PostingSide};

    /// A small record whose last field is a varint: the amount 5, stored as the byte 5.
    fn posting() -> Posting {
        Posting::posted(
            &AccountId::parse("alice").expect("valid"),
            PostingSide::Debit,
            Amount::new(5).expect("valid"),
        )
    }

    /// Guards finding 2 of the record_codec fuzz target: `decode` once ignored bytes after a
    /// complete record, so a damaged record could read as a valid one and one record had many
    /// stored forms.
    #[test]
    fn trailing_bytes_are_refused() {
        let posting = posting();
        let bytes = encode(&posting);
        assert_eq!(decode::<Posting>(&bytes).expect("decodes"), posting);
        for tail in [&[0u8][..], &[1], &[0xff, 0xff]] {
            let mut longer = bytes.clone();
            longer.extend_from_slice(tail);
            let error = decode::<Posting>(&longer).expect_err("trailing bytes refused");
            assert!(error.to_string().contains("after the record"), "{error}");
        }
    }

    /// The other half of finding 2: postcard accepts an over-long varint (here the amount 5 as
    /// `0x85 0x00`), which is the same record in a second stored form.
    #[test]
    fn over_long_varints_are_refused() {
        let posting = posting();
        let bytes = encode(&posting);
        // The amount, then the kind (`Posted`, variant 0) last.
        assert_eq!(
            bytes[bytes.len() - 2..],
            [5, 0],
            "the amount is the second last field"
        );
        let mut over_long = bytes[..bytes.len() - 2].to_vec();
        over_long.extend_from_slice(&[0x85, 0x00, 0]);
        let error = decode::<Posting>(&over_long).expect_err("over-long varint refused");
        assert!(error.to_string().contains("canonical"), "{error}");
    }
}
