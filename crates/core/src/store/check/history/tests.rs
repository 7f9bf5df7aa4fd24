//! The history checker on a real store: a clean one with every kind of entry checks clean, each
//! kind of damage planted in it is reported by name, and a store stripped of its history (a store
//! from before history) is told apart read-only, then indexed by its next open into the same
//! statements the writer wrote.

use redb::{ReadableDatabase, ReadableTable, WriteTransaction};

use crate::ledger::{
    Account, AccountId, Amount, Charge, Currency, Metadata, NewAccount, NewCharge, NewTransfer,
    Refund, Settle, StatementLine, TenantId, Transfer, TransferLeg, authorize, post_charge,
    post_leg, refund, settle,
};
use crate::store::codec::{decode, encode};
use crate::store::history::blocks::{ListedBlock, StatementBlock, block_at_or_before};
use crate::store::history::overlay::Line;
use crate::store::history::{ListQuery, ListedKind, Order};
use crate::store::records::{Event, EventBody};
use crate::store::schema::{
    ACCOUNTS_BY_CREATION, CHARGE_REFUNDS, META, META_HISTORY_INDEXED, REPLICA_STATEMENTS,
    STATEMENTS, TENANT_ENTRIES, TIMELINE,
};
use crate::store::{RecoveryStep, Store, check};

fn id(text: &str) -> AccountId {
    AccountId::parse(text).expect("id")
}

fn eur() -> Currency {
    Currency::parse("EUR").expect("currency")
}

fn amount(minor: u64) -> Amount {
    Amount::new(minor).expect("amount")
}

fn new_charge(from: &str, to: &str, minor: u64) -> NewCharge {
    NewCharge {
        source: id(from),
        destination: id(to),
        amount: amount(minor),
        currency: eur(),
        metadata: Metadata::default(),
    }
}

/// What the scenario wrote, for the damage to aim at.
struct Written {
    sale: Charge,
    captured: Charge,
    voided: Charge,
    refund: Refund,
    transfer: Transfer,
    shop: TenantId,
}

fn open_accounts(store: &Store, tenant: TenantId, names: &[(&str, Option<u64>)], at_ms: u64) {
    store
        .commit_batch(|tables| {
            for (name, overdraft_limit) in names {
                let new = NewAccount {
                    id: id(name),
                    currency: eur(),
                    overdraft_limit: *overdraft_limit,
                };
                tables.create_account(tenant, Account::open(&new, at_ms), at_ms)?;
            }
            Ok(())
        })
        .expect("accounts");
}

/// An immediate charge (`capture`) or an authorization of `minor` from `from` to `to`.
fn charge(
    store: &Store,
    tenant: TenantId,
    (from, to): (&str, &str),
    minor: u64,
    capture: bool,
    at_ms: u64,
) -> Charge {
    store
        .commit_batch(|tables| {
            let new = new_charge(from, to, minor);
            let mut source = tables.account(tenant, &id(from))?.expect("source");
            let mut destination = tables.account(tenant, &id(to))?.expect("destination");
            let postings = if capture {
                post_charge(&new, &mut source, &mut destination)
            } else {
                authorize(&new, &mut source, &mut destination)
            }
            .expect("accepted");
            tables.stage_account(tenant, source);
            tables.stage_account(tenant, destination);
            if capture {
                tables.record_charge(tenant, &new, &postings, at_ms)
            } else {
                Ok(tables
                    .record_authorization(tenant, &new, &postings, at_ms + 1_000_000, at_ms)?
                    .0)
            }
        })
        .expect("committed")
}

fn settle_charge(store: &Store, tenant: TenantId, charge: &Charge, how: Settle, at_ms: u64) {
    store
        .commit_batch(|tables| {
            let progress = tables.charge_progress(charge)?;
            let mut source = tables.account(tenant, &charge.source)?.expect("source");
            let mut destination = tables.account(tenant, &charge.destination)?.expect("dest");
            let (after, postings) =
                settle(charge, &progress, how, &mut source, &mut destination).expect("settles");
            tables.stage_account(tenant, source);
            tables.stage_account(tenant, destination);
            tables.record_settlement(tenant, charge, after, &postings, at_ms)
        })
        .expect("committed");
}

fn refund_charge(
    store: &Store,
    tenant: TenantId,
    charge: &Charge,
    minor: u64,
    at_ms: u64,
) -> Refund {
    store
        .commit_batch(|tables| {
            let before = tables.charge_progress(charge)?;
            let mut source = tables.account(tenant, &charge.source)?.expect("source");
            let mut destination = tables.account(tenant, &charge.destination)?.expect("dest");
            let (refunded, postings) = refund(
                charge,
                &before,
                Some(amount(minor)),
                &mut source,
                &mut destination,
            )
            .expect("refunds");
            tables.stage_account(tenant, source);
            tables.stage_account(tenant, destination);
            let metadata = Metadata::default();
            tables.record_refund(
                tenant, charge, &before, refunded, &metadata, &postings, at_ms,
            )
        })
        .expect("committed")
}

fn transfer(store: &Store, tenant: TenantId, legs: &[(&str, &str, u64)], at_ms: u64) -> Transfer {
    store
        .commit_batch(|tables| {
            let new = NewTransfer {
                currency: eur(),
                legs: legs
                    .iter()
                    .map(|(from, to, minor)| TransferLeg {
                        source: id(from),
                        destination: id(to),
                        amount: amount(*minor),
                    })
                    .collect(),
                metadata: Metadata::default(),
            };
            let mut postings = Vec::new();
            for leg in &new.legs {
                let mut source = tables.account(tenant, &leg.source)?.expect("source");
                let mut destination = tables.account(tenant, &leg.destination)?.expect("dest");
                postings.extend(post_leg(eur(), leg, &mut source, &mut destination).expect("leg"));
                tables.stage_account(tenant, source);
                tables.stage_account(tenant, destination);
            }
            tables.record_transfer(tenant, &new, &postings, at_ms)
        })
        .expect("committed")
}

/// Accounts a (no limit), b and c; an immediate charge and, in one batch at one time, two more;
/// an authorization captured in part, another voided; a refund; a transfer of two legs into c
/// (two lines of one entry on it); the same accounts and a charge in a second tenant. Every
/// entry at its own time, so the timeline has a row per commit.
fn write(store: &Store) -> Written {
    let tenant = TenantId::DEFAULT;
    open_accounts(
        store,
        tenant,
        &[("a", None), ("b", Some(0)), ("c", Some(0))],
        1,
    );
    let sale = charge(store, tenant, ("a", "b"), 100, true, 10);
    store
        .commit_batch(|tables| {
            for minor in [3, 4] {
                let new = new_charge("a", "b", minor);
                let mut source = tables.account(tenant, &id("a"))?.expect("a");
                let mut destination = tables.account(tenant, &id("b"))?.expect("b");
                let postings = post_charge(&new, &mut source, &mut destination).expect("posts");
                tables.stage_account(tenant, source);
                tables.stage_account(tenant, destination);
                tables.record_charge(tenant, &new, &postings, 15)?;
            }
            Ok(())
        })
        .expect("committed");
    let captured = charge(store, tenant, ("a", "b"), 50, false, 20);
    settle_charge(
        store,
        tenant,
        &captured,
        Settle::Capture(Some(amount(30))),
        30,
    );
    let voided = charge(store, tenant, ("a", "b"), 20, false, 40);
    settle_charge(store, tenant, &voided, Settle::Void, 50);
    let refund = refund_charge(store, tenant, &sale, 10, 60);
    let transfer = transfer(store, tenant, &[("a", "c", 5), ("b", "c", 7)], 70);
    let shop = store
        .commit_batch(|tables| tables.auth().create_tenant("shop", 80))
        .expect("committed")
        .expect("a new tenant");
    let shop = TenantId(shop.id);
    open_accounts(store, shop, &[("a", None), ("b", Some(0))], 80);
    charge(store, shop, ("a", "b"), 9, true, 90);
    Written {
        sale,
        captured,
        voided,
        refund,
        transfer,
        shop,
    }
}

fn violations(store: &Store) -> Vec<String> {
    check::verify(store).expect("readable").violations
}

/// Writes rows as no writer would: the damage a test plants.
fn plant(store: &Store, damage: impl FnOnce(&WriteTransaction)) {
    let txn = store.database().begin_write().expect("write");
    damage(&txn);
    txn.commit().expect("planted");
}

/// A stored statement block holding only `line`, at `(seq, leg)`.
fn one_line_block(seq: u64, leg: u8, line: StatementLine) -> Vec<u8> {
    encode(&StatementBlock {
        lines: vec![Line { seq, leg, line }],
    })
}

/// Puts `line` at `(seq, leg)` of `account` in the default tenant (`None`: takes the line out),
/// inside the block that holds that place (`history/blocks.rs`), as damage would.
fn plant_line(store: &Store, account: &str, (seq, leg): (u64, u8), line: Option<StatementLine>) {
    plant(store, |txn| {
        let mut table = txn.open_table(STATEMENTS).expect("table");
        let key = block_at_or_before(&table, 0, account, (seq, leg))
            .expect("readable")
            .expect("a block at or before the place");
        let mut block: StatementBlock = decode(
            table
                .get((0, account, key.0, key.1))
                .expect("get")
                .expect("the block")
                .value(),
        )
        .expect("decodes");
        block.lines.retain(|l| l.position() != (seq, leg));
        if let Some(line) = line {
            block.lines.push(Line { seq, leg, line });
            block.lines.sort_by_key(Line::position);
        }
        table.remove((0, account, key.0, key.1)).expect("removed");
        if let Some(first) = block.lines.first() {
            let (seq, leg) = first.position();
            table
                .insert((0, account, seq, leg), encode(&block).as_slice())
                .expect("planted");
        }
    });
}

fn statement(
    store: &Store,
    tenant: TenantId,
    account: &str,
) -> Vec<crate::store::history::StatementEntry> {
    let query = ListQuery {
        limit: 100,
        order: Order::OldestFirst,
        cursor: None,
    };
    let page = store
        .statement(tenant, &id(account), &query)
        .expect("statement");
    assert!(!page.has_more, "every test statement fits one page");
    page.data
}

/// A fresh store with the scenario written, checked clean, then `damage` planted; returns what
/// the checker reports.
fn reported_after(damage: impl FnOnce(&Store, &Written)) -> Vec<String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("opens");
    let written = write(&store);
    assert_eq!(
        violations(&store),
        Vec::<String>::new(),
        "clean with the lines in memory"
    );
    // The final checkpoint's merge puts every line in the table, where the damage aims.
    store.checkpoint().expect("merged");
    assert_eq!(
        violations(&store),
        Vec::<String>::new(),
        "clean before the damage"
    );
    damage(&store, &written);
    let found = violations(&store);
    assert!(!found.is_empty(), "the damage went unreported");
    found
}

fn assert_names(found: &[String], text: &str) {
    assert!(
        found.iter().any(|v| v.contains(text)),
        "no violation says {text:?}: {found:#?}"
    );
}

/// Every kind of entry on two tenants checks clean, with a line per posting, and the statements
/// read back as the running totals of their accounts.
#[test]
fn a_store_with_every_kind_of_entry_checks_clean() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("opens");
    let written = write(&store);
    let report = check::assert_consistent(&store);
    assert!(report.history_indexed);
    // 3 charges, 2 authorizations, a capture (4), a void, a refund, a transfer of 2 legs (4),
    // the shop's charge: 2 + 2 + 2 + 2 + 4 + 2 + 2 + 2 + 4 + 2.
    assert_eq!(report.statement_lines, 24);
    assert_eq!(report.mirrored_statement_lines, 0);
    let c = statement(&store, TenantId::DEFAULT, "c");
    assert_eq!(c.len(), 2, "two legs of one transfer");
    assert_eq!(
        (c[0].seq, c[0].leg, c[1].leg),
        (written.transfer.event_seq, 1, 3)
    );
    assert_eq!(c[1].line.after.credits_posted, 12);
    let shop_a = statement(&store, written.shop, "a");
    assert_eq!(shop_a.len(), 1);
    assert_eq!(shop_a[0].line.after.debits_posted, 9);
}

#[test]
fn a_posting_without_its_line_is_reported() {
    let mut aimed = String::new();
    let found = reported_after(|store, written| {
        // The capture's posted debit of a: legs 0-1 release, 2-3 post.
        let line = statement(store, TenantId::DEFAULT, "a")
            .into_iter()
            .find(|l| l.line.entry_type == crate::ledger::EntryType::Capture)
            .expect("the capture's line");
        assert_eq!(line.line.made_by, written.captured.number);
        aimed = format!(
            "posting {}/{} on a of tenant 0 has no statement line",
            line.line.entry, line.leg
        );
        plant_line(store, "a", (line.seq, line.leg), None);
    });
    assert_names(&found, &aimed);
}

#[test]
fn a_line_of_no_posting_is_reported() {
    let mut aimed = String::new();
    let found = reported_after(|store, written| {
        let seq = written.voided.event_seq;
        let line = statement(store, TenantId::DEFAULT, "a")
            .into_iter()
            .find(|l| l.seq == seq)
            .expect("the authorization's line");
        aimed = format!(
            "statement line (tenant 0, a, seq {seq}, leg 7) names entry {}, which has no posting",
            line.line.entry
        );
        plant_line(store, "a", (seq, 7), Some(line.line));
    });
    assert_names(&found, &aimed);
}

#[test]
fn a_wrong_running_total_is_reported() {
    let mut aimed = String::new();
    let found = reported_after(|store, _| {
        let first = statement(store, TenantId::DEFAULT, "c").remove(0);
        aimed = format!(
            "statement line (tenant 0, c, seq {}, leg {}): after",
            first.seq, first.leg
        );
        let mut line: StatementLine = first.line;
        line.after.credits_posted += 1;
        plant_line(store, "c", (first.seq, first.leg), Some(line));
    });
    assert_names(&found, &aimed);
}

/// An account's last line that is not its current totals: here its real last line is gone, so
/// the one before it is last.
#[test]
fn a_last_line_short_of_the_totals_is_reported() {
    let found = reported_after(|store, written| {
        plant_line(store, "c", (written.transfer.event_seq, 3), None);
    });
    assert_names(
        &found,
        "account c of tenant 0: its last statement line says",
    );
}

/// A block keyed inside the block before it: a reader seeking a line in the overlap would find
/// one of two and skip or repeat the rest.
#[test]
fn overlapping_blocks_are_reported() {
    let found = reported_after(|store, _| {
        let lines = statement(store, TenantId::DEFAULT, "a");
        assert!(lines.len() >= 2, "a has several lines");
        let (first, second) = (&lines[0], &lines[1]);
        plant(store, |txn| {
            let mut table = txn.open_table(STATEMENTS).expect("table");
            // A block of its own at the second line's place, which the first block holds.
            let again = one_line_block(second.seq, second.leg, first.line);
            let overlapping = block_at_or_before(&table, 0, "a", (second.seq, second.leg))
                .expect("readable")
                .expect("a block");
            assert!(
                overlapping < (second.seq, second.leg),
                "the second line is inside the first block"
            );
            table
                .insert((0, "a", second.seq, second.leg), again.as_slice())
                .expect("planted");
        });
    });
    assert_names(&found, "overlaps the block before it");
}

/// A block whose key is not its first line's place.
#[test]
fn a_block_keyed_by_another_line_is_reported() {
    let found = reported_after(|store, _| {
        let first = statement(store, TenantId::DEFAULT, "b").remove(0);
        plant(store, |txn| {
            let mut table = txn.open_table(STATEMENTS).expect("table");
            let block = one_line_block(first.seq, first.leg, first.line);
            table
                .insert((0, "zz", first.seq, first.leg), block.as_slice())
                .expect("planted");
            table
                .insert((0, "zz", 1, 0), block.as_slice())
                .expect("planted");
        });
    });
    assert_names(
        &found,
        "statement block (tenant 0, zz, seq 1, leg 0): the block at (1, 0) starts at",
    );
}

/// A line both merged and still in memory would be listed twice by a reader that trusted the
/// overlay's invariant (`overlay.rs`).
#[test]
fn a_line_both_in_memory_and_in_the_table_is_reported() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("opens");
    write(&store);
    let in_memory = store.statement_overlay.read().by_name();
    let (name, line) = in_memory.iter().next().expect("lines wait in memory");
    let (tenant, account, seq, leg) = crate::store::history::overlay::split_line_name(name);
    plant(&store, |txn| {
        let mut table = txn.open_table(STATEMENTS).expect("table");
        let block = one_line_block(seq, leg, *line);
        table
            .insert((tenant, account, seq, leg), block.as_slice())
            .expect("planted");
    });
    assert_names(&violations(&store), "is both in memory and in the table");
}

#[test]
fn an_entry_missing_from_its_tenants_list_is_reported() {
    let mut aimed = String::new();
    let found = reported_after(|store, written| {
        let t = &written.transfer;
        aimed = format!(
            "Transfer {} of tenant 0 is not in tenant_entries at seq {}",
            t.number, t.event_seq
        );
        plant(store, |txn| {
            let mut table = txn.open_table(TENANT_ENTRIES).expect("table");
            table
                .remove((0, ListedKind::Transfer as u8, t.event_seq))
                .expect("removed");
        });
    });
    assert_names(&found, &aimed);
}

/// `tenant_entries` blocks that break the rules of `history/blocks.rs`: an empty one, and one
/// reaching over the next block's key (a reader would list that charge twice).
#[test]
fn broken_tenant_entries_blocks_are_reported() {
    let found = reported_after(|store, _| {
        let charges = store
            .list_charges(
                TenantId::DEFAULT,
                &crate::store::history::ChargeFilter::default(),
                &ListQuery {
                    limit: 2,
                    order: Order::OldestFirst,
                    cursor: None,
                },
            )
            .expect("charges")
            .data;
        let (first, second) = (&charges[0].0, &charges[1].0);
        let kind = ListedKind::Charge as u8;
        plant(store, |txn| {
            let mut table = txn.open_table(TENANT_ENTRIES).expect("table");
            let reaching = ListedBlock {
                entries: vec![
                    (first.event_seq, first.number),
                    (second.event_seq, second.number),
                ],
            };
            table
                .insert((0, kind, first.event_seq), encode(&reaching).as_slice())
                .expect("planted");
            let empty = ListedBlock { entries: vec![] };
            table
                .insert((9, kind, 1), encode(&empty).as_slice())
                .expect("planted");
        });
    });
    assert_names(&found, "overlaps the block before it");
    assert_names(
        &found,
        "tenant_entries block (tenant 9, kind 1, seq 1): the block at seq 1 is empty",
    );
}

#[test]
fn a_charge_refunds_row_naming_another_entry_is_reported() {
    let mut aimed = Vec::new();
    let found = reported_after(|store, written| {
        let r = &written.refund;
        let wrong = written.transfer.number;
        aimed.push(format!(
            "charge_refunds row (charge {}, seq {}) names refund {wrong}, which is not a refund",
            written.sale.number, r.event_seq
        ));
        aimed.push(format!("refund {} is not in charge_refunds", r.number));
        plant(store, |txn| {
            let mut table = txn.open_table(CHARGE_REFUNDS).expect("table");
            table
                .insert((r.charge_number, r.event_seq), wrong)
                .expect("planted");
        });
    });
    for text in aimed {
        assert_names(&found, &text);
    }
}

#[test]
fn an_account_missing_from_the_creation_index_is_reported() {
    let found = reported_after(|store, _| {
        plant(store, |txn| {
            let mut table = txn.open_table(ACCOUNTS_BY_CREATION).expect("table");
            table
                .remove((0, 1, "c"))
                .expect("removed")
                .expect("was there");
        });
    });
    assert_names(
        &found,
        "account c of tenant 0 is not in accounts_by_creation at 1 ms",
    );
}

#[test]
fn a_timeline_row_out_of_order_is_reported() {
    let mut aimed = String::new();
    let found = reported_after(|store, written| {
        // Between the rows of 10 ms and 15 ms, a row that reaches past the capture (at 30 ms):
        // as_of 12 ms would count it.
        let late = written.captured.event_seq + 1;
        aimed = format!("follows 12 ms → seq {late}: out of order");
        plant(store, |txn| {
            let mut table = txn.open_table(TIMELINE).expect("table");
            table.insert(12, late).expect("planted");
        });
    });
    assert_names(&found, &aimed);
    assert_names(&found, "is on the timeline before its time: row 12 ms");
}

/// The timeline must find an entry from its time on: a row missing makes the entry's time seek
/// find the row before, which does not reach it.
#[test]
fn an_entry_the_timeline_misses_is_reported() {
    let mut aimed = String::new();
    let found = reported_after(|store, written| {
        let t = &written.transfer;
        aimed = format!(
            "entry {} (seq {}, 70 ms) is not on the timeline at its time",
            t.number, t.event_seq
        );
        plant(store, |txn| {
            let mut table = txn.open_table(TIMELINE).expect("table");
            table.remove(70).expect("removed").expect("was there");
        });
    });
    assert_names(&found, &aimed);
}

/// Rows as the history tables of a store from before history would lack them: the tables gone
/// and the mark with them.
fn strip_history(store: &Store) {
    plant(store, |txn| {
        assert!(txn.delete_table(STATEMENTS).expect("deleted"));
        assert!(txn.delete_table(REPLICA_STATEMENTS).expect("deleted"));
        assert!(txn.delete_table(TENANT_ENTRIES).expect("deleted"));
        assert!(txn.delete_table(CHARGE_REFUNDS).expect("deleted"));
        assert!(txn.delete_table(ACCOUNTS_BY_CREATION).expect("deleted"));
        assert!(txn.delete_table(TIMELINE).expect("deleted"));
        let mut meta = txn.open_table(META).expect("meta");
        meta.remove(META_HISTORY_INDEXED)
            .expect("removed")
            .expect("was marked");
    });
}

/// A store written, then stripped of its history as a store from before history is: `check`
/// of it stopped says it has no history and finds nothing wrong; its next open indexes every
/// posting (recovery's `IndexHistory`), after which it checks clean and every statement, list
/// and balance as of any moment reads as the writer's own indexes did.
#[test]
fn a_store_from_before_history_is_indexed_into_the_same_history() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("opens");
    let written = write(&store);
    let tenants = [TenantId::DEFAULT, written.shop];
    let read_history = |store: &Store| {
        let query = ListQuery {
            limit: 100,
            order: Order::OldestFirst,
            cursor: None,
        };
        let mut read = Vec::new();
        for tenant in tenants {
            for account in ["a", "b", "c"] {
                if store.account(tenant, &id(account)).expect("read").is_none() {
                    continue;
                }
                read.push(format!("{:?}", statement(store, tenant, account)));
                for at_ms in [0, 1, 10, 12, 15, 20, 30, 45, 60, 70, 80, 85, 90, 1_000] {
                    let (balance, as_of_seq) = store
                        .balance_as_of(
                            tenant,
                            &id(account),
                            crate::store::history::AsOf::Time(at_ms),
                        )
                        .expect("as of");
                    read.push(format!(
                        "{tenant:?} {account} at {at_ms}: {balance:?} as of {as_of_seq}"
                    ));
                }
            }
            read.push(format!(
                "{:?}",
                store.list_accounts(tenant, &query).expect("accounts")
            ));
            let charges = store
                .list_charges(tenant, &Default::default(), &query)
                .expect("charges");
            read.push(format!("{charges:?}"));
            read.push(format!(
                "{:?}",
                store.list_refunds(tenant, None, &query).expect("refunds")
            ));
            read.push(format!(
                "{:?}",
                store
                    .list_transfers(tenant, None, &query)
                    .expect("transfers")
            ));
        }
        let sale = store.charge_ids().id_of(written.sale.number);
        read.push(format!(
            "{:?}",
            store
                .list_refunds(TenantId::DEFAULT, Some(&sale), &query)
                .expect("the sale's refunds")
        ));
        // The timeline itself, row for row: what `created_gte`/`created_lt` and `as_of` seek.
        let txn = store.database().begin_read().expect("read");
        let timeline = txn.open_table(TIMELINE).expect("timeline");
        for row in timeline.iter().expect("rows") {
            let (ms, seq) = row.expect("row");
            read.push(format!("timeline {} → {}", ms.value(), seq.value()));
        }
        read
    };
    let before = read_history(&store);
    let original = check::assert_consistent(&store);
    // Every batch in the redb file (none left to replay from the journal, which would write the
    // history rows back).
    store.checkpoint().expect("checkpoint");
    strip_history(&store);
    drop(store);

    let old = check::verify_stopped(dir.path()).expect("checkable read-only");
    assert!(old.violations.is_empty(), "{:?}", old.violations);
    assert!(!old.checked_a_recovered_copy);
    assert!(!old.history_indexed, "no history to check yet");
    assert_eq!(old.statement_lines, 0);

    let store = Store::open(dir.path()).expect("reopens");
    assert_eq!(
        store.recovery().count(RecoveryStep::IndexHistory),
        original.statement_lines,
        "one line per posting"
    );
    let indexed = check::assert_consistent(&store);
    assert!(indexed.history_indexed);
    assert_eq!(indexed.statement_lines, original.statement_lines);
    let after = read_history(&store);
    assert_eq!(before.len(), after.len());
    for (was, is) in before.iter().zip(&after) {
        assert_eq!(was, is);
    }
    // Indexed once: the next open finds the mark and indexes nothing.
    drop(store);
    let store = Store::open(dir.path()).expect("reopens again");
    assert_eq!(store.recovery().count(RecoveryStep::IndexHistory), 0);
    check::assert_consistent(&store);
}

/// A hub's mirrored statements, as the mirror will write them: running sums per (origin,
/// account) ending at the mirror account's totals. An origin with no lines at all (a mirror
/// written before mirrored statements) is not asked for any; once it has some, every account its
/// entries moved needs them.
#[test]
fn mirrored_statements_sum_to_their_mirror_accounts() {
    const ORIGIN: &str = "till-1";
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("opens");
    let offer = |body: EventBody| {
        store
            .commit_batch(|tables| {
                let tables = tables.replication();
                let seq = tables.origin(ORIGIN)?.applied_through + 1;
                let event = Event {
                    seq,
                    created_at_ms: 2,
                    body,
                };
                tables.apply_event(ORIGIN, &event)?.expect("applies");
                tables.record_applied(ORIGIN, seq, 2)
            })
            .expect("committed");
    };
    for (name, overdraft_limit) in [("bank", None), ("alice", Some(0))] {
        let new = NewAccount {
            id: id(name),
            currency: eur(),
            overdraft_limit,
        };
        offer(EventBody::AccountCreated(Account::open(&new, 1)));
    }
    let sale = Charge {
        number: 1,
        source: id("bank"),
        destination: id("alice"),
        amount: amount(100),
        currency: eur(),
        metadata: Metadata::default(),
        created_at_ms: 1,
        event_seq: 3,
    };
    offer(EventBody::ChargeSucceeded(sale));
    check::assert_consistent(&store);

    let line = |side, after: crate::ledger::Totals| StatementLine {
        entry: 3,
        made_by: 3,
        entry_type: crate::ledger::EntryType::Charge,
        side,
        amount: amount(100),
        after,
        created_at_ms: 1,
    };
    let debited = crate::ledger::Totals {
        debits_posted: 100,
        ..Default::default()
    };
    let credited = crate::ledger::Totals {
        credits_posted: 100,
        ..Default::default()
    };
    let put = |account: &'static str, leg: u8, line: Option<StatementLine>| {
        plant(&store, |txn| {
            let mut table = txn.open_table(REPLICA_STATEMENTS).expect("table");
            match line {
                Some(line) => {
                    table
                        .insert((ORIGIN, account, 3, leg), encode(&line).as_slice())
                        .expect("put");
                }
                None => {
                    table.remove((ORIGIN, account, 3, leg)).expect("removed");
                }
            }
        });
    };
    use crate::ledger::PostingSide::{Credit, Debit};
    assert_eq!(
        check::assert_consistent(&store).mirrored_statement_lines,
        2,
        "the mirror wrote both lines"
    );
    put("bank", 0, Some(line(Debit, debited)));
    put("alice", 1, None);
    let found = violations(&store);
    assert_names(
        &found,
        "mirror till-1/alice was moved by mirrored entries and has no mirrored statement lines",
    );
    put("alice", 1, Some(line(Credit, credited)));
    let report = check::assert_consistent(&store);
    assert_eq!(report.mirrored_statement_lines, 2);

    put("alice", 1, Some(line(Credit, debited)));
    let found = violations(&store);
    assert_names(
        &found,
        "mirrored statement line (till-1, alice, seq 3, leg 1): after",
    );
    assert_names(
        &found,
        "mirror till-1/alice: its last mirrored statement line says",
    );

    put("alice", 1, Some(line(Credit, credited)));
    put("carol", 1, Some(line(Credit, credited)));
    let found = violations(&store);
    assert_names(
        &found,
        "mirrored statement lines of till-1/carol, which is not a mirror account",
    );
    put("carol", 1, None);
    check::assert_consistent(&store);

    let stored: StatementLine = {
        let txn = store.database().begin_read().expect("read");
        let table = txn.open_table(REPLICA_STATEMENTS).expect("table");
        decode(
            table
                .get((ORIGIN, "alice", 3, 1))
                .expect("get")
                .expect("line")
                .value(),
        )
        .expect("decodes")
    };
    assert_eq!(stored.after, credited);
}
