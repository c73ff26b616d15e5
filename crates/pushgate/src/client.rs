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

/// The `data` of `pushgate publish`: `arg`, or standard input when it is
/// `-`, read as JSON, or sent as a JSON string with `--string`. Text that
/// is not JSON is refused rather than guessed at: a typo in JSON would
/// otherwise go out as a string.
pub fn publication_data(arg: &str, as_string: bool) -> Result<serde_json::Value, BoxError> {
    let text = if arg == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .map_err(|e| format!("cannot read the data from standard input: {e}"))?;
        // `echo hello | pushgate publish news - --string` sends "hello".
        if text.ends_with('\n') {
            text.pop();
            if text.ends_with('\r') {
                text.pop();
            }
        }
        text
    } else {
        arg.to_owned()
    };
    if as_string {
        return Ok(serde_json::Value::String(text));
    }
    serde_json::from_str(&text).map_err(|e| {
        let shown: String = text.chars().take(40).collect();
        let more = if shown.len() < text.len() { "…" } else { "" };
        format!(
            "the data {shown:?}{more} is not JSON ({e}): to send it as text, add --string \
             (it goes as a JSON string); JSON is quoted for the shell, e.g. '{{\"title\":\"hello\"}}'"
        )
        .into()
    })
}

/// Writes `line` to standard output; `false` when nobody reads it any more
/// (`pushgate subscribe … | head -n 1`): the end, not an error.
pub fn print_line(line: &str) -> Result<bool, BoxError> {
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(format!("cannot write to standard output: {e}").into()),
    }
}

pub async fn publish(
    url: &str,
    api_key: Option<&str>,
    channel: &str,
    data: serde_json::Value,
    event: Option<&str>,
) -> Result<String, BoxError> {
    let (authority, prefix) = split_url(url)?;
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
    while let Some(msg) = ws.next().await {
        let open = match msg? {
            Message::Text(t) => print_line(t.as_str())?,
            Message::Binary(b) => {
                // Header line, then raw bytes: print the header and the size.
                let head = b.split(|c| *c == b'\n').next().unwrap_or(&[]);
                print_line(&format!(
                    "{} ({} bytes binary)",
                    String::from_utf8_lossy(head),
                    b.len().saturating_sub(head.len() + 1)
                ))?
            }
            Message::Close(frame) => {
                if let Some(f) = frame {
                    eprintln!("closed by server: {} {}", u16::from(f.code), f.reason);
                }
                break;
            }
            _ => true,
        };
        if !open {
            break;
        }
    }
    Ok(())
}
