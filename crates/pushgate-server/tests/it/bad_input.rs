//! Bad input on the polling and streaming endpoints: every refusal is a 4xx
//! with a JSON error body and the right code, and none of them hangs (each
//! request is bounded by the suite's step timeout).

use crate::common::*;
use serde_json::Value;

/// The subscribing endpoints, with what each needs besides the channel.
const ENDPOINTS: &[(&str, &str)] = &[
    ("/poll", ""),
    ("/longpoll", "&timeout=0"),
    ("/stream", ""),
    ("/iframe", "&callback=cb"),
];

async fn refused(server: &TestServer, path: &str) -> (u16, Value) {
    let (status, body) = server
        .json_response(server.http.get(server.url(path)))
        .await;
    assert!(
        (400..500).contains(&status),
        "{path} answered {status}: {body}"
    );
    assert_eq!(body["type"], "error", "{path}: {body}");
    assert!(body["message"].is_string(), "{path}: {body}");
    (status, body)
}

/// Asserts that `query` (plus each endpoint's own parameters) is refused
/// everywhere with `status` and `code`.
async fn refused_everywhere(server: &TestServer, query: &str, status: u16, code: &str) {
    for (endpoint, extra) in ENDPOINTS {
        let path = format!("{endpoint}?{query}{extra}");
        let (got, body) = refused(server, &path).await;
        let shown: String = path.chars().take(120).collect();
        assert_eq!(
            (got, body["code"].as_str()),
            (status, Some(code)),
            "{shown}: {body}"
        );
    }
}

#[tokio::test]
async fn missing_repeated_and_unknown_parameters() {
    let server = start().await;
    for (query, code) in [
        ("", "bad_request"),
        ("since=earliest", "bad_request"),
        ("channel=a&channel=a", "bad_request"),
        ("channel=a&channel=%61", "bad_request"),
        ("channel=a&since=earliest&since=earliest", "bad_request"),
        ("channel=a&bogus=1", "bad_request"),
        ("channel=a&Channel=b", "bad_request"),
        ("channel=a&timeout=1&timeout=1", "bad_request"),
        ("channel=a&callback=x&callback=x", "bad_request"),
        ("channel=", "invalid_channel"),
        ("channel=a%20b", "invalid_channel"),
        ("channel=%FF", "invalid_channel"),
        ("channel=a<b>", "invalid_channel"),
    ] {
        refused_everywhere(&server, query, 400, code).await;
    }
    let long_name = format!("channel={}", "c".repeat(256));
    refused_everywhere(&server, &long_name, 400, "invalid_channel").await;
}

#[tokio::test]
async fn parameters_meant_for_another_endpoint_are_unknown() {
    let server = start().await;
    for path in [
        "/poll?channel=a&timeout=1",
        "/poll?channel=a&callback=cb",
        "/stream?channel=a&timeout=1",
        "/longpoll?channel=a&callback=cb",
        "/iframe?channel=a&callback=cb&timeout=1",
    ] {
        let (status, body) = refused(&server, path).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("bad_request")),
            "{path}"
        );
    }
}

#[tokio::test]
async fn malformed_cursors_are_invalid_cursor() {
    let server = start().await;
    for since in [
        "garbage",
        "x",
        "YQ.e",
        "YQ.e.",
        "YQ.e.-1",
        "YQ.e.1.2",
        "YQ..1",
        "!!!.e.1",
        "YQ.e.99999999999999999999999",
        "YQ.e.1~YQ.e.2",
        "~",
        "YQ.e.1~",
        "YQ.a%2Bc.1",
        "YQ.a%20c.1",
        "YQ==.e.1",
        "EARLIEST",
        "%00",
    ] {
        refused_everywhere(
            &server,
            &format!("channel=a&since={since}"),
            400,
            "invalid_cursor",
        )
        .await;
    }
}

#[tokio::test]
async fn absurd_long_poll_timeouts_are_bad_request() {
    let server = start().await;
    for timeout in [
        "-1",
        "abc",
        "99999",
        "",
        "1.5s",
        "1d",
        "5%20s",
        "121s",
        "2h",
        "0x10",
        "99999999999999999999",
        "9999999999999999999m",
        "999999999999999999h",
    ] {
        let path = format!("/longpoll?channel=a&timeout={timeout}");
        let (status, body) = refused(&server, &path).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("bad_request")),
            "{path}: {body}"
        );
    }
    // A well-formed timeout is accepted.
    let polled = server.poll("/longpoll?channel=a&timeout=500ms").await;
    assert!(polled.messages.is_empty());
}

#[tokio::test]
async fn oversized_queries_and_cursors_are_too_large() {
    let server = start_with(|c| c.max_subscriptions = 4).await;
    let huge = format!("channel=a&pad={}", "x".repeat(40 * 1024));
    refused_everywhere(&server, &huge, 413, "too_large").await;
    let long_cursor = format!("channel=a&since={}", "A".repeat(17 * 1024));
    refused_everywhere(&server, &long_cursor, 413, "too_large").await;
    let many: Vec<String> = (0..5).map(|i| format!("channel=c{i}")).collect();
    refused_everywhere(&server, &many.join("&"), 400, "too_many_subscriptions").await;
}

#[tokio::test]
async fn wrong_methods_are_405_with_allow() {
    let server = start().await;
    for (method, path) in [
        (reqwest::Method::POST, "/poll?channel=a"),
        (reqwest::Method::DELETE, "/longpoll?channel=a"),
        (reqwest::Method::POST, "/stream?channel=a"),
        (reqwest::Method::PUT, "/iframe?channel=a&callback=cb"),
    ] {
        let (status, body) = server
            .json_response(server.http.request(method.clone(), server.url(path)))
            .await;
        assert_eq!(status, 405, "{method} {path}: {body}");
        assert_eq!(body["type"], "error", "{method} {path}: {body}");
    }
}
