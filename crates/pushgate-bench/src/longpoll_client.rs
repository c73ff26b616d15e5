//! Long-polling: `GET /longpoll?channel=…&since=CURSOR&timeout=S` over one
//! keep-alive connection, re-issued with the cursor each response returns;
//! and, in plain mode, the `Last-Modified`/`Etag` long-poll of nchan and
//! similar servers.

use std::borrow::Cow;
use std::net::IpAddr;

use serde::Deserialize;

use crate::error::{BenchError, ErrorKind};
use crate::http::HttpConn;
use crate::marker;
use crate::stats::Subscriber;
use crate::target::{percent_encode, Target};
use crate::tls::TlsClient;

/// A long-poll batch may hold many messages; anything beyond this is a fault.
const MAX_BODY: usize = 64 * 1024 * 1024;

#[derive(Deserialize)]
struct PollBody<'a> {
    #[serde(borrow)]
    cursor: Cow<'a, str>,
}

/// Extracts `cursor` from `{"messages":[…],"cursor":"…"}`.
pub fn parse_cursor(body: &[u8]) -> Result<String, BenchError> {
    serde_json::from_slice::<PollBody<'_>>(body)
        .map(|b| b.cursor.into_owned())
        .map_err(|e| BenchError::protocol(format!("long-poll response without a cursor: {e}")))
}

/// The request line's target for one poll. `endpoint` is the path plus the
/// channel query (`/longpoll?channel=a`).
pub fn poll_path(endpoint: &str, timeout_secs: u64, since: Option<&str>) -> String {
    let mut path = format!("{endpoint}&timeout={timeout_secs}");
    if let Some(cursor) = since {
        path.push_str("&since=");
        percent_encode(cursor, &mut path);
    }
    path
}

/// Polls until the connection fails. The first poll has no `since` and asks
/// for `timeout=0`, so it returns at once with the current cursor whether the
/// server holds cursor-less polls (pushgate does: "live from now") or not;
/// its answer is the subscribed moment.
pub async fn run(
    tls: Option<&TlsClient>,
    target: &Target,
    source: Option<IpAddr>,
    sub: &mut Subscriber,
    timeout_secs: u64,
) -> Result<(), BenchError> {
    let mut conn = connect(tls, target, source).await?;
    sub.connected();
    let mut cursor: Option<String> = None;
    loop {
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\n\r\n",
            poll_path(
                &target.path_and_query,
                if cursor.is_some() { timeout_secs } else { 0 },
                cursor.as_deref()
            ),
            target.authority
        );
        conn.send(request.as_bytes()).await?;
        drop(request);
        let resp = conn.read_response(MAX_BODY).await?;
        let now = marker::unix_nanos();
        if resp.head.status != 200 {
            let snippet =
                String::from_utf8_lossy(&resp.body[..resp.body.len().min(200)]).into_owned();
            return Err(BenchError::new(
                ErrorKind::Http,
                format!("long-poll answered {}: {snippet}", resp.head.status_line()),
            ));
        }
        sub.on_batch(&resp.body, now);
        cursor = Some(parse_cursor(&resp.body)?);
        sub.mark_subscribed();
        if !resp.head.keep_alive {
            conn = connect(tls, target, source).await?;
        }
    }
}

/// The request for one plain long-poll: the previous answer's `Last-Modified`
/// and `Etag` go back as `If-Modified-Since` and `If-None-Match`. `Accept`
/// must not be `text/event-stream`, which servers like nchan answer with a stream.
pub fn plain_poll_request(target: &Target, last_modified: &str, etag: &str) -> String {
    let mut request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: */*\r\n",
        target.path_and_query, target.authority
    );
    if !last_modified.is_empty() {
        request.push_str(&format!("If-Modified-Since: {last_modified}\r\n"));
    }
    if !etag.is_empty() {
        request.push_str(&format!("If-None-Match: {etag}\r\n"));
    }
    request.push_str("\r\n");
    request
}

/// Plain mode: polls the `--sub-url` until the connection fails. `200`
/// answers carry one message or a batch (e.g. nchan's multipart/mixed),
/// searched for markers; `304` and `408` mean "nothing yet, ask again". A
/// connection counts as subscribed once its first poll is sent: such servers
/// do not say when they have registered a waiting request (`--settle` is the
/// margin for that).
pub async fn run_plain(
    tls: Option<&TlsClient>,
    target: &Target,
    source: Option<IpAddr>,
    sub: &mut Subscriber,
) -> Result<(), BenchError> {
    let mut conn = connect(tls, target, source).await?;
    sub.connected();
    let (mut last_modified, mut etag) = (String::new(), String::new());
    loop {
        let request = plain_poll_request(target, &last_modified, &etag);
        conn.send(request.as_bytes()).await?;
        drop(request);
        sub.mark_subscribed();
        let resp = conn.read_response(MAX_BODY).await?;
        match resp.head.status {
            200 => {
                sub.on_batch(&resp.body, marker::unix_nanos());
                last_modified = resp.head.last_modified.unwrap_or_default();
                etag = resp.head.etag.unwrap_or_default();
            }
            304 | 408 => {}
            _ => {
                let snippet =
                    String::from_utf8_lossy(&resp.body[..resp.body.len().min(200)]).into_owned();
                return Err(BenchError::new(
                    ErrorKind::Http,
                    format!("long-poll answered {}: {snippet}", resp.head.status_line()),
                ));
            }
        }
        if !resp.head.keep_alive {
            conn = connect(tls, target, source).await?;
        }
    }
}

/// One keep-alive connection to the target (again after the server closed one).
async fn connect(
    tls: Option<&TlsClient>,
    target: &Target,
    source: Option<IpAddr>,
) -> Result<HttpConn, BenchError> {
    HttpConn::connect(tls, target.addr, source).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::parse_loopback_url;

    #[test]
    fn plain_requests_send_validators_back() {
        let t = parse_loopback_url("http://127.0.0.1:80/sub?id=a").unwrap();
        let first = plain_poll_request(&t, "", "");
        assert_eq!(
            first,
            "GET /sub?id=a HTTP/1.1\r\nHost: 127.0.0.1:80\r\nAccept: */*\r\n\r\n"
        );
        let next = plain_poll_request(&t, "Sun, 22 Nov 2026 20:38:45 GMT", "3");
        assert!(next.contains("\r\nIf-Modified-Since: Sun, 22 Nov 2026 20:38:45 GMT\r\n"));
        assert!(next.ends_with("\r\nIf-None-Match: 3\r\n\r\n"));
    }

    #[test]
    fn cursor_and_paths() {
        let body = br#"{"messages":[{"type":"message","data":"pgb:x"}],"cursor":"YQ.e.3~Yg.f.1"}"#;
        assert_eq!(parse_cursor(body).unwrap(), "YQ.e.3~Yg.f.1");
        assert!(parse_cursor(br#"{"messages":[]}"#).is_err());
        assert_eq!(
            poll_path("/longpoll?channel=a", 25, None),
            "/longpoll?channel=a&timeout=25"
        );
        assert_eq!(
            poll_path("/longpoll?channel=a", 5, Some("YQ.e.3~x+y")),
            "/longpoll?channel=a&timeout=5&since=YQ.e.3~x%2By"
        );
    }
}
