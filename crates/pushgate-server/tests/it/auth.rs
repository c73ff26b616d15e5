//! Authentication and permissions on every client transport: each refusal
//! has its documented status or close code, no message leaks to a client
//! that may not see it, tokens are read from the header, the query and the
//! WebSocket `auth` command, and a token's expiry ends its connection.

use std::time::{SystemTime, UNIX_EPOCH};

use pushgate_core::auth::token::{mint_hs256, Claims};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::common::*;

const SECRET: &str = "an-hs256-secret-of-at-least-32-bytes";
const AUDIENCE: &str = "pushgate-tests";

fn testdata(name: &str) -> String {
    format!(
        "{}/../pushgate-core/src/auth/testdata/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// alice: may subscribe to `chat:*` and `news`, publish to `chat:*` only.
fn claims(exp: u64) -> Claims {
    Claims {
        sub: Some("alice".into()),
        exp: Some(exp),
        channels: vec!["chat:*".into(), "news".into()],
        publish: vec!["chat:*".into()],
        ..Default::default()
    }
}

fn token_expiring_at(exp: u64) -> String {
    mint_hs256(SECRET, &claims(exp), Some(AUDIENCE)).unwrap()
}

fn good_token() -> String {
    token_expiring_at(now() + 600)
}

/// A server that checks HS256 tokens with an audience; every channel needs
/// a token's claim (the defaults with a key).
async fn hs_server() -> TestServer {
    start_with(|c| {
        c.auth_secret = Some(SECRET.into());
        c.auth_audience = Some(AUDIENCE.into());
    })
    .await
}

/// A server that checks RS256 tokens with a public key.
async fn rs_server() -> TestServer {
    start_with(|c| c.auth_public_key = Some(testdata("rsa-public.pem"))).await
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Transport {
    Ws,
    Sse,
    Ndjson,
    Iframe,
    Poll,
    LongPoll,
    Command,
}

const ALL: [Transport; 7] = [
    Transport::Ws,
    Transport::Sse,
    Transport::Ndjson,
    Transport::Iframe,
    Transport::Poll,
    Transport::LongPoll,
    Transport::Command,
];

/// What a refused attempt got.
#[derive(Debug, PartialEq)]
enum Refused {
    /// An HTTP status and the error body's code.
    Http(u16, String),
    /// A WebSocket `error` frame's code, then a close code (`None`: the
    /// socket stays open).
    Ws(String, Option<u16>),
}

/// Tries to subscribe to `channel` on `t` (on `/command`: to publish to
/// it) with `token` (the `Authorization` header on HTTP, `?token=` on the
/// WebSocket); returns the refusal, failing if there was none.
async fn attempt(s: &TestServer, t: Transport, token: Option<&str>, channel: &str) -> Refused {
    let mut query = format!("channel={channel}");
    if t == Transport::Ws {
        if let Some(token) = token {
            query.push_str(&format!("&token={token}"));
        }
        let mut ws = s.ws(&format!("/ws?{query}")).await;
        let error = ws.next_json().await;
        assert_eq!(error["type"], "error", "{t:?}: {error}");
        let code = error["code"].as_str().unwrap().to_owned();
        // A refused subscription leaves the socket open: a command is answered.
        let answer = ws
            .command(json!({"type": "unsubscribe", "channel": "x"}))
            .await;
        assert!(answer["type"].is_string(), "{answer}");
        return Refused::Ws(code, None);
    }
    let path = match t {
        Transport::Sse => format!("/sse?{query}"),
        Transport::Ndjson => format!("/stream?{query}"),
        Transport::Iframe => format!("/iframe?{query}&callback=cb"),
        Transport::Poll => format!("/poll?{query}&since=earliest"),
        Transport::LongPoll => format!("/longpoll?{query}&timeout=1"),
        Transport::Command | Transport::Ws => "/command".to_owned(),
    };
    let mut req = match t {
        Transport::Command => s
            .http
            .post(s.url(&path))
            .body(json!({"type": "publish", "channel": channel, "data": 1}).to_string()),
        _ => s.http.get(s.url(&path)),
    };
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let res = within("the answer", req.send()).await.unwrap();
    let status = res.status().as_u16();
    assert_ne!(status, 200, "{t:?} {channel}: expected a refusal");
    let body: Value = within("the error body", res.json()).await.unwrap();
    assert_eq!(body["type"], "error", "{body}");
    assert!(!body["message"].as_str().unwrap().is_empty(), "{body}");
    Refused::Http(status, body["code"].as_str().unwrap().to_owned())
}

/// Opens a WebSocket with a token that the handshake refuses: the upgrade
/// completes, an `error` frame says why, and the close code follows.
async fn ws_refused_token(s: &TestServer, token: &str) -> Refused {
    let mut ws = s.ws(&format!("/ws?channel=chat:a&token={token}")).await;
    let error = ws.next_json().await;
    assert_eq!(error["type"], "error", "{error}");
    let close = ws.expect_close().await;
    Refused::Ws(error["code"].as_str().unwrap().to_owned(), close)
}

/// A token with `alg: none` and no signature, claiming alice.
fn alg_none_token() -> String {
    let good = good_token();
    let payload = good.split('.').nth(1).unwrap();
    // base64url of {"alg":"none","typ":"JWT"}
    format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.")
}

#[tokio::test]
async fn every_refusal_has_its_status_or_close_code_on_every_transport() {
    let hs = hs_server().await;
    let rs = rs_server().await;
    let pem = std::fs::read_to_string(testdata("rsa-public.pem")).unwrap();
    // An HS256 token whose "secret" is the server's RSA public key.
    let confused = mint_hs256(&pem, &claims(now() + 600), None).unwrap();
    let other_secret = mint_hs256(
        "another-secret-of-at-least-32-bytes!",
        &claims(now() + 600),
        Some(AUDIENCE),
    )
    .unwrap();
    let wrong_audience = mint_hs256(SECRET, &claims(now() + 600), Some("someone-else")).unwrap();
    let expired = token_expiring_at(now() - 120);
    let good = good_token();

    // (what, server, token, channel, HTTP status, code, WebSocket close)
    let bad_tokens: [(&str, &TestServer, &str, u16, &str, u16); 5] = [
        (
            "bad signature",
            &hs,
            &other_secret,
            401,
            "unauthorized",
            4401,
        ),
        ("expired", &hs, &expired, 401, "token_expired", 4002),
        (
            "alg none",
            &hs,
            &alg_none_token(),
            401,
            "unauthorized",
            4401,
        ),
        ("HS/RS confusion", &rs, &confused, 401, "unauthorized", 4401),
        (
            "wrong audience",
            &hs,
            &wrong_audience,
            401,
            "unauthorized",
            4401,
        ),
    ];
    for (what, s, token, status, code, close) in bad_tokens {
        for t in ALL {
            let got = match t {
                Transport::Ws => ws_refused_token(s, token).await,
                _ => attempt(s, t, Some(token), "chat:a").await,
            };
            let want = match t {
                Transport::Ws => Refused::Ws(code.into(), Some(close)),
                _ => Refused::Http(status, code.into()),
            };
            assert_eq!(got, want, "{what} on {t:?}");
        }
    }

    // Refused channels: on a WebSocket an error reply, and the socket stays.
    let refused_channels = [
        (
            "no token where anonymous is not allowed",
            None,
            "chat:a",
            401,
            "unauthorized",
        ),
        (
            "channel not permitted",
            Some(good.as_str()),
            "secret",
            403,
            "forbidden",
        ),
    ];
    for (what, token, channel, status, code) in refused_channels {
        for t in ALL {
            let want = match t {
                Transport::Ws => Refused::Ws(code.into(), None),
                _ => Refused::Http(status, code.into()),
            };
            assert_eq!(
                attempt(&hs, t, token, channel).await,
                want,
                "{what} on {t:?}"
            );
        }
    }

    // Publish not permitted: alice may read `news` but not publish to it.
    let (status, body) = hs
        .json_response(
            hs.http
                .post(hs.url("/command"))
                .bearer_auth(&good)
                .body(json!({"type": "publish", "channel": "news", "data": 1}).to_string()),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    let mut ws = hs.ws(&format!("/ws?token={good}")).await;
    let reply = ws
        .command(json!({"type": "publish", "channel": "news", "data": 1}))
        .await;
    assert_eq!(
        (reply["type"].as_str(), reply["code"].as_str()),
        (Some("error"), Some("forbidden"))
    );
    let reply = ws
        .command(json!({"type": "publish", "channel": "chat:a", "data": 1}))
        .await;
    assert_eq!(
        reply["type"], "published",
        "the socket stays and may publish where allowed: {reply}"
    );
}

#[tokio::test]
async fn no_message_leaks_on_any_transport() {
    let s = hs_server().await;
    let token = good_token();
    let auth = |req: reqwest::RequestBuilder| req.bearer_auth(&token);
    // The barrier: a forbidden message, then an allowed one; once the
    // allowed one is seen, the forbidden one had its chance to leak.
    let publish_both = || async {
        s.publish("secret", json!("forbidden")).await;
        s.publish("chat:a", json!("allowed")).await
    };
    let allowed = |v: &Value| {
        assert_eq!(v["channel"], "chat:a", "only chat:a may arrive: {v}");
        assert_eq!(v["data"], "allowed", "{v}");
    };

    // WebSocket: the refused subscription does not subscribe.
    let mut ws = s.ws(&format!("/ws?token={token}")).await;
    ws.subscribe("chat:a").await;
    let refused = ws
        .command(json!({"type": "subscribe", "channel": "secret"}))
        .await;
    assert_eq!(refused["code"], "forbidden", "{refused}");
    publish_both().await;
    allowed(&ws.next_json().await);

    // Event streams: the allowed stream is open, the forbidden one refused.
    let mut sse = s.sse(&format!("channel=chat:a&token={token}")).await;
    let mut nd = s.ndjson(&format!("channel=chat:a&token={token}")).await;
    let mut iframe = s
        .iframe(&format!("channel=chat:a&token={token}"), "cb")
        .await;
    sse.expect_subscribed("chat:a").await;
    nd.expect_subscribed("chat:a").await;
    iframe.expect_subscribed("chat:a").await;
    for t in [Transport::Sse, Transport::Ndjson, Transport::Iframe] {
        assert_eq!(
            attempt(&s, t, Some(&token), "secret").await,
            Refused::Http(403, "forbidden".into())
        );
    }
    let waiting = tokio::spawn({
        let req = auth(s.http.get(s.url("/longpoll?channel=chat:a&timeout=10")));
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    });
    wait_until("the long-poll waits", || {
        s.open(pushgate_server::metrics::Transport::LongPoll) == 1
    })
    .await;
    publish_both().await;
    let event = sse.next_event().await;
    assert_eq!(event.event, "message", "{event:?}");
    allowed(&event.json());
    allowed(&nd.next_json().await);
    allowed(&iframe.next_call().await);
    let polled = Polled::from_json(within("the long-poll", waiting).await.unwrap());
    assert_eq!(polled.messages.len(), 1, "{:?}", polled.messages);
    allowed(&polled.messages[0]);
    let (status, body) = s
        .json_response(auth(
            s.http.get(s.url("/poll?channel=chat:a&since=earliest")),
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    let polled = Polled::from_json(body);
    assert_eq!(polled.messages.len(), 2, "{:?}", polled.messages);
    for m in &polled.messages {
        allowed(m);
    }
}

#[tokio::test]
async fn a_token_is_read_from_the_header_the_query_and_the_auth_command() {
    let s = hs_server().await;
    let token = good_token();

    // SSE with the header, and with ?token= (EventSource sets no headers).
    let req = s.http.get(s.url("/sse?channel=chat:a")).bearer_auth(&token);
    let mut by_header = s.open_stream_request(req, "text/event-stream").await;
    assert!(!by_header.next_chunk().await.unwrap().is_empty());
    let mut by_query = s.sse(&format!("channel=chat:a&token={token}")).await;
    by_query.expect_subscribed("chat:a").await;

    // WebSocket with the header.
    let mut req = s
        .ws_url("/ws?channel=chat:a")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (inner, _) = within(
        "the handshake",
        tokio_tungstenite::connect_async_with_config(req, None, true),
    )
    .await
    .unwrap();
    let mut ws = Ws { inner };
    assert_subscribed(&ws.next_json().await, "chat:a");

    // WebSocket with the `auth` command: anonymous first, then alice.
    let mut ws = s.ws("/ws").await;
    let refused = ws
        .command(json!({"type": "subscribe", "channel": "chat:a"}))
        .await;
    assert_eq!(refused["code"], "unauthorized", "{refused}");
    let authed = ws.command(json!({"type": "auth", "token": token})).await;
    assert_eq!(authed["type"], "authed", "{authed}");
    assert_eq!(authed["user"], "alice", "{authed}");
    ws.subscribe("chat:a").await;
    s.publish("chat:a", json!("hi")).await;
    assert_eq!(ws.next_json().await["data"], "hi");
}

#[tokio::test]
async fn an_expired_token_closes_the_websocket_and_ends_the_sse_stream() {
    let s = hs_server().await;
    let token = token_expiring_at(now() + 2);
    let mut ws = s.ws(&format!("/ws?channel=chat:a&token={token}")).await;
    assert_subscribed(&ws.next_json().await, "chat:a");
    let mut sse = s.sse(&format!("channel=chat:a&token={token}")).await;
    sse.expect_subscribed("chat:a").await;
    assert_eq!(ws.expect_close().await, Some(4002));
    let end = sse.next_event().await;
    assert_eq!(end.event, "end", "{end:?}");
    assert_eq!(end.json(), json!({"type": "end", "reason": "expired"}));
    assert_eq!(sse.next_item().await, None, "the stream ended");
}

#[tokio::test]
async fn an_auth_refresh_before_expiry_keeps_the_websocket_open() {
    let s = hs_server().await;
    let first_exp = now() + 2;
    let mut ws = s
        .ws(&format!(
            "/ws?channel=chat:a&token={}",
            token_expiring_at(first_exp)
        ))
        .await;
    assert_subscribed(&ws.next_json().await, "chat:a");
    let authed = ws
        .command(json!({"type": "auth", "token": token_expiring_at(now() + 600)}))
        .await;
    assert_eq!(authed["type"], "authed", "{authed}");
    // Past the first token's expiry (no event marks that moment: only
    // waiting does), the socket still delivers; had it been closed, the
    // next frame would be the close.
    let past = (first_exp + 2).saturating_sub(now());
    tokio::time::sleep(std::time::Duration::from_secs(past)).await;
    s.publish("chat:a", json!("still here")).await;
    let m = ws.next_json().await;
    assert_eq!(m["data"], "still here", "{m}");
}

#[tokio::test]
async fn a_server_without_a_key_refuses_tokens_and_stays_open() {
    let s = start().await;
    let (status, body) = s
        .json_response(s.http.get(s.url("/poll?channel=x&token=abc")))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("unauthorized")),
        "{body}"
    );
    let polled = s.poll("/poll?channel=x").await;
    assert!(polled.messages.is_empty());
}

#[tokio::test]
async fn a_long_poll_held_past_its_tokens_expiry_is_answered_then_and_refused_after() {
    let s = hs_server().await;
    let token = token_expiring_at(now() + 2);
    let held = s
        .http
        .get(s.url("/longpoll?channel=chat:a&timeout=60"))
        .bearer_auth(&token);
    let (status, body) = s.json_response(held).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        Polled::from_json(body).messages.is_empty(),
        "answered empty at the expiry"
    );
    let again = s
        .http
        .get(s.url("/longpoll?channel=chat:a&timeout=60"))
        .bearer_auth(&token);
    let (status, body) = s.json_response(again).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("token_expired")),
        "{body}"
    );
}
