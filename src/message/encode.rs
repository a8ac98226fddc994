//! The two MIME content transfer encodings that make any octets 7-bit with short lines:
//! quoted-printable (RFC 2045 §6.7) and base64 (RFC 2045 §6.8), both with lines of at most 76
//! characters, and the repairs of parts already in those encodings.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// The longest encoded line (RFC 2045 §6.7 rule 5 and §6.8), without its CRLF.
pub const ENCODED_LINE: usize = 76;

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Quoted-printable for text: CRLF stays a hard line break, everything that is not printable
/// ASCII becomes `=XX`, white space at the end of a line is encoded, and lines are wrapped
/// with soft breaks. A bare CR or LF (not part of CRLF) is encoded, so the decoded octets are
/// exactly the input.
///
/// ```
/// use postrider::message::quoted_printable;
/// assert_eq!(quoted_printable("Grüße \r\n".as_bytes()), b"Gr=C3=BC=C3=9Fe=20\r\n");
/// ```
pub fn quoted_printable(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() + input.len() / 8 + 8);
    let mut rest = input;
    while !rest.is_empty() {
        let (line, had_crlf, next) = match memchr::memmem::find(rest, b"\r\n") {
            Some(i) => (&rest[..i], true, &rest[i + 2..]),
            None => (rest, false, &rest[rest.len()..]),
        };
        qp_line(line, &mut out);
        if had_crlf {
            out.extend_from_slice(b"\r\n");
        }
        rest = next;
    }
    out
}

fn qp_line(line: &[u8], out: &mut Vec<u8>) {
    let mut col = 0;
    for (i, &b) in line.iter().enumerate() {
        let last = i + 1 == line.len();
        let literal = matches!(b, 33..=60 | 62..=126) || ((b == b' ' || b == b'\t') && !last);
        let width = if literal { 1 } else { 3 };
        // Room for the unit and, unless it ends the line, a soft break's `=`.
        let limit = if last { ENCODED_LINE } else { ENCODED_LINE - 1 };
        if col + width > limit {
            out.extend_from_slice(b"=\r\n");
            col = 0;
        }
        if literal {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'=', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
        col += width;
    }
}

/// Base64 in lines of 76 characters, each ended by CRLF.
///
/// ```
/// use postrider::message::base64_lines;
/// assert_eq!(base64_lines(b"RIFF"), b"UklGRg==\r\n");
/// ```
pub fn base64_lines(input: &[u8]) -> Vec<u8> {
    // 57 octets make 76 characters.
    let mut out = Vec::with_capacity(input.len() / 57 * 78 + 80);
    for chunk in input.chunks(57) {
        out.extend_from_slice(STANDARD.encode(chunk).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A quoted-printable body that holds raw 8-bit octets or over-long lines (both illegal, both
/// seen in the wild), made legal without changing what a decoder gets: raw octets become
/// `=XX` (a lenient decoder passes them through; the escape decodes to the same octet) and
/// long lines get soft breaks, never inside an existing `=XX`.
pub fn repair_quoted_printable(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() + input.len() / 16 + 8);
    let mut rest = input;
    while !rest.is_empty() {
        let (line, had_crlf, next) = match memchr::memmem::find(rest, b"\r\n") {
            Some(i) => (&rest[..i], true, &rest[i + 2..]),
            None => (rest, false, &rest[rest.len()..]),
        };
        let mut col = 0;
        let mut i = 0;
        while i < line.len() {
            // One unit: a well-formed escape (`=XX`), a soft break (`=` ending the line), or
            // one octet. A malformed `=` is written `=3D`, which is what lenient decoders
            // make of it anyway.
            let escape = line[i] == b'='
                && line.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && line.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
            let soft_break = line[i] == b'=' && i + 1 == line.len();
            let unit: &[u8] = if escape {
                &line[i..i + 3]
            } else {
                &line[i..=i]
            };
            let encoded = !escape && !soft_break && (unit[0] >= 0x80 || unit[0] == b'=');
            let width = if encoded { 3 } else { unit.len() };
            let last = i + unit.len() == line.len();
            // A line that ends with `=` is a soft break already: it needs no room for one.
            let limit = if last { ENCODED_LINE } else { ENCODED_LINE - 1 };
            if col + width > limit && col > 0 {
                out.extend_from_slice(b"=\r\n");
                col = 0;
            }
            if encoded {
                let b = unit[0];
                out.extend_from_slice(&[b'=', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
            } else {
                out.extend_from_slice(unit);
            }
            col += width;
            i += unit.len();
        }
        if had_crlf {
            out.extend_from_slice(b"\r\n");
        }
        rest = next;
    }
    out
}

/// A base64 body with octets outside the alphabet or over-long lines, re-wrapped: decoders
/// ignore everything but the alphabet and `=` (RFC 2045 §6.8), so keeping only those and
/// wrapping them at 76 decodes to the same octets.
pub fn repair_base64(input: &[u8]) -> Vec<u8> {
    let kept: Vec<u8> = input
        .iter()
        .copied()
        .filter(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
        .collect();
    let mut out = Vec::with_capacity(kept.len() + kept.len() / ENCODED_LINE * 2 + 2);
    for line in kept.chunks(ENCODED_LINE) {
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A strict decoder for what these encoders write.
    fn decode_qp(input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < input.len() {
            match input[i] {
                b'=' if input[i + 1..].starts_with(b"\r\n") => i += 3,
                b'=' => {
                    let hex = std::str::from_utf8(&input[i + 1..i + 3]).unwrap();
                    out.push(u8::from_str_radix(hex, 16).unwrap());
                    i += 3;
                }
                b => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        out
    }

    fn lines_ok(encoded: &[u8]) -> bool {
        encoded.is_ascii()
            && encoded
                .split(|&b| b == b'\n')
                .all(|l| l.strip_suffix(b"\r").unwrap_or(l).len() <= ENCODED_LINE)
    }

    #[test]
    fn trailing_white_space_and_equals_signs_are_encoded() {
        assert_eq!(quoted_printable(b"a = b \r\nc\t"), b"a =3D b=20\r\nc=09");
        assert_eq!(quoted_printable(b""), b"");
    }

    #[test]
    fn long_lines_get_soft_breaks_that_decode_away() {
        let line = vec![b'x'; 200];
        let qp = quoted_printable(&line);
        assert!(lines_ok(&qp));
        assert_eq!(decode_qp(&qp), line);
        assert!(qp.starts_with(&[b'x'; 75]));
        assert_eq!(&qp[75..78], b"=\r\n");
    }

    #[test]
    fn base64_lines_are_76_characters() {
        let out = base64_lines(&[0u8; 200]);
        let lines: Vec<&[u8]> = out.split(|&b| b == b'\n').collect();
        assert_eq!(lines[0].len(), 77, "76 characters and the CR");
        assert!(lines_ok(&out));
    }

    #[test]
    fn a_quoted_printable_body_with_raw_octets_is_repaired_without_changing_its_decoding() {
        let broken = "caf\u{e9} =C3=A9 done\r\n".as_bytes();
        let fixed = repair_quoted_printable(broken);
        assert_eq!(fixed, b"caf=C3=A9 =C3=A9 done\r\n");
        let long = [b"=C3=A9".repeat(40), b"\r\n".to_vec()].concat();
        let fixed = repair_quoted_printable(&long);
        assert!(lines_ok(&fixed));
        assert_eq!(decode_qp(&fixed), decode_qp(&long));
    }

    #[test]
    fn a_base64_body_is_rewrapped_without_junk() {
        let fixed = repair_base64("UklG\u{e9}Rg==".as_bytes());
        assert_eq!(fixed, b"UklGRg==\r\n");
    }

    proptest! {
        #[test]
        fn quoted_printable_round_trips_any_octets(input in proptest::collection::vec(any::<u8>(), 0..600)) {
            let qp = quoted_printable(&input);
            prop_assert!(lines_ok(&qp));
            prop_assert_eq!(decode_qp(&qp), input);
        }

        #[test]
        fn repaired_quoted_printable_decodes_as_before(
            input in proptest::collection::vec(prop_oneof![
                Just(b'='), Just(b'A'), Just(b'3'), Just(b' '), Just(0xe9u8), Just(b'\r'), Just(b'\n'), any::<u8>()
            ], 0..400)
        ) {
            let fixed = repair_quoted_printable(&input);
            prop_assert!(fixed.iter().all(|&b| b < 0x80));
            prop_assert!(fixed.split(|&b| b == b'\n').all(|l| l.len() <= ENCODED_LINE + 1));
            // Without escapes of its own, the input is what the repaired form decodes to.
            if !input.contains(&b'=') {
                prop_assert_eq!(decode_qp(&fixed), input);
            }
        }
    }
}
