//! The SMTP reply parser: a pure function over the bytes received so far.
//!
//! Written here rather than taken from `smtp-proto` (see DESIGN-NOTES.md, ESMTP): replies map
//! straight onto [`Reply`], enhanced status codes keep their full 1–3 digit range, and the
//! parser needs no state between calls, so it can be fuzzed as is.

use crate::status::{EnhancedStatus, Reply};

/// The longest reply line accepted, without its CRLF. RFC 5321 §4.5.3.1.5 allows 512 octets;
/// real servers send longer explanations, so there is headroom.
pub const MAX_LINE: usize = 4096;

/// The most lines one (multi-line) reply may have.
pub const MAX_LINES: usize = 256;

/// Why bytes from the server are not an SMTP reply. Every variant is a protocol violation by
/// the server: delivery through it is retried later (4.5.0).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// A line that does not start with a code from 200 to 599 followed by space, `-` or the end
    /// of the line.
    #[error("malformed reply line {line:?} (expected a code 200-599 and a space or '-')")]
    BadLine {
        /// The line, lossily decoded and cut to 100 characters.
        line: String,
    },
    /// The lines of a multi-line reply carry different codes.
    #[error("multi-line reply changes its code from {first} to {then}")]
    CodeChanged {
        /// The code of the first line.
        first: u16,
        /// The code of the line that differs.
        then: u16,
    },
    /// A line longer than [`MAX_LINE`].
    #[error("reply line longer than {MAX_LINE} octets")]
    LineTooLong,
    /// More than [`MAX_LINES`] lines in one reply.
    #[error("reply of more than {MAX_LINES} lines")]
    TooManyLines,
}

/// Parses one complete reply from the start of `buf`.
///
/// Returns `Ok(None)` when `buf` does not yet hold a complete reply (read more and call again),
/// or the reply and the number of bytes it used. Lines end in CRLF; a bare LF is tolerated. A
/// leading enhanced status code (RFC 2034) whose class agrees with the reply code is taken out
/// of every line's text; one that disagrees stays part of the text.
///
/// ```
/// use postrider::transport::esmtp::parse_reply;
/// let (reply, used) = parse_reply(b"250-first\r\n250 2.1.0 second\r\nrest")?.unwrap();
/// assert_eq!(reply.code(), 250);
/// assert_eq!(reply.text(), "first\n2.1.0 second");
/// assert_eq!(used, 29);
/// # Ok::<(), postrider::transport::esmtp::ReplyError>(())
/// ```
pub fn parse_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, ReplyError> {
    let mut pos = 0;
    let mut code = None;
    let mut lines: Vec<&[u8]> = Vec::new();
    loop {
        let rest = &buf[pos..];
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            if rest.len() > MAX_LINE + 1 {
                return Err(ReplyError::LineTooLong);
            }
            return Ok(None);
        };
        let raw = &rest[..nl];
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.len() > MAX_LINE {
            return Err(ReplyError::LineTooLong);
        }
        pos += nl + 1;
        let (this_code, last, text) = split_line(line)?;
        match code {
            None => code = Some(this_code),
            Some(first) if first != this_code => {
                return Err(ReplyError::CodeChanged {
                    first,
                    then: this_code,
                });
            }
            Some(_) => {}
        }
        lines.push(text);
        if lines.len() > MAX_LINES {
            return Err(ReplyError::TooManyLines);
        }
        if last {
            break;
        }
    }
    let code = code.unwrap_or_default();
    let status = lines
        .first()
        .and_then(|l| leading_status(l))
        .filter(|(s, _)| u16::from(s.class()) == code / 100)
        .map(|(s, _)| s);
    let mut text = String::new();
    for (i, line) in lines.iter().enumerate() {
        if i > 0 {
            text.push('\n');
        }
        let body = match (status, leading_status(line)) {
            (Some(s), Some((ls, len))) if ls == s => &line[len..],
            _ => line,
        };
        text.push_str(&String::from_utf8_lossy(body));
    }
    let reply = Reply::new(code, status, text).map_err(|_| bad_line(lines[0]))?;
    Ok(Some((reply, pos)))
}

/// Splits `250-text` into the code, whether it is the last line, and the text.
fn split_line(line: &[u8]) -> Result<(u16, bool, &[u8]), ReplyError> {
    let digits = line.get(..3).ok_or_else(|| bad_line(line))?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return Err(bad_line(line));
    }
    let code = digits
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    if !(200..600).contains(&code) {
        return Err(bad_line(line));
    }
    match line.get(3) {
        None => Ok((code, true, &[])),
        Some(b' ') => Ok((code, true, &line[4..])),
        Some(b'-') => Ok((code, false, &line[4..])),
        Some(_) => Err(bad_line(line)),
    }
}

/// An enhanced status code at the start of a line's text, followed by a space or the end, and
/// how many bytes to skip to reach the rest of the text.
fn leading_status(text: &[u8]) -> Option<(EnhancedStatus, usize)> {
    let end = text.iter().position(|&b| b == b' ').unwrap_or(text.len());
    let token = std::str::from_utf8(&text[..end]).ok()?;
    let status = EnhancedStatus::parse(token).ok()?;
    Some((status, (end + 1).min(text.len())))
}

fn bad_line(line: &[u8]) -> ReplyError {
    ReplyError::BadLine {
        line: String::from_utf8_lossy(line).chars().take(100).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(s: &str) -> Reply {
        let (r, used) = parse_reply(s.as_bytes()).unwrap().unwrap();
        assert_eq!(used, s.len(), "the whole input is one reply");
        r
    }

    #[test]
    fn a_single_line_reply_parses_with_its_enhanced_status() {
        let r = parse("250 2.1.5 Ok\r\n");
        assert_eq!(r.code(), 250);
        assert_eq!(r.enhanced(), Some(EnhancedStatus::new(2, 1, 5)));
        assert_eq!(r.text(), "Ok");
    }

    #[test]
    fn a_multi_line_reply_drops_the_repeated_status_from_every_line() {
        let r = parse("550-5.7.1 Our policy\r\n550-5.7.1 says no\r\n550 5.7.1 see docs\r\n");
        assert_eq!(r.enhanced(), Some(EnhancedStatus::new(5, 7, 1)));
        assert_eq!(r.text(), "Our policy\nsays no\nsee docs");
    }

    #[test]
    fn a_status_whose_class_disagrees_with_the_code_stays_in_the_text() {
        let r = parse("550 4.1.1 odd\r\n");
        assert_eq!(r.enhanced(), None);
        assert_eq!(r.text(), "4.1.1 odd");
    }

    #[test]
    fn three_digit_subjects_and_details_are_kept() {
        let r = parse("451 4.4.24 later\r\n");
        assert_eq!(r.enhanced().unwrap().to_string(), "4.4.24");
    }

    #[test]
    fn a_bare_code_and_bare_lf_are_tolerated() {
        let (r, used) = parse_reply(b"220\n").unwrap().unwrap();
        assert_eq!((r.code(), r.text(), used), (220, "", 4));
        let r = parse("250 \r\n");
        assert_eq!(r.text(), "");
    }

    #[test]
    fn an_incomplete_reply_asks_for_more_bytes() {
        assert_eq!(parse_reply(b"").unwrap(), None);
        assert_eq!(parse_reply(b"250-a\r\n250 b").unwrap(), None);
        assert_eq!(parse_reply(b"25").unwrap(), None);
    }

    #[test]
    fn only_the_first_reply_is_consumed() {
        let (r, used) = parse_reply(b"250 a\r\n354 go\r\n").unwrap().unwrap();
        assert_eq!((r.code(), used), (250, 7));
    }

    #[test]
    fn garbage_and_out_of_range_codes_are_refused() {
        for bad in [
            "hello\r\n",
            "25x ok\r\n",
            "199 ok\r\n",
            "600 ok\r\n",
            "250_ok\r\n",
            "\r\n",
        ] {
            assert!(
                matches!(parse_reply(bad.as_bytes()), Err(ReplyError::BadLine { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_code_change_inside_a_multi_line_reply_is_refused() {
        assert_eq!(
            parse_reply(b"250-a\r\n251 b\r\n"),
            Err(ReplyError::CodeChanged {
                first: 250,
                then: 251
            })
        );
    }

    #[test]
    fn endless_lines_and_endless_replies_are_refused() {
        let long = vec![b'x'; MAX_LINE + 10];
        assert_eq!(parse_reply(&long), Err(ReplyError::LineTooLong));
        let many = "250-x\r\n".repeat(MAX_LINES + 1);
        assert_eq!(parse_reply(many.as_bytes()), Err(ReplyError::TooManyLines));
    }

    #[test]
    fn invalid_utf8_in_the_text_is_replaced_not_refused() {
        let (r, _) = parse_reply(b"550 caf\xe9\r\n").unwrap().unwrap();
        assert_eq!(r.text(), "caf\u{fffd}");
    }

    proptest! {
        #[test]
        fn the_parser_never_panics_and_never_overreads(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(Some((_, used))) = parse_reply(&bytes) {
                prop_assert!(used <= bytes.len());
            }
        }

        #[test]
        fn a_reply_split_anywhere_parses_the_same_once_complete(
            lines in proptest::collection::vec("[ -~]{0,40}", 1..5),
            code in 200u16..600,
            cut in 0usize..400,
        ) {
            let mut wire = String::new();
            for (i, l) in lines.iter().enumerate() {
                let sep = if i + 1 == lines.len() { ' ' } else { '-' };
                wire.push_str(&format!("{code}{sep}{l}\r\n"));
            }
            let cut = cut.min(wire.len());
            let whole = parse_reply(wire.as_bytes()).unwrap().unwrap();
            prop_assert_eq!(whole.1, wire.len());
            prop_assert_eq!(whole.0.code(), code);
            match parse_reply(&wire.as_bytes()[..cut]).unwrap() {
                None => prop_assert!(cut < wire.len()),
                Some(part) => prop_assert_eq!(part, whole),
            }
        }
    }
}
