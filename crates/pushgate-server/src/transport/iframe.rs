//! Hidden-iframe streaming ("forever frame") at
//! `GET /iframe?channel=…&callback=NAME[&since=CURSOR]`.
//!
//! An HTML document that never ends: a padded start so the browser renders
//! (and runs scripts) at once, then `<script>parent.NAME(<json>);</script>`
//! per event — the same objects as WebSocket frames. The callback is checked
//! to be a plain identifier path and all JSON is script-safe, see
//! `pushgate_core::wire::iframe` and `docs/security.md`. The parent page
//! must be same-origin with pushgate (browsers forbid `parent.` calls across
//! origins), which is what this old technique always required.

use std::sync::Arc;

use bytes::Bytes;
use http::request::Parts;
use http::Response;
use pushgate_core::delivery::{End, Framing, Timing};
use pushgate_core::protocol::encode_reset;
use pushgate_core::session::{Emit, Session};
use pushgate_core::wire::{self, iframe};
use pushgate_core::{Error, Principal};

use super::event_stream::{self, Encoder};
use crate::metrics::Transport;
use crate::state::AppState;
use crate::web::{self, parse_subscribe_query, Body};

struct IframeEncoder {
    callback: String,
}

impl Framing for IframeEncoder {
    fn emit(&mut self, _: &Session, emit: &Emit) -> Bytes {
        Bytes::from(match emit {
            Emit::Message(p) => iframe::script(&self.callback, p.json()),
            Emit::Reset { channel, position } => {
                iframe::script(&self.callback, encode_reset(channel, position).as_bytes())
            }
            Emit::Live(e) => iframe::script(&self.callback, e.json()),
        })
    }

    fn reply(&mut self, json: &str) -> Bytes {
        Bytes::from(iframe::script(&self.callback, json.as_bytes()))
    }

    /// A call, not a comment: the page's watchdog must see it (a stream
    /// cut by an RST mid-document never fires the iframe's `load`).
    fn heartbeat(&mut self) -> Bytes {
        Bytes::from(iframe::script(&self.callback, wire::PING_JSON))
    }

    /// Why the document ends, then its end, so the browser fires `load`.
    fn farewell(&mut self, end: End) -> Option<Bytes> {
        let json = wire::end_json(end)?;
        let mut out = iframe::script(&self.callback, json);
        out.extend_from_slice(iframe::CLOSE);
        Some(Bytes::from(out))
    }
}

impl Encoder for IframeEncoder {
    fn content_type(&self) -> &'static str {
        "text/html; charset=utf-8"
    }

    fn preamble(&self, _: &AppState) -> Bytes {
        iframe::preamble()
    }

    /// With a lifetime: the document ends before a proxy or the browser
    /// gives up on it, and the client reloads it from its cursor.
    fn timing(&self, state: &AppState) -> Arc<Timing> {
        state.iframe_timing.clone()
    }
}

pub async fn handle(state: Arc<AppState>, principal: &Principal, req: &Parts) -> Response<Body> {
    let query = match parse_subscribe_query(
        req.uri.query(),
        &["callback"],
        state.config.max_subscriptions,
    ) {
        Ok(q) => q,
        Err(e) => return web::error(&e),
    };
    let Some(callback) = query.extra("callback").map(str::to_owned) else {
        return web::error(&Error::bad_request(
            "give the function to call: ?callback=NAME",
        ));
    };
    if let Err(e) = iframe::validate_callback(&callback) {
        return web::error(&e);
    }
    let mut res = web::event_stream(
        event_stream::open(
            state,
            principal,
            query.channels,
            query.since,
            Box::new(IframeEncoder { callback }),
            Transport::Iframe,
            crate::web::peer(req),
        )
        .await,
    );
    // Only a same-origin parent can use the frame; say so to the browser too.
    res.headers_mut().insert(
        "x-frame-options",
        http::HeaderValue::from_static("SAMEORIGIN"),
    );
    res
}
