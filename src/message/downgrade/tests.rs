//! Unit tests of `downgrade`.

use super::*;
use proptest::prelude::*;

fn seven(msg: &[u8]) -> Vec<u8> {
    downgrade(msg, Target::SEVEN_BIT).unwrap().into_owned()
}

fn conformant(out: &[u8], target: Target) -> bool {
    !needs_downgrade(out, target)
}

/// Every leaf part of `msg`, decoded, as mail-parser (an independent reader) sees it.
fn decoded_parts(msg: &[u8]) -> Vec<Vec<u8>> {
    let parsed = mail_parser::MessageParser::default()
        .parse(msg)
        .expect("mail-parser reads the message");
    parsed
        .parts
        .iter()
        .filter_map(|p| match &p.body {
            mail_parser::PartType::Text(t) | mail_parser::PartType::Html(t) => {
                Some(t.as_bytes().to_vec())
            }
            mail_parser::PartType::Binary(b) | mail_parser::PartType::InlineBinary(b) => {
                Some(b.to_vec())
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_conformant_message_is_returned_as_it_is() {
    let msg = b"Subject: x\r\n\r\nplain ascii\r\n";
    assert!(matches!(
        downgrade(msg, Target::SEVEN_BIT).unwrap(),
        Cow::Borrowed(_)
    ));
    let eight = "Subject: x\r\n\r\ncaf\u{e9}\r\n".as_bytes();
    let target = Target {
        eight_bit: true,
        utf8_headers: false,
    };
    assert!(matches!(
        downgrade(eight, target).unwrap(),
        Cow::Borrowed(_)
    ));
}

#[test]
fn a_message_without_mime_fields_gets_them_with_the_charset_it_has() {
    let out = seven("Subject: x\r\n\r\nGr\u{fc}\u{df}e\r\n".as_bytes());
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "Subject: x\r\nContent-Type: text/plain; charset=utf-8\r\nMIME-Version: 1.0\r\n\
         Content-Transfer-Encoding: quoted-printable\r\n\r\nGr=C3=BC=C3=9Fe\r\n"
    );
    let latin1 = seven(b"Subject: x\r\n\r\nGr\xfc\xdfe\r\n");
    assert!(
        String::from_utf8(latin1)
            .unwrap()
            .contains("charset=unknown-8bit")
    );
}

#[test]
fn an_8bit_transfer_encoding_is_replaced_in_place() {
    let msg = "MIME-Version: 1.0\r\nContent-Transfer-Encoding: 8BIT\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\u{e9}\r\n";
    let out = String::from_utf8(seven(msg.as_bytes())).unwrap();
    assert_eq!(
        out,
        "MIME-Version: 1.0\r\nContent-Transfer-Encoding: quoted-printable\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n=C3=A9\r\n"
    );
}

#[test]
fn non_text_parts_become_base64_and_decode_to_the_same_octets() {
    let wav: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    let mut msg = b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"XyZ\"\r\n\r\npreamble \xe9\r\n--XyZ\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nBonjour \xc3\xa9t\xc3\xa9\r\n--XyZ\r\nContent-Type: audio/wav\r\nContent-Transfer-Encoding: binary\r\n\r\n".to_vec();
    msg.extend_from_slice(&wav);
    msg.extend_from_slice(b"\r\n--XyZ--\r\nepilogue\r\n");
    let out = seven(&msg);
    assert!(
        conformant(&out, Target::SEVEN_BIT),
        "{}",
        String::from_utf8_lossy(&out)
    );
    let text = String::from_utf8(out.clone()).unwrap();
    assert!(text.contains("preamble ?\r\n--XyZ\r\n"));
    assert!(text.contains(
        "Content-Transfer-Encoding: quoted-printable\r\n\r\nBonjour =C3=A9t=C3=A9\r\n--XyZ"
    ));
    assert!(text.contains("Content-Type: audio/wav\r\nContent-Transfer-Encoding: base64\r\n"));
    assert!(text.ends_with("\r\n--XyZ--\r\nepilogue\r\n"));
    let parts = decoded_parts(&out);
    assert_eq!(parts.len(), 2, "{parts:?}");
    assert_eq!(parts[0], "Bonjour \u{e9}t\u{e9}".as_bytes());
    assert_eq!(parts[1], wav);
}

#[test]
fn an_encapsulated_message_is_converted_inside() {
    let msg = "Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n\r\nSubject: inner\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\u{e9}\r\n";
    let out = String::from_utf8(seven(msg.as_bytes())).unwrap();
    assert_eq!(
        out,
        "Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 7bit\r\n\r\nSubject: inner\r\nContent-Type: text/plain; charset=utf-8\r\nMIME-Version: 1.0\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=C3=A9\r\n"
    );
}

#[test]
fn an_8bit_header_field_is_refused_with_its_name_and_line() {
    let msg = "To: a@example.org\r\nSubject: Caf\u{e9}\r\n\r\nbody\r\n";
    assert_eq!(
        downgrade(msg.as_bytes(), Target::SEVEN_BIT).unwrap_err(),
        DowngradeError::EightBitHeader {
            field: "Subject".into(),
            line: 2
        }
    );
    // With SMTPUTF8 the field goes as it is; the body is still converted.
    let msg = "Subject: Caf\u{e9}\r\n\r\nbody \u{e9}\r\n";
    let out = downgrade(
        msg.as_bytes(),
        Target {
            eight_bit: false,
            utf8_headers: true,
        },
    )
    .unwrap();
    assert!(out.starts_with("Subject: Caf\u{e9}\r\n".as_bytes()));
    assert!(out.ends_with(b"body =C3=A9\r\n"));
}

#[test]
fn an_8bit_header_field_of_a_nested_part_is_refused_with_its_line() {
    let msg = "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Disposition: attachment; filename=\"\u{e9}.txt\"\r\n\r\nx\r\n--b--\r\n";
    assert_eq!(
        downgrade(msg.as_bytes(), Target::SEVEN_BIT).unwrap_err(),
        DowngradeError::EightBitHeader {
            field: "Content-Disposition".into(),
            line: 4
        }
    );
}

#[test]
fn long_lines_are_re_encoded_even_for_an_8bit_server() {
    let long = "x".repeat(2_000_000);
    let msg = format!("Subject: big\r\n\r\nshort\r\n{long}\r\n");
    let target = Target {
        eight_bit: true,
        utf8_headers: true,
    };
    let out = downgrade(msg.as_bytes(), target).unwrap();
    assert!(conformant(&out, Target::SEVEN_BIT));
    assert_eq!(
        decoded_parts(&out),
        vec![format!("short\r\n{long}\r\n").into_bytes()]
    );
}

#[test]
fn long_header_lines_are_folded_before_existing_white_space() {
    let value: Vec<String> = (0..300).map(|i| format!("<id{i}@example.org>")).collect();
    let msg = format!("References: {}\r\n\r\nbody\r\n", value.join(" "));
    let out = seven(msg.as_bytes());
    assert!(conformant(&out, Target::SEVEN_BIT));
    let h = HeaderSection::parse(&out);
    assert_eq!(
        h.fields()[0].unfolded_value(&out),
        value.join(" ").as_bytes(),
        "unfolding gives the value back"
    );
    // A line without white space gets an inserted one, as Postfix does.
    let msg = format!("X-Blob: {}\r\n\r\nbody\r\n", "a".repeat(3000));
    let out = seven(msg.as_bytes());
    assert!(conformant(&out, Target::SEVEN_BIT));
}

#[test]
fn nesting_past_the_limit_is_refused() {
    let mut msg = String::new();
    for i in 0..=MAX_DEPTH + 1 {
        msg.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n"
        ));
    }
    msg.push_str("\r\n\u{e9}\r\n");
    assert!(matches!(
        downgrade(msg.as_bytes(), Target::SEVEN_BIT),
        Err(DowngradeError::TooDeep { .. })
    ));
}

#[test]
fn broken_encoded_parts_are_repaired() {
    let msg = "Content-Transfer-Encoding: base64\r\nContent-Type: application/pdf\r\n\r\nJVBE\u{e9}Rg==\r\n";
    let out = String::from_utf8(seven(msg.as_bytes())).unwrap();
    assert!(out.ends_with("\r\n\r\nJVBERg==\r\n"), "{out}");
}

#[test]
fn a_multipart_without_delimiters_is_encoded_as_a_whole() {
    let msg = "Content-Type: multipart/mixed; boundary=nowhere\r\n\r\n\u{e9}\r\n";
    let out = seven(msg.as_bytes());
    assert!(conformant(&out, Target::SEVEN_BIT));
}

#[test]
fn a_part_without_fields_gets_the_empty_line_before_its_body() {
    let msg = "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\u{e9}t\u{e9}\r\n--b--\r\n";
    let out = String::from_utf8(seven(msg.as_bytes())).unwrap();
    assert!(out.contains("--b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=C3=A9t=C3=A9\r\n--b--"), "{out}");
    assert_eq!(
        decoded_parts(out.as_bytes()),
        vec!["\u{e9}t\u{e9}".as_bytes().to_vec()]
    );
}

/// MIME-ish input: fields, boundaries, encodings and 8-bit octets, so the conversion's
/// paths are reached often.
fn mimeish() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"Content-Type: multipart/mixed; boundary=b\r\n".to_vec()),
        Just(b"Content-Type: message/rfc822\r\n".to_vec()),
        Just(b"Content-Type: multipart/digest; boundary=\"b\"\r\n".to_vec()),
        Just(b"Content-Type: application/octet-stream\r\n".to_vec()),
        Just(b"Content-Transfer-Encoding: 8bit\r\n".to_vec()),
        Just(b"Content-Transfer-Encoding: quoted-printable\r\n".to_vec()),
        Just(b"Content-Transfer-Encoding: base64\r\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"--b\r\n".to_vec()),
        Just(b"--b--\r\n".to_vec()),
        Just(b"=C3=A9".to_vec()),
        Just("\u{e9}".as_bytes().to_vec()),
        Just(vec![b'y'; 1200]),
        Just(b" ".to_vec()),
        "[ -~]{0,12}".prop_map(|s| s.into_bytes()),
        proptest::collection::vec(any::<u8>(), 0..6),
    ];
    proptest::collection::vec(piece, 0..30).prop_map(|v| v.concat())
}

proptest! {
    #[test]
    fn the_output_always_fits_the_target_and_needs_no_second_pass(
        msg in mimeish(),
        eight_bit in any::<bool>(),
        utf8_headers in any::<bool>(),
    ) {
        let target = Target { eight_bit, utf8_headers };
        match downgrade(&msg, target) {
            Ok(out) => {
                prop_assert!(!has_long_line(&out));
                if !eight_bit && !utf8_headers {
                    prop_assert!(out.is_ascii());
                }
                let again = downgrade(&out, target);
                if !eight_bit && utf8_headers {
                    // 8-bit header octets stay; everything else is already converted.
                    prop_assert!(again.is_ok());
                } else {
                    prop_assert!(matches!(again, Ok(Cow::Borrowed(_))));
                }
            }
            Err(e) => prop_assert_eq!(e.severity(), Severity::Permanent),
        }
    }

    #[test]
    fn text_parts_decode_to_the_original_octets(
        text in proptest::collection::vec(prop_oneof![any::<u8>().prop_filter("no CR/LF", |b| *b != b'\r' && *b != b'\n'), Just(b' ')], 0..3000),
        lines in 1usize..4,
    ) {
        let body: Vec<u8> = std::iter::repeat_n(text.clone(), lines).collect::<Vec<_>>().join(&b"\r\n"[..]);
        let mut msg = b"MIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n".to_vec();
        msg.extend_from_slice(&body);
        let out = seven(&msg);
        prop_assert!(conformant(&out, Target::SEVEN_BIT));
        let parts = decoded_parts(&out);
        prop_assert_eq!(&parts[0], &body);
    }
}
