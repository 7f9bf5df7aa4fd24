//! The bodies of the history routes (API.md, "Lists"): every list is `{"data": [...],
//! "has_more": bool}`, and each item is rendered by the view its single-item GET uses, so a charge
//! in a list is byte for byte the charge `GET /v1/charges/{id}` shows. Never stored: lists are
//! reads, so these are not part of any replayed answer.

use serde::Serialize;

use super::{AccountView, ChargeView, RefundView, TransferView, to_json};
use crate::clock::{rfc3339_ms, rfc3339_ms_signed};
use crate::ledger::{
    Account, Charge, ChargeIds, ChargeProgress, EntryType, PostingSide, Refund, Transfer,
};
use crate::store::history::{Page, StatementEntry};

#[derive(Serialize)]
struct PageView<T> {
    data: Vec<T>,
    has_more: bool,
}

fn page<'a, T, V: Serialize>(page: &'a Page<T>, view: impl FnMut(&'a T) -> V) -> Vec<u8> {
    to_json(&PageView {
        data: page.data.iter().map(view).collect(),
        has_more: page.has_more,
    })
}

/// `GET /v1/accounts`.
pub fn accounts_page(accounts: &Page<Account>) -> Vec<u8> {
    page(accounts, AccountView::from)
}

/// `GET /v1/charges`: each charge with its progress, as `GET /v1/charges/{id}`.
pub fn charges_page(charges: &Page<(Charge, ChargeProgress)>, ids: &ChargeIds) -> Vec<u8> {
    page(charges, |(charge, progress)| {
        ChargeView::of(charge, progress, ids)
    })
}

/// `GET /v1/refunds`.
pub fn refunds_page(refunds: &Page<(Refund, Charge)>, ids: &ChargeIds) -> Vec<u8> {
    page(refunds, |(refund, charge)| {
        RefundView::of(refund, charge, ids)
    })
}

/// `GET /v1/transfers`.
pub fn transfers_page(transfers: &Page<Transfer>, ids: &ChargeIds) -> Vec<u8> {
    page(transfers, |transfer| TransferView::of(transfer, ids))
}

#[derive(Serialize)]
struct PostingView {
    id: String,
    entry: String,
    entry_type: &'static str,
    direction: &'static str,
    amount: u64,
    /// A hold or its release: it moved a pending total, not the balance.
    pending: bool,
    balance_after: i64,
    available_after: i64,
    created_at: String,
    event_seq: u64,
}

impl PostingView {
    /// `ids` name the entry that made the line.
    fn of(entry: &StatementEntry, ids: &ChargeIds) -> PostingView {
        let line = &entry.line;
        PostingView {
            id: entry.id(),
            entry: entry.entry_id(ids),
            entry_type: line.entry_type.as_str(),
            direction: match line.side {
                PostingSide::Debit => "debit",
                PostingSide::Credit => "credit",
            },
            amount: line.amount.minor(),
            pending: matches!(
                line.entry_type,
                EntryType::Authorization | EntryType::Release
            ),
            balance_after: line.after.balance(),
            available_after: line.after.available(),
            created_at: rfc3339_ms(line.created_at_ms),
            event_seq: entry.seq,
        }
    }
}

/// `GET /v1/accounts/{id}/postings`: `ids` are this store's, which made the entries.
pub fn postings_page(postings: &Page<StatementEntry>, ids: &ChargeIds) -> Vec<u8> {
    page(postings, |entry| PostingView::of(entry, ids))
}

/// A hub's `GET /v1/replication/origins/{node}/accounts/{id}/postings`. The lines name the
/// origin's entry numbers, and the hub has not the origin's key to spell them as the origin does:
/// they are spelled out in the form of ids from before opaque ids (`ch_` and 16 hex digits), which
/// any reader can map back to the number.
pub fn mirrored_postings_page(postings: &Page<StatementEntry>) -> Vec<u8> {
    postings_page(postings, &ChargeIds::legacy())
}

/// `GET /v1/accounts/{id}/balance`: `account` carries the totals as of the moment asked for.
/// `as_of_ms`: the instant asked for (`None` when asked by seq); `as_of_seq`: the event seq the
/// totals are as of.
pub fn balance_as_of(account: &Account, as_of_ms: Option<i64>, as_of_seq: u64) -> Vec<u8> {
    #[derive(Serialize)]
    struct BalanceView<'a> {
        #[serde(flatten)]
        account: AccountView<'a>,
        as_of: Option<String>,
        as_of_seq: u64,
    }
    to_json(&BalanceView {
        account: AccountView::from(account),
        as_of: as_of_ms.map(rfc3339_ms_signed),
        as_of_seq,
    })
}
