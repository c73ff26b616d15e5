//! Admission: the one step every request passes before an endpoint runs,
//! whichever HTTP implementation read it (the front, or hyper). In order:
//!
//! 1. the route: an unknown path is 404, a wrong method 405 with `Allow`;
//! 2. the origin: a page of a foreign origin may not act (`/command`) or
//!    open a WebSocket, nor be answered a preflight (`docs/security.md`);
//! 3. the caller: the API key for `/api/*` (or loopback without a key;
//!    with `admin` enabled, also a token with `"admin": true`);
//!    for client routes the token (`Authorization: Bearer`, else the
//!    `token` query parameter) checked by the hub's policy. Either makes
//!    the [`Principal`] that travels into the connection.
//!
//! A refused token on `/ws` is not a rejection: browsers cannot read a
//! refused handshake, so the upgrade completes and the WebSocket reports
//! the refusal in a frame and a close code ([`Admitted::refused_token`]).
//!
//! Every refusal is a [`Rejection`], mapped once to a status and the JSON
//! error body.

use std::net::SocketAddr;

use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};
use pushgate_core::{Error, ErrorKind, Principal};

use crate::cors::{self, Origin};
use crate::metrics::Refusal;
use crate::routes::{self, Auth, Cors, Endpoint, Route};
use crate::state::AppState;
use crate::web::{self, Body};

/// A request admission let in: its route, who is calling, from where, and
/// its origin.
#[derive(Debug)]
pub struct Admitted {
    route: &'static Route,
    principal: Principal,
    /// Who connected (the proxy's address behind a reverse proxy): the
    /// access log's and `/api/connections`' peer.
    peer: SocketAddr,
    origin: Origin,
    preflight: bool,
    /// A token refused on a WebSocket upgrade, reported once it is open.
    /// Boxed: rare, and it keeps `Admitted` small.
    refused_token: Option<Box<Error>>,
}

impl Admitted {
    pub fn route(&self) -> &'static Route {
        self.route
    }

    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// A CORS preflight (`OPTIONS`), which admission let in but no endpoint
    /// serves: `cors::preflight` answers it.
    pub fn is_preflight(&self) -> bool {
        self.preflight
    }

    /// Why the token of a WebSocket upgrade was refused: the socket opens,
    /// sends this as an `error` frame and closes with its close code.
    pub fn refused_token(&self) -> Option<&Error> {
        self.refused_token.as_deref()
    }

    /// Adds what the route's CORS policy puts on every answer.
    pub fn finish(&self, res: &mut Response<Body>) {
        if !self.preflight && matches!(self.route.cors, Cors::Read | Cors::Act) {
            cors::decorate(&self.origin, res);
        }
    }
}

/// Why a request was refused, before any endpoint ran (admission) or by a
/// handshake: an error, answered with the status of its kind unless the
/// refusal needs its own (426), and a header some refusals carry (`Allow`
/// on a 405, `Upgrade` on a 426).
#[derive(Debug)]
pub struct Rejection {
    error: Error,
    status: Option<StatusCode>,
    /// Boxed: rare, and a `Result` carrying a rejection stays small.
    header: Option<Box<(HeaderName, HeaderValue)>>,
}

impl From<Error> for Rejection {
    fn from(error: Error) -> Self {
        Rejection {
            error,
            status: None,
            header: None,
        }
    }
}

impl Rejection {
    pub fn not_found(path: &str) -> Self {
        Error::new(
            ErrorKind::NotFound,
            format!(
                "no such endpoint: {}",
                path.chars().take(100).collect::<String>()
            ),
        )
        .into()
    }

    /// A 405 for `route`, listing the methods it takes.
    pub fn method_not_allowed(path: &str, allow: &str) -> Self {
        let error = Error::new(
            ErrorKind::MethodNotAllowed,
            format!("{path} accepts {allow}"),
        );
        Rejection::from(error).with_header(header::ALLOW, allow)
    }

    /// The same refusal, with another status than its kind's.
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = Some(status);
        self
    }

    /// The same refusal, carrying `name: value`.
    pub fn with_header(mut self, name: HeaderName, value: &str) -> Self {
        if let Ok(value) = HeaderValue::from_str(value) {
            self.header = Some(Box::new((name, value)));
        }
        self
    }

    /// The HTTP answer: the status and the JSON error body.
    pub fn into_response(self) -> Response<Body> {
        let mut res = web::error(&self.error);
        if let Some(status) = self.status {
            *res.status_mut() = status;
        }
        if let Some(h) = self.header {
            let (name, value) = *h;
            res.headers_mut().insert(name, value);
        }
        res
    }
}

/// Runs the admission steps for one request.
pub fn admit(
    state: &AppState,
    peer: SocketAddr,
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Admitted, Rejection> {
    let config = &state.config;
    let route = routes::find(path)
        .filter(|r| r.available(config))
        .ok_or_else(|| Rejection::not_found(path))?;
    if !route.allows(method) {
        return Err(Rejection::method_not_allowed(
            route.path,
            &route.allow_header(),
        ));
    }
    let preflight = method == Method::OPTIONS;
    let origin = cors::classify(config, headers);
    let acts = preflight || matches!(route.cors, Cors::Act | Cors::Upgrade);
    if acts && origin == Origin::Refused {
        let e = cors::refused_origin();
        crate::access_log::refused(&state.metrics, Refusal::Origin, peer, e.message());
        return Err(e.into());
    }
    let mut refused_token = None;
    let principal = match route.auth {
        Auth::Public => Principal::Anonymous,
        // A preflight carries no credentials; the request it precedes will.
        Auth::Client if preflight => Principal::Anonymous,
        Auth::Client => match client(state, query, headers) {
            Ok(p) => p,
            Err(e) => {
                crate::access_log::refused(&state.metrics, Refusal::Token, peer, e.message());
                if route.endpoint != Endpoint::WebSocket {
                    return Err(e.into());
                }
                refused_token = Some(Box::new(e));
                Principal::Anonymous
            }
        },
        // Two callers, each refused for its own reason: an admin's token
        // (with `admin` enabled), else the API key's holder.
        Auth::Api => match admin_bearer(state, headers) {
            Some(token) => admin_token(state, token).inspect_err(|e| {
                crate::access_log::refused(&state.metrics, Refusal::Admin, peer, e.message())
            })?,
            None => api_caller(state, peer, headers).inspect_err(|e| {
                crate::access_log::refused(&state.metrics, Refusal::ApiKey, peer, e.message())
            })?,
        },
    };
    Ok(Admitted {
        route,
        principal,
        peer,
        origin,
        preflight,
        refused_token,
    })
}

/// A client's token, checked by the policy: from `Authorization: Bearer`,
/// else the `token` query parameter; none makes an anonymous client.
fn client(state: &AppState, query: Option<&str>, headers: &HeaderMap) -> Result<Principal, Error> {
    let header = bearer(headers).map(|t| std::borrow::Cow::Borrowed(t.trim()));
    let token = header.or_else(|| token_param(query?));
    state
        .hub
        .policy()
        .authenticate(token.as_deref(), now_secs(state))
}

/// The credential of an `Authorization: Bearer …` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// The `token` query parameter, percent-decoded.
fn token_param(query: &str) -> Option<std::borrow::Cow<'_, str>> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v)
}

/// The hub's clock, in seconds since the Unix epoch (token times).
pub fn now_secs(state: &AppState) -> u64 {
    state.hub.clock().now() / 1000
}

/// When a connection of `principal` must end: its token's `exp` (seconds
/// since the Unix epoch) as an instant of the monotonic clock.
pub fn deadline(state: &AppState, principal: &Principal) -> Option<std::time::Instant> {
    let exp = principal.expires()?;
    let left = exp.saturating_sub(now_secs(state));
    Some(std::time::Instant::now() + std::time::Duration::from_secs(left))
}

/// The token an `/api/*` request presents in place of the API key: with
/// `admin` enabled and a token key configured, a Bearer that is not the key
/// and has the shape of a JWT (header.payload.signature; anything else is
/// a wrong key).
fn admin_bearer<'h>(state: &AppState, headers: &'h HeaderMap) -> Option<&'h str> {
    if !state.config.admin_enabled || !state.hub.policy().checks_tokens() {
        return None;
    }
    let given = bearer(headers)?;
    let key = state.config.api_key.as_deref().filter(|k| !k.is_empty());
    if key.is_some_and(|k| constant_time_eq(given.as_bytes(), k.as_bytes())) {
        return None;
    }
    Some(given.trim()).filter(|t| t.split('.').count() == 3)
}

/// The API key, or a loopback peer when no key is configured.
fn api_caller(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> Result<Principal, Error> {
    let or_admin = if state.config.admin_enabled {
        ", or an admin token (pushgate token --admin)"
    } else {
        ""
    };
    // An empty key would let anyone in with an empty `Bearer`: it is no key.
    match state.config.api_key.as_deref().filter(|k| !k.is_empty()) {
        Some(key) => {
            let given = bearer(headers).unwrap_or("");
            if constant_time_eq(given.as_bytes(), key.as_bytes()) {
                Ok(Principal::Api)
            } else {
                Err(Error::new(
                    ErrorKind::Unauthorized,
                    format!("send Authorization: Bearer <api key> (the key given to pushgate serve --api-key){or_admin}"),
                ))
            }
        }
        None if peer.ip().is_loopback() && !forwarded(headers) => Ok(Principal::Api),
        None => Err(Error::new(
            ErrorKind::Forbidden,
            format!("no API key is configured, so the API only answers loopback clients that come through no proxy; start pushgate with --api-key{or_admin}"),
        )),
    }
}

/// A token presented in place of the API key: accepted when it is valid and
/// says `"admin": true`. The API then treats it as the key's holder.
fn admin_token(state: &AppState, token: &str) -> Result<Principal, Error> {
    match state
        .hub
        .policy()
        .authenticate(Some(token), now_secs(state))?
    {
        Principal::User(user) if user.admin => Ok(Principal::Api),
        principal => Err(Error::new(
            ErrorKind::Forbidden,
            format!(
                "the token of {:?} is not an admin token: the server API takes the API key, \
                 or a token with \"admin\": true (pushgate token --admin)",
                principal.user().map_or("", |u| &*u.id)
            ),
        )),
    }
}

/// Whether a proxy forwarded the request: then a loopback peer is the
/// proxy on the same host, not a local backend, and is not trusted as one.
fn forwarded(headers: &HeaderMap) -> bool {
    ["forwarded", "x-forwarded-for", "x-real-ip"]
        .iter()
        .any(|h| headers.contains_key(*h))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::sync::Arc;

    fn state(configure: impl FnOnce(&mut Config)) -> Arc<AppState> {
        let mut config = Config::default();
        configure(&mut config);
        let log = Arc::new(pushgate_core::MemoryLog::new(Default::default()));
        AppState::new(
            config,
            Arc::new(pushgate_core::Hub::new(log, Default::default())),
        )
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    const LOCAL: &str = "127.0.0.1:5000";
    const REMOTE: &str = "192.0.2.7:5000";

    fn kind(r: Result<Admitted, Rejection>) -> Result<Principal, ErrorKind> {
        r.map(|a| a.principal).map_err(|e| e.error.kind())
    }

    #[test]
    fn each_step_refuses_with_its_own_kind() {
        let s = state(|c| c.demo = false);
        let get = |path: &str, peer: &str, h: &HeaderMap| {
            kind(admit(
                &s,
                peer.parse().unwrap(),
                &Method::GET,
                path,
                None,
                h,
            ))
        };
        let none = HeaderMap::new();
        assert_eq!(get("/nope", LOCAL, &none), Err(ErrorKind::NotFound));
        assert_eq!(get("/", LOCAL, &none), Err(ErrorKind::NotFound), "demo off");
        assert_eq!(
            get("/echo", LOCAL, &none),
            Err(ErrorKind::NotFound),
            "echo off"
        );
        assert_eq!(
            kind(admit(
                &s,
                LOCAL.parse().unwrap(),
                &Method::POST,
                "/sse",
                None,
                &none
            )),
            Err(ErrorKind::MethodNotAllowed)
        );
        assert_eq!(get("/sse", REMOTE, &none), Ok(Principal::Anonymous));
        let foreign = headers(&[("origin", "http://evil.example"), ("host", "push.example")]);
        assert_eq!(get("/ws", REMOTE, &foreign), Err(ErrorKind::Forbidden));
        assert_eq!(
            get("/sse", REMOTE, &foreign),
            Ok(Principal::Anonymous),
            "a foreign page may open a read; it just cannot read the answer"
        );
        assert_eq!(get("/api/history", LOCAL, &none), Ok(Principal::Api));
        assert_eq!(
            get("/api/history", REMOTE, &none),
            Err(ErrorKind::Forbidden)
        );
        // A reverse proxy on the same host is loopback too: what it
        // forwards is not a local backend's.
        for h in ["x-forwarded-for", "forwarded", "x-real-ip"] {
            let proxied = headers(&[(h, "192.0.2.7")]);
            assert_eq!(
                get("/api/history", LOCAL, &proxied),
                Err(ErrorKind::Forbidden),
                "{h}"
            );
        }
    }

    #[test]
    fn the_api_key_makes_the_api_principal() {
        let s = state(|c| c.api_key = Some("sekret".into()));
        let history = |h: &HeaderMap| {
            kind(admit(
                &s,
                REMOTE.parse().unwrap(),
                &Method::GET,
                "/api/history",
                None,
                h,
            ))
        };
        assert_eq!(history(&HeaderMap::new()), Err(ErrorKind::Unauthorized));
        assert_eq!(
            history(&headers(&[("authorization", "Bearer wrong!")])),
            Err(ErrorKind::Unauthorized)
        );
        assert_eq!(
            history(&headers(&[("authorization", "Bearer sekret")])),
            Ok(Principal::Api)
        );
        let empty = state(|c| c.api_key = Some(String::new()));
        let remote = admit(
            &empty,
            REMOTE.parse().unwrap(),
            &Method::GET,
            "/api/history",
            None,
            &headers(&[("authorization", "Bearer ")]),
        );
        assert_eq!(
            kind(remote),
            Err(ErrorKind::Forbidden),
            "an empty key is no key"
        );
    }

    #[test]
    fn a_405_lists_the_allowed_methods() {
        let s = state(|_| {});
        let r = admit(
            &s,
            LOCAL.parse().unwrap(),
            &Method::DELETE,
            "/command",
            None,
            &HeaderMap::new(),
        )
        .unwrap_err();
        let res = r.into_response();
        assert_eq!(res.status(), 405);
        assert_eq!(res.headers()[header::ALLOW], "POST, OPTIONS");
    }
}
