//! Any message becomes exactly one mbox entry: a `From ` line, then the message with every
//! `From ` line quoted, then the blank line. Splitting the result as a reader does (a `From `
//! line at the start or after a blank line begins a message) finds one message, and taking
//! the quotes back off gives the message (with a final line end).
#![no_main]

use libfuzzer_sys::fuzz_target;
use postrider::local::mbox::entry;
use postrider::ReversePath;
use std::time::{Duration, UNIX_EPOCH};

fuzz_target!(|data: &[u8]| {
    let sender = ReversePath::parse("aaa@ourtest.com").unwrap();
    let e = entry(&sender, UNIX_EPOCH + Duration::from_secs(1_700_000_000), data);
    assert!(e.starts_with(b"From aaa@ourtest.com "));
    assert!(e.ends_with(b"\n\n"));
    let mut starts = 0;
    let mut pos = 0;
    for line in e.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b"From ") && (pos == 0 || e[..pos].ends_with(b"\n\n")) {
            starts += 1;
        }
        pos += line.len();
    }
    assert_eq!(starts, 1, "the entry splits into {starts} messages");
    let first = e.iter().position(|&b| b == b'\n').unwrap() + 1;
    let body = &e[first..e.len() - 1];
    let mut unquoted = Vec::new();
    for line in body.split_inclusive(|&b| b == b'\n') {
        match line.strip_prefix(b">") {
            Some(rest) if rest.starts_with(b"From ") => unquoted.extend_from_slice(rest),
            _ => unquoted.extend_from_slice(line),
        }
    }
    let mut want = data.to_vec();
    if !want.is_empty() && !want.ends_with(b"\n") {
        want.push(b'\n');
    }
    // mboxo cannot tell a quoted `From ` from a `>From ` the sender wrote; compare with both
    // forms folded the same way.
    let fold = |v: &[u8]| -> Vec<u8> {
        let mut out = Vec::new();
        for line in v.split_inclusive(|&b| b == b'\n') {
            out.extend_from_slice(line.strip_prefix(b">").filter(|r| r.starts_with(b"From ")).unwrap_or(line));
        }
        out
    };
    assert_eq!(fold(&unquoted), fold(&want));
});
