//! EsmtpTransport's connection cache (`EsmtpConfig::connection_cache`) against Postfix's
//! smtp-sink: sessions carried over from one `deliver` call to the next, closed with QUIT when
//! idle, never reused once the server has hung up, and counted against the per-hop connection
//! limit (against a scripted peer, which counts the connections open at once).

mod support;
use support::esmtp;
use support::sink;
use support::smtp_peer::{Script, ScriptedPeer};

use std::time::Duration;

use esmtp::*;
use postrider::{Mailer, Outcome, Route};
use sink::Sink;

const IDLE: Duration = Duration::from_millis(300);
const LIMIT: Duration = Duration::from_secs(10);

fn caching_transport(idle: Duration) -> postrider::transport::esmtp::EsmtpTransport {
    let mut c = config();
    c.connection_cache = Some(idle);
    transport(
        c,
        postrider::resolve::StaticResolver::new(),
        postrider::route::PolicyTable::new(),
    )
}

fn assert_delivered(reports: &[postrider::RecipientReport]) {
    assert!(
        reports
            .iter()
            .all(|r| matches!(r.outcome, Outcome::Delivered { .. })),
        "{reports:#?}"
    );
}

#[tokio::test]
async fn consecutive_calls_share_one_session_which_is_quit_once_idle() {
    let sink = Sink::start().await;
    let t = caching_transport(IDLE);
    let route = literal_route(sink.port());
    for n in 0..5 {
        let m = message(&["a@example.org"], &body(&format!("call {n}")));
        assert_delivered(&t.deliver_all(&route, std::slice::from_ref(&m)).await);
    }
    let c = sink.wait_for(5, 0, LIMIT).await;
    assert_eq!(c.messages, 5);
    assert_eq!(c.sessions, 0, "the session is still open, waiting: {c:?}");
    // Nobody takes it: it is closed properly once the idle time is over.
    let c = sink.wait_for(5, 1, LIMIT).await;
    assert_eq!((c.messages, c.sessions, c.quits), (5, 1, 1));
}

#[tokio::test]
async fn a_session_the_server_closed_is_not_reused_and_costs_no_deferral() {
    let sink = Sink::start().await;
    let port = sink.port();
    let t = caching_transport(Duration::from_secs(60));
    let route = literal_route(port);
    let m = message(&["a@example.org"], &body("first"));
    assert_delivered(&t.deliver_all(&route, std::slice::from_ref(&m)).await);
    assert_eq!(sink.wait_for(1, 0, LIMIT).await.messages, 1);
    // The server goes away (closing the parked connection) and a new one takes the port.
    drop(sink);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let sink = Sink::start_on(port, &[], false).await;
    let m = message(&["a@example.org"], &body("second"));
    assert_delivered(&t.deliver_all(&route, std::slice::from_ref(&m)).await);
    assert_eq!(sink.wait_for(1, 0, LIMIT).await.messages, 1);
}

#[tokio::test]
async fn without_a_cache_every_call_ends_with_quit() {
    let sink = Sink::start().await;
    let t = plain_transport();
    let route = literal_route(sink.port());
    for n in 0..3 {
        let m = message(&["a@example.org"], &body(&format!("call {n}")));
        assert_delivered(&t.deliver_all(&route, std::slice::from_ref(&m)).await);
    }
    let c = sink.wait_for(3, 3, LIMIT).await;
    assert_eq!((c.messages, c.sessions, c.quits), (3, 3, 3));
}

#[tokio::test]
async fn concurrent_calls_open_their_own_sessions_and_park_them_all() {
    let sink = Sink::start().await;
    let t = std::sync::Arc::new(caching_transport(IDLE));
    let route = literal_route(sink.port());
    let mut tasks = Vec::new();
    for n in 0..4 {
        let (t, route) = (t.clone(), route.clone());
        tasks.push(tokio::spawn(async move {
            let m = message(&["a@example.org"], &body(&format!("call {n}")));
            t.deliver_all(&route, std::slice::from_ref(&m)).await
        }));
    }
    for task in tasks {
        assert_delivered(&task.await.unwrap());
    }
    let c = sink.wait_for(4, 1, LIMIT).await;
    assert_eq!(c.messages, 4);
    // However many were opened, each is eventually quit, none is dropped without QUIT.
    tokio::time::sleep(IDLE * 3).await;
    let c = sink.counts();
    assert_eq!(c.sessions, c.quits, "{c:?}");
    assert!(c.sessions >= 1 && c.sessions <= 4, "{c:?}");
}

#[tokio::test]
async fn a_replaced_policy_applies_to_the_next_call_and_retires_parked_sessions() {
    use postrider::route::{PolicyTable, TlsLevel};
    use std::sync::Arc;

    let sink = Sink::start().await;
    let route = literal_route(sink.port());
    let t = caching_transport(Duration::from_secs(60));
    let first = message(&["a@example.org"], &body("under the first policy"));
    assert_delivered(&t.deliver_all(&route, std::slice::from_ref(&first)).await);
    assert_eq!(sink.wait_for(1, 0, LIMIT).await.sessions, 0, "parked");

    // TLS now required, which smtp-sink does not offer. The parked session was set up under
    // the old policy: it is closed with QUIT instead of carrying the next message.
    let hop = literal_hop(sink.port());
    t.set_policy(Arc::new(policy_for(&hop, tls_policy(TlsLevel::Encrypt))));
    let c = sink.wait_for(1, 1, LIMIT).await;
    assert_eq!((c.sessions, c.quits), (1, 1));
    let second = message(&["b@example.org"], &body("under the second policy"));
    let reports = t.deliver_all(&route, std::slice::from_ref(&second)).await;
    assert_deferred(
        &reports[0],
        "4.7.4",
        &format!(
            "TLS is required (policy encrypt) but [127.0.0.1]:{} does not offer STARTTLS",
            sink.port()
        ),
    );
    assert_eq!(t.policy().lookup(&hop).tls, TlsLevel::Encrypt);

    t.set_policy(Arc::new(PolicyTable::new()));
    assert_delivered(&t.deliver_all(&route, std::slice::from_ref(&second)).await);
    assert_eq!(sink.wait_for(2, 2, LIMIT).await.messages, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_replaced_from_a_plain_thread_closes_parked_sessions_without_a_panic() {
    use postrider::route::PolicyTable;
    use std::sync::Arc;

    let sink = Sink::start().await;
    let route = literal_route(sink.port());
    let t = Arc::new(caching_transport(Duration::from_secs(60)));
    let m = message(&["a@example.org"], &body("parked"));
    assert_delivered(&t.deliver_all(&route, std::slice::from_ref(&m)).await);
    assert_eq!(sink.wait_for(1, 0, LIMIT).await.sessions, 0, "parked");
    // A configuration reloader on its own thread, outside the runtime: no QUIT can be sent
    // from there, so the parked session is closed by dropping it.
    let from_thread = t.clone();
    std::thread::spawn(move || from_thread.set_policy(Arc::new(PolicyTable::new())))
        .join()
        .expect("set_policy outside a runtime does not panic");
    let c = sink.wait_for(1, 1, LIMIT).await;
    assert_eq!((c.messages, c.sessions), (1, 1));
    // The next call opens a new session.
    assert_delivered(&t.deliver_all(&route, std::slice::from_ref(&m)).await);
    assert_eq!(sink.wait_for(2, 1, LIMIT).await.messages, 2);
}

#[tokio::test(start_paused = true)]
async fn parked_sessions_count_against_the_connection_limit_of_their_hop() {
    // Each of the first two holds its connection a minute before taking the message, so the
    // two deliveries overlap; every session ends with QUIT.
    let slow = || {
        Script::greet("relay.test", &[])
            .sleep(Duration::from_secs(60))
            .accept_one(1)
            .quit()
    };
    let quick = Script::greet("relay.test", &[]).accept_one(1).quit();
    let peer = ScriptedPeer::start(vec![slow(), slow(), quick]).await;
    let hour = Duration::from_secs(3600);
    let mut c = config();
    c.max_connections_per_hop = 2;
    c.connection_cache = Some(hour);
    let t = transport(
        c,
        postrider::resolve::StaticResolver::new(),
        postrider::route::PolicyTable::new(),
    );
    let esmtp = literal_route(peer.port());
    let (a, b) = (
        message(&["a@example.org"], &body("a")),
        message(&["b@example.org"], &body("b")),
    );
    let (ra, rb) = tokio::join!(
        t.deliver_all(&esmtp, std::slice::from_ref(&a)),
        t.deliver_all(&esmtp, std::slice::from_ref(&b))
    );
    assert_delivered(&ra);
    assert_delivered(&rb);
    // Both sessions are parked and fill the hop. A delivery over another mailer cannot reuse
    // them: it closes one and takes its place, instead of opening a third connection or
    // waiting the hour for the reaper.
    let started = tokio::time::Instant::now();
    let relay = Route::Relay {
        mailer: Mailer::Relay,
        hops: vec![literal_hop(peer.port())],
    };
    let m = message(&["c@example.org"], &body("c"));
    assert_delivered(&t.deliver_all(&relay, std::slice::from_ref(&m)).await);
    assert!(started.elapsed() < hour, "waited for an idle session");
    assert_eq!(peer.max_concurrent(), 2, "connections open at once");
    drop(t);
    let logs = peer.finish().await;
    assert_eq!(logs.len(), 3);
    for log in &logs {
        assert_eq!(log.error, None, "{log:?}");
    }
}
