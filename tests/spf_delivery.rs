//! SPF-aware delivery: the pre-flight before direct-to-MX delivery, against a real DNS server
//! (in-process hickory-server) serving SPF records and two real smtp-sinks (the recipient
//! domain's MX and the smart host).

mod support;
use support::dns_server;
use support::esmtp::DeliverAll;
use support::sink;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dns_server::{DnsServer, Zone};
use postrider::engine::{DeliveryEvent, Engine};
use postrider::resolve::{DnsOptions, DnsResolver};
use postrider::route::{Mailertable, PolicyTable};
use postrider::spf::{SpfChecker, SpfOptions, SpfPolicy};
use postrider::spool::MemorySpool;
use postrider::transport::Redirect;
use postrider::transport::esmtp::{EsmtpConfig, EsmtpTransport, SpfConfig};
use postrider::{
    Address, Delivery, Domain, Envelope, Host, Mailer, NextHop, Outcome, QueueId, RecipientReport,
    ReversePath, Route,
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
            smart_host_available: true,
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
    let mut reports = t.deliver_all(route, &[delivery(sender)]).await;
    assert_eq!(reports.len(), 1, "{reports:?}");
    reports.remove(0)
}

const ADVICE: &str = "SPF for ourtest.test does not authorise 203.0.113.5: add \"ip4:203.0.113.5\" \
                      to its TXT record, or route through a smart host";

#[tokio::test]
async fn the_smart_host_policy_asks_for_the_smart_host_instead_of_sending_to_the_mx() {
    let w = world().await;
    let t = w.transport(SpfPolicy::SmartHost, &[PUBLIC], "mta.goodsender.test");
    let r = one(&t, &w.mx_route(), "pbx@ourtest.test").await;
    assert_eq!(
        r.redirect,
        Some(Redirect::SmartHost {
            reason: ADVICE.to_string()
        })
    );
    let Outcome::Deferred(d) = &r.outcome else {
        panic!("without a smart host to take it, the mail waits: {r:?}");
    };
    assert_eq!(d.status.to_string(), "4.7.23");
    assert_eq!(w.mx.counts().sessions + w.smart.counts().sessions, 0);
}

impl World {
    /// An engine routing remote.test to its MX (by a mailertable entry with the MX sink's port)
    /// and everything else to the smart host, delivering with `transport`.
    async fn engine(&self, transport: EsmtpTransport) -> Engine {
        let (router, _) = Mailertable::builder()
            .hostname(Domain::parse("mta.goodsender.test").unwrap())
            .mailertable_text(
                "mailertable",
                format!("remote.test esmtp:remote.test:{}\n", self.mx.port()),
            )
            .smart_host(
                format!("relay:[127.0.0.1]:{}", self.smart.port())
                    .parse()
                    .unwrap(),
            )
            .build()
            .unwrap();
        Engine::builder()
            .hostname(Domain::parse("mta.goodsender.test").unwrap())
            .spool(Arc::new(MemorySpool::new()))
            .router(Arc::new(router))
            .transport(Arc::new(transport))
            .start()
            .await
            .unwrap()
    }
}

async fn next_event(events: &mut tokio::sync::broadcast::Receiver<DeliveryEvent>) -> DeliveryEvent {
    tokio::time::timeout(Duration::from_secs(20), events.recv())
        .await
        .expect("an event within 20 s")
        .expect("the event stream")
}

#[tokio::test]
async fn the_engine_sends_mail_whose_spf_would_fail_through_the_smart_host() {
    let w = world().await;
    let engine = w
        .engine(w.transport(SpfPolicy::SmartHost, &[PUBLIC], "mta.goodsender.test"))
        .await;
    let mut events = engine.subscribe();
    let env = Envelope::new(
        ReversePath::parse("pbx@ourtest.test").unwrap(),
        [Address::parse("bob@remote.test").unwrap()],
    );
    engine
        .submit(env, "Subject: voicemail\r\n\r\nhello\r\n")
        .await
        .unwrap();
    let e = next_event(&mut events).await;
    assert!(matches!(e.outcome, Outcome::Delivered { .. }), "{e:?}");
    assert_eq!(
        e.mailer.to_string(),
        "relay",
        "the log names the route used: {e}"
    );
    assert!(
        e.log_line().contains("relay=[127.0.0.1]"),
        "{}",
        e.log_line()
    );
    assert_eq!(
        e.note.as_deref(),
        Some(format!("{ADVICE}; sent through the smart host instead").as_str())
    );
    w.smart.wait_for(1, 1, Duration::from_secs(10)).await;
    assert_eq!(w.smart.counts().messages, 1, "the smart host received it");
    assert_eq!(
        w.mx.counts().sessions,
        0,
        "the MX was never even connected to"
    );
    engine.shutdown().await;
}

#[tokio::test]
async fn one_senders_spf_failure_does_not_suspend_the_destination_for_other_senders() {
    let w = world().await;
    let engine = w
        .engine(w.transport(SpfPolicy::Strict, &[PUBLIC], "mta.goodsender.test"))
        .await;
    let mut events = engine.subscribe();
    for sender in ["pbx@ourtest.test", "pbx@goodsender.test"] {
        let env = Envelope::new(
            ReversePath::parse(sender).unwrap(),
            [Address::parse("bob@remote.test").unwrap()],
        );
        engine
            .submit(env, "Subject: hi\r\n\r\nhello\r\n")
            .await
            .unwrap();
        let e = next_event(&mut events).await;
        match sender {
            "pbx@ourtest.test" => {
                let Outcome::Deferred(d) = &e.outcome else {
                    panic!("{e:?}");
                };
                assert_eq!(d.status.to_string(), "4.7.23", "{e}");
            }
            _ => assert!(
                matches!(e.outcome, Outcome::Delivered { .. }),
                "an authorised sender's mail is not suspended: {e}"
            ),
        }
    }
    w.mx.wait_for(1, 1, Duration::from_secs(10)).await;
    engine.shutdown().await;
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
