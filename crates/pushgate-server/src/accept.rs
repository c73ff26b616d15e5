//! What happens to an accepted socket before any request is read: the
//! connection limits (in total and per client IP), the TLS handshake and
//! its time limit, and the choice of HTTP/1.1 (the front, `crate::http1`)
//! or HTTP/2 (`crate::http2`).
//!
//! A connection over a limit is answered at once — 503 (the server is
//! full) or 429 (this address holds too many) with the usual JSON error —
//! before anything of it is parsed; over TLS that takes the handshake,
//! which offers only HTTP/1.1 so that the answer can be written by hand.

use std::collections::HashMap;
use std::io::IoSlice;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::linger;
use crate::metrics::{Limit, Metrics, Protocol, ProtocolGuard};
use crate::state::AppState;
use crate::tls::Alpn;

/// Open files kept for the server's own use (listeners, logs, store files)
/// when the connection limit comes from the open-file limit.
const FILE_RESERVE: usize = 256;

/// Connections held, in total and per client address, against the limits.
pub struct Limiter {
    max_total: usize,
    /// 0: no limit per address.
    max_per_ip: usize,
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, u32>>,
}

impl Limiter {
    pub fn new(max_total: usize, max_per_ip: usize) -> Self {
        Limiter {
            max_total,
            max_per_ip,
            total: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
        }
    }

    /// The limit in total: `max_connections`, or when that is 0, what the
    /// process's open-file limit allows less a reserve.
    pub fn total_from(max_connections: usize) -> usize {
        if max_connections > 0 {
            return max_connections;
        }
        match nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE) {
            Ok((soft, _)) if soft != nix::sys::resource::RLIM_INFINITY => {
                (soft as usize).saturating_sub(FILE_RESERVE).max(1)
            }
            _ => usize::MAX,
        }
    }

    pub fn max_total(&self) -> usize {
        self.max_total
    }

    /// A place for a connection from `ip`, or the limit it would pass.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Limit> {
        if self.total.fetch_add(1, Ordering::Relaxed) >= self.max_total {
            self.total.fetch_sub(1, Ordering::Relaxed);
            return Err(Limit::Connections);
        }
        if self.max_per_ip > 0 {
            let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            let n = per_ip.entry(ip).or_insert(0);
            if *n as usize >= self.max_per_ip {
                drop(per_ip);
                self.total.fetch_sub(1, Ordering::Relaxed);
                return Err(Limit::ConnectionsPerIp);
            }
            *n += 1;
        }
        Ok(Slot {
            limiter: self.clone(),
            ip,
            protocol: None,
        })
    }

    fn release(&self, ip: IpAddr) {
        if self.max_per_ip > 0 {
            let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
        self.total.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection's place under the limits, and its count in the
/// per-protocol gauge; given back when the connection ends.
pub struct Slot {
    limiter: Arc<Limiter>,
    ip: IpAddr,
    protocol: Option<ProtocolGuard>,
}

impl Slot {
    /// Counts the connection as speaking `p` from now on.
    pub fn speaks(&mut self, metrics: &Arc<Metrics>, p: Protocol) {
        self.protocol = Some(metrics.http_connection(p));
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.limiter.release(self.ip);
    }
}

/// A client's byte stream (a TCP socket, or TLS over one) with its place
/// under the limits, which it holds for as long as it lives, wherever it
/// goes (a WebSocket's task, an event stream's, hyper).
pub struct Client<S> {
    pub io: S,
    pub slot: Slot,
}

impl<S: AsyncRead + Unpin> AsyncRead for Client<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Client<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Serves an accepted socket: the limits, TLS when configured, then HTTP.
pub async fn serve(tcp: TcpStream, peer: SocketAddr, state: Arc<AppState>) {
    let admitted = state.limiter.admit(peer.ip());
    if let Err(limit) = admitted {
        state.metrics.limited_from(limit, peer);
    }
    let Some(tls) = &state.tls else {
        match admitted {
            Ok(mut slot) => {
                slot.speaks(&state.metrics, Protocol::Http1);
                crate::http1::serve(Client { io: tcp, slot }, peer, state).await
            }
            Err(limit) => refuse(tcp, limit).await,
        }
        return;
    };
    let handshake = tls.accept(tcp, admitted.is_err());
    let (stream, alpn) =
        match tokio::time::timeout(state.config.tls_handshake_timeout, handshake).await {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                state.metrics.limited(Limit::TlsHandshake);
                return;
            }
        };
    // Boxed: a session is over a kilobyte, and a task keeps an async fn's
    // arguments apart from its locals (rust-lang/rust#62958), so a stream
    // passed by value would be paid for twice in each connection's future.
    let stream = Box::new(stream);
    match (admitted, alpn) {
        (Err(limit), _) => refuse(stream, limit).await,
        (Ok(mut slot), Alpn::H2) => {
            slot.speaks(&state.metrics, Protocol::H2);
            // Boxed: only HTTP/2 connections need its state.
            Box::pin(crate::http2::serve(
                Client { io: stream, slot },
                peer,
                state,
            ))
            .await
        }
        (Ok(mut slot), Alpn::Http1) => {
            slot.speaks(&state.metrics, Protocol::Http1Tls);
            crate::http1::serve(Client { io: stream, slot }, peer, state).await
        }
    }
}

/// Answers a connection over a limit, then closes it without destroying
/// the answer (what the client sends meanwhile is read and dropped).
async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(mut io: S, limit: Limit) {
    let (status, code, message) = match limit {
        Limit::ConnectionsPerIp => (
            "429 Too Many Requests",
            "too_many_connections",
            "this address holds too many connections (max_connections_per_ip)",
        ),
        _ => (
            "503 Service Unavailable",
            "too_many_connections",
            "the server holds as many connections as it may (max_connections)",
        ),
    };
    let body = format!(r#"{{"type":"error","code":"{code}","message":"{message}"}}"#);
    let answer = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         retry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let written = tokio::time::timeout(linger::LINGER, io.write_all(answer.as_bytes())).await;
    if matches!(written, Ok(Ok(()))) {
        linger::linger_close(&mut io, linger::LINGER).await;
    }
}
