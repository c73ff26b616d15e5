//! The server's side of TLS over a socket, holding no buffer while the
//! connection idles.
//!
//! Why not tokio-rustls: it drives rustls' buffered `ServerConnection`,
//! whose first read grows a deframer buffer of its own to 4 KiB
//! (zero-filled) that stays for the connection's life. heaptrack on 2,000
//! idle TLS WebSockets counted per connection that 4,096 B beside ~2.7 KiB
//! of task, ~1.35 KiB of aws-lc key state and ~1.1 KiB of other rustls
//! state; an idle TLS WebSocket took 10.2 KiB and a TLS event stream
//! 9.8 KiB (python probe, 5,000 connections), against 2.7 KiB in plaintext.
//! The buffered API offers no way to give that buffer back.
//!
//! So this stream drives rustls' unbuffered API, where the caller owns the
//! buffers:
//! - reads land in a buffer per worker thread ([`SCRATCH`]), large enough
//!   for the largest record, where rustls decrypts them in place (rustls
//!   0.23 then hands over each record's plaintext in a `Vec` of its own,
//!   dropped once copied out); a connection keeps only what it cannot use
//!   yet — the start of a record that has not all arrived, plaintext
//!   beyond what its reader asked for — each in a `Vec` freed as soon as
//!   it empties;
//! - writes are sealed into that buffer too, one record per 16 KiB of
//!   plaintext (the pieces of a vectored write gathered into one), and
//!   written to the socket at once; only what the socket did not take is
//!   kept, and the next write waits until it has gone out.
//!
//! An idle connection holds rustls' own state and nothing else: an idle TLS
//! WebSocket 6.2 KiB, a TLS event stream 5.8 KiB (same probe).
//!
//! One limit the buffered API does not have: a handshake message from the
//! client must fit in one record's room (18 KiB; rustls allows 64 KiB,
//! which only client certificates need, and pushgate asks for none).

use std::cell::RefCell;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncodeTlsData, EncryptError, InsufficientSizeError,
};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most plaintext one record carries.
const MAX_PLAINTEXT: usize = 16 * 1024;

/// The largest record rustls accepts: a 5-byte header and up to
/// 2^14 + 2048 bytes of ciphertext (TLS 1.2's bound; TLS 1.3's is lower).
const MAX_RECORD: usize = 5 + MAX_PLAINTEXT + 2048;

thread_local! {
    /// Each worker thread's room for records: what a read brought (after
    /// what a connection kept from before), decrypted in place; and what a
    /// write seals, followed by the room where a vectored write's pieces
    /// are gathered. Allocated and zeroed once per thread; borrowed only
    /// for the length of one call, which polls nothing but the socket.
    static SCRATCH: RefCell<Box<[u8]>> =
        RefCell::new(vec![0; MAX_RECORD + MAX_PLAINTEXT].into_boxed_slice());
}

/// The server's side of a TLS connection over `IO`, once handshaken
/// ([`accept`]).
pub struct TlsStream<IO> {
    io: IO,
    /// Received bytes rustls could not use yet: the start of a record, or
    /// the records of a handshake message not all arrived. Empty (and
    /// unallocated) between records.
    received: Vec<u8>,
    session: Session,
}

/// rustls' state, and what the connection holds for it between polls.
struct Session {
    conn: UnbufferedServerConnection,
    /// Plaintext decrypted beyond what the reader had room for;
    /// `plain[plain_read..]` is still to be read. Freed once read.
    plain: Vec<u8>,
    plain_read: usize,
    /// Records sealed that the socket has not taken yet; written before
    /// anything else. Freed once written.
    unsent: Vec<u8>,
    /// The peer's close_notify arrived: reads see the end of the stream.
    read_closed: bool,
    /// Our close_notify is queued: nothing more may be written.
    write_closed: bool,
    /// rustls refused what the peer sent; the session is over.
    failed: bool,
}

/// What to seal once rustls lets us write.
enum Seal<'a> {
    Nothing,
    /// Application data, into the buffer.
    Data(&'a [u8], &'a mut [u8]),
    /// close_notify, into the buffer.
    CloseNotify(&'a mut [u8]),
}

/// Where [`Session::drive`] stopped.
enum Stop {
    /// rustls did all it could with what it was given.
    Idle,
    /// The records asked for were sealed: this many bytes of the buffer.
    Sealed(usize),
    /// Both sides sent close_notify: nothing more can be written.
    Closed,
}

/// The server's side of the handshake on `io`. The stream it returns
/// tells which protocol ALPN chose ([`TlsStream::alpn_protocol`]).
pub async fn accept<IO>(io: IO, config: Arc<ServerConfig>) -> io::Result<TlsStream<IO>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let conn = UnbufferedServerConnection::new(config).map_err(invalid)?;
    let mut tls = TlsStream {
        io,
        received: Vec::new(),
        session: Session {
            conn,
            plain: Vec::new(),
            plain_read: 0,
            unsent: Vec::new(),
            read_closed: false,
            write_closed: false,
            failed: false,
        },
    };
    poll_fn(|cx| tls.poll_handshake(cx)).await?;
    Ok(tls)
}

impl<IO> TlsStream<IO> {
    /// The protocol ALPN agreed on, if any.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.session.conn.alpn_protocol()
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> TlsStream<IO> {
    /// Reads and answers until the handshake is done and its last flight
    /// (with the session tickets) is written.
    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            ready!(self.poll_send_unsent(cx))?;
            if !self.session.conn.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            ready!(self.poll_receive(cx, None))?;
        }
    }

    /// One read from the socket into this thread's [`SCRATCH`], after the
    /// bytes kept from before, then rustls over all of it: plaintext goes
    /// to `dst` while it has room, then to `plain`; records rustls has to
    /// send go to `unsent`; what it cannot use yet is kept.
    fn poll_receive(
        &mut self,
        cx: &mut Context<'_>,
        dst: Option<&mut ReadBuf<'_>>,
    ) -> Poll<io::Result<()>> {
        if self.session.failed {
            return Poll::Ready(Err(failed()));
        }
        SCRATCH.with_borrow_mut(|scratch| {
            let records = &mut scratch[..MAX_RECORD];
            let kept = self.received.len();
            records[..kept].copy_from_slice(&self.received);
            let mut read = ReadBuf::new(&mut records[kept..]);
            ready!(Pin::new(&mut self.io).poll_read(cx, &mut read))?;
            let end = kept + read.filled().len();
            if end == kept {
                return Poll::Ready(Err(self.ended(kept > 0)));
            }
            let used = match self.session.drive(&mut records[..end], dst, Seal::Nothing) {
                Ok((used, _)) => used,
                Err(e) => {
                    self.received = Vec::new();
                    // The alert that says why, if the socket takes it now.
                    let _ = self.poll_send_unsent(cx);
                    return Poll::Ready(Err(e));
                }
            };
            let rest = &records[used..end];
            if rest.len() >= MAX_RECORD {
                // Only a handshake message spread over records gets here
                // (a record always fits); the next read would have no room.
                self.session.failed = true;
                return Poll::Ready(Err(invalid("a TLS handshake message over 18 KiB")));
            }
            if rest.is_empty() {
                self.received = Vec::new();
            } else {
                self.received.clear();
                self.received.extend_from_slice(rest);
            }
            Poll::Ready(Ok(()))
        })
    }

    /// The socket ended without the peer's close_notify.
    fn ended(&mut self, mid_record: bool) -> io::Error {
        self.received = Vec::new();
        let why = if self.session.conn.is_handshaking() {
            "the peer closed the connection during the TLS handshake"
        } else if mid_record {
            "the peer closed the connection in the middle of a TLS record"
        } else {
            "the peer closed the connection without a TLS close_notify"
        };
        io::Error::new(io::ErrorKind::UnexpectedEof, why)
    }

    /// Writes what waits in `unsent`; ready once all of it went out.
    fn poll_send_unsent(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let unsent = &mut self.session.unsent;
        while !unsent.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, unsent))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            unsent.drain(..n);
        }
        *unsent = Vec::new();
        Poll::Ready(Ok(()))
    }

    /// Lets rustls seal `what`; the length of the records it wrote.
    fn seal(&mut self, what: Seal<'_>) -> io::Result<usize> {
        if self.session.failed {
            return Err(failed());
        }
        if self.session.write_closed {
            return Err(write_closed());
        }
        // rustls is given the kept bytes again (its parsing left off in
        // them); they hold no whole record, as each read lets it take every
        // one, so it goes straight to letting us write.
        let mut received = std::mem::take(&mut self.received);
        let (used, stop) = self.session.drive(&mut received, None, what)?;
        received.drain(..used);
        if !received.is_empty() {
            self.received = received;
        }
        match stop {
            Stop::Sealed(n) => Ok(n),
            Stop::Closed => Err(write_closed()),
            Stop::Idle => Err(invalid("the TLS handshake is not done")),
        }
    }

    /// Seals `data` (one record's worth at most) into `records` and writes
    /// them; what the socket does not take waits in `unsent`.
    fn send(&mut self, cx: &mut Context<'_>, data: &[u8], records: &mut [u8]) -> io::Result<()> {
        let n = self.seal(Seal::Data(data, records))?;
        let mut sealed = &records[..n];
        // Records rustls had ready before it let us write are in `unsent`,
        // and go out first.
        if self.session.unsent.is_empty() {
            while !sealed.is_empty() {
                match Pin::new(&mut self.io).poll_write(cx, sealed) {
                    Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                    Poll::Ready(Ok(n)) => sealed = &sealed[n..],
                    Poll::Ready(Err(e)) => return Err(e),
                    Poll::Pending => break,
                }
            }
        }
        self.session.unsent.extend_from_slice(sealed);
        Ok(())
    }
}

impl Session {
    /// Runs rustls over `records` until it needs more from the peer, or
    /// lets us write and `what` is sealed. Returns how many bytes from the
    /// front of `records` rustls is done with, and where it stopped.
    fn drive(
        &mut self,
        records: &mut [u8],
        mut dst: Option<&mut ReadBuf<'_>>,
        mut what: Seal<'_>,
    ) -> io::Result<(usize, Stop)> {
        let mut used = 0;
        loop {
            let status = self.conn.process_tls_records(&mut records[used..]);
            let mut discard = status.discard;
            let stop = match status.state {
                Err(e) => Err(e),
                Ok(ConnectionState::ReadTraffic(mut traffic)) => loop {
                    match traffic.next_record() {
                        None => break Ok(None),
                        Some(Err(e)) => break Err(e),
                        Some(Ok(record)) => {
                            discard += record.discard;
                            deliver(record.payload, &mut dst, &mut self.plain);
                        }
                    }
                },
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    encode_into(&mut encode, &mut self.unsent).map(|()| None)
                }
                // The records are in `unsent`, which goes out before
                // anything written later.
                Ok(ConnectionState::TransmitTlsData(transmit)) => {
                    transmit.done();
                    Ok(None)
                }
                Ok(ConnectionState::BlockedHandshake) => Ok(Some(Stop::Idle)),
                Ok(ConnectionState::PeerClosed) => {
                    self.read_closed = true;
                    Ok(None)
                }
                Ok(ConnectionState::Closed) => {
                    self.read_closed = true;
                    Ok(Some(Stop::Closed))
                }
                Ok(ConnectionState::WriteTraffic(mut traffic)) => {
                    let sealed = match std::mem::replace(&mut what, Seal::Nothing) {
                        Seal::Nothing => Ok(Stop::Idle),
                        Seal::Data(data, out) => traffic.encrypt(data, out).map(Stop::Sealed),
                        Seal::CloseNotify(out) => traffic.queue_close_notify(out).map(Stop::Sealed),
                    };
                    // Never InsufficientSize: the room holds a full record
                    // and the key update rustls may put before it.
                    return sealed
                        .map(|stop| (used + discard, stop))
                        .map_err(encrypt_error);
                }
                // Only with `max_early_data_size` set, which pushgate does
                // not do: 0-RTT data can be replayed.
                Ok(ConnectionState::ReadEarlyData(_)) => {
                    Err(rustls::Error::General("0-RTT data is not accepted".into()))
                }
                Ok(_) => Err(rustls::Error::General(
                    "a TLS state this server does not know".into(),
                )),
            };
            used += discard;
            match stop {
                Ok(None) => {}
                Ok(Some(stop)) => return Ok((used, stop)),
                Err(e) => {
                    self.fail(&mut records[used..]);
                    return Err(invalid(e));
                }
            }
        }
    }

    /// After rustls refused what the peer sent: the alert it queued to
    /// say why, into `unsent`.
    fn fail(&mut self, records: &mut [u8]) {
        self.failed = true;
        if let Ok(ConnectionState::EncodeTlsData(mut encode)) =
            self.conn.process_tls_records(records).state
        {
            let _ = encode_into(&mut encode, &mut self.unsent);
        }
    }

    /// Moves unread plaintext into `buf`; false when there is none.
    fn take_plain(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        if self.plain.is_empty() {
            return false;
        }
        let unread = &self.plain[self.plain_read..];
        let n = unread.len().min(buf.remaining());
        buf.put_slice(&unread[..n]);
        self.plain_read += n;
        if self.plain_read == self.plain.len() {
            self.plain = Vec::new();
            self.plain_read = 0;
        }
        true
    }
}

/// A record's plaintext: into the reader's buffer while it has room and
/// nothing waits before it, the rest kept.
fn deliver(payload: &[u8], dst: &mut Option<&mut ReadBuf<'_>>, plain: &mut Vec<u8>) {
    let mut payload = payload;
    if let (true, Some(dst)) = (plain.is_empty(), dst) {
        let n = payload.len().min(dst.remaining());
        dst.put_slice(&payload[..n]);
        payload = &payload[n..];
    }
    plain.extend_from_slice(payload);
}

/// Appends the handshake (or alert) record rustls has ready to `out`.
fn encode_into(
    encode: &mut EncodeTlsData<'_, ServerConnectionData>,
    out: &mut Vec<u8>,
) -> Result<(), rustls::Error> {
    let len = match encode.encode(&mut []) {
        Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
            required_size
        }
        Ok(_) | Err(EncodeError::AlreadyEncoded) => return Ok(()),
    };
    let at = out.len();
    out.resize(at + len, 0);
    match encode.encode(&mut out[at..]) {
        Ok(n) => {
            out.truncate(at + n);
            Ok(())
        }
        Err(e) => {
            out.truncate(at);
            Err(rustls::Error::General(e.to_string()))
        }
    }
}

fn invalid(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

fn encrypt_error(e: EncryptError) -> io::Error {
    invalid(e.to_string())
}

fn failed() -> io::Error {
    invalid("the TLS session failed earlier")
}

fn write_closed() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the TLS session is closed for writing",
    )
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            // What was sealed and not yet taken goes on its way while the
            // connection waits to read (a reader that wrote its answer and
            // went back to reading does not flush).
            if let Poll::Ready(Err(_)) = this.poll_send_unsent(cx) {
                // The socket cannot be written to; reading says the rest.
                this.session.unsent = Vec::new();
            }
            if this.session.take_plain(buf) || this.session.read_closed {
                return Poll::Ready(Ok(()));
            }
            let before = buf.filled().len();
            ready!(this.poll_receive(cx, Some(buf)))?;
            if buf.filled().len() > before {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        ready!(this.poll_send_unsent(cx))?;
        let data = &buf[..buf.len().min(MAX_PLAINTEXT)];
        SCRATCH.with_borrow_mut(|scratch| this.send(cx, data, &mut scratch[..MAX_RECORD]))?;
        Poll::Ready(Ok(data.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let mut filled = bufs.iter().filter(|b| !b.is_empty());
        let Some(first) = filled.next() else {
            return Poll::Ready(Ok(0));
        };
        if filled.next().is_none() {
            return Pin::new(this).poll_write(cx, first);
        }
        ready!(this.poll_send_unsent(cx))?;
        let taken = SCRATCH.with_borrow_mut(|scratch| {
            let (records, gather) = scratch.split_at_mut(MAX_RECORD);
            let mut len = 0;
            for buf in bufs {
                let n = buf.len().min(gather.len() - len);
                gather[len..len + n].copy_from_slice(&buf[..n]);
                len += n;
                if len == gather.len() {
                    break;
                }
            }
            this.send(cx, &gather[..len], records).map(|()| len)
        })?;
        Poll::Ready(Ok(taken))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_unsent(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    /// Sends close_notify, then shuts the socket's write side (a FIN after
    /// it; `crate::linger` reads what the peer still sends).
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.session.write_closed {
            // A session that failed has said why in an alert instead.
            let _ = SCRATCH.with_borrow_mut(|scratch| {
                let records = &mut scratch[..MAX_RECORD];
                let n = this.seal(Seal::CloseNotify(records))?;
                this.session.unsent.extend_from_slice(&records[..n]);
                io::Result::Ok(())
            });
            this.session.write_closed = true;
        }
        ready!(this.poll_send_unsent(cx))?;
        match ready!(Pin::new(&mut this.io).poll_shutdown(cx)) {
            // Not connected any more: as shut as it gets.
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Poll::Ready(Ok(())),
            r => Poll::Ready(r),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rustls::pki_types::{PrivatePkcs8KeyDer, ServerName};
    use rustls::{ClientConfig, HandshakeKind, RootCertStore};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio_rustls::client::TlsStream as ClientStream;
    use tokio_rustls::TlsConnector;

    use super::*;

    /// A server config (`h2`, `http/1.1`, session tickets) and a client
    /// config that trusts its certificate.
    fn configs() -> (Arc<ServerConfig>, ClientConfig) {
        configs_for(rustls::DEFAULT_VERSIONS)
    }

    /// [`configs`], the client speaking only `versions`.
    fn configs_for(
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> (Arc<ServerConfig>, ClientConfig) {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let key = PrivatePkcs8KeyDer::from(made.signing_key.serialize_der());
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![made.cert.der().clone()], key.into())
            .unwrap();
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        server.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(made.cert.der().clone()).unwrap();
        let client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (Arc::new(server), client)
    }

    /// The server's socket: moves at most `read` / `write` bytes per call,
    /// and counts what was written.
    struct Trickle {
        io: DuplexStream,
        read: usize,
        write: usize,
        written: usize,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let mut room = vec![0; buf.remaining().min(self.read)];
            let mut small = ReadBuf::new(&mut room);
            ready!(Pin::new(&mut self.io).poll_read(cx, &mut small))?;
            buf.put_slice(small.filled());
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.write);
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &buf[..n]))?;
            self.written += n;
            Poll::Ready(Ok(n))
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_shutdown(cx)
        }
    }

    type Server = TlsStream<Trickle>;
    type Client = ClientStream<DuplexStream>;

    /// A handshaken pair over an in-memory pipe of `capacity` bytes, the
    /// server's socket moving `read` / `write` bytes per call.
    async fn pair_with(
        read: usize,
        write: usize,
        capacity: usize,
        server: Arc<ServerConfig>,
        client: Arc<ClientConfig>,
    ) -> (Server, Client) {
        let (c, s) = tokio::io::duplex(capacity);
        let trickle = Trickle {
            io: s,
            read,
            write,
            written: 0,
        };
        let name = ServerName::try_from("localhost").unwrap();
        let (s, c) = within(async {
            tokio::join!(
                accept(trickle, server),
                TlsConnector::from(client).connect(name, c)
            )
        })
        .await;
        (s.expect("the server's handshake"), c.expect("the client's"))
    }

    async fn pair(read: usize, write: usize) -> (Server, Client) {
        let (server, client) = configs();
        pair_with(read, write, 64 * 1024, server, Arc::new(client)).await
    }

    async fn within<F: std::future::Future>(f: F) -> F::Output {
        tokio::time::timeout(Duration::from_secs(10), f)
            .await
            .expect("done in time")
    }

    /// The point of the stream: between reads and writes it keeps nothing.
    fn holds_nothing(s: &Server) {
        assert_eq!(s.received.capacity(), 0, "received bytes kept");
        assert_eq!(s.session.plain.capacity(), 0, "plaintext kept");
        assert_eq!(s.session.unsent.capacity(), 0, "records kept");
    }

    /// A recognisable pattern of `n` bytes.
    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[tokio::test]
    async fn handshakes_and_talks_when_the_socket_gives_one_byte_at_a_time() {
        let (server, client) = configs();
        let mut client = client;
        client.alpn_protocols = vec![b"h2".to_vec()];
        let (mut s, mut c) = pair_with(1, 1, 64 * 1024, server, Arc::new(client)).await;
        assert_eq!(s.alpn_protocol(), Some(&b"h2"[..]));
        holds_nothing(&s);

        c.write_all(b"hello").await.unwrap();
        c.flush().await.unwrap();
        let mut got = [0; 5];
        within(s.read_exact(&mut got)).await.unwrap();
        assert_eq!(&got, b"hello");
        s.write_all(b"world").await.unwrap();
        s.flush().await.unwrap();
        within(c.read_exact(&mut got)).await.unwrap();
        assert_eq!(&got, b"world");
        holds_nothing(&s);
    }

    #[tokio::test]
    async fn a_record_split_across_reads_is_kept_only_until_it_is_whole() {
        let (mut s, mut c) = pair(1000, usize::MAX).await;
        let sent = pattern(10_000);
        c.write_all(&sent).await.unwrap();
        c.flush().await.unwrap();
        let mut got = vec![0; sent.len()];
        let mut n = within(s.read(&mut got)).await.unwrap();
        // The first read returns only once the record is whole.
        assert_eq!(n, sent.len(), "one record, delivered whole");
        while n < sent.len() {
            n += within(s.read(&mut got[n..])).await.unwrap();
        }
        assert_eq!(got, sent);
        holds_nothing(&s);
    }

    #[tokio::test]
    async fn a_100_kib_write_reaches_the_peer_whole() {
        // The socket takes 1,000 bytes per call and the pipe 8 KiB, so
        // writes keep unsent tails and wait for them.
        let (server, client) = configs();
        let (mut s, mut c) = pair_with(usize::MAX, 1000, 8 * 1024, server, Arc::new(client)).await;
        let sent = pattern(100 * 1024);
        let reader = tokio::spawn(async move {
            let mut got = vec![0; 100 * 1024];
            c.read_exact(&mut got).await.unwrap();
            got
        });
        within(async {
            s.write_all(&sent).await.unwrap();
            s.flush().await.unwrap();
        })
        .await;
        assert_eq!(within(reader).await.unwrap(), sent);
        holds_nothing(&s);
    }

    #[tokio::test]
    async fn a_large_record_read_into_a_small_buffer_keeps_the_rest_until_read() {
        let (mut s, mut c) = pair(usize::MAX, usize::MAX).await;
        let sent = pattern(16 * 1024);
        c.write_all(&sent).await.unwrap();
        c.flush().await.unwrap();
        let mut got = Vec::new();
        let mut small = [0; 7];
        while got.len() < sent.len() {
            let n = within(s.read(&mut small)).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&small[..n]);
            if got.len() < sent.len() {
                assert_eq!(
                    s.session.plain.len() - s.session.plain_read,
                    sent.len() - got.len()
                );
            }
        }
        assert_eq!(got, sent);
        holds_nothing(&s);
    }

    #[tokio::test]
    async fn vectored_writes_are_gathered_into_one_record() {
        let (mut s, mut c) = pair(usize::MAX, usize::MAX).await;
        assert!(s.is_write_vectored());
        let before = s.io.written;
        let parts = [&b"ab"[..], b"", b"cde", &pattern(1000)];
        let slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
        let n = s.write_vectored(&slices).await.unwrap();
        assert_eq!(n, 1005);
        // TLS 1.3: a 5-byte header, the content type and a 16-byte tag.
        assert_eq!(s.io.written - before, n + 22, "one record");
        let mut got = vec![0; n];
        within(c.read_exact(&mut got)).await.unwrap();
        assert_eq!(got, parts.concat());
        holds_nothing(&s);
    }

    #[tokio::test]
    async fn close_notify_goes_both_ways() {
        let (mut s, mut c) = pair(usize::MAX, usize::MAX).await;
        // The client's close_notify ends what the server reads...
        c.shutdown().await.unwrap();
        let mut buf = [0; 16];
        assert_eq!(within(s.read(&mut buf)).await.unwrap(), 0);
        assert_eq!(
            within(s.read(&mut buf)).await.unwrap(),
            0,
            "and stays ended"
        );
        // ...and the server may still answer, then close in turn.
        s.write_all(b"bye").await.unwrap();
        within(s.shutdown()).await.unwrap();
        let mut got = Vec::new();
        within(c.read_to_end(&mut got)).await.unwrap();
        assert_eq!(got, b"bye", "then a clean end: close_notify");
        // The socket's write side was shut after it.
        assert_eq!(within(c.get_mut().0.read(&mut buf)).await.unwrap(), 0);
        assert_eq!(
            s.write(b"more").await.unwrap_err().kind(),
            io::ErrorKind::BrokenPipe
        );
        holds_nothing(&s);
    }

    #[tokio::test]
    async fn garbage_after_the_handshake_is_an_error_and_an_alert() {
        let bad_mac = [&[0x17, 0x03, 0x03, 0x00, 0x20][..], &[0x55; 0x20]].concat();
        let oversized = [&[0x17, 0x03, 0x03, 0xff, 0xff][..], &[0; 64]].concat();
        for garbage in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            &bad_mac,
            &oversized,
            &[0x16, 0x03, 0x03, 0x00, 0x04, 0x01, 0x00, 0x00, 0x00],
            &[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28],
        ] {
            let (mut s, mut c) = pair(usize::MAX, usize::MAX).await;
            c.get_mut().0.write_all(garbage).await.unwrap();
            let mut buf = [0; 16];
            let e = within(s.read(&mut buf)).await.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{garbage:?}: {e}");
            let e = within(s.read(&mut buf)).await.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "and stays failed");
            // The client learns why: rustls' alert reached it.
            let e = within(c.read(&mut buf)).await.unwrap_err();
            assert!(e.to_string().contains("alert"), "{garbage:?}: {e}");
            within(s.shutdown()).await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_peer_that_closes_mid_record_or_without_close_notify_is_an_unexpected_eof() {
        let (mut s, mut c) = pair(usize::MAX, usize::MAX).await;
        let raw = &mut c.get_mut().0;
        raw.write_all(&[0x17, 0x03, 0x03, 0x00, 0x40, 1, 2, 3])
            .await
            .unwrap();
        raw.shutdown().await.unwrap();
        let e = within(s.read(&mut [0; 16])).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert!(e.to_string().contains("middle of a TLS record"), "{e}");

        let (mut s, mut c) = pair(usize::MAX, usize::MAX).await;
        c.get_mut().0.shutdown().await.unwrap();
        let e = within(s.read(&mut [0; 16])).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert!(e.to_string().contains("without a TLS close_notify"), "{e}");
    }

    /// A small deterministic generator of hostile bytes.
    fn noise(seed: &mut u64, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| {
                *seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (*seed >> 56) as u8
            })
            .collect()
    }

    #[tokio::test]
    async fn noise_instead_of_a_handshake_fails_it_without_a_panic() {
        let (config, _) = configs();
        let mut seed = 12;
        for i in 0..64 {
            let mut sent = noise(&mut seed, 1 + i * 5);
            if i % 2 == 0 {
                // A record header that claims a ClientHello.
                sent.splice(
                    0..0,
                    [0x16, 0x03, 0x01, 0x00, (sent.len() as u8).max(4), 0x01],
                );
            }
            let (mut c, s) = tokio::io::duplex(64 * 1024);
            c.write_all(&sent).await.unwrap();
            c.shutdown().await.unwrap();
            assert!(within(accept(s, config.clone())).await.is_err(), "{sent:?}");
        }
    }

    #[tokio::test]
    async fn a_handshake_message_over_a_records_room_fails_the_handshake() {
        let (config, _) = configs();
        let (mut c, s) = tokio::io::duplex(64 * 1024);
        // A ClientHello that says it is 30,000 bytes long, in two records.
        let mut hello = vec![0x01, 0x00, 0x75, 0x30];
        hello.resize(30_004, 0);
        for part in hello.chunks(MAX_PLAINTEXT) {
            let len = (part.len() as u16).to_be_bytes();
            c.write_all(&[0x16, 0x03, 0x01, len[0], len[1]])
                .await
                .unwrap();
            c.write_all(part).await.unwrap();
        }
        let e = within(accept(s, config)).await.err().expect("refused");
        assert!(e.to_string().contains("over 18 KiB"), "{e}");
    }

    #[tokio::test]
    async fn noise_after_the_handshake_is_an_error_without_a_panic() {
        let mut seed = 34;
        for i in 0..16 {
            let (mut s, mut c) = pair(usize::MAX, 1 + i * 100).await;
            let mut sent = noise(&mut seed, 1 + i * 300);
            if i % 2 == 0 {
                // An application data header, so the noise is decrypted.
                let len = (sent.len() as u16).to_be_bytes();
                sent.splice(0..0, [0x17, 0x03, 0x03, len[0], len[1]]);
            }
            c.get_mut().0.write_all(&sent).await.unwrap();
            c.get_mut().0.shutdown().await.unwrap();
            assert!(within(s.read(&mut [0; 64])).await.is_err(), "{sent:?}");
            let _ = within(s.shutdown()).await;
        }
    }

    #[tokio::test]
    async fn a_key_update_from_the_peer_is_followed() {
        let (mut s, mut c) = pair(usize::MAX, usize::MAX).await;
        c.get_mut().1.refresh_traffic_keys().unwrap();
        c.write_all(b"after the update").await.unwrap();
        c.flush().await.unwrap();
        let mut got = [0; 16];
        within(s.read_exact(&mut got)).await.unwrap();
        assert_eq!(&got, b"after the update");
        // The client asked for our keys to change too: our answer goes
        // before what we write next.
        s.write_all(b"answer").await.unwrap();
        let mut got = [0; 6];
        within(c.read_exact(&mut got)).await.unwrap();
        assert_eq!(&got, b"answer");
    }

    #[tokio::test]
    async fn a_session_ticket_lets_the_client_resume() {
        let (server, client) = configs();
        let client = Arc::new(client);
        for kind in [HandshakeKind::Full, HandshakeKind::Resumed] {
            let (mut s, mut c) = pair_with(
                usize::MAX,
                usize::MAX,
                64 * 1024,
                server.clone(),
                client.clone(),
            )
            .await;
            assert_eq!(c.get_ref().1.handshake_kind(), Some(kind));
            // The tickets came after the handshake: reading takes them in.
            s.write_all(b"x").await.unwrap();
            within(c.read_exact(&mut [0])).await.unwrap();
        }
    }

    #[tokio::test]
    async fn tls_1_2_works_too() {
        let (server, client) = configs_for(&[&rustls::version::TLS12]);
        let (mut s, mut c) = pair_with(1, 1, 64 * 1024, server, Arc::new(client)).await;
        assert_eq!(
            c.get_ref().1.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_2)
        );
        c.write_all(b"twelve").await.unwrap();
        c.flush().await.unwrap();
        let mut got = [0; 6];
        within(s.read_exact(&mut got)).await.unwrap();
        assert_eq!(&got, b"twelve");
        s.write_all(b"ok").await.unwrap();
        within(c.read_exact(&mut got[..2])).await.unwrap();
        assert_eq!(&got[..2], b"ok");
        holds_nothing(&s);
    }
}
