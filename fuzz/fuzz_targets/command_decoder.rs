//! `protocol::decode` and `protocol::decode_publish` on arbitrary bytes.
//!
//! Properties: a decoded command's replies (and a rejection's error reply)
//! encode to one script-safe JSON object that echoes the command id; publish
//! data is valid JSON, script-safe, and the same value as the input's `data`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pushgate_core::auth::{personal_channel, UserId};
use pushgate_core::hub::{LiveEvent, Presence, Recipients, RoomJoin};
use pushgate_core::json::SafeJson;
use pushgate_core::protocol::{
    decode, decode_publish, encode_reset, Command, DirectMessage, Publish, Reply, Signal,
    MAX_JSON_DEPTH,
};
use pushgate_core::{Data, Epoch, Error, ErrorKind, Position};
use pushgate_fuzz::{is_json, is_script_safe};
use serde_json::Value;

/// An encoded reply: one script-safe JSON object of `kind`, with `id` echoed.
fn check_reply(text: &str, kind: &str, id: Option<&Value>) {
    assert!(is_script_safe(text), "reply not script-safe: {text:?}");
    let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
    assert_eq!(v["type"], kind, "{text:?}");
    assert_eq!(v.get("id"), id, "{text:?}");
}

/// `data` of a publish: valid JSON, script-safe, the same value as `original`.
fn check_data(data: &Data, original: Option<&Value>) {
    let Data::Json(json) = data else {
        panic!("a JSON command gave binary data")
    };
    let json = json.as_str();
    assert!(is_json(json), "data is not JSON: {json:?}");
    assert!(is_script_safe(json), "data not script-safe: {json:?}");
    if let Some(original) = original {
        let back: Value = serde_json::from_str(json).expect("data parses like the input did");
        assert_eq!(&back, original);
    }
}

/// A presence list naming the input's channel as a user (any text).
fn to_users(name: Option<&Value>) -> Vec<(UserId, Vec<u64>)> {
    let name = name.and_then(Value::as_str).unwrap_or("<\u{2028}");
    vec![(name.into(), vec![1, u64::MAX])]
}

/// Room members: an anonymous one, and one of the input's channel as a user.
fn to_members(name: Option<&Value>) -> Vec<(u64, Option<UserId>)> {
    let name = name.and_then(Value::as_str).unwrap_or("<\u{2028}");
    vec![(1, None), (u64::MAX, Some(name.into()))]
}

fuzz_target!(|bytes: &[u8]| {
    // The input as a JSON value, when serde_json's `Value` can hold it (not,
    // say, with 1e999 inside): the reference for ids and data.
    let input: Option<Value> = serde_json::from_slice(bytes).ok();
    let field = |name: &str| input.as_ref().and_then(|v| v.get(name));
    let epoch = Epoch::new("fz").unwrap();
    // Whatever is accepted nests no deeper than the limit inside its object.
    let too_deep = pushgate_core::json::nests_deeper(bytes, MAX_JSON_DEPTH + 1);
    match decode(bytes, MAX_JSON_DEPTH) {
        Ok(req) => {
            assert!(!too_deep);
            let id = req.id.as_ref();
            if let Some(id) = id {
                let echoed: Value = serde_json::from_str(id.as_json()).unwrap();
                if let Some(given) = field("id") {
                    // Integer ids come back as written (a float id is refused).
                    assert_eq!(&echoed, given);
                }
            }
            let id_json = id.map(|i| serde_json::from_str::<Value>(i.as_json()).unwrap());
            let position = Position::new(epoch, u64::MAX);
            match &req.command {
                Command::Subscribe { channel, .. } => {
                    let r = Reply::Subscribed {
                        channel: channel.clone(),
                        position: position.clone(),
                        room: None,
                    };
                    check_reply(&r.encode(id), "subscribed", id_json.as_ref());
                    let key = field("channel").and_then(Value::as_str).unwrap_or("k");
                    let r = Reply::Subscribed {
                        channel: channel.clone(),
                        position: position.clone(),
                        room: Some(Box::new(RoomJoin {
                            client: u64::MAX,
                            client_key: key.into(),
                            members: to_members(field("channel")),
                            ice_servers: "[]".into(),
                        })),
                    };
                    check_reply(&r.encode(id), "subscribed", id_json.as_ref());
                    check_reply(&encode_reset(channel, &position), "reset", None);
                }
                Command::Unsubscribe { channel } => {
                    let r = Reply::Unsubscribed {
                        channel: channel.clone(),
                    };
                    check_reply(&r.encode(id), "unsubscribed", id_json.as_ref());
                }
                Command::Publish(Publish { channel, data, .. }) => {
                    check_data(data, field("data"));
                    let r = Reply::Published {
                        channel: channel.clone(),
                        position,
                    };
                    check_reply(&r.encode(id), "published", id_json.as_ref());
                }
                Command::Ping => check_reply(&Reply::Pong.encode(id), "pong", id_json.as_ref()),
                Command::Auth { token } => {
                    assert_eq!(field("token").and_then(Value::as_str), Some(token.as_str()));
                    let r = Reply::Authed {
                        user: token.as_str().into(),
                        expires: Some(u64::MAX),
                    };
                    check_reply(&r.encode(id), "authed", id_json.as_ref());
                }
                Command::Send(DirectMessage { to, data, .. }) => {
                    check_data(&Data::Json(data.clone()), field("data"));
                    assert!(!to.is_empty() && to.len() <= 100);
                    for user in to {
                        assert!(personal_channel(user).is_some(), "{user:?}");
                    }
                    // Recipient ids come back in the reply, script-safe.
                    let (online, offline) = to.split_at(to.len() / 2);
                    let r = Reply::Sent(Recipients {
                        online: online.to_vec(),
                        offline: offline.to_vec(),
                    });
                    check_reply(&r.encode(id), "sent", id_json.as_ref());
                    let wrapped = SafeJson::direct_message(to.first().map(|u| &**u), data);
                    check_data(&Data::Json(wrapped), None);
                }
                Command::Presence { channel } => {
                    let r = Reply::Presence(Presence {
                        channel: channel.clone(),
                        users: to_users(field("channel")),
                        anonymous: 1,
                        members: Some(to_members(field("channel"))),
                    });
                    check_reply(&r.encode(id), "presence", id_json.as_ref());
                }
                Command::Signal(Signal {
                    room,
                    to,
                    from,
                    data,
                }) => {
                    check_data(&Data::Json(data.clone()), field("data"));
                    let r = Reply::Signaled {
                        room: room.clone(),
                        to: *to,
                    };
                    check_reply(&r.encode(id), "signaled", id_json.as_ref());
                    // What the target receives: script-safe, the same data.
                    let sender = from.as_ref().map_or(0, |(f, _)| *f);
                    let user = from.as_ref().map(|(_, key)| UserId::from(key.as_str()));
                    let event = LiveEvent::signal(room.clone(), sender, user.as_ref(), data);
                    let text = std::str::from_utf8(event.json()).unwrap();
                    check_reply(text, "signal", None);
                    let v: Value = serde_json::from_str(text).unwrap();
                    if let Some(original) = field("data") {
                        assert_eq!(&v["data"], original);
                    }
                }
            }
            // Any command can still fail when executed.
            let e = Error::new(ErrorKind::Unavailable, "x");
            check_reply(&Reply::Error(e).encode(id), "error", id_json.as_ref());
        }
        Err(rejected) => {
            let id = rejected.id.as_ref();
            let id_json = id.map(|i| serde_json::from_str::<Value>(i.as_json()).unwrap());
            let text = Reply::Error(rejected.error.clone()).encode(id);
            check_reply(&text, "error", id_json.as_ref());
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["code"], rejected.error.code());
            assert_eq!(v["message"], rejected.error.message());
        }
    }
    match decode_publish(bytes, MAX_JSON_DEPTH) {
        Ok(Publish { data, .. }) => {
            assert!(!too_deep);
            check_data(&data, field("data"))
        }
        Err(e) => {
            assert!(matches!(
                e.kind(),
                ErrorKind::BadJson
                    | ErrorKind::BadRequest
                    | ErrorKind::InvalidChannel
                    | ErrorKind::InvalidEvent
                    | ErrorKind::TooDeep
            ));
        }
    }
});
