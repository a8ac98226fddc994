//! The default resolver, on hickory-resolver 0.26 (pinned: its error types changed between
//! 0.24, 0.25 and 0.26, and the mapping below depends on them).
//!
//! Every query is for a fully qualified name (the search list is never applied to a mail
//! domain), answers are cached by hickory for as long as their TTL allows, and every failure is
//! turned into a [`ResolveError`] an operator can read: `SERVFAIL from 127.0.0.1:5353`,
//! `no answer from 192.0.2.53:53 within 5s`.

use std::fmt;
use std::fs;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig,
    ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError, NoRecords};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::{Hosts, TokioResolver};
use rand::seq::SliceRandom;

use super::mx::{self, MxRecord};
use super::resolv_conf::ResolvConf;
use super::{MailExchanger, ResolveError, Resolver};
use crate::address::Domain;

/// Which address families [`DnsResolver::addresses`] returns, and in which order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AddressPreference {
    /// AAAA addresses first, then A.
    Ipv6First,
    /// A addresses first, then AAAA. The default: many large mailbox providers hold IPv6
    /// senders to stricter rules (reverse DNS, authentication) than IPv4 ones, and a small
    /// site's IPv6 is more often broken than its IPv4.
    #[default]
    Ipv4First,
    /// A addresses only, for hosts without working IPv6.
    Ipv4Only,
}

/// How queries reach the name servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DnsProtocol {
    /// UDP only (a truncated answer is then an error).
    Udp,
    /// TCP only.
    Tcp,
    /// UDP, and TCP when an answer is truncated: what every stub resolver does.
    #[default]
    UdpAndTcp,
}

/// Settings of a [`DnsResolver`]. `DnsOptions::default()` matches glibc's resolver: 5 s per
/// try, 2 tries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsOptions {
    /// How long to wait for one answer.
    pub timeout: Duration,
    /// Tries per query before giving up (resolv.conf's `attempts`); 0 counts as 1.
    pub attempts: u32,
    /// Address families and their order.
    pub address_preference: AddressPreference,
    /// UDP, TCP or both.
    pub protocol: DnsProtocol,
    /// A hosts file (`/etc/hosts` format) consulted before DNS for A and AAAA lookups.
    pub hosts_file: Option<PathBuf>,
    /// Search domains. Mail lookups never use them (a mail domain is always fully
    /// qualified); [`qualify_hostname`](super::qualify_hostname) and the hickory
    /// configuration handed to other libraries do.
    pub search: Vec<Domain>,
    /// Shuffle the addresses within each family, so load spreads over a host's addresses
    /// (Postfix's `smtp_randomize_addresses`).
    pub randomize_addresses: bool,
}

impl Default for DnsOptions {
    fn default() -> DnsOptions {
        DnsOptions {
            timeout: Duration::from_secs(5),
            attempts: 2,
            address_preference: AddressPreference::default(),
            protocol: DnsProtocol::default(),
            hosts_file: None,
            search: Vec::new(),
            randomize_addresses: true,
        }
    }
}

/// Why a [`DnsResolver`] could not be built. Configuration errors are never temporary: the
/// operator has to fix the file or the settings.
#[derive(Debug, thiserror::Error)]
pub enum ResolveConfigError {
    /// A configuration file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// No name server to ask.
    #[error(
        "{origin} names no name server: add a line such as \"nameserver 192.0.2.53\", or give the name servers explicitly"
    )]
    NoNameServers {
        /// Where the list came from ("/etc/resolv.conf", "the explicit name server list").
        origin: String,
    },
    /// A zero timeout would fail every lookup.
    #[error("the DNS timeout must be more than zero")]
    ZeroTimeout,
    /// hickory refused the configuration.
    #[error("cannot build the DNS resolver: {reason}")]
    Build {
        /// hickory's message.
        reason: String,
    },
}

impl ResolveConfigError {
    /// Always false: retrying with the same configuration cannot help.
    pub fn is_temporary(&self) -> bool {
        false
    }
}

/// The default [`Resolver`]: MX and address lookups through hickory-resolver, with RFC 5321
/// §5.1 semantics (see [`Resolver::mail_exchangers`]).
///
/// Build it inside the tokio runtime that will use it: hickory keeps its connections to the
/// name servers as tasks of that runtime.
///
/// ```no_run
/// use std::time::Duration;
/// use postrider::resolve::{AddressPreference, DnsOptions, DnsResolver};
///
/// // Split DNS: ask the office's name server, not the ISP's.
/// let resolver = DnsResolver::with_name_servers(
///     &["192.168.1.1:53".parse()?],
///     DnsOptions {
///         timeout: Duration::from_secs(2),
///         address_preference: AddressPreference::Ipv4Only,
///         ..DnsOptions::default()
///     },
/// )?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct DnsResolver {
    inner: TokioResolver,
    servers: Vec<SocketAddr>,
    options: DnsOptions,
    config: ResolverConfig,
    opts: ResolverOpts,
}

impl fmt::Debug for DnsResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DnsResolver")
            .field("servers", &self.servers)
            .field("options", &self.options)
            .finish()
    }
}

/// Where the system's resolver configuration lives.
pub const SYSTEM_RESOLV_CONF: &str = "/etc/resolv.conf";
/// Where the system's hosts file lives.
pub const SYSTEM_HOSTS: &str = "/etc/hosts";

impl DnsResolver {
    /// The system's configuration: name servers, search list, timeout and attempts from
    /// `/etc/resolv.conf`, and `/etc/hosts` consulted before DNS for addresses.
    pub fn from_system() -> Result<DnsResolver, ResolveConfigError> {
        DnsResolver::from_resolv_conf(
            Path::new(SYSTEM_RESOLV_CONF),
            DnsOptions {
                hosts_file: Some(PathBuf::from(SYSTEM_HOSTS)),
                ..DnsOptions::default()
            },
        )
    }

    /// Reads a resolv.conf file. Its `timeout`, `attempts` and `search`/`domain` replace
    /// those of `options` when present; the rest of `options` is kept. Lines that cannot be
    /// used are logged with file and line, as glibc ignores them too.
    pub fn from_resolv_conf(
        path: &Path,
        options: DnsOptions,
    ) -> Result<DnsResolver, ResolveConfigError> {
        let text = fs::read_to_string(path).map_err(|source| ResolveConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        DnsResolver::from_resolv_conf_text(&text, &path.display().to_string(), options)
    }

    pub(crate) fn from_resolv_conf_text(
        text: &str,
        origin: &str,
        mut options: DnsOptions,
    ) -> Result<DnsResolver, ResolveConfigError> {
        let conf = ResolvConf::parse(text, origin);
        for warning in &conf.warnings {
            tracing::warn!("{warning}");
        }
        if conf.name_servers.is_empty() {
            return Err(ResolveConfigError::NoNameServers {
                origin: origin.to_string(),
            });
        }
        if let Some(timeout) = conf.timeout {
            options.timeout = timeout;
        }
        if let Some(attempts) = conf.attempts {
            options.attempts = attempts;
        }
        if !conf.search.is_empty() {
            options.search = conf.search;
        }
        DnsResolver::with_name_servers(&conf.name_servers, options)
    }

    /// Explicit name servers (`IP:port`), for split DNS (an ISP whose public MX refuses its
    /// own customers, an office name server that knows internal hosts) and for tests.
    pub fn with_name_servers(
        servers: &[SocketAddr],
        options: DnsOptions,
    ) -> Result<DnsResolver, ResolveConfigError> {
        if servers.is_empty() {
            return Err(ResolveConfigError::NoNameServers {
                origin: "the explicit name server list".to_string(),
            });
        }
        if options.timeout.is_zero() {
            return Err(ResolveConfigError::ZeroTimeout);
        }
        let mut config = ResolverConfig::from_parts(None, Vec::new(), Vec::new());
        for server in servers {
            let connection = |mut c: ConnectionConfig| {
                c.port = server.port();
                c
            };
            let connections = match options.protocol {
                DnsProtocol::Udp => vec![connection(ConnectionConfig::udp())],
                DnsProtocol::Tcp => vec![connection(ConnectionConfig::tcp())],
                DnsProtocol::UdpAndTcp => vec![
                    connection(ConnectionConfig::udp()),
                    connection(ConnectionConfig::tcp()),
                ],
            };
            config.add_name_server(NameServerConfig::new(server.ip(), true, connections));
        }
        for domain in &options.search {
            config.add_search(fqdn(domain));
        }

        let mut opts = ResolverOpts::default();
        opts.timeout = options.timeout;
        // hickory counts retries after the first try; resolv.conf counts tries.
        opts.attempts = options.attempts.max(1) as usize - 1;
        // The hosts file is loaded below from the configured path, never implicitly.
        opts.use_hosts_file = ResolveHosts::Never;
        opts.ip_strategy = match options.address_preference {
            AddressPreference::Ipv6First => LookupIpStrategy::Ipv6AndIpv4,
            AddressPreference::Ipv4First => LookupIpStrategy::Ipv4AndIpv6,
            AddressPreference::Ipv4Only => LookupIpStrategy::Ipv4Only,
        };

        let mut inner =
            TokioResolver::builder_with_config(config.clone(), TokioRuntimeProvider::default())
                .with_options(opts.clone())
                .build()
                .map_err(|e| ResolveConfigError::Build {
                    reason: e.to_string(),
                })?;
        if let Some(path) = &options.hosts_file {
            inner.set_hosts(Arc::new(read_hosts(path)?));
        }
        Ok(DnsResolver {
            inner,
            servers: servers.to_vec(),
            options,
            config,
            opts,
        })
    }

    /// The name servers asked, in order.
    pub fn name_servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// The options in effect.
    pub fn options(&self) -> &DnsOptions {
        &self.options
    }

    /// The search domains (from resolv.conf or the options).
    pub fn search_domains(&self) -> &[Domain] {
        &self.options.search
    }

    /// The hickory configuration for the same name servers and options, for a library that
    /// builds its own hickory resolver (mail-auth's `MessageAuthenticator::new`). It does not
    /// include the hosts file.
    pub fn hickory_config(&self) -> (ResolverConfig, ResolverOpts) {
        (self.config.clone(), self.opts.clone())
    }

    /// The hickory resolver itself, to share its cache: mail-auth 0.13's
    /// `MessageAuthenticator(resolver.hickory_resolver().clone())`.
    pub fn hickory_resolver(&self) -> &TokioResolver {
        &self.inner
    }

    /// The host names a PTR lookup gives for `ip` (reverse DNS), lower-cased, without the
    /// trailing dot. Names that are not valid host names are left out.
    pub async fn reverse_names(&self, ip: IpAddr) -> Result<Vec<Domain>, ResolveError> {
        let arpa = Name::from(ip);
        let shown = Domain::parse(&arpa.to_ascii())
            .expect("invariant: a reverse-lookup name (in-addr.arpa, ip6.arpa) is a valid domain");
        match self.inner.lookup(arpa, RecordType::PTR).await {
            Ok(lookup) => Ok(lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::PTR(ptr) => Domain::parse(&ptr.0.to_ascii()).ok(),
                    _ => None,
                })
                .collect()),
            Err(e) => Err(self.miss(&e).into_error(&shown, "PTR")),
        }
    }

    /// The TXT records at `label.domain` (e.g. `_mta-sts`, `_smtp._tls`), each record's
    /// strings joined (RFC 7208 §3.3 style). No such name or no TXT records is an empty list;
    /// only a failure to get an answer is an error (temporary).
    pub async fn txt_records(
        &self,
        label: &str,
        domain: &Domain,
    ) -> Result<Vec<Vec<u8>>, ResolveError> {
        let name = Name::from_ascii(format!("{label}.{}.", domain.as_str())).map_err(|e| {
            ResolveError::Temporary {
                name: domain.clone(),
                reason: format!("{label}.{domain} is not a DNS name: {e}"),
            }
        })?;
        match self.inner.lookup(name, RecordType::TXT).await {
            Ok(lookup) => Ok(lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::TXT(txt) => Some(
                        txt.txt_data
                            .iter()
                            .flat_map(|s| s.iter().copied())
                            .collect(),
                    ),
                    _ => None,
                })
                .collect()),
            Err(e) => match self.miss(&e) {
                Miss::NxDomain | Miss::NoData => Ok(Vec::new()),
                Miss::Temporary(reason) => Err(ResolveError::Temporary {
                    name: domain.clone(),
                    reason: format!("TXT lookup of {label}.{domain}: {reason}"),
                }),
            },
        }
    }

    async fn query(&self, name: &Domain, rtype: RecordType) -> Result<Vec<RData>, Miss> {
        match self.inner.lookup(fqdn(name), rtype).await {
            Ok(lookup) => {
                let found: Vec<RData> = lookup
                    .answers()
                    .iter()
                    .filter(|r| r.record_type() == rtype)
                    .map(|r| r.data.clone())
                    .collect();
                if found.is_empty() {
                    // Only intermediate CNAMEs came back: the final name has no such records.
                    Err(Miss::NoData)
                } else {
                    Ok(found)
                }
            }
            Err(e) => Err(self.miss(&e)),
        }
    }

    async fn family(&self, host: &Domain, rtype: RecordType) -> Result<Vec<IpAddr>, Miss> {
        let mut addrs: Vec<IpAddr> = self
            .query(host, rtype)
            .await?
            .into_iter()
            .filter_map(|data| match data {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
                _ => None,
            })
            .collect();
        let mut seen = Vec::with_capacity(addrs.len());
        addrs.retain(|a| {
            let new = !seen.contains(a);
            seen.push(*a);
            new
        });
        if self.options.randomize_addresses {
            addrs.shuffle(&mut rand::rng());
        }
        Ok(addrs)
    }

    async fn lookup_addresses(
        &self,
        host: &Domain,
        preference: AddressPreference,
    ) -> Result<Vec<IpAddr>, ResolveError> {
        let (first, second, what) = match preference {
            AddressPreference::Ipv4Only => {
                (self.family(host, RecordType::A).await, Ok(vec![]), "A")
            }
            AddressPreference::Ipv4First => {
                let (a, aaaa) = tokio::join!(
                    self.family(host, RecordType::A),
                    self.family(host, RecordType::AAAA)
                );
                (a, aaaa, "A or AAAA")
            }
            AddressPreference::Ipv6First => {
                let (a, aaaa) = tokio::join!(
                    self.family(host, RecordType::A),
                    self.family(host, RecordType::AAAA)
                );
                (aaaa, a, "A or AAAA")
            }
        };
        let mut addrs = Vec::new();
        let mut misses = Vec::new();
        for answer in [first, second] {
            match answer {
                Ok(list) => addrs.extend(list),
                Err(miss) => misses.push(miss),
            }
        }
        if !addrs.is_empty() {
            // One family answering is enough: the other one failing only narrows the choice.
            return Ok(addrs);
        }
        Err(Miss::worst(misses).into_error(host, what))
    }

    /// Words for a failed lookup, as [`ResolveError::Temporary`] shows them (`SERVFAIL from
    /// 127.0.0.1:5353`, `no answer from ... within 5s`), for modules that query these name
    /// servers through hickory themselves (SPF), so every DNS failure reads the same.
    pub(crate) fn describe_failure(&self, err: &NetError) -> String {
        match self.miss(err) {
            Miss::NxDomain => "the name does not exist (NXDOMAIN)".to_string(),
            Miss::NoData => "the name has no records of that type".to_string(),
            Miss::Temporary(reason) => reason,
        }
    }

    fn miss(&self, err: &NetError) -> Miss {
        let servers = ServerList(&self.servers);
        match err {
            NetError::Dns(DnsError::NoRecordsFound(NoRecords { response_code, .. })) => {
                match *response_code {
                    ResponseCode::NXDomain => Miss::NxDomain,
                    ResponseCode::NoError => Miss::NoData,
                    code => Miss::Temporary(format!("{} from {servers}", rcode_name(code))),
                }
            }
            NetError::Dns(DnsError::ResponseCode(ResponseCode::Refused)) => Miss::Temporary(
                format!("REFUSED by {servers} (is this host allowed to query it?)"),
            ),
            NetError::Dns(DnsError::ResponseCode(code)) => {
                Miss::Temporary(format!("{} from {servers}", rcode_name(*code)))
            }
            NetError::Timeout => {
                let tries = self.options.attempts.max(1);
                let tries = if tries > 1 {
                    format!(" ({tries} tries)")
                } else {
                    String::new()
                };
                Miss::Temporary(format!(
                    "no answer from {servers} within {}{tries}",
                    Human(self.options.timeout)
                ))
            }
            NetError::Io(e) => Miss::Temporary(format!("cannot reach {servers}: {e}")),
            NetError::NoConnections => Miss::Temporary(format!(
                "cannot connect to {servers} (nothing listening, or no route)"
            )),
            NetError::Proto(e) => Miss::Temporary(format!("malformed answer from {servers}: {e}")),
            NetError::Truncated => Miss::Temporary(format!(
                "the answer from {servers} was truncated and TCP is not enabled"
            )),
            other => Miss::Temporary(format!("{other} (name server {servers})")),
        }
    }
}

#[async_trait]
impl Resolver for DnsResolver {
    async fn mail_exchangers(&self, domain: &Domain) -> Result<Vec<MailExchanger>, ResolveError> {
        match self.query(domain, RecordType::MX).await {
            Ok(rdata) => {
                let records: Vec<MxRecord> = rdata
                    .iter()
                    .filter_map(|data| match data {
                        RData::MX(mx) => Some(MxRecord::new(mx.preference, mx.exchange.to_ascii())),
                        _ => None,
                    })
                    .collect();
                let mut list = mx::exchangers_from_records(domain, &records)?;
                mx::order_for_delivery(&mut list, &mut rand::rng());
                Ok(list)
            }
            Err(Miss::NoData) => {
                // The domain exists without MX: its own address is the implicit MX (RFC 5321
                // §5.1), whichever family it has, whatever the preference for connecting.
                match self
                    .lookup_addresses(domain, AddressPreference::Ipv4First)
                    .await
                {
                    Ok(_) => Ok(vec![MailExchanger {
                        preference: 0,
                        host: domain.clone(),
                        implicit: true,
                    }]),
                    Err(ResolveError::NoRecords { name, .. }) => Err(ResolveError::NoRecords {
                        name,
                        what: "MX, A or AAAA",
                    }),
                    Err(other) => Err(other),
                }
            }
            Err(miss) => Err(miss.into_error(domain, "MX")),
        }
    }

    async fn addresses(&self, host: &Domain) -> Result<Vec<IpAddr>, ResolveError> {
        self.lookup_addresses(host, self.options.address_preference)
            .await
    }

    async fn reverse_names(&self, ip: IpAddr) -> Result<Vec<Domain>, ResolveError> {
        DnsResolver::reverse_names(self, ip).await
    }
}

/// Why a query gave no records.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Miss {
    NxDomain,
    NoData,
    Temporary(String),
}

impl Miss {
    /// Of several families' misses, the one that decides: a temporary failure means the
    /// answer may yet come, so it wins over NXDOMAIN and no data.
    fn worst(misses: Vec<Miss>) -> Miss {
        let mut worst = Miss::NoData;
        for miss in misses {
            worst = match (worst, miss) {
                (t @ Miss::Temporary(_), _) | (_, t @ Miss::Temporary(_)) => t,
                (Miss::NxDomain, _) | (_, Miss::NxDomain) => Miss::NxDomain,
                _ => Miss::NoData,
            };
        }
        worst
    }

    fn into_error(self, name: &Domain, what: &'static str) -> ResolveError {
        match self {
            Miss::NxDomain => ResolveError::NoSuchDomain { name: name.clone() },
            Miss::NoData => ResolveError::NoRecords {
                name: name.clone(),
                what,
            },
            Miss::Temporary(reason) => ResolveError::Temporary {
                name: name.clone(),
                reason,
            },
        }
    }
}

fn fqdn(domain: &Domain) -> Name {
    Name::from_ascii(format!("{}.", domain.as_str()))
        .expect("invariant: a Domain is a valid DNS name")
}

fn read_hosts(path: &Path) -> Result<Hosts, ResolveConfigError> {
    let file = fs::File::open(path).map_err(|source| ResolveConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut hosts = Hosts::default();
    hosts
        .read_hosts_conf(file)
        .map_err(|source| ResolveConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(hosts)
}

fn rcode_name(code: ResponseCode) -> String {
    match code {
        ResponseCode::NoError => "NOERROR".into(),
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        ResponseCode::Refused => "REFUSED".into(),
        other => format!("response code {}", u16::from(other)),
    }
}

/// `127.0.0.1:5353`, or `192.0.2.1:53 or 192.0.2.2:53`.
struct ServerList<'a>(&'a [SocketAddr]);

impl fmt::Display for ServerList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, server) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" or ")?;
            }
            write!(f, "{server}")?;
        }
        Ok(())
    }
}

/// `500ms`, `5s`, `1500ms`.
struct Human(Duration);

impl fmt::Display for Human {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms >= 1000 && ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

#[cfg(test)]
mod tests;
