//! The log an operator reads, from the real binary's standard error: a
//! line when a connection opens and one when it closes (transport, peer,
//! user, duration, why, messages delivered), a line per server API
//! request, refusal warnings that an attack cannot turn into a flood, and
//! no colour codes when standard error is not a terminal.

mod common;

use std::process::{Command, Stdio};

use futures_util::StreamExt;
use serde_json::Value;

use common::Proc;

const SECRET: &str = "an-hs256-secret-of-at-least-32-bytes";

/// The value of `field=` in a log line (up to the next space).
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let at = line.find(&format!(" {name}="))? + name.len() + 2;
    line[at..].split_whitespace().next()
}

fn token(sub: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .args([
            "token",
            "--sub",
            sub,
            "--channels",
            "news",
            "--auth-secret",
            SECRET,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn a_connection_logs_its_opening_and_its_close() {
    let server = Proc::serve(["--auth-secret", SECRET]);
    let addr = server.addr();
    let url = format!("ws://{addr}/ws?channel=news&token={}", token("alice"));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let opened = server.line("connection opened");
    assert_eq!(field(&opened, "transport"), Some("\"ws\""), "{opened}");
    assert_eq!(field(&opened, "user"), Some("\"alice\""), "{opened}");
    assert!(
        field(&opened, "peer").is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{opened}"
    );

    // Two messages delivered, then the client closes.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    for n in 1..=2 {
        let res = http
            .post(format!("http://{addr}/api/publish"))
            .body(format!(r#"{{"channel":"news","data":{n}}}"#))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let api = server.line("api request");
        assert_eq!(field(&api, "method"), Some("\"POST\""), "{api}");
        assert_eq!(field(&api, "path"), Some("\"/api/publish\""), "{api}");
        assert_eq!(field(&api, "status"), Some("200"), "{api}");
        assert!(field(&api, "duration_ms").is_some(), "{api}");
    }
    let mut messages = 0;
    while messages < 2 {
        let frame = ws.next().await.unwrap().unwrap();
        let v: Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
        if v["type"] == "message" {
            messages += 1;
        }
    }
    ws.close(None).await.unwrap();
    while ws.next().await.is_some() {}
    let closed = server.line("connection closed");
    assert_eq!(field(&closed, "transport"), Some("\"ws\""), "{closed}");
    assert_eq!(field(&closed, "user"), Some("\"alice\""), "{closed}");
    assert_eq!(
        field(&closed, "reason"),
        Some("\"client_closed\""),
        "{closed}"
    );
    assert_eq!(field(&closed, "delivered"), Some("2"), "{closed}");
    assert!(
        field(&closed, "duration_ms").is_some_and(|d| d.parse::<u64>().is_ok()),
        "{closed}"
    );

    // A forged token: refused, with a warning that says why.
    let res = http
        .get(format!("http://{addr}/sse?channel=news&token=forged"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let refused = server.line("refused");
    assert!(refused.contains("WARN"), "{refused}");
    assert_eq!(field(&refused, "reason"), Some("\"token\""), "{refused}");
}

#[tokio::test]
async fn refusal_warnings_are_rate_limited() {
    let server = Proc::serve(["--api-key", "the-key"]);
    let addr = server.addr();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    // A burst of wrong keys.
    let started = std::time::Instant::now();
    for _ in 0..200 {
        let res = http
            .get(format!("http://{addr}/api/history?channel=x"))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
    }
    let took = started.elapsed();
    // Every refusal is counted.
    let text = common::metrics_text(&http, &format!("http://{addr}")).await;
    assert!(
        text.contains("pushgate_auth_refusals_total{reason=\"api_key\"} 200"),
        "{text}"
    );
    // A good request's line shows the log was read up to here.
    let res = http
        .get(format!("http://{addr}/api/history?channel=marker"))
        .bearer_auth("the-key")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut lines = Vec::new();
    loop {
        let line = server.line("");
        if line.contains("\"/api/history\"") && line.contains("status=200") {
            break;
        }
        lines.push(line);
    }
    let warnings = lines.iter().filter(|l| l.contains("refused")).count() as u64;
    let seconds = took.as_secs() + 2;
    assert!(warnings >= 1, "the first refusals are written");
    assert!(
        warnings <= 10 * seconds && warnings < 200,
        "{warnings} warnings in {took:?}"
    );
}

#[test]
fn no_colour_codes_when_standard_error_is_not_a_terminal() {
    use std::io::{BufRead, BufReader};
    // NO_COLOR is not set: only the pipe says "no colours".
    let mut child = Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .args(["serve", "--no-demo", "--listen", "127.0.0.1:0"])
        .env_remove("NO_COLOR")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        let done = line.contains("listening");
        seen.push(line);
        if done {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = seen.join("\n");
    assert!(text.contains("INFO"), "{text}");
    assert!(!text.contains('\u{1b}'), "escape codes in {text:?}");
}
