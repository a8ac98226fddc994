//! EsmtpTransport's choice of hosts (MX order, every address, fallback hops), its time limits,
//! broken connections, loop detection and the per-hop connection limit, against scripted
//! peers on loopback. Time limits run on tokio's paused clock.

mod support;
use support::esmtp;
use support::smtp_peer;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use esmtp::*;
use postrider::resolve::StaticResolver;
use postrider::route::PolicyTable;
use postrider::transport::esmtp::LocalAddresses;
use postrider::{Host, Mailer, NextHop, Route};
use smtp_peer::{Script, ScriptedPeer};
use tokio::net::TcpSocket;

const MINUTE: Duration = Duration::from_secs(60);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A loopback port where nothing listens (the socket is bound, so no one else gets it, but
/// not listening): connecting is refused at once.
fn closed_port() -> (TcpSocket, u16) {
    let s = TcpSocket::new_v4().unwrap();
    s.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = s.local_addr().unwrap().port();
    (s, port)
}

#[tokio::test]
async fn a_refused_connection_defers_with_4_4_1() {
    let (_hold, port) = closed_port();
    let m = message(&["a@example.org"], &body("refused"));
    let reports = plain_transport()
        .deliver_all(&literal_route(port), std::slice::from_ref(&m))
        .await;
    let r = report(&reports, &m, 0);
    assert_deferred(r, "4.4.1", &format!("connection refused by {}", lit(port)));
    assert_eq!(r.remote.as_ref().unwrap().addr, Some(LOCALHOST));
}

#[tokio::test(start_paused = true)]
async fn a_server_that_never_greets_times_out_after_five_minutes() {
    let peer = ScriptedPeer::start(vec![Script::new().hang()]).await;
    let started = tokio::time::Instant::now();
    let m = message(&["a@example.org"], &body("silent"));
    let reports = plain_transport()
        .deliver_all(&literal_route(peer.port()), std::slice::from_ref(&m))
        .await;
    assert_deferred(
        report(&reports, &m, 0),
        "4.4.1",
        &format!("timeout waiting for greeting from {}", lit(peer.port())),
    );
    let waited = started.elapsed();
    assert!(
        waited >= 5 * MINUTE && waited < 5 * MINUTE + Duration::from_secs(1),
        "{waited:?}"
    );
    peer.finish().await;
}

#[tokio::test(start_paused = true)]
async fn a_connect_timeout_to_an_mx_on_port_25_suggests_a_smart_host() {
    // A listener with a full backlog drops new SYNs: the connection attempt hangs, as it does
    // when a provider filters port 25.
    let addr: SocketAddr = "127.0.0.2:25".parse().unwrap();
    let listener = TcpSocket::new_v4().unwrap();
    listener.set_reuseaddr(true).unwrap();
    listener.bind(addr).unwrap_or_else(|e| {
        panic!("binding {addr} needs root and a free port 25 on 127.0.0.2: {e}")
    });
    let listener = listener.listen(0).unwrap();
    let _filler = std::net::TcpStream::connect(addr).unwrap();

    let resolver = StaticResolver::new()
        .with_mx(d("isp.test"), 10, d("pmx0.isp.test"))
        .with_host(d("pmx0.isp.test"), ip("127.0.0.2"));
    let t = transport(config(), resolver, PolicyTable::new());
    let m = message(&["a@isp.test"], &body("blocked"));
    let reports = t
        .deliver_all(&Route::direct_mx(&d("isp.test")), std::slice::from_ref(&m))
        .await;
    let r = report(&reports, &m, 0);
    assert_deferred(
        r,
        "4.4.1",
        "connection timed out with pmx0.isp.test [127.0.0.2] (port 25 may be blocked by your \
         provider; consider a smart host on port 587)",
    );
    assert_eq!(
        r.remote.as_ref().unwrap().to_string(),
        "pmx0.isp.test. [127.0.0.2]"
    );
    drop(listener);
}

#[tokio::test(start_paused = true)]
async fn a_tarpit_within_the_limits_is_waited_out() {
    let peer = ScriptedPeer::start(vec![
        Script::new()
            .sleep(4 * MINUTE)
            .send("220 slow.test ESMTP")
            .expect("EHLO")
            .sleep(4 * MINUTE)
            .send("250 slow.test")
            .expect("MAIL")
            .sleep(4 * MINUTE)
            .send("250 Ok")
            .on("RCPT", "250 Ok")
            .expect("DATA")
            .sleep(90 * Duration::from_secs(1))
            .send("354 go")
            .data()
            .sleep(9 * MINUTE)
            .send("250 2.0.0 finally")
            .quit(),
    ])
    .await;
    let m = message(&["a@example.org"], &body("slow"));
    let reports = plain_transport()
        .deliver_all(&literal_route(peer.port()), std::slice::from_ref(&m))
        .await;
    assert_delivered(report(&reports, &m, 0));
    assert_eq!(peer.finish().await[0].error, None);
}

#[tokio::test(start_paused = true)]
async fn a_tarpit_beyond_the_rcpt_limit_times_out_naming_phase_and_host() {
    let peer = ScriptedPeer::start(vec![
        Script::greet("slow.test", &[])
            .on("MAIL", "250 Ok")
            .expect("RCPT")
            .sleep(5 * MINUTE + Duration::from_secs(1))
            .send("250 too late")
            .drain(),
    ])
    .await;
    let m = message(&["a@example.org"], &body("tarpit"));
    let reports = plain_transport()
        .deliver_all(&literal_route(peer.port()), std::slice::from_ref(&m))
        .await;
    assert_deferred(
        report(&reports, &m, 0),
        "4.4.2",
        &format!(
            "timeout waiting for reply to RCPT TO from {}",
            lit(peer.port())
        ),
    );
    peer.finish().await;
}

#[tokio::test(start_paused = true)]
async fn timeouts_are_configurable_per_phase() {
    let peer = ScriptedPeer::start(vec![
        Script::greet("slow.test", &[])
            .expect("MAIL")
            .sleep(Duration::from_secs(11))
            .send("250 Ok")
            .drain(),
    ])
    .await;
    let mut cfg = config();
    cfg.timeouts.mail = Duration::from_secs(10);
    let t = transport(cfg, StaticResolver::new(), PolicyTable::new());
    let m = message(&["a@example.org"], &body("impatient"));
    let reports = t
        .deliver_all(&literal_route(peer.port()), std::slice::from_ref(&m))
        .await;
    assert_deferred(
        report(&reports, &m, 0),
        "4.4.2",
        &format!(
            "timeout waiting for reply to MAIL FROM from {}",
            lit(peer.port())
        ),
    );
    peer.finish().await;
}

#[tokio::test(start_paused = true)]
async fn a_server_that_stops_reading_the_data_times_out_the_data_block() {
    let peer = ScriptedPeer::start(vec![
        Script::greet("stuck.test", &[])
            .on("MAIL", "250 Ok")
            .on("RCPT", "250 Ok")
            .on("DATA", "354 go")
            .sleep(60 * MINUTE),
    ])
    .await;
    // Larger than any loopback socket buffer pair, so the writes must block.
    let big = "x".repeat(998) + "\r\n";
    let m = message(&["a@example.org"], &big.repeat(40_000));
    let reports = plain_transport()
        .deliver_all(&literal_route(peer.port()), std::slice::from_ref(&m))
        .await;
    assert_deferred(
        report(&reports, &m, 0),
        "4.4.2",
        &format!("timeout sending message data to {}", lit(peer.port())),
    );
}

#[tokio::test]
async fn a_connection_dropped_after_the_data_defers_with_4_4_2() {
    let peer = ScriptedPeer::start(vec![
        Script::greet("flaky.test", &[])
            .on("MAIL", "250 Ok")
            .on("RCPT", "250 Ok")
            .on("DATA", "354 go")
            .data()
            .close(),
    ])
    .await;
    let m = message(&["a@example.org"], &body("dropped"));
    let reports = plain_transport()
        .deliver_all(&literal_route(peer.port()), std::slice::from_ref(&m))
        .await;
    assert_deferred(
        report(&reports, &m, 0),
        "4.4.2",
        &format!(
            "connection dropped by {} while waiting for reply to end of data",
            lit(peer.port())
        ),
    );
    peer.finish().await;
}

#[tokio::test]
async fn a_connection_dropped_in_the_middle_of_the_data_defers_with_4_4_2() {
    let peer = ScriptedPeer::start(vec![
        Script::greet("flaky.test", &[])
            .on("MAIL", "250 Ok")
            .on("RCPT", "250 Ok")
            .on("DATA", "354 go")
            .expect("x")
            .close(),
    ])
    .await;
    let line = "x".repeat(998) + "\r\n";
    let m = message(&["a@example.org"], &line.repeat(5_000));
    let reports = plain_transport()
        .deliver_all(&literal_route(peer.port()), std::slice::from_ref(&m))
        .await;
    let r = report(&reports, &m, 0);
    match &r.outcome {
        postrider::Outcome::Deferred(d) => {
            assert_eq!(d.status.to_string(), "4.4.2");
            // Whether the kernel noticed while writing or while waiting for the reply
            // depends on socket buffer sizes; both are the same classification.
            let sending = format!(
                "connection dropped by {} while sending message data",
                lit(peer.port())
            );
            let waiting = format!(
                "connection dropped by {} while waiting for reply to end of data",
                lit(peer.port())
            );
            assert!(d.text == sending || d.text == waiting, "{}", d.text);
        }
        other => panic!("{other:?}"),
    }
    peer.finish().await;
}

#[tokio::test]
async fn mx_hosts_are_tried_in_preference_order_until_one_answers() {
    let peer = ScriptedPeer::start(vec![
        Script::greet("mx2.example.test", &[]).accept_one(1).quit(),
    ])
    .await;
    // mx1's address has no listener on the port: refused at once.
    let resolver = StaticResolver::new()
        .with_mx(d("example.test"), 20, d("mx2.example.test"))
        .with_mx(d("example.test"), 10, d("mx1.example.test"))
        .with_host(d("mx1.example.test"), ip("127.0.0.3"))
        .with_host(d("mx2.example.test"), LOCALHOST);
    let t = transport(config(), resolver, PolicyTable::new());
    let route = Route::Relay {
        mailer: Mailer::Esmtp,
        hops: vec![NextHop::mx(d("example.test"), Some(peer.port()))],
    };
    let m = message(&["a@example.test"], &body("mx"));
    let reports = t.deliver_all(&route, std::slice::from_ref(&m)).await;
    let r = report(&reports, &m, 0);
    assert_delivered(r);
    assert_eq!(
        r.remote.as_ref().unwrap().to_string(),
        "mx2.example.test. [127.0.0.1]"
    );
    assert_eq!(peer.finish().await[0].error, None);
}

#[tokio::test]
async fn every_address_of_a_host_is_tried_in_order() {
    let peer =
        ScriptedPeer::start(vec![Script::greet("relay.test", &[]).accept_one(1).quit()]).await;
    let resolver = StaticResolver::new()
        .with_host(d("relay.test"), ip("127.0.0.3"))
        .with_host(d("relay.test"), LOCALHOST);
    let t = transport(config(), resolver, PolicyTable::new());
    let m = message(&["a@example.org"], &body("addresses"));
    let reports = t
        .deliver_all(
            &named_route(Mailer::Relay, "relay.test", peer.port()),
            std::slice::from_ref(&m),
        )
        .await;
    assert_delivered(report(&reports, &m, 0));
    peer.finish().await;
}

#[tokio::test]
async fn fallback_hops_are_tried_in_turn_and_the_last_failure_is_reported() {
    let (_hold, dead) = closed_port();
    let peer = ScriptedPeer::start(vec![
        Script::greet("backup.test", &[]).accept_one(1).quit(),
        Script::new().send("421 4.3.2 backup busy").close(),
    ])
    .await;
    let route = Route::Relay {
        mailer: Mailer::Esmtp,
        hops: vec![literal_hop(dead), literal_hop(peer.port())],
    };
    let t = plain_transport();
    let m = message(&["a@example.org"], &body("fallback"));
    let reports = t.deliver_all(&route, std::slice::from_ref(&m)).await;
    assert_delivered(report(&reports, &m, 0));
    // Second attempt: the first hop refuses, the second is busy: the busy one is reported.
    let reports = t.deliver_all(&route, std::slice::from_ref(&m)).await;
    assert_deferred(
        report(&reports, &m, 0),
        "4.3.2",
        &format!(
            "{} refused to talk to me: 421 4.3.2 backup busy",
            lit(peer.port())
        ),
    );
    peer.finish().await;
}

#[tokio::test]
async fn a_domain_that_does_not_exist_fails_and_unresolvable_mx_hosts_defer() {
    let resolver = StaticResolver::new().with_mx(d("broken.test"), 10, d("mx9.broken.test"));
    let t = transport(config(), resolver, PolicyTable::new());
    let m = message(&["a@nowhere.test"], &body("dns"));
    let reports = t
        .deliver_all(
            &Route::direct_mx(&d("nowhere.test")),
            std::slice::from_ref(&m),
        )
        .await;
    assert_failed(
        report(&reports, &m, 0),
        "5.1.2",
        "host or domain name not found: nowhere.test does not exist (NXDOMAIN)",
    );
    let reports = t
        .deliver_all(
            &Route::direct_mx(&d("broken.test")),
            std::slice::from_ref(&m),
        )
        .await;
    assert_deferred(
        report(&reports, &m, 0),
        "4.4.3",
        "cannot find the address of mx9.broken.test (MX of broken.test): host or domain name \
         not found: mx9.broken.test does not exist (NXDOMAIN)",
    );
    let reports = t
        .deliver_all(
            &named_route(Mailer::Relay, "smarthost.typo.test", 587),
            std::slice::from_ref(&m),
        )
        .await;
    assert_deferred(
        report(&reports, &m, 0),
        "4.4.3",
        "cannot find the address of smarthost.typo.test (check the smart host or mailertable \
         entry): host or domain name not found: smarthost.typo.test does not exist (NXDOMAIN)",
    );
}

#[tokio::test]
async fn a_greeting_with_our_own_name_is_a_mail_loop() {
    let peer = ScriptedPeer::start(vec![
        Script::new()
            .send(&format!("220 {OUR_NAME} ESMTP"))
            .on("QUIT", "221 bye")
            .close(),
    ])
    .await;
    let m = message(&["a@example.org"], &body("loop"));
    let reports = plain_transport()
        .deliver_all(&literal_route(peer.port()), std::slice::from_ref(&m))
        .await;
    assert_failed(
        report(&reports, &m, 0),
        "5.3.5",
        &format!(
            "mail loops back to me (MX problem?): {} greets me with my own name {OUR_NAME}",
            lit(peer.port())
        ),
    );
    assert_eq!(peer.finish().await[0].error, None);
}

#[tokio::test]
async fn an_ehlo_reply_with_our_own_name_is_a_mail_loop() {
    let peer = ScriptedPeer::start(vec![
        Script::new()
            .send("220 mx.test ESMTP")
            .on("EHLO", &format!("250 {OUR_NAME}"))
            .quit(),
    ])
    .await;
    let m = message(&["a@example.org"], &body("loop"));
    let reports = plain_transport()
        .deliver_all(&literal_route(peer.port()), std::slice::from_ref(&m))
        .await;
    assert_failed(
        report(&reports, &m, 0),
        "5.3.5",
        &format!(
            "mail loops back to me (MX problem?): {} answers EHLO with my own name {OUR_NAME}",
            lit(peer.port())
        ),
    );
    peer.finish().await;
}

#[tokio::test]
async fn an_mx_that_is_this_machine_is_a_loop_unless_a_better_mx_may_still_work() {
    let (_hold, dead) = closed_port();
    let resolver = StaticResolver::new()
        .with_mx(d("self.test"), 10, d("mx.self.test"))
        .with_host(d("mx.self.test"), ip("192.0.2.25"))
        .with_mx(d("backup.test"), 10, d("primary.backup.test"))
        .with_mx(d("backup.test"), 20, d("mx.self.test"))
        .with_host(d("primary.backup.test"), LOCALHOST);
    let mut cfg = config();
    // This host listens on port 25 and on the test's port: an MX there is this host.
    cfg.local_addresses = LocalAddresses::on_ports([ip("192.0.2.25")], [25, dead]);
    let t = transport(cfg, resolver, PolicyTable::new());
    let m = message(&["a@self.test"], &body("self"));
    let reports = t
        .deliver_all(&Route::direct_mx(&d("self.test")), std::slice::from_ref(&m))
        .await;
    assert_failed(
        report(&reports, &m, 0),
        "5.3.5",
        "mail loops back to me (MX problem?): mx.self.test [192.0.2.25], an MX host of \
         self.test, is this machine",
    );
    // We are the backup MX: the primary is down, so keep the mail and retry.
    let route = Route::Relay {
        mailer: Mailer::Esmtp,
        hops: vec![NextHop::mx(d("backup.test"), Some(dead))],
    };
    let reports = t.deliver_all(&route, std::slice::from_ref(&m)).await;
    assert_deferred(
        report(&reports, &m, 0),
        "4.4.1",
        &format!("connection refused by primary.backup.test [127.0.0.1]:{dead}"),
    );
}

#[tokio::test]
async fn a_session_lost_mid_batch_sends_the_remaining_messages_to_the_next_address() {
    let first = ScriptedPeer::start(vec![
        Script::greet("a.relay.test", &[])
            .accept_one(1)
            .expect("MAIL")
            .close(),
    ])
    .await;
    let second_addr: SocketAddr = format!("127.0.0.6:{}", first.port()).parse().unwrap();
    let second = ScriptedPeer::start_at(
        second_addr,
        vec![Script::greet("b.relay.test", &[]).accept_one(1).quit()],
        None,
    )
    .await;
    let resolver = StaticResolver::new()
        .with_host(d("relay.test"), LOCALHOST)
        .with_host(d("relay.test"), ip("127.0.0.6"));
    let t = transport(config(), resolver, PolicyTable::new());
    let batch = [
        message(&["one@example.org"], &body("one")),
        message(&["two@example.org"], &body("two")),
        message(&["three@example.org"], &body("three")),
    ];
    let reports = t
        .deliver_all(
            &named_route(Mailer::Relay, "relay.test", first.port()),
            &batch,
        )
        .await;
    assert_complete(&reports, &batch);
    let r1 = report(&reports, &batch[0], 0);
    assert_delivered(r1);
    assert_eq!(r1.remote.as_ref().unwrap().addr, Some(LOCALHOST));
    assert_deferred(
        report(&reports, &batch[1], 0),
        "4.4.2",
        &format!(
            "connection dropped by relay.test [127.0.0.1]:{} while waiting for reply to MAIL FROM",
            first.port()
        ),
    );
    let r3 = report(&reports, &batch[2], 0);
    assert_delivered(r3);
    assert_eq!(r3.remote.as_ref().unwrap().addr, Some(ip("127.0.0.6")));
    first.finish().await;
    assert_eq!(
        second.finish().await[0].messages,
        [body("three").into_bytes()]
    );
}

async fn concurrent_sessions(limit: usize) -> usize {
    let slow = || {
        Script::greet("relay.test", &[])
            .sleep(MINUTE)
            .accept_one(1)
            .quit()
    };
    let peer = ScriptedPeer::start(vec![slow(), slow()]).await;
    let mut cfg = config();
    cfg.max_connections_per_hop = limit;
    let t = transport(cfg, StaticResolver::new(), PolicyTable::new());
    let route = literal_route(peer.port());
    let (a, b) = (
        message(&["a@example.org"], &body("a")),
        message(&["b@example.org"], &body("b")),
    );
    let (ra, rb) = tokio::join!(
        t.deliver_all(&route, std::slice::from_ref(&a)),
        t.deliver_all(&route, std::slice::from_ref(&b))
    );
    assert_delivered(report(&ra, &a, 0));
    assert_delivered(report(&rb, &b, 0));
    let max = peer.max_concurrent();
    peer.finish().await;
    max
}

#[tokio::test(start_paused = true)]
async fn the_connection_limit_per_next_hop_is_honoured() {
    assert_eq!(concurrent_sessions(1).await, 1);
    assert_eq!(concurrent_sessions(2).await, 2);
}

#[test]
fn hops_display_as_policy_keys() {
    let hop = NextHop::direct(Host::Ip(LOCALHOST), Some(25));
    assert_eq!(hop.to_string(), "[127.0.0.1]:25");
}
