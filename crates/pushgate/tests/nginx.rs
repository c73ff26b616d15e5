//! Real nginx (Debian's package) with deploy/nginx/pushgate.conf, included
//! as it is, in front of the real binary: a publish, a WebSocket, SSE,
//! NDJSON and hidden-iframe streams, and a long-poll all work through it,
//! and each streamed event arrives before the next is published (no proxy
//! buffering, even with gzip on and asked for) — over HTTP/1.1, and for
//! SSE also over HTTP/2 on nginx's TLS port. Without nginx the test is
//! skipped, saying so; where `CI` or `PUSHGATE_REQUIRE_NGINX` is set
//! (scripts/test) it fails instead.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustls::pki_types::{CertificateDer, ServerName};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

mod common;
use common::{Proc, TempDir, STEP};

const KEY: &str = "nginx-test-key";

/// The recipe, as users copy it.
fn recipe() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/nginx/pushgate.conf")
}

/// Where nginx is, if it is installed.
fn nginx_binary() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// nginx in a directory of its own, on a loopback port of its own, in one
/// process (`master_process off`), so that its PID is all there is to end.
struct Nginx {
    child: Child,
    /// Plain HTTP/1.1.
    port: u16,
    /// TLS with HTTP/2, as deploy/nginx/site.conf has it.
    tls_port: u16,
    /// The self-signed certificate of `localhost` the TLS port serves.
    cert: CertificateDer<'static>,
    dir: TempDir,
}

impl Nginx {
    /// Starts nginx in front of pushgate on `upstream`, with the recipe
    /// included verbatim in its server block. gzip is on for every type
    /// the streams use, as a site-wide setting might have it: the recipe
    /// must turn it off where it would hold events back.
    fn start(binary: &Path, upstream: u16) -> Nginx {
        let dir = TempDir::new("nginx");
        std::fs::create_dir_all(dir.0.join("tmp")).unwrap();
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        std::fs::write(dir.0.join("cert.pem"), made.cert.pem()).unwrap();
        std::fs::write(dir.0.join("key.pem"), made.signing_key.serialize_pem()).unwrap();
        let cert = made.cert.der().clone();
        let free_port = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        // A port another test took between the probe and nginx's bind
        // makes nginx exit: try others.
        for _ in 0..5 {
            let (port, tls_port) = (free_port(), free_port());
            let conf = format!(
                "daemon off;\n\
                 master_process off;\n\
                 pid nginx.pid;\n\
                 error_log error.log info;\n\
                 events {{ worker_connections 256; }}\n\
                 http {{\n\
                   access_log access.log;\n\
                   client_body_temp_path tmp/body;\n\
                   proxy_temp_path tmp/proxy;\n\
                   fastcgi_temp_path tmp/fastcgi;\n\
                   uwsgi_temp_path tmp/uwsgi;\n\
                   scgi_temp_path tmp/scgi;\n\
                   gzip on;\n\
                   gzip_min_length 1;\n\
                   gzip_types text/event-stream application/x-ndjson application/json;\n\
                   upstream pushgate {{ server 127.0.0.1:{upstream}; keepalive 8; }}\n\
                   server {{\n\
                     listen 127.0.0.1:{port};\n\
                     include {recipe};\n\
                   }}\n\
                   server {{\n\
                     listen 127.0.0.1:{tls_port} ssl http2;\n\
                     ssl_certificate {dir}/cert.pem;\n\
                     ssl_certificate_key {dir}/key.pem;\n\
                     include {recipe};\n\
                   }}\n\
                 }}\n",
                recipe = recipe().display(),
                dir = dir.0.display(),
            );
            let conf_path = dir.0.join("nginx.conf");
            std::fs::write(&conf_path, conf).unwrap();
            let mut child = Command::new(binary)
                .arg("-p")
                .arg(&dir.0)
                .arg("-c")
                .arg(&conf_path)
                .arg("-e")
                .arg(dir.0.join("error.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            if wait_listening(&mut child, port) && wait_listening(&mut child, tls_port) {
                return Nginx {
                    child,
                    port,
                    tls_port,
                    cert,
                    dir,
                };
            }
        }
        let log = std::fs::read_to_string(dir.0.join("error.log")).unwrap_or_default();
        panic!("nginx did not start on five ports in a row; its error log:\n{log}");
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: nginx closes its connections; then reap it.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.0.join("error.log")).unwrap_or_default();
            eprintln!("nginx's error log:\n{log}");
        }
    }
}

/// Whether nginx accepts connections on `port` before it exits or STEP
/// passes. nginx tells no one when it listens: try to connect.
fn wait_listening(child: &mut Child, port: u16) -> bool {
    let start = Instant::now();
    while start.elapsed() < STEP {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

/// The proxy_read_timeout of the recipe's `location = /longpoll`.
fn recipe_longpoll_read_timeout() -> Duration {
    let text = std::fs::read_to_string(recipe()).unwrap();
    let block = text
        .split("location = /longpoll {")
        .nth(1)
        .and_then(|rest| rest.split('}').next())
        .expect("the recipe has a `location = /longpoll` block");
    let value = block
        .lines()
        .find_map(|l| l.trim().strip_prefix("proxy_read_timeout "))
        .expect("the /longpoll block sets proxy_read_timeout")
        .trim_end_matches(';');
    let (number, unit) = value.split_at(value.find(|c: char| !c.is_ascii_digit()).unwrap());
    let n: u64 = number.parse().unwrap();
    match unit {
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        other => panic!("unit {other:?} of proxy_read_timeout"),
    }
}

async fn publish(http: &reqwest::Client, url: &str, channel: &str, data: Value) {
    let res = http
        .post(format!("{url}/api/publish"))
        .bearer_auth(KEY)
        .json(&json!({"channel": channel, "data": data}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "publish on {channel} through nginx");
}

/// A streaming answer read until a text appears in it.
struct Streamed {
    res: reqwest::Response,
    seen: String,
}

impl Streamed {
    /// Opens `path` through nginx, asking for gzip.
    async fn open(http: &reqwest::Client, url: &str, path: &str) -> Streamed {
        let res = http
            .get(format!("{url}{path}"))
            .header("accept-encoding", "gzip")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path} through nginx");
        assert!(
            res.headers().get("content-encoding").is_none(),
            "{path} came compressed through nginx: gzip would hold events back"
        );
        Streamed {
            res,
            seen: String::new(),
        }
    }

    /// Reads until `text` has arrived (after what earlier calls consumed).
    async fn until(&mut self, text: &str, what: &str) {
        loop {
            if let Some(at) = self.seen.find(text) {
                self.seen.drain(..at + text.len());
                return;
            }
            let chunk = tokio::time::timeout(STEP, self.res.chunk())
                .await
                .unwrap_or_else(|_| panic!("{what}: {text:?} did not come through nginx"))
                .unwrap()
                .unwrap_or_else(|| panic!("{what}: the stream ended before {text:?}"));
            self.seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

/// Each of three messages reaches the stream before the next is
/// published: a proxy that buffered would hold the first one back, and
/// the wait for it would fail.
async fn one_at_a_time(http: &reqwest::Client, url: &str, path: &str, channel: &str, what: &str) {
    let mut stream = Streamed::open(http, url, path).await;
    stream.until("subscribed", what).await;
    for n in 1..=3 {
        let marker = format!("{what}-message-{n}");
        publish(http, url, channel, json!({ "marker": marker })).await;
        stream.until(&marker, what).await;
    }
}

/// pushgate's `pushgate_connections{transport="longpoll"}`, read directly.
async fn longpolls_waiting(http: &reqwest::Client, direct: &str) -> u64 {
    let text = common::metrics_text(http, direct).await;
    text.lines()
        .find_map(|l| l.strip_prefix("pushgate_connections{transport=\"longpoll\"} "))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// An HTTP/2 connection to nginx's TLS port, trusting only its
/// certificate and offering only `h2`.
async fn h2_connect(nginx: &Nginx) -> h2::client::SendRequest<Bytes> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(nginx.cert.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", nginx.tls_port))
        .await
        .unwrap();
    let tls = tokio::time::timeout(
        STEP,
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").unwrap(), tcp),
    )
    .await
    .expect("the TLS handshake with nginx")
    .unwrap();
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(&b"h2"[..]),
        "nginx's TLS port chose HTTP/2"
    );
    let (send, conn) = tokio::time::timeout(STEP, h2::client::handshake(tls))
        .await
        .expect("the HTTP/2 handshake with nginx")
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

/// Reads an HTTP/2 body until `text` has arrived (after what earlier calls
/// consumed).
async fn h2_until(body: &mut h2::RecvStream, seen: &mut String, text: &str) {
    loop {
        if let Some(at) = seen.find(text) {
            seen.drain(..at + text.len());
            return;
        }
        let chunk = tokio::time::timeout(STEP, body.data())
            .await
            .unwrap_or_else(|_| panic!("SSE over HTTP/2: {text:?} did not come through nginx"))
            .unwrap_or_else(|| panic!("SSE over HTTP/2: the stream ended before {text:?}"))
            .unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn every_transport_works_through_the_nginx_recipe_unbuffered() {
    // Checked first, without nginx too: the recipe's long-poll timeout
    // outlasts the longest long-poll pushgate holds by default.
    assert!(
        recipe_longpoll_read_timeout() > pushgate_server::Config::default().longpoll_max_timeout,
        "deploy/nginx/pushgate.conf: /longpoll's proxy_read_timeout must exceed longpoll_max_timeout"
    );
    let Some(binary) = nginx_binary() else {
        let required = std::env::var_os("CI").is_some()
            || std::env::var_os("PUSHGATE_REQUIRE_NGINX").is_some();
        assert!(!required, "nginx is not installed (apt-get install nginx)");
        eprintln!("skipped: nginx is not installed (apt-get install nginx)");
        return;
    };

    let server = Proc::serve(["--api-key", KEY]);
    let port = server.port();
    let direct = format!("http://127.0.0.1:{port}");
    let nginx = Nginx::start(&binary, port);
    let url = nginx.url();
    let http = reqwest::Client::new();

    // The API through the proxy: the key is still asked for.
    let refused = http
        .post(format!("{url}/api/publish"))
        .json(&json!({"channel": "news", "data": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401, "a publish without the key");
    publish(&http, &url, "news", json!("through nginx")).await;

    // WebSocket: the upgrade passes, and a message published after the
    // subscription arrives.
    let ws_url = format!("ws://127.0.0.1:{}/ws", nginx.port);
    let (mut ws, _) = tokio::time::timeout(STEP, tokio_tungstenite::connect_async(ws_url))
        .await
        .expect("the WebSocket handshake through nginx")
        .expect("nginx passes the WebSocket upgrade");
    let subscribe = json!({"type": "subscribe", "channel": "ws-channel"}).to_string();
    ws.send(Message::text(subscribe)).await.unwrap();
    let mut expect = "subscribed";
    loop {
        let frame = tokio::time::timeout(STEP, ws.next())
            .await
            .expect("a WebSocket frame through nginx")
            .expect("the WebSocket is open")
            .unwrap();
        let Message::Text(text) = frame else { continue };
        let v: Value = serde_json::from_str(&text).unwrap();
        if v["type"] != expect {
            continue;
        }
        if expect == "message" {
            assert_eq!(v["data"], json!("to the websocket"));
            break;
        }
        publish(&http, &url, "ws-channel", json!("to the websocket")).await;
        expect = "message";
    }

    one_at_a_time(
        &http,
        &url,
        "/sse?channel=sse-channel",
        "sse-channel",
        "sse",
    )
    .await;
    one_at_a_time(
        &http,
        &url,
        "/stream?channel=ndjson-channel",
        "ndjson-channel",
        "ndjson",
    )
    .await;
    one_at_a_time(
        &http,
        &url,
        "/iframe?channel=iframe-channel&callback=pg",
        "iframe-channel",
        "iframe",
    )
    .await;

    // Long-poll: the request waits at pushgate (its gauge says so), a
    // message is published meanwhile, and the answer comes back through
    // nginx.
    let waiting = tokio::spawn({
        let (http, url) = (http.clone(), url.clone());
        async move {
            let res = http
                .get(format!("{url}/longpoll?channel=lp-channel&timeout=60s"))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200, "a long-poll through nginx");
            res.json::<Value>().await.unwrap()
        }
    });
    let start = Instant::now();
    while longpolls_waiting(&http, &direct).await == 0 {
        assert!(
            start.elapsed() < STEP,
            "the long-poll never reached pushgate"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    publish(&http, &url, "lp-channel", json!("to the long-poll")).await;
    let answer = tokio::time::timeout(STEP, waiting)
        .await
        .expect("the long-poll's answer through nginx")
        .unwrap();
    assert_eq!(answer["messages"][0]["data"], json!("to the long-poll"));

    // SSE over HTTP/2 to the client (nginx's TLS port), HTTP/1.1 to
    // pushgate: still one event at a time.
    let send = h2_connect(&nginx).await;
    let mut send = tokio::time::timeout(STEP, send.ready())
        .await
        .unwrap()
        .unwrap();
    let req = http::Request::get("https://localhost/sse?channel=h2-channel")
        .header("accept-encoding", "gzip")
        .body(())
        .unwrap();
    let (res, _) = send.send_request(req, true).unwrap();
    let res = tokio::time::timeout(STEP, res)
        .await
        .expect("the SSE answer over HTTP/2")
        .unwrap();
    assert_eq!(res.status(), 200, "SSE over HTTP/2 through nginx");
    assert!(res.headers().get("content-encoding").is_none());
    let mut body = res.into_body();
    let mut seen = String::new();
    h2_until(&mut body, &mut seen, "subscribed").await;
    for n in 1..=3 {
        let marker = format!("h2-message-{n}");
        publish(&http, &url, "h2-channel", json!({ "marker": marker })).await;
        h2_until(&mut body, &mut seen, &marker).await;
    }

    // /metrics through nginx, from loopback, which the recipe allows.
    let metrics = http.get(format!("{url}/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
}
