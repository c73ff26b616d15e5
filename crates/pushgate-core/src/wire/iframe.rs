//! Hidden-iframe streaming ("forever frame"): an HTML document that never
//! ends, one `<script>parent.NAME(json)</script>` per event.
//!
//! Two things keep it from being an XSS vector: the callback must be a plain
//! identifier path (checked here, 400 otherwise), and every JSON we emit is
//! script-safe — `<`, `>`, `&`, U+2028 and U+2029 only ever appear as `\u`
//! escapes (see [`crate::json`]), so data cannot close the script element or
//! open a comment.

use bytes::Bytes;

use crate::error::{Error, ErrorKind};

/// Longest accepted callback.
pub const MAX_CALLBACK_LEN: usize = 128;

/// Checks a callback: identifiers (`[A-Za-z_$][A-Za-z0-9_$]*`) joined by dots.
pub fn validate_callback(name: &str) -> Result<(), Error> {
    let ok_ident = |id: &str| {
        let mut bytes = id.bytes();
        matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_' || b == b'$')
            && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$')
    };
    if name.is_empty() || name.len() > MAX_CALLBACK_LEN || !name.split('.').all(ok_ident) {
        return Err(Error::new(
            ErrorKind::BadRequest,
            format!(
                "callback must be a JavaScript identifier path like pushgate.onMessage (letters, digits, _ and $, dots between; at most {MAX_CALLBACK_LEN} bytes)"
            ),
        ));
    }
    Ok(())
}

/// The start of the document: enough bytes that browsers start rendering
/// (and so running scripts) at once, instead of buffering the first KiB.
pub fn preamble() -> Bytes {
    let mut out = String::with_capacity(1400);
    out.push_str("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>pushgate</title></head><body>\n<!--");
    out.push_str(&" ".repeat(1024));
    out.push_str("-->\n");
    Bytes::from(out)
}

/// One event: `<script>parent.NAME(json);</script>`.
pub fn script(callback: &str, json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len() + callback.len() + 32);
    push_script(&mut out, callback, json);
    out
}

/// [`script`], appended to `out`: several events in one buffer.
pub fn push_script(out: &mut Vec<u8>, callback: &str, json: &[u8]) {
    out.extend_from_slice(b"<script>parent.");
    out.extend_from_slice(callback.as_bytes());
    out.push(b'(');
    out.extend_from_slice(json);
    out.extend_from_slice(b");</script>\n");
}

/// The end of the document: the browser fires the iframe's `load`.
pub const CLOSE: &[u8] = b"</body></html>\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callbacks() {
        for ok in ["cb", "pushgate.onMessage", "$._x1", "a.b.c"] {
            assert!(validate_callback(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1a",
            "a..b",
            "a.",
            ".a",
            "a(b)",
            "alert(1)//",
            "a;b",
            "a-b",
            "a[0]",
            "é",
            "</script>",
        ] {
            assert!(validate_callback(bad).is_err(), "{bad}");
        }
        assert!(validate_callback(&"a".repeat(MAX_CALLBACK_LEN + 1)).is_err());
    }

    #[test]
    fn preamble_is_padded() {
        assert!(preamble().len() > 1024);
    }
}
