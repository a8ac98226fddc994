//! The `Received:` trace field this server prepends (RFC 5321 §4.4), in Postfix's layout, and
//! the hop count that detects mail loops.
//!
//! ```text
//! Received: from pbx.lan.example (pbx.lan.example [192.168.1.20])
//!     (using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))
//!     (Authenticated sender: alice)
//!     by mail.example.com (postrider) with ESMTPSA
//!     for <bob@example.org>; Wed, 2 Dec 2026 06:54:09 +0000
//! ```
//!
//! Continuation lines begin with a tab. The protocol word follows RFC 3848 (`SMTP`, `ESMTP`,
//! `ESMTPS`, `ESMTPA`, `ESMTPSA`). The client's name is `unknown` without a PTR record, and carries sendmail's `(may be forged)`
//! when the PTR name does not resolve back to the client's address.

use std::net::IpAddr;
use std::time::SystemTime;

use crate::address::{Address, Domain};

use super::reverse::ClientName;
use super::tls::TlsInfo;

/// What goes into one `Received:` field.
#[derive(Debug, Clone)]
pub struct Trace<'a> {
    /// The HELO/EHLO argument, if any.
    pub helo: Option<&'a str>,
    /// True after EHLO.
    pub extended: bool,
    /// The client's address.
    pub ip: Option<IpAddr>,
    /// The client's reverse-resolved name.
    pub name: &'a ClientName,
    /// The TLS session, if any.
    pub tls: Option<&'a TlsInfo>,
    /// True when the client authenticated.
    pub authenticated: bool,
    /// The user to name in `(Authenticated sender: …)`; `None` leaves the comment out.
    pub show_user: Option<&'a str>,
    /// This server's name.
    pub by: &'a Domain,
    /// The recipient when there is exactly one (Postfix's `for <…>`).
    pub for_recipient: Option<&'a Address>,
    /// The time of receipt.
    pub at: SystemTime,
}

/// The field, `Received: …` with folded lines, ending in CRLF.
pub fn received_field(t: &Trace<'_>) -> String {
    let helo = t.helo.map_or_else(|| "unknown".to_string(), header_safe);
    let ip = match t.ip {
        Some(IpAddr::V4(v4)) => v4.to_string(),
        Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => format!("IPv6:{v6}"),
        },
        None => String::new(),
    };
    let client = match t.name {
        // A session on standard input (`sendmail -bs`) has no address.
        _ if t.ip.is_none() => "local".to_string(),
        ClientName::Confirmed(n) => format!("{n} [{ip}]"),
        ClientName::Forged(n) => format!("{n} [{ip}] (may be forged)"),
        ClientName::Unknown => format!("unknown [{ip}]"),
    };
    let mut out = format!("Received: from {helo} ({client})\r\n");
    if let Some(tls) = t.tls {
        out.push_str(&format!(
            "\t(using {} with cipher {} ({}/{} bits))\r\n",
            tls.version, tls.cipher, tls.bits, tls.bits
        ));
    }
    if let Some(user) = t.show_user {
        out.push_str(&format!(
            "\t(Authenticated sender: {})\r\n",
            header_safe(user)
        ));
    }
    let protocol = match (t.extended, t.tls.is_some(), t.authenticated) {
        (false, _, _) => "SMTP",
        (true, false, false) => "ESMTP",
        (true, true, false) => "ESMTPS",
        (true, false, true) => "ESMTPA",
        (true, true, true) => "ESMTPSA",
    };
    out.push_str(&format!("\tby {} (postrider) with {protocol}", t.by));
    let date = crate::time::rfc5322(t.at);
    match t.for_recipient {
        Some(r) => out.push_str(&format!(
            "\r\n\tfor <{}>; {date}\r\n",
            header_safe(&r.to_string())
        )),
        None => out.push_str(&format!(";\r\n\t{date}\r\n")),
    }
    out
}

/// A client-supplied string reduced to characters that cannot break a header or a comment.
fn header_safe(s: &str) -> String {
    s.chars()
        .filter(|c| {
            (c.is_ascii_graphic() || !c.is_ascii())
                && !c.is_control()
                && !matches!(c, '(' | ')' | ';' | '\\' | '<' | '>')
        })
        .take(255)
        .collect()
}

/// `Received:` fields in the header section of `message` (up to the first empty line).
pub fn received_count(message: &[u8]) -> usize {
    message
        .split(|&b| b == b'\n')
        .take_while(|line| !matches!(line, [] | [b'\r']))
        .filter(|line| line.len() >= 9 && line[..9].eq_ignore_ascii_case(b"received:"))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace<'a>(name: &'a ClientName, by: &'a Domain) -> Trace<'a> {
        Trace {
            helo: Some("pbx.lan.example"),
            extended: true,
            ip: Some("192.168.1.20".parse().unwrap()),
            name,
            tls: None,
            authenticated: false,
            show_user: None,
            by,
            for_recipient: None,
            at: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn the_field_is_laid_out_as_postfix_writes_it() {
        let by: Domain = "mail.example.com".parse().unwrap();
        let name = ClientName::Confirmed("pbx.lan.example".parse().unwrap());
        let tls = TlsInfo {
            version: "TLSv1.3".into(),
            cipher: "TLS_AES_256_GCM_SHA384".into(),
            bits: 256,
        };
        let rcpt: Address = "bob@example.org".parse().unwrap();
        let t = Trace {
            tls: Some(&tls),
            authenticated: true,
            show_user: Some("alice"),
            for_recipient: Some(&rcpt),
            ..trace(&name, &by)
        };
        assert_eq!(
            received_field(&t),
            "Received: from pbx.lan.example (pbx.lan.example [192.168.1.20])\r\n\
             \t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))\r\n\
             \t(Authenticated sender: alice)\r\n\
             \tby mail.example.com (postrider) with ESMTPSA\r\n\
             \tfor <bob@example.org>; Thu, 1 Jan 1970 00:00:00 +0000\r\n"
        );
    }

    #[test]
    fn forged_and_unknown_names_and_plain_protocols() {
        let by: Domain = "mx.example".parse().unwrap();
        let forged = ClientName::Forged("bank.example".parse().unwrap());
        let f = received_field(&trace(&forged, &by));
        assert!(
            f.starts_with(
                "Received: from pbx.lan.example (bank.example [192.168.1.20] (may be forged))\r\n"
            ),
            "{f}"
        );
        assert!(f.contains("with ESMTP;\r\n"), "{f}");
        let unknown = ClientName::Unknown;
        let helo = Trace {
            helo: Some("evil)\r\nX-Injected: (yes"),
            extended: false,
            ..trace(&unknown, &by)
        };
        let f = received_field(&helo);
        assert!(
            f.starts_with("Received: from evilX-Injected:yes (unknown [192.168.1.20])\r\n"),
            "{f}"
        );
        assert!(f.contains("with SMTP;"), "{f}");
    }

    #[test]
    fn received_fields_are_counted_in_the_header_only() {
        let m = b"Received: a\r\nreceived: b\r\nSubject: x\r\n\r\nReceived: in the body\r\n";
        assert_eq!(received_count(m), 2);
    }
}
