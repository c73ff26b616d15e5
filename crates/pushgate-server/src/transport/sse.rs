//! Server-Sent Events at `GET /sse?channel=a&channel=b[&since=CURSOR]`.
//!
//! Each message's `id:` is the stream's cursor after it, so the browser's
//! automatic reconnect (which sends it back as `Last-Event-ID`) resumes
//! exactly after the last delivered message on every channel of the stream.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use pushgate_core::cursor::{Cursor, Since};
use pushgate_core::protocol::encode_reset;
use pushgate_core::session::Emit;
use pushgate_core::wire::sse;
use pushgate_core::{Connection, OutboxEvent};

use super::stream::{encode_events, Encoder, EventStream};
use crate::metrics::Transport;
use crate::state::AppState;
use crate::web::{self, parse_subscribe_query, Body};

pub struct SseEncoder {
    id: String,
}

impl Encoder for SseEncoder {
    fn encode(&mut self, conn: &Connection, emit: &Emit, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.encode_one(conn, emit));
    }

    fn encode_one(&mut self, conn: &Connection, emit: &Emit) -> Bytes {
        match emit {
            // One channel: the id is the message's own position, and the whole
            // event was built once for every such stream.
            Emit::Message(p) if conn.session().len() == 1 => p.sse_single().clone(),
            Emit::Message(p) => {
                conn.session().encode_cursor(&mut self.id);
                sse::message_event(p, &self.id)
            }
            Emit::Reset { channel, position } => {
                conn.session().encode_cursor(&mut self.id);
                sse::event(
                    "reset",
                    Some(&self.id),
                    encode_reset(channel, position).as_bytes(),
                )
            }
        }
    }

    fn ping(&self) -> Bytes {
        Bytes::from_static(sse::PING)
    }
}

/// `Last-Event-ID` wins over `since`: it is what the browser sends on reconnect.
fn since_from(headers: &HeaderMap, query_since: Since) -> Result<Since, pushgate_core::Error> {
    match headers.get("last-event-id") {
        Some(v) => {
            let text = v.to_str().map_err(|_| {
                pushgate_core::Error::new(
                    pushgate_core::ErrorKind::InvalidCursor,
                    "Last-Event-ID is not ASCII",
                )
            })?;
            if text.is_empty() {
                Ok(query_since)
            } else {
                Cursor::parse(text).map(Since::Cursor)
            }
        }
        None => Ok(query_since),
    }
}

pub async fn handle(state: Arc<AppState>, req: Request<hyper::body::Incoming>) -> Response<Body> {
    let query = match parse_subscribe_query(req.uri().query(), &[], state.config.max_subscriptions)
    {
        Ok(q) => q,
        Err(e) => return web::error(&e),
    };
    if query.channels.is_empty() {
        return web::error(&pushgate_core::Error::bad_request(
            "give at least one channel: /sse?channel=NAME",
        ));
    }
    let since = match since_from(req.headers(), query.since) {
        Ok(s) => s,
        Err(e) => return web::error(&e),
    };

    let mut conn = state.connection();
    let mut first = Vec::with_capacity(256);
    first.extend_from_slice(&sse::preamble(state.config.sse_retry.as_millis() as u64));
    let mut catchup: Vec<OutboxEvent> = Vec::new();
    for channel in query.channels {
        match conn.subscribe(channel, &since).await {
            Ok((reply, events)) => {
                first.extend_from_slice(&sse::event(
                    "subscribed",
                    None,
                    reply.encode(None).as_bytes(),
                ));
                catchup.extend(events);
            }
            Err(e) => {
                conn.close().await;
                return web::error(&e);
            }
        }
    }
    let mut encoder = SseEncoder { id: String::new() };
    if let Some(bytes) = encode_events(
        &mut conn,
        &mut encoder,
        catchup,
        &state.metrics,
        Transport::Sse,
    ) {
        first.extend_from_slice(&bytes);
    }
    // An id-only event sets the browser's last event id without firing an
    // event, so a reconnect before the first message still resumes exactly.
    let mut id = String::new();
    conn.session().encode_cursor(&mut id);
    first.extend_from_slice(format!("id: {id}\n\n").as_bytes());

    let stream = EventStream::new(
        conn,
        Box::new(encoder),
        Bytes::from(first),
        state.config.sse_ping_interval,
        state.metrics.clone(),
        Transport::Sse,
    );
    let mut res = Response::new(Body::Stream(Box::new(stream)));
    *res.status_mut() = StatusCode::OK;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tell buffering proxies (nginx) to pass events through at once.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    res
}
