//! What the presence, direct-message and disconnect tests share: a server
//! that checks tokens, with `chat:` channels that have presence and
//! join/leave, and users' tokens.

use std::time::{SystemTime, UNIX_EPOCH};

use pushgate_core::auth::token::mint_hs256;
use pushgate_core::auth::Claims;
use pushgate_core::{Access, Namespace, Namespaces, Rules};
use serde_json::json;

use crate::common::*;

pub const SECRET: &str = "an-integration-test-secret-0123456789";

/// A server with an auth secret: channels open to anyone, `chat:` with
/// presence and join/leave, `room:` with presence only, direct messages for
/// tokens with `"send": true`.
pub async fn start_with_users() -> TestServer {
    start_with(with_users).await
}

/// The config of [`start_with_users`].
pub fn with_users(c: &mut pushgate_server::Config) {
    let chat = Rules {
        presence: true,
        join_leave: true,
        ..Rules::open()
    };
    let room = Rules {
        presence: true,
        ..Rules::open()
    };
    let personal = Rules {
        subscribe: Access::Claim,
        publish: Access::Claim,
        ..Rules::open()
    };
    c.auth_secret = Some(SECRET.into());
    c.namespaces = Some(Namespaces::new(
        Rules::open(),
        personal,
        vec![
            Namespace::new("chat", chat).unwrap(),
            Namespace::new("room", room).unwrap(),
        ],
    ));
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A token of `user`, issued a minute ago, valid for an hour, allowed to
/// send direct messages.
pub fn token(user: &str) -> String {
    let now = unix_now();
    let claims = Claims {
        sub: Some(user.into()),
        iat: Some(now - 60),
        exp: Some(now + 3600),
        send: true,
        ..Claims::default()
    };
    mint_hs256(SECRET, &claims, None).unwrap()
}

/// A WebSocket of `user`: authenticated with the `auth` command.
pub async fn user_ws(server: &TestServer, user: &str) -> Ws {
    let mut ws = server.ws("/ws").await;
    let reply = ws
        .command(json!({"type": "auth", "token": token(user)}))
        .await;
    assert_eq!(reply["type"], "authed", "{reply}");
    assert_eq!(reply["user"], user);
    ws
}
