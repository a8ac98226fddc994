//! Feeds arbitrary bytes to the SMTP reply parser as the client's read buffer holds them, and
//! checks the contract the session loop relies on.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postrider::Reply;
use postrider::transport::esmtp::{MAX_LINE, MAX_LINES, ReplyError, parse_reply};

fuzz_target!(|data: &[u8]| {
    // The first byte picks where the buffer is cut, as a read boundary would cut it.
    let Some((&cut, wire)) = data.split_first() else {
        return;
    };
    let whole = parse_reply(wire);
    check_reply(wire, &whole);
    check_prefixes(wire, &whole, usize::from(cut));
    if let Ok(Some((reply, _))) = &whole {
        check_render_round_trip(reply);
    }
    check_stream(wire);
});

/// A parsed reply uses at most the buffer, ends at a line end, keeps to the line limits, and
/// holds what `Reply::new` would accept.
fn check_reply(wire: &[u8], result: &Result<Option<(Reply, usize)>, ReplyError>) {
    let Ok(Some((reply, used))) = result else {
        return;
    };
    assert!(*used >= 4 && *used <= wire.len(), "used {used} of {}", wire.len());
    assert_eq!(wire[*used - 1], b'\n');
    assert!((200..600).contains(&reply.code()), "{reply:?}");
    if let Some(s) = reply.enhanced() {
        assert_eq!(u16::from(s.class()), reply.code() / 100, "{reply:?}");
    }
    assert!(Reply::new(reply.code(), reply.enhanced(), reply.text()).as_ref() == Ok(reply));
    let lines = reply.text().split('\n').count();
    assert!(lines <= MAX_LINES, "{lines} lines");
    assert!(reply.text().split('\n').all(|l| l.len() <= 3 * MAX_LINE));
    // The code, its separator and the line ends were taken off every line; an invalid byte
    // grows to U+FFFD (three bytes) at most.
    assert!(reply.text().len() <= 3 * *used);
}

/// The parser is called on a growing buffer: any prefix either asks for more bytes or gives the
/// same answer the whole buffer gives. The split point is the fuzzer's choice plus a few fixed
/// ones around the reply's end.
fn check_prefixes(
    wire: &[u8],
    whole: &Result<Option<(Reply, usize)>, ReplyError>,
    cut: usize,
) {
    let mut cuts = vec![cut * wire.len() / 256, wire.len().saturating_sub(1)];
    if let Ok(Some((_, used))) = whole {
        cuts.extend([*used, used - 1, used / 2]);
    }
    for cut in cuts {
        let cut = cut.min(wire.len());
        match parse_reply(&wire[..cut]) {
            Ok(None) => {}
            part => assert_eq!(&part, whole, "cut at {cut}"),
        }
    }
}

/// A reply sent back in wire form, with its status repeated on every line, parses to itself.
fn check_render_round_trip(reply: &Reply) {
    let lines: Vec<&str> = reply.text().split('\n').collect();
    let mut wire = String::new();
    for (i, line) in lines.iter().enumerate() {
        let sep = if i + 1 == lines.len() { ' ' } else { '-' };
        match reply.enhanced() {
            Some(s) => wire.push_str(&format!("{}{sep}{s} {line}\r\n", reply.code())),
            None => wire.push_str(&format!("{}{sep}{line}\r\n", reply.code())),
        }
    }
    if wire.split('\n').any(|l| l.len() > MAX_LINE + 1) {
        return;
    }
    let (again, used) = parse_reply(wire.as_bytes())
        .expect("a rendered reply parses")
        .expect("a rendered reply is complete");
    assert_eq!(used, wire.len());
    assert_eq!(&again, reply, "{wire:?}");
}

/// Pipelined replies in one buffer are read one after another until the buffer is used up or
/// a reply is malformed; each step makes progress.
fn check_stream(wire: &[u8]) {
    let mut rest = wire;
    for _ in 0..64 {
        match parse_reply(rest) {
            Ok(Some((_, used))) => {
                assert!(used > 0 && used <= rest.len());
                rest = &rest[used..];
            }
            Ok(None) | Err(_) => return,
        }
    }
}
