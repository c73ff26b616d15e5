//! Publish/subscribe on several channels, over WebSocket and SSE.

use crate::common::*;
use serde_json::json;

#[tokio::test]
async fn ws_delivers_each_subscribed_channel_in_order_and_nothing_else() {
    let server = start().await;
    let mut ws = server.ws("/ws").await;

    let a = ws
        .command(json!({"type": "subscribe", "channel": "a", "id": 1}))
        .await;
    assert_subscribed(&a, "a");
    assert_eq!(a["id"], 1, "the numeric id is echoed: {a}");
    assert_eq!(a["offset"], 0, "a fresh channel stands at offset 0: {a}");
    let b = ws
        .command(json!({"type": "subscribe", "channel": "b", "id": "two"}))
        .await;
    assert_subscribed(&b, "b");
    assert_eq!(b["id"], "two", "the string id is echoed: {b}");

    // Interleaved publishes, with one on a channel this client does not have.
    let order = [("a", 1), ("b", 1), ("a", 2), ("c", 1), ("b", 2), ("a", 3)];
    for (channel, n) in order {
        let reply = server.publish(channel, json!({ "n": n })).await;
        assert_eq!(reply["offset"], n, "offsets count per channel: {reply}");
    }
    for (channel, n) in order.iter().filter(|(c, _)| *c != "c") {
        let v = ws.next_json().await;
        let data = assert_message(&v, channel, *n);
        assert_eq!(data, &json!({ "n": n }));
        let epoch = if *channel == "a" {
            &a["epoch"]
        } else {
            &b["epoch"]
        };
        assert_eq!(&v["epoch"], epoch, "messages carry the subscribed epoch");
    }
    // The message of `c` would have come before a#3; one more probe proves
    // nothing of `c` is queued behind it either.
    let pong = ws.command(json!({"type": "ping", "id": 9})).await;
    assert_eq!(pong, json!({"type": "pong", "id": 9, "heartbeat": 15000}));
}

#[tokio::test]
async fn ws_unsubscribe_stops_delivery_of_that_channel_only() {
    let server = start().await;
    let mut ws = server.ws("/ws").await;
    ws.subscribe("a").await;
    ws.subscribe("b").await;

    let reply = ws
        .command(json!({"type": "unsubscribe", "channel": "a", "id": 5}))
        .await;
    assert_eq!(
        reply,
        json!({"type": "unsubscribed", "id": 5, "channel": "a"})
    );
    server.publish("a", json!("gone")).await;
    server.publish("b", json!("kept")).await;
    let v = ws.next_json().await;
    assert_eq!(
        assert_message(&v, "b", 1),
        "kept",
        "a's message is not delivered after unsubscribe"
    );

    let again = ws
        .command(json!({"type": "unsubscribe", "channel": "a", "id": 6}))
        .await;
    assert_eq!(again["type"], "error", "{again}");
    assert_eq!(again["code"], "not_subscribed", "{again}");
    assert_eq!(again["id"], 6, "{again}");
}

#[tokio::test]
async fn ws_publish_command_replies_with_position_and_reaches_subscribers() {
    let server = start().await;
    let mut subscriber = server.ws("/ws").await;
    let subscribed = subscriber.subscribe("news").await;
    let mut publisher = server.ws("/ws").await;

    for offset in 1..=3u64 {
        let reply = publisher
            .command(json!({
                "type": "publish", "channel": "news", "id": 40 + offset,
                "data": {"title": "hello", "n": offset}, "event": "headline"
            }))
            .await;
        assert_eq!(
            reply,
            json!({
                "type": "published", "id": 40 + offset, "channel": "news",
                "epoch": subscribed["epoch"], "offset": offset
            })
        );
    }
    for offset in 1..=3u64 {
        let v = subscriber.next_json().await;
        assert_eq!(
            assert_message(&v, "news", offset),
            &json!({"title": "hello", "n": offset})
        );
        assert_eq!(v["event"], "headline", "{v}");
    }
}

#[tokio::test]
async fn ws_url_subscribe_sends_subscribed_per_channel_then_messages() {
    let server = start().await;
    server.publish("x", json!("before")).await;
    let mut ws = server.ws("/ws?channel=x&channel=y").await;

    let x = ws.next_json().await;
    assert_subscribed(&x, "x");
    assert_eq!(x["offset"], 1, "x already had one message: {x}");
    assert!(x.get("id").is_none(), "URL subscriptions have no id: {x}");
    let y = ws.next_json().await;
    assert_subscribed(&y, "y");
    assert_eq!(y["offset"], 0);

    server.publish("y", json!("y1")).await;
    server.publish("x", json!("x2")).await;
    assert_eq!(assert_message(&ws.next_json().await, "y", 1), "y1");
    assert_eq!(assert_message(&ws.next_json().await, "x", 2), "x2");
}

#[tokio::test]
async fn ws_url_subscribe_with_invalid_channel_is_refused_before_upgrade() {
    let server = start().await;
    let (status, body) = server
        .json_response(server.ws_upgrade_request("/ws?channel=a%20b"))
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["code"], "invalid_channel", "{body}");
}

#[tokio::test]
async fn sse_stream_of_several_channels_delivers_each_in_order_with_cursor_ids() {
    let server = start().await;
    let mut sse = server.sse("channel=a&channel=b").await;
    let a = sse.expect_subscribed("a").await;
    let b = sse.expect_subscribed("b").await;

    let order = [("a", 1), ("c", 1), ("b", 1), ("a", 2), ("b", 2)];
    for (channel, n) in order {
        server.publish(channel, json!({ "n": n })).await;
    }
    let (ea, eb) = (
        a["epoch"].as_str().unwrap().to_owned(),
        b["epoch"].as_str().unwrap().to_owned(),
    );
    // Each id is the stream's cursor after the event, naming both channels.
    let expected_ids = [
        cursor(&[("a", &ea, 1), ("b", &eb, 0)]),
        cursor(&[("a", &ea, 1), ("b", &eb, 1)]),
        cursor(&[("a", &ea, 2), ("b", &eb, 1)]),
        cursor(&[("a", &ea, 2), ("b", &eb, 2)]),
    ];
    let delivered = order.iter().filter(|(c, _)| *c != "c");
    for ((channel, n), id) in delivered.zip(expected_ids) {
        let e = sse.expect_message(channel, *n).await;
        assert_eq!(e.json()["data"], json!({ "n": n }));
        assert_eq!(e.id.as_deref(), Some(id.as_str()), "{e:?}");
    }
}

#[tokio::test]
async fn sse_single_channel_ids_are_the_message_positions() {
    let server = start().await;
    let mut sse = server.sse("channel=solo").await;
    let s = sse.expect_subscribed("solo").await;
    let epoch = s["epoch"].as_str().unwrap();
    server.publish_n("solo", 2).await;
    for n in 1..=2 {
        let e = sse.expect_message("solo", n).await;
        assert_eq!(e.id.unwrap(), cursor(&[("solo", epoch, n)]));
    }
}
