//! Long polling at `GET /longpoll?channel=…[&since=CURSOR][&timeout=S]`: held
//! until at least one message after the cursor exists, or until the timeout
//! (then an empty list). The body is `/poll`'s. Pending requests are cheap —
//! a subscription and a parked hyper task — and a client that disconnects
//! frees its waiter at once, because hyper drops the request future.

use std::sync::Arc;

use http::request::Parts;
use http::Response;
use pushgate_core::Error;

use super::poll::respond;
use crate::config::parse_duration;
use crate::metrics::Transport;
use crate::state::AppState;
use crate::web::{self, parse_subscribe_query, Body};

pub async fn handle(state: Arc<AppState>, req: &Parts) -> Response<Body> {
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
    respond(
        &state,
        q.channels,
        &q.since,
        Some(timeout),
        Transport::LongPoll,
    )
    .await
}
