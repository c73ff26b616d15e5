//! The Redis broker (`--broker`): the log contract against a real
//! redis-server, clients that move between nodes on every transport, and
//! what a Redis blip or outage does — nothing acknowledged is lost, a
//! publish Redis cannot store is a 503, and delivery comes back by itself.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use pushgate_core::log::conformance;
use pushgate_core::{ChannelName, Log, MemoryLogConfig, StartAt};
use pushgate_server::redis_broker::{RedisConfig, RedisLog};
use serde_json::{json, Value};

/// A prefix no other test uses: each test its own cluster on one Redis.
fn prefix(test: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("t{}-{test}", N.fetch_add(1, Ordering::Relaxed))
}

/// `POST /api/publish` on `node`: the status and the body, whatever they are.
async fn try_publish(node: &TestServer, channel: &str, data: Value) -> (u16, Value) {
    let req = node
        .http
        .post(node.url("/api/publish"))
        .json(&json!({"channel": channel, "data": data}));
    node.json_response(req).await
}

/// Publishes on `node` until it is accepted (503 while Redis is away or
/// switching); the acknowledgement.
async fn publish_when_back(node: &TestServer, channel: &str, data: Value) -> Value {
    within("a publish to be accepted again", async {
        loop {
            let (status, body) = try_publish(node, channel, data.clone()).await;
            if status == 200 {
                return body;
            }
            assert_eq!(status, 503, "{body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

fn open(redis: &Redis, prefix: &str, history_size: usize) -> RedisLog {
    RedisLog::open(
        RedisConfig {
            url: redis.url(),
            prefix: prefix.to_owned(),
            timeout: Duration::from_secs(5),
            presence_ttl: Duration::from_secs(30),
            tls_ca: None,
        },
        MemoryLogConfig {
            history_size,
            ..Default::default()
        },
    )
    .expect("a valid URL")
}

#[tokio::test]
async fn the_redis_log_keeps_the_log_contract() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    within(
        "the conformance suite",
        conformance::check(|size| open(&redis, &prefix("conformance"), size)),
    )
    .await;
}

#[tokio::test]
async fn history_expires_by_age_on_redis_clock() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let log = RedisLog::open(
        RedisConfig {
            url: redis.url(),
            prefix: prefix("ttl"),
            timeout: Duration::from_secs(5),
            presence_ttl: Duration::from_secs(30),
            tls_ca: None,
        },
        MemoryLogConfig {
            history_ttl_ms: 200,
            ..Default::default()
        },
    )
    .unwrap();
    let ch = ChannelName::new("ttl").unwrap();
    let data = || pushgate_core::Data::json("1").unwrap();
    let first = log.append(ch.clone(), None, data()).await.unwrap();
    // Until Redis's own clock has passed the TTL (what expiry goes by).
    let mut conn = redis.conn().await;
    within("Redis's clock to pass the TTL", async {
        loop {
            let (s, us): (u64, u64) = redis::cmd("TIME").query_async(&mut conn).await.unwrap();
            if s * 1000 + us / 1000 > first.time + 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let second = log.append(ch.clone(), None, data()).await.unwrap();
    assert_eq!(
        (second.offset, &second.epoch),
        (2, &first.epoch),
        "expiry keeps the channel's offsets and epoch"
    );
    let c = log
        .read(&ch, StartAt::After(first.position()), 10)
        .await
        .unwrap();
    assert_eq!(c.messages.len(), 1, "2 is kept");
    let c = log
        .read(
            &ch,
            StartAt::After(pushgate_core::Position::new(first.epoch.clone(), 0)),
            10,
        )
        .await
        .unwrap();
    assert!(c.reset, "1 expired: resuming before it is a reset");
}

// ---------------------------------------------------------------------------
// Clients that move between nodes

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ws,
    Sse,
    Ndjson,
    Iframe,
    LongPoll,
    Poll,
}

const KINDS: [Kind; 6] = [
    Kind::Ws,
    Kind::Sse,
    Kind::Ndjson,
    Kind::Iframe,
    Kind::LongPoll,
    Kind::Poll,
];

enum Open {
    Ws(Ws),
    Sse(Sse),
    Ndjson(Ndjson),
    Iframe(Iframe),
    /// Requests, not a connection.
    Http,
}

/// A client of one transport, resuming from its cursor wherever it goes.
struct Roamer {
    kind: Kind,
    channel: String,
    cursor: String,
    open: Option<Open>,
    got: Vec<u64>,
    resets: usize,
}

impl Roamer {
    fn new(kind: Kind, channel: &str, cursor: &str) -> Self {
        Roamer {
            kind,
            channel: channel.to_owned(),
            cursor: cursor.to_owned(),
            open: None,
            got: Vec::new(),
            resets: 0,
        }
    }

    async fn connect(&mut self, node: &TestServer) {
        let q = format!("channel={}&since={}", self.channel, self.cursor);
        let ch = self.channel.as_str();
        self.open = Some(match self.kind {
            Kind::Ws => {
                let mut ws = node.ws(&format!("/ws?{q}")).await;
                assert_subscribed(&ws.next_json().await, ch);
                Open::Ws(ws)
            }
            Kind::Sse => {
                let mut sse = node.sse(&q).await;
                sse.expect_subscribed(ch).await;
                Open::Sse(sse)
            }
            Kind::Ndjson => {
                let mut s = node.ndjson(&q).await;
                s.expect_subscribed(ch).await;
                Open::Ndjson(s)
            }
            Kind::Iframe => {
                let mut f = node.iframe(&q, "cb").await;
                f.expect_subscribed(ch).await;
                Open::Iframe(f)
            }
            Kind::LongPoll | Kind::Poll => Open::Http,
        });
    }

    /// Reads until `n` more messages arrived from `node`.
    async fn read(&mut self, node: &TestServer, n: usize) {
        let want = self.got.len() + n;
        while self.got.len() < want {
            let events = match self.open.as_mut().expect("connected") {
                Open::Ws(ws) => vec![ws.next_json().await],
                Open::Sse(sse) => vec![sse.next_event().await.json()],
                Open::Ndjson(s) => vec![s.next_json().await],
                Open::Iframe(f) => vec![f.next_call().await],
                Open::Http => {
                    let path = match self.kind {
                        Kind::LongPoll => "longpoll?timeout=10s&",
                        _ => "poll?",
                    };
                    let polled = node
                        .poll(&format!(
                            "/{path}channel={}&since={}",
                            self.channel, self.cursor
                        ))
                        .await;
                    self.cursor = polled.cursor.clone();
                    for m in &polled.messages {
                        self.got.push(m["offset"].as_u64().unwrap());
                    }
                    continue;
                }
            };
            for v in events {
                self.take(&v);
            }
        }
    }

    fn take(&mut self, v: &Value) {
        match v["type"].as_str() {
            Some("message") => {
                self.got.push(v["offset"].as_u64().unwrap());
                self.cursor = cursor_after(v);
            }
            Some("reset") => self.resets += 1,
            _ => {}
        }
    }

    fn disconnect(&mut self) {
        self.open = None;
    }
}

/// Three nodes on three loopback addresses; a publisher on the first; per
/// channel one client per transport that reads on one node, leaves, and
/// comes back on the next with its cursor, while messages are published
/// live and while it is away. Each sees every message once, in order,
/// with no reset.
async fn roam(broker: &impl BrokerUrl, test: &str, channels: &[&str]) {
    let p = prefix(test);
    let nodes = [
        start_node(broker, &p, "127.0.0.1").await,
        start_node(broker, &p, "127.0.0.2").await,
        start_node(broker, &p, "127.0.0.3").await,
    ];
    let mut clients = Vec::new();
    for ch in channels {
        let start = nodes[1].poll(&format!("/poll?channel={ch}")).await.cursor;
        clients.extend(KINDS.iter().map(|k| Roamer::new(*k, ch, &start)));
    }
    let mut published = 0;
    let publish_everywhere = |n: u64| {
        let node = &nodes[0];
        async move {
            for ch in channels {
                node.publish(ch, json!(n)).await;
            }
        }
    };
    for round in 0..6 {
        for (i, c) in clients.iter_mut().enumerate() {
            c.connect(&nodes[(round + i) % 3]).await;
        }
        // Live: through Redis to whichever node each client is on.
        for _ in 0..2 {
            published += 1;
            publish_everywhere(published).await;
        }
        for (i, c) in clients.iter_mut().enumerate() {
            // The one published while it was away comes first.
            let missed = if round == 0 { 0 } else { 1 };
            c.read(&nodes[(round + i) % 3], 2 + missed).await;
            c.disconnect();
        }
        // Away: in history only.
        published += 1;
        publish_everywhere(published).await;
    }
    for c in &mut clients {
        c.connect(&nodes[2]).await;
        c.read(&nodes[2], 1).await;
        let want: Vec<u64> = (1..=published).collect();
        assert_eq!(
            c.got, want,
            "{:?} on {}: every message once, in order",
            c.kind, c.channel
        );
        assert_eq!(c.resets, 0, "{:?}", c.kind);
    }
}

#[tokio::test]
async fn clients_resume_on_any_node_on_every_transport() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    roam(&redis, "roam", &["roam"]).await;
}

/// The same on a Redis Cluster of three shards, with channels on each.
#[tokio::test]
async fn clients_resume_on_any_node_over_a_redis_cluster() {
    let Some(cluster) = RedisCluster::start(3).await else {
        return;
    };
    roam(&cluster, "roam-cluster", &["a", "b", "c", "d"]).await;
}

/// The fan-out of a node follows only the channels its clients hold, and
/// stops following them once the sweep finds none left.
#[tokio::test]
async fn a_node_subscribes_in_redis_only_to_its_clients_channels() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let p = prefix("follow");
    let a = start_node(&redis, &p, "127.0.0.1").await;
    let b = start_node(&redis, &p, "127.0.0.2").await;
    let mut conn = redis.conn().await;
    let topics = |conn: &mut redis::aio::MultiplexedConnection| {
        let mut conn = conn.clone();
        let pattern = format!("{{{p}:*");
        async move {
            let mut v: Vec<String> = redis::cmd("PUBSUB")
                .arg("CHANNELS")
                .arg(pattern)
                .query_async(&mut conn)
                .await
                .unwrap();
            v.sort();
            v
        }
    };
    assert!(topics(&mut conn).await.is_empty(), "nothing followed yet");
    let mut ws = a.ws("/ws?channel=one&channel=two").await;
    assert_subscribed(&ws.next_json().await, "one");
    assert_subscribed(&ws.next_json().await, "two");
    assert_eq!(
        topics(&mut conn).await,
        [format!("{{{p}:one}}"), format!("{{{p}:two}}")]
    );
    b.publish("two", json!("x")).await;
    assert_message(&ws.next_json().await, "two", 1);
    // Three connections on one channel are one Redis subscription.
    let mut more = Vec::new();
    for _ in 0..3 {
        let mut w = a.ws("/ws?channel=one").await;
        assert_subscribed(&w.next_json().await, "one");
        more.push(w);
    }
    let subscribers: Vec<(String, u64)> = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(format!("{{{p}:one}}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        subscribers[0].1, 1,
        "one Redis subscription per node and channel"
    );
    drop(ws);
    drop(more);
    wait_until("the connections to close", || a.subscribers("one") == 0).await;
    a.state.hub.sweep().await;
    within("the follower to unsubscribe", async {
        while !topics(&mut conn).await.is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// The pub/sub connections drop (Redis kills them) and messages are
/// published before the nodes reconnect: a subscriber gets every one, in
/// order, once — filled from the stream — and then live ones again.
#[tokio::test]
async fn a_dropped_subscription_is_caught_up_from_history() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let p = prefix("blip");
    let a = start_node(&redis, &p, "127.0.0.1").await;
    let b = start_node(&redis, &p, "127.0.0.2").await;
    let mut ws = a.ws("/ws?channel=blip").await;
    assert_subscribed(&ws.next_json().await, "blip");
    b.publish("blip", json!(1)).await;
    assert_message(&ws.next_json().await, "blip", 1);
    let mut conn = redis.conn().await;
    for round in 0..3u64 {
        let killed: u64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("pubsub")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(killed >= 1, "the nodes' pub/sub connections were killed");
        // Published while node a has no subscription: only in the stream.
        let base = 1 + round * 4;
        for n in 1..=3 {
            b.publish("blip", json!(base + n)).await;
        }
        ws.expect_messages("blip", base + 1..=base + 3).await;
        // And live again after it.
        b.publish("blip", json!(base + 4)).await;
        ws.expect_messages("blip", base + 4..=base + 4).await;
    }
    let text = a.metrics_text().await;
    let m = |name: &str| metric(&text, name).unwrap_or_else(|| panic!("no {name}"));
    assert_eq!(m("pushgate_broker_up"), 1, "{text}");
    assert!(m("pushgate_broker_reconnects_total") >= 3, "{text}");
    assert!(m("pushgate_broker_catch_ups_total") >= 3, "{text}");
    assert_eq!(m("pushgate_broker_resets_total"), 0, "{text}");
    assert_eq!(m("pushgate_broker_channels"), 1, "{text}");
}

/// Redis goes away: publishes answer 503 and nothing is acknowledged;
/// connections stay open; when Redis is back (it kept its data), delivery
/// resumes by itself, with nothing lost and no reset.
#[tokio::test]
async fn while_redis_is_down_publishes_fail_and_delivery_resumes_after() {
    let Some(mut redis) = Redis::start_durable().await else {
        return;
    };
    let p = prefix("down");
    let a = start_node_with(&redis, &p, "127.0.0.1", |c| {
        c.broker_timeout = Duration::from_millis(500)
    })
    .await;
    let b = start_node_with(&redis, &p, "127.0.0.2", |c| {
        c.broker_timeout = Duration::from_millis(500)
    })
    .await;
    let mut ws = a.ws("/ws?channel=down").await;
    assert_subscribed(&ws.next_json().await, "down");
    let mut sse = a.sse("channel=down").await;
    sse.expect_subscribed("down").await;
    b.publish("down", json!(1)).await;
    assert_message(&ws.next_json().await, "down", 1);
    sse.expect_message("down", 1).await;

    redis.kill().await;
    within("node a to see Redis gone", async {
        while metric(&a.metrics_text().await, "pushgate_broker_up") != Some(0) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    for node in [&a, &b] {
        let (status, body) = try_publish(node, "down", json!("lost?")).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["code"], "unavailable", "{body}");
        assert!(
            body["message"].as_str().unwrap().contains("Redis"),
            "{body}"
        );
    }
    redis.restart().await;
    // Back by itself: the first publish that Redis stores reaches both.
    let published = publish_when_back(&b, "down", json!(2)).await;
    assert_eq!(
        published["offset"], 2,
        "nothing refused was stored: {published}"
    );
    let errors = metric(&b.metrics_text().await, "pushgate_broker_errors_total");
    assert!(errors.is_some_and(|n| n >= 1), "{errors:?}");
    let v = ws.next_json().await;
    assert_message(&v, "down", 2);
    sse.expect_message("down", 2).await;
    b.publish("down", json!(3)).await;
    assert_message(&ws.next_json().await, "down", 3);
    sse.expect_message("down", 3).await;
}

/// A Redis that lost everything (restarted without persistence): the
/// nodes' subscribers are told to reset, into the new epoch, and go on.
#[tokio::test]
async fn a_redis_that_lost_its_data_resets_the_subscribers() {
    let Some(mut redis) = Redis::start().await else {
        return;
    };
    let p = prefix("lost");
    let a = start_node(&redis, &p, "127.0.0.1").await;
    let mut ws = a.ws("/ws?channel=gone").await;
    assert_subscribed(&ws.next_json().await, "gone");
    let first = a.publish("gone", json!(1)).await;
    assert_message(&ws.next_json().await, "gone", 1);
    redis.kill().await;
    redis.restart().await;
    let again = publish_when_back(&a, "gone", json!(2)).await;
    assert_ne!(
        again["epoch"], first["epoch"],
        "history was lost: a new epoch"
    );
    let reset = ws.next_json().await;
    assert_eq!(reset["type"], "reset", "{reset}");
    assert_eq!(reset["epoch"], again["epoch"], "{reset}");
    // Live from where the reset put it (the publish may have come before
    // or after the node saw Redis again).
    a.publish("gone", json!(3)).await;
    let from = reset["offset"].as_u64().unwrap();
    for offset in from + 1..=2 {
        let v = ws.next_json().await;
        assert_message(&v, "gone", offset);
        assert_eq!(v["epoch"], again["epoch"]);
    }
}

/// A bad URL stops the start with an error that shows the form.
#[tokio::test]
async fn a_bad_broker_url_is_a_clear_config_error() {
    let config = pushgate_server::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        broker_url: Some("http://localhost:6379".into()),
        ..Default::default()
    };
    let err = match pushgate_server::Server::bind(config).await {
        Ok(_) => panic!("bound with an http:// broker"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("redis://"), "{err}");
    let config = pushgate_server::Config {
        broker_url: Some("redis://127.0.0.1:1".into()),
        data_dir: Some("/tmp/x".into()),
        ..Default::default()
    };
    let err = config.validate().unwrap_err().to_string();
    assert!(err.contains("exclude each other"), "{err}");
}

// ---------------------------------------------------------------------------
// Users, presence, rooms across nodes

/// Three nodes of one cluster, each with `configure` applied.
async fn cluster_of_three(
    redis: &impl BrokerUrl,
    test: &str,
    configure: impl Fn(&mut pushgate_server::Config),
) -> [TestServer; 3] {
    let p = prefix(test);
    [
        start_node_with(redis, &p, "127.0.0.1", &configure).await,
        start_node_with(redis, &p, "127.0.0.2", &configure).await,
        start_node_with(redis, &p, "127.0.0.3", &configure).await,
    ]
}

fn client_id(subscribed: &Value) -> String {
    subscribed["room"]["client"].as_str().unwrap().to_owned()
}

/// A room whose members are on different nodes: each joining member
/// learns the others, joins and leaves cross nodes, a signal reaches its
/// target on another node alone (also from an SSE member over
/// `POST /command` sent to a third node), and refusals reach nobody.
#[tokio::test]
async fn a_room_spans_nodes() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    room_across(&redis).await;
}

#[tokio::test]
async fn a_room_spans_nodes_over_a_redis_cluster() {
    let Some(cluster) = RedisCluster::start(3).await else {
        return;
    };
    room_across(&cluster).await;
}

async fn room_across(broker: &impl BrokerUrl) {
    let [a, b, c] = cluster_of_three(broker, "room", |_| {}).await;
    let mut ws_a = a.ws("/ws").await;
    let ra = ws_a.subscribe("room:x").await;
    let id_a = client_id(&ra);
    assert_eq!(ra["room"]["members"], json!([]));
    let mut ws_b = b.ws("/ws").await;
    let rb = ws_b.subscribe("room:x").await;
    let id_b = client_id(&rb);
    assert_ne!(id_a, id_b, "ids are unique in the cluster");
    assert_eq!(
        rb["room"]["members"],
        json!([{"client": id_a, "user": null}])
    );
    assert_eq!(
        ws_a.next_json().await,
        json!({"type":"join","channel":"room:x","user":null,"client":id_b})
    );

    // B → A and A → B, each to its target alone.
    let reply = ws_b
        .command(json!({"type":"signal","room":"room:x","to":id_a,"data":{"offer":1}}))
        .await;
    assert_eq!(reply["type"], "signaled", "{reply}");
    assert_eq!(
        ws_a.next_json().await,
        json!({"type":"signal","room":"room:x","from":id_b,"user":null,"data":{"offer":1}})
    );
    ws_a.command(json!({"type":"signal","room":"room:x","to":id_b,"data":{"answer":1}}))
        .await;
    let v = ws_b.next_json().await;
    assert_eq!(
        (&v["type"], &v["from"]),
        (&json!("signal"), &json!(id_a)),
        "{v}"
    );

    // An SSE member on C signals A through POST /command sent to B: its
    // key holds on every node.
    let mut sse = c.sse("channel=room:x").await;
    let rs = sse.expect_subscribed("room:x").await;
    let (id_s, key) = (
        client_id(&rs),
        rs["room"]["client_key"].as_str().unwrap().to_owned(),
    );
    assert_eq!(rs["room"]["members"].as_array().unwrap().len(), 2, "{rs}");
    for ws in [&mut ws_a, &mut ws_b] {
        assert_eq!(
            ws.next_json().await["client"],
            json!(id_s),
            "the SSE member's join"
        );
    }
    let from_sse = json!({"type":"signal","room":"room:x","to":id_a,"from":id_s,
        "client_key":key,"data":"via b"});
    let (status, reply) = b.command(from_sse.to_string()).await;
    assert_eq!(status, 200, "{reply}");
    let v = ws_a.next_json().await;
    assert_eq!(
        (&v["from"], &v["data"]),
        (&json!(id_s), &json!("via b")),
        "{v}"
    );
    let forged = json!({"type":"signal","room":"room:x","to":id_a,"from":id_s,
        "client_key":"AAAAAAAAAAAAAAAAAAAAAA","data":"forged"});
    let (status, _) = a.command(forged.to_string()).await;
    assert_eq!(status, 403);

    // Refused: a stranger on another node, a member no longer there.
    let nobody = (1u64 << 40) * 70_000 + 5;
    let reply = ws_a
        .command(json!({"type":"signal","room":"room:x","to":nobody.to_string(),"data":1}))
        .await;
    assert_eq!(reply["code"], "unknown_client", "{reply}");
    drop(ws_b);
    let v = ws_a.next_json().await;
    assert_eq!(
        (&v["type"], &v["client"]),
        (&json!("leave"), &json!(id_b)),
        "{v}"
    );
    let reply = ws_a
        .command(json!({"type":"signal","room":"room:x","to":id_b,"data":"late"}))
        .await;
    assert_eq!(reply["code"], "unknown_client", "{reply}");
    // The barrier: a signal after the refused ones arrives alone.
    ws_a.command(json!({"type":"signal","room":"room:x","to":id_s,"data":"barrier"}))
        .await;
    let e = sse.next_event().await;
    assert_eq!(e.event, "leave", "{e:?}");
    let e = sse.next_event().await;
    assert_eq!(
        (e.event.as_str(), &e.json()["data"]),
        ("signal", &json!("barrier"))
    );
}

/// Presence lists the members of every node; join and leave reach every
/// node's subscribers; a direct message finds its recipient online on
/// another node; a disconnect ends the user's connections on every node
/// and its token is refused everywhere.
#[tokio::test]
async fn presence_direct_messages_and_disconnect_span_nodes() {
    use crate::users::{token, user_ws, with_users};
    let Some(redis) = Redis::start().await else {
        return;
    };
    let [a, b, c] = cluster_of_three(&redis, "users", with_users).await;
    let mut alice = user_ws(&a, "alice").await;
    alice.subscribe("chat:lobby").await;
    // Another member on alice's node: she hears its join once, not again
    // when it comes back from Redis.
    let mut carol = user_ws(&a, "carol").await;
    carol.subscribe("chat:lobby").await;
    let v = alice.next_json().await;
    assert_eq!(
        (&v["type"], &v["user"]),
        (&json!("join"), &json!("carol")),
        "{v}"
    );
    let mut bob = user_ws(&b, "bob").await;
    bob.subscribe("chat:lobby").await;
    bob.subscribe("#bob").await;
    let v = alice.next_json().await;
    assert_eq!(
        (&v["type"], &v["user"]),
        (&json!("join"), &json!("bob")),
        "{v}"
    );

    let (status, p) = c
        .json_response(c.http.get(c.url("/api/presence?channel=chat:lobby")))
        .await;
    assert_eq!(status, 200, "{p}");
    let users: Vec<&str> = p["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["alice", "bob", "carol"], "{p}");
    let reply = alice
        .command(json!({"type":"presence","channel":"chat:lobby"}))
        .await;
    assert_eq!(reply["users"].as_array().unwrap().len(), 3, "{reply}");
    drop(carol);
    for ws in [&mut alice, &mut bob] {
        let v = ws.next_json().await;
        assert_eq!(
            (&v["type"], &v["user"]),
            (&json!("leave"), &json!("carol")),
            "{v}"
        );
    }

    // A direct message from C: bob is online (on B), carol is not.
    let (status, sent) = c
        .json_response(c.http.post(c.url("/api/send")).json(&json!({
            "to": ["bob", "carol"], "data": {"hi": 1}
        })))
        .await;
    assert_eq!(status, 200, "{sent}");
    assert_eq!(sent, json!({"online": ["bob"], "offline": ["carol"]}));
    let v = bob.next_json().await;
    assert_eq!(v["channel"], "#bob", "{v}");

    // Disconnected from A: bob's socket on B closes, alice sees him leave,
    // and his token is refused on C.
    let (status, v) = a
        .json_response(
            a.http
                .post(a.url("/api/disconnect"))
                .json(&json!({"user":"bob"})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(bob.expect_close().await, Some(4003));
    let v = alice.next_json().await;
    assert_eq!(
        (&v["type"], &v["user"]),
        (&json!("leave"), &json!("bob")),
        "{v}"
    );
    let mut again = c.ws("/ws").await;
    let reply = again
        .command(json!({"type":"auth","token":token("bob")}))
        .await;
    assert_eq!(reply["code"], "unauthorized", "{reply}");
}

/// A member whose node stops renewing it (as a crashed node would) drops
/// out of presence within the TTL, and its leave is announced.
#[tokio::test]
async fn a_member_not_renewed_drops_out_of_presence() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let p = prefix("expire");
    let a = start_node_with(&redis, &p, "127.0.0.1", |c| {
        c.broker_presence_ttl = Duration::from_millis(300)
    })
    .await;
    let mut ws = a.ws("/ws").await;
    let own = client_id(&ws.subscribe("room:e").await);
    let b = start_node(&redis, &p, "127.0.0.2").await;
    let mut other = b.ws("/ws").await;
    let id_other = client_id(&other.subscribe("room:e").await);
    assert_eq!(ws.next_json().await["client"], json!(id_other), "its join");
    // A member of a node that died: listed, then never renewed.
    let mut conn = redis.conn().await;
    let ghost = (7u64 << 40 | 1).to_string();
    let until: u64 = {
        let (s, us): (u64, u64) = redis::cmd("TIME").query_async(&mut conn).await.unwrap();
        s * 1000 + us / 1000 + 300
    };
    let _: () = redis::pipe()
        .cmd("ZADD")
        .arg(format!("{{{p}:room:e}}:p"))
        .arg(until)
        .arg(&ghost)
        .ignore()
        .cmd("HSET")
        .arg(format!("{{{p}:room:e}}:u"))
        .arg(&ghost)
        .arg("-")
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();
    let ids = |v: &Value| -> Vec<String> {
        v["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["client"].as_str().unwrap().to_owned())
            .collect()
    };
    let listed = ws
        .command(json!({"type":"presence","channel":"room:e"}))
        .await;
    assert!(
        listed["members"].is_array() && ids(&listed).contains(&ghost),
        "{listed}"
    );
    // Its listing ends: whichever node drops it announces its leave, once.
    let v = ws.next_json().await;
    assert_eq!(
        v,
        json!({"type":"leave","channel":"room:e","user":null,"client":ghost}),
        "the ghost leaves"
    );
    let after = ws
        .command(json!({"type":"presence","channel":"room:e"}))
        .await;
    // Listed before the ghost, with the same TTL: only its node's renewals
    // keep this node's own member listed now.
    let mut want = vec![own.clone(), id_other.clone()];
    want.sort_by_key(|id| id.parse::<u64>().unwrap());
    assert_eq!(ids(&after), want, "{after}");
    let v = other.next_json().await;
    assert_eq!(
        (&v["type"], &v["client"]),
        (&json!("leave"), &json!(ghost)),
        "{v}"
    );

    // Unlisted behind its node's back (as another node does when the node
    // was cut off from Redis for longer than the TTL): its next renewal
    // lists it again, and the other nodes hear it join again.
    let _: () = redis::cmd("ZREM")
        .arg(format!("{{{p}:room:e}}:p"))
        .arg(&own)
        .query_async(&mut conn)
        .await
        .unwrap();
    let v = other.next_json().await;
    assert_eq!(
        (&v["type"], &v["client"]),
        (&json!("join"), &json!(own)),
        "{v}"
    );
}

// ---------------------------------------------------------------------------
// Sentinel

/// Nodes that reach Redis through Sentinel follow a failover: after the
/// replica is promoted, publishes go to the new master, subscribers keep
/// receiving, and history from before the failover is there.
#[tokio::test]
async fn nodes_follow_a_sentinel_failover() {
    let Some(master) = Redis::start().await else {
        return;
    };
    let replica = master.start_replica().await;
    let sentinel = master.start_sentinel("pg-main").await;
    let p = prefix("sentinel");
    let configure = |c: &mut pushgate_server::Config| c.broker_timeout = Duration::from_secs(2);
    let a = start_node_with(&sentinel, &p, "127.0.0.1", configure).await;
    let b = start_node_with(&sentinel, &p, "127.0.0.2", configure).await;
    let mut ws = a.ws("/ws?channel=fo").await;
    assert_subscribed(&ws.next_json().await, "fo");
    for n in 1..=3 {
        b.publish("fo", json!(n)).await;
    }
    ws.expect_messages("fo", 1..=3).await;
    // Everything is on the replica before it takes over (WAIT), so the
    // failover itself loses nothing here.
    let mut conn = master.conn().await;
    let synced: u64 = redis::cmd("WAIT")
        .arg(1)
        .arg(5000)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(synced, 1);

    let mut s = sentinel.conn().await;
    within("Sentinel to know the replica", async {
        loop {
            let replicas: Vec<std::collections::HashMap<String, String>> = redis::cmd("SENTINEL")
                .arg("REPLICAS")
                .arg("pg-main")
                .query_async(&mut s)
                .await
                .unwrap();
            if replicas
                .iter()
                .any(|r| r.get("flags").is_some_and(|f| f == "slave"))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let _: () = redis::cmd("SENTINEL")
        .arg("FAILOVER")
        .arg("pg-main")
        .query_async(&mut s)
        .await
        .unwrap();
    within("the replica to be the master", async {
        loop {
            let (_, port): (String, u16) = redis::cmd("SENTINEL")
                .arg("GET-MASTER-ADDR-BY-NAME")
                .arg("pg-main")
                .query_async(&mut s)
                .await
                .unwrap();
            if port == replica.port {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // The first publishes may meet the demoted master (READONLY) and
    // answer 503; then the node asks Sentinel again.
    let published = publish_when_back(&b, "fo", json!(4)).await;
    assert_eq!(published["offset"], 4, "{published}");
    assert_message(&ws.next_json().await, "fo", 4);
    // And history from before the failover is read from the new master.
    let polled = a.poll("/poll?channel=fo&since=earliest").await;
    let offsets: Vec<u64> = polled
        .messages
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [1, 2, 3, 4]);
}

/// On a Redis Cluster, the shards drop every pub/sub connection and
/// messages are published before the nodes subscribe again: a subscriber
/// gets every one, in order, once.
#[tokio::test]
async fn a_dropped_shard_subscription_is_caught_up_over_a_redis_cluster() {
    let Some(cluster) = RedisCluster::start(3).await else {
        return;
    };
    let p = prefix("shard-blip");
    let a = start_node(&cluster, &p, "127.0.0.1").await;
    let b = start_node(&cluster, &p, "127.0.0.2").await;
    let names = ["s1", "s2", "s3", "s4", "s5"];
    let mut ws = a
        .ws(&format!(
            "/ws?{}",
            names.map(|n| format!("channel={n}")).join("&")
        ))
        .await;
    for n in names {
        assert_subscribed(&ws.next_json().await, n);
    }
    for round in 1..=2u64 {
        for node in &cluster.nodes {
            let mut conn = node.conn().await;
            let _: u64 = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("TYPE")
                .arg("pubsub")
                .query_async(&mut conn)
                .await
                .unwrap();
        }
        for n in names {
            b.publish(n, json!(round)).await;
        }
        let mut got: Vec<(String, u64)> = Vec::new();
        while got.len() < names.len() {
            let v = ws.next_json().await;
            got.push((
                v["channel"].as_str().unwrap().to_owned(),
                v["offset"].as_u64().unwrap(),
            ));
        }
        got.sort();
        let want: Vec<(String, u64)> = names.iter().map(|n| (n.to_string(), round)).collect();
        assert_eq!(got, want, "round {round}");
    }
}

// ---------------------------------------------------------------------------
// TLS

/// `rediss://` to a Redis whose certificate a private CA signed: with
/// `broker_tls_ca` the nodes trust it and work; without, Redis is
/// unreachable for them (the system's roots do not know that CA).
#[tokio::test]
async fn rediss_with_a_private_ca() {
    let cert = crate::tls::TestCert::new("redis");
    let Some(redis) = Redis::start_tls(&cert.cert, &cert.key).await else {
        return;
    };
    let p = prefix("tls");
    let ca = cert.cert.to_string_lossy().into_owned();
    let trusting = |c: &mut pushgate_server::Config| c.broker_tls_ca = Some(ca.clone());
    let a = start_node_with(&redis, &p, "127.0.0.1", trusting).await;
    let b = start_node_with(&redis, &p, "127.0.0.2", trusting).await;
    let mut ws = a.ws("/ws?channel=sealed").await;
    assert_subscribed(&ws.next_json().await, "sealed");
    b.publish("sealed", json!("over tls")).await;
    assert_message(&ws.next_json().await, "sealed", 1);

    let distrusting = start_node_with(&redis, &p, "127.0.0.3", |c| {
        c.broker_timeout = Duration::from_millis(500)
    })
    .await;
    let (status, body) = try_publish(&distrusting, "sealed", json!(2)).await;
    assert_eq!(status, 503, "{body}");
}

/// A Redis that asks for a password: the password in the URL lets a node
/// in; a wrong one is a 503 that says why, and the URL's password is
/// never logged or shown.
#[tokio::test]
async fn a_password_in_the_url() {
    let Some(redis) = Redis::start_with_password("s3cret").await else {
        return;
    };
    struct WithPassword(String);
    impl BrokerUrl for WithPassword {
        fn url(&self) -> String {
            self.0.clone()
        }
    }
    let p = prefix("password");
    let right = WithPassword(format!("redis://:s3cret@127.0.0.1:{}", redis.port));
    let a = start_node(&right, &p, "127.0.0.1").await;
    let mut ws = a.ws("/ws?channel=locked").await;
    assert_subscribed(&ws.next_json().await, "locked");
    a.publish("locked", json!(1)).await;
    assert_message(&ws.next_json().await, "locked", 1);

    let wrong = WithPassword(format!("redis://:guess@127.0.0.1:{}", redis.port));
    let b = start_node_with(&wrong, &p, "127.0.0.2", |c| {
        c.broker_timeout = Duration::from_millis(500)
    })
    .await;
    let (status, body) = try_publish(&b, "locked", json!(2)).await;
    assert_eq!(status, 503, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("WRONGPASS") || message.contains("auth"),
        "{body}"
    );
    assert!(!message.contains("guess"), "{body}");
}

/// The demo's clock on two nodes of a cluster: one tick a second in all,
/// not one per node.
#[tokio::test]
async fn the_demo_clock_ticks_once_a_second_in_a_cluster() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let p = prefix("clock");
    let demo = |c: &mut pushgate_server::Config| c.demo = true;
    let a = start_node_with(&redis, &p, "127.0.0.1", demo).await;
    let _b = start_node_with(&redis, &p, "127.0.0.2", demo).await;
    let mut ws = a.ws("/ws?channel=clock").await;
    assert_subscribed(&ws.next_json().await, "clock");
    let mut seconds = Vec::new();
    for _ in 0..4 {
        let v = ws.next_json().await;
        seconds.push(v["data"]["unix_ms"].as_u64().unwrap() / 1000);
    }
    assert!(
        seconds.windows(2).all(|w| w[0] < w[1]),
        "one tick per second: {seconds:?}"
    );
}

/// `/readyz` on `node` until it answers `want`; the last body.
async fn readyz_until(node: &TestServer, want: u16) -> Value {
    within(&format!("/readyz to answer {want}"), async {
        loop {
            let (status, body) = node.json_response(node.http.get(node.url("/readyz"))).await;
            if status == want {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

fn broker_check(body: &Value) -> &Value {
    body["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "broker"))
        .unwrap_or_else(|| panic!("no broker check in {body}"))
}

/// Redis stopped: `/readyz` is 503 naming the broker; back: 200.
#[tokio::test]
async fn readyz_names_the_broker_while_redis_is_down() {
    let Some(mut redis) = Redis::start_durable().await else {
        return;
    };
    let node = start_node_with(&redis, &prefix("ready"), "127.0.0.1", |c| {
        c.broker_timeout = Duration::from_millis(500)
    })
    .await;
    let ready = readyz_until(&node, 200).await;
    assert_eq!(broker_check(&ready)["ok"], true, "{ready}");
    assert!(
        broker_check(&ready)["detail"]
            .as_str()
            .unwrap()
            .contains("came back through the Redis subscription"),
        "{ready}"
    );
    redis.kill().await;
    let down = readyz_until(&node, 503).await;
    assert_eq!(down["failing"], json!(["broker"]), "{down}");
    assert_eq!(broker_check(&down)["ok"], false);
    assert_eq!(
        metric(&node.metrics_text().await, "pushgate_ready"),
        Some(0)
    );
    redis.restart().await;
    let back = readyz_until(&node, 200).await;
    assert_eq!(broker_check(&back)["ok"], true, "{back}");
}

/// A TCP proxy to Redis that can freeze what Redis sends on the
/// connections that subscribed: the node's publishes still succeed (they
/// go over its command connection) while its subscription hears nothing —
/// what a pub/sub connection left on a demoted master looks like.
struct FreezingProxy {
    port: u16,
    frozen: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl BrokerUrl for FreezingProxy {
    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for FreezingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FreezingProxy {
    async fn start(redis_port: u16) -> FreezingProxy {
        use std::sync::atomic::AtomicBool;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen = Arc::new(AtomicBool::new(false));
        let flag = frozen.clone();
        let task = tokio::spawn(async move {
            let mut links = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", redis_port)).await
                else {
                    continue;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let subscribed = Arc::new(AtomicBool::new(false));
                let seen = subscribed.clone();
                links.spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n) = cr.read(&mut buf).await {
                        if n == 0 || sw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        if buf[..n]
                            .to_ascii_uppercase()
                            .windows(9)
                            .any(|w| w == b"SUBSCRIBE")
                        {
                            seen.store(true, Ordering::SeqCst);
                        }
                    }
                });
                let frozen = flag.clone();
                links.spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n) = sr.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        if frozen.load(Ordering::SeqCst) && subscribed.load(Ordering::SeqCst) {
                            continue; // swallowed: the socket stays open
                        }
                        if cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        FreezingProxy { port, frozen, task }
    }

    fn freeze(&self, on: bool) {
        self.frozen.store(on, Ordering::SeqCst);
    }
}

/// The failure users of other servers report: publishes answer 200 while
/// nobody receives anything, with health green. Here the subscription is
/// frozen: publishes still succeed, and `/readyz` turns 503 naming the
/// broker; thawed, it is ready again and the subscriber gets every message.
#[tokio::test]
async fn readyz_fails_when_publishes_succeed_but_the_subscription_hears_nothing() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let proxy = FreezingProxy::start(redis.port).await;
    let node = start_node_with(&proxy, &prefix("frozen"), "127.0.0.1", |c| {
        c.broker_timeout = Duration::from_millis(500)
    })
    .await;
    let mut ws = node.ws("/ws?channel=f").await;
    assert_subscribed(&ws.next_json().await, "f");
    node.publish("f", json!(1)).await;
    assert_message(&ws.next_json().await, "f", 1);
    readyz_until(&node, 200).await;

    proxy.freeze(true);
    let (status, body) = try_publish(&node, "f", json!(2)).await;
    assert_eq!(status, 200, "the publish itself succeeds: {body}");
    let down = readyz_until(&node, 503).await;
    assert_eq!(down["failing"], json!(["broker"]), "{down}");

    proxy.freeze(false);
    readyz_until(&node, 200).await;
    let v = ws.next_json().await;
    assert_message(&v, "f", 2);
}

// ---------------------------------------------------------------------------
// The server API over the cluster: surveys of every node

/// `GET path` on `node`: status and JSON.
async fn api_get(node: &TestServer, path: &str) -> (u16, Value) {
    node.json_response(node.http.get(node.url(path))).await
}

/// `/api/channels` sums every node's subscribers, `/api/info` lists every
/// node, `/api/connections` finds a user's connections on every node; a
/// node listed live that does not answer is named missing (the answer
/// still comes), and a node that stops cleanly unlists itself.
#[tokio::test]
async fn the_server_api_surveys_every_node() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let p = prefix("survey");
    let [a, _b, mut c] = survey_across(&redis, &p).await;

    // A node listed live that never answers (as one that hangs would).
    let mut conn = redis.conn().await;
    let _: () = redis::cmd("ZADD")
        .arg(format!("{{{p}}}:nodes"))
        .arg(u64::MAX / 4)
        .arg(4242)
        .query_async(&mut conn)
        .await
        .unwrap();
    let (status, info) = api_get(&a, "/api/info").await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["missing"], json!([4242]), "{info}");
    assert_eq!(info["nodes"].as_array().unwrap().len(), 3, "{info}");
    let _: () = redis::cmd("ZREM")
        .arg(format!("{{{p}}}:nodes"))
        .arg(4242)
        .query_async(&mut conn)
        .await
        .unwrap();

    // C stops cleanly: it is no longer asked.
    c.signal_shutdown();
    c.stopped().await;
    let (_, info) = api_get(&a, "/api/info").await;
    assert_eq!(info["nodes"].as_array().unwrap().len(), 2, "{info}");
    assert_eq!(info["missing"], json!([]), "{info}");
}

#[tokio::test]
async fn the_server_api_surveys_every_node_over_a_redis_cluster() {
    let Some(cluster) = RedisCluster::start(3).await else {
        return;
    };
    survey_across(&cluster, &prefix("survey-cluster")).await;
}

/// Three nodes under `p`: alice on A (WebSocket) and C (SSE), bob on B;
/// each endpoint answers for all three from any of them.
async fn survey_across(broker: &impl BrokerUrl, p: &str) -> [TestServer; 3] {
    use crate::users::{token, user_ws, with_users};
    let a = start_node_with(broker, p, "127.0.0.1", with_users).await;
    let b = start_node_with(broker, p, "127.0.0.2", with_users).await;
    let c = start_node_with(broker, p, "127.0.0.3", with_users).await;
    let mut alice = user_ws(&a, "alice").await;
    alice.subscribe("chat:lobby").await;
    let mut bob = user_ws(&b, "bob").await;
    bob.subscribe("chat:lobby").await;
    let mut sse = c
        .sse(&format!("channel=chat:x&token={}", token("alice")))
        .await;
    sse.expect_subscribed("chat:x").await;

    let (status, listed) = api_get(&b, "/api/channels?pattern=chat:*").await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(
        listed,
        json!({"channels": [
            {"channel": "chat:lobby", "subscribers": 2},
            {"channel": "chat:x", "subscribers": 1},
        ], "next": null, "missing": []})
    );
    let (_, busiest) = api_get(&c, "/api/channels?order=busiest&limit=1").await;
    assert_eq!(
        busiest["channels"],
        json!([{"channel": "chat:lobby", "subscribers": 2}])
    );

    let (status, info) = api_get(&c, "/api/info").await;
    assert_eq!(status, 200, "{info}");
    let nodes = info["nodes"].as_array().unwrap();
    let numbers: Vec<u64> = nodes.iter().map(|n| n["node"].as_u64().unwrap()).collect();
    let mut expected: Vec<u64> = [&a, &b, &c].iter().map(|s| s.state.hub.node()).collect();
    expected.sort_unstable();
    assert_eq!(numbers, expected, "{info}");
    assert_eq!(info["node"], c.state.hub.node());
    let total: u64 = nodes
        .iter()
        .map(|n| n["connections"]["total"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 3, "{info}");

    let (status, found) = api_get(&b, "/api/connections?user=alice").await;
    assert_eq!(status, 200, "{found}");
    let mut seen: Vec<(u64, &str)> = found["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["node"].as_u64().unwrap(),
                c["transport"].as_str().unwrap(),
            )
        })
        .collect();
    seen.sort_unstable();
    let mut want = vec![(a.state.hub.node(), "ws"), (c.state.hub.node(), "sse")];
    want.sort_unstable();
    assert_eq!(seen, want, "{found}");
    let on_a = found["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["transport"] == "ws")
        .unwrap();
    assert!(
        on_a["address"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{on_a}"
    );
    drop((alice, bob, sse));
    [a, b, c]
}
