//! `pushgate publish` and `pushgate subscribe` as a user runs them: JSON
//! or `--string`, data from standard input, a refusal of text that is not
//! JSON, and a quiet end when the reader of the output goes away.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Output, Stdio};

use common::{Proc, STEP};

fn pushgate() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pushgate"));
    cmd.env_remove("PUSHGATE_URL")
        .env_remove("PUSHGATE_API_KEY");
    cmd
}

/// `pushgate publish ARGS` against `url`, with `stdin` as its input.
fn publish(url: &str, args: &[&str], stdin: &str) -> Output {
    let mut child = pushgate()
        .arg("publish")
        .args(args)
        .args(["--url", url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn subscribe(url: &str, args: &[&str]) -> Child {
    pushgate()
        .arg("subscribe")
        .args(args)
        .args(["--url", url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for `child` to end, at most [`STEP`].
fn wait(mut child: Child) -> Output {
    let (tx, rx) = std::sync::mpsc::channel();
    let id = child.id();
    let stderr = child.stderr.take();
    std::thread::spawn(move || {
        let status = child.wait();
        let _ = tx.send(status);
    });
    let status = rx
        .recv_timeout(STEP)
        .unwrap_or_else(|_| panic!("pushgate {id} did not end"))
        .unwrap();
    let mut err = Vec::new();
    if let Some(mut e) = stderr {
        std::io::Read::read_to_end(&mut e, &mut err).unwrap();
    }
    Output {
        status,
        stdout: Vec::new(),
        stderr: err,
    }
}

#[test]
fn publish_refuses_text_that_is_not_json_and_says_how_to_send_text() {
    // Refused before any connection: no server is needed to see it.
    let out = publish("http://127.0.0.1:9", &["news", "hello world"], "");
    assert!(!out.status.success());
    let e = String::from_utf8(out.stderr).unwrap();
    assert!(e.contains("\"hello world\" is not JSON"), "{e}");
    assert!(e.contains("--string"), "{e}");
    let out = publish("http://127.0.0.1:9", &["news", "{\"title\": hello}"], "");
    let e = String::from_utf8(out.stderr).unwrap();
    assert!(e.contains("is not JSON") && e.contains("--string"), "{e}");
}

#[test]
fn publish_sends_json_text_and_standard_input() {
    let server = Proc::serve(Vec::<&str>::new());
    let url = format!("http://{}", server.addr());
    let sent = [
        (vec!["news", "{\"title\":\"hello\"}"], ""),
        (vec!["news", "hello world", "--string"], ""),
        (vec!["news", "-"], "{\"from\": \"stdin\"}\n"),
        (vec!["news", "-", "--string"], "a line\n"),
        (vec!["news", "42", "--string"], ""),
    ];
    for (args, stdin) in &sent {
        let out = publish(&url, args, stdin);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8(out.stdout)
            .unwrap()
            .contains("\"offset\""));
    }
    let mut sub = subscribe(&url, &["news", "--since", "earliest"]);
    let mut lines = BufReader::new(sub.stdout.take().unwrap()).lines();
    let mut data = Vec::new();
    while data.len() < sent.len() {
        let line: serde_json::Value =
            serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        if line["type"] == "message" {
            data.push(line["data"].clone());
        }
    }
    let _ = sub.kill();
    let _ = sub.wait();
    assert_eq!(
        data,
        [
            serde_json::json!({"title": "hello"}),
            "hello world".into(),
            serde_json::json!({"from": "stdin"}),
            "a line".into(),
            "42".into(),
        ]
    );
}

/// `pushgate subscribe news | head -n 1`: once the reader is gone, the
/// next message ends the subscriber, with status 0 and nothing said.
#[test]
fn subscribe_ends_quietly_when_its_reader_goes_away() {
    let server = Proc::serve(Vec::<&str>::new());
    let url = format!("http://{}", server.addr());
    let mut sub = subscribe(&url, &["news"]);
    let mut out = BufReader::new(sub.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert!(first.contains("\"subscribed\""), "{first}");
    // As `head -n 1` does: read one line, close the pipe.
    drop(out);
    let published = publish(&url, &["news", "{\"n\":1}"], "");
    assert!(published.status.success());
    let ended = wait(sub);
    let said = String::from_utf8(ended.stderr).unwrap();
    assert!(ended.status.success(), "{:?}: {said}", ended.status);
    assert_eq!(said, "");
}

#[test]
fn positional_arguments_have_help() {
    for (command, names) in [
        ("publish", &["<CHANNEL>", "<DATA>"][..]),
        ("subscribe", &["<CHANNEL>..."][..]),
    ] {
        let out = pushgate().args([command, "--help"]).output().unwrap();
        let help = String::from_utf8(out.stdout).unwrap();
        for name in names {
            let line = help
                .lines()
                .find(|l| l.trim_start().starts_with(name))
                .unwrap_or_else(|| panic!("{name} not in {help}"));
            assert!(
                line.trim().len() > name.len() + 10,
                "{name} has no help: {line}"
            );
        }
    }
}
