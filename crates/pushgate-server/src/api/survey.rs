//! The endpoints that report on the whole cluster — `GET /api/channels`,
//! `GET /api/info`, `GET /api/connections` — and this node's answers to
//! them ([`NodeFacts`], the hub's [`Responder`]). Each asks every live
//! node through the hub's survey (one node alone answers itself); a node
//! that does not answer within a second is listed under `"missing"`.

use std::sync::Weak;

use http::{Request, Response, StatusCode};
use pushgate_core::hub::listing::{self, ChannelPage, ChannelQuery, Order};
use pushgate_core::hub::{Question, Responder, Survey};
use pushgate_core::json::push_string;
use pushgate_core::{Error, ErrorKind};
use serde_json::{json, Value};

use crate::metrics::Transport;
use crate::state::AppState;
use crate::web::{self as h, Body, RequestBody, MAX_QUERY_LEN};

/// The default page of `GET /api/channels`.
pub const DEFAULT_LIMIT: usize = 100;

/// What this node answers to surveys. Weak: the state owns the hub,
/// which holds this.
pub struct NodeFacts(pub Weak<AppState>);

impl Responder for NodeFacts {
    fn answer(&self, question: &Question) -> Value {
        let Some(state) = self.0.upgrade() else {
            return Value::Null;
        };
        match question {
            Question::Channels(q) => state.hub.channels(q).to_json(),
            Question::Info => info_here(&state),
            Question::Connections { user } => connections_here(&state, user),
        }
    }
}

fn info_here(state: &AppState) -> Value {
    let m = &state.metrics;
    let mut connections = serde_json::Map::new();
    connections.insert("total".into(), json!(m.open_total()));
    for t in Transport::ALL {
        connections.insert(t.label().into(), json!(m.open_connections(t)));
    }
    json!({
        "node": state.hub.node(),
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.started.elapsed().as_secs(),
        "connections": connections,
        "channels": state.hub.channel_count(),
        "published": m.published_total(),
        "delivered": m.delivered_total(),
    })
}

fn connections_here(state: &AppState, user: &str) -> Value {
    let node = state.hub.node();
    let list: Vec<Value> = state
        .hub
        .user_connections(&user.into())
        .into_iter()
        .filter_map(|id| Some((id, state.registry.get(id)?)))
        .map(|(id, meta)| {
            json!({
                "id": id.to_string(),
                "transport": meta.transport().label(),
                "node": node,
                "since": rfc3339(meta.since()),
                "address": meta.peer().to_string(),
            })
        })
        .collect();
    Value::Array(list)
}

/// `GET /api/channels[?pattern=P][&limit=N][&after=NAME][&order=name|busiest]`.
pub async fn channels(state: &AppState, req: &Request<RequestBody>) -> Response<Body> {
    let query = match channel_query(req.uri().query()) {
        Ok(q) => q,
        Err(e) => return h::error(&e),
    };
    let survey = match state.hub.survey(&Question::Channels(query.clone())).await {
        Ok(s) => s,
        Err(e) => return h::error(&e),
    };
    let pages = survey
        .answers
        .iter()
        .filter_map(|(_, a)| ChannelPage::from_json(a));
    let page = listing::merge(&query, pages);
    let mut out = String::from("{\"channels\":[");
    for (i, (channel, n)) in page.channels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"channel\":");
        push_string(&mut out, channel.as_str());
        out.push_str(&format!(",\"subscribers\":{n}}}"));
    }
    out.push_str("],\"next\":");
    match page.next() {
        Some(c) => push_string(&mut out, c.as_str()),
        None => out.push_str("null"),
    }
    out.push_str(&format!(",\"missing\":{}}}", json!(survey.missing)));
    h::json(StatusCode::OK, out)
}

fn channel_query(query: Option<&str>) -> Result<ChannelQuery, Error> {
    let params = params(query, &["pattern", "limit", "after", "order"])?;
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let limit = match get("limit").map(str::parse::<usize>) {
        None => DEFAULT_LIMIT,
        Some(Ok(n)) => n,
        Some(Err(_)) => usize::MAX, // refused below, with the range
    };
    let order = match get("order") {
        None | Some("name") => Order::Name,
        Some("busiest") => Order::Busiest,
        Some(_) => return Err(Error::bad_request("order must be name or busiest")),
    };
    ChannelQuery::new(get("pattern"), get("after"), limit, order)
}

/// The query's parameters, each once and each one of `allowed`.
fn params(query: Option<&str>, allowed: &[&str]) -> Result<Vec<(String, String)>, Error> {
    let query = query.unwrap_or("");
    if query.len() > MAX_QUERY_LEN {
        return Err(Error::new(
            ErrorKind::TooLarge,
            format!("query string is longer than {MAX_QUERY_LEN} bytes"),
        ));
    }
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        if !allowed.contains(&&*k) {
            let shown: String = k.chars().take(40).collect();
            return Err(Error::bad_request(format!(
                "unknown parameter {shown:?}; this endpoint takes {}",
                allowed.join(", ")
            )));
        }
        if out.iter().any(|(n, _)| *n == k) {
            return Err(Error::bad_request(format!("{k} is given twice")));
        }
        out.push((k.into_owned(), v.into_owned()));
    }
    Ok(out)
}

/// `GET /api/info`: this node, and every node of the cluster.
pub async fn info(state: &AppState) -> Response<Body> {
    let survey = match state.hub.survey(&Question::Info).await {
        Ok(s) => s,
        Err(e) => return h::error(&e),
    };
    let nodes: Vec<&Value> = answered(&survey).collect();
    let body = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "node": state.hub.node(),
        "uptime_seconds": state.started.elapsed().as_secs(),
        "nodes": nodes,
        "missing": survey.missing,
    });
    h::json(StatusCode::OK, body.to_string())
}

/// `GET /api/connections?user=U`: the user's connections on every node.
pub async fn connections(state: &AppState, req: &Request<RequestBody>) -> Response<Body> {
    let user = match params(req.uri().query(), &["user"]).and_then(|p| {
        p.into_iter()
            .next()
            .map(|(_, v)| v)
            .filter(|u| !u.is_empty())
            .ok_or_else(|| Error::bad_request("connections needs ?user=ID"))
    }) {
        Ok(u) => u,
        Err(e) => return h::error(&e),
    };
    let question = Question::Connections { user: user.clone() };
    let survey = match state.hub.survey(&question).await {
        Ok(s) => s,
        Err(e) => return h::error(&e),
    };
    let list: Vec<&Value> = answered(&survey)
        .filter_map(Value::as_array)
        .flatten()
        .collect();
    let body = json!({"user": user, "connections": list, "missing": survey.missing});
    h::json(StatusCode::OK, body.to_string())
}

/// The answers, without those of nodes that had nothing to say.
fn answered(survey: &Survey) -> impl Iterator<Item = &Value> {
    survey
        .answers
        .iter()
        .map(|(_, a)| a)
        .filter(|a| !a.is_null())
}

/// `secs` since the Unix epoch as RFC 3339 UTC (`2026-12-07T07:20:00Z`).
pub fn rfc3339(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Days to a civil date (proleptic Gregorian), by 400-year eras.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_627_999), "2026-12-07T07:19:59Z");
        assert_eq!(rfc3339(4_107_542_400), "2100-03-01T00:00:00Z");
    }

    #[test]
    fn channel_queries_are_checked() {
        let q = |s: &str| channel_query(Some(s));
        assert!(q("pattern=chat:*&limit=5&after=chat:a").is_ok());
        assert!(q("order=busiest").is_ok());
        for bad in [
            "limit=0",
            "limit=1001",
            "limit=x",
            "order=size",
            "pattern=",
            "nope=1",
            "limit=1&limit=2",
            "order=busiest&after=a",
        ] {
            assert_eq!(q(bad).unwrap_err().kind(), ErrorKind::BadRequest, "{bad}");
        }
    }
}
