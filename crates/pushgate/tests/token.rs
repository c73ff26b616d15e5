//! `pushgate token`, run as the binary: its output is accepted by a server
//! with the same secret, and refused by one with another.

use std::process::Command;

use pushgate_server::{Config, Server};

const SECRET: &str = "the-secret-both-sides-share-32-bytes+";
const OTHER: &str = "another-secret-of-at-least-32-bytes!!";

/// Runs `pushgate token …` with `secret` in the environment, as a user would.
fn mint(secret: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pushgate"));
    cmd.arg("token")
        .args(args)
        .env_remove("PUSHGATE_AUTH_SECRET");
    if let Some(secret) = secret {
        cmd.env("PUSHGATE_AUTH_SECRET", secret);
    }
    cmd.output().expect("pushgate runs")
}

fn token(secret: &str) -> String {
    let out = mint(
        Some(secret),
        &["--sub", "alice", "--channels", "chat:*", "--ttl", "10m"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn the_server_accepts_its_tokens_and_refuses_another_secrets() {
    let server = Server::bind(Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        demo: false,
        auth_secret: Some(SECRET.into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let url = format!("http://{}/poll?channel=chat:a", server.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let poll = |token: String| {
        let req = http.get(&url).bearer_auth(token);
        async move {
            let res = req.send().await.unwrap();
            let status = res.status().as_u16();
            (status, res.json::<serde_json::Value>().await.unwrap())
        }
    };
    let (status, body) = poll(token(SECRET)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = poll(token(OTHER)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("unauthorized")),
        "{body}"
    );
    let _ = stop.send(());
    run.await.unwrap().unwrap();
}

#[test]
fn without_a_secret_it_says_so_and_fails() {
    let out = mint(None, &["--sub", "alice"]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no auth secret"), "{err}");
}
