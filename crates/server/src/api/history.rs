//! The history reads (API.md, "Lists"): lists, an account's statement and its balance as of a
//! moment, each a read of the store's history indexes under the caller's tenant. Blocking reads:
//! `handler::App::read` runs them on the blocking pool like every store read.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;

use super::handler::{App, json, problem, shorten, storage_failure};
use super::parse::{BalanceAt, ChargeFilter, ListQuery};
use onceledger_core::ledger::{AccountId, TenantId};
use onceledger_core::render as present;
use onceledger_core::render::problem::{Problem, ProblemKind};
use onceledger_core::store::history::{AsOf, Cursor, ListError, Page};

impl App {
    pub(super) fn list_accounts(
        &self,
        tenant: TenantId,
        query: &ListQuery,
    ) -> Response<Full<Bytes>> {
        let page = self.store.list_accounts(tenant, query);
        list_answer(page, query, "", present::accounts_page)
    }

    pub(super) fn list_charges(
        &self,
        tenant: TenantId,
        filter: &ChargeFilter,
        query: &ListQuery,
    ) -> Response<Full<Bytes>> {
        let page = self.store.list_charges(tenant, filter, query);
        let ids = self.store.charge_ids();
        list_answer(page, query, "", |page| present::charges_page(page, ids))
    }

    pub(super) fn list_refunds(
        &self,
        tenant: TenantId,
        charge: Option<&str>,
        query: &ListQuery,
    ) -> Response<Full<Bytes>> {
        let page = self.store.list_refunds(tenant, charge, query);
        let ids = self.store.charge_ids();
        list_answer(page, query, "", |page| present::refunds_page(page, ids))
    }

    pub(super) fn list_transfers(
        &self,
        tenant: TenantId,
        account: Option<&AccountId>,
        query: &ListQuery,
    ) -> Response<Full<Bytes>> {
        let page = self.store.list_transfers(tenant, account, query);
        let ids = self.store.charge_ids();
        list_answer(page, query, "", |page| present::transfers_page(page, ids))
    }

    /// An id that fails the account pattern names no account: 404, as `GET /v1/accounts/{id}`.
    pub(super) fn list_postings(
        &self,
        tenant: TenantId,
        raw_id: &str,
        query: &ListQuery,
    ) -> Response<Full<Bytes>> {
        let Ok(id) = AccountId::parse(raw_id) else {
            return account_not_found(raw_id, "");
        };
        let page = self.store.statement(tenant, &id, query);
        let ids = self.store.charge_ids();
        list_answer(page, query, "", |page| present::postings_page(page, ids))
    }

    pub(super) fn get_balance(
        &self,
        tenant: TenantId,
        raw_id: &str,
        at: BalanceAt,
    ) -> Response<Full<Bytes>> {
        let Ok(id) = AccountId::parse(raw_id) else {
            return account_not_found(raw_id, "");
        };
        let (as_of, asked_ms) = match at {
            BalanceAt::Seq(seq) => (AsOf::Seq(seq), None),
            // Every event is stamped at or after 1970 (the clock reads 0 before it): an instant
            // before it is before every posting, as seq 0 is.
            BalanceAt::Time { ms } => match u64::try_from(ms) {
                Ok(unix_ms) => (AsOf::Time(unix_ms), Some(ms)),
                Err(_) => (AsOf::Seq(0), Some(ms)),
            },
        };
        match self.store.balance_as_of(tenant, &id, as_of) {
            Ok((account, seq)) => json(
                StatusCode::OK,
                present::balance_as_of(&account, asked_ms, seq),
            ),
            Err(error) => list_error(error, None, ""),
        }
    }

    /// A hub's statement of `origin`'s account: 404 for an account the hub has no mirror of, as
    /// `GET /v1/replication/origins/{node}/accounts/{id}`.
    pub(super) fn list_mirror_postings(
        &self,
        origin: &str,
        raw_id: &str,
        query: &ListQuery,
    ) -> Response<Full<Bytes>> {
        let Ok(id) = AccountId::parse(raw_id) else {
            return account_not_found(raw_id, origin);
        };
        match self.store.mirror_account(origin, &id) {
            Ok(Some(_)) => {}
            Ok(None) => return account_not_found(raw_id, origin),
            Err(error) => return storage_failure(&error),
        }
        // A mirror is never deleted, so the account found above is still there for this read.
        let page = self.store.mirrored_statement(origin, &id, query);
        list_answer(page, query, origin, present::mirrored_postings_page)
    }
}

/// A page as `render` renders it, or the list error as its problem.
fn list_answer<T>(
    page: Result<Page<T>, ListError>,
    query: &ListQuery,
    origin: &str,
    render: impl FnOnce(&Page<T>) -> Vec<u8>,
) -> Response<Full<Bytes>> {
    match page {
        Ok(page) => json(StatusCode::OK, render(&page)),
        Err(error) => list_error(error, Some(query), origin),
    }
}

/// Each list error as the problem API.md gives it: a cursor or a filter that names nothing this
/// tenant has is the request's mistake (400, naming the parameter), never a hint that another
/// tenant has it; the account of the path is a 404 like every missing account.
fn list_error(error: ListError, query: Option<&ListQuery>, origin: &str) -> Response<Full<Bytes>> {
    match error {
        ListError::UnknownCursor(id) => {
            let parameter = match query.and_then(|q| q.cursor.as_ref()) {
                Some(Cursor::EndingBefore(_)) => "ending_before",
                _ => "starting_after",
            };
            problem(&Problem::new(
                ProblemKind::InvalidRequest,
                format!("{parameter}: {} names no item of this list", shorten(&id)),
            ))
        }
        ListError::UnknownFilter { field, id } => problem(&Problem::new(
            ProblemKind::InvalidRequest,
            format!("{field}: there is no {field} {}", shorten(&id)),
        )),
        ListError::UnknownAccount(id) => account_not_found(id.as_str(), origin),
        ListError::Store(error) => storage_failure(&error),
    }
}

fn account_not_found(raw_id: &str, origin: &str) -> Response<Full<Bytes>> {
    let detail = if origin.is_empty() {
        format!("no account {}", shorten(raw_id))
    } else {
        format!(
            "no account {} from node {}",
            shorten(raw_id),
            shorten(origin)
        )
    };
    problem(&Problem::new(ProblemKind::AccountNotFound, detail))
}
