//! Delivery status notifications (RFC 3464): bounces, delay warnings and success reports.
//!
//! Pure functions: given what happened, build the envelope and the `multipart/report` message.
//! The engine submits the result into its own queue from `<>`.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::address::{Domain, ReversePath};
use crate::envelope::{BodyType, Envelope, Notify, Recipient, Ret};
use crate::queue_id::QueueId;
use crate::status::{Diagnostic, EnhancedStatus};
use crate::time::rfc5322;

/// Messages larger than this are returned as headers only, even with `RET=FULL`.
pub(crate) const MAX_RETURNED_MESSAGE: usize = 1024 * 1024;

/// Which kind of report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DsnKind {
    /// Some recipients failed permanently.
    Failure,
    /// Some recipients are still being retried after the warning delay.
    Delay,
    /// Some recipients were delivered and asked to be told (`NOTIFY=SUCCESS`).
    Success,
}

/// RFC 3464 §2.3.3 `Action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Failed,
    Delayed,
    Delivered,
    Relayed,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Delivered => "delivered",
            Action::Relayed => "relayed",
        }
    }
}

/// One recipient's lines of the report.
pub(crate) struct DsnRecipient<'a> {
    pub recipient: &'a Recipient,
    pub action: Action,
    pub status: EnhancedStatus,
    pub diagnostic: Option<&'a Diagnostic>,
    pub remote_mta: Option<&'a str>,
    pub last_attempt: Option<SystemTime>,
    pub will_retry_until: Option<SystemTime>,
}

/// Everything about the original message the report needs.
pub(crate) struct DsnContext<'a> {
    pub reporting_mta: &'a Domain,
    pub id: QueueId,
    pub envelope: &'a Envelope,
    pub arrival: SystemTime,
    pub now: SystemTime,
    pub original: &'a [u8],
    /// How long the message has waited, for the delay warning's text.
    pub waited: Duration,
}

/// Builds a DSN for `recipients`, addressed to the original sender from `<>`.
/// Returns `None` when the original sender is `<>`: a bounce is never bounced.
pub(crate) fn build(
    kind: DsnKind,
    ctx: &DsnContext<'_>,
    recipients: &[DsnRecipient<'_>],
) -> Option<(Envelope, Bytes)> {
    let sender = ctx.envelope.sender.address()?.clone();
    if recipients.is_empty() {
        return None;
    }
    let mut to = Recipient::new(sender.clone());
    // A report about a report would loop; RFC 3461 §6.2 has DSNs sent with NOTIFY=NEVER.
    to.notify = Some(Notify::NEVER);
    let mut envelope = Envelope::new(ReversePath::Null, [to]);
    envelope.smtputf8 = sender.needs_smtputf8();

    let boundary = format!(
        "{}.{:08x}/{}",
        ctx.id,
        rand::random::<u32>(),
        ctx.reporting_mta
    );
    let (subject, returned_part) = match kind {
        DsnKind::Failure => ("Undelivered Mail Returned to Sender", "Undelivered Message"),
        DsnKind::Delay => ("Delayed Mail (still being retried)", "Delayed Message"),
        DsnKind::Success => ("Successful Mail Delivery Report", "Delivered Message"),
    };
    let mut m = String::with_capacity(4096);
    let _ = write!(
        m,
        "From: Mail Delivery System <MAILER-DAEMON@{host}>\r\n\
         To: <{sender}>\r\n\
         Subject: {subject}\r\n\
         Date: {date}\r\n\
         Message-ID: <{id}.{rnd:08x}.dsn@{host}>\r\n\
         Auto-Submitted: auto-replied\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status;\r\n\
         \tboundary=\"{boundary}\"\r\n\
         \r\n\
         This is a MIME-encapsulated message.\r\n\
         \r\n\
         --{boundary}\r\n\
         Content-Description: Notification\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         \r\n",
        host = ctx.reporting_mta,
        date = rfc5322(ctx.now),
        id = ctx.id,
        rnd = rand::random::<u32>(),
    );
    human_part(&mut m, kind, ctx, recipients);
    let _ = write!(
        m,
        "\r\n--{boundary}\r\n\
         Content-Description: Delivery report\r\n\
         Content-Type: message/delivery-status\r\n\
         \r\n\
         Reporting-MTA: dns; {host}\r\n\
         X-Postrider-Queue-ID: {id}\r\n",
        host = ctx.reporting_mta,
        id = ctx.id,
    );
    if let Some(envid) = &ctx.envelope.envid {
        let _ = write!(m, "Original-Envelope-Id: {}\r\n", sanitize(envid));
    }
    let _ = write!(m, "Arrival-Date: {}\r\n", rfc5322(ctx.arrival));
    for r in recipients {
        status_fields(&mut m, r);
    }

    let full = ctx.envelope.ret == Some(Ret::Full)
        && kind == DsnKind::Failure
        && ctx.original.len() <= MAX_RETURNED_MESSAGE;
    let mut body = m.into_bytes();
    if full {
        let _ = write_part_header(&mut body, &boundary, returned_part, "message/rfc822");
        body.extend_from_slice(ctx.original);
        if !ctx.original.ends_with(b"\r\n") {
            body.extend_from_slice(b"\r\n");
        }
    } else {
        let _ = write_part_header(
            &mut body,
            &boundary,
            &format!("{returned_part} Headers"),
            "text/rfc822-headers",
        );
        body.extend_from_slice(header_section(ctx.original));
    }
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    if !body.is_ascii() {
        envelope.body = BodyType::EightBitMime;
    }
    Some((envelope, Bytes::from(body)))
}

fn write_part_header(
    out: &mut Vec<u8>,
    boundary: &str,
    description: &str,
    content_type: &str,
) -> std::fmt::Result {
    out.extend_from_slice(
        format!(
            "\r\n--{boundary}\r\nContent-Description: {description}\r\nContent-Type: {content_type}\r\n\r\n"
        )
        .as_bytes(),
    );
    Ok(())
}

fn human_part(
    m: &mut String,
    kind: DsnKind,
    ctx: &DsnContext<'_>,
    recipients: &[DsnRecipient<'_>],
) {
    let _ = write!(
        m,
        "This is the mail system at host {}.\r\n\r\n",
        ctx.reporting_mta
    );
    match kind {
        DsnKind::Failure => m.push_str(
            "I'm sorry to have to inform you that your message could not\r\n\
             be delivered to one or more recipients. Its headers are attached below.\r\n\
             \r\n\
             The mail system said:\r\n\r\n",
        ),
        DsnKind::Delay => {
            let _ = write!(
                m,
                "####################################################################\r\n\
                 # THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\r\n\
                 ####################################################################\r\n\
                 \r\n\
                 Your message could not be delivered for {}.\r\n\
                 It will be retried until it is given up on (see Will-Retry-Until below).\r\n\
                 \r\n\
                 The mail system said:\r\n\r\n",
                describe_duration(ctx.waited)
            );
        }
        DsnKind::Success => m.push_str(
            "Your message was successfully delivered to the destination(s)\r\n\
             listed below.\r\n\r\n",
        ),
    }
    for r in recipients {
        let what = match (r.diagnostic, r.remote_mta) {
            (Some(d), Some(host)) if d.reply.is_some() => format!("host {host} said: {}", d.text),
            (Some(d), _) => d.text.clone(),
            (None, Some(host)) => format!("delivered via {host}"),
            (None, None) => r.action.as_str().to_string(),
        };
        let _ = write!(m, "<{}>: {}\r\n\r\n", r.recipient.address, sanitize(&what));
    }
}

fn status_fields(m: &mut String, r: &DsnRecipient<'_>) {
    m.push_str("\r\n");
    if let Some(orcpt) = &r.recipient.orcpt {
        let _ = write!(
            m,
            "Original-Recipient: {}; {}\r\n",
            orcpt.addr_type,
            sanitize(&orcpt.address)
        );
    }
    let addr_type = if r.recipient.address.needs_smtputf8() {
        "utf-8"
    } else {
        "rfc822"
    };
    let _ = write!(
        m,
        "Final-Recipient: {addr_type}; {}\r\nAction: {}\r\nStatus: {}\r\n",
        r.recipient.address,
        r.action.as_str(),
        r.status
    );
    if let Some(host) = r.remote_mta {
        // RFC 3464 §2.3.5: required for SMTP attempts; a host reached by address literal is
        // named by the literal (`dns; [192.0.2.1]`).
        let _ = write!(m, "Remote-MTA: dns; {}\r\n", sanitize(host));
    }
    if let Some(d) = r.diagnostic {
        match &d.reply {
            Some(reply) => {
                let _ = write!(
                    m,
                    "Diagnostic-Code: smtp; {}\r\n",
                    sanitize(&reply.one_line())
                );
            }
            None => {
                let _ = write!(m, "Diagnostic-Code: X-postrider; {}\r\n", sanitize(&d.text));
            }
        }
    }
    if let Some(t) = r.last_attempt {
        let _ = write!(m, "Last-Attempt-Date: {}\r\n", rfc5322(t));
    }
    if let Some(t) = r.will_retry_until {
        let _ = write!(m, "Will-Retry-Until: {}\r\n", rfc5322(t));
    }
}

/// One header-safe line: no CR/LF (a reply text must not inject fields), at most 900 octets.
fn sanitize(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if out.len() > 900 {
        let mut cut = 900;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out
}

/// The header section of a message, including the blank line that ends it when present.
fn header_section(message: &[u8]) -> &[u8] {
    match message.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => &message[..i + 2],
        None => message,
    }
}

/// A delay in the largest unit that says something: "40 seconds", "1 minute", "4 hours",
/// "5 days" (never "0 minutes").
fn describe_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let (n, unit) = if secs >= 2 * 86_400 {
        (secs / 86_400, "day")
    } else if secs >= 3600 {
        (secs / 3600, "hour")
    } else if secs >= 60 {
        (secs / 60, "minute")
    } else {
        (secs, "second")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_are_worded_in_the_largest_sensible_unit() {
        let words = |s: u64| describe_duration(Duration::from_secs(s));
        assert_eq!(words(0), "0 seconds");
        assert_eq!(words(40), "40 seconds");
        assert_eq!(words(60), "1 minute");
        assert_eq!(words(59 * 60), "59 minutes");
        assert_eq!(words(3600), "1 hour");
        assert_eq!(words(4 * 3600 + 59), "4 hours");
        assert_eq!(words(5 * 86_400), "5 days");
    }
    use crate::address::Address;
    use crate::envelope::OriginalRecipient;
    use crate::status::Reply;

    fn envelope(sender: &str) -> Envelope {
        let mut e = Envelope::new(
            ReversePath::parse(sender).unwrap(),
            [Address::parse("bob@remote.example").unwrap()],
        );
        e.envid = Some("ENV-42".into());
        e.recipients[0].orcpt = Some(OriginalRecipient::rfc822(&e.recipients[0].address));
        e
    }

    fn build_failure(env: &Envelope, original: &[u8]) -> Option<(Envelope, Bytes)> {
        let host = Domain::parse("pbx.example.com").unwrap();
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_321_500);
        let reply = Reply::new(550, Some(EnhancedStatus::new(5, 1, 1)), "no such user").unwrap();
        let diag = Diagnostic::remote(reply);
        let ctx = DsnContext {
            reporting_mta: &host,
            id: QueueId::parse("0PC4F8X1RZ3A7KQ2").unwrap(),
            envelope: env,
            arrival: t,
            now: t + Duration::from_secs(60),
            original,
            waited: Duration::from_secs(60),
        };
        let r = [DsnRecipient {
            recipient: &env.recipients[0],
            action: Action::Failed,
            status: diag.status,
            diagnostic: Some(&diag),
            remote_mta: Some("mx.remote.example"),
            last_attempt: Some(t + Duration::from_secs(60)),
            will_retry_until: None,
        }];
        build(DsnKind::Failure, &ctx, &r)
    }

    #[test]
    fn a_bounce_is_a_parseable_multipart_report_from_the_null_sender() {
        let env = envelope("pbx@example.com");
        let original = b"Subject: voicemail\r\nFrom: pbx@example.com\r\n\r\nsecret body\r\n";
        let (dsn_env, body) = build_failure(&env, original).unwrap();
        assert!(dsn_env.sender.is_null());
        assert_eq!(dsn_env.recipients[0].address.to_string(), "pbx@example.com");
        assert_eq!(dsn_env.recipients[0].notify, Some(Notify::NEVER));

        use mail_parser::MimeHeaders;
        let msg = mail_parser::MessageParser::default()
            .parse(&body[..])
            .unwrap();
        let ct = msg.content_type().unwrap();
        assert_eq!(ct.ctype(), "multipart");
        assert_eq!(ct.subtype(), Some("report"));
        assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
        assert_eq!(msg.parts.len(), 4, "root + 3 parts");
        let text = String::from_utf8_lossy(&body);
        for field in [
            "Reporting-MTA: dns; pbx.example.com",
            "Original-Envelope-Id: ENV-42",
            "Arrival-Date: Sun, 22 Nov 2026 04:25:00 +0000",
            "Original-Recipient: rfc822; bob@remote.example",
            "Final-Recipient: rfc822; bob@remote.example",
            "Action: failed",
            "Status: 5.1.1",
            "Remote-MTA: dns; mx.remote.example",
            "Diagnostic-Code: smtp; 550 5.1.1 no such user",
            "Last-Attempt-Date: Sun, 22 Nov 2026 04:26:00 +0000",
            "Content-Type: text/rfc822-headers",
            "Subject: voicemail",
        ] {
            assert!(text.contains(field), "missing {field:?} in\n{text}");
        }
        assert!(
            !text.contains("secret body"),
            "headers only unless RET=FULL"
        );
    }

    #[test]
    fn ret_full_returns_the_whole_message() {
        let mut env = envelope("pbx@example.com");
        env.ret = Some(Ret::Full);
        let original = b"Subject: v\r\n\r\nthe body\r\n";
        let (_, body) = build_failure(&env, original).unwrap();
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("Content-Type: message/rfc822"));
        assert!(text.contains("the body"));
    }

    #[test]
    fn a_bounce_is_never_bounced() {
        let env = envelope("<>");
        assert!(build_failure(&env, b"Subject: x\r\n\r\n").is_none());
    }

    #[test]
    fn reply_text_cannot_inject_header_fields() {
        assert_eq!(sanitize("ok\r\nBcc: x@y"), "ok  Bcc: x@y");
    }
}
