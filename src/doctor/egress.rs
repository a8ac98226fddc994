//! The address receivers see when this host sends: the one SPF must authorise.
//!
//! The configured `[spf] public_addresses` when there are any (behind NAT nothing else can
//! know them); else this host's address on a connection towards the mail servers: the
//! port-25 check's own socket when it connected, else the address the kernel would send from
//! (a UDP socket "connected" to the destination: it picks the source address without sending
//! anything).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

use super::Doctor;
use crate::resolve::{Resolver, host_addresses, resolve_mx_addresses};

/// One address receivers may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Egress {
    pub ip: IpAddr,
    /// `None` when configured; else the connection it was read from
    /// (`the connection to mx.example.com [192.0.2.1]:25`).
    pub seen_on: Option<String>,
}

/// The addresses to check; empty when none can be found.
pub(crate) async fn egress(d: &Doctor, port25_local: Option<(IpAddr, String)>) -> Vec<Egress> {
    let configured = &d.config.spf.public_addresses;
    if !configured.is_empty() {
        return configured
            .iter()
            .map(|&ip| Egress { ip, seen_on: None })
            .collect();
    }
    if let Some((ip, seen_on)) = port25_local {
        return vec![Egress {
            ip,
            seen_on: Some(seen_on),
        }];
    }
    let Some(target) = destination(d).await else {
        return Vec::new();
    };
    source_address(target)
        .map(|ip| Egress {
            ip,
            seen_on: Some(format!("the route to {target}")),
        })
        .into_iter()
        .collect()
}

/// Somewhere mail goes: the probe domain's first MX address, else the smart host's.
async fn destination(d: &Doctor) -> Option<SocketAddr> {
    let dns = d.dns.as_ref().ok()?;
    if let Some(domain) = &d.options.probe_domain
        && let Ok(list) = resolve_mx_addresses(dns as &dyn Resolver, domain).await
        && let Some(ip) = list.first().and_then(|(_, addrs)| addrs.first())
    {
        return Some(SocketAddr::new(*ip, d.options.smtp_port));
    }
    let smart = d.config.smart_host.as_ref()?;
    let hop = smart.hops().first()?;
    let ip = *host_addresses(dns, &hop.host).await.ok()?.first()?;
    Some(SocketAddr::new(ip, hop.port_for(smart.mailer())))
}

/// The source address the kernel picks for `target`. Nothing is sent: connecting a UDP socket
/// only chooses the route.
pub(crate) fn source_address(target: SocketAddr) -> Option<IpAddr> {
    let any: IpAddr = match target {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = UdpSocket::bind(SocketAddr::new(any, 0)).ok()?;
    socket.connect(target).ok()?;
    Some(socket.local_addr().ok()?.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_address_towards_loopback_is_loopback() {
        let ip = source_address("127.0.0.1:25".parse().unwrap()).unwrap();
        assert!(ip.is_loopback(), "{ip}");
    }
}
