//! The payment lifecycle (API.md "Payment lifecycle", "Transfers"): authorizations hold, one of
//! capture, void or expiry ends each exactly once, refunds are capped at what was captured,
//! transfers post all legs or none; every decline is stored and replayed.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{
    Endpoint, Resp, Server, account, all_events, assert_created, assert_problem, assert_replay_of,
    create_account, eventually, key, make_token, metric, metrics,
};

/// An authorization's second lasts this long in the tests that watch expiry
/// (`ONCELEDGER_FAULT_AUTHORIZATION_SECOND_MS`): the shortest `expires_in`, 60, is then 0.6 s.
const SHORT_SECOND_MS: &str = "10";
const EXPIRY_DEADLINE: Duration = Duration::from_secs(20);

fn authorization_body(source: &str, destination: &str, amount: i64) -> String {
    json!({"source": source, "destination": destination, "amount": amount, "currency": "EUR",
           "capture": false})
    .to_string()
}

async fn authorize(ep: &Endpoint, source: &str, destination: &str, amount: i64) -> Value {
    let resp = ep
        .post(
            "/v1/charges",
            Some(&key("auth")),
            &authorization_body(source, destination, amount),
        )
        .await;
    let charge = assert_created(&resp);
    assert_eq!(charge["status"], "authorized", "{charge}");
    charge
}

fn id(value: &Value) -> String {
    value["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {value}"))
        .to_owned()
}

/// (debits_posted, credits_posted, debits_pending, credits_pending, available)
async fn totals(ep: &Endpoint, id: &str) -> (i64, i64, i64, i64, i64) {
    let a = account(ep, id).await;
    let n = |field: &str| {
        a[field]
            .as_i64()
            .unwrap_or_else(|| panic!("{field} of {a}"))
    };
    (
        n("debits_posted"),
        n("credits_posted"),
        n("debits_pending"),
        n("credits_pending"),
        n("available"),
    )
}

async fn event_types(ep: &Endpoint) -> Vec<String> {
    all_events(ep, 1000)
        .await
        .iter()
        .map(|e| e["type"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn capture(ep: &Endpoint, charge: &str, key: &str, body: &str) -> Resp {
    ep.post(&format!("/v1/charges/{charge}/capture"), Some(key), body)
        .await
}

async fn void(ep: &Endpoint, charge: &str, key: &str) -> Resp {
    ep.post(&format!("/v1/charges/{charge}/void"), Some(key), "{}")
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authorization_holds_and_its_capture_posts_once() {
    // Guards the authorization's rows of the contract: the hold counts against `available` and
    // the overdraft limit (402 stored), a partial capture posts part and releases the whole
    // hold, and every later capture or void of it is a stored 400 naming its state; a capture
    // above the hold is a stored 400; a void cancels; each state change is one event.
    let server = Server::start().await;
    let ep = server.endpoint();
    create_account(&ep, "alice", "EUR", Some(100)).await;
    create_account(&ep, "shop", "EUR", Some(0)).await;

    let held = authorize(&ep, "alice", "shop", 80).await;
    assert_eq!(held["amount_captured"], 0, "{held}");
    assert_eq!(held["refunded"], false, "{held}");
    assert!(held["expires_at"].is_string(), "{held}");
    assert_eq!(totals(&ep, "alice").await, (0, 0, 80, 0, -80));
    assert_eq!(totals(&ep, "shop").await, (0, 0, 0, 80, 0));

    // The hold counts: 80 held of a 100 limit leaves room for 20, not 30.
    let body = authorization_body("alice", "shop", 30);
    let over = ep.post("/v1/charges", Some("over"), &body).await;
    assert_problem(&over, 402, "insufficient-funds");
    assert_replay_of(&ep.post("/v1/charges", Some("over"), &body).await, &over);

    let charge = id(&held);
    let above = capture(&ep, &charge, "cap-above", r#"{"amount":81}"#).await;
    assert_problem(&above, 400, "capture-exceeds-authorization");
    assert_eq!(
        totals(&ep, "alice").await,
        (0, 0, 80, 0, -80),
        "nothing moved"
    );

    let captured = capture(&ep, &charge, "cap", r#"{"amount":50}"#).await;
    assert_eq!(captured.status, 200, "{captured}");
    let body = captured.json();
    assert_eq!(
        (&body["status"], &body["amount_captured"], &body["amount"]),
        (&json!("succeeded"), &json!(50), &json!(80)),
        "{body}"
    );
    assert_eq!(totals(&ep, "alice").await, (50, 0, 0, 0, -50));
    assert_eq!(totals(&ep, "shop").await, (0, 50, 0, 0, 50));
    assert_replay_of(
        &capture(&ep, &charge, "cap", r#"{"amount":50}"#).await,
        &captured,
    );
    let reused = capture(&ep, &charge, "cap", r#"{"amount":40}"#).await;
    assert_problem(&reused, 422, "idempotency-key-reused");

    let again = capture(&ep, &charge, "cap-2", "{}").await;
    assert_problem(&again, 400, "charge-state-invalid");
    assert!(
        again.json()["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("succeeded"),
        "{again}"
    );
    let late_void = void(&ep, &charge, "void-late").await;
    assert_problem(&late_void, 400, "charge-state-invalid");
    assert_replay_of(&void(&ep, &charge, "void-late").await, &late_void);

    let second = authorize(&ep, "alice", "shop", 20).await;
    let canceled = void(&ep, &id(&second), "void").await;
    assert_eq!(canceled.status, 200, "{canceled}");
    assert_eq!(canceled.json()["status"], "canceled");
    assert!(canceled.json().get("expires_at").is_none(), "{canceled}");
    let after_void = capture(&ep, &id(&second), "cap-after-void", "{}").await;
    assert_problem(&after_void, 400, "charge-state-invalid");
    assert_eq!(totals(&ep, "alice").await, (50, 0, 0, 0, -50));

    // Malformed lifecycle requests are the parser's 400s: not stored, the key stays free.
    let base = json!({"source":"alice","destination":"shop","amount":1,"currency":"EUR"});
    for (name, extra) in [
        ("short", json!({"capture": false, "expires_in": 59})),
        ("long", json!({"capture": false, "expires_in": 2_592_001})),
        ("immediate", json!({"expires_in": 3600})),
    ] {
        let mut body = base.clone();
        for (field, value) in extra.as_object().expect("an object") {
            body[field] = value.clone();
        }
        let refused = ep
            .post(
                "/v1/charges",
                Some(&format!("bad-{name}")),
                &body.to_string(),
            )
            .await;
        assert_problem(&refused, 400, "invalid-request");
        assert_created(
            &ep.post(
                "/v1/charges",
                Some(&format!("bad-{name}")),
                &authorization_body("alice", "shop", 1),
            )
            .await,
        );
    }
    assert_problem(
        &capture(&ep, &charge, "cap-zero", r#"{"amount":0}"#).await,
        400,
        "invalid-request",
    );
    assert_problem(
        &void(&ep, &charge, "void-body").await,
        400,
        "charge-state-invalid",
    );
    let with_body = ep
        .post(
            &format!("/v1/charges/{charge}/void"),
            Some("void-amount"),
            r#"{"amount":1}"#,
        )
        .await;
    assert_problem(&with_body, 400, "invalid-request");

    let unknown = capture(&ep, "ch_aaaaaaaaaaaaaaaaaaaaaaaaaa", "cap-ghost", "{}").await;
    assert_problem(&unknown, 404, "charge-not-found");
    let got = ep.get(&format!("/v1/charges/{charge}")).await;
    assert_eq!(got.json()["amount_captured"], 50, "{got}");

    let types = event_types(&ep).await;
    let lifecycle: Vec<&str> = types
        .iter()
        .map(String::as_str)
        .filter(|t| *t != "account.created")
        .collect();
    assert_eq!(
        lifecycle,
        [
            "charge.authorized",
            "charge.captured",
            "charge.authorized",
            "charge.canceled",
            // The three keys freed by the parser's refusals, used for valid authorizations.
            "charge.authorized",
            "charge.authorized",
            "charge.authorized"
        ]
    );
    let text = metrics(&ep).await;
    let operation = |name| {
        metric(
            &text,
            "onceledger_lifecycle_operations_total",
            &[("operation", name)],
        )
    };
    assert_eq!(
        (
            operation("authorized"),
            operation("captured"),
            operation("canceled")
        ),
        (5.0, 1.0, 1.0)
    );
    let summary = server.check().await;
    assert_eq!(summary["authorizations_open"], 3, "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunds_are_capped_at_what_was_captured() {
    // Guards refunds: partial and several, the default refunds what is left, more than that is a
    // stored 400, an authorization cannot be refunded, the destination's overdraft limit applies
    // (402), the charge's amount_refunded and refunded follow; another tenant sees none of it.
    let server = Server::start().await;
    let ep = server.endpoint();
    create_account(&ep, "alice", "EUR", None).await;
    create_account(&ep, "shop", "EUR", Some(0)).await;
    create_account(&ep, "bank", "EUR", None).await;

    let sale = ep
        .post(
            "/v1/charges",
            Some("sale"),
            &json!({"source":"alice","destination":"shop","amount":100,"currency":"EUR"})
                .to_string(),
        )
        .await;
    let charge = id(&assert_created(&sale));
    assert_eq!(sale.json()["amount_captured"], 100, "{sale}");
    let refund = |amount: Option<i64>| {
        let mut body = json!({"charge": charge});
        if let Some(amount) = amount {
            body["amount"] = json!(amount);
        }
        body.to_string()
    };
    let first = ep.post("/v1/refunds", Some("r1"), &refund(Some(30))).await;
    let first_body = assert_created(&first);
    assert_eq!(
        (
            &first_body["charge"],
            &first_body["amount"],
            &first_body["status"]
        ),
        (&json!(charge), &json!(30), &json!("succeeded"))
    );
    assert!(id(&first_body).starts_with("re_"), "{first_body}");
    let too_much = ep.post("/v1/refunds", Some("r2"), &refund(Some(71))).await;
    assert_problem(&too_much, 400, "refund-exceeds-charge");
    assert_replay_of(
        &ep.post("/v1/refunds", Some("r2"), &refund(Some(71))).await,
        &too_much,
    );

    // shop pays 60 of its 70 out: a refund of the remaining 70 would take it below 0.
    let payout =
        json!({"currency":"EUR","legs":[{"source":"shop","destination":"bank","amount":60}]});
    assert_created(
        &ep.post("/v1/transfers", Some("payout"), &payout.to_string())
            .await,
    );
    let no_funds = ep.post("/v1/refunds", Some("r3"), &refund(None)).await;
    assert_problem(&no_funds, 402, "insufficient-funds");
    let topup =
        json!({"currency":"EUR","legs":[{"source":"bank","destination":"shop","amount":60}]});
    assert_created(
        &ep.post("/v1/transfers", Some("topup"), &topup.to_string())
            .await,
    );
    let rest = ep.post("/v1/refunds", Some("r4"), &refund(None)).await;
    assert_eq!(assert_created(&rest)["amount"], 70, "{rest}");
    let nothing_left = ep.post("/v1/refunds", Some("r5"), &refund(Some(1))).await;
    assert_problem(&nothing_left, 400, "refund-exceeds-charge");

    let after = ep.get(&format!("/v1/charges/{charge}")).await.json();
    assert_eq!(
        (&after["amount_refunded"], &after["refunded"]),
        (&json!(100), &json!(true))
    );
    assert_eq!(totals(&ep, "alice").await, (100, 100, 0, 0, 0));
    // shop: 100 sold + 60 topped up in, 60 paid out + 100 refunded out.
    assert_eq!(totals(&ep, "shop").await, (160, 160, 0, 0, 0));
    let shown = ep.get(&format!("/v1/refunds/{}", id(&first_body))).await;
    assert_eq!(shown.status, 200, "{shown}");
    assert_eq!(shown.body, first.body, "GET shows the refund as created");

    let held = authorize(&ep, "alice", "shop", 5).await;
    let of_hold = json!({"charge": id(&held)}).to_string();
    let refused = ep.post("/v1/refunds", Some("r6"), &of_hold).await;
    assert_problem(&refused, 400, "charge-state-invalid");
    let ghost = ep
        .post(
            "/v1/refunds",
            Some("r7"),
            r#"{"charge":"ch_aaaaaaaaaaaaaaaaaaaaaaaaaa"}"#,
        )
        .await;
    assert_problem(&ghost, 404, "charge-not-found");
    assert_problem(
        &ep.get("/v1/refunds/re_aaaaaaaaaaaaaaaaaaaaaaaaaa").await,
        404,
        "refund-not-found",
    );

    // Another tenant can neither see nor refund this tenant's charge and refund.
    let other = ep.with_token(Some(&make_token(&ep, "acme", "client").await));
    assert_problem(
        &other.get(&format!("/v1/charges/{charge}")).await,
        404,
        "charge-not-found",
    );
    assert_problem(
        &other.get(&format!("/v1/refunds/{}", id(&first_body))).await,
        404,
        "refund-not-found",
    );
    let theirs = other
        .post("/v1/refunds", Some("r1"), &refund(Some(1)))
        .await;
    assert_problem(&theirs, 404, "charge-not-found");
    let summary = server.check().await;
    assert_eq!(
        (&summary["refunds"], &summary["transfers"]),
        (&json!(2), &json!(2))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_posts_every_leg_or_none() {
    // Guards transfers: each leg sees the balances the legs before it left (a chain through an
    // empty overdraft-0 account works), a decline names its leg, is stored, and moves nothing;
    // malformed transfers are 400s that store nothing.
    let server = Server::start().await;
    let ep = server.endpoint();
    create_account(&ep, "customer", "EUR", None).await;
    create_account(&ep, "merchant", "EUR", Some(0)).await;
    create_account(&ep, "platform", "EUR", Some(0)).await;
    create_account(&ep, "dollars", "USD", None).await;

    let sale = json!({"currency":"EUR","metadata":{"order":"A-17"},"legs":[
        {"source":"customer","destination":"merchant","amount":1000},
        {"source":"merchant","destination":"platform","amount":30}]});
    let made = ep
        .post("/v1/transfers", Some("sale"), &sale.to_string())
        .await;
    let transfer = assert_created(&made);
    assert!(id(&transfer).starts_with("tr_"), "{transfer}");
    assert_eq!(transfer["legs"].as_array().map(Vec::len), Some(2));
    assert_eq!(totals(&ep, "merchant").await, (30, 1000, 0, 0, 970));
    assert_eq!(totals(&ep, "platform").await, (0, 30, 0, 0, 30));
    let shown = ep.get(&format!("/v1/transfers/{}", id(&transfer))).await;
    assert_eq!(shown.body, made.body);

    // Leg 1 would take the platform below 0: nothing of leg 0 stays either.
    let short = json!({"currency":"EUR","legs":[
        {"source":"customer","destination":"merchant","amount":5},
        {"source":"platform","destination":"merchant","amount":31}]});
    let declined = ep
        .post("/v1/transfers", Some("short"), &short.to_string())
        .await;
    assert_problem(&declined, 402, "insufficient-funds");
    assert_eq!(declined.json()["leg"], 1, "{declined}");
    assert_replay_of(
        &ep.post("/v1/transfers", Some("short"), &short.to_string())
            .await,
        &declined,
    );
    assert_eq!(totals(&ep, "merchant").await, (30, 1000, 0, 0, 970));

    let mixed =
        json!({"currency":"EUR","legs":[{"source":"customer","destination":"dollars","amount":1}]});
    let mismatch = ep
        .post("/v1/transfers", Some("mixed"), &mixed.to_string())
        .await;
    assert_problem(&mismatch, 400, "currency-mismatch");
    assert_eq!(mismatch.json()["leg"], 0);
    let ghost =
        json!({"currency":"EUR","legs":[{"source":"customer","destination":"ghost","amount":1}]});
    assert_problem(
        &ep.post("/v1/transfers", Some("ghost"), &ghost.to_string())
            .await,
        404,
        "account-not-found",
    );

    let leg = json!({"source":"customer","destination":"merchant","amount":1});
    for (name, body) in [
        ("no legs", json!({"currency":"EUR","legs":[]})),
        (
            "17 legs",
            json!({"currency":"EUR","legs":vec![leg.clone(); 17]}),
        ),
        (
            "self",
            json!({"currency":"EUR","legs":[{"source":"customer","destination":"customer","amount":1}]}),
        ),
        (
            "zero",
            json!({"currency":"EUR","legs":[{"source":"customer","destination":"merchant","amount":0}]}),
        ),
        (
            "extra field",
            json!({"currency":"EUR","legs":[leg], "fee": 1}),
        ),
    ] {
        let refused = ep
            .post(
                "/v1/transfers",
                Some(&format!("bad-{}", name.replace(' ', "-"))),
                &body.to_string(),
            )
            .await;
        assert_problem(&refused, 400, "invalid-request");
        // Not stored: the key is still free for a valid body.
        let valid = json!({"currency":"EUR","legs":[leg]}).to_string();
        assert_created(
            &ep.post(
                "/v1/transfers",
                Some(&format!("bad-{}", name.replace(' ', "-"))),
                &valid,
            )
            .await,
        );
    }
    assert_problem(
        &ep.get("/v1/transfers/tr_aaaaaaaaaaaaaaaaaaaaaaaaaa").await,
        404,
        "transfer-not-found",
    );
    server.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorizations_expire_on_the_servers_clock_also_after_a_restart() {
    // Guards expiry: an authorization not captured by its expires_at is expired by the server
    // (event charge.expired, hold released), a capture after that is a stored 400 naming
    // `expired`; an authorization whose expiry passes while the node is down (SIGKILL) expires
    // after the restart. Seconds last 10 ms here (a test build's knob).
    let env = [("ONCELEDGER_FAULT_AUTHORIZATION_SECOND_MS", SHORT_SECOND_MS)];
    let mut server = Server::start_with_env(&[], &env).await;
    let ep = server.endpoint();
    create_account(&ep, "alice", "EUR", None).await;
    create_account(&ep, "shop", "EUR", Some(0)).await;
    let short = json!({"source":"alice","destination":"shop","amount":7,"currency":"EUR",
                       "capture": false, "expires_in": 60})
    .to_string();
    let held = assert_created(&ep.post("/v1/charges", Some("a1"), &short).await);
    let charge = id(&held);
    let expired = eventually("the authorization expires", EXPIRY_DEADLINE, || {
        let ep = ep.clone();
        let path = format!("/v1/charges/{charge}");
        async move {
            let got = ep.get(&path).await.json();
            (got["status"] == "expired").then_some(got)
        }
    })
    .await;
    assert_eq!(expired["amount_captured"], 0, "{expired}");
    assert_eq!(totals(&ep, "alice").await, (0, 0, 0, 0, 0));
    let late = capture(&ep, &charge, "late", "{}").await;
    assert_problem(&late, 400, "charge-state-invalid");
    assert!(late.text().contains("expired"), "{late}");

    // Down while it expires: the writer expires it after the restart.
    let held = assert_created(&ep.post("/v1/charges", Some("a2"), &short).await);
    let charge = id(&held);
    server.kill_hard().await;
    server.restart().await;
    let ep = server.endpoint();
    eventually(
        "the authorization expires after the restart",
        EXPIRY_DEADLINE,
        || {
            let ep = ep.clone();
            let path = format!("/v1/charges/{charge}");
            async move { (ep.get(&path).await.json()["status"] == "expired").then_some(()) }
        },
    )
    .await;
    assert_eq!(totals(&ep, "shop").await, (0, 0, 0, 0, 0));
    let types = event_types(&ep).await;
    assert_eq!(
        types.iter().filter(|t| *t == "charge.expired").count(),
        2,
        "{types:?}"
    );
    let summary = server.check().await;
    assert_eq!(summary["authorizations_open"], 0, "{summary}");
}

/// One authorization's race: its capture and its void sent at once, on their own connections.
struct Race {
    charge: String,
    capture: Resp,
    void: Resp,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_void_and_expiry_race_to_exactly_one_winner() {
    // Guards "exactly one terminal state": 120 authorizations of 60 "seconds" (120 ms here)
    // each get a capture and a void at the same instant from two connections (sent in turns
    // first), while the server's expiry sweeps the older ones; every authorization ends captured, canceled or
    // expired (a mix of all three), the losers get stored answers naming the winner's state,
    // and the accounts hold exactly the captured total.
    const ROUNDS: usize = 120;
    let env = [("ONCELEDGER_FAULT_AUTHORIZATION_SECOND_MS", "2")];
    let server = Server::start_with_env(&[], &env).await;
    let ep = server.endpoint();
    create_account(&ep, "alice", "EUR", None).await;
    create_account(&ep, "shop", "EUR", Some(0)).await;
    let body = json!({"source":"alice","destination":"shop","amount":10,"currency":"EUR",
                      "capture": false, "expires_in": 60})
    .to_string();
    let mut charges = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        let resp = ep
            .post("/v1/charges", Some(&format!("auth-{round}")), &body)
            .await;
        charges.push(id(&assert_created(&resp)));
    }
    // All pairs at once: the first authorizations are long expired (or about to be), the last
    // ones are fresh, so the three ways to end meet.
    let mut tasks = tokio::task::JoinSet::new();
    for (round, charge) in charges.iter().enumerate() {
        let (ep_a, ep_b) = (ep.clone(), ep.clone());
        let charge = charge.clone();
        tasks.spawn(async move {
            let (capture_key, void_key) = (format!("cap-{round}"), format!("void-{round}"));
            // Which request leaves first alternates, so that neither always has the head start.
            let (capture, void) = if round % 2 == 0 {
                tokio::join!(
                    capture(&ep_a, &charge, &capture_key, "{}"),
                    void(&ep_b, &charge, &void_key),
                )
            } else {
                let (void, capture) = tokio::join!(
                    void(&ep_b, &charge, &void_key),
                    capture(&ep_a, &charge, &capture_key, "{}"),
                );
                (capture, void)
            };
            (
                round,
                Race {
                    charge,
                    capture,
                    void,
                },
            )
        });
    }
    let mut races: Vec<(usize, Race)> = tasks.join_all().await;
    races.sort_by_key(|(round, _)| *round);
    let (mut captured, mut canceled, mut expired) = (0, 0, 0);
    for (round, race) in &races {
        let state = ep.get(&format!("/v1/charges/{}", race.charge)).await.json()["status"].clone();
        match (race.capture.status, race.void.status) {
            (200, 400) => {
                captured += 1;
                assert_eq!(state, "succeeded");
                assert!(race.void.text().contains("succeeded"), "{}", race.void);
            }
            (400, 200) => {
                canceled += 1;
                assert_eq!(state, "canceled");
                assert!(race.capture.text().contains("canceled"), "{}", race.capture);
            }
            (400, 400) => {
                expired += 1;
                assert_eq!(state, "expired");
                assert!(race.capture.text().contains("expired"), "{}", race.capture);
                assert!(race.void.text().contains("expired"), "{}", race.void);
            }
            other => panic!(
                "round {round}: capture/void answered {other:?}: {} / {}",
                race.capture, race.void
            ),
        }
        // The losers' answers are stored: the same bytes again.
        let again = capture(&ep, &race.charge, &format!("cap-{round}"), "{}").await;
        assert_replay_of(&again, &race.capture);
        let again = void(&ep, &race.charge, &format!("void-{round}")).await;
        assert_replay_of(&again, &race.void);
    }
    eprintln!("{ROUNDS} races: {captured} captured, {canceled} canceled, {expired} expired");
    assert_eq!(captured + canceled + expired, ROUNDS);
    assert_eq!(
        totals(&ep, "alice").await,
        (10 * captured as i64, 0, 0, 0, -10 * captured as i64)
    );
    assert_eq!(
        totals(&ep, "shop").await,
        (0, 10 * captured as i64, 0, 0, 10 * captured as i64)
    );
    let text = metrics(&ep).await;
    let operation = |name| {
        metric(
            &text,
            "onceledger_lifecycle_operations_total",
            &[("operation", name)],
        )
    };
    assert_eq!(operation("captured"), captured as f64);
    assert_eq!(operation("canceled"), canceled as f64);
    assert_eq!(operation("expired"), expired as f64);
    let types = event_types(&ep).await;
    let ended = types
        .iter()
        .filter(|t| {
            matches!(
                t.as_str(),
                "charge.captured" | "charge.canceled" | "charge.expired"
            )
        })
        .count();
    assert_eq!(ended, ROUNDS, "one terminal event per authorization");
    let summary = server.check().await;
    assert_eq!(summary["authorizations_open"], 0, "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_ttl_sets_the_default_lifetime_and_is_bounded() {
    // Guards `--authorization-ttl`: an authorization without `expires_in` expires that long after
    // it was made (one with `expires_in` keeps its own), and a TTL outside 60 s..30 days stops
    // the server before it serves.
    let server = Server::start_with(&["--authorization-ttl", "90s"]).await;
    let ep = server.endpoint();
    create_account(&ep, "alice", "EUR", None).await;
    create_account(&ep, "shop", "EUR", Some(0)).await;
    let lifetime_ms = |charge: &Value| {
        let at = |field: &str| {
            let text = charge[field]
                .as_str()
                .unwrap_or_else(|| panic!("{field} of {charge}"));
            time_ms(text)
        };
        at("expires_at") - at("created_at")
    };
    let default = authorize(&ep, "alice", "shop", 5).await;
    assert_eq!(lifetime_ms(&default), 90_000, "{default}");
    let own = json!({"source":"alice","destination":"shop","amount":5,"currency":"EUR",
                     "capture": false, "expires_in": 600});
    let own = assert_created(&ep.post("/v1/charges", Some("own"), &own.to_string()).await);
    assert_eq!(lifetime_ms(&own), 600_000, "{own}");
    server.check().await;

    let dir = tempfile::tempdir().expect("tempdir");
    let refused = crate::harness::run_bounded(
        std::process::Command::new(crate::harness::BIN)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--authorization-ttl",
                "59s",
                "--data-dir",
            ])
            .arg(dir.path()),
        crate::harness::CHECK_DEADLINE,
    )
    .await;
    assert_eq!(refused.status.code(), Some(2), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("authorization TTL"),
        "{}",
        refused.stderr
    );
}

/// Milliseconds since the epoch of an answer's RFC 3339 UTC time (`2026-12-07T11:21:50.554Z`).
fn time_ms(text: &str) -> i64 {
    let digits: Vec<i64> = text
        .split(|c: char| !c.is_ascii_digit())
        .filter(|part| !part.is_empty())
        .map(|part| part.parse().expect("digits"))
        .collect();
    let [year, month, day, hour, minute, second, millis] = digits[..] else {
        panic!("not an RFC 3339 time with milliseconds: {text}");
    };
    // Days since the epoch of a proleptic Gregorian date (the civil-from-days inverse).
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * m + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    ((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + millis
}
