//! Who we are, for loop detection: our EHLO name and the addresses of this machine.
//!
//! The address test is a closure so a fuller self-detection (interface addresses, NAT
//! addresses from the configuration) can replace the plain set without touching the transport.

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use crate::address::Domain;

/// Tells whether an address belongs to this machine.
///
/// The default knows no address, so a route to `[127.0.0.1]:10025` (a local content filter)
/// keeps working; an embedding that delivers to the Internet should pass its own addresses.
#[derive(Clone)]
pub struct LocalAddresses(Arc<dyn Fn(IpAddr) -> bool + Send + Sync>);

impl LocalAddresses {
    /// No address is local: only the greeting and EHLO names detect loops.
    pub fn none() -> LocalAddresses {
        LocalAddresses(Arc::new(|_| false))
    }

    /// Exactly these addresses are local.
    pub fn from_set(addrs: impl IntoIterator<Item = IpAddr>) -> LocalAddresses {
        let set: HashSet<IpAddr> = addrs.into_iter().collect();
        LocalAddresses(Arc::new(move |ip| set.contains(&ip)))
    }

    /// Ask `test` (for example a self-detection helper that knows the interfaces).
    pub fn from_fn(test: impl Fn(IpAddr) -> bool + Send + Sync + 'static) -> LocalAddresses {
        LocalAddresses(Arc::new(test))
    }

    /// True when `ip` is this machine.
    pub fn contains(&self, ip: IpAddr) -> bool {
        (self.0)(ip)
    }
}

impl Default for LocalAddresses {
    fn default() -> LocalAddresses {
        LocalAddresses::none()
    }
}

impl fmt::Debug for LocalAddresses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LocalAddresses(..)")
    }
}

/// True when the name a server gives (greeting or EHLO, maybe with a trailing dot) is ours.
pub(crate) fn names_us(server_name: Option<&str>, ours: &Domain) -> bool {
    server_name.is_some_and(|n| {
        n.strip_suffix('.')
            .unwrap_or(n)
            .eq_ignore_ascii_case(ours.as_str())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_giving_our_name_in_any_case_is_us() {
        let ours = Domain::parse("pbx.example.com").unwrap();
        assert!(names_us(Some("PBX.example.com."), &ours));
        assert!(!names_us(Some("mx.example.com"), &ours));
        assert!(!names_us(None, &ours));
    }

    #[test]
    fn local_address_sets_and_closures_answer_alike() {
        let ip: IpAddr = "192.0.2.5".parse().unwrap();
        assert!(LocalAddresses::from_set([ip]).contains(ip));
        assert!(!LocalAddresses::none().contains(ip));
        assert!(LocalAddresses::from_fn(|a| a.is_ipv4()).contains(ip));
    }
}
