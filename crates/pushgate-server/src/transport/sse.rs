//! Server-Sent Events at `GET /sse?channel=a&channel=b[&since=CURSOR]`.
//!
//! Each message's `id:` is the stream's cursor after it, so the browser's
//! automatic reconnect (which sends it back as `Last-Event-ID`) resumes
//! exactly after the last delivered message on every channel of the stream.

use std::sync::Arc;

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, Response};
use pushgate_core::cursor::{Cursor, Since};
use pushgate_core::delivery::{End, Framing};
use pushgate_core::protocol::encode_reset;
use pushgate_core::publication::Encoding;
use pushgate_core::session::{Emit, Session};
use pushgate_core::wire::{self, sse};
use pushgate_core::{Error, ErrorKind, Principal};

use super::event_stream::{self, Encoder};
use crate::chunked;
use crate::metrics::Transport;
use crate::state::AppState;
use crate::web::{self, parse_subscribe_query, Body};

pub struct SseEncoder {
    id: String,
}

impl Framing for SseEncoder {
    fn emit(&mut self, session: &Session, emit: &Emit) -> Bytes {
        match emit {
            // One channel: the id is the message's own position, and the whole
            // event was built once for every such stream.
            Emit::Message(p) if session.len() == 1 => p.encoded(&sse::SINGLE).clone(),
            Emit::Message(p) => {
                session.encode_cursor(&mut self.id);
                sse::message_event(p, &self.id)
            }
            Emit::Reset { channel, position } => {
                session.encode_cursor(&mut self.id);
                sse::event(
                    "reset",
                    Some(&self.id),
                    encode_reset(channel, position).as_bytes(),
                )
            }
            // No `id:`: a join or leave moves no cursor.
            Emit::Live(e) => sse::event(e.kind.name(), None, e.json()),
        }
    }

    fn reply(&mut self, json: &str) -> Bytes {
        sse::event("subscribed", None, json.as_bytes())
    }

    fn heartbeat(&mut self) -> Bytes {
        Bytes::from_static(sse::PING)
    }

    fn farewell(&mut self, end: End) -> Option<Bytes> {
        wire::end_json(end).map(|json| sse::event("end", None, json))
    }

    /// An id-only block sets the browser's last event id without firing an
    /// event, so a reconnect before the first message still resumes exactly.
    fn caught_up(&mut self, session: &Session) -> Option<Bytes> {
        session.encode_cursor(&mut self.id);
        let mut out = Vec::with_capacity(self.id.len() + 6);
        out.extend_from_slice(b"id: ");
        out.extend_from_slice(self.id.as_bytes());
        out.extend_from_slice(b"\n\n");
        Some(Bytes::from(out))
    }
}

impl Encoder for SseEncoder {
    fn content_type(&self) -> &'static str {
        "text/event-stream"
    }

    fn preamble(&self, state: &AppState) -> Bytes {
        sse::preamble(state.config.sse_retry.as_millis() as u64)
    }

    fn shared(&self, session: &Session) -> Option<&'static Encoding> {
        // The same condition as `emit`'s shared event.
        (session.len() == 1).then_some(&chunked::SSE)
    }
}

/// `Last-Event-ID` wins over `since`: it is what the browser sends on reconnect.
pub fn since_from(headers: &HeaderMap, query_since: Since) -> Result<Since, Error> {
    match headers.get("last-event-id") {
        Some(v) => {
            let text = v
                .to_str()
                .map_err(|_| Error::new(ErrorKind::InvalidCursor, "Last-Event-ID is not ASCII"))?;
            if text.is_empty() {
                Ok(query_since)
            } else {
                Cursor::parse(text).map(Since::Cursor)
            }
        }
        None => Ok(query_since),
    }
}

pub async fn handle(state: Arc<AppState>, principal: &Principal, req: &Parts) -> Response<Body> {
    let query = match parse_subscribe_query(req.uri.query(), &[], state.config.max_subscriptions) {
        Ok(q) => q,
        Err(e) => return web::error(&e),
    };
    let since = match since_from(&req.headers, query.since) {
        Ok(s) => s,
        Err(e) => return web::error(&e),
    };
    let encoder = Box::new(SseEncoder { id: String::new() });
    web::event_stream(
        event_stream::open(
            state,
            principal,
            query.channels,
            since,
            encoder,
            Transport::Sse,
            crate::web::peer(req),
        )
        .await,
    )
}
