//! `tls-policy`: which TLS rule mail to a domain would meet (the policy file's line, DANE,
//! MTA-STS) and why, for the probe domain and each sender domain (what other MTAs meet when
//! they mail us). A host that a published policy rules out, or a policy that is announced but
//! cannot be fetched, is a warning: mail to that domain waits or loses its protection. A
//! domain under the plain default (it publishes nothing, no policy line) is not reported.

use super::{Check, Doctor, Finding, no_dns};
use crate::route::PolicyTable;
use crate::tls_policy::{PolicySource, explain};

pub(super) async fn check(d: &Doctor) -> Vec<Finding> {
    let mut domains: Vec<_> = d.options.probe_domain.iter().cloned().collect();
    for s in &d.config.spf.sender_domains {
        if !domains.contains(s) {
            domains.push(s.clone());
        }
    }
    if domains.is_empty() {
        return Vec::new();
    }
    let dns = match &d.dns {
        Ok(dns) => dns,
        Err(e) => return vec![no_dns(Check::TlsPolicy, e)],
    };
    // The doctor's own cache is kept in memory: a check must not change what delivery sees.
    let mut section = d.config.tls.clone();
    section.state_directory = None;
    let roots = d
        .tls_roots
        .clone()
        .unwrap_or_else(crate::transport::esmtp::default_roots);
    let hostname = d.ehlo_name().await;
    let outbound = match section.outbound(&hostname, dns, roots, None) {
        Ok(o) => o,
        Err(e) => {
            return vec![
                Finding::fail(Check::TlsPolicy, e.to_string())
                    .with_fix(format!("correct the [tls] section of {}", d.config_file())),
            ];
        }
    };
    let table = d
        .config
        .load_policy()
        .map(|(t, _)| t)
        .unwrap_or_else(|_| PolicyTable::new());
    let mut findings = Vec::new();
    for domain in domains {
        let e = explain(&domain, &table, outbound.as_ref(), dns).await;
        let refused = e
            .hosts
            .iter()
            .any(|(_, rule)| rule.starts_with("not used:"));
        let unavailable = e
            .mta_sts
            .as_deref()
            .is_some_and(|s| s.starts_with("announced but unavailable"));
        let detail = e.to_string();
        if refused || unavailable {
            findings.push(Finding::warn(Check::TlsPolicy, detail));
        } else if e.source != PolicySource::Default(table.default_policy().tls) {
            findings.push(Finding::pass(Check::TlsPolicy, detail));
        }
        // A domain that publishes nothing gets the default: nothing to report (and an MX
        // lookup that fails is the port25 and hostname checks' business).
    }
    findings
}
