//! `pushgate-bench publish` against two stand-ins that live in this test:
//! an HTTP server that keeps what `/api/publish` and `/plainpub` receive,
//! and a Redis that answers `XADD`. They check that every message is sent
//! once, to its channel, with its payload, and that failures are counted
//! and reported rather than fatal.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use clap::Parser;
use pushgate_bench::publish_load::{self, PublishArgs, PublishReport};
use pushgate_bench::{BenchError, ErrorKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What a stand-in received: channel → payloads, in arrival order.
type Received = Arc<Mutex<HashMap<String, Vec<Vec<u8>>>>>;

/// Refused by both stand-ins, to see failures counted.
const REFUSED: &str = "bench-1";

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: PublishArgs,
}

async fn publish(args: &[&str]) -> Result<PublishReport, BenchError> {
    let cli = Cli::try_parse_from(
        ["publish"]
            .into_iter()
            .chain(args.iter().copied())
            .chain(["--timeout", "30"]),
    )
    .unwrap();
    // run_blocking builds its own runtime: not on one of the test's threads.
    tokio::task::spawn_blocking(move || publish_load::run_blocking(&cli.args))
        .await
        .unwrap()
}

async fn listen(
    serve: fn(TcpStream, Received) -> tokio::task::JoinHandle<()>,
) -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let received = Received::default();
    let r = received.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            sock.set_nodelay(true).unwrap();
            serve(sock, r.clone());
        }
    });
    (addr, received)
}

/// HTTP/1.1 keep-alive: `/api/publish` takes `{"channel","data"}`,
/// `/plainpub?channel=C` the raw body; the channel `REFUSED` gets a 503.
fn serve_http(mut sock: TcpStream, received: Received) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = Vec::new();
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut req = httparse::Request::new(&mut headers);
            let Ok(httparse::Status::Complete(n)) = req.parse(&buf) else {
                if sock.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                    return;
                }
                continue;
            };
            let path = req.path.unwrap().to_string();
            let len: usize = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
                .unwrap_or(0);
            while buf.len() < n + len {
                if sock.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                    return;
                }
            }
            let body: Vec<u8> = buf.drain(..n + len).skip(n).collect();
            let (channel, data) = if path == "/api/publish" {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let data = serde_json::to_vec(&v["data"]).unwrap();
                (v["channel"].as_str().unwrap().to_string(), data)
            } else if let Some(c) = path.strip_prefix("/plainpub?channel=") {
                (c.to_string(), body)
            } else {
                (String::new(), Vec::new())
            };
            let status = match channel.as_str() {
                "" => "404 Not Found",
                REFUSED => "503 Service Unavailable",
                _ => "200 OK",
            };
            if status.starts_with("200") {
                received
                    .lock()
                    .unwrap()
                    .entry(channel)
                    .or_default()
                    .push(data);
            }
            let answer = format!("HTTP/1.1 {status}\r\nContent-Length: 2\r\n\r\n{{}}");
            if sock.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
        }
    })
}

/// Parses one RESP array of bulk strings at the start of `buf`.
fn parse_command(buf: &[u8]) -> Option<(Vec<Vec<u8>>, usize)> {
    fn line(buf: &[u8], at: usize) -> Option<(usize, usize)> {
        let end = at + buf.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
        let n = std::str::from_utf8(&buf[at + 1..end]).ok()?.parse().ok()?;
        Some((n, end + 2))
    }
    assert_eq!(buf.first(), Some(&b'*'), "a command is an array");
    let (count, mut at) = line(buf, 0)?;
    let mut args = Vec::with_capacity(count);
    for _ in 0..count {
        let (len, start) = line(buf, at)?;
        args.push(buf.get(start..start + len)?.to_vec());
        at = start + len + 2;
    }
    (buf.len() >= at).then_some((args, at))
}

/// Redis, as far as `XADD` goes: the key `REFUSED` gets an error reply.
fn serve_redis(mut sock: TcpStream, received: Received) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = Vec::new();
        loop {
            let Some((args, used)) = (!buf.is_empty()).then(|| parse_command(&buf)).flatten()
            else {
                if sock.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                    return;
                }
                continue;
            };
            buf.drain(..used);
            let words: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            let [b"XADD", key, b"MAXLEN", b"~", b"1000", b"*", b"data", value] = words[..] else {
                panic!("unexpected command {args:?}");
            };
            let key = String::from_utf8(key.to_vec()).unwrap();
            let reply: &[u8] = if key == REFUSED {
                b"-ERR refused by the stand-in\r\n"
            } else {
                received
                    .lock()
                    .unwrap()
                    .entry(key)
                    .or_default()
                    .push(value.to_vec());
                b"$15\r\n1700000000000-0\r\n"
            };
            if sock.write_all(reply).await.is_err() {
                return;
            }
        }
    })
}

/// Every payload is a JSON string of `size` bytes carrying the marker.
fn assert_payloads(received: &Received, size: usize) {
    for payloads in received.lock().unwrap().values() {
        for p in payloads {
            assert_eq!(p.len(), size);
            assert!(p.starts_with(b"\"pgb:") && p.ends_with(b"x\""));
        }
    }
}

fn counts(received: &Received) -> Vec<(String, usize)> {
    let mut v: Vec<_> = received
        .lock()
        .unwrap()
        .iter()
        .map(|(k, p)| (k.clone(), p.len()))
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_through_the_pushgate_api() {
    let (addr, received) = listen(serve_http).await;
    let r = publish(&[
        "--url",
        &format!("http://{addr}"),
        "-c",
        "4",
        "-m",
        "400",
        "--size",
        "120",
        "--channel",
        "news",
        "--channels",
        "3",
        "--server-pid",
        &std::process::id().to_string(),
    ])
    .await
    .unwrap();
    println!("{r}");
    assert_eq!((r.acked, r.errors, r.latency_us.count), (400, 0, 400));
    assert!(r.error_samples.is_empty() && !r.timed_out);
    assert!(r.acked_per_sec > 0.0 && r.latency_us.p50 > 0.0);
    assert!(r.latency_us.max >= r.latency_us.p99);
    assert_eq!(r.server.map(|s| s.pid), Some(std::process::id()));
    assert_eq!(
        counts(&received),
        [
            ("news-0".into(), 134),
            ("news-1".into(), 133),
            ("news-2".into(), 133)
        ]
    );
    assert_payloads(&received, 120);
    let json: serde_json::Value = serde_json::from_str(&r.render(true)).unwrap();
    assert_eq!(json["acked"], 400);
    assert_eq!(json["protocol"], "pushgate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_posts_and_refusals_are_counted() {
    let (addr, received) = listen(serve_http).await;
    let url = format!("http://{addr}/plainpub?channel={{channel}}");
    let r = publish(&["--pub-url", &url, "-c", "2", "-m", "60"])
        .await
        .unwrap();
    println!("{r}");
    // Two channels (one per connection), every other message to the refused one.
    assert_eq!((r.acked, r.errors), (30, 30));
    assert_eq!(r.latency_us.count, 30);
    assert_eq!(r.error_samples.len(), 1);
    assert!(r.error_samples[0].message.contains("503"), "{r}");
    assert_eq!(counts(&received), [("bench-0".into(), 30)]);
    assert_payloads(&received, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xadds_to_redis() {
    let (addr, received) = listen(serve_redis).await;
    let r = publish(&["--redis", &addr, "-c", "3", "-m", "90", "--size", "64"])
        .await
        .unwrap();
    println!("{r}");
    assert_eq!(r.protocol, "redis");
    assert_eq!((r.acked, r.errors), (60, 30));
    assert!(r.error_samples[0].message.contains("-ERR refused"), "{r}");
    assert_eq!(
        counts(&received),
        [("bench-0".into(), 30), ("bench-2".into(), 30)]
    );
    assert_payloads(&received, 64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_errors() {
    let err = publish(&["--redis", "10.1.2.3:6379"]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotLoopback);
    let err = publish(&["--url", "http://127.0.0.1:7070/?x=1"])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    // Nothing listens on this port (bound, then released): every message fails.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let r = publish(&["--url", &format!("http://127.0.0.1:{port}"), "-m", "5"])
        .await
        .unwrap();
    assert_eq!((r.acked, r.errors), (0, 5));
    assert!(r.error_samples[0].message.contains("refused"), "{r}");
}
