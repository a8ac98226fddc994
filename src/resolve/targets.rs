//! From a next hop to the addresses to connect to, with the rules that can only be judged
//! once every MX host has been looked up.

use std::net::IpAddr;

use super::{MailExchanger, ResolveError, Resolver};
use crate::address::Domain;
use crate::route::Host;

/// The addresses of a next-hop host: a literal (`[192.0.2.1]`) as is, a name through
/// [`Resolver::addresses`].
pub async fn host_addresses(
    resolver: &dyn Resolver,
    host: &Host,
) -> Result<Vec<IpAddr>, ResolveError> {
    match host {
        Host::Ip(ip) => Ok(vec![*ip]),
        Host::Name(name) => resolver.addresses(name).await,
    }
}

/// A domain's mail exchangers in delivery order, each with its addresses.
///
/// This is where "an MX list whose hosts all fail to resolve is a temporary failure" is
/// enforced, because it can only be judged after the address lookups:
///
/// - an MX host that does not resolve (NXDOMAIN, no A/AAAA, a temporary failure) is skipped
///   and logged; the others keep their order;
/// - when no host of the list resolves, the result is [`ResolveError::Temporary`] (4.4.3)
///   naming each host and why — a DNS mistake of the recipient's that is often fixed within
///   the queue lifetime;
/// - the domain's own A/AAAA is never used when MX records exist;
/// - for an implicit MX (the domain has no MX), the address lookup's own error is returned.
///
/// Errors of [`Resolver::mail_exchangers`] (NXDOMAIN, null MX, ...) pass through. Hosts are
/// looked up one after the other, in delivery order; answers are cached by the resolver.
pub async fn resolve_mx_addresses(
    resolver: &dyn Resolver,
    domain: &Domain,
) -> Result<Vec<(MailExchanger, Vec<IpAddr>)>, ResolveError> {
    let exchangers = resolver.mail_exchangers(domain).await?;
    let mut resolved = Vec::with_capacity(exchangers.len());
    let mut failures = Vec::new();
    for mx in exchangers {
        match resolver.addresses(&mx.host).await {
            Ok(addrs) if !addrs.is_empty() => resolved.push((mx, addrs)),
            Ok(_) => failures.push((mx, None)),
            Err(err) => {
                if mx.implicit {
                    return Err(err);
                }
                tracing::warn!(domain = %domain, host = %mx.host, "MX host skipped: {err}");
                failures.push((mx, Some(err)));
            }
        }
    }
    if resolved.is_empty() {
        let why: Vec<String> = failures
            .iter()
            .map(|(mx, err)| format!("{} ({})", mx.host, short_reason(err.as_ref())))
            .collect();
        return Err(ResolveError::Temporary {
            name: domain.clone(),
            reason: format!("no MX host has an address: {}", why.join(", ")),
        });
    }
    Ok(resolved)
}

fn short_reason(err: Option<&ResolveError>) -> String {
    match err {
        None => "no addresses".to_string(),
        Some(ResolveError::NoSuchDomain { .. }) => "NXDOMAIN".to_string(),
        Some(ResolveError::NoRecords { what, .. }) => format!("no {what} records"),
        Some(ResolveError::Temporary { reason, .. }) => reason.clone(),
        Some(other) => other.to_string(),
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
    async fn literals_pass_through_without_a_lookup() {
        let r = StaticResolver::new();
        let ip: IpAddr = "2001:db8::25".parse().unwrap();
        assert_eq!(host_addresses(&r, &Host::Ip(ip)).await.unwrap(), vec![ip]);
        let err = host_addresses(&r, &Host::Name(d("nowhere.test")))
            .await
            .unwrap_err();
        assert_eq!(err.status().to_string(), "5.1.2");
    }

    #[tokio::test]
    async fn hosts_that_do_not_resolve_are_skipped() {
        let r = StaticResolver::new()
            .with_mx(d("b.test"), 10, d("gone.b.test"))
            .with_mx(d("b.test"), 20, d("mx2.b.test"))
            .with_host(d("mx2.b.test"), "192.0.2.2".parse().unwrap());
        let list = resolve_mx_addresses(&r, &d("b.test")).await.unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].0.host, d("mx2.b.test"));
    }

    #[tokio::test]
    async fn a_list_whose_hosts_all_fail_is_temporary_and_never_falls_back_to_the_domain() {
        let r = StaticResolver::new()
            .with_mx(d("b.test"), 10, d("gone1.b.test"))
            .with_mx(d("b.test"), 20, d("gone2.b.test"))
            .with_host(d("b.test"), "192.0.2.80".parse().unwrap());
        let err = resolve_mx_addresses(&r, &d("b.test")).await.unwrap_err();
        assert!(err.is_temporary());
        assert_eq!(err.status().to_string(), "4.4.3");
        assert_eq!(
            err.to_string(),
            "DNS lookup of b.test failed temporarily: no MX host has an address: \
             gone1.b.test (NXDOMAIN), gone2.b.test (NXDOMAIN)"
        );
    }
}
