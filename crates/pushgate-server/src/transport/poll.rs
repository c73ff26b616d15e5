//! Short polling at `GET /poll?channel=a&channel=b[&since=CURSOR]`: answers at
//! once with `{"messages":[…],"cursor":"…"}`. Long polling
//! ([`super::longpoll`]) is the same request that waits for the first
//! message; it shares [`collect`] and [`answer`].

use std::borrow::Cow;
use std::sync::Arc;

use http::request::Parts;
use http::{Response, StatusCode};
use pushgate_core::cursor::Since;
use pushgate_core::protocol::encode_reset;
use pushgate_core::session::Emit;
use pushgate_core::wire::poll;
use pushgate_core::{ChannelName, Connection, Error};

use crate::access_log::{Close, Tracked};
use crate::admission::Admitted;
use crate::metrics::Transport;
use crate::state::AppState;
use crate::web::{self, parse_subscribe_query, Body};

pub async fn handle(state: Arc<AppState>, caller: &Admitted, req: &Parts) -> Response<Body> {
    let q = match parse_subscribe_query(req.uri.query(), &[], state.config.max_subscriptions) {
        Ok(q) => q,
        Err(e) => return web::error(&e),
    };
    let mut tracked = Tracked::open(
        &state.metrics,
        Transport::Poll,
        caller.peer(),
        caller.principal(),
    );
    tracked.close(Close::Answered);
    match collect(&state, caller, q.channels, &q.since).await {
        Ok((conn, emits)) => answer(&conn, &emits, &mut tracked),
        Err(res) => res,
    }
}

/// Subscribes `channels` from `since` for the life of the request and
/// returns what is already there to deliver. The subscription lets a
/// waiting request hear of new messages; dropping the connection (the
/// request ends, or the client left) drops it.
pub async fn collect(
    state: &AppState,
    caller: &Admitted,
    channels: Vec<ChannelName>,
    since: &Since,
) -> Result<(Connection, Vec<Emit>), Response<Body>> {
    if channels.is_empty() {
        return Err(web::error(&Error::bad_request(
            "give at least one channel: ?channel=NAME",
        )));
    }
    let mut conn = state.connection(caller.principal()).without_presence();
    let mut emits: Vec<Emit> = Vec::new();
    for channel in channels {
        match conn.subscribe(channel, since).await {
            Ok((_, events)) => conn.accept_all(events, &mut emits),
            Err(e) => {
                state.note_refusal(&e, caller.peer());
                return Err(web::error(&e));
            }
        }
    }
    Ok((conn, emits))
}

/// The poll body: the messages and resets in `emits`, and the cursor after them.
pub fn answer(conn: &Connection, emits: &[Emit], tracked: &mut Tracked) -> Response<Body> {
    let delivered = emits
        .iter()
        .filter(|e| matches!(e, Emit::Message(_)))
        .count();
    tracked.delivered(delivered as u64);
    let body = match emits {
        // The common long-poll answer: shared by every one-channel poller.
        [Emit::Message(p)] if conn.session().len() == 1 => p.encoded(&poll::SINGLE).clone(),
        _ => {
            let entries: Vec<Cow<'_, [u8]>> = emits
                .iter()
                .filter_map(|e| match e {
                    Emit::Message(p) => Some(Cow::Borrowed(&p.json()[..])),
                    Emit::Reset { channel, position } => {
                        Some(Cow::Owned(encode_reset(channel, position).into_bytes()))
                    }
                    // Polls take no part in presence (never queued for them).
                    Emit::Live(_) => None,
                })
                .collect();
            let entries: Vec<&[u8]> = entries.iter().map(|e| e.as_ref()).collect();
            poll::body(&entries, &conn.session().cursor().encode())
        }
    };
    web::json(StatusCode::OK, body)
}
