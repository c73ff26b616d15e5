//! Shared helpers of the integration tests: a real server on an ephemeral
//! port, a WebSocket client, a raw WebSocket client that never answers, an
//! incremental SSE reader, and the publish API.
//!
//! Every wait is bounded by [`STEP`] and fails with a message naming what
//! was awaited, so a broken server fails a test instead of hanging it.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{SinkExt, StreamExt};
use pushgate_server::state::AppState;
use pushgate_server::{Config, Server};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The longest any single awaited step may take. Generous, because the suite
/// runs tests in parallel on a 2-core machine; a healthy step takes milliseconds.
pub const STEP: Duration = Duration::from_secs(15);

/// Awaits `fut` for at most [`STEP`], failing the test with `what` otherwise.
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {STEP:?} waiting for {what}"),
    }
}

/// Polls `cond` every 10 ms until it holds, failing after [`STEP`]. Only for
/// state that announces no event to await (counters in `metrics`).
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    within(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

// ---------------------------------------------------------------------------
// The server

/// A running server; it stops (its accept loop ends) when this is dropped,
/// and the test's runtime ends its connections.
pub struct TestServer {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    pub http: reqwest::Client,
    _stop: oneshot::Sender<()>,
}

/// Starts a server with the test defaults (ephemeral port, no demo).
pub async fn start() -> TestServer {
    start_with(|_| {}).await
}

/// Starts a server after `configure` adjusted the test defaults.
pub async fn start_with(configure: impl FnOnce(&mut Config)) -> TestServer {
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        demo: false,
        ..Default::default()
    };
    configure(&mut config);
    let server = Server::bind(config).await.expect("the server binds");
    let addr = server.local_addr();
    let state = server.state();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("an HTTP client");
    TestServer {
        addr,
        state,
        http,
        _stop: stop,
    }
}

impl TestServer {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        within(&format!("GET {path}"), self.http.get(self.url(path)).send())
            .await
            .unwrap_or_else(|e| panic!("GET {path} failed: {e}"))
    }

    /// Sends a request built from this server's client and returns status and JSON body.
    pub async fn json_response(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let res = within("an HTTP response", req.send())
            .await
            .unwrap_or_else(|e| panic!("HTTP request failed: {e}"));
        let status = res.status().as_u16();
        let body = within("an HTTP body", res.bytes())
            .await
            .expect("the body is read");
        let json = serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!(
                "status {status}: body is not JSON ({e}): {}",
                String::from_utf8_lossy(&body)
            )
        });
        (status, json)
    }

    /// `POST /api/publish` with `{"channel","data"}`; asserts 200 and returns the reply.
    pub async fn publish(&self, channel: &str, data: Value) -> Value {
        self.publish_body(json!({"channel": channel, "data": data}))
            .await
    }

    /// `POST /api/publish` with a named event.
    pub async fn publish_event(&self, channel: &str, event: &str, data: Value) -> Value {
        self.publish_body(json!({"channel": channel, "event": event, "data": data}))
            .await
    }

    async fn publish_body(&self, body: Value) -> Value {
        let req = self.http.post(self.url("/api/publish")).json(&body);
        let (status, reply) = self.json_response(req).await;
        assert_eq!(status, 200, "publish {body} answered {reply}");
        assert_eq!(reply["channel"], body["channel"], "{reply}");
        reply
    }

    /// Binary publish: raw bytes with `Content-Type: application/octet-stream`.
    pub async fn publish_binary(&self, channel: &str, bytes: &[u8]) -> Value {
        let req = self
            .http
            .post(self.url(&format!("/api/publish?channel={channel}")))
            .header("content-type", "application/octet-stream")
            .body(bytes.to_vec());
        let (status, reply) = self.json_response(req).await;
        assert_eq!(status, 200, "binary publish answered {reply}");
        reply
    }

    /// Publishes `count` messages `{"n": i}` on `channel`; returns the epoch.
    pub async fn publish_n(&self, channel: &str, count: u64) -> String {
        let mut epoch = String::new();
        for n in 1..=count {
            let reply = self.publish(channel, json!({ "n": n })).await;
            epoch = reply["epoch"].as_str().expect("an epoch").to_owned();
        }
        epoch
    }

    /// A WebSocket handshake request sent with plain HTTP, to see refusals
    /// that a WebSocket client would only report as "handshake failed".
    pub fn ws_upgrade_request(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(self.url(path))
            .header("upgrade", "websocket")
            .header("connection", "Upgrade")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
    }

    /// Opens a WebSocket at `path` (e.g. `/ws?channel=a`).
    pub async fn ws(&self, path: &str) -> Ws {
        let url = self.ws_url(path);
        let (inner, res) = within(
            &format!("the WebSocket handshake of {url}"),
            tokio_tungstenite::connect_async_with_config(&url, None, true),
        )
        .await
        .unwrap_or_else(|e| panic!("WebSocket connect to {url} failed: {e}"));
        assert_eq!(res.status().as_u16(), 101);
        Ws { inner }
    }

    /// Opens `GET /sse?{query}`; asserts a 200 event stream.
    pub async fn sse(&self, query: &str) -> Sse {
        self.sse_with_last_event_id(query, None).await
    }

    /// The same with a `Last-Event-ID` header, as a browser sends on reconnect.
    pub async fn sse_with_last_event_id(&self, query: &str, last_event_id: Option<&str>) -> Sse {
        let mut req = self.http.get(self.url(&format!("/sse?{query}")));
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let res = within("the SSE response head", req.send())
            .await
            .expect("the SSE request is answered");
        let status = res.status().as_u16();
        if status != 200 {
            let body = res.text().await.unwrap_or_default();
            panic!("GET /sse?{query} answered {status}: {body}");
        }
        let content_type = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        assert_eq!(content_type, "text/event-stream");
        Sse {
            headers: res.headers().clone(),
            body: res.bytes_stream().boxed(),
            parser: SseParser::default(),
        }
    }

    /// Open WebSocket connections, as counted by the server's metrics.
    pub fn open_ws(&self) -> i64 {
        use pushgate_server::metrics::Transport;
        self.state.metrics.open_connections(Transport::Ws)
    }
}

// ---------------------------------------------------------------------------
// Message assertions

/// Asserts that `v` is the message of `channel` at `offset`; returns its `data`.
pub fn assert_message<'a>(v: &'a Value, channel: &str, offset: u64) -> &'a Value {
    assert_eq!(v["type"], "message", "expected a message, got {v}");
    assert_eq!(
        (v["channel"].as_str(), v["offset"].as_u64()),
        (Some(channel), Some(offset)),
        "expected message {channel}#{offset}, got {v}"
    );
    assert!(v["epoch"].is_string(), "a message carries its epoch: {v}");
    &v["data"]
}

/// Asserts that `v` is the `subscribed` reply for `channel`.
pub fn assert_subscribed(v: &Value, channel: &str) {
    assert_eq!(v["type"], "subscribed", "expected subscribed, got {v}");
    assert_eq!(v["channel"], channel, "{v}");
    assert!(v["epoch"].is_string(), "subscribed carries the epoch: {v}");
    assert!(v["offset"].is_u64(), "subscribed carries the offset: {v}");
}

/// The cursor text for one channel position, built with the core's codec.
pub fn cursor(entries: &[(&str, &str, u64)]) -> String {
    use pushgate_core::{ChannelName, Cursor, Epoch, Position};
    let mut c = Cursor::new();
    for (channel, epoch, offset) in entries {
        c.set(
            ChannelName::new(channel).unwrap(),
            Position::new(Epoch::new(epoch).unwrap(), *offset),
        );
    }
    c.encode()
}

// ---------------------------------------------------------------------------
// WebSocket client

pub type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct Ws {
    pub inner: WsStream,
}

impl Ws {
    pub async fn send(&mut self, msg: Message) {
        within("a WebSocket send", self.inner.send(msg))
            .await
            .expect("the WebSocket frame is sent");
    }

    pub async fn send_text(&mut self, text: &str) {
        self.send(Message::text(text)).await
    }

    pub async fn send_json(&mut self, v: &Value) {
        self.send_text(&v.to_string()).await
    }

    /// The next frame of any kind (Ping and Pong included); `None` at EOF.
    pub async fn next_raw(
        &mut self,
    ) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>> {
        within("a WebSocket frame", self.inner.next()).await
    }

    /// The next Text or Binary frame, skipping Ping and Pong (tungstenite
    /// answers Pings while reading). Fails on a close, an error or EOF.
    pub async fn next_data(&mut self) -> Message {
        loop {
            match self.next_raw().await {
                Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => return m,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a data frame, got {other:?}"),
            }
        }
    }

    /// The next Text frame as JSON.
    pub async fn next_json(&mut self) -> Value {
        match self.next_data().await {
            Message::Text(t) => serde_json::from_str(t.as_str())
                .unwrap_or_else(|e| panic!("frame is not JSON ({e}): {}", t.as_str())),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// Sends a command and returns the next JSON frame (its reply, as long as
    /// no message is in flight on this connection).
    pub async fn command(&mut self, cmd: Value) -> Value {
        self.send_json(&cmd).await;
        self.next_json().await
    }

    /// Sends a text frame and returns the next JSON frame.
    pub async fn command_text(&mut self, text: &str) -> Value {
        self.send_text(text).await;
        self.next_json().await
    }

    /// Subscribes by command; asserts and returns the `subscribed` reply.
    pub async fn subscribe(&mut self, channel: &str) -> Value {
        let reply = self
            .command(json!({"type": "subscribe", "channel": channel}))
            .await;
        assert_subscribed(&reply, channel);
        reply
    }

    /// Reads messages `offsets` of `channel`, in order; returns their data.
    pub async fn expect_messages(
        &mut self,
        channel: &str,
        offsets: std::ops::RangeInclusive<u64>,
    ) -> Vec<Value> {
        let mut out = Vec::new();
        for offset in offsets {
            let v = self.next_json().await;
            out.push(assert_message(&v, channel, offset).clone());
        }
        out
    }

    /// Reads until the server closes; returns the close code, or `None` when
    /// the connection ended without a close frame.
    pub async fn expect_close(&mut self) -> Option<u16> {
        loop {
            match self.next_raw().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(other)) => panic!("expected the connection to close, got {other:?}"),
                Some(Err(_)) | None => return None,
            }
        }
    }
}

// ---------------------------------------------------------------------------
// A raw WebSocket client: hand-written handshake, never writes after it,
// so it never answers a Ping (tokio-tungstenite would).

pub struct RawWs {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

/// Frame opcodes the raw client tells apart.
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;

/// Connects and completes the handshake for `path`. With `recv_buffer`, the
/// socket's receive buffer is made that small before connecting.
pub async fn raw_ws(addr: SocketAddr, path: &str, recv_buffer: Option<u32>) -> RawWs {
    let (stream, head, buf) = raw_request(
        addr,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ),
        recv_buffer,
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 101"), "no upgrade: {head}");
    assert!(
        head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "wrong Sec-WebSocket-Accept: {head}"
    );
    RawWs { stream, buf }
}

/// Sends `request` on a new connection (with a small receive buffer when
/// asked) and reads the response head. Returns the stream, the head, and the
/// body bytes that arrived with it.
pub async fn raw_request(
    addr: SocketAddr,
    request: &str,
    recv_buffer: Option<u32>,
) -> (TcpStream, String, Vec<u8>) {
    let socket = TcpSocket::new_v4().expect("a socket");
    if let Some(size) = recv_buffer {
        socket
            .set_recv_buffer_size(size)
            .expect("SO_RCVBUF can be set");
    }
    let mut stream = within("a TCP connect", socket.connect(addr))
        .await
        .expect("the server accepts");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let head_end = within("a response head", async {
        loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                return i + 4;
            }
            let mut chunk = [0u8; 1024];
            let n = stream.read(&mut chunk).await.expect("the response is read");
            assert!(n > 0, "the server closed before a response head");
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    buf.drain(..head_end);
    (stream, head, buf)
}

impl RawWs {
    /// Reads one server frame as (opcode, payload); `None` at EOF or reset.
    pub async fn read_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if let Some((frame, used)) = parse_server_frame(&self.buf) {
                self.buf.drain(..used);
                return Some(frame);
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

/// Parses one unmasked frame at the start of `buf`.
fn parse_server_frame(buf: &[u8]) -> Option<((u8, Vec<u8>), usize)> {
    if buf.len() < 2 {
        return None;
    }
    let opcode = buf[0] & 0x0f;
    assert_eq!(buf[1] & 0x80, 0, "server frames are never masked");
    let (len, mut at) = match buf[1] & 0x7f {
        126 => (
            u16::from_be_bytes(buf.get(2..4)?.try_into().unwrap()) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(buf.get(2..10)?.try_into().unwrap()) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    let payload = buf.get(at..at + len)?.to_vec();
    at += len;
    Some(((opcode, payload), at))
}

// ---------------------------------------------------------------------------
// Server-Sent Events

/// One dispatched event.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    /// The `id:` field of this event, if it had one.
    pub id: Option<String>,
    /// The event type (`message` when no `event:` field was given).
    pub event: String,
    pub data: String,
}

impl SseEvent {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("SSE data is not JSON ({e}): {}", self.data))
    }
}

/// What an SSE stream yields, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum SseItem {
    Event(SseEvent),
    /// A block with an `id:` and no data: sets the last event id only.
    IdOnly(String),
    /// A `retry:` field.
    Retry(u64),
    /// A `: comment` line (keep-alive).
    Comment(String),
}

/// An incremental parser of `text/event-stream` (WHATWG HTML §9.2.6), fed
/// arbitrary chunks. It tracks the last event id as a browser does.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    id: Option<String>,
    event: Option<String>,
    data: Option<String>,
    items: VecDeque<SseItem>,
    /// What `EventSource` would send as `Last-Event-ID` now.
    pub last_event_id: String,
}

impl SseParser {
    pub fn feed(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
        while let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = self.buf.drain(..=nl).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8(line).expect("SSE lines are UTF-8");
            self.line(&line);
        }
    }

    fn line(&mut self, line: &str) {
        if line.is_empty() {
            return self.dispatch();
        }
        if let Some(comment) = line.strip_prefix(':') {
            self.items
                .push_back(SseItem::Comment(comment.trim_start().to_owned()));
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "id" => self.id = Some(value.to_owned()),
            "event" => self.event = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            "retry" => {
                if let Ok(ms) = value.parse() {
                    self.items.push_back(SseItem::Retry(ms));
                }
            }
            _ => {}
        }
    }

    fn dispatch(&mut self) {
        let id = self.id.take();
        if let Some(id) = &id {
            self.last_event_id = id.clone();
        }
        let event = self.event.take();
        match self.data.take() {
            Some(data) => self.items.push_back(SseItem::Event(SseEvent {
                id,
                event: event.unwrap_or_else(|| "message".to_owned()),
                data,
            })),
            None => {
                if let Some(id) = id {
                    self.items.push_back(SseItem::IdOnly(id));
                }
            }
        }
    }

    pub fn next_item(&mut self) -> Option<SseItem> {
        self.items.pop_front()
    }
}

pub struct Sse {
    pub headers: reqwest::header::HeaderMap,
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    parser: SseParser,
}

impl Sse {
    /// The next item; `None` when the server ended the stream.
    pub async fn next_item(&mut self) -> Option<SseItem> {
        loop {
            if let Some(item) = self.parser.next_item() {
                return Some(item);
            }
            match within("an SSE chunk", self.body.next()).await {
                Some(Ok(chunk)) => self.parser.feed(&chunk),
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// The next dispatched event, skipping comments, `retry:` and id-only blocks.
    pub async fn next_event(&mut self) -> SseEvent {
        loop {
            match self.next_item().await {
                Some(SseItem::Event(e)) => return e,
                Some(_) => continue,
                None => panic!("the SSE stream ended while an event was expected"),
            }
        }
    }

    /// The next event, which must be `subscribed` for `channel`.
    pub async fn expect_subscribed(&mut self, channel: &str) -> Value {
        let e = self.next_event().await;
        assert_eq!(e.event, "subscribed", "{e:?}");
        let v = e.json();
        assert_subscribed(&v, channel);
        v
    }

    /// The next event, which must be message `offset` of `channel`; returns it.
    pub async fn expect_message(&mut self, channel: &str, offset: u64) -> SseEvent {
        let e = self.next_event().await;
        assert_eq!(e.event, "message", "{e:?}");
        assert_message(&e.json(), channel, offset);
        assert!(e.id.is_some(), "every message has an id: {e:?}");
        e
    }

    /// Reads messages `offsets` of `channel`, in order.
    pub async fn expect_messages(&mut self, channel: &str, offsets: std::ops::RangeInclusive<u64>) {
        for offset in offsets {
            self.expect_message(channel, offset).await;
        }
    }

    /// What a browser would send as `Last-Event-ID` after what was read so far.
    pub fn last_event_id(&self) -> &str {
        &self.parser.last_event_id
    }
}
