//! Client commands and server replies: the JSON protocol shared by the
//! WebSocket transport and `POST /command` (see `docs/protocol.md`).

use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::channel::{ChannelName, EventName};
use crate::cursor::{Position, Since};
use crate::error::{Error, ErrorKind};
use crate::hub::{RoomJoin, SubscriberId};
use crate::json::{self, SafeJson};
use crate::publication::Data;

/// Longest string accepted as a command `id`.
pub const MAX_ID_LEN: usize = 128;

/// The default of `max_json_depth`: how deep a command's or an API body's
/// fields (a message's `data`) may nest arrays and objects. Real data
/// rarely nests beyond ten; client parsers fail on deep nesting (.NET's
/// `System.Text.Json` at 64 by default, recursive parsers by overflowing
/// their stack), and data reaches subscribers inside up to four more
/// levels (a poll body, its list, the message, a direct message's
/// `{"from","data"}`). 32 keeps every message well inside what any client
/// can read.
pub const MAX_JSON_DEPTH: usize = 32;

/// A command id as JSON text (a number or a string), echoed verbatim in the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandId(String);

impl CommandId {
    /// The id as JSON text (a number, or a string with its quotes), to splice
    /// into a reply.
    pub fn as_json(&self) -> &str {
        &self.0
    }
}

/// What a client asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Follow a channel.
    Subscribe {
        /// The channel to follow.
        channel: ChannelName,
        /// Where to start: now, the oldest retained message, or after a
        /// cursor's position.
        since: Since,
    },
    /// Stop following a channel.
    Unsubscribe {
        /// The channel to leave.
        channel: ChannelName,
    },
    /// Publish a message.
    Publish(Publish),
    /// A keep-alive; answered with [`Reply::Pong`].
    Ping,
    /// A fresh token for this connection, before its current one expires
    /// (or a first one, on a WebSocket opened without). Answered with
    /// [`Reply::Authed`].
    Auth {
        /// The JWT.
        token: String,
    },
    /// A direct message to users (their personal channels). Answered with
    /// [`Reply::Sent`].
    Send(DirectMessage),
    /// Who is subscribed to a channel with presence. Answered with
    /// [`Reply::Presence`].
    Presence {
        /// The channel asked about.
        channel: ChannelName,
    },
    /// A WebRTC signal to another member of a room. Answered with
    /// [`Reply::Signaled`].
    Signal(Signal),
}

/// A `signal`: `data` for member `to` of `room`, from this connection or,
/// over `POST /command`, from the connection `from` proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signal {
    /// The room both are in.
    pub room: ChannelName,
    /// The receiving connection's id.
    pub to: SubscriberId,
    /// The sending connection and its `client_key`, when the command
    /// comes from elsewhere (`POST /command`); `None`: the connection the
    /// command arrived on.
    pub from: Option<(SubscriberId, String)>,
    /// The payload, compact and script-safe.
    pub data: SafeJson,
}

/// A direct message as a client (`send`) or the API (`/api/send`) gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectMessage {
    /// The recipients' user ids: 1 to [`crate::hub::MAX_RECIPIENTS`], each
    /// making a valid personal channel name.
    pub to: Vec<crate::auth::UserId>,
    /// The event name, for SSE's `event:` field.
    pub event: Option<EventName>,
    /// The payload, compact and script-safe.
    pub data: SafeJson,
}

/// A publication as a client or the publish API sends it: what `publish`
/// carries, and all that [`decode_publish`] can return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Where to publish.
    pub channel: ChannelName,
    /// The event name, for SSE's `event:` field.
    pub event: Option<EventName>,
    /// The payload; JSON arrives here compact and script-safe.
    pub data: Data,
}

impl Command {
    /// Whether it makes the server work for other clients (a publication,
    /// a direct message, a signal): what a client's publish rate limits
    /// ([`crate::rate`]).
    pub fn counts_toward_publish_rate(&self) -> bool {
        matches!(
            self,
            Command::Publish(_) | Command::Send(_) | Command::Signal(_)
        )
    }

    /// The command's `type`.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Subscribe { .. } => "subscribe",
            Command::Unsubscribe { .. } => "unsubscribe",
            Command::Publish(_) => "publish",
            Command::Ping => "ping",
            Command::Auth { .. } => "auth",
            Command::Send(_) => "send",
            Command::Presence { .. } => "presence",
            Command::Signal(_) => "signal",
        }
    }
}

/// A decoded command and the id its reply echoes.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The client's id for the command, if it gave one.
    pub id: Option<CommandId>,
    /// What it asks for.
    pub command: Command,
}

/// A command that could not be decoded; the reply still echoes its id when
/// the id itself was readable.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// The command's id, when it could be read.
    pub id: Option<CommandId>,
    /// Why, for the error reply.
    pub error: Error,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
struct RawCommand<'a> {
    #[serde(rename = "type", default, borrow, deserialize_with = "present")]
    kind: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    channel: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    since: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    event: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    token: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    to: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    room: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    from: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    client_key: Option<&'a RawValue>,
}

fn string_field(raw: Option<&RawValue>, name: &str) -> Result<Option<String>, Error> {
    match raw {
        None => Ok(None),
        Some(r) if r.get() == "null" => Ok(None),
        Some(r) => serde_json::from_str::<String>(r.get())
            .map(Some)
            .map_err(|_| Error::bad_request(format!("field \"{name}\" must be a string"))),
    }
}

fn required(value: Option<String>, command: &str, name: &str) -> Result<String, Error> {
    value.ok_or_else(|| Error::bad_request(format!("{command} needs a \"{name}\" field")))
}

fn decode_id(raw: Option<&RawValue>) -> Result<Option<CommandId>, Error> {
    let Some(raw) = raw else { return Ok(None) };
    let text = raw.get();
    if text == "null" {
        return Ok(None);
    }
    if let Ok(n) = serde_json::from_str::<u64>(text) {
        return Ok(Some(CommandId(n.to_string())));
    }
    if let Ok(s) = serde_json::from_str::<String>(text) {
        if s.len() <= MAX_ID_LEN {
            let mut out = String::with_capacity(s.len() + 2);
            json::push_string(&mut out, &s);
            return Ok(Some(CommandId(out)));
        }
    }
    Err(Error::bad_request(format!(
        "\"id\" must be a non-negative integer or a string of at most {MAX_ID_LEN} bytes"
    )))
}

fn publish_fields(raw: &RawCommand<'_>) -> Result<Publish, Error> {
    let name = required(string_field(raw.channel, "channel")?, "publish", "channel")?;
    let channel = ChannelName::new(&name)?;
    let event = string_field(raw.event, "event")?
        .map(|e| EventName::new(&e))
        .transpose()?;
    let data = raw
        .data
        .ok_or_else(|| Error::bad_request("publish needs a \"data\" field"))?;
    Ok(Publish {
        channel,
        event,
        data: Data::Json(SafeJson::from_valid(data)),
    })
}

fn send_fields(raw: &RawCommand<'_>) -> Result<DirectMessage, Error> {
    let list = raw
        .to
        .ok_or_else(|| Error::bad_request("send needs a \"to\" field: a list of user ids"))?;
    let to: Vec<String> = serde_json::from_str(list.get())
        .map_err(|_| Error::bad_request("\"to\" must be a list of user ids (strings)"))?;
    let to: Vec<crate::auth::UserId> = to.into_iter().map(Into::into).collect();
    crate::hub::recipient_channels(&to)?;
    let event = string_field(raw.event, "event")?
        .map(|e| EventName::new(&e))
        .transpose()?;
    let data = raw
        .data
        .ok_or_else(|| Error::bad_request("send needs a \"data\" field"))?;
    Ok(DirectMessage {
        to,
        event,
        data: SafeJson::from_valid(data),
    })
}

/// A client id as the wire writes it (`"12"`). An id that is no number is
/// no connection's: `unknown_client`.
fn client_id(text: &str) -> Result<SubscriberId, Error> {
    text.parse().map_err(|_| {
        let mut shown = String::new();
        json::push_string(&mut shown, &text.chars().take(32).collect::<String>());
        Error::new(ErrorKind::UnknownClient, format!("no client {shown}"))
    })
}

fn signal_fields(raw: &RawCommand<'_>) -> Result<Signal, Error> {
    let room = required(string_field(raw.room, "room")?, "signal", "room")?;
    let room = ChannelName::new(&room)?;
    let to = client_id(&required(string_field(raw.to, "to")?, "signal", "to")?)?;
    let from = match (
        string_field(raw.from, "from")?,
        string_field(raw.client_key, "client_key")?,
    ) {
        (None, None) => None,
        (Some(from), Some(key)) => Some((client_id(&from)?, key)),
        _ => {
            return Err(Error::bad_request(
                "\"from\" and \"client_key\" go together: both (signalling over POST /command) or neither",
            ))
        }
    };
    let data = raw
        .data
        .ok_or_else(|| Error::bad_request("signal needs a \"data\" field"))?;
    Ok(Signal {
        room,
        to,
        from,
        data: SafeJson::from_valid(data),
    })
}

/// Decodes the body of `POST /api/send`, `{"to":[…],"data":…,"event"?}`,
/// whose fields nest at most `max_depth` deep.
pub fn decode_send(bytes: &[u8], max_depth: usize) -> Result<DirectMessage, Error> {
    send_fields(&api_body(bytes, "{\"to\",\"data\",\"event\"?}", max_depth)?)
}

/// Whether valid JSON text is an object. serde's derived struct decoding
/// also accepts an array (fields by position), so `["ping"]` would otherwise
/// pass as a command; the document's first byte tells the two apart.
fn is_object(json: &[u8]) -> bool {
    json.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// JSON text is UTF-8 (RFC 8259 §8.1). serde_json checks that only in the
/// values it keeps, so invalid bytes in an ignored field would pass.
fn utf8(bytes: &[u8]) -> Result<&str, Error> {
    std::str::from_utf8(bytes).map_err(|e| {
        Error::new(
            ErrorKind::BadJson,
            format!("not valid JSON: not UTF-8 at byte {}", e.valid_up_to()),
        )
    })
}

/// Decodes the body of the server publish API, `{"channel","data","event"?}`:
/// the fields of a `publish` command without `type`, nesting at most
/// `max_depth` deep.
pub fn decode_publish(bytes: &[u8], max_depth: usize) -> Result<Publish, Error> {
    publish_fields(&api_body(
        bytes,
        "{\"channel\",\"data\",\"event\"?}",
        max_depth,
    )?)
}

/// Refuses a command or body (valid JSON, one object) whose fields nest
/// more than `max_depth` deep: its own object is one level more. Checked
/// once serde has read the text: serde skips the fields it keeps as raw
/// text (`data`) and those it ignores without recursion, so any depth
/// parses safely, and the reply can still echo the command's id.
fn check_depth(bytes: &[u8], max_depth: usize) -> Result<(), Error> {
    if json::nests_deeper(bytes, max_depth.saturating_add(1)) {
        return Err(Error::new(
            ErrorKind::TooDeep,
            format!(
                "JSON nested more than {max_depth} levels deep (max_json_depth): \
                 some clients cannot parse it; flatten the data"
            ),
        ));
    }
    Ok(())
}

/// The fields of an API body, which must be a JSON object shaped `shape`.
fn api_body<'a>(bytes: &'a [u8], shape: &str, max_depth: usize) -> Result<RawCommand<'a>, Error> {
    let not_object = || Error::bad_request(format!("the body must be a JSON object {shape}"));
    let raw: RawCommand<'_> = serde_json::from_str(utf8(bytes)?).map_err(|e| {
        if e.is_data() {
            not_object()
        } else {
            Error::new(ErrorKind::BadJson, format!("not valid JSON: {e}")).with_source(e)
        }
    })?;
    if !is_object(bytes) {
        return Err(not_object());
    }
    check_depth(bytes, max_depth)?;
    Ok(raw)
}

/// Decodes one command whose fields nest at most `max_depth` deep
/// ([`MAX_JSON_DEPTH`] by default). Never panics, whatever the depth;
/// errors carry a wire code and a message.
pub fn decode(bytes: &[u8], max_depth: usize) -> Result<Request, Rejected> {
    let text = utf8(bytes).map_err(|error| Rejected { id: None, error })?;
    let raw: RawCommand<'_> = serde_json::from_str(text).map_err(|e| {
        let error = if e.is_data() {
            Error::bad_request("a command must be a JSON object with a \"type\" field")
        } else {
            Error::new(ErrorKind::BadJson, format!("not valid JSON: {e}")).with_source(e)
        };
        Rejected { id: None, error }
    })?;
    if !is_object(bytes) {
        return Err(Rejected {
            id: None,
            error: Error::bad_request("a command must be a JSON object with a \"type\" field"),
        });
    }
    let id = decode_id(raw.id).map_err(|error| Rejected { id: None, error })?;
    let reject = |error| Rejected {
        id: id.clone(),
        error,
    };
    check_depth(bytes, max_depth).map_err(reject)?;
    let kind = string_field(raw.kind, "type")
        .and_then(|k| required(k, "a command", "type"))
        .map_err(reject)?;
    let command = (|| -> Result<Command, Error> {
        let channel = || -> Result<ChannelName, Error> {
            let name = required(string_field(raw.channel, "channel")?, &kind, "channel")?;
            ChannelName::new(&name)
        };
        Ok(match kind.as_str() {
            "subscribe" => {
                let channel = channel()?;
                let since = match string_field(raw.since, "since")? {
                    Some(s) => Since::parse(&s)?,
                    None => Since::Now,
                };
                Command::Subscribe { channel, since }
            }
            "unsubscribe" => Command::Unsubscribe { channel: channel()? },
            "publish" => Command::Publish(publish_fields(&raw)?),
            "ping" => Command::Ping,
            "auth" => Command::Auth {
                token: required(string_field(raw.token, "token")?, "auth", "token")?,
            },
            "send" => Command::Send(send_fields(&raw)?),
            "presence" => Command::Presence { channel: channel()? },
            "signal" => Command::Signal(signal_fields(&raw)?),
            other => {
                let mut shown = String::new();
                json::push_string(&mut shown, &other.chars().take(32).collect::<String>());
                return Err(Error::new(
                    ErrorKind::UnknownCommand,
                    format!("unknown command type {shown}; expected subscribe, unsubscribe, publish, ping, auth, send, presence or signal"),
                ));
            }
        })
    })()
    .map_err(reject)?;
    Ok(Request { id, command })
}

/// A server reply to a command.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// The subscription is live; catch-up events follow it.
    Subscribed {
        /// The channel subscribed to.
        channel: ChannelName,
        /// The channel's epoch and newest offset when it was read.
        position: Position,
        /// In a room: who this connection is, who else is there, the ICE
        /// servers. Boxed: most subscriptions are to no room.
        room: Option<Box<RoomJoin>>,
    },
    /// No more events of `channel` follow.
    Unsubscribed {
        /// The channel left.
        channel: ChannelName,
    },
    /// The message was appended.
    Published {
        /// The channel it went to.
        channel: ChannelName,
        /// Its epoch and offset.
        position: Position,
    },
    /// The answer to [`Command::Ping`].
    Pong,
    /// The token of [`Command::Auth`] was accepted.
    Authed {
        /// Whose it is.
        user: crate::auth::UserId,
        /// When it expires, in seconds since the Unix epoch.
        expires: Option<u64>,
    },
    /// The direct message of [`Command::Send`] was appended to every
    /// recipient's personal channel.
    Sent(crate::hub::Recipients),
    /// The answer to [`Command::Presence`].
    Presence(crate::hub::Presence),
    /// The signal of [`Command::Signal`] is on its way to `to`.
    Signaled {
        /// The room.
        room: ChannelName,
        /// The receiving connection.
        to: SubscriberId,
    },
    /// The command failed: a code to act on and a message for a person.
    Error(Error),
}

fn open(out: &mut String, kind: &str, id: Option<&CommandId>) {
    out.push_str("{\"type\":\"");
    out.push_str(kind);
    out.push('"');
    if let Some(id) = id {
        out.push_str(",\"id\":");
        out.push_str(id.as_json());
    }
}

fn push_position(out: &mut String, channel: &ChannelName, position: &Position) {
    out.push_str(",\"channel\":");
    json::push_string(out, channel.as_str());
    let _ = write!(
        out,
        ",\"epoch\":\"{}\",\"offset\":{}",
        position.epoch, position.offset
    );
}

impl Reply {
    /// The reply frame as JSON text, echoing `id` when the command had one.
    pub fn encode(&self, id: Option<&CommandId>) -> String {
        self.encode_with(id, None)
    }

    /// The reply of a connection that hears from the server at least every
    /// `heartbeat`: `subscribed` and `pong` announce it (`"heartbeat"`, in
    /// ms), so a client sets its watchdog from the server's setting instead
    /// of matching it by hand.
    pub fn encode_announcing(&self, id: Option<&CommandId>, heartbeat: Duration) -> String {
        self.encode_with(id, Some(heartbeat))
    }

    fn encode_with(&self, id: Option<&CommandId>, heartbeat: Option<Duration>) -> String {
        let mut out = String::with_capacity(96);
        let announce = |out: &mut String| {
            if let Some(h) = heartbeat {
                let _ = write!(out, ",\"heartbeat\":{}", h.as_millis());
            }
        };
        match self {
            Reply::Subscribed {
                channel,
                position,
                room,
            } => {
                open(&mut out, "subscribed", id);
                push_position(&mut out, channel, position);
                announce(&mut out);
                if let Some(room) = room {
                    room.push_field(&mut out);
                }
            }
            Reply::Unsubscribed { channel } => {
                open(&mut out, "unsubscribed", id);
                out.push_str(",\"channel\":");
                json::push_string(&mut out, channel.as_str());
            }
            Reply::Published { channel, position } => {
                open(&mut out, "published", id);
                push_position(&mut out, channel, position);
            }
            Reply::Pong => {
                open(&mut out, "pong", id);
                announce(&mut out);
            }
            Reply::Authed { user, expires } => {
                open(&mut out, "authed", id);
                out.push_str(",\"user\":");
                json::push_string(&mut out, user);
                if let Some(exp) = expires {
                    let _ = write!(out, ",\"expires\":{exp}");
                }
            }
            Reply::Sent(r) => {
                open(&mut out, "sent", id);
                for (name, list) in [("online", &r.online), ("offline", &r.offline)] {
                    out.push_str(",\"");
                    out.push_str(name);
                    out.push_str("\":");
                    push_users(&mut out, list);
                }
            }
            Reply::Presence(p) => {
                open(&mut out, "presence", id);
                out.push(',');
                p.push_fields(&mut out);
            }
            Reply::Signaled { room, to } => {
                open(&mut out, "signaled", id);
                out.push_str(",\"room\":");
                json::push_string(&mut out, room.as_str());
                let _ = write!(out, ",\"to\":\"{to}\"");
            }
            Reply::Error(e) => {
                open(&mut out, "error", id);
                out.push_str(",\"code\":\"");
                out.push_str(e.code());
                out.push_str("\",\"message\":");
                json::push_string(&mut out, e.message());
                if let Some(after) = e.retry_after() {
                    // Rounded up: retrying at once after the hint must work.
                    let ms = after.as_nanos().div_ceil(1_000_000);
                    let _ = write!(out, ",\"retry_after_ms\":{ms}");
                }
            }
        }
        out.push('}');
        out
    }
}

/// `["alice","bob"]`.
pub fn push_users(out: &mut String, users: &[crate::auth::UserId]) {
    out.push('[');
    for (i, u) in users.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json::push_string(out, u);
    }
    out.push(']');
}

/// `{"type":"reset","channel":C,"epoch":E,"offset":O}`: history could not cover
/// a gap; the client now stands at the channel's current position.
pub fn encode_reset(channel: &ChannelName, position: &Position) -> String {
    let mut out = String::with_capacity(80);
    open(&mut out, "reset", None);
    push_position(&mut out, channel, position);
    out.push('}');
    out
}

/// An error body for HTTP endpoints: `{"type":"error","code":…,"message":…}`.
pub fn encode_error(error: &Error) -> String {
    Reply::Error(error.clone()).encode(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    fn ok(s: &str) -> Request {
        decode(s.as_bytes(), MAX_JSON_DEPTH).unwrap()
    }

    fn err(s: &str) -> Rejected {
        decode(s.as_bytes(), MAX_JSON_DEPTH).unwrap_err()
    }

    #[test]
    fn decodes_commands() {
        let r = ok(r#"{"type":"subscribe","channel":"news","id":1}"#);
        assert_eq!(r.id.unwrap().as_json(), "1");
        assert!(matches!(
            r.command,
            Command::Subscribe {
                since: Since::Now,
                ..
            }
        ));
        let r =
            ok(r#"{"type":"publish","channel":"a","data":{"x": [1, "<"]},"event":"e","id":"q"}"#);
        assert_eq!(r.id.unwrap().as_json(), "\"q\"");
        match r.command {
            Command::Publish(Publish {
                data: Data::Json(d),
                event,
                ..
            }) => {
                assert_eq!(d.as_str(), r#"{"x":[1,"\u003c"]}"#);
                assert_eq!(event.unwrap().as_str(), "e");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            ok(r#"{"type":"publish","channel":"a","data":null}"#).command,
            Command::Publish(_)
        ));
        assert_eq!(ok(r#"{"type":"ping","extra":true}"#).command, Command::Ping);
    }

    #[test]
    fn errors_have_codes_and_keep_the_id() {
        assert_eq!(err("{").error.kind(), ErrorKind::BadJson);
        assert_eq!(err("[1]").error.kind(), ErrorKind::BadRequest);
        // Arrays must not decode positionally as (type, id, channel, …).
        let e = err(r#"["ping", 5]"#);
        assert_eq!((e.error.kind(), e.id), (ErrorKind::BadRequest, None));
        assert_eq!(
            decode_publish(br#" ["a", null, "c", null, 1]"#, MAX_JSON_DEPTH)
                .unwrap_err()
                .kind(),
            ErrorKind::BadRequest
        );
        assert!(decode(b" \n{\"type\":\"ping\"}", MAX_JSON_DEPTH).is_ok());
        let e = err(r#"{"type":"nope","id":5}"#);
        assert_eq!(e.error.kind(), ErrorKind::UnknownCommand);
        assert_eq!(e.id.unwrap().as_json(), "5");
        assert_eq!(
            err(r#"{"type":"subscribe"}"#).error.kind(),
            ErrorKind::BadRequest
        );
        assert_eq!(
            err(r#"{"type":"subscribe","channel":7}"#).error.kind(),
            ErrorKind::BadRequest
        );
        assert_eq!(
            err(r#"{"type":"subscribe","channel":"a b"}"#).error.kind(),
            ErrorKind::InvalidChannel
        );
        assert_eq!(
            err(r#"{"type":"subscribe","channel":"a","since":"zz"}"#)
                .error
                .kind(),
            ErrorKind::InvalidCursor
        );
        assert_eq!(
            err(r#"{"type":"publish","channel":"a"}"#).error.kind(),
            ErrorKind::BadRequest
        );
        assert_eq!(
            err(r#"{"type":"publish","channel":"a","data":1,"event":"a b"}"#)
                .error
                .kind(),
            ErrorKind::InvalidEvent
        );
        assert_eq!(
            err(r#"{"type":"ping","id":{"a":1}}"#).error.kind(),
            ErrorKind::BadRequest
        );
        assert_eq!(err(r#"{"id":1}"#).error.kind(), ErrorKind::BadRequest);
    }

    #[test]
    fn replies_encode_as_documented() {
        let ch = ChannelName::new("news").unwrap();
        let pos = Position::new(crate::Epoch::new("ep").unwrap(), 4);
        let id = ok(r#"{"type":"ping","id":"x<"}"#).id;
        let v: Value = serde_json::from_str(
            &Reply::Subscribed {
                channel: ch.clone(),
                position: pos.clone(),
                room: None,
            }
            .encode(id.as_ref()),
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"type":"subscribed","id":"x<","channel":"news","epoch":"ep","offset":4})
        );
        let announced = |reply: &Reply| -> Value {
            let text = reply.encode_announcing(None, Duration::from_millis(15_000));
            serde_json::from_str(&text).unwrap()
        };
        assert_eq!(
            announced(&Reply::Pong),
            json!({"type":"pong","heartbeat":15000})
        );
        assert_eq!(
            announced(&Reply::Subscribed {
                channel: ch.clone(),
                position: pos.clone(),
                room: None,
            }),
            json!({"type":"subscribed","channel":"news","epoch":"ep","offset":4,"heartbeat":15000})
        );
        let room = RoomJoin {
            client: 12,
            client_key: "k".into(),
            members: vec![(7, None), (9, Some("alice".into()))],
            ice_servers: r#"[{"urls":["stun:s"]}]"#.into(),
        };
        assert_eq!(
            announced(&Reply::Subscribed {
                channel: ch.clone(),
                position: pos.clone(),
                room: Some(Box::new(room)),
            }),
            json!({"type":"subscribed","channel":"news","epoch":"ep","offset":4,"heartbeat":15000,
                "room":{"client":"12","client_key":"k",
                    "members":[{"client":"7","user":null},{"client":"9","user":"alice"}],
                    "ice_servers":[{"urls":["stun:s"]}]}})
        );
        let v: Value = serde_json::from_str(
            &Reply::Signaled {
                room: ChannelName::new("room:r").unwrap(),
                to: 7,
            }
            .encode(id.as_ref()),
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"type":"signaled","id":"x<","room":"room:r","to":"7"})
        );
        // Only subscribed and pong announce it.
        assert_eq!(
            announced(&Reply::Unsubscribed {
                channel: ch.clone()
            }),
            json!({"type":"unsubscribed","channel":"news"})
        );
        let v: Value =
            serde_json::from_str(&Reply::Error(Error::bad_request("no")).encode(None)).unwrap();
        assert_eq!(
            v,
            json!({"type":"error","code":"bad_request","message":"no"})
        );
        let v: Value = serde_json::from_str(&encode_reset(&ch, &pos)).unwrap();
        assert_eq!(
            v,
            json!({"type":"reset","channel":"news","epoch":"ep","offset":4})
        );
    }

    #[test]
    fn deep_json_is_refused_at_any_depth_keeping_the_id() {
        let nest = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        let publish = |n| {
            format!(
                r#"{{"id":9,"type":"publish","channel":"a","data":{}}}"#,
                nest(n)
            )
        };
        let send = |n| {
            format!(
                r#"{{"id":9,"type":"send","to":["bob"],"data":{}}}"#,
                nest(n)
            )
        };
        let ignored = |n| format!(r#"{{"id":9,"type":"ping","x":{}}}"#, nest(n));
        let api = |n| format!(r#"{{"channel":"a","data":{}}}"#, nest(n));
        let api_send = |n| format!(r#"{{"to":["bob"],"data":{}}}"#, nest(n));
        // The limit counts the fields' nesting: data may nest exactly that deep.
        let max = MAX_JSON_DEPTH;
        for text in [publish(max), send(max), ignored(max)] {
            assert!(decode(text.as_bytes(), max).is_ok(), "{text}");
        }
        assert!(decode_publish(api(max).as_bytes(), max).is_ok());
        assert!(decode_send(api_send(max).as_bytes(), max).is_ok());
        // serde_json's own limit (128) never applied to these fields.
        for n in [max + 1, 129, 100_000] {
            for text in [publish(n), send(n), ignored(n)] {
                let e = decode(text.as_bytes(), max).unwrap_err();
                assert_eq!(e.error.kind(), ErrorKind::TooDeep);
                assert_eq!(e.id.unwrap().as_json(), "9");
                assert!(e
                    .error
                    .message()
                    .contains("32 levels deep (max_json_depth)"));
            }
            let e = decode_publish(api(n).as_bytes(), max).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::TooDeep);
            let e = decode_send(api_send(n).as_bytes(), max).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::TooDeep);
        }
        // A top level that is not even an object, 100,000 deep: no
        // overflow, an error.
        assert!(decode(nest(100_000).as_bytes(), max).is_err());
        assert!(decode_publish(nest(100_000).as_bytes(), max).is_err());
        let open = "[".repeat(100_000);
        assert_eq!(
            decode(open.as_bytes(), max).unwrap_err().error.kind(),
            ErrorKind::BadJson
        );
        // Any limit: 0 allows scalars only.
        assert!(decode(publish(0).as_bytes(), 0).is_ok());
        assert!(decode(publish(1).as_bytes(), 0).is_err());
    }

    #[test]
    fn decodes_signals() {
        let r = ok(r#"{"type":"signal","room":"room:r","to":"7","data":{"sdp":"<"},"id":2}"#);
        assert!(r.command.counts_toward_publish_rate());
        let Command::Signal(s) = r.command else {
            panic!()
        };
        assert_eq!((s.room.as_str(), s.to, &s.from), ("room:r", 7, &None));
        assert_eq!(s.data.as_str(), r#"{"sdp":"\u003c"}"#);
        let r = ok(
            r#"{"type":"signal","room":"room:r","to":"7","from":"12","client_key":"k","data":1}"#,
        );
        let Command::Signal(s) = r.command else {
            panic!()
        };
        assert_eq!(s.from, Some((12, "k".to_string())));
        for (text, kind) in [
            (
                r#"{"type":"signal","to":"7","data":1}"#,
                ErrorKind::BadRequest,
            ),
            (
                r#"{"type":"signal","room":"room:r","data":1}"#,
                ErrorKind::BadRequest,
            ),
            (
                r#"{"type":"signal","room":"room:r","to":"7"}"#,
                ErrorKind::BadRequest,
            ),
            (
                r#"{"type":"signal","room":"room:r","to":7,"data":1}"#,
                ErrorKind::BadRequest,
            ),
            (
                r#"{"type":"signal","room":"a b","to":"7","data":1}"#,
                ErrorKind::InvalidChannel,
            ),
            (
                r#"{"type":"signal","room":"room:r","to":"x7","data":1}"#,
                ErrorKind::UnknownClient,
            ),
            (
                r#"{"type":"signal","room":"room:r","to":"7","from":"12","data":1}"#,
                ErrorKind::BadRequest,
            ),
            (
                r#"{"type":"signal","room":"room:r","to":"7","client_key":"k","data":1}"#,
                ErrorKind::BadRequest,
            ),
        ] {
            assert_eq!(err(text).error.kind(), kind, "{text}");
        }
    }

    #[test]
    fn a_refusal_with_a_wait_says_it_in_ms_rounded_up() {
        let e = Error::new(ErrorKind::RateLimited, "slow down")
            .with_retry_after(Duration::from_micros(12_300));
        let v: Value = serde_json::from_str(&Reply::Error(e).encode(None)).unwrap();
        assert_eq!(
            v,
            json!({"type":"error","code":"rate_limited","message":"slow down","retry_after_ms":13})
        );
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes, MAX_JSON_DEPTH);
        }

        #[test]
        fn decode_never_panics_on_jsonish(s in r#"\{("(type|id|channel|since|data|event)":("[a-z<>~.]{0,8}"|[0-9]{1,3}|null|\[\]|\{\}),?){0,6}\}"#) {
            let _ = decode(s.as_bytes(), MAX_JSON_DEPTH);
        }
    }
}
