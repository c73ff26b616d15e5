//! The body of `/poll`, `/longpoll` and `/api/history`:
//! `{"messages":[…],"cursor":"…"}`.

use bytes::Bytes;

use crate::publication::Encoding;

/// The body for a one-channel reader whose only new message is this one,
/// the same for every such reader (the common long-poll answer).
pub static SINGLE: Encoding = Encoding::new("poll", |p| body(&[p.json()], &p.cursor_entry()));

/// Joins already-encoded entries (message or reset JSON) into a poll body.
pub fn body(entries: &[&[u8]], cursor: &str) -> Bytes {
    let len = entries.iter().map(|e| e.len() + 1).sum::<usize>() + cursor.len() + 28;
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(b"{\"messages\":[");
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(e);
    }
    out.extend_from_slice(b"],\"cursor\":\"");
    // Cursor characters never need escaping in a JSON string.
    out.extend_from_slice(cursor.as_bytes());
    out.extend_from_slice(b"\"}");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape() {
        let b = body(&[b"{\"a\":1}", b"2"], "YQ.e.1");
        assert_eq!(&b[..], br#"{"messages":[{"a":1},2],"cursor":"YQ.e.1"}"#);
        assert_eq!(&body(&[], "")[..], br#"{"messages":[],"cursor":""}"#);
    }
}
