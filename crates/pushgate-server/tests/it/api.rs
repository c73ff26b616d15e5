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
    assert_eq!((status, body), (200, json!({"status": "ok"})));
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
        metric(&before, "pushgate_messages_published_total"),
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
        ("pushgate_messages_published_total", 1),
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

// ---------------------------------------------------------------------------
// Batches, broadcasts, and what the server holds (channels, info,
// connections). Over several nodes: `broker.rs`.

/// `GET path` (or `POST path` with `body`); status and JSON.
async fn call(server: &TestServer, path: &str, body: Option<Value>) -> (u16, Value) {
    let req = match body {
        Some(b) => server.http.post(server.url(path)).json(&b),
        None => server.http.get(server.url(path)),
    };
    server.json_response(req).await
}

#[tokio::test]
async fn batch_answers_each_publication_in_order_and_errors_in_place() {
    let server = start_with(|c| c.max_message_size = 1024).await;
    let mut ws = server.ws("/ws").await;
    ws.subscribe("b").await;
    let (status, reply) = call(
        &server,
        "/api/batch",
        Some(json!({"publications": [
            {"channel": "b", "data": 1},
            {"channel": "bad name", "data": 2},
            {"channel": "b", "data": "x".repeat(2000)},
            {"channel": "b", "event": "e", "data": {"k": 3}},
            {"data": 4},
        ]})),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let r = reply["results"].as_array().unwrap();
    assert_eq!(r.len(), 5, "{reply}");
    assert_eq!(
        (&r[0]["channel"], &r[0]["offset"]),
        (&json!("b"), &json!(1))
    );
    assert!(r[0]["epoch"].is_string());
    assert_eq!(r[1]["error"]["code"], "invalid_channel", "{reply}");
    assert_eq!(r[2]["error"]["code"], "too_large", "{reply}");
    assert_eq!(r[3]["offset"], 2, "{reply}");
    assert_eq!(r[4]["error"]["code"], "bad_request", "{reply}");
    let got = ws.next_json().await;
    assert_eq!((&got["offset"], &got["data"]), (&json!(1), &json!(1)));
    let got = ws.next_json().await;
    assert_eq!(
        (&got["event"], &got["data"]),
        (&json!("e"), &json!({"k": 3}))
    );
    let metrics = server.metrics_text().await;
    assert_eq!(
        metric(&metrics, "pushgate_messages_published_total"),
        Some(2)
    );
}

#[tokio::test]
async fn batch_and_broadcast_refuse_malformed_and_oversized_requests() {
    let server = start_with(|c| c.max_message_size = 1024).await;
    let too_many: Vec<Value> = (0..1001)
        .map(|_| json!({"channel": "c", "data": 0}))
        .collect();
    let channels: Vec<String> = (0..1001).map(|i| format!("c{i}")).collect();
    for (path, body, status, code) in [
        (
            "/api/batch",
            json!({"publications": too_many}),
            413,
            "too_large",
        ),
        (
            "/api/batch",
            json!({"publications": []}),
            400,
            "bad_request",
        ),
        ("/api/batch", json!({"publications": 1}), 400, "bad_request"),
        ("/api/batch", json!([1]), 400, "bad_request"),
        ("/api/batch", json!({"items": []}), 400, "bad_request"),
        (
            "/api/broadcast",
            json!({"channels": channels, "data": 1}),
            413,
            "too_large",
        ),
        (
            "/api/broadcast",
            json!({"channels": ["a"]}),
            400,
            "bad_request",
        ),
        (
            "/api/broadcast",
            json!({"channels": ["a"], "data": 1, "event": "x y"}),
            400,
            "invalid_event",
        ),
        (
            "/api/broadcast",
            json!({"channels": ["a"], "data": "x".repeat(2000)}),
            413,
            "too_large",
        ),
    ] {
        let (got, reply) = call(&server, path, Some(body)).await;
        assert_eq!(
            (got, reply["code"].clone()),
            (status, json!(code)),
            "{path}: {reply}"
        );
    }
    // Not JSON at all; and a body past 16 × max_message_size.
    let req = server
        .http
        .post(server.url("/api/batch"))
        .body("{\"publications\":");
    let (status, reply) = server.json_response(req).await;
    assert_eq!(
        (status, &reply["code"]),
        (400, &json!("bad_json")),
        "{reply}"
    );
    let huge = format!("{{\"publications\":[\"{}\"]}}", "x".repeat(17 * 1024));
    let req = server.http.post(server.url("/api/batch")).body(huge);
    let (status, reply) = server.json_response(req).await;
    assert_eq!(
        (status, &reply["code"]),
        (413, &json!("too_large")),
        "{reply}"
    );
}

#[tokio::test]
async fn broadcast_publishes_one_message_on_every_channel() {
    let server = start().await;
    let mut ws = server.ws("/ws").await;
    ws.subscribe("x").await;
    ws.subscribe("y").await;
    server.publish("y", json!(0)).await;
    assert_eq!(ws.next_json().await["channel"], "y");
    let (status, reply) = call(
        &server,
        "/api/broadcast",
        Some(json!({"channels": ["x", "y", "no way"], "event": "ev", "data": {"hi": true}})),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let r = &reply["results"];
    assert_eq!(
        (&r[0]["channel"], &r[0]["offset"]),
        (&json!("x"), &json!(1))
    );
    assert_eq!(
        (&r[1]["channel"], &r[1]["offset"]),
        (&json!("y"), &json!(2))
    );
    assert_eq!(r[2]["error"]["code"], "invalid_channel", "{reply}");
    for channel in ["x", "y"] {
        let got = ws.next_json().await;
        assert_eq!(
            (&got["channel"], &got["event"], &got["data"]),
            (&json!(channel), &json!("ev"), &json!({"hi": true}))
        );
    }
}

#[tokio::test]
async fn channels_lists_subscribed_channels_paged_filtered_and_busiest_first() {
    let server = start().await;
    let mut a = server.ws("/ws").await;
    a.subscribe("chat:a").await;
    a.subscribe("chat:b").await;
    let mut b = server.ws("/ws").await;
    b.subscribe("chat:b").await;
    let mut sse = server.sse("channel=news&channel=chat:b").await;
    sse.expect_subscribed("news").await;
    sse.expect_subscribed("chat:b").await;

    let (status, all) = call(&server, "/api/channels", None).await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(
        all,
        json!({"channels": [
            {"channel": "chat:a", "subscribers": 1},
            {"channel": "chat:b", "subscribers": 3},
            {"channel": "news", "subscribers": 1},
        ], "next": null, "missing": []})
    );
    let (_, chat) = call(&server, "/api/channels?pattern=chat:*&limit=1", None).await;
    assert_eq!(
        chat["channels"],
        json!([{"channel": "chat:a", "subscribers": 1}])
    );
    assert_eq!(chat["next"], "chat:a");
    let (_, rest) = call(
        &server,
        "/api/channels?pattern=chat:*&limit=1&after=chat:a",
        None,
    )
    .await;
    assert_eq!(
        rest["channels"],
        json!([{"channel": "chat:b", "subscribers": 3}])
    );
    assert_eq!(rest["next"], Value::Null, "{rest}");
    let (_, busy) = call(&server, "/api/channels?order=busiest&limit=2", None).await;
    assert_eq!(
        busy["channels"][0],
        json!({"channel": "chat:b", "subscribers": 3})
    );
    assert_eq!(busy["channels"].as_array().unwrap().len(), 2);
    assert_eq!(busy["next"], Value::Null);
    let (_, exact) = call(&server, "/api/channels?pattern=news", None).await;
    assert_eq!(
        exact["channels"],
        json!([{"channel": "news", "subscribers": 1}])
    );

    for bad in [
        "pattern=",
        "limit=0",
        "limit=1001",
        "limit=ten",
        "order=loudest",
        "order=busiest&after=a",
        "channel=a",
    ] {
        let (status, reply) = call(&server, &format!("/api/channels?{bad}"), None).await;
        assert_eq!(
            (status, &reply["code"]),
            (400, &json!("bad_request")),
            "{bad}: {reply}"
        );
    }
    drop(a);
    wait_until("chat:a to lose its subscriber", || {
        server.subscribers("chat:a") == 0
    })
    .await;
    let (_, after) = call(&server, "/api/channels?pattern=chat:a", None).await;
    assert_eq!(
        after["channels"],
        json!([]),
        "an empty channel is not listed"
    );
}

#[tokio::test]
async fn info_reports_this_node_as_the_only_one() {
    let server = start().await;
    let _ws = server.ws("/ws?channel=i").await;
    server.publish("i", json!(1)).await;
    let (status, info) = call(&server, "/api/info", None).await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(info["node"], 0);
    assert!(info["uptime_seconds"].is_u64(), "{info}");
    assert_eq!(info["missing"], json!([]));
    let nodes = info["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{info}");
    let n = &nodes[0];
    assert_eq!((&n["node"], &n["version"]), (&json!(0), &info["version"]));
    assert_eq!(n["connections"]["ws"], 1, "{info}");
    assert_eq!(n["connections"]["total"], 1, "{info}");
    assert_eq!(n["connections"]["longpoll"], 0, "{info}");
    assert_eq!(
        (&n["channels"], &n["published"]),
        (&json!(1), &json!(1)),
        "{info}"
    );
    assert!(n["delivered"].is_u64(), "{info}");
}

#[tokio::test]
async fn connections_lists_a_users_held_connections_not_short_polls() {
    use crate::users::{token, user_ws, with_users};
    let server = start_with(with_users).await;
    let ws = user_ws(&server, "alice").await;
    let mut sse = server
        .sse(&format!("channel=chat:x&token={}", token("alice")))
        .await;
    sse.expect_subscribed("chat:x").await;
    let _other = user_ws(&server, "bob").await;
    // A short poll holds no connection: not listed.
    let polled = server
        .poll(&format!("/poll?channel=chat:x&token={}", token("alice")))
        .await;
    drop(polled);

    let (status, reply) = call(&server, "/api/connections?user=alice", None).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["user"], "alice");
    let list = reply["connections"].as_array().unwrap();
    let transports: Vec<&str> = list
        .iter()
        .map(|c| c["transport"].as_str().unwrap())
        .collect();
    assert_eq!(transports, ["ws", "sse"], "{reply}");
    for c in list {
        assert_eq!(c["node"], 0);
        let address: std::net::SocketAddr = c["address"].as_str().unwrap().parse().unwrap();
        assert!(
            address.ip().is_loopback() && address.port() != server.addr.port(),
            "{c}"
        );
        let since = c["since"].as_str().unwrap();
        assert!(
            since.len() == 20 && since.ends_with('Z') && &since[10..11] == "T",
            "{since}"
        );
        assert!(c["id"].as_str().unwrap().parse::<u64>().is_ok(), "{c}");
    }
    drop(ws);
    wait_until("alice's WebSocket to be gone", || {
        server.open(Transport::Ws) == 1
    })
    .await;
    let (_, reply) = call(&server, "/api/connections?user=alice", None).await;
    assert_eq!(reply["connections"].as_array().unwrap().len(), 1, "{reply}");

    let (status, reply) = call(&server, "/api/connections?user=nobody", None).await;
    assert_eq!(
        (status, &reply["connections"]),
        (200, &json!([])),
        "{reply}"
    );
    for bad in ["", "?user=", "?who=alice"] {
        let (status, reply) = call(&server, &format!("/api/connections{bad}"), None).await;
        assert_eq!(
            (status, &reply["code"]),
            (400, &json!("bad_request")),
            "{bad}: {reply}"
        );
    }
}

#[tokio::test]
async fn the_new_endpoints_need_the_api_key() {
    let server = start_with(|c| c.api_key = Some("k".into())).await;
    for (path, body) in [
        (
            "/api/batch",
            Some(json!({"publications": [{"channel": "a", "data": 1}]})),
        ),
        (
            "/api/broadcast",
            Some(json!({"channels": ["a"], "data": 1})),
        ),
        ("/api/channels", None),
        ("/api/info", None),
        ("/api/connections?user=a", None),
    ] {
        let (status, reply) = call(&server, path, body.clone()).await;
        assert_eq!(
            (status, &reply["code"]),
            (401, &json!("unauthorized")),
            "{path}"
        );
        let req = match body {
            Some(b) => server.http.post(server.url(path)).json(&b),
            None => server.http.get(server.url(path)),
        };
        let (status, reply) = server
            .json_response(req.header("authorization", "Bearer k"))
            .await;
        assert_eq!(status, 200, "{path}: {reply}");
    }
}
