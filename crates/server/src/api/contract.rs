//! The OpenAPI document against the code it describes, so the two cannot drift apart: every
//! operation it lists is a route of the parser, every problem type it names is one the server
//! has (with the same status), and its numeric limits and patterns are the parser's constants.
//! Schemathesis (`scripts/schemathesis/run.sh`) then checks the behaviour end to end.

use std::collections::BTreeSet;

use http::{HeaderMap, HeaderValue, Method};
use serde_json::Value;

use super::{OPENAPI_JSON, ProblemKind, parse_request};
use onceledger_core::limits::{
    ACCOUNT_ID_BYTES_MAX, AMOUNT_MINOR_MAX, EVENTS_PAGE_MAX, IDEMPOTENCY_KEY_BYTES_MAX,
    LIST_PAGE_MAX, METADATA_KEY_CHARS_MAX, METADATA_PAIRS_MAX, METADATA_VALUE_CHARS_MAX,
};
use onceledger_core::store::history::{LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX};

fn document() -> Value {
    serde_json::from_str(OPENAPI_JSON).expect("openapi.json is JSON")
}

fn at<'a>(value: &'a Value, pointer: &str) -> &'a Value {
    value
        .pointer(pointer)
        .unwrap_or_else(|| panic!("openapi.json has no {pointer}"))
}

/// Every string in the document that names a problem type.
fn problem_types(value: &Value, found: &mut BTreeSet<String>) {
    match value {
        Value::String(text) => {
            for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || "/-".contains(c))) {
                if let Some(slug) = word.strip_prefix("/problems/")
                    && !slug.is_empty()
                    && slug != "<kind>"
                {
                    found.insert(format!("/problems/{slug}"));
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| problem_types(v, found)),
        Value::Object(fields) => fields.values().for_each(|v| problem_types(v, found)),
        _ => {}
    }
}

#[test]
fn every_problem_type_the_document_names_exists() {
    let known: BTreeSet<String> = ProblemKind::ALL.iter().map(|k| k.type_uri()).collect();
    let mut named = BTreeSet::new();
    problem_types(&document(), &mut named);
    let unknown: Vec<_> = named.difference(&known).collect();
    assert!(unknown.is_empty(), "the document names {unknown:?}");
    assert!(named.len() > 20, "only {named:?}");
}

/// Where a response pins a problem type's status (`"status": {"const": N}`), it is the server's.
#[test]
fn documented_problem_statuses_are_the_servers() {
    let doc = document();
    let responses = at(&doc, "/components/responses")
        .as_object()
        .expect("object");
    for (name, response) in responses {
        let Some(schema) = response.pointer("/content/application~1problem+json/schema/allOf/1")
        else {
            continue;
        };
        let Some(status) = schema
            .pointer("/properties/status/const")
            .and_then(Value::as_u64)
        else {
            continue;
        };
        let types = schema.pointer("/properties/type");
        let listed: Vec<&str> = match types {
            Some(t) if t.get("const").is_some() => vec![t["const"].as_str().expect("str")],
            Some(t) => (t["enum"].as_array().expect("enum").iter())
                .map(|v| v.as_str().expect("str"))
                .collect(),
            None => continue,
        };
        for uri in listed {
            let kind = (ProblemKind::ALL.iter())
                .find(|k| k.type_uri() == uri)
                .unwrap_or_else(|| panic!("{name}: no kind {uri}"));
            assert_eq!(u64::from(kind.status()), status, "{name}: {uri}");
        }
    }
}

#[test]
fn documented_limits_and_patterns_are_the_parsers() {
    let doc = document();
    let schema = |name: &str| at(&doc, &format!("/components/schemas/{name}")).clone();
    let parameter = |name: &str| at(&doc, &format!("/components/parameters/{name}/schema")).clone();
    assert_eq!(
        schema("AccountId")["pattern"],
        format!("^[A-Za-z0-9_.:-]{{1,{ACCOUNT_ID_BYTES_MAX}}}$")
    );
    assert_eq!(schema("Amount")["maximum"], AMOUNT_MINOR_MAX);
    let metadata = schema("Metadata");
    assert_eq!(metadata["maxProperties"], METADATA_PAIRS_MAX);
    assert_eq!(
        metadata["propertyNames"]["maxLength"],
        METADATA_KEY_CHARS_MAX
    );
    assert_eq!(
        metadata["additionalProperties"]["maxLength"],
        METADATA_VALUE_CHARS_MAX
    );
    assert_eq!(parameter("Limit")["maximum"], EVENTS_PAGE_MAX);
    assert_eq!(
        EVENTS_PAGE_MAX, LIST_PAGE_MAX,
        "one Limit parameter serves both"
    );
    assert_eq!(parameter("After")["maximum"], i64::MAX);
    assert_eq!(parameter("ListLimit")["maximum"], LIST_LIMIT_MAX);
    assert_eq!(parameter("ListLimit")["default"], LIST_LIMIT_DEFAULT);
    for name in ["StartingAfter", "EndingBefore", "RefundChargeFilter"] {
        assert_eq!(parameter(name)["maxLength"], ACCOUNT_ID_BYTES_MAX, "{name}");
    }
    assert_eq!(parameter("AsOfSeq")["maximum"], i64::MAX);
    let key = parameter("IdempotencyKey")["pattern"]
        .as_str()
        .expect("pattern")
        .to_owned();
    let bare = format!("[!#-~][!-~]{{0,{}}}", IDEMPOTENCY_KEY_BYTES_MAX - 1);
    let quoted = format!("{{1,{IDEMPOTENCY_KEY_BYTES_MAX}}}\"");
    assert!(key.contains(&bare) && key.contains(&quoted), "{key}");
}

/// A sample value for a path parameter, by name.
fn sample(parameter: &str) -> &'static str {
    match parameter {
        "{id}" => "1",
        "{node}" => "till-1",
        _ => panic!("no sample for {parameter}"),
    }
}

/// Every documented operation is a route of the parser with that method: a well-formed request
/// to it is never 404 no-route or 405.
#[test]
fn every_documented_operation_is_a_route() {
    let doc = document();
    let paths = at(&doc, "/paths").as_object().expect("object");
    let mut headers = HeaderMap::new();
    headers.insert("idempotency-key", HeaderValue::from_static("k"));
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    let mut operations = 0;
    for (template, item) in paths {
        let path: Vec<String> = (template.split('/'))
            .map(|part| match part.starts_with('{') {
                true => sample(part).to_owned(),
                false => part.to_owned(),
            })
            .collect();
        let path = path.join("/");
        for method in item.as_object().expect("object").keys() {
            let method: Method = method.to_uppercase().parse().expect("a method");
            let answer = parse_request(&method, &path, &headers, b"{}");
            if let Err(problem) = answer {
                assert!(
                    !matches!(
                        problem.kind,
                        ProblemKind::NotFound | ProblemKind::MethodNotAllowed
                    ),
                    "{method} {path}: {problem:?}"
                );
            }
            operations += 1;
        }
    }
    assert!(operations >= 20, "{operations} operations");
}
