//! The message data on the wire: dot-stuffing and the terminating `CRLF.CRLF` (RFC 5321
//! §4.5.2), in chunks so a large message is never copied whole.

/// Dot-stuffs a message as it is fed in pieces.
///
/// The engine hands over CRLF-normalised bodies; a bare CR or LF that slips through is still
/// sent as CRLF, so the server and this client always agree where lines end (a mismatch is what
/// SMTP smuggling exploits). A body that does not end with CRLF gets one before the final dot.
#[derive(Debug, Clone)]
pub struct DotStuffer {
    at_line_start: bool,
    pending_cr: bool,
}

impl Default for DotStuffer {
    fn default() -> DotStuffer {
        DotStuffer::new()
    }
}

impl DotStuffer {
    /// A stuffer at the start of a message.
    pub fn new() -> DotStuffer {
        DotStuffer {
            at_line_start: true,
            pending_cr: false,
        }
    }

    /// Appends the wire form of `input` to `out`.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.reserve(input.len() + input.len() / 64 + 2);
        let mut rest = input;
        while let Some((&first, tail)) = rest.split_first() {
            if self.pending_cr {
                self.pending_cr = false;
                self.end_line(out);
                if first == b'\n' {
                    rest = tail;
                    continue;
                }
            }
            match first {
                b'\r' => {
                    self.pending_cr = true;
                    rest = tail;
                }
                b'\n' => {
                    self.end_line(out);
                    rest = tail;
                }
                _ => {
                    if self.at_line_start && first == b'.' {
                        out.push(b'.');
                    }
                    self.at_line_start = false;
                    // Copy the run of ordinary bytes up to the next line end in one go.
                    let run = memchr::memchr2(b'\r', b'\n', rest).unwrap_or(rest.len());
                    out.extend_from_slice(&rest[..run]);
                    rest = &rest[run..];
                }
            }
        }
    }

    /// Appends the end of the message: a CRLF if the body did not end with one, then `.` CRLF.
    pub fn finish(mut self, out: &mut Vec<u8>) {
        if self.pending_cr {
            self.end_line(out);
        }
        if !self.at_line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }

    fn end_line(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"\r\n");
        self.at_line_start = true;
    }
}

/// The whole wire form of a body in one buffer (for tests and small messages).
#[cfg(test)]
fn stuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    let mut s = DotStuffer::new();
    s.push(body, &mut out);
    s.finish(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What a server does: strip the final `.CRLF` and one leading dot per line.
    fn unstuff(wire: &[u8]) -> Vec<u8> {
        let body = wire.strip_suffix(b".\r\n").expect("terminated");
        let mut out = Vec::new();
        for line in body.split_inclusive(|&b| b == b'\n') {
            out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        }
        out
    }

    #[test]
    fn leading_dots_are_doubled_and_the_terminator_added() {
        assert_eq!(
            stuff(b"a\r\n.b\r\n..\r\n.\r\n"),
            b"a\r\n..b\r\n...\r\n..\r\n.\r\n"
        );
        assert_eq!(stuff(b".first line\r\n"), b"..first line\r\n.\r\n");
    }

    #[test]
    fn a_body_without_a_final_crlf_gets_one() {
        assert_eq!(stuff(b"no newline"), b"no newline\r\n.\r\n");
        assert_eq!(stuff(b""), b".\r\n");
    }

    #[test]
    fn bare_line_ends_become_crlf_so_nothing_can_be_smuggled() {
        assert_eq!(stuff(b"a\n.\nb"), b"a\r\n..\r\nb\r\n.\r\n");
        assert_eq!(stuff(b"a\r.\rb\r"), b"a\r\n..\r\nb\r\n.\r\n");
    }

    #[test]
    fn a_crlf_split_between_chunks_stays_one_line_end() {
        let mut out = Vec::new();
        let mut s = DotStuffer::new();
        s.push(b"a\r", &mut out);
        s.push(b"\n.b", &mut out);
        s.finish(&mut out);
        assert_eq!(out, b"a\r\n..b\r\n.\r\n");
    }

    proptest! {
        #[test]
        fn unstuffing_gives_back_a_crlf_body(
            lines in proptest::collection::vec("[.a-z ]{0,8}", 0..8),
            chunk in 1usize..7,
            final_crlf in any::<bool>(),
        ) {
            let mut body = lines.join("\r\n");
            if final_crlf && !body.is_empty() {
                body.push_str("\r\n");
            }
            let mut wire = Vec::new();
            let mut s = DotStuffer::new();
            for piece in body.as_bytes().chunks(chunk) {
                s.push(piece, &mut wire);
            }
            s.finish(&mut wire);
            let mut expected = body.clone().into_bytes();
            if !expected.is_empty() && !expected.ends_with(b"\r\n") {
                expected.extend_from_slice(b"\r\n");
            }
            prop_assert_eq!(unstuff(&wire), expected);
            // No line of the wire form is a lone dot except the terminator.
            let text = String::from_utf8(wire).unwrap();
            prop_assert_eq!(text.matches("\r\n.\r\n").count() + usize::from(text.starts_with(".\r\n")), 1);
        }
    }
}
