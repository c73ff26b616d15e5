//! `json::sanitize`, which validates publisher data and rewrites it into
//! the compact, script-safe form every transport embeds unchanged.
//!
//! Properties: it accepts exactly what serde_json accepts as one JSON text;
//! its output is script-safe, valid JSON, the same `serde_json::Value` as the
//! input (when a `Value` can hold the input), and a fixed point.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pushgate_core::json::sanitize;
use pushgate_core::ErrorKind;
use pushgate_fuzz::{is_json, is_script_safe};
use serde_json::Value;

fuzz_target!(|bytes: &[u8]| {
    let valid = serde_json::from_slice::<&serde_json::value::RawValue>(bytes).is_ok();
    let value: Option<Value> = serde_json::from_slice(bytes).ok();
    match sanitize(bytes) {
        Ok(out) => {
            assert!(valid);
            assert!(is_script_safe(&out), "{out:?}");
            assert!(is_json(&out), "{out:?}");
            assert!(!out.starts_with(char::is_whitespace) && !out.ends_with(char::is_whitespace));
            if let Some(value) = value {
                let back: Value = serde_json::from_str(&out).expect("parses like the input");
                assert_eq!(back, value, "{out:?}");
            }
            assert_eq!(sanitize(out.as_bytes()).unwrap(), out, "not a fixed point");
            assert!(out.len() <= bytes.len() * 6, "{out:?}");
        }
        Err(e) => {
            assert!(!valid && value.is_none());
            assert_eq!(e.kind(), ErrorKind::BadJson);
        }
    }
});
