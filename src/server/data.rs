//! Reading a message sent with DATA: dot-unstuffing, the end of data, the size limit.
//!
//! Only `<CRLF>.<CRLF>` ends the data. A bare LF or bare CR around a dot (`\n.\n`,
//! `\r.\r`) is message content, so a client cannot smuggle a second message past a receiver
//! that reads the end of data differently (SMTP smuggling, CVE-2023-51764/5/6); the bare line
//! ends inside are normalised later by `Engine::submit`, and a relaying transport re-stuffs dots
//! after that.
//!
//! ```
//! use postrider::server::data::DataReader;
//! let mut reader = DataReader::new(1 << 20, b"");
//! let input = b"Subject: x\r\n\r\n..dot\r\n.\r\nQUIT\r\n";
//! let (used, done) = reader.feed(input);
//! assert!(done);
//! assert_eq!(&input[used..], b"QUIT\r\n");
//! let (message, too_big) = reader.finish();
//! assert_eq!(&message[..], b"Subject: x\r\n\r\n.dot\r\n");
//! assert!(!too_big);
//! ```

use bytes::{Bytes, BytesMut};

/// The message as DATA delivers it: dot-unstuffed, ended only by `<CRLF>.<CRLF>`, and counted
/// against the size limit (the rest of an oversized message is read and dropped).
///
/// A pure state machine over the bytes, so a buffer may end anywhere, even inside the final
/// `<CRLF>.<CRLF>`. The message begins at the start of a line.
pub struct DataReader {
    out: BytesMut,
    /// Octets of the message so far (the prefix is not counted).
    size: usize,
    prefix: usize,
    limit: usize,
    state: DataState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataState {
    /// At the start of a line.
    LineStart,
    /// A line began with a dot.
    Dot,
    /// A line began with a dot and a CR: LF ends the data.
    DotCr,
    /// Inside a line.
    Mid,
    /// After a CR inside a line.
    Cr,
}

impl DataReader {
    /// A reader for a message of at most `limit` octets, with `prefix` (the `Received:` field
    /// this server adds) before it; the prefix does not count against the limit.
    pub fn new(limit: usize, prefix: &[u8]) -> DataReader {
        let mut out = BytesMut::with_capacity(prefix.len() + 8 * 1024);
        out.extend_from_slice(prefix);
        DataReader {
            out,
            size: 0,
            prefix: prefix.len(),
            limit,
            state: DataState::LineStart,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        self.size += bytes.len();
        if self.size <= self.limit {
            self.out.extend_from_slice(bytes);
        }
    }

    /// Takes what it can from `input`: how many octets it used, and whether the end of data
    /// was among them (nothing after the final dot's LF is used).
    pub fn feed(&mut self, input: &[u8]) -> (usize, bool) {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                DataState::Mid => {
                    // The common case: copy up to the next CR in one go.
                    match memchr::memchr(b'\r', &input[i..]) {
                        Some(n) => {
                            self.push(&input[i..=i + n]);
                            i += n + 1;
                            self.state = DataState::Cr;
                        }
                        None => {
                            self.push(&input[i..]);
                            i = input.len();
                        }
                    }
                    continue;
                }
                DataState::LineStart if b == b'.' => self.state = DataState::Dot,
                DataState::LineStart => {
                    self.state = DataState::Mid;
                    continue;
                }
                // A stuffed dot: drop it, keep the rest of the line.
                DataState::Dot if b == b'\r' => self.state = DataState::DotCr,
                DataState::Dot => {
                    self.state = DataState::Mid;
                    continue;
                }
                DataState::DotCr if b == b'\n' => return (i + 1, true),
                // ".\r" not followed by LF: the dot was stuffed, the CR is data.
                DataState::DotCr => {
                    self.push(b"\r");
                    self.state = DataState::Cr;
                    continue;
                }
                DataState::Cr => {
                    match b {
                        b'\n' => self.state = DataState::LineStart,
                        b'\r' => {}
                        _ => self.state = DataState::Mid,
                    }
                    self.push(&[b]);
                }
            }
            i += 1;
        }
        (i, false)
    }

    /// The message (after the prefix) and whether it was over the limit. The final CRLF before
    /// the dot belongs to the last line and is kept.
    pub fn finish(self) -> (Bytes, bool) {
        let too_big = self.size > self.limit;
        debug_assert!(too_big || self.out.len() == self.prefix + self.size);
        (self.out.freeze(), too_big)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(chunks: &[&[u8]]) -> (Vec<u8>, usize, bool) {
        let mut r = DataReader::new(1 << 20, b"");
        let mut used_total = 0;
        for chunk in chunks {
            let (used, done) = r.feed(chunk);
            used_total += used;
            if done {
                let (body, _) = r.finish();
                return (body.to_vec(), used_total, true);
            }
        }
        let (body, _) = r.finish();
        (body.to_vec(), used_total, false)
    }

    #[test]
    fn data_ends_at_the_lone_dot_and_leading_dots_are_unstuffed() {
        let input = b"Subject: x\r\n\r\n..dot\r\n.\r\nQUIT\r\n";
        let (body, used, done) = read_all(&[input]);
        assert!(done);
        assert_eq!(body, b"Subject: x\r\n\r\n.dot\r\n");
        assert_eq!(&input[used..], b"QUIT\r\n");
    }

    #[test]
    fn the_same_message_split_anywhere_reads_the_same() {
        let input = b"a\r\n..b\r\n.c\r\r\n\r.\r\nx\r\n.\r\n";
        let (whole, _, _) = read_all(&[input]);
        for cut in 0..input.len() {
            for cut2 in cut..input.len() {
                let (body, used, done) =
                    read_all(&[&input[..cut], &input[cut..cut2], &input[cut2..]]);
                assert!(done, "cuts {cut} {cut2}");
                assert_eq!(body, whole, "cuts {cut} {cut2}");
                assert_eq!(used, input.len());
            }
        }
    }

    #[test]
    fn a_bare_lf_dot_does_not_end_the_data() {
        // SMTP smuggling: "\n.\n" or "\r.\r" must not end the message.
        let input = b"one\n.\nMAIL FROM:<evil@x>\r\n\r.\rtwo\r\n.\r\n";
        let (body, used, done) = read_all(&[input]);
        assert!(done);
        assert_eq!(used, input.len());
        assert!(body.windows(10).any(|w| w == b"MAIL FROM:"), "{body:?}");
    }

    #[test]
    fn an_empty_message_is_just_the_dot() {
        let (body, used, done) = read_all(&[b".\r\n"]);
        assert!(done);
        assert_eq!(used, 3);
        assert!(body.is_empty());
    }

    #[test]
    fn an_oversized_message_is_read_to_its_end_and_flagged() {
        let mut r = DataReader::new(10, b"Received: x\r\n");
        let (_, done) = r.feed(b"0123456789abcdef\r\n.\r\n");
        assert!(done);
        let (body, too_big) = r.finish();
        assert!(too_big);
        assert!(body.len() <= 13 + 10);
    }
}
