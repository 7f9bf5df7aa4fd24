//! The store's charge-id key and mark (`ledger::ChargeIds`, which says what they are for): read
//! from `meta`, and made by the first writable open of a build with opaque ids.

use redb::{ReadableTable, WriteTransaction};

use super::StoreError;
use super::schema::{
    self, META, META_CHARGE_ID_KEY, META_CHARGE_IDS_OPAQUE_FROM, META_NEXT_ENTRY_NUMBER,
};
use crate::ledger::{CHARGE_ID_KEY_BYTES, ChargeIds};

/// The stored key and mark; `None` on a store no build with opaque ids has opened writable.
pub(super) fn read(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Option<ChargeIds>, StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt {
        record: "charge id key",
        detail,
    };
    let key = meta.get(META_CHARGE_ID_KEY)?.map(|v| v.value().to_vec());
    let opaque_from = schema::read_counter(meta, META_CHARGE_IDS_OPAQUE_FROM)?;
    match (key, opaque_from) {
        (None, None) => Ok(None),
        (Some(key), Some(opaque_from)) => {
            let key = <[u8; CHARGE_ID_KEY_BYTES]>::try_from(key.as_slice())
                .map_err(|_| corrupt(format!("{} bytes", key.len())))?;
            Ok(Some(ChargeIds::new(key, opaque_from)))
        }
        // Both are written by one transaction: one alone is damage, and guessing the other
        // would rename charges whose answers are already stored.
        _ => Err(corrupt("the key or its mark is missing".into())),
    }
}

/// The stored ids, or new ones: a random key, opaque from the next charge number. On an older
/// store that mark keeps every charge it holds (journal replay included, which runs before) on
/// the legacy id its stored answer already carries; on a fresh store it is 1.
pub(super) fn recover(txn: &WriteTransaction) -> Result<ChargeIds, StoreError> {
    let mut meta = txn.open_table(META)?;
    if let Some(stored) = read(&meta)? {
        return Ok(stored);
    }
    let key = new_key();
    let opaque_from = schema::read_counter(&meta, META_NEXT_ENTRY_NUMBER)?.unwrap_or(1);
    meta.insert(META_CHARGE_ID_KEY, key.as_slice())?;
    schema::write_counter(&mut meta, META_CHARGE_IDS_OPAQUE_FROM, opaque_from)?;
    Ok(ChargeIds::new(key, opaque_from))
}

/// 244 random bits from the operating system through uuid's v4 generator (how the node id is
/// made too, so no other source of randomness enters the core): two v4 uuids are 32 bytes, six
/// bits of each fixed by the uuid format, which leaves the key far beyond guessing.
fn new_key() -> [u8; CHARGE_ID_KEY_BYTES] {
    let mut key = [0u8; CHARGE_ID_KEY_BYTES];
    key[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    key[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    key
}

/// What a build before opaque ids left: the upgrade tests start from it.
#[cfg(test)]
impl super::Store {
    /// Removes the key and mark from `meta` and names every charge in the legacy form from now
    /// on, as the build before opaque ids did; the next open upgrades the store again.
    pub(crate) fn forget_charge_ids(&mut self) {
        let txn = self.db.begin_write().expect("write transaction");
        {
            let mut meta = txn.open_table(META).expect("meta");
            meta.remove(META_CHARGE_ID_KEY).expect("key removed");
            meta.remove(META_CHARGE_IDS_OPAQUE_FROM)
                .expect("mark removed");
        }
        txn.commit().expect("committed");
        self.charge_ids = ChargeIds::legacy();
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{charge, crash_image, open_accounts};
    use super::super::{RecoveryStep, Store, check};
    use super::*;
    use crate::ledger::TenantId;

    /// Guards the mark's place at the end of recovery: an old build's charges that only its
    /// journal held when it died (acknowledged with legacy ids) are replayed before the mark is
    /// set, so they keep their legacy ids; the charges after them get opaque ones.
    #[test]
    fn an_upgrade_open_counts_the_charges_its_journal_replays_as_legacy() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut store = Store::open(&dir.path().join("old")).expect("opens");
        store.forget_charge_ids();
        open_accounts(&store, TenantId::DEFAULT);
        store.checkpoint().expect("checkpoint");
        for amount in 1..=5 {
            charge(&store, amount);
        }
        let crashed = dir.path().join("crashed");
        crash_image(store, &crashed);

        let store = Store::open(&crashed).expect("upgrades");
        assert_eq!(store.recovery().count(RecoveryStep::ReplayJournal), 5);
        let ids = store.charge_ids();
        assert_eq!(ids.opaque_from(), 6, "{ids:?}");
        for number in 1..=5 {
            let legacy = format!("ch_{number:016x}");
            assert_eq!(ids.id_of(number), legacy);
            assert_eq!(ids.number_of(&legacy), Some(number));
        }
        assert_ne!(ids.id_of(6), "ch_0000000000000006");
        check::assert_consistent(&store);
    }

    /// Guards the key's stability: made once, then read back by every open, so an id given out
    /// finds its charge after any number of restarts; a damaged pair refuses to open rather than
    /// renaming charges whose answers are stored.
    #[test]
    fn the_key_is_made_once_and_a_damaged_one_refuses_to_open() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = Store::open(dir.path()).expect("opens").charge_ids().clone();
        assert_eq!(
            first.opaque_from(),
            1,
            "a fresh store names every charge opaquely"
        );
        let second = Store::open(dir.path()).expect("reopens");
        assert_eq!(second.charge_ids(), &first);
        let txn = second.db.begin_write().expect("write transaction");
        {
            let mut meta = txn.open_table(META).expect("meta");
            meta.insert(META_CHARGE_ID_KEY, [1u8; 31].as_slice())
                .expect("short key");
        }
        txn.commit().expect("committed");
        drop(second);
        let refused = Store::open(dir.path()).err().map(|e| e.to_string());
        assert_eq!(
            refused.as_deref(),
            Some("corrupt charge id key: 31 bytes"),
            "a key of the wrong length"
        );
    }
}
