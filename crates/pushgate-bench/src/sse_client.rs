//! Server-Sent Events over plain HTTP/1.1: an incremental line splitter, the
//! WHATWG event parser on top of it, and the subscriber connection.

use std::net::IpAddr;

use tokio::io::AsyncWriteExt;

use crate::error::{BenchError, ErrorKind};
use crate::http::{self, BodyFraming, ChunkedDecoder};
use crate::marker;
use crate::net;
use crate::stats::Subscriber;
use crate::target::Target;
use crate::tls::{self, TlsClient};

/// Longest line kept; longer ones mean the peer is not sending what we think.
pub const MAX_LINE: usize = 16 * 1024 * 1024;

/// Splits a stream into lines ended by CRLF, LF or CR (all three are legal in
/// SSE), keeping only an unfinished line between calls.
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
    /// The last chunk ended in CR: a LF starting the next one belongs to it.
    skip_lf: bool,
}

impl LineSplitter {
    pub fn feed(&mut self, input: &[u8], mut on_line: impl FnMut(&[u8])) -> Result<(), BenchError> {
        let mut i = 0;
        if self.skip_lf && !input.is_empty() {
            self.skip_lf = false;
            if input[0] == b'\n' {
                i = 1;
            }
        }
        while i < input.len() {
            let Some(off) = memchr::memchr2(b'\n', b'\r', &input[i..]) else {
                if self.partial.len() + input.len() - i > MAX_LINE {
                    return Err(BenchError::protocol(format!(
                        "stream line longer than {MAX_LINE} bytes"
                    )));
                }
                self.partial.extend_from_slice(&input[i..]);
                break;
            };
            let end = i + off;
            if self.partial.is_empty() {
                on_line(&input[i..end]);
            } else {
                self.partial.extend_from_slice(&input[i..end]);
                on_line(&self.partial);
                net::trim(&mut self.partial);
            }
            i = end + 1;
            if input[end] == b'\r' {
                match input.get(i) {
                    Some(b'\n') => i += 1,
                    Some(_) => {}
                    None => self.skip_lf = true,
                }
            }
        }
        Ok(())
    }
}

/// The event-stream interpretation (WHATWG HTML §9.2.6) of lines: `event:`
/// and `data:` fields accumulate until a blank line dispatches them.
#[derive(Debug, Default)]
pub struct SseParser {
    lines: LineSplitter,
    event: Vec<u8>,
    data: Vec<u8>,
}

impl SseParser {
    /// Calls `on_event(name, data)` for every complete event in `input`.
    pub fn feed(
        &mut self,
        input: &[u8],
        mut on_event: impl FnMut(&[u8], &[u8]),
    ) -> Result<(), BenchError> {
        let SseParser { lines, event, data } = self;
        lines.feed(input, |line| {
            if line.is_empty() {
                if !data.is_empty() {
                    data.pop(); // the LF after the last data line
                    let name: &[u8] = if event.is_empty() { b"message" } else { event };
                    on_event(name, data);
                }
                net::trim(event);
                net::trim(data);
                return;
            }
            if line[0] == b':' {
                return; // comment, e.g. keep-alive
            }
            let (field, value) = match memchr::memchr(b':', line) {
                Some(p) => {
                    let v = &line[p + 1..];
                    (&line[..p], v.strip_prefix(b" ").unwrap_or(v))
                }
                None => (line, &[][..]),
            };
            match field {
                b"event" => {
                    event.clear();
                    event.extend_from_slice(value);
                }
                b"data" => {
                    data.extend_from_slice(value);
                    data.push(b'\n');
                }
                // id and retry matter for reconnecting, which a benchmark does not do.
                _ => {}
            }
        })
    }
}

/// Chunked or raw body bytes of an endless response.
enum StreamBody {
    Chunked(ChunkedDecoder),
    Raw,
}

/// How a streamed body is read.
enum Parse {
    Sse(SseParser),
    /// Plain mode on a server that streams something other than SSE: every
    /// line is looked at for our marker.
    Lines(LineSplitter),
}

/// Reads a subscriber's endless response body, whatever carries it (an
/// HTTP/1.1 connection, or an HTTP/2 stream).
pub(crate) struct StreamReader {
    body: StreamBody,
    parse: Parse,
    plain: bool,
}

impl StreamReader {
    /// `chunked`: the body is HTTP/1.1 chunked (never over HTTP/2);
    /// `event_stream`: the server said `text/event-stream`.
    pub(crate) fn new(chunked: bool, event_stream: bool, plain: bool) -> Self {
        StreamReader {
            body: if chunked {
                StreamBody::Chunked(ChunkedDecoder::new())
            } else {
                StreamBody::Raw
            },
            parse: if event_stream || !plain {
                Parse::Sse(SseParser::default())
            } else {
                Parse::Lines(LineSplitter::default())
            },
            plain,
        }
    }

    /// Counts the events in `data`; `true` once a chunked body has ended.
    pub(crate) fn feed(&mut self, data: &[u8], sub: &mut Subscriber) -> Result<bool, BenchError> {
        let now = marker::unix_nanos();
        let StreamReader { body, parse, plain } = self;
        let plain = *plain;
        let mut on_body = |bytes: &[u8]| match parse {
            Parse::Sse(p) => p.feed(bytes, |name, data| {
                if !plain && name == b"subscribed" {
                    sub.ack();
                } else {
                    sub.on_message(data, now);
                }
            }),
            Parse::Lines(l) => l.feed(bytes, |line| {
                sub.on_message(line, now);
            }),
        };
        match body {
            StreamBody::Raw => on_body(data)?,
            StreamBody::Chunked(dec) => {
                let mut result = Ok(());
                dec.decode(data, |bytes| {
                    if result.is_ok() {
                        result = on_body(bytes);
                    }
                })?;
                result?;
                return Ok(dec.is_done());
            }
        }
        Ok(false)
    }
}

/// Subscribes with a GET that returns an endless stream, and reads it until it ends.
///
/// With `plain`, the 200 response counts as subscribed; otherwise the
/// server's `event: subscribed` does.
pub async fn run(
    tls: Option<&TlsClient>,
    target: &Target,
    source: Option<IpAddr>,
    sub: &mut Subscriber,
    plain: bool,
) -> Result<(), BenchError> {
    let mut stream = tls::connect(tls, target.addr, source).await?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n",
        target.path_and_query, target.authority
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| BenchError::io("sending SSE request", e))?;
    drop(request);
    let mut pending = Vec::new();
    let head = http::read_head(&mut stream, &mut pending).await?;
    if head.status != 200 {
        return Err(BenchError::new(
            ErrorKind::Http,
            format!("stream request answered {}", head.status_line()),
        ));
    }
    sub.connected();
    if plain {
        sub.mark_subscribed();
    }
    let mut reader = StreamReader::new(
        head.framing == BodyFraming::Chunked,
        head.event_stream,
        plain,
    );
    let mut ended = !pending.is_empty() && reader.feed(&pending, sub)?;
    drop(pending);
    while !ended {
        ended = match net::read_with(&mut stream, |data| reader.feed(data, sub)).await {
            Ok(Some(r)) => r?,
            Ok(None) => true,
            Err(e) => return Err(BenchError::io("reading event stream", e)),
        };
    }
    Err(BenchError::new(
        ErrorKind::Connect,
        "server ended the event stream",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[&[u8]]) -> Vec<String> {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        for piece in input {
            s.feed(piece, |l| out.push(String::from_utf8_lossy(l).into_owned()))
                .unwrap();
        }
        out
    }

    #[test]
    fn line_endings_across_pieces() {
        assert_eq!(lines(&[b"a\nb\r\nc\rd\n"]), ["a", "b", "c", "d"]);
        assert_eq!(lines(&[b"a\r", b"\nb\r", b"c\n"]), ["a", "b", "c"]);
        assert_eq!(lines(&[b"he", b"ll", b"o\n\n"]), ["hello", ""]);
        assert_eq!(lines(&[b"x\r", b"", b"\n"]), ["x"]);
        assert_eq!(lines(&[b"\r\r\n"]), ["", ""]);
        assert_eq!(lines(&[b"no end"]), Vec::<String>::new());
    }

    fn events(stream: &[u8], step: usize) -> Vec<(String, String)> {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        for piece in stream.chunks(step) {
            p.feed(piece, |n, d| {
                out.push((
                    String::from_utf8_lossy(n).into_owned(),
                    String::from_utf8_lossy(d).into_owned(),
                ))
            })
            .unwrap();
        }
        out
    }

    #[test]
    fn pushgate_stream() {
        let stream = b"retry: 3000\n\n\
            event: subscribed\ndata: {\"type\":\"subscribed\",\"channel\":\"a\"}\n\n\
            : ping\n\n\
            id: YQ.e.1\nevent: message\ndata: {\"data\":\"pgb:1\"}\n\n\
            data: first\r\ndata:second\r\n\r\n\
            data\n\n\
            event: ignored-without-data\n\n\
            id: 3\ndata: tail-without-blank-line";
        for step in [1, 2, 5, stream.len()] {
            assert_eq!(
                events(stream, step),
                vec![
                    (
                        "subscribed".into(),
                        "{\"type\":\"subscribed\",\"channel\":\"a\"}".into()
                    ),
                    ("message".into(), "{\"data\":\"pgb:1\"}".into()),
                    ("message".into(), "first\nsecond".into()),
                    ("message".into(), "".into()),
                ],
                "step {step}"
            );
        }
    }

    #[test]
    fn overlong_line_is_an_error() {
        let mut s = LineSplitter::default();
        let chunk = vec![b'a'; 1024 * 1024];
        let mut result = Ok(());
        for _ in 0..17 {
            result = s.feed(&chunk, |_| {});
            if result.is_err() {
                break;
            }
        }
        assert!(result.is_err());
    }
}
