//! `qualify_hostname`'s DNS steps against a real DNS server on 127.0.0.1. The hosts-file and
//! configured-name steps are unit tests in `src/resolve/hostname.rs`.

mod support;
use support::dns_server;

use std::net::IpAddr;
use std::time::Duration;

use dns_server::{DnsServer, Zone, ip};
use postrider::Domain;
use postrider::resolve::{DnsOptions, DnsResolver, HostnameSources, qualify_hostname};

fn d(s: &str) -> Domain {
    Domain::parse(s).unwrap()
}

fn resolver(server: &DnsServer, search: &[&str]) -> DnsResolver {
    DnsResolver::with_name_servers(
        &[server.addr()],
        DnsOptions {
            timeout: Duration::from_secs(2),
            attempts: 1,
            search: search.iter().map(|s| d(s)).collect(),
            ..DnsOptions::default()
        },
    )
    .unwrap()
}

fn sources<'a>(
    dns: &'a DnsResolver,
    hosts: &tempfile::NamedTempFile,
    addresses: &[&str],
) -> HostnameSources<'a> {
    HostnameSources {
        system_hostname: Some("sipserver1".to_string()),
        hosts_file: hosts.path().to_path_buf(),
        dns: Some(dns),
        addresses: Some(addresses.iter().map(|a| ip(a)).collect::<Vec<IpAddr>>()),
    }
}

fn empty_hosts() -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "127.0.0.1 localhost\n").unwrap();
    file
}

fn zones() -> Vec<Zone> {
    vec![
        Zone::new("wrong.test").a("elsewhere", "192.0.2.1"),
        Zone::new("ourtest.com").a("sipserver1", "192.168.10.10"),
        Zone::new("10.168.192.in-addr.arpa")
            .ptr("10", "sipserver1.ptr.test.")
            .ptr("11", "host-11.isp.test."),
    ]
}

#[tokio::test]
async fn a_short_name_is_qualified_under_the_first_search_domain_where_it_exists() {
    let server = DnsServer::start(zones()).await;
    let dns = resolver(&server, &["wrong.test", "ourtest.com"]);
    let hosts = empty_hosts();
    let name = qualify_hostname(None, &sources(&dns, &hosts, &["192.168.10.99"]))
        .await
        .unwrap();
    assert_eq!(name, d("sipserver1.ourtest.com"));
}

#[tokio::test]
async fn without_a_search_domain_the_reverse_dns_of_this_machine_qualifies_it() {
    let server = DnsServer::start(zones()).await;
    let dns = resolver(&server, &[]);
    let hosts = empty_hosts();
    let name = qualify_hostname(
        None,
        &sources(&dns, &hosts, &["127.0.0.1", "192.168.10.10"]),
    )
    .await
    .unwrap();
    assert_eq!(name, d("sipserver1.ptr.test"));
}

#[tokio::test]
async fn a_reverse_name_for_another_host_name_is_not_taken() {
    let server = DnsServer::start(zones()).await;
    let dns = resolver(&server, &[]);
    let hosts = empty_hosts();
    let err = qualify_hostname(None, &sources(&dns, &hosts, &["192.168.10.11"]))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "unable to qualify my own domain name (sipserver1): add \"192.168.10.11 sipserver1.example.com sipserver1\" to {} or set the hostname",
            hosts.path().display()
        )
    );
    assert!(!err.is_temporary());
}

#[tokio::test]
async fn the_example_line_uses_the_search_domain() {
    let server = DnsServer::start(zones()).await;
    let dns = resolver(&server, &["wrong.test"]);
    let hosts = empty_hosts();
    let err = qualify_hostname(None, &sources(&dns, &hosts, &["192.168.10.12"]))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("add \"192.168.10.12 sipserver1.wrong.test sipserver1\""),
        "{err}"
    );
}

#[tokio::test]
async fn a_failing_name_server_makes_the_error_temporary_and_says_so() {
    let server = DnsServer::servfail().await;
    let dns = resolver(&server, &["ourtest.com"]);
    let hosts = empty_hosts();
    let err = qualify_hostname(None, &sources(&dns, &hosts, &["192.168.10.10"]))
        .await
        .unwrap_err();
    assert!(err.is_temporary());
    let text = err.to_string();
    assert!(
        text.starts_with("unable to qualify my own domain name (sipserver1): add \"192.168.10.10 sipserver1.ourtest.com sipserver1\""),
        "{text}"
    );
    assert!(
        text.contains(&format!("SERVFAIL from {}", server.addr())),
        "{text}"
    );
}

#[tokio::test]
async fn the_hosts_file_wins_over_dns() {
    let server = DnsServer::start(zones()).await;
    let dns = resolver(&server, &["ourtest.com"]);
    let hosts = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        hosts.path(),
        "192.168.10.10 sipserver1.fromhosts.test sipserver1\n",
    )
    .unwrap();
    let before = server.queries();
    let name = qualify_hostname(None, &sources(&dns, &hosts, &["192.168.10.10"]))
        .await
        .unwrap();
    assert_eq!(name, d("sipserver1.fromhosts.test"));
    assert_eq!(server.queries(), before, "DNS was not asked");
}
