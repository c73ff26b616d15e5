//! SSE's `Last-Event-ID` handling, `transport::sse::since_from`, with
//! arbitrary header bytes.
//!
//! Input: the first byte picks the `since` from the query, the rest is one
//! or more header values separated by `\n` (bytes `HeaderValue` refuses are
//! skipped, as hyper would refuse them).
//!
//! Properties: without the header, or with an empty one, the query's `since`
//! stands; only the first value counts; a non-ASCII value is
//! `InvalidCursor`; otherwise the result is exactly `Cursor::parse` of the
//! value, and a resulting cursor re-encodes to `[A-Za-z0-9._~-]` and parses
//! back to itself.
#![no_main]

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use pushgate_core::{Cursor, ErrorKind, Since};
use pushgate_fuzz::is_cursor_char;
use pushgate_server::fuzzing::since_from;

fn query_since(b: u8) -> Since {
    match b % 3 {
        0 => Since::Now,
        1 => Since::Earliest,
        _ => Since::parse("Zm9v.abc.7").unwrap(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let values: Vec<HeaderValue> = rest
        .split(|&b| b == b'\n')
        .filter_map(|v| HeaderValue::from_bytes(v).ok())
        .collect();
    let mut headers = HeaderMap::new();
    // Other headers never count.
    headers.insert("last-event", HeaderValue::from_static("x"));
    for v in &values {
        headers.append("last-event-id", v.clone());
    }
    let got = since_from(&headers, query_since(first));

    let Some(v) = values.first() else {
        assert_eq!(got.unwrap(), query_since(first));
        return;
    };
    // Only the first value counts.
    let mut only_first = HeaderMap::new();
    only_first.insert("last-event-id", v.clone());
    assert_eq!(since_from(&only_first, query_since(first)), got);

    let Ok(text) = v.to_str() else {
        assert_eq!(got.unwrap_err().kind(), ErrorKind::InvalidCursor);
        return;
    };
    if text.is_empty() {
        assert_eq!(got.unwrap(), query_since(first));
        return;
    }
    assert_eq!(got, Cursor::parse(text).map(Since::Cursor), "{text:?}");
    if let Ok(Since::Cursor(c)) = got {
        let enc = c.encode();
        assert!(enc.bytes().all(is_cursor_char), "{enc:?}");
        assert_eq!(Cursor::parse(&enc).unwrap(), c);
    }
});
