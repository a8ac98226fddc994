//! Direct-to-MX delivery on loopback, end to end: a real DNS server (hickory-server in-process)
//! publishes MX and A records for domains whose mail exchangers are 127.0.0.x, mailertable MX
//! routes with a port (`esmtp:domain:PORT`, Postfix's form) send there, and real smtp-sinks
//! listen on those addresses. MX order, fallback to the next MX and the implicit MX all happen
//! for real; an MX on this machine's loopback addresses is no mail loop, since this host's own
//! SMTP port is 25, not the sinks' port.

mod support;
use support::dns_server::{DnsServer, Zone};
use support::sink::{Sink, free_port};

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use postrider::config::Config;
use postrider::engine::DeliveryEvent;
use postrider::spool::MemorySpool;
use postrider::{Address, Envelope, Outcome, ReversePath};

async fn zones() -> DnsServer {
    DnsServer::start(vec![
        Zone::new("ordered.test")
            .mx("ordered.test.", 10, "mx1.ordered.test.")
            .mx("ordered.test.", 20, "mx2.ordered.test.")
            .a("mx1.ordered.test.", "127.0.0.2")
            .a("mx2.ordered.test.", "127.0.0.3"),
        Zone::new("fallback.test")
            .mx("fallback.test.", 10, "mxa.fallback.test.")
            .mx("fallback.test.", 20, "mxb.fallback.test.")
            .a("mxa.fallback.test.", "127.0.0.4")
            .a("mxb.fallback.test.", "127.0.0.5"),
        Zone::new("implicit.test").a("implicit.test.", "127.0.0.6"),
    ])
    .await
}

async fn next(events: &mut tokio::sync::broadcast::Receiver<DeliveryEvent>) -> DeliveryEvent {
    tokio::time::timeout(Duration::from_secs(30), events.recv())
        .await
        .expect("an event within 30 s")
        .expect("the event stream")
}

#[tokio::test]
async fn mx_routes_with_a_port_follow_mx_order_fallback_and_the_implicit_mx() {
    let dns = zones().await;
    let port = free_port();
    let sink = |last: u8| Sink::start_on_addr(Ipv4Addr::new(127, 0, 0, last), port, &[]);
    let (mx1, mx2, mxb, implicit) = (sink(2).await, sink(3).await, sink(5).await, sink(6).await);
    // Nothing listens on 127.0.0.4: the best MX of fallback.test refuses connections.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mailertable"),
        format!(
            "ordered.test   esmtp:ordered.test:{port}\n\
             fallback.test  esmtp:fallback.test:{port}\n\
             implicit.test  esmtp:implicit.test:{port}\n"
        ),
    )
    .unwrap();
    let config = Config::parse(
        &format!(
            "hostname = \"mta.sender.test\"\nmailertable = \"mailertable\"\n\
             [spf]\npolicy = \"off\"\n[dns]\nname_servers = [\"{}\"]\ntimeout = \"2s\"\n",
            dns.addr()
        ),
        dir.path().join("postrider.toml"),
    )
    .unwrap();
    let parts = config.assemble().await.unwrap();
    let engine = parts
        .engine_builder(Arc::new(MemorySpool::new()))
        .start()
        .await
        .unwrap();
    let mut events = engine.subscribe();
    for (to, relay) in [
        ("a@ordered.test", "mx1.ordered.test. [127.0.0.2]"),
        ("b@fallback.test", "mxb.fallback.test. [127.0.0.5]"),
        ("c@implicit.test", "implicit.test. [127.0.0.6]"),
    ] {
        let env = Envelope::new(
            ReversePath::parse("pbx@sender.test").unwrap(),
            [Address::parse(to).unwrap()],
        );
        engine
            .submit(env, format!("Subject: to {to}\r\n\r\nhello\r\n"))
            .await
            .unwrap();
        let e = next(&mut events).await;
        assert!(matches!(e.outcome, Outcome::Delivered { .. }), "{e}");
        assert_eq!(
            e.relay.as_ref().map(ToString::to_string).as_deref(),
            Some(relay),
            "{e}"
        );
    }
    for (sink, n) in [(&mx1, 1), (&mx2, 0), (&mxb, 1), (&implicit, 1)] {
        assert_eq!(
            sink.wait_for(n, n, Duration::from_secs(10)).await.messages,
            n
        );
    }
    engine.shutdown().await;
}
