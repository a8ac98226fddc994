//! Unit tests of `dns`.

use super::*;

#[test]
fn a_resolv_conf_gives_its_servers_search_list_and_timing() {
    let r = DnsResolver::from_resolv_conf_text(
        "nameserver 192.0.2.53\nnameserver 2001:db8::53\nsearch corp.example\noptions timeout:1 attempts:3\n",
        "test resolv.conf",
        DnsOptions::default(),
    )
    .unwrap();
    assert_eq!(
        r.name_servers(),
        &[
            "192.0.2.53:53".parse::<SocketAddr>().unwrap(),
            "[2001:db8::53]:53".parse().unwrap()
        ]
    );
    assert_eq!(r.options().timeout, Duration::from_secs(1));
    assert_eq!(r.options().attempts, 3);
    assert_eq!(
        r.search_domains(),
        &[Domain::parse("corp.example").unwrap()]
    );
    let (config, opts) = r.hickory_config();
    assert_eq!(config.name_servers().len(), 2);
    assert_eq!(config.name_servers()[0].connections.len(), 2);
    assert_eq!(config.name_servers()[0].connections[0].port, 53);
    assert_eq!(opts.attempts, 2, "hickory counts retries, not tries");
    assert_eq!(opts.timeout, Duration::from_secs(1));
}

#[test]
fn a_resolv_conf_without_name_servers_is_refused_with_its_name() {
    let err = DnsResolver::from_resolv_conf_text(
        "search example.com\n",
        "/etc/resolv.conf",
        DnsOptions::default(),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("/etc/resolv.conf names no name server"),
        "{err}"
    );
}

#[test]
fn a_missing_resolv_conf_is_reported_with_its_path() {
    let err =
        DnsResolver::from_resolv_conf(Path::new("/nonexistent/resolv.conf"), DnsOptions::default())
            .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cannot read /nonexistent/resolv.conf:"),
        "{err}"
    );
}

#[test]
fn explicit_servers_keep_their_ports_and_protocols() {
    let r = DnsResolver::with_name_servers(
        &["127.0.0.1:5353".parse().unwrap()],
        DnsOptions {
            protocol: DnsProtocol::Tcp,
            attempts: 1,
            ..DnsOptions::default()
        },
    )
    .unwrap();
    let (config, opts) = r.hickory_config();
    let server = &config.name_servers()[0];
    assert_eq!(server.connections.len(), 1);
    assert_eq!(server.connections[0].port, 5353);
    assert_eq!(
        server.connections[0].protocol.to_protocol(),
        hickory_resolver::net::xfer::Protocol::Tcp
    );
    assert_eq!(opts.attempts, 0);
}

#[test]
fn a_zero_timeout_or_no_server_is_refused() {
    assert!(matches!(
        DnsResolver::with_name_servers(
            &["127.0.0.1:53".parse().unwrap()],
            DnsOptions {
                timeout: Duration::ZERO,
                ..DnsOptions::default()
            }
        ),
        Err(ResolveConfigError::ZeroTimeout)
    ));
    assert!(matches!(
        DnsResolver::with_name_servers(&[], DnsOptions::default()),
        Err(ResolveConfigError::NoNameServers { .. })
    ));
}

#[test]
fn a_temporary_miss_outweighs_nxdomain_and_no_data() {
    assert_eq!(
        Miss::worst(vec![Miss::NxDomain, Miss::Temporary("x".into())]),
        Miss::Temporary("x".into())
    );
    assert_eq!(
        Miss::worst(vec![Miss::NoData, Miss::NxDomain]),
        Miss::NxDomain
    );
    assert_eq!(Miss::worst(vec![Miss::NoData, Miss::NoData]), Miss::NoData);
}

#[test]
fn durations_and_server_lists_read_like_an_operator_writes_them() {
    assert_eq!(Human(Duration::from_millis(500)).to_string(), "500ms");
    assert_eq!(Human(Duration::from_secs(5)).to_string(), "5s");
    assert_eq!(Human(Duration::from_millis(1500)).to_string(), "1500ms");
    let list = [
        "192.0.2.1:53".parse().unwrap(),
        "[::1]:5353".parse().unwrap(),
    ];
    assert_eq!(ServerList(&list).to_string(), "192.0.2.1:53 or [::1]:5353");
}
