use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::FutureExt;

use super::*;
use crate::clock::ManualClock;
use crate::connection::{Connection, Limits};
use crate::cursor::{Cursor, Positions, Since};
use crate::error::ErrorKind;
use crate::log::{MemoryLog, MemoryLogConfig};
use crate::protocol::{Reply, MAX_JSON_DEPTH};
use crate::session::Emit;
use crate::Epoch;

pub(super) fn ch(s: &str) -> ChannelName {
    ChannelName::new(s).unwrap()
}

/// A hub over a memory log, with a clock the test moves.
fn hub(history_size: usize, ttl: Millis, direct_gap_ms: Millis) -> (Arc<Hub>, ManualClock) {
    let clock = ManualClock::new(1_000);
    let log = MemoryLog::new(MemoryLogConfig {
        history_size,
        history_ttl_ms: ttl,
        clock: Arc::new(clock.clone()),
        ..Default::default()
    });
    let config = HubConfig {
        direct_gap_ms,
        clock: Arc::new(clock.clone()),
        ..HubConfig::default()
    };
    (Arc::new(Hub::new(Arc::new(log), config)), clock)
}

/// Runs a future of the memory log, which never waits.
pub(super) fn now<T>(f: impl std::future::Future<Output = T>) -> T {
    f.now_or_never().expect("the memory log answers at once")
}

fn publish(hub: &Hub, c: &str, n: u64) -> Arc<Publication> {
    now(hub.publish(ch(c), None, Data::json(&n.to_string()).unwrap())).unwrap()
}

fn subscriber(id: SubscriberId) -> Subscriber {
    Subscriber {
        id,
        outbox: Outbox::new(16),
    }
}

#[test]
fn isolated_messages_go_straight_to_parked_sockets_bursts_to_queues() {
    struct Count(AtomicUsize);
    impl DirectSink for Count {
        fn try_send(&self, _: &Publication) -> Sent {
            self.0.fetch_add(1, Ordering::SeqCst);
            Sent::All
        }
    }
    let (hub, clock) = hub(10, 60_000, DIRECT_GAP_MS);
    let sub = subscriber(1);
    let c = now(hub.subscribe(&ch("a"), StartAt::Now, &sub)).unwrap();
    let count = Arc::new(Count(Default::default()));
    let sink: Arc<dyn DirectSink> = count.clone();
    let mut positions = Positions::new();
    positions.push(crate::cursor::Standing {
        channel: c.channel.clone(),
        epoch: c.position.epoch.clone(),
        offset: 0,
    });
    assert!(sub.outbox.park(&sink, &mut positions));
    let written = || count.0.load(Ordering::SeqCst);
    publish(&hub, "a", 1); // the first: written
    clock.advance(DIRECT_GAP_MS - 1);
    publish(&hub, "a", 2); // one short gap: still written
    clock.advance(DIRECT_GAP_MS);
    publish(&hub, "a", 3); // isolated again: written
    clock.advance(DIRECT_GAP_MS - 1);
    publish(&hub, "a", 4); // one short gap: written
    assert_eq!((written(), sub.outbox.len()), (4, 0));
    clock.advance(DIRECT_GAP_MS - 1);
    publish(&hub, "a", 5); // the second in a row: a burst, queued
    clock.advance(1);
    publish(&hub, "a", 6);
    assert_eq!((written(), sub.outbox.len()), (4, 2));
    assert!(sub.outbox.unpark(&mut positions).is_none());
    assert_eq!(positions[0].offset, 4, "fan-out moved the position along");
    clock.advance(DIRECT_GAP_MS);
    publish(&hub, "a", 7); // the burst is over
    assert_eq!(sub.outbox.len(), 3, "not parked: queued");
}

#[test]
fn subscribe_replays_after_the_position_then_fans_out_until_unsubscribed() {
    let (hub, _) = hub(10, 60_000, DIRECT_GAP_MS);
    let p1 = publish(&hub, "a", 1);
    publish(&hub, "a", 2);
    let sub = subscriber(1);
    let c = now(hub.subscribe(&ch("a"), StartAt::After(p1.position()), &sub)).unwrap();
    assert!(!c.reset);
    assert_eq!(c.messages.iter().map(|p| p.offset).collect::<Vec<_>>(), [2]);
    assert_eq!(c.position.offset, 2);
    publish(&hub, "a", 3);
    assert_eq!(sub.outbox.len(), 1);
    assert_eq!(hub.subscriber_count(&ch("a")), 1);
    hub.unsubscribe(&ch("a"), 1);
    hub.unsubscribe(&ch("a"), 1);
    publish(&hub, "a", 4);
    assert_eq!(sub.outbox.len(), 1, "nothing after unsubscribing");
    assert_eq!(hub.subscriber_count(&ch("a")), 0);
}

#[test]
fn subscribed_channels_keep_their_epoch_through_sweeps() {
    let (hub, clock) = hub(10, 1_000, DIRECT_GAP_MS);
    let sub = subscriber(7);
    let c = now(hub.subscribe(&ch("a"), StartAt::Now, &sub)).unwrap();
    clock.advance(10_000);
    now(hub.sweep());
    assert_eq!(hub.subscriber_count(&ch("a")), 1);
    let p = publish(&hub, "a", 1);
    assert_eq!(p.epoch, c.position.epoch, "no reset for a quiet channel");
    hub.unsubscribe(&ch("a"), 7);
    clock.advance(10_000);
    now(hub.sweep());
    let again = publish(&hub, "a", 2);
    assert_eq!(
        (again.offset, again.epoch != p.epoch),
        (1, true),
        "unused, idle and expired: forgotten"
    );
}

#[test]
fn a_lost_log_resets_every_local_subscriber() {
    let (hub, _) = hub(10, 60_000, DIRECT_GAP_MS);
    let sub = subscriber(1);
    now(hub.subscribe(&ch("a"), StartAt::Now, &sub)).unwrap();
    let position = Position::new(Epoch::new("fresh").unwrap(), 0);
    hub.fanout.lost(&ch("a"), position.clone());
    let mut out = Vec::new();
    sub.outbox.try_drain(&mut out);
    assert!(matches!(
        &out[..],
        [OutboxEvent::Reset { channel, position: p }] if *channel == ch("a") && *p == position
    ));
}

/// A log whose store is down.
struct Down;

#[async_trait]
impl Log for Down {
    async fn append(
        &self,
        _: ChannelName,
        _: Option<EventName>,
        _: Data,
    ) -> Result<Arc<Publication>, Error> {
        Err(Error::new(ErrorKind::Unavailable, "store down"))
    }

    async fn read(&self, _: &ChannelName, _: StartAt, _: usize) -> Result<Catchup, Error> {
        Err(Error::new(ErrorKind::Unavailable, "store down"))
    }

    fn watch(&self, _: Arc<dyn Appended>) {}
}

#[test]
fn log_errors_reach_the_caller_and_leave_nothing_registered() {
    let hub = Hub::new(Arc::new(Down), HubConfig::default());
    let e = now(hub.publish(ch("a"), None, Data::json("1").unwrap())).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    let sub = subscriber(1);
    let e = now(hub.subscribe(&ch("a"), StartAt::Now, &sub)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert_eq!(
        hub.subscriber_count(&ch("a")),
        0,
        "a failed subscribe unregisters"
    );
    let mut conn = Connection::new(Arc::new(hub), 2, Limits::default(), Default::default());
    let (reply, _) = now(conn.execute(
        crate::protocol::Request {
            id: None,
            command: crate::protocol::Command::Subscribe {
                channel: ch("a"),
                since: Since::Now,
            },
        },
        Instant::now(),
    ));
    assert!(matches!(reply, Reply::Error(e) if e.kind() == ErrorKind::Unavailable));
    assert!(
        conn.session().is_empty(),
        "the session holds no failed subscription"
    );
}

/// A log whose reads never finish: the caller gives up while waiting.
struct Stuck(MemoryLog);

#[async_trait]
impl Log for Stuck {
    async fn append(
        &self,
        c: ChannelName,
        e: Option<EventName>,
        d: Data,
    ) -> Result<Arc<Publication>, Error> {
        self.0.append(c, e, d).await
    }

    async fn read(&self, _: &ChannelName, _: StartAt, _: usize) -> Result<Catchup, Error> {
        std::future::pending().await
    }

    fn watch(&self, listener: Arc<dyn Appended>) {
        self.0.watch(listener)
    }
}

#[test]
fn a_subscribe_abandoned_during_its_read_leaves_nothing_registered() {
    let hub = Hub::new(
        Arc::new(Stuck(MemoryLog::new(MemoryLogConfig::default()))),
        HubConfig::default(),
    );
    let sub = subscriber(1);
    let a = ch("a");
    let mut pending = Box::pin(hub.subscribe(&a, StartAt::Now, &sub));
    assert!((&mut pending).now_or_never().is_none());
    assert_eq!(
        hub.subscriber_count(&ch("a")),
        1,
        "registered before the read"
    );
    drop(pending);
    assert_eq!(hub.subscriber_count(&ch("a")), 0);
}

/// The session/hub promise as a property: whatever mix of publishes on two
/// channels, direct writes (whole, partial, refused), bursts, reconnects
/// that resume from the client's own cursor while messages keep coming,
/// and history trims, the client sees each channel's messages exactly once
/// and in order; where history could not cover its cursor it is told to
/// reset (and only then); and in the end it stands at the top of each
/// channel.
mod promise {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Mutex as StdMutex;

    const CHANNELS: [&str; 2] = ["a", "b"];

    /// What the client received on one channel.
    #[derive(Debug, Clone, PartialEq)]
    enum Got {
        Message(Epoch, u64),
        Reset(Epoch, u64),
    }

    /// The client: what reached it, per channel, and a frame whose tail is
    /// still owed by the server (a partial direct write).
    #[derive(Default)]
    struct Client {
        got: Vec<(ChannelName, Got)>,
        owed: Option<(ChannelName, Got)>,
        /// How the next direct writes go: 0 whole, 1 refused, 2 in part.
        script: Vec<u8>,
    }

    impl Client {
        fn receive(&mut self, c: ChannelName, g: Got) {
            assert!(self.owed.is_none(), "a frame began before another ended");
            self.got.push((c, g));
        }

        /// Where the client stands in `c`, by what it fully received.
        fn standing(&self, c: &ChannelName) -> Option<Position> {
            self.got
                .iter()
                .rev()
                .find(|(n, _)| n == c)
                .map(|(_, g)| match g {
                    Got::Message(e, o) | Got::Reset(e, o) => Position::new(e.clone(), *o),
                })
        }

        fn cursor(&self) -> Cursor {
            let mut cursor = Cursor::new();
            for name in CHANNELS {
                if let Some(p) = self.standing(&ch(name)) {
                    cursor.set(ch(name), p);
                }
            }
            cursor
        }
    }

    struct Wire(StdMutex<Client>);

    impl DirectSink for Wire {
        fn try_send(&self, p: &Publication) -> Sent {
            let mut c = self.0.lock().unwrap();
            let pick = if c.script.is_empty() {
                0
            } else {
                c.script.remove(0) % 3
            };
            let got = Got::Message(p.epoch.clone(), p.offset);
            match pick {
                0 => {
                    c.receive(p.channel.clone(), got);
                    Sent::All
                }
                1 => Sent::Nothing,
                _ => {
                    assert!(c.owed.is_none());
                    c.owed = Some((p.channel.clone(), got));
                    Sent::Part(Bytes::from_static(b"tail"))
                }
            }
        }
    }

    use bytes::Bytes;

    /// Events through the session, and what they become to the client.
    fn deliver(conn: &mut Connection, wire: &Wire, events: Vec<OutboxEvent>) {
        let mut client = wire.0.lock().unwrap();
        conn.accept_each(events, |emit| match emit {
            Emit::Message(p) => {
                client.receive(p.channel.clone(), Got::Message(p.epoch.clone(), p.offset))
            }
            Emit::Reset { channel, position } => {
                client.receive(channel, Got::Reset(position.epoch, position.offset))
            }
            Emit::Live(_) => {}
        });
    }

    /// The connection's task: finish an owed frame, deliver what is queued,
    /// park.
    fn run_task(conn: &mut Connection, wire: &Arc<Wire>, sink: &Arc<dyn DirectSink>) {
        if conn.unpark().is_some() {
            let mut c = wire.0.lock().unwrap();
            let (name, got) = c.owed.take().expect("a tail is owed");
            c.receive(name, got);
        }
        let mut events = Vec::new();
        conn.outbox().try_drain(&mut events);
        deliver(conn, wire, events);
        conn.park(sink);
    }

    /// A new connection that subscribes to both channels from the client's
    /// cursor and delivers its catch-up.
    fn connect(
        hub: &Arc<Hub>,
        id: SubscriberId,
        wire: &Arc<Wire>,
        sink: &Arc<dyn DirectSink>,
    ) -> Connection {
        let mut conn = Connection::new(hub.clone(), id, Limits::default(), Default::default());
        let since = Since::Cursor(wire.0.lock().unwrap().cursor());
        for name in CHANNELS {
            let (reply, events) = now(conn.subscribe(ch(name), &since)).unwrap();
            let Reply::Subscribed { position, .. } = reply else {
                panic!("not subscribed: {reply:?}")
            };
            {
                let mut c = wire.0.lock().unwrap();
                if c.standing(&ch(name)).is_none() {
                    // A client without a position starts where the reply says.
                    c.receive(ch(name), Got::Reset(position.epoch, position.offset));
                }
            }
            deliver(&mut conn, wire, events);
        }
        run_task(&mut conn, wire, sink);
        conn
    }

    #[derive(Debug, Clone)]
    enum Op {
        Publish(usize),
        Wake,
        /// Time passes (ends or continues a burst).
        Advance(u64),
        /// The connection drops (an owed frame never arrives) and the client
        /// comes back with its cursor.
        Reconnect,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..2usize).prop_map(Op::Publish),
            3 => Just(Op::Wake),
            2 => (0..25u64).prop_map(Op::Advance),
            1 => Just(Op::Reconnect),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn exactly_once_in_order_resets_only_where_history_ran_out(
            ops in proptest::collection::vec(op(), 1..80),
            script in proptest::collection::vec(any::<u8>(), 0..80),
            history_size in prop_oneof![Just(1000usize), 2..6usize],
        ) {
            let (hub, clock) = hub(history_size, 3_600_000, DIRECT_GAP_MS);
            let wire = Arc::new(Wire(StdMutex::new(Client { script, ..Default::default() })));
            let sink: Arc<dyn DirectSink> = wire.clone();
            let mut next_id = 1;
            let mut conn = connect(&hub, next_id, &wire, &sink);
            let mut published = [0u64; 2];
            for op in ops {
                match op {
                    Op::Publish(i) => {
                        publish(&hub, CHANNELS[i], published[i]);
                        published[i] += 1;
                    }
                    Op::Wake => run_task(&mut conn, &wire, &sink),
                    Op::Advance(ms) => clock.advance(ms),
                    Op::Reconnect => {
                        drop(conn);
                        wire.0.lock().unwrap().owed = None;
                        next_id += 1;
                        conn = connect(&hub, next_id, &wire, &sink);
                    }
                }
            }
            run_task(&mut conn, &wire, &sink);
            let client = wire.0.lock().unwrap();
            prop_assert!(client.owed.is_none());
            for (i, name) in CHANNELS.iter().enumerate() {
                let name = ch(name);
                let seen: Vec<&Got> = client.got.iter().filter(|(c, _)| *c == name).map(|(_, g)| g).collect();
                // The first entry is where the client started.
                let mut at = match seen[0] {
                    Got::Reset(e, o) => Position::new(e.clone(), *o),
                    other => panic!("the client started with {other:?}"),
                };
                for g in &seen[1..] {
                    match g {
                        Got::Message(e, o) => {
                            prop_assert_eq!((e, *o), (&at.epoch, at.offset + 1),
                                "{:?}: exactly once and in order after {:?}", name, at);
                            at.offset = *o;
                        }
                        Got::Reset(e, o) => {
                            prop_assert!(history_size < 1000, "{:?}: a reset with nothing trimmed", name);
                            prop_assert!(*e != at.epoch || *o > at.offset, "{:?}: a reset never goes back", name);
                            at = Position::new(e.clone(), *o);
                        }
                    }
                }
                let top = now(hub.read(&name, StartAt::Now, 0)).unwrap().position;
                prop_assert_eq!(&at, &top, "{:?}: the client ends at the top", name);
                prop_assert_eq!(top.offset, published[i]);
            }
        }
    }
}

/// A hub whose `chat:` channels have presence and join/leave, `room:`
/// channels presence only; everything open.
fn presence_hub() -> Arc<Hub> {
    use crate::namespace::{Namespace, Namespaces, Rules};
    let chat = Rules {
        presence: true,
        join_leave: true,
        ..Rules::open()
    };
    let room = Rules {
        presence: true,
        ..Rules::open()
    };
    let namespaces = Namespaces::new(
        Rules::open(),
        Rules::open(),
        vec![
            Namespace::new("chat", chat).unwrap(),
            Namespace::new("room", room).unwrap(),
        ],
    );
    let log = MemoryLog::new(MemoryLogConfig {
        history_size: 100,
        history_ttl_ms: 60_000,
        clock: Arc::new(ManualClock::new(1_000)),
        ..Default::default()
    });
    let config = HubConfig {
        policy: Arc::new(crate::auth::Policy::new(None, namespaces)),
        clock: Arc::new(ManualClock::new(1_000_000)),
        ..HubConfig::default()
    };
    Arc::new(Hub::new(Arc::new(log), config))
}

pub(super) fn as_user(id: &str) -> crate::Principal {
    crate::Principal::User(Arc::new(crate::User {
        id: id.into(),
        channels: Default::default(),
        publish: Default::default(),
        send: true,
        expires: None,
        issued_at: None,
        admin: false,
    }))
}

pub(super) fn conn(hub: &Arc<Hub>, id: SubscriberId, who: crate::Principal) -> Connection {
    Connection::new(hub.clone(), id, Limits::default(), who)
}

fn join(conn: &mut Connection, c: &str) {
    let (reply, _) = now(conn.subscribe(ch(c), &Since::Now)).unwrap();
    assert!(matches!(reply, Reply::Subscribed { .. }), "{reply:?}");
}

/// What the connection's outbox holds, through its session.
fn drain(conn: &mut Connection) -> Vec<Emit> {
    let mut events = Vec::new();
    conn.outbox().try_drain(&mut events);
    let mut out = Vec::new();
    conn.accept_all(events, &mut out);
    out
}

fn presence_events(emits: &[Emit]) -> Vec<String> {
    emits
        .iter()
        .map(|e| match e {
            Emit::Live(p) => String::from_utf8(p.json().to_vec()).unwrap(),
            other => format!("{other:?}"),
        })
        .collect()
}

#[test]
fn presence_lists_members_and_forgets_them_on_unsubscribe_and_drop() {
    let hub = presence_hub();
    let mut a1 = conn(&hub, 12, as_user("alice"));
    let mut a2 = conn(&hub, 17, as_user("alice"));
    let mut b = conn(&hub, 5, as_user("bob"));
    let mut anon = conn(&hub, 9, crate::Principal::Anonymous);
    for c in [&mut a1, &mut a2, &mut b, &mut anon] {
        join(c, "room:1");
    }
    let p = now(hub.presence(&ch("room:1"))).unwrap();
    let users: Vec<(&str, Vec<u64>)> = p.users.iter().map(|(u, c)| (&**u, c.clone())).collect();
    assert_eq!(users, vec![("alice", vec![12, 17]), ("bob", vec![5])]);
    assert_eq!(p.anonymous, 1);

    let (reply, _) = now(b.execute(
        crate::protocol::decode(
            br#"{"type":"unsubscribe","channel":"room:1"}"#,
            MAX_JSON_DEPTH,
        )
        .unwrap(),
        Instant::now(),
    ));
    assert!(matches!(reply, Reply::Unsubscribed { .. }));
    drop(a2);
    drop(anon);
    let p = now(hub.presence(&ch("room:1"))).unwrap();
    assert_eq!(p.users.len(), 1);
    assert_eq!(p.users[0].1, vec![12]);
    assert_eq!(p.anonymous, 0);
    // Without join_leave nobody heard anything.
    assert!(drain(&mut a1).is_empty());
    drop(a1);
    assert_eq!(now(hub.presence(&ch("room:1"))).unwrap().users, vec![]);

    // A channel without presence: refused, and nothing is kept for it.
    let mut c = conn(&hub, 1, as_user("carol"));
    join(&mut c, "news");
    let e = now(hub.presence(&ch("news"))).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadRequest);
    assert!(e.message().contains("presence is off"), "{}", e.message());
    let local = hub.fanout.get(&ch("news")).unwrap();
    assert!(lock(&local).members.is_none());
}

#[test]
fn the_presence_command_answers_as_documented() {
    let hub = presence_hub();
    let mut a = conn(&hub, 12, as_user("alice"));
    join(&mut a, "room:1");
    let req = crate::protocol::decode(
        br#"{"type":"presence","channel":"room:1","id":3}"#,
        MAX_JSON_DEPTH,
    )
    .unwrap();
    let id = req.id.clone();
    let (reply, _) = now(a.execute(req, Instant::now()));
    let v: serde_json::Value = serde_json::from_str(&reply.encode(id.as_ref())).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"type":"presence","id":3,"channel":"room:1",
            "users":[{"user":"alice","clients":["12"]}],"anonymous":0})
    );
    let req = crate::protocol::decode(br#"{"type":"presence","channel":"news"}"#, MAX_JSON_DEPTH)
        .unwrap();
    let (reply, _) = now(a.execute(req, Instant::now()));
    assert!(matches!(reply, Reply::Error(e) if e.kind() == ErrorKind::BadRequest));
}

#[test]
fn join_and_leave_reach_the_other_subscribers_and_move_no_cursor() {
    let hub = presence_hub();
    let mut watcher = conn(&hub, 1, as_user("bob"));
    join(&mut watcher, "chat:a");
    publish(&hub, "chat:a", 1);
    let before = drain(&mut watcher);
    assert_eq!(before.len(), 1);
    let cursor = watcher.session().cursor();

    let mut alice = conn(&hub, 12, as_user("alice"));
    join(&mut alice, "chat:a");
    assert!(drain(&mut alice).is_empty(), "no join of its own");
    let mut anon = conn(&hub, 13, crate::Principal::Anonymous);
    join(&mut anon, "chat:a");
    drop(anon);
    now(alice.execute(
        crate::protocol::decode(
            br#"{"type":"unsubscribe","channel":"chat:a"}"#,
            MAX_JSON_DEPTH,
        )
        .unwrap(),
        Instant::now(),
    ));
    assert_eq!(
        presence_events(&drain(&mut watcher)),
        vec![
            r#"{"type":"join","channel":"chat:a","user":"alice","client":"12"}"#,
            r#"{"type":"join","channel":"chat:a","user":null,"client":"13"}"#,
            r#"{"type":"leave","channel":"chat:a","user":null,"client":"13"}"#,
            r#"{"type":"leave","channel":"chat:a","user":"alice","client":"12"}"#,
        ]
    );
    assert_eq!(
        watcher.session().cursor(),
        cursor,
        "the cursor did not move"
    );
    // The next message is still the next offset, not a duplicate or a gap.
    publish(&hub, "chat:a", 2);
    let after = drain(&mut watcher);
    assert!(matches!(&after[..], [Emit::Message(p)] if p.offset == before_offset(&before) + 1));

    // A poll request neither joins nor hears joins.
    let mut poller = conn(&hub, 40, as_user("carol")).without_presence();
    join(&mut poller, "chat:a");
    assert_eq!(now(hub.presence(&ch("chat:a"))).unwrap().users.len(), 1);
    assert!(drain(&mut watcher).is_empty());
    let mut dave = conn(&hub, 41, as_user("dave"));
    join(&mut dave, "chat:a");
    assert!(drain(&mut poller).is_empty());
}

fn before_offset(emits: &[Emit]) -> u64 {
    match emits.last() {
        Some(Emit::Message(p)) => p.offset,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_join_is_queued_behind_a_parked_connection_and_stops_direct_writes() {
    struct Count(AtomicUsize);
    impl DirectSink for Count {
        fn try_send(&self, _: &Publication) -> Sent {
            self.0.fetch_add(1, Ordering::SeqCst);
            Sent::All
        }
    }
    let hub = presence_hub();
    let mut watcher = conn(&hub, 1, as_user("bob"));
    join(&mut watcher, "chat:a");
    let sink = Arc::new(Count(AtomicUsize::new(0)));
    let dyn_sink: Arc<dyn DirectSink> = sink.clone();
    assert!(watcher.park(&dyn_sink));
    let mut alice = conn(&hub, 12, as_user("alice"));
    join(&mut alice, "chat:a");
    publish(&hub, "chat:a", 1);
    assert_eq!(sink.0.load(Ordering::SeqCst), 0, "queued behind the join");
    watcher.unpark();
    let emits = drain(&mut watcher);
    assert!(matches!(&emits[..], [Emit::Live(_), Emit::Message(p)] if p.offset == 1));
}

#[test]
fn send_appends_to_personal_channels_and_says_who_is_online() {
    let hub = presence_hub();
    let mut tab1 = conn(&hub, 1, as_user("alice"));
    let mut tab2 = conn(&hub, 2, as_user("alice"));
    let mut other = conn(&hub, 3, as_user("bob"));
    join(&mut tab1, "#alice");
    join(&mut tab2, "#alice");
    join(&mut other, "#bob");
    let mut carol = conn(&hub, 4, as_user("carol"));
    let req = crate::protocol::decode(
        br#"{"type":"send","to":["alice","dave"],"data":{"t":"</script>"},"id":1}"#,
        MAX_JSON_DEPTH,
    )
    .unwrap();
    let (reply, _) = now(carol.execute(req, Instant::now()));
    let v: serde_json::Value = serde_json::from_str(&reply.encode(None)).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"type":"sent","online":["alice"],"offline":["dave"]})
    );
    for tab in [&mut tab1, &mut tab2] {
        let emits = drain(tab);
        let [Emit::Message(p)] = &emits[..] else {
            panic!("{emits:?}")
        };
        assert_eq!(p.channel.as_str(), "#alice");
        let json = std::str::from_utf8(p.json()).unwrap();
        assert!(!json.contains('<'), "script-safe: {json}");
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(
            v["data"],
            serde_json::json!({"from":"carol","data":{"t":"</script>"}})
        );
    }
    assert!(drain(&mut other).is_empty(), "nobody else");
    // Offline recipients find it in their history.
    let dave = now(hub.read(&ch("#dave"), StartAt::Earliest, 10)).unwrap();
    assert_eq!(dave.messages.len(), 1);
    // From the API: "from" is null.
    let r = now(hub.send(
        None,
        &["alice".into()],
        None,
        &crate::json::SafeJson::parse(b"1").unwrap(),
    ))
    .unwrap();
    assert_eq!(r.online, vec![crate::auth::UserId::from("alice")]);
    let emits = drain(&mut tab1);
    let [Emit::Message(p)] = &emits[..] else {
        panic!("{emits:?}")
    };
    let v: serde_json::Value = serde_json::from_slice(p.json()).unwrap();
    assert_eq!(v["data"], serde_json::json!({"from":null,"data":1}));
}

#[test]
fn send_refuses_bad_recipient_lists() {
    for body in [
        r#"{"type":"send","to":[],"data":1}"#.to_string(),
        r#"{"type":"send","to":["a b"],"data":1}"#.to_string(),
        r#"{"type":"send","to":"alice","data":1}"#.to_string(),
        r#"{"type":"send","to":["alice"]}"#.to_string(),
        format!(
            r#"{{"type":"send","to":[{}],"data":1}}"#,
            (0..=MAX_RECIPIENTS)
                .map(|i| format!("\"u{i}\""))
                .collect::<Vec<_>>()
                .join(",")
        ),
    ] {
        let e = crate::protocol::decode(body.as_bytes(), MAX_JSON_DEPTH).unwrap_err();
        assert_eq!(e.error.kind(), ErrorKind::BadRequest, "{body}");
    }
}

#[test]
fn disconnect_tells_every_live_connection_of_the_user_and_no_other() {
    let hub = presence_hub();
    let a1 = conn(&hub, 1, as_user("alice"));
    let a2 = conn(&hub, 2, as_user("alice"));
    let b = conn(&hub, 3, as_user("bob"));
    let mut late = conn(&hub, 4, crate::Principal::Anonymous);
    let dropped = conn(&hub, 5, as_user("alice"));
    drop(dropped);
    let _ = &mut late;
    assert_eq!(now(hub.disconnect(&"alice".into())), Ok(2));
    let mut out = Vec::new();
    assert_eq!(a1.outbox().try_drain(&mut out), Some(Drained::Disconnected));
    assert_eq!(a2.outbox().try_drain(&mut out), Some(Drained::Disconnected));
    assert_eq!(b.outbox().try_drain(&mut out), None);
    assert_eq!(now(hub.disconnect(&"alice".into())), Ok(0), "told once");
    assert_eq!(hub.policy().revoked_count(), 1);
}

mod presence_model {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        /// Connection `i` subscribes (when it is not subscribed).
        Subscribe(usize),
        /// Connection `i` unsubscribes (when it is subscribed).
        Unsubscribe(usize),
        /// Connection `i` is dropped and replaced by a fresh one.
        Drop(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..6usize).prop_map(Op::Subscribe),
            (0..6usize).prop_map(Op::Unsubscribe),
            (0..6usize).prop_map(Op::Drop),
        ]
    }

    /// Connection `i`'s user: three users, one anonymous slot.
    fn who(i: usize) -> crate::Principal {
        match i % 4 {
            3 => crate::Principal::Anonymous,
            u => as_user(["alice", "bob", "carol"][u]),
        }
    }

    proptest! {
        /// Whatever connections do, presence lists exactly those subscribed,
        /// and a watcher that replays the join/leave it heard arrives at the
        /// same list: no stale entry, no missed or doubled event.
        #[test]
        fn presence_and_join_leave_track_the_subscribers(ops in proptest::collection::vec(op(), 0..40)) {
            let hub = presence_hub();
            let mut watcher = conn(&hub, 1000, as_user("watcher"));
            join(&mut watcher, "chat:m");
            drain(&mut watcher);
            let mut next_id = 0;
            let mut fresh = |i: usize| {
                next_id += 1;
                conn(&hub, next_id, who(i))
            };
            let mut conns: Vec<Connection> = (0..6).map(&mut fresh).collect();
            let mut subscribed = [false; 6];
            for op in ops {
                match op {
                    Op::Subscribe(i) if !subscribed[i] => {
                        join(&mut conns[i], "chat:m");
                        subscribed[i] = true;
                    }
                    Op::Unsubscribe(i) if subscribed[i] => {
                        let req = crate::protocol::decode(br#"{"type":"unsubscribe","channel":"chat:m"}"#, MAX_JSON_DEPTH).unwrap();
                        now(conns[i].execute(req, Instant::now()));
                        subscribed[i] = false;
                    }
                    Op::Drop(i) => {
                        conns[i] = fresh(i);
                        subscribed[i] = false;
                    }
                    _ => {}
                }
            }
            // The model: who is subscribed, by client id.
            let mut expected: BTreeMap<u64, Option<String>> = BTreeMap::new();
            expected.insert(1000, Some("watcher".into()));
            for (i, c) in conns.iter().enumerate() {
                if subscribed[i] {
                    expected.insert(c.id(), c.principal().user().map(|u| u.id.to_string()));
                }
            }
            let p = now(hub.presence(&ch("chat:m"))).unwrap();
            let mut listed: BTreeMap<u64, Option<String>> = BTreeMap::new();
            for (user, clients) in &p.users {
                for c in clients {
                    listed.insert(*c, Some(user.to_string()));
                }
            }
            let anonymous = expected.values().filter(|u| u.is_none()).count();
            expected.retain(|_, u| u.is_some());
            prop_assert_eq!(&listed, &expected);
            prop_assert_eq!(p.anonymous, anonymous);

            // Replaying what the watcher heard.
            let mut heard: BTreeMap<u64, Option<String>> = BTreeMap::new();
            heard.insert(1000, Some("watcher".into()));
            for emit in drain(&mut watcher) {
                let Emit::Live(e) = emit else { panic!("{emit:?}") };
                let v: serde_json::Value = serde_json::from_slice(e.json()).unwrap();
                let client: u64 = v["client"].as_str().unwrap().parse().unwrap();
                let user = v["user"].as_str().map(str::to_owned);
                match e.kind {
                    LiveKind::Join => prop_assert!(heard.insert(client, user).is_none(), "joined twice"),
                    LiveKind::Leave => prop_assert!(heard.remove(&client).is_some(), "left unjoined"),
                    LiveKind::Signal => prop_assert!(false, "nobody signalled"),
                }
            }
            heard.retain(|_, u| u.is_some());
            prop_assert_eq!(heard, expected);
        }
    }
}

#[test]
fn a_connection_publishes_at_its_rate_and_only_what_was_accepted_is_delivered() {
    let t0 = Instant::now();
    let policy = crate::auth::Policy::open().with_publish_rate(crate::rate::Rate::new(10, 3, t0));
    let config = HubConfig {
        policy: Arc::new(policy),
        ..HubConfig::default()
    };
    let log = MemoryLog::new(MemoryLogConfig::default());
    let hub = Arc::new(Hub::new(Arc::new(log), config));
    let mut reader = conn(&hub, 1, crate::Principal::Anonymous);
    join(&mut reader, "room");
    let mut flooder = conn(&hub, 2, as_user("mallory"));
    let command = |text: &str| crate::protocol::decode(text.as_bytes(), MAX_JSON_DEPTH).unwrap();
    let publish = |n: u32| {
        command(&format!(
            r#"{{"type":"publish","channel":"room","data":{n}}}"#
        ))
    };
    let mut run = |req, at| now(flooder.execute(req, at)).0;

    for n in 0..3 {
        assert!(matches!(run(publish(n), t0), Reply::Published { .. }));
    }
    // The fourth at once, and a direct message (the same allowance): refused
    // with the wait, on a connection that goes on.
    for req in [
        publish(3),
        command(r#"{"type":"send","to":["bob"],"data":1}"#),
    ] {
        let Reply::Error(e) = run(req, t0 + Duration::from_millis(30)) else {
            panic!("not refused")
        };
        assert_eq!(e.kind(), ErrorKind::RateLimited);
        assert_eq!(e.retry_after(), Some(Duration::from_millis(70)));
        assert!(e.message().contains("at most 3 at once and 10 per second"));
    }
    // Commands that make no work for others are not counted.
    assert_eq!(run(command(r#"{"type":"ping"}"#), t0), Reply::Pong);
    // After the wait, one more.
    assert!(matches!(
        run(publish(4), t0 + Duration::from_millis(100)),
        Reply::Published { .. }
    ));
    let got: Vec<u64> = drain(&mut reader)
        .iter()
        .map(|e| match e {
            Emit::Message(p) => p.offset,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        got,
        [1, 2, 3, 4],
        "the refused publish never reached the log"
    );
}
