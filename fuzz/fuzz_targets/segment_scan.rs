//! `log::record::scan` on arbitrary segment bytes, as the last segment and
//! as an older one: what the durable store reads back at start from a file
//! a crash, a bad disk or an operator may have changed.
//!
//! Properties: the records found re-encode to exactly the bytes before
//! `end`; a torn tail is reported only for the last segment, lies after
//! `end` within one write (`MAX_WRITE`) and is followed by zeros only;
//! damage is reported at a byte inside the input, and an older segment
//! never has a torn tail.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pushgate_core::log::record::{scan, MAX_WRITE};

fn check(bytes: &[u8], last: bool) {
    match scan(bytes, last) {
        Ok(s) => {
            let mut again = Vec::new();
            for r in &s.records {
                r.encode(&mut again);
            }
            assert_eq!(again, bytes[..s.end], "records re-encode to what was read");
            if !last {
                assert_eq!(s.torn, 0, "only the last segment has a torn tail");
            }
            assert!(s.torn <= MAX_WRITE && s.end + s.torn <= bytes.len());
            assert!(
                bytes[s.end + s.torn..].iter().all(|b| *b == 0),
                "only zeros after the torn tail"
            );
        }
        Err(d) => assert!(d.at < bytes.len(), "damage at {} of {}", d.at, bytes.len()),
    }
}

fuzz_target!(|data: &[u8]| {
    check(data, true);
    check(data, false);
});
