//! TLS and HTTP/2 end to end, with a certificate made in the test (rcgen):
//! wss, https SSE and long-poll over HTTP/1.1; ALPN choosing `h2` and many
//! streams (SSE, long-poll, publishes) on one connection; a client without
//! ALPN; h2c on a plain port; the redirect listener; a reload that keeps
//! open connections.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use h2::client::SendRequest;
use pushgate_server::Config;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

/// A self-signed certificate for `localhost` and 127.0.0.1, in PEM files.
pub struct TestCert {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub der: CertificateDer<'static>,
}

impl TestCert {
    /// A new key pair and certificate, written under a fresh directory.
    pub fn new(name: &str) -> TestCert {
        let made = rcgen::generate_simple_self_signed(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
        ])
        .expect("rcgen makes a certificate");
        let dir = std::env::temp_dir().join(format!(
            "pushgate-tls-{name}-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
        TestCert {
            cert,
            key,
            der: made.cert.der().clone(),
        }
    }

    /// Writes another certificate's files over this one's.
    pub fn replace_with(&self, other: &TestCert) {
        std::fs::copy(&other.cert, &self.cert).unwrap();
        std::fs::copy(&other.key, &self.key).unwrap();
    }

    pub fn configure(&self, c: &mut Config) {
        c.tls_cert = Some(self.cert.to_string_lossy().into_owned());
        c.tls_key = Some(self.key.to_string_lossy().into_owned());
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(0);
    h.finish()
}

/// A TLS server with `cert`, after `configure`.
pub async fn start_tls(cert: &TestCert, configure: impl FnOnce(&mut Config)) -> TestServer {
    start_with(|c| {
        cert.configure(c);
        configure(c);
    })
    .await
}

/// A TLS client trusting `trusted`, offering `alpn`.
pub async fn connect(
    addr: SocketAddr,
    trusted: &CertificateDer<'static>,
    alpn: &[&[u8]],
) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = within("a TCP connect", TcpStream::connect(addr))
        .await
        .unwrap();
    within(
        "the TLS handshake",
        connector.connect(ServerName::try_from("localhost").unwrap(), tcp),
    )
    .await
    .expect("the handshake succeeds")
}

/// The ALPN protocol the handshake chose.
fn alpn(tls: &TlsStream<TcpStream>) -> Option<Vec<u8>> {
    tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
}

/// Sends an HTTP/1.1 request and reads until `want` has arrived.
async fn http1_until<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    request: &str,
    want: &str,
) -> String {
    if !request.is_empty() {
        io.write_all(request.as_bytes()).await.unwrap();
    }
    read_until(io, want).await
}

async fn read_until<S: AsyncRead + Unpin>(io: &mut S, want: &str) -> String {
    let mut got = Vec::new();
    let mut chunk = [0u8; 8192];
    within(&format!("{want:?} to arrive"), async {
        while !String::from_utf8_lossy(&got).contains(want) {
            let n = io.read(&mut chunk).await.unwrap();
            assert!(
                n > 0,
                "closed before {want:?}: {}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    String::from_utf8_lossy(&got).into_owned()
}

/// An HTTP/2 client connection over `io`.
async fn h2_client<S>(io: S) -> SendRequest<Bytes>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = within("the HTTP/2 handshake", h2::client::handshake(io))
        .await
        .expect("HTTP/2 is spoken");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

/// Opens a GET on the HTTP/2 connection; the response's status and body.
async fn h2_get(send: &mut SendRequest<Bytes>, path: &str) -> (u16, h2::RecvStream) {
    let mut send = within("room for a stream", send.clone().ready())
        .await
        .unwrap();
    let req = http::Request::get(format!("https://localhost{path}"))
        .body(())
        .unwrap();
    let (res, _) = send.send_request(req, true).unwrap();
    let res = within("the response head", res).await.unwrap();
    (res.status().as_u16(), res.into_body())
}

/// POSTs `body` on the HTTP/2 connection; the status and the whole answer.
async fn h2_post(send: &mut SendRequest<Bytes>, path: &str, body: &Value) -> (u16, Value) {
    let mut send = within("room for a stream", send.clone().ready())
        .await
        .unwrap();
    let req = http::Request::post(format!("https://localhost{path}"))
        .header("content-type", "application/json")
        .body(())
        .unwrap();
    let (res, mut stream) = send.send_request(req, false).unwrap();
    stream
        .send_data(Bytes::from(body.to_string()), true)
        .unwrap();
    let res = within("the response head", res).await.unwrap();
    let status = res.status().as_u16();
    let text = read_body(res.into_body()).await;
    (status, serde_json::from_str(&text).unwrap())
}

async fn read_body(mut body: h2::RecvStream) -> String {
    let mut out = Vec::new();
    while let Some(chunk) = within("a body chunk", body.data()).await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        out.extend_from_slice(&chunk);
    }
    String::from_utf8(out).unwrap()
}

/// Reads a streaming body until `want` has arrived.
async fn h2_until(body: &mut h2::RecvStream, seen: &mut String, want: &str) {
    within(&format!("{want:?} on the stream"), async {
        while !seen.contains(want) {
            let chunk = body.data().await.expect("the stream goes on").unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
}

#[tokio::test]
async fn wss_subscribes_and_receives() {
    let cert = TestCert::new("wss");
    let server = start_tls(&cert, |_| {}).await;
    let tls = connect(server.addr, &cert.der, &[b"http/1.1"]).await;
    assert_eq!(alpn(&tls).as_deref(), Some(&b"http/1.1"[..]));
    let (mut ws, _) = within(
        "the WebSocket handshake",
        tokio_tungstenite::client_async("wss://localhost/ws?channel=t", tls),
    )
    .await
    .expect("the upgrade over TLS");
    let first = within("subscribed", ws.next()).await.unwrap().unwrap();
    assert!(first.to_text().unwrap().contains(r#""type":"subscribed""#));
    server
        .state
        .hub
        .publish(
            pushgate_core::ChannelName::new("t").unwrap(),
            None,
            pushgate_core::Data::json("1").unwrap(),
        )
        .await
        .unwrap();
    let msg = loop {
        let m = within("the message", ws.next()).await.unwrap().unwrap();
        if m.is_text() && m.to_text().unwrap().contains(r#""type":"message""#) {
            break m;
        }
    };
    assert!(msg.to_text().unwrap().contains(r#""offset":1"#), "{msg}");
    // Commands work too: a client publish comes back to it.
    ws.send(Message::text(
        json!({"type":"publish","channel":"t","data":2}).to_string(),
    ))
    .await
    .unwrap();
    loop {
        let m = within("the published message", ws.next())
            .await
            .unwrap()
            .unwrap();
        if m.is_text() && m.to_text().unwrap().contains(r#""offset":2"#) {
            break;
        }
    }
}

#[tokio::test]
async fn https_sse_and_longpoll_over_http1() {
    let cert = TestCert::new("h1");
    let server = start_tls(&cert, |_| {}).await;
    // An HTTP/1.1-only client: no ALPN at all.
    let mut sse = connect(server.addr, &cert.der, &[]).await;
    assert_eq!(alpn(&sse), None);
    let head = http1_until(
        &mut sse,
        "GET /sse?channel=s HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "event: subscribed",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut lp = connect(server.addr, &cert.der, &[b"http/1.1"]).await;
    lp.write_all(b"GET /longpoll?channel=s HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    wait_until("the long-poll to wait", || server.subscribers("s") == 2).await;
    // Publish over https too, on a connection of its own.
    let mut api = connect(server.addr, &cert.der, &[b"http/1.1"]).await;
    let body = r#"{"channel":"s","data":{"n":1}}"#;
    let answer = http1_until(
        &mut api,
        &format!(
            "POST /api/publish HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
        "\"offset\"",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let got = read_until(&mut sse, "{\"n\":1}").await;
    assert!(got.contains("id: "), "{got}");
    let got = read_until(&mut lp, "{\"n\":1}").await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    let metrics = server.metrics_text_over(&cert).await;
    assert_eq!(
        metric(
            &metrics,
            r#"pushgate_http_connections_total{protocol="http1_tls"}"#
        ),
        Some(4),
        "{metrics}"
    );
}

#[tokio::test]
async fn http2_carries_sse_longpoll_and_publishes_on_one_connection() {
    let cert = TestCert::new("h2");
    let server = start_tls(&cert, |_| {}).await;
    let tls = connect(server.addr, &cert.der, &[b"h2", b"http/1.1"]).await;
    assert_eq!(alpn(&tls).as_deref(), Some(&b"h2"[..]));
    let mut h2 = h2_client(tls).await;

    let (status, mut sse) = h2_get(&mut h2, "/sse?channel=m").await;
    assert_eq!(status, 200);
    let mut sse_seen = String::new();
    h2_until(&mut sse, &mut sse_seen, "event: subscribed").await;
    let (status, mut ndjson) = h2_get(&mut h2, "/stream?channel=m").await;
    assert_eq!(status, 200);
    let mut nd_seen = String::new();
    h2_until(&mut ndjson, &mut nd_seen, r#""type":"subscribed""#).await;
    // A long-poll waits on its own stream of the same connection.
    let mut lp_send = h2.clone().ready().await.unwrap();
    let (lp, _) = lp_send
        .send_request(
            http::Request::get("https://localhost/longpoll?channel=m")
                .body(())
                .unwrap(),
            true,
        )
        .unwrap();
    wait_until("three subscribers", || server.subscribers("m") == 3).await;

    for n in 1..=3 {
        let (status, body) = h2_post(
            &mut h2,
            "/api/publish",
            &json!({"channel":"m","data":{"n":n}}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["offset"], n);
    }
    h2_until(&mut sse, &mut sse_seen, r#"{"n":3}"#).await;
    h2_until(&mut ndjson, &mut nd_seen, r#"{"n":3}"#).await;
    assert!(sse_seen.contains(r#"{"n":1}"#) && sse_seen.contains(r#"{"n":2}"#));
    let lp = within("the long-poll answer", lp).await.unwrap();
    assert_eq!(lp.status(), 200);
    let text = read_body(lp.into_body()).await;
    assert!(text.contains(r#"{"n":1}"#), "{text}");
    // A poll, /command and the page's other requests share it too.
    let (status, poll) = h2_get(&mut h2, "/poll?channel=m&since=earliest").await;
    assert_eq!(status, 200);
    let poll: Value = serde_json::from_str(&read_body(poll).await).unwrap();
    assert_eq!(poll["messages"].as_array().unwrap().len(), 3);
    let (status, reply) = h2_post(
        &mut h2,
        "/command",
        &json!({"type":"publish","channel":"m","data":4}),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    h2_until(&mut sse, &mut sse_seen, r#""data":4"#).await;

    // All of it on one TCP connection.
    let (status, metrics) = h2_get(&mut h2, "/metrics").await;
    assert_eq!(status, 200);
    let metrics = read_body(metrics).await;
    assert_eq!(
        metric(
            &metrics,
            r#"pushgate_http_connections_total{protocol="h2"}"#
        ),
        Some(1),
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            r#"pushgate_http_connections_total{protocol="http1_tls"}"#
        ),
        Some(0)
    );
}

#[tokio::test]
async fn h2c_with_prior_knowledge_on_a_plain_port() {
    let server = start().await;
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let mut h2 = h2_client(tcp).await;
    let (status, mut sse) = h2_get(&mut h2, "/sse?channel=c").await;
    assert_eq!(status, 200);
    let mut seen = String::new();
    h2_until(&mut sse, &mut seen, "event: subscribed").await;
    let (status, body) = h2_post(&mut h2, "/api/publish", &json!({"channel":"c","data":7})).await;
    assert_eq!(status, 200, "{body}");
    h2_until(&mut sse, &mut seen, r#""data":7}"#).await;
    // HTTP/1.1 clients of the same port are not disturbed.
    server.publish("c", json!(8)).await;
    let metrics = server.metrics_text().await;
    assert_eq!(
        metric(&metrics, r#"pushgate_http_connections{protocol="h2c"}"#),
        Some(1),
        "{metrics}"
    );
}

#[tokio::test]
async fn http2_can_be_turned_off() {
    let cert = TestCert::new("no-h2");
    let server = start_tls(&cert, |c| c.http2 = false).await;
    let tls = connect(server.addr, &cert.der, &[b"h2", b"http/1.1"]).await;
    assert_eq!(alpn(&tls).as_deref(), Some(&b"http/1.1"[..]));
}

#[tokio::test]
async fn a_plain_client_on_the_tls_port_gets_no_answer_and_nothing_breaks() {
    let cert = TestCert::new("plain");
    let server = start_tls(&cert, |_| {}).await;
    let mut plain = TcpStream::connect(server.addr).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = within("the server to close", plain.read_to_end(&mut buf)).await;
    assert!(!String::from_utf8_lossy(&buf).contains("200"));
    // TLS clients are still served.
    let mut tls = connect(server.addr, &cert.der, &[]).await;
    let answer = http1_until(
        &mut tls,
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn the_redirect_listener_sends_clients_to_https() {
    let cert = TestCert::new("redirect");
    let server = start_tls(&cert, |c| {
        c.tls_redirect = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let redirect = server.redirect.expect("a redirect listener");
    let mut plain = TcpStream::connect(redirect).await.unwrap();
    let answer = http1_until(
        &mut plain,
        "GET /sse?channel=a HTTP/1.1\r\nHost: push.example:80\r\n\r\n",
        "\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 308"), "{answer}");
    let want = format!(
        "location: https://push.example:{}/sse?channel=a\r\n",
        server.addr.port()
    );
    assert!(answer.to_lowercase().contains(&want), "{answer}");
}

#[tokio::test]
async fn a_reload_serves_the_new_certificate_and_keeps_open_connections() {
    let cert = TestCert::new("reload");
    let server = start_tls(&cert, |_| {}).await;
    let old = cert.der.clone();
    // Open connections on the old certificate: wss, and SSE over HTTP/2.
    let tls = connect(server.addr, &old, &[b"http/1.1"]).await;
    let (mut ws, _) = tokio_tungstenite::client_async("wss://localhost/ws?channel=r", tls)
        .await
        .unwrap();
    within("subscribed", ws.next()).await.unwrap().unwrap();
    let mut h2 = h2_client(connect(server.addr, &old, &[b"h2"]).await).await;
    let (_, mut sse) = h2_get(&mut h2, "/sse?channel=r").await;
    let mut seen = String::new();
    h2_until(&mut sse, &mut seen, "event: subscribed").await;

    // A broken file: refused, the old certificate still serves.
    std::fs::write(&cert.cert, "not a certificate").unwrap();
    let refused = server
        .state
        .reload_tls()
        .expect_err("a broken file is refused");
    assert!(refused.to_string().contains("cert.pem"), "{refused}");
    connect(server.addr, &old, &[]).await;

    // A new certificate: new handshakes see it, and only it.
    let new = TestCert::new("reload-new");
    cert.replace_with(&new);
    server.state.reload_tls().expect("the new pair loads");
    connect(server.addr, &new.der, &[]).await;
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(old.clone()).unwrap();
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let refused = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await;
    assert!(refused.is_err(), "the old certificate is no longer served");

    // The open connections kept going.
    let (status, _) = h2_post(
        &mut h2,
        "/api/publish",
        &json!({"channel":"r","data":"after"}),
    )
    .await;
    assert_eq!(status, 200);
    h2_until(&mut sse, &mut seen, "\"after\"").await;
    loop {
        let m = within("the message on wss", ws.next())
            .await
            .unwrap()
            .unwrap();
        if m.is_text() && m.to_text().unwrap().contains("\"after\"") {
            break;
        }
    }
}

#[tokio::test]
async fn a_missing_or_mismatched_key_stops_the_start_with_a_clear_error() {
    let cert = TestCert::new("mismatch");
    let other = TestCert::new("mismatch-other");
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    };
    cert.configure(&mut config);
    config.tls_key = Some(other.key.to_string_lossy().into_owned());
    let e = pushgate_server::Server::bind(config.clone())
        .await
        .err()
        .expect("a key of another certificate is refused");
    assert!(e.to_string().contains("does not fit"), "{e}");
    config.tls_key = Some("/nonexistent/key.pem".into());
    let e = pushgate_server::Server::bind(config.clone())
        .await
        .err()
        .expect("a missing key file is refused");
    assert!(e.to_string().contains("/nonexistent/key.pem"), "{e}");
    config.tls_key = None;
    let e = pushgate_server::Server::bind(config).await.err().unwrap();
    assert!(e.to_string().contains("go together"), "{e}");
}

impl TestServer {
    /// `/metrics` over TLS (HTTP/1.1, a connection of its own).
    pub async fn metrics_text_over(&self, cert: &TestCert) -> String {
        let mut tls = connect(self.addr, &cert.der, &[]).await;
        let text = http1_until(
            &mut tls,
            "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
            "pushgate_http_connections_total",
        )
        .await;
        let mut rest = String::new();
        let _ = tls.read_to_string(&mut rest).await;
        text + &rest
    }
}

#[tokio::test]
async fn an_http2_stream_that_stops_reading_is_cut_off_and_its_neighbours_go_on() {
    let server = start_with(|c| c.outbox_capacity = 8).await;
    // A client whose streams may each hold little before it must read.
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let (h2, conn) = h2::client::Builder::new()
        .initial_window_size(1024)
        .initial_connection_window_size(1 << 24)
        .handshake::<_, Bytes>(tcp)
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut h2 = h2;
    let (_, mut slow) = h2_get(&mut h2, "/sse?channel=slow").await;
    let mut seen = String::new();
    h2_until(&mut slow, &mut seen, "event: subscribed").await;
    // The slow stream is never read again: its window stays shut, the
    // server's send buffer and then its outbox fill, and it is cut off.
    let big = "x".repeat(16 * 1024);
    let mut published = 0;
    while server
        .state
        .metrics
        .render()
        .contains(r#"pushgate_subscribers_dropped_total{transport="sse"} 0"#)
    {
        server.publish("slow", json!(big)).await;
        published += 1;
        assert!(published < 1000, "never cut off");
    }
    // Gone from the channel; the connection itself still serves.
    wait_until("the slow subscriber gone", || {
        server.subscribers("slow") == 0
    })
    .await;
    let (status, body) = h2_post(
        &mut h2,
        "/api/publish",
        &json!({"channel":"other","data":1}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn http2_streams_keep_heartbeats_and_resume_with_last_event_id() {
    let server = start_with(|c| c.stream_ping_interval = Duration::from_millis(200)).await;
    for n in 1..=3 {
        server.publish("hb", json!(n)).await;
    }
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let mut h2 = h2_client(tcp).await;
    // Resume after offset 1 with Last-Event-ID, as EventSource does.
    let (_, poll) = h2_get(&mut h2, "/poll?channel=hb&since=earliest").await;
    let poll: Value = serde_json::from_str(&read_body(poll).await).unwrap();
    let epoch = poll["messages"][0]["epoch"].as_str().unwrap();
    let first_id = cursor(&[("hb", epoch, 1)]);
    let mut send = h2.clone().ready().await.unwrap();
    let req = http::Request::get("https://localhost/sse?channel=hb")
        .header("last-event-id", first_id)
        .body(())
        .unwrap();
    let (res, _) = send.send_request(req, true).unwrap();
    let res = within("the SSE head", res).await.unwrap();
    assert_eq!(res.status(), 200);
    let mut body = res.into_body();
    let mut seen = String::new();
    h2_until(&mut body, &mut seen, r#""offset":3"#).await;
    assert!(
        !seen.contains(r#""offset":1"#),
        "offset 1 was resumed past: {seen}"
    );
    assert!(seen.contains(r#""offset":2"#), "{seen}");
    // Silence is filled with heartbeats.
    h2_until(&mut body, &mut seen, "event:ping").await;
}

#[tokio::test]
async fn a_shutdown_ends_http2_streams_and_the_server_stops() {
    let mut server = start().await;
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let mut h2 = h2_client(tcp).await;
    let (_, mut sse) = h2_get(&mut h2, "/sse?channel=bye").await;
    let mut seen = String::new();
    h2_until(&mut sse, &mut seen, "event: subscribed").await;
    server.signal_shutdown();
    // The stream ends (END_STREAM) after its farewell, and the server stops.
    within("the stream to end", async {
        while let Some(chunk) = sse.data().await {
            seen.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        }
    })
    .await;
    assert!(seen.contains(r#""reason":"shutdown""#), "{seen}");
    server.stopped().await;
}
