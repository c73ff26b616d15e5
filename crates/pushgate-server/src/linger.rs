//! Closing a connection so that its last answer reaches the client.
//!
//! A socket closed while bytes from the client are still unread makes the
//! kernel answer with a reset (RST) instead of a FIN, and a reset can
//! destroy what was sent just before it: a send queue not yet on the wire
//! is dropped, some stacks drop what the client has not read yet, and a
//! client that is still writing sees "connection reset by peer" and never
//! reads the 413, the 408 or the WebSocket close frame that said why. So
//! after its last word the server half-closes (a FIN follows the answer),
//! reads and drops what the client still sends until the client closes its
//! side, and only then closes the socket (RFC 9112 §9.6, RFC 6455 §7.1.1;
//! nginx's `lingering_close`). Bounded in time, and what it reads goes
//! through a buffer on the stack, never kept.

use std::future::{poll_fn, Future};
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Sleep;

/// How long a closing connection reads what its client still sends. Long
/// enough for a client that is writing to notice the answer; a client that
/// keeps writing past it is then reset, its answer long since delivered.
pub const LINGER: Duration = Duration::from_secs(2);

/// How long a lingering close waits for the client's next bytes before
/// it closes: a few round trips.
pub const QUIET: Duration = Duration::from_millis(250);

/// Bytes dropped per read: on the stack for one poll only.
const DISCARD_CHUNK: usize = 4096;

/// Half-closes `io` (the kernel sends a FIN after what was written), then
/// reads and drops what the client still sends until it ends its side
/// or `limit` passes. The caller drops the socket afterwards: with nothing
/// unread, that sends no reset.
pub async fn linger_close<S>(io: &mut S, limit: Duration)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    linger_close_until(io, limit, |_| false).await;
}

/// [`linger_close`], where `done` sees what arrives and ends the wait early
/// when it says the client will send nothing more (a WebSocket's close
/// frame).
pub async fn linger_close_until<S, F>(io: &mut S, limit: Duration, mut done: F)
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnMut(&[u8]) -> bool,
{
    let _ = tokio::time::timeout(limit, async {
        if io.shutdown().await.is_err() {
            return;
        }
        // Until the client ends its side, or sends nothing for QUIET: what
        // it had in flight when the answer reached it has arrived by then
        // (a client that answers a close frame and waits for the server
        // to close first is not kept waiting), while a client that keeps
        // sending keeps the lingering going, up to `limit`.
        loop {
            let discard = poll_fn(|cx| poll_discard(io, cx, &mut done));
            if !matches!(tokio::time::timeout(QUIET, discard).await, Ok(More::Maybe)) {
                break;
            }
        }
    })
    .await;
}

/// After lingering reads: whether more may come.
enum More {
    Maybe,
    No,
}

/// Reads and drops what has arrived: ready with `Maybe` once something
/// was read, `No` at the end of the stream, an error, or `done`.
/// Endless input cannot hog the worker: each read spends tokio's
/// cooperative budget, which ends the poll when it runs out.
fn poll_discard<S, F>(io: &mut S, cx: &mut Context<'_>, done: &mut F) -> Poll<More>
where
    S: AsyncRead + Unpin,
    F: FnMut(&[u8]) -> bool,
{
    let mut buf = [MaybeUninit::<u8>::uninit(); DISCARD_CHUNK];
    let mut read_any = false;
    loop {
        let mut read = ReadBuf::uninit(&mut buf);
        match Pin::new(&mut *io).poll_read(cx, &mut read) {
            Poll::Pending if read_any => return Poll::Ready(More::Maybe),
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(())) if read.filled().is_empty() => return Poll::Ready(More::No),
            Poll::Ready(Ok(())) if done(read.filled()) => return Poll::Ready(More::No),
            Poll::Ready(Ok(())) => read_any = true,
            Poll::Ready(Err(_)) => return Poll::Ready(More::No),
        }
    }
}

/// A connection whose shutdown lingers: hyper shuts a connection down when
/// it is done with it, also right after answering a request whose body it
/// did not read (a 413 for a chunked body over the limit), and then drops
/// it. Wrapped in this, the shutdown half-closes and reads what the client
/// still sends for up to [`LINGER`], so the answer reaches the client.
/// (A WebSocket upgraded on hyper's path lingers here too when it closes:
/// what its client sends after the close frame is then dropped unparsed
/// until the end of stream.) An idle connection pays one pointer: the
/// timer exists only while it lingers.
pub struct Lingering<S> {
    io: S,
    /// Set once the write side is shut: the end of the lingering.
    until: Option<Pin<Box<Sleep>>>,
}

impl<S> Lingering<S> {
    pub fn new(io: S) -> Self {
        Lingering { io, until: None }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Lingering<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Lingering<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let until = match &mut this.until {
            Some(until) => until,
            None => {
                ready!(Pin::new(&mut this.io).poll_shutdown(cx))?;
                this.until.insert(Box::pin(tokio::time::sleep(LINGER)))
            }
        };
        loop {
            match poll_discard(&mut this.io, cx, &mut |_| false) {
                Poll::Ready(More::No) => return Poll::Ready(Ok(())),
                Poll::Ready(More::Maybe) => {}
                Poll::Pending => return until.as_mut().poll(cx).map(Ok),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// The answer, then the end of the stream: nothing the client sends
    /// after the answer is an error, and the wait ends with the client's side.
    #[tokio::test]
    async fn half_closes_then_drops_what_comes_until_the_client_ends() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let serving = tokio::spawn(async move {
            server.write_all(b"refused").await.unwrap();
            linger_close(&mut server, Duration::from_secs(3600)).await;
        });
        let mut answer = [0u8; 7];
        client.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"refused");
        // More than the pipe holds: it is read and dropped.
        client.write_all(&[0; 1000]).await.unwrap();
        assert_eq!(client.read(&mut [0; 8]).await.unwrap(), 0, "a FIN");
        client.shutdown().await.unwrap();
        serving.await.unwrap();
    }

    /// A client that never stops is let go at the limit.
    #[tokio::test]
    async fn gives_up_at_the_limit() {
        let (client, mut server) = tokio::io::duplex(64);
        linger_close(&mut server, Duration::from_millis(10)).await;
        drop(client);
    }

    /// `done` ends the wait, as a WebSocket's close frame does.
    #[tokio::test]
    async fn ends_when_done_says_so() {
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(b"abcX").await.unwrap();
        let mut seen = Vec::new();
        linger_close_until(&mut server, Duration::from_secs(3600), |b| {
            seen.extend_from_slice(b);
            seen.ends_with(b"X")
        })
        .await;
        assert_eq!(seen, b"abcX");
    }

    /// hyper's shutdown of a wrapped connection lingers the same way.
    #[tokio::test]
    async fn a_wrapped_connection_lingers_on_shutdown() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut server = Lingering::new(server);
        let serving = tokio::spawn(async move {
            server.write_all(b"413").await.unwrap();
            server.shutdown().await.unwrap();
        });
        client.write_all(&[0; 1000]).await.unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"413");
        client.shutdown().await.unwrap();
        serving.await.unwrap();
    }
}
