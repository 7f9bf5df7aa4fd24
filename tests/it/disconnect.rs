//! Clients that vanish mid-request must not leave a key claimed forever nor apply it twice.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::harness::{
    Endpoint, REQUEST_DEADLINE, Server, account, all_events, charge_body, create_account,
};

const KEYS_PER_CASE: usize = 10;
const AMOUNT: i64 = 3;
/// Retries per key before the key counts as stuck.
const RETRIES_MAX: usize = 200;
/// A tiny pause between retries that answered 409 (bounded: at most RETRIES_MAX of them).
const RETRY_BACKOFF: Duration = Duration::from_millis(10);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Cut {
    /// The whole request, then FIN without reading the answer.
    CompleteThenClose,
    /// The whole request, then RST (SO_LINGER 0) without reading the answer.
    CompleteThenReset,
    /// The headers and half the body, then FIN.
    HalfBodyThenClose,
    /// The headers and half the body, then RST.
    HalfBodyThenReset,
}

fn request_bytes(key: &str, body: &str) -> Vec<u8> {
    format!(
        "POST /v1/charges HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Idempotency-Key: {key}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

async fn send_and_vanish(addr: SocketAddr, key: &str, body: &str, cut: Cut) {
    let bytes = crate::harness::with_auth(addr, &request_bytes(key, body));
    let send = match cut {
        Cut::CompleteThenClose | Cut::CompleteThenReset => &bytes[..],
        Cut::HalfBodyThenClose | Cut::HalfBodyThenReset => &bytes[..bytes.len() - body.len() / 2],
    };
    let work = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(send).await.expect("write the request");
        stream.flush().await.expect("flush");
        if matches!(cut, Cut::CompleteThenReset | Cut::HalfBodyThenReset) {
            // SO_LINGER 0 turns the close into a reset; with a zero timeout it does not block.
            #[allow(deprecated)]
            stream
                .set_linger(Some(Duration::ZERO))
                .expect("set SO_LINGER");
        }
        drop(stream);
    };
    tokio::time::timeout(REQUEST_DEADLINE, work)
        .await
        .expect("the raw request could not be sent in time");
}

/// Retries `key` until it is no longer in flight; returns the 201 it finally got.
async fn retry_until_done(ep: &Endpoint, key: &str, body: &str) -> crate::harness::Resp {
    let mut last = None;
    for _ in 0..RETRIES_MAX {
        let resp = ep.post("/v1/charges", Some(key), body).await;
        match resp.status {
            201 => return resp,
            409 => {
                assert_eq!(
                    resp.problem_type(),
                    "/problems/idempotency-key-in-flight",
                    "{resp}"
                );
                last = Some(resp);
                tokio::time::sleep(RETRY_BACKOFF).await;
            }
            _ => panic!("retrying key {key} after a vanished client: {resp}"),
        }
    }
    panic!("key {key} stayed in flight after {RETRIES_MAX} retries; last answer {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanished_clients_leave_no_key_stuck() {
    // Guards the release of in-flight claims: after a client sends a charge and disconnects
    // (FIN or RST, whole request or half a body), a retry of its key gets a 201 within a
    // bounded number of attempts, and each key charges exactly once; a half-sent request never
    // runs at all.
    let server = Server::start().await;
    let ep = server.endpoint();
    create_account(&ep, "bank", "EUR", None).await;
    create_account(&ep, "shop", "EUR", Some(0)).await;
    let body = charge_body("bank", "shop", AMOUNT, "EUR");
    let cuts = [
        Cut::CompleteThenClose,
        Cut::CompleteThenReset,
        Cut::HalfBodyThenClose,
        Cut::HalfBodyThenReset,
    ];

    let mut keys = Vec::new();
    for cut in cuts {
        for i in 0..KEYS_PER_CASE {
            let key = format!("vanish-{cut:?}-{i}");
            send_and_vanish(server.addr(), &key, &body, cut).await;
            keys.push((key, cut));
        }
    }

    let mut charge_ids = HashSet::new();
    let mut replayed = 0;
    for (key, cut) in &keys {
        let resp = retry_until_done(&ep, key, &body).await;
        if matches!(cut, Cut::HalfBodyThenClose | Cut::HalfBodyThenReset) {
            assert!(
                !resp.replayed(),
                "key {key}: half a body must never have run, yet the retry is a replay: {resp}"
            );
        }
        replayed += usize::from(resp.replayed());
        let id = resp.json()["id"].as_str().unwrap_or_default().to_owned();
        assert!(
            charge_ids.insert(id),
            "key {key} shares a charge with another key"
        );
        // And the key is finished now: a further retry replays.
        let again = ep.post("/v1/charges", Some(key), &body).await;
        crate::harness::assert_replay_of(&again, &resp);
    }
    eprintln!(
        "disconnect: {} keys, {replayed} had already run when retried",
        keys.len()
    );
    let moved = keys.len() as i64 * AMOUNT;
    assert_eq!(
        account(&ep, "shop").await["balance"],
        moved,
        "each key charged once"
    );
    assert_eq!(account(&ep, "bank").await["balance"], -moved);
    assert_eq!(all_events(&ep, 1000).await.len(), 2 + keys.len());
    assert_eq!(ep.get("/healthz").await.status, 200);
    server.check().await;
}
