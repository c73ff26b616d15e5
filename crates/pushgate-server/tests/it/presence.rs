//! Presence: who is subscribed (`presence` command, `GET /api/presence`) and
//! the `join`/`leave` events of namespaces that turn them on.

use serde_json::json;

use crate::common::*;
use crate::users::*;

#[tokio::test]
async fn join_and_leave_reach_the_other_subscribers_on_websocket_and_sse() {
    let server = start_with_users().await;
    let mut bob = user_ws(&server, "bob").await;
    bob.subscribe("chat:room").await;
    // An anonymous SSE subscriber also hears them, as events without an id.
    let mut sse = server.sse("channel=chat:room").await;
    sse.expect_subscribed("chat:room").await;
    let v = bob.next_json().await;
    assert_eq!(v["type"], "join");
    assert_eq!(v["user"], serde_json::Value::Null, "{v}");
    let anonymous_client = v["client"].clone();

    let mut alice = user_ws(&server, "alice").await;
    alice.subscribe("chat:room").await;
    let v = bob.next_json().await;
    assert_eq!(v["type"], "join", "{v}");
    assert_eq!(v["channel"], "chat:room");
    assert_eq!(v["user"], "alice");
    let alice_client = v["client"].clone();
    assert!(alice_client.is_string(), "{v}");
    let e = sse.next_event().await;
    assert_eq!(e.event, "join", "{e:?}");
    assert_eq!(e.id, None, "a join carries no id: it moves no cursor");
    assert_eq!(e.json()["user"], "alice");

    // Join and leave are live only: the next message is offset 1.
    server.publish("chat:room", json!("hi")).await;
    assert_message(&bob.next_json().await, "chat:room", 1);
    sse.expect_message("chat:room", 1).await;

    // A socket that goes away leaves.
    drop(alice);
    let v = bob.next_json().await;
    assert_eq!(
        v,
        json!({"type":"leave","channel":"chat:room","user":"alice","client":alice_client})
    );
    let e = sse.next_event().await;
    assert_eq!(e.event, "leave", "{e:?}");
    assert_eq!(e.id, None);

    // An unsubscribe leaves too; the others hear it, not the leaver.
    let mut carol = user_ws(&server, "carol").await;
    carol.subscribe("chat:room").await;
    assert_eq!(bob.next_json().await["type"], "join");
    let reply = carol
        .command(json!({"type":"unsubscribe","channel":"chat:room"}))
        .await;
    assert_eq!(reply["type"], "unsubscribed", "{reply}");
    let v = bob.next_json().await;
    assert_eq!(v["type"], "leave", "{v}");
    assert_eq!(v["user"], "carol");
    let _ = anonymous_client;
}

async fn presence(server: &TestServer, channel: &str) -> (u16, serde_json::Value) {
    let req = server
        .http
        .get(server.url(&format!("/api/presence?channel={channel}")));
    server.json_response(req).await
}

#[tokio::test]
async fn api_presence_lists_users_and_their_connections() {
    let server = start_with_users().await;
    let mut tab1 = user_ws(&server, "alice").await;
    let mut tab2 = user_ws(&server, "alice").await;
    let mut bob = user_ws(&server, "bob").await;
    let mut anon = server.ws("/ws").await;
    for ws in [&mut tab1, &mut tab2, &mut bob, &mut anon] {
        ws.subscribe("room:1").await;
    }
    let (status, v) = presence(&server, "room:1").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["channel"], "room:1");
    assert_eq!(v["anonymous"], 1);
    let users = v["users"].as_array().unwrap();
    assert_eq!(users.len(), 2, "{v}");
    assert_eq!(users[0]["user"], "alice");
    assert_eq!(users[0]["clients"].as_array().unwrap().len(), 2);
    assert_eq!(users[1]["user"], "bob");
    assert_eq!(users[1]["clients"].as_array().unwrap().len(), 1);

    // The presence command answers the same, to whoever may subscribe.
    let reply = anon
        .command(json!({"type":"presence","channel":"room:1","id":"p"}))
        .await;
    assert_eq!(reply["type"], "presence", "{reply}");
    assert_eq!(reply["id"], "p");
    assert_eq!(reply["users"], v["users"]);
    // `room:` has no join/leave: nobody heard the others arrive.

    // No stale entries once a tab closes.
    drop(tab2);
    wait_until("the closed tab to leave presence", || {
        server.subscribers("room:1") == 3
    })
    .await;
    let (_, v) = presence(&server, "room:1").await;
    assert_eq!(v["users"][0]["clients"].as_array().unwrap().len(), 1, "{v}");

    // A channel without presence is a bad request.
    let (status, v) = server
        .json_response(server.http.get(server.url("/api/presence?channel=news")))
        .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["code"], "bad_request");
    let reply = anon
        .command(json!({"type":"presence","channel":"news"}))
        .await;
    assert_eq!(reply["code"], "bad_request", "{reply}");
}

#[tokio::test]
async fn polls_take_no_part_in_presence() {
    let server = start_with_users().await;
    let mut bob = user_ws(&server, "bob").await;
    bob.subscribe("chat:room").await;
    let polled = server.poll("/poll?channel=chat:room").await;
    assert!(polled.messages.is_empty(), "{polled:?}");
    // No join came: the next frame is the message published after.
    server.publish("chat:room", json!(1)).await;
    assert_message(&bob.next_json().await, "chat:room", 1);
    let (_, v) = server
        .json_response(
            server
                .http
                .get(server.url("/api/presence?channel=chat:room")),
        )
        .await;
    assert_eq!(v["users"].as_array().unwrap().len(), 1, "{v}");
}

#[tokio::test]
async fn ndjson_and_iframe_streams_get_join_and_leave_as_their_objects() {
    let server = start_with_users().await;
    let mut lines = server.ndjson("channel=chat:room").await;
    lines.expect_subscribed("chat:room").await;
    let mut frame = server.iframe("channel=chat:room", "pg.on").await;
    let calls = frame.next_calls(1).await;
    assert_eq!(calls[0]["type"], "subscribed", "{calls:?}");
    // The stream heard the iframe join (anonymous).
    let v = lines.next_json().await;
    assert_eq!(v["type"], "join", "{v}");
    assert_eq!(v["user"], serde_json::Value::Null);

    let mut alice = user_ws(&server, "alice").await;
    alice.subscribe("chat:room").await;
    drop(alice);
    for kind in ["join", "leave"] {
        let v = lines.next_json().await;
        assert_eq!(
            (v["type"].as_str(), v["user"].as_str()),
            (Some(kind), Some("alice")),
            "{v}"
        );
    }
    let calls = frame.next_calls(2).await;
    assert_eq!(calls[0]["type"], "join", "{calls:?}");
    assert_eq!(calls[1]["type"], "leave", "{calls:?}");
    assert_eq!(calls[1]["user"], "alice");
}
