//! The header section of a message as bytes: where each field starts and ends, so a field can
//! be read (unfolded) or removed while every other byte stays as it was.

use std::ops::Range;

/// How lines end in a message: the convention of its first line (CRLF when it has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Newline {
    /// `\r\n`, as on the wire.
    Crlf,
    /// `\n`, as programs usually write to `sendmail`.
    Lf,
}

impl Newline {
    /// The line ending's bytes.
    pub fn as_bytes(self) -> &'static [u8] {
        match self {
            Newline::Crlf => b"\r\n",
            Newline::Lf => b"\n",
        }
    }

    /// The convention of `message`'s first line.
    pub fn detect(message: &[u8]) -> Newline {
        match message.iter().position(|&b| b == b'\n') {
            Some(i) if i == 0 || message[i - 1] != b'\r' => Newline::Lf,
            _ => Newline::Crlf,
        }
    }
}

/// One header field: its name and where it lies in the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderField {
    name: String,
    /// The whole field, folded lines and final line ending included.
    span: Range<usize>,
    /// The value: after the colon, up to (not including) the final line ending.
    value: Range<usize>,
    line: usize,
}

impl HeaderField {
    /// The field name as written (without trailing white space before the colon).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True when the name is `name`, compared case-insensitively (RFC 5322 §1.2.2).
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }

    /// The line of the message the field starts on (from 1).
    pub fn line(&self) -> usize {
        self.line
    }

    /// Where the field lies in the message, folded lines and final line ending included.
    pub fn span(&self) -> Range<usize> {
        self.span.clone()
    }

    /// The raw value (after the colon, folding kept) within `message`.
    pub fn raw_value<'m>(&self, message: &'m [u8]) -> &'m [u8] {
        &message[self.value.clone()]
    }

    /// The value unfolded (RFC 5322 §2.2.3: every line break followed by white space is
    /// removed) and trimmed.
    pub fn unfolded_value(&self, message: &[u8]) -> Vec<u8> {
        let raw = self.raw_value(message);
        let mut out = Vec::with_capacity(raw.len());
        let mut i = 0;
        while i < raw.len() {
            match raw[i] {
                b'\r' if raw.get(i + 1) == Some(&b'\n') => i += 2,
                b'\n' => i += 1,
                b => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        let start = out.iter().position(|b| !is_wsp(*b)).unwrap_or(out.len());
        let end = out
            .iter()
            .rposition(|b| !is_wsp(*b))
            .map_or(start, |e| e + 1);
        out[start..end].to_vec()
    }
}

/// Why the header section ended where it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderEnd {
    /// An empty line separates the header section from the body (RFC 5322 §2.1).
    EmptyLine,
    /// The message ends within or right after the header section: there is no body.
    EndOfMessage,
    /// A line that is neither a field (`Name: value`) nor a folded continuation; it and what
    /// follows are the body. sendmail and Postfix read such a message this way too.
    NotAField {
        /// The line (from 1).
        line: usize,
        /// Its text, lossily decoded and cut at 60 characters, for messages.
        text: String,
    },
}

/// A message split into its header fields and its body.
///
/// Parsing never fails: every input has a (possibly empty) header section and a (possibly
/// empty) body. An mbox `From ` line is not a field (see [`strip_mbox_from_line`]).
///
/// ```
/// use postrider::message::{HeaderEnd, HeaderSection};
/// let msg = b"Subject: a long\r\n subject\r\nTo: bob@example.com\r\n\r\nHello\r\n";
/// let h = HeaderSection::parse(msg);
/// assert_eq!(h.fields().len(), 2);
/// assert_eq!(h.fields()[0].unfolded_value(msg), b"a long subject");
/// assert_eq!(h.end(), &HeaderEnd::EmptyLine);
/// assert_eq!(&msg[h.body_start()..], b"Hello\r\n");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderSection {
    fields: Vec<HeaderField>,
    /// Where the header fields end: the empty line, the first body line, or the end.
    fields_end: usize,
    body_start: usize,
    end: HeaderEnd,
    newline: Newline,
}

impl HeaderSection {
    /// Splits `message` into header fields and body.
    pub fn parse(message: &[u8]) -> HeaderSection {
        let newline = Newline::detect(message);
        let mut pos = 0;
        let mut line_no = 1;
        let mut fields: Vec<HeaderField> = Vec::new();
        let (fields_end, body_start, end) = loop {
            if pos >= message.len() {
                break (message.len(), message.len(), HeaderEnd::EndOfMessage);
            }
            let next = line_end(message, pos);
            let content = strip_line_ending(&message[pos..next]);
            if content.is_empty() {
                break (pos, next, HeaderEnd::EmptyLine);
            }
            if is_wsp(content[0]) {
                if let Some(last) = fields.last_mut() {
                    last.span.end = next;
                    last.value.end = pos + content.len();
                    pos = next;
                    line_no += 1;
                    continue;
                }
            } else if let Some((name, colon)) = field_name(content) {
                fields.push(HeaderField {
                    name,
                    span: pos..next,
                    value: pos + colon + 1..pos + content.len(),
                    line: line_no,
                });
                pos = next;
                line_no += 1;
                continue;
            }
            let text: String = String::from_utf8_lossy(content).chars().take(60).collect();
            break (
                pos,
                pos,
                HeaderEnd::NotAField {
                    line: line_no,
                    text,
                },
            );
        };
        HeaderSection {
            fields,
            fields_end,
            body_start,
            end,
            newline,
        }
    }

    /// The fields in message order.
    pub fn fields(&self) -> &[HeaderField] {
        &self.fields
    }

    /// The fields named `name` (case-insensitively), in message order.
    pub fn named<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s HeaderField> + 's {
        self.fields.iter().filter(move |f| f.is(name))
    }

    /// True when a field named `name` is present.
    pub fn has(&self, name: &str) -> bool {
        self.named(name).next().is_some()
    }

    /// Where the header fields end: at the empty line, at the first body line, or at the end
    /// of the message.
    pub fn fields_end(&self) -> usize {
        self.fields_end
    }

    /// Where the body begins (after the empty line, if there is one).
    pub fn body_start(&self) -> usize {
        self.body_start
    }

    /// Why the header section ended.
    pub fn end(&self) -> &HeaderEnd {
        &self.end
    }

    /// The message's line-ending convention.
    pub fn newline(&self) -> Newline {
        self.newline
    }
}

pub(crate) fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// The index just past the next `\n` at or after `from`, or the end of `message`.
fn line_end(message: &[u8], from: usize) -> usize {
    message[from..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(message.len(), |i| from + i + 1)
}

fn strip_line_ending(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// `Name:` at the start of a line: the name (printable ASCII but the colon, RFC 5322 §3.6.8;
/// white space before the colon is obsolete syntax, §4.5, and accepted) and the colon's index.
fn field_name(content: &[u8]) -> Option<(String, usize)> {
    let colon = content.iter().position(|&b| b == b':')?;
    let name = &content[..colon];
    let trimmed_len = name.iter().rposition(|b| !is_wsp(*b)).map_or(0, |i| i + 1);
    let name = &name[..trimmed_len];
    if name.is_empty() || !name.iter().all(|&b| (33..=126).contains(&b)) {
        return None;
    }
    // The bytes are printable ASCII, hence UTF-8.
    Some((String::from_utf8_lossy(name).into_owned(), colon))
}

/// Drops a leading mbox separator line (`From sender date`, not the field `From:` nor the
/// obsolete `From :`), as sendmail does with its input. Only a submission agent's input can
/// start with one; the header functions do not look for it, so a body line that comes first
/// once a `Bcc:` field is gone is never mistaken for one.
///
/// ```
/// use postrider::message::strip_mbox_from_line;
/// assert_eq!(strip_mbox_from_line(b"From a@b Mon Apr 12 11:21:36 2016\nSubject: x\n"), b"Subject: x\n");
/// assert_eq!(strip_mbox_from_line(b"From : a@b\n"), b"From : a@b\n");
/// ```
pub fn strip_mbox_from_line(message: &[u8]) -> &[u8] {
    let Some(rest) = message.strip_prefix(b"From ") else {
        return message;
    };
    let first_line = &rest[..rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len())];
    let after_space = first_line
        .iter()
        .position(|b| !is_wsp(*b))
        .map(|i| first_line[i]);
    if after_space == Some(b':') {
        return message;
    }
    &message[line_end(message, 0)..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(h: &HeaderSection) -> Vec<&str> {
        h.fields().iter().map(|f| f.name()).collect()
    }

    #[test]
    fn folded_fields_are_one_field_and_unfold_to_one_line() {
        let msg = b"To: a@example.com,\r\n\tb@example.com\r\nSubject: hi\r\n\r\nbody";
        let h = HeaderSection::parse(msg);
        assert_eq!(names(&h), ["To", "Subject"]);
        assert_eq!(
            h.fields()[0].unfolded_value(msg),
            b"a@example.com,\tb@example.com"
        );
        assert_eq!(
            &msg[h.fields()[0].span()],
            b"To: a@example.com,\r\n\tb@example.com\r\n"
        );
        assert_eq!(h.fields()[1].line(), 3);
        assert_eq!(&msg[h.body_start()..], b"body");
        assert_eq!(h.newline(), Newline::Crlf);
    }

    #[test]
    fn names_compare_case_insensitively_and_may_have_space_before_the_colon() {
        let msg = b"tO : x@example.com\nBCC: y@example.com\n\n";
        let h = HeaderSection::parse(msg);
        assert!(h.has("To") && h.has("bcc"));
        assert_eq!(h.fields()[0].name(), "tO");
        assert_eq!(h.newline(), Newline::Lf);
    }

    #[test]
    fn a_line_that_is_not_a_field_starts_the_body() {
        let msg = b"Subject: hi\nhello world\nmore\n";
        let h = HeaderSection::parse(msg);
        assert_eq!(names(&h), ["Subject"]);
        assert_eq!(
            h.end(),
            &HeaderEnd::NotAField {
                line: 2,
                text: "hello world".into()
            }
        );
        assert_eq!(h.fields_end(), h.body_start());
        assert_eq!(&msg[h.body_start()..], b"hello world\nmore\n");
    }

    #[test]
    fn a_message_without_headers_is_all_body() {
        for msg in [&b"hello\n"[..], b" indented first line\n", b"no colon here"] {
            let h = HeaderSection::parse(msg);
            assert!(h.fields().is_empty(), "{msg:?}");
            assert_eq!(h.body_start(), 0);
        }
        let h = HeaderSection::parse(b"");
        assert_eq!(h.end(), &HeaderEnd::EndOfMessage);
    }

    #[test]
    fn a_message_of_headers_only_ends_at_the_end() {
        let msg = b"Subject: no newline";
        let h = HeaderSection::parse(msg);
        assert_eq!(h.end(), &HeaderEnd::EndOfMessage);
        assert_eq!(h.fields()[0].unfolded_value(msg), b"no newline");
        assert_eq!(h.fields_end(), msg.len());
    }

    #[test]
    fn an_mbox_from_line_is_stripped_only_on_request_and_an_obsolete_from_field_never() {
        let msg = b"From alice@example.com Mon Apr 12 11:21:36 2016\nFrom: alice@example.com\n\n";
        let h = HeaderSection::parse(msg);
        assert!(
            h.fields().is_empty(),
            "not a field: the header ends at line 1"
        );
        let stripped = strip_mbox_from_line(msg);
        assert_eq!(stripped, b"From: alice@example.com\n\n");
        assert_eq!(names(&HeaderSection::parse(stripped)), ["From"]);
        let obsolete = b"From : alice@example.com\n\n";
        assert_eq!(strip_mbox_from_line(obsolete), obsolete);
        assert_eq!(names(&HeaderSection::parse(obsolete)), ["From"]);
    }

    #[test]
    fn a_name_with_a_space_or_control_character_is_not_a_field() {
        let h = HeaderSection::parse(b"X Bad: 1\n\n");
        assert!(h.fields().is_empty());
        let h = HeaderSection::parse(b"X\x01: 1\n\n");
        assert!(h.fields().is_empty());
    }
}
