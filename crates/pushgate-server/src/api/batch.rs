//! `POST /api/batch` and `POST /api/broadcast`: many publications in one
//! request, one answer per publication, in order. An item that fails (a
//! bad channel, data too large, Redis unavailable) is an error in its
//! place; the others are published. Only a body that is not the shape at
//! all fails the whole request (400).

use std::fmt::Write as _;
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use pushgate_core::json::{nests_deeper, push_string, SafeJson};
use pushgate_core::protocol::{self, encode_error, Publish};
use pushgate_core::{ChannelName, Data, Error, ErrorKind, EventName};
use serde_json::value::RawValue;

use super::read_body;
use crate::state::AppState;
use crate::web::{self as h, Body, RequestBody};

/// Most publications of a batch, and channels of a broadcast.
pub const MAX_ITEMS: usize = 1000;

/// A batch or broadcast body may be this many times `max_message_size`
/// (each publication's data is still held to `max_message_size`).
pub const BODY_FACTOR: usize = 16;

/// A body's fields, each kept as its JSON text.
type Fields<'a> = std::collections::BTreeMap<String, &'a RawValue>;

/// `POST /api/batch {"publications":[{"channel","data","event"?},…]}`.
pub async fn batch(state: Arc<AppState>, req: Request<RequestBody>) -> Response<Body> {
    let body = match read(&state, req).await {
        Ok(b) => b,
        Err(e) => return h::error(&e),
    };
    let shape = "{\"publications\":[{\"channel\",\"data\",\"event\"?},…]}";
    let publications = match parse(&body, shape, &["publications"])
        .and_then(|f| list(&f, "publications", shape))
    {
        Ok(p) => p,
        Err(e) => return h::error(&e),
    };
    if let Err(e) = bounded(publications.len(), "publications") {
        return h::error(&e);
    }
    let max = state.config.max_message_size;
    let depth = state.config.max_json_depth;
    let mut results = Vec::with_capacity(publications.len());
    for item in publications {
        let publish = protocol::decode_publish(item.get().as_bytes(), depth)
            .and_then(|p| within_size(p, max));
        results.push(publish_one(&state, publish).await);
    }
    answer(&results)
}

/// `POST /api/broadcast {"channels":[C,…],"data":…,"event"?}`.
pub async fn broadcast(state: Arc<AppState>, req: Request<RequestBody>) -> Response<Body> {
    let body = match read(&state, req).await {
        Ok(b) => b,
        Err(e) => return h::error(&e),
    };
    let shape = "{\"channels\":[C,…],\"data\",\"event\"?}";
    let (fields, channels) = match parse(&body, shape, &["channels", "data", "event"])
        .and_then(|f| list(&f, "channels", shape).map(|c| (f, c)))
    {
        Ok(p) => p,
        Err(e) => return h::error(&e),
    };
    if let Err(e) = bounded(channels.len(), "channels") {
        return h::error(&e);
    }
    // Checked once for all channels: a bad one refuses the request.
    let Some(data) = fields.get("data").copied() else {
        return h::error(&Error::bad_request("broadcast needs a \"data\" field"));
    };
    if data.get().len() > state.config.max_message_size {
        return h::error(&too_large(state.config.max_message_size));
    }
    if nests_deeper(&body, state.config.max_json_depth.saturating_add(1)) {
        state.metrics.limited(crate::metrics::Limit::JsonDepth);
        return h::error(&Error::new(
            ErrorKind::TooDeep,
            format!(
                "JSON nested more than {} levels deep (max_json_depth): flatten the data",
                state.config.max_json_depth
            ),
        ));
    }
    let event = match fields.get("event").filter(|e| e.get() != "null") {
        None => None,
        Some(raw) => match serde_json::from_str::<String>(raw.get())
            .map_err(|_| Error::bad_request("\"event\" must be a string"))
            .and_then(|e| EventName::new(&e))
        {
            Ok(e) => Some(e),
            Err(e) => return h::error(&e),
        },
    };
    let data = Data::Json(SafeJson::from_valid(data));
    let mut results = Vec::with_capacity(channels.len());
    for channel in channels {
        let publish = serde_json::from_str::<String>(channel.get())
            .map_err(|_| Error::bad_request("each channel must be a string"))
            .and_then(|c| ChannelName::new(&c))
            .map(|channel| Publish {
                channel,
                event: event.clone(),
                data: data.clone(),
            });
        results.push(publish_one(&state, publish).await);
    }
    answer(&results)
}

async fn read(state: &AppState, req: Request<RequestBody>) -> Result<bytes::Bytes, Error> {
    let max = state.config.max_message_size.saturating_mul(BODY_FACTOR);
    read_body(state, req.into_body(), max).await
}

/// The body's fields: a JSON object `shape` with only `known` fields.
fn parse<'a>(body: &'a [u8], shape: &str, known: &[&str]) -> Result<Fields<'a>, Error> {
    let text = std::str::from_utf8(body)
        .map_err(|_| Error::new(ErrorKind::BadJson, "the body is not UTF-8"))?;
    let fields: Fields = serde_json::from_str(text).map_err(|e| {
        if e.is_data() {
            Error::bad_request(format!("the body must be a JSON object {shape}"))
        } else {
            Error::new(ErrorKind::BadJson, format!("not valid JSON: {e}"))
        }
    })?;
    if let Some(other) = fields.keys().find(|k| !known.contains(&k.as_str())) {
        let mut shown = String::new();
        push_string(&mut shown, &other.chars().take(40).collect::<String>());
        return Err(Error::bad_request(format!(
            "unknown field {shown}; the body is {shape}"
        )));
    }
    Ok(fields)
}

/// Field `name`, a JSON array.
fn list<'a>(fields: &Fields<'a>, name: &str, shape: &str) -> Result<Vec<&'a RawValue>, Error> {
    let raw = fields
        .get(name)
        .ok_or_else(|| Error::bad_request(format!("the body needs \"{name}\": {shape}")))?;
    serde_json::from_str(raw.get())
        .map_err(|_| Error::bad_request(format!("\"{name}\" must be a list: {shape}")))
}

fn bounded(n: usize, what: &str) -> Result<(), Error> {
    if n == 0 {
        return Err(Error::bad_request(format!("{what} must not be empty")));
    }
    if n > MAX_ITEMS {
        return Err(Error::new(
            ErrorKind::TooLarge,
            format!("{what} must list 1 to {MAX_ITEMS}; split larger ones into several requests"),
        ));
    }
    Ok(())
}

fn too_large(max: usize) -> Error {
    Error::new(
        ErrorKind::TooLarge,
        format!("data is larger than {max} bytes (max_message_size)"),
    )
}

fn within_size(p: Publish, max: usize) -> Result<Publish, Error> {
    match &p.data {
        Data::Json(j) if j.as_str().len() > max => Err(too_large(max)),
        _ => Ok(p),
    }
}

/// One item's answer: its position, or its error.
async fn publish_one(state: &AppState, publish: Result<Publish, Error>) -> String {
    let result = match publish {
        Ok(Publish {
            channel,
            event,
            data,
        }) => match state.hub.publish(channel, event, data).await {
            Ok(p) => {
                state.metrics.published();
                let mut out = String::with_capacity(80);
                out.push_str("{\"channel\":");
                push_string(&mut out, p.channel.as_str());
                let _ = write!(out, ",\"epoch\":\"{}\",\"offset\":{}}}", p.epoch, p.offset);
                return out;
            }
            Err(e) => {
                state.metrics.publish_error();
                e
            }
        },
        Err(e) => {
            state.count_limited(&e);
            e
        }
    };
    format!("{{\"error\":{}}}", encode_error(&result))
}

fn answer(results: &[String]) -> Response<Body> {
    let mut out = String::from("{\"results\":[");
    for (i, r) in results.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(r);
    }
    out.push_str("]}");
    h::json(StatusCode::OK, out)
}
