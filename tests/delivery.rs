//! End to end: `Engine::submit` → spool → mailertable → `EsmtpTransport` → Postfix's
//! `smtp-sink` on loopback. Real clock: the waits are for delivery events, with generous
//! limits that only matter when something is broken.

mod support;
use support::sink;

use std::sync::Arc;
use std::time::Duration;

use postrider::engine::{DeliveryEvent, Engine, Limits, RetryPolicy};
use postrider::resolve::StaticResolver;
use postrider::route::{Mailertable, PolicyTable};
use postrider::spool::{MemorySpool, Spool};
use postrider::transport::esmtp::{EsmtpConfig, EsmtpTransport};
use postrider::{Address, Domain, Envelope, Outcome, ReversePath};
use sink::Sink;
use tokio::sync::broadcast::Receiver;

const LIMIT: Duration = Duration::from_secs(30);

/// An engine whose mailertable sends `remote.test` and `sender.test` to the given loopback
/// ports.
async fn engine(
    spool: Arc<dyn Spool>,
    remote_port: u16,
    sender_port: u16,
    retry: RetryPolicy,
) -> Engine {
    let hostname = Domain::parse("mta.test.example").unwrap();
    let table = format!(
        "remote.test   esmtp:[127.0.0.1]:{remote_port}\nsender.test   esmtp:[127.0.0.1]:{sender_port}\n"
    );
    let (router, warnings) = Mailertable::builder()
        .mailertable_text("mailertable", &table)
        .hostname(hostname.clone())
        .build()
        .unwrap();
    assert!(warnings.is_empty());
    let transport = EsmtpTransport::new(
        EsmtpConfig::new(hostname.clone()),
        Arc::new(StaticResolver::new()),
        Arc::new(PolicyTable::new()),
    );
    Engine::builder()
        .hostname(hostname)
        .spool(spool)
        .router(Arc::new(router))
        .transport(Arc::new(transport))
        .retry(retry)
        .limits(Limits::default())
        .start()
        .await
        .unwrap()
}

fn envelope(from: &str, to: &str) -> Envelope {
    Envelope::new(
        ReversePath::parse(from).unwrap(),
        [Address::parse(to).unwrap()],
    )
}

async fn next_for(events: &mut Receiver<DeliveryEvent>, rcpt: &str) -> DeliveryEvent {
    tokio::time::timeout(LIMIT, async {
        loop {
            let e = events.recv().await.expect("event stream open");
            if e.recipient.to_string() == rcpt {
                return e;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no event for {rcpt} within {LIMIT:?}"))
}

#[tokio::test]
async fn submitted_messages_are_delivered_to_smtp_sink() {
    let sink = Sink::start().await;
    let spool = MemorySpool::new();
    let engine = engine(
        Arc::new(spool.clone()),
        sink.port(),
        sink.port(),
        RetryPolicy::default(),
    )
    .await;
    let mut events = engine.subscribe();
    for i in 0..50 {
        engine
            .submit(
                envelope("pbx@sender.test", &format!("user{i}@remote.test")),
                format!("Subject: voicemail {i}\r\n\r\nYou have a new message.\r\n"),
            )
            .await
            .unwrap();
    }
    let mut delivered = 0;
    let mut line = String::new();
    tokio::time::timeout(LIMIT, async {
        while delivered < 50 {
            let e = events.recv().await.unwrap();
            assert!(
                matches!(e.outcome, Outcome::Delivered { .. }),
                "{}",
                e.log_line()
            );
            delivered += 1;
            line = e.log_line();
        }
    })
    .await
    .expect("50 deliveries");
    let counts = sink.wait_for(50, 1, LIMIT).await;
    assert_eq!(counts.messages, 50);
    assert!(counts.sessions < 50, "sessions were reused: {counts:?}");
    assert!(
        line.contains(", mailer=esmtp, relay=[127.0.0.1], dsn=2.0.0, stat=Sent (250 2.0.0 Ok"),
        "{line}"
    );
    engine.shutdown().await;
    assert!(spool.is_empty(), "delivered messages left the spool");
}

#[tokio::test]
async fn a_deferral_is_retried_and_delivered_once_the_peer_recovers() {
    let port = sink::free_port();
    let retry = RetryPolicy {
        initial: Duration::from_millis(300),
        max_interval: Duration::from_millis(600),
        jitter: 0.0,
        ..RetryPolicy::default()
    };
    let engine = engine(Arc::new(MemorySpool::new()), port, port, retry).await;
    let mut events = engine.subscribe();
    engine
        .submit(
            envelope("pbx@sender.test", "bob@remote.test"),
            "Subject: x\r\n\r\nx\r\n",
        )
        .await
        .unwrap();
    let first = next_for(&mut events, "bob@remote.test").await;
    let Outcome::Deferred(d) = &first.outcome else {
        panic!(
            "nothing listens yet, expected a deferral: {}",
            first.log_line()
        );
    };
    assert_eq!(d.status.to_string(), "4.4.1", "{}", d.text);

    let sink = Sink::start_on(port, &[], false).await;
    let delivered = loop {
        let e = next_for(&mut events, "bob@remote.test").await;
        if matches!(e.outcome, Outcome::Delivered { .. }) {
            break e;
        }
    };
    assert!(delivered.started > first.finished);
    assert_eq!(sink.wait_for(1, 1, LIMIT).await.messages, 1);
    engine.shutdown().await;
}

#[tokio::test]
async fn a_permanent_rejection_is_bounced_to_the_sender_with_a_dsn() {
    let rejecting = Sink::start_with(
        &["-f", "RCPT", "-B", "550 5.1.1 mailbox unavailable"],
        false,
    )
    .await;
    let sender_side = Sink::start_with(&[], true).await;
    let engine = engine(
        Arc::new(MemorySpool::new()),
        rejecting.port(),
        sender_side.port(),
        RetryPolicy::default(),
    )
    .await;
    let mut events = engine.subscribe();
    let id = engine
        .submit(
            envelope("pbx@sender.test", "nobody@remote.test"),
            "Subject: voicemail\r\n\r\nx\r\n",
        )
        .await
        .unwrap();
    let failed = next_for(&mut events, "nobody@remote.test").await;
    let Outcome::Failed(d) = &failed.outcome else {
        panic!("expected a failure: {}", failed.log_line());
    };
    assert_eq!(d.status.to_string(), "5.1.1");
    assert!(
        d.text.contains("550 5.1.1 mailbox unavailable"),
        "{}",
        d.text
    );

    let bounce = next_for(&mut events, "pbx@sender.test").await;
    assert!(
        matches!(bounce.outcome, Outcome::Delivered { .. }),
        "{}",
        bounce.log_line()
    );
    sender_side.wait_for(1, 1, LIMIT).await;
    let dumped = sender_side.dumped();
    assert_eq!(dumped.len(), 1);
    let dsn = &dumped[0];
    for want in [
        "Content-Type: multipart/report; report-type=delivery-status;",
        "Reporting-MTA: dns; mta.test.example",
        &format!("X-Postrider-Queue-ID: {id}"),
        "Final-Recipient: rfc822; nobody@remote.test",
        "Action: failed",
        "Status: 5.1.1",
        "Diagnostic-Code: smtp; 550 5.1.1 mailbox unavailable",
        "Subject: voicemail",
    ] {
        assert!(dsn.contains(want), "missing {want:?} in\n{dsn}");
    }
    engine.shutdown().await;
}
