//! Feeds arbitrary text to the TLS/credentials policy parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postrider::route::{Origin, PolicyTable};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines = text.split('\n').count();
    match PolicyTable::parse(text, Origin::named("fuzz")) {
        Ok((table, warnings)) => {
            let _ = format!("{table:?}");
            for w in &warnings {
                assert!(w.line.is_some_and(|l| l >= 1 && l <= lines));
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
