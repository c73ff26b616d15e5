//! One client moving across every transport with its cursor — WebSocket,
//! SSE, long-poll, short poll, iframe, NDJSON — while messages are published
//! on each and between them, receives every message exactly once, in order.

use crate::common::*;
use pushgate_server::metrics::Transport;
use serde_json::{json, Value};

const CH: &str = "journey";
/// Published while the client is on a transport, and while it is between two.
const ON: u64 = 3;
const BETWEEN: u64 = 2;

struct Journey<'a> {
    server: &'a TestServer,
    published: u64,
    received: Vec<Value>,
}

impl Journey<'_> {
    async fn publish(&mut self, count: u64) {
        for _ in 0..count {
            self.published += 1;
            self.server
                .publish(CH, json!({ "n": self.published }))
                .await;
        }
    }

    fn receive(&mut self, messages: impl IntoIterator<Item = Value>) {
        for m in messages {
            assert_eq!(m["type"], "message", "{m}");
            self.received.push(m);
        }
    }

    /// What the client carries to the next transport, built from the last message.
    fn cursor(&self) -> String {
        cursor_after(self.received.last().expect("a message was received"))
    }
}

#[tokio::test]
async fn a_client_switching_transports_gets_every_message_once_in_order() {
    let server = start().await;
    let mut j = Journey {
        server: &server,
        published: 0,
        received: Vec::new(),
    };

    // WebSocket.
    let mut ws = server.ws(&format!("/ws?channel={CH}")).await;
    assert_subscribed(&ws.next_json().await, CH);
    j.publish(ON).await;
    for _ in 0..ON {
        let v = ws.next_json().await;
        j.receive([v]);
    }
    drop(ws);
    j.publish(BETWEEN).await;

    // SSE, resuming with `since`; leaving with the stream's own id.
    let mut sse = server
        .sse(&format!("channel={CH}&since={}", j.cursor()))
        .await;
    sse.expect_subscribed(CH).await;
    for _ in 0..BETWEEN {
        let e = sse.next_event().await;
        j.receive([e.json()]);
    }
    j.publish(ON).await;
    for _ in 0..ON {
        let e = sse.next_event().await;
        j.receive([e.json()]);
    }
    let mut cursor = sse.last_event_id().to_owned();
    assert_eq!(
        cursor,
        j.cursor(),
        "the SSE id is the position after the last message"
    );
    drop(sse);
    j.publish(BETWEEN).await;

    // Long-poll: the missed ones at once, then one pending request per publish.
    let polled = server
        .poll(&format!(
            "/longpoll?channel={CH}&since={cursor}&timeout=60s"
        ))
        .await;
    j.receive(polled.messages);
    cursor = polled.cursor;
    for _ in 0..ON {
        let path = format!("/longpoll?channel={CH}&since={cursor}&timeout=60s");
        let (polled, ()) = tokio::join!(server.poll(&path), async {
            wait_until("the long-poll to wait", || {
                server.open(Transport::LongPoll) == 1
            })
            .await;
            j.publish(1).await;
        });
        j.receive(polled.messages);
        cursor = polled.cursor;
    }
    j.publish(BETWEEN).await;

    // Short poll.
    let polled = server
        .poll(&format!("/poll?channel={CH}&since={cursor}"))
        .await;
    j.receive(polled.messages);
    j.publish(ON).await;
    let polled = server
        .poll(&format!("/poll?channel={CH}&since={}", polled.cursor))
        .await;
    j.receive(polled.messages);
    assert_eq!(polled.cursor, j.cursor());
    j.publish(BETWEEN).await;

    // Hidden iframe.
    let mut frame = server
        .iframe(&format!("channel={CH}&since={}", j.cursor()), "cb")
        .await;
    frame.expect_subscribed(CH).await;
    let missed = frame.next_calls(BETWEEN as usize).await;
    j.receive(missed);
    j.publish(ON).await;
    let live = frame.next_calls(ON as usize).await;
    j.receive(live);
    drop(frame);
    j.publish(BETWEEN).await;

    // NDJSON stream.
    let mut stream = server
        .ndjson(&format!("channel={CH}&since={}", j.cursor()))
        .await;
    stream.expect_subscribed(CH).await;
    for _ in 0..BETWEEN {
        let v = stream.next_json().await;
        j.receive([v]);
    }
    j.publish(ON).await;
    for _ in 0..ON {
        let v = stream.next_json().await;
        j.receive([v]);
    }

    let total = 6 * ON + 5 * BETWEEN;
    assert_eq!(j.published, total);
    let offsets: Vec<u64> = j
        .received
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, (1..=total).collect::<Vec<_>>(), "offsets received");
    let ns: Vec<u64> = j
        .received
        .iter()
        .map(|m| m["data"]["n"].as_u64().unwrap())
        .collect();
    assert_eq!(ns, (1..=total).collect::<Vec<_>>(), "data received");
    let epoch = &j.received[0]["epoch"];
    assert!(j
        .received
        .iter()
        .all(|m| m["channel"] == CH && &m["epoch"] == epoch));
}
