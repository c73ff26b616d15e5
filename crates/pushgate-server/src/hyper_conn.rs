//! Connections hyper serves: everything the HTTP/1.1 front (`crate::http1`)
//! hands over — other endpoints, chunked bodies, `Expect`, HTTP/1.0 and
//! anything unusual. hyper keeps such a connection from then on, and every
//! request on it passes the same admission as the front's
//! (`crate::dispatch::route`).
//!
//! hyper's `http1::Builder` is used directly rather than a framework's
//! auto-protocol server: it keeps per-connection memory lower (one
//! measurement found idle SSE connections cost about twice as much through
//! hyper-util's auto builder) and gives us the upgrade and timeout knobs.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};

use crate::dispatch::route;
use crate::linger::Lingering;
use crate::metrics::Limit;
use crate::state::AppState;
use crate::web::RequestBody;

/// Serves `io` until the peer is done.
pub async fn serve<I>(io: I, peer: SocketAddr, state: Arc<AppState>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let metrics = state.metrics.clone();
    let service_state = state.clone();
    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        route(service_state.clone(), peer, req.map(RequestBody::Incoming))
    });
    let config = &state.config;
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(config.head_timeout)
        // hyper's read buffer bounds the head; it may not be below 8 KiB.
        .max_buf_size(config.max_head_size.max(8192))
        // Its shutdown lingers, so that an answer hyper gives before the
        // body is read (a 413) reaches a client still sending it.
        .serve_connection(TokioIo::new(Lingering::new(io)), service)
        .with_upgrades();
    if let Err(e) = conn.await {
        if e.is_parse_too_large() {
            metrics.limited(Limit::HeadSize);
        } else if e.is_timeout() {
            metrics.limited(Limit::HeadTimeout);
        }
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
