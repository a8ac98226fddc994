//! `hostname`: this host's name is fully qualified (sendmail's "unable to qualify my own
//! domain name") and resolves, as receivers that check the EHLO name need.

use std::fs;
use std::net::IpAddr;
use std::path::Path;

use super::{Check, Doctor, Finding};
use crate::address::Domain;
use crate::resolve::{HostnameError, Resolver, qualify_hostname};

pub(crate) async fn check(d: &Doctor) -> Vec<Finding> {
    let configured = d.config.hostname.as_ref().map(Domain::as_str);
    let sources = d.hostname_sources();
    let name = match qualify_hostname(configured, &sources).await {
        Ok(name) => name,
        Err(e) => return vec![unqualified(d, &e)],
    };
    let in_hosts = hosts_addresses(&d.names.hosts_file, &name);
    let hosts = d.names.hosts_file.display();
    let dns = match &d.dns {
        Ok(dns) => dns.addresses(&name).await,
        Err(e) => {
            return vec![match in_hosts.first() {
                Some(ip) => Finding::warn(
                    Check::Hostname,
                    format!(
                        "{name} is fully qualified and {hosts} gives {ip}; DNS was not asked \
                         ({e})"
                    ),
                ),
                None => Finding::warn(
                    Check::Hostname,
                    format!("{name} is fully qualified; whether it resolves is unknown ({e})"),
                ),
            }];
        }
    };
    let finding = match dns {
        Ok(addrs) => Finding::pass(
            Check::Hostname,
            format!("{name} is fully qualified and resolves to {}", join(&addrs)),
        ),
        Err(e) if e.is_temporary() => Finding::warn(
            Check::Hostname,
            format!(
                "{name} is fully qualified, but DNS could not be asked whether it resolves: {e}"
            ),
        )
        .with_fix(
            "check that the name servers answer ([dns] name_servers in postrider.toml, or \
             /etc/resolv.conf)",
        ),
        Err(e) => {
            let publish = format!(
                "publish an A record for {name} with this host's public address{}, so that \
                 receivers that check the EHLO name find it",
                d.config
                    .spf
                    .public_addresses
                    .first()
                    .map(|ip| format!(" ({ip})"))
                    .unwrap_or_default()
            );
            match in_hosts.first() {
                Some(ip) => Finding::warn(
                    Check::Hostname,
                    format!(
                        "{name} is fully qualified, but resolves only through {hosts} \
                         ({ip}); DNS says: {e}"
                    ),
                )
                .with_fix(publish),
                None => Finding::warn(
                    Check::Hostname,
                    format!("{name} is fully qualified, but does not resolve: {e}"),
                )
                .with_fix(publish),
            }
        }
    };
    vec![finding]
}

fn unqualified(d: &Doctor, e: &HostnameError) -> Finding {
    match e {
        HostnameError::Unqualified {
            short,
            example_addr,
            example_domain,
            hosts_file,
            dns_trouble,
        } => {
            // The error's example domain is the first search domain, or example.com when there
            // is none; a configured sender domain is a better guess than example.com.
            let searched = d
                .dns
                .as_ref()
                .is_ok_and(|dns| !dns.search_domains().is_empty());
            let domain = match d.config.spf.sender_domains.first() {
                Some(sender) if !searched => sender.to_string(),
                _ => example_domain.clone(),
            };
            let trouble = dns_trouble
                .as_ref()
                .map(|t| format!(" (DNS could not be asked: {t})"))
                .unwrap_or_default();
            Finding::fail(
                Check::Hostname,
                format!(
                    "unable to qualify my own domain name ({short}){trouble}: receivers refuse \
                     mail whose EHLO name is a single label"
                ),
            )
            .with_fix(format!(
                "add \"{example_addr} {short}.{domain} {short}\" to {} or set the hostname \
                 (hostname = \"{short}.{domain}\" in {})",
                hosts_file.display(),
                d.config_file()
            ))
        }
        HostnameError::Invalid { .. } => {
            Finding::fail(Check::Hostname, e.to_string()).with_fix(format!(
                "set hostname = \"mail.example.com\" (this host's full name) in {}",
                d.config_file()
            ))
        }
        HostnameError::NoSystemHostname { .. } | HostnameError::HostsFile { .. } => {
            Finding::fail(Check::Hostname, e.to_string()).with_fix(format!(
                "set hostname = \"mail.example.com\" (this host's full name) in {}",
                d.config_file()
            ))
        }
    }
}

/// The addresses the hosts file gives `name` (as the canonical name or an alias).
fn hosts_addresses(path: &Path, name: &Domain) -> Vec<IpAddr> {
    let Ok(text) = fs::read_to_string(path) else {
        return Vec::new();
    };
    hosts_text_addresses(&text, name)
}

fn hosts_text_addresses(text: &str, name: &Domain) -> Vec<IpAddr> {
    let mut found = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let mut words = line.split_whitespace();
        let Some(Ok(ip)) = words.next().map(str::parse::<IpAddr>) else {
            continue;
        };
        if words.any(|w| Domain::parse(w).is_ok_and(|n| n == *name)) && !found.contains(&ip) {
            found.push(ip);
        }
    }
    found
}

fn join(addrs: &[IpAddr]) -> String {
    addrs
        .iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hosts_file_gives_every_address_listing_the_name() {
        let text = "127.0.0.1 localhost\n\
                    192.168.10.10 sipserver1.ourtest.com sipserver1 # the PBX\n\
                    # 10.0.0.1 sipserver1.ourtest.com\n\
                    fe80::1 SIPSERVER1.ourtest.com\n";
        let name = Domain::parse("sipserver1.ourtest.com").unwrap();
        assert_eq!(
            hosts_text_addresses(text, &name),
            [
                "192.168.10.10".parse::<IpAddr>().unwrap(),
                "fe80::1".parse().unwrap()
            ]
        );
        assert!(hosts_text_addresses(text, &Domain::parse("other.test").unwrap()).is_empty());
    }
}
