//! Transports: thin adapters between the wire and `pushgate_core::Connection`.
//! One module per transport, named after it.

pub mod command;
pub mod delivery_loop;
pub mod event_stream;
pub mod iframe;
pub mod longpoll;
pub mod ndjson;
pub mod poll;
pub mod sse;
pub mod ws;
pub mod ws_handshake;

use std::net::SocketAddr;
use std::time::Instant;

use pushgate_core::protocol::{self, Command, Rejected, Reply, Request};
use pushgate_core::{Connection, OutboxEvent};

use crate::state::AppState;

/// Decodes one client command for any transport, with the configured
/// `max_json_depth`; a refusal by a limit is counted under it.
pub fn decode(state: &AppState, bytes: &[u8]) -> Result<Request, Rejected> {
    protocol::decode(bytes, state.config.max_json_depth)
        .inspect_err(|rejected| state.count_limited(&rejected.error))
}

/// Runs one client command for any transport, counting it in the metrics.
pub async fn execute(
    state: &AppState,
    conn: &mut Connection,
    request: Request,
    from: SocketAddr,
) -> (Reply, Vec<OutboxEvent>) {
    let is_publish = matches!(request.command, Command::Publish(_));
    let is_signal = matches!(request.command, Command::Signal(_));
    let (reply, events) = conn.execute(request, Instant::now()).await;
    let ok = match &reply {
        Reply::Error(e) => {
            state.count_limited(e);
            state.note_refusal(e, from);
            false
        }
        _ => true,
    };
    if is_publish {
        if ok {
            state.metrics.published(crate::metrics::Source::Client);
        } else {
            state.metrics.publish_error();
        }
    }
    if is_signal {
        state.metrics.signal(ok);
    }
    state.metrics.command(ok);
    (reply, events)
}
