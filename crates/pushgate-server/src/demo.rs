//! The page at `/` and the clock it shows: the server publishes its time on
//! channel `clock` every second while `demo` is on. With `demo_tokens` and an
//! auth secret, `/demo/token?user=NAME` hands anyone a token for the chat.
//! `/demo/webrtc` is a two-tab WebRTC chat (and video) built on `pg.rtc`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{Response, StatusCode};
use pushgate_core::auth::token::{mint_hs256, Claims};
use pushgate_core::{ChannelName, Data, Error, ErrorKind};

use crate::config::Config;
use crate::state::AppState;
use crate::web::{error, json, text, Body};

const INDEX: &str = include_str!("../assets/index.html");
const WEBRTC: &str = include_str!("../assets/webrtc.html");

/// How long a demo token lasts.
const DEMO_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// The demo's routes: the page at `/`, `/demo/token` and `/demo/webrtc`.
pub fn serve<B>(state: &AppState, req: &http::Request<B>) -> Response<Body> {
    match req.uri().path() {
        "/demo/token" => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            token(&state.config, req.uri().query().unwrap_or(""), now)
        }
        "/demo/webrtc" => page(WEBRTC, &state.config),
        _ => page(INDEX, &state.config),
    }
}

/// The link each page has to the admin dashboard, hidden unless this server
/// serves `/admin`: decided here rather than by the page asking, since a
/// 404 would be a console error on every load.
const ADMIN_LINK: &str = r#"<a href="/admin" id="admin-link" hidden>"#;

/// The main page's mark of whether `/demo/token` hands out tokens, for
/// the same reason.
const TOKENS_OFF: &str = r#"<body data-demo-tokens="off">"#;

/// A demo page, with its link to `/admin` shown when the server has it on,
/// and sign-in offered when demo tokens are.
fn page(html: &'static str, config: &Config) -> Response<Body> {
    let mut html = html.to_owned();
    if crate::routes::find("/admin").is_some_and(|r| r.available(config)) {
        html = html.replacen(ADMIN_LINK, r#"<a href="/admin" id="admin-link">"#, 1);
    }
    if config.demo_tokens && config.auth_secret.is_some() {
        html = html.replacen(TOKENS_OFF, r#"<body data-demo-tokens="on">"#, 1);
    }
    text(StatusCode::OK, "text/html; charset=utf-8", html)
}

/// `GET /demo/token?user=NAME` → `{"token":…}`: an HS256 token for NAME,
/// valid one hour, that may subscribe to and publish on `chat:*`, subscribe
/// to its personal channel `#NAME` and send direct messages. Served only with
/// `demo`, `demo_tokens` and an auth secret (else 404): anyone who can reach
/// the server gets a token, so it is for trying users, never for production.
pub fn token(config: &Config, query: &str, now_secs: u64) -> Response<Body> {
    match mint_demo_token(config, query, now_secs) {
        Ok(t) => json(
            StatusCode::OK,
            serde_json::json!({ "token": t }).to_string(),
        ),
        Err(e) => error(&e),
    }
}

fn mint_demo_token(config: &Config, query: &str, now_secs: u64) -> Result<String, Error> {
    let secret = match (&config.auth_secret, config.demo && config.demo_tokens) {
        (Some(secret), true) => secret,
        _ => {
            return Err(Error::new(
                ErrorKind::NotFound,
                "demo tokens are off: start pushgate with --auth-secret and --demo-tokens",
            ))
        }
    };
    let user = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "user")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    if !valid_demo_user(&user) {
        return Err(Error::bad_request(format!(
            "user {user:?}: give ?user=NAME, 1 to 32 of A-Z a-z 0-9 _ -"
        )));
    }
    let claims = Claims {
        sub: Some(user.clone()),
        exp: Some(now_secs + DEMO_TOKEN_TTL.as_secs()),
        iat: Some(now_secs),
        channels: vec!["chat:*".into(), format!("#{user}")],
        publish: vec!["chat:*".into()],
        send: true,
        iss: config.auth_issuer.clone(),
        ..Claims::default()
    };
    mint_hs256(secret, &claims, config.auth_audience.as_deref())
}

/// 1–32 of `[A-Za-z0-9_-]`.
fn valid_demo_user(user: &str) -> bool {
    (1..=32).contains(&user.len())
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Publishes `{"unix_ms": N}` on `clock` once a second (in a cluster, once
/// a second in all: each second the node that claims it first).
pub async fn clock(state: Arc<AppState>) {
    let channel = ChannelName::new("clock").expect("static name is valid");
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        // In a cluster one node ticks each second: the first to claim it.
        if let Some(cluster) = state.hub.cluster() {
            if !cluster
                .claim(&format!("clock:{}", ms / 1000), 5_000)
                .await
                .unwrap_or(false)
            {
                continue;
            }
        }
        let data = Data::json(&format!("{{\"unix_ms\":{ms}}}")).expect("a JSON object");
        match state.hub.publish(channel.clone(), None, data).await {
            Ok(_) => state.metrics.published(crate::metrics::Source::Demo),
            Err(e) => {
                state.metrics.publish_error();
                tracing::warn!(error = %e, "demo clock could not publish");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pushgate_core::auth::token::{AuthConfig, Verifier};
    use pushgate_core::auth::Patterns;

    /// Each page links to every other, and its admin link is the one
    /// [`page`] shows.
    #[test]
    fn every_page_links_to_the_others() {
        for html in [INDEX, WEBRTC] {
            assert_eq!(html.matches(ADMIN_LINK).count(), 1);
            for href in [r#"href="/""#, r#"href="/demo/webrtc""#] {
                assert!(html.contains(href), "{href}");
            }
        }
        let page = |c: &Config| match page(INDEX, c).into_body() {
            Body::Full(Some(b)) => String::from_utf8(b.to_vec()).unwrap(),
            _ => unreachable!("a page is one body"),
        };
        assert!(page(&Config::default()).contains(ADMIN_LINK));
    }

    /// Sign-in is offered exactly when `/demo/token` hands out tokens.
    #[test]
    fn the_page_says_whether_demo_tokens_are_offered() {
        assert_eq!(INDEX.matches(TOKENS_OFF).count(), 1);
        let page = |c: &Config| match page(INDEX, c).into_body() {
            Body::Full(Some(b)) => String::from_utf8(b.to_vec()).unwrap(),
            _ => unreachable!("a page is one body"),
        };
        for (c, on) in [
            (config(true, Some(SECRET)), true),
            (config(true, None), false),
            (config(false, Some(SECRET)), false),
        ] {
            assert_eq!(
                page(&c).contains(r#"data-demo-tokens="on""#),
                on,
                "tokens {} secret {}",
                c.demo_tokens,
                c.auth_secret.is_some()
            );
            let offered = token(&c, "user=a", 1).status() == StatusCode::OK;
            assert_eq!(offered, on);
        }
    }

    const SECRET: &str = "a demo secret of at least 32 bytes, for tests";

    fn config(tokens: bool, secret: Option<&str>) -> Config {
        Config {
            demo: true,
            demo_tokens: tokens,
            auth_secret: secret.map(String::from),
            ..Config::default()
        }
    }

    fn body(res: Response<Body>) -> serde_json::Value {
        match res.into_body() {
            Body::Full(Some(b)) => serde_json::from_slice(&b).expect("JSON"),
            _ => panic!("a full body"),
        }
    }

    #[test]
    fn mints_a_chat_token_for_a_valid_name() {
        let res = token(&config(true, Some(SECRET)), "user=alice", 1_000);
        assert_eq!(res.status(), StatusCode::OK);
        let t = body(res)["token"].as_str().expect("a token").to_string();
        let verifier = Verifier::new(AuthConfig {
            hmac_secret: Some(SECRET.into()),
            ..AuthConfig::default()
        })
        .expect("a verifier");
        let user = verifier.verify(&t, 1_100).expect("valid");
        assert_eq!(&*user.id, "alice");
        assert_eq!(user.expires, Some(1_000 + 3600));
        assert_eq!(
            user.channels,
            Patterns::new(["chat:*", "#alice"]).expect("patterns")
        );
        assert_eq!(user.publish, Patterns::new(["chat:*"]).expect("patterns"));
        assert!(user.send);
        assert!(verifier.verify(&t, 1_000 + 3600 + 120).is_err(), "expires");
    }

    #[test]
    fn refuses_bad_names_with_a_json_400() {
        let c = config(true, Some(SECRET));
        let long = format!("user={}", "a".repeat(33));
        for q in [
            "",
            "user=",
            "user=a%20b",
            "user=%23x",
            "user=al*ce",
            long.as_str(),
        ] {
            let res = token(&c, q, 1_000);
            assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{q}");
            let b = body(res);
            assert_eq!(b["type"], "error");
            assert_eq!(b["code"], "bad_request");
        }
        let ok = format!("user={}", "a-_Z9".repeat(7).get(..32).unwrap_or_default());
        assert_eq!(token(&c, &ok, 1_000).status(), StatusCode::OK);
    }

    #[test]
    fn is_off_without_demo_tokens_or_a_secret() {
        assert_eq!(
            token(&config(false, Some(SECRET)), "user=a", 1).status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            token(&config(true, None), "user=a", 1).status(),
            StatusCode::NOT_FOUND
        );
        let mut c = config(true, Some(SECRET));
        c.demo = false;
        assert_eq!(token(&c, "user=a", 1).status(), StatusCode::NOT_FOUND);
    }
}
