//! Cross-origin access for the browser-facing HTTP transports (`/sse`,
//! `/stream`, `/iframe`, `/poll`, `/longpoll`) and `/command`: the same
//! preflight answer and headers for each, whichever HTTP implementation
//! serves it (preflights, `OPTIONS`, are hyper's: the front takes only GETs
//! and POSTs).
//!
//! `allowed_origins` lists the origins (scheme://host[:port]) whose pages may
//! use pushgate from another origin; `*` allows any. A request whose `Origin`
//! is neither allowed nor the server's own is refused outright on endpoints
//! that act (`/command`, WebSocket upgrades): browsers send a cross-site form
//! POST or WebSocket handshake without asking, so a CORS header alone would
//! not stop them. See `docs/security.md`.

use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use pushgate_core::{Error, ErrorKind};

use crate::config::Config;
use crate::web::Body;

/// What the request's `Origin` is to us.
#[derive(Debug, PartialEq, Eq)]
pub enum Origin {
    /// No `Origin` header: not a browser's cross-origin request.
    Absent,
    /// The page is served by pushgate itself (Origin's host is our Host).
    Same,
    /// Listed in `allowed_origins` (or `*` is).
    Allowed(HeaderValue),
    Refused,
}

pub fn classify(config: &Config, headers: &HeaderMap) -> Origin {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Origin::Absent;
    };
    let Ok(text) = origin.to_str() else {
        return Origin::Refused;
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = text.split_once("://").map(|(_, h)| h);
    if host.is_some() && origin_host == host {
        return Origin::Same;
    }
    if config
        .allowed_origins
        .iter()
        .any(|o| o == "*" || o.eq_ignore_ascii_case(text))
    {
        return Origin::Allowed(origin.clone());
    }
    Origin::Refused
}

/// Why a foreign origin is refused where it may not act.
pub fn refused_origin() -> Error {
    Error::new(
        ErrorKind::Forbidden,
        "this page's origin is not allowed; add it to allowed_origins (--allowed-origin)",
    )
}

/// Adds `Access-Control-Allow-Origin` for an allowed cross-origin request.
pub fn decorate(origin: &Origin, res: &mut Response<Body>) {
    if let Origin::Allowed(o) = origin {
        let h = res.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o.clone());
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }
}

/// Answers a CORS preflight (`OPTIONS` with `Access-Control-Request-Method`)
/// that admission let in.
pub fn preflight(origin: &Origin) -> Response<Body> {
    let mut res = Response::new(Body::empty());
    *res.status_mut() = StatusCode::NO_CONTENT;
    decorate(origin, &mut res);
    let h = res.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    // `Authorization`: a client route takes its token as a Bearer header too.
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Content-Type, Last-Event-ID"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: &str, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
        h.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        h
    }

    #[test]
    fn classifies() {
        let mut c = Config::default();
        assert_eq!(
            classify(&c, &headers("http://127.0.0.1:7070", "127.0.0.1:7070")),
            Origin::Same
        );
        assert_eq!(
            classify(&c, &headers("http://evil.example", "127.0.0.1:7070")),
            Origin::Refused
        );
        assert_eq!(classify(&c, &HeaderMap::new()), Origin::Absent);
        c.allowed_origins = vec!["https://app.example".into()];
        assert!(matches!(
            classify(&c, &headers("https://app.example", "push.example")),
            Origin::Allowed(_)
        ));
        assert_eq!(
            classify(&c, &headers("https://app.example.evil", "push.example")),
            Origin::Refused
        );
        c.allowed_origins = vec!["*".into()];
        assert!(matches!(
            classify(&c, &headers("https://any.example", "push.example")),
            Origin::Allowed(_)
        ));
    }
}
