//! Accounts: their shape, their balances, and the overdraft limit at its exact boundary.

use serde_json::Value;

use crate::harness::{
    Server, account, assert_created, assert_problem, charge_body, charge_ok, create_account,
    is_rfc3339_utc, key,
};

pub(crate) const ACCOUNT_FIELDS: [&str; 10] = [
    "id",
    "currency",
    "overdraft_limit",
    "debits_posted",
    "credits_posted",
    "debits_pending",
    "credits_pending",
    "balance",
    "available",
    "created_at",
];

#[track_caller]
fn assert_account_shape(acct: &Value) {
    for field in ACCOUNT_FIELDS {
        assert!(acct.get(field).is_some(), "account lacks {field:?}: {acct}");
    }
    let created_at = acct["created_at"].as_str().unwrap_or_default();
    assert!(
        is_rfc3339_utc(created_at),
        "created_at must be RFC 3339 UTC: {acct}"
    );
    let n = |f: &str| {
        acct[f]
            .as_i64()
            .unwrap_or_else(|| panic!("{f} must be an integer: {acct}"))
    };
    assert_eq!(
        n("balance"),
        n("credits_posted") - n("debits_posted"),
        "balance = credits_posted - debits_posted: {acct}"
    );
    assert_eq!(
        n("available"),
        n("balance") - n("debits_pending"),
        "available = balance - debits_pending: {acct}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_and_get_accounts() {
    // Guards the account shape: overdraft_limit null (funding), explicit, and defaulting to 0;
    // the 201 body is the account as GET returns it, with zero totals.
    let server = Server::start().await;
    let ep = server.endpoint();

    let cases = [
        (
            r#"{"id":"bank","currency":"EUR","overdraft_limit":null}"#,
            "bank",
            Value::Null,
        ),
        (
            r#"{"id":"alice","currency":"EUR"}"#,
            "alice",
            Value::from(0),
        ),
        (
            r#"{"id":"Bob_1.x:y-z","currency":"USD","overdraft_limit":250}"#,
            "Bob_1.x:y-z",
            Value::from(250),
        ),
    ];
    for (body, id, limit) in cases {
        let created = assert_created(&ep.post("/v1/accounts", Some(&key("a")), body).await);
        assert_account_shape(&created);
        assert_eq!(created["id"], id, "{created}");
        assert_eq!(created["overdraft_limit"], limit, "{created}");
        for zero in [
            "debits_posted",
            "credits_posted",
            "debits_pending",
            "credits_pending",
            "balance",
            "available",
        ] {
            assert_eq!(created[zero], 0, "a new account has {zero} 0: {created}");
        }
        let got = account(&ep, id).await;
        assert_account_shape(&got);
        assert_eq!(
            got, created,
            "GET must return the account the 201 described"
        );
    }
    let long_id = "L".repeat(64);
    let created = create_account(&ep, &long_id, "EUR", Some(0)).await;
    assert_eq!(created["id"], long_id.as_str());
    assert_eq!(account(&ep, &long_id).await["id"], long_id.as_str());
    server.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_account_is_404() {
    // Guards GET of an id nobody created: 404 account-not-found.
    let server = Server::start().await;
    let ep = server.endpoint();
    create_account(&ep, "known", "EUR", Some(0)).await;
    assert_problem(
        &ep.get("/v1/accounts/unknown").await,
        404,
        "account-not-found",
    );
    assert_problem(
        &ep.get("/v1/accounts/Known").await,
        404,
        "account-not-found",
    );
    server.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balances_follow_charges() {
    // Guards double entry as seen through GET: debits and credits posted, balance and available
    // on both sides of each charge.
    let server = Server::start().await;
    let ep = server.endpoint();
    create_account(&ep, "bank", "EUR", None).await;
    create_account(&ep, "alice", "EUR", Some(0)).await;
    create_account(&ep, "shop", "EUR", Some(0)).await;
    charge_ok(&ep, "bank", "alice", 1000, "EUR").await;
    charge_ok(&ep, "alice", "shop", 250, "EUR").await;
    charge_ok(&ep, "alice", "shop", 50, "EUR").await;

    let expect = [
        ("bank", 1000, 0, -1000),
        ("alice", 300, 1000, 700),
        ("shop", 0, 300, 300),
    ];
    for (id, debits, credits, bal) in expect {
        let acct = account(&ep, id).await;
        assert_account_shape(&acct);
        assert_eq!(acct["debits_posted"], debits, "{acct}");
        assert_eq!(acct["credits_posted"], credits, "{acct}");
        assert_eq!(acct["balance"], bal, "{acct}");
        assert_eq!(acct["available"], bal, "no pending amounts: {acct}");
    }
    server.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overdraft_limit_is_honoured_exactly() {
    // Guards invariant 5 at its boundary: a charge to exactly -overdraft_limit succeeds, one
    // more minor unit is 402 insufficient-funds; the same with money already in the account.
    let server = Server::start().await;
    let ep = server.endpoint();
    create_account(&ep, "bank", "EUR", None).await;
    create_account(&ep, "od", "EUR", Some(100)).await;
    create_account(&ep, "zero", "EUR", Some(0)).await;
    create_account(&ep, "shop", "EUR", Some(0)).await;

    let over = ep
        .post(
            "/v1/charges",
            Some(&key("od")),
            &charge_body("od", "shop", 101, "EUR"),
        )
        .await;
    assert_problem(&over, 402, "insufficient-funds");
    charge_ok(&ep, "od", "shop", 100, "EUR").await;
    let od = account(&ep, "od").await;
    assert_eq!(od["balance"], -100, "{od}");
    assert_eq!(od["available"], -100, "{od}");
    let one_more = ep
        .post(
            "/v1/charges",
            Some(&key("od")),
            &charge_body("od", "shop", 1, "EUR"),
        )
        .await;
    assert_problem(&one_more, 402, "insufficient-funds");
    assert_eq!(account(&ep, "od").await["balance"], -100);

    // With money in the account the room is balance + overdraft_limit.
    charge_ok(&ep, "bank", "od", 50, "EUR").await;
    let over = ep
        .post(
            "/v1/charges",
            Some(&key("od")),
            &charge_body("od", "shop", 51, "EUR"),
        )
        .await;
    assert_problem(&over, 402, "insufficient-funds");
    charge_ok(&ep, "od", "shop", 50, "EUR").await;
    assert_eq!(account(&ep, "od").await["balance"], -100);

    // Overdraft 0: exactly the balance may be spent, not one unit more.
    charge_ok(&ep, "bank", "zero", 70, "EUR").await;
    let over = ep
        .post(
            "/v1/charges",
            Some(&key("zero")),
            &charge_body("zero", "shop", 71, "EUR"),
        )
        .await;
    assert_problem(&over, 402, "insufficient-funds");
    charge_ok(&ep, "zero", "shop", 70, "EUR").await;
    let zero = account(&ep, "zero").await;
    assert_eq!(zero["balance"], 0, "{zero}");
    let over = ep
        .post(
            "/v1/charges",
            Some(&key("zero")),
            &charge_body("zero", "shop", 1, "EUR"),
        )
        .await;
    assert_problem(&over, 402, "insufficient-funds");
    assert_eq!(account(&ep, "shop").await["balance"], 220);
    server.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn funding_account_has_no_limit() {
    // Guards overdraft_limit null: a funding account may go as far below zero as amounts allow.
    let server = Server::start().await;
    let ep = server.endpoint();
    create_account(&ep, "mint", "EUR", None).await;
    create_account(&ep, "vault", "EUR", Some(0)).await;
    let big = 1i64 << 62;
    charge_ok(&ep, "mint", "vault", big, "EUR").await;
    charge_ok(&ep, "mint", "vault", 12345, "EUR").await;
    let mint = account(&ep, "mint").await;
    assert_eq!(mint["balance"], -(big + 12345), "{mint}");
    assert_eq!(mint["overdraft_limit"], Value::Null, "{mint}");
    assert_eq!(account(&ep, "vault").await["balance"], big + 12345);
    server.check().await;
}
