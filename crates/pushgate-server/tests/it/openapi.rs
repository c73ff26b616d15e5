//! The OpenAPI document (docs/openapi.json, served at `/api/openapi.json`)
//! against the real server: it is the file served; every `/api/*` route of
//! `routes::ROUTES` is documented with its methods, and nothing is
//! documented that is not served; every documented operation is called
//! for real — its success and at least one documented error — and each
//! answer's body validates against the schema documented for its status.
//!
//! The validator is `jsonschema` (draft 2020-12, OpenAPI 3.1's dialect):
//! each response schema is checked with the document's `components`
//! beside it, so its `$ref`s resolve within the document.

use std::collections::{BTreeMap, BTreeSet};

use crate::common::*;
use crate::users::{user_ws, with_users};
use pushgate_server::routes::{Auth, ROUTES};
use serde_json::{json, Value};

const DOC: &str = include_str!("../../../../docs/openapi.json");

fn doc() -> Value {
    serde_json::from_str(DOC).expect("docs/openapi.json is valid JSON")
}

/// The value `pointer` (`#/components/…`) names in `doc`.
fn resolve<'a>(doc: &'a Value, pointer: &str) -> &'a Value {
    let p = pointer.strip_prefix('#').expect("a local $ref");
    doc.pointer(p)
        .unwrap_or_else(|| panic!("$ref {pointer} names nothing in the document"))
}

fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.push(r.clone());
            }
            m.values().for_each(|v| refs(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

/// Validates `instance` against `schema`, resolving `$ref`s in `doc`.
fn check(doc: &Value, schema: &Value, instance: &Value, what: &str) {
    let root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": doc["components"],
        "allOf": [schema],
    });
    let validator = jsonschema::draft202012::new(&root)
        .unwrap_or_else(|e| panic!("{what}: the documented schema does not compile: {e}"));
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{what}: {instance} does not match the documented schema: {errors:#?}"
    );
}

#[test]
fn the_document_is_openapi_3_1_and_every_ref_resolves() {
    let doc = doc();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(all.len() > 20, "the document uses its components");
    for r in &all {
        resolve(&doc, r);
    }
    // Every schema compiles.
    for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
        let root = json!({"components": doc["components"], "allOf": [schema]});
        assert!(
            jsonschema::draft202012::new(&root).is_ok(),
            "{name} compiles"
        );
    }
}

#[test]
fn every_api_route_is_documented_and_nothing_else() {
    let doc = doc();
    let paths = doc["paths"].as_object().unwrap();
    let served: BTreeMap<&str, _> = ROUTES.iter().map(|r| (r.path, r)).collect();
    for route in ROUTES.iter().filter(|r| r.auth == Auth::Api) {
        assert!(route.path.starts_with("/api/"), "{}", route.path);
        let item = paths
            .get(route.path)
            .unwrap_or_else(|| panic!("{} is served but not documented", route.path));
        let documented: BTreeSet<String> = item.as_object().unwrap().keys().cloned().collect();
        let methods: BTreeSet<String> = route.methods.iter().map(|m| m.to_lowercase()).collect();
        assert_eq!(documented, methods, "{}: documented methods", route.path);
    }
    for ops in ["/livez", "/readyz", "/healthz", "/metrics"] {
        assert!(paths.contains_key(ops), "{ops} is documented");
    }
    for path in paths.keys() {
        let route = served
            .get(path.as_str())
            .unwrap_or_else(|| panic!("{path} is documented but not served"));
        for method in paths[path].as_object().unwrap().keys() {
            assert!(
                route.methods.contains(&method.to_uppercase().as_str()),
                "{method} {path} is documented but not served"
            );
        }
    }
    assert!(!paths.contains_key("/api/nope"));
}

/// One real request: what it sends, and the status it must get.
struct Case {
    method: &'static str,
    path: String,
    body: Option<Body>,
    key: bool,
    status: u16,
}

enum Body {
    Json(Value),
    Bytes(&'static str, Vec<u8>),
}

fn case(method: &'static str, path: &str, body: Option<Value>, status: u16) -> Case {
    Case {
        method,
        path: path.to_owned(),
        body: body.map(Body::Json),
        key: true,
        status,
    }
}

fn without_key(mut c: Case) -> Case {
    c.key = false;
    c
}

#[tokio::test]
async fn every_documented_operation_answers_as_documented() {
    let doc = doc();
    let server = start_with(|c| {
        with_users(c);
        c.api_key = Some("k".into());
        c.max_message_size = 4096;
    })
    .await;
    // A user online, in presence, with a connection to list.
    let mut alice = user_ws(&server, "alice").await;
    alice.subscribe("chat:lobby").await;
    let _bob = user_ws(&server, "bob").await;
    let big = "x".repeat(5000);
    let many: Vec<Value> = (0..1001)
        .map(|_| json!({"channel": "c", "data": 1}))
        .collect();
    let channels: Vec<String> = (0..1001).map(|i| format!("c{i}")).collect();
    let cases = vec![
        case(
            "POST",
            "/api/publish",
            Some(json!({"channel": "chat:a", "data": {"k": 1}})),
            200,
        ),
        Case {
            body: Some(Body::Bytes("application/octet-stream", vec![0, 1, 2])),
            ..case("POST", "/api/publish?channel=bin", None, 200)
        },
        case(
            "POST",
            "/api/publish",
            Some(json!({"channel": "a b", "data": 1})),
            400,
        ),
        case(
            "POST",
            "/api/publish",
            Some(json!({"channel": "a", "data": big})),
            413,
        ),
        without_key(case(
            "POST",
            "/api/publish",
            Some(json!({"channel": "a", "data": 1})),
            401,
        )),
        case(
            "POST",
            "/api/batch",
            // The second fails alone (its data is too large).
            Some(json!({"publications": [
                {"channel": "chat:a", "data": 2},
                {"channel": "chat:b", "data": big},
            ]})),
            200,
        ),
        case("POST", "/api/batch", Some(json!({"publications": []})), 400),
        case(
            "POST",
            "/api/batch",
            Some(json!({"publications": many})),
            413,
        ),
        without_key(case(
            "POST",
            "/api/batch",
            Some(json!({"publications": []})),
            401,
        )),
        case(
            "POST",
            "/api/broadcast",
            Some(json!({"channels": ["chat:a", "chat:b"], "event": "e", "data": null})),
            200,
        ),
        case(
            "POST",
            "/api/broadcast",
            Some(json!({"channels": ["a"]})),
            400,
        ),
        case(
            "POST",
            "/api/broadcast",
            Some(json!({"channels": channels, "data": 1})),
            413,
        ),
        without_key(case(
            "POST",
            "/api/broadcast",
            Some(json!({"channels": ["a"], "data": 1})),
            401,
        )),
        case("GET", "/api/history?channel=chat:a&limit=10", None, 200),
        case("GET", "/api/history?channel=bin", None, 200),
        case("GET", "/api/history?channel=chat:a&limit=0", None, 400),
        without_key(case("GET", "/api/history?channel=chat:a", None, 401)),
        case(
            "POST",
            "/api/send",
            Some(json!({"to": ["alice", "carol"], "data": {"hi": 1}})),
            200,
        ),
        case("POST", "/api/send", Some(json!({"to": [], "data": 1})), 400),
        case(
            "POST",
            "/api/send",
            Some(json!({"to": ["alice"], "data": big})),
            413,
        ),
        without_key(case(
            "POST",
            "/api/send",
            Some(json!({"to": ["a"], "data": 1})),
            401,
        )),
        case("GET", "/api/presence?channel=chat:lobby", None, 200),
        case("GET", "/api/presence?channel=news", None, 400),
        without_key(case("GET", "/api/presence?channel=chat:lobby", None, 401)),
        case("GET", "/api/channels?pattern=chat:*&limit=1", None, 200),
        case("GET", "/api/channels?order=busiest", None, 200),
        case("GET", "/api/channels?limit=0", None, 400),
        without_key(case("GET", "/api/channels", None, 401)),
        case("GET", "/api/info", None, 200),
        without_key(case("GET", "/api/info", None, 401)),
        case("GET", "/api/connections?user=alice", None, 200),
        case("GET", "/api/connections?user=nobody", None, 200),
        case("GET", "/api/connections?user=", None, 400),
        without_key(case("GET", "/api/connections?user=alice", None, 401)),
        case("GET", "/api/openapi.json", None, 200),
        without_key(case("GET", "/api/openapi.json", None, 401)),
        case("POST", "/api/disconnect", Some(json!({"user": "bob"})), 200),
        case("POST", "/api/disconnect", Some(json!({"name": "bob"})), 400),
        without_key(case(
            "POST",
            "/api/disconnect",
            Some(json!({"user": "bob"})),
            401,
        )),
        without_key(case("GET", "/livez", None, 200)),
        without_key(case("GET", "/readyz", None, 200)),
        without_key(case("GET", "/healthz", None, 200)),
        without_key(case("GET", "/metrics", None, 200)),
    ];
    // Which statuses each documented operation was seen to answer.
    let mut seen: BTreeMap<(String, String), BTreeSet<u16>> = BTreeMap::new();
    for c in cases {
        let path_only = c.path.split('?').next().unwrap().to_owned();
        let method = c.method.to_lowercase();
        let what = format!("{} {}", c.method, c.path);
        let op = &doc["paths"][&path_only][&method];
        assert!(op.is_object(), "{what} is not documented");
        let url = server.url(&c.path);
        let mut req = match c.method {
            "GET" => server.http.get(url),
            _ => server.http.post(url),
        };
        if c.key {
            req = req.header("authorization", "Bearer k");
        }
        match &c.body {
            Some(Body::Json(v)) => {
                if c.status == 200 {
                    let schema = &op["requestBody"]["content"]["application/json"]["schema"];
                    check(&doc, schema, v, &format!("{what}: the request"));
                }
                req = req.json(v);
            }
            Some(Body::Bytes(ctype, bytes)) => {
                let documented = &op["requestBody"]["content"][*ctype];
                assert!(documented.is_object(), "{what}: {ctype} is documented");
                req = req.header("content-type", *ctype).body(bytes.clone());
            }
            None => {}
        }
        let res = within(&what, req.send()).await.unwrap();
        let status = res.status().as_u16();
        let ctype = res
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
            .unwrap_or_default();
        let text = within(&what, res.text()).await.unwrap();
        assert_eq!(status, c.status, "{what}: {text}");
        let mut response = &op["responses"][status.to_string()];
        if let Some(r) = response["$ref"].as_str() {
            response = resolve(&doc, r);
        }
        assert!(response.is_object(), "{what}: {status} is not documented");
        let schema = &response["content"][&ctype]["schema"];
        assert!(
            schema.is_object(),
            "{what}: {ctype} is not documented for {status}"
        );
        let body = if ctype == "application/json" {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"))
        } else {
            Value::String(text.clone())
        };
        check(&doc, schema, &body, &what);
        if path_only == "/api/openapi.json" && status == 200 {
            assert_eq!(text, DOC, "the served document is docs/openapi.json");
        }
        seen.entry((path_only, method)).or_default().insert(status);
    }
    // Every operation: its success and at least one documented error
    // (except the public operations routes, which have no error to cause).
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let statuses = seen
                .get(&(path.clone(), method.clone()))
                .unwrap_or_else(|| panic!("{method} {path} was not called"));
            assert!(
                statuses.iter().any(|s| *s < 300),
                "{method} {path}: no success"
            );
            if path.starts_with("/api/") {
                assert!(
                    statuses.iter().any(|s| *s >= 400),
                    "{method} {path}: no error"
                );
            }
        }
    }
    // A path that is not served is refused, and is not documented.
    let res = server
        .http
        .get(server.url("/api/nope"))
        .header("authorization", "Bearer k");
    let (status, _) = server.json_response(res).await;
    assert_eq!(status, 404);
    assert!(doc["paths"].get("/api/nope").is_none());
}
