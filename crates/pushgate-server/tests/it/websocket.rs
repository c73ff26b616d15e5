//! The WebSocket transport: ping command, heartbeat Pings, idle timeout,
//! error replies that leave the connection usable, close codes.

use std::time::{Duration, Instant};

use crate::common::*;
use pushgate_server::metrics::Transport;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn ping_command_gets_pong_with_the_id() {
    let server = start().await;
    let mut ws = server.ws("/ws").await;
    assert_eq!(
        ws.command(json!({"type": "ping", "id": 7})).await,
        json!({"type": "pong", "id": 7, "heartbeat": 15000})
    );
    assert_eq!(
        ws.command(json!({"type": "ping"})).await,
        json!({"type": "pong", "heartbeat": 15000}),
        "a WebSocket's pong announces its heartbeat interval (ms)"
    );
}

#[tokio::test]
async fn server_sends_a_ping_and_a_visible_ping_every_ws_ping_interval() {
    let server = start_with(|c| {
        c.ws_ping_interval = Duration::from_millis(200);
        c.ws_idle_timeout = Duration::from_secs(10);
    })
    .await;
    let mut ws = server.ws("/ws").await;
    let started = Instant::now();
    for _ in 0..2 {
        // A Ping for the server (browsers answer it by themselves), then a
        // text frame for the page's watchdog (browsers hide Pings).
        match ws.next_raw().await {
            Some(Ok(Message::Ping(_))) => {}
            other => panic!("expected a Ping frame, got {other:?}"),
        }
        match ws.next_raw().await {
            Some(Ok(Message::Text(t))) => assert_eq!(t.as_str(), HEARTBEAT),
            other => panic!("expected the text heartbeat, got {other:?}"),
        }
    }
    assert_eq!(
        ws.command(json!({"type": "ping"})).await,
        json!({"type": "pong", "heartbeat": 200}),
        "the pong announces the interval"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "two Pings 200 ms apart took only {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn client_that_never_answers_is_closed_with_4001_after_idle_timeout() {
    let server = start_with(|c| {
        c.ws_ping_interval = Duration::from_millis(100);
        c.ws_idle_timeout = Duration::from_millis(300);
    })
    .await;
    let mut raw = raw_ws(server.addr, "/ws", None).await;
    let started = Instant::now();
    let mut pings = 0;
    let close = within("the idle close", async {
        loop {
            match raw.read_frame().await {
                Some((OP_PING, _)) => pings += 1,
                Some((OP_TEXT, p)) if p == HEARTBEAT.as_bytes() => {}
                Some((OP_CLOSE, payload)) => return Some(payload),
                Some((op, p)) => panic!("unexpected frame {op:#x}: {p:?}"),
                None => return None,
            }
        }
    })
    .await;
    let elapsed = started.elapsed();
    let payload = close.expect("a close frame before the socket ends");
    assert_eq!(
        u16::from_be_bytes([payload[0], payload[1]]),
        4001,
        "close code, reason {:?}",
        String::from_utf8_lossy(&payload[2..])
    );
    assert!(pings >= 1, "Pings were sent before giving up");
    assert!(
        elapsed >= Duration::from_millis(250),
        "closed after {elapsed:?}, before the 300 ms idle timeout"
    );
}

#[tokio::test]
async fn client_answering_pings_outlives_the_idle_timeout() {
    let server = start_with(|c| {
        c.ws_ping_interval = Duration::from_millis(100);
        c.ws_idle_timeout = Duration::from_millis(300);
    })
    .await;
    let mut ws = server.ws("/ws").await;
    // Reading makes tungstenite answer each Ping with a Pong. Five Pings span
    // longer than the idle timeout.
    let mut pings = 0;
    while pings < 5 {
        match ws.next_raw().await {
            Some(Ok(Message::Ping(_))) => pings += 1,
            Some(Ok(Message::Text(t))) if t.as_str() == HEARTBEAT => {}
            other => panic!("expected a Ping (the connection must stay open), got {other:?}"),
        }
    }
    assert_eq!(
        ws.command(json!({"type": "ping", "id": 1})).await,
        json!({"type": "pong", "id": 1, "heartbeat": 100})
    );
}

#[tokio::test]
async fn each_malformed_command_gets_its_error_code_and_the_connection_stays_up() {
    let server = start_with(|c| c.max_subscriptions = 2).await;
    let mut ws = server.ws("/ws").await;
    ws.subscribe("dup").await;
    let cases: &[(&str, &str, Option<serde_json::Value>)] = &[
        ("{\"type\": \"ping\"", "bad_json", None),
        ("not json at all", "bad_json", None),
        ("[1, 2]", "bad_request", None),
        (r#"["ping", 7]"#, "bad_request", None),
        (
            r#"{"type":"dance","id":3}"#,
            "unknown_command",
            Some(json!(3)),
        ),
        (r#"{"id":"no-type"}"#, "bad_request", Some(json!("no-type"))),
        (
            r#"{"type":"subscribe","id":4}"#,
            "bad_request",
            Some(json!(4)),
        ),
        (r#"{"type":"subscribe","channel":7}"#, "bad_request", None),
        (
            r#"{"type":"publish","channel":"p","id":5}"#,
            "bad_request",
            Some(json!(5)),
        ),
        (
            r#"{"type":"subscribe","channel":"a b","id":6}"#,
            "invalid_channel",
            Some(json!(6)),
        ),
        (
            r#"{"type":"subscribe","channel":"ok","since":"zz","id":7}"#,
            "invalid_cursor",
            Some(json!(7)),
        ),
        (
            r#"{"type":"publish","channel":"p","data":1,"event":"a b"}"#,
            "invalid_event",
            None,
        ),
        (
            r#"{"type":"subscribe","channel":"dup","id":8}"#,
            "already_subscribed",
            Some(json!(8)),
        ),
        (
            r#"{"type":"unsubscribe","channel":"never"}"#,
            "not_subscribed",
            None,
        ),
        (
            r#"{"type":"ping","id":{"an":"object"}}"#,
            "bad_request",
            None,
        ),
    ];
    for (frame, code, id) in cases {
        let reply = ws.command_text(frame).await;
        assert_eq!(reply["type"], "error", "{frame} → {reply}");
        assert_eq!(reply["code"], *code, "{frame} → {reply}");
        assert!(reply["message"].is_string(), "{reply}");
        match id {
            Some(id) => assert_eq!(&reply["id"], id, "{frame} → {reply}"),
            None => assert!(reply.get("id").is_none(), "{frame} → {reply}"),
        }
        let pong = ws.command(json!({"type": "ping"})).await;
        assert_eq!(
            pong["type"], "pong",
            "after {frame} the connection still works"
        );
    }

    ws.subscribe("second").await;
    let third = ws
        .command(json!({"type": "subscribe", "channel": "third", "id": 9}))
        .await;
    assert_eq!(third["code"], "too_many_subscriptions", "{third}");
}

#[tokio::test]
async fn binary_frame_from_the_client_gets_bad_request_and_the_connection_stays_up() {
    let server = start().await;
    let mut ws = server.ws("/ws").await;
    ws.send(Message::binary(b"{\"type\":\"ping\"}".to_vec()))
        .await;
    let reply = ws.next_json().await;
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["code"], "bad_request", "{reply}");
    assert_eq!(
        ws.command(json!({"type": "ping", "id": 2})).await,
        json!({"type": "pong", "id": 2, "heartbeat": 15000})
    );
}

#[tokio::test]
async fn client_close_is_answered_and_the_connection_is_released() {
    let server = start().await;
    let mut ws = server.ws("/ws?channel=bye").await;
    assert_subscribed(&ws.next_json().await, "bye");
    wait_until("the WS connection to be counted", || {
        server.open(Transport::Ws) == 1
    })
    .await;
    ws.send(Message::Close(None)).await;
    match ws.next_raw().await {
        Some(Ok(Message::Close(_))) => {}
        other => panic!("expected the server's Close reply, got {other:?}"),
    }
    wait_until("the WS connection to be released", || {
        server.open(Transport::Ws) == 0
    })
    .await;
}
