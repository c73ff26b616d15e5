//! HTTP/1.1 as clients speak it, on the polling transports: keep-alive
//! (several requests, one after the other, on ONE TCP connection all get
//! answers), pipelining, heads split across writes, `Connection: close`,
//! a connection that moves on to requests the front hands to hyper, and a
//! publisher that keeps one connection for every publish.

use crate::common::*;
use pushgate_server::metrics::Transport;
use serde_json::json;
use tokio::io::AsyncWriteExt;

fn assert_kept_alive(res: &RawResponse) {
    assert_eq!(res.status, 200, "{}", res.head);
    assert!(
        !res.head.to_ascii_lowercase().contains("connection: close"),
        "the server wants to close: {}",
        res.head
    );
}

#[tokio::test]
async fn short_polls_share_one_connection() {
    let server = start().await;
    let mut conn = RawHttp::connect(server.addr, None).await;
    let first = conn.get("/poll?channel=ka").await;
    assert_kept_alive(&first);
    let first = Polled::from_json(first.json());
    assert!(first.messages.is_empty());

    server.publish("ka", json!("one")).await;
    let second = conn
        .get(&format!("/poll?channel=ka&since={}", first.cursor))
        .await;
    assert_kept_alive(&second);
    let second = Polled::from_json(second.json());
    assert_eq!(second.positions(), [("ka".into(), 1)]);

    // An error answer does not end the connection either.
    let refused = conn.get("/poll?channel=ka&bogus=1").await;
    assert_eq!(refused.status, 400);
    assert_eq!(refused.json()["code"], "bad_request");
    let third = conn
        .get(&format!("/poll?channel=ka&since={}", second.cursor))
        .await;
    assert_kept_alive(&third);
    assert!(Polled::from_json(third.json()).messages.is_empty());

    // Pipelined: two requests in one write, two answers in order.
    let host = server.addr;
    conn.send(&format!(
        "GET /poll?channel=ka&since=earliest HTTP/1.1\r\nHost: {host}\r\n\r\n\
         GET /poll?channel=other HTTP/1.1\r\nHost: {host}\r\n\r\n"
    ))
    .await;
    let a = Polled::from_json(conn.read_response().await.json());
    let b = Polled::from_json(conn.read_response().await.json());
    assert_eq!(a.positions(), [("ka".into(), 1)]);
    assert!(b.cursor.starts_with("b3RoZXI."), "{}", b.cursor);
}

#[tokio::test]
async fn long_polls_share_one_connection() {
    let server = start().await;
    let mut conn = RawHttp::connect(server.addr, None).await;

    // The first ends at its timeout…
    let first = conn.get("/longpoll?channel=kl&timeout=200ms").await;
    assert_kept_alive(&first);
    let first = Polled::from_json(first.json());
    assert!(first.messages.is_empty(), "{first:?}");

    // …the second, on the same socket, is answered by a publish.
    conn.send_get(&format!(
        "/longpoll?channel=kl&since={}&timeout=60s",
        first.cursor
    ))
    .await;
    wait_until("the second long-poll to wait", || {
        server.open(Transport::LongPoll) == 1
    })
    .await;
    server.publish("kl", json!("for the second")).await;
    let second = conn.read_response().await;
    assert_kept_alive(&second);
    let second = Polled::from_json(second.json());
    assert_eq!(second.positions(), [("kl".into(), 1)]);
    assert_eq!(second.messages[0]["data"], "for the second");

    // And the connection still serves a third.
    server.publish("kl", json!("waiting already")).await;
    let third = conn
        .get(&format!(
            "/longpoll?channel=kl&since={}&timeout=60s",
            second.cursor
        ))
        .await;
    assert_kept_alive(&third);
    assert_eq!(
        Polled::from_json(third.json()).positions(),
        [("kl".into(), 2)]
    );
}

#[tokio::test]
async fn a_request_pipelined_behind_a_pending_long_poll_is_answered_after_it() {
    let server = start().await;
    let mut conn = RawHttp::connect(server.addr, None).await;
    let host = server.addr;
    conn.send(&format!(
        "GET /longpoll?channel=pl&timeout=60s HTTP/1.1\r\nHost: {host}\r\n\r\n\
         GET /poll?channel=pl&since=earliest HTTP/1.1\r\nHost: {host}\r\n\r\n"
    ))
    .await;
    wait_until("the long-poll to wait", || {
        server.open(Transport::LongPoll) == 1
    })
    .await;
    server.publish("pl", json!("wakes it")).await;
    let first = conn.read_response().await;
    assert_kept_alive(&first);
    assert_eq!(
        Polled::from_json(first.json()).positions(),
        [("pl".into(), 1)]
    );
    let second = conn.read_response().await;
    assert_kept_alive(&second);
    assert_eq!(
        Polled::from_json(second.json()).positions(),
        [("pl".into(), 1)]
    );
}

#[tokio::test]
async fn a_head_written_byte_by_byte_is_assembled() {
    let server = start().await;
    server.publish("slow", json!(1)).await;
    let mut conn = RawHttp::connect(server.addr, None).await;
    conn.stream.set_nodelay(true).unwrap();
    let request = format!(
        "GET /poll?channel=slow&since=earliest HTTP/1.1\r\nHost: {}\r\nAccept: */*\r\n\r\n",
        server.addr
    );
    for byte in request.as_bytes() {
        conn.send(std::str::from_utf8(&[*byte]).unwrap()).await;
        tokio::task::yield_now().await;
    }
    let res = conn.read_response().await;
    assert_kept_alive(&res);
    assert_eq!(
        Polled::from_json(res.json()).positions(),
        [("slow".into(), 1)]
    );
}

#[tokio::test]
async fn connection_close_is_honoured() {
    let server = start().await;
    let mut conn = RawHttp::connect(server.addr, None).await;
    conn.send(&format!(
        "GET /poll?channel=cc HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        server.addr
    ))
    .await;
    let res = conn.read_response().await;
    assert_eq!(res.status, 200, "{}", res.head);
    assert!(
        res.head.to_ascii_lowercase().contains("connection: close"),
        "{}",
        res.head
    );
    conn.expect_closed().await;
}

#[tokio::test]
async fn one_connection_moves_on_to_a_post_and_keeps_serving() {
    let server = start().await;
    let mut conn = RawHttp::connect(server.addr, None).await;
    let host = server.addr;
    let start_at = Polled::from_json(conn.get("/poll?channel=mix").await.json());

    // A POST with a body, pipelined right behind a GET in one write.
    let body = r#"{"type":"publish","id":1,"channel":"mix","data":"posted"}"#;
    conn.send(&format!(
        "GET /poll?channel=mix HTTP/1.1\r\nHost: {host}\r\n\r\n\
         POST /command HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    ))
    .await;
    let get = conn.read_response().await;
    assert_kept_alive(&get);
    let post = conn.read_response().await;
    assert_kept_alive(&post);
    assert_eq!(post.json()["type"], "published", "{}", post.head);

    // The same connection still serves polls and long-polls afterwards.
    let polled = Polled::from_json(
        conn.get(&format!("/poll?channel=mix&since={}", start_at.cursor))
            .await
            .json(),
    );
    assert_eq!(polled.positions(), [("mix".into(), 1)]);
    let timed_out = conn
        .get(&format!(
            "/longpoll?channel=mix&since={}&timeout=100ms",
            polled.cursor
        ))
        .await;
    assert_kept_alive(&timed_out);
    assert!(Polled::from_json(timed_out.json()).messages.is_empty());
}

#[tokio::test]
async fn large_heads_and_http_1_0_are_still_served() {
    let server = start().await;
    server.publish("big", json!(1)).await;
    let mut conn = RawHttp::connect(server.addr, None).await;
    // A 20 KiB header: more than the front reads itself.
    let pad = "p".repeat(20 * 1024);
    conn.send(&format!(
        "GET /poll?channel=big&since=earliest HTTP/1.1\r\nHost: {}\r\nX-Pad: {pad}\r\n\r\n",
        server.addr
    ))
    .await;
    let res = conn.read_response().await;
    assert_kept_alive(&res);
    assert_eq!(
        Polled::from_json(res.json()).positions(),
        [("big".into(), 1)]
    );
    let again = conn.get("/poll?channel=big&since=earliest").await;
    assert_kept_alive(&again);

    let mut old = RawHttp::connect(server.addr, None).await;
    old.send("GET /poll?channel=big&since=earliest HTTP/1.0\r\n\r\n")
        .await;
    let res = old.read_response().await;
    assert_eq!(res.status, 200, "{}", res.head);
    assert_eq!(
        Polled::from_json(res.json()).positions(),
        [("big".into(), 1)]
    );
}

#[tokio::test]
async fn garbage_is_refused_without_a_hang() {
    let server = start().await;
    for request in [
        "NOT HTTP AT ALL\r\n\r\n",
        "GET /poll?channel=a HTTP/9.9\r\n\r\n",
        "GET /poll?channel=a HTTP/1.1\r\nBad Header Line\r\n\r\n",
        "GET  HTTP/1.1\r\n\r\n",
    ] {
        let mut conn = RawHttp::connect(server.addr, None).await;
        conn.send(request).await;
        let res = conn.read_response().await;
        assert!(
            (400..500).contains(&res.status),
            "{request:?} answered {}",
            res.head
        );
        // And the server does not wait for more on that connection.
        conn.expect_closed().await;
    }
}

/// `POST /api/publish` with `{"channel":…,"data":n}`, as a publisher's HTTP
/// client writes it.
fn publish_request(host: std::net::SocketAddr, channel: &str, n: u64) -> String {
    let body = format!(r#"{{"channel":"{channel}","data":{n}}}"#);
    format!(
        "POST /api/publish HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn a_publisher_keeps_one_connection_for_every_publish() {
    let server = start().await;
    let host = server.addr;
    let mut conn = RawHttp::connect(server.addr, None).await;
    conn.stream.set_nodelay(true).unwrap();
    let expect_offset = |res: RawResponse, offset: u64| {
        assert_kept_alive(&res);
        assert_eq!(res.json()["offset"], offset, "{}", res.head);
    };

    // One after the other, then three pipelined in one write.
    let one = conn_publish(&mut conn, host, 1).await;
    expect_offset(one, 1);
    conn.send(
        &(2..=4)
            .map(|n| publish_request(host, "kp", n))
            .collect::<String>(),
    )
    .await;
    for offset in 2..=4 {
        let res = conn.read_response().await;
        expect_offset(res, offset);
    }

    // The body in a later write than the head, and split itself.
    let request = publish_request(host, "kp", 5);
    let (head, body) = request.split_at(request.find("\r\n\r\n").unwrap() + 4);
    conn.send(head).await;
    tokio::task::yield_now().await;
    conn.send(&body[..4]).await;
    tokio::task::yield_now().await;
    conn.send(&body[4..]).await;
    let res = conn.read_response().await;
    expect_offset(res, 5);

    // A chunked body (hyper's to read), then plain ones again on the same socket.
    let body = r#"{"channel":"kp","data":6}"#;
    conn.send(&format!(
        "POST /api/publish HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n\
         {:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    ))
    .await;
    let res = conn.read_response().await;
    expect_offset(res, 6);
    let seven = conn_publish(&mut conn, host, 7).await;
    expect_offset(seven, 7);

    // Every message is in the channel's history once, in order.
    let history = server.poll("/poll?channel=kp&since=earliest").await;
    let data: Vec<i64> = history
        .messages
        .iter()
        .map(|m| m["data"].as_i64().unwrap())
        .collect();
    assert_eq!(data, [1, 2, 3, 4, 5, 6, 7]);
}

async fn conn_publish(conn: &mut RawHttp, host: std::net::SocketAddr, n: u64) -> RawResponse {
    conn.send(&publish_request(host, "kp", n)).await;
    conn.read_response().await
}

#[tokio::test]
async fn publish_bodies_over_the_limit_or_cut_short_are_refused() {
    let server = start_with(|c| c.max_message_size = 128).await;
    let host = server.addr;

    // Announced larger than max_message_size: 413, nothing published.
    let mut conn = RawHttp::connect(server.addr, None).await;
    let data = "x".repeat(200);
    let body = format!(r#"{{"channel":"lim","data":"{data}"}}"#);
    conn.send(&format!(
        "POST /api/publish HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ))
    .await;
    let res = conn.read_response().await;
    assert_eq!(res.status, 413, "{}", res.head);
    assert_eq!(res.json()["code"], "too_large");

    // The peer leaves in the middle of a body: no answer, nothing published.
    let mut cut = RawHttp::connect(server.addr, None).await;
    let request = publish_request(host, "lim", 1);
    cut.send(&request[..request.len() - 3]).await;
    cut.stream.shutdown().await.unwrap();
    cut.expect_closed().await;

    // A command body that is not JSON: 400 on a connection that goes on.
    let mut bad = RawHttp::connect(server.addr, None).await;
    bad.send(&format!(
        "POST /command HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\n\r\nnope!"
    ))
    .await;
    let res = bad.read_response().await;
    assert_eq!(res.status, 400, "{}", res.head);
    assert_eq!(res.json()["code"], "bad_json");
    let ok = conn_publish(&mut bad, host, 2).await;
    assert_kept_alive(&ok);

    let history = server.poll("/poll?channel=lim&since=earliest").await;
    assert!(history.messages.is_empty(), "{history:?}");
    let history = server.poll("/poll?channel=kp&since=earliest").await;
    assert_eq!(history.messages.len(), 1);
}
