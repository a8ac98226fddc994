//! Feeds arbitrary text to sendmail's access-file parser, then looks up a few clients,
//! senders and recipients: no panic, every error names the file and a line that exists, and a
//! table that parsed gives the same verdict however often it is asked.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postrider::server::access::{AccessError, AccessTable};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match AccessTable::parse(text, "/etc/mail/access") {
        Ok(table) => {
            assert!(table.len() <= text.lines().count());
            for ip in ["192.168.1.5", "10.0.0.1", "127.0.0.1", "2001:db8::1", "::ffff:192.168.1.5"] {
                let ip = ip.parse().expect("test address");
                let name = "pbx.lan.example".parse().ok();
                let once = table.connect(ip, name.as_ref()).cloned();
                assert_eq!(once, table.connect(ip, name.as_ref()).cloned());
                if let Some(m) = once {
                    assert!(m.line >= 1 && m.line <= text.lines().count());
                }
            }
            for a in ["user@lan.example", "postmaster@example.com", "a@b.c.example"] {
                let a = a.parse().expect("test address");
                let _ = table.from(&a);
                let _ = table.to(&a);
            }
        }
        Err(AccessError::Invalid { lines, .. }) => {
            assert!(!lines.is_empty());
            let count = text.lines().count();
            for (n, _) in &lines {
                assert!(*n >= 1 && *n <= count, "line {n} of {count}");
            }
        }
        Err(AccessError::Read { .. }) => unreachable!("parse reads no file"),
    }
});
