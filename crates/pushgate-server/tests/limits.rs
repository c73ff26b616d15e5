//! Limits: message size (close 1009), subscriptions per connection, and the
//! slow-consumer cut-off that protects everyone else on a channel.

mod common;

use common::*;
use pushgate_server::metrics::Transport;
use serde_json::json;

#[tokio::test]
async fn oversized_ws_message_closes_with_1009() {
    let server = start_with(|c| c.max_message_size = 1024).await;
    let mut ws = server.ws("/ws").await;
    // Just under the limit is an ordinary command.
    let fits = json!({"type": "ping", "id": 1, "pad": "x".repeat(900)});
    assert_eq!(ws.command(fits).await, json!({"type": "pong", "id": 1}));
    let big = json!({"type": "ping", "pad": "x".repeat(4096)});
    ws.send_json(&big).await;
    assert_eq!(ws.expect_close().await, Some(1009));
}

#[tokio::test]
async fn url_subscription_beyond_max_subscriptions_is_refused() {
    let server = start_with(|c| c.max_subscriptions = 2).await;
    let refused = [
        server
            .http
            .get(server.url("/sse?channel=a&channel=b&channel=c")),
        server.ws_upgrade_request("/ws?channel=a&channel=b&channel=c"),
    ];
    for req in refused {
        let (status, body) = server.json_response(req).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["code"], "too_many_subscriptions", "{body}");
    }
    // Two are fine.
    let mut ws = server.ws("/ws?channel=a&channel=b").await;
    assert_subscribed(&ws.next_json().await, "a");
    assert_subscribed(&ws.next_json().await, "b");
}

const FLOOD: u64 = 5000;
/// Publishes between two reads of the healthy subscriber: below
/// `outbox_capacity`, so only a subscriber that stops reading can overflow.
const BATCH: u64 = 4;

/// Publishes `FLOOD` messages of 1 KiB on `flood` over a WebSocket, checking
/// after each batch that a reading subscriber got every one, in order.
async fn flood_while_one_subscriber_reads(server: &TestServer) -> (Ws, Ws) {
    let mut reader = server.ws("/ws?channel=flood").await;
    assert_subscribed(&reader.next_json().await, "flood");
    let mut publisher = server.ws("/ws").await;
    let pad = "x".repeat(1024);
    for batch in 0..FLOOD / BATCH {
        for i in 1..=BATCH {
            let n = batch * BATCH + i;
            publisher
                .send_json(
                    &json!({"type": "publish", "channel": "flood", "data": {"n": n, "pad": pad}}),
                )
                .await;
        }
        for _ in 0..BATCH {
            let reply = publisher.next_json().await;
            assert_eq!(reply["type"], "published", "{reply}");
        }
        for i in 1..=BATCH {
            let n = batch * BATCH + i;
            let v = reader.next_json().await;
            assert_eq!(assert_message(&v, "flood", n)["n"], n);
        }
    }
    (reader, publisher)
}

/// The reader is still subscribed and healthy after the flood.
async fn reader_still_gets_messages(reader: &mut Ws, publisher: &mut Ws) {
    let reply = publisher
        .command(json!({"type": "publish", "channel": "flood", "data": "after"}))
        .await;
    assert_eq!(reply["offset"], FLOOD + 1, "{reply}");
    let v = reader.next_json().await;
    assert_eq!(assert_message(&v, "flood", FLOOD + 1), "after");
}

fn dropped(server: &TestServer, t: Transport) -> u64 {
    let series = format!(
        "pushgate_subscribers_dropped_total{{transport=\"{}\"}} ",
        t.label()
    );
    server
        .state
        .metrics
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(&series)?.parse().ok())
        .expect("the dropped series is rendered")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_ws_subscriber_is_cut_off_while_a_reading_one_gets_every_message() {
    let server = start_with(|c| c.outbox_capacity = 8).await;

    // Completes the handshake, then never reads again, with a tiny receive buffer.
    let mut stalled = raw_ws(server.addr, "/ws?channel=flood", Some(4096)).await;
    let (op, subscribed) = within(
        "the stalled client's subscribed frame",
        stalled.read_frame(),
    )
    .await
    .expect("a frame");
    assert_eq!(op, 1, "{}", String::from_utf8_lossy(&subscribed));

    let (mut reader, mut publisher) = flood_while_one_subscriber_reads(&server).await;

    wait_until("the stalled subscriber to be counted as dropped", || {
        dropped(&server, Transport::Ws) >= 1
    })
    .await;
    assert_eq!(
        dropped(&server, Transport::Ws),
        1,
        "only the stalled one is dropped"
    );

    // Its socket ends once the bytes already in flight are read: with close
    // code 4000 when the close frame still fit, or without one.
    let close = within("the stalled socket to end", async {
        loop {
            match stalled.read_frame().await {
                None => return None,
                Some((OP_CLOSE, payload)) => return Some(payload),
                Some(_) => continue,
            }
        }
    })
    .await;
    if let Some(payload) = close {
        assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 4000);
    }
    reader_still_gets_messages(&mut reader, &mut publisher).await;
}

/// hyper polls a response body only when it can write, so an SSE body whose
/// socket is full is never polled and never sees its outbox overflow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn stalled_sse_subscriber_is_cut_off_while_a_reading_one_gets_every_message() {
    let server = start_with(|c| c.outbox_capacity = 8).await;
    let (mut stalled, head, _) = raw_request(
        server.addr,
        &format!(
            "GET /sse?channel=flood HTTP/1.1\r\nHost: {}\r\n\r\n",
            server.addr
        ),
        Some(4096),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    let (mut reader, mut publisher) = flood_while_one_subscriber_reads(&server).await;

    wait_until(
        "the stalled SSE subscriber to be counted as dropped",
        || dropped(&server, Transport::Sse) >= 1,
    )
    .await;
    // The stream ends once the bytes already in flight are read.
    within("the stalled SSE stream to end", async {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            match tokio::io::AsyncReadExt::read(&mut stalled, &mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    })
    .await;
    reader_still_gets_messages(&mut reader, &mut publisher).await;
}
