//! SIGHUP, sent to the real binary as a certbot renew hook would: new
//! handshakes get the new certificate, open wss and SSE connections keep
//! receiving, and a broken file is refused with a log line while the old
//! certificate goes on serving.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::StreamExt;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod common;
use common::{Proc, STEP};

struct Pair {
    der: CertificateDer<'static>,
    cert_pem: String,
    key_pem: String,
}

fn pair() -> Pair {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    Pair {
        der: made.cert.der().clone(),
        cert_pem: made.cert.pem(),
        key_pem: made.signing_key.serialize_pem(),
    }
}

fn write(dir: &Path, p: &Pair) {
    std::fs::write(dir.join("cert.pem"), &p.cert_pem).unwrap();
    std::fs::write(dir.join("key.pem"), &p.key_pem).unwrap();
}

fn start(dir: &Path) -> (Proc, u16) {
    let proc = Proc::serve([
        OsString::from("--tls-cert"),
        dir.join("cert.pem").into(),
        "--tls-key".into(),
        dir.join("key.pem").into(),
    ]);
    let port = proc.port();
    (proc, port)
}

/// A TLS connection that trusts only `trusted`: `Err` when the server's
/// certificate is another.
async fn connect(
    port: u16,
    trusted: &CertificateDer<'static>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.clone()).unwrap();
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

async fn read_until<S: tokio::io::AsyncRead + Unpin>(io: &mut S, want: &str) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(STEP, async {
        while !String::from_utf8_lossy(&got).contains(want) {
            let n = io.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before {want:?}");
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{want:?} did not arrive"));
}

async fn publish(port: u16, trusted: &CertificateDer<'static>, data: &str) {
    let mut tls = connect(port, trusted).await.unwrap();
    let body = format!(r#"{{"channel":"r","data":"{data}"}}"#);
    let req = format!(
        "POST /api/publish HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(req.as_bytes()).await.unwrap();
    read_until(&mut tls, "\"offset\"").await;
}

#[tokio::test]
async fn sighup_reloads_the_certificate_and_keeps_open_connections() {
    let dir: PathBuf = std::env::temp_dir().join(format!("pushgate-hup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let old = pair();
    write(&dir, &old);
    let (proc, port) = start(&dir);

    // Open connections on the old certificate: wss and SSE.
    let tls = connect(port, &old.der).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async("wss://localhost/ws?channel=r", tls)
        .await
        .unwrap();
    tokio::time::timeout(STEP, ws.next()).await.unwrap();
    let mut sse = connect(port, &old.der).await.unwrap();
    sse.write_all(b"GET /sse?channel=r HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    read_until(&mut sse, "event: subscribed").await;

    // A broken certificate file: refused with a log line, the old one serves on.
    std::fs::write(dir.join("cert.pem"), "garbage").unwrap();
    proc.signal("HUP");
    let line = proc.line("NOT reloaded");
    assert!(line.contains("cert.pem"), "{line}");
    connect(port, &old.der)
        .await
        .expect("the old certificate still serves");

    // A renewed certificate: new handshakes get it.
    let new = pair();
    write(&dir, &new);
    proc.signal("HUP");
    proc.line("TLS certificate reloaded");
    connect(port, &new.der)
        .await
        .expect("the new certificate serves");
    assert!(
        connect(port, &old.der).await.is_err(),
        "the old one no longer does"
    );

    // The connections opened before both reloads still receive.
    publish(port, &new.der, "after-reload").await;
    read_until(&mut sse, "after-reload").await;
    tokio::time::timeout(STEP, async {
        loop {
            let m = ws.next().await.unwrap().unwrap();
            if m.is_text() && m.to_text().unwrap().contains("after-reload") {
                break;
            }
        }
    })
    .await
    .expect("the wss connection receives after the reload");
    drop(proc);
    let _ = std::fs::remove_dir_all(&dir);
}
