//! What the doctor reports: one [`Finding`] per thing checked, with a verdict and the fix.

use std::fmt;
use std::time::Duration;

/// Which check a finding comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Check {
    /// The resolver could be set up (reported only when it could not).
    Dns,
    /// The host name is fully qualified and resolves.
    Hostname,
    /// SPF of each sender domain authorises the address receivers see.
    Spf,
    /// Each DKIM key can be read and its DNS record matches it.
    Dkim,
    /// Outbound port 25 to a domain's MX answers.
    Port25,
    /// The smart host answers and talks SMTP.
    SmartHost,
    /// The smart host's STARTTLS and certificate.
    SmartHostTls,
    /// The smart host accepts the credentials.
    SmartHostAuth,
    /// The mailertable (and local-host-names) parse.
    Mailertable,
    /// The TLS and credentials policy file parses.
    Policy,
    /// The spool directory is writable and fsync works there.
    Spool,
    /// Each listener can do its job (a submission port with passwords and TLS), and the
    /// access and password files parse.
    Listener,
    /// A listener's certificate: readable, not expired or about to, covering the host name.
    ListenerTls,
    /// Who may relay: not nobody (the LAN's PBX), not everybody (an open relay).
    Relaying,
    /// The TLS rule mail to a domain meets (policy file, DANE, MTA-STS) and why.
    TlsPolicy,
    /// Dovecot reads local mail where postrider delivers it.
    Mailbox,
}

impl Check {
    /// The name printed before the detail: `hostname`, `smart-host-auth`, ...
    pub fn name(&self) -> &'static str {
        match self {
            Check::Dns => "dns",
            Check::Hostname => "hostname",
            Check::Spf => "spf",
            Check::Dkim => "dkim",
            Check::Port25 => "port25",
            Check::SmartHost => "smart-host",
            Check::SmartHostTls => "smart-host-tls",
            Check::SmartHostAuth => "smart-host-auth",
            Check::Mailertable => "mailertable",
            Check::Policy => "policy",
            Check::Spool => "spool",
            Check::Listener => "listener",
            Check::ListenerTls => "listener-tls",
            Check::Relaying => "relaying",
            Check::TlsPolicy => "tls-policy",
            Check::Mailbox => "mailbox",
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a check came out. Ordered: `Pass < Warn < Fail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    /// Works as it should.
    Pass,
    /// Mail goes out, but something is off or could not be checked.
    Warn,
    /// Mail will not go out, or receivers will refuse or junk it, until this is fixed.
    Fail,
}

impl Verdict {
    /// `PASS`, `WARN` or `FAIL`.
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// One thing the doctor found.
///
/// It displays as the doctor example prints it: the verdict, the check and the detail on one
/// line, and the fix indented on the next:
///
/// ```
/// use postrider::doctor::{Check, Finding};
/// let f = Finding::fail(Check::Spf, "SPF for ourtest.com does not authorise 203.0.113.5 (spf=fail)")
///     .with_fix("add \"ip4:203.0.113.5\" to the TXT record of ourtest.com");
/// assert_eq!(
///     f.to_string(),
///     "FAIL  spf: SPF for ourtest.com does not authorise 203.0.113.5 (spf=fail)\n      \
///      fix: add \"ip4:203.0.113.5\" to the TXT record of ourtest.com"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The check.
    pub check: Check,
    /// How it came out.
    pub verdict: Verdict,
    /// What was found, naming the host, file, line or address concerned.
    pub detail: String,
    /// What to do about it, in the words of the configuration files; `None` for a pass.
    pub fix: Option<String>,
}

impl Finding {
    /// A finding without a fix.
    pub fn new(check: Check, verdict: Verdict, detail: impl Into<String>) -> Finding {
        Finding {
            check,
            verdict,
            detail: detail.into(),
            fix: None,
        }
    }

    /// A pass.
    pub fn pass(check: Check, detail: impl Into<String>) -> Finding {
        Finding::new(check, Verdict::Pass, detail)
    }

    /// A warning.
    pub fn warn(check: Check, detail: impl Into<String>) -> Finding {
        Finding::new(check, Verdict::Warn, detail)
    }

    /// A failure.
    pub fn fail(check: Check, detail: impl Into<String>) -> Finding {
        Finding::new(check, Verdict::Fail, detail)
    }

    /// The same finding with a fix.
    pub fn with_fix(mut self, fix: impl Into<String>) -> Finding {
        self.fix = Some(fix.into());
        self
    }

    /// The same finding with a fix, when there is one.
    pub fn with_fix_opt(mut self, fix: Option<String>) -> Finding {
        self.fix = fix;
        self
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}  {}: {}", self.verdict, self.check, self.detail)?;
        if let Some(fix) = &self.fix {
            write!(f, "\n      fix: {fix}")?;
        }
        Ok(())
    }
}

/// The worst verdict among `findings`; `None` for none.
pub fn worst(findings: &[Finding]) -> Option<Verdict> {
    findings.iter().map(|f| f.verdict).max()
}

/// `3s`, `200ms`, `1.5s`: a timeout as an operator writes it.
pub(crate) fn duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else if d.as_secs() == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_prints_one_line_and_a_failure_its_fix_below() {
        let pass = Finding::pass(Check::Spool, "spool /var/spool/postrider is writable");
        assert_eq!(
            pass.to_string(),
            "PASS  spool: spool /var/spool/postrider is writable"
        );
        let fail = Finding::fail(Check::Mailertable, "mailertable:7: unknown mailer").with_fix("x");
        assert_eq!(
            fail.to_string(),
            "FAIL  mailertable: mailertable:7: unknown mailer\n      fix: x"
        );
    }

    #[test]
    fn the_worst_verdict_decides() {
        let list = [
            Finding::pass(Check::Spool, "a"),
            Finding::warn(Check::Spf, "b"),
        ];
        assert_eq!(worst(&list), Some(Verdict::Warn));
        assert_eq!(worst(&[]), None);
    }

    #[test]
    fn durations_read_as_written_in_a_config() {
        assert_eq!(duration(Duration::from_secs(3)), "3s");
        assert_eq!(duration(Duration::from_millis(200)), "200ms");
        assert_eq!(duration(Duration::from_millis(1500)), "1.5s");
    }
}
