//! Trying a next hop without sending mail: the session setup a delivery would run (connect,
//! greeting, EHLO, STARTTLS, AUTH per the hop's policy), then QUIT, with what each step found.
//!
//! The probe runs the delivery's own setup code ([`super::setup`]), so what it reports is what
//! a delivery would meet. One difference: on a hop whose policy is not `verify`, the
//! certificate is also checked as `verify` would check it, and the answer reported (the
//! handshake goes on either way, as delivery's would).

use std::net::{IpAddr, SocketAddr};

use super::EsmtpTransport;
use super::connect;
use super::ehlo::Capabilities;
use super::session::Peer;
use super::setup::{self, SetupContext, Trace};
use crate::oauth2::OAuth2Mechanism;
use crate::route::{Host, Mailer, NextHop, TlsLevel};
use crate::status::{Diagnostic, EnhancedStatus, Reply};

/// How far TLS got on a probed session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsProbe {
    /// Not tried: the policy is `none`, or the session ended before.
    #[default]
    NotTried,
    /// The server does not offer STARTTLS.
    NotOffered,
    /// The server answered STARTTLS with this refusal.
    Refused {
        /// The reply to STARTTLS.
        reply: Reply,
    },
    /// The handshake failed (under `verify`, an invalid certificate fails it).
    Failed {
        /// Why, in words (`the server's certificate has expired`).
        reason: String,
    },
    /// TLS is up.
    Up {
        /// The version (`TLS 1.3`), when known.
        protocol: Option<String>,
        /// Whether the certificate would pass `verify`.
        certificate: CertificateProbe,
    },
}

/// What the certificate check found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CertificateProbe {
    /// Valid for the host name, issued by a trusted CA, in date.
    Valid,
    /// Accepted for encryption only (the policy does not require `verify`), but `verify` would
    /// refuse it.
    Invalid {
        /// Why (`the server's certificate has an unknown issuer (not signed by a trusted CA)`).
        reason: String,
    },
    /// The certificate was not checked.
    NotChecked,
}

/// How far AUTH got on a probed session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthProbe {
    /// Not tried: the session ended before AUTH.
    #[default]
    NotTried,
    /// The policy holds no credentials for this hop.
    NotConfigured,
    /// Credentials exist, but the connection is not encrypted and the policy forbids AUTH
    /// there: they were not sent.
    WithheldWithoutTls,
    /// Credentials exist, but the server offers no AUTH (delivery sends without).
    NotOffered,
    /// The server offers only mechanisms postrider does not speak.
    NoCommonMechanism {
        /// The mechanisms offered.
        offered: Vec<String>,
    },
    /// The server accepted the credentials.
    Accepted {
        /// The mechanism used (`PLAIN`, `LOGIN`, `XOAUTH2`, `OAUTHBEARER`).
        mechanism: &'static str,
    },
    /// The server refused the credentials (535 for a bad password).
    Refused {
        /// The server's reply.
        reply: Reply,
    },
    /// No OAuth2 access token could be had (the token endpoint is down, the refresh token
    /// was revoked); no connection was made.
    TokenUnavailable {
        /// Why, naming where the token was to come from (never the token).
        reason: String,
    },
}

/// What [`EsmtpTransport::probe`] found. Secrets never appear in it: only the user name.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProbeReport {
    /// The mailer probed with (`smtps` starts with TLS).
    pub mailer: Mailer,
    /// The next hop probed.
    pub hop: NextHop,
    /// The port connected to.
    pub port: u16,
    /// The policy's TLS level for the hop.
    pub tls_level: TlsLevel,
    /// The user name of the hop's credentials or OAuth2 account, if the policy has any.
    pub user: Option<String>,
    /// The OAuth2 mechanism the policy asks for, when it authenticates with a token.
    pub oauth2: Option<OAuth2Mechanism>,
    /// Addresses that did not answer (refused, timed out, no greeting), in the order tried.
    pub unreachable: Vec<Diagnostic>,
    /// The server that answered: `smtp.gmail.com [192.0.2.9]:587`.
    pub server: Option<String>,
    /// Its address and port.
    pub address: Option<SocketAddr>,
    /// Our end of that connection (the address the server sees, unless NAT translates it).
    pub local: Option<IpAddr>,
    /// Its greeting.
    pub greeting: Option<Reply>,
    /// What it offered in its last EHLO reply (after TLS when TLS is up).
    pub capabilities: Option<Capabilities>,
    /// How far TLS got.
    pub tls: TlsProbe,
    /// How far AUTH got.
    pub auth: AuthProbe,
    /// What stopped the setup, in the words delivery would log; `None` when the session was
    /// ready for MAIL FROM.
    pub failure: Option<Diagnostic>,
}

impl ProbeReport {
    /// True when the session got ready for mail, as a delivery needs.
    pub fn is_ready(&self) -> bool {
        self.failure.is_none()
    }
}

pub(super) async fn probe(t: &EsmtpTransport, mailer: Mailer, hop: &NextHop) -> ProbeReport {
    let table = t.policy();
    let policy = table.lookup(hop);
    let port = hop.port_for(mailer);
    let mut report = ProbeReport {
        mailer,
        hop: hop.clone(),
        port,
        tls_level: policy.tls,
        user: policy.auth_user().map(str::to_string),
        oauth2: policy.oauth2.as_ref().map(|o| o.mechanism),
        unreachable: Vec::new(),
        server: None,
        address: None,
        local: None,
        greeting: None,
        capabilities: None,
        tls: TlsProbe::NotTried,
        auth: AuthProbe::NotTried,
        failure: None,
    };
    let inspector = (policy.tls != TlsLevel::Verify).then(|| t.tls.inspector());
    let ctx = SetupContext {
        hostname: &t.config.hostname,
        mailer,
        policy,
        tls: &t.tls,
        timeouts: t.config.timeouts,
        inspector: inspector.as_ref(),
        tokens: &t.tokens,
        dane: None,
    };
    let mx_of = match (&hop.host, hop.mx) {
        (Host::Name(domain), true) => Some(domain),
        _ => None,
    };
    let candidates = match connect::candidates(hop, &*t.resolver).await {
        Ok(c) => c,
        Err(d) => {
            report.failure = Some(d);
            return report;
        }
    };
    for candidate in &candidates {
        let addrs = match connect::addresses(candidate, mx_of, &*t.resolver).await {
            Ok(a) => a,
            Err(d) => {
                report.unreachable.push(d);
                continue;
            }
        };
        for addr in addrs {
            let peer = Peer {
                name: candidate.name.clone(),
                addr,
                port,
            };
            let mut trace = Trace::default();
            let result = setup::open_traced(&ctx, peer.clone(), &mut trace).await;
            if let AuthProbe::TokenUnavailable { .. } = trace.auth {
                // No connection was made: the token is needed first, for every address.
                report.auth = trace.auth;
                report.failure = result.err().map(|f| f.into_diagnostic());
                return report;
            }
            // An address counts as answering once it greets; until then delivery would move
            // on to the next one, and so does the probe.
            if trace.greeting.is_none() {
                if let Err(f) = result {
                    report.unreachable.push(f.into_diagnostic());
                }
                continue;
            }
            report.server = Some(peer.to_string());
            report.address = Some(SocketAddr::new(addr, port));
            report.local = trace.local;
            report.greeting = trace.greeting;
            report.capabilities = trace.capabilities;
            report.tls = trace.tls;
            report.auth = match (trace.auth, policy.auth_user()) {
                (AuthProbe::NotTried, None) => AuthProbe::NotConfigured,
                (auth, _) => auth,
            };
            match result {
                Ok(session) => session.quit().await,
                Err(f) => report.failure = Some(f.into_diagnostic()),
            }
            return report;
        }
    }
    report.failure = Some(report.unreachable.last().cloned().unwrap_or_else(|| {
        Diagnostic::local(
            EnhancedStatus::new(4, 4, 3),
            format!("{hop} has no address to connect to"),
        )
    }));
    report
}
