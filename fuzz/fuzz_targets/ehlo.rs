//! Feeds EHLO replies to the capability parser: replies the reply parser builds from the fuzz
//! input (so they look like what a server sends), and the input as raw reply text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postrider::Reply;
use postrider::transport::esmtp::{Capabilities, parse_reply};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((reply, _))) = parse_reply(data) {
        check(&reply);
    }
    if let Ok(reply) = Reply::new(250, None, String::from_utf8_lossy(data)) {
        check(&reply);
    }
});

fn check(reply: &Reply) {
    let caps = Capabilities::parse(reply);
    let text = reply.text();
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default();
    // Only lines after the first announce extensions.
    let offered: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    let keyword = |name: &str| {
        offered
            .iter()
            .any(|words| words.first().is_some_and(|w| w.eq_ignore_ascii_case(name)))
    };

    assert_eq!(caps.server_name.as_deref(), first.split_whitespace().next());
    for (flag, name) in [
        (caps.pipelining, "PIPELINING"),
        (caps.eight_bit_mime, "8BITMIME"),
        (caps.smtputf8, "SMTPUTF8"),
        (caps.dsn, "DSN"),
        (caps.starttls, "STARTTLS"),
        (caps.enhanced_status_codes, "ENHANCEDSTATUSCODES"),
        (caps.chunking, "CHUNKING"),
    ] {
        assert_eq!(flag, keyword(name), "{name} in {text:?}");
    }

    // SIZE: the value of the last SIZE line, 0 for a bare SIZE, absent when it is not RFC 1870's
    // `1*20DIGIT` or does not fit in 64 bits.
    let last_size = offered
        .iter()
        .rev()
        .find(|words| words.first().is_some_and(|w| w.eq_ignore_ascii_case("SIZE")));
    match last_size {
        None => assert_eq!(caps.size, None),
        Some(words) => match words.get(1) {
            None => assert_eq!(caps.size, Some(0)),
            Some(n) => {
                let digits = n.bytes().all(|b| b.is_ascii_digit());
                assert_eq!(caps.size, n.parse::<u64>().ok().filter(|_| digits), "{n:?}");
            }
        },
    }
    assert_eq!(caps.size_limit(), caps.size.filter(|&n| n > 0));

    // AUTH: upper-case, non-empty, distinct words, each offered.
    for (i, m) in caps.auth.iter().enumerate() {
        assert!(!m.is_empty() && !m.contains(char::is_whitespace), "{m:?}");
        assert_eq!(*m, m.to_ascii_uppercase());
        assert!(!caps.auth[..i].contains(m), "{m:?} twice");
        assert!(caps.offers_auth(&m.to_ascii_lowercase()));
        assert!(text.to_ascii_uppercase().contains(m.as_str()));
    }
    if !caps.auth.is_empty() {
        assert!(offered.iter().any(|words| words.first().is_some_and(|w| {
            let w = w.to_ascii_uppercase();
            w == "AUTH" || w.starts_with("AUTH=")
        })));
    }
}
