//! Binary publish: raw bytes in, a binary frame on WebSocket, base64 on SSE
//! and in history.

use crate::common::*;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// Bytes that are not UTF-8 and hold a `\n`, so the header split is tested.
const PAYLOAD: &[u8] = b"\x00\xff\n{\"not\":\"json\"}\n\x80\x01";

#[tokio::test]
async fn binary_publish_reaches_ws_as_binary_frame_and_sse_as_base64() {
    let server = start().await;
    let mut ws = server.ws("/ws?channel=bin").await;
    assert_subscribed(&ws.next_json().await, "bin");
    let mut sse = server.sse("channel=bin").await;
    sse.expect_subscribed("bin").await;

    let reply = server.publish_binary("bin", PAYLOAD).await;
    assert_eq!(reply["offset"], 1, "{reply}");

    let frame = match ws.next_data().await {
        Message::Binary(b) => b,
        other => panic!("expected a binary frame, got {other:?}"),
    };
    let nl = frame
        .iter()
        .position(|&b| b == b'\n')
        .expect("a header line");
    let header: Value = serde_json::from_slice(&frame[..nl]).expect("the header is JSON");
    assert_message(&header, "bin", 1);
    assert_eq!(header["encoding"], "binary", "{header}");
    assert!(
        header.get("data").is_none(),
        "no data in the header: {header}"
    );
    assert_eq!(&frame[nl + 1..], PAYLOAD, "the raw bytes follow the header");

    let e = sse.expect_message("bin", 1).await;
    let v = e.json();
    assert_eq!(v["encoding"], "base64", "{v}");
    assert_eq!(
        STANDARD.decode(v["data"].as_str().unwrap()).unwrap(),
        PAYLOAD
    );
}

#[tokio::test]
async fn binary_publish_with_event_and_history_shows_base64() {
    let server = start().await;
    let req = server
        .http
        .post(server.url("/api/publish?channel=img&event=photo"))
        .header("content-type", "application/octet-stream; charset=binary")
        .body(PAYLOAD.to_vec());
    let (status, reply) = server.json_response(req).await;
    assert_eq!(status, 200, "{reply}");

    let (status, history) = server
        .json_response(server.http.get(server.url("/api/history?channel=img")))
        .await;
    assert_eq!(status, 200, "{history}");
    let m = &history["messages"][0];
    assert_message(m, "img", 1);
    assert_eq!(m["event"], "photo");
    assert_eq!(m["encoding"], "base64");
    assert_eq!(
        STANDARD.decode(m["data"].as_str().unwrap()).unwrap(),
        PAYLOAD
    );
}

#[tokio::test]
async fn binary_publish_needs_a_channel_and_no_other_parameters() {
    let server = start().await;
    for (query, code) in [
        ("", "bad_request"),
        ("?channel=a&color=red", "bad_request"),
        ("?channel=a%20b", "invalid_channel"),
        ("?channel=a&event=bad%20name", "invalid_event"),
    ] {
        let req = server
            .http
            .post(server.url(&format!("/api/publish{query}")))
            .header("content-type", "application/octet-stream")
            .body(vec![1, 2, 3]);
        let (status, body) = server.json_response(req).await;
        assert_eq!(
            (status, body["code"].clone()),
            (400, json!(code)),
            "{query}: {body}"
        );
    }
}
