//! Store-level test helpers: two accounts and charges between them, written as the writer does.

use super::{BatchTables, Store, StoreError};
use crate::ledger::{
    Account, AccountId, Amount, Charge, Currency, Metadata, NewAccount, NewCharge, TenantId,
    post_charge,
};

pub(super) fn id(text: &str) -> AccountId {
    AccountId::parse(text).expect("valid id")
}

/// Opens accounts `a` (no overdraft limit) and `b` in `tenant`, in one batch.
pub(super) fn open_accounts(store: &Store, tenant: TenantId) {
    store
        .commit_batch(|tables| {
            for (name, limit) in [("a", None), ("b", Some(0))] {
                let new = NewAccount {
                    id: id(name),
                    currency: Currency::parse("EUR").expect("currency"),
                    overdraft_limit: limit,
                };
                tables.create_account(tenant, Account::open(&new, 1), 1)?;
            }
            Ok(())
        })
        .expect("accounts");
}

/// Charges `amount` from `a` to `b` of the default tenant in one batch, as the writer does.
pub(super) fn charge(store: &Store, amount: u64) {
    charge_in(store, TenantId::DEFAULT, amount);
}

pub(super) fn charge_in(store: &Store, tenant: TenantId, amount: u64) {
    store
        .commit_batch(|tables| stage_charge(tables, tenant, amount))
        .expect("committed");
}

/// Charges `amount` from `a` to `b` of `tenant` in a batch being written; returns the charge.
pub(super) fn stage_charge(
    tables: &mut BatchTables<'_>,
    tenant: TenantId,
    amount: u64,
) -> Result<Charge, StoreError> {
    let mut source = tables.account(tenant, &id("a"))?.expect("a exists");
    let mut destination = tables.account(tenant, &id("b"))?.expect("b exists");
    let charge = NewCharge {
        source: id("a"),
        destination: id("b"),
        amount: Amount::new(amount).expect("amount"),
        currency: Currency::parse("EUR").expect("currency"),
        metadata: Metadata::default(),
    };
    let postings = post_charge(&charge, &mut source, &mut destination).expect("accepted");
    tables.stage_account(tenant, source);
    tables.stage_account(tenant, destination);
    tables.record_charge(tenant, &charge, &postings, 1)
}

pub(super) fn balance(store: &Store, account: &str) -> i64 {
    balance_in(store, TenantId::DEFAULT, account)
}

pub(super) fn balance_in(store: &Store, tenant: TenantId, account: &str) -> i64 {
    store
        .account(tenant, &id(account))
        .expect("readable")
        .expect("exists")
        .balance()
}

/// What a process crash leaves: the files as the kernel has them, without redb's close. The
/// store is leaked (its file lock with it), so the copy is what a restart would open.
pub(super) fn crash_image(store: Store, to: &std::path::Path) {
    let from = store.path().parent().expect("data dir").to_path_buf();
    std::mem::forget(store);
    std::fs::create_dir_all(to).expect("dir");
    std::fs::copy(
        from.join(super::STORE_FILE_NAME),
        to.join(super::STORE_FILE_NAME),
    )
    .expect("redb file");
    std::fs::copy(
        from.join(super::JOURNAL_FILE_NAME),
        to.join(super::JOURNAL_FILE_NAME),
    )
    .expect("journal");
}
