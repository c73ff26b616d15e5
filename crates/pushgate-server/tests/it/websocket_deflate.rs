//! permessage-deflate (RFC 7692) on `/ws`, checked byte by byte with a raw
//! client and an independent inflater (flate2): negotiation, shared
//! compressed frames, window limits, compressed commands, bombs.

use crate::common::*;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

const OFFER: &str = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";
const RSV1: u8 = 0x40;

fn inflate(payload: &[u8], window_bits: u8) -> Vec<u8> {
    let mut d = Decompress::new_with_window_bits(false, window_bits);
    let mut input = payload.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity(1 << 20);
    d.decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .expect("a valid raw DEFLATE stream within the window");
    assert_eq!(d.total_in() as usize, input.len(), "all input consumed");
    out
}

fn deflate_raw(data: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() + 64);
    c.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

/// A masked client frame with `first` as FIN/RSV/opcode byte.
fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let key = [1, 2, 3, 4];
    let mut f = vec![first];
    match payload.len() {
        n @ 0..=125 => f.push(0x80 | n as u8),
        n @ 126..=0xffff => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&key);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    f
}

/// The next data frame as (compressed?, JSON), inflated with `window_bits`.
async fn next_json(ws: &mut RawWs, window_bits: u8) -> (bool, Value) {
    loop {
        let (first, payload) = within("a frame", ws.read_raw_frame()).await.expect("open");
        match first & 0x0f {
            0x1 | 0x2 => {
                let compressed = first & RSV1 != 0;
                let bytes = if compressed {
                    inflate(&payload, window_bits)
                } else {
                    payload
                };
                return (compressed, serde_json::from_slice(&bytes).unwrap());
            }
            0x9 | 0xA => continue,
            op => panic!("unexpected opcode {op}"),
        }
    }
}

fn extensions(head: &str) -> Option<String> {
    head.lines()
        .find_map(|l| l.strip_prefix("sec-websocket-extensions: "))
        .map(str::to_owned)
}

#[tokio::test]
async fn not_negotiated_unless_enabled() {
    let server = start().await;
    let (_, head) = raw_ws_with(server.addr, "/ws", None, OFFER).await;
    assert_eq!(extensions(&head), None, "{head}");
}

#[tokio::test]
async fn published_messages_arrive_compressed_within_each_clients_window() {
    let server = start_with(|c| c.ws_deflate = true).await;
    let (mut wide, head) = raw_ws_with(server.addr, "/ws?channel=z", None, OFFER).await;
    assert_eq!(
        extensions(&head).as_deref(),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
        "{head}"
    );
    let narrow_offer =
        "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=9, permessage-deflate\r\n";
    let (mut narrow, head) = raw_ws_with(server.addr, "/ws?channel=z", None, narrow_offer).await;
    assert!(
        extensions(&head)
            .unwrap()
            .ends_with("; server_max_window_bits=9"),
        "{head}"
    );
    let (mut plain, _) = raw_ws_with(server.addr, "/ws?channel=z", None, "").await;
    for ws in [&mut wide, &mut narrow, &mut plain] {
        let (compressed, v) = next_json(ws, 15).await;
        assert!(!compressed, "a short reply stays plain");
        assert_subscribed(&v, "z");
    }

    // Text that repeats at distances beyond 2^9 bytes: only a wider window
    // can reach back that far, so the narrow client's frame must differ.
    let words: Vec<String> = (0..400).map(|i| format!("w{}", i * 7919 % 1000)).collect();
    let text = words.join(" ").repeat(3);
    server.publish("z", json!({ "text": text })).await;
    server.publish("z", json!(1)).await;
    let (wc, wv) = next_json(&mut wide, 15).await;
    let (nc, nv) = next_json(&mut narrow, 9).await;
    let (pc, pv) = next_json(&mut plain, 15).await;
    assert!(wc && nc && !pc, "compressed only where negotiated");
    for v in [&wv, &nv, &pv] {
        assert_message(v, "z", 1);
        assert_eq!(v["data"]["text"], text.as_str());
    }
    // Below ws_deflate_min_size: sent as is.
    let (small_compressed, v) = next_json(&mut wide, 15).await;
    assert!(!small_compressed);
    assert_message(&v, "z", 2);
}

#[tokio::test]
async fn compressed_commands_are_understood_and_bombs_refused() {
    let server = start_with(|c| {
        c.ws_deflate = true;
        c.max_message_size = 4096;
    })
    .await;
    let (mut ws, _) = raw_ws_with(server.addr, "/ws", None, OFFER).await;
    let cmd = json!({"type": "publish", "channel": "c", "id": 7, "data": "x".repeat(1000)});
    let packed = deflate_raw(cmd.to_string().as_bytes());
    assert!(packed.len() < 100);
    // Fragmented, RSV1 on the first frame only.
    let (a, b) = packed.split_at(10);
    let mut bytes = client_frame(RSV1 | 0x1, a);
    bytes.extend(client_frame(0x80, b));
    ws.stream.write_all(&bytes).await.unwrap();
    let (_, reply) = next_json(&mut ws, 15).await;
    assert_eq!(reply["type"], "published", "{reply}");
    assert_eq!(reply["id"], 7);

    // 1 MB of zeros in a few hundred bytes: refused once it passes 4096.
    let bomb = deflate_raw(&vec![b' '; 1 << 20]);
    assert!(
        bomb.len() < 4096,
        "the compressed frame itself is within limits"
    );
    ws.stream
        .write_all(&client_frame(0x80 | RSV1 | 0x1, &bomb))
        .await
        .unwrap();
    let (first, payload) = within("close", ws.read_raw_frame()).await.unwrap();
    assert_eq!(first & 0x0f, OP_CLOSE);
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1009);
}
