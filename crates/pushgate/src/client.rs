//! `pushgate publish` and `pushgate subscribe`: small clients of the server.

use std::io::Write as _;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::Message;

type BoxError = Box<dyn std::error::Error>;

/// Splits `http://host:port[/prefix]` into the authority and path prefix.
fn split_url(url: &str) -> Result<(&str, &str), BoxError> {
    let rest = url.strip_prefix("http://").ok_or(
        "the URL must start with http:// (TLS is terminated in front of pushgate for now)",
    )?;
    Ok(match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    })
}

pub async fn publish(
    url: &str,
    api_key: Option<&str>,
    channel: &str,
    data: &str,
    event: Option<&str>,
) -> Result<String, BoxError> {
    let (authority, prefix) = split_url(url)?;
    let data: serde_json::Value =
        serde_json::from_str(data).unwrap_or_else(|_| serde_json::Value::String(data.to_owned()));
    let mut body = serde_json::json!({ "channel": channel, "data": data });
    if let Some(e) = event {
        body["event"] = e.into();
    }
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| format!("cannot reach {authority}: {e} (is pushgate serve running?)"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut req = hyper::Request::post(format!("{prefix}/api/publish"))
        .header("host", authority)
        .header("content-type", "application/json");
    if let Some(key) = api_key {
        req = req.header("authorization", format!("Bearer {key}"));
    }
    let res = sender
        .send_request(req.body(Full::new(Bytes::from(body.to_string())))?)
        .await?;
    let status = res.status();
    let text = String::from_utf8_lossy(&res.into_body().collect().await?.to_bytes()).into_owned();
    if !status.is_success() {
        return Err(format!("server answered {status}: {text}").into());
    }
    Ok(text)
}

pub async fn subscribe(
    url: &str,
    channels: &[String],
    since: Option<&str>,
) -> Result<(), BoxError> {
    let (authority, prefix) = split_url(url)?;
    let mut query = form_urlencoded::Serializer::new(String::new());
    for c in channels {
        query.append_pair("channel", c);
    }
    if let Some(s) = since {
        query.append_pair("since", s);
    }
    let ws_url = format!("ws://{authority}{prefix}/ws?{}", query.finish());
    let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url)
        .await
        .map_err(|e| format!("cannot subscribe at {ws_url}: {e}"))?;
    let mut stdout = std::io::stdout();
    while let Some(msg) = ws.next().await {
        match msg? {
            Message::Text(t) => {
                writeln!(stdout, "{}", t.as_str())?;
                stdout.flush()?;
            }
            Message::Binary(b) => {
                // Header line, then raw bytes: print the header and the size.
                let head = b.split(|c| *c == b'\n').next().unwrap_or(&[]);
                writeln!(
                    stdout,
                    "{} ({} bytes binary)",
                    String::from_utf8_lossy(head),
                    b.len() - head.len() - 1
                )?;
            }
            Message::Close(frame) => {
                if let Some(f) = frame {
                    eprintln!("closed by server: {} {}", u16::from(f.code), f.reason);
                }
                break;
            }
            _ => {}
        }
    }
    Ok(())
}
