//! Engine behaviour with a scripted transport on tokio's paused clock: retry schedule, host
//! status, delay warnings, bounces, flush, hold/release/delete, recovery, batching, limits,
//! shutdown.

mod support;

use std::time::Duration;

use postrider::engine::{Engine, FlushFilter, Limits, RetryPolicy};
use postrider::spool::{MemorySpool, RecipientStatus, Spool};
use postrider::{Address, Envelope, Notify, Outcome, ReversePath, Route};
use support::engine::*;

fn mins(d: Duration) -> f64 {
    d.as_secs_f64() / 60.0
}

#[tokio::test(start_paused = true)]
async fn a_deferred_message_is_retried_after_5_10_20_40_then_66_minutes() {
    let retry = RetryPolicy {
        warn_after: None,
        ..exact_retry()
    };
    let mut h = harness(Box::new(|_| temp()), retry, Limits::default()).await;
    h.submit(
        "pbx@sender.example",
        &["bob@remote.example"],
        "Subject: t\r\n\r\nx\r\n",
    )
    .await;
    let mut starts = Vec::new();
    for _ in 0..7 {
        let e = h.next_event_for("bob@remote.example").await;
        assert!(matches!(e.outcome, Outcome::Deferred(_)));
        starts.push(e.started);
    }
    let gaps: Vec<f64> = starts
        .windows(2)
        .map(|w| mins(w[1].duration_since(w[0]).unwrap()))
        .collect();
    let expected = [5.0, 10.0, 20.0, 40.0, 4000.0 / 60.0, 4000.0 / 60.0];
    for (got, want) in gaps.iter().zip(expected) {
        assert!(
            (got - want).abs() < 0.05,
            "gaps {gaps:?}, expected {expected:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn retry_delays_carry_jitter_within_ten_percent() {
    let retry = RetryPolicy {
        warn_after: None,
        ..RetryPolicy::default()
    };
    let mut h = harness(Box::new(|_| temp()), retry, Limits::default()).await;
    for i in 0..20 {
        h.submit(
            "pbx@sender.example",
            &[&format!("u{i}@remote.example")],
            "x\r\n",
        )
        .await;
    }
    let mut first = std::collections::HashMap::new();
    let mut gaps = Vec::new();
    while gaps.len() < 20 {
        let e = h.next_event().await;
        match first.get(&e.id) {
            None => {
                first.insert(e.id, e.started);
            }
            Some(t) => {
                let g = mins(e.started.duration_since(*t).unwrap());
                if g > 0.0 {
                    gaps.push(g);
                }
            }
        }
    }
    assert!(gaps.iter().all(|g| (4.5..=5.5).contains(g)), "{gaps:?}");
    let distinct: std::collections::HashSet<u64> =
        gaps.iter().map(|g| (g * 1000.0) as u64).collect();
    assert!(
        distinct.len() > 1,
        "jitter should spread the retries: {gaps:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_dead_next_hop_defers_other_mail_without_connecting() {
    let mut h = harness(
        Box::new(|_| unreachable()),
        exact_retry(),
        Limits::default(),
    )
    .await;
    h.submit("pbx@sender.example", &["a@down.example"], "x\r\n")
        .await;
    let first = h.next_event().await;
    assert_eq!(first.outcome.status().to_string(), "4.4.1");
    assert_eq!(h.transport.calls().len(), 1);

    tokio::time::advance(Duration::from_secs(60)).await;
    h.submit("pbx@sender.example", &["b@down.example"], "x\r\n")
        .await;
    let second = h.next_event_for("b@down.example").await;
    let Outcome::Deferred(d) = &second.outcome else {
        panic!("expected a deferral, got {:?}", second.outcome);
    };
    assert!(
        d.text
            .starts_with("delivery temporarily suspended: Connection timed out"),
        "{}",
        d.text
    );
    assert_eq!(
        h.transport.calls().len(),
        1,
        "no connection attempt while the hop is dead"
    );
    assert!(second.relay.is_none());
}

#[tokio::test(start_paused = true)]
async fn a_dead_next_hop_is_tried_again_once_its_backoff_ends() {
    let mut h = harness(
        Box::new(|_| unreachable()),
        exact_retry(),
        Limits::default(),
    )
    .await;
    h.submit("pbx@sender.example", &["a@down.example"], "x\r\n")
        .await;
    h.next_event().await;
    h.transport.set_rule(Box::new(|_| ok()));
    let e = h.next_event_for("a@down.example").await;
    assert!(matches!(e.outcome, Outcome::Delivered { .. }));
    assert_eq!(h.transport.calls().len(), 2);
    let gap = h.transport.calls()[1]
        .at
        .duration_since(h.transport.calls()[0].at)
        .unwrap();
    assert_eq!(gap.as_secs(), 300);
}

#[tokio::test(start_paused = true)]
async fn a_delay_warning_goes_to_the_sender_once_after_four_hours() {
    let mut h = harness(
        Box::new(|a| {
            if a.domain().as_str() == "sender.example" {
                ok()
            } else {
                temp()
            }
        }),
        exact_retry(),
        Limits::default(),
    )
    .await;
    h.submit(
        "pbx@sender.example",
        &["bob@remote.example"],
        "Subject: voicemail\r\n\r\nx\r\n",
    )
    .await;
    let warning = h.next_event_for("pbx@sender.example").await;
    assert!(matches!(warning.outcome, Outcome::Delivered { .. }));
    let age = warning
        .started
        .duration_since(h.transport.calls()[0].at)
        .unwrap();
    assert!(
        age >= Duration::from_secs(4 * 3600) && age < Duration::from_secs(4 * 3600 + 4000),
        "warning after {age:?}"
    );
    let dsn = &h.transport.calls_for("pbx@sender.example")[0].messages[0];
    assert!(dsn.0.is_null(), "DSNs come from <>");
    let text = String::from_utf8_lossy(&dsn.2);
    assert!(text.contains("Action: delayed"), "{text}");
    assert!(text.contains("Will-Retry-Until:"), "{text}");
    assert!(text.contains("Subject: voicemail"), "{text}");

    // A day later there is still exactly one warning.
    tokio::time::timeout(Duration::from_secs(86_400), async {
        loop {
            h.next_event().await;
        }
    })
    .await
    .unwrap_err();
    assert_eq!(h.transport.calls_for("pbx@sender.example").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_message_still_deferred_after_five_days_is_bounced_with_an_rfc3464_report() {
    let mut h = harness(
        Box::new(|a| {
            if a.domain().as_str() == "sender.example" {
                ok()
            } else {
                temp()
            }
        }),
        RetryPolicy {
            warn_after: None,
            ..exact_retry()
        },
        Limits::default(),
    )
    .await;
    let id = h
        .submit(
            "pbx@sender.example",
            &["bob@remote.example"],
            "Subject: voicemail\r\n\r\nbody\r\n",
        )
        .await;
    let mut failed = None;
    for _ in 0..200 {
        let e = h.next_event_for("bob@remote.example").await;
        if let Outcome::Failed(_) = e.outcome {
            failed = Some(e);
            break;
        }
    }
    let failed = failed.expect("bounced within 200 attempts");
    let age = failed.finished.duration_since(failed.arrival).unwrap();
    assert!(age >= Duration::from_secs(5 * 86_400), "{age:?}");
    assert!(
        age < Duration::from_secs(5 * 86_400 + 60),
        "bounced on time: {age:?}"
    );
    assert_eq!(failed.outcome.status().to_string(), "5.3.0");
    let Outcome::Failed(d) = &failed.outcome else {
        unreachable!()
    };
    assert!(
        d.text
            .starts_with("Cannot send message for 5 days; last error: 451 4.3.0 try again later"),
        "{}",
        d.text
    );

    let bounce = h.next_event_for("pbx@sender.example").await;
    assert!(matches!(bounce.outcome, Outcome::Delivered { .. }));
    let call = &h.transport.calls_for("pbx@sender.example")[0];
    let (sender, _, body) = &call.messages[0];
    assert!(sender.is_null());
    let msg = mail_parser::MessageParser::default()
        .parse(&body[..])
        .unwrap();
    use mail_parser::MimeHeaders;
    let ct = msg.content_type().unwrap();
    assert_eq!((ct.ctype(), ct.subtype()), ("multipart", Some("report")));
    assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
    let report = msg
        .parts
        .iter()
        .find(|p| {
            p.content_type()
                .is_some_and(|c| c.subtype() == Some("delivery-status"))
        })
        .expect("a message/delivery-status part");
    let fields =
        String::from_utf8_lossy(&body[report.offset_body as usize..report.offset_end as usize]);
    for want in [
        "Reporting-MTA: dns; mta.test.example",
        &format!("X-Postrider-Queue-ID: {id}"),
        "Arrival-Date: ",
        "Final-Recipient: rfc822; bob@remote.example",
        "Action: failed",
        "Status: 5.3.0",
        "Remote-MTA: dns; mx.test.example",
        "Diagnostic-Code: smtp; 451 4.3.0 try again later",
        "Last-Attempt-Date: ",
    ] {
        assert!(fields.contains(want), "missing {want:?} in\n{fields}");
    }
    settle().await;
    assert!(
        h.engine.list().await.unwrap().iter().all(|e| e.id != id),
        "the original left the queue"
    );
}

#[tokio::test(start_paused = true)]
async fn a_permanent_failure_is_bounced_at_once_and_the_message_leaves_the_queue() {
    let mut h = harness(
        Box::new(|a| {
            if a.local_part() == "nobody" {
                perm()
            } else {
                ok()
            }
        }),
        exact_retry(),
        Limits::default(),
    )
    .await;
    let id = h
        .submit(
            "pbx@sender.example",
            &["nobody@remote.example", "alice@remote.example"],
            "x\r\n",
        )
        .await;
    let mut seen = std::collections::HashMap::new();
    for _ in 0..3 {
        let e = h.next_event().await;
        seen.insert(e.recipient.to_string(), e.outcome);
    }
    assert!(matches!(seen["nobody@remote.example"], Outcome::Failed(_)));
    assert!(matches!(
        seen["alice@remote.example"],
        Outcome::Delivered { .. }
    ));
    assert!(
        matches!(seen["pbx@sender.example"], Outcome::Delivered { .. }),
        "the bounce was delivered"
    );
    let bounce = &h.transport.calls_for("pbx@sender.example")[0].messages[0].2;
    let text = String::from_utf8_lossy(bounce);
    assert!(text.contains("Final-Recipient: rfc822; nobody@remote.example"));
    assert!(
        !text.contains("Final-Recipient: rfc822; alice@remote.example"),
        "only failures are reported"
    );
    settle().await;
    assert!(h.engine.list().await.unwrap().iter().all(|e| e.id != id));
}

#[tokio::test(start_paused = true)]
async fn a_bounce_that_cannot_be_delivered_is_dropped_not_bounced() {
    let mut h = harness(Box::new(|_| perm()), exact_retry(), Limits::default()).await;
    h.submit("ghost@sender.example", &["nobody@remote.example"], "x\r\n")
        .await;
    h.next_event_for("nobody@remote.example").await;
    let bounce = h.next_event_for("ghost@sender.example").await;
    assert!(matches!(bounce.outcome, Outcome::Failed(_)));
    assert!(bounce.sender.is_null());
    settle().await;
    tokio::time::advance(Duration::from_secs(86_400)).await;
    settle().await;
    assert_eq!(
        h.transport.calls().len(),
        2,
        "no report about the failed report"
    );
    assert!(h.engine.list().await.unwrap().is_empty());
    assert!(h.spool.is_empty());
}

#[tokio::test(start_paused = true)]
async fn notify_never_suppresses_the_bounce_and_notify_success_reports_delivery() {
    let mut h = harness(
        Box::new(|a| {
            if a.local_part() == "nobody" {
                perm()
            } else {
                ok()
            }
        }),
        exact_retry(),
        Limits::default(),
    )
    .await;
    let mut env = Envelope::new(
        ReversePath::parse("pbx@sender.example").unwrap(),
        [
            Address::parse("nobody@remote.example").unwrap(),
            Address::parse("alice@remote.example").unwrap(),
        ],
    );
    env.recipients[0].notify = Some(Notify::NEVER);
    env.recipients[1].notify = Some("SUCCESS".parse().unwrap());
    h.engine.submit(env, "x\r\n").await.unwrap();
    let report = h.next_event_for("pbx@sender.example").await;
    assert!(matches!(report.outcome, Outcome::Delivered { .. }));
    let calls = h.transport.calls_for("pbx@sender.example");
    assert_eq!(calls.len(), 1, "one report: the success, no bounce");
    let text = String::from_utf8_lossy(&calls[0].messages[0].2);
    assert!(text.contains("Action: relayed"), "{text}");
    assert!(text.contains("Final-Recipient: rfc822; alice@remote.example"));
    assert!(!text.contains("nobody@remote.example"));
}

#[tokio::test(start_paused = true)]
async fn success_notices_are_left_to_a_next_hop_that_took_the_dsn_parameters() {
    let mut h = harness(Box::new(|_| ok()), exact_retry(), Limits::default()).await;
    h.transport
        .dsn_capable
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let mut env = Envelope::new(
        ReversePath::parse("pbx@sender.example").unwrap(),
        [Address::parse("alice@remote.example").unwrap()],
    );
    env.recipients[0].notify = Some("SUCCESS".parse().unwrap());
    h.engine.submit(env, "x\r\n").await.unwrap();
    let e = h.next_event().await;
    assert!(matches!(e.outcome, Outcome::Delivered { .. }));
    settle().await;
    tokio::time::advance(Duration::from_secs(3600)).await;
    settle().await;
    assert!(
        h.transport.calls_for("pbx@sender.example").is_empty(),
        "no \"relayed\" DSN: the next hop reports success itself"
    );
}

#[tokio::test(start_paused = true)]
async fn flush_tries_a_deferred_message_before_its_retry_time() {
    let mut h = harness(Box::new(|_| temp()), exact_retry(), Limits::default()).await;
    h.submit("pbx@sender.example", &["bob@remote.example"], "x\r\n")
        .await;
    h.next_event().await;
    tokio::time::advance(Duration::from_secs(10)).await;
    h.transport.set_rule(Box::new(|_| ok()));
    let summary = h.engine.flush(FlushFilter::All).await.unwrap();
    assert_eq!((summary.attempted, summary.completed), (1, 1));
    let calls = h.transport.calls();
    assert_eq!(calls.len(), 2);
    let gap = calls[1].at.duration_since(calls[0].at).unwrap();
    assert!(
        gap < Duration::from_secs(60),
        "flushed after {gap:?}, not at the 5-minute retry"
    );
}

#[tokio::test(start_paused = true)]
async fn a_flush_of_more_messages_than_may_be_active_at_once_sends_every_one_now() {
    let limits = Limits {
        max_active_messages: 2,
        ..Limits::default()
    };
    let mut h = harness(Box::new(|_| temp()), exact_retry(), limits).await;
    for n in 0..6 {
        h.submit(
            "pbx@sender.example",
            &[&format!("u{n}@remote.example")],
            "x\r\n",
        )
        .await;
    }
    for _ in 0..6 {
        h.next_event().await;
    }
    settle().await;
    h.transport.set_rule(Box::new(|_| ok()));
    let start = tokio::time::Instant::now();
    // The flush's rescan of the spool finds the waiting four still due in five minutes there.
    let summary = h.engine.flush(FlushFilter::All).await.unwrap();
    assert_eq!(
        (summary.attempted, summary.completed),
        (6, 6),
        "{summary:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "the last of them went after {:?}, at their retry time, not at the flush",
        start.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn a_bounce_made_during_a_flush_is_sent_before_the_flush_returns() {
    let mut h = harness(Box::new(|_| temp()), exact_retry(), Limits::default()).await;
    h.submit("pbx@sender.example", &["bob@remote.example"], "x\r\n")
        .await;
    h.next_event().await;
    // Now the recipient is refused for good: this flush makes the bounce, and sends it.
    h.transport.set_rule(Box::new(|a: &Address| {
        if a.to_string() == "bob@remote.example" {
            perm()
        } else {
            ok()
        }
    }));
    let summary = h.engine.flush(FlushFilter::All).await.unwrap();
    assert_eq!(
        (summary.attempted, summary.completed),
        (2, 2),
        "the message and its bounce: {summary:?}"
    );
    assert_eq!(
        h.transport.calls_for("pbx@sender.example").len(),
        1,
        "the bounce went out in the same run"
    );
}

#[tokio::test(start_paused = true)]
async fn flush_ignores_host_status() {
    let mut h = harness(
        Box::new(|_| unreachable()),
        exact_retry(),
        Limits::default(),
    )
    .await;
    h.submit("pbx@sender.example", &["a@down.example"], "x\r\n")
        .await;
    h.next_event().await;
    h.transport.set_rule(Box::new(|_| ok()));
    let summary = h.engine.flush(FlushFilter::All).await.unwrap();
    assert_eq!(summary.completed, 1);
    assert_eq!(
        h.transport.calls().len(),
        2,
        "the dead hop was connected to anyway"
    );
}

#[tokio::test(start_paused = true)]
async fn flush_by_recipient_domain_leaves_other_domains_alone() {
    let mut h = harness(Box::new(|_| temp()), exact_retry(), Limits::default()).await;
    h.submit("pbx@sender.example", &["a@one.example"], "x\r\n")
        .await;
    h.submit("pbx@sender.example", &["b@two.example"], "x\r\n")
        .await;
    h.next_event().await;
    h.next_event().await;
    let summary = h
        .engine
        .flush(FlushFilter::RecipientDomain("one.example".parse().unwrap()))
        .await
        .unwrap();
    assert_eq!(summary.attempted, 1);
    assert_eq!(h.transport.calls_for("a@one.example").len(), 2);
    assert_eq!(h.transport.calls_for("b@two.example").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_held_message_is_not_delivered_until_released() {
    let mut h = harness(Box::new(|_| temp()), exact_retry(), Limits::default()).await;
    let id = h
        .submit("pbx@sender.example", &["bob@remote.example"], "x\r\n")
        .await;
    h.next_event().await;
    settle().await;
    h.engine.hold(&id).await.unwrap();
    assert!(
        h.spool.load(&id).await.unwrap().state.held,
        "the hold is recorded in the spool"
    );
    tokio::time::advance(Duration::from_secs(86_400)).await;
    settle().await;
    assert_eq!(h.transport.calls().len(), 1, "no attempt while held");
    let listed = h.engine.list().await.unwrap();
    assert!(listed[0].held);
    assert_eq!(h.engine.flush(FlushFilter::All).await.unwrap().held, 1);

    h.transport.set_rule(Box::new(|_| ok()));
    h.engine.release(&id).await.unwrap();
    let e = h.next_event().await;
    assert!(matches!(e.outcome, Outcome::Delivered { .. }));
}

#[tokio::test(start_paused = true)]
async fn a_release_by_another_process_is_seen_at_the_next_rescan() {
    let limits = rescanning_every(Duration::from_secs(60));
    let mut h = harness(Box::new(|_| temp()), exact_retry(), limits).await;
    let id = h
        .submit("pbx@sender.example", &["bob@remote.example"], "x\r\n")
        .await;
    h.next_event().await;
    settle().await;
    h.engine.hold(&id).await.unwrap();
    // `postsuper -H` in another process: it writes the spool under the message's claim.
    let claim = h.spool.claim(&id).await.unwrap().expect("not busy");
    let mut state = h.spool.load(&id).await.unwrap().state;
    state.held = false;
    state.next_attempt = postrider::engine::Clock::tokio().now();
    h.spool.save_state(&id, &state).await.unwrap();
    drop(claim);
    h.transport.set_rule(Box::new(|_| ok()));
    let e = h.next_event().await;
    assert!(matches!(e.outcome, Outcome::Delivered { .. }), "{e}");
    assert!(
        h.transport.calls()[1]
            .at
            .duration_since(h.transport.calls()[0].at)
            .unwrap()
            < Duration::from_secs(300),
        "delivered after the rescan, not at the next retry"
    );
}

#[tokio::test(start_paused = true)]
async fn a_rescan_keeps_every_message_it_knew_and_learns_every_one_another_process_queued() {
    let limits = rescanning_every(Duration::from_secs(200));
    let mut h = harness(Box::new(|_| temp()), exact_retry(), limits).await;
    let rcpt = |i: usize| format!("user{i}@remote.example");
    // 600 in all, more than two of the batches a rescan hands over: half known to the engine
    // (deferred, due again at 300 s), half queued by another process (due now).
    for i in 0..300 {
        h.submit("pbx@sender.example", &[&rcpt(i)], "x\r\n").await;
    }
    for _ in 0..300 {
        h.next_event().await;
    }
    settle().await;
    let now = postrider::engine::Clock::tokio().now();
    for i in 300..600 {
        let env = Envelope::new(
            ReversePath::parse("pbx@sender.example").unwrap(),
            [Address::parse(&rcpt(i)).unwrap()],
        );
        h.spool
            .insert(&env, bytes::Bytes::from_static(b"x\r\n"), now)
            .await
            .unwrap();
    }
    h.transport.set_rule(Box::new(|_| ok()));
    let mut delivered = std::collections::HashSet::new();
    let mut take_delivered = |h: &mut Harness| {
        while let Ok(e) = h.events.try_recv() {
            if matches!(e.outcome, Outcome::Delivered { .. }) {
                delivered.insert(e.recipient.to_string());
            }
        }
        delivered.len()
    };
    tokio::time::advance(Duration::from_secs(250)).await;
    settle().await;
    assert_eq!(
        take_delivered(&mut h),
        300,
        "the rescan at 200 s found the new ones"
    );
    // Before the next rescan (400 s) could bring back any the first one dropped.
    tokio::time::advance(Duration::from_secs(100)).await;
    settle().await;
    assert_eq!(
        take_delivered(&mut h),
        600,
        "the known ones were retried at 300 s"
    );
}

#[tokio::test(start_paused = true)]
async fn a_deleted_message_leaves_the_queue_without_a_bounce() {
    let mut h = harness(Box::new(|_| temp()), exact_retry(), Limits::default()).await;
    let id = h
        .submit("pbx@sender.example", &["bob@remote.example"], "x\r\n")
        .await;
    h.next_event().await;
    settle().await;
    h.engine.delete(&id).await.unwrap();
    assert!(h.spool.is_empty());
    tokio::time::advance(Duration::from_secs(6 * 86_400)).await;
    settle().await;
    assert_eq!(h.transport.calls().len(), 1);
    assert!(matches!(
        h.engine.hold(&id).await,
        Err(postrider::engine::EngineError::NotFound(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn messages_survive_a_restart_and_are_delivered_by_the_next_engine() {
    let spool = MemorySpool::new();
    let mut h = harness_on(
        spool.clone(),
        Box::new(|_| temp()),
        exact_retry(),
        Limits::default(),
    )
    .await;
    let id = h
        .submit("pbx@sender.example", &["bob@remote.example"], "x\r\n")
        .await;
    h.next_event().await;
    h.engine.shutdown().await;
    assert!(matches!(
        h.engine
            .submit(
                Envelope::new(ReversePath::Null, [Address::parse("a@b.example").unwrap()]),
                "x"
            )
            .await,
        Err(postrider::engine::SubmitError::ShuttingDown)
    ));
    drop(h);

    let mut h2 = harness_on(
        spool.clone(),
        Box::new(|_| ok()),
        exact_retry(),
        Limits::default(),
    )
    .await;
    assert_eq!(h2.engine.startup_report().recovered, 1);
    let listed = h2.engine.list().await.unwrap();
    assert_eq!(listed[0].id, id);
    assert_eq!(
        listed[0].attempts, 1,
        "the state of the first attempt was recovered"
    );
    let e = h2.next_event().await;
    assert!(matches!(e.outcome, Outcome::Delivered { .. }));
    let gap = e.started.duration_since(e.arrival).unwrap();
    assert!(
        gap >= Duration::from_secs(300),
        "the retry time was honoured after restart: {gap:?}"
    );
    settle().await;
    assert!(spool.is_empty());
}

#[tokio::test(start_paused = true)]
async fn several_messages_for_one_next_hop_share_one_transport_call() {
    let limits = Limits {
        max_deliveries_per_hop: 1,
        ..Limits::default()
    };
    let mut h = harness(Box::new(|_| ok()), exact_retry(), limits).await;
    *h.transport.latency.lock().unwrap() = Duration::from_secs(1);
    for i in 0..10 {
        h.submit(
            "pbx@sender.example",
            &[&format!("u{i}@remote.example")],
            "x\r\n",
        )
        .await;
    }
    for _ in 0..10 {
        h.next_event().await;
    }
    let calls = h.transport.calls();
    assert!(
        calls.len() < 10,
        "batched into fewer calls: {}",
        calls.len()
    );
    assert!(calls.iter().any(|c| c.messages.len() > 1));
    let carried: usize = calls.iter().map(|c| c.messages.len()).sum();
    assert_eq!(carried, 10);
}

#[tokio::test(start_paused = true)]
async fn recipients_of_one_message_are_grouped_by_route() {
    let mut h = harness(Box::new(|_| ok()), exact_retry(), Limits::default()).await;
    h.submit(
        "pbx@sender.example",
        &["a@one.example", "b@one.example", "c@two.example"],
        "x\r\n",
    )
    .await;
    for _ in 0..3 {
        h.next_event().await;
    }
    let calls = h.transport.calls();
    assert_eq!(calls.len(), 2);
    let one = calls
        .iter()
        .find(|c| matches!(&c.route, Route::Relay { hops, .. } if hops[0].to_string() == "one.example"))
        .unwrap();
    assert_eq!(
        one.messages[0].1.len(),
        2,
        "both one.example recipients in one call"
    );
}

#[tokio::test(start_paused = true)]
async fn the_concurrency_limits_are_never_exceeded() {
    let limits = Limits {
        max_deliveries: 3,
        max_deliveries_per_hop: 2,
        max_batch_messages: 1,
        ..Limits::default()
    };
    let mut h = harness(Box::new(|_| ok()), exact_retry(), limits).await;
    *h.transport.latency.lock().unwrap() = Duration::from_secs(2);
    for i in 0..12 {
        h.submit(
            "pbx@sender.example",
            &[&format!("u{i}@same.example")],
            "x\r\n",
        )
        .await;
    }
    for _ in 0..12 {
        h.next_event().await;
    }
    assert_eq!(
        h.transport
            .max_running
            .load(std::sync::atomic::Ordering::SeqCst),
        2
    );

    let limits = Limits {
        max_deliveries: 3,
        max_deliveries_per_hop: 2,
        max_batch_messages: 1,
        ..Limits::default()
    };
    let mut h = harness(Box::new(|_| ok()), exact_retry(), limits).await;
    *h.transport.latency.lock().unwrap() = Duration::from_secs(2);
    for i in 0..12 {
        h.submit("pbx@sender.example", &[&format!("u@d{i}.example")], "x\r\n")
            .await;
    }
    for _ in 0..12 {
        h.next_event().await;
    }
    assert_eq!(
        h.transport
            .max_running
            .load(std::sync::atomic::Ordering::SeqCst),
        3
    );
}

#[tokio::test(start_paused = true)]
async fn an_error_route_bounces_or_defers_by_its_reply_code() {
    let mut h = harness(Box::new(|_| ok()), exact_retry(), Limits::default()).await;
    h.submit(
        "pbx@sender.example",
        &["x@reject.example", "y@later.example"],
        "x\r\n",
    )
    .await;
    let mut seen = std::collections::HashMap::new();
    for _ in 0..2 {
        let e = h.next_event().await;
        assert_eq!(e.mailer, postrider::engine::Agent::Error);
        seen.insert(e.recipient.to_string(), e.outcome);
    }
    assert_eq!(seen["x@reject.example"].status().to_string(), "5.7.0");
    assert!(matches!(seen["x@reject.example"], Outcome::Failed(_)));
    assert!(matches!(seen["y@later.example"], Outcome::Deferred(_)));
    let bounce = h.next_event_for("pbx@sender.example").await;
    assert!(matches!(bounce.outcome, Outcome::Delivered { .. }));
}

#[tokio::test(start_paused = true)]
async fn a_message_claimed_by_another_process_is_left_alone() {
    let spool = MemorySpool::new();
    let env = Envelope::new(
        ReversePath::parse("pbx@sender.example").unwrap(),
        [Address::parse("bob@remote.example").unwrap()],
    );
    let id = spool
        .insert(
            &env,
            bytes::Bytes::from_static(b"x\r\n"),
            std::time::SystemTime::now(),
        )
        .await
        .unwrap();
    let other = spool.claim(&id).await.unwrap().expect("first claim wins");
    let h = harness_on(
        spool.clone(),
        Box::new(|_| ok()),
        exact_retry(),
        Limits::default(),
    )
    .await;
    let summary = h.engine.flush(FlushFilter::All).await.unwrap();
    assert_eq!((summary.busy, summary.completed), (1, 0));
    assert!(h.transport.calls().is_empty());
    drop(other);
    let summary = h.engine.flush(FlushFilter::All).await.unwrap();
    assert_eq!(summary.completed, 1);
    assert_eq!(h.transport.calls().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn shutdown_lets_a_running_delivery_finish() {
    let mut h = harness(Box::new(|_| ok()), exact_retry(), Limits::default()).await;
    *h.transport.latency.lock().unwrap() = Duration::from_secs(10);
    h.submit("pbx@sender.example", &["bob@remote.example"], "x\r\n")
        .await;
    settle().await;
    assert_eq!(h.transport.calls().len(), 1, "delivery under way");
    h.engine.shutdown().await;
    let e = h.next_event().await;
    assert!(matches!(e.outcome, Outcome::Delivered { .. }));
    assert!(
        h.spool.is_empty(),
        "the outcome was recorded before shutdown returned"
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_interrupts_deliveries_after_the_grace_period_and_keeps_them_queued() {
    let limits = Limits {
        shutdown_grace: Duration::from_secs(5),
        ..Limits::default()
    };
    let mut h = harness(Box::new(|_| ok()), exact_retry(), limits).await;
    *h.transport.latency.lock().unwrap() = Duration::from_secs(3600);
    let id = h
        .submit("pbx@sender.example", &["bob@remote.example"], "x\r\n")
        .await;
    settle().await;
    let before = tokio::time::Instant::now();
    h.engine.shutdown().await;
    assert!(
        before.elapsed() < Duration::from_secs(60),
        "took {:?}",
        before.elapsed()
    );
    let e = h.next_event().await;
    assert_eq!(e.outcome.status().to_string(), "4.3.2");
    let m = h.spool.load(&id).await.unwrap();
    assert_eq!(m.state.recipients[0].status, RecipientStatus::Pending);
}

#[tokio::test(start_paused = true)]
async fn submit_refuses_messages_without_recipients_or_over_the_size_limit() {
    let limits = Limits {
        max_message_size: 100,
        ..Limits::default()
    };
    let h = harness(Box::new(|_| ok()), exact_retry(), limits).await;
    let empty = Envelope::new(ReversePath::Null, Vec::<Address>::new());
    let err = h.engine.submit(empty, "x").await.unwrap_err();
    assert!(err.to_string().contains("no recipients"), "{err}");
    let env = Envelope::new(ReversePath::Null, [Address::parse("a@b.example").unwrap()]);
    let err = h.engine.submit(env, "x".repeat(200)).await.unwrap_err();
    assert!(
        matches!(
            err,
            postrider::engine::SubmitError::TooLarge {
                size: 202,
                limit: 100
            }
        ),
        "{err:?}"
    );
    assert!(h.spool.is_empty(), "nothing refused was queued");
}

#[tokio::test(start_paused = true)]
async fn submit_normalises_line_endings_and_marks_8bit_bodies() {
    let mut h = harness(Box::new(|_| ok()), exact_retry(), Limits::default()).await;
    h.submit(
        "pbx@sender.example",
        &["bob@remote.example"],
        "Subject: caf\u{e9}\n\nline\n",
    )
    .await;
    h.next_event().await;
    let call = &h.transport.calls()[0];
    assert_eq!(
        &call.messages[0].2[..],
        "Subject: caf\u{e9}\r\n\r\nline\r\n".as_bytes()
    );
}

#[tokio::test(start_paused = true)]
async fn list_shows_each_recipient_with_its_last_reason() {
    let mut h = harness(
        Box::new(|a| {
            if a.local_part() == "slow" {
                temp()
            } else {
                ok()
            }
        }),
        exact_retry(),
        Limits::default(),
    )
    .await;
    let id = h
        .submit(
            "pbx@sender.example",
            &["slow@remote.example", "fast@remote.example"],
            "x\r\n",
        )
        .await;
    h.next_event().await;
    h.next_event().await;
    settle().await;
    let list = h.engine.list().await.unwrap();
    let m = list.iter().find(|e| e.id == id).unwrap();
    assert_eq!(m.sender.to_string(), "<pbx@sender.example>");
    assert_eq!(m.size, 3);
    assert_eq!(m.recipients[0].status, RecipientStatus::Pending);
    assert_eq!(
        m.recipients[0].last.as_ref().unwrap().text,
        "451 4.3.0 try again later"
    );
    assert_eq!(m.recipients[1].status, RecipientStatus::Delivered);
}

#[tokio::test(start_paused = true)]
async fn every_attempt_renders_as_a_sendmail_log_line() {
    let mut h = harness(
        Box::new(|_| unreachable()),
        exact_retry(),
        Limits::default(),
    )
    .await;
    let id = h
        .submit("pbx@sender.example", &["me@ourtest.com"], "x\r\n")
        .await;
    let e = h.next_event().await;
    assert_eq!(
        e.log_line(),
        format!(
            "{id}: to=<me@ourtest.com>, delay=00:00:00, xdelay=00:00:00, mailer=esmtp, \
             relay=mx.test.example. [127.0.0.1], dsn=4.4.1, stat=Deferred: Connection timed out with mx.test.example."
        )
    );
}

#[tokio::test(start_paused = true)]
async fn dropping_every_engine_handle_stops_the_engine() {
    let h = harness(Box::new(|_| ok()), exact_retry(), Limits::default()).await;
    let engine: Engine = h.engine.clone();
    let mut events = engine.subscribe();
    drop(h);
    assert!(engine.list().await.is_ok(), "a clone keeps it running");
    drop(engine);
    // The scheduler drops the event sender when it stops.
    let closed = tokio::time::timeout(Duration::from_secs(60), events.recv()).await;
    assert!(
        matches!(
            closed,
            Ok(Err(tokio::sync::broadcast::error::RecvError::Closed))
        ),
        "{closed:?}"
    );
}
