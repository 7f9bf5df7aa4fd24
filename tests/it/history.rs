//! History (API.md "Lists", issue 20): the lists of accounts, charges, refunds and transfers, an
//! account's statement and its balance as of any moment, through the real server. Each list is
//! exactly `{"data", "has_more"}` with items rendered as their own GETs render them; the query
//! strings are strict; cursors and filters never reach across tenants; pages walked every way
//! concatenate to the whole statement, also while writers append to it; an as-of balance is what
//! replaying the statement gives; and retention never takes history away.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::harness::{
    Endpoint, Resp, Server, account, assert_created, assert_problem, charge_ok, create_account,
    eventually, key, make_token, new_client,
};

/// The fields of a posting, exactly (API.md "Lists").
const POSTING_FIELDS: [&str; 10] = [
    "id",
    "entry",
    "entry_type",
    "direction",
    "amount",
    "pending",
    "balance_after",
    "available_after",
    "created_at",
    "event_seq",
];

/// How long the retention sweep (every 10 s) may take to prune what a 1 s retention expired.
const RETENTION_DEADLINE: Duration = Duration::from_secs(60);

/// GETs `path` and asserts a 200 list: an object of exactly `data` (an array) and `has_more`.
#[track_caller]
fn assert_list(resp: &Resp) -> (Vec<Value>, bool) {
    assert_eq!(resp.status, 200, "{resp}");
    let body = resp.json();
    let fields: Vec<&str> = (body.as_object())
        .unwrap_or_else(|| panic!("a list is an object: {resp}"))
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(fields, ["data", "has_more"], "{resp}");
    let data = body["data"].as_array().expect("data").clone();
    let has_more = body["has_more"].as_bool().expect("has_more");
    (data, has_more)
}

async fn list(ep: &Endpoint, path: &str) -> (Vec<Value>, bool) {
    assert_list(&ep.get(path).await)
}

fn id_of(item: &Value) -> String {
    item["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {item}"))
        .to_owned()
}

fn ids(items: &[Value]) -> Vec<String> {
    items.iter().map(id_of).collect()
}

/// `path` with `params` added to its query string.
fn with_query(path: &str, params: &str) -> String {
    let joint = if path.contains('?') { '&' } else { '?' };
    format!("{path}{joint}{params}")
}

/// A POST that must succeed (201, or 200 for a capture or a void); returns the body.
async fn ok(ep: &Endpoint, path: &str, body: Value) -> Value {
    let resp = ep.post(path, Some(&key("hist")), &body.to_string()).await;
    assert!(matches!(resp.status, 200 | 201), "{path} {body}: {resp}");
    resp.json()
}

async fn authorize(ep: &Endpoint, source: &str, destination: &str, amount: u64) -> Value {
    let body = json!({"source": source, "destination": destination, "amount": amount,
                      "currency": "EUR", "capture": false});
    ok(ep, "/v1/charges", body).await
}

async fn refund(ep: &Endpoint, charge: &str, amount: u64) -> Value {
    ok(
        ep,
        "/v1/refunds",
        json!({"charge": charge, "amount": amount}),
    )
    .await
}

async fn transfer(ep: &Endpoint, legs: &[(&str, &str, u64)]) -> Value {
    let legs: Vec<Value> = (legs.iter())
        .map(|(s, d, a)| json!({"source": s, "destination": d, "amount": a}))
        .collect();
    ok(
        ep,
        "/v1/transfers",
        json!({"currency": "EUR", "legs": legs}),
    )
    .await
}

/// Every item of a list, read with pages of 100 oldest first: the reference the other walks are
/// held to (its own paging is checked by the walks of every limit).
async fn full_scan(ep: &Endpoint, path: &str) -> Vec<Value> {
    let mut items: Vec<Value> = Vec::new();
    loop {
        let mut page_path = with_query(path, "limit=100&order=asc");
        if let Some(last) = items.last() {
            page_path = with_query(&page_path, &format!("starting_after={}", id_of(last)));
        }
        let (data, has_more) = list(ep, &page_path).await;
        items.extend(data);
        if !has_more {
            return items;
        }
    }
}

/// A page read for its ids only (the 10,000-posting walks parse nothing else).
#[derive(Deserialize)]
struct IdPage {
    data: Vec<IdItem>,
    has_more: bool,
}

#[derive(Deserialize)]
struct IdItem {
    id: String,
}

async fn id_page(ep: &Endpoint, path: &str) -> IdPage {
    let resp = ep.get(path).await;
    assert_eq!(resp.status, 200, "{path}: {resp}");
    serde_json::from_slice(&resp.body).unwrap_or_else(|e| panic!("{path}: {e}: {resp}"))
}

/// The whole list at `path` in `order` ("asc" or "desc") with pages of `limit`: forwards from
/// its start with `starting_after`, or backwards from its end with `ending_before`. Returned in
/// the list's order either way. Every page but the last (in the direction walked) is full, and
/// only the last says `has_more: false`.
async fn walk(
    ep: &Endpoint,
    path: &str,
    limit: usize,
    order: &str,
    backwards: bool,
) -> Vec<String> {
    let base = with_query(path, &format!("limit={limit}&order={order}"));
    let mut items: Vec<String> = Vec::new();
    if !backwards {
        loop {
            let page_path = match items.last() {
                Some(last) => with_query(&base, &format!("starting_after={last}")),
                None => base.clone(),
            };
            let page = id_page(ep, &page_path).await;
            assert!(page.data.len() <= limit, "{page_path}");
            if page.has_more {
                assert_eq!(
                    page.data.len(),
                    limit,
                    "a page before the last is full: {page_path}"
                );
            }
            items.extend(page.data.into_iter().map(|i| i.id));
            if !page.has_more {
                return items;
            }
        }
    }
    // The list's last item is the first of the other order; the pages before it come back in
    // the list's order, each just before the one read before it.
    let other = if order == "asc" { "desc" } else { "asc" };
    let last = id_page(ep, &with_query(path, &format!("limit=1&order={other}"))).await;
    let Some(last) = last.data.into_iter().next() else {
        return items;
    };
    let mut pages = vec![vec![last.id]];
    loop {
        let first = &pages.last().expect("a page")[0];
        let page_path = with_query(&base, &format!("ending_before={first}"));
        let page = id_page(ep, &page_path).await;
        assert!(page.data.len() <= limit, "{page_path}");
        if page.has_more {
            assert_eq!(
                page.data.len(),
                limit,
                "a page before the last is full: {page_path}"
            );
        }
        let more = page.has_more;
        if !page.data.is_empty() {
            pages.push(page.data.into_iter().map(|i| i.id).collect());
        }
        if !more {
            break;
        }
    }
    pages.into_iter().rev().flatten().collect()
}

/// A deterministic generator for the random instants and seqs (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform enough in `lo..=hi` for a test.
    fn between(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }
}

/// Milliseconds since the epoch of the server's `created_at` (`YYYY-MM-DDTHH:MM:SS.mmmZ`),
/// counted day by day from 1970: independent of the server's own date arithmetic.
fn ms_of(text: &str) -> i64 {
    let n = |range: std::ops::Range<usize>| -> i64 { text[range].parse().expect(text) };
    assert!(text.len() == 24 && text.ends_with('Z'), "{text}");
    let (year, month, day) = (n(0..4), n(5..7), n(8..10));
    let leap = |y: i64| y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let mut days = (1970..year)
        .map(|y| if leap(y) { 366 } else { 365 })
        .sum::<i64>();
    let month_days = [
        31,
        if leap(year) { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    days += month_days[..(month - 1) as usize].iter().sum::<i64>() + day - 1;
    ((days * 24 + n(11..13)) * 60 + n(14..16)) * 60_000 + n(17..19) * 1000 + n(20..23)
}

/// The inverse of `ms_of` for instants from 1970, by the same counting.
fn text_of(ms: i64) -> String {
    assert!(ms >= 0);
    let leap = |y: i64| y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let (mut days, rest) = (ms / 86_400_000, ms % 86_400_000);
    let mut year = 1970;
    while days >= if leap(year) { 366 } else { 365 } {
        days -= if leap(year) { 366 } else { 365 };
        year += 1;
    }
    let month_days = [
        31,
        if leap(year) { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let mut month = 0;
    while days >= month_days[month] {
        days -= month_days[month];
        month += 1;
    }
    format!(
        "{year:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        month + 1,
        days + 1,
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1000 % 60,
        rest % 1000
    )
}

/// An account's four totals, replayed from its statement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Totals {
    debits_posted: i64,
    credits_posted: i64,
    debits_pending: i64,
    credits_pending: i64,
}

impl Totals {
    /// Applies one posting as API.md defines them: a hold adds to a pending total, its release
    /// takes it back out, every other posting adds to a posted total.
    fn apply(&mut self, posting: &Value) {
        let amount = posting["amount"].as_i64().expect("amount");
        let debit = match posting["direction"].as_str() {
            Some("debit") => true,
            Some("credit") => false,
            other => panic!("direction {other:?}: {posting}"),
        };
        let total = match (posting["entry_type"].as_str().expect("type"), debit) {
            ("authorization" | "release", true) => &mut self.debits_pending,
            ("authorization" | "release", false) => &mut self.credits_pending,
            (_, true) => &mut self.debits_posted,
            (_, false) => &mut self.credits_posted,
        };
        if posting["entry_type"] == "release" {
            *total -= amount;
        } else {
            *total += amount;
        }
        assert!(*total >= 0, "a total below zero after {posting}");
    }

    fn balance(&self) -> i64 {
        self.credits_posted - self.debits_posted
    }

    fn available(&self) -> i64 {
        self.balance() - self.debits_pending
    }

    fn assert_shown_by(&self, account: &Value, what: &str) {
        let field = |name: &str| {
            account[name]
                .as_i64()
                .unwrap_or_else(|| panic!("{name}: {account}"))
        };
        let shown = Totals {
            debits_posted: field("debits_posted"),
            credits_posted: field("credits_posted"),
            debits_pending: field("debits_pending"),
            credits_pending: field("credits_pending"),
        };
        assert_eq!(shown, *self, "{what}: {account}");
        assert_eq!(field("balance"), self.balance(), "{what}: {account}");
        assert_eq!(field("available"), self.available(), "{what}: {account}");
    }
}

/// Replays a statement (oldest first), asserting each posting's `balance_after` and
/// `available_after`; returns the totals after each posting.
fn replay(statement: &[Value]) -> Vec<Totals> {
    let mut totals = Totals::default();
    statement
        .iter()
        .map(|posting| {
            totals.apply(posting);
            assert_eq!(posting["balance_after"], totals.balance(), "{posting}");
            assert_eq!(posting["available_after"], totals.available(), "{posting}");
            totals
        })
        .collect()
}

/// Asserts two id lists are equal, naming the first difference rather than printing thousands.
#[track_caller]
fn assert_same_ids(got: &[String], expected: &[String], what: &str) {
    let first_difference = got.iter().zip(expected).position(|(g, e)| g != e);
    assert!(
        first_difference.is_none() && got.len() == expected.len(),
        "{what}: {} ids, {} expected; first difference at {first_difference:?} ({:?} for {:?})",
        got.len(),
        expected.len(),
        first_difference.map(|i| &got[i]),
        first_difference.map(|i| &expected[i]),
    );
}

/// The posting ids of `statement` must be unique (as a set).
fn distinct(ids: &[String]) -> usize {
    ids.iter().collect::<HashSet<_>>().len()
}

fn seq_of(item: &Value) -> u64 {
    item["event_seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("no event_seq in {item}"))
}

/// The problem of a refused list request: 400 invalid-request whose detail names `parameter`.
#[track_caller]
fn assert_invalid(resp: &Resp, parameter: &str, what: &str) {
    assert_problem(resp, 400, "invalid-request");
    let detail = resp.json()["detail"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        detail.contains(parameter),
        "{what}: the detail names {parameter}: {detail}"
    );
}

/// `GET /v1/accounts/{account}/balance?{query}`, asserting 200 and exactly the Account's fields
/// plus `as_of` and `as_of_seq`.
async fn balance_of(ep: &Endpoint, account: &str, query: &str) -> Value {
    let resp = ep
        .get(&format!("/v1/accounts/{account}/balance?{query}"))
        .await;
    assert_eq!(resp.status, 200, "{query}: {resp}");
    let body = resp.json();
    let mut fields: Vec<&str> = (body.as_object().expect("object").keys())
        .map(String::as_str)
        .collect();
    fields.sort_unstable();
    let mut wanted: Vec<&str> = crate::accounts::ACCOUNT_FIELDS.to_vec();
    wanted.extend(["as_of", "as_of_seq"]);
    wanted.sort_unstable();
    assert_eq!(fields, wanted, "{body}");
    body
}

/// `count` charges from `source` to `destination`, sent by `tasks` tasks at once (each over the
/// endpoint's pooled keep-alive connections); returns (event seq, charge id, amount) of each.
async fn charges_at_once(
    ep: &Endpoint,
    source: &'static str,
    destination: &'static str,
    count: usize,
    tasks: usize,
) -> Vec<(u64, String, i64)> {
    let mut running = JoinSet::new();
    for task in 0..tasks {
        let ep = ep.clone();
        running.spawn(async move {
            let mut made = Vec::new();
            for i in (task..count).step_by(tasks) {
                let amount = 1 + (i % 97) as i64;
                let charge = charge_ok(&ep, source, destination, amount, "EUR").await;
                made.push((seq_of(&charge), id_of(&charge), amount));
            }
            made
        });
    }
    let mut made = Vec::with_capacity(count);
    while let Some(done) = running.join_next().await {
        made.extend(done.expect("a writer task panicked"));
    }
    made.sort();
    made
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_list_renders_its_items_as_their_own_gets_do() {
    // Guards the shapes of API.md "Lists": each list is exactly {"data","has_more"}, newest first
    // unless order=asc, each item byte for byte what its own GET shows now (a charge with its
    // capture and refunds); the statement has exactly the posting fields, one line per change of
    // the account's totals with the totals after it; the balance is the account's shape plus
    // as_of and as_of_seq.
    let server = Server::start().await;
    let ep = server.endpoint();
    create_account(&ep, "bank", "EUR", None).await;
    for id in ["alice", "shop", "fee"] {
        create_account(&ep, id, "EUR", Some(0)).await;
    }
    let funded = charge_ok(&ep, "bank", "alice", 10_000, "EUR").await;
    let held = authorize(&ep, "alice", "shop", 3000).await;
    let held_id = id_of(&held);
    let captured = json!({"amount": 2000});
    ok(&ep, &format!("/v1/charges/{held_id}/capture"), captured).await;
    let voided = authorize(&ep, "alice", "shop", 500).await;
    ok(
        &ep,
        &format!("/v1/charges/{}/void", id_of(&voided)),
        json!({}),
    )
    .await;
    let open = authorize(&ep, "alice", "shop", 400).await;
    let refunded = refund(&ep, &held_id, 700).await;
    let moved = transfer(&ep, &[("shop", "fee", 300), ("alice", "shop", 100)]).await;

    let charges = [&open, &voided, &held, &funded].map(id_of).to_vec();
    // Accounts are ordered by their creation's millisecond, then by id (docs/CONTRACT-NOTES.md).
    let mut accounts = Vec::new();
    for id in ["bank", "alice", "shop", "fee"] {
        let created = account(&ep, id).await["created_at"].clone();
        accounts.push((
            created.as_str().expect("created_at").to_owned(),
            id.to_owned(),
        ));
    }
    accounts.sort_unstable_by(|a, b| b.cmp(a));
    let accounts: Vec<String> = accounts.into_iter().map(|(_, id)| id).collect();
    for (path, expected) in [
        ("/v1/accounts", accounts),
        ("/v1/charges", charges),
        ("/v1/refunds", vec![id_of(&refunded)]),
        ("/v1/transfers", vec![id_of(&moved)]),
    ] {
        let (data, has_more) = list(&ep, path).await;
        assert!(!has_more, "{path}");
        assert_eq!(ids(&data), expected, "{path}, newest first");
        for item in &data {
            let own = ep.get(&format!("{path}/{}", id_of(item))).await;
            assert_eq!(own.status, 200, "{own}");
            assert_eq!(*item, own.json(), "{path}: an item is its own GET");
        }
        let (oldest_first, _) = list(&ep, &format!("{path}?order=asc")).await;
        let mut reversed = expected.clone();
        reversed.reverse();
        assert_eq!(ids(&oldest_first), reversed, "{path}?order=asc");
        let (first, has_more) = list(&ep, &format!("{path}?limit=1")).await;
        let more = expected.len() > 1;
        assert_eq!(
            (ids(&first), has_more),
            (expected[..1].to_vec(), more),
            "{path}"
        );
    }
    let (charges, _) = list(&ep, "/v1/charges").await;
    assert_eq!(
        (
            &charges[2]["status"],
            &charges[2]["amount_captured"],
            &charges[2]["amount_refunded"]
        ),
        (&json!("succeeded"), &json!(2000), &json!(700)),
        "a charge is listed as it is now: {}",
        charges[2]
    );

    // alice's statement, oldest first: every change of her totals, with the totals after it.
    let statement = full_scan(&ep, "/v1/accounts/alice/postings").await;
    let (held_id, voided_id, open_id) = (id_of(&held), id_of(&voided), id_of(&open));
    let expected: [(&str, &str, i64, bool, i64, i64, &str); 9] = [
        (
            "charge",
            "credit",
            10_000,
            false,
            10_000,
            10_000,
            &id_of(&funded),
        ),
        ("authorization", "debit", 3000, true, 10_000, 7000, &held_id),
        ("release", "debit", 3000, true, 10_000, 10_000, &held_id),
        ("capture", "debit", 2000, false, 8000, 8000, &held_id),
        ("authorization", "debit", 500, true, 8000, 7500, &voided_id),
        ("release", "debit", 500, true, 8000, 8000, &voided_id),
        ("authorization", "debit", 400, true, 8000, 7600, &open_id),
        (
            "refund",
            "credit",
            700,
            false,
            8700,
            8300,
            &id_of(&refunded),
        ),
        ("transfer", "debit", 100, false, 8600, 8200, &id_of(&moved)),
    ];
    assert_eq!(statement.len(), expected.len(), "{statement:?}");
    for (posting, (kind, direction, amount, pending, balance, available, entry)) in
        statement.iter().zip(expected)
    {
        let mut fields: Vec<&str> = (posting.as_object().expect("object").keys())
            .map(String::as_str)
            .collect();
        fields.sort_unstable();
        let mut wanted = POSTING_FIELDS.to_vec();
        wanted.sort_unstable();
        assert_eq!(fields, wanted, "{posting}");
        let shown = (
            posting["entry_type"].as_str(),
            posting["direction"].as_str(),
            posting["amount"].as_i64(),
            posting["pending"].as_bool(),
            posting["balance_after"].as_i64(),
            posting["available_after"].as_i64(),
            posting["entry"].as_str(),
        );
        let wanted = (
            Some(kind),
            Some(direction),
            Some(amount),
            Some(pending),
            Some(balance),
            Some(available),
            Some(entry),
        );
        assert_eq!(shown, wanted, "{posting}");
        let id = id_of(posting);
        assert!(
            id.len() == 21
                && id.starts_with("po_")
                && id[3..]
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
            "po_ and 18 lower-case hex digits: {id}"
        );
        assert_eq!(
            u64::from_str_radix(&id[3..19], 16).ok(),
            Some(seq_of(posting)),
            "the id spells the event seq: {posting}"
        );
        assert!(crate::harness::is_rfc3339_utc(
            posting["created_at"].as_str().expect("time")
        ));
    }
    assert_eq!(seq_of(&statement[0]), seq_of(&funded));
    assert_eq!(seq_of(&statement[7]), seq_of(&refunded));
    assert_eq!(seq_of(&statement[8]), seq_of(&moved));
    let totals = replay(&statement);
    let alice = account(&ep, "alice").await;
    totals
        .last()
        .expect("postings")
        .assert_shown_by(&alice, "the statement sums to alice");
    // A transfer with two legs on shop is two postings of one event seq.
    let shop = full_scan(&ep, "/v1/accounts/shop/postings").await;
    let transfer_lines: Vec<&Value> = (shop.iter())
        .filter(|p| p["entry_type"] == "transfer")
        .collect();
    assert_eq!(transfer_lines.len(), 2, "{shop:?}");
    assert_eq!(seq_of(transfer_lines[0]), seq_of(transfer_lines[1]));
    assert_ne!(id_of(transfer_lines[0]), id_of(transfer_lines[1]));
    let (shop_page, _) = list(&ep, "/v1/accounts/shop/postings").await;
    assert_eq!(
        id_of(&shop_page[0]),
        id_of(shop.last().expect("lines")),
        "newest first"
    );

    // Balances as of: before everything, after the first charge, and after everything.
    let balance = |query: &'static str| balance_of(&ep, "alice", query);
    for body in [
        balance("as_of_seq=1").await,
        balance("as_of=2000-01-01T00:00:00Z").await,
    ] {
        for field in ["id", "currency", "overdraft_limit", "created_at"] {
            assert_eq!(body[field], alice[field], "{field}: {body}");
        }
    }
    let before = balance("as_of_seq=0").await;
    Totals::default().assert_shown_by(&before, "before any posting");
    assert_eq!(
        (&before["as_of"], &before["as_of_seq"]),
        (&Value::Null, &json!(0))
    );
    let first = balance_of(&ep, "alice", &format!("as_of_seq={}", seq_of(&funded))).await;
    totals[0].assert_shown_by(&first, "after the first charge");
    let last_seq = seq_of(&moved);
    let now = balance("as_of=9999-12-31T23:59:59.999Z").await;
    totals[8].assert_shown_by(&now, "after everything");
    assert_eq!(now["as_of"], "9999-12-31T23:59:59.999Z");
    assert_eq!(
        now["as_of_seq"], last_seq,
        "the last event at or before the instant"
    );
    let moon = balance("as_of=1969-07-20T20:17:40Z").await;
    Totals::default().assert_shown_by(&moon, "before 1970");
    assert_eq!(
        (&moon["as_of"], &moon["as_of_seq"]),
        (&json!("1969-07-20T20:17:40.000Z"), &json!(0))
    );
    let offset = balance("as_of=9999-12-31T23:59:59.999%2B01:00").await;
    assert_eq!(offset["as_of"], "9999-12-31T22:59:59.999Z", "shown in UTC");
    server.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_malformed_parameter_is_a_400_naming_it_and_a_missing_account_a_404() {
    // Guards the strict query strings of API.md "Lists": an unknown or repeated parameter, a bad
    // value, both cursors, a cursor that names nothing of its list (another list's id included)
    // and a filter naming nothing this tenant has are each 400 invalid-request naming the
    // parameter; the statement or balance of a missing account is 404 account-not-found; the
    // new routes take GET only.
    let server = Server::start().await;
    let ep = server.endpoint();
    create_account(&ep, "bank", "EUR", None).await;
    create_account(&ep, "alice", "EUR", Some(0)).await;
    create_account(&ep, "shop", "EUR", Some(0)).await;
    let charge = charge_ok(&ep, "bank", "alice", 1000, "EUR").await;
    let refunded = refund(&ep, &id_of(&charge), 10).await;
    let moved = transfer(&ep, &[("alice", "shop", 5)]).await;
    let (shop_lines, _) = list(&ep, "/v1/accounts/shop/postings").await;
    let (charge, refunded, moved) = (id_of(&charge), id_of(&refunded), id_of(&moved));
    let shop_posting = id_of(&shop_lines[0]);
    let cases: Vec<(String, &str)> = vec![
        ("/v1/accounts?limit=0".into(), "limit"),
        ("/v1/accounts?limit=101".into(), "limit"),
        ("/v1/accounts?limit=ten".into(), "limit"),
        ("/v1/accounts?limit=".into(), "limit"),
        ("/v1/accounts?limit=5&limit=5".into(), "limit"),
        ("/v1/accounts?order=newest".into(), "order"),
        ("/v1/accounts?order=asc&order=desc".into(), "order"),
        (
            "/v1/accounts?starting_after=alice&ending_before=bank".into(),
            "starting_after",
        ),
        ("/v1/accounts?starting_after=".into(), "starting_after"),
        (
            "/v1/accounts?starting_after=nobody".into(),
            "starting_after",
        ),
        ("/v1/accounts?ending_before=nobody".into(), "ending_before"),
        ("/v1/accounts?account=alice".into(), "account"),
        ("/v1/charges?status=refunded".into(), "status"),
        (
            "/v1/charges?status=succeeded&status=authorized".into(),
            "status",
        ),
        ("/v1/charges?account=nobody".into(), "account"),
        ("/v1/charges?account=not%20an%20id".into(), "account"),
        ("/v1/charges?created_gte=2026-01-01".into(), "created_gte"),
        ("/v1/charges?created_lt=tomorrow".into(), "created_lt"),
        (
            "/v1/charges?starting_after=ch_nothing".into(),
            "starting_after",
        ),
        (
            format!("/v1/charges?starting_after={refunded}"),
            "starting_after",
        ),
        (
            format!("/v1/charges?ending_before={moved}"),
            "ending_before",
        ),
        ("/v1/charges?charge=x".into(), "charge"),
        (format!("/v1/refunds?charge={moved}"), "charge"),
        ("/v1/refunds?charge=ch_nothing".into(), "charge"),
        (
            format!("/v1/refunds?starting_after={charge}"),
            "starting_after",
        ),
        ("/v1/refunds?account=alice".into(), "account"),
        ("/v1/transfers?account=nobody".into(), "account"),
        (
            format!("/v1/transfers?ending_before={refunded}"),
            "ending_before",
        ),
        ("/v1/transfers?charge=x".into(), "charge"),
        (
            "/v1/accounts/alice/postings?starting_after=po_000000000000000100".into(),
            "starting_after",
        ),
        (
            format!("/v1/accounts/alice/postings?starting_after={shop_posting}"),
            "starting_after",
        ),
        (
            format!("/v1/accounts/alice/postings?ending_before={charge}"),
            "ending_before",
        ),
        (
            "/v1/accounts/alice/postings?status=succeeded".into(),
            "status",
        ),
        ("/v1/accounts/nobody/postings?limit=0".into(), "limit"),
        ("/v1/accounts/alice/balance".into(), "as_of"),
        (
            "/v1/accounts/alice/balance?as_of=2026-01-01T00:00:00Z&as_of_seq=1".into(),
            "as_of_seq",
        ),
        (
            "/v1/accounts/alice/balance?as_of_seq=-1".into(),
            "as_of_seq",
        ),
        (
            "/v1/accounts/alice/balance?as_of_seq=9223372036854775808".into(),
            "as_of_seq",
        ),
        ("/v1/accounts/alice/balance?as_of=yesterday".into(), "as_of"),
        (
            "/v1/accounts/alice/balance?as_of_seq=1&limit=1".into(),
            "limit",
        ),
    ];
    for (path, parameter) in &cases {
        assert_invalid(&ep.get(path).await, parameter, path);
    }
    for path in [
        "/v1/accounts/nobody/postings",
        "/v1/accounts/nobody/balance?as_of_seq=1",
        "/v1/accounts/not%20an%20id/postings",
        "/v1/accounts/not%20an%20id/balance?as_of=2026-01-01T00:00:00Z",
    ] {
        assert_problem(&ep.get(path).await, 404, "account-not-found");
    }
    for path in ["/v1/accounts/alice/postings", "/v1/accounts/alice/balance"] {
        let resp = ep.post(path, Some(&key("hist")), "{}").await;
        assert_problem(&resp, 405, "method-not-allowed");
        assert_eq!(resp.header("allow"), Some("GET"), "{resp}");
    }
    let resp = ep
        .request(hyper::Method::DELETE, "/v1/charges", &[], b"")
        .await;
    assert_problem(&resp, 405, "method-not-allowed");
    assert_eq!(resp.header("allow"), Some("GET, POST"), "{resp}");
    server.check().await;
}

/// What one tenant made, for the isolation test.
struct Made {
    charges: Vec<String>,
    refunds: Vec<String>,
    transfers: Vec<String>,
    /// alice's postings.
    postings: Vec<String>,
}

/// The same account ids and the same kinds of entries in any tenant, plus `own` (an account
/// only this tenant has).
async fn make_history(ep: &Endpoint, own: &str) -> Made {
    create_account(ep, "bank", "EUR", None).await;
    for id in ["alice", "shop", own] {
        create_account(ep, id, "EUR", Some(0)).await;
    }
    let funded = charge_ok(ep, "bank", "alice", 1000, "EUR").await;
    let sale = charge_ok(ep, "alice", "shop", 100, "EUR").await;
    let refunded = refund(ep, &id_of(&sale), 50).await;
    let moved = transfer(ep, &[("alice", "shop", 10), ("shop", own, 5)]).await;
    let postings = ids(&full_scan(ep, "/v1/accounts/alice/postings").await);
    assert_eq!(postings.len(), 4, "{postings:?}");
    Made {
        charges: vec![id_of(&sale), id_of(&funded)],
        refunds: vec![id_of(&refunded)],
        transfers: vec![id_of(&moved)],
        postings,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_and_cursors_stay_inside_their_tenant() {
    // Guards tenant isolation of every list and cursor: two tenants with the same account ids
    // each list only their own accounts, charges, refunds, transfers and postings; the other
    // tenant's id as a cursor or as a filter is 400 (never its data, never a 404 that would tell
    // it exists), its account's statement and balance are 404; the operator's tenant sees
    // neither; a replicator may not list and a client may not read a hub's mirror.
    let server = Server::start().await;
    let admin = server.endpoint();
    let a = admin.with_token(Some(&make_token(&admin, "tenant-a", "client").await));
    let b = admin.with_token(Some(&make_token(&admin, "tenant-b", "client").await));
    let made_a = make_history(&a, "a-only").await;
    let made_b = make_history(&b, "b-only").await;

    for (ep, made, own) in [(&a, &made_a, "a-only"), (&b, &made_b, "b-only")] {
        let mut accounts = ids(&list(ep, "/v1/accounts").await.0);
        accounts.sort_unstable();
        let mut expected = [own, "shop", "alice", "bank"];
        expected.sort_unstable();
        assert_eq!(accounts, expected, "accounts of {own}");
        assert_eq!(ids(&list(ep, "/v1/charges").await.0), made.charges);
        assert_eq!(ids(&list(ep, "/v1/refunds").await.0), made.refunds);
        assert_eq!(ids(&list(ep, "/v1/transfers").await.0), made.transfers);
        let postings = ids(&full_scan(ep, "/v1/accounts/alice/postings").await);
        assert_eq!(postings, made.postings, "alice of {own}");
        let filtered = format!("/v1/transfers?account={own}");
        assert_eq!(ids(&list(ep, &filtered).await.0), made.transfers);
    }
    let foreign_postings: HashSet<&String> = made_b.postings.iter().collect();
    assert!(
        made_a
            .postings
            .iter()
            .all(|p| !foreign_postings.contains(p))
    );

    // b's ids, in a's lists.
    let mut refused: Vec<(String, &str)> = Vec::new();
    for cursor in ["starting_after", "ending_before"] {
        for charge in &made_b.charges {
            refused.push((format!("/v1/charges?{cursor}={charge}"), cursor));
        }
        refused.push((
            format!("/v1/refunds?{cursor}={}", made_b.refunds[0]),
            cursor,
        ));
        refused.push((
            format!("/v1/transfers?{cursor}={}", made_b.transfers[0]),
            cursor,
        ));
        refused.push((format!("/v1/accounts?{cursor}=b-only"), cursor));
        for posting in &made_b.postings {
            refused.push((
                format!("/v1/accounts/alice/postings?{cursor}={posting}"),
                cursor,
            ));
        }
    }
    for charge in &made_b.charges {
        refused.push((format!("/v1/refunds?charge={charge}"), "charge"));
    }
    refused.push(("/v1/charges?account=b-only".into(), "account"));
    refused.push(("/v1/transfers?account=b-only".into(), "account"));
    for (path, parameter) in &refused {
        assert_invalid(&a.get(path).await, parameter, path);
    }
    assert_problem(
        &a.get("/v1/accounts/b-only/postings").await,
        404,
        "account-not-found",
    );
    let balance = "/v1/accounts/b-only/balance?as_of_seq=100";
    assert_problem(&a.get(balance).await, 404, "account-not-found");

    // The operator's own tenant has none of them.
    for path in [
        "/v1/accounts",
        "/v1/charges",
        "/v1/refunds",
        "/v1/transfers",
    ] {
        assert_eq!(list(&admin, path).await, (vec![], false), "{path}");
    }
    let path = format!("/v1/charges?starting_after={}", made_a.charges[0]);
    assert_invalid(&admin.get(&path).await, "starting_after", &path);

    let replicator = admin.with_token(Some(&make_token(&admin, "tenant-a", "replicator").await));
    for path in ["/v1/accounts", "/v1/charges", "/v1/accounts/alice/postings"] {
        assert_problem(&replicator.get(path).await, 403, "forbidden");
    }
    let mirror = "/v1/replication/origins/till-1/accounts/alice/postings";
    assert_problem(&a.get(mirror).await, 403, "forbidden");
    server.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_postings_page_alike_at_every_limit_both_ways_in_both_orders() {
    // Guards the pager end to end (issue 20's first test): 10,000 postings of one account, made
    // by 64 concurrent clients, walked with every limit from 1 to 100, oldest and newest first,
    // forwards with starting_after and backwards with ending_before: every walk is the full
    // statement, each posting exactly once and in order. The full statement itself is every
    // charge's posting, in event seq order, with the running balance.
    const POSTINGS: usize = 10_000;
    const WRITERS: usize = 64;
    const WALKERS: usize = 8;
    let server = Server::start().await;
    let ep = server.endpoint();
    create_account(&ep, "bank", "EUR", None).await;
    create_account(&ep, "hot", "EUR", Some(0)).await;
    let made = charges_at_once(&ep, "bank", "hot", POSTINGS, WRITERS).await;

    let statement = full_scan(&ep, "/v1/accounts/hot/postings").await;
    assert_eq!(statement.len(), POSTINGS);
    for (posting, (seq, charge, amount)) in statement.iter().zip(&made) {
        assert_eq!(seq_of(posting), *seq, "{posting}");
        assert_eq!(posting["entry"], json!(charge), "{posting}");
        assert_eq!(posting["amount"], json!(amount), "{posting}");
        assert_eq!(
            (&posting["entry_type"], &posting["direction"]),
            (&json!("charge"), &json!("credit"))
        );
    }
    let totals = replay(&statement);
    totals
        .last()
        .expect("postings")
        .assert_shown_by(&account(&ep, "hot").await, "hot");
    let oldest_first: Arc<Vec<String>> = Arc::new(ids(&statement));
    assert_eq!(distinct(&oldest_first), POSTINGS);

    let mut walkers = JoinSet::new();
    for walker in 0..WALKERS {
        let (ep, oldest_first) = (ep.clone(), Arc::clone(&oldest_first));
        walkers.spawn(async move {
            let mut newest_first = oldest_first.to_vec();
            newest_first.reverse();
            for limit in (1..=100).filter(|limit| limit % WALKERS == walker) {
                for (order, expected) in [("asc", &*oldest_first), ("desc", &newest_first)] {
                    for backwards in [false, true] {
                        let got =
                            walk(&ep, "/v1/accounts/hot/postings", limit, order, backwards).await;
                        let what = format!("limit {limit}, {order}, backwards: {backwards}");
                        assert_same_ids(&got, expected, &what);
                    }
                }
            }
        });
    }
    while let Some(done) = walkers.join_next().await {
        done.expect("a walker panicked");
    }
    server.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_oldest_first_while_eight_connections_write_skips_and_repeats_nothing() {
    // Guards a list read while it grows (issue 20's second test): 8 connections keep charging one
    // account while a reader pages its statement oldest first with starting_after (small, varying
    // limits). Every posting appears once, in order; once the writers stopped and the reader
    // caught up, what it read is exactly the full statement, which is exactly the charges made.
    const WRITERS: usize = 8;
    const CHARGES_PER_WRITER: usize = 250;
    let server = Server::start().await;
    let ep = server.endpoint();
    create_account(&ep, "bank", "EUR", None).await;
    create_account(&ep, "hot", "EUR", Some(0)).await;
    // How many charges the writers have had answered; the reader waits on it when it caught up.
    let (written, mut acknowledged) = tokio::sync::watch::channel(0usize);
    let written = Arc::new(written);
    let mut writers = JoinSet::new();
    for _ in 0..WRITERS {
        // A client of its own: one keep-alive connection per writer.
        let (ep, written) = (ep.with_client(new_client()), Arc::clone(&written));
        writers.spawn(async move {
            let mut made = Vec::with_capacity(CHARGES_PER_WRITER);
            for _ in 0..CHARGES_PER_WRITER {
                made.push(seq_of(&charge_ok(&ep, "bank", "hot", 1, "EUR").await));
                written.send_modify(|n| *n += 1);
            }
            made
        });
    }
    let total = WRITERS * CHARGES_PER_WRITER;
    let mut seen: Vec<String> = Vec::new();
    let mut seen_set = HashSet::new();
    let mut pages = 0usize;
    let mut pages_while_writing = 0usize;
    loop {
        let written_before = *acknowledged.borrow_and_update();
        let limit = 1 + pages % 9;
        let mut path = format!("/v1/accounts/hot/postings?order=asc&limit={limit}");
        if let Some(last) = seen.last() {
            path = with_query(&path, &format!("starting_after={last}"));
        }
        let page = id_page(&ep, &path).await;
        pages += 1;
        if written_before < total {
            pages_while_writing += 1;
        }
        for item in page.data {
            if let Some(last) = seen.last() {
                assert!(item.id > *last, "{} after {last}: out of order", item.id);
            }
            assert!(seen_set.insert(item.id.clone()), "{} read twice", item.id);
            seen.push(item.id);
        }
        if page.has_more {
            continue;
        }
        // Every charge was answered before this page was asked for: it saw them all.
        if written_before == total {
            break;
        }
        acknowledged
            .changed()
            .await
            .expect("the writers' counter lives");
    }
    let mut made = Vec::with_capacity(total);
    while let Some(done) = writers.join_next().await {
        made.extend(done.expect("a writer panicked"));
    }
    made.sort_unstable();
    assert!(
        pages_while_writing > 1,
        "the reader paged while the writers wrote"
    );
    let full = full_scan(&ep, "/v1/accounts/hot/postings").await;
    assert_same_ids(
        &seen,
        &ids(&full),
        "the pages read while writing, against the full scan",
    );
    assert_eq!(
        full.iter().map(seq_of).collect::<Vec<_>>(),
        made,
        "one posting per charge"
    );
    server.check().await;
}

/// A mixed history of `acct` (no overdraft limit, so nothing is declined): charges in and out,
/// authorizations captured in part or voided or left open, refunds both ways, two-leg transfers.
/// Sequential, so the postings spread over many milliseconds (several may share one).
async fn mixed_history(ep: &Endpoint, rounds: usize) {
    create_account(ep, "bank", "EUR", None).await;
    create_account(ep, "acct", "EUR", None).await;
    create_account(ep, "shop", "EUR", None).await;
    let mut open: Vec<String> = Vec::new();
    let mut incoming: Vec<String> = Vec::new();
    for round in 0..rounds {
        let amount = 10 + (round as u64 * 37) % 500;
        match round % 6 {
            0 => incoming.push(id_of(
                &charge_ok(ep, "bank", "acct", amount as i64, "EUR").await,
            )),
            1 => {
                let sale = charge_ok(ep, "acct", "shop", amount as i64, "EUR").await;
                refund(ep, &id_of(&sale), 1 + amount / 3).await;
            }
            2 => open.push(id_of(&authorize(ep, "acct", "shop", amount).await)),
            3 if !open.is_empty() => {
                let held = open.remove(0);
                ok(
                    ep,
                    &format!("/v1/charges/{held}/capture"),
                    json!({"amount": 5}),
                )
                .await;
            }
            4 if open.len() > 1 => {
                let held = open.remove(0);
                ok(ep, &format!("/v1/charges/{held}/void"), json!({})).await;
            }
            4 => {
                let last = incoming.last().expect("a charge into acct").clone();
                refund(ep, &last, 1).await;
            }
            _ => {
                transfer(
                    ep,
                    &[("bank", "acct", amount), ("acct", "shop", amount / 2)],
                )
                .await;
            }
        }
    }
}

/// The index of the last item of `statement` for which `at_or_before` holds (the statement is
/// ordered so that it holds for a prefix), or None when it holds for none.
fn last_where(statement: &[Value], at_or_before: impl Fn(&Value) -> bool) -> Option<usize> {
    statement.iter().rposition(at_or_before)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balance_as_of_an_instant_or_a_seq_is_the_replayed_statement() {
    // Guards GET /v1/accounts/{id}/balance (issue 20's third test): at 200 instants and 200
    // event seqs (random with a fixed seed, on and around postings' own milliseconds, before the
    // first posting, after the last, before 1970 and in year 9999; written in UTC, with offsets
    // and with sub-millisecond fractions) the four totals are those after the last posting at or
    // before the moment, computed by replaying the statement; `as_of` is the instant in UTC,
    // `as_of_seq` the seq asked for, or for an instant one that splits the postings at it.
    const SAMPLES: usize = 200;
    let server = Server::start().await;
    let ep = server.endpoint();
    mixed_history(&ep, 150).await;
    let statement = full_scan(&ep, "/v1/accounts/acct/postings").await;
    let totals = replay(&statement);
    let current = account(&ep, "acct").await;
    totals
        .last()
        .expect("postings")
        .assert_shown_by(&current, "the statement sums to acct");
    let times: Vec<i64> = statement
        .iter()
        .map(|p| ms_of(p["created_at"].as_str().expect("time")))
        .collect();
    let seqs: Vec<u64> = statement.iter().map(seq_of).collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "the clock never goes back"
    );
    let (first_ms, last_ms) = (times[0], *times.last().expect("a posting"));
    assert!(
        last_ms > first_ms,
        "the history spans more than one millisecond"
    );
    let reference = |index: Option<usize>| index.map_or(Totals::default(), |i| totals[i]);

    let mut rng = Rng(20);
    let mut instants: Vec<i64> = vec![0, first_ms - 1, first_ms, last_ms, last_ms + 1];
    while instants.len() < SAMPLES {
        let at = match rng.next() % 3 {
            0 => times[rng.between(0, times.len() as i64 - 1) as usize] + rng.between(-1, 1),
            1 => rng.between(first_ms - 20, last_ms + 20),
            _ => times[rng.between(0, times.len() as i64 - 1) as usize],
        };
        instants.push(at);
    }
    for (n, at) in instants.iter().enumerate() {
        // The same instant written four ways; the server keeps milliseconds, rounding down.
        let utc = text_of(*at);
        let written = match n % 4 {
            0 => utc.clone(),
            1 => text_of(at + 19_800_000).replace('Z', "%2B05:30"),
            2 => text_of(at - 28_800_000).replace('Z', "-08:00"),
            _ => utc.replace('Z', "4999z").replace('T', "t"),
        };
        let body = balance_of(&ep, "acct", &format!("as_of={written}")).await;
        let index = last_where(&statement, |p| {
            ms_of(p["created_at"].as_str().expect("time")) <= *at
        });
        reference(index).assert_shown_by(&body, &format!("as_of={written}"));
        assert_eq!(body["as_of"], json!(utc), "as_of={written}");
        let as_of_seq = body["as_of_seq"].as_u64().expect("as_of_seq");
        for (seq, ms) in seqs.iter().zip(&times) {
            assert_eq!(
                *seq <= as_of_seq,
                *ms <= *at,
                "as_of={written}: seq {seq} at {ms}"
            );
        }
    }
    for (query, expected) in [
        ("as_of=1969-12-31T23:59:59.999Z", "1969-12-31T23:59:59.999Z"),
        ("as_of=9999-12-31T23:59:59Z", "9999-12-31T23:59:59.000Z"),
    ] {
        let body = balance_of(&ep, "acct", query).await;
        let index = (expected.starts_with('9')).then_some(statement.len() - 1);
        reference(index).assert_shown_by(&body, query);
        assert_eq!(body["as_of"], expected);
    }

    let (first_seq, last_seq) = (seqs[0], *seqs.last().expect("a posting"));
    let mut asked: Vec<u64> = vec![
        0,
        first_seq - 1,
        first_seq,
        last_seq,
        last_seq + 1,
        i64::MAX as u64,
    ];
    while asked.len() < SAMPLES {
        asked.push(rng.between(0, last_seq as i64 + 5) as u64);
    }
    for seq in asked {
        let body = balance_of(&ep, "acct", &format!("as_of_seq={seq}")).await;
        let index = last_where(&statement, |p| seq_of(p) <= seq);
        reference(index).assert_shown_by(&body, &format!("as_of_seq={seq}"));
        assert_eq!(
            (&body["as_of"], &body["as_of_seq"]),
            (&Value::Null, &json!(seq))
        );
    }
    server.check().await;
}

/// Everything the history routes show of the default tenant, for comparing before and after.
async fn history_snapshot(ep: &Endpoint, accounts: &[&str]) -> BTreeMap<String, Vec<Value>> {
    let mut snapshot = BTreeMap::new();
    for path in [
        "/v1/accounts",
        "/v1/charges",
        "/v1/refunds",
        "/v1/transfers",
    ] {
        snapshot.insert(path.to_owned(), full_scan(ep, path).await);
    }
    for id in accounts {
        let path = format!("/v1/accounts/{id}/postings");
        let statement = full_scan(ep, &path).await;
        let mut balances = Vec::new();
        for posting in &statement {
            let query = format!("as_of_seq={}", seq_of(posting));
            balances.push(balance_of(ep, id, &query).await);
        }
        snapshot.insert(path, statement);
        snapshot.insert(format!("{id} balances"), balances);
    }
    snapshot
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_outlives_idempotency_and_outbox_retention() {
    // Guards "History is the ledger" (API.md "Lists"): with idempotency and outbox retention of
    // one second, once the sweep has deleted every event and the finished keys, every list,
    // statement and as-of balance shows exactly what it showed before.
    let server =
        Server::start_with(&["--idempotency-retention", "1s", "--outbox-retention", "1s"]).await;
    let ep = server.endpoint();
    let opened = ep
        .post(
            "/v1/accounts",
            Some("kept-briefly"),
            &crate::harness::account_body("bank", "EUR", None),
        )
        .await;
    assert_created(&opened);
    for id in ["alice", "shop"] {
        create_account(&ep, id, "EUR", Some(0)).await;
    }
    let sale = charge_ok(&ep, "bank", "alice", 900, "EUR").await;
    let held = authorize(&ep, "alice", "shop", 300).await;
    ok(
        &ep,
        &format!("/v1/charges/{}/capture", id_of(&held)),
        json!({}),
    )
    .await;
    refund(&ep, &id_of(&sale), 100).await;
    transfer(&ep, &[("alice", "shop", 50), ("shop", "bank", 20)]).await;
    let accounts = ["bank", "alice", "shop"];
    let before = history_snapshot(&ep, &accounts).await;
    let last_event = crate::replication::last_seq(&ep).await;

    eventually("the sweep deletes every event", RETENTION_DEADLINE, || {
        let ep = ep.clone();
        async move {
            let page = ep.get("/v1/events?limit=1").await.json();
            (page["held"]["first"].as_u64() > Some(last_event)).then_some(())
        }
    })
    .await;
    eventually(
        "the sweep forgets the account's key",
        RETENTION_DEADLINE,
        || {
            let ep = ep.clone();
            async move {
                let body = crate::harness::account_body("bank", "EUR", None);
                let again = ep.post("/v1/accounts", Some("kept-briefly"), &body).await;
                // Forgotten, the request runs again and finds the account taken (a decline: the
                // ledger does not change).
                (!again.replayed()).then(|| assert_problem(&again, 400, "account-exists"))
            }
        },
    )
    .await;
    let after = history_snapshot(&ep, &accounts).await;
    assert_eq!(after, before, "history after retention");
    assert_eq!(before["/v1/charges"].len(), 2);
    assert_eq!(before["/v1/accounts/alice/postings"].len(), 6);
    server.check().await;
}

/// The charges of `all` (oldest first) for which `keep` holds, newest first.
fn newest_first_where(all: &[Value], keep: impl Fn(&Value) -> bool) -> Vec<String> {
    all.iter().rev().filter(|c| keep(c)).map(id_of).collect()
}

fn created_ms(charge: &Value) -> i64 {
    ms_of(charge["created_at"].as_str().expect("created_at"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charge_refund_and_transfer_filters_select_exactly_what_they_name() {
    // Guards the filters of API.md "Lists": charges by account (source or destination), by
    // status (each of the four, an authorization's expiry by the server's clock included) and
    // by created_gte / created_lt to the millisecond, with the bound on a charge's own
    // millisecond and half a millisecond after it (a burst of charges at once puts several in
    // one), alone, combined and paged both ways; a charge's refunds; the transfers with a leg on
    // an account, each listed once however many of its legs are there.
    let env = [("ONCELEDGER_FAULT_AUTHORIZATION_SECOND_MS", "10")];
    let server = Server::start_with_env(&[], &env).await;
    let ep = server.endpoint();
    for id in ["bank", "a1", "a2", "a3"] {
        create_account(&ep, id, "EUR", None).await;
    }
    let sale = charge_ok(&ep, "bank", "a1", 100, "EUR").await;
    authorize(&ep, "a1", "a2", 50).await;
    let voided = authorize(&ep, "a1", "a3", 40).await;
    ok(
        &ep,
        &format!("/v1/charges/{}/void", id_of(&voided)),
        json!({}),
    )
    .await;
    let body = json!({"source": "a2", "destination": "a3", "amount": 30, "currency": "EUR",
                      "capture": false, "expires_in": 60});
    let expiring = id_of(&ok(&ep, "/v1/charges", body).await);
    let captured = authorize(&ep, "a3", "a1", 20).await;
    ok(
        &ep,
        &format!("/v1/charges/{}/capture", id_of(&captured)),
        json!({}),
    )
    .await;
    eventually(
        "the server expires the authorization",
        Duration::from_secs(20),
        || {
            let (ep, path) = (ep.clone(), format!("/v1/charges/{expiring}"));
            async move { (ep.get(&path).await.json()["status"] == "expired").then_some(()) }
        },
    )
    .await;
    charges_at_once(&ep, "bank", "a2", 60, 16).await;

    let all = full_scan(&ep, "/v1/charges").await;
    assert_eq!(all.len(), 65);
    let check = |path: String, expected: Vec<String>| {
        let ep = ep.clone();
        async move {
            let (data, has_more) = list(&ep, &with_query(&path, "limit=100")).await;
            assert!(!has_more);
            assert_eq!(ids(&data), expected, "{path}");
            for (limit, backwards) in [(1, false), (7, true)] {
                let mut oldest_first = expected.clone();
                oldest_first.reverse();
                let paged = walk(&ep, &path, limit, "asc", backwards).await;
                assert_same_ids(&paged, &oldest_first, &format!("{path}, limit {limit}"));
            }
        }
    };
    for status in ["succeeded", "authorized", "canceled", "expired"] {
        let expected = newest_first_where(&all, |c| c["status"] == status);
        assert!(!expected.is_empty(), "{status}");
        check(format!("/v1/charges?status={status}"), expected).await;
    }
    for id in ["bank", "a1", "a2", "a3"] {
        let touches = |c: &Value| c["source"] == id || c["destination"] == id;
        check(
            format!("/v1/charges?account={id}"),
            newest_first_where(&all, touches),
        )
        .await;
        let succeeded = |c: &Value| touches(c) && c["status"] == "succeeded";
        let path = format!("/v1/charges?status=succeeded&account={id}");
        check(path, newest_first_where(&all, succeeded)).await;
    }
    let mut bounds: Vec<i64> = all.iter().map(created_ms).collect();
    bounds.dedup();
    for at in bounds {
        let (on, half_after) = (text_of(at), text_of(at).replace('Z', "500Z"));
        // Each bound as the millisecond range of creation times it keeps.
        let cases = [
            (format!("created_gte={on}"), at..=i64::MAX),
            (format!("created_lt={on}"), i64::MIN..=at - 1),
            (format!("created_gte={half_after}"), at + 1..=i64::MAX),
            (format!("created_lt={half_after}"), i64::MIN..=at),
            (
                format!("created_gte={on}&created_lt={}", text_of(at + 1)),
                at..=at,
            ),
        ];
        for (query, kept) in cases {
            let expected = newest_first_where(&all, |c| kept.contains(&created_ms(c)));
            let (data, _) = list(&ep, &format!("/v1/charges?limit=100&{query}")).await;
            assert_eq!(ids(&data), expected, "{query}");
        }
    }
    let middle = text_of(created_ms(&all[30]));
    let in_middle = |c: &Value| c["destination"] == "a2" && created_ms(c) >= created_ms(&all[30]);
    check(
        format!("/v1/charges?account=a2&created_gte={middle}"),
        newest_first_where(&all, in_middle),
    )
    .await;

    // A charge's refunds, and every refund.
    let (sale, captured) = (id_of(&sale), id_of(&captured));
    let first = id_of(&refund(&ep, &sale, 10).await);
    let second = id_of(&refund(&ep, &sale, 20).await);
    let other = id_of(&refund(&ep, &captured, 5).await);
    check(
        format!("/v1/refunds?charge={sale}"),
        vec![second.clone(), first.clone()],
    )
    .await;
    check(
        format!("/v1/refunds?charge={captured}"),
        vec![other.clone()],
    )
    .await;
    check(format!("/v1/refunds?charge={}", id_of(&voided)), vec![]).await;
    check("/v1/refunds".into(), vec![other, second, first]).await;

    // Transfers with a leg on an account: listed once however many legs are there.
    let t1 = id_of(&transfer(&ep, &[("a1", "a2", 5), ("a2", "a3", 3)]).await);
    let t2 = id_of(&transfer(&ep, &[("a1", "a3", 2)]).await);
    let t3 = id_of(&transfer(&ep, &[("a3", "bank", 1), ("bank", "a3", 1)]).await);
    for (id, expected) in [
        ("a1", vec![&t2, &t1]),
        ("a2", vec![&t1]),
        ("a3", vec![&t3, &t2, &t1]),
        ("bank", vec![&t3]),
    ] {
        let expected = expected.into_iter().cloned().collect();
        check(format!("/v1/transfers?account={id}"), expected).await;
    }
    check("/v1/transfers".into(), vec![t3, t2, t1]).await;
    server.check().await;
}

/// A terminal replicating to a hub, with a little of everything on `alice`; returns (hub,
/// terminal, the terminal's node id) once the hub applied all of it.
async fn terminal_and_hub() -> (Server, Server, String) {
    let hub_addr = crate::harness::free_loopback_addr();
    let hub = crate::replication::start_hub_at(hub_addr, &[], &[]).await;
    let terminal = crate::replication::start_terminal(hub_addr, &[], &[]).await;
    let ep = terminal.endpoint();
    create_account(&ep, "bank", "EUR", None).await;
    create_account(&ep, "alice", "EUR", Some(0)).await;
    create_account(&ep, "shop", "EUR", Some(0)).await;
    let sale = charge_ok(&ep, "bank", "alice", 1000, "EUR").await;
    let held = authorize(&ep, "alice", "shop", 300).await;
    ok(
        &ep,
        &format!("/v1/charges/{}/capture", id_of(&held)),
        json!({"amount": 200}),
    )
    .await;
    authorize(&ep, "alice", "shop", 50).await;
    refund(&ep, &id_of(&sale), 100).await;
    transfer(&ep, &[("alice", "shop", 10), ("shop", "alice", 4)]).await;
    let origin = crate::replication::node_id(&ep).await;
    let last = crate::replication::last_seq(&ep).await;
    crate::replication::wait_applied_through(&hub.endpoint(), &origin, last).await;
    (hub, terminal, origin)
}

/// A hub's posting is the origin's, but for `entry`: the origin's number spelled out
/// (`ch_`, `re_` or `tr_` and 16 hex digits).
#[track_caller]
fn assert_mirrors(mirrored: &Value, own: &Value) {
    for field in POSTING_FIELDS.iter().filter(|f| **f != "entry") {
        assert_eq!(
            mirrored[field], own[field],
            "{field}: {mirrored} against {own}"
        );
    }
    let entry = mirrored["entry"].as_str().expect("entry");
    let prefix = match own["entry_type"].as_str() {
        Some("refund") => "re_",
        Some("transfer") => "tr_",
        _ => "ch_",
    };
    assert!(
        entry.len() == 19
            && entry.starts_with(prefix)
            && entry[3..]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
        "{mirrored}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hubs_statement_route_answers_like_its_mirrored_account_route() {
    // Guards GET /v1/replication/origins/{node}/accounts/{id}/postings: a list of postings, each
    // the origin's own but for `entry`; 404 where the mirrored account route is 404 (an account
    // or a node the hub never saw), 400 for a malformed origin, a bad parameter or a cursor that
    // names nothing.
    let (hub, terminal, origin) = terminal_and_hub().await;
    let hub_ep = hub.endpoint();
    let base = format!("/v1/replication/origins/{origin}/accounts/alice/postings");
    let (data, _) = list(&hub_ep, &base).await;
    let own = full_scan(&terminal.endpoint(), "/v1/accounts/alice/postings").await;
    let own: BTreeMap<String, &Value> = own.iter().map(|p| (id_of(p), p)).collect();
    for mirrored in &data {
        assert_mirrors(
            mirrored,
            own.get(&id_of(mirrored)).expect("a posting of alice"),
        );
    }
    for path in [
        format!("/v1/replication/origins/{origin}/accounts/nobody/postings"),
        "/v1/replication/origins/never-seen/accounts/alice/postings".to_owned(),
    ] {
        assert_problem(&hub_ep.get(&path).await, 404, "account-not-found");
    }
    for (query, parameter) in [
        ("limit=0", "limit"),
        ("order=up", "order"),
        ("starting_after=po_000000000000000000", "starting_after"),
        ("ending_before=x&starting_after=y", "starting_after"),
        ("as_of_seq=1", "as_of_seq"),
    ] {
        let path = format!("{base}?{query}");
        assert_invalid(&hub_ep.get(&path).await, parameter, &path);
    }
    let malformed = "/v1/replication/origins/a:b/accounts/alice/postings";
    assert_problem(&hub_ep.get(malformed).await, 400, "invalid-request");
    terminal.check().await;
    hub.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hubs_statement_of_an_origins_account_is_the_origins_statement() {
    // Guards "what did terminal X do to account Y" (issue 20): the hub's statement of each
    // mirrored account is the terminal's, line for line and page for page, but for `entry`,
    // which names the same entry on every line it made (the origin's number, spelled out).
    let (hub, terminal, origin) = terminal_and_hub().await;
    let mut entries: BTreeMap<String, String> = BTreeMap::new();
    for account in ["bank", "alice", "shop"] {
        let own = full_scan(
            &terminal.endpoint(),
            &format!("/v1/accounts/{account}/postings"),
        )
        .await;
        let path = format!("/v1/replication/origins/{origin}/accounts/{account}/postings");
        let mirrored = full_scan(&hub.endpoint(), &path).await;
        assert_eq!(ids(&mirrored), ids(&own), "{account}");
        for (mirrored, own) in mirrored.iter().zip(&own) {
            assert_mirrors(mirrored, own);
            let (mine, theirs) = (own["entry"].as_str().expect("entry"), &mirrored["entry"]);
            let named = entries
                .entry(mine.to_owned())
                .or_insert_with(|| theirs.as_str().expect("entry").to_owned());
            assert_eq!(json!(named), *theirs, "one entry, one name: {mirrored}");
        }
        for limit in [1, 3] {
            let paged = walk(&hub.endpoint(), &path, limit, "desc", true).await;
            let mut newest_first = ids(&own);
            newest_first.reverse();
            assert_same_ids(&paged, &newest_first, &format!("{account}, limit {limit}"));
        }
    }
    let names: HashSet<&String> = entries.values().collect();
    assert_eq!(names.len(), entries.len(), "two entries never share a name");
    terminal.check().await;
    hub.check().await;
}
