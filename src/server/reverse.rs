//! The client's name: its PTR records, kept only when the name resolves back to the client's
//! address (forward-confirmed reverse DNS; sendmail marks the other case "may be forged").

use std::net::IpAddr;
use std::time::Duration;

use crate::address::Domain;
use crate::resolve::Resolver;

/// What the reverse lookup of a client found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientName {
    /// A PTR name whose addresses include the client's: usable by access rules.
    Confirmed(Domain),
    /// A PTR name that does not resolve back to the client: shown, never trusted.
    Forged(Domain),
    /// No PTR record, or the lookup failed or took too long.
    Unknown,
}

impl ClientName {
    /// The name, only when forward-confirmed.
    pub fn confirmed(&self) -> Option<&Domain> {
        match self {
            ClientName::Confirmed(d) => Some(d),
            _ => None,
        }
    }
}

/// Looks the client up: each PTR name in turn until one resolves back to `ip`. The whole
/// look-up is bounded by `limit`; past it the client is `Unknown`.
pub async fn client_name(resolver: &dyn Resolver, ip: IpAddr, limit: Duration) -> ClientName {
    let lookup = async {
        let names = match resolver.reverse_names(ip).await {
            Ok(n) if !n.is_empty() => n,
            _ => return ClientName::Unknown,
        };
        let want = canonical(ip);
        for name in &names {
            if let Ok(addrs) = resolver.addresses(name).await
                && addrs.into_iter().map(canonical).any(|a| a == want)
            {
                return ClientName::Confirmed(name.clone());
            }
        }
        ClientName::Forged(names[0].clone())
    };
    tokio::time::timeout(limit, lookup)
        .await
        .unwrap_or(ClientName::Unknown)
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::StaticResolver;

    fn d(s: &str) -> Domain {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn a_name_counts_only_when_it_resolves_back() {
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let r = StaticResolver::new()
            .with_ptr(ip, d("pbx.lan.example"))
            .with_host(d("pbx.lan.example"), ip);
        let limit = Duration::from_secs(1);
        assert_eq!(
            client_name(&r, ip, limit).await,
            ClientName::Confirmed(d("pbx.lan.example"))
        );
        let forged = StaticResolver::new()
            .with_ptr(ip, d("bank.example"))
            .with_host(d("bank.example"), "198.51.100.1".parse().unwrap());
        assert_eq!(
            client_name(&forged, ip, limit).await,
            ClientName::Forged(d("bank.example"))
        );
        assert_eq!(
            client_name(&StaticResolver::new(), ip, limit).await,
            ClientName::Unknown
        );
    }
}
