//! The route table, as data: every endpoint with its methods, how the
//! HTTP/1.1 front treats it, its CORS policy and who may call it. Admission
//! (`crate::admission`) reads the table; the handlers below run only with
//! what admission let in.
//!
//! A dozen fixed paths need no router framework, and every refusal stays a
//! JSON error of ours.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::request::Parts;
use http::{Method, Request, Response};

use crate::admission::{self, Admitted};
use crate::api;
use crate::client_js;
use crate::config::Config;
use crate::cors;
use crate::demo;
use crate::state::AppState;
use crate::transport::{command, iframe, longpoll, ndjson, poll, sse, ws};
use crate::web::{Body, RequestBody};

/// What a route serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// The demo page at `/` (only with `demo`).
    Demo,
    /// `/pushgate.js`, the browser client.
    ClientJs,
    /// A WebSocket: `/ws`, or `/echo` (only with `echo`).
    WebSocket(ws::Mode),
    Sse,
    Ndjson,
    Iframe,
    Poll,
    LongPoll,
    /// `POST /command`: one client command.
    Command,
    /// `POST /api/publish`.
    Publish,
    /// `GET /api/history`.
    History,
    Healthz,
    Metrics,
}

/// How the HTTP/1.1 front (`crate::http1`) treats a route's requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Front {
    /// hyper serves it.
    Hyper,
    /// A body-less GET the front serves on the socket: a subscription that
    /// may wait or stream, or a WebSocket upgrade.
    Get,
    /// A POST whose `Content-Length` body the front reads itself.
    Post,
}

/// Who may call a route from a page of another origin (see `crate::cors`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cors {
    /// Not meant for cross-origin pages: no preflight, no CORS headers.
    Off,
    /// Reads: preflights answered, allowed origins get CORS headers; a
    /// foreign origin's page cannot read the answer.
    Read,
    /// Acts on the server (`/command`): as `Read`, and a foreign origin is
    /// refused outright, since browsers send such a POST cross-site without
    /// asking.
    Act,
    /// A WebSocket handshake: browsers open one cross-site without any
    /// CORS check, so a foreign origin is refused outright.
    Upgrade,
}

/// What a caller must prove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// Anyone (the page, the client script, health and metrics).
    Public,
    /// A client of the push transports.
    Client,
    /// An application backend: the API key (or loopback without a key).
    Api,
}

/// One endpoint.
#[derive(Debug)]
pub struct Route {
    pub path: &'static str,
    /// Accepted methods, as the `Allow` header lists them.
    pub methods: &'static [&'static str],
    pub endpoint: Endpoint,
    pub front: Front,
    pub cors: Cors,
    pub auth: Auth,
}

impl Route {
    /// Whether the configuration serves this route at all.
    pub fn available(&self, config: &Config) -> bool {
        match self.endpoint {
            Endpoint::Demo => config.demo,
            Endpoint::WebSocket(ws::Mode::Echo) => config.echo,
            _ => true,
        }
    }

    pub fn allows(&self, method: &Method) -> bool {
        self.methods.contains(&method.as_str())
    }

    /// The `Allow` header of a 405.
    pub fn allow_header(&self) -> String {
        self.methods.join(", ")
    }
}

const fn entry(
    path: &'static str,
    methods: &'static [&'static str],
    endpoint: Endpoint,
    front: Front,
    cors: Cors,
    auth: Auth,
) -> Route {
    Route {
        path,
        methods,
        endpoint,
        front,
        cors,
        auth,
    }
}

use Auth::{Api, Client, Public};
use Endpoint as E;

/// Every endpoint pushgate serves.
#[rustfmt::skip]
pub static ROUTES: &[Route] = &[
    //     path            methods             endpoint                           front         cors           auth
    entry("/",             &["GET", "HEAD"],    E::Demo,                           Front::Hyper, Cors::Off,     Public),
    entry("/pushgate.js",  &["GET", "HEAD"],    E::ClientJs,                       Front::Hyper, Cors::Off,     Public),
    entry("/ws",           &["GET"],            E::WebSocket(ws::Mode::Commands),  Front::Get,   Cors::Upgrade, Client),
    entry("/echo",         &["GET"],            E::WebSocket(ws::Mode::Echo),      Front::Get,   Cors::Upgrade, Client),
    entry("/sse",          &["GET", "OPTIONS"], E::Sse,                            Front::Get,   Cors::Read,    Client),
    entry("/stream",       &["GET", "OPTIONS"], E::Ndjson,                         Front::Get,   Cors::Read,    Client),
    entry("/iframe",       &["GET"],            E::Iframe,                         Front::Get,   Cors::Off,     Client),
    entry("/poll",         &["GET", "OPTIONS"], E::Poll,                           Front::Get,   Cors::Read,    Client),
    entry("/longpoll",     &["GET", "OPTIONS"], E::LongPoll,                       Front::Get,   Cors::Read,    Client),
    entry("/command",      &["POST", "OPTIONS"], E::Command,                       Front::Post,  Cors::Act,     Client),
    entry("/api/publish",  &["POST"],           E::Publish,                        Front::Post,  Cors::Off,     Api),
    entry("/api/history",  &["GET"],            E::History,                        Front::Hyper, Cors::Off,     Api),
    entry("/healthz",      &["GET", "HEAD"],    E::Healthz,                        Front::Hyper, Cors::Off,     Public),
    entry("/metrics",      &["GET"],            E::Metrics,                        Front::Hyper, Cors::Off,     Public),
];

/// The route at `path`, whether or not the configuration serves it.
pub fn find(path: &str) -> Option<&'static Route> {
    ROUTES.iter().find(|r| r.path == path)
}

/// hyper's service: admission, then the endpoint.
pub async fn route(
    state: Arc<AppState>,
    peer: SocketAddr,
    req: Request<RequestBody>,
) -> Result<Response<Body>, Infallible> {
    let admitted =
        match admission::admit(&state, peer, req.method(), req.uri().path(), req.headers()) {
            Ok(a) => a,
            Err(rejected) => return Ok(rejected.into_response()),
        };
    let mut res = serve(&state, &admitted, req).await;
    admitted.finish(&mut res);
    Ok(res)
}

async fn serve(
    state: &Arc<AppState>,
    admitted: &Admitted,
    req: Request<RequestBody>,
) -> Response<Body> {
    if admitted.is_preflight() {
        return cors::preflight(admitted.origin());
    }
    match admitted.route().endpoint {
        Endpoint::Demo => demo::index(),
        Endpoint::ClientJs => client_js::serve(),
        Endpoint::WebSocket(_) => ws::handle(state.clone(), admitted, req).await,
        Endpoint::Sse
        | Endpoint::Ndjson
        | Endpoint::Iframe
        | Endpoint::Poll
        | Endpoint::LongPoll => {
            let (parts, _) = req.into_parts();
            subscribe(state, admitted, &parts).await
        }
        Endpoint::Command | Endpoint::Publish => post(state, admitted, req).await,
        Endpoint::History => api::history(state.clone(), req).await,
        Endpoint::Healthz => api::healthz(),
        Endpoint::Metrics => api::metrics(state),
    }
}

/// Serves an admitted POST with a body ([`Front::Post`] routes). Apart from
/// [`route`] so that the front, which serves these itself, holds only their
/// state while a request runs, not that of every endpoint.
pub async fn post(
    state: &Arc<AppState>,
    admitted: &Admitted,
    req: Request<RequestBody>,
) -> Response<Body> {
    match admitted.route().endpoint {
        Endpoint::Command => command::handle(state.clone(), admitted.principal(), req).await,
        Endpoint::Publish => api::publish(state.clone(), req).await,
        _ => admission::Rejection::not_found(req.uri().path()).into_response(),
    }
}

/// Serves an admitted subscribing GET (`/sse`, `/stream`, `/iframe`,
/// `/poll`, `/longpoll`), which the front also serves itself.
pub async fn subscribe(state: &Arc<AppState>, admitted: &Admitted, req: &Parts) -> Response<Body> {
    let principal = admitted.principal();
    // A waiting long-poll holds this future for as long as it waits, and a
    // future is as large as its largest branch: the others, which only open
    // a stream or answer at once, are boxed.
    match admitted.route().endpoint {
        Endpoint::Sse => Box::pin(sse::handle(state.clone(), principal, req)).await,
        Endpoint::Ndjson => Box::pin(ndjson::handle(state.clone(), principal, req)).await,
        Endpoint::Iframe => Box::pin(iframe::handle(state.clone(), principal, req)).await,
        Endpoint::Poll => Box::pin(poll::handle(state.clone(), principal, req)).await,
        Endpoint::LongPoll => longpoll::handle(state.clone(), principal, req).await,
        _ => admission::Rejection::not_found(req.uri.path()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_unique_and_the_front_takes_only_what_it_can_serve() {
        for (i, r) in ROUTES.iter().enumerate() {
            assert!(
                ROUTES[i + 1..].iter().all(|o| o.path != r.path),
                "{} twice",
                r.path
            );
            match r.front {
                Front::Get => assert_eq!(r.methods[0], "GET", "{}", r.path),
                Front::Post => assert_eq!(r.methods[0], "POST", "{}", r.path),
                Front::Hyper => {}
            }
            // A preflight is answered exactly where CORS is on.
            assert_eq!(
                r.methods.contains(&"OPTIONS"),
                matches!(r.cors, Cors::Read | Cors::Act),
                "{}",
                r.path
            );
        }
    }
}
