//! A TCP socket shared between its connection's task and fan-out's direct
//! writes ([`pushgate_core::DirectSink`]). tokio's `TcpStream` reads and
//! writes through `&self` (`try_read`, `try_write` after readiness), so one
//! `Arc` serves both; the outbox's parking protocol guarantees they never
//! write at the same time.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use pushgate_core::Sent;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::metrics::{Metrics, Transport};

/// A direct write from fan-out: `bytes` (a publication's shared frame or
/// chunk) in one non-blocking write, counted as a delivery when any of it
/// went out. A full or failed socket writes nothing: the connection's task
/// then queues the message, or finds the error.
pub fn try_send(
    stream: &TcpStream,
    bytes: &Bytes,
    metrics: &Metrics,
    transport: Transport,
) -> Sent {
    let written = match stream.try_write(bytes) {
        Ok(n) if n > 0 => n,
        _ => return Sent::Nothing,
    };
    metrics.delivered(transport, 1);
    if written == bytes.len() {
        Sent::All
    } else {
        Sent::Part(bytes.slice(written..))
    }
}

#[derive(Clone)]
pub struct SharedTcp(pub Arc<TcpStream>);

impl AsyncRead for SharedTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.0.poll_read_ready(cx))?;
            // Initialised only once there is something to read.
            match self.0.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for SharedTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                done => return Poll::Ready(done),
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                done => return Poll::Ready(done),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// The socket closes when the last holder drops it.
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
