//! Fan-out to many concurrent subscribers on one channel, on both transports.

use crate::common::*;
use futures_util::future::join_all;
use serde_json::json;
use tokio::task::JoinSet;

const WS_CLIENTS: usize = 200;
const SSE_CLIENTS: usize = 50;
const MESSAGES: u64 = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subscriber_gets_every_message_in_order_exactly_once() {
    let server = start().await;

    // Connect everyone and wait for each subscription before publishing.
    let ws_clients = join_all((0..WS_CLIENTS).map(|_| async {
        let mut ws = server.ws("/ws?channel=crowd").await;
        assert_subscribed(&ws.next_json().await, "crowd");
        ws
    }))
    .await;
    let sse_clients = join_all((0..SSE_CLIENTS).map(|_| async {
        let mut sse = server.sse("channel=crowd").await;
        sse.expect_subscribed("crowd").await;
        sse
    }))
    .await;

    // One more message than counted: a duplicate or an extra message
    // anywhere before it would show up in its place.
    let total = MESSAGES + 1;
    let mut readers = JoinSet::new();
    for mut ws in ws_clients {
        readers.spawn(async move {
            for n in 1..=total {
                let v = ws.next_json().await;
                assert_eq!(assert_message(&v, "crowd", n), &json!({ "n": n }));
            }
        });
    }
    for mut sse in sse_clients {
        readers.spawn(async move {
            for n in 1..=total {
                let e = sse.expect_message("crowd", n).await;
                assert_eq!(e.json()["data"], json!({ "n": n }));
            }
        });
    }

    server.publish_n("crowd", total).await;

    let mut finished = 0;
    while let Some(result) = within("every reader to finish", readers.join_next()).await {
        result.expect("a reader failed");
        finished += 1;
    }
    assert_eq!(finished, WS_CLIENTS + SSE_CLIENTS);
}
