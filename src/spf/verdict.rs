//! What an SPF check found, and what an operator should do about it.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::address::Domain;

/// The result of an SPF evaluation, with RFC 7208 §2.6's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpfResult {
    /// The domain authorises the address.
    Pass,
    /// The domain says the address is not authorised (`-all`): receivers reject.
    Fail,
    /// The domain says the address is probably not authorised (`~all`): receivers junk.
    SoftFail,
    /// The domain makes no assertion about the address (`?all`).
    Neutral,
    /// The domain publishes no SPF record (or the name is not a domain).
    None,
    /// A DNS lookup failed temporarily (SERVFAIL, timeout).
    TempError,
    /// The record is broken: bad syntax, several records, too many lookups.
    PermError,
}

impl SpfResult {
    /// The RFC 7208 name (`pass`, `softfail`, `permerror`, ...).
    pub fn as_str(&self) -> &'static str {
        match self {
            SpfResult::Pass => "pass",
            SpfResult::Fail => "fail",
            SpfResult::SoftFail => "softfail",
            SpfResult::Neutral => "neutral",
            SpfResult::None => "none",
            SpfResult::TempError => "temperror",
            SpfResult::PermError => "permerror",
        }
    }
}

impl fmt::Display for SpfResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<mail_auth::SpfResult> for SpfResult {
    fn from(r: mail_auth::SpfResult) -> SpfResult {
        match r {
            mail_auth::SpfResult::Pass => SpfResult::Pass,
            mail_auth::SpfResult::Fail => SpfResult::Fail,
            mail_auth::SpfResult::SoftFail => SpfResult::SoftFail,
            mail_auth::SpfResult::Neutral => SpfResult::Neutral,
            mail_auth::SpfResult::None => SpfResult::None,
            mail_auth::SpfResult::TempError => SpfResult::TempError,
            mail_auth::SpfResult::PermError => SpfResult::PermError,
        }
    }
}

/// Which identity was checked (RFC 7208 §2.3, §2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SpfIdentity {
    /// The domain of the MAIL FROM address.
    MailFrom,
    /// The HELO name: what receivers check for a bounce (`MAIL FROM:<>`).
    Helo,
}

/// The outcome of checking whether `domain`'s SPF record lets `ip` send its mail.
///
/// ```
/// use postrider::spf::{SpfIdentity, SpfResult, SpfVerdict};
/// let verdict = SpfVerdict {
///     result: SpfResult::Fail,
///     domain: "ourtest.com".parse()?,
///     ip: "203.0.113.5".parse()?,
///     identity: SpfIdentity::MailFrom,
///     problem: None,
///     explanation: None,
/// };
/// assert_eq!(
///     verdict.advice().as_deref(),
///     Some("SPF for ourtest.com does not authorise 203.0.113.5: add \"ip4:203.0.113.5\" \
///           to its TXT record, or route through a smart host")
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpfVerdict {
    /// What the evaluation gave.
    pub result: SpfResult,
    /// The domain whose record was evaluated: the MAIL FROM domain, or the HELO name for `<>`.
    pub domain: Domain,
    /// The sending address evaluated.
    pub ip: IpAddr,
    /// Which identity `domain` is.
    pub identity: SpfIdentity,
    /// For `permerror` and `temperror`: what is wrong, in words (`include:_spf.example.net
    /// names a domain that publishes no SPF record`, `the TXT lookup of x failed: SERVFAIL
    /// from 192.0.2.53:53`). For `none` on a name that cannot have a record, why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// For `fail`: the domain's own explanation (its `exp=` text), if it publishes one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explanation: Option<String>,
}

impl SpfVerdict {
    /// True when the result lets the mail through at receivers that check SPF strictly.
    pub fn is_pass(&self) -> bool {
        self.result == SpfResult::Pass
    }

    /// False when the address checked is one receivers never see (private, loopback,
    /// link-local, shared NAT space): the result then says nothing about the address
    /// receivers will check, which is the public address a router translates it to.
    pub fn ip_is_public(&self) -> bool {
        is_public(self.ip)
    }

    /// What to do, in words an operator can act on; `None` for `pass`.
    ///
    /// `fail` and `softfail` name the exact term to add: `SPF for ourtest.com does not
    /// authorise 203.0.113.5: add "ip4:203.0.113.5" to its TXT record, or route through a smart
    /// host` (`ip6:` for an IPv6 address). `neutral` and `none` get advice too: such mail is
    /// unauthenticated, and large mailbox providers junk or reject it.
    pub fn advice(&self) -> Option<String> {
        let d = &self.domain;
        let ip = self.ip;
        let term = spf_term(ip);
        if self.result == SpfResult::Pass {
            return None;
        }
        if !self.ip_is_public() {
            return Some(format!(
                "SPF was checked for {ip}, a private address that receivers never see (they see \
                 the public address your router translates it to): configure postrider's \
                 public address so the check means something, and make sure SPF for {d} \
                 authorises it (SPF result for {ip}: {})",
                self.result
            ));
        }
        Some(match self.result {
            SpfResult::Pass => return None,
            SpfResult::Fail | SpfResult::SoftFail => format!(
                "SPF for {d} does not authorise {ip}: add \"{term}\" to its TXT record, or route \
                 through a smart host"
            ),
            SpfResult::Neutral => format!(
                "SPF for {d} neither authorises nor forbids {ip} (neutral), so receivers count \
                 the mail as unauthenticated: add \"{term}\" to its TXT record, or route through \
                 a smart host"
            ),
            SpfResult::None => match &self.problem {
                Some(problem) => format!("{d} cannot have an SPF record: {problem}"),
                None => format!(
                    "{d} publishes no SPF record, so receivers cannot tell that {ip} may send its \
                     mail (large mailbox providers junk or reject such mail): publish a TXT \
                     record such as \"v=spf1 {term} ~all\" that lists all of the domain's \
                     senders, or route through a smart host"
                ),
            },
            SpfResult::PermError => format!(
                "the SPF record of {d} is broken: {}; until it is fixed, receivers count mail \
                 from {d} as unauthenticated",
                self.problem
                    .as_deref()
                    .unwrap_or("the evaluation gave a permanent error")
            ),
            SpfResult::TempError => format!(
                "SPF for {d} could not be checked: {}; check that the name servers answer (the \
                 check is repeated at the next attempt)",
                self.problem
                    .as_deref()
                    .unwrap_or("a DNS lookup failed temporarily")
            ),
        })
    }
}

impl fmt::Display for SpfVerdict {
    /// `spf=fail (ourtest.com, 203.0.113.5)`, as an `Authentication-Results` field would say it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spf={} ({}, {})", self.result, self.domain, self.ip)
    }
}

/// The SPF mechanism that authorises exactly `ip`: `ip4:203.0.113.5`, `ip6:2001:db8::5`.
pub fn spf_term(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => format!("ip4:{v4}"),
        IpAddr::V6(v6) => format!("ip6:{v6}"),
    }
}

/// Whether receivers can see `ip` as a sender. Documentation ranges (192.0.2.0/24,
/// 2001:db8::/32, ...) count as public: examples and tests use them as stand-ins for
/// public addresses, and no real connection comes from them.
pub(crate) fn is_public(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || a == 0
                // Shared address space (RFC 6598), used by carrier-grade NAT.
                || (a == 100 && (64..128).contains(&b)))
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                // Unique local (fc00::/7) and link-local (fe80::/10).
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(result: SpfResult, ip: &str) -> SpfVerdict {
        SpfVerdict {
            result,
            domain: Domain::parse("ourtest.com").unwrap(),
            ip: ip.parse().unwrap(),
            identity: SpfIdentity::MailFrom,
            problem: None,
            explanation: None,
        }
    }

    #[test]
    fn a_failing_ipv4_sender_is_told_the_exact_ip4_term_to_add() {
        let expected = "SPF for ourtest.com does not authorise 203.0.113.5: add \
                        \"ip4:203.0.113.5\" to its TXT record, or route through a smart host";
        assert_eq!(
            verdict(SpfResult::Fail, "203.0.113.5").advice().as_deref(),
            Some(expected)
        );
        assert_eq!(
            verdict(SpfResult::SoftFail, "203.0.113.5")
                .advice()
                .as_deref(),
            Some(expected)
        );
    }

    #[test]
    fn a_failing_ipv6_sender_is_told_the_ip6_term() {
        assert_eq!(
            verdict(SpfResult::Fail, "2001:db8::5").advice().as_deref(),
            Some(
                "SPF for ourtest.com does not authorise 2001:db8::5: add \"ip6:2001:db8::5\" \
                 to its TXT record, or route through a smart host"
            )
        );
    }

    #[test]
    fn an_ipv4_mapped_address_is_advised_as_ipv4() {
        assert_eq!(
            spf_term("::ffff:203.0.113.5".parse().unwrap()),
            "ip4:203.0.113.5"
        );
    }

    #[test]
    fn a_pass_needs_no_advice() {
        assert_eq!(verdict(SpfResult::Pass, "203.0.113.5").advice(), None);
    }

    #[test]
    fn a_broken_record_is_named_with_its_problem() {
        let mut v = verdict(SpfResult::PermError, "203.0.113.5");
        v.problem = Some("the term \"ip4:203.0.113\" is not valid SPF".into());
        assert_eq!(
            v.advice().unwrap(),
            "the SPF record of ourtest.com is broken: the term \"ip4:203.0.113\" is not valid \
             SPF; until it is fixed, receivers count mail from ourtest.com as unauthenticated"
        );
    }

    #[test]
    fn a_temporary_error_says_what_failed_and_that_it_will_be_retried() {
        let mut v = verdict(SpfResult::TempError, "203.0.113.5");
        v.problem = Some("the TXT lookup of ourtest.com failed: SERVFAIL from 127.0.0.1:53".into());
        assert_eq!(
            v.advice().unwrap(),
            "SPF for ourtest.com could not be checked: the TXT lookup of ourtest.com failed: \
             SERVFAIL from 127.0.0.1:53; check that the name servers answer (the check is \
             repeated at the next attempt)"
        );
    }

    #[test]
    fn a_domain_without_spf_is_told_a_record_to_publish() {
        let advice = verdict(SpfResult::None, "203.0.113.5").advice().unwrap();
        assert!(
            advice.contains("publish a TXT record such as \"v=spf1 ip4:203.0.113.5 ~all\""),
            "{advice}"
        );
    }

    #[test]
    fn a_private_address_is_not_advised_into_the_record() {
        let advice = verdict(SpfResult::Fail, "192.168.10.10").advice().unwrap();
        assert!(advice.contains("private address"), "{advice}");
        assert!(!advice.contains("\"ip4:192.168.10.10\""), "{advice}");
    }

    #[test]
    fn private_loopback_link_local_and_cgnat_addresses_are_not_public() {
        for ip in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.10.10",
            "127.0.0.1",
            "169.254.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:192.168.1.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip} counted as public");
        }
        for ip in [
            "203.0.113.5",
            "8.8.8.8",
            "100.128.0.1",
            "2001:db8::5",
            "2a00::1",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip} counted as private");
        }
    }

    #[test]
    fn a_verdict_displays_like_an_authentication_result() {
        assert_eq!(
            verdict(SpfResult::SoftFail, "203.0.113.5").to_string(),
            "spf=softfail (ourtest.com, 203.0.113.5)"
        );
    }
}
