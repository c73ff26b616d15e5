//! docs/backend.md's Python and Node examples, run for real: the files in
//! docs/examples/backend/ with the real `python3` and `node` against a
//! real server (its URL and API key passed by environment), asserting
//! what they print and what their calls did. The doc quotes each file
//! verbatim (checked here), so the doc and the files cannot drift. Without
//! `python3` or `node` a test says so and passes, unless `CI` is set.

use crate::common::*;
use crate::users::{user_ws, with_users};
use serde_json::json;

const DOC: &str = include_str!("../../../../docs/backend.md");
const PYTHON: &str = include_str!("../../../../docs/examples/backend/backend.py");
const NODE: &str = include_str!("../../../../docs/examples/backend/backend.mjs");

fn example(file: &str) -> String {
    format!(
        "{}/../../docs/examples/backend/{file}",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// Whether `program` runs; if not, skipping is an error under `CI`.
async fn available(program: &str) -> bool {
    let ran = tokio::process::Command::new(program)
        .arg("--version")
        .output()
        .await
        .is_ok_and(|o| o.status.success());
    if !ran {
        assert!(
            std::env::var_os("CI").is_none(),
            "{program} is needed to run docs/backend.md's example (CI is set)"
        );
        eprintln!(
            "skipped: {program} is not installed, so its docs/backend.md example did not run"
        );
    }
    ran
}

/// Runs `program file` against a server where alice sits in
/// chat:lobby; checks what it printed, that her WebSocket got the publish
/// and was closed by the disconnect.
async fn run_example(program: &str, file: &str, expected: &str) {
    let server = start_with(|c| {
        with_users(c);
        c.api_key = Some("backend-key".into());
    })
    .await;
    let mut alice = user_ws(&server, "alice").await;
    alice.subscribe("chat:lobby").await;
    alice.subscribe("news").await;
    let out = within(
        &format!("{program} {file}"),
        tokio::process::Command::new(program)
            .arg(example(file))
            .env("PUSHGATE_URL", server.url(""))
            .env("PUSHGATE_API_KEY", "backend-key")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{program} {file} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout, expected, "what {file} printed");
    let got = alice.next_json().await;
    assert_eq!(
        (&got["channel"], &got["data"]),
        (&json!("news"), &json!({"title": "hello"}))
    );
    for _ in 0..2 {
        assert_eq!(alice.next_json().await["channel"], "news");
    }
    assert_eq!(alice.expect_close().await, Some(4003), "disconnected");
}

#[tokio::test]
async fn the_python_example_runs_as_documented() {
    if !available("python3").await {
        return;
    }
    let expected = "published on news at offset 1\n\
        batch offsets: [2, 3]\n\
        history: ['hello', 'second', 'third']\n\
        in chat:lobby: ['alice']\n\
        disconnected alice: 1 connection(s)\n";
    run_example("python3", "backend.py", expected).await;
}

#[tokio::test]
async fn the_node_example_runs_as_documented() {
    if !available("node").await {
        return;
    }
    let expected = "published on news at offset 1\n\
        batch offsets: [2,3]\n\
        history: [\"hello\",\"second\",\"third\"]\n\
        in chat:lobby: [\"alice\"]\n\
        disconnected alice: 1 connection(s)\n";
    run_example("node", "backend.mjs", expected).await;
}

#[test]
fn the_doc_quotes_the_runnable_examples_verbatim() {
    for (file, text) in [("backend.py", PYTHON), ("backend.mjs", NODE)] {
        assert!(
            DOC.contains(text),
            "docs/backend.md must quote docs/examples/backend/{file} verbatim"
        );
    }
}
