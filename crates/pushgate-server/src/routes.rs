//! The route table. A plain `match`: a dozen fixed paths need no router
//! framework, and every refusal stays a JSON error of ours.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use pushgate_core::ErrorKind;

use crate::api;
use crate::demo;
use crate::state::AppState;
use crate::transport::{sse, ws};
use crate::web::{error_status, Body};

/// Paths and the methods they accept, for 405 answers.
const ROUTES: &[(&str, &str)] = &[
    ("/", "GET, HEAD"),
    ("/ws", "GET"),
    ("/sse", "GET"),
    ("/api/publish", "POST"),
    ("/api/history", "GET"),
    ("/healthz", "GET, HEAD"),
    ("/metrics", "GET"),
];

pub async fn route(
    state: Arc<AppState>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let method = req.method().clone();
    let res = match (&method, req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/") if state.config.demo => demo::index(),
        (_, "/ws") => ws::handle(state, req).await,
        (&Method::GET, "/sse") => sse::handle(state, req).await,
        (&Method::POST, "/api/publish") => match api::authorize(&state, peer, req.headers()) {
            Ok(()) => api::publish(state, req).await,
            Err(res) => res,
        },
        (&Method::GET, "/api/history") => match api::authorize(&state, peer, req.headers()) {
            Ok(()) => api::history(state, req).await,
            Err(res) => res,
        },
        (&Method::GET | &Method::HEAD, "/healthz") => api::healthz(),
        (&Method::GET, "/metrics") => api::metrics(&state),
        (_, path) => match ROUTES.iter().find(|(p, _)| *p == path) {
            Some((_, allow)) => {
                let mut res = error_status(
                    StatusCode::METHOD_NOT_ALLOWED,
                    ErrorKind::BadRequest,
                    format!("{path} accepts {allow}"),
                );
                res.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(allow));
                res
            }
            None => error_status(
                StatusCode::NOT_FOUND,
                ErrorKind::BadRequest,
                format!(
                    "no such endpoint: {}",
                    path.chars().take(100).collect::<String>()
                ),
            ),
        },
    };
    Ok(res)
}
