//! The one error type of the core, with a kind that maps to a wire error code.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// What went wrong, in terms a client can act on. Each kind has a stable wire
/// code (see `docs/protocol.md`); transports map kinds to HTTP statuses and
/// WebSocket close codes in one place each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The frame or body is not valid JSON.
    BadJson,
    /// Valid JSON, but a field is missing, has the wrong type or a bad value.
    BadRequest,
    /// The command `type` is not one the server knows.
    UnknownCommand,
    /// A channel name is empty, too long or has characters outside the allowed set.
    InvalidChannel,
    /// An event name is empty, too long or has characters outside the allowed set.
    InvalidEvent,
    /// A cursor (`since`, `Last-Event-ID`) cannot be parsed.
    InvalidCursor,
    /// A frame, body, cursor or list exceeds a configured limit.
    TooLarge,
    /// JSON nested deeper than the server allows (`max_json_depth`): some
    /// client parsers crash on deep nesting, so it is never passed on.
    TooDeep,
    /// The client publishes (or sends) faster than its allowance: retry
    /// after [`Error::retry_after`].
    RateLimited,
    /// The connection already holds as many subscriptions as allowed.
    TooManySubscriptions,
    /// `subscribe` for a channel the connection is already subscribed to.
    AlreadySubscribed,
    /// `unsubscribe` for a channel the connection is not subscribed to.
    NotSubscribed,
    /// Credentials are missing or wrong: a token is needed, or this one is
    /// malformed, badly signed or of the wrong audience.
    Unauthorized,
    /// The token expired: get a fresh one.
    TokenExpired,
    /// The caller may not do this.
    Forbidden,
    /// A `signal` from a connection that is not a member of the room.
    NotInRoom,
    /// A `signal` to a connection that is not (or no longer) a member of
    /// the room, or to the sender itself.
    UnknownClient,
    /// The history/fan-out backend failed or is unreachable; retrying may help.
    Unavailable,
    /// The client did not send (a part of) its request in time.
    Timeout,
    /// No such endpoint.
    NotFound,
    /// The endpoint exists but not with this method.
    MethodNotAllowed,
}

impl ErrorKind {
    /// The stable code carried in `{"type":"error","code":…}` and HTTP error bodies.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::BadJson => "bad_json",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::UnknownCommand => "unknown_command",
            ErrorKind::InvalidChannel => "invalid_channel",
            ErrorKind::InvalidEvent => "invalid_event",
            ErrorKind::InvalidCursor => "invalid_cursor",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::TooDeep => "too_deep",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::TooManySubscriptions => "too_many_subscriptions",
            ErrorKind::AlreadySubscribed => "already_subscribed",
            ErrorKind::NotSubscribed => "not_subscribed",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::TokenExpired => "token_expired",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::NotInRoom => "not_in_room",
            ErrorKind::UnknownClient => "unknown_client",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::NotFound => "not_found",
            ErrorKind::MethodNotAllowed => "method_not_allowed",
        }
    }
}

/// An error with a kind and a message written for the person who has to fix it.
/// The message goes on the wire; the cause, when there is one (a storage
/// backend's own error), stays for logs through [`std::error::Error::source`].
#[derive(Debug, Clone)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    /// When trying again can succeed ([`ErrorKind::RateLimited`]).
    retry_after: Option<Duration>,
}

/// Two errors are equal when kind and message are: a cause is for logs.
impl PartialEq for Error {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.message == other.message
    }
}

impl Eq for Error {}

impl Error {
    /// An error of `kind`. `message` goes on the wire: say what to do about it.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
            retry_after: None,
        }
    }

    /// The same error, caused by `source`.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// The same error, which will not recur if the request is made again
    /// `after` from now (a rate limit's refusal).
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// How long to wait before trying again, when the error says
    /// (`retry_after_ms` in an error reply, `Retry-After` over HTTP).
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// What went wrong, to pick a status, a close code or a retry by.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The stable wire code of its kind.
    pub fn code(&self) -> &'static str {
        self.kind.code()
    }

    /// The text for the client (no cause: that is for logs).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// An [`ErrorKind::BadRequest`], the most common kind.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::BadRequest, message)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn a_cause_is_kept_for_logs_and_ignored_by_equality() {
        let io = std::io::Error::other("connection refused");
        let e = Error::new(ErrorKind::Unavailable, "the store is unreachable").with_source(io);
        assert_eq!(
            e.to_string(),
            "the store is unreachable",
            "Display is this level only"
        );
        assert_eq!(e.source().unwrap().to_string(), "connection refused");
        assert_eq!(
            e,
            Error::new(ErrorKind::Unavailable, "the store is unreachable")
        );
        assert_eq!(ErrorKind::NotFound.code(), "not_found");
    }
}
