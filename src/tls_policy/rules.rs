//! From discovered policies to the rule for one MX host: DANE first (when the MX answer, the
//! host's address records and its TLSA records are DNSSEC-secure), then MTA-STS, then the
//! hop's own policy.

use std::sync::Arc;
use std::time::SystemTime;

use mail_auth::report::tlsrpt::ResultType;

use super::dane;
use super::mta_sts::{Clock, MtaSts, StsLookup};
use super::report::{PolicyKind, ReportedPolicy, TlsReporter};
use super::sts_cache::CachedPolicy;
use super::sts_policy::StsMode;
use crate::address::Domain;
use crate::resolve::{SecureResolver, Secured, TlsaRecord};

/// The discovering side of outbound TLS policy: MTA-STS, DANE and TLS-RPT, each optional.
pub struct OutboundTls {
    mta_sts: Option<MtaSts>,
    dane: Option<SecureResolver>,
    reporter: Option<Arc<TlsReporter>>,
    clock: Clock,
}

impl std::fmt::Debug for OutboundTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundTls")
            .field("mta_sts", &self.mta_sts.is_some())
            .field("dane", &self.dane.is_some())
            .field("reporting", &self.reporter.is_some())
            .finish()
    }
}

/// What was learnt about one recipient domain before connecting.
#[derive(Debug, Clone)]
pub struct Discovered {
    /// The domain.
    pub domain: Domain,
    /// Its MTA-STS policy, if it has one (and MTA-STS is on).
    pub sts: Option<StsLookup>,
    /// The MX hosts, when DANE is on and the MX answer is DNSSEC-secure.
    pub secure_mx: Option<Vec<Domain>>,
    /// Why DNSSEC validation of the MX answer failed (every host then defers).
    pub bogus: Option<String>,
}

/// What a connection to one MX host must achieve.
#[derive(Debug, Clone)]
pub enum HostRule {
    /// No discovered policy: the hop's own policy (opportunistic by default).
    Normal,
    /// DANE: TLS required, the certificate must match these usable TLSA records.
    Dane {
        /// The usable records (usage 2 or 3).
        records: Vec<TlsaRecord>,
    },
    /// Signed TLSA records exist but none is usable for SMTP: TLS required, certificate
    /// not authenticated (RFC 7672 §2.2).
    DaneUnusable,
    /// MTA-STS `enforce`: TLS with a certificate valid for the MX host name.
    StsEnforce,
    /// MTA-STS `testing`: deliver as the hop's policy allows, and report what `enforce`
    /// would refuse.
    StsTesting,
    /// Do not use this host; the words say which policy and rule refuse it.
    Refuse {
        /// Why, naming the policy domain and the rule.
        reason: String,
        /// The TLS-RPT result type.
        result: ResultType,
    },
}

impl HostRule {
    /// True when TLS must be up for mail to go.
    pub fn requires_tls(&self) -> bool {
        matches!(
            self,
            HostRule::Dane { .. } | HostRule::DaneUnusable | HostRule::StsEnforce
        )
    }

    /// True when a session under this rule has an authenticated server (REQUIRETLS may go).
    pub fn authenticates(&self) -> bool {
        matches!(self, HostRule::Dane { .. } | HostRule::StsEnforce)
    }
}

impl OutboundTls {
    /// Policies from the parts given (`None` turns that part off).
    pub fn new(
        mta_sts: Option<MtaSts>,
        dane: Option<SecureResolver>,
        reporter: Option<Arc<TlsReporter>>,
    ) -> OutboundTls {
        OutboundTls {
            mta_sts,
            dane,
            reporter,
            clock: Arc::new(SystemTime::now),
        }
    }

    /// Replaces the clock used for TLS-RPT counts.
    pub fn with_clock(mut self, clock: Clock) -> OutboundTls {
        self.clock = clock;
        self
    }

    /// MTA-STS, when on.
    pub fn mta_sts(&self) -> Option<&MtaSts> {
        self.mta_sts.as_ref()
    }

    /// The validating resolver, when DANE is on.
    pub fn dane(&self) -> Option<&SecureResolver> {
        self.dane.as_ref()
    }

    /// The TLS-RPT collector, when reporting is on.
    pub fn reporter(&self) -> Option<&Arc<TlsReporter>> {
        self.reporter.as_ref()
    }

    /// Looks up what `domain` publishes: its MTA-STS policy and whether its MX answer is
    /// DNSSEC-secure.
    pub async fn discover(&self, domain: &Domain) -> Discovered {
        let sts = match &self.mta_sts {
            Some(m) => Some(m.lookup(domain).await),
            None => None,
        };
        let (secure_mx, bogus) = match &self.dane {
            Some(r) => match r.mx_hosts(domain).await {
                Secured::Secure(hosts) => (Some(hosts), None),
                Secured::Bogus(reason) => (None, Some(reason)),
                Secured::Insecure | Secured::Failed(_) => (None, None),
            },
            None => (None, None),
        };
        if let (Some(StsLookup::Unavailable { reason, result }), Some(rep)) = (&sts, &self.reporter)
        {
            rep.failure(
                &no_policy_found(domain),
                *result,
                None,
                None,
                Some(reason),
                (self.clock)(),
            );
        }
        Discovered {
            domain: domain.clone(),
            sts,
            secure_mx,
            bogus,
        }
    }

    /// The rule for MX host `mx` (port `port`) of a discovered domain.
    pub async fn host_rule(&self, d: &Discovered, mx: &Domain, port: u16) -> HostRule {
        if let Some(reason) = &d.bogus {
            return HostRule::Refuse {
                reason: format!(
                    "DNSSEC validation of the MX records of {} failed ({reason}); DANE delivery waits",
                    d.domain
                ),
                result: ResultType::DnssecInvalid,
            };
        }
        if let (Some(hosts), Some(resolver)) = (&d.secure_mx, &self.dane)
            && hosts.contains(mx)
            && let Some(rule) = dane_rule(resolver, &d.domain, mx, port).await
        {
            return rule;
        }
        if let Some(StsLookup::Policy { cached, .. }) = &d.sts {
            let listed = cached.policy.allows_mx(mx);
            match cached.policy.mode {
                StsMode::Enforce if !listed => {
                    return HostRule::Refuse {
                        reason: format!(
                            "{mx} is not an MX host the MTA-STS policy of {} allows (mode enforce; mx: {})",
                            d.domain,
                            cached.policy.mx_list()
                        ),
                        result: ResultType::ValidationFailure,
                    };
                }
                StsMode::Enforce => return HostRule::StsEnforce,
                StsMode::Testing => {
                    if !listed {
                        self.report_failure(
                            d,
                            &HostRule::StsTesting,
                            ResultType::ValidationFailure,
                            Some(mx),
                            None,
                            Some("MX host not listed in the policy"),
                        );
                    }
                    return HostRule::StsTesting;
                }
                StsMode::None => {}
            }
        }
        HostRule::Normal
    }

    /// The policy a rule reports under (`None`: the session is not reported).
    pub fn reported_policy(
        &self,
        d: &Discovered,
        rule: &HostRule,
        mx: &Domain,
    ) -> Option<ReportedPolicy> {
        match rule {
            HostRule::Dane { records } => Some(ReportedPolicy {
                kind: PolicyKind::Tlsa,
                domain: d.domain.clone(),
                text: records.iter().map(|r| r.to_string()).collect(),
                mx: vec![mx.to_string()],
            }),
            HostRule::DaneUnusable => Some(ReportedPolicy {
                kind: PolicyKind::Tlsa,
                domain: d.domain.clone(),
                text: Vec::new(),
                mx: vec![mx.to_string()],
            }),
            HostRule::StsEnforce | HostRule::StsTesting => match &d.sts {
                Some(StsLookup::Policy { cached, .. }) => Some(sts_policy(d, cached)),
                _ => None,
            },
            HostRule::Refuse { result, .. } => match result {
                ResultType::DnssecInvalid | ResultType::TlsaInvalid => Some(ReportedPolicy {
                    kind: PolicyKind::Tlsa,
                    domain: d.domain.clone(),
                    text: Vec::new(),
                    mx: vec![mx.to_string()],
                }),
                _ => match &d.sts {
                    Some(StsLookup::Policy { cached, .. }) => Some(sts_policy(d, cached)),
                    _ => None,
                },
            },
            HostRule::Normal => None,
        }
    }

    /// Counts a session that met `rule`.
    pub fn report_success(&self, d: &Discovered, rule: &HostRule, mx: &Domain) {
        if let (Some(rep), Some(policy)) = (&self.reporter, self.reported_policy(d, rule, mx)) {
            rep.success(&policy, (self.clock)());
        }
    }

    /// Counts a session that failed `rule`.
    pub fn report_failure(
        &self,
        d: &Discovered,
        rule: &HostRule,
        result: ResultType,
        mx: Option<&Domain>,
        ip: Option<std::net::IpAddr>,
        reason: Option<&str>,
    ) {
        let Some(rep) = &self.reporter else {
            return;
        };
        let policy = match mx {
            Some(mx) => self.reported_policy(d, rule, mx),
            None => None,
        };
        if let Some(policy) = policy {
            rep.failure(&policy, result, mx, ip, reason, (self.clock)());
        }
    }
}

/// The DANE rule for an MX host learnt from a secure MX answer, or `None` when DANE does
/// not apply to it (then MTA-STS or the hop's policy does).
async fn dane_rule(
    resolver: &SecureResolver,
    domain: &Domain,
    mx: &Domain,
    port: u16,
) -> Option<HostRule> {
    // RFC 7672 §2.2.2: TLSA records count only for a host whose address records are
    // secure; insecure ones mean no DANE for this host, bogus ones that it is skipped.
    match resolver.addresses(mx).await {
        Secured::Secure(_) => {}
        Secured::Insecure => return None,
        Secured::Bogus(reason) => {
            return Some(HostRule::Refuse {
                reason: format!(
                    "the address records of {mx} fail DNSSEC validation ({reason}); DANE requires skipping {mx}"
                ),
                result: ResultType::DnssecInvalid,
            });
        }
        Secured::Failed(reason) => {
            return Some(HostRule::Refuse {
                reason: format!(
                    "cannot look up the address records of {mx} securely ({reason}); the MX records of {domain} are DNSSEC-signed, so DANE may apply"
                ),
                result: ResultType::DnssecInvalid,
            });
        }
    }
    match resolver.tlsa(mx, port).await {
        Secured::Secure(records) if !records.is_empty() => {
            let usable: Vec<TlsaRecord> = records.into_iter().filter(dane::usable).collect();
            Some(if usable.is_empty() {
                HostRule::DaneUnusable
            } else {
                HostRule::Dane { records: usable }
            })
        }
        Secured::Bogus(reason) => Some(HostRule::Refuse {
            reason: format!(
                "the TLSA records of _{port}._tcp.{mx} fail DNSSEC validation ({reason}); DANE requires skipping {mx}"
            ),
            result: ResultType::TlsaInvalid,
        }),
        Secured::Failed(reason) => Some(HostRule::Refuse {
            reason: format!(
                "cannot look up the TLSA records of _{port}._tcp.{mx} ({reason}); the MX records of {domain} are DNSSEC-signed, so DANE may apply"
            ),
            result: ResultType::DnssecInvalid,
        }),
        Secured::Secure(_) | Secured::Insecure => None,
    }
}

fn sts_policy(d: &Discovered, cached: &CachedPolicy) -> ReportedPolicy {
    ReportedPolicy {
        kind: PolicyKind::Sts,
        domain: d.domain.clone(),
        text: cached
            .text
            .lines()
            .map(|l| l.trim_end_matches('\r').to_string())
            .filter(|l| !l.is_empty())
            .collect(),
        mx: cached.policy.mx.iter().map(ToString::to_string).collect(),
    }
}

fn no_policy_found(domain: &Domain) -> ReportedPolicy {
    ReportedPolicy {
        kind: PolicyKind::NoPolicyFound,
        domain: domain.clone(),
        text: Vec::new(),
        mx: Vec::new(),
    }
}

/// The TLS-RPT result type for a failed handshake's words (see
/// `transport::esmtp::tls::describe_handshake_error`).
pub(crate) fn result_for_handshake(reason: &str) -> ResultType {
    if reason.contains("does not match the host name") {
        ResultType::CertificateHostMismatch
    } else if reason.contains("expired") || reason.contains("not valid yet") {
        ResultType::CertificateExpired
    } else if reason.contains("unknown issuer") {
        ResultType::CertificateNotTrusted
    } else {
        ResultType::ValidationFailure
    }
}
