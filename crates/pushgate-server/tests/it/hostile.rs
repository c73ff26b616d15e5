//! Hostile input against the real server (issue 5): malformed HTTP, a
//! slow-loris, WebSocket protocol violations written by hand, bad commands
//! on WebSocket and `POST /command`, and injection through data and names.
//!
//! Every case gets its documented answer, and in every test a bystander — a
//! WebSocket subscriber on its own channel — gets a message published after
//! each case, and at the end must have received every one, in order: no
//! hostile client disturbs the others.

use std::time::{Duration, Instant};

use crate::common::*;
use base64::Engine as _;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A client minding its own business on channel `bystander` while hostile
/// ones come and go.
struct Bystander {
    ws: Ws,
    /// Offsets received, in arrival order.
    received: Vec<u64>,
}

impl Bystander {
    async fn join(server: &TestServer) -> Bystander {
        let mut ws = server.ws("/ws?channel=bystander").await;
        assert_subscribed(&ws.next_json().await, "bystander");
        Bystander {
            ws,
            received: Vec::new(),
        }
    }

    /// Publishes the next message, labelled with the case just done, and
    /// waits for it to arrive.
    async fn still_served(&mut self, server: &TestServer, after: &str) {
        let after: String = after.chars().take(80).collect();
        let after = after.as_str();
        let n = self.received.len() as u64 + 1;
        server
            .publish("bystander", json!({"n": n, "after": after}))
            .await;
        let v = self.ws.next_json().await;
        assert_eq!(
            (
                v["type"].as_str(),
                v["offset"].as_u64(),
                v["data"]["after"].as_str()
            ),
            (Some("message"), Some(n), Some(after)),
            "the bystander after {after:?} got {v}"
        );
        self.received.push(v["offset"].as_u64().unwrap_or(0));
    }

    /// Every message published for it arrived, once, in order.
    async fn finish(mut self, server: &TestServer) {
        self.still_served(server, "the end").await;
        let n = self.received.len() as u64;
        assert_eq!(self.received, (1..=n).collect::<Vec<_>>());
    }
}

/// Content-Type and body of a refusal: a JSON error that reflects nothing
/// that could become markup or a new line.
fn assert_json_error(head: &str, body: &[u8], what: &str) -> Value {
    let head = head.to_ascii_lowercase();
    assert!(
        head.contains("content-type: application/json"),
        "{what}: a refusal is JSON, not something a browser renders: {head}"
    );
    assert!(
        !body
            .iter()
            .any(|b| matches!(b, b'<' | b'>' | b'\r' | b'\n')),
        "{what}: the error reflects markup or a line break: {}",
        String::from_utf8_lossy(body)
    );
    let v: Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{what}: body is not JSON ({e}): {body:?}"));
    assert_eq!(v["type"], "error", "{what}: {v}");
    assert!(v["message"].is_string(), "{what}: {v}");
    v
}

// ---------------------------------------------------------------------------
// Malformed HTTP

/// Writes `request` on a new connection, ignoring a failed write: the server
/// may refuse (and close) before it read everything.
async fn hostile_request(server: &TestServer, request: &[u8]) -> RawHttp {
    let mut conn = RawHttp::connect(server.addr, None).await;
    let _ = within("a hostile write", conn.stream.write_all(request)).await;
    conn
}

#[tokio::test]
async fn malformed_http_is_refused_with_a_4xx_and_the_connection_closed() {
    let server = start().await;
    let mut bystander = Bystander::join(&server).await;
    let host = format!("Host: {}\r\n", server.addr);
    let get = |headers: &str| format!("GET /poll?channel=a HTTP/1.1\r\n{host}{headers}\r\n");
    let many_headers: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    // (what, request, acceptable statuses)
    let cases: Vec<(&str, Vec<u8>, &[u16])> = vec![
        ("garbage request line", b"NOT HTTP AT ALL\r\n\r\n".to_vec(), &[400]),
        (
            "a TLS ClientHello",
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n".to_vec(),
            &[400],
        ),
        ("no version", b"GET /poll?channel=a\r\n\r\n".to_vec(), &[400]),
        (
            "unknown version",
            format!("GET /poll?channel=a HTTP/7.0\r\n{host}\r\n").into_bytes(),
            &[400],
        ),
        (
            "control byte in the method",
            format!("G\x01T /poll?channel=a HTTP/1.1\r\n{host}\r\n").into_bytes(),
            &[400],
        ),
        (
            "separator in the method",
            format!("GE(T) /poll?channel=a HTTP/1.1\r\n{host}\r\n").into_bytes(),
            &[400],
        ),
        (
            "header line without a colon",
            get("Bad Header Line\r\n").into_bytes(),
            &[400],
        ),
        ("space in a header name", get("X Bad: 1\r\n").into_bytes(), &[400]),
        (
            "space before the colon",
            get("X-Bad : 1\r\n").into_bytes(),
            &[400],
        ),
        ("empty header name", get(": nothing\r\n").into_bytes(), &[400]),
        ("NUL in a header value", get("X-Bad: a\0b\r\n").into_bytes(), &[400]),
        (
            "obsolete line folding",
            get("X-Bad: a\r\n folded\r\n").into_bytes(),
            &[400],
        ),
        (
            "two different Content-Lengths",
            format!(
                "POST /command HTTP/1.1\r\n{host}Content-Length: 2\r\nContent-Length: 15\r\n\r\n{{}}"
            )
            .into_bytes(),
            &[400],
        ),
        (
            "a request line over 64 KiB",
            format!(
                "GET /poll?channel=a&pad={} HTTP/1.1\r\n{host}\r\n",
                "x".repeat(70 * 1024)
            )
            .into_bytes(),
            // 414 when hyper read the whole line before its 64 KiB buffer was full.
            &[414, 431],
        ),
        ("200 headers", get(&many_headers).into_bytes(), &[431]),
        (
            "a 100 KiB header",
            get(&format!("X-Big: {}\r\n", "b".repeat(100 * 1024))).into_bytes(),
            &[431],
        ),
    ];
    for (what, request, statuses) in cases {
        let mut conn = hostile_request(&server, &request).await;
        let res = conn.read_response().await;
        assert!(
            statuses.contains(&res.status),
            "{what} answered {}",
            res.head
        );
        // hyper does not read on after a broken head: the connection ends.
        conn.expect_closed().await;
        bystander.still_served(&server, what).await;
    }
    bystander.finish(&server).await;
}

#[tokio::test]
async fn odd_but_well_formed_requests_are_answered_and_the_connection_kept() {
    let server = start().await;
    let mut bystander = Bystander::join(&server).await;
    let host = server.addr;
    // (what, request, status, whether the connection serves another request)
    let cases: &[(&str, String, u16, bool)] = &[
        (
            "unknown method",
            format!("BREW /poll?channel=a HTTP/1.1\r\nHost: {host}\r\n\r\n"),
            405,
            true,
        ),
        (
            "lower-case method",
            format!("get /poll?channel=a HTTP/1.1\r\nHost: {host}\r\n\r\n"),
            405,
            true,
        ),
        (
            "unknown path",
            format!("GET /%3Cscript%3E HTTP/1.1\r\nHost: {host}\r\n\r\n"),
            404,
            true,
        ),
        (
            "a bad chunk size in a body",
            format!(
                "POST /command HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n"
            ),
            400,
            // The body cannot be delimited any more: hyper ends the connection.
            false,
        ),
    ];
    for (what, request, status, kept) in cases {
        let mut conn = RawHttp::connect(server.addr, None).await;
        conn.send(request).await;
        let res = conn.read_response().await;
        assert_eq!(res.status, *status, "{what} answered {}", res.head);
        assert_json_error(&res.head, &res.body, what);
        if *kept {
            let next = conn.get("/poll?channel=a").await;
            assert_eq!(next.status, 200, "after {what}: {}", next.head);
        } else {
            conn.expect_closed().await;
        }
        bystander.still_served(&server, what).await;
    }
    bystander.finish(&server).await;
}

/// The one slow test: request heads that trickle in are cut off by the head
/// timeout (10 s, in the front and in hyper), while everyone else is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_heads_are_cut_off_while_others_are_served() {
    const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
    let server = start().await;
    let mut bystander = Bystander::join(&server).await;
    let host = server.addr;
    // What each sends at once; then one more byte every 200 ms, forever.
    let openings = [
        // Read by the front, which serves these GETs itself.
        format!("GET /sse?channel=loris HTTP/1.1\r\nHost: {host}\r\nX-Slow: "),
        // A POST: the front still reads the head before handing it to hyper.
        format!("POST /command HTTP/1.1\r\nHost: {host}\r\nX-Slow: "),
        // Over the front's 16 KiB: hyper reads this one, with its own timeout.
        format!(
            "GET /poll?channel=loris HTTP/1.1\r\nHost: {host}\r\nX-Pad: {}\r\nX-Slow: ",
            "p".repeat(17 * 1024)
        ),
    ];
    let lorises: Vec<_> = openings
        .into_iter()
        .map(|opening| tokio::spawn(slow_loris(server.addr, opening)))
        .collect();
    // Meanwhile the bystander is served, again and again.
    let mut rounds = 0;
    while lorises.iter().any(|l| !l.is_finished()) {
        rounds += 1;
        bystander
            .still_served(&server, &format!("loris round {rounds}"))
            .await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for loris in lorises {
        let (lasted, answer) = loris.await.expect("the slow-loris task does not panic");
        assert!(
            lasted >= HEAD_TIMEOUT - Duration::from_millis(500),
            "cut off after {lasted:?}, before the head timeout"
        );
        // The timeout ends the connection without an answer.
        assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer));
    }
    assert!(rounds >= 10, "the bystander was served {rounds} times");
    bystander.finish(&server).await;
}

/// The slow-loris of bodies ("R.U.D.Y."): a complete head promising a body
/// that then arrives a byte at a time. `read_body` (`api.rs`, used by
/// `/command` and `/api/publish`) gives a body `BODY_TIMEOUT` (10 s), then
/// answers 408 `timeout` and the connection ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_bodies_are_cut_off_like_slow_heads() {
    let server = start().await;
    let opening = format!(
        "POST /command HTTP/1.1\r\nHost: {}\r\nContent-Length: 60000\r\n\r\n{{\"type\":",
        server.addr
    );
    let (lasted, answer) = slow_loris(server.addr, opening).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"timeout\""), "{answer}");
    assert!(
        lasted >= Duration::from_millis(9_500),
        "cut off only at the timeout: {lasted:?}"
    );
}

/// Sends `opening`, then a byte every 200 ms until the server closes.
/// Returns how long the connection lasted and what the server sent.
async fn slow_loris(addr: std::net::SocketAddr, opening: String) -> (Duration, Vec<u8>) {
    let started = Instant::now();
    let mut stream = within("a TCP connect", TcpStream::connect(addr))
        .await
        .expect("the server accepts");
    stream.set_nodelay(true).unwrap();
    let (mut rd, mut wr) = stream.split();
    let trickle = async {
        if wr.write_all(opening.as_bytes()).await.is_err() {
            return;
        }
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tick.tick().await;
            if wr.write_all(b"z").await.is_err() {
                return;
            }
        }
    };
    let mut answer = Vec::new();
    let read_to_end = async {
        let mut chunk = [0u8; 1024];
        loop {
            match rd.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
            }
        }
    };
    // The 15 s step is the margin over the 10 s head timeout.
    within("the server to cut the slow-loris off", async {
        tokio::select! {
            () = read_to_end => {}
            // A failed write also means the server closed the connection.
            () = trickle => {}
        }
    })
    .await;
    let lasted = started.elapsed();
    (lasted, answer)
}

// ---------------------------------------------------------------------------
// WebSocket protocol violations, written frame by frame

const FIN: u8 = 0x80;
const TEXT: u8 = 0x1;
const CONTINUATION: u8 = 0x0;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;

/// A client frame: `first` is the FIN/RSV/opcode byte; masked unless told.
fn frame(first: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut out = vec![first];
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n @ 0..=125 => out.push(mask_bit | n as u8),
        n @ 126..=0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
    frame(first, payload, true)
}

/// Reads server frames until a Close; returns its code (`None`: the
/// connection ended without one).
async fn close_code(raw: &mut RawWs) -> Option<u16> {
    within("a close frame", async {
        loop {
            match raw.read_frame().await? {
                (OP_CLOSE, payload) => {
                    return Some(u16::from_be_bytes([payload[0], payload[1]]));
                }
                _ => continue,
            }
        }
    })
    .await
}

#[tokio::test]
async fn websocket_protocol_violations_get_their_close_codes() {
    let server = start().await;
    let mut bystander = Bystander::join(&server).await;
    let ping_cmd = br#"{"type":"ping","id":1}"#;
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "invalid UTF-8 in a text frame",
            masked(FIN | TEXT, b"{\"type\":\"ping\",\"x\":\"\xc3\x28\"}"),
            1007,
        ),
        (
            "invalid UTF-8 split over fragments",
            [
                masked(TEXT, b"{\"x\":\"\xe2\x82"),
                masked(FIN | CONTINUATION, b"\x28\"}"),
            ]
            .concat(),
            1007,
        ),
        ("reserved data opcode 0x3", masked(FIN | 0x3, b"x"), 1002),
        ("reserved control opcode 0xB", masked(FIN | 0xB, b""), 1002),
        (
            "unmasked client frame",
            frame(FIN | TEXT, ping_cmd, false),
            1002,
        ),
        ("fragmented ping", masked(PING, b"hello"), 1002),
        (
            "ping over 125 bytes",
            masked(FIN | PING, &[b'p'; 126]),
            1002,
        ),
        (
            "RSV1 without an extension",
            masked(FIN | 0x40 | TEXT, ping_cmd),
            1002,
        ),
        ("RSV2", masked(FIN | 0x20 | TEXT, ping_cmd), 1002),
        ("RSV3", masked(FIN | 0x10 | TEXT, ping_cmd), 1002),
        (
            "continuation without a start",
            masked(FIN | CONTINUATION, b"orphan"),
            1002,
        ),
        (
            "a new message inside a fragmented one",
            [masked(TEXT, b"{\"type\":"), masked(FIN | TEXT, ping_cmd)].concat(),
            1002,
        ),
        (
            "close with a 1-byte payload",
            masked(FIN | CLOSE, b"\x03"),
            1002,
        ),
        (
            "close with a reserved code",
            masked(FIN | CLOSE, &1005u16.to_be_bytes()),
            1002,
        ),
        (
            "a frame claiming 2^62 bytes",
            {
                let mut f = vec![FIN | TEXT, 0x80 | 127];
                f.extend_from_slice(&(1u64 << 62).to_be_bytes());
                f.extend_from_slice(&[1, 2, 3, 4]);
                f
            },
            1009,
        ),
    ];
    for (what, bytes, code) in cases {
        let mut raw = raw_ws(server.addr, "/ws", None).await;
        // A well-formed command first: the connection (and this encoder) works.
        within(
            "a ping write",
            raw.stream.write_all(&masked(FIN | TEXT, ping_cmd)),
        )
        .await
        .expect("the ping is written");
        let (op, pong) = within("the pong", raw.read_frame()).await.expect("a frame");
        assert_eq!(
            (op, pong.as_slice()),
            (
                TEXT,
                br#"{"type":"pong","id":1,"heartbeat":15000}"#.as_slice()
            ),
            "{what}: before the violation"
        );
        // The violation; the server may stop reading at once, so a failed
        // write is not the test's business.
        let _ = within("the violation's write", raw.stream.write_all(&bytes)).await;
        assert_eq!(close_code(&mut raw).await, Some(code), "{what}");
        bystander.still_served(&server, what).await;
    }
    bystander.finish(&server).await;
}

// ---------------------------------------------------------------------------
// Bad commands on WebSocket and POST /command

/// A refused command: the text sent, the error code, the id echoed.
type Refusal = (String, &'static str, Option<Value>);

/// Commands refused the same way on both transports.
fn refusals() -> Vec<Refusal> {
    let s = |text: &str, code, id: Option<Value>| (text.to_owned(), code, id);
    let long_cursor = "A".repeat(16 * 1024 + 1);
    let wide_cursor: Vec<String> = (0..300)
        .map(|i| cursor(&[(&format!("c{i}"), "e", 1)]))
        .collect();
    let mut cases =
        vec![
        s("{\"type\":\"ping\"", "bad_json", None),
        s("{\"type\":\"ping\"}garbage", "bad_json", None),
        s("{'type':'ping'}", "bad_json", None),
        s("\u{feff}{\"type\":\"ping\"}", "bad_json", None),
        s("", "bad_json", None),
        s("null", "bad_request", None),
        s("\"ping\"", "bad_request", None),
        s("[{\"type\":\"ping\"}]", "bad_request", None),
        s(r#"{"type":"ping","type":"ping"}"#, "bad_request", None),
        s(r#"{"type":"teleport","id":1}"#, "unknown_command", Some(json!(1))),
        s(r#"{"type":"PING","id":2}"#, "unknown_command", Some(json!(2))),
        s(r#"{"type":"","id":3}"#, "unknown_command", Some(json!(3))),
        s(r#"{"type":5,"id":4}"#, "bad_request", Some(json!(4))),
        s(r#"{"type":null,"id":5}"#, "bad_request", Some(json!(5))),
        s(
            r#"{"type":"publish","channel":5,"data":1,"id":6}"#,
            "bad_request",
            Some(json!(6)),
        ),
        s(
            r#"{"type":"publish","channel":["a"],"data":1,"id":7}"#,
            "bad_request",
            Some(json!(7)),
        ),
        s(
            r#"{"type":"publish","channel":"ok","id":8}"#,
            "bad_request",
            Some(json!(8)),
        ),
        s(
            r#"{"type":"publish","channel":"ok","data":1,"event":7,"id":9}"#,
            "bad_request",
            Some(json!(9)),
        ),
        s(
            r#"{"type":"subscribe","channel":"ok","since":[],"id":10}"#,
            "bad_request",
            Some(json!(10)),
        ),
        s(
            r#"{"type":"subscribe","channel":"ok","since":7,"id":11}"#,
            "bad_request",
            Some(json!(11)),
        ),
        s(r#"{"type":"ping","id":{}}"#, "bad_request", None),
        s(r#"{"type":"ping","id":[1]}"#, "bad_request", None),
        s(r#"{"type":"ping","id":-1}"#, "bad_request", None),
        s(r#"{"type":"ping","id":1.5}"#, "bad_request", None),
        (
            json!({"type": "ping", "id": "i".repeat(129)}).to_string(),
            "bad_request",
            None,
        ),
        s(
            r#"{"type":"subscribe","channel":"ok","since":"zz","id":12}"#,
            "invalid_cursor",
            Some(json!(12)),
        ),
        (
            json!({"type": "subscribe", "channel": "ok", "since": long_cursor, "id": 13})
                .to_string(),
            "too_large",
            Some(json!(13)),
        ),
        (
            json!({"type": "subscribe", "channel": "ok", "since": wide_cursor.join("~"), "id": 14})
                .to_string(),
            "too_large",
            Some(json!(14)),
        ),
    ];
    let bad_channels = [
        "a b".to_owned(),
        "<script>".to_owned(),
        "c".repeat(300),
        "café".to_owned(),
        String::new(),
        "a\r\nb".to_owned(),
        "a\u{0}b".to_owned(),
        "line\u{2028}sep".to_owned(),
    ];
    for (i, channel) in bad_channels.iter().enumerate() {
        for kind in ["publish", "subscribe"] {
            let id = json!(format!("{kind}-{i}"));
            cases.push((
                json!({"type": kind, "channel": channel, "data": 1, "id": id}).to_string(),
                "invalid_channel",
                Some(id),
            ));
        }
    }
    for (i, event) in ["a b", "<x>", "a\r\nb", "data: x\n", &"e".repeat(65), ""]
        .iter()
        .enumerate()
    {
        cases.push((
            json!({"type": "publish", "channel": "ok", "event": event, "data": 1, "id": 100 + i})
                .to_string(),
            "invalid_event",
            Some(json!(100 + i)),
        ));
    }
    cases
}

fn assert_refused(reply: &Value, (text, code, id): &Refusal) {
    let shown: String = text.chars().take(100).collect();
    assert_eq!(reply["type"], "error", "{shown} → {reply}");
    assert_eq!(reply["code"], *code, "{shown} → {reply}");
    assert!(reply["message"].is_string(), "{shown} → {reply}");
    assert_eq!(reply.get("id"), id.as_ref(), "{shown} → {reply}");
}

/// Data nested 20,000 deep: valid JSON within `max_message_size` that a
/// recursive parser would overflow its stack on; refused (`too_deep`).
fn deep_publish(id: u64) -> String {
    format!(
        r#"{{"type":"publish","channel":"deep","id":{id},"data":{}{}}}"#,
        "[".repeat(20_000),
        "]".repeat(20_000)
    )
}

#[tokio::test]
async fn bad_commands_on_websocket_get_their_codes_and_the_connection_stays_usable() {
    let server = start().await;
    let mut bystander = Bystander::join(&server).await;
    let mut ws = server.ws("/ws").await;
    for (n, case) in refusals().iter().enumerate() {
        let reply = ws.command_text(&case.0).await;
        assert_refused(&reply, case);
        let pong = ws.command(json!({"type": "ping", "id": n})).await;
        assert_eq!(
            pong,
            json!({"type": "pong", "id": n, "heartbeat": 15000}),
            "after {}",
            case.0
        );
        if n % 8 == 0 {
            bystander.still_served(&server, &case.0).await;
        }
    }
    let reply = ws.command_text(&deep_publish(7)).await;
    assert_eq!(
        (reply["code"].as_str(), &reply["id"]),
        (Some("too_deep"), &json!(7)),
        "{reply}"
    );
    bystander.still_served(&server, "deep data").await;

    // Well-formed cursors the server cannot honour: a reset, then live.
    let epoch = server.publish_n("known", 2).await;
    let unknown_epoch = cursor(&[("known", "notTheEpoch", 1)]);
    let future = cursor(&[("known", &epoch, 99)]);
    for since in [unknown_epoch, future] {
        let reply = ws
            .command(json!({"type": "subscribe", "channel": "known", "since": since}))
            .await;
        assert_subscribed(&reply, "known");
        assert_eq!(
            ws.next_json().await,
            json!({"type": "reset", "channel": "known", "epoch": epoch, "offset": 2}),
            "since {since}"
        );
        let reply = ws
            .command(json!({"type": "unsubscribe", "channel": "known"}))
            .await;
        assert_eq!(reply["type"], "unsubscribed", "{reply}");
        bystander.still_served(&server, &since).await;
    }
    bystander.finish(&server).await;
}

/// `POST /command` on one keep-alive connection.
async fn post_command(conn: &mut RawHttp, body: &[u8]) -> RawResponse {
    let host = conn.stream.peer_addr().expect("a connected socket");
    let mut request = format!(
        "POST /command HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    within("a command write", conn.stream.write_all(&request))
        .await
        .expect("the command is written");
    conn.read_response().await
}

#[tokio::test]
async fn bad_commands_over_http_get_their_codes_and_statuses_on_one_connection() {
    let server = start().await;
    let mut bystander = Bystander::join(&server).await;
    let mut conn = RawHttp::connect(server.addr, None).await;
    let mut cases = refusals();
    cases.push(("\u{fffd}".into(), "bad_json", None));
    for (n, case) in cases.iter().enumerate() {
        let res = post_command(&mut conn, case.0.as_bytes()).await;
        let reply = assert_json_error(&res.head, &res.body, &case.0);
        assert_refused(&reply, case);
        let status = if case.1 == "too_large" { 413 } else { 400 };
        assert_eq!(res.status, status, "{} → {reply}", case.0);
        assert!(
            !res.head.to_ascii_lowercase().contains("connection: close"),
            "an error reply keeps the connection: {}",
            res.head
        );
        if n % 8 == 0 {
            bystander.still_served(&server, &case.0).await;
        }
    }
    // JSON text is UTF-8, in an ignored field too (a WebSocket text frame
    // like this is refused by the codec: close 1007).
    let not_utf8 = b"{\"type\":\"ping\",\"x\":\"\xff\xfe\"}";
    let res = post_command(&mut conn, not_utf8).await;
    assert_eq!(
        (res.status, res.json()["code"].as_str()),
        (400, Some("bad_json"))
    );
    let req = server
        .http
        .post(server.url("/api/publish"))
        .body(b"{\"channel\":\"a\",\"data\":1,\"x\":\"\xc3\x28\"}".to_vec());
    let (status, v) = server.json_response(req).await;
    assert_eq!((status, v["code"].as_str()), (400, Some("bad_json")), "{v}");

    let res = post_command(&mut conn, deep_publish(7).as_bytes()).await;
    assert_eq!(res.status, 400, "{}", res.head);
    assert_eq!(res.json()["code"], "too_deep");

    // The same connection still serves a good command.
    let res = post_command(&mut conn, br#"{"type":"ping","id":"last"}"#).await;
    assert_eq!(
        (res.status, res.json()),
        (200, json!({"type": "pong", "id": "last"}))
    );
    bystander.finish(&server).await;
}

// ---------------------------------------------------------------------------
// Injection through data and names

/// Data that would break out of an SSE field, an NDJSON line or a `<script>`
/// if written as it came.
fn hostile_data() -> Vec<Value> {
    vec![
        json!("</script><script>alert(1)</script>"),
        json!("<!--<script>"),
        json!("\r\n\r\ndata: injected"),
        json!("\nevent: x\ndata: y\n\n"),
        json!("id: evil\rretry: 1\r\r"),
        json!(":comment\n\n"),
        json!("line\u{2028}separator\u{2029}paragraph"),
        json!("\\\"</script>\\"),
        json!("nul\u{0}and\u{1f}controls"),
        json!({"</script>": "<!--", "k\r\nid: 1": ["\n\ndata: x", "]]>", "&amp;"]}),
    ]
}

/// The next block of an SSE stream, as its lines.
async fn sse_block(body: &mut BodyStream) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let line = body.next_line().await;
        assert!(
            !line.contains('\r'),
            "a lone CR ends a line in SSE: {line:?}"
        );
        if line.is_empty() {
            if !lines.is_empty() {
                return lines;
            }
        } else {
            lines.push(line);
        }
    }
}

/// One SSE event as its fields: at most one `id:`, at most one `event:`,
/// exactly one `data:` line and nothing else.
struct SseFields {
    id: Option<String>,
    event: Option<String>,
    data: Value,
}

/// The next SSE block that carries data, checked to be one event.
async fn sse_event(body: &mut BodyStream) -> SseFields {
    loop {
        let block = sse_block(body).await;
        if !block.iter().any(|l| l.starts_with("data:")) {
            continue; // retry:, an id-only block, a comment
        }
        let field = |name: &str| -> Vec<String> {
            block
                .iter()
                .filter_map(|l| Some(l.strip_prefix(name)?.strip_prefix(": ")?.to_owned()))
                .collect()
        };
        let (ids, events, data) = (field("id"), field("event"), field("data"));
        assert!(
            ids.len() <= 1 && events.len() <= 1 && data.len() == 1,
            "one id, one event, one data line: {block:?}"
        );
        assert_eq!(
            ids.len() + events.len() + data.len(),
            block.len(),
            "no other lines: {block:?}"
        );
        if let Some(id) = ids.first() {
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b)),
                "the id is a cursor: {id:?}"
            );
        }
        let data = serde_json::from_str(&data[0])
            .unwrap_or_else(|e| panic!("data is not JSON ({e}): {:?}", data[0]));
        return SseFields {
            id: ids.first().cloned(),
            event: events.first().cloned(),
            data,
        };
    }
}

#[tokio::test]
async fn hostile_data_stays_inside_sse_ndjson_and_iframe_framing() {
    let server = start_with(|c| c.stream_ping_interval = Duration::from_secs(600)).await;
    let mut bystander = Bystander::join(&server).await;
    let mut sse = server
        .open_stream("/sse?channel=inj", "text/event-stream")
        .await;
    let subscribed = sse_event(&mut sse).await;
    assert_eq!(subscribed.event.as_deref(), Some("subscribed"));
    assert_subscribed(&subscribed.data, "inj");
    let mut ndjson = server.ndjson("channel=inj").await;
    ndjson.expect_subscribed("inj").await;
    let mut iframe = server.iframe("channel=inj", "cb").await;
    iframe.expect_subscribed("inj").await;

    // Through every way in: the API, a named event, /command, WebSocket.
    let data = hostile_data();
    let mut publisher = server.ws("/ws").await;
    for (i, d) in data.iter().enumerate() {
        match i % 4 {
            0 => {
                server.publish("inj", d.clone()).await;
            }
            1 => {
                server.publish_event("inj", "x:y.z-1_", d.clone()).await;
            }
            2 => {
                let cmd = json!({"type": "publish", "channel": "inj", "data": d});
                let (status, reply) = server.command(cmd.to_string()).await;
                assert_eq!(status, 200, "{reply}");
            }
            _ => {
                let cmd = json!({"type": "publish", "channel": "inj", "data": d});
                assert_eq!(publisher.command(cmd).await["type"], "published");
            }
        }
        bystander.still_served(&server, &d.to_string()).await;
    }
    let bytes = b"</script>\r\n\r\ndata: injected\n\x00\xff<!--".to_vec();
    server.publish_binary("inj", &bytes).await;
    server.publish("inj", json!("the end")).await;
    let n = data.len() as u64 + 2;

    let check = |transport: &str, offset: u64, msg: &Value| {
        assert_message(msg, "inj", offset);
        let i = offset as usize - 1;
        if let Some(d) = data.get(i) {
            assert_eq!(&msg["data"], d, "{transport} #{offset}");
            let named = i % 4 == 1;
            assert_eq!(msg.get("event").is_some(), named, "{transport}: {msg}");
        } else if offset == n - 1 {
            assert_eq!(msg["encoding"], "base64", "{transport}: {msg}");
            let got = base64::engine::general_purpose::STANDARD
                .decode(msg["data"].as_str().expect("base64 text"))
                .expect("valid base64");
            assert_eq!(got, bytes, "{transport}");
        } else {
            assert_eq!(msg["data"], "the end", "{transport}");
        }
    };

    // SSE: each message is one id, one event and one data line.
    for offset in 1..=n {
        let e = sse_event(&mut sse).await;
        assert!(e.id.is_some(), "every message has an id");
        let named = data.len() > offset as usize - 1 && (offset - 1) % 4 == 1;
        let event = if named { "x:y.z-1_" } else { "message" };
        assert_eq!(e.event.as_deref(), Some(event), "{}", e.data);
        check("SSE", offset, &e.data);
    }

    // NDJSON: one line per message, nothing else.
    for offset in 1..=n {
        let line = ndjson.0.next_line().await;
        assert!(
            !line.contains(['\r', '\u{2028}', '\u{2029}']),
            "a line terminator in an NDJSON line: {line:?}"
        );
        let msg: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("NDJSON line is not JSON ({e}): {line:?}"));
        check("NDJSON", offset, &msg);
    }

    // iframe: one parent.cb(…) script per message, and no other element.
    let calls = iframe.expect_messages("inj", 1..=n).await;
    for (offset, msg) in (1..=n).zip(&calls) {
        check("iframe", offset, msg);
    }
    let doc = iframe.complete_document();
    assert_eq!(script_texts(&doc).len() as u64, n + 1, "{doc}");
    let html = scraper::Html::parse_document(&doc);
    let everything = scraper::Selector::parse("body *").unwrap();
    assert_eq!(
        html.select(&everything).count() as u64,
        n + 1,
        "only the scripts: {doc}"
    );
    bystander.finish(&server).await;
}

#[tokio::test]
async fn names_with_line_breaks_or_markup_in_query_strings_are_refused() {
    let server = start().await;
    let mut bystander = Bystander::join(&server).await;
    let cases: &[(&str, &str)] = &[
        ("/sse?channel=a%0d%0aevent:%20x", "invalid_channel"),
        ("/sse?channel=a%0aid:%20x", "invalid_channel"),
        (
            "/sse?channel=a&since=YQ.e.1%0d%0aevent:%20x",
            "invalid_cursor",
        ),
        ("/stream?channel=%3Cscript%3E", "invalid_channel"),
        ("/stream?channel=a%E2%80%A8b", "invalid_channel"),
        ("/poll?channel=a%00", "invalid_channel"),
        ("/poll?channel=a&since=YQ.e.1%0d%0a", "invalid_cursor"),
        ("/longpoll?channel=%3C%21--&timeout=0", "invalid_channel"),
        (
            "/iframe?channel=%3C%2Fscript%3E&callback=cb",
            "invalid_channel",
        ),
        (
            "/iframe?channel=a&callback=cb%3C%2Fscript%3E",
            "bad_request",
        ),
        (
            "/iframe?channel=a&callback=alert(1)%3B%2F%2F",
            "bad_request",
        ),
        ("/iframe?channel=a&callback=a%0d%0ab", "bad_request"),
        ("/iframe?channel=a&callback=a%E2%80%A8b", "bad_request"),
        ("/iframe?channel=a&callback=a.b%20", "bad_request"),
        ("/iframe?channel=a&callback=%22", "bad_request"),
        ("/api/history?channel=%3Cb%3E", "invalid_channel"),
    ];
    let mut conn = RawHttp::connect(server.addr, None).await;
    for (path, code) in cases {
        let res = conn.get(path).await;
        assert_eq!(res.status, 400, "{path}: {}", res.head);
        let v = assert_json_error(&res.head, &res.body, path);
        assert_eq!(v["code"], *code, "{path}: {v}");
        bystander.still_served(&server, path).await;
    }
    // Event and channel names of a binary publish come from the query too.
    for (query, code) in [
        ("channel=a&event=x%0d%0adata:%20y", "invalid_event"),
        ("channel=a&event=%3Cx%3E", "invalid_event"),
        ("channel=a%0a&event=x", "invalid_channel"),
        ("channel=%3Cscript%3E", "invalid_channel"),
    ] {
        let req = server
            .http
            .post(server.url(&format!("/api/publish?{query}")))
            .header("content-type", "application/octet-stream")
            .body("bytes");
        let (status, v) = server.json_response(req).await;
        assert_eq!(
            (status, v["code"].as_str()),
            (400, Some(code)),
            "{query}: {v}"
        );
        bystander.still_served(&server, query).await;
    }
    let (status, v) = server
        .json_response(server.ws_upgrade_request("/ws?channel=a%0d%0a"))
        .await;
    assert_eq!(
        (status, v["code"].as_str()),
        (400, Some("invalid_channel")),
        "{v}"
    );
    // Last-Event-ID is a cursor like `since`.
    let req = server
        .http
        .get(server.url("/sse?channel=a"))
        .header("last-event-id", "YQ.e.1<script>");
    let (status, v) = server.json_response(req).await;
    assert_eq!(
        (status, v["code"].as_str()),
        (400, Some("invalid_cursor")),
        "{v}"
    );
    // Raw (not percent-encoded) markup in a request target is no URI at all.
    for target in [
        "/iframe?channel=a&callback=<script>",
        "/<script>",
        "/sse?channel=\"a\"",
    ] {
        let mut conn = RawHttp::connect(server.addr, None).await;
        conn.send(&format!(
            "GET {target} HTTP/1.1\r\nHost: {}\r\n\r\n",
            server.addr
        ))
        .await;
        let res = conn.read_response().await;
        assert!((400..500).contains(&res.status), "{target}: {}", res.head);
        assert!(
            !String::from_utf8_lossy(&res.body).contains('<'),
            "{target}: {}",
            String::from_utf8_lossy(&res.body)
        );
        bystander.still_served(&server, target).await;
    }
    bystander.finish(&server).await;
}
