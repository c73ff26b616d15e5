//! Shared helpers of the integration tests: a real server on an ephemeral
//! port, a WebSocket client, a raw WebSocket client that never answers, raw
//! HTTP/1.1 over one TCP connection, an incremental SSE reader, NDJSON and
//! hidden-iframe stream readers, `/poll`/`/longpoll` bodies, and the publish API.
//!
//! Every wait is bounded by [`STEP`] and fails with a message naming what
//! was awaited, so a broken server fails a test instead of hanging it.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{SinkExt, StreamExt};
use pushgate_core::{ChannelName, Log, MemoryLog};
use pushgate_server::metrics::Transport;
use pushgate_server::AppState;
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
    /// The plain-HTTP redirect listener's address, when configured.
    pub redirect: Option<SocketAddr>,
    pub state: Arc<AppState>,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    run: Option<tokio::task::JoinHandle<Result<(), pushgate_server::Error>>>,
}

/// Starts a server with the test defaults (ephemeral port, no demo).
pub async fn start() -> TestServer {
    start_with(|_| {}).await
}

/// Starts a server after `configure` adjusted the test defaults.
pub async fn start_with(configure: impl FnOnce(&mut Config)) -> TestServer {
    start_wrapped(configure, |memory| memory).await
}

/// The same with the server's log built by `wrap` around the memory log,
/// to watch what the log and fan-out do.
pub async fn start_wrapped(
    configure: impl FnOnce(&mut Config),
    wrap: impl FnOnce(Arc<MemoryLog>) -> Arc<dyn Log>,
) -> TestServer {
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        demo: false,
        ..Default::default()
    };
    configure(&mut config);
    // `Server::bind` would build this same log from the config.
    let log = Arc::new(MemoryLog::new(config.memory_log()));
    let server = Server::with_log(config, wrap(log))
        .await
        .expect("the server binds");
    run(server)
}

/// Starts a server as `pushgate serve` does (`Server::bind`: the durable
/// store with `data_dir`), after `configure` adjusted the test defaults.
pub async fn start_bound(configure: impl FnOnce(&mut Config)) -> TestServer {
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        demo: false,
        ..Default::default()
    };
    configure(&mut config);
    run(Server::bind(config).await.expect("the server binds"))
}

/// A node of a cluster sharing `redis` (under `prefix`), listening on
/// `ip` (each node its own loopback address).
pub async fn start_node(redis: &impl BrokerUrl, prefix: &str, ip: &str) -> TestServer {
    start_node_with(redis, prefix, ip, |_| {}).await
}

/// [`start_node`], after `configure` adjusted the config.
pub async fn start_node_with(
    redis: &impl BrokerUrl,
    prefix: &str,
    ip: &str,
    configure: impl FnOnce(&mut Config),
) -> TestServer {
    let mut config = Config {
        listen: format!("{ip}:0").parse().unwrap(),
        demo: false,
        broker_url: Some(redis.url()),
        broker_prefix: prefix.to_owned(),
        ..Default::default()
    };
    configure(&mut config);
    run(Server::bind(config).await.expect("the node binds"))
}

fn run(server: Server) -> TestServer {
    let addr = server.local_addr();
    let redirect = server.redirect_addr();
    let state = server.state();
    let (stop, stopped) = oneshot::channel::<()>();
    let run = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("an HTTP client");
    TestServer {
        addr,
        redirect,
        state,
        http,
        stop: Some(stop),
        run: Some(run),
    }
}

impl TestServer {
    /// Sends the shutdown signal (as SIGTERM would) without waiting.
    pub fn signal_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Waits for `Server::run` to return after a shutdown signal.
    pub async fn stopped(&mut self) {
        let run = self.run.take().expect("the server is running");
        within("the server to stop", run)
            .await
            .expect("the server task does not panic")
            .expect("the server stops cleanly");
    }

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
        let body = self.open_stream_request(req, "text/event-stream").await;
        Sse {
            headers: body.headers.clone(),
            body,
            parser: SseParser::default(),
        }
    }

    /// Open connections of transport `t` (pending requests for long-poll),
    /// as counted by the server's metrics.
    pub fn open(&self, t: Transport) -> i64 {
        self.state.metrics.open_connections(t)
    }

    /// Subscribers the hub has on `channel`, over every transport.
    pub fn subscribers(&self, channel: &str) -> usize {
        self.state
            .hub
            .subscriber_count(&ChannelName::new(channel).expect("a valid channel name"))
    }

    /// `GET /metrics`, checked to be the Prometheus text format.
    pub async fn metrics_text(&self) -> String {
        let res = self.get("/metrics").await;
        assert_eq!(res.status(), 200);
        assert!(res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
        within("the metrics body", res.text()).await.unwrap()
    }

    /// `GET {path}` on `/poll` or `/longpoll`; asserts a 200 poll body.
    pub async fn poll(&self, path: &str) -> Polled {
        let (status, body) = self.json_response(self.http.get(self.url(path))).await;
        assert_eq!(status, 200, "GET {path} answered {body}");
        Polled::from_json(body)
    }

    /// `POST /command` with `body`; returns status and the reply frame.
    pub async fn command(&self, body: impl Into<reqwest::Body>) -> (u16, Value) {
        self.json_response(self.http.post(self.url("/command")).body(body))
            .await
    }

    /// Opens a streaming `GET {path}`; asserts 200 and `content_type`.
    pub async fn open_stream(&self, path: &str, content_type: &str) -> BodyStream {
        self.open_stream_request(self.http.get(self.url(path)), content_type)
            .await
    }

    /// The same for a request built by the caller (extra headers).
    pub async fn open_stream_request(
        &self,
        req: reqwest::RequestBuilder,
        content_type: &str,
    ) -> BodyStream {
        let res = within("a streaming response head", req.send())
            .await
            .expect("the streaming request is answered");
        let status = res.status().as_u16();
        let url = res.url().to_string();
        if status != 200 {
            let body = within("an error body", res.text())
                .await
                .unwrap_or_default();
            panic!("GET {url} answered {status}: {body}");
        }
        let got = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        assert_eq!(got, content_type, "Content-Type of {url}");
        BodyStream {
            headers: res.headers().clone(),
            body: res.bytes_stream().boxed(),
            buf: Vec::new(),
        }
    }

    /// Opens `GET /stream?{query}` (NDJSON).
    pub async fn ndjson(&self, query: &str) -> Ndjson {
        Ndjson(
            self.open_stream(&format!("/stream?{query}"), "application/x-ndjson")
                .await,
        )
    }

    /// Opens `GET /iframe?{query}&callback={callback}`.
    pub async fn iframe(&self, query: &str, callback: &str) -> Iframe {
        let body = self
            .open_stream(
                &format!("/iframe?{query}&callback={callback}"),
                "text/html; charset=utf-8",
            )
            .await;
        Iframe {
            body,
            callback: callback.to_owned(),
            seen: 0,
        }
    }
}

/// The value of one series in a Prometheus text exposition.
pub fn metric(text: &str, series: &str) -> Option<i64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// The sum of every series of the family `name`, whatever their labels;
/// `None` when it has none.
pub fn metric_sum(text: &str, name: &str) -> Option<i64> {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let value = match rest.strip_prefix('{') {
                Some(labelled) => labelled.split_once("} ")?.1,
                None => rest.strip_prefix(' ')?,
            };
            value.parse::<i64>().ok()
        })
        .reduce(|a, b| a + b)
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

/// The one-channel cursor standing right after message `v` (built from its
/// `channel`, `epoch` and `offset`, as a client library does).
pub fn cursor_after(v: &Value) -> String {
    let field = |k: &str| {
        v[k].as_str()
            .unwrap_or_else(|| panic!("no {k} in {v}"))
            .to_owned()
    };
    let offset = v["offset"]
        .as_u64()
        .unwrap_or_else(|| panic!("no offset in {v}"));
    cursor(&[(&field("channel"), &field("epoch"), offset)])
}

/// A `/poll` or `/longpoll` body.
#[derive(Debug)]
pub struct Polled {
    pub messages: Vec<Value>,
    pub cursor: String,
}

impl Polled {
    /// Checks the shape `{"messages":[…],"cursor":"…"}`.
    pub fn from_json(v: Value) -> Polled {
        let messages = v["messages"]
            .as_array()
            .unwrap_or_else(|| panic!("no messages array in {v}"))
            .clone();
        let cursor = v["cursor"]
            .as_str()
            .unwrap_or_else(|| panic!("no cursor string in {v}"))
            .to_owned();
        Polled { messages, cursor }
    }

    /// (channel, offset) of every entry that is a message.
    pub fn positions(&self) -> Vec<(String, u64)> {
        self.messages
            .iter()
            .map(|m| {
                assert_eq!(m["type"], "message", "{m}");
                (
                    m["channel"].as_str().unwrap().to_owned(),
                    m["offset"].as_u64().unwrap(),
                )
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------
// WebSocket client

/// The heartbeat object of `/ws`, NDJSON and the iframe.
pub const HEARTBEAT: &str = r#"{"type":"ping"}"#;

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
    /// answers Pings while reading) and the `{"type":"ping"}` heartbeat.
    /// Fails on a close, an error or EOF.
    pub async fn next_data(&mut self) -> Message {
        loop {
            match self.next_raw().await {
                Some(Ok(Message::Text(t))) if t.as_str() == HEARTBEAT => continue,
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
pub const OP_TEXT: u8 = 0x1;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;

/// Connects and completes the handshake for `path`. With `recv_buffer`, the
/// socket's receive buffer is made that small before connecting.
pub async fn raw_ws(addr: SocketAddr, path: &str, recv_buffer: Option<u32>) -> RawWs {
    raw_ws_with(addr, path, recv_buffer, "").await.0
}

/// Like [`raw_ws`], with extra header lines (each ending in `\r\n`);
/// returns the 101's head too.
pub async fn raw_ws_with(
    addr: SocketAddr,
    path: &str,
    recv_buffer: Option<u32>,
    extra_headers: &str,
) -> (RawWs, String) {
    let (stream, head, buf) = raw_request(
        addr,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra_headers}\r\n"
        ),
        recv_buffer,
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 101"), "no upgrade: {head}");
    assert!(
        head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "wrong Sec-WebSocket-Accept: {head}"
    );
    (RawWs { stream, buf }, head)
}

/// Sends `request` on a new connection (with a small receive buffer when
/// asked) and reads the response head. Returns the stream, the head, and the
/// body bytes that arrived with it.
pub async fn raw_request(
    addr: SocketAddr,
    request: &str,
    recv_buffer: Option<u32>,
) -> (TcpStream, String, Vec<u8>) {
    let mut http = RawHttp::connect(addr, recv_buffer).await;
    http.send(request).await;
    let head = http.read_head().await;
    (http.stream, head, http.buf)
}

/// HTTP/1.1 spoken by hand over one TCP connection: to reuse it for several
/// requests, or to close it in the middle of one.
pub struct RawHttp {
    pub stream: TcpStream,
    /// Bytes read and not yet consumed.
    pub buf: Vec<u8>,
}

/// A complete response read by [`RawHttp`].
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

impl RawHttp {
    /// Connects, with a small receive buffer when asked.
    pub async fn connect(addr: SocketAddr, recv_buffer: Option<u32>) -> RawHttp {
        let socket = TcpSocket::new_v4().expect("a socket");
        if let Some(size) = recv_buffer {
            socket
                .set_recv_buffer_size(size)
                .expect("SO_RCVBUF can be set");
        }
        let stream = within("a TCP connect", socket.connect(addr))
            .await
            .expect("the server accepts");
        RawHttp {
            stream,
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, request: &str) {
        within("a request write", self.stream.write_all(request.as_bytes()))
            .await
            .expect("the request is written");
    }

    /// Writes `GET {path}` for this connection's server, keeping it open.
    pub async fn send_get(&mut self, path: &str) {
        let host = self.stream.peer_addr().expect("a connected socket");
        self.send(&format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n"))
            .await
    }

    /// Reads more bytes into `buf`; fails at EOF.
    async fn fill(&mut self, what: &str) {
        let mut chunk = [0u8; 4096];
        let n = self
            .stream
            .read(&mut chunk)
            .await
            .expect("the response is read");
        assert!(n > 0, "the server closed the connection before {what}");
        self.buf.extend_from_slice(&chunk[..n]);
    }

    /// Reads a response head and removes it from `buf`.
    pub async fn read_head(&mut self) -> String {
        let head_end = within("a response head", async {
            loop {
                if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    return i + 4;
                }
                self.fill("a response head").await;
            }
        })
        .await;
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.buf.drain(..head_end);
        head
    }

    /// Reads one complete response, whose body has a `Content-Length`.
    pub async fn read_response(&mut self) -> RawResponse {
        let head = self.read_head().await;
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {head}"));
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .unwrap_or_else(|| panic!("no Content-Length in {head}"));
        within("a response body", async {
            while self.buf.len() < len {
                self.fill("the end of a response body").await;
            }
        })
        .await;
        let body = self.buf.drain(..len).collect();
        RawResponse { status, head, body }
    }

    /// `GET {path}` on this connection, and its response.
    pub async fn get(&mut self, path: &str) -> RawResponse {
        self.send_get(path).await;
        self.read_response().await
    }

    /// Waits for the server to close the connection, with nothing more sent.
    pub async fn expect_closed(&mut self) {
        assert!(self.buf.is_empty(), "unread bytes: {:?}", self.buf);
        let mut chunk = [0u8; 1024];
        let n = within("the server to close", self.stream.read(&mut chunk))
            .await
            .unwrap_or(0);
        assert_eq!(
            n,
            0,
            "more bytes: {:?}",
            String::from_utf8_lossy(&chunk[..n])
        );
    }
}

impl RawWs {
    /// Reads one server frame as (opcode, payload); `None` at EOF or reset.
    pub async fn read_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        let (first, payload) = self.read_raw_frame().await?;
        Some((first & 0x0f, payload))
    }

    /// Reads one server frame as (first byte: FIN, RSV bits, opcode; payload).
    pub async fn read_raw_frame(&mut self) -> Option<(u8, Vec<u8>)> {
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
    let opcode = buf[0];
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
    body: BodyStream,
    parser: SseParser,
}

impl Sse {
    /// The next item; `None` when the server ended the stream.
    pub async fn next_item(&mut self) -> Option<SseItem> {
        loop {
            if let Some(item) = self.parser.next_item() {
                return Some(item);
            }
            match self.body.next_chunk().await {
                Some(chunk) => self.parser.feed(&chunk),
                None => return None,
            }
        }
    }

    /// The next dispatched event, skipping comments, `retry:`, id-only
    /// blocks and `ping` heartbeats.
    pub async fn next_event(&mut self) -> SseEvent {
        loop {
            match self.next_item().await {
                Some(SseItem::Event(e)) if e.event == "ping" => continue,
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

// ---------------------------------------------------------------------------
// Streaming response bodies: NDJSON (`/stream`) and the hidden iframe

/// The body of a streaming response, read chunk by chunk.
pub struct BodyStream {
    pub headers: reqwest::header::HeaderMap,
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    /// Bytes read and not yet consumed (by [`BodyStream::next_line`]).
    pub buf: Vec<u8>,
}

impl BodyStream {
    /// The next chunk as the server sent it; `None` when the body ended.
    pub async fn next_chunk(&mut self) -> Option<Bytes> {
        match within("a body chunk", self.body.next()).await {
            Some(Ok(chunk)) => Some(chunk),
            Some(Err(_)) | None => None,
        }
    }

    /// Appends the next chunk to `buf`; fails when the body ended.
    pub async fn fill(&mut self) {
        match self.next_chunk().await {
            Some(chunk) => self.buf.extend_from_slice(&chunk),
            None => panic!(
                "the stream ended; unconsumed: {}",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    /// The next `\n`-terminated line, without the `\n`.
    pub async fn next_line(&mut self) -> String {
        loop {
            if let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=nl).collect();
                line.pop();
                return String::from_utf8(line).expect("lines are UTF-8");
            }
            self.fill().await;
        }
    }
}

/// `GET /stream`: one JSON object per line.
pub struct Ndjson(pub BodyStream);

impl Ndjson {
    /// The next line, which must be one JSON object (keep-alive pings included).
    pub async fn next_line_json(&mut self) -> Value {
        let line = self.0.next_line().await;
        let v: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("NDJSON line is not JSON ({e}): {line:?}"));
        assert!(v.is_object(), "NDJSON line is not an object: {line}");
        v
    }

    /// The next object that is not a `ping`.
    pub async fn next_json(&mut self) -> Value {
        loop {
            let v = self.next_line_json().await;
            if v["type"] != "ping" {
                return v;
            }
        }
    }

    pub async fn expect_subscribed(&mut self, channel: &str) -> Value {
        let v = self.next_json().await;
        assert_subscribed(&v, channel);
        v
    }

    /// Reads messages `offsets` of `channel`, in order; returns them whole.
    pub async fn expect_messages(
        &mut self,
        channel: &str,
        offsets: std::ops::RangeInclusive<u64>,
    ) -> Vec<Value> {
        let mut out = Vec::new();
        for offset in offsets {
            let v = self.next_json().await;
            assert_message(&v, channel, offset);
            out.push(v);
        }
        out
    }
}

/// `GET /iframe`: an HTML document that grows by one `<script>` per event.
pub struct Iframe {
    pub body: BodyStream,
    pub callback: String,
    /// Calls already returned by [`Iframe::next_calls`].
    seen: usize,
}

/// The closing tag the server writes after every call.
const SCRIPT_END: &[u8] = b"</script>";

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

impl Iframe {
    /// Everything received so far.
    pub fn document(&self) -> String {
        String::from_utf8(self.body.buf.clone()).expect("the document is UTF-8")
    }

    /// The document up to its last complete `</script>` (a chunk may end
    /// in the middle of one).
    pub fn complete_document(&self) -> String {
        let mut text = self.document();
        let end = text.rfind("</script>").map_or(0, |i| i + SCRIPT_END.len());
        text.truncate(end);
        text
    }

    /// Reads until `n` more `</script>` tags than already returned arrived,
    /// parses the document, and returns the JSON argument of each new call.
    pub async fn next_calls(&mut self, n: usize) -> Vec<Value> {
        let want = self.seen + n;
        while count(&self.body.buf, SCRIPT_END) < want {
            self.body.fill().await;
        }
        let text = self.complete_document();
        let calls = script_calls(&text, &self.callback);
        assert!(
            calls.len() >= want,
            "{} scripts for {} closing tags in {text}",
            calls.len(),
            count(text.as_bytes(), SCRIPT_END)
        );
        let new = calls[self.seen..want].to_vec();
        self.seen = want;
        new
    }

    /// The next call that is not a heartbeat.
    pub async fn next_call(&mut self) -> Value {
        loop {
            let v = self.next_calls(1).await.remove(0);
            if v["type"] != "ping" {
                return v;
            }
        }
    }

    pub async fn expect_subscribed(&mut self, channel: &str) -> Value {
        let v = self.next_call().await;
        assert_subscribed(&v, channel);
        v
    }

    /// Reads messages `offsets` of `channel`, in order; returns them whole.
    pub async fn expect_messages(
        &mut self,
        channel: &str,
        offsets: std::ops::RangeInclusive<u64>,
    ) -> Vec<Value> {
        let n = offsets.clone().count();
        let calls = self.next_calls(n).await;
        for (v, offset) in calls.iter().zip(offsets) {
            assert_message(v, channel, offset);
        }
        calls
    }
}

/// Parses `html` as a browser would and returns the text of every `<script>`.
pub fn script_texts(html: &str) -> Vec<String> {
    let doc = scraper::Html::parse_document(html);
    let selector = scraper::Selector::parse("script").expect("a valid selector");
    doc.select(&selector)
        .map(|el| el.text().collect())
        .collect()
}

/// The argument of every `<script>` of `html`, each of which must be
/// exactly `parent.CALLBACK(<json>);`.
pub fn script_calls(html: &str, callback: &str) -> Vec<Value> {
    let prefix = format!("parent.{callback}(");
    script_texts(html)
        .iter()
        .map(|code| {
            let arg = code
                .strip_prefix(&prefix)
                .and_then(|rest| rest.strip_suffix(");"))
                .unwrap_or_else(|| panic!("script is not a {prefix}…); call: {code:?}"));
            serde_json::from_str(arg)
                .unwrap_or_else(|e| panic!("the argument is not JSON ({e}): {arg:?}"))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Redis (shared with the real-binary tests of crates/pushgate)

#[path = "../support/redis.rs"]
mod redis_server;
pub use redis_server::{installed, BrokerUrl, Redis, RedisCluster};
