//! Making a message fit a server that offers less: 8-bit MIME parts re-encoded for a server
//! without 8BITMIME (RFC 6152 §3, as Postfix converts them), and lines longer than SMTP allows
//! (998 octets, RFC 5321 §4.5.3.1.6) made conformant for every server.
//!
//! The conversion is lossless for every MIME leaf part: a text part (or a part without a
//! `Content-Type`, which is text) becomes quoted-printable, any other type base64, and
//! `Content-Transfer-Encoding` says so; decoding gives back the octets the part had.
//! `multipart/*` and `message/rfc822` are walked into rather than encoded, since RFC 2045
//! §6.4 allows them only identity encodings. A part already in quoted-printable or base64
//! that holds raw 8-bit octets or long lines (both illegal) is repaired without changing its
//! decoding. Only the preamble and epilogue of a multipart, which readers never show, lose
//! their 8-bit octets (`?`). Long lines are re-encoded rather than broken as Postfix's
//! `smtp_line_length_limit` breaks them, because breaking changes the content (a CSV record,
//! a base64 blob pasted into a text part) and re-encoding does not.
//!
//! Header fields cannot be re-encoded without knowing their grammar, so a field with 8-bit
//! octets is an error when the server takes neither 8BITMIME nor SMTPUTF8; an over-long
//! header line is folded before white space already there (lossless once unfolded), or with
//! an inserted space where the line has none (Postfix's way).
//!
//! ```
//! use postrider::message::{Target, downgrade};
//! let msg = "Content-Type: text/plain; charset=utf-8\r\n\r\nCaf\u{e9}\r\n".as_bytes();
//! let out = downgrade(msg, Target::SEVEN_BIT)?;
//! // RFC 2045 §4: a message that now has a transfer encoding says it is MIME.
//! assert_eq!(
//!     &out[..],
//!     &b"Content-Type: text/plain; charset=utf-8\r\nMIME-Version: 1.0\r\n\
//!        Content-Transfer-Encoding: quoted-printable\r\n\r\nCaf=C3=A9\r\n"[..]
//! );
//! # Ok::<(), postrider::message::DowngradeError>(())
//! ```

use std::borrow::Cow;

use super::encode::{base64_lines, quoted_printable, repair_base64, repair_quoted_printable};
use super::header::{HeaderSection, is_wsp};
use super::mime::{ContentType, TransferEncoding};
use crate::status::{EnhancedStatus, Severity};

/// The longest line SMTP carries, without its CRLF (RFC 5321 §4.5.3.1.6).
pub const MAX_LINE: usize = 998;

/// How deep `multipart` and `message/rfc822` parts may nest before the message is refused
/// (Postfix's `mime_nesting_limit` is 100; real mail rarely goes past 5).
pub const MAX_DEPTH: usize = 32;

/// What the receiving server takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// 8-bit body octets (the server offers 8BITMIME).
    pub eight_bit: bool,
    /// 8-bit octets in header fields (the server offers SMTPUTF8, RFC 6532).
    pub utf8_headers: bool,
}

impl Target {
    /// A server that offers neither 8BITMIME nor SMTPUTF8.
    pub const SEVEN_BIT: Target = Target {
        eight_bit: false,
        utf8_headers: false,
    };
}

/// Why a message cannot be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DowngradeError {
    /// A header field holds 8-bit octets and the server takes neither 8BITMIME nor SMTPUTF8.
    #[error(
        "the header field {field} on line {line} holds 8-bit characters, and there is no 7-bit \
         form of a raw header field; the server must offer SMTPUTF8 or 8BITMIME"
    )]
    EightBitHeader {
        /// The field's name as written.
        field: String,
        /// The line of the message it starts on (from 1).
        line: usize,
    },
    /// MIME parts nest deeper than [`MAX_DEPTH`].
    #[error(
        "MIME parts are nested more than {MAX_DEPTH} deep (at line {line}); the message cannot \
         be converted to 7 bits"
    )]
    TooDeep {
        /// The line where the part that is too deep starts.
        line: usize,
    },
}

impl DowngradeError {
    /// Always permanent: the same message meets the same server again.
    pub fn severity(&self) -> Severity {
        Severity::Permanent
    }

    /// 5.6.3, "conversion required but not supported" (RFC 3463).
    pub fn status(&self) -> EnhancedStatus {
        EnhancedStatus::new(5, 6, 3)
    }
}

/// True when [`downgrade`] would change `message` for `target`: it has 8-bit octets the
/// target does not take, or a line longer than [`MAX_LINE`]. Cheap (two scans that run many
/// octets at a time); the transport asks it for every message.
pub fn needs_downgrade(message: &[u8], target: Target) -> bool {
    (!target.eight_bit && !message.is_ascii()) || has_long_line(message)
}

/// `message` made fit for `target`; borrowed when it already is.
///
/// For a server without 8BITMIME, every MIME leaf part with 8-bit octets is re-encoded
/// (`text/*` and parts without a type as quoted-printable, others as base64, so decoding gives
/// the same octets) and its `Content-Transfer-Encoding` rewritten; `multipart/*` and
/// `message/rfc822` are walked into. For every server, a part with a line over [`MAX_LINE`]
/// octets is re-encoded the same way and over-long header lines are folded. A header field
/// with 8-bit octets is an error when the server takes neither 8BITMIME nor SMTPUTF8.
pub fn downgrade(message: &[u8], target: Target) -> Result<Cow<'_, [u8]>, DowngradeError> {
    if !needs_downgrade(message, target) {
        return Ok(Cow::Borrowed(message));
    }
    let c = Converter { message, target };
    let mut out = Vec::with_capacity(message.len() + message.len() / 3 + 64);
    c.entity(message, Default::Text, true, 0, &mut out)?;
    Ok(Cow::Owned(out))
}

/// True when some line (without its line ending) is longer than [`MAX_LINE`].
pub fn has_long_line(bytes: &[u8]) -> bool {
    let mut start = 0;
    for nl in memchr::memchr_iter(b'\n', bytes) {
        let end = if nl > start && bytes[nl - 1] == b'\r' {
            nl - 1
        } else {
            nl
        };
        if end - start > MAX_LINE {
            return true;
        }
        start = nl + 1;
    }
    bytes.len() - start > MAX_LINE
}

/// The type a part has when it says none (RFC 2046 §5.1.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Default {
    Text,
    Message,
}

struct Converter<'m> {
    message: &'m [u8],
    target: Target,
}

/// What to do with a body, and the header changes that go with it.
enum Plan<'a> {
    /// Walk into the parts of a multipart.
    Multipart { boundary: &'a str, digest: bool },
    /// Walk into an encapsulated message.
    Message,
    /// Encode the octets as quoted-printable (text) or base64.
    Encode { text: bool },
    /// Repair a quoted-printable body.
    RepairQp,
    /// Repair a base64 body.
    RepairBase64,
}

impl Converter<'_> {
    /// The line of the whole message that `at` (a sub-slice of it) starts on.
    fn line_of(&self, at: &[u8]) -> usize {
        let offset = (at.as_ptr() as usize).saturating_sub(self.message.as_ptr() as usize);
        let offset = offset.min(self.message.len());
        1 + memchr::memchr_iter(b'\n', &self.message[..offset]).count()
    }

    fn entity(
        &self,
        part: &[u8],
        default: Default,
        top: bool,
        depth: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), DowngradeError> {
        if !needs_downgrade(part, self.target) {
            out.extend_from_slice(part);
            return Ok(());
        }
        if depth > MAX_DEPTH {
            return Err(DowngradeError::TooDeep {
                line: self.line_of(part),
            });
        }
        let h = HeaderSection::parse(part);
        let nl = h.newline().as_bytes();
        if !self.target.eight_bit && !self.target.utf8_headers {
            for f in h.fields() {
                if !part[f.span()].is_ascii() {
                    return Err(DowngradeError::EightBitHeader {
                        field: f.name().to_string(),
                        line: self.line_of(&part[f.span()]),
                    });
                }
            }
        }
        let separator = &part[h.fields_end()..h.body_start()];
        let body = &part[h.body_start()..];
        let content_type = h
            .named("Content-Type")
            .next()
            .and_then(|f| ContentType::parse(&f.unfolded_value(part)));
        let has_content_type = content_type.is_some();
        let content_type = content_type.unwrap_or_else(|| match default {
            Default::Text => ContentType::default_text(),
            Default::Message => ContentType::default_digest_part(),
        });
        let encoding = h
            .named("Content-Transfer-Encoding")
            .next()
            .map_or(TransferEncoding::SevenBit, |f| {
                TransferEncoding::parse(&f.unfolded_value(part))
            });

        if !needs_downgrade(body, self.target) {
            write_fields(part, &h, nl, None, &[], out);
            out.extend_from_slice(separator);
            out.extend_from_slice(body);
            return Ok(());
        }

        let boundary = content_type.param("boundary").filter(|b| is_boundary(b));
        let plan = match &encoding {
            e if e.is_identity() && content_type.is_multipart() && boundary.is_some() => {
                Plan::Multipart {
                    boundary: boundary.unwrap_or_default(),
                    digest: content_type.subtype == "digest",
                }
            }
            e if e.is_identity() && content_type.is_message() => Plan::Message,
            TransferEncoding::QuotedPrintable => Plan::RepairQp,
            TransferEncoding::Base64 => Plan::RepairBase64,
            _ => Plan::Encode {
                text: content_type.is_text(),
            },
        };

        let mut new_body = Vec::with_capacity(body.len() + body.len() / 3 + 16);
        let mut plan = plan;
        if let Plan::Multipart { boundary, digest } = plan
            && !self.multipart(body, boundary, digest, depth, &mut new_body)?
        {
            // No delimiter line at all: not a multipart a reader can split; its octets are
            // kept by encoding them.
            new_body.clear();
            plan = Plan::Encode { text: true };
        }

        // The Content-Transfer-Encoding the part ends up with (None: keep the field as it is).
        let mut cte: Option<&str> = None;
        let mut added: Vec<Vec<u8>> = Vec::new();
        match plan {
            Plan::Multipart { .. } | Plan::Message => {
                if let Plan::Message = plan {
                    // The encapsulated message is a message of its own: it gets MIME-Version
                    // if its body has to be encoded.
                    self.entity(body, Default::Text, true, depth + 1, &mut new_body)?;
                }
                if !self.target.eight_bit
                    && matches!(
                        encoding,
                        TransferEncoding::EightBit | TransferEncoding::Binary
                    )
                {
                    cte = Some("7bit");
                }
            }
            Plan::Encode { text } => {
                let name = if text {
                    new_body = quoted_printable(body);
                    "quoted-printable"
                } else {
                    new_body = base64_lines(body);
                    "base64"
                };
                if !has_content_type && !body.is_ascii() {
                    let charset = if std::str::from_utf8(body).is_ok() {
                        "utf-8"
                    } else {
                        // RFC 1428's name for octets of no known character set.
                        "unknown-8bit"
                    };
                    added.push(field_line(
                        "Content-Type",
                        &format!("text/plain; charset={charset}"),
                        nl,
                    ));
                }
                if top && !h.has("MIME-Version") {
                    added.push(field_line("MIME-Version", "1.0", nl));
                }
                if h.has("Content-Transfer-Encoding") {
                    cte = Some(name);
                } else {
                    added.push(field_line("Content-Transfer-Encoding", name, nl));
                }
            }
            Plan::RepairQp => new_body = repair_quoted_printable(body),
            Plan::RepairBase64 => new_body = repair_base64(body),
        }

        write_fields(part, &h, nl, cte, &added, out);
        out.extend_from_slice(separator);
        if separator.is_empty() && h.fields().is_empty() && !added.is_empty() {
            // Fields were given to a part that had none and no empty line: the line must now
            // separate them from the body.
            out.extend_from_slice(nl);
        }
        out.extend_from_slice(&new_body);
        Ok(())
    }

    /// Converts the parts of a multipart body; false when no delimiter line was found.
    fn multipart(
        &self,
        body: &[u8],
        boundary: &str,
        digest: bool,
        depth: usize,
        out: &mut Vec<u8>,
    ) -> Result<bool, DowngradeError> {
        let delimiters = delimiters(body, boundary.as_bytes());
        let Some(first) = delimiters.first() else {
            return Ok(false);
        };
        self.sanitize(&body[..first.start], out);
        let part_default = if digest {
            Default::Message
        } else {
            Default::Text
        };
        for (k, d) in delimiters.iter().enumerate() {
            let line = &body[d.start..d.end];
            if has_long_line(line) {
                // Transport padding made it too long: the delimiter without it.
                out.extend_from_slice(b"--");
                out.extend_from_slice(boundary.as_bytes());
                if d.close {
                    out.extend_from_slice(b"--");
                }
                out.extend_from_slice(split_final_newline(line).1);
            } else {
                out.extend_from_slice(line);
            }
            if d.close {
                self.sanitize(&body[d.end..], out);
                return Ok(true);
            }
            let end = delimiters.get(k + 1).map_or(body.len(), |n| n.start);
            let chunk = &body[d.end..end];
            // The line ending before a delimiter belongs to the delimiter (RFC 2046 §5.1.1).
            let (content, ending) = match delimiters.get(k + 1) {
                Some(_) => split_final_newline(chunk),
                None => (chunk, &chunk[chunk.len()..]),
            };
            self.entity(content, part_default, false, depth + 1, out)?;
            out.extend_from_slice(ending);
        }
        Ok(true)
    }

    /// A preamble or epilogue: nobody reads it, so 8-bit octets become `?` and long lines are
    /// broken.
    fn sanitize(&self, text: &[u8], out: &mut Vec<u8>) {
        for line in text.split_inclusive(|&b| b == b'\n') {
            let (content, ending) = split_final_newline(line);
            for (i, piece) in content.chunks(MAX_LINE).enumerate() {
                if i > 0 {
                    out.extend_from_slice(b"\r\n");
                }
                if self.target.eight_bit {
                    out.extend_from_slice(piece);
                } else {
                    out.extend(piece.iter().map(|&b| if b >= 0x80 { b'?' } else { b }));
                }
            }
            out.extend_from_slice(ending);
        }
    }
}

/// A boundary RFC 2046 §5.1.1 allows: 1 to 70 printable ASCII characters.
fn is_boundary(b: &str) -> bool {
    !b.is_empty() && b.len() <= 70 && b.bytes().all(|c| (b' '..=b'~').contains(&c))
}

/// One delimiter line of a multipart body.
struct Delimiter {
    /// Where the line starts.
    start: usize,
    /// Just past its line ending.
    end: usize,
    /// `--boundary--`.
    close: bool,
}

fn delimiters(body: &[u8], boundary: &[u8]) -> Vec<Delimiter> {
    let mut found = Vec::new();
    let mut start = 0;
    while start < body.len() {
        let end = memchr::memchr(b'\n', &body[start..]).map_or(body.len(), |i| start + i + 1);
        let line = &body[start..end];
        if let Some(rest) = line
            .strip_prefix(b"--")
            .and_then(|r| r.strip_prefix(boundary))
        {
            let (close, rest) = match rest.strip_prefix(b"--") {
                Some(r) => (true, r),
                None => (false, rest),
            };
            // Transport padding (white space) may follow the boundary.
            if rest.iter().all(|&b| is_wsp(b) || b == b'\r' || b == b'\n') {
                found.push(Delimiter { start, end, close });
                if close {
                    break;
                }
            }
        }
        start = end;
    }
    found
}

/// `(content, line ending)` of a chunk that ends with CRLF or LF.
fn split_final_newline(chunk: &[u8]) -> (&[u8], &[u8]) {
    if let Some(c) = chunk.strip_suffix(b"\r\n") {
        (c, &chunk[c.len()..])
    } else if let Some(c) = chunk.strip_suffix(b"\n") {
        (c, &chunk[c.len()..])
    } else {
        (chunk, &chunk[chunk.len()..])
    }
}

fn field_line(name: &str, value: &str, nl: &[u8]) -> Vec<u8> {
    let mut line = format!("{name}: {value}").into_bytes();
    line.extend_from_slice(nl);
    line
}

/// The header fields of `part`, over-long lines folded, the Content-Transfer-Encoding field
/// replaced by `cte` when given, and `added` fields after the last one.
fn write_fields(
    part: &[u8],
    h: &HeaderSection,
    nl: &[u8],
    cte: Option<&str>,
    added: &[Vec<u8>],
    out: &mut Vec<u8>,
) {
    let mut replaced = false;
    for f in h.fields() {
        if let Some(value) = cte
            && f.is("Content-Transfer-Encoding")
        {
            if !replaced {
                out.extend_from_slice(&field_line(f.name(), value, nl));
                replaced = true;
            }
            continue;
        }
        fold_long_lines(&part[f.span()], nl, out);
    }
    for a in added {
        out.extend_from_slice(a);
    }
}

/// Copies header lines, folding any line longer than [`MAX_LINE`] before a white space it
/// has (unfolding restores it exactly), or, when it has none, with an inserted space.
fn fold_long_lines(field: &[u8], nl: &[u8], out: &mut Vec<u8>) {
    if !has_long_line(field) {
        out.extend_from_slice(field);
        return;
    }
    for line in field.split_inclusive(|&b| b == b'\n') {
        let (mut rest, ending) = match line.strip_suffix(b"\r\n") {
            Some(c) => (c, &line[c.len()..]),
            None => match line.strip_suffix(b"\n") {
                Some(c) => (c, &line[c.len()..]),
                None => (line, &line[line.len()..]),
            },
        };
        // Room on the current output line (one less after an inserted space).
        let mut room = MAX_LINE;
        while rest.len() > room {
            match rest[1..=room].iter().rposition(|&b| is_wsp(b)) {
                Some(p) => {
                    out.extend_from_slice(&rest[..=p]);
                    out.extend_from_slice(nl);
                    rest = &rest[p + 1..];
                    room = MAX_LINE;
                }
                None => {
                    out.extend_from_slice(&rest[..room]);
                    out.extend_from_slice(nl);
                    out.push(b' ');
                    rest = &rest[room..];
                    room = MAX_LINE - 1;
                }
            }
        }
        out.extend_from_slice(rest);
        out.extend_from_slice(ending);
    }
}

#[cfg(test)]
mod tests;
