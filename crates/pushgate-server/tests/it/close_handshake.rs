//! Refusals that reach a client which is still sending (RFC 6455 §7.1.1,
//! RFC 9112 §9.6): a WebSocket closed for a protocol violation, a body too
//! large. Closing a socket with unread bytes makes the kernel answer with a
//! reset instead of a FIN, and a reset can destroy the refusal in flight;
//! so the server half-closes after its last word and reads what still
//! comes. Each client here keeps sending while it reads, and must see the
//! whole refusal and then the end of the stream, never a reset — every
//! time, so each case runs many rounds.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;

use crate::common::*;
use pushgate_server::metrics::Limit;

const ROUNDS: usize = 50;
/// Small, so that a refusal comes at once.
const MAX: usize = 1024;

async fn server() -> TestServer {
    start_with(|c| c.max_message_size = MAX).await
}

/// How a round ended for the client: what it read before the end of the
/// stream, and the error that ended its reading or its writing instead of
/// a FIN, if one did.
struct Round {
    got: Vec<u8>,
    reset: Option<std::io::Error>,
}

/// Writes `opening`, then `filler` again and again until the server has
/// answered and ended the stream, reading everything it sends meanwhile.
/// On a reset one half fails: the half that meets it first takes the
/// error, and the other may see a plain end of stream (Linux), so both
/// are watched.
async fn refused_while_sending(stream: TcpStream, opening: Vec<u8>, filler: Vec<u8>) -> Round {
    let (mut rd, mut wr) = stream.into_split();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let writer = tokio::spawn(async move {
        let send = async {
            wr.write_all(&opening).await?;
            loop {
                wr.write_all(&filler).await?;
            }
        };
        tokio::select! {
            r = send => r,
            _ = stopped => Ok(()),
        }
        // Dropping the write half sends our FIN, which ends the server's
        // lingering read.
    });
    let read = within(
        "the server's answer and end of stream",
        read_to_end(&mut rd),
    )
    .await;
    let _ = stop.send(());
    let wrote = within("the writer to stop", writer)
        .await
        .expect("the writer does not panic");
    match (read, wrote) {
        (Ok(got), Ok(())) => Round { got, reset: None },
        (Ok(got), Err(e)) | (Err((got, e)), _) => Round {
            got,
            reset: Some(e),
        },
    }
}

async fn read_to_end(rd: &mut OwnedReadHalf) -> Result<Vec<u8>, (Vec<u8>, std::io::Error)> {
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match rd.read(&mut chunk).await {
            Ok(0) => return Ok(got),
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) => return Err((got, e)),
        }
    }
}

/// What a round read, which must have ended with the server's FIN, the
/// client's writes never reset.
fn ended_cleanly(round: usize, r: Round) -> Vec<u8> {
    if let Some(e) = r.reset {
        panic!(
            "round {round}: the connection ended with {e} instead of a FIN, after {:?}",
            String::from_utf8_lossy(&r.got)
        );
    }
    r.got
}

/// The status and the JSON body of the one response `got` holds.
fn response(round: usize, got: &[u8]) -> (u16, serde_json::Value) {
    let text = String::from_utf8_lossy(got);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("round {round}: no whole response head: {text:?}"));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok());
    let json = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("round {round}: not one JSON body ({e}): {text:?}"));
    (status.unwrap_or(0), json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_size_limit_gets_its_413_while_the_client_still_sends() {
    let server = server().await;
    let host = server.addr;
    for round in 0..ROUNDS {
        let path = if round % 2 == 0 {
            "/api/publish"
        } else {
            "/command"
        };
        let opening = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            1u64 << 30
        );
        let stream = RawHttp::connect(server.addr, None).await.stream;
        let ended =
            refused_while_sending(stream, opening.into_bytes(), vec![b' '; 16 * 1024]).await;
        let (status, body) = response(round, &ended_cleanly(round, ended));
        assert_eq!(
            (status, &body["code"]),
            (413, &"too_large".into()),
            "round {round} {path}"
        );
    }
    assert!(server.state.metrics.limited_count(Limit::MessageSize) >= ROUNDS as u64);
}

/// A chunked body is hyper's to read; its 413 must reach the client too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_over_the_size_limit_gets_its_413_while_the_client_still_sends() {
    let server = server().await;
    let host = server.addr;
    let mut chunk = format!("{:x}\r\n", 16 * 1024).into_bytes();
    chunk.extend_from_slice(&[b' '; 16 * 1024]);
    chunk.extend_from_slice(b"\r\n");
    for round in 0..ROUNDS {
        let opening = format!(
            "POST /api/publish HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
             Transfer-Encoding: chunked\r\n\r\n"
        );
        let stream = RawHttp::connect(server.addr, None).await.stream;
        let ended = refused_while_sending(stream, opening.into_bytes(), chunk.clone()).await;
        let (status, body) = response(round, &ended_cleanly(round, ended));
        assert_eq!(
            (status, &body["code"]),
            (413, &"too_large".into()),
            "round {round}"
        );
    }
    assert!(server.state.metrics.limited_count(Limit::MessageSize) >= ROUNDS as u64);
}

/// A client frame header declaring `len` bytes, masked (with key 0: the
/// payload goes as it is) or not.
fn frame_header(first: u8, masked: bool, len: u64) -> Vec<u8> {
    let mut out = vec![first, if masked { 0x80 | 127 } else { 127 }];
    out.extend_from_slice(&len.to_be_bytes());
    if masked {
        out.extend_from_slice(&[0; 4]);
    }
    out
}

/// The code of the one frame `got` holds, which must be a close frame.
fn close_code(round: usize, what: &str, got: &[u8]) -> u16 {
    assert!(
        got.len() >= 4 && got[0] == 0x88 && got.len() == 2 + got[1] as usize,
        "round {round}, {what}: not exactly one close frame: {got:?}"
    );
    u16::from_be_bytes([got[2], got[3]])
}

async fn ws_refusals(
    addr: std::net::SocketAddr,
    what: &str,
    opening: Vec<u8>,
    filler: &[u8],
    code: u16,
) {
    for round in 0..ROUNDS {
        let raw = raw_ws(addr, "/ws", None).await;
        let ended = refused_while_sending(raw.stream, opening.clone(), filler.to_vec()).await;
        let got = ended_cleanly(round, ended);
        assert_eq!(close_code(round, what, &got), code, "round {round}, {what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_over_the_size_limit_gets_its_1009_while_the_client_still_sends() {
    let server = server().await;
    let huge = frame_header(0x81, true, 1 << 30);
    ws_refusals(server.addr, "a 1 GiB frame", huge, &[0; 16 * 1024], 1009).await;
    assert!(server.state.metrics.limited_count(Limit::MessageSize) >= ROUNDS as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_and_utf8_violations_get_their_close_codes_while_the_client_still_sends() {
    let server = server().await;
    // Client frames must be masked: 1002, and the frame goes on and on.
    let unmasked = frame_header(0x81, false, 1 << 30);
    ws_refusals(
        server.addr,
        "an unmasked frame",
        unmasked,
        &[0; 16 * 1024],
        1002,
    )
    .await;
    // Text that is not UTF-8 from its first byte: 1007, and more of it.
    let mut bad_text = frame_header(0x81, true, MAX as u64 - 16);
    bad_text.extend_from_slice(&[0xff; 64]);
    ws_refusals(
        server.addr,
        "text that is not UTF-8",
        bad_text,
        &[0xff; 16 * 1024],
        1007,
    )
    .await;
}
