//! Is this MX host me? Self-detection for sendmail's "mail loops back to me (MX problem?)".
//!
//! A domain whose MX points at the sending machine (a mis-set MX, a stale DNS entry after a
//! move) would otherwise have its mail delivered to ourselves over and over. RFC 5321 §5.1:
//! when the client finds itself in the MX list it discards every MX of equal or worse
//! preference; when nothing is left the mail cannot go anywhere and fails with 5.3.5.
//!
//! Whether a loop is really a loop is the caller's call: an embedder that runs next to a
//! local MTA which does accept the domain on port 25 is not looping. The transport applies
//! [`LocalIdentity::exclude_self`] to MX deliveries on the default port, not to a
//! mailertable's explicit `[host]:port`.

use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{MailExchanger, ResolveError};
use crate::address::Domain;

/// This machine's names and addresses.
///
/// Always local, whatever was configured: `localhost` and names under `.localhost` (RFC 6761),
/// loopback addresses (127.0.0.0/8, `::1`), the unspecified addresses (`0.0.0.0`, `::`, which
/// connect to this machine), and IPv4-mapped IPv6 forms of local IPv4 addresses.
///
/// ```
/// use postrider::Domain;
/// use postrider::resolve::LocalIdentity;
///
/// let me = LocalIdentity::new([Domain::parse("sipserver1.example.com")?], ["192.168.10.10".parse()?]);
/// assert!(me.is_local_host(&Domain::parse("SIPSERVER1.example.com")?));
/// assert!(me.is_local_addr("127.0.0.2".parse()?));
/// assert!(me.is_local_addr("192.168.10.10".parse()?));
/// assert!(!me.is_local_addr("192.168.10.11".parse()?));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalIdentity {
    names: BTreeSet<Domain>,
    addrs: BTreeSet<IpAddr>,
}

impl LocalIdentity {
    /// An identity from the given names and addresses only (no interface scan).
    pub fn new(
        names: impl IntoIterator<Item = Domain>,
        addrs: impl IntoIterator<Item = IpAddr>,
    ) -> LocalIdentity {
        LocalIdentity {
            names: names.into_iter().collect(),
            addrs: addrs.into_iter().collect(),
        }
    }

    /// This machine: `hostname` (the configured or qualified name) and the addresses of every
    /// network interface.
    pub fn detect(hostname: &Domain) -> io::Result<LocalIdentity> {
        Ok(LocalIdentity::new(
            [hostname.clone()],
            interface_addresses()?,
        ))
    }

    /// Adds a name (an alias this machine answers to, a virtual host).
    pub fn with_name(mut self, name: Domain) -> LocalIdentity {
        self.names.insert(name);
        self
    }

    /// Adds an address (a NAT's public address that forwards port 25 here).
    pub fn with_address(mut self, addr: IpAddr) -> LocalIdentity {
        self.addrs.insert(addr);
        self
    }

    /// The configured names.
    pub fn names(&self) -> impl Iterator<Item = &Domain> {
        self.names.iter()
    }

    /// The configured and detected addresses.
    pub fn addresses(&self) -> impl Iterator<Item = &IpAddr> {
        self.addrs.iter()
    }

    /// True when `host` names this machine.
    pub fn is_local_host(&self, host: &Domain) -> bool {
        host.as_str() == "localhost"
            || host.as_str().ends_with(".localhost")
            || self.names.contains(host)
    }

    /// True when connecting to `addr` reaches this machine.
    pub fn is_local_addr(&self, addr: IpAddr) -> bool {
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            v4 => v4,
        };
        addr.is_loopback() || addr.is_unspecified() || self.addrs.contains(&addr)
    }

    /// Applies RFC 5321 §5.1 to a resolved MX list (as [`resolve_mx_addresses`] returns it):
    /// when an exchanger is this machine (by name or by any of its addresses), it and every
    /// exchanger of equal or worse preference are dropped. When nothing is left — this
    /// machine is the best MX, or the implicit MX — the mail loops back:
    /// [`ResolveError::LoopsBack`] (5.3.5).
    ///
    /// [`resolve_mx_addresses`]: super::resolve_mx_addresses
    pub fn exclude_self(
        &self,
        domain: &Domain,
        list: Vec<(MailExchanger, Vec<IpAddr>)>,
    ) -> Result<Vec<(MailExchanger, Vec<IpAddr>)>, ResolveError> {
        let me = list.iter().find_map(|(mx, addrs)| {
            if self.is_local_host(&mx.host) {
                Some((mx.preference, mx.host.to_string()))
            } else {
                addrs
                    .iter()
                    .find(|a| self.is_local_addr(**a))
                    .map(|a| (mx.preference, format!("{} [{a}]", mx.host)))
            }
        });
        let Some((my_preference, shown)) = me else {
            return Ok(list);
        };
        let kept: Vec<_> = list
            .into_iter()
            .filter(|(mx, _)| mx.preference < my_preference)
            .collect();
        if kept.is_empty() {
            return Err(ResolveError::LoopsBack {
                domain: domain.clone(),
                host: shown,
            });
        }
        Ok(kept)
    }
}

/// The addresses of this machine's network interfaces (`getifaddrs`), loopback included.
pub fn interface_addresses() -> io::Result<Vec<IpAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: `head` is a valid out-pointer; on success the list is freed below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut addrs = Vec::new();
    let mut cursor = head;
    while !cursor.is_null() {
        // SAFETY: `cursor` is a node of the list getifaddrs returned, not yet freed.
        let entry = unsafe { &*cursor };
        if !entry.ifa_addr.is_null() {
            // SAFETY: `ifa_addr` is non-null and points to a sockaddr whose `sa_family`
            // says which concrete sockaddr it is; we read only that type.
            unsafe {
                match i32::from((*entry.ifa_addr).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(entry.ifa_addr as *const libc::sockaddr_in);
                        addrs.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                            sin.sin_addr.s_addr,
                        ))));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(entry.ifa_addr as *const libc::sockaddr_in6);
                        addrs.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
                    }
                    _ => {}
                }
            }
        }
        cursor = entry.ifa_next;
    }
    // SAFETY: `head` came from a successful getifaddrs and is freed exactly once.
    unsafe { libc::freeifaddrs(head) };
    addrs.sort();
    addrs.dedup();
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Domain {
        Domain::parse(s).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn mx(preference: u16, host: &str, addrs: &[&str]) -> (MailExchanger, Vec<IpAddr>) {
        (
            MailExchanger {
                preference,
                host: d(host),
                implicit: false,
            },
            addrs.iter().map(|a| ip(a)).collect(),
        )
    }

    fn me() -> LocalIdentity {
        LocalIdentity::new([d("sipserver1.example.com")], [ip("192.168.10.10")])
    }

    #[test]
    fn loopback_unspecified_and_mapped_addresses_are_local() {
        let me = me();
        for local in [
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "0.0.0.0",
            "::",
            "192.168.10.10",
            "::ffff:192.168.10.10",
            "::ffff:127.0.0.1",
        ] {
            assert!(me.is_local_addr(ip(local)), "{local}");
        }
        for remote in ["192.168.10.11", "2001:db8::1", "::ffff:192.0.2.1"] {
            assert!(!me.is_local_addr(ip(remote)), "{remote}");
        }
    }

    #[test]
    fn localhost_and_the_configured_name_are_local_hosts() {
        let me = me();
        assert!(me.is_local_host(&d("localhost")));
        assert!(me.is_local_host(&d("mail.localhost")));
        assert!(me.is_local_host(&d("sipserver1.example.com")));
        assert!(!me.is_local_host(&d("sipserver1.example.net")));
        assert!(
            me.clone()
                .with_name(d("alias.example.com"))
                .is_local_host(&d("alias.example.com"))
        );
    }

    #[test]
    fn the_interfaces_include_loopback() {
        let addrs = interface_addresses().unwrap();
        assert!(addrs.iter().any(|a| a.is_loopback()), "{addrs:?}");
    }

    #[test]
    fn a_list_without_this_machine_is_kept_whole() {
        let list = vec![
            mx(10, "mx1.b.test", &["192.0.2.1"]),
            mx(20, "mx2.b.test", &["192.0.2.2"]),
        ];
        assert_eq!(me().exclude_self(&d("b.test"), list.clone()).unwrap(), list);
    }

    #[test]
    fn only_exchangers_better_than_this_machine_are_kept() {
        let list = vec![
            mx(10, "mx1.b.test", &["192.0.2.1"]),
            mx(20, "backup.b.test", &["192.168.10.10"]),
            mx(20, "other.b.test", &["192.0.2.3"]),
            mx(30, "last.b.test", &["192.0.2.4"]),
        ];
        let kept = me().exclude_self(&d("b.test"), list).unwrap();
        assert_eq!(kept, vec![mx(10, "mx1.b.test", &["192.0.2.1"])]);
    }

    #[test]
    fn being_the_best_mx_is_a_loop_with_5_3_5() {
        let list = vec![
            mx(10, "sipserver1.example.com", &["192.0.2.99"]),
            mx(20, "mx2.b.test", &["192.0.2.2"]),
        ];
        let err = me().exclude_self(&d("b.test"), list).unwrap_err();
        assert_eq!(err.status().to_string(), "5.3.5");
        assert!(!err.is_temporary());
        assert_eq!(
            err.to_string(),
            "config error: mail for b.test loops back to me (MX problem?): sipserver1.example.com is this machine"
        );
    }

    #[test]
    fn an_mx_host_with_a_loopback_address_is_a_loop() {
        let list = vec![mx(10, "mx.b.test", &["192.0.2.1", "127.0.0.1"])];
        let err = me().exclude_self(&d("b.test"), list).unwrap_err();
        assert!(err.to_string().contains("mx.b.test [127.0.0.1]"), "{err}");
    }
}
