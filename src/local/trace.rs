//! The fields a final delivery adds, the `Delivered-To:` loop check, and the line ends files
//! are written with.
//!
//! `Return-Path: <sender>` (RFC 5321 §4.4) and `Delivered-To: recipient` (Postfix's and qmail's
//! loop detector) go at the top of each stored copy. A message that already carries
//! `Delivered-To:` with the address being delivered to has been here before: it came back
//! through a forwarder, and delivering it again would loop for ever, so it is refused (5.4.6).
//! Copies forwarded elsewhere carry the `Delivered-To:` field too, which is what lets the loop
//! be seen when they come back.

use crate::address::{Address, ReversePath};
use crate::message::HeaderSection;

/// `Return-Path: <sender>` CRLF `Delivered-To: recipient` CRLF.
pub fn trace_fields(sender: &ReversePath, recipient: &Address) -> Vec<u8> {
    format!("Return-Path: {sender}\r\nDelivered-To: {recipient}\r\n").into_bytes()
}

/// `Delivered-To: recipient` CRLF, for a copy forwarded elsewhere.
pub fn delivered_to(recipient: &Address) -> Vec<u8> {
    format!("Delivered-To: {recipient}\r\n").into_bytes()
}

/// True when the header section of `message` has a `Delivered-To:` field naming `recipient`
/// (case-insensitively, angle brackets allowed).
///
/// ```
/// use postrider::local::trace::has_delivered_to;
/// use postrider::Address;
/// let bob = Address::parse("bob@ourtest.com")?;
/// assert!(has_delivered_to(b"Delivered-To: <BOB@ourtest.com>\r\nSubject: x\r\n\r\nbody\r\n", &bob));
/// assert!(!has_delivered_to(b"Subject: x\r\n\r\nDelivered-To: bob@ourtest.com\r\n", &bob));
/// # Ok::<(), postrider::AddressError>(())
/// ```
pub fn has_delivered_to(message: &[u8], recipient: &Address) -> bool {
    let wanted = recipient.to_string();
    let headers = HeaderSection::parse(message);
    headers.named("Delivered-To").any(|f| {
        let v = f.unfolded_value(message);
        let v = v.strip_prefix(b"<").unwrap_or(&v);
        let v = v.strip_suffix(b">").unwrap_or(v);
        v.eq_ignore_ascii_case(wanted.as_bytes())
    })
}

/// The message with CRLF line ends turned into LF, as mailbox files on Unix hold it.
pub fn to_lf(parts: &[&[u8]]) -> Vec<u8> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(len);
    let mut pending_cr = false;
    for part in parts {
        let mut rest = *part;
        while !rest.is_empty() {
            if pending_cr {
                pending_cr = false;
                if rest[0] != b'\n' {
                    // A bare CR stays what it was.
                    out.push(b'\r');
                }
            }
            match memchr::memchr(b'\r', rest) {
                None => {
                    out.extend_from_slice(rest);
                    rest = &[];
                }
                Some(i) => {
                    out.extend_from_slice(&rest[..i]);
                    match rest.get(i + 1) {
                        Some(b'\n') => {
                            out.push(b'\n');
                            rest = &rest[i + 2..];
                        }
                        Some(_) => {
                            out.push(b'\r');
                            rest = &rest[i + 1..];
                        }
                        None => {
                            pending_cr = true;
                            rest = &[];
                        }
                    }
                }
            }
        }
    }
    if pending_cr {
        out.push(b'\r');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_fields_name_the_sender_and_the_recipient() {
        let f = trace_fields(
            &ReversePath::parse("aaa@ourtest.com").unwrap(),
            &Address::parse("bbb@ourtest.com").unwrap(),
        );
        assert_eq!(
            f,
            b"Return-Path: <aaa@ourtest.com>\r\nDelivered-To: bbb@ourtest.com\r\n"
        );
        let f = trace_fields(&ReversePath::Null, &Address::parse("b@x.example").unwrap());
        assert!(f.starts_with(b"Return-Path: <>\r\n"));
    }

    #[test]
    fn crlf_becomes_lf_across_part_boundaries() {
        assert_eq!(to_lf(&[b"a\r\nb\r", b"\nc\rd\r\n"]), b"a\nb\nc\rd\n");
        assert_eq!(to_lf(&[b"x\r"]), b"x\r");
        assert_eq!(to_lf(&[b"x\r", b"y"]), b"x\ry");
    }

    #[test]
    fn a_folded_delivered_to_is_seen() {
        let bob = Address::parse("bob@ourtest.com").unwrap();
        assert!(has_delivered_to(
            b"Subject: x\r\nDelivered-To:\r\n bob@ourtest.com\r\n\r\n",
            &bob
        ));
        assert!(!has_delivered_to(
            b"Delivered-To: carol@ourtest.com\r\n\r\n",
            &bob
        ));
    }
}
