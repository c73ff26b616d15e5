//! The route table. A plain `match`: a dozen fixed paths need no router
//! framework, and every refusal stays a JSON error of ours.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use pushgate_core::ErrorKind;

use crate::api;
use crate::cors;
use crate::demo;
use crate::state::AppState;
use crate::transport::{command, iframe, longpoll, ndjson, poll, sse, ws};
use crate::web::{error_status, Body};

/// Paths and the methods they accept, for 405 answers.
const ROUTES: &[(&str, &str)] = &[
    ("/", "GET, HEAD"),
    ("/ws", "GET"),
    ("/sse", "GET, OPTIONS"),
    ("/stream", "GET, OPTIONS"),
    ("/iframe", "GET"),
    ("/poll", "GET, OPTIONS"),
    ("/longpoll", "GET, OPTIONS"),
    ("/command", "POST, OPTIONS"),
    ("/api/publish", "POST"),
    ("/api/history", "GET"),
    ("/healthz", "GET, HEAD"),
    ("/metrics", "GET"),
];

/// Browser-facing endpoints that answer CORS preflights.
const CORS_PATHS: &[&str] = &["/sse", "/stream", "/poll", "/longpoll", "/command"];

pub async fn route(
    state: Arc<AppState>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let origin = cors::classify(&state.config, req.headers());
    let mut res = match (&method, path.as_str()) {
        (&Method::OPTIONS, p) if CORS_PATHS.contains(&p) => {
            cors::preflight(&state.config, req.headers())
        }
        (&Method::GET | &Method::HEAD, "/") if state.config.demo => demo::index(),
        (_, "/ws") => match cors::guard(&state.config, req.headers()) {
            Ok(()) => ws::handle(state.clone(), req).await,
            Err(res) => res,
        },
        (&Method::GET, "/sse") => sse::handle(state.clone(), req).await,
        (&Method::GET, "/stream") => ndjson::handle(state.clone(), req).await,
        (&Method::GET, "/iframe") => iframe::handle(state.clone(), req).await,
        (&Method::GET, "/poll") => poll::handle(state.clone(), req).await,
        (&Method::GET, "/longpoll") => longpoll::handle(state.clone(), req).await,
        (&Method::POST, "/command") => match cors::guard(&state.config, req.headers()) {
            Ok(()) => command::handle(state.clone(), req).await,
            Err(res) => res,
        },
        (&Method::POST, "/api/publish") => match api::authorize(&state, peer, req.headers()) {
            Ok(()) => api::publish(state.clone(), req).await,
            Err(res) => res,
        },
        (&Method::GET, "/api/history") => match api::authorize(&state, peer, req.headers()) {
            Ok(()) => api::history(state.clone(), req).await,
            Err(res) => res,
        },
        (&Method::GET | &Method::HEAD, "/healthz") => api::healthz(),
        (&Method::GET, "/metrics") => api::metrics(&state),
        // `/` exists only with the demo page; otherwise it is unknown (404),
        // not a 405 that names the very method that was used.
        (_, path) => match ROUTES
            .iter()
            .find(|(p, _)| *p == path && (path != "/" || state.config.demo))
        {
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
    if CORS_PATHS.contains(&path.as_str()) && method != Method::OPTIONS {
        cors::decorate(&origin, &mut res);
    }
    Ok(res)
}
