//! Every row of the idempotency table in API.md, plus the 413/415/404/405 edges of a POST.

use hyper::Method;
use serde_json::json;

use crate::harness::{
    Endpoint, Server, account_body, assert_created, assert_problem, assert_replay_of, balance,
    charge_body, create_account, key,
};

/// A funding account without limit ("bank") and a shop, both EUR.
async fn bank_and_shop(ep: &Endpoint) {
    create_account(ep, "bank", "EUR", None).await;
    create_account(ep, "shop", "EUR", Some(0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_key_is_400_and_nothing_happens() {
    // Guards the "key missing" row: 400 idempotency-key-missing, and the operation does not run.
    let server = Server::start().await;
    let ep = server.endpoint();
    bank_and_shop(&ep).await;

    let resp = server
        .post("/v1/accounts", None, &account_body("nokey", "EUR", Some(0)))
        .await;
    assert_problem(&resp, 400, "idempotency-key-missing");
    assert_problem(
        &ep.get("/v1/accounts/nokey").await,
        404,
        "account-not-found",
    );

    let resp = ep
        .post("/v1/charges", None, &charge_body("bank", "shop", 5, "EUR"))
        .await;
    assert_problem(&resp, 400, "idempotency-key-missing");
    assert_eq!(balance(&ep, "shop").await, 0, "a keyless POST moved money");

    server.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_keys_are_400_and_nothing_happens() {
    // Guards the "key malformed" row: empty, over 255, a space, a control byte (tab), non-ASCII
    // bytes, an empty or over-long sf-string are all 400 idempotency-key-invalid with no effect.
    let server = Server::start().await;
    let ep = server.endpoint();
    let long_256 = "k".repeat(256);
    let quoted_256 = format!("\"{}\"", "q".repeat(256));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", b"".to_vec()),
        ("256 characters", long_256.into_bytes()),
        ("a space inside", b"a b".to_vec()),
        ("a tab (control byte) inside", b"a\tb".to_vec()),
        ("non-ASCII (UTF-8 e-acute)", "cl\u{e9}".as_bytes().to_vec()),
        ("a raw 0xFF byte", b"ab\xffcd".to_vec()),
        ("an empty sf-string", b"\"\"".to_vec()),
        ("an sf-string of 256 characters", quoted_256.into_bytes()),
    ];
    for (i, (label, value)) in cases.iter().enumerate() {
        let id = format!("malformed-{i}");
        let body = account_body(&id, "EUR", Some(0));
        let resp = ep
            .post_raw(
                "/v1/accounts",
                &[
                    ("content-type", b"application/json"),
                    ("idempotency-key", value),
                ],
                body.as_bytes(),
            )
            .await;
        assert_eq!(
            resp.problem_type(),
            "/problems/idempotency-key-invalid",
            "key {label}: {resp}"
        );
        assert_problem(&resp, 400, "idempotency-key-invalid");
        let get = ep.get(&format!("/v1/accounts/{id}")).await;
        assert_eq!(get.status, 404, "key {label} created the account: {get}");
    }
    server.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_boundaries_and_sf_string_form() {
    // Guards the key grammar's accepted edges: 255 characters and every visible ASCII byte are
    // accepted, the sf-string form "abc" is the same key as abc (both directions), and keys are
    // case-sensitive.
    let server = Server::start().await;
    let ep = server.endpoint();

    let long_255 = "k".repeat(255);
    assert_created(
        &ep.post(
            "/v1/accounts",
            Some(&long_255),
            &account_body("k255", "EUR", Some(0)),
        )
        .await,
    );
    let visible: String = (0x21u8..=0x7e)
        .map(char::from)
        .filter(|c| *c != '"')
        .collect();
    assert_created(
        &ep.post(
            "/v1/accounts",
            Some(&visible),
            &account_body("visible", "EUR", Some(0)),
        )
        .await,
    );
    let quoted_255 = format!("\"{}\"", "q".repeat(255));
    assert_created(
        &ep.post(
            "/v1/accounts",
            Some(&quoted_255),
            &account_body("q255", "EUR", Some(0)),
        )
        .await,
    );

    // Quoted first, then bare.
    let body = account_body("sf1", "EUR", Some(0));
    let first = ep.post("/v1/accounts", Some("\"abc\""), &body).await;
    assert_created(&first);
    let bare = ep.post("/v1/accounts", Some("abc"), &body).await;
    assert_replay_of(&bare, &first);

    // Bare first, then quoted.
    let body = account_body("sf2", "EUR", Some(0));
    let first = ep.post("/v1/accounts", Some("xyz-2"), &body).await;
    assert_created(&first);
    let quoted = ep.post("/v1/accounts", Some("\"xyz-2\""), &body).await;
    assert_replay_of(&quoted, &first);

    // Keys are case-sensitive: another case is another key.
    let upper = ep
        .post(
            "/v1/accounts",
            Some("ABC"),
            &account_body("sf-upper", "EUR", Some(0)),
        )
        .await;
    assert_created(&upper);

    // And the quoted form of a finished key with another body is a reuse.
    let other = ep
        .post(
            "/v1/accounts",
            Some("\"abc\""),
            &account_body("sf3", "EUR", Some(0)),
        )
        .await;
    assert_problem(&other, 422, "idempotency-key-reused");
    assert_eq!(ep.get("/v1/accounts/sf3").await.status, 404);

    server.check().await;
}

fn charge_invalid_bodies() -> Vec<(&'static str, String)> {
    let id_65 = "a".repeat(65);
    let meta_17: serde_json::Map<String, serde_json::Value> =
        (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
    let with = |field: &str, value: serde_json::Value| {
        let mut body =
            json!({"source": "bank", "destination": "shop", "amount": 1, "currency": "EUR"});
        body[field] = value;
        body.to_string()
    };
    vec![
        (
            "bad JSON",
            r#"{"source":"bank","destination":"shop","amount":1,"currency":"EUR""#.to_owned(),
        ),
        ("an empty body", String::new()),
        ("a JSON array", "[]".to_owned()),
        ("JSON null", "null".to_owned()),
        ("trailing garbage", format!("{} x", charge_body("bank", "shop", 1, "EUR"))),
        ("an unknown field", with("colour", json!("red"))),
        (
            "a duplicate field",
            r#"{"source":"bank","destination":"shop","amount":1,"amount":2,"currency":"EUR"}"#
                .to_owned(),
        ),
        (
            "no amount",
            r#"{"source":"bank","destination":"shop","currency":"EUR"}"#.to_owned(),
        ),
        ("amount 0", with("amount", json!(0))),
        ("amount -5", with("amount", json!(-5))),
        ("amount 1.5", with("amount", json!(1.5))),
        (
            "amount 100.0",
            r#"{"source":"bank","destination":"shop","amount":100.0,"currency":"EUR"}"#.to_owned(),
        ),
        (
            "amount 1e2",
            r#"{"source":"bank","destination":"shop","amount":1e2,"currency":"EUR"}"#.to_owned(),
        ),
        ("amount as a string", with("amount", json!("100"))),
        ("amount null", with("amount", json!(null))),
        (
            "amount 2^63",
            r#"{"source":"bank","destination":"shop","amount":9223372036854775808,"currency":"EUR"}"#
                .to_owned(),
        ),
        (
            "amount 10^30",
            r#"{"source":"bank","destination":"shop","amount":1000000000000000000000000000000,"currency":"EUR"}"#
                .to_owned(),
        ),
        ("currency \"eur\"", with("currency", json!("eur"))),
        ("currency \"EURO\"", with("currency", json!("EURO"))),
        ("currency \"EU\"", with("currency", json!("EU"))),
        ("currency 978", with("currency", json!(978))),
        ("source with a space", with("source", json!("bad id"))),
        ("source empty", with("source", json!(""))),
        ("source of 65 characters", with("source", json!(id_65))),
        ("source non-ASCII", with("source", json!("b\u{e4}nk"))),
        ("destination with a slash", with("destination", json!("a/b"))),
        ("metadata with 17 pairs", with("metadata", json!(meta_17))),
        (
            "metadata key of 41 characters",
            with("metadata", json!({ "k".repeat(41): "v" })),
        ),
        (
            "metadata value of 501 characters",
            with("metadata", json!({ "k": "v".repeat(501) })),
        ),
        ("metadata number value", with("metadata", json!({"k": 1}))),
        ("metadata not an object", with("metadata", json!("x"))),
        ("source == destination", with("destination", json!("bank"))),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_charge_bodies_are_400_and_leave_the_key_unused() {
    // Guards the "body invalid" row for charges: each is 400 invalid-request, is not stored (the
    // same key then runs a valid request: a fresh 201, not 422 or a replay), and moves no money.
    let server = Server::start().await;
    let ep = server.endpoint();
    bank_and_shop(&ep).await;

    let valid = charge_body("bank", "shop", 1, "EUR");
    let cases = charge_invalid_bodies();
    for (label, body) in &cases {
        let k = key("invalid-charge");
        let resp = ep.post("/v1/charges", Some(&k), body).await;
        assert_eq!(
            (resp.status, resp.problem_type().as_str()),
            (400, "/problems/invalid-request"),
            "charge with {label}: {resp}"
        );
        assert_problem(&resp, 400, "invalid-request");
        let again = ep.post("/v1/charges", Some(&k), &valid).await;
        assert_eq!(
            again.status, 201,
            "after a 400 for {label} the key must stay unused, got {again}"
        );
        assert_created(&again);
    }
    assert_eq!(
        balance(&ep, "shop").await,
        cases.len() as i64,
        "only the valid follow-up charges may move money"
    );
    server.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_account_bodies_are_400_and_leave_the_key_unused() {
    // Guards the "body invalid" row for accounts: 400 invalid-request, nothing stored, the key
    // stays usable.
    let server = Server::start().await;
    let ep = server.endpoint();
    let cases: Vec<(&str, String)> = vec![
        ("bad JSON", r#"{"id":"x","currency":"EUR""#.to_owned()),
        (
            "an unknown field",
            r#"{"id":"x","currency":"EUR","overdraft_limit":0,"owner":"me"}"#.to_owned(),
        ),
        (
            "a duplicate field",
            r#"{"id":"x","id":"y","currency":"EUR"}"#.to_owned(),
        ),
        ("no id", r#"{"currency":"EUR"}"#.to_owned()),
        ("no currency", r#"{"id":"x"}"#.to_owned()),
        (
            "currency \"eur\"",
            r#"{"id":"x","currency":"eur"}"#.to_owned(),
        ),
        (
            "currency \"EURO\"",
            r#"{"id":"x","currency":"EURO"}"#.to_owned(),
        ),
        (
            "id with a space",
            r#"{"id":"bad id","currency":"EUR"}"#.to_owned(),
        ),
        ("empty id", r#"{"id":"","currency":"EUR"}"#.to_owned()),
        (
            "id of 65 characters",
            format!(r#"{{"id":"{}","currency":"EUR"}}"#, "a".repeat(65)),
        ),
        (
            "overdraft_limit -1",
            r#"{"id":"x","currency":"EUR","overdraft_limit":-1}"#.to_owned(),
        ),
        (
            "overdraft_limit 1.5",
            r#"{"id":"x","currency":"EUR","overdraft_limit":1.5}"#.to_owned(),
        ),
        (
            "overdraft_limit as a string",
            r#"{"id":"x","currency":"EUR","overdraft_limit":"10"}"#.to_owned(),
        ),
    ];
    for (i, (label, body)) in cases.iter().enumerate() {
        let k = key("invalid-account");
        let resp = ep.post("/v1/accounts", Some(&k), body).await;
        assert_eq!(
            (resp.status, resp.problem_type().as_str()),
            (400, "/problems/invalid-request"),
            "account with {label}: {resp}"
        );
        assert_problem(&resp, 400, "invalid-request");
        let id = format!("ok-{i}");
        let again = ep
            .post("/v1/accounts", Some(&k), &account_body(&id, "EUR", Some(0)))
            .await;
        assert_eq!(
            again.status, 201,
            "after a 400 for {label} the key must stay unused, got {again}"
        );
        assert_created(&again);
    }
    for id in ["x", "y", "bad id"] {
        let resp = ep
            .get(&format!("/v1/accounts/{}", id.replace(' ', "%20")))
            .await;
        assert_eq!(
            resp.status, 404,
            "an invalid body created account {id:?}: {resp}"
        );
    }
    server.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_key_runs_once_and_replays_byte_for_byte() {
    // Guards the "new key" and "same fingerprint, finished" rows: the first answer is a 201
    // without Idempotent-Replayed; every repeat is the same status and byte-identical body with
    // Idempotent-Replayed: true, and the money moves once.
    let server = Server::start().await;
    let ep = server.endpoint();
    let account = account_body("bank", "EUR", None);
    let first = ep.post("/v1/accounts", Some("acct-bank"), &account).await;
    assert_created(&first);
    let again = ep.post("/v1/accounts", Some("acct-bank"), &account).await;
    assert_replay_of(&again, &first);
    create_account(&ep, "shop", "EUR", Some(0)).await;

    let body = r#"{"source":"bank","destination":"shop","amount":1250,"currency":"EUR","metadata":{"order":"A-17"}}"#;
    let first = ep.post("/v1/charges", Some("charge-1"), body).await;
    assert_created(&first);
    for _ in 0..3 {
        let replay = ep.post("/v1/charges", Some("charge-1"), body).await;
        assert_replay_of(&replay, &first);
        assert_ne!(
            replay.header("x-request-id"),
            first.header("x-request-id"),
            "a replay is a new request and gets its own X-Request-Id"
        );
    }
    assert_eq!(balance(&ep, "shop").await, 1250);
    assert_eq!(balance(&ep, "bank").await, -1250);
    server.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fingerprint_ignores_key_order_and_whitespace() {
    // Guards the canonical fingerprint: the same body with other key order (also inside
    // metadata) and other whitespace is a replay, not 422.
    let server = Server::start().await;
    let ep = server.endpoint();
    bank_and_shop(&ep).await;

    let compact = r#"{"source":"bank","destination":"shop","amount":700,"currency":"EUR","metadata":{"a":"1","b":"2"}}"#;
    let reordered = "{\n  \"metadata\" : { \"b\" : \"2\",\t\"a\":\"1\" },\r\n  \"currency\":\"EUR\",\n  \"amount\" : 700,\n  \"destination\":\"shop\", \"source\":\"bank\"\n}\n";
    let first = ep.post("/v1/charges", Some("order-1"), compact).await;
    assert_created(&first);
    let replay = ep.post("/v1/charges", Some("order-1"), reordered).await;
    assert_replay_of(&replay, &first);
    assert_eq!(balance(&ep, "shop").await, 700);

    let body = account_body("acc-order", "EUR", Some(0));
    let first = ep.post("/v1/accounts", Some("order-2"), &body).await;
    assert_created(&first);
    let replay = ep
        .post(
            "/v1/accounts",
            Some("order-2"),
            r#"  { "overdraft_limit":0 , "currency" : "EUR", "id":"acc-order" }  "#,
        )
        .await;
    assert_replay_of(&replay, &first);
    server.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_key_different_body_is_422_and_not_stored() {
    // Guards the "key seen, different fingerprint" row: 422 idempotency-key-reused for any
    // changed value or another path; the 422 is not stored (the original still replays) and
    // nothing moves.
    let server = Server::start().await;
    let ep = server.endpoint();
    bank_and_shop(&ep).await;

    let body = charge_body("bank", "shop", 100, "EUR");
    let first = ep.post("/v1/charges", Some("reuse"), &body).await;
    assert_created(&first);

    let changed = [
        charge_body("bank", "shop", 101, "EUR"),
        r#"{"source":"bank","destination":"shop","amount":100,"currency":"EUR","metadata":{"a":"b"}}"#
            .to_owned(),
    ];
    for other in &changed {
        let resp = ep.post("/v1/charges", Some("reuse"), other).await;
        assert_problem(&resp, 422, "idempotency-key-reused");
        assert!(!resp.replayed(), "a 422 is not a replay: {resp}");
    }
    // The same key on another path is another fingerprint too.
    let resp = ep
        .post(
            "/v1/accounts",
            Some("reuse"),
            &account_body("p", "EUR", Some(0)),
        )
        .await;
    assert_problem(&resp, 422, "idempotency-key-reused");
    assert_eq!(ep.get("/v1/accounts/p").await.status, 404);

    let replay = ep.post("/v1/charges", Some("reuse"), &body).await;
    assert_replay_of(&replay, &first);
    assert_eq!(balance(&ep, "shop").await, 100);
    server.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_64_kib_is_413_and_not_stored() {
    // Guards body_bytes_max: 65,536 bytes are accepted, 65,537 are 413 body-too-large, and the
    // key of a refused body stays unused.
    let server = Server::start().await;
    let ep = server.endpoint();
    bank_and_shop(&ep).await;

    let pad = |json: String, len: usize| {
        let mut padded = json;
        assert!(padded.len() <= len);
        padded.push_str(&" ".repeat(len - padded.len()));
        padded
    };
    let exact = pad(account_body("exact", "EUR", Some(0)), 65_536);
    assert_created(&ep.post("/v1/accounts", Some("exact"), &exact).await);

    let body = charge_body("bank", "shop", 9, "EUR");
    let over = pad(body.clone(), 65_537);
    let resp = ep.post("/v1/charges", Some("big"), &over).await;
    assert_problem(&resp, 413, "body-too-large");
    assert_eq!(balance(&ep, "shop").await, 0);
    assert_created(&ep.post("/v1/charges", Some("big"), &body).await);

    let huge = pad(account_body("huge", "EUR", Some(0)), 1 << 20);
    let resp = ep.post("/v1/accounts", Some("huge"), &huge).await;
    assert_problem(&resp, 413, "body-too-large");
    assert_eq!(ep.get("/v1/accounts/huge").await.status, 404);
    server.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_json_content_type_is_415_and_not_stored() {
    // Guards the media type check: a POST that is not application/json is 415
    // unsupported-media-type and leaves its key unused; parameters such as charset are allowed.
    let server = Server::start().await;
    let ep = server.endpoint();
    let body = account_body("typed", "EUR", Some(0));
    for content_type in [&b"text/plain"[..], b"application/x-www-form-urlencoded"] {
        let resp = ep
            .post_raw(
                "/v1/accounts",
                &[
                    ("content-type", content_type),
                    ("idempotency-key", b"typed"),
                ],
                body.as_bytes(),
            )
            .await;
        assert_problem(&resp, 415, "unsupported-media-type");
    }
    let resp = server
        .post_raw(
            "/v1/accounts",
            &[("idempotency-key", b"typed")],
            body.as_bytes(),
        )
        .await;
    assert_problem(&resp, 415, "unsupported-media-type");
    assert_eq!(ep.get("/v1/accounts/typed").await.status, 404);

    let resp = ep
        .post_raw(
            "/v1/accounts",
            &[
                ("content-type", b"application/json; charset=utf-8"),
                ("idempotency-key", b"typed"),
            ],
            body.as_bytes(),
        )
        .await;
    assert_created(&resp);
    server.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_route_is_404_and_wrong_method_is_405() {
    // Guards routing: no such route is 404 not-found; a route with another method is 405
    // method-not-allowed with an Allow header naming the methods it has.
    let server = Server::start().await;
    let ep = server.endpoint();
    let resp = ep.post("/v1/payouts", Some("route-1"), "{}").await;
    assert_problem(&resp, 404, "not-found");
    let resp = ep.get("/v2/accounts").await;
    assert_problem(&resp, 404, "not-found");

    let cases: [(Method, &str, &str); 4] = [
        (Method::DELETE, "/v1/accounts/alice", "GET"),
        (Method::PUT, "/v1/charges", "POST"),
        (Method::POST, "/v1/events", "GET"),
        (Method::PATCH, "/v1/charges/ch_1", "GET"),
    ];
    for (method, path, allowed) in cases {
        let resp = server
            .request(
                method.clone(),
                path,
                &[
                    ("content-type", b"application/json"),
                    ("idempotency-key", b"route-2"),
                ],
                b"{}",
            )
            .await;
        assert_problem(&resp, 405, "method-not-allowed");
        let allow = resp
            .header("allow")
            .unwrap_or_default()
            .to_ascii_uppercase();
        assert!(
            allow.contains(allowed),
            "{method} {path}: Allow must name {allowed}, got {allow:?}"
        );
    }
    server.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answered_key_is_never_in_flight() {
    // Guards the order "release the claim, then answer": once a client holds the answer for a
    // key, the very next request with that key (same connection, sent at once) is a replay,
    // never 409 idempotency-key-in-flight. Several clients do this side by side so that the
    // server's threads are busy and a release that comes after the answer shows up.
    let server = Server::start().await;
    let ep = server.endpoint();
    bank_and_shop(&ep).await;
    const CLIENTS: usize = 8;
    const ROUNDS: usize = 250;
    let body = charge_body("bank", "shop", 1, "EUR");
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let ep = ep.with_client(crate::harness::new_client());
            let body = body.clone();
            tokio::spawn(async move {
                let mut failures = Vec::new();
                for round in 0..ROUNDS {
                    let k = format!("sequential-{c}-{round}");
                    let first = ep.post("/v1/charges", Some(&k), &body).await;
                    assert_created(&first);
                    let next = ep.post("/v1/charges", Some(&k), &body).await;
                    if next.status == 409 {
                        failures.push(format!("key {k}: {next}"));
                        continue;
                    }
                    assert_replay_of(&next, &first);
                }
                failures
            })
        })
        .collect();
    let mut failures = Vec::new();
    for task in tasks {
        failures.extend(task.await.expect("a client task panicked"));
    }
    assert!(
        failures.is_empty(),
        "{} of {} immediate repeats of an answered key got 409; first: {}",
        failures.len(),
        CLIENTS * ROUNDS,
        failures[0]
    );
    assert_eq!(balance(&ep, "shop").await, (CLIENTS * ROUNDS) as i64);
    server.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_is_forgotten_once_its_retention_has_passed() {
    // Guards the retention sweep's wiring (the writer sweeps every 10 s): with a retention of one
    // second a finished key is replayed at first, and once a sweep deleted it, the same request
    // runs as a new one. Polled with a bound, so the test waits for the sweep, never a guess.
    let server = Server::start_with(&["--idempotency-retention", "1s"]).await;
    let ep = server.endpoint();
    bank_and_shop(&ep).await;
    let body = charge_body("bank", "shop", 5, "EUR");
    let first = ep
        .post("/v1/charges", Some("kept-for-a-second"), &body)
        .await;
    assert_created(&first);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let again = loop {
        let resp = ep
            .post("/v1/charges", Some("kept-for-a-second"), &body)
            .await;
        if !resp.replayed() {
            break resp;
        }
        assert_replay_of(&resp, &first);
        assert!(
            std::time::Instant::now() < deadline,
            "the key was still replayed 30 s after a retention of 1 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    };
    assert_created(&again);
    assert_ne!(again.json()["id"], first.json()["id"], "a second charge");
    assert_eq!(balance(&ep, "shop").await, 10);
    server.check().await;
}
