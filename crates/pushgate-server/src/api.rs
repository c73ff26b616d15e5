//! The server API for application backends: publish, history, direct
//! messages, presence, disconnecting users, health, metrics; batches and
//! broadcasts (`batch`), and what the cluster holds (`survey`).
//!
//! Admission (`crate::admission`) lets in only the API key's holder, or
//! loopback peers when no key is configured (and the startup log says so).

pub mod batch;
pub mod survey;

use std::fmt::Write as _;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use pushgate_core::cursor::Since;
use pushgate_core::protocol::{self, Publish};
use pushgate_core::StartAt;
use pushgate_core::{ChannelName, Data, Error, ErrorKind, EventName};

use crate::metrics::Limit;
use crate::state::AppState;
use crate::web::{self as h, Body, RequestBody};

/// Most messages one history request returns.
pub const MAX_HISTORY_LIMIT: usize = 1000;

/// A request body must arrive within this time, like a head (slow-loris defence).
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads a request body of at most `max` bytes within [`BODY_TIMEOUT`]; a
/// refusal is counted under its limit.
pub async fn read_body(state: &AppState, body: RequestBody, max: usize) -> Result<Bytes, Error> {
    match body {
        RequestBody::Read(bytes) if bytes.len() > max => {
            state.metrics.limited(Limit::MessageSize);
            Err(body_too_large(max))
        }
        RequestBody::Read(bytes) => Ok(bytes),
        RequestBody::Incoming(body) => collect(state, body, max).await,
        RequestBody::H2(body) => collect(state, body, max).await,
    }
}

async fn collect<B>(state: &AppState, body: B, max: usize) -> Result<Bytes, Error>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let read = tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, max).collect());
    let Ok(read) = read.await else {
        state.metrics.limited(Limit::HeadTimeout);
        return Err(body_timed_out());
    };
    match read {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            state.metrics.limited(Limit::MessageSize);
            Err(body_too_large(max))
        }
        Err(e) => Err(Error::bad_request(format!("could not read the body: {e}"))),
    }
}

pub fn body_timed_out() -> Error {
    Error::new(
        ErrorKind::Timeout,
        format!(
            "the request body did not arrive within {} s",
            BODY_TIMEOUT.as_secs()
        ),
    )
}

pub fn body_too_large(max: usize) -> Error {
    Error::new(
        ErrorKind::TooLarge,
        format!("body is larger than {max} bytes (max_message_size)"),
    )
}

fn is_octet_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/octet-stream")
        })
}

/// `POST /api/publish`: JSON `{"channel","data","event"?}`, or raw bytes with
/// `Content-Type: application/octet-stream` and `?channel=…[&event=…]`.
pub async fn publish(state: Arc<AppState>, req: Request<RequestBody>) -> Response<Body> {
    let binary = is_octet_stream(req.headers());
    let query = req.uri().query().map(str::to_owned);
    let body = match read_body(&state, req.into_body(), state.config.max_message_size).await {
        Ok(b) => b,
        Err(e) => return h::error(&e),
    };
    let parsed = if binary {
        binary_publish(query.as_deref(), body)
    } else {
        protocol::decode_publish(&body, state.config.max_json_depth)
    };
    let Publish {
        channel,
        event,
        data,
    } = match parsed {
        Ok(p) => p,
        Err(e) => {
            state.count_limited(&e);
            return h::error(&e);
        }
    };
    match state.hub.publish(channel, event, data).await {
        Ok(p) => {
            state.metrics.published();
            let mut out = String::with_capacity(80);
            out.push_str("{\"channel\":");
            pushgate_core::json::push_string(&mut out, p.channel.as_str());
            let _ = write!(out, ",\"epoch\":\"{}\",\"offset\":{}}}", p.epoch, p.offset);
            h::json(StatusCode::OK, out)
        }
        Err(e) => {
            state.metrics.publish_error();
            h::error(&e)
        }
    }
}

fn binary_publish(query: Option<&str>, body: Bytes) -> Result<Publish, Error> {
    let mut channel = None;
    let mut event = None;
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match &*k {
            "channel" if channel.is_none() => channel = Some(ChannelName::new(&v)?),
            "event" if event.is_none() => event = Some(EventName::new(&v)?),
            other => {
                return Err(Error::bad_request(format!(
                    "unexpected or repeated parameter {:?}; binary publish takes ?channel=NAME[&event=NAME]",
                    other.chars().take(40).collect::<String>()
                )))
            }
        }
    }
    let channel = channel.ok_or_else(|| {
        Error::bad_request("binary publish needs ?channel=NAME (the body is the raw payload)")
    })?;
    Ok(Publish {
        channel,
        event,
        data: Data::Binary(body),
    })
}

/// `GET /api/history?channel=C[&since=CURSOR][&limit=N]`: retained messages
/// after `since` (from the oldest without it), in the `/poll` body shape.
pub async fn history(state: Arc<AppState>, req: Request<RequestBody>) -> Response<Body> {
    let q = match h::parse_subscribe_query(req.uri().query(), &["limit"], 1) {
        Ok(q) => q,
        Err(e) => return h::error(&e),
    };
    let Some(channel) = q.channels.first().cloned() else {
        return h::error(&Error::bad_request("history needs ?channel=NAME"));
    };
    let limit = match q.extra("limit").map(str::parse::<usize>) {
        None => 100,
        Some(Ok(n)) if (1..=MAX_HISTORY_LIMIT).contains(&n) => n,
        Some(_) => {
            return h::error(&Error::bad_request(format!(
                "limit must be a number from 1 to {MAX_HISTORY_LIMIT}"
            )))
        }
    };
    let start = match &q.since {
        Since::Now | Since::Earliest => StartAt::Earliest,
        Since::Cursor(c) => c
            .get(&channel)
            .cloned()
            .map_or(StartAt::Earliest, StartAt::After),
    };
    match state.hub.read(&channel, start, limit).await {
        Ok(catchup) => h::json(StatusCode::OK, crate::web::catchup_body(&channel, &catchup)),
        Err(e) => h::error(&e),
    }
}

/// The user endpoints: `POST /api/send`, `GET /api/presence`,
/// `POST /api/disconnect`.
pub async fn users(state: &Arc<AppState>, req: Request<RequestBody>) -> Response<Body> {
    let result = match req.uri().path() {
        "/api/send" => send(state, req).await,
        "/api/presence" => presence(state, &req).await,
        _ => disconnect(state, req).await,
    };
    match result {
        Ok(body) => h::json(StatusCode::OK, body),
        Err(e) => h::error(&e),
    }
}

/// `POST /api/send {"to":[…],"data":…,"event"?}` → `{"online":[…],"offline":[…]}`.
async fn send(state: &AppState, req: Request<RequestBody>) -> Result<String, Error> {
    let body = read_body(state, req.into_body(), state.config.max_message_size).await?;
    let message = protocol::decode_send(&body, state.config.max_json_depth)
        .inspect_err(|e| state.count_limited(e))?;
    let r = state
        .hub
        .send(None, &message.to, message.event, &message.data)
        .await?;
    let mut out = String::from("{\"online\":");
    protocol::push_users(&mut out, &r.online);
    out.push_str(",\"offline\":");
    protocol::push_users(&mut out, &r.offline);
    out.push('}');
    Ok(out)
}

/// `GET /api/presence?channel=C` → `{"channel":C,"users":[…],"anonymous":N}`.
async fn presence(state: &AppState, req: &Request<RequestBody>) -> Result<String, Error> {
    let q = h::parse_subscribe_query(req.uri().query(), &[], 1)?;
    let channel = q
        .channels
        .first()
        .ok_or_else(|| Error::bad_request("presence needs ?channel=NAME"))?;
    Ok(state.hub.presence(channel).await?.encode())
}

/// `POST /api/disconnect {"user":"alice"}` → `{"disconnected":N}`.
async fn disconnect(state: &AppState, req: Request<RequestBody>) -> Result<String, Error> {
    let body = read_body(state, req.into_body(), 4096).await?;
    let user = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("user")?.as_str().map(str::to_owned))
        .ok_or_else(|| Error::bad_request("the body must be {\"user\":\"<user id>\"}"))?;
    if user.is_empty() {
        return Err(Error::bad_request("\"user\" must not be empty"));
    }
    let n = state.hub.disconnect(&user.into()).await?;
    Ok(format!("{{\"disconnected\":{n}}}"))
}

pub fn healthz() -> Response<Body> {
    h::json(StatusCode::OK, Bytes::from_static(b"{\"status\":\"ok\"}"))
}

pub fn metrics(state: &AppState) -> Response<Body> {
    h::text(
        StatusCode::OK,
        "text/plain; version=0.0.4",
        state.metrics.render(),
    )
}
