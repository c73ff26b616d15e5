//! The little of Redis's protocol (RESP2) that `publish --redis` speaks: one
//! `XADD` command out, one reply back, on a keep-alive connection.
//!
//! Hand-written rather than a Redis client crate: the load loop needs one
//! command and the four reply types an `XADD` can produce, with the same
//! socket, scratch buffer and one-request-at-a-time rhythm as the HTTP
//! publishers, so the figures compare servers, not client libraries.

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::error::{BenchError, ErrorKind};
use crate::net;

/// Replies are an entry ID or an error line; a larger one means something is off.
const MAX_REPLY: usize = 64 * 1024;

/// Writes `XADD key MAXLEN ~ maxlen * field value`: append to the stream
/// `key`, trimming it to about `maxlen` entries (the `~` lets Redis trim
/// whole radix-tree nodes, as it is normally used).
pub fn xadd(out: &mut Vec<u8>, key: &str, maxlen: u64, field: &str, value: &[u8]) {
    use std::io::Write as _;
    out.clear();
    out.extend_from_slice(b"*8\r\n");
    let maxlen = maxlen.to_string();
    for arg in [
        b"XADD".as_slice(),
        key.as_bytes(),
        b"MAXLEN",
        b"~",
        maxlen.as_bytes(),
        b"*",
        field.as_bytes(),
        value,
    ] {
        let _ = write!(out, "${}\r\n", arg.len());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// One reply, as far as a publisher cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A simple string, an integer or a bulk string (an `XADD`'s entry ID).
    Value,
    /// A null bulk string: `XADD … NOMKSTREAM` found no stream.
    Null,
    /// An error reply (`-ERR …`), its text.
    Error(String),
}

/// Parses the reply at the start of `buf`: `None` while incomplete, else
/// the reply and its length.
pub fn parse_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, BenchError> {
    let Some(eol) = memchr::memmem::find(buf, b"\r\n") else {
        if buf.len() > MAX_REPLY {
            return Err(BenchError::protocol("Redis reply line too long"));
        }
        return Ok(None);
    };
    let Some((&kind, line)) = buf[..eol].split_first() else {
        return Err(BenchError::protocol("empty Redis reply line"));
    };
    let text = || String::from_utf8_lossy(line).into_owned();
    match kind {
        b'+' | b':' => Ok(Some((Reply::Value, eol + 2))),
        b'-' => Ok(Some((Reply::Error(text()), eol + 2))),
        b'$' => {
            let len: i64 = text()
                .parse()
                .map_err(|_| BenchError::protocol(format!("bad Redis bulk length {:?}", text())))?;
            if len < 0 {
                return Ok(Some((Reply::Null, eol + 2)));
            }
            let len = usize::try_from(len)
                .ok()
                .filter(|n| *n <= MAX_REPLY)
                .ok_or_else(|| BenchError::protocol("Redis bulk reply too large"))?;
            let end = eol + 2 + len + 2;
            if buf.len() < end {
                return Ok(None);
            }
            if &buf[end - 2..end] != b"\r\n" {
                return Err(BenchError::protocol("Redis bulk reply without its CRLF"));
            }
            Ok(Some((Reply::Value, end)))
        }
        _ => Err(BenchError::protocol(format!(
            "unexpected Redis reply {:?}",
            String::from_utf8_lossy(&buf[..eol.min(80)])
        ))),
    }
}

/// One keep-alive connection to Redis, one command at a time.
pub struct RespConn {
    stream: TcpStream,
    pending: Vec<u8>,
}

impl RespConn {
    pub async fn connect(addr: std::net::SocketAddr) -> Result<Self, BenchError> {
        let stream = net::connect(addr, None)
            .await
            .map_err(|e| BenchError::new(ErrorKind::Connect, format!("{addr}: {e}")))?;
        Ok(RespConn {
            stream,
            pending: Vec::new(),
        })
    }

    /// Sends `command` and waits for its reply.
    pub async fn call(&mut self, command: &[u8]) -> Result<Reply, BenchError> {
        self.stream
            .write_all(command)
            .await
            .map_err(|e| BenchError::io("sending command", e))?;
        loop {
            if let Some((reply, used)) = parse_reply(&self.pending)? {
                self.pending.drain(..used);
                return Ok(reply);
            }
            let pending = &mut self.pending;
            net::read_with(&mut self.stream, |data| pending.extend_from_slice(data))
                .await
                .map_err(|e| BenchError::io("reading reply", e))?
                .ok_or_else(|| {
                    BenchError::new(ErrorKind::Connect, "Redis closed the connection")
                })?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xadd_is_one_resp_array() {
        let mut out = b"left over".to_vec();
        xadd(&mut out, "bench-3", 1000, "data", b"\"pgb:x\"");
        assert_eq!(
            out,
            b"*8\r\n$4\r\nXADD\r\n$7\r\nbench-3\r\n$6\r\nMAXLEN\r\n$1\r\n~\r\n\
              $4\r\n1000\r\n$1\r\n*\r\n$4\r\ndata\r\n$7\r\n\"pgb:x\"\r\n"
        );
    }

    #[test]
    fn replies() {
        let id = b"$15\r\n1700000000000-0\r\n";
        assert_eq!(parse_reply(id).unwrap(), Some((Reply::Value, id.len())));
        assert_eq!(parse_reply(&id[..10]).unwrap(), None);
        assert_eq!(parse_reply(b"$15\r\n").unwrap(), None);
        assert_eq!(parse_reply(b"$-1\r\n+OK").unwrap(), Some((Reply::Null, 5)));
        assert_eq!(parse_reply(b"+OK\r\n").unwrap(), Some((Reply::Value, 5)));
        assert_eq!(parse_reply(b":12\r\n").unwrap(), Some((Reply::Value, 5)));
        assert_eq!(
            parse_reply(b"-OOM command not allowed\r\n").unwrap(),
            Some((Reply::Error("OOM command not allowed".into()), 26))
        );
        assert_eq!(parse_reply(b"-ERR").unwrap(), None);
        assert!(parse_reply(b"*1\r\n").is_err());
        assert!(parse_reply(b"$3\r\nabcde").is_err());
        assert!(parse_reply(b"$x\r\n").is_err());
    }
}
