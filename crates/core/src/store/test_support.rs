//! Store-level test helpers: two accounts and charges between them, written as the writer does;
//! statements read page by page.

use super::history::{Cursor, ListError, ListQuery, Order, Page, StatementEntry};
use super::{BatchTables, Store, StoreError};
use crate::ledger::{
    Account, AccountId, Amount, Charge, Currency, Metadata, NewAccount, NewCharge, Posting,
    TenantId, Totals, post_charge,
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

/// Every line of a statement, `limit` at a time in `order`, each page starting after the last
/// line of the one before, as a client follows `has_more`.
pub(crate) fn statement_pages(
    read: impl Fn(&ListQuery) -> Result<Page<StatementEntry>, ListError>,
    order: Order,
    limit: usize,
) -> Vec<StatementEntry> {
    let mut all: Vec<StatementEntry> = Vec::new();
    let mut query = ListQuery {
        limit,
        order,
        cursor: None,
    };
    loop {
        let page = read(&query).expect("a page");
        assert!(page.data.len() <= limit, "a page of {limit} at most");
        assert!(
            page.data.len() == limit || !page.has_more,
            "a short page is the last"
        );
        all.extend(page.data);
        if !page.has_more {
            return all;
        }
        let last = all.last().expect("a page with more has lines");
        query.cursor = Some(Cursor::StartingAfter(last.id()));
    }
}

/// A mirrored statement read whole, oldest first, after checking that pages of 1, 3 and 100 in
/// either order return the same lines, each once.
pub(crate) fn mirrored_statement(
    store: &Store,
    origin: &str,
    account: &str,
) -> Vec<StatementEntry> {
    let read = |query: &ListQuery| store.mirrored_statement(origin, &id(account), query);
    let oldest_first = statement_pages(read, Order::OldestFirst, 100);
    for limit in [1, 3, 100] {
        assert_eq!(
            statement_pages(read, Order::OldestFirst, limit),
            oldest_first,
            "{account}: oldest first by {limit}"
        );
        let mut newest_first = statement_pages(read, Order::NewestFirst, limit);
        newest_first.reverse();
        assert_eq!(
            newest_first, oldest_first,
            "{account}: newest first by {limit}"
        );
    }
    let keys: Vec<(u64, u8)> = oldest_first.iter().map(|l| (l.seq, l.leg)).collect();
    assert!(
        keys.windows(2).all(|w| w[0] < w[1]),
        "{account}: in order, each once"
    );
    oldest_first
}

/// Each line's `after` is the running sum of the lines up to it, from zero, and the last one's
/// is `account`'s totals.
pub(crate) fn assert_running_sums(lines: &[StatementEntry], account: &Account) {
    let mut totals = Totals::default();
    for entry in lines {
        let line = &entry.line;
        let kind = line.entry_type.posting_kind();
        let posting = Posting::new(&account.id, line.side, line.amount, kind);
        totals.apply(&posting).expect("totals in range");
        assert_eq!(line.after, totals, "{} of {}", entry.id(), account.id);
    }
    assert_eq!(totals, Totals::of(account), "{}: the last line", account.id);
}
