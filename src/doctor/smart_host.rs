//! `smart-host`, `smart-host-tls`, `smart-host-auth`: each smart host is probed as a delivery
//! would use it (the transport's own session setup, then QUIT: no mail is sent), and each
//! step is judged.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use super::{Check, Doctor, Finding, Verdict, no_dns};
use crate::route::parse_hop;
use crate::route::table_file::content_lines;
use crate::route::{Mailer, NextHop, PolicyTable, TlsLevel};
use crate::transport::esmtp::{
    AuthProbe, CertificateProbe, EsmtpTransport, ProbeReport, Timeouts, TlsProbe,
};

pub(crate) async fn check(d: &Doctor) -> Vec<Finding> {
    let Some(smart) = &d.config.smart_host else {
        return Vec::new();
    };
    let dns = match &d.dns {
        Ok(dns) => dns.clone(),
        Err(e) => return vec![no_dns(Check::SmartHost, e)],
    };
    let (policy, policy_broken) = match d.config.load_policy() {
        Ok((table, _)) => (table, false),
        // The policy check reports the errors; the probe still tells whether the smart host
        // answers and speaks TLS.
        Err(_) => (PolicyTable::new(), true),
    };
    // The transport the engine runs (loop detection, SPF, trust anchors, the per-host limit),
    // with short time limits: a probe should answer in seconds, not in RFC 5321's minutes.
    let hostname = d.ehlo_name().await;
    let mut config = match d.config.esmtp_config(&hostname, &dns) {
        Ok((config, _)) => config,
        Err(e) => {
            return vec![
                Finding::fail(Check::SmartHost, format!("not checked: {e}"))
                    .with_fix(format!("correct {}", d.config_file())),
            ];
        }
    };
    config.connection_cache = None;
    let t = d.options.smart_host_timeout;
    config.timeouts = Timeouts {
        connect: t,
        greeting: t,
        helo: t,
        tls: t,
        auth: t,
        quit: t,
        ..Timeouts::default()
    };
    if let Some(roots) = &d.tls_roots {
        config.tls_roots = roots.clone();
    }
    let transport = EsmtpTransport::new(config, Arc::new(dns), Arc::new(policy));
    let mut findings = Vec::new();
    for hop in smart.hops() {
        let report = transport.probe(smart.mailer(), hop).await;
        findings.extend(judge(d, &report, policy_broken));
    }
    findings
}

fn judge(d: &Doctor, r: &ProbeReport, policy_broken: bool) -> Vec<Finding> {
    let hop = &r.hop;
    let failure = r.failure.as_ref().map(|f| f.text.clone());
    if let AuthProbe::TokenUnavailable { reason } = &r.auth {
        // Checked before connecting: nothing else is known about the server.
        return vec![
            Finding::fail(Check::SmartHostAuth, reason.clone()).with_fix(format!(
                "check the OAuth2 token source of {hop} in {} (for token-refresh=: the \
             token_endpoint, client_id, client_secret and refresh_token in its file; a refresh \
             token the provider revoked must be obtained again)",
                policy_line_of(d, hop)
            )),
        ];
    }
    let Some(server) = &r.server else {
        let why = if r.unreachable.is_empty() {
            failure.unwrap_or_default()
        } else {
            r.unreachable
                .iter()
                .map(|u| u.text.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        };
        return vec![
            Finding::fail(
                Check::SmartHost,
                format!("smart host {hop} cannot be reached: {why}"),
            )
            .with_fix(format!(
                "check smart_host in {} (the host, and the port: submission is 587, implicit \
                 TLS is smtps:[host]:465) and that a firewall lets this host connect to port {}",
                d.config_file(),
                r.port
            )),
        ];
    };
    let mut findings = Vec::new();
    let greeting = r
        .greeting
        .as_ref()
        .map(|g| g.one_line())
        .unwrap_or_default();
    let talked = r.greeting.as_ref().is_some_and(|g| g.is_positive()) && r.capabilities.is_some();
    if !talked {
        let from = r.local.map(|ip| format!(" ({ip})")).unwrap_or_default();
        findings.push(
            Finding::fail(
                Check::SmartHost,
                format!(
                    "smart host {hop} answers at {server} but will not talk to this host: {}",
                    failure.unwrap_or(greeting)
                ),
            )
            .with_fix(format!(
                "ask the smart host's operator to accept this host's address{from} (Google \
                 Workspace's smtp-relay: allow it in the admin console's SMTP relay setting), \
                 or use another smart host"
            )),
        );
        return findings;
    }
    findings.push(Finding::pass(
        Check::SmartHost,
        format!("smart host {hop} answers at {server}: {greeting}"),
    ));
    findings.extend(tls(d, r, server));
    findings.extend(auth(d, r, server, policy_broken));
    findings
}

fn tls(d: &Doctor, r: &ProbeReport, server: &str) -> Option<Finding> {
    let hop = &r.hop;
    let how = if r.mailer == Mailer::Smtps {
        "implicit TLS"
    } else {
        "STARTTLS"
    };
    let host = hop.host.to_string();
    let secret = if r.user.is_some() {
        " and the password travel"
    } else {
        " travels"
    };
    let use_tls = format!(
        "use the port that offers STARTTLS (submission, 587) or implicit TLS (smart_host = \
         \"smtps:[{host}]:465\") in {}",
        d.config_file()
    );
    let failure = r
        .failure
        .as_ref()
        .map(|f| f.text.clone())
        .unwrap_or_default();
    Some(match &r.tls {
        TlsProbe::Up {
            protocol,
            certificate,
        } => {
            let protocol = protocol.as_deref().unwrap_or("TLS");
            match certificate {
                CertificateProbe::Invalid { reason } => Finding::warn(
                    Check::SmartHostTls,
                    format!(
                        "{how} with {server} is up ({protocol}), but its certificate would not \
                         pass \"verify\": {reason}"
                    ),
                )
                .with_fix(format!(
                    "the connection is encrypted but the server is not authenticated, so mail \
                     and password could go to an impostor: name the host the certificate is \
                     for in smart_host, or have the certificate fixed; keep the policy of \
                     {hop} at {} until then (verify would refuse it)",
                    r.tls_level
                )),
                CertificateProbe::Valid => Finding::pass(
                    Check::SmartHostTls,
                    format!(
                        "{how} with {server} is up ({protocol}); the certificate is valid for \
                         {host}"
                    ),
                ),
                _ => Finding::pass(
                    Check::SmartHostTls,
                    format!("{how} with {server} is up ({protocol}); certificate not checked"),
                ),
            }
        }
        TlsProbe::Failed { reason } => {
            let fix = if r.tls_level == TlsLevel::Verify {
                format!(
                    "have the certificate fixed, or name the host it is for in smart_host; \
                     (\"encrypt\" instead of \"verify\" for {hop} in {} would accept it, \
                     without authenticating the server)",
                    policy_file(d)
                )
            } else {
                format!(
                    "the server's TLS does not work with postrider ({reason}): ask its \
                     operator, or {use_tls}"
                )
            };
            Finding::fail(Check::SmartHostTls, or(failure, reason)).with_fix(fix)
        }
        TlsProbe::NotOffered | TlsProbe::Refused { .. } => {
            let what = match &r.tls {
                TlsProbe::Refused { reply } => format!("refused STARTTLS: {}", reply.one_line()),
                _ => "does not offer STARTTLS".to_string(),
            };
            if r.tls_level.requires_tls() {
                Finding::fail(Check::SmartHostTls, or(failure, &what)).with_fix(use_tls)
            } else {
                Finding::warn(
                    Check::SmartHostTls,
                    format!("{server} {what}: mail{secret} in clear text"),
                )
                .with_fix(use_tls)
            }
        }
        TlsProbe::NotTried if r.tls_level == TlsLevel::None => Finding::warn(
            Check::SmartHostTls,
            format!("TLS is off for {hop} (policy none): mail{secret} in clear text"),
        )
        .with_fix(format!(
            "set the level of {hop} to encrypt (or verify) in {}",
            policy_file(d)
        )),
        _ => return None,
    })
}

fn auth(d: &Doctor, r: &ProbeReport, server: &str, policy_broken: bool) -> Option<Finding> {
    let hop = &r.hop;
    let user = r.user.as_deref().unwrap_or_default();
    let failure = r
        .failure
        .as_ref()
        .map(|f| f.text.clone())
        .unwrap_or_default();
    let at_line = policy_line_of(d, hop);
    let offered = r
        .capabilities
        .as_ref()
        .map(|c| c.auth.join(" "))
        .unwrap_or_default();
    Some(match &r.auth {
        AuthProbe::Accepted { mechanism } => Finding::pass(
            Check::SmartHostAuth,
            if r.oauth2.is_some() {
                format!("{server} accepts the OAuth2 token of {user} (AUTH {mechanism})")
            } else {
                format!("{server} accepts the credentials of {user} (AUTH {mechanism})")
            },
        ),
        AuthProbe::Refused { reply } => {
            let verdict = if reply.is_transient() {
                Verdict::Warn
            } else {
                Verdict::Fail
            };
            let fix = if reply.is_transient() {
                "the server could not check the credentials now; run the doctor again later"
                    .to_string()
            } else if r.oauth2.is_some() {
                format!(
                    "the server refused the OAuth2 token of {user}: check that the app was \
                     granted the SMTP scope (Microsoft 365: SMTP.Send, and SMTP AUTH enabled \
                     for the mailbox; Google: https://mail.google.com/) and that user= in \
                     {at_line} is the mailbox the token belongs to"
                )
            } else {
                format!(
                    "check the user name and password for {hop} in {at_line} (Gmail and \
                     Google Workspace need an app password)"
                )
            };
            Finding::new(Check::SmartHostAuth, verdict, failure).with_fix(fix)
        }
        AuthProbe::NotConfigured if policy_broken => Finding::warn(
            Check::SmartHostAuth,
            format!("credentials for {hop} not tried: the policy file has errors (see policy)"),
        ),
        AuthProbe::NotConfigured if !offered.is_empty() => Finding::warn(
            Check::SmartHostAuth,
            format!(
                "{server} offers AUTH ({offered}), but the policy has no credentials for {hop}: \
                 without them it will probably refuse to relay"
            ),
        )
        .with_fix(match &d.config.policy {
            Some(p) => format!("add \"{hop} encrypt USER:PASSWORD\" to {}", p.display()),
            None => format!(
                "create a policy file with the line \"{hop} encrypt USER:PASSWORD\" (mode 600) \
                 and set policy = \"tls-policy\" in {}",
                d.config_file()
            ),
        }),
        AuthProbe::NotConfigured => Finding::pass(
            Check::SmartHostAuth,
            format!("no credentials are configured for {hop}, and {server} asks for none"),
        ),
        AuthProbe::NotOffered => Finding::warn(
            Check::SmartHostAuth,
            format!(
                "credentials for {user} are configured, but {server} offers no AUTH{}: mail is \
                 sent without authenticating",
                if matches!(r.tls, TlsProbe::Up { .. }) {
                    " after STARTTLS"
                } else {
                    ""
                }
            ),
        )
        .with_fix(format!(
            "if the smart host relays by address, remove the credentials from {at_line}; if \
             not, check the port (submission, 587, offers AUTH after STARTTLS)"
        )),
        AuthProbe::WithheldWithoutTls => {
            Finding::fail(Check::SmartHostAuth, failure).with_fix(format!(
                "use TLS: the level \"encrypt\" for {hop} in {at_line}, and a port that offers \
                 STARTTLS (587) or implicit TLS (smtps:[host]:465)"
            ))
        }
        AuthProbe::NoCommonMechanism { .. } if r.oauth2.is_some() => {
            Finding::fail(Check::SmartHostAuth, failure).with_fix(format!(
                "use the mechanism the server offers (oauth2=xoauth2 or oauth2=oauthbearer in \
                 {at_line}), or a password if it offers PLAIN or LOGIN"
            ))
        }
        AuthProbe::NoCommonMechanism { .. } => Finding::fail(Check::SmartHostAuth, failure)
            .with_fix("ask the smart host's operator to enable AUTH PLAIN or LOGIN over TLS"),
        _ => return None,
    })
}

fn or(failure: String, fallback: &str) -> String {
    if failure.is_empty() {
        fallback.to_string()
    } else {
        failure
    }
}

fn policy_file(d: &Doctor) -> String {
    d.config.policy.as_ref().map_or_else(
        || "the policy file".to_string(),
        |p| p.display().to_string(),
    )
}

/// `/etc/postrider/tls-policy line 2`: where the entry the hop uses is written.
fn policy_line_of(d: &Doctor, hop: &NextHop) -> String {
    let Some(path) = &d.config.policy else {
        return "the policy file".to_string();
    };
    match policy_line(path, hop) {
        Some(line) => format!("{} line {line}", path.display()),
        None => path.display().to_string(),
    }
}

/// The line of the entry [`PolicyTable::lookup`] uses for `hop`: its exact key, else the same
/// host without a port, else the default (`*`); the first of duplicates, as the table keeps.
fn policy_line(path: &Path, hop: &NextHop) -> Option<usize> {
    let text = fs::read_to_string(path).ok()?;
    let any_port = NextHop {
        port: None,
        ..hop.clone()
    };
    let (mut same_host, mut default) = (None, None);
    for (line, content) in content_lines(&text) {
        let key = content.split_whitespace().next().unwrap_or_default();
        if key == "*" || key.eq_ignore_ascii_case("default") {
            default.get_or_insert(line);
            continue;
        }
        match parse_hop(key) {
            Ok(k) if k == *hop => return Some(line),
            Ok(k) if hop.port.is_some() && k == any_port => {
                same_host.get_or_insert(line);
            }
            _ => {}
        }
    }
    same_host.or(default)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::Domain;
    use crate::route::Host;

    #[test]
    fn the_policy_line_is_the_one_lookup_uses() {
        let file = tempfile::NamedTempFile::new().unwrap();
        fs::write(
            file.path(),
            "# policy\n\
             *                     may\n\
             [smtp.test]           encrypt a:b\n\
             [smtp.test]:587       encrypt user@example.com:pw\n\
             [smtp.test]:587       verify dup:pw\n",
        )
        .unwrap();
        let hop = |port| NextHop::direct(Host::Name(Domain::parse("smtp.test").unwrap()), port);
        assert_eq!(policy_line(file.path(), &hop(Some(587))), Some(4));
        assert_eq!(policy_line(file.path(), &hop(Some(465))), Some(3));
        assert_eq!(policy_line(file.path(), &hop(None)), Some(3));
        let other = NextHop::direct(Host::Name(Domain::parse("other.test").unwrap()), None);
        assert_eq!(policy_line(file.path(), &other), Some(2));
    }
}
