//! Preparing a submitted message for the queue: line endings and body type.

use bytes::{Bytes, BytesMut};

/// Normalises line endings to CRLF (bare LF and bare CR each become CRLF) and makes sure the
/// message ends with CRLF, because SMTP's DATA framing needs it. A body that is already in
/// canonical form is returned without copying.
pub(crate) fn normalize_line_endings(body: Bytes) -> Bytes {
    if is_canonical(&body) {
        return body;
    }
    let mut out = BytesMut::with_capacity(body.len() + body.len() / 32 + 2);
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'\r' => {
                out.extend_from_slice(b"\r\n");
                if body.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.extend_from_slice(&[b]),
        }
        i += 1;
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.freeze()
}

fn is_canonical(body: &[u8]) -> bool {
    if !body.is_empty() && !body.ends_with(b"\r\n") {
        return false;
    }
    // Only line ends need a look; memchr finds them many bytes at a time (this runs over
    // every byte of every message submitted).
    memchr::memchr2_iter(b'\r', b'\n', body).all(|i| match body[i] {
        b'\r' => body.get(i + 1) == Some(&b'\n'),
        _ => i > 0 && body[i - 1] == b'\r',
    })
}

/// True when the body has octets above 127 and needs `BODY=8BITMIME`.
pub(crate) fn has_8bit(body: &[u8]) -> bool {
    !body.is_ascii()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_lf_and_bare_cr_become_crlf() {
        let out = normalize_line_endings(Bytes::from_static(b"a\nb\rc\r\nd"));
        assert_eq!(&out[..], b"a\r\nb\r\nc\r\nd\r\n");
    }

    #[test]
    fn canonical_bodies_are_not_copied() {
        let body = Bytes::from_static(b"Subject: x\r\n\r\nhello\r\n");
        let out = normalize_line_endings(body.clone());
        assert_eq!(out.as_ptr(), body.as_ptr());
    }

    #[test]
    fn a_missing_final_crlf_is_added() {
        assert_eq!(
            &normalize_line_endings(Bytes::from_static(b"x\r\ny"))[..],
            b"x\r\ny\r\n"
        );
        assert!(normalize_line_endings(Bytes::new()).is_empty());
    }

    #[test]
    fn only_crlf_line_ends_are_canonical() {
        for (body, canonical) in [
            (&b""[..], true),
            (b"a\r\n", true),
            (b"a\r\nb\r\n\r\n", true),
            (b"\r\n", true),
            (b"\n", false),
            (b"a\nb\r\n", false),
            (b"a\rb\r\n", false),
            (b"a\r\r\n", false),
            (b"a\r\n\n\r\n", false),
            (b"a\r\nb", false),
        ] {
            assert_eq!(is_canonical(body), canonical, "{body:?}");
        }
    }

    #[test]
    fn eight_bit_bodies_are_detected() {
        assert!(has_8bit("caf\u{e9}".as_bytes()));
        assert!(!has_8bit(b"plain"));
    }
}
