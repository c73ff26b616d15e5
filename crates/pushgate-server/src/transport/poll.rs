//! Short polling at `GET /poll?channel=a&channel=b[&since=CURSOR]`: answers at
//! once with `{"messages":[…],"cursor":"…"}`. Long polling (`longpoll`) is the
//! same request that waits for the first message; both share `respond`.

use std::borrow::Cow;
use std::future::{poll_fn, Future};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use http::request::Parts;
use http::{Response, StatusCode};
use pushgate_core::cursor::Since;
use pushgate_core::hub::Drained;
use pushgate_core::protocol::encode_reset;
use pushgate_core::session::Emit;
use pushgate_core::wire::poll;
use pushgate_core::{ChannelName, Error};

use crate::metrics::Transport;
use crate::state::AppState;
use crate::web::{self, parse_subscribe_query, Body};

pub async fn handle(state: Arc<AppState>, req: &Parts) -> Response<Body> {
    match parse_subscribe_query(req.uri.query(), &[], state.config.max_subscriptions) {
        Ok(q) => respond(&state, q.channels, &q.since, None, Transport::Poll).await,
        Err(e) => web::error(&e),
    }
}

/// Reads every message after `since` on `channels`; with `wait`, holds the
/// request until there is at least one (or a reset) or the time is up.
///
/// The channels are subscribed while the request lives, so a message
/// published between the read and the wait wakes it; dropping the request
/// (the client left) drops the subscription with it.
pub async fn respond(
    state: &AppState,
    channels: Vec<ChannelName>,
    since: &Since,
    wait: Option<Duration>,
    transport: Transport,
) -> Response<Body> {
    if channels.is_empty() {
        return web::error(&Error::bad_request(
            "give at least one channel: ?channel=NAME",
        ));
    }
    let mut conn = state.connection();
    let mut emits: Vec<Emit> = Vec::new();
    for channel in channels {
        match conn.subscribe(channel, since).await {
            Ok((_, events)) => conn.accept_all(events, &mut emits),
            Err(e) => return web::error(&e),
        }
    }
    if let (true, Some(timeout)) = (emits.is_empty(), wait) {
        let _waiting = state.metrics.connection(transport);
        let _registered = state.registry.register(conn.outbox());
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let outbox = conn.outbox().clone();
        let mut events = Vec::new();
        while emits.is_empty() {
            let woke = poll_fn(|cx| {
                if let Poll::Ready(d) = outbox.poll_drain(cx, &mut events) {
                    return Poll::Ready(Some(d));
                }
                deadline.as_mut().poll(cx).map(|()| None)
            })
            .await;
            match woke {
                Some(Drained::Events) => conn.accept_all(events.drain(..), &mut emits),
                // Overflowed: answer with what was accepted; the cursor still
                // stands before anything dropped, so the next request catches up.
                Some(Drained::Overflowed | Drained::ShutDown) | None => break,
            }
        }
    }
    let delivered = emits
        .iter()
        .filter(|e| matches!(e, Emit::Message(_)))
        .count();
    state.metrics.delivered(transport, delivered as u64);
    let body = match emits.as_slice() {
        // The common long-poll answer: shared by every one-channel poller.
        [Emit::Message(p)] if conn.session().len() == 1 => p.poll_single().clone(),
        _ => {
            let entries: Vec<Cow<'_, [u8]>> = emits
                .iter()
                .map(|e| match e {
                    Emit::Message(p) => Cow::Borrowed(&p.json()[..]),
                    Emit::Reset { channel, position } => {
                        Cow::Owned(encode_reset(channel, position).into_bytes())
                    }
                })
                .collect();
            let entries: Vec<&[u8]> = entries.iter().map(|e| e.as_ref()).collect();
            poll::body(&entries, &conn.session().cursor().encode())
        }
    };
    web::json(StatusCode::OK, body)
}
