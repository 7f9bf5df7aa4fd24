//! Charge ids: the public name of a charge number, and back, without showing the number.
//!
//! A charge's number is dense per node (the `charges` table appends in number order), so an id
//! that spelled it out let any tenant read the node's charge count off its own charges and
//! measure every other tenant's volume between two of them. An id is instead the number
//! encrypted with a key of the store's own ([`ChargeIds`], made at the store's first open and
//! kept in its `meta` table): a keyed permutation, so looking an id up is decrypting it and
//! reading one row, with no index from ids to numbers.
//!
//! The cipher is a 4-round Feistel network over a 128-bit block of two 64-bit halves, the number
//! and 64 zero bits, whose round function is keyed blake3 (Luby–Rackoff: with pseudo-random round
//! functions, 4 rounds make a strong pseudo-random permutation). Why 128 bits for a 64-bit
//! number: the Luby–Rackoff bound is about q²/2^64 for q ids seen, so a tenant that sees millions
//! of its own ids learns nothing of their order, where a 64-bit block (32-bit halves) would only
//! hold to about 2^16 ids; and the zero half makes ids unforgeable: an id nobody was given
//! decrypts to a non-zero check with probability 1 - 2^-64 and is refused without a read.
//!
//! Stores written before opaque ids keep their ids: their stored answers carry `ch_` and 16 hex
//! digits of the number, so charges numbered below the mark recorded at the upgrade open
//! (`opaque_from`) keep that legacy form, in both directions, and only they do.

use std::fmt;

/// Bytes of the key an id is encrypted with.
pub const CHARGE_ID_KEY_BYTES: usize = 32;

/// The public id's prefix of each kind of ledger entry with an id. All share one entry counter
/// and one key, so no two ids of a store decrypt to the same number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Charge,
    Refund,
    Transfer,
}

impl EntryKind {
    fn prefix(self) -> &'static str {
        match self {
            EntryKind::Charge => "ch_",
            EntryKind::Refund => "re_",
            EntryKind::Transfer => "tr_",
        }
    }
}
/// The legacy form: the number in lower-case hex, zero-padded.
const LEGACY_DIGITS: usize = 16;
/// The opaque form: the 128-bit block in base32 (RFC 4648, lower case, no padding): 25 digits of
/// 5 bits and a last one holding the remaining 3 bits and 2 zero bits.
const OPAQUE_DIGITS: usize = 26;
const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
const FEISTEL_ROUNDS: u8 = 4;

const _: () = assert!(LEGACY_DIGITS != OPAQUE_DIGITS, "the forms differ by length");
const _: () = assert!(5 * (OPAQUE_DIGITS - 1) < 128 && 5 * OPAQUE_DIGITS >= 128);

/// How this store names its charges: the key, and from which number on ids are opaque.
#[derive(Clone, PartialEq, Eq)]
pub struct ChargeIds {
    /// `None` only for a store that no build with opaque ids has opened writable yet (`check`
    /// reads such a store as it is): every charge in it has the legacy form.
    key: Option<[u8; CHARGE_ID_KEY_BYTES]>,
    /// Charges numbered below this were answered with legacy ids before the store was upgraded.
    opaque_from: u64,
}

impl fmt::Debug for ChargeIds {
    /// Never the key: it is what keeps ids from being decrypted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChargeIds")
            .field("key", &self.key.map(|_| "<hidden>"))
            .field("opaque_from", &self.opaque_from)
            .finish()
    }
}

impl ChargeIds {
    /// Opaque ids under `key` for charges numbered `opaque_from` and up, legacy ones below.
    pub fn new(key: [u8; CHARGE_ID_KEY_BYTES], opaque_from: u64) -> ChargeIds {
        ChargeIds {
            key: Some(key),
            opaque_from,
        }
    }

    /// A store from before opaque ids, as it is until its first writable open: legacy ids only.
    pub fn legacy() -> ChargeIds {
        ChargeIds {
            key: None,
            opaque_from: u64::MAX,
        }
    }

    /// The first charge number with an opaque id (`u64::MAX` for [`ChargeIds::legacy`]).
    pub fn opaque_from(&self) -> u64 {
        self.opaque_from
    }

    /// The public id of charge `number`.
    pub fn id_of(&self, number: u64) -> String {
        self.entry_id(EntryKind::Charge, number)
    }

    /// The public id of entry `number` of `kind`. Refunds and transfers came after opaque ids,
    /// so theirs are always opaque on a store that has a key.
    pub fn entry_id(&self, kind: EntryKind, number: u64) -> String {
        let prefix = kind.prefix();
        match self.key.as_ref().filter(|_| number >= self.opaque_from) {
            Some(key) => format!("{prefix}{}", base32(encrypt(key, number))),
            None => format!("{prefix}{number:0width$x}", width = LEGACY_DIGITS),
        }
    }

    /// The charge number behind `id`, or `None` for anything this store never issued: each
    /// number has exactly one id, so the legacy form of a number with an opaque id (which would
    /// give the count away again) is refused like any other unknown id.
    pub fn number_of(&self, id: &str) -> Option<u64> {
        self.entry_number(EntryKind::Charge, id)
    }

    /// The entry number behind an id of `kind`, as [`ChargeIds::number_of`] for charges.
    pub fn entry_number(&self, kind: EntryKind, id: &str) -> Option<u64> {
        let digits = id.strip_prefix(kind.prefix())?;
        match digits.len() {
            LEGACY_DIGITS => legacy_number(digits).filter(|n| *n < self.opaque_from),
            OPAQUE_DIGITS => {
                let (number, check) = decrypt(self.key.as_ref()?, from_base32(digits)?);
                (check == 0 && number >= self.opaque_from).then_some(number)
            }
            _ => None,
        }
    }
}

fn legacy_number(digits: &str) -> Option<u64> {
    // `from_str_radix` also takes upper case and a sign: only the form `id_of` writes is an id.
    if !digits
        .bytes()
        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

/// The round function: the first 8 bytes of keyed blake3 over the round number and the half.
fn round(key: &[u8; CHARGE_ID_KEY_BYTES], round: u8, half: u64) -> u64 {
    let mut input = [0u8; 9];
    input[0] = round;
    input[1..].copy_from_slice(&half.to_le_bytes());
    let hash = blake3::keyed_hash(key, &input);
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

/// The block of `number` and a zero check half, through the rounds `(l, r) -> (r, l ^ F(r))`.
fn encrypt(key: &[u8; CHARGE_ID_KEY_BYTES], number: u64) -> u128 {
    let (mut left, mut right) = (number, 0u64);
    for i in 0..FEISTEL_ROUNDS {
        (left, right) = (right, left ^ round(key, i, right));
    }
    (u128::from(left) << 64) | u128::from(right)
}

/// The inverse of [`encrypt`]: (number, check half), the check being 0 for an issued id.
fn decrypt(key: &[u8; CHARGE_ID_KEY_BYTES], block: u128) -> (u64, u64) {
    // Truncations on purpose: the two halves of the block.
    let (mut left, mut right) = ((block >> 64) as u64, block as u64);
    for i in (0..FEISTEL_ROUNDS).rev() {
        (left, right) = (right ^ round(key, i, left), left);
    }
    (left, right)
}

fn base32(block: u128) -> String {
    let mut digits = String::with_capacity(OPAQUE_DIGITS);
    for i in 0..OPAQUE_DIGITS - 1 {
        let shift = 128 - 5 * (i + 1);
        digits.push(char::from(BASE32[((block >> shift) & 0x1f) as usize]));
    }
    digits.push(char::from(BASE32[((block & 0b111) << 2) as usize]));
    digits
}

/// The block `digits` (exactly [`OPAQUE_DIGITS`] of them) encode, or `None` if `base32` would not
/// have written them: another alphabet, upper case, or non-zero padding bits.
fn from_base32(digits: &str) -> Option<u128> {
    let mut block = 0u128;
    let values = digits.bytes().map(|b| match b {
        b'a'..=b'z' => Some(u128::from(b - b'a')),
        b'2'..=b'7' => Some(u128::from(b - b'2') + 26),
        _ => None,
    });
    for (i, value) in values.enumerate() {
        let value = value?;
        if i < OPAQUE_DIGITS - 1 {
            block = (block << 5) | value;
        } else if value & 0b11 == 0 {
            block = (block << 3) | (value >> 2);
        } else {
            return None;
        }
    }
    Some(block)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(seed: u8, opaque_from: u64) -> ChargeIds {
        ChargeIds::new(*blake3::hash(&[seed]).as_bytes(), opaque_from)
    }

    /// Guards the lookup: every id decrypts to its number, on samples across the whole range,
    /// and distinct numbers never share an id (a permutation, checked on the samples).
    #[test]
    fn ids_are_a_bijection_on_samples_and_invert() {
        let ids = ids(1, 1);
        let samples: Vec<u64> = (1..=2_000)
            .chain([
                u64::MAX / 2,
                u64::MAX - 1,
                u64::MAX,
                1 << 63,
                1 << 32,
                (1 << 32) - 1,
            ])
            .chain((0..64).map(|bit| 1u64 << bit))
            .collect();
        let mut seen = std::collections::HashMap::new();
        for number in samples {
            let id = ids.id_of(number);
            assert_eq!(
                id.len(),
                EntryKind::Charge.prefix().len() + OPAQUE_DIGITS,
                "{id}"
            );
            assert_eq!(ids.number_of(&id), Some(number), "{id}");
            if let Some(other) = seen.insert(id.clone(), number) {
                assert_eq!(other, number, "{id} names two numbers");
            }
        }
        for number in [0, 7, 1 << 40] {
            assert_eq!(decrypt(&[9; 32], encrypt(&[9; 32], number)), (number, 0));
        }
    }

    /// Guards the point of issue 21: ids of consecutive numbers show neither their order nor
    /// their count. Over 1,000 consecutive numbers the ids' sorted order is far from the number
    /// order (about half the neighbours inverted, as for random strings), and no digit position
    /// is shared by all of them, unlike a counter's leading zeros.
    #[test]
    fn consecutive_numbers_get_unordered_ids_with_no_common_pattern() {
        let ids = ids(2, 1);
        let issued: Vec<String> = (1_000..2_000).map(|n| ids.id_of(n)).collect();
        let inversions = issued.windows(2).filter(|w| w[0] > w[1]).count();
        assert!(
            (350..=650).contains(&inversions),
            "{inversions} of 999 neighbours out of order"
        );
        let mut sorted = issued.clone();
        sorted.sort();
        assert_ne!(
            sorted, issued,
            "sorting the ids gives back the number order"
        );
        let digits = |id: &String| id.as_bytes()[EntryKind::Charge.prefix().len()..].to_vec();
        let first = digits(&issued[0]);
        // The last digit carries 3 bits only; every other position takes many values.
        for position in 0..OPAQUE_DIGITS - 1 {
            let distinct: std::collections::BTreeSet<u8> =
                issued.iter().map(|id| digits(id)[position]).collect();
            assert!(
                distinct.len() >= 16,
                "position {position} takes {} values (first id {first:?})",
                distinct.len()
            );
        }
        // Adjacent ids agree in few digits: no counter hides in a part of the id.
        let shared_digits: usize = issued
            .windows(2)
            .map(|w| {
                (digits(&w[0])
                    .iter()
                    .zip(digits(&w[1]))
                    .filter(|(a, b)| *a == b))
                .count()
            })
            .sum();
        assert!(
            shared_digits < 999 * 3,
            "{shared_digits} digits shared by neighbours"
        );
    }

    /// Guards "two nodes' first charges must not share an id": the ids depend on the key.
    #[test]
    fn different_keys_give_different_ids() {
        let (one, two) = (ids(3, 1), ids(4, 1));
        for number in 1..=100 {
            assert_ne!(one.id_of(number), two.id_of(number), "charge {number}");
            assert_eq!(two.number_of(&one.id_of(number)), None, "charge {number}");
        }
    }

    /// Guards old stores: below the mark a charge keeps the legacy id its answer carries, and
    /// each number has exactly one id that finds it.
    #[test]
    fn numbers_below_the_mark_keep_their_legacy_ids_and_only_they() {
        let ids = ids(5, 43);
        assert_eq!(ids.id_of(42), "ch_000000000000002a");
        assert_eq!(ids.number_of("ch_000000000000002a"), Some(42));
        let opaque = ids.id_of(43);
        assert_eq!(
            opaque.len(),
            EntryKind::Charge.prefix().len() + OPAQUE_DIGITS
        );
        assert_eq!(ids.number_of(&opaque), Some(43));
        assert_eq!(
            ids.number_of("ch_000000000000002b"),
            None,
            "43's legacy form would give its number away"
        );
        let opaque_42 = format!("ch_{}", base32(encrypt(&ids.key.expect("key"), 42)));
        assert_eq!(ids.number_of(&opaque_42), None, "42 has its legacy id only");
        let legacy = ChargeIds::legacy();
        assert_eq!(
            legacy.id_of(u64::MAX - 1),
            format!("ch_{:016x}", u64::MAX - 1)
        );
        assert_eq!(legacy.number_of(&opaque), None);
    }

    /// Guards "an unknown or malformed id is 404": anything but the exact forms `id_of` writes
    /// names no charge, without a panic.
    #[test]
    fn foreign_and_malformed_ids_name_nothing() {
        let ids = ids(6, 1);
        let issued = ids.id_of(7);
        let mut foreign = vec![
            String::new(),
            "ch_".into(),
            "ch_2a".into(),
            "ch_000000000000002A".into(),
            "ch_+00000000000002a".into(),
            "xx_000000000000002a".into(),
            "ch_doesnotexist".into(),
            issued.to_uppercase(),
            issued.replacen("ch_", "re_", 1),
            format!("{issued}a"),
            issued[..issued.len() - 1].to_owned(),
            format!("{}é", &issued[..issued.len() - 2]),
            "ch_".to_owned() + &"8".repeat(OPAQUE_DIGITS),
            "ch_".to_owned() + &"7".repeat(OPAQUE_DIGITS),
        ];
        // Every other value of the last digit sets a padding bit or changes the check half.
        let stem = &issued[..issued.len() - 1];
        foreign.extend(
            BASE32
                .iter()
                .map(|d| format!("{stem}{}", char::from(*d)))
                .filter(|id| *id != issued),
        );
        for id in &foreign {
            assert_eq!(ids.number_of(id), None, "{id:?}");
        }
        assert_eq!(ids.number_of(&issued), Some(7));
        assert!(
            !format!("{ids:?}").contains(&format!("{:?}", ids.key)),
            "{ids:?}"
        );
    }
}
