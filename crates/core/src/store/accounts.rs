//! Account flushes: balances are written to the `accounts` table in flushes, not in every
//! batch.
//!
//! Why: accounts are keyed by id, so the two accounts of each charge sit on scattered B-tree
//! leaves, and rewriting them in every commit dirtied about two 4 KiB pages per charge (half of
//! all bytes written under the uniform load). The postings are the durable record of every
//! balance change anyway, and they are appended in charge order. So:
//!
//! - A commit writes its charges and postings as before, but keeps the changed accounts in memory
//!   (the [`AccountOverlay`]); readers and the writer look there first.
//! - Every `ACCOUNT_FLUSH_CHARGES` charges (and on shutdown) one commit writes every changed
//!   account and records in `meta` the last charge number the `accounts` rows include.
//! - On open, postings after that number are re-applied to the rows (a crash loses no balance:
//!   what a crash drops is only the overlay, and the postings it came from are committed).
//! - A new account's row is written by the commit that opens it (with the totals it was opened
//!   with), so every posting after the flush finds its row.
//!
//! Invariant: `accounts` row totals + postings with number > `accounts_through_charge` = the
//! committed totals = overlay (where the overlay has the account) or row (where it has not).

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{ReadableTable, WriteTransaction};

use super::StoreError;
use super::codec::{decode, encode};
use super::journal::PutInto;
use super::schema::CHARGE_TENANTS;
use super::schema::{
    ACCOUNTS, META, META_ACCOUNTS_THROUGH_CHARGE, POSTINGS, read_counter, write_counter,
};
use crate::ledger::{Account, AccountId, Posting, TenantId};
use crate::limits::ACCOUNT_FLUSH_CHARGES;

pub(super) type AccountMap = HashMap<TenantId, HashMap<AccountId, Account>>;

/// Accounts changed by commits since the last flush, as committed. Only the writer changes
/// it, and only after a commit returned `Ok`, so readers never see an uncommitted balance.
#[derive(Debug)]
pub(super) struct AccountOverlay {
    accounts: RwLock<AccountMap>,
    /// `ACCOUNT_FLUSH_CHARGES`, unless lowered by `Store::set_marks` (tests only).
    flush_charges: u64,
    /// Flushes since open (`clear` counts them), for `/metrics`.
    flushes: AtomicU64,
}

impl Default for AccountOverlay {
    fn default() -> Self {
        AccountOverlay {
            accounts: RwLock::default(),
            flush_charges: ACCOUNT_FLUSH_CHARGES,
            flushes: AtomicU64::new(0),
        }
    }
}

impl AccountOverlay {
    /// Charges between two flushes.
    pub(super) fn flush_charges(&self) -> u64 {
        self.flush_charges
    }

    #[cfg(any(test, feature = "fault-injection"))]
    pub(super) fn set_flush_charges(&mut self, charges: u64) {
        self.flush_charges = charges;
    }

    /// Flushes since open.
    pub(super) fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }

    pub(super) fn get(&self, tenant: TenantId, id: &AccountId) -> Option<Account> {
        let accounts = self.accounts.read().unwrap_or_else(|e| e.into_inner());
        accounts.get(&tenant).and_then(|m| m.get(id)).cloned()
    }

    pub(super) fn len(&self) -> usize {
        let accounts = self.accounts.read().unwrap_or_else(|e| e.into_inner());
        accounts.values().map(HashMap::len).sum()
    }

    /// A copy of every account in the overlay (for a flush and for the checker).
    pub(super) fn snapshot(&self) -> AccountMap {
        self.accounts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// After a commit without a flush: the batch's accounts become the committed state.
    pub(super) fn merge(&self, staged: AccountMap) {
        let mut accounts = self.accounts.write().unwrap_or_else(|e| e.into_inner());
        for (tenant, changed) in staged {
            accounts.entry(tenant).or_default().extend(changed);
        }
    }

    /// After a flushing commit: every row is current.
    pub(super) fn clear(&self) {
        self.accounts
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.flushes.fetch_add(1, Ordering::Relaxed);
    }
}

/// Writes `accounts` to their rows (a flush's writes, or a new account's first row).
pub(super) fn write_rows(
    table: &mut impl PutInto<(u32, &'static str), &'static [u8]>,
    accounts: &AccountMap,
) -> Result<(), StoreError> {
    for (tenant, accounts) in accounts {
        for (id, account) in accounts {
            debug_assert!(
                account.within_overdraft_limit(),
                "invariant 5 broken for {id}"
            );
            table.put((tenant.0, id.as_str()), encode(account).as_slice())?;
        }
    }
    Ok(())
}

pub(super) fn through_charge(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Option<u64>, StoreError> {
    read_counter(meta, META_ACCOUNTS_THROUGH_CHARGE)
}

pub(super) fn set_through_charge(
    meta: &mut impl PutInto<&'static str, &'static [u8]>,
    number: u64,
) -> Result<(), StoreError> {
    write_counter(meta, META_ACCOUNTS_THROUGH_CHARGE, number)
}

/// On open: brings the `accounts` rows up to the last committed charge by re-applying the
/// postings after the last flush. `last_charge` is the highest charge number stored. A store
/// without the flush mark (made before flushes existed, or new) has current rows.
pub(super) fn recover(txn: &WriteTransaction, last_charge: u64) -> Result<u64, StoreError> {
    let mut meta = txn.open_table(META)?;
    let Some(through) = through_charge(&meta)? else {
        set_through_charge(&mut meta, last_charge)?;
        return Ok(0);
    };
    if through >= last_charge {
        return Ok(0);
    }
    let mut accounts = txn.open_table(ACCOUNTS)?;
    let postings = txn.open_table(POSTINGS)?;
    let charge_tenants = txn.open_table(CHARGE_TENANTS)?;
    let (changed, replayed) = replay_postings(&accounts, &postings, &charge_tenants, through)?;
    write_rows(&mut accounts, &changed)?;
    set_through_charge(&mut meta, last_charge)?;
    Ok(replayed)
}

/// The accounts the postings after charge `through` change, as their rows plus those postings,
/// and how many postings that was. Reads only, so a read-only open (`onceledger check`) rebuilds
/// the same overlay in memory that [`recover`] writes into the rows.
pub(super) fn replay_postings(
    accounts: &impl ReadableTable<(u32, &'static str), &'static [u8]>,
    postings: &impl ReadableTable<(u64, u8), &'static [u8]>,
    charge_tenants: &impl ReadableTable<u64, u32>,
    through: u64,
) -> Result<(AccountMap, u64), StoreError> {
    // A posting names its account within its charge's tenant; charges of tenant 0 have no row.
    let mut changed: AccountMap = HashMap::new();
    let mut replayed = 0u64;
    let mut tenant_of_charge = (0u64, TenantId::DEFAULT);
    for entry in postings.range((through.saturating_add(1), 0u8)..)? {
        let (key, bytes) = entry?;
        let number = key.value().0;
        if tenant_of_charge.0 != number {
            let owner = charge_tenants.get(number)?.map_or(0, |t| t.value());
            tenant_of_charge = (number, TenantId(owner));
        }
        let tenant = tenant_of_charge.1;
        let posting: Posting = decode(bytes.value())?;
        let tenant_accounts = changed.entry(tenant).or_default();
        let account = match tenant_accounts.get_mut(&posting.account) {
            Some(account) => account,
            None => {
                let row = accounts
                    .get((tenant.0, posting.account.as_str()))?
                    .map(|b| decode::<Account>(b.value()))
                    .transpose()?
                    .ok_or_else(|| StoreError::Corrupt {
                        record: "posting",
                        detail: format!(
                            "charge {number} names account {} of tenant {}, which has no row",
                            posting.account, tenant.0
                        ),
                    })?;
                tenant_accounts
                    .entry(posting.account.clone())
                    .or_insert(row)
            }
        };
        // Holds and releases too: the pending totals are made of postings like the posted ones.
        account
            .apply(&posting)
            .map_err(|error| StoreError::Corrupt {
                record: "posting",
                detail: format!(
                    "entry {number} takes account {} out of range ({error:?})",
                    posting.account
                ),
            })?;
        replayed += 1;
    }
    Ok((changed, replayed))
}

#[cfg(test)]
mod tests {
    use super::super::Store;
    use super::super::test_support::{balance, balance_in, charge, charge_in, open_accounts};
    use crate::ids::TenantId;

    /// A crash loses the overlay, never a balance: the next open re-applies the postings after
    /// the last flush; and a flush (here the checkpoint's) leaves nothing to re-apply.
    #[test]
    fn balances_survive_a_crash_between_flushes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("opens");
        open_accounts(&store, TenantId::DEFAULT);
        for amount in [5, 7] {
            charge(&store, amount);
        }
        assert_eq!((balance(&store, "a"), balance(&store, "b")), (-12, 12));
        assert!(store.overlay.len() == 2, "no flush yet");
        super::super::check::assert_consistent(&store);
        drop(store); // no flush: as after SIGKILL

        let store = Store::open(dir.path()).expect("reopens");
        assert_eq!(store.overlay.len(), 0);
        assert_eq!((balance(&store, "a"), balance(&store, "b")), (-12, 12));
        charge(&store, 1);
        store.checkpoint().expect("checkpoint");
        assert_eq!(
            store.overlay.len(),
            0,
            "a checkpoint flushes and empties the overlay"
        );
        super::super::check::assert_consistent(&store);
        drop(store);

        let store = Store::open(dir.path()).expect("reopens");
        assert_eq!((balance(&store, "a"), balance(&store, "b")), (-13, 13));
        super::super::check::assert_consistent(&store);
    }

    /// Recovery re-applies each posting within its charge's tenant: two tenants with the same
    /// account ids keep apart balances across a crash (found in review: recovery once read every
    /// posting as tenant 0's, so the store failed to open or moved tenant 0's money).
    #[test]
    fn each_tenants_balances_survive_a_crash() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("opens");
        let other = TenantId(3);
        open_accounts(&store, TenantId::DEFAULT);
        open_accounts(&store, other);
        charge_in(&store, other, 5);
        charge_in(&store, TenantId::DEFAULT, 2);
        charge_in(&store, other, 4);
        drop(store); // no flush: as after SIGKILL

        let store = Store::open(dir.path()).expect("reopens");
        assert_eq!(
            (
                balance_in(&store, other, "a"),
                balance_in(&store, other, "b")
            ),
            (-9, 9)
        );
        assert_eq!((balance(&store, "a"), balance(&store, "b")), (-2, 2));
        super::super::check::assert_consistent(&store);
    }
}
