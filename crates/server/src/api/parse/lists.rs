//! The query strings of the history routes (API.md, "Lists"), as strict as request bodies: a
//! parameter the route does not take, a parameter given twice and a malformed value are each 400
//! invalid-request naming the parameter. Nothing is ignored, so a typo (`limt=5`) is never
//! answered as if it were not there, and `?status=succeeded&status=expired` never depends on which
//! one a parser happens to keep.

use std::collections::BTreeMap;

use super::{segment, truncate};
use onceledger_core::clock::{Rfc3339Instant, parse_rfc3339};
use onceledger_core::ledger::{AccountId, ChargeStatus};
use onceledger_core::limits::{ACCOUNT_ID_BYTES_MAX, JSON_INTEGER_MAX};
use onceledger_core::render::problem::{Problem, ProblemKind};
use onceledger_core::store::history::{
    ChargeFilter, Cursor, LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX, ListQuery, Order,
};

/// The paging parameters every list takes.
const PAGING: [&str; 4] = ["limit", "order", "starting_after", "ending_before"];
const CHARGE_FILTERS: [&str; 4] = ["account", "status", "created_gte", "created_lt"];

/// The moment of `GET /v1/accounts/{id}/balance`: exactly one of `as_of` and `as_of_seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BalanceAt {
    /// `as_of`: the last millisecond at or before the instant (negative before 1970).
    Time { ms: i64 },
    /// `as_of_seq`: 0 to 2^63-1.
    Seq(u64),
}

fn invalid(detail: String) -> Problem {
    Problem::new(ProblemKind::InvalidRequest, detail)
}

/// One query string's parameters by name, each value percent-decoded.
struct Params(BTreeMap<&'static str, String>);

impl Params {
    /// Refuses a name outside `allowed` and a name given twice. Empty pairs (`a=1&&b=2`) are
    /// nothing, as in `page_query`.
    fn parse(query: &str, allowed: &[&'static str]) -> Result<Params, Problem> {
        let mut found = BTreeMap::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let Some(&name) = allowed.iter().find(|known| **known == name) else {
                return Err(invalid(format!(
                    "unknown query parameter {:?}",
                    truncate(name)
                )));
            };
            if found.insert(name, segment(value)).is_some() {
                return Err(invalid(format!("query parameter {name} given twice")));
            }
        }
        Ok(Params(found))
    }

    fn take(&mut self, name: &'static str) -> Option<String> {
        self.0.remove(name)
    }
}

/// `limit`, `order` and at most one of `starting_after` and `ending_before`.
fn paging(params: &mut Params) -> Result<ListQuery, Problem> {
    let limit = match params.take("limit") {
        None => LIST_LIMIT_DEFAULT,
        Some(value) => decimal(&value)
            .filter(|n| (1..=LIST_LIMIT_MAX as u64).contains(n))
            // At most LIST_LIMIT_MAX, so the conversion is exact.
            .map(|n| n as usize)
            .ok_or_else(|| {
                invalid(format!(
                    "limit must be an integer from 1 to {LIST_LIMIT_MAX}"
                ))
            })?,
    };
    let order = match params.take("order").as_deref() {
        None | Some("desc") => Order::NewestFirst,
        Some("asc") => Order::OldestFirst,
        Some(_) => return Err(invalid("order must be asc or desc".into())),
    };
    let after = params
        .take("starting_after")
        .map(|id| id_value("starting_after", id));
    let before = params
        .take("ending_before")
        .map(|id| id_value("ending_before", id));
    let cursor = match (after.transpose()?, before.transpose()?) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "starting_after and ending_before cannot be given together".into(),
            ));
        }
        (Some(id), None) => Some(Cursor::StartingAfter(id)),
        (None, Some(id)) => Some(Cursor::EndingBefore(id)),
        (None, None) => None,
    };
    Ok(ListQuery {
        limit,
        order,
        cursor,
    })
}

/// An id in a query (a cursor, the refunds' `charge`): opaque, but never longer than an account
/// id, the longest id the server has. Whether it names anything is the store's to say.
fn id_value(name: &'static str, id: String) -> Result<String, Problem> {
    let chars = id.chars().count();
    if chars == 0 || chars > ACCOUNT_ID_BYTES_MAX {
        return Err(invalid(format!(
            "{name} must be an id of 1 to {ACCOUNT_ID_BYTES_MAX} characters"
        )));
    }
    Ok(id)
}

/// An integer in plain decimal digits (no sign, no spaces), within JSON Schema's int64.
fn decimal(value: &str) -> Option<u64> {
    let digits = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
    digits
        .then(|| value.parse::<u64>().ok())
        .flatten()
        .filter(|n| *n <= JSON_INTEGER_MAX)
}

fn account_filter(value: String) -> Result<AccountId, Problem> {
    AccountId::parse(&value).map_err(|_| {
        invalid(format!(
            "account must be an account id (1 to {ACCOUNT_ID_BYTES_MAX} of A-Z a-z 0-9 _ . : -)"
        ))
    })
}

fn instant(name: &'static str, value: &str) -> Result<Rfc3339Instant, Problem> {
    parse_rfc3339(value).ok_or_else(|| {
        invalid(format!(
            "{name} must be an RFC 3339 date-time, such as 2026-01-31T23:59:59.999Z"
        ))
    })
}

/// A `created_*` bound as the store takes it: the first millisecond at or after the instant, so
/// that `created_gte` keeps exactly the charges created at or after it and `created_lt` those
/// before it, to the millisecond the ledger keeps. Before 1970 is 0, before every charge.
fn created_bound(name: &'static str, value: &str) -> Result<u64, Problem> {
    Ok(u64::try_from(instant(name, value)?.ms_ceil()).unwrap_or(0))
}

/// `GET /v1/accounts`, `GET /v1/accounts/{id}/postings` and a hub's mirrored postings.
pub(super) fn plain_list(query: &str) -> Result<ListQuery, Problem> {
    paging(&mut Params::parse(query, &PAGING)?)
}

/// `GET /v1/charges`.
pub(super) fn charges(query: &str) -> Result<(ChargeFilter, ListQuery), Problem> {
    let mut params = Params::parse(query, &[PAGING.as_slice(), &CHARGE_FILTERS].concat())?;
    let status = match params.take("status").as_deref() {
        None => None,
        Some("succeeded") => Some(ChargeStatus::Succeeded),
        Some("authorized") => Some(ChargeStatus::Authorized),
        Some("canceled") => Some(ChargeStatus::Canceled),
        Some("expired") => Some(ChargeStatus::Expired),
        Some(_) => {
            return Err(invalid(
                "status must be succeeded, authorized, canceled or expired".into(),
            ));
        }
    };
    let filter = ChargeFilter {
        account: params.take("account").map(account_filter).transpose()?,
        status,
        created_gte_ms: (params.take("created_gte"))
            .map(|v| created_bound("created_gte", &v))
            .transpose()?,
        created_lt_ms: (params.take("created_lt"))
            .map(|v| created_bound("created_lt", &v))
            .transpose()?,
    };
    Ok((filter, paging(&mut params)?))
}

/// `GET /v1/refunds`: the paging and `charge`.
pub(super) fn refunds(query: &str) -> Result<(Option<String>, ListQuery), Problem> {
    let mut params = Params::parse(query, &[PAGING.as_slice(), &["charge"]].concat())?;
    let charge = (params.take("charge"))
        .map(|id| id_value("charge", id))
        .transpose()?;
    Ok((charge, paging(&mut params)?))
}

/// `GET /v1/transfers`: the paging and `account`.
pub(super) fn transfers(query: &str) -> Result<(Option<AccountId>, ListQuery), Problem> {
    let mut params = Params::parse(query, &[PAGING.as_slice(), &["account"]].concat())?;
    let account = params.take("account").map(account_filter).transpose()?;
    Ok((account, paging(&mut params)?))
}

/// `GET /v1/accounts/{id}/balance`: exactly one of `as_of` and `as_of_seq`.
pub(super) fn balance(query: &str) -> Result<BalanceAt, Problem> {
    let mut params = Params::parse(query, &["as_of", "as_of_seq"])?;
    let time = params
        .take("as_of")
        .map(|value| instant("as_of", &value).map(|at| BalanceAt::Time { ms: at.ms_floor }));
    let seq = params.take("as_of_seq").map(|value| {
        decimal(&value).map(BalanceAt::Seq).ok_or_else(|| {
            invalid(format!(
                "as_of_seq must be an integer from 0 to {JSON_INTEGER_MAX}"
            ))
        })
    });
    match (time.transpose()?, seq.transpose()?) {
        (Some(at), None) | (None, Some(at)) => Ok(at),
        (Some(_), Some(_)) => Err(invalid(
            "as_of and as_of_seq cannot be given together".into(),
        )),
        (None, None) => Err(invalid("as_of or as_of_seq is required".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(result: Result<impl std::fmt::Debug, Problem>) -> String {
        let problem = result.expect_err("refused");
        assert_eq!(problem.kind, ProblemKind::InvalidRequest);
        problem.detail
    }

    #[test]
    fn paging_defaults_and_bounds() {
        assert_eq!(plain_list(""), Ok(ListQuery::default()));
        assert_eq!(
            plain_list("limit=100&order=asc&starting_after=po_1"),
            Ok(ListQuery {
                limit: 100,
                order: Order::OldestFirst,
                cursor: Some(Cursor::StartingAfter("po_1".into())),
            })
        );
        assert_eq!(
            plain_list("ending_before=a%3Ab&order=desc&limit=1").map(|q| q.cursor),
            Ok(Some(Cursor::EndingBefore("a:b".into())))
        );
        for (query, named) in [
            ("limit=0", "limit"),
            ("limit=101", "limit"),
            ("limit=", "limit"),
            ("limit=+5", "limit"),
            ("limit=5.0", "limit"),
            ("limit=99999999999999999999", "limit"),
            ("order=ASC", "order"),
            ("order", "order"),
            ("starting_after=", "starting_after"),
            ("ending_before=", "ending_before"),
            ("starting_after=a&ending_before=b", "ending_before"),
            ("limit=1&limit=1", "limit"),
            ("status=succeeded", "status"),
            ("Limit=5", "Limit"),
        ] {
            let detail = refused(plain_list(query));
            assert!(detail.contains(named), "{query}: {detail}");
        }
        let long = "x".repeat(ACCOUNT_ID_BYTES_MAX + 1);
        refused(plain_list(&format!("starting_after={long}")));
        assert!(plain_list(&format!("starting_after={}", &long[1..])).is_ok());
    }

    #[test]
    fn charge_filters() {
        let (filter, _) = charges(
            "account=alice&status=authorized&created_gte=1970-01-01T00:00:01.0001Z\
             &created_lt=1970-01-01T00:00:02%2B00:00",
        )
        .expect("parses");
        assert_eq!(
            filter,
            ChargeFilter {
                account: Some(AccountId::parse("alice").expect("id")),
                status: Some(ChargeStatus::Authorized),
                created_gte_ms: Some(1001),
                created_lt_ms: Some(2000),
            }
        );
        let (before_1970, _) =
            charges("created_gte=1969-01-01T00:00:00Z&created_lt=1960-01-01T00:00:00Z")
                .expect("parses");
        assert_eq!(
            (before_1970.created_gte_ms, before_1970.created_lt_ms),
            (Some(0), Some(0))
        );
        for (query, named) in [
            ("account=a%20b", "account"),
            ("status=refunded", "status"),
            ("created_gte=yesterday", "created_gte"),
            ("created_lt=2026-01-01", "created_lt"),
            ("charge=ch_1", "charge"),
        ] {
            let detail = refused(charges(query));
            assert!(detail.contains(named), "{query}: {detail}");
        }
        assert_eq!(
            refunds("charge=ch_1&limit=3").map(|(c, q)| (c, q.limit)),
            Ok((Some("ch_1".into()), 3))
        );
        assert!(refused(refunds("account=a")).contains("account"));
        assert!(transfers("account=a").is_ok_and(|(a, _)| a.is_some()));
        assert!(refused(transfers("charge=a")).contains("charge"));
    }

    #[test]
    fn a_balance_takes_exactly_one_moment() {
        assert_eq!(balance("as_of_seq=0"), Ok(BalanceAt::Seq(0)));
        assert_eq!(
            balance("as_of=1970-01-01T00:00:00.0019Z"),
            Ok(BalanceAt::Time { ms: 1 })
        );
        assert_eq!(
            balance("as_of=1969-12-31T23:59:59.9999Z"),
            Ok(BalanceAt::Time { ms: -1 })
        );
        for (query, named) in [
            ("", "as_of"),
            ("as_of_seq=1&as_of=1970-01-01T00:00:00Z", "as_of_seq"),
            ("as_of_seq=-1", "as_of_seq"),
            ("as_of_seq=9223372036854775808", "as_of_seq"),
            ("as_of=now", "as_of"),
            ("as_of_seq=1&as_of_seq=2", "as_of_seq"),
            ("limit=5&as_of_seq=1", "limit"),
        ] {
            let detail = refused(balance(query));
            assert!(detail.contains(named), "{query}: {detail}");
        }
    }
}
