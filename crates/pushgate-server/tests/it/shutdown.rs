//! Graceful shutdown: on the signal the server stops accepting, closes
//! WebSockets with 1012, ends event streams, answers waiting long-polls,
//! and `Server::run` returns.

use std::time::Duration;

use crate::common::*;
use pushgate_server::metrics::Transport;
use serde_json::Value;

#[tokio::test]
async fn shutdown_ends_every_transport_then_returns() {
    let mut server = start_with(|c| c.shutdown_timeout = Duration::from_secs(10)).await;

    let mut ws = server.ws("/ws?channel=bye").await;
    assert_subscribed(&ws.next_json().await, "bye");
    let mut sse = server.sse("channel=bye").await;
    sse.expect_subscribed("bye").await;
    let mut ndjson = server.ndjson("channel=bye").await;
    assert_subscribed(&ndjson.next_json().await, "bye");
    let longpoll = {
        let http = server.http.clone();
        let url = server.url("/longpoll?channel=bye&timeout=60s");
        tokio::spawn(async move {
            let res = http
                .get(url)
                .send()
                .await
                .expect("the long-poll is answered");
            (
                res.status().as_u16(),
                res.json::<Value>().await.expect("a JSON body"),
            )
        })
    };
    wait_until("the long-poll to wait", || {
        server.open(Transport::LongPoll) == 1
    })
    .await;

    server.signal_shutdown();

    assert_eq!(
        ws.expect_close().await,
        Some(1012),
        "WebSocket closed with 'service restart'"
    );
    // Each event stream says why it ends, then ends.
    let end = serde_json::json!({"type": "end", "reason": "shutdown"});
    let last = sse.next_event().await;
    assert_eq!((last.event.as_str(), last.json()), ("end", end.clone()));
    assert_eq!(ndjson.next_json().await, end);
    within("the SSE stream to end", async {
        while sse.next_item().await.is_some() {}
    })
    .await;
    within("the NDJSON stream to end", async {
        while ndjson.0.next_chunk().await.is_some() {}
    })
    .await;
    let (status, body) = within("the long-poll answer", longpoll).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        body["messages"],
        serde_json::json!([]),
        "answered empty, cursor unchanged"
    );

    server.stopped().await;
    assert!(
        tokio::net::TcpStream::connect(server.addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn shutdown_delivers_what_was_queued_first() {
    let mut server = start().await;
    let mut ws = server.ws("/ws?channel=last").await;
    assert_subscribed(&ws.next_json().await, "last");
    server
        .publish("last", serde_json::json!("final words"))
        .await;
    server.signal_shutdown();
    let msg = ws.next_json().await;
    assert_eq!(assert_message(&msg, "last", 1), "final words");
    assert_eq!(ws.expect_close().await, Some(1012));
    server.stopped().await;
}
