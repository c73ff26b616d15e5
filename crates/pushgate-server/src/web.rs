//! HTTP plumbing shared by the endpoints: the response body type, JSON
//! responses and errors, and query-string parsing.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body::{Frame, SizeHint};
use pushgate_core::cursor::Since;
use pushgate_core::protocol::encode_error;
use pushgate_core::{ChannelName, Error, ErrorKind};

use crate::error::http_status;
use crate::transport::event_stream::EventStream;

/// The peer's address, in a request's extensions for the endpoints that
/// hold a connection (`crate::registry` keeps it for `/api/connections`).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::SocketAddr);

/// The peer of a request (unspecified when no front put it there).
pub fn peer(parts: &http::request::Parts) -> std::net::SocketAddr {
    parts
        .extensions
        .get::<Peer>()
        .map_or(std::net::SocketAddr::from(([0, 0, 0, 0], 0)), |p| p.0)
}

/// Longest query string accepted.
pub const MAX_QUERY_LEN: usize = 32 * 1024;

/// A request's body: still to be read from hyper, or already read by the
/// front (`crate::http1` reads `Content-Length` bodies of the POST endpoints
/// itself, so a publisher's keep-alive connection never needs hyper).
pub enum RequestBody {
    Incoming(hyper::body::Incoming),
    Read(Bytes),
    /// An HTTP/2 request's body, not read yet.
    H2(crate::http2::H2Body),
}

/// Every response body: a complete one, or an event stream. An enum rather
/// than a boxed trait object keeps the common case allocation-free.
pub enum Body {
    Full(Option<Bytes>),
    Stream(Box<EventStream>),
}

impl Body {
    pub fn empty() -> Self {
        Body::Full(None)
    }
}

/// Shows the length of a complete body; a stream is just named (its state
/// is not worth printing). Needed so `Response<Body>` works with `unwrap`.
impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Body::Full(b) => f
                .debug_tuple("Full")
                .field(&b.as_ref().map_or(0, Bytes::len))
                .finish(),
            Body::Stream(_) => f.write_str("Stream"),
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Stream(s) => Pin::new(&mut **s).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Body::Full(None) => SizeHint::with_exact(0),
            Body::Stream(_) => SizeHint::default(),
        }
    }
}

pub fn json(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut res = Response::new(Body::Full(Some(body.into())));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

pub fn text(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut res = Response::new(Body::Full(Some(body.into())));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

/// `200` with an event stream as the body.
pub fn event_stream(stream: Result<EventStream, Error>) -> Response<Body> {
    let stream = match stream {
        Ok(s) => s,
        Err(e) => return error(&e),
    };
    let content_type = stream.content_type();
    let mut res = Response::new(Body::Stream(Box::new(stream)));
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store"),
    );
    // Tell buffering proxies (nginx) to pass events through at once.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    res
}

/// `{"type":"error","code":…,"message":…}` with the status for its kind.
pub fn error(e: &Error) -> Response<Body> {
    json(http_status(e.kind()), encode_error(e))
}

/// The parameters of a subscribing request (`/ws`, `/sse`, …).
#[derive(Debug, Default)]
pub struct SubscribeQuery {
    pub channels: Vec<ChannelName>,
    pub since: Since,
    /// Every other parameter, for transports that accept more.
    pub extra: Vec<(String, String)>,
}

/// Parses `channel=a&channel=b&since=…`. Duplicate channels, unknown-to-the-
/// caller parameters (checked by `allowed`), and oversize queries are errors.
pub fn parse_subscribe_query(
    query: Option<&str>,
    allowed: &[&str],
    max_channels: usize,
) -> Result<SubscribeQuery, Error> {
    let query = query.unwrap_or("");
    if query.len() > MAX_QUERY_LEN {
        return Err(Error::new(
            ErrorKind::TooLarge,
            format!("query string is longer than {MAX_QUERY_LEN} bytes"),
        ));
    }
    let mut q = SubscribeQuery::default();
    // Borrowed from the query unless it was percent-encoded.
    let mut since: Option<std::borrow::Cow<'_, str>> = None;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "channel" => {
                let channel = ChannelName::new(&value)?;
                if q.channels.contains(&channel) {
                    return Err(Error::bad_request(format!(
                        "channel {channel} is given twice"
                    )));
                }
                if q.channels.len() >= max_channels {
                    return Err(Error::new(
                        ErrorKind::TooManySubscriptions,
                        format!("at most {max_channels} channels per connection"),
                    ));
                }
                q.channels.push(channel);
            }
            "since" => {
                if since.replace(value).is_some() {
                    return Err(Error::bad_request("since is given twice"));
                }
            }
            // The client's token: admission has read it already.
            "token" => {}
            other if allowed.contains(&other) => {
                if q.extra.iter().any(|(k, _)| k == other) {
                    return Err(Error::bad_request(format!("{other} is given twice")));
                }
                q.extra.push((other.to_owned(), value.into_owned()))
            }
            other => {
                let shown: String = other.chars().take(40).collect();
                return Err(Error::bad_request(format!("unknown parameter {shown:?}")));
            }
        }
    }
    if let Some(s) = since {
        q.since = Since::parse(&s)?;
    }
    Ok(q)
}

impl SubscribeQuery {
    pub fn extra(&self, key: &str) -> Option<&str> {
        self.extra
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The poll body (`pushgate_core::wire::poll`) of a history read: the
/// shared JSON bytes of the messages, or a `reset` entry, and the cursor
/// where the reader stands afterwards.
pub fn catchup_body(channel: &ChannelName, c: &pushgate_core::Catchup) -> Bytes {
    let reset = c
        .reset
        .then(|| pushgate_core::protocol::encode_reset(channel, &c.position));
    let mut entries: Vec<&[u8]> = Vec::with_capacity(c.messages.len() + 1);
    entries.extend(reset.as_deref().map(str::as_bytes));
    entries.extend(c.messages.iter().map(|m| &m.json()[..]));
    let mut cursor = pushgate_core::Cursor::new();
    cursor.set(channel.clone(), c.next_position());
    pushgate_core::wire::poll::body(&entries, &cursor.encode())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_repeated_channels_and_since() {
        let q =
            parse_subscribe_query(Some("channel=a&channel=b%3Ac&since=earliest"), &[], 10).unwrap();
        assert_eq!(q.channels.len(), 2);
        assert_eq!(q.channels[1].as_str(), "b:c");
        assert_eq!(q.since, Since::Earliest);
    }

    #[test]
    fn rejects_bad_queries() {
        let kind = |q: &str| {
            parse_subscribe_query(Some(q), &["timeout"], 2)
                .unwrap_err()
                .kind()
        };
        assert_eq!(kind("channel=a&channel=a"), ErrorKind::BadRequest);
        assert_eq!(kind("channel=a&foo=1"), ErrorKind::BadRequest);
        assert_eq!(kind("channel=a%20b"), ErrorKind::InvalidChannel);
        assert_eq!(kind("channel=a&since=garbage"), ErrorKind::InvalidCursor);
        assert_eq!(
            kind("channel=a&channel=b&channel=c"),
            ErrorKind::TooManySubscriptions
        );
        assert_eq!(kind("timeout=1&timeout=2"), ErrorKind::BadRequest);
        let huge = "a".repeat(MAX_QUERY_LEN + 1);
        assert_eq!(kind(&huge), ErrorKind::TooLarge);
        let q = parse_subscribe_query(Some("channel=a&timeout=5"), &["timeout"], 2).unwrap();
        assert_eq!(q.extra("timeout"), Some("5"));
    }
}
