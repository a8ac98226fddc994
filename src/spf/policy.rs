//! What to do with an SPF verdict before a direct-to-MX delivery: the configured policy and
//! the pure decision function.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::verdict::{SpfResult, SpfVerdict};
use crate::status::{Diagnostic, EnhancedStatus};

/// X.7.23 "SPF validation failed" (RFC 7372), temporary form: what a strict policy defers
/// with when the record says fail or softfail. The engine makes it 5.7.23 if the message
/// expires still failing.
pub const SPF_VALIDATION_FAILED: EnhancedStatus = EnhancedStatus::new(4, 7, 23);

/// X.7.24 "SPF validation error" (RFC 7372), temporary form: what a strict policy defers
/// with when the record is broken or could not be read.
pub const SPF_VALIDATION_ERROR: EnhancedStatus = EnhancedStatus::new(4, 7, 24);

/// What to do when SPF would not pass for a direct-to-MX delivery.
///
/// In configuration files: `off`, `warn`, `smart-host`, `strict`.
///
/// ```
/// use postrider::spf::SpfPolicy;
/// assert_eq!("smart-host".parse::<SpfPolicy>()?, SpfPolicy::SmartHost);
/// assert_eq!(SpfPolicy::default_for(true), SpfPolicy::SmartHost);
/// assert_eq!(SpfPolicy::default_for(false), SpfPolicy::Warn);
/// # Ok::<(), postrider::spf::SpfPolicyError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SpfPolicy {
    /// Do not check.
    Off,
    /// Deliver anyway, and say why it will likely be junked or refused (log and event).
    Warn,
    /// When SPF would fail or softfail and a smart host is configured, send through the smart
    /// host instead; otherwise as `warn`. The default when a smart host exists.
    SmartHost,
    /// Defer (4.7.23 on fail/softfail, 4.7.24 on a broken or unreadable record) rather than
    /// send mail that will be refused; the message bounces with 5.7.23/5.7.24 if it is still
    /// failing when it expires.
    Strict,
}

impl SpfPolicy {
    /// The default: `smart-host` when a smart host is configured, else `warn`.
    pub fn default_for(smart_host_configured: bool) -> SpfPolicy {
        if smart_host_configured {
            SpfPolicy::SmartHost
        } else {
            SpfPolicy::Warn
        }
    }

    /// The name used in configuration files.
    pub fn as_str(&self) -> &'static str {
        match self {
            SpfPolicy::Off => "off",
            SpfPolicy::Warn => "warn",
            SpfPolicy::SmartHost => "smart-host",
            SpfPolicy::Strict => "strict",
        }
    }
}

impl fmt::Display for SpfPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A policy name that is not one of `off`, `warn`, `smart-host`, `strict`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown SPF policy {input:?} (expected off, warn, smart-host or strict)")]
pub struct SpfPolicyError {
    /// The text that was refused.
    pub input: String,
}

impl FromStr for SpfPolicy {
    type Err = SpfPolicyError;
    fn from_str(s: &str) -> Result<SpfPolicy, SpfPolicyError> {
        match s {
            "off" => Ok(SpfPolicy::Off),
            "warn" => Ok(SpfPolicy::Warn),
            "smart-host" => Ok(SpfPolicy::SmartHost),
            "strict" => Ok(SpfPolicy::Strict),
            _ => Err(SpfPolicyError {
                input: s.to_string(),
            }),
        }
    }
}

/// What the transport does with one direct-to-MX delivery after the SPF pre-flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpfDecision {
    /// Deliver; nothing to say.
    Deliver,
    /// Deliver, and put this advice in the log line and the delivery event.
    DeliverWithWarning(String),
    /// Do not connect to the MX: send through the smart host instead (and log the advice).
    UseSmartHost(String),
    /// Do not send: defer the recipients with this status and text.
    Defer {
        /// [`SPF_VALIDATION_FAILED`] or [`SPF_VALIDATION_ERROR`].
        status: EnhancedStatus,
        /// Why, and what fixes it.
        advice: String,
    },
}

impl SpfDecision {
    /// The advice to log, if any.
    pub fn advice(&self) -> Option<&str> {
        match self {
            SpfDecision::Deliver => None,
            SpfDecision::DeliverWithWarning(advice)
            | SpfDecision::UseSmartHost(advice)
            | SpfDecision::Defer { advice, .. } => Some(advice),
        }
    }

    /// For [`SpfDecision::Defer`], the diagnostic to report as `Outcome::Deferred`.
    pub fn deferral(&self) -> Option<Diagnostic> {
        match self {
            SpfDecision::Defer { status, advice } => {
                Some(Diagnostic::local(*status, advice.clone()))
            }
            _ => None,
        }
    }
}

/// Applies `policy` to `verdict`. Pure: the transport calls it after
/// [`SpfChecker::check`](super::SpfChecker::check), the tests call it directly.
///
/// - `off`, or `pass`: [`SpfDecision::Deliver`].
/// - An egress address receivers never see (private, loopback): deliver with a warning
///   whatever the result, because the result is about the wrong address.
/// - `strict`: `fail`/`softfail` defer with 4.7.23, `permerror`/`temperror` with 4.7.24.
/// - `smart-host` with a smart host available: `fail`/`softfail` go through the smart host.
///   Without one it acts as `warn`.
/// - Everything else (`warn`; `neutral` and `none` under any policy; `permerror` and
///   `temperror` under `smart-host`, where the smart host cannot fix a broken record or our
///   DNS): deliver with a warning. `neutral` and `none` warn because the mail arrives
///   unauthenticated, which large mailbox providers junk or refuse.
///
/// ```
/// use postrider::spf::{decide, SpfDecision, SpfIdentity, SpfPolicy, SpfResult, SpfVerdict};
/// let verdict = SpfVerdict {
///     result: SpfResult::SoftFail,
///     domain: "ourtest.com".parse()?,
///     ip: "203.0.113.5".parse()?,
///     identity: SpfIdentity::MailFrom,
///     problem: None,
///     explanation: None,
/// };
/// assert!(matches!(decide(SpfPolicy::SmartHost, &verdict, true), SpfDecision::UseSmartHost(_)));
/// assert!(matches!(decide(SpfPolicy::SmartHost, &verdict, false), SpfDecision::DeliverWithWarning(_)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn decide(policy: SpfPolicy, verdict: &SpfVerdict, smart_host_available: bool) -> SpfDecision {
    if policy == SpfPolicy::Off {
        return SpfDecision::Deliver;
    }
    let Some(advice) = verdict.advice() else {
        return SpfDecision::Deliver;
    };
    if !verdict.ip_is_public() {
        return SpfDecision::DeliverWithWarning(advice);
    }
    match (policy, verdict.result) {
        (SpfPolicy::Strict, SpfResult::Fail | SpfResult::SoftFail) => SpfDecision::Defer {
            status: SPF_VALIDATION_FAILED,
            advice,
        },
        (SpfPolicy::Strict, SpfResult::PermError | SpfResult::TempError) => SpfDecision::Defer {
            status: SPF_VALIDATION_ERROR,
            advice,
        },
        (SpfPolicy::SmartHost, SpfResult::Fail | SpfResult::SoftFail) if smart_host_available => {
            SpfDecision::UseSmartHost(advice)
        }
        _ => SpfDecision::DeliverWithWarning(advice),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::Domain;
    use crate::spf::SpfIdentity;

    const ALL: [SpfResult; 7] = [
        SpfResult::Pass,
        SpfResult::Fail,
        SpfResult::SoftFail,
        SpfResult::Neutral,
        SpfResult::None,
        SpfResult::TempError,
        SpfResult::PermError,
    ];

    fn verdict(result: SpfResult) -> SpfVerdict {
        verdict_from(result, "203.0.113.5")
    }

    fn verdict_from(result: SpfResult, ip: &str) -> SpfVerdict {
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
    fn policy_names_parse_and_print_as_in_configuration_files() {
        for policy in [
            SpfPolicy::Off,
            SpfPolicy::Warn,
            SpfPolicy::SmartHost,
            SpfPolicy::Strict,
        ] {
            assert_eq!(policy.as_str().parse::<SpfPolicy>().unwrap(), policy);
            let json = serde_json::to_string(&policy).unwrap();
            assert_eq!(json, format!("\"{policy}\""));
            assert_eq!(serde_json::from_str::<SpfPolicy>(&json).unwrap(), policy);
        }
        let err = "reject".parse::<SpfPolicy>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown SPF policy \"reject\" (expected off, warn, smart-host or strict)"
        );
    }

    #[test]
    fn the_default_policy_is_smart_host_only_when_a_smart_host_exists() {
        assert_eq!(SpfPolicy::default_for(true), SpfPolicy::SmartHost);
        assert_eq!(SpfPolicy::default_for(false), SpfPolicy::Warn);
    }

    #[test]
    fn off_always_delivers_silently() {
        for result in ALL {
            assert_eq!(
                decide(SpfPolicy::Off, &verdict(result), true),
                SpfDecision::Deliver
            );
        }
    }

    #[test]
    fn a_pass_always_delivers_silently() {
        for policy in [SpfPolicy::Warn, SpfPolicy::SmartHost, SpfPolicy::Strict] {
            assert_eq!(
                decide(policy, &verdict(SpfResult::Pass), true),
                SpfDecision::Deliver
            );
        }
    }

    #[test]
    fn warn_delivers_everything_but_a_pass_with_the_advice() {
        for result in ALL.into_iter().filter(|r| *r != SpfResult::Pass) {
            let v = verdict(result);
            assert_eq!(
                decide(SpfPolicy::Warn, &v, true),
                SpfDecision::DeliverWithWarning(v.advice().unwrap()),
                "{result}"
            );
        }
    }

    #[test]
    fn smart_host_reroutes_fail_and_softfail_when_a_smart_host_is_available() {
        for result in [SpfResult::Fail, SpfResult::SoftFail] {
            let v = verdict(result);
            assert_eq!(
                decide(SpfPolicy::SmartHost, &v, true),
                SpfDecision::UseSmartHost(v.advice().unwrap())
            );
        }
    }

    #[test]
    fn smart_host_without_a_smart_host_degrades_to_warn() {
        for result in [SpfResult::Fail, SpfResult::SoftFail] {
            let v = verdict(result);
            assert_eq!(
                decide(SpfPolicy::SmartHost, &v, false),
                SpfDecision::DeliverWithWarning(v.advice().unwrap())
            );
        }
    }

    #[test]
    fn smart_host_delivers_broken_unreadable_neutral_and_missing_records_with_a_warning() {
        for result in [
            SpfResult::PermError,
            SpfResult::TempError,
            SpfResult::Neutral,
            SpfResult::None,
        ] {
            assert!(
                matches!(
                    decide(SpfPolicy::SmartHost, &verdict(result), true),
                    SpfDecision::DeliverWithWarning(_)
                ),
                "{result}"
            );
        }
    }

    #[test]
    fn strict_defers_fail_and_softfail_with_4_7_23() {
        for result in [SpfResult::Fail, SpfResult::SoftFail] {
            let v = verdict(result);
            let decision = decide(SpfPolicy::Strict, &v, true);
            assert_eq!(
                decision,
                SpfDecision::Defer {
                    status: EnhancedStatus::new(4, 7, 23),
                    advice: v.advice().unwrap()
                }
            );
            let diagnostic = decision.deferral().unwrap();
            assert_eq!(diagnostic.status.to_string(), "4.7.23");
            assert_eq!(diagnostic.status.with_class(5).to_string(), "5.7.23");
            assert_eq!(diagnostic.text, v.advice().unwrap());
        }
    }

    #[test]
    fn strict_defers_permerror_and_temperror_with_4_7_24() {
        for result in [SpfResult::PermError, SpfResult::TempError] {
            assert!(
                matches!(
                    decide(SpfPolicy::Strict, &verdict(result), false),
                    SpfDecision::Defer { status, .. } if status == EnhancedStatus::new(4, 7, 24)
                ),
                "{result}"
            );
        }
    }

    #[test]
    fn strict_delivers_neutral_and_none_with_a_warning() {
        for result in [SpfResult::Neutral, SpfResult::None] {
            assert!(matches!(
                decide(SpfPolicy::Strict, &verdict(result), true),
                SpfDecision::DeliverWithWarning(_)
            ));
        }
    }

    #[test]
    fn a_private_egress_address_never_defers_or_reroutes() {
        for policy in [SpfPolicy::Warn, SpfPolicy::SmartHost, SpfPolicy::Strict] {
            for result in ALL.into_iter().filter(|r| *r != SpfResult::Pass) {
                let decision = decide(policy, &verdict_from(result, "192.168.10.10"), true);
                assert!(
                    matches!(&decision, SpfDecision::DeliverWithWarning(a) if a.contains("private address")),
                    "{policy} {result}: {decision:?}"
                );
            }
        }
    }

    #[test]
    fn only_a_deferral_has_a_diagnostic() {
        assert_eq!(SpfDecision::Deliver.deferral(), None);
        assert_eq!(SpfDecision::Deliver.advice(), None);
        let warn = SpfDecision::DeliverWithWarning("x".into());
        assert_eq!(warn.deferral(), None);
        assert_eq!(warn.advice(), Some("x"));
    }
}
