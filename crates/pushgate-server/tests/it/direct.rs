//! Fan-out writing straight to waiting sockets (`direct_write_gap`): with
//! the gap at 0 every message may go out from the publisher's side, mixed
//! with the connections' own queued writes; nothing may be lost, doubled,
//! reordered or cut, including when the kernel takes only part of a frame.

use std::time::Duration;

use crate::common::*;
use serde_json::{json, Value};

const MESSAGES: u64 = 60;

fn metric_delivered(text: &str, transport: &str) -> i64 {
    metric(
        text,
        &format!("pushgate_messages_delivered_total{{transport=\"{transport}\"}}"),
    )
    .unwrap_or(0)
}

fn metric_direct(text: &str, transport: &str) -> i64 {
    metric(
        text,
        &format!("pushgate_messages_delivered_direct_total{{transport=\"{transport}\"}}"),
    )
    .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn straight_writes_arrive_once_and_in_order_on_every_transport() {
    let server = start_with(|c| c.direct_write_gap = Duration::ZERO).await;
    let mut ws = server.ws("/ws?channel=d").await;
    assert_subscribed(&ws.next_json().await, "d");
    let mut sse = server.sse("channel=d").await;
    sse.expect_subscribed("d").await;
    // Two channels: its SSE ids are per stream, so never written by fan-out.
    let mut sse2 = server.sse("channel=d&channel=other").await;
    sse2.expect_subscribed("d").await;
    sse2.expect_subscribed("other").await;
    let mut nd = server.ndjson("channel=d").await;
    assert_subscribed(&nd.next_line_json().await, "d");

    // Publish while reading, so that the connections are sometimes parked
    // (fan-out writes) and sometimes busy (queued writes).
    let publisher = async {
        server.publish_n("d", MESSAGES).await;
    };
    let readers = async {
        for n in 1..=MESSAGES {
            assert_eq!(
                assert_message(&ws.next_json().await, "d", n),
                &json!({ "n": n })
            );
            assert_eq!(
                sse.expect_message("d", n).await.json()["data"],
                json!({ "n": n })
            );
            assert_eq!(
                sse2.expect_message("d", n).await.json()["data"],
                json!({ "n": n })
            );
            assert_eq!(
                assert_message(&nd.next_line_json().await, "d", n),
                &json!({ "n": n })
            );
        }
    };
    within("every message on every transport", async {
        tokio::join!(publisher, readers)
    })
    .await;
    // Nothing more, nothing doubled: the next message is the next offset.
    server.publish("d", json!("last")).await;
    assert_message(&ws.next_json().await, "d", MESSAGES + 1);
    sse.expect_message("d", MESSAGES + 1).await;
    // Read on every connection before counting: a delivery is counted
    // when it is handed to the socket, which may be just after the others.
    sse2.expect_message("d", MESSAGES + 1).await;
    assert_message(&nd.next_line_json().await, "d", MESSAGES + 1);
    // Deliveries written by fan-out are counted like the others.
    let text = server.metrics_text().await;
    for transport in ["ws", "sse", "stream"] {
        let want = if transport == "sse" { 2 } else { 1 } * (MESSAGES as i64 + 1);
        assert_eq!(metric_delivered(&text, transport), want, "{transport}");
        assert!(metric_direct(&text, transport) <= want, "{transport}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_written_by_fan_out() {
    let server = start_with(|c| c.direct_write_gap = Duration::ZERO).await;
    let mut ws = server.ws("/ws?channel=i").await;
    assert_subscribed(&ws.next_json().await, "i");
    let mut sse = server.sse("channel=i").await;
    sse.expect_subscribed("i").await;
    // A connection parks just after its last write, so the client may see
    // that write before it is parked; a few messages, each read before the
    // next is published, find both parked.
    let mut n = 0;
    let text = loop {
        n += 1;
        server.publish("i", json!(n)).await;
        assert_message(&ws.next_json().await, "i", n);
        sse.expect_message("i", n).await;
        let text = server.metrics_text().await;
        if (metric_direct(&text, "ws") > 0 && metric_direct(&text, "sse") > 0) || n == 50 {
            break text;
        }
    };
    assert!(metric_direct(&text, "ws") > 0, "{text}");
    assert!(metric_direct(&text, "sse") > 0, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_the_kernel_takes_in_part_are_finished_before_the_next() {
    let server = start_with(|c| {
        c.direct_write_gap = Duration::ZERO;
        c.max_message_size = 1 << 20;
    })
    .await;
    // A tiny receive buffer and a client that reads nothing until every
    // message is published: writes end up partial, then refused, then queued.
    let mut raw = raw_ws(server.addr, "/ws?channel=big", Some(4096)).await;
    let (_, reply) = within("subscribed", raw.read_frame()).await.unwrap();
    assert_subscribed(&serde_json::from_slice(&reply).unwrap(), "big");
    let count = 40;
    for n in 1..=count {
        let text = format!("{n}:").repeat(70_000);
        server.publish("big", json!({ "n": n, "text": text })).await;
    }
    for n in 1..=count {
        let (op, payload) = within("a message", raw.read_frame()).await.expect("open");
        assert_eq!(op, 0x1, "a text frame");
        let v: Value = serde_json::from_slice(&payload).expect("a whole, uninterrupted frame");
        assert_message(&v, "big", n);
        assert_eq!(
            v["data"]["text"].as_str().unwrap().len(),
            format!("{n}:").len() * 70_000
        );
    }
}
