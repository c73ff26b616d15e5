//! The route table, as data: every endpoint with its methods, how the
//! HTTP/1.1 front treats it, its CORS policy and who may call it.
//! Admission (`crate::admission`) reads it; `crate::dispatch` runs the
//! endpoint of what admission let in.
//!
//! A dozen fixed paths need no router framework, and every refusal stays a
//! JSON error of ours.

use http::Method;

use crate::config::Config;

/// What a route serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// The demo pages at `/` and `/demo/webrtc`, and `/demo/token` (only with `demo`).
    Demo,
    /// `/pushgate.js`, the browser client.
    ClientJs,
    /// The WebSocket of commands, `/ws`.
    WebSocket,
    /// `/echo` (only with `echo`): a WebSocket that sends every message
    /// back, through the same code as `/ws`, for conformance testing.
    Echo,
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
    /// `POST /api/send`: a direct message to users.
    Send,
    /// `GET /api/presence`.
    Presence,
    /// `POST /api/disconnect`: end a user's connections.
    Disconnect,
    /// `/livez`: the process answers.
    Livez,
    /// `/readyz` and its alias `/healthz`: the node can serve.
    Readyz,
    /// `POST /api/batch`: many publications, one answer each.
    Batch,
    /// `POST /api/broadcast`: one message to many channels.
    Broadcast,
    /// `GET /api/channels`: channels with subscribers, in the cluster.
    Channels,
    /// `GET /api/info`: version, uptime, every node's counts.
    Info,
    /// `GET /api/connections`: a user's connections, in the cluster.
    Connections,
    /// `GET /api/openapi.json`: the OpenAPI document of the server API.
    OpenApi,
    Metrics,
    /// The dashboard at `/admin`, its script and its style (only with `admin`).
    Admin,
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
/// Every HTTP transport is `Read` or `Act`, so each answers its preflight
/// (`OPTIONS`) the same way; a WebSocket is never preflighted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cors {
    /// Not meant for cross-origin pages: no preflight, no CORS headers.
    Off,
    /// Reads: preflights answered, allowed origins get CORS headers; a
    /// foreign origin's page cannot read the answer (nor be answered a
    /// preflight).
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
            Endpoint::Echo => config.echo,
            Endpoint::Admin => config.admin_enabled,
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
    entry("/demo/token",   &["GET"],            E::Demo,                           Front::Hyper, Cors::Off,     Public),
    entry("/demo/webrtc",  &["GET", "HEAD"],    E::Demo,                           Front::Hyper, Cors::Off,     Public),
    entry("/pushgate.js",  &["GET", "HEAD"],    E::ClientJs,                       Front::Hyper, Cors::Off,     Public),
    entry("/ws",           &["GET"],            E::WebSocket,                       Front::Get,   Cors::Upgrade, Client),
    entry("/echo",         &["GET"],            E::Echo,                           Front::Get,   Cors::Upgrade, Client),
    entry("/sse",          &["GET", "OPTIONS"], E::Sse,                            Front::Get,   Cors::Read,    Client),
    entry("/stream",       &["GET", "OPTIONS"], E::Ndjson,                         Front::Get,   Cors::Read,    Client),
    entry("/iframe",       &["GET", "OPTIONS"], E::Iframe,                         Front::Get,   Cors::Read,    Client),
    entry("/poll",         &["GET", "OPTIONS"], E::Poll,                           Front::Get,   Cors::Read,    Client),
    entry("/longpoll",     &["GET", "OPTIONS"], E::LongPoll,                       Front::Get,   Cors::Read,    Client),
    entry("/command",      &["POST", "OPTIONS"], E::Command,                       Front::Post,  Cors::Act,     Client),
    entry("/api/publish",  &["POST"],           E::Publish,                        Front::Post,  Cors::Off,     Api),
    entry("/api/history",  &["GET"],            E::History,                        Front::Hyper, Cors::Off,     Api),
    entry("/api/send",     &["POST"],           E::Send,                           Front::Hyper, Cors::Off,     Api),
    entry("/api/presence", &["GET"],            E::Presence,                       Front::Hyper, Cors::Off,     Api),
    entry("/api/disconnect", &["POST"],         E::Disconnect,                     Front::Hyper, Cors::Off,     Api),
    entry("/livez",        &["GET", "HEAD"],    E::Livez,                          Front::Hyper, Cors::Off,     Public),
    entry("/readyz",       &["GET", "HEAD"],    E::Readyz,                         Front::Hyper, Cors::Off,     Public),
    entry("/healthz",      &["GET", "HEAD"],    E::Readyz,                         Front::Hyper, Cors::Off,     Public),
    entry("/api/batch",    &["POST"],           E::Batch,                          Front::Hyper, Cors::Off,     Api),
    entry("/api/broadcast", &["POST"],          E::Broadcast,                      Front::Hyper, Cors::Off,     Api),
    entry("/api/channels", &["GET"],            E::Channels,                       Front::Hyper, Cors::Off,     Api),
    entry("/api/info",     &["GET"],            E::Info,                           Front::Hyper, Cors::Off,     Api),
    entry("/api/connections", &["GET"],         E::Connections,                    Front::Hyper, Cors::Off,     Api),
    entry("/api/openapi.json", &["GET"],        E::OpenApi,                        Front::Hyper, Cors::Off,     Api),
    entry("/metrics",      &["GET"],            E::Metrics,                        Front::Hyper, Cors::Off,     Public),
    // The page is public; what it shows comes from /api/*, behind its login.
    entry("/admin",        &["GET", "HEAD"],    E::Admin,                          Front::Hyper, Cors::Off,     Public),
    entry("/admin/admin.js", &["GET", "HEAD"],  E::Admin,                          Front::Hyper, Cors::Off,     Public),
    entry("/admin/admin.css", &["GET", "HEAD"], E::Admin,                          Front::Hyper, Cors::Off,     Public),
];

/// The route at `path`, whether or not the configuration serves it.
pub fn find(path: &str) -> Option<&'static Route> {
    ROUTES.iter().find(|r| r.path == path)
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
