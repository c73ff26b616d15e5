//! The query string of a subscribing request, and the values parsed from it:
//! `web::parse_subscribe_query`, `config::parse_duration` (`timeout=`) and
//! `wire::iframe::validate_callback` (`callback=`).
//!
//! Properties: an accepted query has at most `max` distinct, valid channels
//! and only allowed, distinct extra parameters; `since` agrees with
//! `Since::parse`; a parsed duration is exactly digits × unit; an accepted
//! callback matches the identifier-path grammar, written here independently.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pushgate_core::wire::iframe::{validate_callback, MAX_CALLBACK_LEN};
use pushgate_core::{ChannelName, Since};
use pushgate_fuzz::text;
use pushgate_server::config::parse_duration;
use pushgate_server::fuzzing::{parse_subscribe_query, MAX_QUERY_LEN};

const ALLOWED: &[&str] = &["timeout", "callback", "limit"];
const MAX_CHANNELS: usize = 128;

/// `ident ("." ident)*`, `ident = [A-Za-z_$][A-Za-z0-9_$]*`, 1..=128 bytes,
/// as a character-by-character state machine.
fn is_identifier_path(s: &str) -> bool {
    if s.is_empty() || s.len() > MAX_CALLBACK_LEN {
        return false;
    }
    let mut at_start = true;
    for c in s.chars() {
        let ok = match c {
            'A'..='Z' | 'a'..='z' | '_' | '$' => true,
            '0'..='9' => !at_start,
            '.' => !at_start,
            _ => false,
        };
        if !ok {
            return false;
        }
        at_start = c == '.';
    }
    !at_start
}

fn check_callback(s: &str) {
    let ok = validate_callback(s).is_ok();
    assert_eq!(ok, is_identifier_path(s), "{s:?}");
    if ok {
        // What makes it safe inside `<script>parent.NAME(…)`.
        assert!(s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_$.".contains(&b)));
    }
}

/// Milliseconds of `text` by the documented grammar, computed in u128:
/// `digits unit?` (trimmed), unit `ms`, `s` (the default), `m` or `h`, the
/// count a u64 and the result at most u64::MAX seconds.
fn expected_millis(text: &str) -> Option<u128> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let secs = |k: u128| {
        let s = u128::from(n) * k;
        (s <= u128::from(u64::MAX)).then_some(s * 1000)
    };
    match unit {
        "ms" => Some(u128::from(n)),
        "" | "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        _ => None,
    }
}

fn check_duration(s: &str) {
    let got = parse_duration(s).ok().map(|d| d.as_millis());
    assert_eq!(got, expected_millis(s), "{s:?}");
}

fuzz_target!(|data: &[u8]| {
    let s = text(data);
    check_callback(&s);
    check_duration(&s);
    let Ok(q) = parse_subscribe_query(Some(&s), ALLOWED, MAX_CHANNELS) else {
        return;
    };
    assert!(s.len() <= MAX_QUERY_LEN);
    assert!(q.channels.len() <= MAX_CHANNELS);
    for (i, c) in q.channels.iter().enumerate() {
        assert_eq!(ChannelName::new(c.as_str()).as_ref(), Ok(c));
        assert!(!q.channels[..i].contains(c), "{c:?} twice");
    }
    for (i, (k, _)) in q.extra.iter().enumerate() {
        assert!(ALLOWED.contains(&k.as_str()), "{k:?}");
        assert!(!q.extra[..i].iter().any(|(k2, _)| k2 == k), "{k:?} twice");
    }
    let raw_since = form_pairs(&s).find(|(k, _)| k == "since").map(|(_, v)| v);
    let since = Since::parse(raw_since.as_deref().unwrap_or("")).unwrap();
    assert_eq!(q.since, since);
    if let Some(t) = q.extra("timeout") {
        check_duration(t);
    }
    if let Some(cb) = q.extra("callback") {
        check_callback(cb);
    }
});

/// `application/x-www-form-urlencoded` pairs, decoded independently of the
/// `form_urlencoded` crate: split on `&`, then `=`, `+` is a space, `%XX` a
/// byte, lossy UTF-8.
fn form_pairs(s: &str) -> impl Iterator<Item = (String, String)> + '_ {
    fn decode(part: &str) -> String {
        let b = part.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
            match b[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < b.len() && hex(b[i + 1]).is_some() && hex(b[i + 2]).is_some() => {
                    out.push(hex(b[i + 1]).unwrap() * 16 + hex(b[i + 2]).unwrap());
                    i += 2;
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    s.split('&').filter(|p| !p.is_empty()).map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        (decode(k), decode(v))
    })
}
