//! The SSE transport: stream layout, keep-alives, named events, refusals;
//! and the test suite's own incremental SSE parser.

use std::time::Duration;

use crate::common::*;
use serde_json::json;

#[tokio::test]
async fn stream_starts_with_retry_then_subscribed_then_id_only_block() {
    let server = start_with(|c| c.sse_retry = Duration::from_millis(1500)).await;
    let mut sse = server.sse("channel=layout").await;
    let cache = sse.headers["cache-control"].to_str().unwrap();
    assert!(cache.contains("no-cache"), "Cache-Control: {cache}");

    assert_eq!(sse.next_item().await, Some(SseItem::Retry(1500)));
    let subscribed = match sse.next_item().await {
        Some(SseItem::Event(e)) => e,
        other => panic!("expected the subscribed event, got {other:?}"),
    };
    assert_eq!(subscribed.event, "subscribed");
    assert_eq!(subscribed.id, None, "subscribed events carry no id");
    let epoch = subscribed.json()["epoch"].as_str().unwrap().to_owned();
    assert_eq!(
        sse.next_item().await,
        Some(SseItem::IdOnly(cursor(&[("layout", &epoch, 0)]))),
        "an id-only block gives the position before any message"
    );
}

#[tokio::test]
async fn idle_stream_gets_a_ping_event_every_stream_ping_interval() {
    let server = start_with(|c| c.stream_ping_interval = Duration::from_millis(100)).await;
    let mut sse = server.sse("channel=quiet").await;
    let subscribed = sse.expect_subscribed("quiet").await;
    assert_eq!(subscribed["heartbeat"], 100, "the interval is announced");
    for _ in 0..2 {
        // An event, not a comment: EventSource hides comments from the page,
        // whose watchdog must see the heartbeat.
        let ping = within("a ping event", async {
            loop {
                match sse.next_item().await {
                    Some(SseItem::Event(e)) => return e,
                    Some(_) => continue,
                    None => panic!("the stream ended"),
                }
            }
        })
        .await;
        assert_eq!((ping.event.as_str(), ping.data.as_str()), ("ping", ""));
    }
}

#[tokio::test]
async fn named_events_use_the_event_field() {
    let server = start().await;
    let mut sse = server.sse("channel=prices").await;
    sse.expect_subscribed("prices").await;
    server
        .publish_event("prices", "price.update", json!({"eur": 1.08}))
        .await;
    server.publish("prices", json!("plain")).await;
    let named = sse.next_event().await;
    assert_eq!(named.event, "price.update");
    let v = named.json();
    assert_message(&v, "prices", 1);
    assert_eq!(v["event"], "price.update");
    let plain = sse.next_event().await;
    assert_eq!(plain.event, "message");
    assert_message(&plain.json(), "prices", 2);
}

#[tokio::test]
async fn html_sensitive_characters_are_escaped_in_data() {
    let server = start().await;
    let mut sse = server.sse("channel=html").await;
    sse.expect_subscribed("html").await;
    server
        .publish("html", json!({"s": "</script><b>&\u{2028}"}))
        .await;
    let e = sse.expect_message("html", 1).await;
    assert!(
        !e.data.contains('<') && !e.data.contains('>') && !e.data.contains('&'),
        "raw HTML characters in {}",
        e.data
    );
    assert_eq!(e.json()["data"], json!({"s": "</script><b>&\u{2028}"}));
}

#[tokio::test]
async fn refused_requests_get_json_errors() {
    let server = start().await;
    let cases: &[(&str, Option<&str>, u16, &str)] = &[
        ("/sse", None, 400, "bad_request"),
        ("/sse?since=earliest", None, 400, "bad_request"),
        ("/sse?channel=a%20b", None, 400, "invalid_channel"),
        ("/sse?channel=a&channel=a", None, 400, "bad_request"),
        ("/sse?channel=a&since=garbage", None, 400, "invalid_cursor"),
        ("/sse?channel=a&bogus=1", None, 400, "bad_request"),
        (
            "/sse?channel=a",
            Some("not.a.cursor.at.all"),
            400,
            "invalid_cursor",
        ),
    ];
    for (path, last_event_id, status, code) in cases {
        let mut req = server.http.get(server.url(path));
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", *id);
        }
        let (got, body) = server.json_response(req).await;
        assert_eq!(got, *status, "{path}: {body}");
        assert_eq!(body["code"], *code, "{path}: {body}");
    }
}

#[tokio::test]
async fn empty_last_event_id_falls_back_to_since() {
    let server = start().await;
    server.publish_n("fb", 2).await;
    let mut sse = server
        .sse_with_last_event_id("channel=fb&since=earliest", Some(""))
        .await;
    sse.expect_subscribed("fb").await;
    sse.expect_messages("fb", 1..=2).await;
}

#[test]
fn parser_gives_the_same_items_however_the_bytes_are_split() {
    let stream = b"retry: 2000\n\n: ping\n\nevent: subscribed\ndata: {\"a\":1}\n\n\
id: X.e.1\r\nevent: message\r\ndata: line1\r\ndata: line2\r\n\r\nid: X.e.1\n\ndata:nospace\n\n";
    let parse = |chunks: &[&[u8]]| {
        let mut p = SseParser::default();
        let mut items = Vec::new();
        for chunk in chunks {
            p.feed(chunk);
            while let Some(item) = p.next_item() {
                items.push(item);
            }
        }
        (items, p.last_event_id)
    };
    let (whole, last_id) = parse(&[stream]);
    assert_eq!(
        whole,
        vec![
            SseItem::Retry(2000),
            SseItem::Comment("ping".into()),
            SseItem::Event(SseEvent {
                id: None,
                event: "subscribed".into(),
                data: "{\"a\":1}".into()
            }),
            SseItem::Event(SseEvent {
                id: Some("X.e.1".into()),
                event: "message".into(),
                data: "line1\nline2".into()
            }),
            SseItem::IdOnly("X.e.1".into()),
            SseItem::Event(SseEvent {
                id: None,
                event: "message".into(),
                data: "nospace".into()
            }),
        ]
    );
    assert_eq!(
        last_id, "X.e.1",
        "the last id persists over events without one"
    );
    for split in 1..stream.len() {
        let (parts, _) = parse(&[&stream[..split], &stream[split..]]);
        assert_eq!(parts, whole, "split at byte {split}");
    }
    let bytewise: Vec<&[u8]> = stream.chunks(1).collect();
    assert_eq!(parse(&bytewise).0, whole);
}
