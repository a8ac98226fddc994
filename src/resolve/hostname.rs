//! This host's fully qualified name, for EHLO, `Received:` lines and bounces.
//!
//! The order is sendmail's and `hostname -f`'s: the configured name; else the system host name
//! if it already has a dot; else the canonical name of the hosts-file line that lists the
//! short name; else DNS (the short name under each search domain, then the reverse DNS of
//! this machine's addresses). A name that stays a single label is an error that tells the
//! operator how to fix it, because a bare `EHLO sipserver1` gets mail refused.

use std::fmt;
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use super::Resolver;
use super::dns::{DnsResolver, SYSTEM_HOSTS};
use super::local::interface_addresses;
use crate::address::{AddressError, Domain};

/// Where [`qualify_hostname`] looks. Every source can be replaced, so that each step can be
/// tested without touching the machine's files.
#[derive(Debug, Clone)]
pub struct HostnameSources<'a> {
    /// The system host name; `None` asks the operating system (`gethostname`).
    pub system_hostname: Option<String>,
    /// The hosts file.
    pub hosts_file: PathBuf,
    /// The resolver for the DNS steps (its search domains and reverse lookups); `None` skips
    /// DNS.
    pub dns: Option<&'a DnsResolver>,
    /// This machine's addresses, for reverse DNS and for the example line in the error;
    /// `None` reads the network interfaces.
    pub addresses: Option<Vec<IpAddr>>,
}

impl<'a> HostnameSources<'a> {
    /// The machine's own sources: `gethostname`, `/etc/hosts`, its interfaces, and `dns`.
    pub fn system(dns: Option<&'a DnsResolver>) -> HostnameSources<'a> {
        HostnameSources {
            system_hostname: None,
            hosts_file: PathBuf::from(SYSTEM_HOSTS),
            dns,
            addresses: None,
        }
    }
}

/// Why this host's name could not be found.
#[derive(Debug, thiserror::Error)]
pub enum HostnameError {
    /// The configured or system host name is not a valid host name.
    #[error("my host name {name:?} is not a valid host name: {source}")]
    Invalid {
        /// The name as given.
        name: String,
        /// Why it was refused.
        source: AddressError,
    },
    /// The operating system would not tell its host name.
    #[error("cannot read the system host name: {source}")]
    NoSystemHostname {
        /// The error from `gethostname`.
        source: io::Error,
    },
    /// The hosts file exists but could not be read.
    #[error("cannot read {}: {source}", path.display())]
    HostsFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// Only a single-label name could be found.
    #[error(
        "unable to qualify my own domain name ({short}): add \"{example_addr} {short}.{example_domain} {short}\" to {} or set the hostname{}",
        hosts_file.display(),
        DnsTrouble(dns_trouble)
    )]
    Unqualified {
        /// The short name (`sipserver1`).
        short: String,
        /// The address for the example hosts line (this machine's, when known).
        example_addr: IpAddr,
        /// The domain for the example hosts line (the first search domain, or `example.com`).
        example_domain: String,
        /// The hosts file to edit.
        hosts_file: PathBuf,
        /// Temporary DNS failures met on the way, when there were any.
        dns_trouble: Option<String>,
    },
}

impl HostnameError {
    /// True when DNS failures may have hidden the answer, so trying again later may succeed.
    pub fn is_temporary(&self) -> bool {
        matches!(
            self,
            HostnameError::Unqualified {
                dns_trouble: Some(_),
                ..
            }
        )
    }
}

struct DnsTrouble<'a>(&'a Option<String>);

impl fmt::Display for DnsTrouble<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(trouble) => write!(f, " (DNS could not be asked: {trouble})"),
            None => Ok(()),
        }
    }
}

/// This host's fully qualified name. `configured` (an operator's setting) wins when it has a
/// dot; a configured single label is qualified like a system host name.
///
/// ```no_run
/// use postrider::resolve::{DnsResolver, HostnameSources, qualify_hostname};
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let dns = DnsResolver::from_system()?;
/// let me = qualify_hostname(None, &HostnameSources::system(Some(&dns))).await?;
/// println!("EHLO {me}");
/// # Ok(()) }
/// ```
pub async fn qualify_hostname(
    configured: Option<&str>,
    sources: &HostnameSources<'_>,
) -> Result<Domain, HostnameError> {
    let raw = match (configured, &sources.system_hostname) {
        (Some(name), _) => name.trim().to_string(),
        (None, Some(name)) => name.trim().to_string(),
        (None, None) => {
            system_hostname().map_err(|source| HostnameError::NoSystemHostname { source })?
        }
    };
    let name = Domain::parse(&raw).map_err(|source| HostnameError::Invalid {
        name: raw.clone(),
        source,
    })?;
    if !name.is_single_label() {
        return Ok(name);
    }
    let short = name;

    if let Some(qualified) = qualify_from_hosts_file(&sources.hosts_file, &short)? {
        return Ok(qualified);
    }

    let addresses = match &sources.addresses {
        Some(list) => list.clone(),
        None => interface_addresses().unwrap_or_default(),
    };
    let mut trouble = Vec::new();
    if let Some(dns) = sources.dns {
        for search in dns.search_domains() {
            let Ok(candidate) = Domain::parse(&format!("{short}.{search}")) else {
                continue;
            };
            match dns.addresses(&candidate).await {
                Ok(_) => return Ok(candidate),
                Err(e) if e.is_temporary() => trouble.push(e.to_string()),
                Err(_) => {}
            }
        }
        for addr in addresses.iter().filter(|a| worth_reverse_lookup(a)) {
            match dns.reverse_names(*addr).await {
                Ok(names) => {
                    if let Some(found) = names
                        .into_iter()
                        .find(|n| !n.is_single_label() && n.labels().next() == Some(short.as_str()))
                    {
                        return Ok(found);
                    }
                }
                Err(e) if e.is_temporary() => trouble.push(e.to_string()),
                Err(_) => {}
            }
        }
    }

    Err(HostnameError::Unqualified {
        short: short.to_string(),
        example_addr: example_address(&addresses),
        example_domain: sources
            .dns
            .and_then(|dns| dns.search_domains().first())
            .map_or_else(|| "example.com".to_string(), |d| d.to_string()),
        hosts_file: sources.hosts_file.clone(),
        dns_trouble: (!trouble.is_empty()).then(|| trouble.join("; ")),
    })
}

/// The operating system's host name (`gethostname`), as it is set: often a single label.
pub fn system_hostname() -> io::Result<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the pointer and length describe `buf`, which outlives the call.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let len = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    let name = std::str::from_utf8(&buf[..len])
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "host name is not UTF-8"))?;
    if name.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "the host name is not set",
        ));
    }
    Ok(name.to_string())
}

fn qualify_from_hosts_file(path: &Path, short: &Domain) -> Result<Option<Domain>, HostnameError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(qualify_from_hosts_text(&text, short)),
        // A container or a minimal system may have no hosts file: not an error.
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(HostnameError::HostsFile {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The canonical name of the first hosts line that lists `short`, when it has a dot; a line
/// written the other way round (`192.0.2.1 sipserver1 sipserver1.example.com`) gives its
/// first alias that extends the short name.
fn qualify_from_hosts_text(text: &str, short: &Domain) -> Option<Domain> {
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let mut words = line.split_whitespace();
        let Some(Ok(_)) = words.next().map(str::parse::<IpAddr>) else {
            continue;
        };
        let names: Vec<Domain> = words.filter_map(|w| Domain::parse(w).ok()).collect();
        if !names.contains(short) {
            continue;
        }
        if let Some(canonical) = names.first().filter(|n| !n.is_single_label()) {
            return Some(canonical.clone());
        }
        if let Some(alias) = names
            .iter()
            .find(|n| !n.is_single_label() && n.labels().next() == Some(short.as_str()))
        {
            return Some(alias.clone());
        }
    }
    None
}

fn worth_reverse_lookup(addr: &IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_unspecified() && !v4.is_link_local(),
        IpAddr::V6(v6) => !v6.is_loopback() && !v6.is_unspecified() && !v6.is_unicast_link_local(),
    }
}

/// This machine's first IPv4 address that others can reach, else its first such IPv6
/// address, else 127.0.1.1 (Debian's convention for the host's own line).
fn example_address(addresses: &[IpAddr]) -> IpAddr {
    addresses
        .iter()
        .find(|a| a.is_ipv4() && worth_reverse_lookup(a))
        .or_else(|| addresses.iter().find(|a| worth_reverse_lookup(a)))
        .copied()
        .unwrap_or(IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Domain {
        Domain::parse(s).unwrap()
    }

    fn sources(hostname: &str, hosts: &Path) -> HostnameSources<'static> {
        HostnameSources {
            system_hostname: Some(hostname.to_string()),
            hosts_file: hosts.to_path_buf(),
            dns: None,
            addresses: Some(vec![
                "127.0.0.1".parse().unwrap(),
                "192.168.10.10".parse().unwrap(),
            ]),
        }
    }

    fn hosts_file(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        fs::write(file.path(), text).unwrap();
        file
    }

    #[tokio::test]
    async fn a_configured_fqdn_wins() {
        let hosts = hosts_file("192.168.10.10 other.example.net sipserver1\n");
        let name = qualify_hostname(
            Some("Mail.Example.COM"),
            &sources("sipserver1", hosts.path()),
        )
        .await
        .unwrap();
        assert_eq!(name, d("mail.example.com"));
    }

    #[tokio::test]
    async fn a_dotted_system_hostname_is_used_as_is() {
        let hosts = hosts_file("");
        let name = qualify_hostname(None, &sources("voip.example.org", hosts.path()))
            .await
            .unwrap();
        assert_eq!(name, d("voip.example.org"));
    }

    #[tokio::test]
    async fn a_short_hostname_is_qualified_by_the_hosts_line_that_lists_it() {
        let hosts = hosts_file(
            "127.0.0.1 localhost\n\
             # 10.0.0.1 sipserver1.wrong.example sipserver1\n\
             192.168.10.10\tsipserver1.ourtest.com sipserver1   # the PBX\n",
        );
        let name = qualify_hostname(None, &sources("sipserver1", hosts.path()))
            .await
            .unwrap();
        assert_eq!(name, d("sipserver1.ourtest.com"));
    }

    #[tokio::test]
    async fn a_hosts_line_written_short_name_first_still_qualifies() {
        let hosts = hosts_file("192.168.10.10 sipserver1 sipserver1.ourtest.com\n");
        let name = qualify_hostname(Some("sipserver1"), &sources("ignored", hosts.path()))
            .await
            .unwrap();
        assert_eq!(name, d("sipserver1.ourtest.com"));
    }

    #[tokio::test]
    async fn an_unqualifiable_name_says_what_line_to_add() {
        let hosts = hosts_file("127.0.0.1 localhost sipserver1\n");
        let err = qualify_hostname(None, &sources("sipserver1", hosts.path()))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "unable to qualify my own domain name (sipserver1): add \"192.168.10.10 sipserver1.example.com sipserver1\" to {} or set the hostname",
                hosts.path().display()
            )
        );
        assert!(!err.is_temporary());
    }

    #[tokio::test]
    async fn a_missing_hosts_file_is_not_an_error_and_the_example_falls_back_to_127_0_1_1() {
        let mut src = sources("pbx", Path::new("/nonexistent/hosts"));
        src.addresses = Some(vec!["127.0.0.1".parse().unwrap()]);
        let err = qualify_hostname(None, &src).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("add \"127.0.1.1 pbx.example.com pbx\" to /nonexistent/hosts"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn an_invalid_name_is_refused_with_the_name() {
        let hosts = hosts_file("");
        let err = qualify_hostname(Some("bad_name"), &sources("x", hosts.path()))
            .await
            .unwrap_err();
        assert!(
            err.to_string().starts_with("my host name \"bad_name\""),
            "{err}"
        );
    }

    #[test]
    fn the_system_hostname_can_be_read() {
        let name = system_hostname().unwrap();
        assert!(!name.is_empty());
    }
}
