//! Resuming after a disconnect: SSE `Last-Event-ID`, `since=CURSOR` on every
//! subscribing transport, `since=earliest`, and `reset` when history cannot
//! cover the gap.

use crate::common::*;
use serde_json::{json, Value};

/// Reads `n` message events; returns (channel, offset) of each, in order.
async fn read_messages(sse: &mut Sse, n: usize) -> Vec<(String, u64)> {
    let mut got = Vec::new();
    for _ in 0..n {
        let e = sse.next_event().await;
        assert_eq!(e.event, "message", "{e:?}");
        let v = e.json();
        got.push((
            v["channel"].as_str().unwrap().to_owned(),
            v["offset"].as_u64().unwrap(),
        ));
    }
    got
}

fn of(got: &[(String, u64)], channel: &str) -> Vec<u64> {
    got.iter()
        .filter(|(c, _)| c == channel)
        .map(|(_, o)| *o)
        .collect()
}

#[tokio::test]
async fn sse_last_event_id_resumes_two_channel_stream_exactly() {
    let server = start().await;
    let mut sse = server.sse("channel=a&channel=b").await;
    sse.expect_subscribed("a").await;
    sse.expect_subscribed("b").await;
    server.publish("a", json!("a1")).await;
    server.publish("b", json!("b1")).await;
    assert_eq!(
        read_messages(&mut sse, 2).await,
        [("a".into(), 1), ("b".into(), 1)]
    );
    let last_id = sse.last_event_id().to_owned();
    drop(sse);

    // Published while the client was away.
    for (channel, data) in [("a", "a2"), ("b", "b2"), ("a", "a3"), ("b", "b3")] {
        server.publish(channel, json!(data)).await;
    }

    // `since=earliest` is there to show that Last-Event-ID wins over it.
    let mut sse = server
        .sse_with_last_event_id("channel=a&channel=b&since=earliest", Some(&last_id))
        .await;
    sse.expect_subscribed("a").await;
    sse.expect_subscribed("b").await;
    let missed = read_messages(&mut sse, 4).await;
    assert_eq!(of(&missed, "a"), [2, 3], "a resumes after 1: {missed:?}");
    assert_eq!(of(&missed, "b"), [2, 3], "b resumes after 1: {missed:?}");

    // Then live, with no duplicate of the catch-up in between.
    server.publish("b", json!("b4")).await;
    sse.expect_message("b", 4).await;
}

#[tokio::test]
async fn sse_resume_from_id_only_block_before_any_message_misses_nothing() {
    let server = start().await;
    server.publish("q", json!("old")).await;
    let mut sse = server.sse("channel=q").await;
    sse.expect_subscribed("q").await;
    // The stream announces its position even before the first message.
    let id = within("the id-only block", async {
        loop {
            match sse.next_item().await {
                Some(SseItem::IdOnly(id)) => return id,
                Some(SseItem::Event(e)) => panic!("unexpected event {e:?}"),
                Some(_) => continue,
                None => panic!("stream ended"),
            }
        }
    })
    .await;
    assert_eq!(sse.last_event_id(), id);
    drop(sse);

    server.publish("q", json!("new2")).await;
    server.publish("q", json!("new3")).await;
    let mut sse = server.sse_with_last_event_id("channel=q", Some(&id)).await;
    sse.expect_subscribed("q").await;
    let e = sse.expect_message("q", 2).await;
    assert_eq!(e.json()["data"], "new2");
    sse.expect_message("q", 3).await;
}

#[tokio::test]
async fn sse_since_cursor_replays_after_the_position_then_goes_live() {
    let server = start().await;
    let epoch = server.publish_n("feed", 5).await;
    let since = cursor(&[("feed", &epoch, 2)]);
    let mut sse = server.sse(&format!("channel=feed&since={since}")).await;
    let s = sse.expect_subscribed("feed").await;
    assert_eq!(s["offset"], 5, "subscribed tells the newest offset: {s}");
    sse.expect_messages("feed", 3..=5).await;
    server.publish("feed", json!("live")).await;
    sse.expect_message("feed", 6).await;
}

#[tokio::test]
async fn ws_subscribe_command_since_cursor_replays_missed_messages() {
    let server = start().await;
    let epoch = server.publish_n("w", 4).await;
    let mut ws = server.ws("/ws").await;
    let reply = ws
        .command(json!({
            "type": "subscribe", "channel": "w", "id": 1,
            "since": cursor(&[("w", &epoch, 1)])
        }))
        .await;
    assert_subscribed(&reply, "w");
    assert_eq!(reply["offset"], 4);
    let data = ws.expect_messages("w", 2..=4).await;
    assert_eq!(data, [json!({"n": 2}), json!({"n": 3}), json!({"n": 4})]);
    server.publish("w", json!("live")).await;
    ws.expect_messages("w", 5..=5).await;
}

#[tokio::test]
async fn ws_url_since_cursor_replays_each_named_channel() {
    let server = start().await;
    let ea = server.publish_n("a", 3).await;
    let eb = server.publish_n("b", 2).await;
    server.publish_n("c", 2).await;
    // c is not in the cursor, so it starts live.
    let since = cursor(&[("a", &ea, 2), ("b", &eb, 0)]);
    let mut ws = server
        .ws(&format!("/ws?channel=a&channel=b&channel=c&since={since}"))
        .await;
    assert_subscribed(&ws.next_json().await, "a");
    ws.expect_messages("a", 3..=3).await;
    assert_subscribed(&ws.next_json().await, "b");
    ws.expect_messages("b", 1..=2).await;
    assert_subscribed(&ws.next_json().await, "c");
    server.publish("c", json!("live")).await;
    ws.expect_messages("c", 3..=3).await;
}

#[tokio::test]
async fn cursor_from_an_sse_id_resumes_on_websocket() {
    let server = start().await;
    let mut sse = server.sse("channel=m&channel=n").await;
    sse.expect_subscribed("m").await;
    sse.expect_subscribed("n").await;
    server.publish("m", json!(1)).await;
    server.publish("n", json!(1)).await;
    sse.expect_message("m", 1).await;
    let id = sse.expect_message("n", 1).await.id.unwrap();
    drop(sse);
    server.publish("n", json!(2)).await;
    server.publish("m", json!(2)).await;

    let mut ws = server
        .ws(&format!("/ws?channel=m&channel=n&since={id}"))
        .await;
    assert_subscribed(&ws.next_json().await, "m");
    ws.expect_messages("m", 2..=2).await;
    assert_subscribed(&ws.next_json().await, "n");
    ws.expect_messages("n", 2..=2).await;
}

#[tokio::test]
async fn since_earliest_replays_retained_history_only() {
    let server = start_with(|c| c.history_size = 3).await;
    server.publish_n("h", 5).await;

    let mut ws = server.ws("/ws?channel=h&since=earliest").await;
    assert_subscribed(&ws.next_json().await, "h");
    ws.expect_messages("h", 3..=5).await;

    let mut sse = server.sse("channel=h&since=earliest").await;
    sse.expect_subscribed("h").await;
    sse.expect_messages("h", 3..=5).await;

    server.publish("h", json!("live")).await;
    ws.expect_messages("h", 6..=6).await;
    sse.expect_message("h", 6).await;
}

/// Subscribes over WS with `since` and returns the frames up to the reset.
async fn ws_subscribe_since(ws: &mut Ws, channel: &str, since: &str) -> (Value, Value) {
    let subscribed = ws
        .command(json!({"type": "subscribe", "channel": channel, "since": since}))
        .await;
    assert_subscribed(&subscribed, channel);
    (subscribed, ws.next_json().await)
}

#[tokio::test]
async fn ws_resume_from_trimmed_history_gets_reset_then_live() {
    let server = start_with(|c| c.history_size = 3).await;
    let epoch = server.publish_n("r", 10).await;
    let mut ws = server.ws("/ws").await;
    let (_, reset) = ws_subscribe_since(&mut ws, "r", &cursor(&[("r", &epoch, 1)])).await;
    assert_eq!(
        reset,
        json!({"type": "reset", "channel": "r", "epoch": epoch, "offset": 10}),
        "messages 2..7 left history, so the first frame is a reset"
    );
    server.publish("r", json!("live")).await;
    ws.expect_messages("r", 11..=11).await;
}

#[tokio::test]
async fn ws_resume_with_unknown_epoch_gets_reset() {
    let server = start().await;
    let epoch = server.publish_n("e", 2).await;
    let mut ws = server.ws("/ws").await;
    let (_, reset) = ws_subscribe_since(&mut ws, "e", &cursor(&[("e", "someOtherEpoch", 1)])).await;
    assert_eq!(
        reset,
        json!({"type": "reset", "channel": "e", "epoch": epoch, "offset": 2})
    );
    server.publish("e", json!("live")).await;
    ws.expect_messages("e", 3..=3).await;
}

#[tokio::test]
async fn ws_resume_from_a_future_offset_gets_reset() {
    let server = start().await;
    let epoch = server.publish_n("f", 2).await;
    let mut ws = server.ws("/ws").await;
    let (_, reset) = ws_subscribe_since(&mut ws, "f", &cursor(&[("f", &epoch, 99)])).await;
    assert_eq!(
        reset,
        json!({"type": "reset", "channel": "f", "epoch": epoch, "offset": 2})
    );
}

#[tokio::test]
async fn ws_resume_from_offset_zero_of_any_epoch_replays_from_the_first() {
    let server = start().await;
    server.publish_n("z", 2).await;
    let mut ws = server.ws("/ws").await;
    let subscribed = ws
        .command(json!({
            "type": "subscribe", "channel": "z",
            "since": cursor(&[("z", "anyEpoch", 0)])
        }))
        .await;
    assert_subscribed(&subscribed, "z");
    ws.expect_messages("z", 1..=2).await;
}

#[tokio::test]
async fn sse_resume_from_trimmed_history_gets_reset_event() {
    let server = start_with(|c| c.history_size = 3).await;
    let epoch = server.publish_n("s", 10).await;
    let stale = cursor(&[("s", &epoch, 1)]);
    let mut sse = server
        .sse_with_last_event_id("channel=s", Some(&stale))
        .await;
    sse.expect_subscribed("s").await;
    let reset = sse.next_event().await;
    assert_eq!(reset.event, "reset", "{reset:?}");
    assert_eq!(
        reset.json(),
        json!({"type": "reset", "channel": "s", "epoch": epoch, "offset": 10})
    );
    assert_eq!(
        reset.id.as_deref(),
        Some(cursor(&[("s", &epoch, 10)]).as_str()),
        "after a reset the stream's id is the new position"
    );
    server.publish("s", json!("live")).await;
    sse.expect_message("s", 11).await;
}
