//! Short polling, `GET /poll`: answers at once; the cursor it returns reads on
//! exactly; `since=earliest`; a `reset` entry when the cursor cannot be
//! honoured; several channels in one request.

use std::time::Duration;

use crate::common::*;
use serde_json::json;

#[tokio::test]
async fn empty_channel_answers_at_once_with_an_empty_list_and_a_cursor() {
    let server = start().await;
    let res = server.get("/poll?channel=quiet").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    // A GET that changes with every publish must not be cached on the way.
    assert_eq!(res.headers()["cache-control"], "no-store");
    let polled = Polled::from_json(res.json().await.unwrap());
    assert!(polled.messages.is_empty(), "{polled:?}");
    // A new channel stands before its first message, in some epoch.
    let entry = pushgate_core::Cursor::parse(&polled.cursor).expect("a valid cursor");
    let positions: Vec<_> = entry.iter().collect();
    assert_eq!(positions.len(), 1, "{}", polled.cursor);
    assert_eq!(positions[0].0.as_str(), "quiet");
    assert_eq!(positions[0].1.offset, 0);
}

#[tokio::test]
async fn without_since_old_messages_are_not_returned_only_the_current_cursor() {
    let server = start().await;
    let epoch = server.publish_n("old", 3).await;
    let polled = server.poll("/poll?channel=old").await;
    assert!(polled.messages.is_empty(), "{polled:?}");
    assert_eq!(polled.cursor, cursor(&[("old", &epoch, 3)]));
}

#[tokio::test]
async fn cursor_returns_exactly_the_messages_published_after_it_in_order() {
    let server = start().await;
    let first = server.poll("/poll?channel=feed").await;
    for n in 1..=3 {
        server.publish("feed", json!({ "n": n })).await;
    }
    let second = server
        .poll(&format!("/poll?channel=feed&since={}", first.cursor))
        .await;
    assert_eq!(
        second.positions(),
        [("feed".into(), 1), ("feed".into(), 2), ("feed".into(), 3)]
    );
    let data: Vec<_> = second.messages.iter().map(|m| m["data"].clone()).collect();
    assert_eq!(data, [json!({"n": 1}), json!({"n": 2}), json!({"n": 3})]);
    assert_eq!(second.cursor, cursor_after(&second.messages[2]));

    // Nothing new: an empty list and the same cursor.
    let third = server
        .poll(&format!("/poll?channel=feed&since={}", second.cursor))
        .await;
    assert!(third.messages.is_empty(), "{third:?}");
    assert_eq!(third.cursor, second.cursor);

    // The cursor continues: one more message, and only that one.
    server.publish("feed", json!({"n": 4})).await;
    let fourth = server
        .poll(&format!("/poll?channel=feed&since={}", third.cursor))
        .await;
    assert_eq!(fourth.positions(), [("feed".into(), 4)]);
    assert_eq!(fourth.messages[0]["data"], json!({"n": 4}));
    assert_eq!(fourth.cursor, cursor_after(&fourth.messages[0]));
}

#[tokio::test]
async fn since_earliest_reads_from_the_start_of_retained_history() {
    let server = start_with(|c| c.history_size = 3).await;
    let epoch = server.publish_n("hist", 5).await;
    let polled = server.poll("/poll?channel=hist&since=earliest").await;
    assert_eq!(
        polled.positions(),
        [("hist".into(), 3), ("hist".into(), 4), ("hist".into(), 5)],
        "the oldest retained message is 3"
    );
    assert_eq!(polled.cursor, cursor(&[("hist", &epoch, 5)]));
    // On a channel with no history, `earliest` is just the current position.
    let empty = server.poll("/poll?channel=none&since=earliest").await;
    assert!(empty.messages.is_empty(), "{empty:?}");
}

#[tokio::test]
async fn cursor_that_cannot_be_honoured_gets_a_reset_entry() {
    let server = start_with(|c| c.history_size = 3).await;
    let epoch = server.publish_n("trim", 5).await;
    let now = cursor(&[("trim", &epoch, 5)]);
    for (why, since) in [
        (
            "messages 2 of history were trimmed",
            cursor(&[("trim", &epoch, 1)]),
        ),
        ("offset 0 needs message 1", cursor(&[("trim", &epoch, 0)])),
        ("another epoch", cursor(&[("trim", "otherEpoch", 4)])),
        ("an offset in the future", cursor(&[("trim", &epoch, 99)])),
    ] {
        let polled = server
            .poll(&format!("/poll?channel=trim&since={since}"))
            .await;
        assert_eq!(
            polled.messages,
            [json!({"type": "reset", "channel": "trim", "epoch": epoch, "offset": 5})],
            "{why}"
        );
        assert_eq!(
            polled.cursor, now,
            "{why}: the client now stands at the top"
        );
    }
    // From there it reads on normally.
    server.publish("trim", json!("six")).await;
    let polled = server
        .poll(&format!("/poll?channel=trim&since={now}"))
        .await;
    assert_eq!(polled.positions(), [("trim".into(), 6)]);
}

#[tokio::test]
async fn two_channels_in_one_poll_share_one_cursor() {
    let server = start().await;
    let start = server.poll("/poll?channel=a&channel=b").await;
    assert_eq!(
        pushgate_core::Cursor::parse(&start.cursor).unwrap().len(),
        2,
        "{}",
        start.cursor
    );
    let a = server.publish("a", json!("a1")).await;
    let b = server.publish("b", json!("b1")).await;
    server.publish("a", json!("a2")).await;
    let (ea, eb) = (a["epoch"].as_str().unwrap(), b["epoch"].as_str().unwrap());

    let both = server
        .poll(&format!("/poll?channel=a&channel=b&since={}", start.cursor))
        .await;
    let got = both.positions();
    let of = |c: &str| -> Vec<u64> {
        got.iter()
            .filter(|(ch, _)| ch == c)
            .map(|(_, o)| *o)
            .collect()
    };
    assert_eq!((of("a"), of("b")), (vec![1, 2], vec![1]), "{got:?}");
    assert_eq!(both.cursor, cursor(&[("a", ea, 2), ("b", eb, 1)]));

    // One new message on one of the two channels: the cursor still covers both.
    server.publish("b", json!("b2")).await;
    let one = server
        .poll(&format!("/poll?channel=a&channel=b&since={}", both.cursor))
        .await;
    assert_eq!(one.positions(), [("b".into(), 2)]);
    assert_eq!(one.cursor, cursor(&[("a", ea, 2), ("b", eb, 2)]));

    // A cursor entry for a channel not polled is ignored; a channel the
    // cursor does not name starts at its current position.
    let only_b = server
        .poll(&format!("/poll?channel=b&channel=c&since={}", one.cursor))
        .await;
    assert!(only_b.messages.is_empty(), "{only_b:?}");
    let parsed = pushgate_core::Cursor::parse(&only_b.cursor).unwrap();
    let names: Vec<_> = parsed.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(names, ["b", "c"]);
}

#[tokio::test]
async fn a_poll_leaves_no_subscriber_or_open_connection_behind() {
    use pushgate_server::metrics::Transport;
    let server = start().await;
    server.publish("gone", json!(1)).await;
    let polled = server.poll("/poll?channel=gone&since=earliest").await;
    assert_eq!(polled.positions(), [("gone".into(), 1)]);
    assert_eq!(server.subscribers("gone"), 0);
    assert_eq!(server.open(Transport::Poll), 0);
    // The answer is complete at once; it never waits for anything.
    let started = tokio::time::Instant::now();
    server.poll("/poll?channel=gone").await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a short poll took {:?}",
        started.elapsed()
    );
}
