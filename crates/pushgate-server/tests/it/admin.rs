//! The dashboard at `/admin` and its login: off unless `admin` is enabled
//! (then 404 like any unknown path); served with a strict
//! Content-Security-Policy; its login, an admin token (`"admin": true`),
//! is taken wherever the API key is, and any other token is refused there
//! saying why.

use pushgate_core::auth::token::mint_hs256;
use pushgate_core::auth::Claims;
use serde_json::json;

use crate::common::*;
use crate::users::{unix_now, SECRET};

const KEY: &str = "the-api-key";

/// A server with an API key and an auth secret, the dashboard on or off.
async fn start_admin(enabled: bool) -> TestServer {
    start_with(|c| {
        c.admin_enabled = enabled;
        c.api_key = Some(KEY.into());
        c.auth_secret = Some(SECRET.into());
    })
    .await
}

/// A token of `user`, an admin's or not, that expires `ttl` seconds from
/// now (negative: expired that long ago).
fn token(user: &str, admin: bool, ttl: i64) -> String {
    let now = unix_now();
    let claims = Claims {
        sub: Some(user.into()),
        iat: Some(now - 120),
        exp: Some(now.saturating_add_signed(ttl)),
        admin,
        ..Claims::default()
    };
    mint_hs256(SECRET, &claims, None).unwrap()
}

/// `GET /api/history?channel=news` with `Authorization: Bearer <bearer>`.
async fn history(server: &TestServer, bearer: Option<&str>) -> (u16, serde_json::Value) {
    let mut req = server.http.get(server.url("/api/history?channel=news"));
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    server.json_response(req).await
}

#[tokio::test]
async fn admin_is_off_by_default_and_then_404_like_any_unknown_path() {
    let server = start_admin(false).await;
    for path in ["/admin", "/admin/admin.js", "/admin/admin.css"] {
        let (status, body) = server
            .json_response(server.http.get(server.url(path)))
            .await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(body["code"], "not_found", "{path}: {body}");
    }
}

#[tokio::test]
async fn the_page_is_served_with_a_strict_content_security_policy() {
    let server = start_admin(true).await;
    let page = server.get("/admin").await;
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} in {csp}");
    }
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = page.text().await.unwrap();
    assert!(html.contains("<script src=\"/admin/admin.js\""), "{html}");
    assert!(!html.contains("<script>"), "no inline script");

    let script = server.get("/admin/admin.js").await;
    assert_eq!(script.status(), 200);
    assert!(script.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    assert!(script
        .text()
        .await
        .unwrap()
        .contains("/api/connections?user="));
    let style = server.get("/admin/admin.css").await;
    assert_eq!(style.status(), 200);
    assert!(style.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/css"));
    // Not a prefix match: nothing else lives under /admin.
    let (status, _) = server
        .json_response(server.http.get(server.url("/admin/other")))
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn an_admin_token_is_taken_wherever_the_api_key_is() {
    let server = start_admin(true).await;
    let admin = token("ops", true, 600);
    assert_eq!(history(&server, Some(&admin)).await.0, 200);
    assert_eq!(
        history(&server, Some(KEY)).await.0,
        200,
        "the key still works"
    );
    // A POST the HTTP/1.1 front serves itself, and one hyper serves.
    let (status, body) = server
        .json_response(
            server
                .http
                .post(server.url("/api/publish"))
                .bearer_auth(&admin)
                .json(&json!({"channel": "news", "data": 1})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .json_response(
            server
                .http
                .post(server.url("/api/disconnect"))
                .bearer_auth(&admin)
                .json(&json!({"user": "nobody"})),
        )
        .await;
    assert_eq!((status, body), (200, json!({"disconnected": 0})));
}

#[tokio::test]
async fn other_tokens_are_refused_on_the_api_saying_why() {
    let server = start_admin(true).await;

    let (status, body) = history(&server, Some(&token("alice", false, 600))).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("\"alice\" is not an admin token") && message.contains("--admin"),
        "{message}"
    );

    let (status, body) = history(&server, Some(&token("ops", true, -60))).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("token_expired")),
        "{body}"
    );

    let forged = mint_hs256(
        "another-secret-of-at-least-32-bytes!!",
        &Claims {
            sub: Some("ops".into()),
            exp: Some(unix_now() + 600),
            admin: true,
            ..Claims::default()
        },
        None,
    )
    .unwrap();
    let (status, body) = history(&server, Some(&forged)).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("bad signature"),
        "{body}"
    );

    for bearer in [None, Some("wrong-key")] {
        let (status, body) = history(&server, bearer).await;
        assert_eq!(status, 401, "{bearer:?}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains("admin token"),
            "the refusal names both logins: {body}"
        );
    }
    // Counted apart: the three tokens under admin, the two keys under api_key.
    let text = server.metrics_text().await;
    for (reason, n) in [("admin", 3), ("api_key", 2)] {
        let series = format!("pushgate_auth_refusals_total{{reason=\"{reason}\"}}");
        assert_eq!(metric(&text, &series), Some(n), "{series} in\n{text}");
    }
    // A user disconnected by the application loses its admin token too.
    let admin = token("ops", true, 600);
    let (status, _) = server
        .json_response(
            server
                .http
                .post(server.url("/api/disconnect"))
                .bearer_auth(KEY)
                .json(&json!({"user": "ops"})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(history(&server, Some(&admin)).await.0, 401);
}

#[tokio::test]
async fn without_admin_an_admin_token_is_no_api_key() {
    let server = start_admin(false).await;
    let (status, body) = history(&server, Some(&token("ops", true, 600))).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        !body["message"].as_str().unwrap().contains("admin"),
        "the refusal does not offer what is off: {body}"
    );
}

#[tokio::test]
async fn admin_without_an_api_key_or_a_token_key_is_a_config_error() {
    let config = pushgate_server::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        demo: false,
        admin_enabled: true,
        ..Default::default()
    };
    let e = pushgate_server::Server::bind(config)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("admin") && e.contains("api_key"), "{e}");
}
