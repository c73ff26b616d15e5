//! Cross-origin access: `Access-Control-Allow-Origin` for allowed origins on
//! the browser-facing endpoints, every HTTP transport's preflight, and
//! refusal of `POST /command` and WebSocket upgrades from origins that are
//! neither allowed nor ours.

use crate::common::*;
use reqwest::header::HeaderMap;
use serde_json::json;

const APP: &str = "https://app.example";
const EVIL: &str = "https://evil.example";

/// Every HTTP transport, and `/command`: each answers its preflight.
const PREFLIGHTED: [&str; 6] = [
    "/sse",
    "/stream",
    "/iframe",
    "/poll",
    "/longpoll",
    "/command",
];

async fn server_allowing_app() -> TestServer {
    start_with(|c| c.allowed_origins = vec![APP.into()]).await
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).map(|v| v.to_str().unwrap())
}

/// Asserts the CORS answer headers for an allowed `origin`.
fn assert_allowed(h: &HeaderMap, origin: &str, what: &str) {
    assert_eq!(
        header(h, "access-control-allow-origin"),
        Some(origin),
        "{what}"
    );
    let vary: Vec<&str> = h
        .get_all("vary")
        .iter()
        .flat_map(|v| v.to_str().unwrap().split(','))
        .map(str::trim)
        .collect();
    assert!(
        vary.iter().any(|v| v.eq_ignore_ascii_case("origin")),
        "{what}: Vary {vary:?}"
    );
}

/// Sends a request and returns status and headers; the body is not read
/// (streams never end).
async fn head_of(req: reqwest::RequestBuilder) -> (u16, HeaderMap) {
    let res = within("a response head", req.send())
        .await
        .expect("the request is answered");
    (res.status().as_u16(), res.headers().clone())
}

/// A request of each browser-facing endpoint, with `origin`.
fn browser_requests(
    server: &TestServer,
    origin: &str,
) -> Vec<(&'static str, reqwest::RequestBuilder)> {
    let get = |path: &str| server.http.get(server.url(path)).header("origin", origin);
    vec![
        ("/poll", get("/poll?channel=c")),
        ("/longpoll", get("/longpoll?channel=c&timeout=0")),
        ("/sse", get("/sse?channel=c")),
        ("/stream", get("/stream?channel=c")),
        ("/iframe", get("/iframe?channel=c&callback=cb")),
        (
            "/command",
            server
                .http
                .post(server.url("/command"))
                .header("origin", origin)
                .body(r#"{"type":"ping"}"#),
        ),
    ]
}

#[tokio::test]
async fn allowed_origin_is_echoed_with_vary_on_every_browser_endpoint() {
    let server = server_allowing_app().await;
    for (path, req) in browser_requests(&server, APP) {
        let (status, h) = head_of(req).await;
        assert_eq!(status, 200, "{path}");
        assert_allowed(&h, APP, path);
    }
    // Errors too, so the page can read why it was refused.
    let (status, h) = head_of(server.http.get(server.url("/poll")).header("origin", APP)).await;
    assert_eq!(status, 400);
    assert_allowed(&h, APP, "a /poll error");
}

#[tokio::test]
async fn other_origins_get_no_cors_headers() {
    let server = server_allowing_app().await;
    let same = format!("http://{}", server.addr);
    for origin in [EVIL, "null", same.as_str(), "https://app.example.evil"] {
        for (path, req) in browser_requests(&server, origin) {
            let (status, h) = head_of(req).await;
            let refused = path == "/command" && origin != same;
            assert_eq!(
                status,
                if refused { 403 } else { 200 },
                "{path} from {origin}"
            );
            assert_eq!(
                header(&h, "access-control-allow-origin"),
                None,
                "{path} from {origin}"
            );
        }
    }
    // No Origin at all: not a browser's cross-origin request.
    let (status, h) = head_of(server.http.get(server.url("/poll?channel=c"))).await;
    assert_eq!(status, 200);
    assert_eq!(header(&h, "access-control-allow-origin"), None);
}

/// A preflight as a browser sends it before a cross-origin request.
fn preflight(server: &TestServer, path: &str, origin: &str) -> reqwest::RequestBuilder {
    server
        .http
        .request(reqwest::Method::OPTIONS, server.url(path))
        .header("origin", origin)
        .header("access-control-request-method", "GET")
        .header(
            "access-control-request-headers",
            "authorization, last-event-id",
        )
}

#[tokio::test]
async fn preflight_from_an_allowed_origin_is_204_with_the_allowances() {
    let server = server_allowing_app().await;
    for path in PREFLIGHTED {
        let (status, h) = head_of(preflight(&server, path, APP)).await;
        assert_eq!(status, 204, "{path}");
        assert_allowed(&h, APP, path);
        let methods = header(&h, "access-control-allow-methods").unwrap_or("");
        for m in ["GET", "POST"] {
            assert!(methods.contains(m), "{path}: Allow-Methods {methods}");
        }
        let headers = header(&h, "access-control-allow-headers")
            .unwrap_or("")
            .to_ascii_lowercase();
        for wanted in ["authorization", "content-type", "last-event-id"] {
            assert!(headers.contains(wanted), "{path}: Allow-Headers {headers}");
        }
        let max_age: u64 = header(&h, "access-control-max-age")
            .expect("a Max-Age")
            .parse()
            .unwrap();
        assert!(max_age > 0);
    }
}

#[tokio::test]
async fn preflight_from_a_refused_origin_is_403_json_without_cors_headers() {
    let server = server_allowing_app().await;
    for path in PREFLIGHTED {
        let res = within("a preflight", preflight(&server, path, EVIL).send())
            .await
            .unwrap();
        assert_eq!(res.status(), 403, "{path}");
        assert_eq!(
            header(res.headers(), "access-control-allow-origin"),
            None,
            "{path}"
        );
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["code"], "forbidden", "{path}: {body}");
    }
}

#[tokio::test]
async fn preflight_from_our_own_origin_is_204_without_cors_headers() {
    let server = server_allowing_app().await;
    let same = format!("http://{}", server.addr);
    for path in PREFLIGHTED {
        let (status, h) = head_of(preflight(&server, path, &same)).await;
        assert_eq!(status, 204, "{path}");
        assert_eq!(header(&h, "access-control-allow-origin"), None, "{path}");
    }
}

/// Endpoints not meant for cross-origin pages have no preflight, and a
/// WebSocket is never preflighted (its Origin is checked on the handshake).
#[tokio::test]
async fn routes_without_cors_have_no_preflight() {
    let server = server_allowing_app().await;
    for path in ["/ws", "/api/publish", "/api/history", "/pushgate.js"] {
        let (status, h) = head_of(preflight(&server, path, APP)).await;
        assert_eq!(status, 405, "{path}");
        assert_eq!(header(&h, "access-control-allow-origin"), None, "{path}");
    }
}

/// The front serves GETs and POSTs and hands a connection to hyper at its
/// first `OPTIONS`: the answers are the same before and after.
#[tokio::test]
async fn preflight_and_requests_on_one_connection() {
    let server = server_allowing_app().await;
    let host = server.addr;
    let mut conn = RawHttp::connect(server.addr, None).await;
    let get = format!("GET /poll?channel=c HTTP/1.1\r\nHost: {host}\r\nOrigin: {APP}\r\n\r\n");
    let allowed = format!("access-control-allow-origin: {APP}\r\n");

    conn.send(&get).await;
    let res = conn.read_response().await;
    assert_eq!(res.status, 200, "the front's GET: {}", res.head);
    assert!(
        res.head.to_ascii_lowercase().contains(&allowed),
        "{}",
        res.head
    );

    conn.send(&format!(
        "OPTIONS /poll HTTP/1.1\r\nHost: {host}\r\nOrigin: {APP}\r\n\
         Access-Control-Request-Method: GET\r\n\r\n"
    ))
    .await;
    let head = conn.read_head().await;
    assert!(head.starts_with("HTTP/1.1 204 "), "the preflight: {head}");
    assert!(head.to_ascii_lowercase().contains(&allowed), "{head}");

    conn.send(&get).await;
    let res = conn.read_response().await;
    assert_eq!(res.status, 200, "hyper's GET: {}", res.head);
    assert!(
        res.head.to_ascii_lowercase().contains(&allowed),
        "{}",
        res.head
    );
}

#[tokio::test]
async fn command_from_a_refused_origin_is_403_and_does_nothing() {
    let server = server_allowing_app().await;
    let publish = r#"{"type":"publish","channel":"guarded","data":1}"#;
    for origin in [EVIL, "null", "http://localhost.evil.example"] {
        let req = server
            .http
            .post(server.url("/command"))
            .header("origin", origin)
            .body(publish);
        let (status, body) = server.json_response(req).await;
        assert_eq!(status, 403, "from {origin}: {body}");
        assert_eq!(body["code"], "forbidden", "from {origin}: {body}");
    }
    let history = server.poll("/poll?channel=guarded&since=earliest").await;
    assert!(history.messages.is_empty(), "{history:?}");

    // Our own pages, allowed pages, and non-browser clients may publish.
    let same = format!("http://{}", server.addr);
    for origin in [Some(same.as_str()), Some(APP), None] {
        let mut req = server.http.post(server.url("/command")).body(publish);
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        let (status, body) = server.json_response(req).await;
        assert_eq!(status, 200, "from {origin:?}: {body}");
        assert_eq!(body["type"], "published");
    }
    let history = server.poll("/poll?channel=guarded&since=earliest").await;
    assert_eq!(history.messages.len(), 3);
}

#[tokio::test]
async fn websocket_upgrade_from_a_refused_origin_is_403() {
    let server = server_allowing_app().await;
    let (status, body) = server
        .json_response(server.ws_upgrade_request("/ws").header("origin", EVIL))
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], "forbidden", "{body}");

    let same = format!("http://{}", server.addr);
    for origin in [APP, same.as_str()] {
        let (_stream, head, _) = raw_request(
            server.addr,
            &format!(
                "GET /ws?channel=c HTTP/1.1\r\nHost: {}\r\nOrigin: {origin}\r\n\
                 Upgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                server.addr
            ),
            None,
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 101"), "from {origin}: {head}");
    }
}

#[tokio::test]
async fn wildcard_allows_any_origin_and_echoes_it() {
    let server = start_with(|c| c.allowed_origins = vec!["*".into()]).await;
    for origin in [EVIL, APP] {
        let (status, h) = head_of(
            server
                .http
                .get(server.url("/poll?channel=w"))
                .header("origin", origin),
        )
        .await;
        assert_eq!(status, 200);
        assert_allowed(&h, origin, origin);
        let req = server
            .http
            .post(server.url("/command"))
            .header("origin", origin)
            .json(&json!({"type": "ping"}));
        let (status, body) = server.json_response(req).await;
        assert_eq!((status, &body["type"]), (200, &json!("pong")), "{origin}");
    }
}
