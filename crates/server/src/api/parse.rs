//! The request parser: a pure function from method, target, headers and body bytes to a typed
//! request or a problem. No I/O, no clock, no panics; cargo-fuzz calls [`parse_request`] directly.
//!
//! Everything a client can get wrong is refused here, before any key is claimed, so a refused
//! request never touches the ledger and its key stays unused.

use std::collections::BTreeMap;
use std::fmt;

use http::{HeaderMap, Method, header};
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::auth::{DEFAULT_TENANT_NAME, Role, is_valid_tenant_name};
use onceledger_core::idempotency::{Fingerprint, IdempotencyKey, canonical_body};
use onceledger_core::ids::is_valid_origin_key;
use onceledger_core::ledger::{
    AccountId, Amount, Command, Currency, Metadata, NewAccount, NewAuthorization, NewCharge,
    NewRefund, NewTransfer, Settle, TransferLeg,
};
use onceledger_core::limits::{
    ACCOUNT_ID_BYTES_MAX, AMOUNT_MINOR_MAX, AUTHORIZATION_EXPIRES_IN_S_MAX,
    AUTHORIZATION_EXPIRES_IN_S_MIN, BODY_BYTES_MAX, EVENTS_PAGE_DEFAULT, EVENTS_PAGE_MAX,
    JSON_INTEGER_MAX, LIST_PAGE_DEFAULT, LIST_PAGE_MAX, REPLICATION_BODY_BYTES_MAX,
    TRANSFER_LEGS_MAX,
};
use onceledger_core::render::problem::{Problem, ProblemKind};
use onceledger_core::wire::{EventBatch, decode_batch};

mod lists;

pub use lists::BalanceAt;
pub use onceledger_core::store::history::{ChargeFilter, ListQuery};

pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// What a request asks for, fully validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiRequest {
    Healthz,
    Readyz,
    Metrics,
    OpenApi,
    /// The raw id: an id that fails the pattern simply names no account (404).
    GetAccount(String),
    GetCharge(String),
    /// Raw ids, as for `GetCharge`: an id this store never issued names nothing (404).
    GetRefund(String),
    GetTransfer(String),
    ListEvents {
        after: u64,
        limit: usize,
    },
    ListDeadLetters {
        after: u64,
        limit: usize,
    },
    ListOrigins,
    ListInbox {
        origin: String,
        after: u64,
        limit: usize,
    },
    /// A hub's mirror of an origin's account; raw ids as for `GetAccount`.
    GetMirrorAccount {
        origin: String,
        id: String,
    },
    /// `GET /v1/accounts`: the caller's tenant's accounts.
    ListAccounts(ListQuery),
    ListCharges {
        filter: ChargeFilter,
        query: ListQuery,
    },
    /// `charge`: the raw id of the filter, if any (the store says whether it names one).
    ListRefunds {
        charge: Option<String>,
        query: ListQuery,
    },
    ListTransfers {
        account: Option<AccountId>,
        query: ListQuery,
    },
    /// `GET /v1/accounts/{id}/postings`; the raw id as for `GetAccount`.
    ListPostings {
        account: String,
        query: ListQuery,
    },
    /// `GET /v1/accounts/{id}/balance`; the raw id as for `GetAccount`.
    GetBalance {
        account: String,
        at: BalanceAt,
    },
    /// A hub's statement of an origin's account; raw ids as for `GetMirrorAccount`.
    ListMirrorPostings {
        origin: String,
        account: String,
        query: ListQuery,
    },
    /// `POST /v1/replication/events`: deduplicated by (origin, seq), no Idempotency-Key.
    Replicate(EventBatch),
    ListTenants,
    ListTokens,
    Write(WriteIntent),
}

pub use crate::routes::REPLICATION_EVENTS_PATH;

/// The body limit of a request to `path`.
pub fn body_bytes_max(path: &str) -> usize {
    if path == REPLICATION_EVENTS_PATH {
        REPLICATION_BODY_BYTES_MAX
    } else {
        BODY_BYTES_MAX
    }
}

/// A POST ready for the idempotency layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteIntent {
    pub key: IdempotencyKey,
    pub command: Command,
    pub fingerprint: Fingerprint,
}

#[derive(Clone, Copy)]
enum SettleAction {
    Capture,
    Void,
}

enum Route<'a> {
    Healthz,
    Readyz,
    Metrics,
    OpenApi,
    Accounts,
    Account(&'a str),
    /// `GET /v1/accounts/{id}/postings`.
    Postings(&'a str),
    /// `GET /v1/accounts/{id}/balance`.
    Balance(&'a str),
    Charges,
    Charge(&'a str),
    /// `POST /v1/charges/{id}/capture` or `/void`.
    SettleCharge(&'a str, SettleAction),
    Refunds,
    Refund(&'a str),
    Transfers,
    Transfer(&'a str),
    Events,
    DeadLetters,
    /// The raw id segment: a malformed one is the client's error (400), not an unknown route.
    Redrive(&'a str),
    Origins,
    Inbox(&'a str),
    MirrorAccount(&'a str, &'a str),
    MirrorPostings(&'a str, &'a str),
    ReplicationEvents,
    Tenants,
    Tokens,
    RevokeToken(&'a str),
}

pub fn parse_request(
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<ApiRequest, Problem> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let route = route(path)
        .ok_or_else(|| Problem::new(ProblemKind::NotFound, format!("no route for {path}")))?;
    let not_allowed = |allow: &'static str| Problem {
        kind: ProblemKind::MethodNotAllowed,
        detail: format!("{path} accepts {allow}"),
        allow: Some(allow),
    };
    let is_get = method == Method::GET;
    let is_post = method == Method::POST;
    let get_only = |request: ApiRequest| {
        if is_get {
            Ok(request)
        } else {
            Err(not_allowed("GET"))
        }
    };
    match route {
        Route::Healthz => get_only(ApiRequest::Healthz),
        Route::Readyz => get_only(ApiRequest::Readyz),
        Route::Metrics => get_only(ApiRequest::Metrics),
        Route::OpenApi => get_only(ApiRequest::OpenApi),
        Route::Account(id) => get_only(ApiRequest::GetAccount(segment(id))),
        Route::Postings(_) | Route::Balance(_) | Route::MirrorPostings(..) if !is_get => {
            Err(not_allowed("GET"))
        }
        Route::Postings(id) => Ok(ApiRequest::ListPostings {
            account: segment(id),
            query: lists::plain_list(query)?,
        }),
        Route::Balance(id) => Ok(ApiRequest::GetBalance {
            account: segment(id),
            at: lists::balance(query)?,
        }),
        Route::MirrorPostings(origin, id) => Ok(ApiRequest::ListMirrorPostings {
            origin: origin_in_path(origin)?,
            account: segment(id),
            query: lists::plain_list(query)?,
        }),
        Route::Accounts if is_get => lists::plain_list(query).map(ApiRequest::ListAccounts),
        Route::Charges if is_get => {
            let (filter, query) = lists::charges(query)?;
            Ok(ApiRequest::ListCharges { filter, query })
        }
        Route::Refunds if is_get => {
            let (charge, query) = lists::refunds(query)?;
            Ok(ApiRequest::ListRefunds { charge, query })
        }
        Route::Transfers if is_get => {
            let (account, query) = lists::transfers(query)?;
            Ok(ApiRequest::ListTransfers { account, query })
        }
        Route::Charge(id) => get_only(ApiRequest::GetCharge(segment(id))),
        Route::Refund(id) => get_only(ApiRequest::GetRefund(segment(id))),
        Route::Transfer(id) => get_only(ApiRequest::GetTransfer(segment(id))),
        Route::SettleCharge(..) if !is_post => Err(not_allowed("POST")),
        Route::Refunds | Route::Transfers if !is_post => Err(not_allowed("GET, POST")),
        Route::SettleCharge(id, action) => {
            let charge = segment(id);
            write(headers, body, path, |body| {
                parse_settle_body(body, action).map(|how| Command::SettleCharge { charge, how })
            })
            .map(ApiRequest::Write)
        }
        Route::Refunds => write(headers, body, path, parse_refund_body).map(ApiRequest::Write),
        Route::Transfers => write(headers, body, path, parse_transfer_body).map(ApiRequest::Write),
        Route::Events if is_get => {
            let (after, limit) = events_query(query)?;
            Ok(ApiRequest::ListEvents { after, limit })
        }
        Route::Events => Err(not_allowed("GET")),
        Route::DeadLetters if is_get => {
            let (after, limit) = page_query(query, LIST_PAGE_DEFAULT, LIST_PAGE_MAX)?;
            Ok(ApiRequest::ListDeadLetters { after, limit })
        }
        Route::DeadLetters => Err(not_allowed("GET")),
        Route::Origins => get_only(ApiRequest::ListOrigins),
        Route::Inbox(origin) if is_get => {
            let origin = origin_in_path(origin)?;
            let (after, limit) = page_query(query, LIST_PAGE_DEFAULT, LIST_PAGE_MAX)?;
            Ok(ApiRequest::ListInbox {
                origin,
                after,
                limit,
            })
        }
        Route::Inbox(_) => Err(not_allowed("GET")),
        Route::MirrorAccount(_, _) if !is_get => Err(not_allowed("GET")),
        Route::MirrorAccount(origin, id) => Ok(ApiRequest::GetMirrorAccount {
            origin: origin_in_path(origin)?,
            id: segment(id),
        }),
        Route::ReplicationEvents if !is_post => Err(not_allowed("POST")),
        Route::ReplicationEvents => replicate(headers, body).map(ApiRequest::Replicate),
        Route::Redrive(_) if !is_post => Err(not_allowed("POST")),
        Route::Redrive(id) => {
            let id = id_in_path(id)?;
            write(headers, body, path, |body| parse_redrive_body(body, id)).map(ApiRequest::Write)
        }
        Route::Tenants if is_get => Ok(ApiRequest::ListTenants),
        Route::Tenants if !is_post => Err(not_allowed("GET, POST")),
        Route::Tenants => write(headers, body, path, parse_tenant_body).map(ApiRequest::Write),
        Route::Tokens if is_get => Ok(ApiRequest::ListTokens),
        Route::Tokens if !is_post => Err(not_allowed("GET, POST")),
        Route::Tokens => write(headers, body, path, parse_token_body).map(ApiRequest::Write),
        Route::RevokeToken(_) if !is_post => Err(not_allowed("POST")),
        Route::RevokeToken(id) => {
            let id = id_in_path(id)?;
            write(headers, body, path, |body| {
                parse_empty_body(body).map(|()| Command::RevokeToken { id })
            })
            .map(ApiRequest::Write)
        }
        Route::Accounts | Route::Charges if !is_post => Err(not_allowed("GET, POST")),
        Route::Accounts => write(headers, body, path, parse_account_body).map(ApiRequest::Write),
        Route::Charges => write(headers, body, path, parse_charge_body).map(ApiRequest::Write),
    }
}

fn route(path: &str) -> Option<Route<'_>> {
    let single_segment = |rest: &str| !rest.is_empty() && !rest.contains('/');
    Some(match path {
        "/healthz" => Route::Healthz,
        "/readyz" => Route::Readyz,
        "/metrics" => Route::Metrics,
        "/openapi.json" => Route::OpenApi,
        "/v1/accounts" => Route::Accounts,
        "/v1/charges" => Route::Charges,
        "/v1/refunds" => Route::Refunds,
        "/v1/transfers" => Route::Transfers,
        "/v1/events" => Route::Events,
        "/v1/dead-letters" => Route::DeadLetters,
        "/v1/replication/origins" => Route::Origins,
        "/v1/tenants" => Route::Tenants,
        "/v1/tokens" => Route::Tokens,
        REPLICATION_EVENTS_PATH => Route::ReplicationEvents,
        _ => {
            if let Some(rest) = path.strip_prefix("/v1/accounts/") {
                match rest.split_once('/') {
                    None => single_segment(rest).then_some(Route::Account(rest))?,
                    Some((id, "postings")) if single_segment(id) => Route::Postings(id),
                    Some((id, "balance")) if single_segment(id) => Route::Balance(id),
                    Some(_) => return None,
                }
            } else if let Some(rest) = path.strip_prefix("/v1/charges/") {
                match rest.split_once('/') {
                    None => single_segment(rest).then_some(Route::Charge(rest))?,
                    Some((id, "capture")) if single_segment(id) => {
                        Route::SettleCharge(id, SettleAction::Capture)
                    }
                    Some((id, "void")) if single_segment(id) => {
                        Route::SettleCharge(id, SettleAction::Void)
                    }
                    Some(_) => return None,
                }
            } else if let Some(id) = path.strip_prefix("/v1/refunds/") {
                single_segment(id).then_some(Route::Refund(id))?
            } else if let Some(id) = path.strip_prefix("/v1/transfers/") {
                single_segment(id).then_some(Route::Transfer(id))?
            } else if let Some(rest) = path.strip_prefix("/v1/dead-letters/") {
                let id = rest.strip_suffix("/redrive")?;
                single_segment(id).then_some(Route::Redrive(id))?
            } else if let Some(rest) = path.strip_prefix("/v1/tokens/") {
                let id = rest.strip_suffix("/revoke")?;
                single_segment(id).then_some(Route::RevokeToken(id))?
            } else if let Some(rest) = path.strip_prefix("/v1/replication/origins/") {
                let (origin, rest) = rest.split_once('/')?;
                if !single_segment(origin) {
                    return None;
                }
                if rest == "inbox" {
                    Route::Inbox(origin)
                } else {
                    let rest = rest.strip_prefix("accounts/")?;
                    match rest.split_once('/') {
                        None => {
                            single_segment(rest).then_some(Route::MirrorAccount(origin, rest))?
                        }
                        Some((id, "postings")) if single_segment(id) => {
                            Route::MirrorPostings(origin, id)
                        }
                        Some(_) => return None,
                    }
                }
            } else {
                return None;
            }
        }
    })
}

/// A path segment with its percent-encoding undone (`0%3Atill` is `0:till`, RFC 3986). A segment
/// that does not decode to UTF-8 is kept as it came: it then names nothing (404) or fails its
/// pattern (400).
fn segment(raw: &str) -> String {
    if !raw.contains('%') {
        return raw.to_owned();
    }
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = raw.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let escaped = (bytes[at] == b'%')
            .then(|| Some((hex(*bytes.get(at + 1)?)?, hex(*bytes.get(at + 2)?)?)))
            .flatten();
        match escaped {
            Some((high, low)) => {
                decoded.push((high * 16 + low) as u8);
                at += 3;
            }
            None => {
                decoded.push(bytes[at]);
                at += 1;
            }
        }
    }
    String::from_utf8(decoded).unwrap_or_else(|_| raw.to_owned())
}

/// A numeric id in a path (a dead letter, a token): 1 to 2^63-1 in decimal digits, as the
/// OpenAPI document declares it; anything else is 400.
fn id_in_path(raw: &str) -> Result<u64, Problem> {
    let raw = segment(raw);
    let digits = !raw.is_empty() && raw.len() <= 19 && raw.bytes().all(|b| b.is_ascii_digit());
    raw.parse::<u64>()
        .ok()
        .filter(|id| digits && (1..=JSON_INTEGER_MAX).contains(id))
        .ok_or_else(|| {
            Problem::new(
                ProblemKind::InvalidRequest,
                format!("the id in the path must be an integer from 1 to {JSON_INTEGER_MAX}"),
            )
        })
}

/// An origin in a hub's path: what `origin_key` makes (a node id, or `TENANT:NODE`); else 400.
fn origin_in_path(raw: &str) -> Result<String, Problem> {
    let origin = segment(raw);
    if is_valid_origin_key(&origin) {
        Ok(origin)
    } else {
        Err(Problem::new(
            ProblemKind::InvalidRequest,
            "the origin in the path must be a node id (1 to 64 of A-Z a-z 0-9 _ . -), or TENANT_ID:NODE",
        ))
    }
}

fn events_query(query: &str) -> Result<(u64, usize), Problem> {
    page_query(query, EVENTS_PAGE_DEFAULT, EVENTS_PAGE_MAX)
}

/// `after=N&limit=M`, both optional; `limit` from 1 to `limit_max`.
fn page_query(
    query: &str,
    limit_default: usize,
    limit_max: usize,
) -> Result<(u64, usize), Problem> {
    let invalid = |detail: String| Problem::new(ProblemKind::InvalidRequest, detail);
    let (mut after, mut limit) = (None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match name {
            "after" => &mut after,
            "limit" => &mut limit,
            other => {
                return Err(invalid(format!(
                    "unknown query parameter {:?}",
                    truncate(other)
                )));
            }
        };
        if slot.is_some() {
            return Err(invalid(format!("query parameter {name} given twice")));
        }
        // Bounded by JSON Schema's int64, the range the OpenAPI document declares.
        let number = if value.bytes().all(|b| b.is_ascii_digit()) {
            value.parse::<u64>().ok().filter(|n| *n <= JSON_INTEGER_MAX)
        } else {
            None
        };
        *slot = Some(number.ok_or_else(|| {
            invalid(format!(
                "{name} must be an integer from 0 to {JSON_INTEGER_MAX}"
            ))
        })?);
    }
    let limit = limit.unwrap_or(limit_default as u64);
    if limit == 0 || limit > limit_max as u64 {
        return Err(invalid(format!("limit must be from 1 to {limit_max}")));
    }
    // `limit` is at most `limit_max`, so the conversion is exact.
    Ok((after.unwrap_or(0), limit as usize))
}

/// Checks shared by every POST, in the order API.md's table lists them, then the body.
fn write(
    headers: &HeaderMap,
    body: &[u8],
    path: &str,
    parse_body: impl FnOnce(&[u8]) -> Result<Command, String>,
) -> Result<WriteIntent, Problem> {
    let mut keys = headers.get_all(IDEMPOTENCY_KEY_HEADER).iter();
    let raw_key = keys.next().ok_or_else(|| {
        Problem::new(
            ProblemKind::IdempotencyKeyMissing,
            "every POST needs an Idempotency-Key header",
        )
    })?;
    let key_invalid = || {
        Problem::new(
            ProblemKind::IdempotencyKeyInvalid,
            "Idempotency-Key must be 1 to 255 visible ASCII characters (0x21-0x7E), bare or as a quoted string",
        )
    };
    if keys.next().is_some() {
        return Err(key_invalid());
    }
    let key = IdempotencyKey::parse(raw_key.as_bytes()).map_err(|_| key_invalid())?;
    // An empty body has no media type to check (a redrive needs none).
    if !body.is_empty() && !is_json(headers) {
        return Err(Problem::new(
            ProblemKind::UnsupportedMediaType,
            "send Content-Type: application/json",
        ));
    }
    if body.len() > BODY_BYTES_MAX {
        return Err(Problem::new(
            ProblemKind::BodyTooLarge,
            format!("the body limit is {BODY_BYTES_MAX} bytes"),
        ));
    }
    let command =
        parse_body(body).map_err(|detail| Problem::new(ProblemKind::InvalidRequest, detail))?;
    let fingerprint = Fingerprint::of("POST", path, &canonical_body(&command));
    Ok(WriteIntent {
        key,
        command,
        fingerprint,
    })
}

/// The replication endpoint: JSON, no Idempotency-Key (events carry (origin, seq) instead).
fn replicate(headers: &HeaderMap, body: &[u8]) -> Result<EventBatch, Problem> {
    if !is_json(headers) {
        return Err(Problem::new(
            ProblemKind::UnsupportedMediaType,
            "send Content-Type: application/json",
        ));
    }
    if body.len() > REPLICATION_BODY_BYTES_MAX {
        return Err(Problem::new(
            ProblemKind::BodyTooLarge,
            format!("the replication body limit is {REPLICATION_BODY_BYTES_MAX} bytes"),
        ));
    }
    decode_batch(body).map_err(|e| Problem::new(ProblemKind::InvalidRequest, e.to_string()))
}

/// A redrive takes no parameters: an empty body or `{}`.
fn parse_redrive_body(body: &[u8], id: u64) -> Result<Command, String> {
    parse_empty_body(body).map(|()| Command::RedriveDeadLetter { id })
}

/// A POST without parameters (redrive, revoke): an empty body or `{}`.
fn parse_empty_body(body: &[u8]) -> Result<(), String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct EmptyBody {}
    if !body.is_empty() {
        let _: EmptyBody = serde_json::from_slice(body).map_err(json_error)?;
    }
    Ok(())
}

fn parse_tenant_body(body: &[u8]) -> Result<Command, String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct TenantBody {
        name: String,
    }
    let parsed: TenantBody = serde_json::from_slice(body).map_err(json_error)?;
    if !is_valid_tenant_name(&parsed.name) {
        return Err("name must be 1 to 64 of A-Z a-z 0-9 _ . -".into());
    }
    Ok(Command::CreateTenant { name: parsed.name })
}

fn parse_token_body(body: &[u8]) -> Result<Command, String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct TokenBody {
        tenant: String,
        role: String,
    }
    let parsed: TokenBody = serde_json::from_slice(body).map_err(json_error)?;
    if !is_valid_tenant_name(&parsed.tenant) {
        return Err("tenant must be 1 to 64 of A-Z a-z 0-9 _ . -".into());
    }
    let role = Role::parse(&parsed.role)
        .ok_or_else(|| "role must be admin, client or replicator".to_owned())?;
    if role == Role::Admin && parsed.tenant != DEFAULT_TENANT_NAME {
        return Err(format!(
            "admin tokens belong to the operator's tenant, {DEFAULT_TENANT_NAME}"
        ));
    }
    Ok(Command::CreateToken {
        tenant: parsed.tenant,
        role,
        secret: None,
    })
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
}

/// Shortens client-supplied text before it is echoed in an error detail.
fn truncate(text: &str) -> String {
    text.chars().take(64).collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountBody {
    id: String,
    currency: String,
    /// Absent means 0; `null` means no limit.
    #[serde(default = "no_overdraft")]
    overdraft_limit: Option<u64>,
}

fn no_overdraft() -> Option<u64> {
    Some(0)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChargeBody {
    source: String,
    destination: String,
    amount: u64,
    currency: String,
    #[serde(default, deserialize_with = "unique_string_map")]
    metadata: Option<BTreeMap<String, String>>,
    /// Absent or `true`: an immediate charge; `false`: an authorization.
    capture: Option<bool>,
    /// Seconds until an authorization expires.
    expires_in: Option<u64>,
}

fn parse_account_body(body: &[u8]) -> Result<Command, String> {
    let parsed: AccountBody = serde_json::from_slice(body).map_err(json_error)?;
    if parsed
        .overdraft_limit
        .is_some_and(|limit| limit > AMOUNT_MINOR_MAX)
    {
        return Err(format!(
            "overdraft_limit must be from 0 to {AMOUNT_MINOR_MAX}, or null"
        ));
    }
    Ok(Command::CreateAccount(NewAccount {
        id: AccountId::parse(&parsed.id).map_err(|e| e.to_string())?,
        currency: Currency::parse(&parsed.currency).map_err(|e| e.to_string())?,
        overdraft_limit: parsed.overdraft_limit,
    }))
}

fn parse_charge_body(body: &[u8]) -> Result<Command, String> {
    let parsed: ChargeBody = serde_json::from_slice(body).map_err(json_error)?;
    let authorize = parsed.capture == Some(false);
    let expires_in_s = parsed.expires_in;
    if let Some(seconds) = expires_in_s {
        if !authorize {
            return Err("expires_in is for authorizations: send it with \"capture\": false".into());
        }
        if !(AUTHORIZATION_EXPIRES_IN_S_MIN..=AUTHORIZATION_EXPIRES_IN_S_MAX).contains(&seconds) {
            return Err(format!(
                "expires_in must be from {AUTHORIZATION_EXPIRES_IN_S_MIN} to {AUTHORIZATION_EXPIRES_IN_S_MAX} seconds"
            ));
        }
    }
    let charge = NewCharge {
        source: AccountId::parse(&parsed.source).map_err(|e| format!("source: {e}"))?,
        destination: AccountId::parse(&parsed.destination)
            .map_err(|e| format!("destination: {e}"))?,
        amount: Amount::new(parsed.amount).map_err(|e| e.to_string())?,
        currency: Currency::parse(&parsed.currency).map_err(|e| e.to_string())?,
        metadata: Metadata::new(parsed.metadata.unwrap_or_default()).map_err(|e| e.to_string())?,
    };
    if charge.source == charge.destination {
        return Err("source and destination must be different accounts".into());
    }
    if authorize {
        return Ok(Command::Authorize(NewAuthorization {
            charge,
            expires_in_s,
        }));
    }
    Ok(Command::CreateCharge(charge))
}

/// A capture: `{}` (or no body) for the whole authorized amount, or `{"amount": N}`. A void:
/// `{}` or no body.
fn parse_settle_body(body: &[u8], action: SettleAction) -> Result<Settle, String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct CaptureBody {
        amount: Option<u64>,
    }
    match action {
        SettleAction::Void => parse_empty_body(body).map(|()| Settle::Void),
        SettleAction::Capture if body.is_empty() => Ok(Settle::Capture(None)),
        SettleAction::Capture => {
            let parsed: CaptureBody = serde_json::from_slice(body).map_err(json_error)?;
            let amount = parsed.amount.map(Amount::new).transpose();
            Ok(Settle::Capture(amount.map_err(|e| e.to_string())?))
        }
    }
}

fn parse_refund_body(body: &[u8]) -> Result<Command, String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RefundBody {
        charge: String,
        amount: Option<u64>,
        #[serde(default, deserialize_with = "unique_string_map")]
        metadata: Option<BTreeMap<String, String>>,
    }
    let parsed: RefundBody = serde_json::from_slice(body).map_err(json_error)?;
    // Ids are opaque, but never longer than an account id: a longer one names nothing, and a
    // stored 404 need not keep it.
    // Characters, as the document's `maxLength` counts them.
    if parsed.charge.is_empty() || parsed.charge.chars().count() > ACCOUNT_ID_BYTES_MAX {
        return Err(format!(
            "charge must be a charge id (1 to {ACCOUNT_ID_BYTES_MAX} characters)"
        ));
    }
    Ok(Command::CreateRefund(NewRefund {
        charge: parsed.charge,
        amount: parsed
            .amount
            .map(Amount::new)
            .transpose()
            .map_err(|e| e.to_string())?,
        metadata: Metadata::new(parsed.metadata.unwrap_or_default()).map_err(|e| e.to_string())?,
    }))
}

fn parse_transfer_body(body: &[u8]) -> Result<Command, String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct LegBody {
        source: String,
        destination: String,
        amount: u64,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct TransferBody {
        currency: String,
        legs: Vec<LegBody>,
        #[serde(default, deserialize_with = "unique_string_map")]
        metadata: Option<BTreeMap<String, String>>,
    }
    let parsed: TransferBody = serde_json::from_slice(body).map_err(json_error)?;
    if parsed.legs.is_empty() || parsed.legs.len() > TRANSFER_LEGS_MAX {
        return Err(format!("a transfer has 1 to {TRANSFER_LEGS_MAX} legs"));
    }
    let mut legs = Vec::with_capacity(parsed.legs.len());
    for (index, leg) in parsed.legs.into_iter().enumerate() {
        let leg = TransferLeg {
            source: AccountId::parse(&leg.source)
                .map_err(|e| format!("leg {index}: source: {e}"))?,
            destination: AccountId::parse(&leg.destination)
                .map_err(|e| format!("leg {index}: destination: {e}"))?,
            amount: Amount::new(leg.amount).map_err(|e| format!("leg {index}: {e}"))?,
        };
        if leg.source == leg.destination {
            return Err(format!(
                "leg {index}: source and destination must be different accounts"
            ));
        }
        legs.push(leg);
    }
    Ok(Command::CreateTransfer(NewTransfer {
        currency: Currency::parse(&parsed.currency).map_err(|e| e.to_string())?,
        legs,
        metadata: Metadata::new(parsed.metadata.unwrap_or_default()).map_err(|e| e.to_string())?,
    }))
}

fn json_error(error: serde_json::Error) -> String {
    format!("body is not a valid request: {error}")
}

/// A JSON object of strings in which a repeated key is an error, not "last one wins": a request
/// whose meaning depends on the JSON library's tie-breaking is refused.
fn unique_string_map<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    Ok(Option::<UniqueStringMap>::deserialize(deserializer)?.map(|map| map.0))
}

struct UniqueStringMap(BTreeMap<String, String>);

impl<'de> Deserialize<'de> for UniqueStringMap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_map(UniqueStringMapVisitor)
            .map(UniqueStringMap)
    }
}

struct UniqueStringMapVisitor;

impl<'de> Visitor<'de> for UniqueStringMapVisitor {
    type Value = BTreeMap<String, String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of string values")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        let mut map = BTreeMap::new();
        while let Some((key, value)) = access.next_entry::<String, String>()? {
            if map.contains_key(&key) {
                return Err(serde::de::Error::custom(format!(
                    "metadata key {:?} repeated",
                    truncate(&key)
                )));
            }
            map.insert(key, value);
        }
        Ok(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        map
    }

    fn post(path: &str, key: Option<&str>, body: &str) -> Result<ApiRequest, Problem> {
        let mut pairs = vec![("content-type", "application/json")];
        if let Some(key) = key {
            pairs.push(("idempotency-key", key));
        }
        parse_request(&Method::POST, path, &headers(&pairs), body.as_bytes())
    }

    fn kind(result: Result<ApiRequest, Problem>) -> ProblemKind {
        result.expect_err("refused").kind
    }

    fn intent(result: Result<ApiRequest, Problem>) -> WriteIntent {
        match result {
            Ok(ApiRequest::Write(intent)) => intent,
            other => panic!("expected a write, got {other:?}"),
        }
    }

    const CHARGE: &str = r#"{"source":"alice","destination":"shop","amount":1250,"currency":"EUR","metadata":{"order":"A-17","b":"2"}}"#;

    #[test]
    fn key_order_and_whitespace_do_not_change_the_fingerprint_but_values_do() {
        let base = intent(post("/v1/charges", Some("k"), CHARGE));
        let reordered = r#" { "metadata" : {"b":"2","order":"A-17"}, "currency":"EUR", "amount":1250,
            "destination":"shop", "source":"alice" } "#;
        assert_eq!(
            intent(post("/v1/charges", Some("k"), reordered)).fingerprint,
            base.fingerprint
        );
        let changed = CHARGE.replace("1250", "1251");
        assert_ne!(
            intent(post("/v1/charges", Some("k"), &changed)).fingerprint,
            base.fingerprint
        );
        let changed_metadata = CHARGE.replace("A-17", "A-18");
        assert_ne!(
            intent(post("/v1/charges", Some("k"), &changed_metadata)).fingerprint,
            base.fingerprint
        );
    }

    #[test]
    fn canonical_body_parses_back_to_the_same_command() {
        for body in [
            CHARGE,
            r#"{"id":"alice","currency":"EUR"}"#,
            r#"{"id":"bank","currency":"USD","overdraft_limit":null}"#,
        ] {
            let path = if body.contains("source") {
                "/v1/charges"
            } else {
                "/v1/accounts"
            };
            let first = intent(post(path, Some("k"), body));
            let canonical = String::from_utf8(canonical_body(&first.command)).expect("utf-8");
            assert_eq!(
                intent(post(path, Some("k"), &canonical)),
                first,
                "{canonical}"
            );
        }
    }

    #[test]
    fn absent_overdraft_limit_is_zero_and_null_is_unlimited() {
        let absent = intent(post(
            "/v1/accounts",
            Some("k"),
            r#"{"id":"a","currency":"EUR"}"#,
        ));
        let zero = intent(post(
            "/v1/accounts",
            Some("k"),
            r#"{"id":"a","currency":"EUR","overdraft_limit":0}"#,
        ));
        let null = intent(post(
            "/v1/accounts",
            Some("k"),
            r#"{"id":"a","currency":"EUR","overdraft_limit":null}"#,
        ));
        assert_eq!(absent, zero);
        assert!(matches!(
            null.command,
            Command::CreateAccount(NewAccount {
                overdraft_limit: None,
                ..
            })
        ));
    }

    #[test]
    fn the_key_is_checked_before_the_body() {
        assert_eq!(
            kind(post("/v1/charges", None, "not json")),
            ProblemKind::IdempotencyKeyMissing
        );
        assert_eq!(
            kind(post("/v1/charges", Some(""), "not json")),
            ProblemKind::IdempotencyKeyInvalid
        );
        let two_keys = headers(&[
            ("content-type", "application/json"),
            ("idempotency-key", "a"),
            ("idempotency-key", "b"),
        ]);
        let refused = parse_request(&Method::POST, "/v1/charges", &two_keys, CHARGE.as_bytes());
        assert_eq!(kind(refused), ProblemKind::IdempotencyKeyInvalid);
    }

    #[test]
    fn bodies_that_are_refused() {
        let cases = [
            "not json",
            "{}",
            r#"{"source":"alice","destination":"shop","amount":1250,"currency":"EUR","extra":1}"#,
            r#"{"source":"alice","destination":"shop","amount":0,"currency":"EUR"}"#,
            r#"{"source":"alice","destination":"shop","amount":-5,"currency":"EUR"}"#,
            r#"{"source":"alice","destination":"shop","amount":12.5,"currency":"EUR"}"#,
            r#"{"source":"alice","destination":"shop","amount":"1250","currency":"EUR"}"#,
            r#"{"source":"alice","destination":"shop","amount":9223372036854775808,"currency":"EUR"}"#,
            r#"{"source":"alice","destination":"shop","amount":1,"currency":"eur"}"#,
            r#"{"source":"al ice","destination":"shop","amount":1,"currency":"EUR"}"#,
            r#"{"source":"alice","destination":"alice","amount":1,"currency":"EUR"}"#,
            r#"{"source":"alice","source":"bob","destination":"shop","amount":1,"currency":"EUR"}"#,
            r#"{"source":"alice","destination":"shop","amount":1,"currency":"EUR","metadata":{"a":"1","a":"2"}}"#,
            r#"{"source":"alice","destination":"shop","amount":1,"currency":"EUR","metadata":{"a":1}}"#,
        ];
        for body in cases {
            assert_eq!(
                kind(post("/v1/charges", Some("k"), body)),
                ProblemKind::InvalidRequest,
                "{body}"
            );
        }
        let max = r#"{"source":"alice","destination":"shop","amount":9223372036854775807,"currency":"EUR"}"#;
        assert!(post("/v1/charges", Some("k"), max).is_ok());
        let too_low = r#"{"id":"a","currency":"EUR","overdraft_limit":9223372036854775808}"#;
        assert_eq!(
            kind(post("/v1/accounts", Some("k"), too_low)),
            ProblemKind::InvalidRequest
        );
    }

    #[test]
    fn media_type_and_size() {
        let form = headers(&[
            ("content-type", "application/x-www-form-urlencoded"),
            ("idempotency-key", "k"),
        ]);
        assert_eq!(
            kind(parse_request(
                &Method::POST,
                "/v1/charges",
                &form,
                CHARGE.as_bytes()
            )),
            ProblemKind::UnsupportedMediaType
        );
        let charset = headers(&[
            ("content-type", "Application/JSON; charset=utf-8"),
            ("idempotency-key", "k"),
        ]);
        assert!(parse_request(&Method::POST, "/v1/charges", &charset, CHARGE.as_bytes()).is_ok());
        let huge = vec![b' '; BODY_BYTES_MAX + 1];
        let json = headers(&[
            ("content-type", "application/json"),
            ("idempotency-key", "k"),
        ]);
        assert_eq!(
            kind(parse_request(&Method::POST, "/v1/charges", &json, &huge)),
            ProblemKind::BodyTooLarge
        );
    }

    #[test]
    fn tenant_and_token_routes() {
        let get = |target: &str| parse_request(&Method::GET, target, &HeaderMap::new(), b"");
        assert_eq!(get("/v1/tenants"), Ok(ApiRequest::ListTenants));
        assert_eq!(get("/v1/tokens"), Ok(ApiRequest::ListTokens));
        let tenant = intent(post("/v1/tenants", Some("k"), r#"{"name":"acme"}"#));
        assert_eq!(
            tenant.command,
            Command::CreateTenant {
                name: "acme".into()
            }
        );
        let token = intent(post(
            "/v1/tokens",
            Some("k"),
            r#"{"role":"client","tenant":"acme"}"#,
        ));
        assert_eq!(
            token.command,
            Command::CreateToken {
                tenant: "acme".into(),
                role: Role::Client,
                secret: None
            }
        );
        let revoke = intent(post("/v1/tokens/7/revoke", Some("k"), ""));
        assert_eq!(revoke.command, Command::RevokeToken { id: 7 });
        for (path, body) in [
            ("/v1/tenants", r#"{"name":"a:b"}"#),
            ("/v1/tenants", r#"{"name":""}"#),
            ("/v1/tenants", r#"{"name":"a","x":1}"#),
            ("/v1/tokens", r#"{"tenant":"acme","role":"root"}"#),
            ("/v1/tokens", r#"{"tenant":"acme","role":"admin"}"#),
            ("/v1/tokens/7/revoke", r#"{"x":1}"#),
        ] {
            assert_eq!(
                kind(post(path, Some("k"), body)),
                ProblemKind::InvalidRequest,
                "{path} {body}"
            );
        }
        assert!(
            post(
                "/v1/tokens",
                Some("k"),
                r#"{"tenant":"default","role":"admin"}"#
            )
            .is_ok()
        );
        // A malformed id in the path is the client's error (issue 23), after the method check.
        assert_eq!(
            kind(get("/v1/tokens/x/revoke")),
            ProblemKind::MethodNotAllowed
        );
        for id in ["x", "0", "-1", "9223372036854775808", "1e3"] {
            let path = format!("/v1/tokens/{id}/revoke");
            assert_eq!(
                kind(post(&path, Some("k"), "")),
                ProblemKind::InvalidRequest,
                "{id}"
            );
            let path = format!("/v1/dead-letters/{id}/redrive");
            assert_eq!(
                kind(post(&path, Some("k"), "")),
                ProblemKind::InvalidRequest,
                "{id}"
            );
        }
        assert!(post("/v1/tokens/9223372036854775807/revoke", Some("k"), "").is_ok());
        assert_eq!(
            kind(get("/v1/tokens/7/revoke")),
            ProblemKind::MethodNotAllowed
        );
    }

    /// What the OpenAPI document declares, the parser enforces (issue 23): numbers past int64
    /// and origins that no hub could have filed are 400, not echoed back.
    #[test]
    fn out_of_range_numbers_and_malformed_origins_are_400() {
        let get = |target: &str| parse_request(&Method::GET, target, &HeaderMap::new(), b"");
        let invalid = |target: &str| match get(target) {
            Err(problem) => problem.kind == ProblemKind::InvalidRequest,
            Ok(_) => false,
        };
        for target in [
            "/v1/events?after=9223372036854775808",
            "/v1/dead-letters?after=18446744073709551615",
            "/v1/replication/origins/till-1/inbox?after=9223372036854775808",
            "/v1/replication/origins/till%201/inbox",
            "/v1/replication/origins/a:b/inbox",
            "/v1/replication/origins/99999999999:till/inbox",
            "/v1/replication/origins/%C2%84/accounts/alice",
            "/v1/replication/origins/:till/accounts/alice",
        ] {
            assert!(invalid(target), "{target} accepted");
        }
        assert!(get("/v1/events?after=9223372036854775807").is_ok());
        assert!(get("/v1/replication/origins/till-1/inbox").is_ok());
        assert!(get("/v1/replication/origins/7:till-1/inbox").is_ok());
        assert!(get("/v1/replication/origins/7:till-1/accounts/alice").is_ok());
        assert_eq!(
            get("/v1/replication/origins/7%3Atill-1/accounts/a%3Ab"),
            Ok(ApiRequest::GetMirrorAccount {
                origin: "7:till-1".into(),
                id: "a:b".into()
            }),
            "percent-encoded segments mean the same"
        );
        assert_eq!(
            get("/v1/accounts/%zz"),
            Ok(ApiRequest::GetAccount("%zz".into()))
        );
    }

    #[test]
    fn routes_methods_and_queries() {
        let get = |target: &str| parse_request(&Method::GET, target, &HeaderMap::new(), b"");
        assert_eq!(
            get("/v1/accounts/alice"),
            Ok(ApiRequest::GetAccount("alice".into()))
        );
        assert_eq!(
            get("/v1/events"),
            Ok(ApiRequest::ListEvents {
                after: 0,
                limit: EVENTS_PAGE_DEFAULT
            })
        );
        assert_eq!(
            get("/v1/events?after=42&limit=1000"),
            Ok(ApiRequest::ListEvents {
                after: 42,
                limit: 1000
            })
        );
        for bad in [
            "/v1/events?limit=0",
            "/v1/events?limit=1001",
            "/v1/events?after=-1",
            "/v1/events?after=1&after=2",
            "/v1/events?x=1",
            "/v1/events?limit=+5",
        ] {
            assert_eq!(kind(get(bad)), ProblemKind::InvalidRequest, "{bad}");
        }
        for missing in [
            "/",
            "/v1",
            "/v1/accounts/",
            "/v1/accounts/a/b",
            "/v1/charges/x/",
            "/healthz/",
        ] {
            assert_eq!(kind(get(missing)), ProblemKind::NotFound, "{missing}");
        }
        let refused =
            parse_request(&Method::DELETE, "/v1/charges", &HeaderMap::new(), b"").expect_err("405");
        assert_eq!(
            (refused.kind, refused.allow),
            (ProblemKind::MethodNotAllowed, Some("GET, POST"))
        );
        assert_eq!(
            get("/v1/charges"),
            Ok(ApiRequest::ListCharges {
                filter: ChargeFilter::default(),
                query: ListQuery::default()
            })
        );
    }

    /// The history routes (API.md, "Lists"): GET only; the account's raw id as for `GetAccount`;
    /// a hub's origin checked as for its mirrored accounts.
    #[test]
    fn history_routes() {
        let get = |target: &str| parse_request(&Method::GET, target, &HeaderMap::new(), b"");
        assert_eq!(
            get("/v1/accounts?limit=3"),
            Ok(ApiRequest::ListAccounts(ListQuery {
                limit: 3,
                ..ListQuery::default()
            }))
        );
        assert_eq!(
            get("/v1/accounts/a%3Ab/postings"),
            Ok(ApiRequest::ListPostings {
                account: "a:b".into(),
                query: ListQuery::default()
            })
        );
        assert_eq!(
            get("/v1/accounts/alice/balance?as_of_seq=7"),
            Ok(ApiRequest::GetBalance {
                account: "alice".into(),
                at: BalanceAt::Seq(7)
            })
        );
        assert_eq!(
            get("/v1/replication/origins/7:till/accounts/alice/postings"),
            Ok(ApiRequest::ListMirrorPostings {
                origin: "7:till".into(),
                account: "alice".into(),
                query: ListQuery::default()
            })
        );
        assert!(matches!(
            get("/v1/refunds?charge=ch_1"),
            Ok(ApiRequest::ListRefunds {
                charge: Some(_),
                ..
            })
        ));
        assert!(matches!(
            get("/v1/transfers?account=alice"),
            Ok(ApiRequest::ListTransfers {
                account: Some(_),
                ..
            })
        ));
        for missing in [
            "/v1/accounts/alice/postings/x",
            "/v1/accounts/alice/history",
            "/v1/accounts//postings",
            "/v1/replication/origins/till/accounts/alice/balance",
        ] {
            assert_eq!(kind(get(missing)), ProblemKind::NotFound, "{missing}");
        }
        for invalid in [
            "/v1/accounts/alice/balance",
            "/v1/accounts?charge=x",
            "/v1/replication/origins/a:b/accounts/alice/postings",
        ] {
            assert_eq!(kind(get(invalid)), ProblemKind::InvalidRequest, "{invalid}");
        }
        for path in [
            "/v1/accounts/alice/postings",
            "/v1/accounts/alice/balance",
            "/v1/replication/origins/till/accounts/alice/postings",
        ] {
            let refused = post(path, Some("k"), "{}").expect_err("405");
            assert_eq!(
                (refused.kind, refused.allow),
                (ProblemKind::MethodNotAllowed, Some("GET"))
            );
        }
        let refused =
            parse_request(&Method::PUT, "/v1/refunds", &HeaderMap::new(), b"").expect_err("405");
        assert_eq!(refused.allow, Some("GET, POST"));
    }
}
