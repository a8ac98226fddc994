//! Which TLS rule applies to mail for a domain, and why: for `sendmail -bv`, the doctor and
//! an administrator wondering why mail to a domain waits.

use std::fmt;

use super::mta_sts::StsLookup;
use super::rules::{HostRule, OutboundTls};
use crate::address::Domain;
use crate::resolve::Resolver;
use crate::route::{NextHop, PolicyTable, TlsLevel};

/// Where the rule for a domain comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySource {
    /// A policy file line names the domain's hop: it wins over anything discovered.
    PolicyFile(TlsLevel),
    /// Nothing discovered applies (or discovery is off): the policy file's default.
    Default(TlsLevel),
    /// MTA-STS or DANE decide, host by host.
    Discovered,
}

/// The explanation [`explain`] gives.
#[derive(Debug, Clone)]
pub struct TlsPolicyExplanation {
    /// The domain.
    pub domain: Domain,
    /// Where the rule comes from.
    pub source: PolicySource,
    /// What MTA-STS found, in words (`None` when it is off).
    pub mta_sts: Option<String>,
    /// What DANE found for the MX answer, in words (`None` when it is off).
    pub dane: Option<String>,
    /// Each MX host (delivery order) and its rule in words.
    pub hosts: Vec<(Domain, String)>,
    /// Why the MX hosts could not be listed.
    pub mx_error: Option<String>,
}

impl fmt::Display for TlsPolicyExplanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            PolicySource::PolicyFile(level) => write!(
                f,
                "{}: TLS {level}, pinned by the policy file (discovered policies are not consulted)",
                self.domain
            )?,
            PolicySource::Default(level) => write!(
                f,
                "{}: TLS {level} (the policy file's default; no MTA-STS or DANE policy applies)",
                self.domain
            )?,
            PolicySource::Discovered => {
                write!(f, "{}: TLS as the domain publishes it", self.domain)?
            }
        }
        if let Some(s) = &self.mta_sts {
            write!(f, "\n  MTA-STS: {s}")?;
        }
        if let Some(d) = &self.dane {
            write!(f, "\n  DANE: {d}")?;
        }
        for (host, rule) in &self.hosts {
            write!(f, "\n  MX {host}: {rule}")?;
        }
        if let Some(e) = &self.mx_error {
            write!(f, "\n  MX lookup failed: {e}")?;
        }
        Ok(())
    }
}

/// Explains the TLS rule for mail to `domain` delivered to its MX hosts: the policy file's
/// line for the domain if there is one, else what DANE and MTA-STS say per MX host, else
/// the policy file's default.
pub async fn explain(
    domain: &Domain,
    table: &PolicyTable,
    outbound: Option<&OutboundTls>,
    resolver: &dyn Resolver,
) -> TlsPolicyExplanation {
    let hop = NextHop::mx(domain.clone(), None);
    let mut out = TlsPolicyExplanation {
        domain: domain.clone(),
        source: PolicySource::Default(table.default_policy().tls),
        mta_sts: None,
        dane: None,
        hosts: Vec::new(),
        mx_error: None,
    };
    if let Some(p) = table.explicit(&hop) {
        out.source = PolicySource::PolicyFile(p.tls);
        return out;
    }
    let Some(outbound) = outbound else {
        return out;
    };
    let found = outbound.discover(domain).await;
    out.mta_sts = outbound.mta_sts().map(|_| match &found.sts {
        Some(StsLookup::Policy { cached, stale }) => format!(
            "mode {} (id {}, mx: {}){}",
            cached.policy.mode,
            cached.id,
            cached.policy.mx_list(),
            stale
                .as_ref()
                .map(|s| format!("; cached copy used: {s}"))
                .unwrap_or_default()
        ),
        Some(StsLookup::Unavailable { reason, .. }) => {
            format!("announced but unavailable ({reason}); delivering as without a policy")
        }
        _ => "no policy".to_string(),
    });
    out.dane = outbound
        .dane()
        .map(|_| match (&found.secure_mx, &found.bogus) {
            (_, Some(reason)) => format!("the MX answer fails DNSSEC validation ({reason})"),
            (Some(_), None) => "the MX answer is DNSSEC-signed: TLSA records are looked up".into(),
            (None, None) => "the MX answer is not DNSSEC-signed: DANE does not apply".into(),
        });
    let hosts = match resolver.mail_exchangers(domain).await {
        Ok(h) => h,
        Err(e) => {
            out.mx_error = Some(e.to_string());
            return out;
        }
    };
    let mut any = false;
    for mx in hosts {
        let rule = outbound.host_rule(&found, &mx.host, 25).await;
        let words = match &rule {
            HostRule::Normal => format!(
                "TLS {} (no policy for this host)",
                table.default_policy().tls
            ),
            HostRule::Dane { records } => format!(
                "DANE: TLS required, certificate must match {} TLSA record(s) ({})",
                records.len(),
                records
                    .iter()
                    .map(|r| format!("{} {} {}", r.usage, r.selector, r.matching))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            HostRule::DaneUnusable => {
                "DANE: TLS required, no usable TLSA record, certificate not checked".into()
            }
            HostRule::StsEnforce => {
                "MTA-STS enforce: TLS required with a certificate valid for this name".into()
            }
            HostRule::StsTesting => {
                "MTA-STS testing: TLS as usual; failures are reported, not enforced".into()
            }
            HostRule::Refuse { reason, .. } => format!("not used: {reason}"),
        };
        any |= !matches!(rule, HostRule::Normal);
        out.hosts.push((mx.host, words));
    }
    if any {
        out.source = PolicySource::Discovered;
    }
    out
}
