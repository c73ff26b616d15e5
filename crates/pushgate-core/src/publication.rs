//! A published message, encoded once per wire format at publish time.

use std::fmt::Write as _;
use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;

use crate::channel::{ChannelName, EventName};
use crate::clock::Millis;
use crate::cursor::Position;
use crate::epoch::Epoch;
use crate::json;
use crate::websocket::deflate::{self, Deflate};
use crate::websocket::frame::{self, OpCode};

/// What a publisher sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    /// JSON text, already passed through [`json::sanitize`].
    Json(String),
    /// Raw bytes (`Content-Type: application/octet-stream` on the publish API).
    Binary(Bytes),
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
    json: Bytes,
    binary: Option<BinaryFrame>,
    /// Per-format encodings for one-channel readers, built on first use.
    single: [OnceLock<Bytes>; 5],
    /// The WebSocket frame, built on first use.
    ws: OnceLock<Bytes>,
    /// permessage-deflate frames by window size (2^9..2^15), built on first
    /// use; `None` when compressing does not make the frame smaller.
    ws_deflated: OnceLock<Box<[OnceLock<Option<Bytes>>; 7]>>,
}

/// Wire forms of a message that are the same for every one-channel reader.
#[derive(Debug, Clone, Copy)]
enum Single {
    Sse = 0,
    Poll = 1,
    Ndjson = 2,
    SseChunk = 3,
    NdjsonChunk = 4,
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
                s.reserve(text.len() + 10);
                s.push_str(r#","data":"#);
                s.push_str(&text);
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
            json,
            binary,
            single: Default::default(),
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

    fn single(&self, which: Single, build: impl FnOnce() -> Bytes) -> &Bytes {
        self.single[which as usize].get_or_init(build)
    }

    /// The SSE event for a stream of this channel alone, shared by every such stream.
    pub fn sse_single(&self) -> &Bytes {
        self.single(Single::Sse, || {
            crate::wire::sse::message_event(self, &self.cursor_entry())
        })
    }

    /// The `/poll` and `/longpoll` body for a one-channel reader whose only
    /// new message is this one, shared by every such reader.
    pub fn poll_single(&self) -> &Bytes {
        self.single(Single::Poll, || {
            crate::wire::poll::body(&[self.json()], &self.cursor_entry())
        })
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

    /// [`Publication::sse_single`] as one HTTP/1.1 chunk, for writes
    /// straight from fan-out to chunked SSE responses.
    pub fn sse_single_chunk(&self) -> &Bytes {
        self.single(Single::SseChunk, || {
            crate::wire::chunked::chunk(self.sse_single())
        })
    }

    /// [`Publication::ndjson_line`] as one HTTP/1.1 chunk.
    pub fn ndjson_chunk(&self) -> &Bytes {
        self.single(Single::NdjsonChunk, || {
            crate::wire::chunked::chunk(self.ndjson_line())
        })
    }

    /// The NDJSON line (`json` and `\n`), shared by every stream.
    pub fn ndjson_line(&self) -> &Bytes {
        self.single(Single::Ndjson, || crate::wire::ndjson::line(self.json()))
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
        let p = publication(Data::Json(r#"{"a":1}"#.into()), Some("update"));
        let v: Value = serde_json::from_slice(p.json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type":"message","channel":"news","offset":42,"epoch":"ep","event":"update","data":{"a":1}})
        );
    }

    #[test]
    fn websocket_frames_are_built_once() {
        let p = publication(Data::Json(format!("\"{}\"", "ab".repeat(400))), None);
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
        let small = publication(Data::Json("1".into()), None);
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
