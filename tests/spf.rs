//! The SPF pre-flight against a real DNS server on 127.0.0.1 (hickory-server, in-process)
//! serving SPF TXT records. Nothing here reaches the system resolver or the internet.

mod support;
use support::dns_server;

use std::net::SocketAddr;
use std::time::Duration;

use dns_server::{DnsServer, Zone, ip};
use postrider::resolve::{DnsOptions, DnsResolver};
use postrider::spf::{
    SpfChecker, SpfCheckerError, SpfDecision, SpfIdentity, SpfOptions, SpfPolicy, SpfResult, decide,
};
use postrider::{Domain, EnhancedStatus, ReversePath};

const OURS: &str = "203.0.113.5";

fn d(s: &str) -> Domain {
    Domain::parse(s).unwrap()
}

fn from(s: &str) -> ReversePath {
    ReversePath::parse(s).unwrap()
}

fn helo() -> Domain {
    d("sipserver1.ourtest.com")
}

fn dns(server: SocketAddr) -> DnsResolver {
    DnsResolver::with_name_servers(
        &[server],
        DnsOptions {
            timeout: Duration::from_secs(2),
            attempts: 1,
            ..DnsOptions::default()
        },
    )
    .unwrap()
}

fn checker(server: &DnsServer) -> SpfChecker {
    SpfChecker::new(&dns(server.addr()), SpfOptions::default()).unwrap()
}

/// A provider whose senders live in 203.0.113.0/24 and 2001:db8:5::/48, two includes deep.
fn provider() -> Zone {
    Zone::new("provider.test")
        .txt("_spf", "v=spf1 include:_netblocks.provider.test ~all")
        .txt(
            "_netblocks",
            "v=spf1 ip4:203.0.113.0/24 ip6:2001:db8:5::/48 -all",
        )
}

async fn check(server: &DnsServer, ip_text: &str, sender: &str) -> postrider::SpfVerdict {
    checker(server)
        .check(ip(ip_text), &from(sender), &helo())
        .await
}

#[tokio::test]
async fn an_address_in_the_record_passes_without_advice() {
    let server = DnsServer::start(vec![
        Zone::new("ourtest.com").txt("@", "v=spf1 ip4:203.0.113.0/24 -all"),
    ])
    .await;
    // In a task of its own, as a transport runs it: the check is Send.
    let c = checker(&server);
    let v = tokio::spawn(async move {
        c.check(ip(OURS), &from("voicemail@ourtest.com"), &helo())
            .await
    })
    .await
    .unwrap();
    assert_eq!(v.result, SpfResult::Pass);
    assert_eq!(v.domain, d("ourtest.com"));
    assert_eq!(v.identity, SpfIdentity::MailFrom);
    assert_eq!(v.advice(), None);
    assert_eq!(decide(SpfPolicy::Strict, &v, true), SpfDecision::Deliver);
}

#[tokio::test]
async fn a_record_ending_in_dash_all_fails_with_the_exact_advice() {
    let server = DnsServer::start(vec![
        Zone::new("ourtest.com")
            .txt("@", "v=spf1 ip4:198.51.100.1 -all")
            .txt("@", "google-site-verification=abc"),
    ])
    .await;
    let v = check(&server, OURS, "voicemail@ourtest.com").await;
    assert_eq!(v.result, SpfResult::Fail);
    assert_eq!(
        v.advice().as_deref(),
        Some(
            "SPF for ourtest.com does not authorise 203.0.113.5: add \"ip4:203.0.113.5\" to its \
             TXT record, or route through a smart host"
        )
    );
    assert_eq!(
        decide(SpfPolicy::Strict, &v, false),
        SpfDecision::Defer {
            status: EnhancedStatus::new(4, 7, 23),
            advice: v.advice().unwrap()
        }
    );
}

#[tokio::test]
async fn a_record_ending_in_tilde_all_softfails_and_goes_through_the_smart_host() {
    let server = DnsServer::start(vec![Zone::new("ourtest.com").txt("@", "v=spf1 mx ~all")]).await;
    let v = check(&server, OURS, "voicemail@ourtest.com").await;
    assert_eq!(v.result, SpfResult::SoftFail);
    assert_eq!(
        decide(SpfPolicy::SmartHost, &v, true),
        SpfDecision::UseSmartHost(v.advice().unwrap())
    );
}

#[tokio::test]
async fn a_and_mx_mechanisms_are_resolved_through_the_same_server() {
    let server = DnsServer::start(vec![
        Zone::new("ourtest.com")
            .txt("@", "v=spf1 mx a:out.ourtest.com -all")
            .mx("@", 10, "mx1")
            .a("mx1", "198.51.100.25")
            .a("out", OURS),
    ])
    .await;
    let c = checker(&server);
    let sender = from("voicemail@ourtest.com");
    let via_a = c.check(ip(OURS), &sender, &helo()).await;
    assert_eq!(via_a.result, SpfResult::Pass);
    let via_mx = c.check(ip("198.51.100.25"), &sender, &helo()).await;
    assert_eq!(via_mx.result, SpfResult::Pass);
    let neither = c.check(ip("198.51.100.26"), &sender, &helo()).await;
    assert_eq!(neither.result, SpfResult::Fail);
}

#[tokio::test]
async fn includes_are_followed_two_levels_deep() {
    let server = DnsServer::start(vec![
        Zone::new("ourtest.com").txt("@", "v=spf1 include:_spf.provider.test -all"),
        provider(),
    ])
    .await;
    let c = checker(&server);
    let sender = from("voicemail@ourtest.com");
    assert_eq!(
        c.check(ip(OURS), &sender, &helo()).await.result,
        SpfResult::Pass
    );
    assert_eq!(
        c.check(ip("2001:db8:5::25"), &sender, &helo()).await.result,
        SpfResult::Pass
    );
    // Not in the provider's blocks: the include does not match, so ourtest.com's -all decides.
    let outside = c.check(ip("198.51.100.7"), &sender, &helo()).await;
    assert_eq!(outside.result, SpfResult::Fail);
    assert_eq!(outside.domain, d("ourtest.com"));
}

#[tokio::test]
async fn a_redirect_hands_the_decision_to_the_target_record() {
    let server = DnsServer::start(vec![
        Zone::new("ourtest.com").txt("@", "v=spf1 redirect=_netblocks.provider.test"),
        provider(),
    ])
    .await;
    let c = checker(&server);
    let sender = from("voicemail@ourtest.com");
    assert_eq!(
        c.check(ip(OURS), &sender, &helo()).await.result,
        SpfResult::Pass
    );
    let outside = c.check(ip("198.51.100.7"), &sender, &helo()).await;
    assert_eq!(outside.result, SpfResult::Fail);
    assert_eq!(
        outside.domain,
        d("ourtest.com"),
        "the advice names the sender's domain"
    );
}

#[tokio::test]
async fn ipv6_senders_are_checked_against_ip6_terms_and_advised_an_ip6_term() {
    let server = DnsServer::start(vec![
        Zone::new("ourtest.com").txt("@", "v=spf1 ip6:2001:db8:5::/48 -all"),
    ])
    .await;
    let c = checker(&server);
    let sender = from("voicemail@ourtest.com");
    assert_eq!(
        c.check(ip("2001:db8:5::1"), &sender, &helo()).await.result,
        SpfResult::Pass
    );
    let outside = c.check(ip("2001:db8:ffff::1"), &sender, &helo()).await;
    assert_eq!(outside.result, SpfResult::Fail);
    assert_eq!(
        outside.advice().as_deref(),
        Some(
            "SPF for ourtest.com does not authorise 2001:db8:ffff::1: add \
             \"ip6:2001:db8:ffff::1\" to its TXT record, or route through a smart host"
        )
    );
}

#[tokio::test]
async fn an_ipv4_mapped_address_is_checked_as_ipv4() {
    let server = DnsServer::start(vec![
        Zone::new("ourtest.com").txt("@", "v=spf1 ip4:203.0.113.5 -all"),
    ])
    .await;
    let v = check(&server, "::ffff:203.0.113.5", "voicemail@ourtest.com").await;
    assert_eq!(v.result, SpfResult::Pass);
    assert_eq!(v.ip, ip(OURS));
}

#[tokio::test]
async fn a_bounce_is_checked_against_the_helo_name() {
    let server = DnsServer::start(vec![
        Zone::new("ourtest.com")
            .txt("@", "v=spf1 -all")
            .txt("sipserver1", "v=spf1 ip4:203.0.113.5 -all"),
    ])
    .await;
    let c = checker(&server);
    let bounce = c.check(ip(OURS), &ReversePath::Null, &helo()).await;
    assert_eq!(bounce.result, SpfResult::Pass);
    assert_eq!(bounce.domain, helo());
    assert_eq!(bounce.identity, SpfIdentity::Helo);

    let elsewhere = c
        .check(ip("198.51.100.7"), &ReversePath::Null, &helo())
        .await;
    assert_eq!(elsewhere.result, SpfResult::Fail);
    assert_eq!(
        elsewhere.advice().as_deref(),
        Some(
            "SPF for sipserver1.ourtest.com does not authorise 198.51.100.7: add \
             \"ip4:198.51.100.7\" to its TXT record, or route through a smart host"
        )
    );
}

#[tokio::test]
async fn a_bounce_from_a_host_with_a_short_name_cannot_be_checked_and_says_why() {
    let server = DnsServer::start(vec![Zone::new("ourtest.com")]).await;
    let v = checker(&server)
        .check(ip(OURS), &ReversePath::Null, &d("sipserver1"))
        .await;
    assert_eq!(v.result, SpfResult::None);
    let advice = v.advice().unwrap();
    assert!(
        advice.starts_with("sipserver1 cannot have an SPF record: it is not fully qualified"),
        "{advice}"
    );
    assert_eq!(server.queries(), 0, "a short name is never looked up");
}

#[tokio::test]
async fn a_domain_without_an_spf_record_is_none_and_told_what_to_publish() {
    let server = DnsServer::start(vec![
        Zone::new("ourtest.com").txt("@", "google-site-verification=abc"),
    ])
    .await;
    let c = checker(&server);
    for sender in ["voicemail@ourtest.com", "x@nosuch.ourtest.com"] {
        let v = c.check(ip(OURS), &from(sender), &helo()).await;
        assert_eq!(v.result, SpfResult::None, "{sender}");
        let advice = v.advice().unwrap();
        assert!(
            advice.contains("publishes no SPF record")
                && advice.contains("\"v=spf1 ip4:203.0.113.5 ~all\""),
            "{advice}"
        );
        assert!(matches!(
            decide(SpfPolicy::Strict, &v, true),
            SpfDecision::DeliverWithWarning(_)
        ));
    }
}

#[tokio::test]
async fn servfail_for_the_sender_domain_is_a_temperror_that_names_the_server() {
    let server = DnsServer::builder()
        .zone(Zone::new("ourtest.com").txt("@", "v=spf1 ip4:203.0.113.5 -all"))
        .servfail_for("ourtest.com.")
        .start()
        .await;
    let v = check(&server, OURS, "voicemail@ourtest.com").await;
    assert_eq!(v.result, SpfResult::TempError);
    let expected = format!(
        "SPF for ourtest.com could not be checked: the TXT lookup of ourtest.com failed: \
         SERVFAIL from {}; check that the name servers answer (the check is repeated at the \
         next attempt)",
        server.addr()
    );
    assert_eq!(v.advice(), Some(expected));
    assert!(matches!(
        decide(SpfPolicy::Strict, &v, true),
        SpfDecision::Defer { status, .. } if status == EnhancedStatus::new(4, 7, 24)
    ));
    assert!(matches!(
        decide(SpfPolicy::SmartHost, &v, true),
        SpfDecision::DeliverWithWarning(_)
    ));
}

#[tokio::test]
async fn servfail_for_an_included_record_is_a_temperror_that_names_it() {
    let server = DnsServer::builder()
        .zone(Zone::new("ourtest.com").txt("@", "v=spf1 include:_spf.provider.test -all"))
        .zone(provider())
        .servfail_for("_netblocks.provider.test.")
        .start()
        .await;
    let v = check(&server, OURS, "voicemail@ourtest.com").await;
    assert_eq!(v.result, SpfResult::TempError);
    assert_eq!(
        v.problem,
        Some(format!(
            "the TXT lookup of _netblocks.provider.test failed: SERVFAIL from {}",
            server.addr()
        ))
    );
}

#[tokio::test]
async fn a_syntax_error_is_a_permerror_that_names_the_bad_term() {
    let server = DnsServer::start(vec![
        Zone::new("ourtest.com").txt("@", "v=spf1 mx ip4:203.0.113 -all"),
    ])
    .await;
    let v = check(&server, OURS, "voicemail@ourtest.com").await;
    assert_eq!(v.result, SpfResult::PermError);
    assert_eq!(
        v.advice().as_deref(),
        Some(
            "the SPF record of ourtest.com is broken: the term \"ip4:203.0.113\" is not valid \
             SPF; until it is fixed, receivers count mail from ourtest.com as unauthenticated"
        )
    );
}

#[tokio::test]
async fn two_spf_records_are_a_permerror() {
    let server = DnsServer::start(vec![
        Zone::new("ourtest.com")
            .txt("@", "v=spf1 ip4:203.0.113.5 -all")
            .txt("@", "v=spf1 include:_spf.provider.test -all"),
    ])
    .await;
    let v = check(&server, OURS, "voicemail@ourtest.com").await;
    assert_eq!(v.result, SpfResult::PermError);
    let problem = v.problem.unwrap();
    assert!(
        problem.starts_with("it publishes 2 SPF records")
            && problem.ends_with("merge them into one record"),
        "{problem}"
    );
}

#[tokio::test]
async fn a_broken_included_record_is_a_permerror_that_names_the_include() {
    let server = DnsServer::start(vec![
        Zone::new("ourtest.com").txt(
            "@",
            "v=spf1 include:_spf.provider.test include:gone.provider.test -all",
        ),
        Zone::new("provider.test")
            .txt("_spf", "v=spf1 ip4:198.51.100.0/24 -all")
            .txt("bad", "v=spf1 ip4:198.51.100 -all"),
        Zone::new("other.test").txt("@", "v=spf1 include:bad.provider.test -all"),
    ])
    .await;
    let c = checker(&server);
    let missing = c
        .check(ip(OURS), &from("voicemail@ourtest.com"), &helo())
        .await;
    assert_eq!(missing.result, SpfResult::PermError);
    assert_eq!(
        missing.problem.as_deref(),
        Some("include:gone.provider.test names a domain that publishes no SPF record")
    );
    let broken = c
        .check(ip(OURS), &from("voicemail@other.test"), &helo())
        .await;
    assert_eq!(broken.result, SpfResult::PermError);
    assert_eq!(
        broken.problem.as_deref(),
        Some(
            "include:bad.provider.test points to a broken record: the term \"ip4:198.51.100\" \
             is not valid SPF"
        )
    );
}

#[tokio::test]
async fn more_than_ten_lookups_is_a_permerror_that_says_so() {
    let mut provider = Zone::new("provider.test");
    let mut includes = String::from("v=spf1");
    for n in 1..=11 {
        provider = provider.txt(&format!("i{n}"), "v=spf1 ip4:198.51.100.1 -all");
        includes.push_str(&format!(" include:i{n}.provider.test"));
    }
    includes.push_str(" -all");
    let server =
        DnsServer::start(vec![Zone::new("ourtest.com").txt("@", &includes), provider]).await;
    let v = check(&server, OURS, "voicemail@ourtest.com").await;
    assert_eq!(v.result, SpfResult::PermError);
    let problem = v.problem.unwrap();
    assert!(
        problem.starts_with("it needs 11 DNS lookups")
            && problem.contains("RFC 7208 §4.6.4 allows 10"),
        "{problem}"
    );
}

#[tokio::test]
async fn an_include_loop_is_a_permerror_that_says_so() {
    let server = DnsServer::start(vec![
        Zone::new("ourtest.com").txt("@", "v=spf1 include:_spf.provider.test -all"),
        Zone::new("provider.test").txt("_spf", "v=spf1 include:ourtest.com -all"),
    ])
    .await;
    let v = check(&server, OURS, "voicemail@ourtest.com").await;
    assert_eq!(v.result, SpfResult::PermError);
    assert_eq!(
        v.problem.as_deref(),
        Some(
            "include:ourtest.com loops back to a record already being evaluated (ourtest.com \
             -> _spf.provider.test -> ourtest.com)"
        )
    );
}

#[tokio::test]
async fn a_failing_domain_s_explanation_is_kept() {
    let server = DnsServer::start(vec![
        Zone::new("ourtest.com")
            .txt("@", "v=spf1 ip4:198.51.100.1 -all exp=why.ourtest.com")
            .txt("why", "%{i} is not one of our mail servers"),
    ])
    .await;
    let v = check(&server, OURS, "voicemail@ourtest.com").await;
    assert_eq!(v.result, SpfResult::Fail);
    assert_eq!(
        v.explanation.as_deref(),
        Some("203.0.113.5 is not one of our mail servers")
    );
}

#[tokio::test]
async fn the_doctor_checks_a_domain_without_a_sender_address() {
    let server = DnsServer::start(vec![
        Zone::new("ourtest.com").txt("@", "v=spf1 ip4:198.51.100.1 -all"),
    ])
    .await;
    let v = checker(&server)
        .check_domain(ip(OURS), &d("ourtest.com"))
        .await;
    assert_eq!(v.result, SpfResult::Fail);
    assert_eq!(
        v.advice().as_deref(),
        Some(
            "SPF for ourtest.com does not authorise 203.0.113.5: add \"ip4:203.0.113.5\" to its \
             TXT record, or route through a smart host"
        )
    );
}

#[tokio::test]
async fn a_private_egress_address_is_checked_but_never_acted_on() {
    let server = DnsServer::start(vec![
        Zone::new("ourtest.com").txt("@", "v=spf1 ip4:203.0.113.5 -all"),
    ])
    .await;
    let v = check(&server, "192.168.10.10", "voicemail@ourtest.com").await;
    assert_eq!(v.result, SpfResult::Fail);
    assert!(!v.ip_is_public());
    let decision = decide(SpfPolicy::Strict, &v, true);
    assert!(
        matches!(&decision, SpfDecision::DeliverWithWarning(a) if a.contains("configure postrider's public address")),
        "{decision:?}"
    );
}

#[tokio::test]
async fn a_zero_cache_capacity_is_refused_with_the_way_to_turn_spf_off() {
    let server = DnsServer::start(vec![]).await;
    let err = SpfChecker::new(
        &dns(server.addr()),
        SpfOptions {
            cache_capacity: 0,
            ..SpfOptions::default()
        },
    )
    .unwrap_err();
    assert!(matches!(err, SpfCheckerError::ZeroCacheCapacity));
    assert!(!err.is_temporary());
    assert!(
        err.to_string().contains("set the SPF policy to off"),
        "{err}"
    );
}

// The cache runs on tokio's clock: paused here, so TTLs pass without waiting.
#[tokio::test(start_paused = true)]
async fn a_verdict_is_cached_per_domain_and_address_for_the_record_ttl() {
    let server = DnsServer::start(vec![
        Zone::new("ourtest.com")
            .ttl(30)
            .txt("@", "v=spf1 ip4:203.0.113.5 -all"),
    ])
    .await;
    let c = checker(&server);
    let first = c
        .check(ip(OURS), &from("voicemail@ourtest.com"), &helo())
        .await;
    assert_eq!(first.result, SpfResult::Pass);
    let asked = server.queries();
    assert!(asked >= 1);

    // Another sender in the same domain, from the same address: no query.
    let again = c.check(ip(OURS), &from("fax@ourtest.com"), &helo()).await;
    assert_eq!(again, first);
    tokio::time::advance(Duration::from_secs(28)).await;
    c.check(ip(OURS), &from("voicemail@ourtest.com"), &helo())
        .await;
    assert_eq!(
        server.queries(),
        asked,
        "answered from the cache within the TTL"
    );

    // Another address is another verdict.
    let other = c
        .check(ip("198.51.100.7"), &from("voicemail@ourtest.com"), &helo())
        .await;
    assert_eq!(other.result, SpfResult::Fail);
    let asked = server.queries();

    tokio::time::advance(Duration::from_secs(3)).await;
    let expired = c
        .check(ip(OURS), &from("voicemail@ourtest.com"), &helo())
        .await;
    assert_eq!(expired.result, SpfResult::Pass);
    assert!(server.queries() > asked, "asked again once the TTL ran out");
}

#[tokio::test(start_paused = true)]
async fn the_shortest_ttl_in_an_include_chain_decides_how_long_a_verdict_is_cached() {
    let server = DnsServer::start(vec![
        Zone::new("ourtest.com").txt("@", "v=spf1 include:_spf.provider.test -all"),
        Zone::new("provider.test")
            .ttl(20)
            .txt("_spf", "v=spf1 ip4:203.0.113.0/24 -all"),
    ])
    .await;
    let c = checker(&server);
    let sender = from("voicemail@ourtest.com");
    assert_eq!(
        c.check(ip(OURS), &sender, &helo()).await.result,
        SpfResult::Pass
    );
    let asked = server.queries();
    tokio::time::advance(Duration::from_secs(19)).await;
    c.check(ip(OURS), &sender, &helo()).await;
    assert_eq!(server.queries(), asked);
    tokio::time::advance(Duration::from_secs(2)).await;
    c.check(ip(OURS), &sender, &helo()).await;
    assert!(
        server.queries() > asked,
        "the include's 20 s TTL, not the top record's 3600 s, decides"
    );
}

#[tokio::test(start_paused = true)]
async fn a_missing_record_is_cached_for_the_zone_s_negative_ttl() {
    // The test server's SOA says 60 s for negative answers (RFC 2308).
    let server = DnsServer::start(vec![Zone::new("ourtest.com")]).await;
    let c = checker(&server);
    let sender = from("voicemail@ourtest.com");
    assert_eq!(
        c.check(ip(OURS), &sender, &helo()).await.result,
        SpfResult::None
    );
    let asked = server.queries();
    tokio::time::advance(Duration::from_secs(59)).await;
    c.check(ip(OURS), &sender, &helo()).await;
    assert_eq!(server.queries(), asked);
    tokio::time::advance(Duration::from_secs(2)).await;
    c.check(ip(OURS), &sender, &helo()).await;
    assert!(server.queries() > asked);
}

#[tokio::test(start_paused = true)]
async fn a_temperror_is_remembered_only_briefly() {
    let server = DnsServer::servfail().await;
    let c = SpfChecker::new(
        &dns(server.addr()),
        SpfOptions {
            temp_error_ttl: Duration::from_secs(10),
            ..SpfOptions::default()
        },
    )
    .unwrap();
    let sender = from("voicemail@ourtest.com");
    assert_eq!(
        c.check(ip(OURS), &sender, &helo()).await.result,
        SpfResult::TempError
    );
    let asked = server.queries();
    c.check(ip(OURS), &sender, &helo()).await;
    assert_eq!(server.queries(), asked, "a batch from one sender asks once");
    tokio::time::advance(Duration::from_secs(11)).await;
    c.check(ip(OURS), &sender, &helo()).await;
    assert!(server.queries() > asked);
}

#[tokio::test(start_paused = true)]
async fn a_long_ttl_is_capped_and_the_cache_can_be_cleared() {
    let server = DnsServer::start(vec![
        Zone::new("ourtest.com").txt("@", "v=spf1 ip4:203.0.113.5 -all"),
    ])
    .await;
    let c = SpfChecker::new(
        &dns(server.addr()),
        SpfOptions {
            max_ttl: Duration::from_secs(300),
            ..SpfOptions::default()
        },
    )
    .unwrap();
    let sender = from("voicemail@ourtest.com");
    c.check(ip(OURS), &sender, &helo()).await;
    let asked = server.queries();
    c.clear_cache();
    c.check(ip(OURS), &sender, &helo()).await;
    let asked_again = server.queries();
    assert!(asked_again > asked, "a cleared cache asks again");
    tokio::time::advance(Duration::from_secs(301)).await;
    c.check(ip(OURS), &sender, &helo()).await;
    assert!(
        server.queries() > asked_again,
        "the record's 3600 s TTL is capped at max_ttl"
    );
}

#[tokio::test]
async fn verdicts_are_the_same_whatever_the_case_of_the_sender_domain() {
    let server = DnsServer::start(vec![
        Zone::new("ourtest.com").txt("@", "v=spf1 ip4:203.0.113.5 -all"),
    ])
    .await;
    let v = check(&server, OURS, "VoiceMail@OurTest.COM").await;
    assert_eq!(v.result, SpfResult::Pass);
    assert_eq!(v.domain, d("ourtest.com"));
}
