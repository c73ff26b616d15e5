//! The server crate's error, and the one place core error kinds become HTTP
//! statuses and WebSocket close codes.

use std::fmt;

use http::StatusCode;
use pushgate_core::ErrorKind;

use crate::metrics::Limit;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The configuration is invalid.
    Config,
    /// The listening socket could not be opened.
    Bind,
    /// An I/O error while serving.
    Io,
}

/// A startup or serving failure of the whole server (not of one request).
/// `Display` is this level only; the cause (an I/O error) is `source()`.
#[derive(Debug)]
pub struct Error {
    kind: Kind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    pub fn config(message: impl Into<String>) -> Self {
        Error {
            kind: Kind::Config,
            message: message.into(),
            source: None,
        }
    }

    pub fn bind(addr: std::net::SocketAddr, e: std::io::Error) -> Self {
        Error {
            kind: Kind::Bind,
            message: format!(
                "cannot listen on {addr} (is another server using it? pick another with --listen)"
            ),
            source: Some(Box::new(e)),
        }
    }

    pub fn io(e: std::io::Error) -> Self {
        Error {
            kind: Kind::Io,
            message: "I/O error while serving".to_owned(),
            source: Some(Box::new(e)),
        }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

/// The HTTP status for a request that failed with `kind`.
pub fn http_status(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::Unauthorized | ErrorKind::TokenExpired => StatusCode::UNAUTHORIZED,
        ErrorKind::Forbidden | ErrorKind::NotInRoom => StatusCode::FORBIDDEN,
        ErrorKind::UnknownClient => StatusCode::NOT_FOUND,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Timeout => StatusCode::REQUEST_TIMEOUT,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        ErrorKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// The `Retry-After` of an HTTP answer to `e`, when it says when to retry:
/// whole seconds, rounded up (RFC 9110 §10.2.3 has no finer unit; the
/// body's `retry_after_ms` has).
pub fn retry_after_header(e: &pushgate_core::Error) -> Option<http::HeaderValue> {
    let after = e.retry_after()?;
    let secs = after.as_nanos().div_ceil(1_000_000_000).max(1);
    Some(http::HeaderValue::from(
        u64::try_from(secs).unwrap_or(u64::MAX),
    ))
}

/// The limit of `/metrics` (`pushgate_limited_total{limit=…}`) that refused
/// a command or request with an error of `kind`, for the limits whose
/// refusals are errors.
pub fn limit_of(kind: ErrorKind) -> Option<Limit> {
    match kind {
        ErrorKind::RateLimited => Some(Limit::PublishRate),
        ErrorKind::TooDeep => Some(Limit::JsonDepth),
        _ => None,
    }
}

/// The close code of a WebSocket that must end because of an error of
/// `kind`, rather than answer it with an `error` frame (a command's error
/// never closes the connection). One map, documented in `docs/protocol.md`:
/// RFC 6455's codes where one fits, 44xx mirroring the HTTP status
/// otherwise, so a client handles both the same way.
pub fn close_code(kind: ErrorKind) -> u16 {
    match kind {
        ErrorKind::TooLarge => 1009,
        // "Try again later": the backend is down, not the client wrong.
        ErrorKind::Unavailable => 1013,
        ErrorKind::Unauthorized => 4401,
        ErrorKind::TokenExpired => close::TOKEN_EXPIRED,
        ErrorKind::Forbidden => 4403,
        ErrorKind::Timeout => 4408,
        // Anything else is a request the server will not serve as sent.
        _ => 1008,
    }
}

/// WebSocket close codes pushgate sends (documented in `docs/protocol.md`).
pub mod close {
    /// The server is shutting down or restarting (RFC 6455 "service restart"):
    /// reconnect, here or elsewhere, and resume.
    pub const RESTART: u16 = 1012;
    /// The connection fell behind its send queue: reconnect and resume with your cursor.
    pub const RESUME: u16 = 4000;
    /// Nothing was received for `ws_idle_timeout`.
    pub const IDLE: u16 = 4001;
    /// The token expired and no fresh one came (`auth`): reconnect with a
    /// fresh token and resume.
    pub const TOKEN_EXPIRED: u16 = 4002;
    /// The application disconnected this user (`/api/disconnect`): do not
    /// reconnect with the same token.
    pub const DISCONNECTED: u16 = 4003;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_limit_is_a_429_with_retry_after_in_whole_seconds() {
        use std::time::Duration;
        let refused = |wait| {
            pushgate_core::Error::new(ErrorKind::RateLimited, "slow down").with_retry_after(wait)
        };
        assert_eq!(http_status(ErrorKind::RateLimited), 429);
        assert_eq!(http_status(ErrorKind::TooDeep), 400);
        for (wait, header) in [(1, "1"), (999, "1"), (1000, "1"), (1001, "2")] {
            let e = refused(Duration::from_millis(wait));
            assert_eq!(retry_after_header(&e).unwrap(), header, "{wait} ms");
        }
        assert_eq!(
            retry_after_header(&pushgate_core::Error::bad_request("x")),
            None
        );
        assert_eq!(limit_of(ErrorKind::RateLimited), Some(Limit::PublishRate));
        assert_eq!(limit_of(ErrorKind::TooDeep), Some(Limit::JsonDepth));
        assert_eq!(limit_of(ErrorKind::BadJson), None);
    }

    #[test]
    fn close_codes_follow_the_documented_map() {
        for (kind, code) in [
            (ErrorKind::TooLarge, 1009),
            (ErrorKind::Unavailable, 1013),
            (ErrorKind::Unauthorized, 4401),
            (ErrorKind::Forbidden, 4403),
            (ErrorKind::Timeout, 4408),
            (ErrorKind::BadRequest, 1008),
            (ErrorKind::InvalidChannel, 1008),
        ] {
            assert_eq!(close_code(kind), code, "{kind:?}");
        }
        let codes = [
            close::RESTART,
            close::RESUME,
            close::IDLE,
            close::TOKEN_EXPIRED,
            close::DISCONNECTED,
        ];
        assert!(
            codes
                .iter()
                .all(|c| ![1008, 1009, 1013, 4401, 4403, 4408].contains(c)),
            "the error codes do not reuse the server's own closes"
        );
    }
}
