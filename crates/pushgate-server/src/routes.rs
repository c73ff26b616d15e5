//! The route table. A plain `match`: a dozen fixed paths need no router
//! framework, and every refusal stays a JSON error of ours.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::request::Parts;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use pushgate_core::ErrorKind;

use crate::api;
use crate::client_js;
use crate::cors;
use crate::demo;
use crate::state::AppState;
use crate::transport::{command, iframe, longpoll, ndjson, poll, sse, ws};
use crate::web::{error_status, Body, RequestBody};

/// Paths and the methods they accept, for 405 answers.
const ROUTES: &[(&str, &str)] = &[
    ("/", "GET, HEAD"),
    ("/pushgate.js", "GET, HEAD"),
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
    req: Request<RequestBody>,
) -> Result<Response<Body>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let origin = cors::classify(&state.config, req.headers());
    let mut res = match (&method, path.as_str()) {
        (&Method::OPTIONS, p) if CORS_PATHS.contains(&p) => {
            cors::preflight(&state.config, req.headers())
        }
        (&Method::GET | &Method::HEAD, "/") if state.config.demo => demo::index(),
        (&Method::GET | &Method::HEAD, "/pushgate.js") => client_js::serve(),
        (_, p) if websocket_mode(&state.config, p).is_some() => {
            let mode = websocket_mode(&state.config, p).unwrap_or(ws::Mode::Commands);
            match cors::guard(&state.config, req.headers()) {
                Ok(()) => ws::handle(state.clone(), req, mode).await,
                Err(res) => res,
            }
        }
        (&Method::GET, p) if SUBSCRIBE_PATHS.contains(&p) => {
            let (parts, _) = req.into_parts();
            subscribe(&state, &parts).await
        }
        (&Method::POST, p) if BODY_PATHS.contains(&p) => return Ok(post(&state, peer, req).await),
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
            None => not_found(path),
        },
    };
    let decorated_already = method == Method::GET && SUBSCRIBE_PATHS.contains(&path.as_str());
    if CORS_PATHS.contains(&path.as_str()) && method != Method::OPTIONS && !decorated_already {
        cors::decorate(&origin, &mut res);
    }
    Ok(res)
}

/// The POST endpoints with a request body.
pub const BODY_PATHS: &[&str] = &["/api/publish", "/command"];

/// Serves a POST to one of [`BODY_PATHS`] (CORS headers included). Apart
/// from [`route`] so that the front, which serves these itself, holds only
/// their state while a request runs, not that of every endpoint.
pub async fn post(
    state: &Arc<AppState>,
    peer: SocketAddr,
    req: Request<RequestBody>,
) -> Response<Body> {
    let origin = cors::classify(&state.config, req.headers());
    match req.uri().path() {
        "/command" => {
            let mut res = match cors::guard(&state.config, req.headers()) {
                Ok(()) => command::handle(state.clone(), req).await,
                Err(res) => res,
            };
            cors::decorate(&origin, &mut res);
            res
        }
        "/api/publish" => match api::authorize(state, peer, req.headers()) {
            Ok(()) => api::publish(state.clone(), req).await,
            Err(res) => res,
        },
        // Callers route only BODY_PATHS here; anything else is unknown, not a panic.
        other => not_found(other),
    }
}

pub fn not_found(path: &str) -> Response<Body> {
    error_status(
        StatusCode::NOT_FOUND,
        ErrorKind::NotFound,
        format!(
            "no such endpoint: {}",
            path.chars().take(100).collect::<String>()
        ),
    )
}

/// The WebSocket endpoints: `/ws` always, `/echo` only with `--echo`.
pub fn websocket_mode(config: &crate::config::Config, path: &str) -> Option<ws::Mode> {
    match path {
        "/ws" => Some(ws::Mode::Commands),
        "/echo" if config.echo => Some(ws::Mode::Echo),
        _ => None,
    }
}

/// The GET endpoints that subscribe, which `crate::http1` also serves itself.
pub const SUBSCRIBE_PATHS: &[&str] = &["/sse", "/stream", "/iframe", "/poll", "/longpoll"];

/// Serves a GET on one of [`SUBSCRIBE_PATHS`] (CORS headers included).
pub async fn subscribe(state: &Arc<AppState>, req: &Parts) -> Response<Body> {
    let origin = cors::classify(&state.config, &req.headers);
    let mut res = match req.uri.path() {
        "/sse" => sse::handle(state.clone(), req).await,
        "/stream" => ndjson::handle(state.clone(), req).await,
        "/iframe" => iframe::handle(state.clone(), req).await,
        "/poll" => poll::handle(state.clone(), req).await,
        "/longpoll" => longpoll::handle(state.clone(), req).await,
        // Callers route only SUBSCRIBE_PATHS here; anything else is unknown.
        other => not_found(other),
    };
    cors::decorate(&origin, &mut res);
    res
}
