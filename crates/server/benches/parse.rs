//! The request parser on a typical charge POST: routing, header checks, JSON into a typed command,
//! and the canonical re-encoding that feeds the fingerprint.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method};
use onceledger_server::api::{ApiRequest, parse_request};

/// The body `onceledger bench` sends.
const PLAIN: &[u8] =
    br#"{"source":"b1a2b3c4-c1234","destination":"b1a2b3c4-m567","amount":1,"currency":"EUR"}"#;
/// A body with metadata, as API.md's example.
const WITH_METADATA: &[u8] =
    br#"{"source": "alice", "destination": "shop", "amount": 1250, "currency": "EUR",
 "metadata": {"order": "A-17", "customer": "c-99812", "channel": "web"}}"#;

/// The headers a typical client sends with a charge.
fn headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("host", "127.0.0.1:7070"),
        ("content-type", "application/json"),
        ("content-length", "120"),
        ("accept", "*/*"),
        ("user-agent", "bench/1.0"),
        ("idempotency-key", "3f0e8c1a-5b7d-4e2a-9c4b-1d2e3f4a5b6c"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers
}

fn parse(c: &mut Criterion) {
    let headers = headers();
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Elements(1));
    for (name, body) in [
        ("charge_post", PLAIN),
        ("charge_post_metadata", WITH_METADATA),
    ] {
        // A benchmark of the error path would measure the wrong thing: make sure this parses.
        let parsed = parse_request(&Method::POST, "/v1/charges", &headers, body);
        assert!(
            matches!(parsed, Ok(ApiRequest::Write(_))),
            "{name}: {parsed:?}"
        );
        group.bench_function(name, |b| {
            b.iter(|| {
                parse_request(
                    black_box(&Method::POST),
                    black_box("/v1/charges"),
                    black_box(&headers),
                    black_box(body),
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
