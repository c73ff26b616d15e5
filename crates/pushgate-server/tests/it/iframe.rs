//! The hidden-iframe transport, `GET /iframe`: read by an HTML parser, the
//! document is padding and then only `parent.NAME(<json>);` scripts, however
//! hostile the published data; hostile callbacks are refused.

use std::time::Duration;

use crate::common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn document_is_padding_then_one_callback_script_per_event() {
    let server = start().await;
    let epoch = server.publish_n("frame", 2).await;
    let mut frame = server
        .iframe("channel=frame&since=earliest", "pushgate.onEvent")
        .await;
    assert_eq!(frame.body.headers["x-frame-options"], "SAMEORIGIN");
    assert!(frame.body.headers["cache-control"]
        .to_str()
        .unwrap()
        .contains("no-cache"));

    let subscribed = frame.expect_subscribed("frame").await;
    assert_eq!(
        subscribed,
        json!({"type": "subscribed", "channel": "frame", "epoch": epoch, "offset": 2, "heartbeat": 2000})
    );
    let caught_up = frame.expect_messages("frame", 1..=2).await;
    assert_eq!(caught_up[0]["data"], json!({"n": 1}));
    server.publish("frame", json!({"live": true})).await;
    let live = frame.expect_messages("frame", 3..=3).await;
    assert_eq!(live[0]["data"], json!({"live": true}));

    let doc = frame.document();
    let first_script = doc.find("<script").expect("a script");
    assert!(
        first_script >= 1024,
        "only {first_script} bytes of padding before the first script"
    );
    assert!(doc.starts_with("<!DOCTYPE html>"), "{}", &doc[..40]);
    // Nothing but the preamble, the scripts, and white space between them.
    let html = scraper::Html::parse_document(&doc);
    let body_children: Vec<_> = html
        .select(&scraper::Selector::parse("body > *").unwrap())
        .map(|e| e.value().name().to_owned())
        .collect();
    assert_eq!(body_children, ["script"; 4]);
}

#[tokio::test]
async fn hostile_data_stays_inside_the_json_argument() {
    let server = start().await;
    let hostile: Vec<Value> = vec![
        json!("</script><script>alert(1)</script>"),
        json!("</SCRIPT ><script src=//evil.example></script >"),
        json!("<!--<script>"),
        json!("<!-- no end"),
        json!("-->"),
        json!("line\u{2028}separator\u{2029}paragraph"),
        json!("quote \" backslash \\ both \\\" end \\"),
        json!({"</script>": "key", "<!--": ["&amp;", "<b>", "]]>"]}),
        json!("\u{0000}\n\r\t control"),
        json!("é ☃ 𝄞 emoji 🎉"),
    ];
    let mut frame = server.iframe("channel=evil", "cb").await;
    frame.expect_subscribed("evil").await;
    for data in &hostile {
        server.publish("evil", data.clone()).await;
    }
    let calls = frame
        .expect_messages("evil", 1..=hostile.len() as u64)
        .await;
    for (call, data) in calls.iter().zip(&hostile) {
        assert_eq!(&call["data"], data);
    }
    // The whole document: exactly one script per event, nothing injected.
    let doc = frame.complete_document();
    let all = script_calls(&doc, "cb");
    assert_eq!(all.len(), 1 + hostile.len(), "{doc}");
    for code in script_texts(&doc) {
        assert!(
            !code.contains(['<', '>', '&', '\u{2028}', '\u{2029}']),
            "unescaped character in {code:?}"
        );
        assert!(!code.contains('\n'), "a raw line break in {code:?}");
    }
    let html = scraper::Html::parse_document(&doc);
    assert_eq!(
        html.select(&scraper::Selector::parse("*[src]").unwrap())
            .count(),
        0
    );
}

#[tokio::test]
async fn hostile_callbacks_are_refused_with_json_errors() {
    let server = start().await;
    let long = "a".repeat(200);
    for callback in [
        "alert(1)//",
        "a;b",
        "</script>",
        "",
        long.as_str(),
        "a b",
        "1a",
        "a..b",
        "a[0]",
        "a-b",
        "x\u{2028}y",
        "parent.x;alert(1)",
    ] {
        let req = server
            .http
            .get(server.url("/iframe"))
            .query(&[("channel", "cb"), ("callback", callback)]);
        let res = within("an iframe refusal", req.send()).await.unwrap();
        assert_eq!(res.status(), 400, "callback {callback:?}");
        assert_eq!(res.headers()["content-type"], "application/json");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["type"], "error", "callback {callback:?}: {body}");
        assert_eq!(body["code"], "bad_request", "callback {callback:?}: {body}");
    }
    for (query, code) in [
        ("channel=cb", "bad_request"),
        ("channel=cb&callback=a&callback=b", "bad_request"),
        ("callback=cb", "bad_request"),
        ("channel=a%20b&callback=cb", "invalid_channel"),
        ("channel=cb&callback=cb&since=nope", "invalid_cursor"),
    ] {
        let (status, body) = server
            .json_response(server.http.get(server.url(&format!("/iframe?{query}"))))
            .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some(code)),
            "{query}: {body}"
        );
    }
    // A plain identifier path is fine.
    let mut frame = server.iframe("channel=cb", "$_.on_Msg.x1").await;
    frame.expect_subscribed("cb").await;
}

#[tokio::test]
async fn resumes_with_since_and_resets_when_history_is_gone() {
    let server = start_with(|c| c.history_size = 2).await;
    let epoch = server.publish_n("ires", 4).await;
    let mut frame = server
        .iframe(
            &format!("channel=ires&since={}", cursor(&[("ires", &epoch, 2)])),
            "cb",
        )
        .await;
    frame.expect_subscribed("ires").await;
    frame.expect_messages("ires", 3..=4).await;
    drop(frame);

    let mut frame = server
        .iframe(
            &format!("channel=ires&since={}", cursor(&[("ires", &epoch, 1)])),
            "cb",
        )
        .await;
    frame.expect_subscribed("ires").await;
    assert_eq!(
        frame.next_call().await,
        json!({"type": "reset", "channel": "ires", "epoch": epoch, "offset": 4})
    );
    server.publish("ires", json!("five")).await;
    frame.expect_messages("ires", 5..=5).await;
}

#[tokio::test]
async fn idle_document_gets_a_ping_call_every_iframe_ping_interval() {
    let server = start_with(|c| c.iframe_ping_interval = Duration::from_millis(100)).await;
    let mut frame = server.iframe("channel=iping", "cb").await;
    let subscribed = frame.expect_subscribed("iping").await;
    assert_eq!(subscribed["heartbeat"], 100, "the interval is announced");
    // Calls, not comments: a page sees them, so it notices when they stop
    // (a document cut by an RST never fires the iframe's load event).
    assert_eq!(
        frame.next_calls(2).await,
        [json!({"type": "ping"}), json!({"type": "ping"})]
    );
}

#[tokio::test]
async fn a_document_ends_at_its_lifetime_saying_so() {
    let server = start_with(|c| c.iframe_lifetime = Duration::from_millis(300)).await;
    let mut frame = server.iframe("channel=ilife", "cb").await;
    frame.expect_subscribed("ilife").await;
    server.publish("ilife", json!("before the end")).await;
    frame.expect_messages("ilife", 1..=1).await;
    within("the document to end", async {
        while let Some(chunk) = frame.body.next_chunk().await {
            frame.body.buf.extend_from_slice(&chunk);
        }
    })
    .await;
    let doc = frame.document();
    let calls = script_calls(&frame.complete_document(), "cb");
    assert_eq!(
        calls.last().unwrap(),
        &json!({"type": "end", "reason": "lifetime"}),
        "{doc}"
    );
    assert!(
        doc.ends_with("</body></html>\n"),
        "a complete document: {doc}"
    );
}

#[test]
fn the_checker_rejects_a_script_that_breaks_out() {
    let escaped = r#"<script>parent.cb({"s":"\u003c/script\u003e"});</script>"#;
    assert_eq!(script_calls(escaped, "cb"), [json!({"s": "</script>"})]);
    for broken in [
        r#"<script>parent.cb({"s":"</script><script>alert(1)</script>"});</script>"#,
        r#"<script>parent.cb({"s":"<!--<script>"});</script><script>parent.cb(1);</script>"#,
        r#"<script>alert(1);parent.cb(1);</script>"#,
    ] {
        let caught = std::panic::catch_unwind(|| script_calls(broken, "cb"));
        assert!(caught.is_err(), "accepted {broken}");
    }
}
