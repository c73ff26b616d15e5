//! Rooms and the signal relay, without sockets: who a member sees when it
//! joins, where a signal goes, and every refusal reaching nobody.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::tests::{as_user as user, ch, conn, now};
use super::*;
use crate::connection::Connection;
use crate::error::ErrorKind;
use crate::log::{MemoryLog, MemoryLogConfig};
use crate::protocol::{decode, Reply, MAX_JSON_DEPTH};
use crate::rtc::{RtcConfig, TurnCredentials};
use crate::session::Emit;

/// A hub with the built-in `room` namespace, open, and `rtc`.
fn rooms(rtc: RtcConfig) -> Arc<Hub> {
    let config = HubConfig {
        rtc: Arc::new(rtc),
        clock: Arc::new(crate::ManualClock::new(1_700_000_000_000)),
        ..HubConfig::default()
    };
    Arc::new(Hub::new(
        Arc::new(MemoryLog::new(MemoryLogConfig::default())),
        config,
    ))
}

/// Runs one command; returns its reply as the wire JSON.
pub(super) fn run(c: &mut Connection, text: &str) -> Value {
    let req = decode(text.as_bytes(), MAX_JSON_DEPTH).unwrap();
    let id = req.id.clone();
    let (reply, _) = now(c.execute(req, Instant::now()));
    serde_json::from_str(&reply.encode(id.as_ref())).unwrap()
}

fn join(c: &mut Connection, room: &str) -> Value {
    run(c, &format!(r#"{{"type":"subscribe","channel":"{room}"}}"#))
}

/// The live events the connection's outbox holds, as JSON.
pub(super) fn heard(c: &mut Connection) -> Vec<Value> {
    let mut events = Vec::new();
    c.outbox().try_drain(&mut events);
    let mut out = Vec::new();
    c.accept_all(events, &mut out);
    out.iter()
        .map(|e| match e {
            Emit::Live(e) => serde_json::from_slice(e.json()).unwrap(),
            other => panic!("{other:?}"),
        })
        .collect()
}

fn signal(to: &str, data: &str) -> String {
    format!(r#"{{"type":"signal","room":"room:1","to":"{to}","data":{data}}}"#)
}

#[test]
fn joining_a_room_shows_the_members_connections_and_the_ice_servers() {
    let hub = rooms(RtcConfig {
        ice_servers: vec!["stun:s.example:3478".into(), "turn:t.example".into()],
        turn: TurnCredentials::Secret {
            secret: "north".into(),
            ttl: Duration::from_secs(86_400),
        },
        ..RtcConfig::default()
    });
    let mut a1 = conn(&hub, 12, user("alice"));
    let mut a2 = conn(&hub, 17, user("alice"));
    let mut anon = conn(&hub, 5, crate::Principal::Anonymous);
    let first = join(&mut a1, "room:1");
    assert_eq!(first["room"]["client"], "12");
    assert_eq!(first["room"]["members"], json!([]));
    join(&mut anon, "room:1");
    let third = join(&mut a2, "room:1");
    let room = &third["room"];
    assert_eq!(room["client"], "17");
    assert_eq!(
        room["members"],
        json!([{"client":"5","user":null},{"client":"12","user":"alice"}]),
        "one user's two tabs are two members; anonymous ones are listed"
    );
    assert_eq!(room["client_key"], hub.keys.key(17));
    assert_eq!(
        room["ice_servers"][0],
        json!({"urls":["stun:s.example:3478"]})
    );
    assert_eq!(room["ice_servers"][1]["username"], "1700086400:alice");
    // The first member heard the two others join, by connection id.
    let ids: Vec<Value> = heard(&mut a1).iter().map(|e| e["client"].clone()).collect();
    assert_eq!(ids, [json!("5"), json!("17")]);
    // `presence` lists everyone, anonymous members too.
    let p = run(&mut anon, r#"{"type":"presence","channel":"room:1"}"#);
    assert_eq!(
        p["members"],
        json!([{"client":"5","user":null},{"client":"12","user":"alice"},
            {"client":"17","user":"alice"}])
    );
    // A member that is dropped (a crash, a lost connection) leaves.
    drop(a2);
    let left = heard(&mut a1);
    assert_eq!(left[0]["type"], "leave");
    assert_eq!(left[0]["client"], "17");
    // No room for other channels, nor for a connection outside presence.
    let news = join(&mut a1, "news");
    assert!(news.get("room").is_none(), "{news}");
    let mut poll = conn(&hub, 30, crate::Principal::Anonymous).without_presence();
    let polled = join(&mut poll, "room:1");
    assert!(polled.get("room").is_none(), "{polled}");
}

#[test]
fn a_signal_reaches_its_target_alone_with_the_senders_id() {
    let hub = rooms(RtcConfig::default());
    let mut a = conn(&hub, 1, user("alice"));
    let mut b = conn(&hub, 2, crate::Principal::Anonymous);
    let mut c = conn(&hub, 3, user("carol"));
    for x in [&mut a, &mut b, &mut c] {
        join(x, "room:1");
    }
    for x in [&mut a, &mut b, &mut c] {
        heard(x);
    }
    let reply = run(&mut a, &signal("2", r#"{"sdp":"<offer>"}"#));
    assert_eq!(reply, json!({"type":"signaled","room":"room:1","to":"2"}));
    assert_eq!(
        heard(&mut b),
        [
            json!({"type":"signal","room":"room:1","from":"1","user":"alice","data":{"sdp":"<offer>"}})
        ]
    );
    assert!(heard(&mut a).is_empty() && heard(&mut c).is_empty());
    // The answer goes back by the id the signal carried.
    run(&mut b, &signal("1", r#"{"sdp":"answer"}"#));
    assert_eq!(heard(&mut a)[0]["from"], "2");
    assert_eq!(heard(&mut a), Vec::<Value>::new());
    // Never in the room's history, which holds what was published only.
    now(hub.publish(ch("room:1"), None, crate::Data::json("7").unwrap())).unwrap();
    let history = now(hub.read(&ch("room:1"), crate::StartAt::Earliest, 100)).unwrap();
    assert_eq!(history.messages.len(), 1);
    assert_eq!(history.position.offset, 1);
}

#[test]
fn every_refused_signal_reaches_nobody() {
    let hub = rooms(RtcConfig {
        max_signal_size: 64,
        ..RtcConfig::default()
    });
    let mut a = conn(&hub, 1, crate::Principal::Anonymous);
    let mut b = conn(&hub, 2, crate::Principal::Anonymous);
    let mut other = conn(&hub, 3, crate::Principal::Anonymous);
    let mut outsider = conn(&hub, 4, crate::Principal::Anonymous);
    join(&mut a, "room:1");
    join(&mut b, "room:1");
    join(&mut other, "room:2");
    join(&mut outsider, "news");
    let mut poll = conn(&hub, 5, crate::Principal::Anonymous).without_presence();
    join(&mut poll, "room:1");
    for x in [&mut a, &mut b, &mut other] {
        heard(x);
    }
    let refused = |c: &mut Connection, text: &str, code: &str| {
        let reply = run(c, text);
        assert_eq!(
            (&reply["type"], &reply["code"]),
            (&json!("error"), &json!(code)),
            "{text}"
        );
    };
    // To an unknown connection, one in another room, itself.
    refused(&mut a, &signal("99", "1"), "unknown_client");
    refused(&mut a, &signal("3", "1"), "unknown_client");
    refused(&mut a, &signal("1", "1"), "unknown_client");
    // From outside the room: another room's member, a non-member, a poll.
    refused(&mut other, &signal("2", "1"), "not_in_room");
    refused(&mut outsider, &signal("2", "1"), "not_in_room");
    refused(&mut poll, &signal("2", "1"), "not_in_room");
    // In a channel that is no room.
    refused(
        &mut a,
        r#"{"type":"signal","room":"news","to":"2","data":1}"#,
        "bad_request",
    );
    // Too large a payload.
    let big = format!("\"{}\"", "x".repeat(64));
    refused(&mut a, &signal("2", &big), "too_large");
    // Over /command: a client_key that is not the sender's.
    let mut command = conn(&hub, 6, crate::Principal::Anonymous);
    let forged = format!(
        r#"{{"type":"signal","room":"room:1","to":"2","from":"1","client_key":"{}","data":1}}"#,
        hub.keys.key(3)
    );
    refused(&mut command, &forged, "forbidden");
    for x in [&mut a, &mut b, &mut other, &mut outsider] {
        assert_eq!(heard(x), Vec::<Value>::new());
    }
    // The barrier: a legitimate signal after the refused ones arrives, alone.
    let proven = format!(
        r#"{{"type":"signal","room":"room:1","to":"2","from":"1","client_key":"{}","data":"ok"}}"#,
        hub.keys.key(1)
    );
    assert_eq!(run(&mut command, &proven)["type"], "signaled");
    let got = heard(&mut b);
    assert_eq!(got.len(), 1);
    assert_eq!(
        (&got[0]["from"], &got[0]["data"]),
        (&json!("1"), &json!("ok"))
    );
    // A member that left is unknown at once, and a signal queued for one
    // that unsubscribes before reading it is not delivered.
    run(&mut a, &signal("2", "\"late\""));
    run(&mut b, r#"{"type":"unsubscribe","channel":"room:1"}"#);
    assert_eq!(heard(&mut b), Vec::<Value>::new());
    refused(&mut a, &signal("2", "1"), "unknown_client");
}

#[test]
fn signals_spend_the_publish_allowance() {
    let t0 = Instant::now();
    let policy = crate::auth::Policy::open().with_publish_rate(crate::rate::Rate::new(10, 2, t0));
    let hub = Arc::new(Hub::new(
        Arc::new(MemoryLog::new(MemoryLogConfig::default())),
        HubConfig {
            policy: Arc::new(policy),
            ..HubConfig::default()
        },
    ));
    let mut a = conn(&hub, 1, crate::Principal::Anonymous);
    let mut b = conn(&hub, 2, crate::Principal::Anonymous);
    join(&mut a, "room:1");
    join(&mut b, "room:1");
    heard(&mut b);
    let send = |c: &mut Connection| {
        let req = decode(signal("2", "1").as_bytes(), MAX_JSON_DEPTH).unwrap();
        now(c.execute(req, t0)).0
    };
    assert!(matches!(send(&mut a), Reply::Signaled { .. }));
    assert!(matches!(send(&mut a), Reply::Signaled { .. }));
    let Reply::Error(e) = send(&mut a) else {
        panic!("not limited")
    };
    assert_eq!(e.kind(), ErrorKind::RateLimited);
    assert_eq!(heard(&mut b).len(), 2, "the refused one was not relayed");
}
