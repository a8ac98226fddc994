//! Where a next hop leads: its hosts (MX-expanded for unbracketed domains, RFC 5321 §5.1) and
//! each host's addresses, in the order the resolver gives them.

use std::net::IpAddr;

use crate::address::Domain;
use crate::resolve::Resolver;
use crate::route::{Host, NextHop};
use crate::status::{Diagnostic, EnhancedStatus};

use super::classify;

/// One host of a next hop, before its addresses are looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Candidate {
    /// The host name (an MX host, or the hop's own name); `None` for an address literal.
    pub name: Option<Domain>,
    /// The address of an address literal.
    pub literal: Option<IpAddr>,
}

/// The hosts to try for `hop`, best first.
///
/// An unbracketed domain goes through `mail_exchangers` (which already orders by preference,
/// shuffles equal ones, and falls back to the implicit MX only when no MX exists); a bracketed
/// name or an address literal is taken as it is.
pub(crate) async fn candidates(
    hop: &NextHop,
    resolver: &dyn Resolver,
) -> Result<Vec<Candidate>, Diagnostic> {
    match (&hop.host, hop.mx) {
        (Host::Ip(ip), _) => Ok(vec![Candidate {
            name: None,
            literal: Some(*ip),
        }]),
        (Host::Name(name), false) => Ok(vec![Candidate {
            name: Some(name.clone()),
            literal: None,
        }]),
        (Host::Name(domain), true) => {
            let mxs = resolver
                .mail_exchangers(domain)
                .await
                .map_err(|e| classify::mx_lookup(&e))?;
            if mxs.is_empty() {
                return Err(Diagnostic::local(
                    EnhancedStatus::new(4, 4, 3),
                    format!("the resolver returned no mail exchanger for {domain}"),
                ));
            }
            Ok(mxs
                .into_iter()
                .map(|mx| Candidate {
                    name: Some(mx.host),
                    literal: None,
                })
                .collect())
        }
    }
}

/// The addresses of one candidate. `mx_of` names the destination domain when the host came
/// from its MX records, for the diagnostic.
pub(crate) async fn addresses(
    candidate: &Candidate,
    mx_of: Option<&Domain>,
    resolver: &dyn Resolver,
) -> Result<Vec<IpAddr>, Diagnostic> {
    if let Some(ip) = candidate.literal {
        return Ok(vec![ip]);
    }
    let Some(name) = &candidate.name else {
        return Ok(Vec::new());
    };
    match resolver.addresses(name).await {
        Ok(addrs) if !addrs.is_empty() => Ok(addrs),
        Ok(_) => Err(classify::address_lookup(
            name,
            mx_of,
            &crate::resolve::ResolveError::NoRecords {
                name: name.clone(),
                what: "A or AAAA",
            },
        )),
        Err(e) => Err(classify::address_lookup(name, mx_of, &e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::StaticResolver;

    fn d(s: &str) -> Domain {
        Domain::parse(s).unwrap()
    }

    #[tokio::test]
    async fn an_mx_hop_expands_to_its_exchangers_in_preference_order() {
        let r = StaticResolver::new()
            .with_mx(d("example.com"), 20, d("mx2.example.com"))
            .with_mx(d("example.com"), 10, d("mx1.example.com"));
        let c = candidates(&NextHop::mx(d("example.com"), None), &r)
            .await
            .unwrap();
        let names: Vec<_> = c.iter().map(|c| c.name.clone().unwrap()).collect();
        assert_eq!(names, [d("mx1.example.com"), d("mx2.example.com")]);
    }

    #[tokio::test]
    async fn bracketed_hosts_are_not_mx_expanded() {
        let r = StaticResolver::new().with_mx(d("relay.example"), 10, d("elsewhere.example"));
        let hop = NextHop::direct(Host::Name(d("relay.example")), Some(587));
        let c = candidates(&hop, &r).await.unwrap();
        assert_eq!(c[0].name, Some(d("relay.example")));
        let lit = NextHop::direct(Host::Ip("192.0.2.7".parse().unwrap()), None);
        let c = candidates(&lit, &r).await.unwrap();
        assert_eq!(
            addresses(&c[0], None, &r).await.unwrap(),
            ["192.0.2.7".parse::<IpAddr>().unwrap()]
        );
    }

    #[tokio::test]
    async fn a_domain_that_does_not_exist_fails_permanently() {
        let r = StaticResolver::new();
        let err = candidates(&NextHop::mx(d("nowhere.example"), None), &r)
            .await
            .unwrap_err();
        assert_eq!(err.status.to_string(), "5.1.2");
    }

    #[tokio::test]
    async fn an_mx_host_without_address_is_a_temporary_dns_failure() {
        let r = StaticResolver::new().with_mx(d("example.com"), 10, d("mx1.example.com"));
        let c = candidates(&NextHop::mx(d("example.com"), None), &r)
            .await
            .unwrap();
        let err = addresses(&c[0], Some(&d("example.com")), &r)
            .await
            .unwrap_err();
        assert_eq!(err.status.to_string(), "4.4.3");
        assert!(
            err.text.contains("mx1.example.com (MX of example.com)"),
            "{}",
            err.text
        );
    }
}
