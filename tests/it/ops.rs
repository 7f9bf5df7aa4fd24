//! Operations: request ids, problem bodies, health, metrics and the OpenAPI document.

use std::process::Command;

use hyper::Method;
use serde_json::Value;

use crate::harness::{
    BIN, CHECK_DEADLINE, Resp, Server, account_body, assert_problem, charge_body, create_account,
    key, metric, metrics, run_bounded,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_carries_a_request_id() {
    // Guards X-Request-Id on every kind of answer, the echo of a valid client id, and the
    // replacement of an invalid one.
    let server = Server::start().await;
    let ep = server.endpoint();
    create_account(&ep, "bank", "EUR", None).await;
    create_account(&ep, "shop", "EUR", Some(0)).await;
    let body = charge_body("bank", "shop", 1, "EUR");

    let mut answers: Vec<(&str, Resp)> = vec![
        ("healthz", ep.get("/healthz").await),
        ("readyz", ep.get("/readyz").await),
        ("metrics", ep.get("/metrics").await),
        ("openapi", ep.get("/openapi.json").await),
        ("201", ep.post("/v1/charges", Some("rid"), &body).await),
        ("replay", ep.post("/v1/charges", Some("rid"), &body).await),
        ("400", ep.post("/v1/charges", Some("rid2"), "{").await),
        ("400 missing key", ep.post("/v1/charges", None, &body).await),
        ("404 route", ep.get("/nope").await),
        ("404 account", ep.get("/v1/accounts/nobody").await),
        (
            "405",
            ep.request(Method::DELETE, "/v1/charges", &[], b"").await,
        ),
        (
            "415",
            ep.post_raw(
                "/v1/charges",
                &[
                    ("content-type", b"text/plain"),
                    ("idempotency-key", b"rid3"),
                ],
                body.as_bytes(),
            )
            .await,
        ),
    ];
    answers.push((
        "413",
        ep.post("/v1/charges", Some("rid4"), &" ".repeat(70_000))
            .await,
    ));
    let mut seen = std::collections::HashSet::new();
    for (label, resp) in &answers {
        let id = resp
            .header("x-request-id")
            .unwrap_or_else(|| panic!("{label}: no X-Request-Id: {resp}"));
        assert!(!id.is_empty(), "{label}: empty X-Request-Id");
        assert!(
            seen.insert(id.to_owned()),
            "{label}: X-Request-Id {id} repeated"
        );
    }

    let mine = "client-chosen-id-42";
    let resp = ep
        .request(
            Method::GET,
            "/healthz",
            &[("x-request-id", mine.as_bytes())],
            b"",
        )
        .await;
    assert_eq!(
        resp.header("x-request-id"),
        Some(mine),
        "a valid client id is echoed"
    );
    let resp = ep
        .post_raw(
            "/v1/accounts",
            &[
                ("content-type", b"application/json"),
                ("idempotency-key", b"rid5"),
                ("x-request-id", mine.as_bytes()),
            ],
            b"{",
        )
        .await;
    assert_eq!(
        resp.header("x-request-id"),
        Some(mine),
        "echoed on errors too"
    );
    let too_long = "r".repeat(129);
    let resp = ep
        .request(
            Method::GET,
            "/healthz",
            &[("x-request-id", too_long.as_bytes())],
            b"",
        )
        .await;
    let id = resp.header("x-request-id").unwrap_or_default();
    assert!(
        !id.is_empty() && id != too_long,
        "an invalid client id is replaced by a new one, got {id:?}"
    );
    server.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_problem_json_without_internals() {
    // Guards RFC 9457 bodies: application/problem+json with type/title/status/detail, status
    // equal to the HTTP status, and no stack traces, source paths or data paths in them.
    let server = Server::start().await;
    let ep = server.endpoint();
    let data_dir = server.data_dir().display().to_string();
    create_account(&ep, "bank", "EUR", None).await;
    let cases: Vec<(u16, &str, Resp)> = vec![
        (
            400,
            "invalid-request",
            ep.post("/v1/accounts", Some(&key("p")), "{\"id\":").await,
        ),
        (
            400,
            "invalid-request",
            ep.post("/v1/accounts", Some(&key("p")), "\u{0}\u{1}garbage\u{ff}")
                .await,
        ),
        (
            400,
            "idempotency-key-missing",
            ep.post("/v1/accounts", None, &account_body("x", "EUR", None))
                .await,
        ),
        (
            404,
            "account-not-found",
            ep.get("/v1/accounts/nobody").await,
        ),
        (404, "charge-not-found", ep.get("/v1/charges/nothing").await),
        (404, "not-found", ep.get("/secret/../../etc/passwd").await),
        (
            404,
            "account-not-found",
            ep.post(
                "/v1/charges",
                Some(&key("p")),
                &charge_body("bank", "nobody", 1, "EUR"),
            )
            .await,
        ),
    ];
    for (status, kind, resp) in &cases {
        assert_problem(resp, *status, kind);
        let text = resp.text();
        for leak in [
            "panicked",
            ".rs:",
            "src/",
            "RUST_BACKTRACE",
            "redb",
            &data_dir,
        ] {
            assert!(
                !text.contains(leak),
                "a problem body must not carry internals ({leak:?}): {resp}"
            );
        }
    }
    server.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness() {
    // Guards /healthz and /readyz: 200 once the server listens with its store open.
    let server = Server::start().await;
    let ep = server.endpoint();
    assert!(
        server.base().starts_with("http://127.0.0.1:"),
        "loopback only: {}",
        server.base()
    );
    for path in ["/healthz", "/readyz"] {
        let resp = ep.get(path).await;
        assert_eq!(resp.status, 200, "GET {path}: {resp}");
    }
    server.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_outcomes_and_charges() {
    // Guards the on-call metrics: each idempotency outcome moves its own counter by exactly one,
    // and onceledger_charges_applied_total counts succeeded charges only (not replays or
    // declines).
    let server = Server::start().await;
    let ep = server.endpoint();
    create_account(&ep, "bank", "EUR", None).await;
    create_account(&ep, "poor", "EUR", Some(0)).await;
    create_account(&ep, "shop", "EUR", Some(0)).await;

    const REQS: &str = "onceledger_idempotency_requests_total";
    const APPLIED: &str = "onceledger_charges_applied_total";
    let outcomes = ["new", "replayed", "mismatch", "missing", "invalid"];
    let read = |text: &str| {
        let mut v: Vec<f64> = outcomes
            .iter()
            .map(|o| metric(text, REQS, &[("outcome", o)]))
            .collect();
        v.push(metric(text, APPLIED, &[]));
        v
    };
    let before = read(&metrics(&ep).await);

    let body = charge_body("bank", "shop", 10, "EUR");
    assert_eq!(ep.post("/v1/charges", Some("m-1"), &body).await.status, 201);
    let replay = ep.post("/v1/charges", Some("m-1"), &body).await;
    assert!(replay.replayed(), "{replay}");
    let mismatch = ep
        .post(
            "/v1/charges",
            Some("m-1"),
            &charge_body("bank", "shop", 11, "EUR"),
        )
        .await;
    assert_eq!(mismatch.status, 422, "{mismatch}");
    assert_eq!(ep.post("/v1/charges", None, &body).await.status, 400);
    assert_eq!(ep.post("/v1/charges", Some(""), &body).await.status, 400);
    // A decline is a "new" request but applies no charge.
    let declined = ep
        .post(
            "/v1/charges",
            Some("m-2"),
            &charge_body("poor", "shop", 10, "EUR"),
        )
        .await;
    assert_eq!(declined.status, 402, "{declined}");

    let text = metrics(&ep).await;
    for name in [REQS, APPLIED] {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "/metrics must expose {name}:\n{text}"
        );
    }
    let after = read(&text);
    let delta: Vec<f64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    assert_eq!(
        delta,
        [2.0, 1.0, 1.0, 1.0, 1.0, 1.0],
        "deltas of outcome new, replayed, mismatch, missing, invalid, and charges applied;\n\
         before {before:?}\nafter {after:?}\n{text}"
    );
    server.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_documents_the_api() {
    // Guards /openapi.json: an OpenAPI 3.1 JSON document naming every public path with the
    // methods the server answers.
    let server = Server::start().await;
    let ep = server.endpoint();
    let resp = ep.get("/openapi.json").await;
    assert_eq!(resp.status, 200, "{resp}");
    let content_type = resp.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("application/json")
            || content_type.starts_with("application/vnd.oai.openapi+json"),
        "content-type {content_type:?}"
    );
    let doc = resp.json();
    let version = doc["openapi"].as_str().unwrap_or_default();
    assert!(
        version.starts_with("3.1."),
        "openapi must be 3.1.x, got {version:?}"
    );
    let paths = doc["paths"]
        .as_object()
        .unwrap_or_else(|| panic!("no paths object: {doc}"));
    for (path, method) in [
        ("/v1/accounts", "post"),
        ("/v1/accounts/{id}", "get"),
        ("/v1/charges", "post"),
        ("/v1/charges/{id}", "get"),
        ("/v1/events", "get"),
        ("/v1/replication/events", "post"),
        ("/v1/dead-letters", "get"),
        ("/v1/dead-letters/{id}/redrive", "post"),
        ("/v1/replication/origins", "get"),
        ("/v1/replication/origins/{node}/inbox", "get"),
        ("/v1/replication/origins/{node}/accounts/{id}", "get"),
    ] {
        let item = paths
            .get(path)
            .unwrap_or_else(|| panic!("openapi lacks path {path}: {:?}", paths.keys()));
        assert!(
            item.get(method).is_some_and(Value::is_object),
            "openapi path {path} lacks {method}: {item}"
        );
    }
    server.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_describes_every_flag() {
    // Guards the command line that scripts rely on: `--help` names the subcommands and
    // `serve --help` every serve flag with its environment variable.
    let top = run_bounded(Command::new(BIN).arg("--help"), CHECK_DEADLINE).await;
    assert!(top.status.success(), "onceledger --help: {}", top.stderr);
    for word in ["serve", "check"] {
        assert!(
            top.stdout.contains(word),
            "--help lacks {word}:\n{}",
            top.stdout
        );
    }
    let serve = run_bounded(Command::new(BIN).args(["serve", "--help"]), CHECK_DEADLINE).await;
    assert!(
        serve.status.success(),
        "onceledger serve --help: {}",
        serve.stderr
    );
    for flag in [
        "--listen",
        "--data-dir",
        "--idempotency-retention",
        "--batch-commands-max",
        "--commit-queue-max",
        "--node-id",
        "--upstream",
        "--replicate-rate",
        "--replicate-batch-max",
        "--replicate-backoff-max",
        "--dead-letter-after",
        "--outbox-retention",
        "ONCELEDGER_LISTEN",
        "ONCELEDGER_DATA_DIR",
    ] {
        assert!(
            serve.stdout.contains(flag),
            "serve --help lacks {flag}:\n{}",
            serve.stdout
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_and_data_dir_come_from_the_environment() {
    // Guards ONCELEDGER_LISTEN and ONCELEDGER_DATA_DIR: without flags the server listens where
    // the variable says and keeps its data where the other says (it survives a restart).
    let mut server = Server::start_by_env().await;
    let ep = server.endpoint();
    create_account(&ep, "env", "EUR", Some(0)).await;
    server.restart().await;
    let got = server.get("/v1/accounts/env").await;
    assert_eq!(
        got.status, 200,
        "the account lives in ONCELEDGER_DATA_DIR: {got}"
    );
    assert!(
        server.data_dir().exists(),
        "the data directory {} was created",
        server.data_dir().display()
    );
    server.check().await;
}
