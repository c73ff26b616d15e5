//! Publishing over a few keep-alive HTTP connections.
//!
//! Each channel is pinned to one publisher connection, which waits for each
//! response before the next request. So messages of one channel reach the
//! server in `seq` order, and any reordering a subscriber sees is the
//! server's doing, not ours.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

use tokio::time::Instant;

use crate::error::{BenchError, ErrorKind};
use crate::http::HttpConn;
use crate::marker;
use crate::stats::Shared;
use crate::target::{percent_encode, Target};
use crate::tls::TlsClient;

/// Responses to a publish are small; a larger one means something is off.
const MAX_RESPONSE: usize = 1024 * 1024;

#[derive(Debug, Clone)]
pub struct PublishPlan {
    /// pushgate: `/api/publish`; plain: the `--pub-url`, possibly with `{channel}`.
    pub target: Target,
    /// pushgate wraps the payload as `{"channel":…,"data":…}`; plain posts it as is.
    pub plain: bool,
    pub publishers: usize,
    /// Messages per second over all publishers; 0 means as fast as responses come.
    pub rate: f64,
    pub size: usize,
    /// `--tls`: publishes go over TLS too (the server's port speaks only TLS).
    pub tls: Option<TlsClient>,
    /// The address publishing sockets bind to (`--source-ip`); none: the kernel's choice.
    pub source: Option<IpAddr>,
}

/// Publishes every `seq` whose channel belongs to publisher `index`.
pub async fn run_publisher(
    index: usize,
    plan: Arc<PublishPlan>,
    shared: Arc<Shared>,
    start: Instant,
    deadline: Instant,
    stop: Arc<AtomicBool>,
) {
    let layout = &shared.layout;
    let mut conn: Option<HttpConn> = None;
    let mut request = Vec::with_capacity(plan.size + 512);
    for seq in 0..shared.messages {
        let channel = layout.channel_of_seq(seq);
        if channel % plan.publishers != index {
            continue;
        }
        if plan.rate > 0.0 {
            let due = start + std::time::Duration::from_secs_f64(seq as f64 / plan.rate);
            if due > Instant::now() {
                tokio::time::sleep_until(due.min(deadline)).await;
            }
        }
        if stop.load(Relaxed) || Instant::now() >= deadline {
            break;
        }
        shared.published.fetch_add(1, Relaxed);
        let name = layout.channel_name(channel);
        match publish_one(&mut conn, &plan, &shared, &mut request, seq, &name).await {
            Ok(()) => {
                shared.published_ok[seq as usize].store(true, Relaxed);
                shared.accepted.fetch_add(1, Relaxed);
            }
            Err(e) => {
                shared.publish_errors.fetch_add(1, Relaxed);
                shared.record_error(&BenchError::new(
                    e.kind(),
                    format!("publish: {}", e.message()),
                ));
                conn = None;
            }
        }
    }
}

async fn publish_one(
    conn: &mut Option<HttpConn>,
    plan: &PublishPlan,
    shared: &Shared,
    request: &mut Vec<u8>,
    seq: u64,
    channel: &str,
) -> Result<(), BenchError> {
    if conn.is_none() {
        let c = HttpConn::connect(plan.tls.as_ref(), plan.target.addr, plan.source).await?;
        *conn = Some(c);
    }
    let Some(c) = conn.as_mut() else {
        unreachable!("connected above")
    };
    let sent_ns = marker::unix_nanos();
    build_request(request, plan, shared.run_id, seq, sent_ns, channel);
    shared.first_publish_ns.fetch_min(sent_ns, Relaxed);
    c.send(request).await?;
    let resp = c.read_response(MAX_RESPONSE).await?;
    if !resp.head.keep_alive {
        *conn = None;
    }
    if !(200..300).contains(&resp.head.status) {
        let body = &resp.body[..resp.body.len().min(200)];
        return Err(BenchError::new(
            ErrorKind::Http,
            format!(
                "answered {}: {}",
                resp.head.status_line(),
                String::from_utf8_lossy(body)
            ),
        ));
    }
    Ok(())
}

/// Writes the whole HTTP request for one message into `out`.
pub fn build_request(
    out: &mut Vec<u8>,
    plan: &PublishPlan,
    run: u32,
    seq: u64,
    sent_ns: u64,
    channel: &str,
) {
    use std::io::Write as _;
    let mut body = Vec::with_capacity(plan.size + channel.len() + 32);
    let path = if plan.plain {
        marker::write_payload(&mut body, run, seq, sent_ns, plan.size);
        let mut encoded = String::new();
        percent_encode(channel, &mut encoded);
        plan.target.path_and_query.replace("{channel}", &encoded)
    } else {
        body.extend_from_slice(b"{\"channel\":");
        // Writing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut body, channel);
        body.extend_from_slice(b",\"data\":");
        marker::write_payload(&mut body, run, seq, sent_ns, plan.size);
        body.push(b'}');
        plan.target.path_and_query.clone()
    };
    out.clear();
    let _ = write!(
        out,
        "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        plan.target.authority,
        body.len()
    );
    out.extend_from_slice(&body);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::parse_loopback_url;

    fn plan(url: &str, plain: bool) -> PublishPlan {
        PublishPlan {
            target: parse_loopback_url(url).unwrap(),
            plain,
            publishers: 1,
            rate: 0.0,
            size: 60,
            tls: None,
            source: None,
        }
    }

    #[test]
    fn pushgate_request() {
        let mut out = Vec::new();
        build_request(
            &mut out,
            &plan("http://127.0.0.1:7070/api/publish", false),
            1,
            2,
            3,
            "bench-1",
        );
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("POST /api/publish HTTP/1.1\r\nHost: 127.0.0.1:7070\r\n"));
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["channel"], "bench-1");
        assert!(v["data"]
            .as_str()
            .unwrap()
            .starts_with("pgb:00000001:2:3:x"));
        assert_eq!(serde_json::to_string(&v["data"]).unwrap().len(), 60);
    }

    #[test]
    fn plain_request_substitutes_channel() {
        let mut out = Vec::new();
        build_request(
            &mut out,
            &plan("http://localhost:80/pub?id={channel}", true),
            1,
            2,
            3,
            "a+b",
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("POST /pub?id=a%2Bb HTTP/1.1\r\nHost: localhost:80\r\n"));
        let (_, body) = text.split_once("\r\n\r\n").unwrap();
        assert_eq!(body.len(), 60);
        assert!(body.starts_with("\"pgb:00000001:2:3:xxx"));
        assert!(body.ends_with("xx\""));
    }
}
