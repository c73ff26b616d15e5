//! Properties shared by the fuzz targets.

/// JSON text that can go unchanged into an SSE `data:` line, an NDJSON line
/// and an inline `<script>`: none of `<`, `>`, `&`, a raw line break, U+2028
/// or U+2029.
pub fn is_script_safe(s: &str) -> bool {
    !s.contains(['<', '>', '&', '\n', '\r', '\u{2028}', '\u{2029}'])
}

/// Whether `s` is one JSON text by the grammar (RFC 8259), whatever the
/// range of its numbers.
pub fn is_json(s: &str) -> bool {
    serde_json::from_str::<&serde_json::value::RawValue>(s).is_ok()
}

/// The characters a cursor (and an SSE id built from one) may use.
pub fn is_cursor_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"._~-".contains(&b)
}

/// Input as text: UTF-8 as is, anything else through lossy decoding, so both
/// shapes reach the parsers.
pub fn text(data: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(data)
}
