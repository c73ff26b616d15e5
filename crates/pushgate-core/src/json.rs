//! JSON text that is safe in every place a message can land.
//!
//! Publisher data is validated once and rewritten once into a compact form
//! where `<`, `>`, `&`, U+2028 and U+2029 appear only as `\u` escapes and no raw
//! line break remains. The result is still the same JSON value, and it can be
//! put unchanged into an SSE `data:` line, an NDJSON line, a WebSocket text
//! frame or an inline `<script>` (iframe transport) without breaking out.

use std::fmt;

use serde_json::value::RawValue;

use crate::error::{Error, ErrorKind};

/// JSON text in its compact, script-safe form (see the module docs). Only
/// this module makes one, from bytes it validated or from a value serde
/// already parsed, so no caller can put unsanitised text on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafeJson(String);

impl SafeJson {
    /// Validates `raw` as one JSON value and rewrites it.
    pub fn parse(raw: &[u8]) -> Result<Self, Error> {
        let value: &RawValue = serde_json::from_slice(raw).map_err(|e| {
            Error::new(ErrorKind::BadJson, format!("data is not valid JSON: {e}")).with_source(e)
        })?;
        Ok(SafeJson::from_valid(value))
    }

    /// Rewrites a value serde already validated (a field of a decoded command).
    pub fn from_valid(value: &RawValue) -> Self {
        SafeJson(compact_escaped(value.get()))
    }

    /// A direct message's data, `{"from":<from or null>,"data":<data>}`.
    pub fn direct_message(from: Option<&str>, data: &SafeJson) -> Self {
        let mut out = String::with_capacity(data.0.len() + 32);
        out.push_str("{\"from\":");
        match from {
            Some(f) => push_string(&mut out, f),
            None => out.push_str("null"),
        }
        out.push_str(",\"data\":");
        out.push_str(&data.0);
        out.push('}');
        SafeJson(out)
    }

    /// The text, for a wire format to embed as it is.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SafeJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Validates `raw` as one JSON value and returns its compact, script-safe
/// text ([`SafeJson::parse`], as a `String`).
pub fn sanitize(raw: &[u8]) -> Result<String, Error> {
    SafeJson::parse(raw).map(|j| j.0)
}

/// The bytes [`compact_escaped`] stops at, outside a string (`[0]`: a
/// quote and JSON whitespace) and inside one (`[1]`: a quote, a backslash,
/// `<`, `>`, `&`, and 0xE2, the lead byte of U+2028 and U+2029).
static STOPS: [[bool; 256]; 2] = stop_table(b"\" \n\r\t", b"\"\\<>&\xE2");

/// A scanner's stop bytes outside (`[0]`) and inside (`[1]`) a string.
const fn stop_table(outside: &[u8], inside: &[u8]) -> [[bool; 256]; 2] {
    let mut t = [[false; 256]; 2];
    let mut i = 0;
    while i < outside.len() {
        t[0][outside[i] as usize] = true;
        i += 1;
    }
    let mut i = 0;
    while i < inside.len() {
        t[1][inside[i] as usize] = true;
        i += 1;
    }
    t
}

/// Rewrites already-valid JSON text; see the module docs.
///
/// Every publish goes through here, so it skips over runs that need no
/// change with a table lookup per byte and copies them whole; a char-by-
/// char rebuild was the largest user-space cost of the publish API.
/// Cutting only at ASCII bytes and at the lead byte of U+2028/U+2029 keeps
/// every slice on a char boundary, whatever the input.
pub(crate) fn compact_escaped(valid_json: &str) -> String {
    let bytes = valid_json.as_bytes();
    let mut out = String::with_capacity(valid_json.len());
    let mut in_string = false;
    let mut run = 0;
    let mut i = 0;
    loop {
        let stops = &STOPS[usize::from(in_string)];
        while i < bytes.len() && !stops[usize::from(bytes[i])] {
            i += 1;
        }
        let Some(&b) = bytes.get(i) else { break };
        let (skip, replacement) = match (b, bytes.get(i + 1..i + 3)) {
            (b'"', _) => {
                in_string = !in_string;
                i += 1;
                continue;
            }
            // An escape is copied whole; its second byte is ASCII.
            (b'\\', _) => {
                i += 2;
                continue;
            }
            (b'<', _) => (1, "\\u003c"),
            (b'>', _) => (1, "\\u003e"),
            (b'&', _) => (1, "\\u0026"),
            (0xE2, Some([0x80, 0xA8])) => (3, "\\u2028"),
            (0xE2, Some([0x80, 0xA9])) => (3, "\\u2029"),
            (0xE2, _) => {
                i += 1;
                continue;
            }
            // Whitespace between tokens.
            _ => (1, ""),
        };
        out.push_str(&valid_json[run..i]);
        out.push_str(replacement);
        i += skip;
        run = i;
    }
    out.push_str(&valid_json[run..]);
    out
}

/// The bytes [`nests_deeper`] stops at, outside a string (`[0]`: a quote
/// and the brackets) and inside one (`[1]`: a quote and a backslash).
static DEPTH_STOPS: [[bool; 256]; 2] = stop_table(b"\"[]{}", b"\"\\");

/// Whether the arrays and objects of JSON text nest more than `max` deep
/// (`1` and `"["` nest 0 deep, `[1]` 1, `{"a":[1]}` 2).
///
/// A byte scan that skips strings, with no stack: any depth is safe, and
/// so is text that is not JSON (unbalanced brackets count as they come;
/// whether the text is valid is the parser's to say). serde_json limits
/// its own recursion to 128 levels, but only while it builds values: the
/// `RawValue`s and ignored fields the protocol reads are skipped without a
/// limit, so before this check any depth passed through to subscribers.
pub fn nests_deeper(json: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut i = 0;
    loop {
        let stops = &DEPTH_STOPS[usize::from(in_string)];
        while i < json.len() && !stops[usize::from(json[i])] {
            i += 1;
        }
        let Some(&b) = json.get(i) else {
            return false;
        };
        match b {
            b'"' => in_string = !in_string,
            // An escape: its next byte is never the string's end.
            b'\\' => i += 1,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            _ => depth = depth.saturating_sub(1),
        }
        i += 1;
    }
}

fn push_safe(out: &mut String, c: char) {
    match c {
        '<' => out.push_str("\\u003c"),
        '>' => out.push_str("\\u003e"),
        '&' => out.push_str("\\u0026"),
        '\u{2028}' => out.push_str("\\u2028"),
        '\u{2029}' => out.push_str("\\u2029"),
        _ => out.push(c),
    }
}

/// Appends `s` as a script-safe JSON string literal.
pub fn push_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                use std::fmt::Write as _;
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => push_safe(out, c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    #[test]
    fn escapes_script_breakers() {
        let out = sanitize(br#"{ "a" : "</script><!-- & \u2028", "b": [1, 2] }"#).unwrap();
        assert_eq!(
            out,
            r#"{"a":"\u003c/script\u003e\u003c!-- \u0026 \u2028","b":[1,2]}"#
        );
        let raw_ls = "\"x\u{2028}y\"";
        assert_eq!(sanitize(raw_ls.as_bytes()).unwrap(), r#""x\u2028y""#);
    }

    #[test]
    fn keeps_escapes_inside_strings() {
        let out = sanitize(br#""a\"<b\\""#).unwrap();
        assert_eq!(out, r#""a\"\u003cb\\""#);
    }

    #[test]
    fn rejects_invalid() {
        for bad in [&b"{"[..], b"", b"nul", b"1 2", b"\"\xff\""] {
            assert_eq!(sanitize(bad).unwrap_err().kind(), ErrorKind::BadJson);
        }
    }

    #[test]
    fn depth_counts_brackets_outside_strings() {
        let deeper = |text: &str, max| nests_deeper(text.as_bytes(), max);
        assert!(!deeper("1", 0));
        assert!(!deeper(r#""[[[{{{""#, 0));
        assert!(deeper("[1]", 0));
        assert!(!deeper("[1]", 1));
        assert!(!deeper(r#"{"a":[1],"b":{"c":2}}"#, 2));
        assert!(deeper(r#"{"a":[1],"b":{"c":[2]}}"#, 2));
        // An escaped quote does not end the string; an escaped backslash does
        // not escape the quote after it.
        assert!(!deeper(r#"["\"[[", "\\", "]]"]"#, 1));
        assert!(deeper(r#"["\\", [[1]]]"#, 2));
        // Not JSON: no panic, and closing brackets never go below zero.
        assert!(!deeper("]]]]}}[", 1));
        assert!(deeper("]]]][[", 1));
        assert!(!deeper("\"\\", 0));
    }

    #[test]
    fn depth_of_a_hundred_thousand_levels_is_a_plain_loop() {
        let n = 100_000;
        let deep = format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(nests_deeper(deep.as_bytes(), 64));
        assert!(!nests_deeper(deep.as_bytes(), n));
        let open = "{\"a\":".repeat(n);
        assert!(nests_deeper(open.as_bytes(), n - 1));
    }

    fn depth(v: &Value) -> usize {
        match v {
            Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
            Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "\\PC{0,12}|[<>&\u{2028}\u{2029}\n\"\\\\ ]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map("\\PC{0,6}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// The rewrite as first written: one char at a time.
    fn model(json: &str) -> String {
        let (mut out, mut in_string, mut escaped) = (String::new(), false, false);
        for c in json.chars() {
            match (in_string, escaped, c) {
                (true, true, _) => {
                    escaped = false;
                    out.push(c);
                }
                (true, false, '\\') => {
                    escaped = true;
                    out.push(c);
                }
                (_, false, '"') => {
                    in_string = !in_string;
                    out.push(c);
                }
                (true, false, _) => push_safe(&mut out, c),
                (false, _, ' ' | '\n' | '\r' | '\t') => {}
                (false, _, _) => out.push(c),
            }
        }
        out
    }

    fn is_safe(s: &str) -> bool {
        !s.contains(['<', '>', '&', '\n', '\r', '\u{2028}', '\u{2029}'])
    }

    proptest! {
        #[test]
        fn sanitize_preserves_value_and_is_safe(v in json_value()) {
            let pretty = serde_json::to_string_pretty(&v).unwrap();
            let out = sanitize(pretty.as_bytes()).unwrap();
            let back: Value = serde_json::from_str(&out).unwrap();
            prop_assert_eq!(back, v);
            prop_assert!(is_safe(&out));
        }

        #[test]
        fn nests_deeper_agrees_with_the_value(v in json_value()) {
            let d = depth(&v);
            for text in [serde_json::to_string(&v).unwrap(), serde_json::to_string_pretty(&v).unwrap()] {
                prop_assert!(!nests_deeper(text.as_bytes(), d));
                prop_assert_eq!(nests_deeper(text.as_bytes(), d.saturating_sub(1)), d > 0);
            }
        }

        #[test]
        fn compact_escaped_equals_a_char_by_char_model(
            s in "[ -~\u{e9}\u{2026}\u{2028}\u{2029}\n\t\\\\\"]{0,40}"
        ) {
            // Any text, JSON or not: no panic (a slice cut off a char
            // boundary would), and what the obvious rewrite gives.
            prop_assert_eq!(compact_escaped(&s), model(&s));
        }

        #[test]
        fn push_string_roundtrips(s in "\\PC{0,40}|[<>&\u{2028}\n\"\\\\\u{0}-\u{1f}]{0,10}") {
            let mut out = String::new();
            push_string(&mut out, &s);
            let back: String = serde_json::from_str(&out).unwrap();
            prop_assert_eq!(back, s);
            prop_assert!(is_safe(&out));
        }
    }
}
