//! SSE over HTTP/2 (`--h2-connections N`): the subscribers' streams
//! multiplexed over N connections, as a browser's tabs share one connection
//! per origin. Subscriber `i` uses connection `i % N`, which the first of
//! its subscribers opens: over TLS with ALPN `h2`, or with prior knowledge
//! (h2c) on a plain port.
//!
//! The h2 crate (the server's HTTP/2 library, and hyper's) does the
//! framing; each subscriber is a task reading its stream's DATA frames and
//! handing each window's worth back as soon as it is parsed.

use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

use bytes::Bytes;
use h2::client::SendRequest;
use http::{header, Request, StatusCode};
use tokio::sync::OnceCell;
use tokio::task::AbortHandle;

use crate::error::{BenchError, ErrorKind};
use crate::net::{self, Stream};
use crate::sse_client::StreamReader;
use crate::stats::Subscriber;
use crate::target::{SourceAddrs, Target};
use crate::tls::{Alpn, TlsClient};

/// Flow-control windows the client grants, a browser's (Chromium's 6 MiB
/// per stream, 15 MiB per connection): the generator reads at once, so
/// the windows never hold the server back.
const STREAM_WINDOW: u32 = 6 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 15 * 1024 * 1024;

/// The run's HTTP/2 connections, each opened by the first subscriber that needs it.
pub struct H2Pool {
    conns: Vec<OnceCell<SendRequest<Bytes>>>,
    /// The tasks driving the connections, ended with the run.
    drivers: Mutex<Vec<AbortHandle>>,
    addr: SocketAddr,
    sources: SourceAddrs,
    tls: Option<TlsClient>,
}

impl H2Pool {
    pub fn new(
        connections: usize,
        addr: SocketAddr,
        sources: SourceAddrs,
        tls: Option<TlsClient>,
    ) -> Self {
        H2Pool {
            conns: (0..connections).map(|_| OnceCell::new()).collect(),
            drivers: Mutex::new(Vec::with_capacity(connections)),
            addr,
            sources,
            tls,
        }
    }

    /// The connection subscriber `index` shares.
    async fn connection(&self, index: usize) -> Result<SendRequest<Bytes>, BenchError> {
        let k = index % self.conns.len();
        self.conns[k]
            .get_or_try_init(|| self.open(self.sources.for_connection(k)))
            .await
            .cloned()
    }

    async fn open(&self, source: Option<IpAddr>) -> Result<SendRequest<Bytes>, BenchError> {
        let tcp = net::connect(self.addr, source)
            .await
            .map_err(|e| BenchError::new(ErrorKind::Connect, format!("connect: {e}")))?;
        let io = match &self.tls {
            None => Stream::Tcp(tcp),
            Some(t) => Stream::Tls(Box::new(t.handshake(tcp, Alpn::H2).await?)),
        };
        let (send, conn) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .enable_push(false)
            .handshake::<_, Bytes>(io)
            .await
            .map_err(|e| h2_error("HTTP/2 handshake", e))?;
        let driver = tokio::spawn(async move {
            // Its end shows in the streams, which fail with it.
            let _ = conn.await;
        });
        self.drivers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(driver.abort_handle());
        Ok(send)
    }

    /// Closes every connection (with the runtime they would close anyway).
    pub fn close(&self) {
        for d in self
            .drivers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            d.abort();
        }
    }
}

fn h2_error(what: &str, e: h2::Error) -> BenchError {
    let kind = if e.is_io() {
        ErrorKind::Io
    } else {
        ErrorKind::Protocol
    };
    BenchError::new(kind, format!("{what}: {e}"))
}

/// Subscribes with a GET on a stream of a shared HTTP/2 connection and
/// reads the event stream until it ends. As over HTTP/1.1, with `plain` the
/// 200 response counts as subscribed, otherwise `event: subscribed` does.
pub async fn run_sse(
    pool: &H2Pool,
    index: usize,
    target: &Target,
    sub: &mut Subscriber,
    plain: bool,
) -> Result<(), BenchError> {
    let send = pool.connection(index).await?;
    // Waits while the connection has as many streams open as the server allows.
    let mut send = send
        .ready()
        .await
        .map_err(|e| h2_error("HTTP/2 connection", e))?;
    let scheme = if pool.tls.is_some() { "https" } else { "http" };
    let request = Request::get(format!(
        "{scheme}://{}{}",
        target.authority, target.path_and_query
    ))
    .header(header::ACCEPT, "text/event-stream")
    .header(header::CACHE_CONTROL, "no-cache")
    .body(())
    .map_err(|e| BenchError::config(format!("request: {e}")))?;
    let (response, _) = send
        .send_request(request, true)
        .map_err(|e| h2_error("opening a stream", e))?;
    drop(send);
    let response = response.await.map_err(|e| h2_error("stream request", e))?;
    if response.status() != StatusCode::OK {
        return Err(BenchError::new(
            ErrorKind::Http,
            format!("stream request answered {}", response.status()),
        ));
    }
    let event_stream = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/event-stream"));
    sub.connected();
    if plain {
        sub.mark_subscribed();
    }
    let mut body = response.into_body();
    let mut reader = StreamReader::new(false, event_stream, plain);
    while let Some(data) = body.data().await {
        let data = data.map_err(|e| h2_error("reading event stream", e))?;
        reader.feed(&data, sub)?;
        body.flow_control()
            .release_capacity(data.len())
            .map_err(|e| h2_error("flow control", e))?;
    }
    Err(BenchError::new(
        ErrorKind::Connect,
        "server ended the event stream",
    ))
}
