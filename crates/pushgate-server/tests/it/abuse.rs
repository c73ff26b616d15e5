//! Abuse from the network: connection limits (in total, per address, before
//! a WebSocket upgrade), oversized and slow request heads (slowloris) on
//! HTTP/1.1 and HTTP/2, HTTP/2's own floods (rapid reset, CONTINUATION,
//! too many streams, SETTINGS), and a TLS handshake that never comes. Each
//! refusal is the documented one and counted in `/metrics`; a well-behaved
//! client is served throughout.

use std::net::SocketAddr;
use std::time::Duration;

use pushgate_server::metrics::{Limit, Protocol};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::common::*;
use crate::tls::{start_tls, TestCert};

/// A well-behaved subscriber: it must keep receiving while others misbehave.
async fn bystander(server: &TestServer, channel: &str) -> Ws {
    let mut ws = server.ws(&format!("/ws?channel={channel}")).await;
    let sub = ws.next_json().await;
    assert_subscribed(&sub, channel);
    ws
}

/// Publishes through the hub (an HTTP publish would count against the
/// limits under test) and checks that `ws` receives it.
async fn still_served(server: &TestServer, ws: &mut Ws, channel: &str) {
    let published = server
        .state
        .hub
        .publish(
            pushgate_core::ChannelName::new(channel).unwrap(),
            None,
            pushgate_core::Data::json(r#""still here""#).unwrap(),
        )
        .await
        .unwrap();
    let msg = ws.next_json().await;
    assert_message(&msg, channel, published.offset);
}

/// Reads until the server closes; what it sent.
async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    within("the server to close the connection", async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    out
}

async fn connect_from(source: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::from((source, 0)))
        .expect("a loopback source address");
    within("a connect", socket.connect(addr)).await.unwrap()
}

#[tokio::test]
async fn connections_over_the_total_limit_get_a_503_before_any_work() {
    let server = start_with(|c| c.max_connections = 3).await;
    let mut ws = bystander(&server, "t").await;
    let a = TcpStream::connect(server.addr).await.unwrap();
    let _b = TcpStream::connect(server.addr).await.unwrap();
    wait_until("three connections held", || {
        server.state.metrics.open_http_connections(Protocol::Http1) == 3
    })
    .await;
    // Over the limit: answered at once, without sending a request.
    let mut over = TcpStream::connect(server.addr).await.unwrap();
    let answer = String::from_utf8(until_closed(&mut over).await).unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.contains(r#""code":"too_many_connections""#),
        "{answer}"
    );
    assert!(answer.contains("retry-after: 1"), "{answer}");
    assert_eq!(server.state.metrics.limited_count(Limit::Connections), 1);
    // A place freed is a place taken.
    drop(a);
    wait_until("a place freed", || {
        server.state.metrics.open_http_connections(Protocol::Http1) == 2
    })
    .await;
    let mut again = RawHttp::connect(server.addr, None).await;
    again.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(again.read_head().await.starts_with("HTTP/1.1 200"));
    still_served(&server, &mut ws, "t").await;
}

#[tokio::test]
async fn connections_over_the_per_address_limit_get_a_429_even_a_websocket() {
    let server = start_with(|c| c.max_connections_per_ip = 2).await;
    let mut ws = bystander(&server, "p").await;
    let _held = connect_from([127, 0, 0, 1], server.addr).await;
    wait_until("two connections from 127.0.0.1", || {
        server.state.metrics.open_http_connections(Protocol::Http1) == 2
    })
    .await;
    // A WebSocket handshake from the same address: refused before the upgrade.
    let mut third = connect_from([127, 0, 0, 1], server.addr).await;
    third
        .write_all(
            b"GET /ws?channel=p HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .unwrap();
    let answer = String::from_utf8(until_closed(&mut third).await).unwrap();
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(!answer.contains("101"), "{answer}");
    assert_eq!(
        server.state.metrics.limited_count(Limit::ConnectionsPerIp),
        1
    );
    // Another address is not affected.
    let mut other = connect_from([127, 0, 0, 2], server.addr).await;
    other
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = String::from_utf8(until_closed(&mut other).await).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    still_served(&server, &mut ws, "p").await;
    let metrics = server.state.metrics.render();
    assert_eq!(
        metric(
            &metrics,
            r#"pushgate_limited_total{limit="connections_per_ip"}"#
        ),
        Some(1),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_oversized_head_gets_a_431() {
    let server = start_with(|c| c.max_head_size = 2048).await;
    let mut http = RawHttp::connect(server.addr, None).await;
    let big = "a".repeat(4096);
    http.send(&format!(
        "GET /sse?channel=x HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n"
    ))
    .await;
    let head = http.read_head().await;
    assert!(head.starts_with("HTTP/1.1 431"), "{head}");
    assert_eq!(server.state.metrics.limited_count(Limit::HeadSize), 1);
}

#[tokio::test]
async fn slow_heads_are_cut_off_and_others_are_served_meanwhile() {
    let server = start_with(|c| c.head_timeout = Duration::from_millis(500)).await;
    let mut ws = bystander(&server, "s").await;
    // Slowloris: many connections, each with a head that never ends.
    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        s.write_all(b"GET /sse?channel=s HTTP/1.1\r\nHost: x\r\nX-A: ")
            .await
            .unwrap();
        slow.push(s);
    }
    still_served(&server, &mut ws, "s").await;
    for s in &mut slow {
        until_closed(s).await;
    }
    assert_eq!(server.state.metrics.limited_count(Limit::HeadTimeout), 20);
    still_served(&server, &mut ws, "s").await;
}

#[tokio::test]
async fn a_tls_handshake_that_never_comes_is_cut_off() {
    let cert = TestCert::new("handshake-timeout");
    let server = start_tls(&cert, |c| {
        c.tls_handshake_timeout = Duration::from_millis(300);
    })
    .await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    until_closed(&mut silent).await;
    assert_eq!(server.state.metrics.limited_count(Limit::TlsHandshake), 1);
}

// ---------------------------------------------------------------------------
// HTTP/2 spoken by hand (h2c), to misbehave as a client library never would.

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A GET of `path` in HPACK without Huffman or the dynamic table:
/// `:method GET`, `:scheme http` (static indexes), `:path` (literal).
fn get(path: &str) -> Vec<u8> {
    let mut out = vec![0x82, 0x86, 0x04, path.len() as u8];
    out.extend_from_slice(path.as_bytes());
    out
}

/// A raw HTTP/2 connection: the preface and an empty SETTINGS sent.
async fn raw_h2(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[]));
    s.write_all(&hello).await.unwrap();
    s
}

/// Reads frames until the server closes or `stop` says so; the frames.
async fn frames_until(
    s: &mut TcpStream,
    mut stop: impl FnMut(u8, u32, &[u8]) -> bool,
) -> Vec<(u8, u32, Vec<u8>)> {
    let mut got = Vec::new();
    let mut buf = Vec::new();
    within("HTTP/2 frames", async {
        let mut chunk = [0u8; 16384];
        loop {
            while buf.len() >= 9 {
                let len = (buf[0] as usize) << 16 | (buf[1] as usize) << 8 | buf[2] as usize;
                if buf.len() < 9 + len {
                    break;
                }
                let kind = buf[3];
                let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
                let payload = buf[9..9 + len].to_vec();
                buf.drain(..9 + len);
                let done = stop(kind, stream, &payload);
                got.push((kind, stream, payload));
                if done {
                    return;
                }
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    got
}

/// The error code of the GOAWAY among `frames`.
fn goaway(frames: &[(u8, u32, Vec<u8>)]) -> Option<u32> {
    frames
        .iter()
        .find(|(k, _, _)| *k == GOAWAY)
        .map(|(_, _, p)| u32::from_be_bytes([p[4], p[5], p[6], p[7]]))
}

const ENHANCE_YOUR_CALM: u32 = 0xb;
const REFUSED_STREAM: u32 = 0x7;

#[tokio::test]
async fn http2_rapid_reset_gets_a_goaway() {
    let server = start().await;
    let mut ws = bystander(&server, "r").await;
    let mut s = raw_h2(server.addr).await;
    // CVE-2023-44487: open and reset streams as fast as possible.
    let mut flood = Vec::new();
    for i in 0..1000u32 {
        let id = 2 * i + 1;
        flood.extend(frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            id,
            &get("/healthz"),
        ));
        flood.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes()));
    }
    let _ = s.write_all(&flood).await;
    let frames = frames_until(&mut s, |k, _, _| k == GOAWAY).await;
    assert_eq!(goaway(&frames), Some(ENHANCE_YOUR_CALM), "{frames:?}");
    still_served(&server, &mut ws, "r").await;
    wait_until("the flood counted", || {
        server.state.metrics.limited_count(Limit::Http2Abuse) == 1
    })
    .await;
}

#[tokio::test]
async fn http2_continuation_flood_gets_a_goaway() {
    let server = start().await;
    let mut ws = bystander(&server, "c").await;
    let mut s = raw_h2(server.addr).await;
    let mut flood = frame(HEADERS, 0, 1, &get("/healthz"));
    for _ in 0..10_000 {
        // A literal header without indexing, new name "x", value "y".
        flood.extend(frame(CONTINUATION, 0, 1, &[0x00, 0x01, b'x', 0x01, b'y']));
    }
    let _ = s.write_all(&flood).await;
    let frames = frames_until(&mut s, |k, _, _| k == GOAWAY).await;
    assert_eq!(goaway(&frames), Some(ENHANCE_YOUR_CALM), "{frames:?}");
    still_served(&server, &mut ws, "c").await;
}

#[tokio::test]
async fn http2_streams_beyond_the_limit_are_refused() {
    let server = start_with(|c| c.http2_max_streams = 2).await;
    let mut s = raw_h2(server.addr).await;
    let mut open = Vec::new();
    for id in [1u32, 3, 5] {
        open.extend(frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            id,
            &get("/sse?channel=n"),
        ));
    }
    s.write_all(&open).await.unwrap();
    let frames = frames_until(&mut s, |k, id, _| k == RST_STREAM && id == 5).await;
    let (_, _, code) = frames
        .iter()
        .find(|(k, id, _)| *k == RST_STREAM && *id == 5)
        .expect("the third stream is reset");
    assert_eq!(
        u32::from_be_bytes(code[..4].try_into().unwrap()),
        REFUSED_STREAM
    );
    // The two within the limit stream on.
    wait_until("two subscribers", || server.subscribers("n") == 2).await;
}

#[tokio::test]
async fn an_http2_settings_flood_that_never_reads_is_dropped() {
    let server = start_with(|c| c.head_timeout = Duration::from_millis(500)).await;
    let mut ws = bystander(&server, "f").await;
    let mut s = raw_h2(server.addr).await;
    // Every SETTINGS asks for an ACK; this client never reads them.
    let flood: Vec<u8> = (0..20_000)
        .flat_map(|_| frame(SETTINGS, 0, 0, &[]))
        .collect();
    let writer = tokio::spawn(async move {
        let _ = s.write_all(&flood).await;
        s
    });
    still_served(&server, &mut ws, "f").await;
    let mut s = within("the flood's writes to end", writer).await.unwrap();
    until_closed(&mut s).await;
    still_served(&server, &mut ws, "f").await;
}

#[tokio::test]
async fn an_http2_head_that_never_ends_is_cut_off() {
    let server = start_with(|c| c.head_timeout = Duration::from_millis(500)).await;
    let mut s = raw_h2(server.addr).await;
    // HEADERS without END_HEADERS, and then nothing.
    s.write_all(&frame(HEADERS, 0, 1, &get("/sse?channel=h")))
        .await
        .unwrap();
    until_closed(&mut s).await;
}
