//! What a mail submission agent does to a message a local program hands it: `sendmail -t`
//! (recipients from the header, `Bcc:` removed), the fields a message must have (`From:`,
//! `Date:`, `Message-ID:`) and a `Received:` trace line, and sendmail's lone-dot end of input.

use std::time::SystemTime;

use super::address_list::{AddressListError, parse_address_list};
use super::header::{HeaderEnd, HeaderField, HeaderSection};
use crate::address::{Address, AddressError, Domain, ReversePath};
use crate::status::Severity;

/// Why the header of a message cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// An address field whose list cannot be read.
    #[error("{field} header on line {line}: {problem}")]
    BadAddressList {
        /// The field name as written (`To`, `cc`, ...).
        field: String,
        /// The line it starts on.
        line: usize,
        /// What is wrong.
        problem: AddressListError,
    },
    /// An address field naming an address that is not usable.
    #[error("{field} header on line {line}: bad address {address:?}: {reason}")]
    BadAddress {
        /// The field name as written.
        field: String,
        /// The line it starts on.
        line: usize,
        /// The address as written (qualified with the local domain if it had none).
        address: String,
        /// Why it was refused.
        reason: AddressError,
    },
    /// An address field that is not UTF-8 (RFC 6532 allows UTF-8, nothing else).
    #[error(
        "{field} header on line {line}: not valid UTF-8 (encode non-ASCII names as RFC 2047 words)"
    )]
    NotUtf8 {
        /// The field name as written.
        field: String,
        /// The line it starts on.
        line: usize,
    },
}

impl MessageError {
    /// Always permanent: the message must be fixed.
    pub fn severity(&self) -> Severity {
        Severity::Permanent
    }
}

/// A message whose recipients were read from its header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    /// Every address of the recipient fields, in order, each once.
    pub recipients: Vec<Address>,
    /// The message without its `Bcc:` (and `Resent-Bcc:`) fields; every other byte as given.
    pub message: Vec<u8>,
}

const RECIPIENT_FIELDS: [&str; 3] = ["To", "Cc", "Bcc"];
const RESENT_FIELDS: [&str; 3] = ["Resent-To", "Resent-Cc", "Resent-Bcc"];
const BLIND_FIELDS: [&str; 2] = ["Bcc", "Resent-Bcc"];

/// `sendmail -t`: the recipients named by `To:`, `Cc:` and `Bcc:` — or, when the message has
/// `Resent-To:`, `Resent-Cc:` or `Resent-Bcc:` fields (it is being re-sent), by those only, as
/// sendmail does — and the message with every `Bcc:` and `Resent-Bcc:` field removed.
/// Addresses without a domain (`root`) get `@local_domain`, as sendmail qualifies them.
///
/// Pure and total: any bytes give a result or an error naming the field and line.
///
/// ```
/// use postrider::Domain;
/// use postrider::message::extract_recipients;
/// let msg = b"To: Alice <alice@example.org>\nBcc: boss, alice@example.org\nSubject: hi\n\nHello\n";
/// let x = extract_recipients(msg, &Domain::parse("pbx.example.com")?)?;
/// let rcpts: Vec<String> = x.recipients.iter().map(|a| a.to_string()).collect();
/// assert_eq!(rcpts, ["alice@example.org", "boss@pbx.example.com"]);
/// assert_eq!(x.message, b"To: Alice <alice@example.org>\nSubject: hi\n\nHello\n");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn extract_recipients(
    message: &[u8],
    local_domain: &Domain,
) -> Result<Extracted, MessageError> {
    let section = HeaderSection::parse(message);
    let resent = RESENT_FIELDS.iter().any(|n| section.has(n));
    let names: &[&str] = if resent {
        &RESENT_FIELDS
    } else {
        &RECIPIENT_FIELDS
    };
    let mut recipients: Vec<Address> = Vec::new();
    for field in section
        .fields()
        .iter()
        .filter(|f| names.iter().any(|n| f.is(n)))
    {
        for address in field_addresses(field, message, local_domain)? {
            if !recipients.contains(&address) {
                recipients.push(address);
            }
        }
    }
    let mut out = Vec::with_capacity(message.len());
    let mut pos = 0;
    for field in section
        .fields()
        .iter()
        .filter(|f| BLIND_FIELDS.iter().any(|n| f.is(n)))
    {
        let span = field.span();
        out.extend_from_slice(&message[pos..span.start]);
        pos = span.end;
    }
    out.extend_from_slice(&message[pos..]);
    Ok(Extracted {
        recipients,
        message: out,
    })
}

/// The addresses of one address field.
pub fn field_addresses(
    field: &HeaderField,
    message: &[u8],
    local_domain: &Domain,
) -> Result<Vec<Address>, MessageError> {
    let value = field.unfolded_value(message);
    let text = std::str::from_utf8(&value).map_err(|_| MessageError::NotUtf8 {
        field: field.name().to_string(),
        line: field.line(),
    })?;
    let specs = parse_address_list(text).map_err(|problem| MessageError::BadAddressList {
        field: field.name().to_string(),
        line: field.line(),
        problem,
    })?;
    specs
        .into_iter()
        .map(|spec| {
            let qualified = if spec.contains('@') {
                spec
            } else {
                format!("{spec}@{local_domain}")
            };
            Address::parse(&qualified).map_err(|reason| MessageError::BadAddress {
                field: field.name().to_string(),
                line: field.line(),
                address: qualified,
                reason,
            })
        })
        .collect()
}

/// What a local submission adds to a message that lacks it, as sendmail and Postfix do for
/// mail from local programs.
#[derive(Debug, Clone)]
pub struct LocalSubmission<'a> {
    /// This host's name: in `Received:`, `Message-ID:`, and `From:` for the null sender.
    pub hostname: &'a Domain,
    /// The envelope sender, used for a missing `From:`.
    pub sender: &'a ReversePath,
    /// The sender's full name for a missing `From:` (sendmail's `-F`).
    pub full_name: Option<&'a str>,
    /// The submission time, for `Date:` and `Received:`.
    pub date: SystemTime,
    /// Something unique to this message (a fresh queue id) for `Message-ID:`.
    pub unique: &'a str,
    /// The submitting user's uid, shown in `Received:` as Postfix shows it.
    pub uid: Option<u32>,
}

/// Adds a `Received:` trace field at the top, and `From:`, `Date:` and `Message-ID:` at the end
/// of the header section when they are missing; every other byte stays as given. A message
/// whose body was not separated from the header by an empty line gets one. New lines use the
/// message's line endings.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use postrider::{Domain, ReversePath};
/// use postrider::message::{LocalSubmission, complete_headers};
/// let host = Domain::parse("pbx.example.com")?;
/// let sender = ReversePath::parse("vm@pbx.example.com")?;
/// let msg = complete_headers(b"Subject: hi\n\nHello\n", &LocalSubmission {
///     hostname: &host,
///     sender: &sender,
///     full_name: Some("Voice Mail"),
///     date: UNIX_EPOCH + Duration::from_secs(1_460_460_096),
///     unique: "0PC4F8X1RZ3A7KQ2",
///     uid: Some(0),
/// });
/// assert_eq!(String::from_utf8(msg)?, "\
/// Received: by pbx.example.com (postrider, from userid 0);\n\tTue, 12 Apr 2016 11:21:36 +0000
/// Subject: hi
/// From: Voice Mail <vm@pbx.example.com>
/// Date: Tue, 12 Apr 2016 11:21:36 +0000
/// Message-ID: <20160412112136.0PC4F8X1RZ3A7KQ2@pbx.example.com>
///
/// Hello
/// ");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn complete_headers(message: &[u8], submission: &LocalSubmission<'_>) -> Vec<u8> {
    let section = HeaderSection::parse(message);
    let nl = section.newline().as_bytes();
    let date = crate::time::rfc5322(submission.date);
    let mut out = Vec::with_capacity(message.len() + 400);
    let by = match submission.uid {
        Some(uid) => format!("(postrider, from userid {uid})"),
        None => "(postrider)".to_string(),
    };
    push_field(
        &mut out,
        nl,
        &format!(
            "Received: by {} {by};{}\t{date}",
            submission.hostname,
            String::from_utf8_lossy(nl)
        ),
    );
    let end = section.fields_end();
    out.extend_from_slice(&message[..end]);
    if end > 0 && message[end - 1] != b'\n' {
        out.extend_from_slice(nl);
    }
    if !section.has("From") {
        push_field(&mut out, nl, &format!("From: {}", from_value(submission)));
    }
    if !section.has("Date") {
        push_field(&mut out, nl, &format!("Date: {date}"));
    }
    if !section.has("Message-ID") {
        push_field(
            &mut out,
            nl,
            &format!("Message-ID: {}", message_id(submission)),
        );
    }
    match section.end() {
        HeaderEnd::EmptyLine => out.extend_from_slice(&message[end..]),
        HeaderEnd::EndOfMessage => {}
        HeaderEnd::NotAField { .. } => {
            out.extend_from_slice(nl);
            out.extend_from_slice(&message[end..]);
        }
    }
    out
}

fn push_field(out: &mut Vec<u8>, nl: &[u8], field: &str) {
    out.extend_from_slice(field.as_bytes());
    out.extend_from_slice(nl);
}

fn from_value(s: &LocalSubmission<'_>) -> String {
    let address = match s.sender.address() {
        Some(a) => a.to_string(),
        None => format!("MAILER-DAEMON@{}", s.hostname),
    };
    match s.full_name.and_then(display_name) {
        Some(name) => format!("{name} <{address}>"),
        None => address,
    }
}

/// A full name as an RFC 5322 display name: atoms as they are, other ASCII quoted, non-ASCII
/// as RFC 2047 encoded words. Control characters (a line break would start a new field) are
/// replaced by spaces. `None` when nothing printable is left.
pub fn display_name(name: &str) -> Option<String> {
    let cleaned: String = name
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    if cleaned.is_empty() {
        return None;
    }
    let atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~ ".contains(c);
    if cleaned.chars().all(atext) {
        return Some(cleaned);
    }
    if cleaned.is_ascii() {
        let escaped: String = cleaned
            .chars()
            .flat_map(|c| match c {
                '"' | '\\' => vec!['\\', c],
                c => vec![c],
            })
            .collect();
        return Some(format!("\"{escaped}\""));
    }
    // RFC 2047 §2: an encoded word is at most 75 characters; 45 octets of text encode to 60.
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in cleaned.chars() {
        if chunk.len() + c.len_utf8() > 45 {
            words.push(encoded_word(&chunk));
            chunk.clear();
        }
        chunk.push(c);
    }
    words.push(encoded_word(&chunk));
    Some(words.join(" "))
}

fn encoded_word(text: &str) -> String {
    format!(
        "=?UTF-8?B?{}?=",
        crate::transport::esmtp::base64_encode(text.as_bytes())
    )
}

/// `<YYYYMMDDhhmmss.UNIQUE@hostname>`, as sendmail forms it.
fn message_id(s: &LocalSubmission<'_>) -> String {
    let stamp: String = crate::time::rfc3339(s.date)
        .chars()
        .filter(char::is_ascii_digit)
        .take(14)
        .collect();
    let mut unique: String = s
        .unique
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    if unique.is_empty() {
        unique.push('0');
    }
    format!("<{stamp}.{unique}@{}>", s.hostname)
}

/// sendmail without `-i`: input ends at a line holding only `.` (LF or CRLF ended, or at the
/// end of input). Returns what comes before that line; no other line is changed (no
/// dot-unstuffing, as Postfix's sendmail).
///
/// ```
/// use postrider::message::truncate_at_lone_dot;
/// assert_eq!(truncate_at_lone_dot(b"a\n..b\n.\nignored\n"), b"a\n..b\n");
/// assert_eq!(truncate_at_lone_dot(b"a\r\n.\r\n"), b"a\r\n");
/// assert_eq!(truncate_at_lone_dot(b"a\n.b\n"), b"a\n.b\n");
/// ```
pub fn truncate_at_lone_dot(input: &[u8]) -> &[u8] {
    let mut start = 0;
    while start < input.len() {
        let end = input[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(input.len(), |i| start + i + 1);
        let line = &input[start..end];
        if matches!(line, b"." | b".\n" | b".\r\n") {
            return &input[..start];
        }
        start = end;
    }
    input
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn host() -> Domain {
        Domain::parse("sipserver1.ourtest.com").unwrap()
    }

    fn extract(msg: &str) -> Result<(Vec<String>, String), MessageError> {
        extract_recipients(msg.as_bytes(), &host()).map(|x| {
            (
                x.recipients.iter().map(|a| a.to_string()).collect(),
                String::from_utf8(x.message).unwrap(),
            )
        })
    }

    #[test]
    fn recipients_come_from_to_cc_and_bcc_in_order_each_once() {
        let (rcpts, _) = extract(
            "to: a@x.example\r\nSubject: s\r\nCC: \"B\" <b@x.example>,\r\n a@x.example\r\nbcc: c@y.example\r\n\r\nbody\r\n",
        )
        .unwrap();
        assert_eq!(rcpts, ["a@x.example", "b@x.example", "c@y.example"]);
    }

    #[test]
    fn every_bcc_field_is_removed_and_every_other_byte_kept() {
        let msg = "Bcc: first@x.example\nTo: a@x.example\nBCC: b@x.example,\n\tc@x.example\nSubject: s\nbcc:\n\nBcc: in the body stays\n";
        let (rcpts, out) = extract(msg).unwrap();
        assert_eq!(
            out,
            "To: a@x.example\nSubject: s\n\nBcc: in the body stays\n"
        );
        assert_eq!(
            rcpts,
            [
                "first@x.example",
                "a@x.example",
                "b@x.example",
                "c@x.example"
            ]
        );
    }

    #[test]
    fn a_message_without_recipient_fields_has_no_recipients() {
        let (rcpts, out) = extract("Subject: s\n\nbody\n").unwrap();
        assert!(rcpts.is_empty());
        assert_eq!(out, "Subject: s\n\nbody\n");
    }

    #[test]
    fn bare_names_are_qualified_with_the_local_domain() {
        let (rcpts, _) = extract("To: root, Admin <postmaster>\n\n").unwrap();
        assert_eq!(
            rcpts,
            [
                "root@sipserver1.ourtest.com",
                "postmaster@sipserver1.ourtest.com"
            ]
        );
    }

    /// Fuzz findings: once a `Bcc:` field is gone, a body line starting with `From ` may come
    /// first; it must stay a body line, not be taken for an mbox separator and dropped.
    #[test]
    fn a_body_line_starting_with_from_survives_bcc_removal_and_completion() {
        for msg in [
            "bCc: a@x.example\nFrom r, a body line\n,,:Frm\n",
            "From a@b.example Mon Apr 12 11:21:36 2016\nFrom bob, a body line\nTo: x@y.example\n",
        ] {
            let x = extract_recipients(msg.as_bytes(), &host()).unwrap();
            let again = HeaderSection::parse(&x.message);
            assert!(again.fields().is_empty(), "{msg:?}");
            let sender = ReversePath::Null;
            let h = host();
            let done = complete_headers(&x.message, &submission(&sender, &h, None));
            let done = String::from_utf8(done).unwrap();
            let body = msg
                .split_once('\n')
                .filter(|_| msg.starts_with("bCc"))
                .map_or(msg, |(_, b)| b);
            assert!(done.ends_with(&format!(">\n\n{body}")), "{done}");
        }
    }

    #[test]
    fn resent_fields_replace_the_original_recipients() {
        let (rcpts, out) = extract(
            "To: original@x.example\nResent-To: new@y.example\nResent-Bcc: hidden@y.example\nBcc: old-hidden@x.example\n\n",
        )
        .unwrap();
        assert_eq!(rcpts, ["new@y.example", "hidden@y.example"]);
        assert_eq!(out, "To: original@x.example\nResent-To: new@y.example\n\n");
    }

    #[test]
    fn bad_address_fields_name_the_field_line_and_problem() {
        let err = extract("Subject: s\ncc: a@x.example; b@x.example\n\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "cc header on line 2: ';' outside a group (separate addresses with ',')"
        );
        let err = extract("To: bob@[192.0.2.1]\n\n").unwrap_err();
        assert!(
            matches!(&err, MessageError::BadAddress { field, line: 1, address, .. }
                if field == "To" && address == "bob@[192.0.2.1]"),
            "{err}"
        );
        assert!(
            err.to_string()
                .starts_with("To header on line 1: bad address \"bob@[192.0.2.1]\": ")
        );
        let err = extract_recipients(b"To: \xff@x.example\n\n", &host()).unwrap_err();
        assert_eq!(
            err,
            MessageError::NotUtf8 {
                field: "To".into(),
                line: 1
            }
        );
    }

    fn submission<'a>(
        sender: &'a ReversePath,
        host: &'a Domain,
        name: Option<&'a str>,
    ) -> LocalSubmission<'a> {
        LocalSubmission {
            hostname: host,
            sender,
            full_name: name,
            date: UNIX_EPOCH + Duration::from_secs(1_460_460_096),
            unique: "ABC",
            uid: None,
        }
    }

    const RECEIVED: &str =
        "Received: by sipserver1.ourtest.com (postrider);\r\n\tTue, 12 Apr 2016 11:21:36 +0000\r\n";

    #[test]
    fn present_fields_are_not_added_again() {
        let sender = ReversePath::parse("root@sipserver1.ourtest.com").unwrap();
        let h = host();
        let msg = "from: x@y.example\r\nDATE: Mon, 1 Jan 2024 00:00:00 +0000\r\nmessage-id: <a@b>\r\n\r\nbody\r\n";
        let out = complete_headers(msg.as_bytes(), &submission(&sender, &h, None));
        assert_eq!(String::from_utf8(out).unwrap(), format!("{RECEIVED}{msg}"));
    }

    #[test]
    fn a_body_without_a_header_gets_the_fields_and_an_empty_line() {
        let sender = ReversePath::parse("root@sipserver1.ourtest.com").unwrap();
        let h = host();
        let out = complete_headers(b"hello\r\n", &submission(&sender, &h, Some("Charlie Root")));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!(
                "{RECEIVED}From: Charlie Root <root@sipserver1.ourtest.com>\r\n\
                 Date: Tue, 12 Apr 2016 11:21:36 +0000\r\n\
                 Message-ID: <20160412112136.ABC@sipserver1.ourtest.com>\r\n\r\nhello\r\n"
            )
        );
    }

    #[test]
    fn a_last_header_line_without_a_newline_is_ended_before_adding_fields() {
        let sender = ReversePath::Null;
        let h = host();
        let out = complete_headers(
            b"From: a@x.example\r\nSubject: s",
            &submission(&sender, &h, None),
        );
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("Subject: s\r\nDate: "), "{out}");
        assert!(out.ends_with("@sipserver1.ourtest.com>\r\n"), "{out}");
        let out = complete_headers(b"Subject: s\r\n\r\n", &submission(&sender, &h, None));
        assert!(
            String::from_utf8(out)
                .unwrap()
                .contains("From: MAILER-DAEMON@sipserver1.ourtest.com\r\n")
        );
    }

    #[test]
    fn full_names_are_quoted_or_encoded_and_cannot_inject_fields() {
        assert_eq!(
            display_name("Charlie Root").as_deref(),
            Some("Charlie Root")
        );
        assert_eq!(
            display_name("Root, Charlie").as_deref(),
            Some("\"Root, Charlie\"")
        );
        assert_eq!(
            display_name("a \"b\" \\c").as_deref(),
            Some("\"a \\\"b\\\" \\\\c\"")
        );
        assert_eq!(
            display_name("x\r\nBcc: victim@example.com").as_deref(),
            Some("\"x Bcc: victim@example.com\"")
        );
        assert_eq!(display_name(" \t\r\n"), None);
        assert_eq!(
            display_name("Jörg").as_deref(),
            Some("=?UTF-8?B?SsO2cmc=?=")
        );
        let long = display_name(&"é".repeat(40)).unwrap();
        assert!(
            long.split(' ')
                .all(|w| w.len() <= 75 && w.starts_with("=?UTF-8?B?")),
            "{long}"
        );
        assert_eq!(long.split(' ').count(), 2);
    }

    #[test]
    fn line_endings_follow_the_message() {
        let sender = ReversePath::Null;
        let h = host();
        let out = complete_headers(b"Subject: s\n\nbody\n", &submission(&sender, &h, None));
        let out = String::from_utf8(out).unwrap();
        assert!(!out.contains('\r'), "{out:?}");
        assert!(out.ends_with(">\n\nbody\n"), "{out:?}");
    }

    #[test]
    fn a_lone_dot_ends_input_only_alone_on_its_line() {
        assert_eq!(truncate_at_lone_dot(b".\nrest"), b"");
        assert_eq!(truncate_at_lone_dot(b"a\n."), b"a\n");
        assert_eq!(truncate_at_lone_dot(b"a\n. \n"), b"a\n. \n");
        assert_eq!(truncate_at_lone_dot(b"a.\n"), b"a.\n");
        assert_eq!(truncate_at_lone_dot(b""), b"");
    }
}
