//! What an operator watches: `/livez`, `/readyz` (and its alias
//! `/healthz`) with the store's check, and the metrics operators build
//! dashboards and alerts on — build info, process figures, the delivery
//! latency histogram, publishes by source, every transport's connections,
//! refusals by reason, server API requests by endpoint and status.

use std::time::{SystemTime, UNIX_EPOCH};

use pushgate_core::auth::token::{mint_hs256, Claims};
use serde_json::{json, Value};

use crate::common::*;

const SECRET: &str = "an-hs256-secret-of-at-least-32-bytes";

async fn readyz(server: &TestServer, path: &str) -> (u16, Value) {
    server
        .json_response(server.http.get(server.url(path)))
        .await
}

fn check<'a>(body: &'a Value, name: &str) -> &'a Value {
    body["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no {name} check in {body}"))
}

#[tokio::test]
async fn livez_and_readyz_answer_and_healthz_is_readyz() {
    let server = start().await;
    let (status, body) = readyz(&server, "/livez").await;
    assert_eq!((status, body), (200, json!({"status": "ok"})));
    for path in ["/readyz", "/healthz"] {
        let (status, body) = readyz(&server, path).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(body["status"], "ok");
        assert_eq!(check(&body, "shutdown")["ok"], true);
        assert!(body.get("failing").is_none(), "{body}");
    }
    let text = server.metrics_text().await;
    assert_eq!(metric(&text, "pushgate_ready"), Some(1), "{text}");
}

#[tokio::test]
async fn readyz_fails_naming_the_store_when_its_directory_takes_no_writes() {
    let dir = std::env::temp_dir().join(format!(
        "pushgate-readyz-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let server = start_bound(|c| c.data_dir = Some(dir.display().to_string())).await;
    // The first probe runs at start; until it has, the store is "not
    // checked yet" and the node not ready.
    let mut body = Value::Null;
    for _ in 0..200 {
        let (status, b) = readyz(&server, "/readyz").await;
        body = b;
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(body["status"], "ok", "{body}");
    let store = check(&body, "store");
    assert_eq!(store["ok"], true, "{body}");
    assert!(
        store["detail"]
            .as_str()
            .unwrap()
            .contains("write and a sync"),
        "{body}"
    );

    // The directory goes away (a volume unmounted, say): root or not,
    // nothing can be written there any more.
    let moved = dir.with_extension("moved");
    std::fs::rename(&dir, &moved).unwrap();
    let mut failing = Value::Null;
    for _ in 0..300 {
        let (status, b) = readyz(&server, "/readyz").await;
        if status == 503 {
            failing = b;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(failing["status"], "unavailable", "{failing}");
    assert_eq!(failing["failing"], json!(["store"]), "{failing}");
    assert!(
        check(&failing, "store")["detail"]
            .as_str()
            .unwrap()
            .contains("does not take writes"),
        "{failing}"
    );
    let text = server.metrics_text().await;
    assert_eq!(metric(&text, "pushgate_ready"), Some(0));
    std::fs::rename(&moved, &dir).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn readyz_fails_while_the_server_stops() {
    let mut server = start().await;
    // A keep-alive connection opened before the stop asks during it.
    let (status, _) = readyz(&server, "/readyz").await;
    assert_eq!(status, 200);
    server.state.registry.shut_down_all();
    let (status, body) = readyz(&server, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["failing"], json!(["shutdown"]));
    server.signal_shutdown();
    server.stopped().await;
}

#[tokio::test]
async fn metrics_show_the_build_the_process_and_a_latency_per_delivery() {
    let server = start().await;
    let text = server.metrics_text().await;
    assert!(
        text.contains(&format!(
            "pushgate_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    for series in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        assert!(metric(&text, series).is_some_and(|v| v > 0), "{series}");
    }
    assert!(text.contains("process_cpu_seconds_total "), "{text}");

    // Messages delivered on three paths: a WebSocket (fan-out writes it
    // straight to the socket, or the connection's task), an SSE stream
    // and a waiting long-poll.
    let mut ws = server.ws("/ws?channel=lat").await;
    assert_subscribed(&ws.next_json().await, "lat");
    let mut sse = server.sse("channel=lat").await;
    sse.expect_subscribed("lat").await;
    for n in 1..=3 {
        server.publish("lat", json!(n)).await;
    }
    ws.expect_messages("lat", 1..=3).await;
    for n in 1..=3 {
        sse.expect_message("lat", n).await;
    }
    let text = server.metrics_text().await;
    for t in ["ws", "sse"] {
        let count = metric(
            &text,
            &format!("pushgate_delivery_latency_seconds_count{{transport=\"{t}\"}}"),
        );
        assert_eq!(count, Some(3), "{t}: one observation per delivery\n{text}");
        let inf = metric(
            &text,
            &format!("pushgate_delivery_latency_seconds_bucket{{transport=\"{t}\",le=\"+Inf\"}}"),
        );
        assert_eq!(inf, Some(3), "{t}");
    }
    // Messages read back from history (a catch-up) are no live delivery.
    let polled = server.poll("/poll?channel=lat&since=earliest").await;
    assert_eq!(polled.messages.len(), 3);
    let text = server.metrics_text().await;
    assert_eq!(
        metric(
            &text,
            "pushgate_delivery_latency_seconds_count{transport=\"poll\"}"
        ),
        Some(0)
    );
}

#[tokio::test]
async fn every_publish_and_every_transports_connection_is_counted() {
    let server = start().await;
    server.publish("c", json!(1)).await;
    let (status, _) = server
        .command(r#"{"type":"publish","channel":"c","data":2}"#)
        .await;
    assert_eq!(status, 200);
    server.poll("/poll?channel=c").await;
    server.poll("/poll?channel=c").await;
    // A long-poll that finds messages answers at once; one that waits is
    // answered by a publish.
    server.poll("/longpoll?channel=c&since=earliest").await;
    let text = server.metrics_text().await;
    for (series, value) in [
        ("pushgate_messages_published_total{source=\"api\"}", 1),
        ("pushgate_messages_published_total{source=\"client\"}", 1),
        ("pushgate_messages_published_total{source=\"demo\"}", 0),
        ("pushgate_connections_total{transport=\"poll\"}", 2),
        ("pushgate_connections_total{transport=\"longpoll\"}", 1),
        ("pushgate_connections{transport=\"poll\"}", 0),
        (
            "pushgate_messages_delivered_total{transport=\"longpoll\"}",
            2,
        ),
        (
            "pushgate_api_requests_total{endpoint=\"publish\",status=\"2xx\"}",
            1,
        ),
    ] {
        assert_eq!(metric(&text, series), Some(value), "{series} in\n{text}");
    }
    let (status, _) = server
        .json_response(
            server
                .http
                .post(server.url("/api/publish"))
                .body("not json"),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = server
        .json_response(server.http.get(server.url("/api/history?channel=c")))
        .await;
    assert_eq!(status, 200);
    let text = server.metrics_text().await;
    for (series, value) in [
        (
            "pushgate_api_requests_total{endpoint=\"publish\",status=\"4xx\"}",
            1,
        ),
        (
            "pushgate_api_requests_total{endpoint=\"history\",status=\"2xx\"}",
            1,
        ),
    ] {
        assert_eq!(metric(&text, series), Some(value), "{series} in\n{text}");
    }
}

#[tokio::test]
async fn the_demo_clock_counts_as_a_publish() {
    let server = start_with(|c| c.demo = true).await;
    let mut ws = server.ws("/ws?channel=clock").await;
    assert_subscribed(&ws.next_json().await, "clock");
    let tick = ws.next_json().await;
    assert_eq!(tick["channel"], "clock", "{tick}");
    let text = server.metrics_text().await;
    assert!(
        metric(&text, "pushgate_messages_published_total{source=\"demo\"}").is_some_and(|n| n >= 1),
        "{text}"
    );
}

#[tokio::test]
async fn refusals_are_counted_by_reason() {
    let server = start_with(|c| {
        c.auth_secret = Some(SECRET.into());
        c.api_key = Some("the-key".into());
        c.allowed_origins = vec!["https://app.example".into()];
    })
    .await;
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let alice = mint_hs256(
        SECRET,
        &Claims {
            sub: Some("alice".into()),
            exp: Some(exp),
            channels: vec!["mine".into()],
            ..Default::default()
        },
        None,
    )
    .unwrap();
    // token: a forged one on SSE.
    let res = server.get("/sse?channel=mine&token=forged").await;
    assert_eq!(res.status(), 401);
    // permission: a good token, a channel it does not grant.
    let res = server
        .get(&format!("/poll?channel=theirs&token={alice}"))
        .await;
    assert_eq!(res.status(), 403);
    // api_key: the wrong key.
    let res = server
        .http
        .get(server.url("/api/history?channel=mine"))
        .bearer_auth("not-the-key")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    // origin: a foreign page opening a WebSocket.
    let res = server
        .ws_upgrade_request("/ws")
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let text = server.metrics_text().await;
    for (reason, n) in [
        ("token", 1),
        ("permission", 1),
        ("api_key", 1),
        ("origin", 1),
        ("admin", 0),
    ] {
        assert_eq!(
            metric(
                &text,
                &format!("pushgate_auth_refusals_total{{reason=\"{reason}\"}}")
            ),
            Some(n),
            "{reason} in\n{text}"
        );
    }
}
