//! EsmtpTransport against Postfix's smtp-sink, a real SMTP server (Debian package `postfix`).

mod support;
use support::esmtp;
use support::sink;

use std::sync::Arc;
use std::time::Duration;

use esmtp::*;
use postrider::{Delivery, Outcome};
use sink::Sink;

#[tokio::test]
async fn a_message_reaches_smtp_sink_intact() {
    let sink = Sink::start_with(&[], true).await;
    let text = "Subject: dots\r\n\r\n.leading dot\r\n.\r\nmiddle\r\n..two dots\r\nno final newline";
    let m = message(&["alice@example.org", "bob@example.org"], text);
    let reports = plain_transport()
        .deliver_all(&literal_route(sink.port()), std::slice::from_ref(&m))
        .await;
    assert_complete(&reports, std::slice::from_ref(&m));
    for i in 0..2 {
        let r = report(&reports, &m, i);
        match &r.outcome {
            Outcome::Delivered { reply } => assert_eq!(reply.code(), 250),
            other => panic!("{other:?}"),
        }
        assert_eq!(r.remote.as_ref().unwrap().to_string(), "[127.0.0.1]");
    }
    let c = sink.wait_for(1, 1, Duration::from_secs(10)).await;
    assert_eq!((c.messages, c.sessions, c.quits), (1, 1, 1));
    let dumped = sink.dumped();
    assert_eq!(dumped.len(), 1);
    let d = dumped[0].replace("\r\n", "\n");
    assert!(d.contains("X-Mail-Args: <pbx@example.com>"), "{d}");
    assert!(d.contains("X-Rcpt-Args: <alice@example.org>"), "{d}");
    assert!(d.contains("X-Rcpt-Args: <bob@example.org>"), "{d}");
    assert!(
        d.contains("\n.leading dot\n.\nmiddle\n..two dots\nno final newline\n"),
        "{d}"
    );
}

#[tokio::test]
async fn batches_interoperate_with_and_without_pipelining() {
    for options in [&[][..], &["-p"][..]] {
        let sink = Sink::start_with(options, false).await;
        let batch: Vec<Delivery> = (0..50)
            .map(|n| {
                message(
                    &["a@example.org", "b@example.org", "c@example.org"],
                    &body(&format!("batch {n}")),
                )
            })
            .collect();
        let reports = plain_transport()
            .deliver_all(&literal_route(sink.port()), &batch)
            .await;
        assert_complete(&reports, &batch);
        assert!(
            reports
                .iter()
                .all(|r| matches!(r.outcome, Outcome::Delivered { .. })),
            "{options:?}: {reports:#?}"
        );
        let c = sink.wait_for(50, 1, Duration::from_secs(10)).await;
        assert_eq!((c.messages, c.sessions), (50, 1), "{options:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_messages_all_arrive_over_reused_connections() {
    let sink = Sink::start().await;
    let t = Arc::new(plain_transport());
    let route = literal_route(sink.port());
    let mut tasks = Vec::new();
    for chunk in 0..10 {
        let t = t.clone();
        let route = route.clone();
        tasks.push(tokio::spawn(async move {
            let batch: Vec<Delivery> = (0..100)
                .map(|n| {
                    message(
                        &["rcpt@example.org"],
                        &format!("Subject: {chunk}/{n}\r\n\r\n{}\r\n", "x".repeat(4000)),
                    )
                })
                .collect();
            let reports = t.deliver_all(&route, &batch).await;
            assert_complete(&reports, &batch);
            reports
                .iter()
                .filter(|r| matches!(r.outcome, Outcome::Delivered { .. }))
                .count()
        }));
    }
    let mut delivered = 0;
    for task in tasks {
        delivered += task.await.unwrap();
    }
    assert_eq!(delivered, 1000);
    let c = sink.wait_for(1000, 10, Duration::from_secs(30)).await;
    assert_eq!(c.messages, 1000, "{c:?}");
    assert_eq!(c.sessions, 10, "one session per batch of 100: {c:?}");
}

#[tokio::test]
async fn a_real_servers_refusals_are_classified() {
    // -f RCPT: every RCPT gets smtp-sink's hard error; -r MAIL: MAIL gets its soft error.
    let hard = Sink::start_with(&["-f", "RCPT"], false).await;
    let m = message(&["a@example.org"], &body("refused"));
    let reports = plain_transport()
        .deliver_all(&literal_route(hard.port()), std::slice::from_ref(&m))
        .await;
    assert_failed(
        report(&reports, &m, 0),
        "5.3.0",
        "500 5.3.0 Error: command failed",
    );
    let soft = Sink::start_with(&["-r", "MAIL"], false).await;
    let reports = plain_transport()
        .deliver_all(&literal_route(soft.port()), std::slice::from_ref(&m))
        .await;
    assert_deferred(
        report(&reports, &m, 0),
        "4.3.0",
        "450 4.3.0 Error: command failed",
    );
}

#[tokio::test]
async fn a_message_with_hundreds_of_recipients_is_pipelined_in_groups() {
    let sink = Sink::start_with(&[], true).await;
    let rcpts: Vec<String> = (0..250).map(|n| format!("r{n}@example.org")).collect();
    let refs: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    let m = message(&refs, &body("many recipients"));
    let reports = plain_transport()
        .deliver_all(&literal_route(sink.port()), std::slice::from_ref(&m))
        .await;
    assert_complete(&reports, std::slice::from_ref(&m));
    for i in 0..250 {
        assert_delivered(report(&reports, &m, i));
    }
    sink.wait_for(1, 1, Duration::from_secs(10)).await;
    let dumped = sink.dumped();
    assert_eq!(dumped[0].matches("X-Rcpt-Args: ").count(), 250);
}

#[tokio::test]
async fn a_dsn_capable_server_takes_over_the_dsn_duty_and_one_without_dsn_does_not() {
    for (options, expected) in [(&[][..], true), (&["-N"][..], false)] {
        let sink = Sink::start_with(options, false).await;
        let m = message(&["alice@example.org"], "Subject: x\r\n\r\nx\r\n");
        let reports = plain_transport()
            .deliver_all(&literal_route(sink.port()), std::slice::from_ref(&m))
            .await;
        let r = report(&reports, &m, 0);
        assert!(matches!(r.outcome, Outcome::Delivered { .. }), "{r:?}");
        assert_eq!(r.dsn_passed_on, expected, "smtp-sink {options:?}");
    }
}
