//! A published message, encoded once per wire format at publish time.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;

use crate::channel::{ChannelName, EventName};
use crate::clock::Millis;
use crate::cursor::Position;
use crate::epoch::Epoch;
use crate::json::{self, SafeJson};
use crate::websocket::deflate::{self, Deflate};
use crate::websocket::frame::{self, OpCode};

/// What a publisher sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    /// JSON text, script-safe by construction.
    Json(SafeJson),
    /// Raw bytes (`Content-Type: application/octet-stream` on the publish API).
    Binary(Bytes),
}

impl Data {
    /// JSON data from publisher text, validated and made script-safe.
    pub fn json(text: &str) -> Result<Self, crate::Error> {
        SafeJson::parse(text.as_bytes()).map(Data::Json)
    }
}

/// One message of one channel. Built once; every subscriber on every transport
/// shares these bytes (`Arc<Publication>`), so fan-out never encodes JSON.
#[derive(Debug)]
pub struct Publication {
    /// The channel, sharing the log's allocation (fan-out compares pointers).
    pub channel: ChannelName,
    /// The channel's epoch at publication.
    pub epoch: Epoch,
    /// 1, 2, 3, … within the epoch.
    pub offset: u64,
    /// The publisher's event name, if any.
    pub event: Option<EventName>,
    /// When it was published (ms since the Unix epoch); drives history expiry.
    pub time: Millis,
    /// When this process made it (published here, heard from a broker, or
    /// read back from a store): delivery latency is measured from it. Not
    /// an input to any decision, so the core stays deterministic.
    pub made: std::time::Instant,
    json: Bytes,
    binary: Option<BinaryFrame>,
    /// The registered [`Encoding`]s, by slot, built on first use; the
    /// slots are allocated with the first (a publication that is only
    /// kept in history never pays for them).
    encodings: OnceLock<Box<[OnceLock<Bytes>; MAX_ENCODINGS]>>,
    /// The WebSocket frame, built on first use.
    ws: OnceLock<Bytes>,
    /// permessage-deflate frames by window size (2^9..2^15), built on first
    /// use; `None` when compressing does not make the frame smaller.
    ws_deflated: OnceLock<Box<[OnceLock<Option<Bytes>>; 7]>>,
}

/// Most [`Encoding`]s a process may use.
pub const MAX_ENCODINGS: usize = 8;

/// Slots handed out so far.
static REGISTERED: AtomicUsize = AtomicUsize::new(0);

/// A wire form of a message that is the same for every reader that uses it
/// (a one-channel SSE event, an NDJSON line, an HTTP/1.1 chunk of either):
/// built once per publication, on first use, and shared. Transports declare
/// their own as statics, so the message type does not change when a
/// transport is added:
///
/// ```
/// use bytes::Bytes;
/// use pushgate_core::publication::Encoding;
///
/// static SHOUTED: Encoding =
///     Encoding::new("shouted", |p| Bytes::from(p.json().to_ascii_uppercase()));
/// ```
pub struct Encoding {
    name: &'static str,
    build: fn(&Publication) -> Bytes,
    /// Where publications keep it; given on first use.
    slot: OnceLock<usize>,
}

impl Encoding {
    /// An encoding that `build` makes from a publication.
    pub const fn new(name: &'static str, build: fn(&Publication) -> Bytes) -> Self {
        Encoding {
            name,
            build,
            slot: OnceLock::new(),
        }
    }

    fn slot(&self) -> usize {
        *self.slot.get_or_init(|| {
            let slot = REGISTERED.fetch_add(1, Ordering::Relaxed);
            // A fixed set of statics: more than this is a programming error
            // that the first test using the last one finds.
            assert!(
                slot < MAX_ENCODINGS,
                "more than {MAX_ENCODINGS} shared encodings (the last: {}); raise MAX_ENCODINGS",
                self.name
            );
            slot
        })
    }
}

impl std::fmt::Debug for Encoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Encoding").field(&self.name).finish()
    }
}

#[derive(Debug)]
struct BinaryFrame {
    frame: Bytes,
    header_len: usize,
}

/// Two publications are the same message when they share channel, epoch and offset.
impl PartialEq for Publication {
    fn eq(&self, other: &Self) -> bool {
        self.offset == other.offset && self.epoch == other.epoch && self.channel == other.channel
    }
}

impl Publication {
    /// The message with its JSON text; the other wire forms are built on
    /// first use.
    pub fn new(
        channel: ChannelName,
        epoch: Epoch,
        offset: u64,
        event: Option<EventName>,
        data: Data,
        time: Millis,
    ) -> Self {
        let mut head = String::with_capacity(96);
        head.push_str(r#"{"type":"message","channel":"#);
        json::push_string(&mut head, channel.as_str());
        let _ = write!(head, r#","offset":{offset},"epoch":"{epoch}""#);
        if let Some(event) = &event {
            head.push_str(r#","event":"#);
            json::push_string(&mut head, event.as_str());
        }
        let (json, binary) = match data {
            Data::Json(text) => {
                let mut s = head;
                s.reserve(text.as_str().len() + 10);
                s.push_str(r#","data":"#);
                s.push_str(text.as_str());
                s.push('}');
                (Bytes::from(s), None)
            }
            Data::Binary(raw) => {
                let mut text = head.clone();
                text.push_str(r#","encoding":"base64","data":""#);
                STANDARD.encode_string(&raw, &mut text);
                text.push_str("\"}");
                let mut frame = head.into_bytes();
                frame.extend_from_slice(br#","encoding":"binary"}"#);
                frame.push(b'\n');
                let header_len = frame.len();
                frame.extend_from_slice(&raw);
                (
                    Bytes::from(text),
                    Some(BinaryFrame {
                        frame: Bytes::from(frame),
                        header_len,
                    }),
                )
            }
        };
        Publication {
            channel,
            epoch,
            offset,
            event,
            time,
            made: std::time::Instant::now(),
            json,
            binary,
            encodings: OnceLock::new(),
            ws: OnceLock::new(),
            ws_deflated: OnceLock::new(),
        }
    }

    /// The message as JSON text: `{"type":"message","channel",…,"data":…}`.
    /// Binary data appears base64-encoded with `"encoding":"base64"`.
    pub fn json(&self) -> &Bytes {
        &self.json
    }

    /// For binary data: the WebSocket binary frame payload — the JSON header
    /// (with `"encoding":"binary"` and no `data`), one `\n`, then the raw bytes.
    pub fn binary_frame(&self) -> Option<&Bytes> {
        self.binary.as_ref().map(|b| &b.frame)
    }

    /// For binary data: the raw bytes as published.
    pub fn binary_payload(&self) -> Option<Bytes> {
        self.binary.as_ref().map(|b| b.frame.slice(b.header_len..))
    }

    /// Whether the publisher sent raw bytes rather than JSON.
    pub fn is_binary(&self) -> bool {
        self.binary.is_some()
    }

    /// Where a reader stands once it has this message.
    pub fn position(&self) -> Position {
        Position::new(self.epoch.clone(), self.offset)
    }

    /// Its position as a one-channel cursor entry (`base64url(channel).epoch.offset`).
    pub fn cursor_entry(&self) -> String {
        let mut id = String::with_capacity(48);
        crate::cursor::encode_entry(&mut id, &self.channel, &self.position());
        id
    }

    /// This message in `encoding`, shared by every reader that uses it.
    pub fn encoded(&self, encoding: &Encoding) -> &Bytes {
        let slots = self.encodings.get_or_init(Default::default);
        slots[encoding.slot()].get_or_init(|| (encoding.build)(self))
    }

    /// The payload a WebSocket subscriber receives: the binary frame payload
    /// for binary data, else the JSON text.
    pub fn ws_payload(&self) -> (OpCode, &Bytes) {
        match self.binary_frame() {
            Some(b) => (OpCode::Binary, b),
            None => (OpCode::Text, self.json()),
        }
    }

    /// The whole WebSocket frame, shared by every WebSocket subscriber.
    pub fn ws_frame(&self) -> &Bytes {
        self.ws.get_or_init(|| {
            let (op, payload) = self.ws_payload();
            frame::server_frame(op, false, payload)
        })
    }

    /// The frame for a subscriber that negotiated permessage-deflate: the
    /// compressed frame, shared by every subscriber whose window admits it,
    /// or the plain one when compression does not pay.
    pub fn ws_frame_for(&self, deflate: Option<&Deflate>) -> &Bytes {
        let (op, payload) = self.ws_payload();
        let Some(d) = deflate.filter(|d| d.wants(payload.len())) else {
            return self.ws_frame();
        };
        let bits = d.window_for(payload.len());
        let slots = self.ws_deflated.get_or_init(Default::default);
        let slot = &slots[usize::from(bits - deflate::MIN_WINDOW_BITS)];
        slot.get_or_init(|| {
            let packed = deflate::compress(payload, bits);
            (packed.len() < payload.len()).then(|| frame::server_frame(op, true, &packed))
        })
        .as_ref()
        .unwrap_or_else(|| self.ws_frame())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn publication(data: Data, event: Option<&str>) -> Publication {
        Publication::new(
            ChannelName::new("news").unwrap(),
            Epoch::new("ep").unwrap(),
            42,
            event.map(|e| EventName::new(e).unwrap()),
            data,
            0,
        )
    }

    #[test]
    fn json_shape() {
        let p = publication(Data::json(r#"{"a":1}"#).unwrap(), Some("update"));
        let v: Value = serde_json::from_slice(p.json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type":"message","channel":"news","offset":42,"epoch":"ep","event":"update","data":{"a":1}})
        );
    }

    #[test]
    fn registered_encodings_are_built_once_per_publication_and_only_when_used() {
        static BUILT: AtomicUsize = AtomicUsize::new(0);
        static UPPER: Encoding = Encoding::new("test upper", |p| {
            BUILT.fetch_add(1, Ordering::SeqCst);
            Bytes::from(p.json().to_ascii_uppercase())
        });
        let p = publication(Data::json(r#"{"a":"b"}"#).unwrap(), None);
        assert!(p.encodings.get().is_none(), "nothing built yet");
        let first = p.encoded(&UPPER);
        assert!(
            std::ptr::eq(first, p.encoded(&UPPER)),
            "shared, not rebuilt"
        );
        assert_eq!(BUILT.load(Ordering::SeqCst), 1);
        assert!(first.starts_with(br#"{"TYPE":"MESSAGE""#));
        let line = p.encoded(&crate::wire::ndjson::LINE);
        assert_eq!(&line[..line.len() - 1], &p.json()[..], "its own slot");
        assert_eq!(format!("{UPPER:?}"), r#"Encoding("test upper")"#);
    }

    #[test]
    fn websocket_frames_are_built_once() {
        let p = publication(
            Data::json(&format!("\"{}\"", "ab".repeat(400))).unwrap(),
            None,
        );
        let plain = p.ws_frame();
        assert_eq!(plain[0], 0x81);
        assert!(std::ptr::eq(plain, p.ws_frame()));
        let d = Deflate {
            window_bits: 15,
            min_size: 128,
        };
        let packed = p.ws_frame_for(Some(&d));
        assert_eq!(packed[0], 0xC1, "text, compressed");
        assert!(packed.len() < plain.len() / 4);
        assert!(std::ptr::eq(packed, p.ws_frame_for(Some(&d))));
        // A narrower window gets its own frame, readable under that window.
        let narrow = Deflate {
            window_bits: 9,
            ..d
        };
        assert!(!std::ptr::eq(packed, p.ws_frame_for(Some(&narrow))));
        assert!(packed[1] < 126);
        let body = &packed[2..];
        let unpacked = deflate::decompress(body, 1 << 20).unwrap();
        assert_eq!(&unpacked[..], &p.json()[..]);
        // Small messages stay plain.
        let small = publication(Data::json("1").unwrap(), None);
        assert!(std::ptr::eq(small.ws_frame_for(Some(&d)), small.ws_frame()));
    }

    #[test]
    fn binary_shapes() {
        let raw = Bytes::from_static(b"\x00\x01\xff\n");
        let p = publication(Data::Binary(raw.clone()), None);
        let v: Value = serde_json::from_slice(p.json()).unwrap();
        assert_eq!(v["encoding"], "base64");
        assert_eq!(v["data"], "AAH/Cg==");
        let frame = p.binary_frame().unwrap();
        let nl = frame.iter().position(|b| *b == b'\n').unwrap();
        let head: Value = serde_json::from_slice(&frame[..nl]).unwrap();
        assert_eq!(head["encoding"], "binary");
        assert_eq!(head["offset"], 42);
        assert!(head.get("data").is_none());
        assert_eq!(&frame[nl + 1..], &raw[..]);
        assert_eq!(p.binary_payload().unwrap(), raw);
    }
}
