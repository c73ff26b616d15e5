//! `POST /command`: one client command per request, its reply frame as the
//! response, with the status of its error code.

use crate::common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn publish_replies_published_with_the_id_and_reaches_a_ws_subscriber() {
    let server = start().await;
    let mut ws = server.ws("/ws?channel=cmd").await;
    let subscribed = ws.next_json().await;
    assert_subscribed(&subscribed, "cmd");

    let (status, reply) = server
        .command(r#"{"type":"publish","id":7,"channel":"cmd","data":{"via":"http"}}"#)
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        reply,
        json!({"type": "published", "id": 7, "channel": "cmd",
               "epoch": subscribed["epoch"], "offset": 1})
    );
    let got = ws.expect_messages("cmd", 1..=1).await;
    assert_eq!(got[0], json!({"via": "http"}));

    // A string id and a named event.
    let (status, reply) = server
        .command(r#"{"type":"publish","id":"req-2","channel":"cmd","event":"note","data":[1,2]}"#)
        .await;
    assert_eq!(
        (status, &reply["id"], &reply["offset"]),
        (200, &json!("req-2"), &json!(2))
    );
    let v = ws.next_json().await;
    assert_message(&v, "cmd", 2);
    assert_eq!(v["event"], "note");

    let text = server.metrics_text().await;
    assert_eq!(
        metric_sum(&text, "pushgate_messages_published_total"),
        Some(2)
    );
}

#[tokio::test]
async fn ping_gets_pong() {
    let server = start().await;
    let (status, reply) = server.command(r#"{"type":"ping","id":1}"#).await;
    assert_eq!((status, reply), (200, json!({"type": "pong", "id": 1})));
    let (status, reply) = server.command(r#"{"type":"ping"}"#).await;
    assert_eq!((status, reply), (200, json!({"type": "pong"})));
}

#[tokio::test]
async fn refusals_have_codes_statuses_and_the_id_when_readable() {
    let server = start().await;
    let cases: &[(&str, u16, &str, Option<Value>)] = &[
        ("{not json", 400, "bad_json", None),
        ("", 400, "bad_json", None),
        ("[\"ping\"]", 400, "bad_request", None),
        ("42", 400, "bad_request", None),
        (r#"{"id":3}"#, 400, "bad_request", Some(json!(3))),
        (
            r#"{"type":"dance","id":4}"#,
            400,
            "unknown_command",
            Some(json!(4)),
        ),
        (
            r#"{"type":"subscribe","id":5,"channel":"x"}"#,
            400,
            "bad_request",
            Some(json!(5)),
        ),
        (
            r#"{"type":"unsubscribe","id":6,"channel":"x"}"#,
            400,
            "bad_request",
            Some(json!(6)),
        ),
        (
            r#"{"type":"publish","id":8,"channel":"x"}"#,
            400,
            "bad_request",
            Some(json!(8)),
        ),
        (
            r#"{"type":"publish","id":9,"channel":"a b","data":1}"#,
            400,
            "invalid_channel",
            Some(json!(9)),
        ),
        (
            r#"{"type":"publish","channel":"x","event":"a b","data":1}"#,
            400,
            "invalid_event",
            None,
        ),
        (r#"{"type":"ping","id":-1}"#, 400, "bad_request", None),
    ];
    for (body, status, code, id) in cases {
        let (got, reply) = server.command(*body).await;
        assert_eq!(got, *status, "{body}: {reply}");
        assert_eq!(reply["type"], "error", "{body}: {reply}");
        assert_eq!(reply["code"], *code, "{body}: {reply}");
        assert!(reply["message"].is_string(), "{body}: {reply}");
        assert_eq!(reply.get("id"), id.as_ref(), "{body}: {reply}");
    }
    // Subscriptions are refused with a pointer to the transports that have them.
    let (_, reply) = server
        .command(r#"{"type":"subscribe","channel":"x"}"#)
        .await;
    assert!(
        reply["message"].as_str().unwrap().contains("/longpoll"),
        "{reply}"
    );
    // Nothing was published by any of them.
    let text = server.metrics_text().await;
    assert_eq!(
        metric_sum(&text, "pushgate_messages_published_total"),
        Some(0)
    );
    assert_eq!(
        metric(&text, "pushgate_command_errors_total"),
        Some(cases.len() as i64 + 1)
    );
}

#[tokio::test]
async fn body_over_max_message_size_is_413_too_large() {
    let server = start_with(|c| c.max_message_size = 1024).await;
    let big = json!({"type": "publish", "channel": "big", "data": "x".repeat(4096)});
    let (status, reply) = server.command(big.to_string()).await;
    assert_eq!(status, 413, "{reply}");
    assert_eq!(reply["code"], "too_large");
    // Just under the limit is accepted.
    let fits = json!({"type": "publish", "channel": "big", "data": "x".repeat(900)});
    let (status, reply) = server.command(fits.to_string()).await;
    assert_eq!(
        (status, &reply["type"]),
        (200, &json!("published")),
        "{reply}"
    );
}

#[tokio::test]
async fn only_post_and_options_are_accepted() {
    let server = start().await;
    let res = server.get("/command").await;
    assert_eq!(res.status(), 405);
    assert_eq!(res.headers()["allow"], "POST, OPTIONS");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["type"], "error");
}
