//! `POST /command`: one client command per request, its reply frame as the
//! response — how SSE, long-poll, short-poll and iframe clients send. The
//! same decoder, validation and limits as WebSocket commands.
//!
//! Subscriptions need a connection to deliver to, so `subscribe` and
//! `unsubscribe` are refused here with a pointer to the streaming transports.

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use pushgate_core::protocol::{Command, Reply};
use pushgate_core::{Error, Principal};

use crate::api::read_body;
use crate::error::http_status;
use crate::state::AppState;
use crate::web::{self, Body, RequestBody};

pub async fn handle(
    state: Arc<AppState>,
    principal: &Principal,
    req: Request<RequestBody>,
) -> Response<Body> {
    let body = match read_body(req.into_body(), state.config.max_message_size).await {
        Ok(b) => b,
        Err(e) => return web::error(&e),
    };
    let (reply, id) = match super::decode(&state, &body) {
        Ok(req) => {
            let id = req.id.clone();
            let reply = match req.command {
                Command::Subscribe { .. } | Command::Unsubscribe { .. } => {
                    state.metrics.command(false);
                    Reply::Error(Error::bad_request(
                        "subscriptions need a connection: use /ws, /sse, /stream, /iframe, /longpoll or /poll",
                    ))
                }
                _ => {
                    super::execute(&state, &mut state.connection(principal), req)
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
    let status = match &reply {
        Reply::Error(e) => http_status(e.kind()),
        _ => StatusCode::OK,
    };
    web::json(status, reply.encode(id.as_ref()))
}
