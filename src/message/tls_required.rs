//! The `TLS-Required: No` header field (RFC 8689 §3): the originator asks that the recipient
//! domain's published TLS policy (MTA-STS, DANE) be ignored for this message.
//!
//! Read at delivery from the message as spooled, so it holds for every way a message enters
//! the queue (SMTP, `sendmail`, [`Engine::submit`](crate::Engine::submit)) without a spool
//! format change. Only the top-level header section counts: a `TLS-Required:` line inside an
//! attached message or a bounce's returned header is another message's.

use super::header::{HeaderEnd, HeaderSection};

/// How much of a message is read for its header section: Postfix's default
/// `header_size_limit` (102400 octets). What lies beyond is body to Postfix too, and a field
/// there cannot weaken a policy.
pub const MAX_HEADER_SECTION: usize = 102_400;

/// True when the header section of `message` (CRLF or LF line endings) holds a `TLS-Required`
/// field whose value is `No`, and no `TLS-Required` field with any other value.
///
/// The name and the value compare case-insensitively (RFC 5322 §1.2.2; RFC 5234 §2.3 for the
/// ABNF literal `"No"`), folding is undone, white space around the value is ignored. A
/// field with another value contradicts the request, so the policy stays (the safe reading).
/// Only the first [`MAX_HEADER_SECTION`] octets are read.
///
/// ```
/// use postrider::message::tls_required_no;
/// assert!(tls_required_no(b"Subject: x\r\ntls-required:\r\n  no\r\n\r\nbody\r\n"));
/// assert!(!tls_required_no(b"Subject: x\r\n\r\nTLS-Required: No\r\n"));
/// assert!(!tls_required_no(b"TLS-Required: No\r\nTLS-Required: Yes\r\n\r\n"));
/// ```
pub fn tls_required_no(message: &[u8]) -> bool {
    let (head, cut) = bounded(message);
    let section = HeaderSection::parse(head);
    let mut fields = section.fields();
    // A cut inside the header section may have cut the last field's folded lines off: its
    // value is not known, so it does not count.
    if cut
        && section.end() == &HeaderEnd::EndOfMessage
        && let Some((_, whole)) = fields.split_last()
    {
        fields = whole;
    }
    let mut asked = false;
    for field in fields.iter().filter(|f| f.is("TLS-Required")) {
        if !field.unfolded_value(head).eq_ignore_ascii_case(b"No") {
            return false;
        }
        asked = true;
    }
    asked
}

/// The first [`MAX_HEADER_SECTION`] octets of `message`, ending at a line end, and whether
/// anything was cut.
fn bounded(message: &[u8]) -> (&[u8], bool) {
    if message.len() <= MAX_HEADER_SECTION {
        return (message, false);
    }
    let head = &message[..MAX_HEADER_SECTION];
    match memchr::memrchr(b'\n', head) {
        Some(i) => (&head[..=i], true),
        None => (&[], true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_field_is_found_whatever_the_case_folding_and_line_endings() {
        for m in [
            &b"TLS-Required: No\r\n\r\nbody"[..],
            b"From: a@b.example\nTLS-REQUIRED:NO\n\nbody",
            b"tls-required :\r\n\tNo  \r\nSubject: s\r\n\r\n",
            b"Subject: s\r\nTls-Required: no",
        ] {
            assert!(tls_required_no(m), "{:?}", String::from_utf8_lossy(m));
        }
    }

    #[test]
    fn other_values_other_names_and_the_body_do_not_count() {
        for m in [
            &b"Subject: s\r\n\r\n"[..],
            b"TLS-Required: Yes\r\n\r\n",
            b"TLS-Required: No thanks\r\n\r\n",
            b"TLS-Required: No\r\nTLS-Required: maybe\r\n\r\n",
            b"X-TLS-Required: No\r\n\r\n",
            b"TLS-Required-Not: No\r\n\r\n",
            b"Subject: s\r\n\r\nTLS-Required: No\r\n",
            // Not a field line: the header section ends there, the rest is body.
            b"Subject: s\r\nnot a field\r\nTLS-Required: No\r\n\r\n",
            b"",
        ] {
            assert!(!tls_required_no(m), "{:?}", String::from_utf8_lossy(m));
        }
    }

    #[test]
    fn only_the_first_100_kib_are_read_and_a_field_cut_there_does_not_count() {
        let filler = |n: usize| {
            let line = b"X-Filler: 0123456789012345678901234567890123456789012345678901234567\r\n";
            line.repeat(n / line.len() + 1)
        };
        let mut early = b"TLS-Required: No\r\n".to_vec();
        early.extend(filler(MAX_HEADER_SECTION * 2));
        assert!(tls_required_no(&early));
        let mut late = filler(MAX_HEADER_SECTION + 10);
        late.extend_from_slice(b"TLS-Required: No\r\n\r\n");
        assert!(!tls_required_no(&late));
        // The field ends right at the cut; a folded continuation lies beyond: value unknown.
        let field = b"TLS-Required: No\r\n";
        let mut straddling = b"X-Pad: ".to_vec();
        straddling.resize(MAX_HEADER_SECTION - field.len() - 2, b'x');
        straddling.extend_from_slice(b"\r\n");
        straddling.extend_from_slice(field);
        assert!(straddling.len() == MAX_HEADER_SECTION);
        straddling.extend_from_slice(b" thanks\r\n\r\n");
        assert!(!tls_required_no(&straddling));
    }
}
