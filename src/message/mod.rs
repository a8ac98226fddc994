//! Message headers as a mail submission agent handles them.
//!
//! A program that calls `sendmail` hands over a whole message. Before queueing it a
//! submission agent may have to read its recipients from the header (`sendmail -t`, removing
//! `Bcc:`), add the fields every message must carry (`From:`, `Date:`, `Message-ID:`) and a
//! `Received:` trace line, and find the end of input (a line with a lone `.` unless `-i`).
//! These are pure functions over bytes: they never panic, and every refusal names the field,
//! its line and what is wrong.
//!
//! ```
//! use postrider::{Domain, ReversePath};
//! use postrider::message::{LocalSubmission, complete_headers, extract_recipients, truncate_at_lone_dot};
//! let host = Domain::parse("pbx.example.com")?;
//! let input = b"To: alice@example.org\nBcc: archive\nSubject: voicemail\n\nYou have a message.\n.\n";
//! let x = extract_recipients(truncate_at_lone_dot(input), &host)?;
//! assert_eq!(x.recipients.len(), 2); // alice@example.org, archive@pbx.example.com
//! let sender = ReversePath::parse("pbx@pbx.example.com")?;
//! let ready = complete_headers(&x.message, &LocalSubmission {
//!     hostname: &host,
//!     sender: &sender,
//!     full_name: Some("PBX"),
//!     date: std::time::SystemTime::now(),
//!     unique: "0PC4F8X1RZ3A7KQ2",
//!     uid: None,
//! });
//! assert!(!ready.windows(4).any(|w| w == b"Bcc:"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod address_list;
mod downgrade;
mod encode;
mod header;
mod mime;
mod submission;
mod tls_required;

pub use address_list::{AddressListError, parse_address_list};
pub use downgrade::{
    DowngradeError, MAX_DEPTH, MAX_LINE, Target, downgrade, has_long_line, needs_downgrade,
};
pub use encode::{
    ENCODED_LINE, base64_lines, quoted_printable, repair_base64, repair_quoted_printable,
};
pub use header::{HeaderEnd, HeaderField, HeaderSection, Newline, strip_mbox_from_line};
pub use mime::{ContentType, TransferEncoding};
pub use submission::{
    Extracted, LocalSubmission, MessageError, complete_headers, display_name, extract_recipients,
    field_addresses, truncate_at_lone_dot,
};
pub use tls_required::{MAX_HEADER_SECTION, tls_required_no};

#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    use super::*;
    use crate::{Domain, ReversePath};

    fn host() -> Domain {
        Domain::parse("host.example").unwrap()
    }

    /// Header-ish bytes: field names, colons, folding, addresses and the characters that
    /// matter to the parsers, so the interesting paths are reached often.
    fn headerish() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"To: ".to_vec()),
            Just(b"Bcc:".to_vec()),
            Just(b"cc :".to_vec()),
            Just(b"Resent-To: ".to_vec()),
            Just(b"From ".to_vec()),
            Just(b"From a@b.example Mon\n".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"\n\t".to_vec()),
            Just(b"\r\n\r\n".to_vec()),
            Just(b"a@b.example".to_vec()),
            Just(b"\"q\\\"x\"".to_vec()),
            Just(b"(c(d)\\)".to_vec()),
            Just(b"<@r:u@x.example>".to_vec()),
            Just(b"g:;".to_vec()),
            Just(b"[1.2.3.4]".to_vec()),
            Just(b".".to_vec()),
            "[ -~]{0,8}".prop_map(|s| s.into_bytes()),
            proptest::collection::vec(any::<u8>(), 0..4),
        ];
        proptest::collection::vec(piece, 0..24).prop_map(|v| v.concat())
    }

    proptest! {
        #[test]
        fn header_functions_never_panic_on_arbitrary_bytes(msg in proptest::collection::vec(any::<u8>(), 0..512)) {
            let h = HeaderSection::parse(&msg);
            for f in h.fields() {
                let _ = f.unfolded_value(&msg);
            }
            let _ = extract_recipients(&msg, &host());
            let _ = truncate_at_lone_dot(&msg);
            let _ = strip_mbox_from_line(&msg);
            let sender = ReversePath::Null;
            let d = host();
            let _ = complete_headers(&msg, &LocalSubmission {
                hostname: &d, sender: &sender, full_name: Some("x"),
                date: std::time::SystemTime::UNIX_EPOCH, unique: "u", uid: None,
            });
        }

        #[test]
        fn header_functions_never_panic_on_header_like_input(msg in headerish()) {
            let _ = extract_recipients(&msg, &host());
            if let Ok(text) = std::str::from_utf8(&msg) {
                let _ = parse_address_list(text);
            }
        }

        #[test]
        fn address_lists_never_panic(text in "\\PC{0,64}") {
            let _ = parse_address_list(&text);
        }

        /// Removing Bcc keeps every other field byte for byte, and the body.
        #[test]
        fn only_bcc_fields_are_removed(
            fields in proptest::collection::vec((prop_oneof![
                Just("To"), Just("Bcc"), Just("bcc"), Just("Subject"), Just("X-Other")
            ], "[a-z@.]{1,12}", any::<bool>()), 0..8),
            body in "[ -~\n]{0,40}",
        ) {
            let mut msg = String::new();
            let mut kept = String::new();
            for (name, value, folded) in &fields {
                let field = if *folded {
                    format!("{name}: x@y.example,\n {value}\n")
                } else {
                    format!("{name}: {value}\n")
                };
                msg.push_str(&field);
                if !name.eq_ignore_ascii_case("bcc") {
                    kept.push_str(&field);
                }
            }
            msg.push('\n');
            msg.push_str(&body);
            kept.push('\n');
            kept.push_str(&body);
            if let Ok(x) = extract_recipients(msg.as_bytes(), &host()) {
                prop_assert_eq!(String::from_utf8(x.message).unwrap(), kept);
            }
        }

        /// Whatever the input, the completed message has the required fields, once each.
        #[test]
        fn completed_messages_have_from_date_and_message_id_once(msg in headerish()) {
            let d = host();
            let sender = ReversePath::Null;
            let out = complete_headers(&msg, &LocalSubmission {
                hostname: &d, sender: &sender, full_name: None,
                date: std::time::SystemTime::UNIX_EPOCH, unique: "u", uid: Some(1),
            });
            let h = HeaderSection::parse(&out);
            for name in ["From", "Date", "Message-ID", "Received"] {
                prop_assert!(h.has(name), "{} missing in {:?}", name, String::from_utf8_lossy(&out));
            }
            prop_assert!(h.fields()[0].is("Received"));
        }
    }
}
