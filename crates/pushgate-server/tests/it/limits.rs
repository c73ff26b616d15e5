//! Limits: message size (close 1009), subscriptions per connection, the
//! slow-consumer cut-off that protects everyone else on a channel, a
//! client's publish rate and the nesting depth of JSON.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use crate::common::*;
use async_trait::async_trait;
use pushgate_core::{
    Appended, Catchup, ChannelName, Data, Error, EventName, Hub, Log, MemoryLog, Outbox,
    Publication, StartAt, SubscriberId,
};
use pushgate_server::metrics::Transport;
use serde_json::json;

#[tokio::test]
async fn oversized_ws_message_closes_with_1009() {
    let server = start_with(|c| c.max_message_size = 1024).await;
    let mut ws = server.ws("/ws").await;
    // Just under the limit is an ordinary command.
    let fits = json!({"type": "ping", "id": 1, "pad": "x".repeat(900)});
    assert_eq!(
        ws.command(fits).await,
        json!({"type": "pong", "id": 1, "heartbeat": 15000})
    );
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
    flood(server, FLOOD, BATCH).await
}

/// Publishes `count` messages of 1 KiB on `flood` over a WebSocket, `batch`
/// at a time, checking after each batch that a reading subscriber got every
/// one, in order.
async fn flood(server: &TestServer, count: u64, batch_size: u64) -> (Ws, Ws) {
    let mut reader = server.ws("/ws?channel=flood").await;
    assert_subscribed(&reader.next_json().await, "flood");
    let mut publisher = server.ws("/ws").await;
    let pad = "x".repeat(1024);
    assert_eq!(count % batch_size, 0);
    for batch in 0..count / batch_size {
        for i in 1..=batch_size {
            let n = batch * batch_size + i;
            publisher
                .send_json(
                    &json!({"type": "publish", "channel": "flood", "data": {"n": n, "pad": pad}}),
                )
                .await;
        }
        for _ in 0..batch_size {
            let reply = publisher.next_json().await;
            assert_eq!(reply["type"], "published", "{reply}");
        }
        for i in 1..=batch_size {
            let n = batch * batch_size + i;
            let v = reader.next_json().await;
            assert_eq!(assert_message(&v, "flood", n)["n"], n);
        }
    }
    (reader, publisher)
}

/// The reader is still subscribed and healthy after the flood.
async fn reader_still_gets_messages(reader: &mut Ws, publisher: &mut Ws) {
    reader_still_gets(reader, publisher, FLOOD + 1).await
}

/// The same after a flood of `offset - 1` messages.
async fn reader_still_gets(reader: &mut Ws, publisher: &mut Ws, offset: u64) {
    let reply = publisher
        .command(json!({"type": "publish", "channel": "flood", "data": "after"}))
        .await;
    assert_eq!(reply["offset"], offset, "{reply}");
    let v = reader.next_json().await;
    assert_eq!(assert_message(&v, "flood", offset), "after");
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
    let server = start_with(|c| {
        c.outbox_capacity = 8;
        c.client_publish_rate = 0; // the flood is the point
    })
    .await;

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
    let server = start_with(|c| {
        c.outbox_capacity = 8;
        c.client_publish_rate = 0; // the flood is the point
    })
    .await;
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

/// The memory log, plus the longest queue each subscriber's outbox held
/// right after a fan-out — the server's own accounting of what waits for a
/// connection, read at the only moment a queue grows. Fan-out runs inside
/// the log's append (the hub hears of it there), so it is over when
/// `append` returns; the outboxes are those the server's hub holds.
struct OutboxProbe {
    memory: Arc<MemoryLog>,
    /// The server's hub, once it runs.
    hub: OnceLock<Weak<Hub>>,
    /// Every subscription, oldest first: its outbox and the longest queue seen.
    seen: Mutex<BTreeMap<SubscriberId, (Arc<Outbox>, usize)>>,
}

impl OutboxProbe {
    fn longest(&self, i: usize) -> (Arc<Outbox>, usize) {
        let seen = self.seen.lock().unwrap();
        seen.values().nth(i).expect("a subscription").clone()
    }
}

#[async_trait]
impl Log for OutboxProbe {
    async fn append(
        &self,
        channel: ChannelName,
        event: Option<EventName>,
        data: Data,
    ) -> Result<Arc<Publication>, Error> {
        let p = self.memory.append(channel, event, data).await?;
        let hub = self.hub.get().and_then(Weak::upgrade);
        let mut seen = self.seen.lock().unwrap();
        for s in hub.iter().flat_map(|hub| hub.subscribers(&p.channel)) {
            seen.entry(s.id).or_insert((s.outbox, 0));
        }
        for (outbox, longest) in seen.values_mut() {
            *longest = (*longest).max(outbox.len());
        }
        Ok(p)
    }

    async fn read(
        &self,
        channel: &ChannelName,
        start: StartAt,
        limit: usize,
    ) -> Result<Catchup, Error> {
        self.memory.read(channel, start, limit).await
    }

    fn watch(&self, listener: Arc<dyn Appended>) {
        self.memory.watch(listener)
    }

    async fn sweep(&self, in_use: &(dyn for<'c> Fn(&'c ChannelName) -> bool + Sync)) {
        self.memory.sweep(in_use).await
    }
}

/// Issue 5: a WebSocket subscriber that never reads while 10,000 messages of
/// 1 KiB are published on its channel, with the default `outbox_capacity`.
/// It is cut off (and counted), its queue never held more than the capacity,
/// what it did get is a gap-free prefix it can resume from without loss, and
/// a reading subscriber on the same channel gets all 10,000 in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_ws_subscriber_of_a_10000_message_flood_is_cut_off_with_a_bounded_queue() {
    const COUNT: u64 = 10_000;
    let probe = Arc::new(Mutex::new(None::<Arc<OutboxProbe>>));
    let server = start_wrapped(
        // History keeps the whole flood, so the stalled client can resume.
        |c| {
            c.history_size = COUNT as usize + 10;
            c.client_publish_rate = 0; // the flood is the point
        },
        |memory| {
            let p = Arc::new(OutboxProbe {
                memory,
                hub: OnceLock::new(),
                seen: Mutex::new(BTreeMap::new()),
            });
            *probe.lock().unwrap() = Some(p.clone());
            p
        },
    )
    .await;
    let probe = probe.lock().unwrap().take().expect("the probe is built");
    let _ = probe.hub.set(Arc::downgrade(&server.state.hub));
    let capacity = server.state.config.outbox_capacity;
    assert_eq!(capacity, 1024, "the default");

    let mut stalled = raw_ws(server.addr, "/ws?channel=flood", Some(4096)).await;
    let (op, subscribed) = within(
        "the stalled client's subscribed frame",
        stalled.read_frame(),
    )
    .await
    .expect("a frame");
    assert_eq!(op, 1, "{}", String::from_utf8_lossy(&subscribed));

    // The reader subscribes second: probe entry 1; the stalled one is entry 0.
    let (mut reader, mut publisher) = flood(&server, COUNT, 100).await;

    wait_until("the stalled subscriber to be counted as dropped", || {
        dropped(&server, Transport::Ws) >= 1
    })
    .await;
    assert_eq!(dropped(&server, Transport::Ws), 1, "only the stalled one");
    let (outbox, longest) = probe.longest(0);
    assert!(
        outbox.is_overflowed(),
        "cut off because its queue overflowed"
    );
    assert!(
        longest <= capacity,
        "its queue held {longest} events, over outbox_capacity {capacity}"
    );
    let (reader_outbox, reader_longest) = probe.longest(1);
    assert!(!reader_outbox.is_overflowed());
    assert!(
        reader_longest <= 100,
        "the reader's queue held {reader_longest}"
    );
    wait_until("the stalled subscription to end", || {
        server.subscribers("flood") == 1
    })
    .await;

    // What reached the stalled socket before the end: messages 1..=k, in
    // order, then the 4000 close frame if it still fit.
    let mut last: Option<serde_json::Value> = None;
    let close = within("the stalled socket to end", async {
        loop {
            match stalled.read_frame().await {
                None => return None,
                Some((OP_CLOSE, payload)) => return Some(payload),
                Some((1, text)) => {
                    let v: serde_json::Value = serde_json::from_slice(&text).unwrap();
                    let expected = last
                        .as_ref()
                        .map_or(1, |l| l["offset"].as_u64().unwrap() + 1);
                    assert_message(&v, "flood", expected);
                    last = Some(v);
                }
                Some((OP_PING, _)) => continue,
                Some((op, _)) => panic!("unexpected frame {op:#x}"),
            }
        }
    })
    .await;
    if let Some(payload) = close {
        assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 4000);
    }
    let got = last.as_ref().map_or(0, |l| l["offset"].as_u64().unwrap());
    assert!(got < COUNT, "the stalled client got all {got} messages");

    // Resuming from its cursor delivers exactly the rest.
    let since = match &last {
        Some(l) => cursor_after(l),
        None => "earliest".to_owned(),
    };
    let mut resumed = server.ws(&format!("/ws?channel=flood&since={since}")).await;
    assert_subscribed(&resumed.next_json().await, "flood");
    for offset in got + 1..=COUNT {
        let v = resumed.next_json().await;
        assert_eq!(assert_message(&v, "flood", offset)["n"], offset);
    }
    reader_still_gets(&mut reader, &mut publisher, COUNT + 1).await;
}

/// Reads the `/metrics` series `pushgate_limited_total{limit="…"}`.
async fn limited(server: &TestServer, limit: &str) -> i64 {
    let text = server.metrics_text().await;
    metric(
        &text,
        &format!("pushgate_limited_total{{limit=\"{limit}\"}}"),
    )
    .unwrap_or_else(|| panic!("no {limit} series in\n{text}"))
}

#[tokio::test]
async fn a_ws_publish_flood_is_refused_after_the_burst_and_the_connection_stays() {
    // 10 a second: taking all 40 would need 3.5 s, far longer than sending.
    let server = start_with(|c| {
        c.client_publish_rate = 10;
        c.client_publish_burst = 5;
    })
    .await;
    let mut reader = server.ws("/ws?channel=room").await;
    assert_subscribed(&reader.next_json().await, "room");
    let mut flooder = server.ws("/ws").await;
    for n in 0..40 {
        flooder
            .send_json(&json!({"type": "publish", "channel": "room", "data": n, "id": n}))
            .await;
    }
    let (mut accepted, mut refused) = (Vec::new(), 0);
    for n in 0..40 {
        let reply = flooder.next_json().await;
        assert_eq!(reply["id"], n, "replies come in order: {reply}");
        match reply["type"].as_str() {
            Some("published") => accepted.push(n),
            Some("error") => {
                assert_eq!(reply["code"], "rate_limited", "{reply}");
                let wait = reply["retry_after_ms"].as_u64().expect("a wait");
                assert!((1..=100).contains(&wait), "{reply}");
                assert!(
                    reply["message"]
                        .as_str()
                        .unwrap()
                        .contains("client_publish_rate"),
                    "{reply}"
                );
                refused += 1;
            }
            _ => panic!("{reply}"),
        }
    }
    assert_eq!(accepted[..5], [0, 1, 2, 3, 4], "the burst is taken whole");
    assert!(refused > 0, "40 publishes at once, none refused");
    // The subscriber got exactly what was accepted, in order.
    for (i, n) in accepted.iter().enumerate() {
        let m = reader.next_json().await;
        assert_eq!(*assert_message(&m, "room", i as u64 + 1), *n);
    }
    // The flooder is still connected, and not limited in what costs others
    // nothing.
    assert_eq!(
        flooder.command(json!({"type": "ping", "id": "p"})).await["type"],
        "pong"
    );
    assert_eq!(limited(&server, "publish_rate").await, refused);
    // The application's API is never limited.
    for n in 0..20 {
        server.publish("room", json!({ "api": n })).await;
    }
}

#[tokio::test]
async fn a_command_flood_is_answered_429_with_retry_after_per_address() {
    let server = start_with(|c| {
        c.client_publish_rate = 1;
        c.client_publish_burst = 3;
    })
    .await;
    let publish = |n: u32| json!({"type": "publish", "channel": "c", "data": n}).to_string();
    // Each request on a new connection: the address is the client.
    let fresh = || {
        reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap()
    };
    for n in 0..3 {
        let req = fresh().post(server.url("/command")).body(publish(n));
        let (status, reply) = server.json_response(req).await;
        assert_eq!(
            (status, &reply["type"]),
            (200, &json!("published")),
            "{reply}"
        );
    }
    let res = within(
        "the refused command",
        fresh().post(server.url("/command")).body(publish(3)).send(),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["retry-after"], "1");
    let reply: serde_json::Value = res.json().await.unwrap();
    assert_eq!(reply["code"], "rate_limited", "{reply}");
    assert!(reply["retry_after_ms"].as_u64().unwrap() <= 1000, "{reply}");
    // Direct messages spend the same allowance; other commands do not.
    let send = json!({"type": "send", "to": ["bob"], "data": 1}).to_string();
    assert_eq!(server.command(send).await.0, 429);
    let (status, reply) = server.command(r#"{"type":"ping"}"#).await;
    assert_eq!((status, &reply["type"]), (200, &json!("pong")));
    // A WebSocket from the same address has its own allowance.
    let mut ws = server.ws("/ws").await;
    let reply = ws
        .command(json!({"type": "publish", "channel": "c", "data": "ws"}))
        .await;
    assert_eq!(reply["type"], "published", "{reply}");
    assert_eq!(limited(&server, "publish_rate").await, 2);
    // A refused publish is a failed one, as on a WebSocket.
    let text = server.metrics_text().await;
    assert_eq!(metric(&text, "pushgate_publish_errors_total"), Some(1));
}

/// `[[[…1…]]]`, nested `depth` deep.
fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

#[tokio::test]
async fn deep_json_is_refused_on_every_way_in_and_the_server_goes_on() {
    let server = start_with(|c| c.max_json_depth = 8).await;
    let mut reader = server.ws("/ws?channel=d").await;
    assert_subscribed(&reader.next_json().await, "d");
    let api = |data: &str| format!(r#"{{"channel":"d","data":{data}}}"#);
    let command =
        |data: &str| format!(r#"{{"type":"publish","channel":"d","data":{data},"id":7}}"#);
    let post = |path: &str, body: String| server.http.post(server.url(path)).body(body);
    let mut refusals = 0;

    // At the limit: accepted everywhere.
    let (status, reply) = server
        .json_response(post("/api/publish", api(&nested(8))))
        .await;
    assert_eq!(status, 200, "{reply}");
    let (status, reply) = server.command(command(&nested(8))).await;
    assert_eq!(status, 200, "{reply}");
    let mut ws = server.ws("/ws").await;
    assert_eq!(
        ws.command_text(&command(&nested(8))).await["type"],
        "published"
    );

    // One deeper, and far deeper (serde_json's own limit of 128 never
    // applied to data; 30,000 fits the default max_message_size).
    for depth in [9, 129, 30_000] {
        for (path, body) in [
            ("/api/publish", api(&nested(depth))),
            (
                "/api/send",
                format!(r#"{{"to":["bob"],"data":{}}}"#, nested(depth)),
            ),
            ("/command", command(&nested(depth))),
        ] {
            let (status, reply) = server.json_response(post(path, body)).await;
            assert_eq!(status, 400, "{path}: {reply}");
            assert_eq!(reply["code"], "too_deep", "{path}: {reply}");
            let message = reply["message"].as_str().unwrap();
            assert!(
                message.contains("8 levels deep (max_json_depth)"),
                "{message}"
            );
            refusals += 1;
        }
        // On a WebSocket: an error reply with the command's id; the
        // connection stays.
        let reply = ws.command_text(&command(&nested(depth))).await;
        assert_eq!(
            (&reply["type"], &reply["code"], &reply["id"]),
            (&json!("error"), &json!("too_deep"), &json!(7)),
            "{reply}"
        );
        // Deep in a field the server ignores, a command is refused too.
        let ignored = format!(r#"{{"type":"ping","id":8,"x":{}}}"#, nested(depth));
        assert_eq!(ws.command_text(&ignored).await["code"], "too_deep");
        refusals += 2;
    }
    assert_eq!(ws.command(json!({"type": "ping"})).await["type"], "pong");
    // Only the three publishes at the limit were delivered.
    let at_the_limit: serde_json::Value = serde_json::from_str(&nested(8)).unwrap();
    for offset in 1..=3 {
        let m = reader.next_json().await;
        assert_eq!(*assert_message(&m, "d", offset), at_the_limit);
    }
    assert_eq!(limited(&server, "json_depth").await, refusals);
}
