//! NDJSON streaming, `GET /stream`: every line is one JSON object;
//! `subscribed`, then missed messages, then live ones; `ping` keep-alives;
//! resume with `since`.

use std::time::Duration;

use crate::common::*;
use serde_json::json;

#[tokio::test]
async fn subscribed_then_messages_one_json_object_per_line() {
    let server = start().await;
    let mut stream = server.ndjson("channel=nd").await;
    let cache = stream.0.headers["cache-control"].to_str().unwrap();
    assert!(cache.contains("no-cache"), "Cache-Control: {cache}");
    let s = stream.expect_subscribed("nd").await;
    assert_eq!(s["offset"], 0);

    // Data that would break a naive line-based reader.
    let tricky = [
        json!("two\nlines\r\nand\u{2028}a separator\u{2029}"),
        json!({"nested": {"list": [1, 2, {"s": "}\n{"}]}}),
        json!("</script>&<>"),
    ];
    for data in &tricky {
        server.publish("nd", data.clone()).await;
    }
    server.publish_event("nd", "tick", json!(4)).await;
    for (i, data) in tricky.iter().enumerate() {
        let line = stream.0.next_line().await;
        assert!(
            !line.contains(['\r', '\u{2028}', '\u{2029}']),
            "raw line break in {line:?}"
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(assert_message(&v, "nd", i as u64 + 1), data);
    }
    let named = stream.next_json().await;
    assert_message(&named, "nd", 4);
    assert_eq!(named["event"], "tick");
}

#[tokio::test]
async fn several_channels_each_in_order() {
    let server = start().await;
    let mut stream = server.ndjson("channel=n1&channel=n2").await;
    stream.expect_subscribed("n1").await;
    stream.expect_subscribed("n2").await;
    for (channel, n) in [("n1", 1), ("n2", 1), ("n1", 2), ("n2", 2), ("n2", 3)] {
        server.publish(channel, json!(n)).await;
    }
    let mut got: Vec<(String, u64)> = Vec::new();
    for _ in 0..5 {
        let v = stream.next_json().await;
        assert_eq!(v["type"], "message", "{v}");
        got.push((
            v["channel"].as_str().unwrap().into(),
            v["offset"].as_u64().unwrap(),
        ));
    }
    assert_eq!(
        got,
        [
            ("n1".into(), 1),
            ("n2".into(), 1),
            ("n1".into(), 2),
            ("n2".into(), 2),
            ("n2".into(), 3)
        ],
        "published one at a time, so delivered in publish order"
    );
}

#[tokio::test]
async fn resumes_after_a_cursor_then_goes_live() {
    let server = start().await;
    let mut stream = server.ndjson("channel=nres").await;
    stream.expect_subscribed("nres").await;
    server.publish_n("nres", 2).await;
    let seen = stream.expect_messages("nres", 1..=2).await;
    drop(stream);

    server.publish("nres", json!("missed 3")).await;
    server.publish("nres", json!("missed 4")).await;
    let mut stream = server
        .ndjson(&format!("channel=nres&since={}", cursor_after(&seen[1])))
        .await;
    let s = stream.expect_subscribed("nres").await;
    assert_eq!(s["offset"], 4, "subscribed tells the newest offset: {s}");
    let missed = stream.expect_messages("nres", 3..=4).await;
    assert_eq!(missed[0]["data"], "missed 3");
    server.publish("nres", json!("live 5")).await;
    stream.expect_messages("nres", 5..=5).await;

    // `earliest` replays all retained history.
    let mut all = server.ndjson("channel=nres&since=earliest").await;
    all.expect_subscribed("nres").await;
    all.expect_messages("nres", 1..=5).await;
}

#[tokio::test]
async fn lost_history_gives_a_reset_line() {
    let server = start_with(|c| c.history_size = 1).await;
    let epoch = server.publish_n("nlost", 3).await;
    let mut stream = server
        .ndjson(&format!(
            "channel=nlost&since={}",
            cursor(&[("nlost", &epoch, 1)])
        ))
        .await;
    stream.expect_subscribed("nlost").await;
    assert_eq!(
        stream.next_json().await,
        json!({"type": "reset", "channel": "nlost", "epoch": epoch, "offset": 3})
    );
    server.publish("nlost", json!(4)).await;
    stream.expect_messages("nlost", 4..=4).await;
}

#[tokio::test]
async fn idle_stream_gets_ping_lines() {
    let server = start_with(|c| c.stream_ping_interval = Duration::from_millis(100)).await;
    let mut stream = server.ndjson("channel=nping").await;
    stream.expect_subscribed("nping").await;
    for _ in 0..2 {
        assert_eq!(stream.next_line_json().await, json!({"type": "ping"}));
    }
}
