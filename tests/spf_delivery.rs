//! SPF-aware delivery: the pre-flight before direct-to-MX delivery, against a real DNS server
//! (in-process hickory-server) serving SPF records and two real smtp-sinks (the recipient
//! domain's MX and the smart host).

mod support;
use support::dns_server;
use support::sink;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dns_server::{DnsServer, Zone};
use postrider::resolve::{DnsOptions, DnsResolver};
use postrider::route::PolicyTable;
use postrider::spf::{SpfChecker, SpfOptions, SpfPolicy};
use postrider::transport::esmtp::{EsmtpConfig, EsmtpTransport, SpfConfig};
use postrider::{
    Address, Delivery, Domain, Envelope, Host, Mailer, NextHop, Outcome, QueueId, RecipientReport,
    ReversePath, Route, Transport,
};
use sink::Sink;

const PUBLIC: &str = "203.0.113.5";

struct World {
    _dns: DnsServer,
    resolver: DnsResolver,
    mx: Sink,
    smart: Sink,
}

async fn world() -> World {
    let dns = DnsServer::start(vec![
        Zone::new("ourtest.test")
            .txt("ourtest.test.", "v=spf1 ip4:198.51.100.7 -all")
            .txt("mta.ourtest.test.", "v=spf1 -all"),
        Zone::new("goodsender.test").txt("goodsender.test.", "v=spf1 ip4:203.0.113.0/24 -all"),
        Zone::new("remote.test")
            .mx("remote.test.", 10, "mx.remote.test.")
            .a("mx.remote.test.", "127.0.0.1"),
    ])
    .await;
    let options = DnsOptions {
        timeout: Duration::from_secs(2),
        ..DnsOptions::default()
    };
    let resolver = DnsResolver::with_name_servers(&[dns.addr()], options).unwrap();
    World {
        _dns: dns,
        resolver,
        mx: Sink::start().await,
        smart: Sink::start().await,
    }
}

impl World {
    fn smart_host_route(&self) -> Route {
        Route::Relay {
            mailer: Mailer::Relay,
            hops: vec![NextHop::direct(
                Host::Ip("127.0.0.1".parse().unwrap()),
                Some(self.smart.port()),
            )],
        }
    }

    /// Direct delivery to remote.test's MX (whose port is the MX sink's).
    fn mx_route(&self) -> Route {
        Route::Relay {
            mailer: Mailer::Esmtp,
            hops: vec![NextHop::mx(
                Domain::parse("remote.test").unwrap(),
                Some(self.mx.port()),
            )],
        }
    }

    fn transport(&self, policy: SpfPolicy, public: &[&str], helo: &str) -> EsmtpTransport {
        let mut config = EsmtpConfig::new(Domain::parse(helo).unwrap());
        config.spf = Some(SpfConfig {
            checker: SpfChecker::new(&self.resolver, SpfOptions::default()).unwrap(),
            policy,
            public_addresses: public
                .iter()
                .map(|a| a.parse::<IpAddr>().unwrap())
                .collect(),
            smart_host: Some(self.smart_host_route()),
        });
        EsmtpTransport::new(
            config,
            Arc::new(self.resolver.clone()),
            Arc::new(PolicyTable::new()),
        )
    }
}

fn delivery(sender: &str) -> Delivery {
    let env = Envelope::new(
        ReversePath::parse(sender).unwrap(),
        [Address::parse("bob@remote.test").unwrap()],
    );
    Delivery {
        id: QueueId::generate(),
        envelope: Arc::new(env),
        recipients: vec![0],
        body: Bytes::from_static(b"Subject: voicemail\r\n\r\nhello\r\n"),
    }
}

async fn one(t: &EsmtpTransport, route: &Route, sender: &str) -> RecipientReport {
    let mut reports = t.deliver(route, &[delivery(sender)]).await;
    assert_eq!(reports.len(), 1, "{reports:?}");
    reports.remove(0)
}

const ADVICE: &str = "SPF for ourtest.test does not authorise 203.0.113.5: add \"ip4:203.0.113.5\" \
                      to its TXT record, or route through a smart host";

#[tokio::test]
async fn the_smart_host_policy_reroutes_mail_whose_spf_would_fail() {
    let w = world().await;
    let t = w.transport(SpfPolicy::SmartHost, &[PUBLIC], "mta.goodsender.test");
    let r = one(&t, &w.mx_route(), "pbx@ourtest.test").await;
    assert!(matches!(r.outcome, Outcome::Delivered { .. }), "{r:?}");
    w.smart.wait_for(1, 1, Duration::from_secs(10)).await;
    assert_eq!(w.smart.counts().messages, 1, "the smart host received it");
    assert_eq!(w.mx.counts().messages, 0, "the MX was never sent to");
    assert_eq!(w.mx.counts().sessions, 0, "not even connected to");
    let note = r.note.expect("the reroute is explained");
    assert_eq!(
        note,
        format!("{ADVICE}; sent through the smart host instead")
    );
}

#[tokio::test]
async fn mail_whose_spf_passes_goes_straight_to_the_mx() {
    let w = world().await;
    let t = w.transport(SpfPolicy::SmartHost, &[PUBLIC], "mta.goodsender.test");
    let r = one(&t, &w.mx_route(), "pbx@goodsender.test").await;
    assert!(matches!(r.outcome, Outcome::Delivered { .. }), "{r:?}");
    assert_eq!(r.note, None);
    w.mx.wait_for(1, 1, Duration::from_secs(10)).await;
    assert_eq!(w.smart.counts().messages, 0);
}

#[tokio::test]
async fn the_strict_policy_defers_instead_of_sending_mail_that_will_be_rejected() {
    let w = world().await;
    let t = w.transport(SpfPolicy::Strict, &[PUBLIC], "mta.goodsender.test");
    let r = one(&t, &w.mx_route(), "pbx@ourtest.test").await;
    let Outcome::Deferred(d) = &r.outcome else {
        panic!("expected a deferral: {r:?}");
    };
    assert_eq!(d.status.to_string(), "4.7.23");
    assert_eq!(d.text, ADVICE);
    assert_eq!(w.mx.counts().sessions + w.smart.counts().sessions, 0);
}

#[tokio::test]
async fn the_warn_policy_delivers_and_says_so() {
    let w = world().await;
    let t = w.transport(SpfPolicy::Warn, &[PUBLIC], "mta.goodsender.test");
    let r = one(&t, &w.mx_route(), "pbx@ourtest.test").await;
    assert!(matches!(r.outcome, Outcome::Delivered { .. }), "{r:?}");
    assert_eq!(r.note.as_deref(), Some(ADVICE));
    w.mx.wait_for(1, 1, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn a_smart_host_route_is_never_checked() {
    let w = world().await;
    let t = w.transport(SpfPolicy::Strict, &[PUBLIC], "mta.goodsender.test");
    let r = one(&t, &w.smart_host_route(), "pbx@ourtest.test").await;
    assert!(matches!(r.outcome, Outcome::Delivered { .. }), "{r:?}");
    assert_eq!(r.note, None);
}

#[tokio::test]
async fn without_a_public_address_the_local_address_is_checked_and_a_private_one_only_warns() {
    let w = world().await;
    let t = w.transport(SpfPolicy::Strict, &[], "mta.goodsender.test");
    let r = one(&t, &w.mx_route(), "pbx@ourtest.test").await;
    assert!(
        matches!(r.outcome, Outcome::Delivered { .. }),
        "a loopback/private egress address never defers: {r:?}"
    );
    let note = r.note.expect("a warning");
    assert!(note.contains("127.0.0.1, a private address"), "{note}");
    w.mx.wait_for(1, 1, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn a_bounce_is_checked_against_the_helo_name() {
    let w = world().await;
    let t = w.transport(SpfPolicy::Strict, &[PUBLIC], "mta.ourtest.test");
    let r = one(&t, &w.mx_route(), "<>").await;
    let Outcome::Deferred(d) = &r.outcome else {
        panic!("expected a deferral: {r:?}");
    };
    assert!(
        d.text
            .starts_with("SPF for mta.ourtest.test does not authorise 203.0.113.5"),
        "{}",
        d.text
    );
}
