//! Direct messages to users: `send` and `POST /api/send` append to each
//! recipient's personal channel (`#alice`), so every connection of the user
//! gets them, nobody else does, and they resume like any channel message.

use serde_json::{json, Value};

use crate::common::*;
use crate::users::*;

async fn personal(server: &TestServer, user: &str) -> Ws {
    let mut ws = user_ws(server, user).await;
    ws.subscribe(&format!("#{user}")).await;
    ws
}

fn assert_direct(v: &Value, user: &str, from: Value, data: Value) {
    assert_eq!(v["type"], "message", "{v}");
    assert_eq!(v["channel"], format!("#{user}"), "{v}");
    assert_eq!(v["data"], json!({"from": from, "data": data}), "{v}");
}

#[tokio::test]
async fn a_direct_message_reaches_both_tabs_of_its_recipient_and_nobody_else() {
    let server = start_with_users().await;
    let mut tab1 = personal(&server, "alice").await;
    let mut tab2 = personal(&server, "alice").await;
    let mut bob = personal(&server, "bob").await;
    let mut carol = user_ws(&server, "carol").await;

    let reply = carol
        .command(json!({"type":"send","to":["alice","dave"],"data":{"text":"</script>hi"},"id":7}))
        .await;
    assert_eq!(
        reply,
        json!({"type":"sent","id":7,"online":["alice"],"offline":["dave"]})
    );
    for tab in [&mut tab1, &mut tab2] {
        let v = tab.next_json().await;
        assert_direct(&v, "alice", json!("carol"), json!({"text":"</script>hi"}));
    }
    // A barrier: bob's first message is the one sent to him afterwards.
    let (status, v) = server
        .json_response(
            server
                .http
                .post(server.url("/api/send"))
                .json(&json!({"to":["bob"],"data":"for bob","event":"dm"})),
        )
        .await;
    assert_eq!((status, v), (200, json!({"online":["bob"],"offline":[]})));
    let v = bob.next_json().await;
    assert_direct(&v, "bob", Value::Null, json!("for bob"));
    assert_eq!(v["event"], "dm");
    assert_eq!(v["offset"], 1, "bob got nothing before: {v}");

    // Another user's personal channel is not for carol.
    let reply = carol
        .command(json!({"type":"subscribe","channel":"#alice"}))
        .await;
    assert_eq!(reply["code"], "forbidden", "{reply}");
    // Nor may anyone publish to one as a client.
    let reply = carol
        .command(json!({"type":"publish","channel":"#alice","data":1}))
        .await;
    assert_eq!(reply["code"], "forbidden", "{reply}");
}

#[tokio::test]
async fn direct_messages_resume_from_the_cursor_after_a_disconnect() {
    let server = start_with_users().await;
    let mut alice = personal(&server, "alice").await;
    let send = |to: &str, n: u64| {
        server
            .http
            .post(server.url("/api/send"))
            .json(&json!({"to":[to],"data":n}))
    };
    server.json_response(send("alice", 1)).await;
    let first = alice.next_json().await;
    assert_direct(&first, "alice", Value::Null, json!(1));
    drop(alice);
    wait_until("alice to be gone", || server.subscribers("#alice") == 0).await;
    let (_, v) = server.json_response(send("alice", 2)).await;
    assert_eq!(v, json!({"online":[],"offline":["alice"]}));
    server.json_response(send("alice", 3)).await;

    let mut again = user_ws(&server, "alice").await;
    let reply = again
        .command(json!({"type":"subscribe","channel":"#alice","since":cursor_after(&first)}))
        .await;
    assert_subscribed(&reply, "#alice");
    for n in [2, 3] {
        assert_direct(&again.next_json().await, "alice", Value::Null, json!(n));
    }
}

#[tokio::test]
async fn sends_are_checked() {
    let server = start_with_users().await;
    // Anonymous: needs a token.
    let mut anon = server.ws("/ws").await;
    let reply = anon
        .command(json!({"type":"send","to":["alice"],"data":1}))
        .await;
    assert_eq!(reply["code"], "unauthorized", "{reply}");
    // Bad recipient lists.
    let too_many: Vec<String> = (0..101).map(|i| format!("u{i}")).collect();
    for body in [
        json!({"to":[],"data":1}),
        json!({"to":["a b"],"data":1}),
        json!({"to":too_many,"data":1}),
        json!({"to":["alice"]}),
    ] {
        let (status, v) = server
            .json_response(server.http.post(server.url("/api/send")).json(&body))
            .await;
        assert_eq!(status, 400, "{body}: {v}");
        assert_eq!(v["code"], "bad_request");
    }
}

#[tokio::test]
async fn a_direct_message_reaches_both_sse_streams_of_its_recipient() {
    let server = start_with_users().await;
    let query = format!("channel=%23alice&token={}", token("alice"));
    let mut tab1 = server.sse(&query).await;
    let mut tab2 = server.sse(&query).await;
    tab1.expect_subscribed("#alice").await;
    tab2.expect_subscribed("#alice").await;
    let bob_query = format!("channel=%23bob&token={}", token("bob"));
    let mut bob = server.sse(&bob_query).await;
    bob.expect_subscribed("#bob").await;
    let send = |to: &str, n: u64| {
        server
            .http
            .post(server.url("/api/send"))
            .json(&json!({"to":[to],"data":n}))
    };
    server.json_response(send("alice", 1)).await;
    let mut last = None;
    for tab in [&mut tab1, &mut tab2] {
        let e = tab.expect_message("#alice", 1).await;
        assert_direct(&e.json(), "alice", Value::Null, json!(1));
        last = e.id;
    }
    server.json_response(send("bob", 2)).await;
    let e = bob.expect_message("#bob", 1).await;
    assert_direct(&e.json(), "bob", Value::Null, json!(2));
    // Resume: a reconnect with Last-Event-ID gets what was missed.
    drop(tab1);
    server.json_response(send("alice", 3)).await;
    let mut again = server.sse_with_last_event_id(&query, last.as_deref()).await;
    again.expect_subscribed("#alice").await;
    let e = again.expect_message("#alice", 2).await;
    assert_direct(&e.json(), "alice", Value::Null, json!(3));
}
