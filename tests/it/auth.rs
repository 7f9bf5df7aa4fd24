//! Issue 8: tenants, tokens, roles, TLS and hardening. Nobody gets in where they don't belong:
//! every `/v1` route needs a token, roles are held to the matrix of docs/CONTRACT-NOTES.md, one
//! tenant never sees another's accounts, charges, keys, events or replicated mirrors, a revoked
//! token is refused at once, slow clients are cut off, TLS works end to end, and no token ever
//! reaches the log.

use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{
    BIN, CHECK_DEADLINE, Endpoint, REQUEST_DEADLINE, Resp, Server, account_body, assert_problem,
    charge_body, create_account, fresh_connection_client, key, run_bounded,
};

/// Every `/v1` route: method, path and a body the route would accept.
const V1_ROUTES: &[(&str, &str, &str)] = &[
    ("POST", "/v1/accounts", r#"{"id":"a","currency":"EUR"}"#),
    ("GET", "/v1/accounts/a", ""),
    (
        "POST",
        "/v1/charges",
        r#"{"source":"a","destination":"b","amount":1,"currency":"EUR"}"#,
    ),
    ("GET", "/v1/charges/ch_0000000000000001", ""),
    ("GET", "/v1/events", ""),
    ("GET", "/v1/dead-letters", ""),
    ("POST", "/v1/dead-letters/1/redrive", ""),
    ("GET", "/v1/replication/origins", ""),
    ("GET", "/v1/replication/origins/n1/inbox", ""),
    ("GET", "/v1/replication/origins/n1/accounts/a", ""),
    ("POST", "/v1/replication/events", r#"{"version":1}"#),
    ("GET", "/v1/tenants", ""),
    ("POST", "/v1/tenants", r#"{"name":"t"}"#),
    ("GET", "/v1/tokens", ""),
    (
        "POST",
        "/v1/tokens",
        r#"{"tenant":"default","role":"client"}"#,
    ),
    ("POST", "/v1/tokens/1/revoke", ""),
    ("GET", "/v1/no-such-route", ""),
];

async fn send(ep: &Endpoint, method: &str, path: &str, body: &str) -> Resp {
    let method = Method::from_bytes(method.as_bytes()).expect("method");
    let idempotency_key = key("auth");
    let headers: Vec<(&str, &[u8])> = vec![
        ("content-type", b"application/json"),
        ("idempotency-key", idempotency_key.as_bytes()),
    ];
    ep.request(method, path, &headers, body.as_bytes()).await
}

/// A self-signed certificate for 127.0.0.1 and localhost, made with rcgen, written as PEM into
/// `dir`: the certificate's path, and the `--tls-cert` and `--tls-key` arguments.
fn certificate_in(dir: &std::path::Path) -> (std::path::PathBuf, String, String) {
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("a certificate");
    let (cert, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).expect("write cert");
    std::fs::write(&key_file, made.signing_key.serialize_pem()).expect("write key");
    let (cert_arg, key_arg) = (cert.display().to_string(), key_file.display().to_string());
    (cert, cert_arg, key_arg)
}

async fn token_for(admin: &Endpoint, tenant: &str, role: &str) -> String {
    crate::harness::make_token(admin, tenant, role).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_v1_endpoint_without_a_valid_token_is_401_and_the_probes_stay_open() {
    // Guards the boundary: no token, a malformed one and a well-formed unknown one are all 401
    // unauthorized with a Bearer challenge, on every route (an unknown one too: no route
    // discovery), before any body is looked at; /healthz, /readyz, /openapi.json and /metrics
    // need none.
    let server = Server::start().await;
    let admin = server.endpoint();
    let unknown = format!("olt_{}", "0".repeat(64));
    for (presented, error) in [
        (None, false),
        (Some("not-a-token"), true),
        (Some(unknown.as_str()), true),
    ] {
        let ep = admin.with_token(presented);
        for (method, path, body) in V1_ROUTES {
            let resp = send(&ep, method, path, body).await;
            assert_problem(&resp, 401, "unauthorized");
            let challenge = resp.header("www-authenticate").unwrap_or_default();
            assert!(
                challenge.starts_with("Bearer realm="),
                "{method} {path}: {resp}"
            );
            assert_eq!(
                challenge.contains(r#"error="invalid_token""#),
                error,
                "{method} {path}: {resp}"
            );
        }
    }
    let anonymous = admin.with_token(None);
    for path in ["/healthz", "/readyz", "/openapi.json", "/metrics"] {
        assert_eq!(anonymous.get(path).await.status, 200, "{path}");
    }
    // Nothing of the refused requests took effect.
    assert_eq!(admin.get("/v1/accounts/a").await.status, 404);
    let tenants = admin.get("/v1/tenants").await.json();
    assert_eq!(
        tenants["tenants"].as_array().map(Vec::len),
        Some(1),
        "{tenants}"
    );
    server.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_are_held_to_the_matrix() {
    // Guards the role matrix: a client token may use accounts, charges and events of its tenant
    // and nothing else (403 forbidden); a replicator token only POST /v1/replication/events; with
    // --metrics-auth, /metrics needs an admin token.
    let server = Server::start_with(&["--metrics-auth"]).await;
    let admin = server.endpoint();
    let client = admin.with_token(Some(&token_for(&admin, "acme", "client").await));
    let replicator = admin.with_token(Some(&token_for(&admin, "acme", "replicator").await));
    let client_may = ["/v1/accounts", "/v1/charges", "/v1/events"];
    for (method, path, body) in V1_ROUTES {
        let as_client = send(&client, method, path, body).await;
        let allowed = client_may
            .iter()
            .any(|p| *path == *p || path.starts_with(&format!("{p}/")))
            || *path == "/v1/no-such-route";
        if allowed {
            assert!(
                as_client.status != 401 && as_client.status != 403,
                "client {method} {path}: {as_client}"
            );
        } else {
            assert_problem(&as_client, 403, "forbidden");
        }
        let as_replicator = send(&replicator, method, path, body).await;
        if *path == "/v1/replication/events" {
            // Allowed: the body is refused for what it is (400), not for who sent it.
            assert_problem(&as_replicator, 400, "invalid-request");
        } else {
            assert_problem(&as_replicator, 403, "forbidden");
        }
    }
    assert_problem(
        &admin.with_token(None).get("/metrics").await,
        401,
        "unauthorized",
    );
    assert_problem(&client.get("/metrics").await, 403, "forbidden");
    assert_eq!(admin.get("/metrics").await.status, 200);
    assert_eq!(client.with_token(None).get("/healthz").await.status, 200);
    // An admin token exists only in the operator's tenant.
    let refused = admin
        .post(
            "/v1/tokens",
            Some(&key("t")),
            r#"{"tenant":"acme","role":"admin"}"#,
        )
        .await;
    assert_problem(&refused, 400, "invalid-request");
    server.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_isolated_on_every_resource() {
    // Guards tenant isolation: two tenants use the same account ids and the same idempotency keys
    // and stay independent; neither can read, charge from or even learn of the other's accounts,
    // charges and events (another tenant's charge is a plain 404), and replicated events from two
    // tenants' nodes of the same name land in separate inboxes and mirrors. The operator's event
    // listing sees both; `onceledger check` recomputes each tenant's balances from its postings.
    let server = Server::start().await;
    let admin = server.endpoint();
    let a = admin.with_token(Some(&token_for(&admin, "tenant-a", "client").await));
    let b = admin.with_token(Some(&token_for(&admin, "tenant-b", "client").await));

    // The same ids and keys in both tenants: each runs once, in its own tenant.
    for (ep, currency) in [(&a, "EUR"), (&b, "USD")] {
        for (id, limit) in [("bank", None), ("alice", Some(0))] {
            let body = account_body(id, currency, limit);
            let resp = ep
                .post("/v1/accounts", Some(&format!("open-{id}")), &body)
                .await;
            assert_eq!(resp.status, 201, "{resp}");
            assert!(
                !resp.replayed(),
                "a key of another tenant is not a replay: {resp}"
            );
        }
    }
    let charge_a = a
        .post(
            "/v1/charges",
            Some("pay-1"),
            &charge_body("bank", "alice", 700, "EUR"),
        )
        .await;
    assert_eq!(charge_a.status, 201, "{charge_a}");
    let charge_a = charge_a.json();
    // B's same key with B's own body runs in B; it is neither a replay nor a 422.
    let charge_b = b
        .post(
            "/v1/charges",
            Some("pay-1"),
            &charge_body("bank", "alice", 30, "USD"),
        )
        .await;
    assert_eq!(charge_b.status, 201, "{charge_b}");
    assert!(!charge_b.replayed());
    // B replaying A's exact request is B's own new request: A's account is not B's (currency).
    let cross = b
        .post(
            "/v1/charges",
            Some("pay-2"),
            &charge_body("bank", "alice", 700, "EUR"),
        )
        .await;
    assert_problem(&cross, 400, "currency-mismatch");

    assert_eq!(a.get("/v1/accounts/alice").await.json()["balance"], 700);
    assert_eq!(b.get("/v1/accounts/alice").await.json()["balance"], 30);
    assert_eq!(b.get("/v1/accounts/alice").await.json()["currency"], "USD");
    // Another tenant's charge is answered like one that does not exist.
    let id = charge_a["id"].as_str().expect("charge id");
    assert_eq!(a.get(&format!("/v1/charges/{id}")).await.status, 200);
    assert_problem(
        &b.get(&format!("/v1/charges/{id}")).await,
        404,
        "charge-not-found",
    );
    // The operator's own tenant does not see them either.
    assert_problem(
        &admin.get("/v1/accounts/alice").await,
        404,
        "account-not-found",
    );
    assert_problem(
        &admin.get(&format!("/v1/charges/{id}")).await,
        404,
        "charge-not-found",
    );

    // Events: each tenant sees its own three (two accounts, one charge), in seq order; the
    // operator sees all six.
    let seqs = |page: Value| -> Vec<u64> {
        page["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| e["seq"].as_u64().expect("seq"))
            .collect()
    };
    let events_a = seqs(a.get("/v1/events?limit=1000").await.json());
    let events_b = seqs(b.get("/v1/events?limit=1000").await.json());
    assert_eq!(
        (events_a.len(), events_b.len()),
        (3, 3),
        "{events_a:?} {events_b:?}"
    );
    assert!(events_a.iter().all(|s| !events_b.contains(s)));
    assert!(events_a.windows(2).all(|w| w[0] < w[1]));
    let page_b = b.get("/v1/events?limit=1000").await.text();
    assert!(
        !page_b.contains("EUR"),
        "B's events show nothing of A's: {page_b}"
    );
    assert_eq!(
        seqs(admin.get("/v1/events?limit=1000").await.json()).len(),
        6
    );
    // Paging within a tenant: `after` skips to the tenant's next event.
    let after_first = seqs(
        a.get(&format!("/v1/events?after={}", events_a[0]))
            .await
            .json(),
    );
    assert_eq!(after_first, events_a[1..].to_vec());

    // Replication: two tenants' nodes named alike stay apart on the hub.
    let replicator_a = admin.with_token(Some(&token_for(&admin, "tenant-a", "replicator").await));
    let replicator_b = admin.with_token(Some(&token_for(&admin, "tenant-b", "replicator").await));
    let batch = |currency: &str| {
        let currency: Vec<u8> = currency.bytes().collect();
        json!({"version": 1, "origin": "till-1", "events": [
            {"seq": 1, "created_at_ms": 1, "body": {"account_created": {
                "id": "x", "currency": currency, "overdraft_limit": null,
                "debits_posted": 0, "credits_posted": 0, "debits_pending": 0, "credits_pending": 0,
                "created_at_ms": 1}}}]})
        .to_string()
    };
    for (ep, currency) in [(&replicator_a, "EUR"), (&replicator_b, "USD")] {
        let resp = ep
            .post_raw(
                "/v1/replication/events",
                &[("content-type", b"application/json")],
                batch(currency).as_bytes(),
            )
            .await;
        assert_eq!(resp.status, 200, "{resp}");
        assert_eq!(
            (
                resp.json()["applied"].clone(),
                resp.json()["duplicates"].clone()
            ),
            (json!(1), json!(0)),
            "the other tenant's till-1 is another node: {resp}"
        );
    }
    let origins = admin.get("/v1/replication/origins").await.json();
    let nodes: Vec<&str> = origins["origins"]
        .as_array()
        .expect("origins")
        .iter()
        .filter_map(|o| o["node"].as_str())
        .collect();
    assert_eq!(nodes.len(), 2, "{origins}");
    let mut currencies = Vec::new();
    for node in &nodes {
        let mirror = admin
            .get(&format!("/v1/replication/origins/{node}/accounts/x"))
            .await;
        assert_eq!(mirror.status, 200, "{mirror}");
        currencies.push(
            mirror.json()["currency"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    currencies.sort();
    assert_eq!(currencies, ["EUR", "USD"]);
    assert_problem(&a.get("/v1/replication/origins").await, 403, "forbidden");
    server.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_refused_at_once_and_the_cli_manages_a_stopped_node() {
    // Guards revocation and the data-directory commands: a token revoked through the admin
    // endpoint is refused by the very next request; the CLI cannot open a running server's store
    // (redb's lock) and says to use the endpoint; on a stopped node it creates tenants and tokens
    // (shown once, listed by prefix only) and revokes them, and a restart honours all of it.
    let mut server = Server::start().await;
    let admin = server.endpoint();
    let token = token_for(&admin, "acme", "client").await;
    let client = admin.with_token(Some(&token));
    assert_eq!(client.get("/v1/events").await.status, 200);
    let listed = admin.get("/v1/tokens").await;
    assert!(
        !listed.text().contains(&token),
        "a listing never shows a token: {listed}"
    );
    let id = listed.json()["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .find(|t| t["tenant"] == "acme")
        .and_then(|t| t["id"].as_u64())
        .expect("the acme token is listed");
    let revoked = admin
        .post(&format!("/v1/tokens/{id}/revoke"), Some(&key("revoke")), "")
        .await;
    assert_eq!(revoked.status, 200, "{revoked}");
    assert!(revoked.json()["revoked_at"].is_string(), "{revoked}");
    assert_problem(&client.get("/v1/events").await, 401, "unauthorized");

    let dir = server.data_dir().to_path_buf();
    let cli = |args: &[&str]| {
        let mut command = std::process::Command::new(BIN);
        command
            .env_remove("ONCELEDGER_DATA_DIR")
            .args(args)
            .arg("--data-dir")
            .arg(&dir);
        command
    };
    let locked = run_bounded(&mut cli(&["token", "list"]), CHECK_DEADLINE).await;
    assert!(
        !locked.status.success(),
        "the store of a running server is locked"
    );
    assert!(
        locked.stderr.contains("admin endpoints"),
        "{}",
        locked.stderr
    );

    server.terminate().await;
    let made = run_bounded(&mut cli(&["tenant", "create", "shop-2"]), CHECK_DEADLINE).await;
    assert!(made.status.success(), "{}", made.stderr);
    let made = run_bounded(
        &mut cli(&["token", "create", "--tenant", "shop-2", "--role", "client"]),
        CHECK_DEADLINE,
    )
    .await;
    assert!(made.status.success(), "{}", made.stderr);
    let cli_token = made.stdout.trim().to_owned();
    assert!(
        cli_token.starts_with("olt_") && cli_token.len() == 68,
        "{cli_token:?}"
    );
    let listing = run_bounded(&mut cli(&["token", "list"]), CHECK_DEADLINE).await;
    assert!(listing.status.success(), "{}", listing.stderr);
    assert!(!listing.stdout.contains(&cli_token) && !listing.stdout.contains(&token));
    assert!(
        listing.stdout.contains(&cli_token[..12]),
        "the prefix is listed: {}",
        listing.stdout
    );

    server.restart().await;
    let admin = server.endpoint();
    let shop = admin.with_token(Some(&cli_token));
    create_account(&shop, "till", "EUR", None).await;
    assert_problem(
        &admin.with_token(Some(&token)).get("/v1/events").await,
        401,
        "unauthorized",
    );
    server.terminate().await;
    let cli_id = serde_json::from_str::<Value>(listing.stdout.trim()).expect("json")["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .find(|t| t["tenant"] == "shop-2")
        .and_then(|t| t["id"].as_u64())
        .expect("listed");
    let gone = run_bounded(
        &mut cli(&["token", "revoke", &cli_id.to_string()]),
        CHECK_DEADLINE,
    )
    .await;
    assert!(gone.status.success(), "{}", gone.stderr);
    server.restart().await;
    let shop = server.endpoint().with_token(Some(&cli_token));
    assert_problem(&shop.get("/v1/accounts/till").await, 401, "unauthorized");
    server.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_start_writes_one_admin_token_file() {
    // Guards the out-of-the-box path: a fresh data directory gets admin.token, mode 0600, the
    // token alone on one line, printed once on stdout; a restart makes no new one.
    let mut server = Server::start().await;
    let path = server.data_dir().join("admin.token");
    let text = std::fs::read_to_string(&path).expect("admin.token");
    assert_eq!(text.lines().count(), 1, "{text:?}");
    assert!(text.ends_with('\n') && text.trim().len() == 68, "{text:?}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
    assert_eq!(server.endpoint().token(), Some(text.trim()));
    server.restart().await;
    assert_eq!(std::fs::read_to_string(&path).expect("admin.token"), text);
    let printed = server.log_tail().matches("admin token olt_").count();
    assert_eq!(
        printed,
        1,
        "printed once, at the first start:\n{}",
        server.log_tail()
    );
    server.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_over_its_rate_limit_gets_429_with_retry_after() {
    // Guards the per-token rate limit: beyond the burst a token is refused 429 rate-limited with
    // Retry-After, while another token is served.
    let server = Server::start_with(&["--rate-limit", "5"]).await;
    let admin = server.endpoint();
    let client = admin.with_token(Some(&token_for(&admin, "busy", "client").await));
    let mut limited = None;
    for _ in 0..30 {
        let resp = client.get("/v1/events").await;
        if resp.status == 429 {
            limited = Some(resp);
            break;
        }
    }
    let limited = limited.expect("30 requests at once exceed 5 per second");
    assert_problem(&limited, 429, "rate-limited");
    let wait: u64 = limited
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((1..=2).contains(&wait), "{limited}");
    let quiet = admin.with_token(Some(&token_for(&admin, "quiet", "client").await));
    assert_eq!(quiet.get("/v1/events").await.status, 200);
    server.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_client_is_dropped_within_the_timeout_while_others_are_served() {
    // Guards the header read timeout (also the idle timeout): connections that trickle a header
    // a byte at a time, or send nothing, are closed within --header-read-timeout (1 s here, with
    // a bounded margin), while a normal client is served throughout.
    let server = Server::start_with(&["--header-read-timeout", "1s"]).await;
    let addr = server.addr();
    // A connection per request: a pooled one left idle past the 1 s timeout (a loaded machine
    // between two requests) is closed by the server as it should be, and reusing it would fail
    // the request for the wrong reason (seen in CI: IncompleteMessage).
    let ep = server.endpoint().with_client(fresh_connection_client());
    let started = Instant::now();
    let mut slow = Vec::new();
    for i in 0..4 {
        slow.push(tokio::spawn(async move {
            // Measured from before the connect: the server's timer cannot start earlier.
            let opened = Instant::now();
            let stream = TcpStream::connect(addr).await.expect("connect");
            let (mut reader, mut writer) = stream.into_split();
            let trickle = tokio::spawn(async move {
                if i % 2 == 1 {
                    // This one sends nothing at all (an idle connection).
                    return writer;
                }
                let head = b"GET /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
                for byte in head {
                    if writer.write_all(&[*byte]).await.is_err() {
                        break;
                    }
                    // The pace of the attack, not a synchronisation: one byte per 100 ms.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                writer
            });
            let mut buf = [0u8; 1024];
            let closed = tokio::time::timeout(REQUEST_DEADLINE, async {
                loop {
                    match reader.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
            })
            .await;
            let held = opened.elapsed();
            trickle.abort();
            assert!(closed.is_ok(), "a slow connection was never closed");
            held
        }));
    }
    // Others are served while the slow ones hang on.
    for _ in 0..5 {
        assert_eq!(ep.get("/v1/events").await.status, 200);
    }
    for task in slow {
        let held = task.await.expect("slow client task");
        assert!(
            held >= Duration::from_secs(1) && held < Duration::from_secs(4),
            "a slow connection held {held:?} with a 1 s header timeout"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(ep.get("/v1/events").await.status, 200);
    server.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_round_trip_with_a_certificate_made_in_the_test() {
    // Guards TLS: with --tls-cert/--tls-key (a certificate rcgen makes here for 127.0.0.1) the
    // server speaks HTTPS; the retrying client and the `account` command reach it through
    // https:// with the certificate as CA file; a plain-HTTP request gets no HTTP answer.
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, cert_arg, key_arg) = certificate_in(dir.path());
    let server = Server::start_with(&["--tls-cert", &cert_arg, "--tls-key", &key_arg]).await;
    let url = format!("https://127.0.0.1:{}", server.addr().port());
    let token = server.endpoint().token().expect("admin token").to_owned();

    let client = onceledger_client::Client::new(
        &url,
        onceledger_client::ClientConfig {
            token: Some(onceledger_server::auth::TokenSecret::presented(&token)),
            ca_file: Some(cert.clone()),
            ..onceledger_client::ClientConfig::default()
        },
    )
    .expect("client");
    let body = json!({"id": "tls-1", "currency": "EUR"});
    let first = client
        .send_json(
            onceledger_client::Operation::CreateAccount,
            "tls-key-1",
            &body,
        )
        .await
        .expect("an answer over TLS");
    assert_eq!(first.status, 201, "{:?}", first.body);
    let again = client
        .send_json(
            onceledger_client::Operation::CreateAccount,
            "tls-key-1",
            &body,
        )
        .await
        .expect("an answer over TLS");
    assert!(again.replayed && again.body == first.body);

    let command = run_bounded(
        std::process::Command::new(BIN)
            .env_remove("ONCELEDGER_TOKEN")
            .args(["account", "tls-2", "--currency", "EUR", "--url", &url])
            .args(["--token", &token, "--ca-file", &cert_arg]),
        REQUEST_DEADLINE,
    )
    .await;
    assert!(
        command.status.success(),
        "{}\n{}",
        command.stdout,
        command.stderr
    );
    // Without the CA the certificate is not trusted: the command gives up with no answer.
    let untrusted = run_bounded(
        std::process::Command::new(BIN)
            .env_remove("ONCELEDGER_TOKEN")
            .args(["account", "tls-3", "--currency", "EUR", "--url", &url])
            .args(["--token", &token, "--attempts", "1"]),
        REQUEST_DEADLINE,
    )
    .await;
    assert!(!untrusted.status.success(), "{}", untrusted.stdout);

    let plain = crate::harness::raw_exchange(
        server.addr(),
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(
        plain.status,
        None,
        "plain HTTP on the TLS port: {}",
        plain.text()
    );
    server.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_ever_appears_in_the_log() {
    // Guards secrecy: after tokens were made, used, refused, rate-limited and revoked, with the
    // log at debug level, no token (nor its random part) appears in the server's stderr.
    let server = Server::start_at(
        crate::harness::free_loopback_addr(),
        &["--rate-limit", "3"],
        &[("ONCELEDGER_LOG", "debug")],
    )
    .await;
    let admin = server.endpoint();
    let mut tokens = vec![admin.token().expect("admin").to_owned()];
    let client_token = token_for(&admin, "secretive", "client").await;
    tokens.push(client_token.clone());
    let client = admin.with_token(Some(&client_token));
    create_account(&client, "s1", "EUR", None).await;
    for _ in 0..5 {
        let _ = client.get("/v1/accounts/s1").await;
    }
    let wrong = format!("olt_{}", "ab".repeat(32));
    tokens.push(wrong.clone());
    let _ = admin.with_token(Some(&wrong)).get("/v1/events").await;
    let listed = admin.get("/v1/tokens").await.json();
    let id = listed["tokens"][1]["id"].as_u64().expect("id");
    let _ = admin
        .post(&format!("/v1/tokens/{id}/revoke"), Some(&key("r")), "")
        .await;
    let _ = client.get("/v1/events").await;
    let log = server.log_lines();
    assert!(!log.is_empty());
    for token in &tokens {
        for line in &log {
            assert!(
                !line.contains(token.as_str()) && !line.contains(&token[4..]),
                "a token reached the log: {line}"
            );
        }
    }
    server.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_replicates_over_tls_under_its_tenants_replicator_token() {
    // Guards replication end to end with issue 8 on: a TLS hub, a terminal that reaches it
    // through https:// with --upstream-ca and a replicator token of tenant `fleet-a`; the hub
    // files the terminal's events under that tenant (origin key `TENANT_ID:NODE`), and a revoked
    // replicator token stops the flow (401) without losing anything: a new token resumes it.
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, cert_arg, key_arg) = certificate_in(dir.path());
    let hub = Server::start_with(&["--tls-cert", &cert_arg, "--tls-key", &key_arg]).await;
    let hub_ep = hub.endpoint().over_tls(&cert);
    let token_file = dir.path().join("replicator.token");
    let token = token_for(&hub_ep, "fleet-a", "replicator").await;
    std::fs::write(&token_file, format!("{token}\n")).expect("write the token file");

    let url = format!("https://127.0.0.1:{}", hub.addr().port());
    let token_arg = token_file.display().to_string();
    let terminal = Server::start_with(&[
        "--upstream",
        &url,
        "--upstream-ca",
        &cert_arg,
        "--upstream-token-file",
        &token_arg,
        "--replicate-backoff-max",
        "300ms",
    ])
    .await;
    let ep = terminal.endpoint();
    create_account(&ep, "bank", "EUR", None).await;
    create_account(&ep, "shop", "EUR", Some(0)).await;
    let charged = ep
        .post(
            "/v1/charges",
            Some("r-1"),
            &charge_body("bank", "shop", 40, "EUR"),
        )
        .await;
    assert_eq!(charged.status, 201, "{charged}");
    let node = ep.get("/healthz").await.json()["node_id"]
        .as_str()
        .expect("node id")
        .to_owned();
    let tenants = hub_ep.get("/v1/tenants").await.json();
    let tenant_id = tenants["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .find(|t| t["name"] == "fleet-a")
        .and_then(|t| t["id"].as_u64())
        .expect("fleet-a");
    let origin = format!("{tenant_id}:{node}");
    let mirror_path = format!("/v1/replication/origins/{origin}/accounts/shop");
    let deadline = Duration::from_secs(60);
    crate::harness::eventually("the hub mirrors the charge", deadline, || async {
        let mirror = hub_ep.get(&mirror_path).await;
        (mirror.status == 200 && mirror.json()["balance"] == 40).then_some(())
    })
    .await;
    assert_problem(
        &hub_ep
            .get(&format!("/v1/replication/origins/{node}/accounts/shop"))
            .await,
        404,
        "account-not-found",
    );

    // Revoke the replicator token: the next deliveries are refused and nothing moves.
    let failures = |text: String| {
        crate::harness::metric(
            &text,
            "onceledger_replication_delivery_failures_total",
            &[("sink", "hub")],
        )
    };
    let failures_before = failures(crate::harness::metrics(&ep).await);
    let listed = hub_ep.get("/v1/tokens").await.json();
    let id = listed["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .find(|t| t["role"] == "replicator")
        .and_then(|t| t["id"].as_u64())
        .expect("listed");
    let revoked = hub_ep
        .post(&format!("/v1/tokens/{id}/revoke"), Some(&key("rev")), "")
        .await;
    assert_eq!(revoked.status, 200, "{revoked}");
    let again = ep
        .post(
            "/v1/charges",
            Some("r-2"),
            &charge_body("bank", "shop", 2, "EUR"),
        )
        .await;
    assert_eq!(again.status, 201, "{again}");
    crate::harness::eventually("the terminal sees the refusal", deadline, || async {
        (failures(crate::harness::metrics(&ep).await) > failures_before).then_some(())
    })
    .await;
    assert_eq!(hub_ep.get(&mirror_path).await.json()["balance"], 40);
    // A new token in the file: the terminal picks it up and catches up.
    let fresh = token_for(&hub_ep, "fleet-a", "replicator").await;
    std::fs::write(&token_file, format!("{fresh}\n")).expect("rewrite the token file");
    crate::harness::eventually("replication resumes", deadline, || async {
        (hub_ep.get(&mirror_path).await.json()["balance"] == 42).then_some(())
    })
    .await;
    terminal.check().await;
    hub.check().await;
}
