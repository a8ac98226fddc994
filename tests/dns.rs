//! `DnsResolver` against a real DNS server on 127.0.0.1 (hickory-server, in-process).

mod support;
use support::dns_server;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use dns_server::{DnsServer, SilentServer, Zone, ip};
use hickory_server::proto::op::ResponseCode;
use postrider::Domain;
use postrider::resolve::{
    AddressPreference, DnsOptions, DnsProtocol, DnsResolver, LocalIdentity, MailExchanger,
    ResolveError, Resolver, resolve_mx_addresses,
};

fn d(s: &str) -> Domain {
    Domain::parse(s).unwrap()
}

fn options() -> DnsOptions {
    DnsOptions {
        timeout: Duration::from_secs(2),
        attempts: 1,
        randomize_addresses: false,
        ..DnsOptions::default()
    }
}

fn resolver(server: SocketAddr) -> DnsResolver {
    DnsResolver::with_name_servers(&[server], options()).unwrap()
}

fn hosts(list: &[MailExchanger]) -> Vec<(u16, String)> {
    list.iter()
        .map(|m| (m.preference, m.host.to_string()))
        .collect()
}

/// The zones most tests share.
fn mail_zones() -> Vec<Zone> {
    vec![
        Zone::new("shuffle.test")
            .mx("@", 5, "first")
            .mx("@", 10, "a")
            .mx("@", 10, "b")
            .mx("@", 20, "last")
            .a("first", "192.0.2.5")
            .a("a", "192.0.2.10")
            .a("b", "192.0.2.11")
            .a("last", "192.0.2.20"),
        Zone::new("plain.test")
            .a("@", "192.0.2.80")
            .aaaa("@", "2001:db8::80")
            .txt("@", "no mail exchangers here"),
        Zone::new("nomail.test")
            .mx("@", 0, ".")
            .a("@", "192.0.2.99"),
        Zone::new("textonly.test").txt("@", "exists, but no MX and no address"),
        Zone::new("dangling.test")
            .mx("@", 10, "gone")
            .mx("@", 20, "empty")
            .txt("empty", "a name without addresses")
            .a("@", "192.0.2.66"),
        Zone::new("partly.test")
            .mx("@", 10, "gone")
            .mx("@", 20, "mx2")
            .a("mx2", "192.0.2.22"),
        Zone::new("alias.test")
            .cname("mail", "step1.alias.test.")
            .cname("step1", "real.alias.test.")
            .mx("real", 10, "mx-alias")
            .cname("mx-alias", "mx-real")
            .a("mx-real", "192.0.2.30")
            .cname("broken", "missing.alias.test."),
        Zone::new("numeric.test")
            .mx("@", 10, "192.0.2.1.")
            .mx("@", 20, "mx")
            .a("mx", "192.0.2.40"),
        Zone::new("onlynumeric.test").mx("@", 10, "192.0.2.1."),
        Zone::new("mixednull.test")
            .mx("@", 0, ".")
            .mx("@", 10, "mx")
            .a("mx", "192.0.2.50"),
        Zone::new("dual.test")
            .a("host", "192.0.2.60")
            .a("host", "192.0.2.61")
            .aaaa("host", "2001:db8::60")
            .aaaa("v6only", "2001:db8::61"),
        Zone::new("loop.test")
            .mx("@", 10, "mx")
            .a("mx", "127.0.0.1"),
    ]
}

#[tokio::test]
async fn mx_hosts_come_in_preference_order_with_equal_preferences_shuffled() {
    let server = DnsServer::start(mail_zones()).await;
    let r = resolver(server.addr());
    let mut orders = HashSet::new();
    // Each lookup shuffles the two preference-10 hosts independently: the chance of 200
    // lookups all giving the same order is 2^-199, so "both orders seen" cannot flake.
    for _ in 0..200 {
        let list = r.mail_exchangers(&d("shuffle.test")).await.unwrap();
        let got = hosts(&list);
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(got[0], (5, "first.shuffle.test".to_string()));
        assert_eq!(got[3], (20, "last.shuffle.test".to_string()));
        let prefs: Vec<u16> = got.iter().map(|(p, _)| *p).collect();
        assert_eq!(prefs, vec![5, 10, 10, 20]);
        assert!(list.iter().all(|m| !m.implicit));
        orders.insert((got[1].1.clone(), got[2].1.clone()));
    }
    assert_eq!(
        orders,
        HashSet::from([
            ("a.shuffle.test".to_string(), "b.shuffle.test".to_string()),
            ("b.shuffle.test".to_string(), "a.shuffle.test".to_string()),
        ])
    );
}

#[tokio::test]
async fn a_domain_without_mx_but_with_addresses_is_its_own_implicit_mx() {
    let server = DnsServer::start(mail_zones()).await;
    let r = resolver(server.addr());
    let list = r.mail_exchangers(&d("plain.test")).await.unwrap();
    assert_eq!(
        list,
        vec![MailExchanger {
            preference: 0,
            host: d("plain.test"),
            implicit: true
        }]
    );
    let resolved = resolve_mx_addresses(&r, &d("plain.test")).await.unwrap();
    assert_eq!(
        resolved[0].1,
        vec![ip("192.0.2.80"), ip("2001:db8::80")],
        "IPv4 first by default"
    );
}

#[tokio::test]
async fn a_null_mx_is_a_permanent_5_1_10_even_when_the_domain_has_an_address() {
    let server = DnsServer::start(mail_zones()).await;
    let r = resolver(server.addr());
    let err = r.mail_exchangers(&d("nomail.test")).await.unwrap_err();
    assert_eq!(
        err,
        ResolveError::NullMx {
            domain: d("nomail.test")
        }
    );
    assert_eq!(err.status().to_string(), "5.1.10");
    assert!(!err.is_temporary());
}

#[tokio::test]
async fn a_null_mx_among_real_mx_records_is_ignored() {
    let server = DnsServer::start(mail_zones()).await;
    let r = resolver(server.addr());
    let list = r.mail_exchangers(&d("mixednull.test")).await.unwrap();
    assert_eq!(hosts(&list), vec![(10, "mx.mixednull.test".to_string())]);
}

#[tokio::test]
async fn nxdomain_is_a_permanent_5_1_2() {
    let server = DnsServer::start(mail_zones()).await;
    let r = resolver(server.addr());
    for name in ["nowhere.plain.test", "nowhere.shuffle.test"] {
        let err = r.mail_exchangers(&d(name)).await.unwrap_err();
        assert_eq!(err, ResolveError::NoSuchDomain { name: d(name) });
        assert_eq!(err.status().to_string(), "5.1.2");
        assert!(!err.is_temporary());
        let err = r.addresses(&d(name)).await.unwrap_err();
        assert_eq!(err.status().to_string(), "5.1.2");
    }
}

#[tokio::test]
async fn a_name_with_neither_mx_nor_address_is_a_permanent_5_4_4() {
    let server = DnsServer::start(mail_zones()).await;
    let r = resolver(server.addr());
    let err = r.mail_exchangers(&d("textonly.test")).await.unwrap_err();
    assert_eq!(
        err,
        ResolveError::NoRecords {
            name: d("textonly.test"),
            what: "MX, A or AAAA"
        }
    );
    assert_eq!(err.status().to_string(), "5.4.4");
}

#[tokio::test]
async fn mx_hosts_without_addresses_are_temporary_and_never_fall_back_to_the_domain() {
    let server = DnsServer::start(mail_zones()).await;
    let r = resolver(server.addr());
    // The MX list itself is fine: the hosts are only judged after their address lookups.
    let list = r.mail_exchangers(&d("dangling.test")).await.unwrap();
    assert_eq!(list.len(), 2);

    let err = resolve_mx_addresses(&r, &d("dangling.test"))
        .await
        .unwrap_err();
    assert!(err.is_temporary(), "{err}");
    assert_eq!(err.status().to_string(), "4.4.3");
    assert_eq!(
        err.to_string(),
        "DNS lookup of dangling.test failed temporarily: no MX host has an address: \
         gone.dangling.test (NXDOMAIN), empty.dangling.test (no A or AAAA records)"
    );
    assert!(!err.to_string().contains("192.0.2.66"));
}

#[tokio::test]
async fn an_mx_host_that_does_not_exist_is_skipped_when_another_resolves() {
    let server = DnsServer::start(mail_zones()).await;
    let r = resolver(server.addr());
    let resolved = resolve_mx_addresses(&r, &d("partly.test")).await.unwrap();
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].0.host, d("mx2.partly.test"));
    assert_eq!(resolved[0].1, vec![ip("192.0.2.22")]);
}

#[tokio::test]
async fn cname_chains_are_followed_for_the_domain_and_for_its_mx_host() {
    let server = DnsServer::start(mail_zones()).await;
    let r = resolver(server.addr());
    // mail.alias.test -> step1 -> real, which has the MX record.
    let list = r.mail_exchangers(&d("mail.alias.test")).await.unwrap();
    assert_eq!(hosts(&list), vec![(10, "mx-alias.alias.test".to_string())]);
    // The MX target is itself an alias (RFC 2181 §10.3 forbids it; we resolve it anyway).
    let resolved = resolve_mx_addresses(&r, &d("mail.alias.test"))
        .await
        .unwrap();
    assert_eq!(resolved[0].1, vec![ip("192.0.2.30")]);
}

#[tokio::test]
async fn a_cname_to_a_missing_name_is_nxdomain() {
    let server = DnsServer::start(mail_zones()).await;
    let r = resolver(server.addr());
    let err = r
        .mail_exchangers(&d("broken.alias.test"))
        .await
        .unwrap_err();
    assert_eq!(err.status().to_string(), "5.1.2", "{err}");
}

#[tokio::test]
async fn an_ip_address_as_mx_target_is_skipped_and_alone_is_a_permanent_5_4_4() {
    let server = DnsServer::start(mail_zones()).await;
    let r = resolver(server.addr());
    let list = r.mail_exchangers(&d("numeric.test")).await.unwrap();
    assert_eq!(hosts(&list), vec![(20, "mx.numeric.test".to_string())]);

    let err = r.mail_exchangers(&d("onlynumeric.test")).await.unwrap_err();
    assert_eq!(err.status().to_string(), "5.4.4");
    assert_eq!(
        err.to_string(),
        "onlynumeric.test has no usable MX records: MX 10 192.0.2.1. names an IP address \
         where a host name belongs (RFC 5321 §5.1)"
    );
}

#[tokio::test]
async fn addresses_follow_the_configured_preference() {
    let server = DnsServer::start(mail_zones()).await;
    let with = |preference| {
        DnsResolver::with_name_servers(
            &[server.addr()],
            DnsOptions {
                address_preference: preference,
                ..options()
            },
        )
        .unwrap()
    };
    let host = d("host.dual.test");
    let v4 = [ip("192.0.2.60"), ip("192.0.2.61")];
    let v6 = ip("2001:db8::60");

    let got = with(AddressPreference::Ipv6First)
        .addresses(&host)
        .await
        .unwrap();
    assert_eq!(got, vec![v6, v4[0], v4[1]]);

    let got = with(AddressPreference::Ipv4First)
        .addresses(&host)
        .await
        .unwrap();
    assert_eq!(got, vec![v4[0], v4[1], v6]);

    let ipv4_only = with(AddressPreference::Ipv4Only);
    assert_eq!(ipv4_only.addresses(&host).await.unwrap(), v4.to_vec());
    let err = ipv4_only
        .addresses(&d("v6only.dual.test"))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ResolveError::NoRecords {
            name: d("v6only.dual.test"),
            what: "A"
        }
    );
}

#[tokio::test]
async fn randomized_addresses_stay_within_their_family() {
    let server = DnsServer::start(mail_zones()).await;
    let r = DnsResolver::with_name_servers(
        &[server.addr()],
        DnsOptions {
            randomize_addresses: true,
            address_preference: AddressPreference::Ipv6First,
            ..options()
        },
    )
    .unwrap();
    let mut firsts = HashSet::new();
    for _ in 0..200 {
        let got = r.addresses(&d("host.dual.test")).await.unwrap();
        assert_eq!(got[0], ip("2001:db8::60"));
        assert_eq!(got.len(), 3);
        firsts.insert(got[1]);
    }
    assert_eq!(firsts.len(), 2, "both IPv4 addresses came second at times");
}

#[tokio::test]
async fn udp_only_and_tcp_only_resolvers_both_work() {
    let server = DnsServer::start(mail_zones()).await;
    for protocol in [DnsProtocol::Udp, DnsProtocol::Tcp] {
        let r = DnsResolver::with_name_servers(
            &[server.addr()],
            DnsOptions {
                protocol,
                ..options()
            },
        )
        .unwrap();
        let (udp_before, tcp_before) = (server.udp_queries(), server.tcp_queries());
        let list = r.mail_exchangers(&d("partly.test")).await.unwrap();
        assert_eq!(list.len(), 2, "{protocol:?}");
        assert_eq!(
            r.addresses(&d("mx2.partly.test")).await.unwrap(),
            vec![ip("192.0.2.22")],
            "{protocol:?}"
        );
        let (udp, tcp) = (
            server.udp_queries() - udp_before,
            server.tcp_queries() - tcp_before,
        );
        match protocol {
            DnsProtocol::Udp => assert!(udp >= 3 && tcp == 0, "udp {udp}, tcp {tcp}"),
            _ => assert!(tcp >= 3 && udp == 0, "udp {udp}, tcp {tcp}"),
        }
    }
}

#[tokio::test]
async fn answers_are_cached_for_their_ttl_and_no_longer() {
    let server = DnsServer::start(vec![
        Zone::new("cache.test")
            .mx("@", 10, "mx")
            .a("mx", "192.0.2.1")
            .ttl(0)
            .mx("nocache", 10, "mx.cache.test."),
    ])
    .await;
    let r = resolver(server.addr());

    r.mail_exchangers(&d("cache.test")).await.unwrap();
    let after_first = server.queries();
    for _ in 0..5 {
        r.mail_exchangers(&d("cache.test")).await.unwrap();
    }
    assert_eq!(
        server.queries(),
        after_first,
        "a 3600 s TTL is served from the cache"
    );

    r.mail_exchangers(&d("nocache.cache.test")).await.unwrap();
    let before = server.queries();
    r.mail_exchangers(&d("nocache.cache.test")).await.unwrap();
    assert!(server.queries() > before, "a zero TTL is asked again");
}

#[tokio::test]
async fn servfail_is_temporary_and_names_the_server() {
    let server = DnsServer::servfail().await;
    let r = resolver(server.addr());
    let err = r.mail_exchangers(&d("example.test")).await.unwrap_err();
    assert_eq!(
        err,
        ResolveError::Temporary {
            name: d("example.test"),
            reason: format!("SERVFAIL from {}", server.addr()),
        }
    );
    assert_eq!(err.status().to_string(), "4.4.3");
    let err = r.addresses(&d("mx.example.test")).await.unwrap_err();
    assert!(err.is_temporary());
}

#[tokio::test]
async fn refused_is_temporary_and_says_so() {
    let server = DnsServer::builder()
        .answer_all(ResponseCode::Refused)
        .start()
        .await;
    let r = resolver(server.addr());
    let err = r.mail_exchangers(&d("example.test")).await.unwrap_err();
    assert!(err.is_temporary());
    assert_eq!(
        err.to_string(),
        format!(
            "DNS lookup of example.test failed temporarily: REFUSED by {} (is this host allowed to query it?)",
            server.addr()
        )
    );
}

#[tokio::test]
async fn an_mx_host_that_servfails_is_skipped_and_reported_when_all_fail() {
    let server = DnsServer::builder()
        .zone(
            Zone::new("flaky.test")
                .mx("@", 10, "bad")
                .mx("@", 20, "good")
                .a("good", "192.0.2.90"),
        )
        .zone(Zone::new("allflaky.test").mx("@", 10, "bad"))
        .servfail_for("bad.flaky.test")
        .servfail_for("bad.allflaky.test")
        .start()
        .await;
    let r = resolver(server.addr());
    let resolved = resolve_mx_addresses(&r, &d("flaky.test")).await.unwrap();
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].0.host, d("good.flaky.test"));

    let err = resolve_mx_addresses(&r, &d("allflaky.test"))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "DNS lookup of allflaky.test failed temporarily: no MX host has an address: \
             bad.allflaky.test (SERVFAIL from {})",
            server.addr()
        )
    );
}

// The paused clock jumps to each timeout as soon as nothing else can run: no real waiting.
#[tokio::test(start_paused = true)]
async fn a_server_that_never_answers_is_a_temporary_timeout() {
    let silent = SilentServer::start().await;
    for protocol in [DnsProtocol::Udp, DnsProtocol::Tcp] {
        let r = DnsResolver::with_name_servers(
            &[silent.addr()],
            DnsOptions {
                timeout: Duration::from_millis(200),
                attempts: 1,
                protocol,
                ..DnsOptions::default()
            },
        )
        .unwrap();
        let err = r.mail_exchangers(&d("example.test")).await.unwrap_err();
        assert_eq!(
            err,
            ResolveError::Temporary {
                name: d("example.test"),
                reason: format!("no answer from {} within 200ms", silent.addr()),
            },
            "{protocol:?}"
        );
        assert_eq!(err.status().to_string(), "4.4.3");
    }
}

#[tokio::test(start_paused = true)]
async fn a_name_that_is_never_answered_times_out_while_others_resolve() {
    let server = DnsServer::builder()
        .zone(
            Zone::new("slow.test")
                .mx("@", 10, "stuck")
                .mx("@", 20, "fine")
                .a("fine", "192.0.2.91"),
        )
        .silent_for("stuck.slow.test")
        .start()
        .await;
    let r = DnsResolver::with_name_servers(
        &[server.addr()],
        DnsOptions {
            timeout: Duration::from_millis(200),
            ..options()
        },
    )
    .unwrap();
    let resolved = resolve_mx_addresses(&r, &d("slow.test")).await.unwrap();
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].1, vec![ip("192.0.2.91")]);
}

#[tokio::test(start_paused = true)]
async fn a_closed_port_is_a_temporary_failure_that_names_the_server() {
    let closed = {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = udp.local_addr().unwrap();
        let _tcp = std::net::TcpListener::bind(addr).unwrap();
        addr
    };
    for protocol in [DnsProtocol::Udp, DnsProtocol::Tcp] {
        let r = DnsResolver::with_name_servers(
            &[closed],
            DnsOptions {
                protocol,
                ..options()
            },
        )
        .unwrap();
        // UDP: nothing comes back (an unconnected socket never sees the ICMP error), a
        // timeout. TCP: the connection is refused at once.
        let err = r.mail_exchangers(&d("example.test")).await.unwrap_err();
        assert!(err.is_temporary(), "{err}");
        assert!(
            err.to_string().contains(&closed.to_string()),
            "the reason names the server: {err}"
        );
    }
}

#[tokio::test]
async fn the_hosts_file_answers_addresses_before_dns() {
    let server = DnsServer::start(mail_zones()).await;
    let hosts = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(hosts.path(), "192.0.2.77 intranet.test intranet\n").unwrap();
    let r = DnsResolver::with_name_servers(
        &[server.addr()],
        DnsOptions {
            hosts_file: Some(hosts.path().to_path_buf()),
            ..options()
        },
    )
    .unwrap();
    assert_eq!(
        r.addresses(&d("intranet.test")).await.unwrap(),
        vec![ip("192.0.2.77")]
    );
    assert_eq!(
        r.addresses(&d("mx2.partly.test")).await.unwrap(),
        vec![ip("192.0.2.22")]
    );
}

#[tokio::test]
async fn an_mx_pointing_at_this_machine_fails_with_5_3_5() {
    let server = DnsServer::start(mail_zones()).await;
    let r = resolver(server.addr());
    let me = LocalIdentity::new([d("sipserver1.example.com")], []);
    let resolved = resolve_mx_addresses(&r, &d("loop.test")).await.unwrap();
    let err = me.exclude_self(&d("loop.test"), resolved).unwrap_err();
    assert_eq!(err.status().to_string(), "5.3.5");
    assert_eq!(
        err.to_string(),
        "config error: mail for loop.test loops back to me (MX problem?): mx.loop.test [127.0.0.1] is this machine"
    );
    let elsewhere = resolve_mx_addresses(&r, &d("shuffle.test")).await.unwrap();
    assert_eq!(
        me.exclude_self(&d("shuffle.test"), elsewhere.clone())
            .unwrap(),
        elsewhere
    );
}

#[tokio::test]
async fn the_hickory_configuration_reaches_the_same_servers_for_txt_lookups() {
    let server = DnsServer::start(vec![Zone::new("spf.test").txt(
        "@",
        &format!("v=spf1 ip4:192.0.2.0/24 {} -all", "a".repeat(300)),
    )])
    .await;
    let r = resolver(server.addr());
    let (config, opts) = r.hickory_config();
    let own = hickory_resolver::TokioResolver::builder_with_config(
        config,
        hickory_resolver::net::runtime::TokioRuntimeProvider::default(),
    )
    .with_options(opts)
    .build()
    .unwrap();
    for resolver in [&own, r.hickory_resolver()] {
        let txt = resolver.txt_lookup("spf.test.").await.unwrap();
        let text: String = txt
            .answers()
            .iter()
            .filter_map(|rec| match &rec.data {
                hickory_resolver::proto::rr::RData::TXT(t) => Some(t.to_string()),
                _ => None,
            })
            .collect();
        assert!(text.starts_with("v=spf1 ip4:192.0.2.0/24 aaa"), "{text}");
        assert!(text.ends_with(" -all"), "{text}");
    }
}

// The paused clock jumps to each timeout as soon as nothing else can run: no real waiting.
#[tokio::test(start_paused = true)]
async fn two_name_servers_are_both_named_when_neither_answers() {
    let a = SilentServer::start().await;
    let b = SilentServer::start().await;
    let r = DnsResolver::with_name_servers(
        &[a.addr(), b.addr()],
        DnsOptions {
            timeout: Duration::from_millis(200),
            attempts: 1,
            protocol: DnsProtocol::Udp,
            ..DnsOptions::default()
        },
    )
    .unwrap();
    let err = r.addresses(&d("mx.example.test")).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&format!(
            "no answer from {} or {} within 200ms",
            a.addr(),
            b.addr()
        )),
        "{text}"
    );
}

#[tokio::test]
async fn zones_can_be_written_as_zone_file_text() {
    let server = DnsServer::start(vec![Zone::parse(
        "text.test",
        "$TTL 300\n\
         @       IN MX 10 mx1\n\
         @       IN MX 20 mx2.text.test.\n\
         @       IN TXT \"v=spf1 mx -all\"\n\
         mx1     IN A 192.0.2.101\n\
         mx2     IN AAAA 2001:db8::102\n",
    )])
    .await;
    let r = resolver(server.addr());
    let resolved = resolve_mx_addresses(&r, &d("text.test")).await.unwrap();
    let got: Vec<_> = resolved
        .iter()
        .map(|(mx, addrs)| (mx.preference, mx.host.to_string(), addrs.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (10, "mx1.text.test".to_string(), vec![ip("192.0.2.101")]),
            (20, "mx2.text.test".to_string(), vec![ip("2001:db8::102")]),
        ]
    );
    let txt = r.hickory_resolver().txt_lookup("text.test.").await.unwrap();
    assert_eq!(txt.answers().len(), 1);
}
