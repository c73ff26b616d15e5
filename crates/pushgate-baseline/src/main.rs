//! `pushgate-baseline`: the physical floor for pushgate's fan-out benchmarks.
//!
//! It does the least a push server can do and still deliver: accept
//! WebSocket (any `GET` with `Sec-WebSocket-Key`) and SSE (`GET /sse`)
//! subscribers with a minimal handshake, and on `POST /pub` build ONE frame
//! from the body — an unmasked WebSocket text frame, and one `data:` event for
//! SSE subscribers — and write those same bytes to every open socket. There
//! are no channels, no hub, no JSON, no history, no per-subscriber work and no
//! queue. `bench/compare` runs it beside pushgate so that pushgate's CPU per
//! delivery can be read as a multiple of what the kernel alone costs.
//!
//! # Design: one non-blocking `write` per socket, from the publishing task
//!
//! After the handshake a subscriber is nothing but an entry in one list: no
//! task, no read buffer, no timer. A publish walks the list on the task that
//! read the `POST` and calls `try_write` (one `write(2)`) with the shared
//! frame on each socket. That is the cheapest honest design:
//!
//! * a task per socket fed by a `broadcast` of `Bytes` would add a wake-up,
//!   a scheduler round and a refcount per socket per message, and a task per
//!   idle connection — costs pushgate has and a floor must not;
//! * writing with `write_all(...).await` in the loop would be as cheap but
//!   dishonest under load: one slow reader would stall delivery to everyone.
//!
//! The kernel takes a 100-byte frame at once unless the socket's send buffer
//! is full. Only then does that socket get a backlog (the unwritten bytes,
//! later frames appended in order) and a task that flushes it when the socket
//! is writable. A backlog past [`MAX_BACKLOG`] drops the connection, as any
//! bounded server must; the load generator reports that as loss. Sockets that
//! fail a write are removed on the next publish. Nothing is ever read from a
//! subscriber after its handshake (the load generator only sends Pong and
//! Close frames, in answer to frames this server never sends).
//!
//! A publish is answered (`204`) before the fan-out, as pushgate answers once
//! the message is queued, so the publisher's next request overlaps it.
//!
//! The runtime is tokio's current-thread scheduler: one thread, like the one
//! worker process each peer is given in `bench/compare`.
//!
//! Usage: `pushgate-baseline [--listen 127.0.0.1:7080]`

use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Longest request head read.
const MAX_HEAD: usize = 16 * 1024;
/// Largest `POST /pub` body.
const MAX_BODY: usize = 1024 * 1024;
/// Unwritten bytes a slow subscriber may hold before it is dropped.
const MAX_BACKLOG: usize = 1024 * 1024;

/// One subscriber: its socket and, only while the kernel refuses bytes, a backlog.
struct Sub {
    stream: TcpStream,
    sse: bool,
    backlog: Mutex<Vec<u8>>,
}

/// What a poisoned lock guards is still usable here (bytes and a list).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Sub {
    /// Writes `frame` or queues it behind an existing backlog. `false`: drop this subscriber.
    fn send(self: &Arc<Self>, frame: &[u8]) -> bool {
        let mut backlog = lock(&self.backlog);
        if !backlog.is_empty() {
            // A flusher is already running; keep the order by appending.
            backlog.extend_from_slice(frame);
            return backlog.len() <= MAX_BACKLOG;
        }
        let written = match self.stream.try_write(frame) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => 0,
            Err(_) => return false,
        };
        if written < frame.len() {
            backlog.extend_from_slice(&frame[written..]);
            tokio::spawn(flush(self.clone()));
        }
        true
    }
}

/// The slow path: writes a subscriber's backlog as the socket drains.
async fn flush(sub: Arc<Sub>) {
    loop {
        if sub.stream.writable().await.is_err() {
            return;
        }
        let mut backlog = lock(&sub.backlog);
        match sub.stream.try_write(&backlog) {
            Ok(n) => {
                backlog.drain(..n);
                if backlog.is_empty() {
                    *backlog = Vec::new();
                    return;
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => {
                // The next publish finds the socket broken and removes it.
                *backlog = Vec::new();
                return;
            }
        }
    }
}

#[derive(Default)]
struct State {
    subs: Mutex<Vec<Arc<Sub>>>,
}

impl State {
    /// Builds the frames once and writes them to every subscriber.
    fn publish(&self, body: &[u8]) {
        let ws = ws_text_frame(body);
        let sse = sse_event(body);
        lock(&self.subs).retain(|sub| sub.send(if sub.sse { &sse } else { &ws }));
    }

    fn add(&self, stream: TcpStream, sse: bool) {
        lock(&self.subs).push(Arc::new(Sub {
            stream,
            sse,
            backlog: Mutex::new(Vec::new()),
        }));
    }
}

/// An unmasked, final text frame (RFC 6455 §5.2) carrying `payload`.
fn ws_text_frame(payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = Vec::with_capacity(len + 10);
    f.push(0x81);
    if len < 126 {
        f.push(len as u8);
    } else if len <= usize::from(u16::MAX) {
        f.push(126);
        f.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        f.push(127);
        f.extend_from_slice(&(len as u64).to_be_bytes());
    }
    f.extend_from_slice(payload);
    f
}

/// One SSE event whose data is `payload` (each line its own `data:` field).
fn sse_event(payload: &[u8]) -> Vec<u8> {
    let mut e = Vec::with_capacity(payload.len() + 16);
    for line in payload.split(|&b| b == b'\n') {
        e.extend_from_slice(b"data: ");
        e.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
        e.push(b'\n');
    }
    e.push(b'\n');
    e
}

fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(GUID.as_bytes());
    STANDARD.encode(sha.finalize())
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, msg.to_string())
}

/// The parts of a request head this server looks at.
struct Head<'a> {
    method: &'a str,
    path: &'a str,
    content_length: usize,
    ws_key: Option<&'a str>,
}

fn parse_head(head: &str) -> io::Result<Head<'_>> {
    let mut lines = head.split("\r\n");
    let mut request = lines.next().unwrap_or("").split(' ');
    let method = request.next().unwrap_or("");
    let target = request.next().ok_or_else(|| bad("no request target"))?;
    let mut h = Head {
        method,
        path: target.split('?').next().unwrap_or(target),
        content_length: 0,
        ws_key: None,
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            h.content_length = value.parse().map_err(|_| bad("bad Content-Length"))?;
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            h.ws_key = Some(value);
        }
    }
    Ok(h)
}

/// Serves one connection: requests until it becomes a subscriber or ends.
async fn serve(mut stream: TcpStream, state: Arc<State>) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(1024);
    loop {
        let head_end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            if buf.len() > MAX_HEAD {
                return Err(bad("request head too long"));
            }
            if stream.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        };
        let text = std::str::from_utf8(&buf[..head_end]).map_err(|_| bad("non-UTF-8 head"))?;
        let head = parse_head(text)?;
        match (head.method, head.path, head.ws_key) {
            ("GET", _, Some(key)) => {
                let response = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                     Connection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                    accept_key(key)
                );
                stream.write_all(response.as_bytes()).await?;
                state.add(stream, false);
                return Ok(());
            }
            ("GET", "/sse", None) => {
                stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
                          Cache-Control: no-cache\r\nConnection: close\r\n\r\n",
                    )
                    .await?;
                state.add(stream, true);
                return Ok(());
            }
            ("POST", "/pub", None) => {
                if head.content_length > MAX_BODY {
                    return Err(bad("body too large"));
                }
                let end = head_end + head.content_length;
                while buf.len() < end {
                    if stream.read_buf(&mut buf).await? == 0 {
                        return Ok(());
                    }
                }
                // Answer first, as a push server answers once the message is
                // accepted: the publisher's next request overlaps this fan-out.
                stream.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await?;
                state.publish(&buf[head_end..end]);
                buf.drain(..end);
            }
            ("GET", "/healthz", None) => {
                buf.drain(..head_end);
                stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
                    .await?;
            }
            _ => {
                stream
                    .write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    )
                    .await?;
                return Ok(());
            }
        }
    }
}

fn parse_args() -> Result<SocketAddr, String> {
    let mut listen = "127.0.0.1:7080".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().ok_or("--listen needs an address")?,
            "-h" | "--help" => {
                return Err("usage: pushgate-baseline [--listen 127.0.0.1:7080]\n\
                     WebSocket: any GET with Sec-WebSocket-Key; SSE: GET /sse;\n\
                     POST /pub writes the body as one frame to every subscriber"
                    .into())
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    listen
        .parse()
        .map_err(|e| format!("--listen {listen:?}: {e}"))
}

fn main() -> std::process::ExitCode {
    let addr = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            return std::process::ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pushgate-baseline: runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result: io::Result<()> = rt.block_on(async move {
        // tokio's `TcpListener::bind` listens with a backlog of 128: a burst of
        // handshakes from the load generator would overflow it (SYNs dropped,
        // retried after 1 s). 4096 is the kernel's usual `somaxconn`.
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(4096)?;
        eprintln!("pushgate-baseline listening on {addr}");
        let state = Arc::new(State::default());
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(serve(stream, state.clone()));
                }
                // Out of descriptors: wait for some to close rather than exit.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    });
    if let Err(e) = result {
        eprintln!("pushgate-baseline: {e}");
        return std::process::ExitCode::FAILURE;
    }
    std::process::ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_events() {
        assert_eq!(ws_text_frame(b"hi"), b"\x81\x02hi");
        let f = ws_text_frame(&[b'x'; 300]);
        assert_eq!(&f[..4], &[0x81, 126, 1, 44]);
        assert_eq!(f.len(), 304);
        assert_eq!(ws_text_frame(&[0; 70_000])[1], 127);
        assert_eq!(sse_event(b"a\nb"), b"data: a\ndata: b\n\n");
        // RFC 6455 §1.3.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn heads() {
        let h =
            parse_head("POST /pub?id=x HTTP/1.1\r\ncontent-length: 12\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!((h.method, h.path, h.content_length), ("POST", "/pub", 12));
        let h = parse_head("GET /ws?channel=c HTTP/1.1\r\nSec-WebSocket-Key: k==\r\n\r\n").unwrap();
        assert_eq!(h.ws_key, Some("k=="));
        assert!(parse_head("GET\r\n\r\n").is_err());
    }
}
