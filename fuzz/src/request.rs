//! request_parse: raw bytes → an HTTP request → `onceledger_server::api::parse_request`.
//!
//! The input is read as a plain-text HTTP/1.1 head, not as an `Arbitrary` structure, so that the
//! seed corpus is readable, the dictionary's tokens (`Idempotency-Key: `, `"amount":`) splice in
//! where they mean something, and libFuzzer mutates the JSON body byte by byte:
//!
//! ```text
//! POST /v1/charges?x=1 HTTP/1.1 <- method, space, request target, and optionally anything else
//! Idempotency-Key: k1           <- header lines, `name: value`, until the first empty line
//! Content-Type: application/json
//!                               <- empty line
//! {"source":"alice", ...}       <- body: every byte after the empty line
//! ```
//!
//! Lines end in `\n` or `\r\n`. A method that `http::Method` refuses makes the input uninteresting
//! (the server never sees one); header names or values that `http` refuses are skipped, as hyper
//! would never hand them to the parser.

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use onceledger_core::idempotency::Fingerprint;
use onceledger_core::idempotency::canonical_body;
use onceledger_core::ledger::{Command, Settle};
use onceledger_core::limits::{BODY_BYTES_MAX, EVENTS_PAGE_MAX, HEADERS_COUNT_MAX};
use onceledger_server::api::{ApiRequest, ProblemKind, parse_request};

/// What hyper would hand to the parser.
#[derive(Debug)]
pub struct RawRequest {
    pub method: Method,
    pub target: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl RawRequest {
    /// Reads the text form above; `None` when the method is not a valid token.
    pub fn decode(data: &[u8]) -> Option<RawRequest> {
        let mut rest = data;
        let request_line = next_line(&mut rest).unwrap_or_else(|| std::mem::take(&mut rest));
        // `METHOD SP TARGET [SP VERSION]`: hyper never passes a target with a space in it.
        let mut words = request_line.splitn(3, |&b| b == b' ');
        let method = words.next().unwrap_or_default();
        let target = words.next().unwrap_or_default();
        let method = Method::from_bytes(method).ok()?;
        let target = String::from_utf8_lossy(target).into_owned();
        let mut headers = HeaderMap::new();
        // Header lines end at the first empty line; without one, the input has no body.
        let mut lines_read = 0;
        while let Some(line) = next_line(&mut rest) {
            if line.is_empty() {
                break;
            }
            lines_read += 1;
            // hyper refuses more header fields than this before the parser runs.
            if lines_read > HEADERS_COUNT_MAX {
                continue;
            }
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let value = line[colon + 1..].trim_ascii_start();
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(&line[..colon]),
                HeaderValue::from_bytes(value),
            ) {
                headers.append(name, value);
            }
        }
        Some(RawRequest {
            method,
            target,
            headers,
            body: rest.to_vec(),
        })
    }

    fn parse(&self, body: &[u8]) -> Result<ApiRequest, onceledger_server::api::Problem> {
        parse_request(&self.method, &self.target, &self.headers, body)
    }
}

/// Splits off one line (without its `\n` or `\r\n`); `None` when no `\n` is left.
fn next_line<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let newline = rest.iter().position(|&b| b == b'\n')?;
    let line = &rest[..newline];
    *rest = &rest[newline + 1..];
    Some(line.strip_suffix(b"\r").unwrap_or(line))
}

/// The request_parse target: never panics; accepted writes survive canonicalisation.
pub fn check(data: &[u8]) {
    if let Some(request) = RawRequest::decode(data) {
        check_request(&request);
    }
}

pub fn check_request(request: &RawRequest) {
    let first = request.parse(&request.body);
    assert_eq!(
        first,
        request.parse(&request.body),
        "the parser is a pure function"
    );
    match first {
        Ok(ApiRequest::Write(intent)) => check_write(request, &intent),
        Ok(read) => check_read(request, &read),
        Err(problem) => {
            let status = problem.kind.status();
            assert!(
                (400..500).contains(&status),
                "the parser only refuses with client errors, got {status} for {problem:?}"
            );
            assert_eq!(
                problem.allow.is_some(),
                problem.kind == ProblemKind::MethodNotAllowed,
                "exactly the 405s name the allowed methods: {problem:?}"
            );
            assert!(!problem.detail.is_empty(), "every refusal says why");
        }
    }
}

fn check_write(request: &RawRequest, intent: &onceledger_server::api::WriteIntent) {
    let path = request
        .target
        .split_once('?')
        .map_or(request.target.as_str(), |(path, _)| path);
    assert_eq!(request.method, Method::POST, "only POSTs are writes");
    let expected_path = match &intent.command {
        Command::CreateAccount(_) => "/v1/accounts".to_owned(),
        Command::CreateCharge(_) | Command::Authorize(_) => "/v1/charges".to_owned(),
        Command::SettleCharge { charge, how } => {
            let action = match how {
                Settle::Capture(_) => "capture",
                Settle::Void | Settle::Expire => "void",
            };
            // The id segment may be percent-encoded; the parser decodes it.
            if path.contains('%') {
                path.to_owned()
            } else {
                format!("/v1/charges/{charge}/{action}")
            }
        }
        Command::CreateRefund(_) => "/v1/refunds".to_owned(),
        Command::CreateTransfer(_) => "/v1/transfers".to_owned(),
        Command::RedriveDeadLetter { id } => format!("/v1/dead-letters/{id}/redrive"),
        Command::CreateTenant { .. } => "/v1/tenants".to_owned(),
        Command::CreateToken { .. } => "/v1/tokens".to_owned(),
        Command::RevokeToken { id } => format!("/v1/tokens/{id}/revoke"),
    };
    assert_eq!(path, expected_path, "the command matches its route");
    assert!(request.body.len() <= BODY_BYTES_MAX);
    if let Command::CreateCharge(charge) = &intent.command {
        assert_ne!(charge.source, charge.destination);
    }

    // The fingerprint is exactly API.md's: method, path, canonical body.
    let canonical = canonical_body(&intent.command);
    assert!(
        !canonical.is_empty(),
        "canonical_body never falls back to nothing"
    );
    assert_eq!(
        intent.fingerprint,
        Fingerprint::of("POST", path, &canonical),
        "fingerprint over (POST, path, canonical body)"
    );

    // The canonical body is valid input meaning the same request, and canonicalisation is a
    // fixpoint: a retry that sends the canonical body is a replay, never a 422.
    let reparsed = expect_write(request, &canonical, "the canonical body");
    assert_eq!(&reparsed, intent, "canonical body {}", lossy(&canonical));
    assert_eq!(canonical_body(&reparsed.command), canonical);

    // Key order and whitespace do not change the fingerprint: the same JSON value re-serialised
    // with sorted keys, compact and pretty, is the same request.
    let value: serde_json::Value = match serde_json::from_slice(&request.body) {
        Ok(value) => value,
        Err(error) => panic!("an accepted body is JSON: {error}"),
    };
    for reformatted in [
        serde_json::to_vec(&value).unwrap_or_default(),
        serde_json::to_vec_pretty(&value).unwrap_or_default(),
    ] {
        let reparsed = expect_write(request, &reformatted, "the reformatted body");
        assert_eq!(
            &reparsed,
            intent,
            "reformatted body {}",
            lossy(&reformatted)
        );
    }
}

fn expect_write(
    request: &RawRequest,
    body: &[u8],
    what: &str,
) -> onceledger_server::api::WriteIntent {
    match request.parse(body) {
        Ok(ApiRequest::Write(intent)) => intent,
        other => panic!("{what} {} is refused: {other:?}", lossy(body)),
    }
}

fn check_read(request: &RawRequest, read: &ApiRequest) {
    assert_eq!(request.method, Method::GET, "only GETs read: {read:?}");
    match read {
        ApiRequest::ListEvents { limit, .. } => assert!((1..=EVENTS_PAGE_MAX).contains(limit)),
        ApiRequest::GetAccount(id) | ApiRequest::GetCharge(id) => {
            assert!(!id.is_empty() && !id.contains('/') && !id.contains('?'));
        }
        _ => {}
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_form_reads_like_an_http_head() {
        let data = b"POST /v1/charges HTTP/1.1\r\nIdempotency-Key: \"k\\\"1\"\r\nBad Name: x\r\ncontent-type: application/json\r\n\r\n{\"source\":\"a\",\"destination\":\"b\",\"amount\":1,\"currency\":\"EUR\"}";
        let request = RawRequest::decode(data).expect("a valid method");
        assert_eq!(request.method, Method::POST);
        assert_eq!(request.target, "/v1/charges");
        assert_eq!(
            request.headers.len(),
            2,
            "the invalid header name is skipped"
        );
        match request.parse(&request.body) {
            Ok(ApiRequest::Write(intent)) => assert_eq!(intent.key.as_str(), "k\"1"),
            other => panic!("{other:?}"),
        }
        assert!(
            RawRequest::decode(b"G(T /\n\n").is_none(),
            "not a method token"
        );
        let bare = RawRequest::decode(b"GET").expect("a method alone");
        assert_eq!((bare.target.as_str(), bare.body.len()), ("", 0));
    }
}
