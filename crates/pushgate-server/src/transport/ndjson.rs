//! NDJSON streaming at `GET /stream?channel=…[&since=CURSOR]`: chunked
//! `application/x-ndjson`, one JSON object per line, for curl and native
//! clients. Lines are the same objects as WebSocket frames: `subscribed`,
//! `message`, `reset`, and a `{"type":"ping"}` keep-alive.

use std::sync::Arc;

use bytes::Bytes;
use http::request::Parts;
use http::Response;
use pushgate_core::delivery::{End, Framing};
use pushgate_core::protocol::encode_reset;
use pushgate_core::publication::Encoding;
use pushgate_core::session::{Emit, Session};
use pushgate_core::wire::{self, ndjson};
use pushgate_core::Principal;

use super::event_stream::{self, Encoder};
use crate::chunked;
use crate::metrics::Transport;
use crate::state::AppState;
use crate::web::{self, parse_subscribe_query, Body};

struct NdjsonEncoder;

impl Framing for NdjsonEncoder {
    fn emit(&mut self, _: &Session, emit: &Emit) -> Bytes {
        match emit {
            Emit::Message(p) => p.encoded(&ndjson::LINE).clone(),
            Emit::Reset { channel, position } => {
                ndjson::line(encode_reset(channel, position).as_bytes())
            }
            Emit::Live(e) => ndjson::line(e.json()),
        }
    }

    fn reply(&mut self, json: &str) -> Bytes {
        ndjson::line(json.as_bytes())
    }

    fn heartbeat(&mut self) -> Bytes {
        Bytes::from_static(ndjson::PING)
    }

    fn farewell(&mut self, end: End) -> Option<Bytes> {
        wire::end_json(end).map(ndjson::line)
    }
}

impl Encoder for NdjsonEncoder {
    fn content_type(&self) -> &'static str {
        "application/x-ndjson"
    }

    fn preamble(&self, _: &AppState) -> Bytes {
        Bytes::new()
    }

    fn shared(&self, _: &Session) -> Option<&'static Encoding> {
        Some(&chunked::NDJSON)
    }
}

pub async fn handle(state: Arc<AppState>, principal: &Principal, req: &Parts) -> Response<Body> {
    match parse_subscribe_query(req.uri.query(), &[], state.config.max_subscriptions) {
        Ok(q) => web::event_stream(
            event_stream::open(
                state,
                principal,
                q.channels,
                q.since,
                Box::new(NdjsonEncoder),
                Transport::Stream,
                crate::web::peer(req),
            )
            .await,
        ),
        Err(e) => web::error(&e),
    }
}
