//! The HTTP API and routing: publish errors, the API key, history, health,
//! metrics, 404/405/426.

use crate::common::*;
use pushgate_server::metrics::Transport;
use serde_json::{json, Value};

async fn post_publish(server: &TestServer, body: &'static str) -> (u16, Value) {
    server
        .json_response(
            server
                .http
                .post(server.url("/api/publish"))
                .header("content-type", "application/json")
                .body(body),
        )
        .await
}

#[tokio::test]
async fn publish_answers_the_position() {
    let server = start().await;
    let first = server.publish("api", json!({"k": [1, 2]})).await;
    assert!(first["epoch"].is_string(), "{first}");
    assert_eq!(first["offset"], 1);
    let second = server.publish("api", json!(null)).await;
    assert_eq!(second["offset"], 2);
    assert_eq!(second["epoch"], first["epoch"]);
}

#[tokio::test]
async fn publish_rejects_bad_bodies_with_codes() {
    let server = start_with(|c| c.max_message_size = 1024).await;
    for (body, status, code) in [
        ("{\"channel\":", 400, "bad_json"),
        ("not json", 400, "bad_json"),
        ("[1]", 400, "bad_request"),
        (r#"["a", null, "a", null, 1]"#, 400, "bad_request"),
        (r#"{"data":1}"#, 400, "bad_request"),
        (r#"{"channel":"a"}"#, 400, "bad_request"),
        (r#"{"channel":"a b","data":1}"#, 400, "invalid_channel"),
        (
            r#"{"channel":"a","data":1,"event":"x y"}"#,
            400,
            "invalid_event",
        ),
    ] {
        let (got, reply) = post_publish(&server, body).await;
        assert_eq!(
            (got, reply["code"].clone()),
            (status, json!(code)),
            "{body}: {reply}"
        );
        assert_eq!(reply["type"], "error");
        assert!(reply["message"].is_string());
    }
}

#[tokio::test]
async fn publish_body_over_max_message_size_is_413_too_large() {
    let server = start_with(|c| c.max_message_size = 1024).await;
    let body = json!({"channel": "big", "data": "x".repeat(4096)}).to_string();
    let req = server
        .http
        .post(server.url("/api/publish"))
        .header("content-type", "application/json")
        .body(body);
    let (status, reply) = server.json_response(req).await;
    assert_eq!(status, 413, "{reply}");
    assert_eq!(reply["code"], "too_large");
    // Just under the limit is accepted.
    server.publish("big", json!("x".repeat(900))).await;
}

#[tokio::test]
async fn api_key_is_required_when_configured() {
    let server = start_with(|c| c.api_key = Some("k".into())).await;
    let publish = |auth: Option<&'static str>| {
        let mut req = server
            .http
            .post(server.url("/api/publish"))
            .json(&json!({"channel": "sec", "data": 1}));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        req
    };
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Bearer "),
        Some("k"),
        Some("Bearer kk"),
    ] {
        let (status, reply) = server.json_response(publish(auth)).await;
        assert_eq!(status, 401, "{auth:?}: {reply}");
        assert_eq!(reply["code"], "unauthorized", "{auth:?}");
    }
    let (status, reply) = server.json_response(publish(Some("Bearer k"))).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["offset"], 1);

    let history = server.http.get(server.url("/api/history?channel=sec"));
    assert_eq!(server.json_response(history).await.0, 401);
    let history = server
        .http
        .get(server.url("/api/history?channel=sec"))
        .header("authorization", "Bearer k");
    assert_eq!(server.json_response(history).await.0, 200);
}

#[tokio::test]
async fn history_returns_messages_and_a_cursor_to_read_on() {
    let server = start().await;
    let epoch = server.publish_n("hist", 5).await;
    let history = |query: String| {
        let req = server
            .http
            .get(server.url(&format!("/api/history?{query}")));
        server.json_response(req)
    };

    let (status, page) = history("channel=hist&limit=2".into()).await;
    assert_eq!(status, 200, "{page}");
    let offsets = |page: &Value| -> Vec<u64> {
        page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["offset"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(offsets(&page), [1, 2]);
    assert_eq!(page["messages"][0]["data"], json!({"n": 1}));
    assert_eq!(page["cursor"], cursor(&[("hist", &epoch, 2)]));

    let (_, next) = history(format!(
        "channel=hist&since={}",
        page["cursor"].as_str().unwrap()
    ))
    .await;
    assert_eq!(offsets(&next), [3, 4, 5]);
    assert_eq!(next["cursor"], cursor(&[("hist", &epoch, 5)]));

    let (_, all) = history("channel=hist".into()).await;
    assert_eq!(
        offsets(&all),
        [1, 2, 3, 4, 5],
        "without since: from the oldest"
    );

    let (_, end) = history(format!(
        "channel=hist&since={}",
        next["cursor"].as_str().unwrap()
    ))
    .await;
    assert_eq!(offsets(&end), Vec::<u64>::new());
    assert_eq!(end["cursor"], next["cursor"], "nothing new: same cursor");

    for bad in [
        "",
        "channel=hist&limit=0",
        "channel=hist&limit=1001",
        "channel=hist&limit=x",
        "channel=a&channel=b",
    ] {
        let (status, body) = history(bad.into()).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
}

#[tokio::test]
async fn history_from_trimmed_position_starts_with_reset() {
    let server = start_with(|c| c.history_size = 3).await;
    let epoch = server.publish_n("t", 6).await;
    let req = server.http.get(server.url(&format!(
        "/api/history?channel=t&since={}",
        cursor(&[("t", &epoch, 1)])
    )));
    let (status, page) = server.json_response(req).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        page["messages"],
        json!([{"type": "reset", "channel": "t", "epoch": epoch, "offset": 6}])
    );
    assert_eq!(page["cursor"], cursor(&[("t", &epoch, 6)]));
}

#[tokio::test]
async fn healthz_answers_ok() {
    let server = start().await;
    let (status, body) = server
        .json_response(server.http.get(server.url("/healthz")))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ok", "{body}");
    assert_eq!(
        body["checks"],
        json!([{"name": "shutdown", "ok": true, "detail": "serving"}]),
        "in memory, only the shutdown check: nothing to probe"
    );
    let head = server
        .http
        .head(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
}

#[tokio::test]
async fn metrics_count_open_connections_and_traffic() {
    let server = start().await;
    let before = server.metrics_text().await;
    assert_eq!(
        metric(&before, "pushgate_connections{transport=\"ws\"}"),
        Some(0)
    );
    assert_eq!(
        metric(&before, "pushgate_messages_published_total{source=\"api\"}"),
        Some(0)
    );

    let mut ws = server.ws("/ws?channel=m").await;
    assert_subscribed(&ws.next_json().await, "m");
    let mut sse = server.sse("channel=m").await;
    sse.expect_subscribed("m").await;
    // The WS counter is taken in the upgraded task, which may lag the 101.
    wait_until("the WS connection to be counted", || {
        server.open(Transport::Ws) == 1
    })
    .await;
    server.publish("m", json!(1)).await;
    ws.expect_messages("m", 1..=1).await;
    sse.expect_message("m", 1).await;

    let during = server.metrics_text().await;
    for (series, value) in [
        ("pushgate_connections{transport=\"ws\"}", 1),
        ("pushgate_connections{transport=\"sse\"}", 1),
        ("pushgate_connections_total{transport=\"ws\"}", 1),
        ("pushgate_messages_published_total{source=\"api\"}", 1),
        ("pushgate_messages_delivered_total{transport=\"ws\"}", 1),
        ("pushgate_messages_delivered_total{transport=\"sse\"}", 1),
        ("pushgate_subscribers_dropped_total{transport=\"ws\"}", 0),
    ] {
        assert_eq!(
            metric(&during, series),
            Some(value),
            "{series} in\n{during}"
        );
    }
    assert!(!during.contains("channel=\"m\""), "no channel labels");

    drop(ws);
    wait_until("the WS connection to be released", || {
        server.open(Transport::Ws) == 0
    })
    .await;
    let after = server.metrics_text().await;
    assert_eq!(
        metric(&after, "pushgate_connections{transport=\"ws\"}"),
        Some(0)
    );
}

#[tokio::test]
async fn unknown_paths_wrong_methods_and_plain_gets_on_ws_are_refused() {
    let server = start().await;
    let (status, body) = server
        .json_response(server.http.get(server.url("/nope")))
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["type"], "error");
    assert_eq!(body["code"], "not_found", "{body}");

    // With demo off, `/` is unknown too.
    assert_eq!(server.get("/").await.status(), 404);

    for (method, path, allow) in [
        (reqwest::Method::GET, "/api/publish", "POST"),
        (reqwest::Method::DELETE, "/api/history", "GET"),
        (reqwest::Method::POST, "/sse", "GET"),
        (reqwest::Method::POST, "/healthz", "HEAD"),
        (reqwest::Method::POST, "/ws", "GET"),
    ] {
        let res = server
            .http
            .request(method.clone(), server.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 405, "{method} {path}");
        let allowed = res
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_else(|| panic!("{method} {path}: 405 without Allow"));
        let methods: Vec<&str> = allowed.split(',').map(str::trim).collect();
        assert!(
            methods.contains(&allow) && !methods.contains(&method.as_str()),
            "{method} {path}: Allow: {allowed}"
        );
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["type"], "error");
    }

    let res = server.get("/ws").await;
    assert_eq!(res.status(), 426);
    assert_eq!(res.headers()["upgrade"], "websocket");
}
