//! The `Idempotency-Key` header: 1 to 255 visible ASCII characters, bare or as a Structured Field
//! string (`"..."`, RFC 8941), which means the same key.

use crate::limits::IDEMPOTENCY_KEY_BYTES_MAX;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdempotencyKey(String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// Empty, too long, a byte outside 0x21..=0x7E, or a broken sf-string.
    Malformed,
}

impl IdempotencyKey {
    /// Parses the raw header value bytes.
    pub fn parse(raw: &[u8]) -> Result<Self, KeyError> {
        let key = match raw {
            [b'"', inner @ .., b'"'] => unquote_sf_string(inner)?,
            [b'"', ..] => return Err(KeyError::Malformed),
            bare => bare.to_vec(),
        };
        let visible = |b: &u8| (0x21..=0x7E).contains(b);
        if key.is_empty() || key.len() > IDEMPOTENCY_KEY_BYTES_MAX || !key.iter().all(visible) {
            return Err(KeyError::Malformed);
        }
        // All bytes are ASCII, so this cannot fail; the fallback keeps the parser panic-free.
        String::from_utf8(key)
            .map(IdempotencyKey)
            .map_err(|_| KeyError::Malformed)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// RFC 8941 sf-string body: printable ASCII, with `\"` and `\\` as the only escapes.
fn unquote_sf_string(inner: &[u8]) -> Result<Vec<u8>, KeyError> {
    let mut out = Vec::with_capacity(inner.len());
    let mut bytes = inner.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'\\' => match bytes.next() {
                Some(&escaped @ (b'"' | b'\\')) => out.push(escaped),
                _ => return Err(KeyError::Malformed),
            },
            b'"' => return Err(KeyError::Malformed),
            0x20..=0x7E => out.push(b),
            _ => return Err(KeyError::Malformed),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<String, KeyError> {
        IdempotencyKey::parse(raw.as_bytes()).map(|k| k.as_str().to_owned())
    }

    #[test]
    fn bare_keys() {
        assert_eq!(parse("abc-123"), Ok("abc-123".into()));
        assert_eq!(parse(&"k".repeat(255)), Ok("k".repeat(255)));
        assert_eq!(
            parse("a\"b"),
            Ok("a\"b".into()),
            "a quote inside a bare key is visible ASCII"
        );
        for bad in ["", " ", "a b", "tab\t", "é", &"k".repeat(256)] {
            assert_eq!(parse(bad), Err(KeyError::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn sf_string_form_is_the_same_key() {
        assert_eq!(parse("\"abc\""), parse("abc"));
        assert_eq!(parse(r#""a\"b""#), Ok("a\"b".into()));
        assert_eq!(parse(r#""a\\b""#), Ok("a\\b".into()));
        for bad in ["\"", "\"\"", "\"a b\"", r#""a\b""#, r#""a"b""#, "\"abc"] {
            assert_eq!(parse(bad), Err(KeyError::Malformed), "{bad:?}");
        }
        assert_eq!(
            parse(&format!("\"{}\"", "k".repeat(255))),
            Ok("k".repeat(255))
        );
        assert_eq!(
            parse(&format!("\"{}\"", "k".repeat(256))),
            Err(KeyError::Malformed)
        );
    }
}
