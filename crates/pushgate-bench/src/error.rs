//! The crate's one error type: a kind a script can branch on, plus a message a
//! person can act on.

use std::fmt;

/// What went wrong, coarsely enough that a caller can choose an exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Flags that contradict each other or are out of range.
    Config,
    /// A URL whose host is not loopback: this tool only ever targets this machine.
    NotLoopback,
    /// Not enough file descriptors for the requested connections.
    FdLimit,
    /// No connection could be set up at all (server down, wrong port, …).
    Connect,
    /// The peer sent bytes that break HTTP/1.1, WebSocket or SSE framing.
    Protocol,
    /// The peer answered with an HTTP status we cannot continue from.
    Http,
    /// A socket or file operation failed.
    Io,
    /// `/proc/PID/...` of the server could not be read.
    Proc,
    /// `--timeout` ran out before the run could produce a meaningful report.
    Timeout,
    /// A bug in the generator itself (a panicked thread).
    Internal,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Config => "config",
            ErrorKind::NotLoopback => "not-loopback",
            ErrorKind::FdLimit => "fd-limit",
            ErrorKind::Connect => "connect",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Http => "http",
            ErrorKind::Io => "io",
            ErrorKind::Proc => "proc",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Internal => "internal",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchError {
    kind: ErrorKind,
    message: String,
}

impl BenchError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        BenchError {
            kind,
            message: message.into(),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }

    pub(crate) fn protocol(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Protocol, message)
    }

    pub(crate) fn io(context: &str, err: std::io::Error) -> Self {
        Self::new(ErrorKind::Io, format!("{context}: {err}"))
    }
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} error: {}", self.kind.as_str(), self.message)
    }
}

impl std::error::Error for BenchError {}

impl From<std::io::Error> for BenchError {
    fn from(err: std::io::Error) -> Self {
        BenchError::new(ErrorKind::Io, err.to_string())
    }
}
