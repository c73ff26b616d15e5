use std::future::Future;

use futures_util::FutureExt;

use super::*;
use crate::channel::ChannelName;
use crate::connection::Limits;
use crate::cursor::Since;
use crate::hub::{Hub, HubConfig};
use crate::log::{MemoryLog, MemoryLogConfig};
use crate::principal::Principal;
use crate::publication::Data;

/// Frames as text tags, so a test reads what went out.
struct Tags;

impl Framing for Tags {
    fn emit(&mut self, session: &Session, emit: &Emit) -> Bytes {
        let tag = match emit {
            Emit::Message(p) => format!("m{}", p.offset),
            Emit::Reset { position, .. } => format!("r{}", position.offset),
            Emit::Live(e) => e.kind.name().to_string(),
        };
        // The session already counts the emit.
        Bytes::from(format!(
            "{tag}@{}",
            session.cursor().encode().rsplit('.').next().unwrap()
        ))
    }

    fn reply(&mut self, json: &str) -> Bytes {
        Bytes::from(json.to_owned())
    }

    fn heartbeat(&mut self) -> Bytes {
        Bytes::from_static(b"ping")
    }

    fn farewell(&mut self, end: End) -> Option<Bytes> {
        (end != End::Stalled).then(|| Bytes::from(format!("end:{end:?}")))
    }
}

fn now<T>(f: impl Future<Output = T>) -> T {
    f.now_or_never().expect("the memory log answers at once")
}

const SECOND: Duration = Duration::from_secs(1);

fn websocket_timing() -> Timing {
    Timing {
        heartbeat: 25 * SECOND,
        heartbeat_after_silence: false,
        idle: Some(60 * SECOND),
        stall: 60 * SECOND,
    }
}

fn stream_timing() -> Timing {
    Timing {
        heartbeat: 15 * SECOND,
        heartbeat_after_silence: true,
        idle: None,
        stall: 60 * SECOND,
    }
}

/// A delivery subscribed to channel `c`, and the hub to publish on.
fn delivery(timing: Timing, t0: Instant) -> (Delivery<Tags>, Arc<Hub>) {
    let log = Arc::new(MemoryLog::new(MemoryLogConfig::default()));
    let hub = Arc::new(Hub::new(log, HubConfig::default()));
    let mut conn = Connection::new(hub.clone(), 1, Limits::default(), Principal::Anonymous);
    let (_, catchup) = now(conn.subscribe(ChannelName::new("c").unwrap(), &Since::Now)).unwrap();
    let mut d = Delivery::new(conn, Tags, Arc::new(timing), t0);
    d.deliver(catchup, || t0);
    (d, hub)
}

fn publish(hub: &Hub, n: u64) {
    let c = ChannelName::new("c").unwrap();
    now(hub.publish(c, None, Data::json(&n.to_string()).unwrap())).unwrap();
}

/// Drains the outbox into the delivery, as the loop does when woken.
fn drain(d: &mut Delivery<Tags>, at: Instant) {
    let mut events = Vec::new();
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    if let std::task::Poll::Ready(drained) =
        d.connection().outbox().poll_drain(&mut cx, &mut events)
    {
        d.drained(drained);
    }
    d.deliver(events, || at);
}

/// Takes everything pending, as a loop that wrote it all would.
fn write_all(d: &mut Delivery<Tags>) -> Vec<String> {
    let out: Vec<String> = d
        .pending()
        .drain(..)
        .map(|b| String::from_utf8(b.to_vec()).unwrap())
        .collect();
    d.written();
    out
}

#[test]
fn events_are_framed_once_each_in_order_and_counted() {
    let t0 = Instant::now();
    let (mut d, hub) = delivery(websocket_timing(), t0);
    for n in 1..=3 {
        publish(&hub, n);
    }
    drain(&mut d, t0);
    // Each frame was made with the session already past its message.
    assert_eq!(write_all(&mut d), ["m1@1", "m2@2", "m3@3"]);
    assert_eq!(d.take_delivered(), 3);
    assert_eq!(d.take_delivered(), 0, "counted once");
    // A duplicate (a catch-up overlapping live delivery) sends nothing.
    let again = now(d.connection().hub().read(
        &ChannelName::new("c").unwrap(),
        crate::log::StartAt::Earliest,
        10,
    ))
    .unwrap();
    d.deliver(again.messages.into_iter().map(OutboxEvent::Message), || t0);
    assert!(!d.has_pending());
}

#[test]
fn a_reply_goes_before_the_events_of_its_command() {
    let t0 = Instant::now();
    let (mut d, hub) = delivery(stream_timing(), t0);
    publish(&hub, 1);
    let events = {
        let mut e = Vec::new();
        d.connection().outbox().try_drain(&mut e);
        e
    };
    d.reply(&Reply::Pong, None, events, t0);
    assert_eq!(
        write_all(&mut d),
        [r#"{"type":"pong","heartbeat":15000}"#, "m1@1"],
        "the reply announces the heartbeat interval"
    );
}

#[test]
fn a_websocket_pings_on_time_and_a_silent_peer_is_idle() {
    let t0 = Instant::now();
    let (mut d, hub) = delivery(websocket_timing(), t0);
    assert_eq!(d.poll_timeout(), Some(t0 + 25 * SECOND));
    // Traffic to the peer does not postpone the Ping: only a Pong proves life.
    publish(&hub, 1);
    drain(&mut d, t0 + 10 * SECOND);
    write_all(&mut d);
    assert_eq!(d.poll_timeout(), Some(t0 + 25 * SECOND));
    d.handle_timeout(t0 + 25 * SECOND);
    assert_eq!(write_all(&mut d), ["ping"]);
    // The peer answered at 26 s: idle now ends at 86 s, after the next pings.
    d.received(t0 + 26 * SECOND);
    assert_eq!(d.poll_timeout(), Some(t0 + 50 * SECOND));
    d.handle_timeout(t0 + 50 * SECOND);
    d.handle_timeout(t0 + 75 * SECOND);
    assert_eq!(write_all(&mut d), ["ping", "ping"]);
    assert_eq!(d.poll_timeout(), Some(t0 + 86 * SECOND));
    d.handle_timeout(t0 + 86 * SECOND);
    assert_eq!(d.end(), Some(End::Idle));
    assert_eq!(d.poll_timeout(), None, "nothing more to time once ended");
}

#[test]
fn a_stream_heartbeats_only_after_silence_and_never_idles() {
    let t0 = Instant::now();
    let (mut d, hub) = delivery(stream_timing(), t0);
    assert_eq!(d.poll_timeout(), Some(t0 + 15 * SECOND));
    publish(&hub, 1);
    drain(&mut d, t0 + 10 * SECOND);
    write_all(&mut d);
    assert_eq!(
        d.poll_timeout(),
        Some(t0 + 25 * SECOND),
        "a message is as good as a ping"
    );
    d.handle_timeout(t0 + 25 * SECOND);
    assert_eq!(write_all(&mut d), ["ping"]);
    d.handle_timeout(t0 + 3600 * SECOND);
    assert_eq!(
        d.end(),
        None,
        "an event stream's peer never speaks: no idle end"
    );
}

#[test]
fn a_write_blocked_too_long_ends_the_delivery_unless_some_goes_out() {
    let t0 = Instant::now();
    let (mut d, hub) = delivery(stream_timing(), t0);
    publish(&hub, 1);
    drain(&mut d, t0);
    assert_eq!(
        d.poll_timeout(),
        Some(t0 + 15 * SECOND),
        "queued, not blocked"
    );
    d.blocked(|| t0 + SECOND);
    d.blocked(|| unreachable!("the clock runs already"));
    assert_eq!(d.poll_timeout(), Some(t0 + 15 * SECOND));
    // Part of it went out at 50 s; it blocks again at once.
    d.pending()[0] = Bytes::from_static(b"tail");
    d.written();
    d.blocked(|| t0 + 50 * SECOND);
    d.handle_timeout(t0 + 100 * SECOND);
    assert_eq!(d.end(), None);
    d.handle_timeout(t0 + 110 * SECOND);
    assert_eq!(d.end(), Some(End::Stalled));
}

#[test]
fn falling_behind_and_shutting_down_end_it_with_their_reason() {
    let t0 = Instant::now();
    let (mut d, _) = delivery(websocket_timing(), t0);
    d.drained(Drained::Events);
    assert_eq!(d.end(), None);
    d.drained(Drained::ShutDown);
    d.drained(Drained::Overflowed);
    assert_eq!(d.end(), Some(End::ShutDown), "the first reason stands");
    assert_eq!(write_all(&mut d), ["end:ShutDown"], "one farewell");
    let (mut d, hub) = delivery(websocket_timing(), t0);
    publish(&hub, 1);
    d.connection().outbox().shut_down();
    drain(&mut d, t0);
    drain(&mut d, t0);
    assert_eq!(d.end(), Some(End::ShutDown));
    assert_eq!(
        write_all(&mut d),
        ["m1@1", "end:ShutDown"],
        "the farewell comes after what was queued"
    );
}

#[test]
fn an_event_stream_with_a_lifetime_ends_then_with_its_farewell() {
    let t0 = Instant::now();
    let lifetime = Timing {
        idle: Some(300 * SECOND),
        ..stream_timing()
    };
    let (mut d, hub) = delivery(lifetime, t0);
    // Messages do not extend it: only the peer speaking would, and an
    // event stream's peer never does.
    for n in 1..=2 {
        publish(&hub, n);
        drain(&mut d, t0 + n as u32 * 100 * SECOND);
    }
    d.handle_timeout(t0 + 299 * SECOND);
    assert_eq!(d.end(), None);
    d.handle_timeout(t0 + 300 * SECOND);
    assert_eq!(d.end(), Some(End::Idle));
    assert_eq!(write_all(&mut d).last().unwrap(), "end:Idle");
    assert_eq!(d.poll_timeout(), None);
}

#[test]
fn a_direct_writes_tail_comes_first_and_counts_as_waiting() {
    struct Half;
    impl DirectSink for Half {
        fn try_send(&self, _: &crate::Publication) -> crate::Sent {
            crate::Sent::Part(Bytes::from_static(b"tail"))
        }
    }
    let t0 = Instant::now();
    let (mut d, hub) = delivery(stream_timing(), t0);
    let sink: Arc<dyn DirectSink> = Arc::new(Half);
    d.park(&sink);
    publish(&hub, 1);
    assert!(d.unpark(), "a framed tail is first");
    assert_eq!(
        write_all(&mut d),
        ["tail"],
        "and nothing else: fan-out wrote message 1"
    );
    assert_eq!(
        d.connection()
            .session()
            .cursor()
            .encode()
            .rsplit('.')
            .next(),
        Some("1"),
        "the session stands where fan-out's write left it"
    );
}

#[test]
fn a_disconnected_user_ends_the_delivery_with_its_reason() {
    let t0 = Instant::now();
    let (mut d, _hub) = delivery(stream_timing(), t0);
    d.connection().outbox().disconnect();
    let mut events = Vec::new();
    let drained = d.connection().outbox().try_drain(&mut events).unwrap();
    d.drained(drained);
    assert_eq!(d.end(), Some(End::Disconnected));
    assert_eq!(write_all(&mut d), ["end:Disconnected"]);
}
