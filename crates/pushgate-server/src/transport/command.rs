//! `POST /command`: one client command per request, its reply frame as the
//! response — how SSE, long-poll, short-poll and iframe clients send. The
//! same decoder, validation and limits as WebSocket commands.
//!
//! Subscriptions need a connection to deliver to, so `subscribe` and
//! `unsubscribe` are refused here with a pointer to the streaming transports.
//!
//! A `signal` names its sender (`from`, a room member's id) and proves it
//! with that connection's `client_key`: the request is not the connection.
//!
//! A client here holds no connection to keep a publish allowance in (each
//! request may come on a new one), so `publish`, `send` and `signal` spend a token of
//! its address's bucket instead (`AppState::spend_command_publish_token`);
//! a refusal is a 429 with `Retry-After`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{header, Request, Response, StatusCode};
use pushgate_core::protocol::{Command, Reply};
use pushgate_core::{Error, Principal};

use crate::api::read_body;
use crate::error::{http_status, retry_after_header};
use crate::state::AppState;
use crate::web::{self, Body, RequestBody};

pub async fn handle(
    state: Arc<AppState>,
    principal: &Principal,
    peer: SocketAddr,
    req: Request<RequestBody>,
) -> Response<Body> {
    let body = match read_body(&state, req.into_body(), state.config.max_message_size).await {
        Ok(b) => b,
        Err(e) => return web::error(&e),
    };
    let (reply, id) = match super::decode(&state, &body) {
        Ok(req) => {
            let id = req.id.clone();
            let refused = match &req.command {
                Command::Subscribe { .. } | Command::Unsubscribe { .. } => Some(Error::bad_request(
                    "subscriptions need a connection: use /ws, /sse, /stream, /iframe, /longpoll or /poll",
                )),
                c if c.counts_toward_publish_rate() => state
                    .spend_command_publish_token(peer.ip(), Instant::now())
                    .err(),
                _ => None,
            };
            let reply = match refused {
                Some(e) => {
                    state.count_limited(&e);
                    match req.command {
                        Command::Publish(_) => state.metrics.publish_error(),
                        Command::Signal(_) => state.metrics.signal(false),
                        _ => {}
                    }
                    state.metrics.command(false);
                    Reply::Error(e)
                }
                None => {
                    super::execute(&state, &mut state.connection(principal), req, peer)
                        .await
                        .0
                }
            };
            (reply, id)
        }
        Err(rejected) => {
            state.metrics.command(false);
            (Reply::Error(rejected.error), rejected.id)
        }
    };
    let (status, retry_after) = match &reply {
        Reply::Error(e) => (http_status(e.kind()), retry_after_header(e)),
        _ => (StatusCode::OK, None),
    };
    let mut res = web::json(status, reply.encode(id.as_ref()));
    if let Some(after) = retry_after {
        res.headers_mut().insert(header::RETRY_AFTER, after);
    }
    res
}
