//! Long polling, `GET /longpoll`: held until a message exists after the
//! cursor or the timeout passes; nothing lost between requests; a client
//! that leaves frees its waiter; one publish answers a thousand waiters.

use std::time::Duration;

use crate::common::*;
use futures_util::future::join_all;
use pushgate_server::metrics::Transport;
use serde_json::json;

/// Pending long-polls, as the server counts them.
fn pending(server: &TestServer) -> i64 {
    server.open(Transport::LongPoll)
}

#[tokio::test]
async fn pending_until_a_publish_then_answers_with_that_message() {
    let server = start().await;
    let request = server.poll("/longpoll?channel=lp&timeout=60s");
    tokio::pin!(request);
    // The one intentional timer of this suite: the issue asks for a request
    // that is provably still pending after a second without a publish.
    assert!(
        tokio::time::timeout(Duration::from_secs(1), &mut request)
            .await
            .is_err(),
        "the long-poll answered without any message"
    );
    assert_eq!(pending(&server), 1);
    assert_eq!(server.subscribers("lp"), 1);

    let published = server.publish("lp", json!({"hello": "lp"})).await;
    // With a 60 s timeout, a non-empty answer can only come from the publish.
    let polled = request.await;
    assert_eq!(polled.positions(), [("lp".into(), 1)]);
    assert_eq!(polled.messages[0]["data"], json!({"hello": "lp"}));
    assert_eq!(polled.messages[0]["epoch"], published["epoch"]);
    assert_eq!(polled.cursor, cursor_after(&polled.messages[0]));
    assert_eq!(
        pending(&server),
        0,
        "the answered request is no longer counted"
    );
    assert_eq!(server.subscribers("lp"), 0, "nor subscribed");
}

#[tokio::test]
async fn answers_with_an_empty_list_at_its_timeout() {
    let server = start().await;
    let start_at = server.poll("/poll?channel=idle").await;
    let asked = tokio::time::Instant::now();
    let polled = server
        .poll(&format!(
            "/longpoll?channel=idle&since={}&timeout=300ms",
            start_at.cursor
        ))
        .await;
    assert!(
        asked.elapsed() >= Duration::from_millis(300),
        "answered after {:?}, before its timeout",
        asked.elapsed()
    );
    assert!(polled.messages.is_empty(), "{polled:?}");
    assert_eq!(polled.cursor, start_at.cursor, "the position is unchanged");
    assert_eq!(pending(&server), 0);
}

#[tokio::test]
async fn default_timeout_is_longpoll_timeout() {
    let server = start_with(|c| c.longpoll_timeout = Duration::from_millis(200)).await;
    let asked = tokio::time::Instant::now();
    let polled = server.poll("/longpoll?channel=dflt").await;
    assert!(asked.elapsed() >= Duration::from_millis(200));
    assert!(polled.messages.is_empty(), "{polled:?}");
}

#[tokio::test]
async fn timeout_may_be_at_most_longpoll_max_timeout() {
    let server = start_with(|c| {
        c.longpoll_timeout = Duration::from_millis(100);
        c.longpoll_max_timeout = Duration::from_millis(300);
    })
    .await;
    let polled = server.poll("/longpoll?channel=max&timeout=300ms").await;
    assert!(polled.messages.is_empty(), "{polled:?}");
    let (status, body) = server
        .json_response(
            server
                .http
                .get(server.url("/longpoll?channel=max&timeout=301ms")),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("bad_request")),
        "{body}"
    );
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("300ms"), "the limit is named: {message}");
}

#[tokio::test]
async fn messages_published_while_no_request_is_pending_are_not_lost() {
    let server = start().await;
    let first = server.poll("/longpoll?channel=gap&timeout=60s");
    let (first, _) = tokio::join!(first, async {
        wait_until("the first long-poll to wait", || pending(&server) == 1).await;
        server.publish("gap", json!(1)).await;
    });
    assert_eq!(first.positions(), [("gap".into(), 1)]);

    // The client is between requests.
    server.publish("gap", json!(2)).await;
    server.publish("gap", json!(3)).await;

    // A 60 s timeout: answered within a test step means answered at once.
    let next = server
        .poll(&format!(
            "/longpoll?channel=gap&since={}&timeout=60s",
            first.cursor
        ))
        .await;
    assert_eq!(next.positions(), [("gap".into(), 2), ("gap".into(), 3)]);
    assert_eq!(next.cursor, cursor_after(&next.messages[1]));
}

#[tokio::test]
async fn cursor_that_cannot_be_honoured_answers_at_once_with_a_reset() {
    let server = start_with(|c| c.history_size = 2).await;
    let epoch = server.publish_n("lost", 4).await;
    let polled = server
        .poll(&format!(
            "/longpoll?channel=lost&timeout=60s&since={}",
            cursor(&[("lost", &epoch, 1)])
        ))
        .await;
    assert_eq!(
        polled.messages,
        [json!({"type": "reset", "channel": "lost", "epoch": epoch, "offset": 4})]
    );
    assert_eq!(polled.cursor, cursor(&[("lost", &epoch, 4)]));
}

#[tokio::test]
async fn waits_on_every_channel_and_answers_with_a_cursor_for_all() {
    let server = start().await;
    let start_at = server.poll("/poll?channel=x&channel=y").await;
    let path = format!(
        "/longpoll?channel=x&channel=y&since={}&timeout=60s",
        start_at.cursor
    );
    let request = server.poll(&path);
    let (polled, published) = tokio::join!(request, async {
        wait_until("the long-poll to wait", || pending(&server) == 1).await;
        server.publish("y", json!("on y")).await
    });
    assert_eq!(polled.positions(), [("y".into(), 1)]);
    let epoch_x = pushgate_core::Cursor::parse(&start_at.cursor)
        .unwrap()
        .iter()
        .next()
        .map(|(_, p)| p.epoch.to_string())
        .unwrap();
    assert_eq!(
        polled.cursor,
        cursor(&[
            ("x", &epoch_x, 0),
            ("y", published["epoch"].as_str().unwrap(), 1)
        ])
    );
}

/// A client that goes away closes its socket (a browser does so when an XHR
/// is aborted or the page unloads). reqwest cannot stand in for it: dropping
/// its request future, or the whole client, leaves the socket open, so the
/// server is never told; hence raw sockets here.
#[tokio::test]
async fn closed_sockets_leave_no_waiter_behind() {
    const CLIENTS: usize = 20;
    let server = start().await;
    let mut sockets = Vec::new();
    for _ in 0..CLIENTS {
        let mut raw = RawHttp::connect(server.addr, None).await;
        raw.send_get("/longpoll?channel=rawcancel&timeout=60s")
            .await;
        sockets.push(raw);
    }
    wait_until("the raw long-polls to wait", || {
        pending(&server) == CLIENTS as i64 && server.subscribers("rawcancel") == CLIENTS
    })
    .await;
    let during = server.metrics_text().await;
    assert_eq!(
        metric(&during, "pushgate_connections{transport=\"longpoll\"}"),
        Some(CLIENTS as i64),
        "{during}"
    );

    // One leaves: exactly one waiter goes.
    drop(sockets.pop());
    wait_until("one waiter to be released", || {
        pending(&server) == CLIENTS as i64 - 1 && server.subscribers("rawcancel") == CLIENTS - 1
    })
    .await;
    drop(sockets);
    wait_until("every waiter to be released", || {
        pending(&server) == 0 && server.subscribers("rawcancel") == 0
    })
    .await;
    let after = server.metrics_text().await;
    assert_eq!(
        metric(&after, "pushgate_connections{transport=\"longpoll\"}"),
        Some(0),
        "{after}"
    );

    // A later long-poll is answered by a publish as usual.
    let request = server.poll("/longpoll?channel=rawcancel&timeout=60s");
    let (polled, _) = tokio::join!(request, async {
        wait_until("the next long-poll to wait", || pending(&server) == 1).await;
        server.publish("rawcancel", json!("next")).await;
    });
    assert_eq!(polled.positions(), [("rawcancel".into(), 1)]);
}

#[tokio::test]
async fn one_publish_answers_a_thousand_pending_long_polls() {
    const WAITERS: usize = 1000;
    let server = start().await;
    let requests =
        join_all((0..WAITERS).map(|_| server.poll("/longpoll?channel=crowd&timeout=60s")));
    let (answers, _) = tokio::join!(requests, async {
        wait_until("every long-poll to wait", || {
            pending(&server) == WAITERS as i64
        })
        .await;
        assert_eq!(server.subscribers("crowd"), WAITERS);
        server.publish("crowd", json!("to all")).await;
    });
    assert_eq!(answers.len(), WAITERS);
    for polled in &answers {
        assert_eq!(polled.positions(), [("crowd".into(), 1)]);
        assert_eq!(polled.messages[0]["data"], "to all");
        assert_eq!(polled.cursor, answers[0].cursor);
    }
    assert_eq!(pending(&server), 0);
    assert_eq!(server.subscribers("crowd"), 0);
    let text = server.metrics_text().await;
    assert_eq!(
        metric(
            &text,
            "pushgate_messages_delivered_total{transport=\"longpoll\"}"
        ),
        Some(WAITERS as i64)
    );
}
