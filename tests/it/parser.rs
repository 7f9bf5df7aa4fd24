//! The HTTP edge on raw sockets: bounded headers, chunked bodies and their size limit, and a
//! server that survives whatever arrives.

use crate::harness::{Server, account, assert_problem, create_account, raw_exchange};

fn chunked(key: &str, chunks: &[&[u8]]) -> Vec<u8> {
    let mut out = format!(
        "POST /v1/charges HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Idempotency-Key: {key}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in chunks {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_or_too_many_headers_are_refused() {
    // Guards the header bounds: a 1 MiB header or 1,000 headers are answered 431 (or 400) and
    // the server keeps serving.
    let server = Server::start().await;
    let addr = server.addr();
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let answer = raw_exchange(addr, big.as_bytes()).await;
    assert!(
        matches!(answer.status, Some(431) | Some(400)),
        "a 1 MiB header must be refused with 431 (or 400), got {:?}: {:.300}",
        answer.status,
        answer.text()
    );
    let mut many = String::from("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for i in 0..1000 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("Connection: close\r\n\r\n");
    let answer = raw_exchange(addr, many.as_bytes()).await;
    assert!(
        matches!(answer.status, Some(431) | Some(400)),
        "1,000 headers must be refused with 431 (or 400), got {:?}: {:.300}",
        answer.status,
        answer.text()
    );
    assert_eq!(
        server.get("/healthz").await.status,
        200,
        "the server survives"
    );
    server.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_bodies_are_read_and_bounded() {
    // Guards bodies without Content-Length: a chunked charge is read whole and applied; a
    // chunked body over 64 KiB is 413 body-too-large and leaves its key unused.
    let server = Server::start().await;
    let ep = server.endpoint();
    create_account(&ep, "bank", "EUR", None).await;
    create_account(&ep, "shop", "EUR", Some(0)).await;

    let request = chunked(
        "chunked-1",
        &[
            br#"{"source":"bank","#,
            br#""destination":"shop","amount":5,"#,
            br#""currency":"EUR"}"#,
        ],
    );
    let answer = raw_exchange(server.addr(), &request).await;
    assert_eq!(answer.status, Some(201), "{}", answer.text());
    assert_eq!(account(&ep, "shop").await["balance"], 5);

    let padding = vec![b' '; 8192];
    let mut chunks: Vec<&[u8]> =
        vec![br#"{"source":"bank","destination":"shop","amount":5,"currency":"EUR"}"#];
    for _ in 0..9 {
        chunks.push(&padding);
    }
    let request = chunked("chunked-2", &chunks);
    let answer = raw_exchange(server.addr(), &request).await;
    assert_eq!(
        answer.status,
        Some(413),
        "a 73 KiB chunked body: {:.500}",
        answer.text()
    );
    assert!(
        String::from_utf8_lossy(answer.body()).contains("/problems/body-too-large"),
        "{}",
        answer.text()
    );
    assert_eq!(account(&ep, "shop").await["balance"], 5);
    let resp = ep
        .post(
            "/v1/charges",
            Some("chunked-2"),
            r#"{"source":"bank","destination":"shop","amount":5,"currency":"EUR"}"#,
        )
        .await;
    assert_eq!(resp.status, 201, "the key of a 413 stays unused: {resp}");
    assert!(!resp.replayed());
    server.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_garbage_is_a_400_not_a_crash() {
    // Guards the parser against bytes that are not JSON or not UTF-8: 400 invalid-request, and
    // the server still serves.
    let server = Server::start().await;
    let ep = server.endpoint();
    let bodies: [&[u8]; 5] = [
        b"\xff\xfe\x00\x01",
        b"{\"id\":\"\xc3\x28\",\"currency\":\"EUR\"}",
        b"{\"id\":\"a\",\"currency\":\"EUR\"}\x00",
        b"{\"id\":\"a\\ud800\",\"currency\":\"EUR\"}",
        &[b'['; 10_000],
    ];
    for (i, body) in bodies.iter().enumerate() {
        let key = format!("garbage-{i}");
        let resp = ep
            .post_raw(
                "/v1/accounts",
                &[
                    ("content-type", b"application/json"),
                    ("idempotency-key", key.as_bytes()),
                ],
                body,
            )
            .await;
        assert_problem(&resp, 400, "invalid-request");
    }
    assert_eq!(ep.get("/healthz").await.status, 200);
    server.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_timed_out() {
    // Guards the read timeouts: a body that stops halfway is answered 408 request-timeout (and
    // its key stays unused); headers that never finish get the connection closed. Both within
    // the request deadline, while other clients are served normally.
    let server = Server::start().await;
    let ep = server.endpoint();
    create_account(&ep, "bank", "EUR", None).await;
    create_account(&ep, "shop", "EUR", Some(0)).await;
    let body = r#"{"source":"bank","destination":"shop","amount":5,"currency":"EUR"}"#;
    let addr = server.addr();

    let slow_body = tokio::spawn(async move {
        let head = format!(
            "POST /v1/charges HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Idempotency-Key: slow-1\r\nContent-Length: {}\r\n\r\n{}",
            body.len(),
            &body[..body.len() / 2]
        );
        read_until_closed(addr, head.as_bytes()).await
    });
    let slow_head = tokio::spawn(async move {
        read_until_closed(
            addr,
            b"POST /v1/charges HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ",
        )
        .await
    });
    // Meanwhile the server answers others.
    assert_eq!(ep.get("/healthz").await.status, 200);

    let answer = slow_body.await.expect("slow body task");
    assert_eq!(
        answer.status,
        Some(408),
        "a body that stops halfway: {}",
        answer.text()
    );
    assert!(
        String::from_utf8_lossy(answer.body()).contains("/problems/request-timeout"),
        "{}",
        answer.text()
    );
    let answer = slow_head.await.expect("slow header task");
    assert!(
        matches!(answer.status, None | Some(408)),
        "unfinished headers: the connection is closed (with or without a 408): {}",
        answer.text()
    );
    let resp = ep.post("/v1/charges", Some("slow-1"), body).await;
    assert_eq!(
        resp.status, 201,
        "the key of a timed-out request stays unused: {resp}"
    );
    assert!(!resp.replayed(), "{resp}");
    assert_eq!(account(&ep, "shop").await["balance"], 5);
    server.check().await;
}

/// Writes `bytes`, keeps the connection open without writing more, and reads until the server
/// closes it (bounded by the request deadline, which fails the test).
async fn read_until_closed(addr: std::net::SocketAddr, bytes: &[u8]) -> crate::harness::RawAnswer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let work = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let bytes = crate::harness::with_auth(addr, bytes);
        stream.write_all(&bytes).await.expect("write");
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
        }
        raw
    };
    let raw = tokio::time::timeout(crate::harness::REQUEST_DEADLINE, work)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "a stalled client was not timed out within {:?}",
                crate::harness::REQUEST_DEADLINE
            )
        });
    crate::harness::RawAnswer::from_raw(raw)
}
