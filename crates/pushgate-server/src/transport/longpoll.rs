//! Long polling at `GET /longpoll?channel=…[&since=CURSOR][&timeout=S]`:
//! held until at least one message after the cursor exists (or a reset), or
//! until the timeout (then an empty list). The body is `/poll`'s.
//!
//! A pending request is cheap — a subscription, a timer and the request's
//! task — and a client that disconnects frees it at once: the HTTP layer
//! drops the request future, which drops the subscription with it.

use std::future::{poll_fn, Future};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use http::request::Parts;
use http::Response;
use pushgate_core::hub::Drained;
use pushgate_core::session::Emit;
use pushgate_core::{Connection, Error};

use super::poll::{answer, collect};
use crate::access_log::{Close, Tracked};
use crate::admission::Admitted;
use crate::config::parse_duration;
use crate::metrics::Transport;
use crate::state::AppState;
use crate::web::{self, parse_subscribe_query, Body};

pub async fn handle(state: Arc<AppState>, caller: &Admitted, req: &Parts) -> Response<Body> {
    // In a block: the query is not needed while the request waits, and a
    // waiting request's state is the unit of long-poll memory.
    let (mut conn, mut emits, timeout) = {
        let q = match parse_subscribe_query(
            req.uri.query(),
            &["timeout"],
            state.config.max_subscriptions,
        ) {
            Ok(q) => q,
            Err(e) => return web::error(&e),
        };
        let max = state.config.longpoll_max_timeout;
        let timeout = match q.extra("timeout") {
            None => state.config.longpoll_timeout,
            Some(t) => match parse_duration(t) {
                Ok(d) if d <= max => d,
                Ok(_) => {
                    return web::error(&Error::bad_request(format!(
                        "timeout may be at most {max:?} (longpoll_max_timeout)"
                    )))
                }
                Err(why) => return web::error(&Error::bad_request(format!("timeout: {why}"))),
            },
        };
        // A request held past its token's expiry is answered at the expiry.
        let timeout = match crate::admission::deadline(&state, caller.principal()) {
            Some(at) => timeout.min(at.saturating_duration_since(std::time::Instant::now())),
            None => timeout,
        };
        match collect(&state, caller, q.channels, &q.since).await {
            Ok((conn, emits)) => (conn, emits, timeout),
            Err(res) => return res,
        }
    };
    let mut tracked = Tracked::open(
        &state.metrics,
        Transport::LongPoll,
        caller.peer(),
        caller.principal(),
    );
    tracked.close(Close::Answered);
    if emits.is_empty() {
        wait(&state, &mut conn, &mut emits, timeout, caller.peer()).await;
    }
    if conn.outbox().is_disconnected() {
        return web::error(&Error::new(
            pushgate_core::ErrorKind::Unauthorized,
            "your user was disconnected by the application: get a new token",
        ));
    }
    answer(&conn, &emits, &mut tracked)
}

/// Holds the request until fan-out brings something to deliver, the time
/// is up, the connection overflowed or the server shuts down.
async fn wait(
    state: &AppState,
    conn: &mut Connection,
    emits: &mut Vec<Emit>,
    timeout: Duration,
    peer: std::net::SocketAddr,
) {
    let meta = crate::registry::Meta::now(Transport::LongPoll, peer);
    let _registered = state.registry.register(conn.id(), conn.outbox(), meta);
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
            Some(Drained::Events) => {
                let now = std::time::Instant::now();
                state
                    .metrics
                    .observe_latency(Transport::LongPoll, &events, now);
                conn.accept_all(events.drain(..), emits)
            }
            // Overflowed: answer with what was accepted; the cursor still
            // stands before anything dropped, so the next request catches up.
            Some(Drained::Overflowed | Drained::ShutDown | Drained::Disconnected) | None => break,
        }
    }
}
