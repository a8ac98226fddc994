//! Feeds arbitrary bytes, as a message, to the 8BITMIME downgrade for every kind of server.
#![no_main]

use std::borrow::Cow;

use libfuzzer_sys::fuzz_target;
use postrider::message::{Target, downgrade, has_long_line, needs_downgrade};

fuzz_target!(|data: &[u8]| {
    for (eight_bit, utf8_headers) in [(false, false), (false, true), (true, false), (true, true)] {
        let target = Target {
            eight_bit,
            utf8_headers,
        };
        match downgrade(data, target) {
            Ok(Cow::Borrowed(b)) => {
                assert!(!needs_downgrade(data, target));
                assert_eq!(b, data);
            }
            Ok(Cow::Owned(out)) => {
                // No line SMTP refuses, ever; only 7-bit octets for a 7-bit server.
                assert!(!has_long_line(&out));
                if !eight_bit && !utf8_headers {
                    assert!(out.is_ascii());
                }
                // The output needs no second pass (8-bit header octets may stay where the
                // server takes them and the body is 7-bit).
                let again = downgrade(&out, target).expect("the output converts again");
                if eight_bit || !utf8_headers {
                    assert!(matches!(again, Cow::Borrowed(_)));
                }
            }
            Err(e) => {
                let _ = e.to_string();
                assert!(!eight_bit || !utf8_headers || matches!(e, postrider::message::DowngradeError::TooDeep { .. }));
            }
        }
    }
});
