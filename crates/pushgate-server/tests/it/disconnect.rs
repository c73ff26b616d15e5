//! `POST /api/disconnect {"user"}`: every live connection of the user ends
//! (WebSocket close 4003, streams `{"type":"end","reason":"disconnected"}`),
//! and its tokens issued until then are refused.

use serde_json::json;

use crate::common::*;
use crate::users::*;

async fn disconnect(server: &TestServer, user: &str) -> (u16, serde_json::Value) {
    server
        .json_response(
            server
                .http
                .post(server.url("/api/disconnect"))
                .json(&json!({ "user": user })),
        )
        .await
}

#[tokio::test]
async fn disconnect_closes_the_users_websockets_with_4003_and_refuses_its_token() {
    let server = start_with_users().await;
    let mut tab1 = user_ws(&server, "alice").await;
    tab1.subscribe("chat:room").await;
    let mut tab2 = user_ws(&server, "alice").await;
    let mut bob = user_ws(&server, "bob").await;
    bob.subscribe("chat:room").await;
    assert_eq!(tab1.next_json().await["user"], "bob", "bob's join");

    let (status, v) = disconnect(&server, "alice").await;
    assert_eq!((status, v), (200, json!({"disconnected": 2})));
    assert_eq!(tab1.expect_close().await, Some(4003));
    assert_eq!(tab2.expect_close().await, Some(4003));

    // Bob stays, and sees alice leave.
    let v = bob.next_json().await;
    assert_eq!(v["type"], "leave", "{v}");
    assert_eq!(v["user"], "alice");
    let reply = bob.command(json!({"type":"ping"})).await;
    assert_eq!(reply["type"], "pong");

    // The same token is refused from now on, saying why.
    let mut again = server.ws("/ws").await;
    let reply = again
        .command(json!({"type":"auth","token":token("alice")}))
        .await;
    assert_eq!(reply["code"], "unauthorized", "{reply}");
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("disconnected by the application: get a new token"),
        "{reply}"
    );
    // Another user's token still works.
    user_ws(&server, "bob").await;
    // Nobody left to disconnect.
    assert_eq!(
        disconnect(&server, "alice").await,
        (200, json!({"disconnected": 0}))
    );
    let (status, _) = server
        .json_response(server.http.post(server.url("/api/disconnect")).body("{}"))
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn disconnect_ends_the_users_sse_stream_with_disconnected() {
    let server = start_with_users().await;
    let query = format!("channel=%23alice&token={}", token("alice"));
    let mut sse = server.sse(&query).await;
    sse.expect_subscribed("#alice").await;
    let (_, v) = disconnect(&server, "alice").await;
    assert_eq!(v, json!({"disconnected": 1}));
    let e = sse.next_event().await;
    assert_eq!(e.event, "end", "{e:?}");
    assert_eq!(e.json(), json!({"type":"end","reason":"disconnected"}));
    let res = within(
        "a refused SSE",
        server.http.get(server.url(&format!("/sse?{query}"))).send(),
    )
    .await
    .unwrap();
    assert_eq!(res.status().as_u16(), 401);
}

#[tokio::test]
async fn disconnect_answers_the_users_waiting_long_poll_with_401() {
    let server = start_with_users().await;
    let path = format!(
        "/longpoll?channel=%23alice&timeout=30&token={}",
        token("alice")
    );
    let waiting = tokio::spawn({
        let req = server.http.get(server.url(&path));
        async move { req.send().await.unwrap() }
    });
    wait_until("alice's long-poll waits", || {
        server.subscribers("#alice") == 1
    })
    .await;
    let (_, v) = disconnect(&server, "alice").await;
    assert_eq!(v, json!({"disconnected": 1}));
    let res = within("the long-poll's answer", waiting).await.unwrap();
    assert_eq!(res.status().as_u16(), 401);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["code"], "unauthorized", "{body}");
    // Its next poll with the same token is refused too.
    let (status, v) = server
        .json_response(server.http.get(server.url(&path)))
        .await;
    assert_eq!(status, 401);
    assert!(
        v["message"].as_str().unwrap().contains("disconnected"),
        "{v}"
    );
}
