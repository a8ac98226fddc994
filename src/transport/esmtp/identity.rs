//! Who we are, for loop detection: our EHLO name and where this machine accepts mail.
//!
//! The address test is a closure so a fuller self-detection (interface addresses, NAT
//! addresses from the configuration) can replace the plain set without touching the transport.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::address::Domain;

/// Tells whether an address and port is where this machine itself accepts mail: an MX host
/// there would be a delivery to ourselves (a mail loop). Only this host's SMTP listening port
/// counts — port 25 unless the embedder says otherwise — so a route to `[127.0.0.1]:10025`
/// (a local content filter) or a test sink on `127.0.0.2:2525` is never a loop.
///
/// The default knows no address; an embedding that delivers to the Internet should pass its
/// own addresses.
#[derive(Clone)]
pub struct LocalAddresses(Arc<dyn Fn(SocketAddr) -> bool + Send + Sync>);

impl LocalAddresses {
    /// No address is local: only the greeting and EHLO names detect loops.
    pub fn none() -> LocalAddresses {
        LocalAddresses(Arc::new(|_| false))
    }

    /// Exactly these addresses, on port 25.
    pub fn from_set(addrs: impl IntoIterator<Item = IpAddr>) -> LocalAddresses {
        LocalAddresses::on_ports(addrs, [25])
    }

    /// These addresses on these ports (where this host's SMTP listeners are).
    pub fn on_ports(
        addrs: impl IntoIterator<Item = IpAddr>,
        ports: impl IntoIterator<Item = u16>,
    ) -> LocalAddresses {
        let addrs: HashSet<IpAddr> = addrs.into_iter().collect();
        let ports: HashSet<u16> = ports.into_iter().collect();
        LocalAddresses(Arc::new(move |a: SocketAddr| {
            ports.contains(&a.port()) && addrs.contains(&a.ip())
        }))
    }

    /// Ask `test` (for example a self-detection helper that knows the interfaces).
    pub fn from_fn(test: impl Fn(SocketAddr) -> bool + Send + Sync + 'static) -> LocalAddresses {
        LocalAddresses(Arc::new(test))
    }

    /// True when `addr` is where this machine accepts mail.
    pub fn contains(&self, addr: SocketAddr) -> bool {
        (self.0)(addr)
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
        let smtp = SocketAddr::new(ip, 25);
        assert!(LocalAddresses::from_set([ip]).contains(smtp));
        assert!(!LocalAddresses::none().contains(smtp));
        assert!(LocalAddresses::from_fn(|a| a.is_ipv4()).contains(smtp));
    }

    #[test]
    fn only_our_own_listening_port_is_a_loop() {
        let lo: IpAddr = "127.0.0.2".parse().unwrap();
        let me = LocalAddresses::from_set([lo]);
        assert!(me.contains(SocketAddr::new(lo, 25)));
        assert!(
            !me.contains(SocketAddr::new(lo, 2525)),
            "a sink beside us is not us"
        );
        let daemon = LocalAddresses::on_ports([lo], [2525]);
        assert!(daemon.contains(SocketAddr::new(lo, 2525)));
        assert!(!daemon.contains(SocketAddr::new(lo, 25)));
    }
}
