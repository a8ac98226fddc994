//! Name resolution for delivery: the `Resolver` trait (MX and address lookups with RFC 5321
//! §5.1 semantics) and its implementations.
//!
//! [`DnsResolver`] is the default, on hickory-resolver. [`StaticResolver`] answers from a fixed
//! table, for hosts that always relay through known addresses and for tests.
//!
//! Around the trait sit the helpers a transport needs before it connects:
//! [`resolve_mx_addresses`] (the MX list with each host's addresses, and the rule that a list
//! whose hosts all fail to resolve is a temporary failure), [`LocalIdentity`] (is this MX host
//! me?) and [`qualify_hostname`] (this host's fully qualified name, for EHLO).

pub mod dns;
pub mod dnssec;
pub mod hostname;
pub mod local;
pub mod mx;
mod resolv_conf;
pub mod targets;

use std::collections::HashMap;
use std::net::IpAddr;

use async_trait::async_trait;

use crate::address::Domain;
use crate::status::{EnhancedStatus, Severity};

pub use dns::{AddressPreference, DnsOptions, DnsProtocol, DnsResolver, ResolveConfigError};
pub use dnssec::{SecureResolver, Secured, TlsaRecord};
pub use hostname::{HostnameError, HostnameSources, qualify_hostname};
pub use local::LocalIdentity;
pub use targets::{host_addresses, resolve_mx_addresses};

/// One mail exchanger of a domain.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MailExchanger {
    /// MX preference (lower is tried first).
    pub preference: u16,
    /// The exchanger's host name.
    pub host: Domain,
    /// True when the domain has no MX records and its own address is used (RFC 5321 §5.1).
    pub implicit: bool,
}

/// Why a lookup failed. Every variant knows whether retrying can help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// The name does not exist (NXDOMAIN): 5.1.2.
    #[error("host or domain name not found: {name} does not exist (NXDOMAIN)")]
    NoSuchDomain {
        /// The name looked up.
        name: Domain,
    },
    /// The domain publishes a null MX (RFC 7505): it accepts no mail. 5.1.10.
    #[error("{domain} does not accept mail (null MX, RFC 7505)")]
    NullMx {
        /// The domain.
        domain: Domain,
    },
    /// The name exists but has no usable records of the kind asked for: 5.1.2 / 5.4.4.
    #[error("{name} has no {what} records")]
    NoRecords {
        /// The name looked up.
        name: Domain,
        /// "MX, A or AAAA", "A or AAAA".
        what: &'static str,
    },
    /// The domain has MX records, but none names a usable host (an IP address written where a
    /// host name belongs, a malformed name): 5.4.4.
    #[error("{domain} has no usable MX records: {detail}")]
    InvalidMx {
        /// The domain.
        domain: Domain,
        /// Which records were refused and why.
        detail: String,
    },
    /// Delivering would send the mail back to this machine (an MX pointing at us): 5.3.5.
    #[error(
        "config error: mail for {domain} loops back to me (MX problem?): {host} is this machine"
    )]
    LoopsBack {
        /// The recipient domain.
        domain: Domain,
        /// The MX host (and address) found to be this machine.
        host: String,
    },
    /// The lookup could not be completed now (SERVFAIL, REFUSED, timeout, no server): 4.4.3.
    #[error("DNS lookup of {name} failed temporarily: {reason}")]
    Temporary {
        /// The name looked up.
        name: Domain,
        /// What went wrong, in words.
        reason: String,
    },
}

impl ResolveError {
    /// Temporary or permanent.
    pub fn severity(&self) -> Severity {
        match self {
            ResolveError::Temporary { .. } => Severity::Temporary,
            _ => Severity::Permanent,
        }
    }

    /// True when retrying later may succeed.
    pub fn is_temporary(&self) -> bool {
        self.severity() == Severity::Temporary
    }

    /// The RFC 3463 status a delivery failing on this error reports.
    pub fn status(&self) -> EnhancedStatus {
        match self {
            ResolveError::NoSuchDomain { .. } => EnhancedStatus::new(5, 1, 2),
            ResolveError::NullMx { .. } => EnhancedStatus::new(5, 1, 10),
            ResolveError::NoRecords { .. } => EnhancedStatus::new(5, 4, 4),
            ResolveError::InvalidMx { .. } => EnhancedStatus::new(5, 4, 4),
            ResolveError::LoopsBack { .. } => EnhancedStatus::new(5, 3, 5),
            ResolveError::Temporary { .. } => EnhancedStatus::new(4, 4, 3),
        }
    }
}

/// Looks up where mail for a domain goes and where a host is.
#[async_trait]
pub trait Resolver: Send + Sync + 'static {
    /// The domain's mail exchangers in delivery order (RFC 5321 §5.1): by preference, equal
    /// preferences shuffled; the domain itself at preference 0 (implicit MX) only when it has
    /// no MX records but has an address; a null MX is [`ResolveError::NullMx`].
    async fn mail_exchangers(&self, domain: &Domain) -> Result<Vec<MailExchanger>, ResolveError>;

    /// The host's addresses in the order to try them.
    async fn addresses(&self, host: &Domain) -> Result<Vec<IpAddr>, ResolveError>;

    /// The names a reverse (PTR) lookup gives for `ip`. The default knows no names, so a
    /// resolver that cannot look names up leaves clients `unknown` instead of failing.
    async fn reverse_names(&self, ip: IpAddr) -> Result<Vec<Domain>, ResolveError> {
        let _ = ip;
        Ok(Vec::new())
    }
}

/// A resolver that answers from a fixed table and never touches the network.
///
/// A domain without MX entries gets its own addresses as an implicit MX; a name in neither
/// table does not exist.
#[derive(Debug, Clone, Default)]
pub struct StaticResolver {
    mx: HashMap<Domain, Vec<MailExchanger>>,
    hosts: HashMap<Domain, Vec<IpAddr>>,
    ptr: HashMap<IpAddr, Vec<Domain>>,
}

impl StaticResolver {
    /// An empty table.
    pub fn new() -> StaticResolver {
        StaticResolver::default()
    }

    /// Adds an MX record.
    pub fn with_mx(mut self, domain: Domain, preference: u16, host: Domain) -> StaticResolver {
        let list = self.mx.entry(domain).or_default();
        list.push(MailExchanger {
            preference,
            host,
            implicit: false,
        });
        list.sort_by_key(|m| m.preference);
        self
    }

    /// Adds an address for a host.
    pub fn with_host(mut self, host: Domain, addr: IpAddr) -> StaticResolver {
        self.hosts.entry(host).or_default().push(addr);
        self
    }

    /// Adds a reverse (PTR) name for an address.
    pub fn with_ptr(mut self, addr: IpAddr, name: Domain) -> StaticResolver {
        self.ptr.entry(addr).or_default().push(name);
        self
    }
}

#[async_trait]
impl Resolver for StaticResolver {
    async fn mail_exchangers(&self, domain: &Domain) -> Result<Vec<MailExchanger>, ResolveError> {
        if let Some(list) = self.mx.get(domain) {
            return Ok(list.clone());
        }
        if self.hosts.contains_key(domain) {
            return Ok(vec![MailExchanger {
                preference: 0,
                host: domain.clone(),
                implicit: true,
            }]);
        }
        Err(ResolveError::NoSuchDomain {
            name: domain.clone(),
        })
    }

    async fn addresses(&self, host: &Domain) -> Result<Vec<IpAddr>, ResolveError> {
        self.hosts
            .get(host)
            .cloned()
            .ok_or_else(|| ResolveError::NoSuchDomain { name: host.clone() })
    }

    async fn reverse_names(&self, ip: IpAddr) -> Result<Vec<Domain>, ResolveError> {
        Ok(self.ptr.get(&ip).cloned().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Domain {
        Domain::parse(s).expect("test domain")
    }

    #[tokio::test]
    async fn the_static_resolver_gives_mx_then_implicit_mx_then_nxdomain() {
        let r = StaticResolver::new()
            .with_mx(d("example.com"), 20, d("mx2.example.com"))
            .with_mx(d("example.com"), 10, d("mx1.example.com"))
            .with_host(d("plain.example"), "192.0.2.7".parse().unwrap());
        let mx = r.mail_exchangers(&d("example.com")).await.unwrap();
        assert_eq!(mx[0].host, d("mx1.example.com"));
        let implicit = r.mail_exchangers(&d("plain.example")).await.unwrap();
        assert!(implicit[0].implicit);
        let err = r.mail_exchangers(&d("nowhere.example")).await.unwrap_err();
        assert_eq!(err.status().to_string(), "5.1.2");
        assert!(!err.is_temporary());
    }
}
