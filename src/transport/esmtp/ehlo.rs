//! What a server offers in its EHLO reply (RFC 5321 §4.1.1.1 and the extensions we use).

use crate::status::Reply;

/// The service extensions a server announced, parsed from its EHLO reply.
///
/// A HELO session (EHLO refused) has none: [`Capabilities::default`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// The first word of the reply's first line: the name the server calls itself.
    pub server_name: Option<String>,
    /// PIPELINING (RFC 2920).
    pub pipelining: bool,
    /// SIZE (RFC 1870): `Some(0)` when announced without a limit.
    pub size: Option<u64>,
    /// 8BITMIME (RFC 6152).
    pub eight_bit_mime: bool,
    /// SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
    /// DSN (RFC 3461).
    pub dsn: bool,
    /// STARTTLS (RFC 3207).
    pub starttls: bool,
    /// ENHANCEDSTATUSCODES (RFC 2034).
    pub enhanced_status_codes: bool,
    /// CHUNKING (RFC 3030); recorded, not used.
    pub chunking: bool,
    /// REQUIRETLS (RFC 8689).
    pub requiretls: bool,
    /// AUTH mechanisms (RFC 4954), upper-cased, in the order announced.
    pub auth: Vec<String>,
}

impl Capabilities {
    /// Reads the extensions from an EHLO reply. Unknown keywords are ignored, keywords are
    /// case-insensitive, and the pre-standard `AUTH=` form is read like `AUTH`. Never fails:
    /// a malformed parameter (a non-numeric SIZE) counts as absent.
    ///
    /// ```
    /// use postrider::Reply;
    /// use postrider::transport::esmtp::Capabilities;
    /// let reply = Reply::new(250, None, "mx.example.com Hi\nPIPELINING\nSIZE 1000\nAUTH PLAIN LOGIN")?;
    /// let caps = Capabilities::parse(&reply);
    /// assert!(caps.pipelining);
    /// assert_eq!(caps.size_limit(), Some(1000));
    /// assert!(caps.offers_auth("login"));
    /// # Ok::<(), postrider::StatusError>(())
    /// ```
    pub fn parse(reply: &Reply) -> Capabilities {
        let mut caps = Capabilities::default();
        let mut lines = reply.text().lines();
        caps.server_name = lines
            .next()
            .and_then(|l| l.split_whitespace().next())
            .map(str::to_string);
        for line in lines {
            let mut words = line.split_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            let keyword = keyword.to_ascii_uppercase();
            if let Some(first_mech) = keyword.strip_prefix("AUTH=") {
                caps.add_auth(std::iter::once(first_mech).chain(words));
                continue;
            }
            match keyword.as_str() {
                "PIPELINING" => caps.pipelining = true,
                "SIZE" => {
                    caps.size = match words.next() {
                        None => Some(0),
                        // RFC 1870's `1*20DIGIT`: `str::parse` alone would also take `+1`.
                        Some(n) if n.bytes().all(|b| b.is_ascii_digit()) => n.parse().ok(),
                        Some(_) => None,
                    }
                }
                "8BITMIME" => caps.eight_bit_mime = true,
                "SMTPUTF8" => caps.smtputf8 = true,
                "DSN" => caps.dsn = true,
                "STARTTLS" => caps.starttls = true,
                "REQUIRETLS" => caps.requiretls = true,
                "ENHANCEDSTATUSCODES" => caps.enhanced_status_codes = true,
                "CHUNKING" => caps.chunking = true,
                "AUTH" => caps.add_auth(words),
                _ => {}
            }
        }
        caps
    }

    fn add_auth<'a>(&mut self, mechs: impl Iterator<Item = &'a str>) {
        for m in mechs {
            let m = m.to_ascii_uppercase();
            if !m.is_empty() && !self.auth.contains(&m) {
                self.auth.push(m);
            }
        }
    }

    /// The server's message size limit, when it announced one (SIZE with a non-zero value).
    pub fn size_limit(&self) -> Option<u64> {
        self.size.filter(|&n| n > 0)
    }

    /// True when the server offers the AUTH mechanism `name` (case-insensitive).
    pub fn offers_auth(&self, name: &str) -> bool {
        self.auth.iter().any(|m| m.eq_ignore_ascii_case(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn caps(text: &str) -> Capabilities {
        Capabilities::parse(&Reply::new(250, None, text).unwrap())
    }

    #[test]
    fn a_typical_postfix_reply_is_understood() {
        let c = caps(
            "mail.example.com\nPIPELINING\nSIZE 10240000\nVRFY\nETRN\nSTARTTLS\n\
             ENHANCEDSTATUSCODES\n8BITMIME\nDSN\nSMTPUTF8\nCHUNKING",
        );
        assert_eq!(c.server_name.as_deref(), Some("mail.example.com"));
        assert!(c.pipelining && c.starttls && c.enhanced_status_codes);
        assert!(c.eight_bit_mime && c.dsn && c.smtputf8 && c.chunking);
        assert_eq!(c.size_limit(), Some(10_240_000));
        assert!(c.auth.is_empty());
    }

    #[test]
    fn auth_mechanisms_are_collected_from_both_forms_without_duplicates() {
        let c = caps("smtp.gmail.com at your service\nAUTH LOGIN plain XOAUTH2\nAUTH=LOGIN PLAIN");
        assert_eq!(c.auth, ["LOGIN", "PLAIN", "XOAUTH2"]);
        assert!(c.offers_auth("plain"));
        assert!(!c.offers_auth("CRAM-MD5"));
    }

    #[test]
    fn size_without_a_number_means_no_declared_limit() {
        assert_eq!(caps("x\nSIZE").size, Some(0));
        assert_eq!(caps("x\nSIZE").size_limit(), None);
        assert_eq!(caps("x\nSIZE lots").size, None);
        assert_eq!(caps("x\nsize 0").size_limit(), None);
    }

    #[test]
    fn fuzz_regressions_a_size_with_a_sign_is_not_a_number() {
        // Found by fuzz/ehlo: `"+1".parse::<u64>()` is 1.
        assert_eq!(caps("\nSIZE +1").size, None);
        assert_eq!(caps("x\nSIZE -1").size, None);
        assert_eq!(caps("x\nSIZE 18446744073709551616").size, None);
        assert_eq!(caps("x\nSIZE 18446744073709551615").size, Some(u64::MAX));
    }

    #[test]
    fn smtp_sinks_trailing_empty_line_is_harmless() {
        let c = caps("smtp-sink\nPIPELINING\n8BITMIME\nAUTH PLAIN LOGIN\n");
        assert!(c.pipelining && c.eight_bit_mime);
        assert_eq!(c.auth, ["PLAIN", "LOGIN"]);
    }

    #[test]
    fn keywords_only_count_after_the_first_line() {
        let c = caps("STARTTLS is my name");
        assert!(!c.starttls);
        assert_eq!(c.server_name.as_deref(), Some("STARTTLS"));
        assert_eq!(caps("").server_name, None);
    }

    proptest! {
        #[test]
        fn any_reply_text_parses_without_panicking(text in "\\PC{0,200}") {
            if let Ok(r) = Reply::new(250, None, text) {
                let _ = Capabilities::parse(&r);
            }
        }
    }
}
