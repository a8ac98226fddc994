//! A DNSSEC-validating resolver beside the normal one, for DANE (RFC 7672).
//!
//! It asks the same name servers with the same options as the [`DnsResolver`] it is made
//! from, but every answer goes through hickory's validator (hickory-resolver's `dnssec-ring`
//! feature: ring, the same crypto as rustls) and comes back classified: [`Secured::Secure`]
//! only when the chain of signatures reaches a trust anchor, [`Secured::Insecure`] when the
//! zone is provably unsigned (or the answer carries no proof), [`Secured::Bogus`] when
//! signatures are missing or wrong where they ought to be — a sign of an attack or a broken
//! zone, so DANE delivery defers rather than falling back. A validating stub is used because
//! the configured name servers are usually not validating ones (and a validating resolver's
//! AD bit cannot be trusted over an unprotected path anyway).
//!
//! The normal resolver keeps serving MX order and addresses; this one only decides whether
//! DANE applies.

use std::fmt;
use std::sync::Arc;

use hickory_resolver::TokioResolver;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError, NoRecords};
use hickory_resolver::proto::dnssec::{Proof, TrustAnchors};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};

use super::dns::{DnsResolver, ResolveConfigError};
use crate::address::Domain;

/// What a validated lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secured<T> {
    /// Every record is signed back to a trust anchor; an empty list is a signed denial
    /// (NXDOMAIN or NODATA with a valid NSEC/NSEC3 proof).
    Secure(T),
    /// The zone is unsigned (or provably outside every signed tree): DANE does not apply.
    Insecure,
    /// Validation failed where signatures were expected (why, in words).
    Bogus(String),
    /// No usable answer (SERVFAIL, timeout, unreachable server), temporary.
    Failed(String),
}

/// One TLSA record (RFC 6698 §2.1), as numbers and octets.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TlsaRecord {
    /// 0 PKIX-TA, 1 PKIX-EE, 2 DANE-TA, 3 DANE-EE.
    pub usage: u8,
    /// 0 the whole certificate, 1 its SubjectPublicKeyInfo.
    pub selector: u8,
    /// 0 exact, 1 SHA-256, 2 SHA-512.
    pub matching: u8,
    /// The association data.
    pub data: Vec<u8>,
}

impl fmt::Display for TlsaRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {} ", self.usage, self.selector, self.matching)?;
        for b in &self.data {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// The validating resolver.
#[derive(Clone)]
pub struct SecureResolver {
    inner: TokioResolver,
}

impl fmt::Debug for SecureResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecureResolver").finish_non_exhaustive()
    }
}

impl SecureResolver {
    /// A validating resolver asking `dns`'s name servers. `anchors` are the trust anchors:
    /// `None` means the IANA root keys built into hickory; a test (or a private signed tree)
    /// passes its own. Build it inside the tokio runtime that will use it.
    pub fn new(
        dns: &DnsResolver,
        anchors: Option<TrustAnchors>,
    ) -> Result<SecureResolver, ResolveConfigError> {
        let (config, mut opts) = dns.hickory_config();
        opts.validate = true;
        let mut builder =
            TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
                .with_options(opts);
        builder = builder.with_trust_anchor(Arc::new(anchors.unwrap_or_default()));
        let inner = builder.build().map_err(|e| ResolveConfigError::Build {
            reason: e.to_string(),
        })?;
        Ok(SecureResolver { inner })
    }

    /// The MX host names of `domain`, when the MX answer is DNSSEC-secure (RFC 7672 §2.2.1:
    /// DANE applies only to MX hosts learnt securely). Preference order is the normal
    /// resolver's business; this only tells which names were signed.
    pub async fn mx_hosts(&self, domain: &Domain) -> Secured<Vec<Domain>> {
        self.query(domain.as_str(), RecordType::MX, |data| match data {
            RData::MX(mx) => Domain::parse(mx.exchange.to_ascii().trim_end_matches('.')).ok(),
            _ => None,
        })
        .await
    }

    /// The A and AAAA records of `host`, secure only when both answers are (a signed
    /// denial counts: an IPv4-only host has no AAAA). RFC 7672 §2.2.2: TLSA records apply
    /// only to an MX host whose addresses were obtained securely, since an attacker who
    /// can forge the address can otherwise send the client elsewhere (an MX name that is a
    /// CNAME into an unsigned zone is the common case).
    pub async fn addresses(&self, host: &Domain) -> Secured<Vec<std::net::IpAddr>> {
        let v4 = self
            .query(host.as_str(), RecordType::A, |data| match data {
                RData::A(a) => Some(std::net::IpAddr::V4(a.0)),
                _ => None,
            })
            .await;
        let v6 = self
            .query(host.as_str(), RecordType::AAAA, |data| match data {
                RData::AAAA(a) => Some(std::net::IpAddr::V6(a.0)),
                _ => None,
            })
            .await;
        match (v4, v6) {
            (Secured::Bogus(r), _) | (_, Secured::Bogus(r)) => Secured::Bogus(r),
            (Secured::Failed(r), _) | (_, Secured::Failed(r)) => Secured::Failed(r),
            (Secured::Secure(mut a), Secured::Secure(b)) => {
                a.extend(b);
                Secured::Secure(a)
            }
            _ => Secured::Insecure,
        }
    }

    /// The TLSA records of `_port._tcp.host` (RFC 7672 §2.2.2).
    pub async fn tlsa(&self, host: &Domain, port: u16) -> Secured<Vec<TlsaRecord>> {
        let name = format!("_{port}._tcp.{host}");
        self.query(&name, RecordType::TLSA, |data| match data {
            RData::TLSA(t) => Some(TlsaRecord {
                usage: u8::from(t.cert_usage),
                selector: u8::from(t.selector),
                matching: u8::from(t.matching),
                data: t.cert_data.clone(),
            }),
            _ => None,
        })
        .await
    }

    async fn query<T>(
        &self,
        name: &str,
        record_type: RecordType,
        pick: impl Fn(&RData) -> Option<T>,
    ) -> Secured<Vec<T>> {
        let mut fqdn = match Name::from_ascii(name) {
            Ok(n) => n,
            Err(e) => return Secured::Failed(format!("{name} is not a DNS name: {e}")),
        };
        fqdn.set_fqdn(true);
        match self.inner.lookup(fqdn, record_type).await {
            Ok(lookup) => {
                let wanted: Vec<&Record> = lookup
                    .answers()
                    .iter()
                    .filter(|r| r.record_type() == record_type)
                    .collect();
                if wanted.iter().any(|r| r.proof == Proof::Bogus) {
                    return Secured::Bogus(format!(
                        "the {record_type} records of {name} fail DNSSEC validation"
                    ));
                }
                if wanted.is_empty() || !wanted.iter().all(|r| r.proof == Proof::Secure) {
                    return Secured::Insecure;
                }
                Secured::Secure(wanted.iter().filter_map(|r| pick(&r.data)).collect())
            }
            Err(e) => classify(&e, name, record_type),
        }
    }
}

fn classify<T>(err: &NetError, name: &str, record_type: RecordType) -> Secured<Vec<T>> {
    match err {
        NetError::Dns(DnsError::DnssecBogus) => Secured::Bogus(format!(
            "the {record_type} answer for {name} fails DNSSEC validation"
        )),
        NetError::Dns(DnsError::Nsec { proof, .. }) => match proof {
            Proof::Bogus => Secured::Bogus(format!(
                "the denial of {record_type} records for {name} fails DNSSEC validation"
            )),
            _ => Secured::Insecure,
        },
        NetError::Dns(DnsError::NoRecordsFound(NoRecords {
            response_code,
            authorities,
            ..
        })) if matches!(
            *response_code,
            ResponseCode::NXDomain | ResponseCode::NoError
        ) =>
        {
            // A denial counts as secure only when its proof records validated.
            // (RRSIGs other than the one used keep no proof of their own, so they are skipped.)
            let secure = authorities.as_ref().is_some_and(|a| {
                let mut proofs = a
                    .iter()
                    .filter(|r| r.record_type() != RecordType::RRSIG)
                    .map(|r| r.proof)
                    .peekable();
                proofs.peek().is_some() && proofs.all(|p| p == Proof::Secure)
            });
            if secure {
                Secured::Secure(Vec::new())
            } else {
                Secured::Insecure
            }
        }
        other => Secured::Failed(format!("{record_type} lookup of {name}: {other}")),
    }
}
