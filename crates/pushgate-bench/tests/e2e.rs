//! End-to-end runs of the generator against a tiny stand-in for pushgate that
//! lives in this test: just enough of `/ws`, `/sse`, `/longpoll` and
//! `/api/publish` (plus a raw-body `/plainpub` for plain mode) to check that
//! every transport subscribes, answers pings, decodes chunked streams and
//! accounts for each delivery. It is not a reference implementation.
//!
//! Its port also speaks h2c (HTTP/2 prior knowledge; only `/sse`), and a TLS
//! front (rustls, a certificate made here) relays to it for `--tls`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use clap::Parser;
use pushgate_bench::{BenchArgs, BenchCommand, ErrorKind, Report};
use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc};

#[derive(Default)]
struct Hub {
    channels: Mutex<HashMap<String, Chan>>,
    pongs: AtomicU64,
}

struct Chan {
    tx: broadcast::Sender<Arc<str>>,
    log: Vec<Arc<str>>,
}

impl Hub {
    fn with_chan<R>(&self, name: &str, f: impl FnOnce(&mut Chan) -> R) -> R {
        let mut map = self.channels.lock().unwrap();
        let chan = map.entry(name.to_string()).or_insert_with(|| Chan {
            tx: broadcast::channel(4096).0,
            log: Vec::new(),
        });
        f(chan)
    }

    fn publish(&self, channel: &str, data: &str) -> usize {
        self.with_chan(channel, |c| {
            let offset = c.log.len() + 1;
            let json: Arc<str> = format!(
                r#"{{"type":"message","channel":"{channel}","offset":{offset},"epoch":"e","data":{data}}}"#
            )
            .into();
            c.log.push(json.clone());
            let _ = c.tx.send(json);
            offset
        })
    }
}

struct Request {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn params(&self, name: &str) -> Vec<String> {
        self.query
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

async fn read_request(sock: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Request> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        if let Ok(httparse::Status::Complete(n)) = req.parse(buf) {
            let target = req.path.unwrap().to_string();
            let (path, qs) = target.split_once('?').unwrap_or((&target, ""));
            let query = qs
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (k.to_string(), unescape(v))
                })
                .collect();
            let headers: Vec<(String, String)> = req
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            let mut r = Request {
                method: req.method.unwrap().to_string(),
                path: path.to_string(),
                query,
                headers,
                body: Vec::new(),
            };
            buf.drain(..n);
            let len: usize = r
                .header("content-length")
                .map_or(0, |v| v.trim().parse().unwrap());
            while buf.len() < len {
                if sock.read_buf(buf).await.ok()? == 0 {
                    return None;
                }
            }
            r.body = buf.drain(..len).collect();
            return Some(r);
        }
        if sock.read_buf(buf).await.ok()? == 0 {
            return None;
        }
    }
}

fn respond(status: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn ws_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    if payload.len() < 126 {
        f.push(payload.len() as u8);
    } else {
        f.push(126);
        f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    f.extend_from_slice(payload);
    f
}

/// A text message, compressed (RSV1, RFC 7692 §7.2.1) when `deflate` is
/// given and the message is not tiny.
fn message_frame(deflate: Option<&mut flate2::Compress>, msg: &[u8]) -> Vec<u8> {
    let Some(c) = deflate.filter(|_| msg.len() >= 64) else {
        return ws_frame(1, msg);
    };
    let start = c.total_in();
    let mut packed = Vec::with_capacity(msg.len() + 64);
    c.compress_vec(msg, &mut packed, flate2::FlushCompress::Sync)
        .unwrap();
    assert_eq!((c.total_in() - start) as usize, msg.len());
    assert!(packed.ends_with(&[0, 0, 0xff, 0xff]));
    packed.truncate(packed.len() - 4);
    let mut f = ws_frame(1, &packed);
    f[0] |= 0x40;
    f
}

fn chunk(data: &[u8]) -> Vec<u8> {
    let mut c = format!("{:x}\r\n", data.len()).into_bytes();
    c.extend_from_slice(data);
    c.extend_from_slice(b"\r\n");
    c
}

/// Forwards every channel's broadcast into one queue for the connection.
fn merge(hub: &Hub, channels: &[String]) -> mpsc::UnboundedReceiver<Arc<str>> {
    let (tx, rx) = mpsc::unbounded_channel();
    for ch in channels {
        let mut sub = hub.with_chan(ch, |c| c.tx.subscribe());
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Ok(m) = sub.recv().await {
                if tx.send(m).is_err() {
                    break;
                }
            }
        });
    }
    rx
}

async fn serve_ws(hub: Arc<Hub>, mut sock: TcpStream, req: Request) {
    let key = req.header("sec-websocket-key").unwrap().trim().to_string();
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let accept = STANDARD.encode(sha.finalize());
    let channels = req.params("channel");
    let mut rx = merge(&hub, &channels);
    // permessage-deflate with context takeover (pushgate never does that, so
    // this is where the generator's takeover path meets a server).
    let mut deflate = req
        .header("sec-websocket-extensions")
        .is_some_and(|v| v.contains("permessage-deflate"))
        .then(|| flate2::Compress::new(flate2::Compression::fast(), false));
    let extensions = if deflate.is_some() {
        "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover\r\n"
    } else {
        ""
    };
    let mut out = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n{extensions}\r\n"
    )
    .into_bytes();
    for ch in &channels {
        let ack = format!(r#"{{"type":"subscribed","channel":"{ch}","epoch":"e","offset":0}}"#);
        out.extend(ws_frame(1, ack.as_bytes()));
    }
    // A ping straight away: the generator must answer with a masked pong.
    out.extend(ws_frame(9, b"hb"));
    if sock.write_all(&out).await.is_err() {
        return;
    }
    let (mut rd, mut wr) = sock.into_split();
    let hub2 = hub.clone();
    let reader = tokio::spawn(async move {
        let mut buf = Vec::new();
        loop {
            if rd.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                return;
            }
            while buf.len() >= 6 {
                assert_eq!(buf[1] & 0x80, 0x80, "client frames must be masked");
                let len = usize::from(buf[1] & 0x7f);
                assert!(len < 126);
                if buf.len() < 6 + len {
                    break;
                }
                let mask = [buf[2], buf[3], buf[4], buf[5]];
                let payload: Vec<u8> = buf[6..6 + len]
                    .iter()
                    .zip(mask.iter().cycle())
                    .map(|(b, m)| b ^ m)
                    .collect();
                if buf[0] == 0x8a && payload == b"hb" {
                    hub2.pongs.fetch_add(1, Relaxed);
                }
                buf.drain(..6 + len);
            }
        }
    });
    tokio::pin!(reader);
    loop {
        tokio::select! {
            _ = &mut reader => break,
            m = rx.recv() => match m {
                Some(m) if wr.write_all(&message_frame(deflate.as_mut(), m.as_bytes())).await.is_ok() => {}
                _ => break,
            },
        }
    }
}

async fn serve_sse(hub: Arc<Hub>, mut sock: TcpStream, req: Request) {
    let channels = req.params("channel");
    let mut rx = merge(&hub, &channels);
    let mut out =
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    out.extend(chunk(b"retry: 2000\n\n"));
    for ch in &channels {
        let ev = format!(
            "event: subscribed\ndata: {{\"type\":\"subscribed\",\"channel\":\"{ch}\"}}\n\n"
        );
        out.extend(chunk(ev.as_bytes()));
    }
    out.extend(chunk(b": ping\n\n"));
    if sock.write_all(&out).await.is_err() {
        return;
    }
    let (mut rd, mut wr) = sock.into_split();
    let mut sink = [0u8; 64];
    loop {
        tokio::select! {
            // The client sends nothing more: any read result means it went away.
            _ = rd.read(&mut sink) => break,
            m = rx.recv() => {
                let Some(m) = m else { break };
                // Split each event over two chunks so lines straddle chunk boundaries.
                let ev = format!("id: x\nevent: message\ndata: {m}\n\n");
                let (a, b) = ev.as_bytes().split_at(ev.len() / 2);
                let mut out = chunk(a);
                out.extend(chunk(b));
                if wr.write_all(&out).await.is_err() {
                    break;
                }
            }
        }
    }
}

async fn serve_longpoll(hub: &Hub, req: &Request) -> Vec<u8> {
    let channel = req.params("channel").pop().unwrap();
    let timeout: u64 = req.params("timeout").pop().unwrap().parse().unwrap();
    let Some(since) = req.params("since").pop() else {
        let cursor = hub.with_chan(&channel, |c| c.log.len());
        return respond(
            "200 OK",
            &format!(r#"{{"messages":[],"cursor":"{cursor}"}}"#),
        );
    };
    let since: usize = since.parse().unwrap();
    let mut sub = hub.with_chan(&channel, |c| c.tx.subscribe());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    loop {
        let batch: Vec<Arc<str>> = hub.with_chan(&channel, |c| c.log[since..].to_vec());
        if !batch.is_empty() || tokio::time::Instant::now() >= deadline {
            let cursor = since + batch.len();
            let body = format!(
                r#"{{"messages":[{}],"cursor":"{cursor}"}}"#,
                batch.join(",")
            );
            return respond("200 OK", &body);
        }
        let _ = tokio::time::timeout_at(deadline, sub.recv()).await;
    }
}

/// The query parameters `name` of an HTTP/2 request's URI.
fn uri_params(uri: &http::Uri, name: &str) -> Vec<String> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter_map(|p| p.split_once('='))
        .filter(|(k, _)| *k == name)
        .map(|(_, v)| unescape(v))
        .collect()
}

/// HTTP/2 with prior knowledge: every stream is an SSE subscription.
async fn serve_h2(hub: Arc<Hub>, sock: TcpStream) {
    let Ok(mut conn) = h2::server::handshake(sock).await else {
        return;
    };
    while let Some(Ok((req, mut respond))) = conn.accept().await {
        let hub = hub.clone();
        tokio::spawn(async move {
            if req.uri().path() != "/sse" {
                let resp = http::Response::builder().status(404).body(()).unwrap();
                let _ = respond.send_response(resp, true);
                return;
            }
            let channels = uri_params(req.uri(), "channel");
            let mut rx = merge(&hub, &channels);
            let resp = http::Response::builder()
                .header("content-type", "text/event-stream")
                .body(())
                .unwrap();
            let Ok(mut send) = respond.send_response(resp, false) else {
                return;
            };
            let mut head = String::from("retry: 2000\n\n");
            for ch in &channels {
                head.push_str(&format!(
                    "event: subscribed\ndata: {{\"type\":\"subscribed\",\"channel\":\"{ch}\"}}\n\n"
                ));
            }
            if send.send_data(head.into(), false).is_err() {
                return;
            }
            while let Some(m) = rx.recv().await {
                // Each event over two DATA frames, so lines straddle frames.
                let ev = format!("id: x\nevent: message\ndata: {m}\n\n");
                let (a, b) = ev.split_at(ev.len() / 2);
                let a = bytes::Bytes::copy_from_slice(a.as_bytes());
                let b = bytes::Bytes::copy_from_slice(b.as_bytes());
                if send.send_data(a, false).is_err() || send.send_data(b, false).is_err() {
                    return;
                }
            }
        });
    }
}

async fn serve_conn(hub: Arc<Hub>, mut sock: TcpStream) {
    // The HTTP/2 preface starts with "PRI"; HTTP/1.1 requests with a method.
    let mut first = [0u8; 3];
    loop {
        match sock.peek(&mut first).await {
            Ok(n) if n >= 3 => break,
            Ok(0) | Err(_) => return,
            Ok(_) => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
    if &first == b"PRI" {
        return serve_h2(hub, sock).await;
    }
    let mut buf = Vec::new();
    while let Some(req) = read_request(&mut sock, &mut buf).await {
        let reply = match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/ws") => return serve_ws(hub, sock, req).await,
            ("GET", "/sse") => return serve_sse(hub, sock, req).await,
            ("GET", "/longpoll") => serve_longpoll(&hub, &req).await,
            ("POST", "/api/publish") => {
                let v: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
                let ch = v["channel"].as_str().unwrap();
                let offset = hub.publish(ch, &v["data"].to_string());
                respond(
                    "200 OK",
                    &format!(r#"{{"channel":"{ch}","epoch":"e","offset":{offset}}}"#),
                )
            }
            ("POST", "/plainpub") => {
                let ch = req.params("channel").pop().unwrap();
                hub.publish(&ch, std::str::from_utf8(&req.body).unwrap());
                respond("200 OK", "{}")
            }
            _ => respond("404 Not Found", r#"{"type":"error","code":"not_found"}"#),
        };
        if sock.write_all(&reply).await.is_err() {
            return;
        }
    }
}

async fn start_server() -> (String, Arc<Hub>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hub = Arc::new(Hub::default());
    let h = hub.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            sock.set_nodelay(true).unwrap();
            tokio::spawn(serve_conn(h.clone(), sock));
        }
    });
    (url, hub)
}

/// A TLS front relaying to the stand-in at `upstream`, offering `h2` and
/// `http/1.1`. Returns its URL's authority and the PEM file to trust.
async fn start_tls_front(upstream: &str) -> (String, std::path::PathBuf) {
    let upstream = upstream.trim_start_matches("http://").to_string();
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    static N: AtomicU64 = AtomicU64::new(0);
    let ca = std::env::temp_dir().join(format!(
        "pgb-e2e-{}-{}.pem",
        std::process::id(),
        N.fetch_add(1, Relaxed)
    ));
    std::fs::write(&ca, cert.cert.pem()).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.der().clone()], key)
    .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let authority = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(sock).await else {
                    return;
                };
                let mut plain = TcpStream::connect(upstream).await.unwrap();
                plain.set_nodelay(true).unwrap();
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (authority, ca)
}

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: BenchCommand,
}

async fn bench(args: &[&str]) -> Result<Report, pushgate_bench::BenchError> {
    let cli = Cli::try_parse_from(["bench"].into_iter().chain(args.iter().copied()).chain([
        "--quiet",
        "--timeout",
        "30",
    ]))
    .unwrap();
    pushgate_bench::run(BenchArgs {
        command: cli.command,
    })
    .await
}

fn assert_clean(report: &Report, expected: u64) {
    println!("{report}");
    let f = report.fanout.as_ref().expect("fanout section");
    assert_eq!(f.deliveries_expected, expected, "{report}");
    assert_eq!(f.deliveries_received, expected, "{report}");
    assert_eq!(f.missing, 0, "{report}");
    assert_eq!(f.duplicates, 0, "{report}");
    assert_eq!(f.out_of_order, 0, "{report}");
    assert_eq!(f.misrouted, 0, "{report}");
    assert_eq!(f.publish_errors, 0, "{report}");
    assert_eq!(f.latency_us.count, expected, "{report}");
    assert!(f.latency_us.p50 > 0.0 && f.latency_us.max >= f.latency_us.p99);
    assert!(report.errors.is_empty(), "{report}");
    assert!(!report.timed_out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_over_websocket() {
    let (url, hub) = start_server().await;
    let pid = std::process::id().to_string();
    let r = bench(&[
        "fanout",
        "--url",
        &url,
        "-c",
        "40",
        "--channels-per-conn",
        "2",
        "-m",
        "200",
        "--rate",
        "0",
        "--settle",
        "0",
        "--server-pid",
        &pid,
    ])
    .await
    .unwrap();
    // 2 channels, 40 subscribers each, 100 messages per channel.
    assert_clean(&r, 200 * 40);
    assert_eq!(r.connections.subscribed, 40);
    assert_eq!(r.connections.channels, 2);
    let server = r.server.as_ref().unwrap();
    assert!(server.rss_before > 0 && server.cpu_us_per_delivery.is_some());
    assert!(r.generator.cpu_us_per_delivery.is_some());
    assert_eq!(
        hub.pongs.load(Relaxed),
        40,
        "every connection answers the ping"
    );
    // JSON is one object with the same numbers.
    let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(v["fanout"]["deliveries_received"], 8000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_over_websocket_with_deflate() {
    let (url, _hub) = start_server().await;
    let r = bench(&[
        "fanout",
        "--url",
        &url,
        "-c",
        "20",
        "-m",
        "100",
        "--size",
        "300",
        "--rate",
        "0",
        "--settle",
        "0",
        "--ws-deflate",
    ])
    .await
    .unwrap();
    assert_clean(&r, 100 * 20);
    let d = r.ws_deflate.as_ref().expect("ws_deflate section");
    assert_eq!((d.connections, d.negotiated), (20, 20), "{r}");
    assert_eq!(d.compressed_messages, 100 * 20, "{r}");
    assert!(r
        .to_string()
        .contains("deflate negotiated on 20 of 20 connections"));
    let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(v["ws_deflate"]["negotiated"], 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_over_sse_with_distinct_channels() {
    let (url, _hub) = start_server().await;
    let r = bench(&[
        "fanout",
        "-t",
        "sse",
        "--url",
        &url,
        "-c",
        "25",
        "--distinct-channels",
        "-m",
        "300",
        "--rate",
        "2000",
        "--settle",
        "0",
        "--publishers",
        "3",
        "--threads",
        "2",
    ])
    .await
    .unwrap();
    assert_clean(&r, 300);
    assert_eq!(r.connections.channels, 25);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_over_longpoll() {
    let (url, _hub) = start_server().await;
    let r = bench(&[
        "fanout",
        "-t",
        "longpoll",
        "--url",
        &url,
        "-c",
        "10",
        "-m",
        "100",
        "--rate",
        "1000",
        "--settle",
        "0",
        "--poll-timeout",
        "5",
    ])
    .await
    .unwrap();
    assert_clean(&r, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_over_tls_on_every_transport() {
    let (url, _hub) = start_server().await;
    let (front, ca) = start_tls_front(&url).await;
    let ca = ca.to_str().unwrap();
    for (transport, host) in [
        ("ws", "localhost"),
        ("sse", "127.0.0.1"),
        ("longpoll", "localhost"),
    ] {
        let url = format!("https://{host}:{}", front.rsplit_once(':').unwrap().1);
        let r = bench(&[
            "fanout", "-t", transport, "--url", &url, "--tls-ca", ca, "-c", "10", "-m", "50",
            "--rate", "0", "--settle", "0",
        ])
        .await
        .unwrap();
        assert_clean(&r, 50 * 10);
    }
    // The certificate is checked: one that does not match the anchor fails.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let wrong = std::env::temp_dir().join(format!("pgb-e2e-{}-wrong.pem", std::process::id()));
    std::fs::write(&wrong, other.cert.pem()).unwrap();
    let err = bench(&[
        "idle",
        "--url",
        &format!("https://{front}"),
        "--tls-ca",
        wrong.to_str().unwrap(),
        "-c",
        "2",
    ])
    .await
    .unwrap_err();
    assert!(err.message().contains("certificate"), "{err}");
    // ... unless told not to be.
    let r = bench(&[
        "idle",
        "--url",
        &format!("https://{front}"),
        "--tls-insecure",
        "-c",
        "2",
    ])
    .await
    .unwrap();
    assert_eq!(r.connections.subscribed, 2);
    let _ = std::fs::remove_file(wrong);
    let _ = std::fs::remove_file(ca);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_over_http2_streams() {
    let (url, _hub) = start_server().await;
    // h2c: 30 streams over 4 connections, two channels each.
    let r = bench(&[
        "fanout",
        "-t",
        "sse",
        "--url",
        &url,
        "--h2-connections",
        "4",
        "-c",
        "30",
        "--channels-per-conn",
        "2",
        "-m",
        "100",
        "--rate",
        "0",
        "--settle",
        "0",
    ])
    .await
    .unwrap();
    assert_clean(&r, 100 * 30);
    // Over TLS, h2 by ALPN.
    let (front, ca) = start_tls_front(&url).await;
    let r = bench(&[
        "fanout",
        "-t",
        "sse",
        "--url",
        &format!("https://{front}"),
        "--tls-ca",
        ca.to_str().unwrap(),
        "--h2-connections",
        "3",
        "-c",
        "20",
        "-m",
        "50",
        "--rate",
        "0",
        "--settle",
        "0",
    ])
    .await
    .unwrap();
    assert_clean(&r, 50 * 20);
    let _ = std::fs::remove_file(ca);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_mode_matches_markers_only() {
    let (url, _hub) = start_server().await;
    let sub = format!("{}/ws?channel={{channel}}", url.replace("http://", "ws://"));
    let publish = format!("{url}/plainpub?channel={{channel}}");
    let r = bench(&[
        "fanout",
        "--sub-url",
        &sub,
        "--pub-url",
        &publish,
        "-c",
        "5",
        "--distinct-channels",
        "-m",
        "50",
        "--rate",
        "0",
        "--settle",
        "0.2",
    ])
    .await
    .unwrap();
    assert!(r.plain);
    assert_clean(&r, 50);
}

/// One run over three processes of the real binary (`--run-id`): two
/// receivers, each on its own source address, spread over two channels, and
/// a publisher; they meet through `ready`/`done` on stdout and a line each on
/// stdin, as `bench/scale-out` drives them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_run_over_several_processes() {
    use std::io::{BufRead, BufReader, Lines, Write};
    use std::process::{Child, ChildStdout, Command, Stdio};

    type Receiver = (Child, Lines<BufReader<ChildStdout>>);
    /// Reads `WORD N` from each receiver, then gives each its line.
    fn say(word: &str, receivers: &mut [Receiver]) {
        for (child, out) in receivers.iter_mut() {
            let line = out.next().unwrap().unwrap();
            assert!(line.starts_with(&format!("{word} ")), "{line}");
            writeln!(child.stdin.as_mut().unwrap()).unwrap();
        }
    }

    let (url, _hub) = start_server().await;
    let bin = env!("CARGO_BIN_EXE_pushgate-bench");
    let common = move |source: &str| {
        let mut cmd = Command::new(bin);
        cmd.args(["fanout", "--url", &url, "--source-ip", source])
            .args(["--run-id", "0badcafe", "--channels", "2", "-m", "10"])
            .args(["--json", "-q", "--timeout", "30"]);
        cmd
    };
    let reports = tokio::task::spawn_blocking(move || {
        let mut receivers: Vec<Receiver> = ["127.0.9.1", "127.0.9.2"]
            .into_iter()
            .map(|source| {
                let mut child = common(source)
                    .args(["--receive-only", "-c", "20", "--settle", "0"])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap();
                let out = BufReader::new(child.stdout.take().unwrap()).lines();
                (child, out)
            })
            .collect();
        say("ready", &mut receivers);
        let publisher = common("127.0.9.3")
            .args(["--publish-only", "--rate", "0"])
            .output()
            .unwrap();
        say("done", &mut receivers);
        let mut reports: Vec<serde_json::Value> = receivers
            .into_iter()
            .map(|(mut child, out)| {
                let last = out.map(Result::unwrap).last().unwrap();
                assert!(child.wait().unwrap().success());
                serde_json::from_str(&last).unwrap()
            })
            .collect();
        let text = String::from_utf8(publisher.stdout).unwrap();
        reports.push(serde_json::from_str(text.trim()).unwrap());
        reports
    })
    .await
    .unwrap();
    let publisher = &reports[2]["fanout"];
    assert_eq!(publisher["published"], 10);
    assert_eq!(publisher["publish_errors"], 0);
    assert_eq!(reports[2]["connections"]["requested"], 0);
    let first = publisher["first_publish_unix_ns"].as_u64().unwrap();
    for r in &reports[..2] {
        let f = &r["fanout"];
        // 10 messages over 2 channels, 10 subscribers of each per process.
        assert_eq!(f["deliveries_expected"], 100, "{r}");
        assert_eq!(f["deliveries_received"], 100, "{r}");
        assert_eq!(f["missing"], 0, "{r}");
        assert_eq!(f["run_id"], "0badcafe");
        assert_eq!(f["latency_histogram_ns"]["count"], 100, "{r}");
        // The earliest send time among the messages received is the first publish.
        assert_eq!(f["first_publish_unix_ns"].as_u64(), Some(first), "{r}");
        assert!(f["last_delivery_unix_ns"].as_u64().unwrap() > first);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_reports_memory_per_connection() {
    let (url, _hub) = start_server().await;
    let pid = std::process::id().to_string();
    let r = bench(&[
        "idle",
        "--url",
        &url,
        "-c",
        "200",
        "--settle",
        "0.1",
        "--server-pid",
        &pid,
        "--connect-concurrency",
        "16",
    ])
    .await
    .unwrap();
    println!("{r}");
    assert_eq!(r.mode, "idle");
    assert_eq!(r.connections.subscribed, 200);
    assert_eq!(r.connections.failed + r.connections.dropped, 0);
    assert!(r.fanout.is_none());
    let s = r.server.as_ref().unwrap();
    assert_eq!(s.cpu_phase, "setup");
    assert!(s.rss_after > 0);
    assert!(r.to_string().contains("per connection"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_errors() {
    // Nothing listens on this port (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = bench(&[
        "idle",
        "--url",
        &format!("http://127.0.0.1:{port}"),
        "-c",
        "3",
    ])
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connect);
    assert!(err.message().contains("refused"), "{err}");

    let (url, _hub) = start_server().await;
    let err = bench(&["idle", "--url", &format!("{url}/nope"), "-c", "2"])
        .await
        .unwrap_err();
    assert!(err.message().contains("404"), "{err}");

    let err = bench(&["idle", "--url", "http://192.168.0.1:7070"])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotLoopback);
}

/// Not a test: runs the stand-in server in its own process for manual scale
/// checks of the binary (which needs its own file-descriptor budget), e.g.
/// `PGB_MOCK_ADDR=127.0.0.1:17171 cargo test --release -p pushgate-bench --test e2e -- --ignored --nocapture serve_mock`.
/// Stops by itself after `PGB_MOCK_SECS` (default 120).
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
#[ignore]
async fn serve_mock() {
    let addr = std::env::var("PGB_MOCK_ADDR").unwrap_or_else(|_| "127.0.0.1:17171".into());
    let secs: u64 = std::env::var("PGB_MOCK_SECS").map_or(120, |s| s.parse().unwrap());
    let listener = TcpListener::bind(&addr).await.unwrap();
    println!("mock server on {addr}, pid {}", std::process::id());
    let hub = Arc::new(Hub::default());
    let accept = async {
        loop {
            match listener.accept().await {
                Ok((sock, _)) => {
                    sock.set_nodelay(true).unwrap();
                    tokio::spawn(serve_conn(hub.clone(), sock));
                }
                Err(e) => {
                    eprintln!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(secs), accept).await;
}
