//! Socket plumbing shared by every client: connecting from a chosen source
//! address, and reading without a per-connection read buffer.
//!
//! At 20,000 mostly idle connections a 4–16 KiB buffer per connection would be
//! the generator's largest cost. Instead each worker thread owns one scratch
//! buffer; a connection only keeps the few bytes of an incomplete frame or
//! line between reads, and usually nothing at all.
//!
//! Over TLS (`--tls`) rustls keeps its own buffers per connection: that
//! memory is the library's, and is what a TLS client costs.

use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;

const SCRATCH_LEN: usize = 64 * 1024;

/// Pending bytes above this are released once consumed, so one large message
/// does not pin memory in a connection for the rest of the run.
const KEEP_PENDING_CAPACITY: usize = 4 * 1024;

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; SCRATCH_LEN].into_boxed_slice());
}

pub async fn connect(target: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(target).await?;
    // Publishes and pongs are single small writes; Nagle would only add latency.
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A client connection: plain TCP, or TLS over it (boxed: rustls' state is
/// large, and a plain connection should not carry its size).
pub enum Stream {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tcp(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

/// Waits until `stream` has data, reads it into this thread's scratch buffer
/// and hands it to `f`. `Ok(None)` means the peer closed the connection.
///
/// The scratch buffer is borrowed only inside one poll, never across an
/// await, so tasks sharing the thread cannot collide on it. `poll_read` (not
/// `readable` + `try_read`) because on a short read tokio clears readiness
/// itself, saving one EAGAIN `read` per wake-up, which at one message per
/// wake-up would double the generator's syscalls.
pub async fn read_with<S: AsyncRead + Unpin, R>(
    stream: &mut S,
    mut f: impl FnMut(&[u8]) -> R,
) -> io::Result<Option<R>> {
    std::future::poll_fn(|cx| {
        SCRATCH.with(|cell| {
            let mut scratch = cell.borrow_mut();
            let mut buf = ReadBuf::new(&mut scratch[..]);
            match Pin::new(&mut *stream).poll_read(cx, &mut buf) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) if buf.filled().is_empty() => Poll::Ready(Ok(None)),
                Poll::Ready(Ok(())) => Poll::Ready(Ok(Some(f(buf.filled())))),
            }
        })
    })
    .await
}

/// Runs `parse` over `pending ++ input` and keeps what it left unconsumed.
///
/// `parse` returns how many bytes it consumed; it is called once, and must
/// consume every complete unit (frame, line, …) it was given.
pub fn feed_with_pending<E>(
    pending: &mut Vec<u8>,
    input: &[u8],
    parse: impl FnOnce(&[u8]) -> Result<usize, E>,
) -> Result<(), E> {
    if pending.is_empty() {
        let used = parse(input)?;
        pending.extend_from_slice(&input[used..]);
    } else {
        pending.extend_from_slice(input);
        let used = parse(pending)?;
        pending.drain(..used);
    }
    if pending.is_empty() && pending.capacity() > KEEP_PENDING_CAPACITY {
        *pending = Vec::new();
    }
    Ok(())
}

/// Releases a buffer's memory when it has grown past what idle connections should hold.
pub fn trim(buf: &mut Vec<u8>) {
    buf.clear();
    if buf.capacity() > KEEP_PENDING_CAPACITY {
        *buf = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Consumes whole 3-byte units only.
    fn triples(data: &[u8], seen: &mut Vec<Vec<u8>>) -> Result<usize, ()> {
        let n = data.len() / 3 * 3;
        seen.extend(data[..n].chunks(3).map(<[u8]>::to_vec));
        Ok(n)
    }

    #[test]
    fn pending_carries_partial_units() {
        let mut pending = Vec::new();
        let mut seen = Vec::new();
        feed_with_pending(&mut pending, b"abcd", |d| triples(d, &mut seen)).unwrap();
        assert_eq!(pending, b"d");
        feed_with_pending(&mut pending, b"efghi", |d| triples(d, &mut seen)).unwrap();
        assert_eq!(pending, b"");
        feed_with_pending(&mut pending, b"j", |d| triples(d, &mut seen)).unwrap();
        assert_eq!(
            seen,
            vec![b"abc".to_vec(), b"def".to_vec(), b"ghi".to_vec()]
        );
        assert_eq!(pending, b"j");
    }
}
