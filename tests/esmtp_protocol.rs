//! EsmtpTransport against a scripted peer: the SMTP dialogue and how every reply is classified.

mod support;
use support::esmtp;
use support::smtp_peer;

use esmtp::*;
use postrider::envelope::{BodyType, Notify, OriginalRecipient, Ret};
use postrider::{Address, Envelope, Outcome, ReversePath, Route};
use smtp_peer::{Script, ScriptedPeer};

#[tokio::test]
async fn a_message_is_delivered_in_lock_step_to_a_server_without_pipelining() {
    let peer = ScriptedPeer::start(vec![
        Script::greet("mx.test", &["8BITMIME"]).accept_one(1).quit(),
    ])
    .await;
    let m = message(&["alice@example.org"], &body("lock-step"));
    let reports = plain_transport()
        .deliver_all(&literal_route(peer.port()), std::slice::from_ref(&m))
        .await;
    assert_complete(&reports, std::slice::from_ref(&m));
    let r = report(&reports, &m, 0);
    match &r.outcome {
        Outcome::Delivered { reply } => {
            assert_eq!(reply.to_string(), "250 2.0.0 Ok: queued as SCRIPTED")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(r.remote.as_ref().unwrap().to_string(), "[127.0.0.1]");
    let logs = peer.finish().await;
    assert_eq!(logs[0].error, None, "{:#?}", logs[0]);
    assert_eq!(
        logs[0].lines,
        [
            format!("EHLO {OUR_NAME}"),
            "MAIL FROM:<pbx@example.com>".to_string(),
            "RCPT TO:<alice@example.org>".to_string(),
            "DATA".to_string(),
            "QUIT".to_string(),
        ]
    );
    assert_eq!(logs[0].messages, [body("lock-step").into_bytes()]);
}

#[tokio::test(start_paused = true)]
async fn with_pipelining_mail_rcpt_and_data_go_out_before_any_reply() {
    // The server reads all three commands before answering: a lock-step client would wait
    // for the MAIL reply forever (and time out).
    let peer = ScriptedPeer::start(vec![
        Script::greet("mx.test", &["PIPELINING"])
            .expect("MAIL FROM:<pbx@example.com>")
            .expect("RCPT TO:<a@example.org>")
            .expect("RCPT TO:<b@example.org>")
            .expect("DATA")
            .send("250 2.1.0 Ok\n250 2.1.5 Ok\n250 2.1.5 Ok\n354 go ahead")
            .data()
            .send("250 2.0.0 queued")
            .quit(),
    ])
    .await;
    let m = message(&["a@example.org", "b@example.org"], &body("pipelined"));
    let reports = plain_transport()
        .deliver_all(&literal_route(peer.port()), std::slice::from_ref(&m))
        .await;
    assert_delivered(report(&reports, &m, 0));
    assert_delivered(report(&reports, &m, 1));
    let logs = peer.finish().await;
    assert_eq!(logs[0].error, None);
    assert_eq!(logs[0].messages.len(), 1);
}

#[tokio::test]
async fn mixed_recipient_replies_give_each_recipient_its_own_outcome() {
    let peer = ScriptedPeer::start(vec![
        Script::greet("mx.test", &["PIPELINING", "ENHANCEDSTATUSCODES"])
            .expect("MAIL")
            .expect("RCPT TO:<ok@")
            .expect("RCPT TO:<gone@")
            .expect("RCPT TO:<full@")
            .expect("DATA")
            .send(
                "250 2.1.0 Ok\n250 2.1.5 Ok\n550 5.1.1 <gone@example.org>: User unknown\n\
                 452 4.2.2 Mailbox full\n354 go ahead",
            )
            .data()
            .send("250 2.0.0 Ok: queued as ABC")
            .quit(),
    ])
    .await;
    let m = message(
        &["ok@example.org", "gone@example.org", "full@example.org"],
        &body("mixed"),
    );
    let reports = plain_transport()
        .deliver_all(&literal_route(peer.port()), std::slice::from_ref(&m))
        .await;
    assert_complete(&reports, std::slice::from_ref(&m));
    assert_delivered(report(&reports, &m, 0));
    assert_failed(
        report(&reports, &m, 1),
        "5.1.1",
        "550 5.1.1 <gone@example.org>: User unknown",
    );
    assert_deferred(report(&reports, &m, 2), "4.2.2", "452 4.2.2 Mailbox full");
    assert_eq!(peer.finish().await[0].error, None);
}

#[tokio::test]
async fn when_no_recipient_is_accepted_no_data_is_sent() {
    let peer = ScriptedPeer::start(vec![
        Script::greet("mx.test", &[])
            .on("MAIL", "250 2.1.0 Ok")
            .on("RCPT", "550 5.1.1 no such user")
            .on("RCPT", "450 4.7.1 greylisted, try later")
            .on("QUIT", "221 bye")
            .close(),
    ])
    .await;
    let m = message(&["x@example.org", "y@example.org"], &body("nobody"));
    let reports = plain_transport()
        .deliver_all(&literal_route(peer.port()), std::slice::from_ref(&m))
        .await;
    assert_failed(report(&reports, &m, 0), "5.1.1", "550 5.1.1 no such user");
    assert_deferred(
        report(&reports, &m, 1),
        "4.7.1",
        "450 4.7.1 greylisted, try later",
    );
    let logs = peer.finish().await;
    assert_eq!(logs[0].error, None, "{:#?}", logs[0]);
    assert!(
        !logs[0].lines.iter().any(|l| l == "DATA"),
        "{:?}",
        logs[0].lines
    );
}

#[tokio::test]
async fn a_pipelined_data_accepted_without_recipients_gets_an_empty_message() {
    let peer = ScriptedPeer::start(vec![
        Script::greet("mx.test", &["PIPELINING"])
            .expect("MAIL")
            .expect("RCPT")
            .expect("DATA")
            .send("250 Ok\n550 5.1.1 unknown\n354 go ahead")
            .data()
            .send("554 5.5.1 no valid recipients")
            .quit(),
    ])
    .await;
    let m = message(&["x@example.org"], &body("empty"));
    let reports = plain_transport()
        .deliver_all(&literal_route(peer.port()), std::slice::from_ref(&m))
        .await;
    assert_failed(report(&reports, &m, 0), "5.1.1", "550 5.1.1 unknown");
    let logs = peer.finish().await;
    assert_eq!(logs[0].error, None, "{:#?}", logs[0]);
    assert_eq!(logs[0].messages, [Vec::<u8>::new()]);
}

#[tokio::test]
async fn a_permanent_refusal_of_mail_from_fails_every_recipient() {
    let peer = ScriptedPeer::start(vec![
        Script::greet("mx.test", &[])
            .on("MAIL", "553 5.7.1 sender rejected")
            .quit(),
    ])
    .await;
    let m = message(&["a@example.org", "b@example.org"], &body("refused"));
    let reports = plain_transport()
        .deliver_all(&literal_route(peer.port()), std::slice::from_ref(&m))
        .await;
    for i in 0..2 {
        assert_failed(
            report(&reports, &m, i),
            "5.7.1",
            "553 5.7.1 sender rejected",
        );
    }
    assert_eq!(peer.finish().await[0].error, None);
}

#[tokio::test]
async fn a_temporary_refusal_of_mail_from_defers_every_recipient() {
    let peer = ScriptedPeer::start(vec![
        Script::greet("mx.test", &[])
            .on("MAIL", "451 4.3.0 try again")
            .quit(),
    ])
    .await;
    let m = message(&["a@example.org", "b@example.org"], &body("later"));
    let reports = plain_transport()
        .deliver_all(&literal_route(peer.port()), std::slice::from_ref(&m))
        .await;
    for i in 0..2 {
        assert_deferred(report(&reports, &m, i), "4.3.0", "451 4.3.0 try again");
    }
    assert_eq!(peer.finish().await[0].error, None);
}

#[tokio::test]
async fn a_refused_data_command_applies_to_the_accepted_recipients_only() {
    let peer = ScriptedPeer::start(vec![
        Script::greet("mx.test", &[])
            .on("MAIL", "250 Ok")
            .on("RCPT", "250 Ok")
            .on("RCPT", "550 5.1.1 unknown")
            .on("DATA", "554 5.7.0 transaction failed")
            .on("QUIT", "221 bye")
            .close(),
    ])
    .await;
    let m = message(&["a@example.org", "b@example.org"], &body("data"));
    let reports = plain_transport()
        .deliver_all(&literal_route(peer.port()), std::slice::from_ref(&m))
        .await;
    assert_failed(
        report(&reports, &m, 0),
        "5.7.0",
        "554 5.7.0 transaction failed",
    );
    assert_failed(report(&reports, &m, 1), "5.1.1", "550 5.1.1 unknown");
    assert_eq!(peer.finish().await[0].error, None);
}

#[tokio::test]
async fn replies_to_the_end_of_data_decide_delivery_deferral_or_failure() {
    for (reply, expect) in [
        ("451 4.3.0 queue file write error", "deferred"),
        ("552 5.3.4 message too big for me", "failed"),
    ] {
        let peer = ScriptedPeer::start(vec![
            Script::greet("mx.test", &[])
                .on("MAIL", "250 Ok")
                .on("RCPT", "250 Ok")
                .on("DATA", "354 go")
                .data()
                .send(reply)
                .quit(),
        ])
        .await;
        let m = message(&["a@example.org"], &body("eod"));
        let reports = plain_transport()
            .deliver_all(&literal_route(peer.port()), std::slice::from_ref(&m))
            .await;
        let r = report(&reports, &m, 0);
        let status = reply.split(' ').nth(1).unwrap();
        if expect == "deferred" {
            assert_deferred(r, status, reply);
        } else {
            assert_failed(r, status, reply);
        }
        assert_eq!(peer.finish().await[0].error, None);
    }
}

#[tokio::test]
async fn a_greeting_refusal_is_reported_with_the_servers_words_and_answered_with_quit() {
    let peer = ScriptedPeer::start(vec![
        Script::new()
            .send("554 5.7.1 mx.test: your IP is on a blocklist")
            .on("QUIT", "221 bye")
            .close(),
    ])
    .await;
    let m = message(&["a@example.org"], &body("blocked"));
    let reports = plain_transport()
        .deliver_all(&literal_route(peer.port()), std::slice::from_ref(&m))
        .await;
    let r = report(&reports, &m, 0);
    // Postfix's smtp_skip_5xx_greeting: the server is skipped and the mail waits, never bounced.
    assert_deferred(
        r,
        "4.7.1",
        &format!(
            "{} refused to talk to me: 554 5.7.1 mx.test: your IP is on a blocklist (this \
             server was skipped; the mail stays queued)",
            lit(peer.port())
        ),
    );
    assert_eq!(r.remote.as_ref().unwrap().addr, Some(LOCALHOST));
    assert_eq!(peer.finish().await[0].lines, ["QUIT"]);
}

#[tokio::test]
async fn a_busy_greeting_defers() {
    let peer = ScriptedPeer::start(vec![
        Script::new().send("421 4.3.2 mx.test too busy").drain(),
    ])
    .await;
    let m = message(&["a@example.org"], &body("busy"));
    let reports = plain_transport()
        .deliver_all(&literal_route(peer.port()), std::slice::from_ref(&m))
        .await;
    assert_deferred(
        report(&reports, &m, 0),
        "4.3.2",
        &format!(
            "{} refused to talk to me: 421 4.3.2 mx.test too busy",
            lit(peer.port())
        ),
    );
    // 421 means the server is closing: no QUIT is sent.
    assert_eq!(peer.finish().await[0].lines, Vec::<String>::new());
}

#[tokio::test]
async fn a_refused_ehlo_falls_back_to_helo() {
    let peer = ScriptedPeer::start(vec![
        Script::new()
            .send("220 old.test SMTP")
            .on("EHLO", "502 5.5.2 command not recognized")
            .on(&format!("HELO {OUR_NAME}"), "250 old.test")
            .accept_one(1)
            .quit(),
    ])
    .await;
    let m = message(&["a@example.org"], &body("helo"));
    let reports = plain_transport()
        .deliver_all(&literal_route(peer.port()), std::slice::from_ref(&m))
        .await;
    assert_delivered(report(&reports, &m, 0));
    assert_eq!(peer.finish().await[0].error, None);
}

#[tokio::test]
async fn ehlo_and_helo_both_refused_fails_and_a_temporary_ehlo_refusal_defers() {
    let peer = ScriptedPeer::start(vec![
        Script::new()
            .send("220 picky.test")
            .on("EHLO", "550 5.7.1 go away")
            .on("HELO", "550 5.7.1 still no")
            .on("QUIT", "221 bye")
            .close(),
        Script::new()
            .send("220 picky.test")
            .on("EHLO", "450 4.7.1 not now")
            .on("QUIT", "221 bye")
            .close(),
    ])
    .await;
    let t = plain_transport();
    let m = message(&["a@example.org"], &body("helo"));
    let reports = t
        .deliver_all(&literal_route(peer.port()), std::slice::from_ref(&m))
        .await;
    assert_failed(
        report(&reports, &m, 0),
        "5.7.1",
        &format!(
            "{} refused EHLO and HELO: 550 5.7.1 still no",
            lit(peer.port())
        ),
    );
    let reports = t
        .deliver_all(&literal_route(peer.port()), std::slice::from_ref(&m))
        .await;
    assert_deferred(
        report(&reports, &m, 0),
        "4.7.1",
        &format!("{} refused EHLO: 450 4.7.1 not now", lit(peer.port())),
    );
    let logs = peer.finish().await;
    assert!(logs.iter().all(|l| l.error.is_none()), "{logs:#?}");
}

#[tokio::test]
async fn too_many_recipients_are_sent_again_in_a_second_transaction() {
    let peer = ScriptedPeer::start(vec![
        Script::greet("mx.test", &["PIPELINING"])
            .expect("MAIL")
            .expect("RCPT TO:<a@")
            .expect("RCPT TO:<b@")
            .expect("RCPT TO:<c@")
            .expect("DATA")
            .send("250 Ok\n250 Ok\n250 Ok\n452 4.5.3 Too many recipients\n354 go")
            .data()
            .send("250 2.0.0 first part")
            .expect("MAIL")
            .expect("RCPT TO:<c@")
            .expect("DATA")
            .send("250 Ok\n250 Ok\n354 go")
            .data()
            .send("250 2.0.0 second part")
            .quit(),
    ])
    .await;
    let m = message(
        &["a@example.org", "b@example.org", "c@example.org"],
        &body("many"),
    );
    let reports = plain_transport()
        .deliver_all(&literal_route(peer.port()), std::slice::from_ref(&m))
        .await;
    assert_complete(&reports, std::slice::from_ref(&m));
    for i in 0..3 {
        assert_delivered(report(&reports, &m, i));
    }
    let logs = peer.finish().await;
    assert_eq!(logs[0].error, None, "{:#?}", logs[0]);
    assert_eq!(logs[0].messages.len(), 2);
}

#[tokio::test]
async fn too_many_recipients_without_progress_are_deferred() {
    let peer = ScriptedPeer::start(vec![
        Script::greet("mx.test", &[])
            .on("MAIL", "250 Ok")
            .on("RCPT", "452 4.5.3 Too many recipients")
            .on("RSET", "250 Ok")
            .accept_one(1)
            .quit(),
    ])
    .await;
    let m = message(&["a@example.org", "b@example.org"], &body("none"));
    let other = message(&["z@example.org"], &body("next"));
    let batch = [m.clone(), other.clone()];
    let reports = plain_transport()
        .deliver_all(&literal_route(peer.port()), &batch)
        .await;
    for i in 0..2 {
        assert_deferred(
            report(&reports, &m, i),
            "4.5.3",
            "452 4.5.3 Too many recipients",
        );
    }
    assert_delivered(report(&reports, &other, 0));
    let logs = peer.finish().await;
    assert_eq!(logs[0].error, None, "{:#?}", logs[0]);
    // b was never offered: the server had already said it would take no more.
    assert!(
        !logs[0].lines.iter().any(|l| l.contains("<b@")),
        "{:?}",
        logs[0].lines
    );
}

#[tokio::test]
async fn several_messages_share_one_session_with_rset_only_after_an_aborted_transaction() {
    let peer = ScriptedPeer::start(vec![
        Script::greet("mx.test", &[])
            .accept_one(1)
            .on("MAIL", "250 Ok")
            .on("RCPT", "550 5.1.1 unknown")
            .on("RSET", "250 2.0.0 Ok")
            .accept_one(2)
            .quit(),
    ])
    .await;
    let batch = [
        message(&["a@example.org"], &body("one")),
        message(&["nobody@example.org"], &body("two")),
        message(&["b@example.org", "c@example.org"], &body("three")),
    ];
    let reports = plain_transport()
        .deliver_all(&literal_route(peer.port()), &batch)
        .await;
    assert_complete(&reports, &batch);
    assert_delivered(report(&reports, &batch[0], 0));
    assert_failed(report(&reports, &batch[1], 0), "5.1.1", "550 5.1.1 unknown");
    assert_delivered(report(&reports, &batch[2], 0));
    assert_delivered(report(&reports, &batch[2], 1));
    let logs = peer.finish().await;
    assert_eq!(logs.len(), 1, "one connection for the whole batch");
    assert_eq!(logs[0].error, None, "{:#?}", logs[0]);
    assert_eq!(
        logs[0].messages,
        [body("one").into_bytes(), body("three").into_bytes()]
    );
}

#[tokio::test]
async fn a_message_larger_than_the_servers_size_fails_without_being_sent() {
    let peer = ScriptedPeer::start(vec![
        Script::greet("mx.test", &["SIZE 100"]).accept_one(1).quit(),
    ])
    .await;
    let big = message(&["a@example.org"], &"x".repeat(1000));
    let small = message(&["b@example.org"], "tiny\r\n");
    let reports = plain_transport()
        .deliver_all(&literal_route(peer.port()), &[big.clone(), small.clone()])
        .await;
    assert_failed(
        report(&reports, &big, 0),
        "5.3.4",
        &format!(
            "message of 1000 bytes exceeds the limit of 100 bytes announced by {}",
            lit(peer.port())
        ),
    );
    assert_delivered(report(&reports, &small, 0));
    let logs = peer.finish().await;
    assert_eq!(logs[0].lines[1], "MAIL FROM:<pbx@example.com> SIZE=6");
}

#[tokio::test]
async fn dsn_8bitmime_and_smtputf8_parameters_are_sent_when_offered() {
    let peer = ScriptedPeer::start(vec![
        Script::greet("mx.test", &["DSN", "8BITMIME", "SMTPUTF8", "SIZE 0"])
            .accept_one(1)
            .quit(),
    ])
    .await;
    let mut env = Envelope::new(
        ReversePath::parse("pbx@example.com").unwrap(),
        [Address::parse("jösé@example.org").unwrap()],
    );
    env.ret = Some(Ret::Hdrs);
    env.set_envid("Q+1").unwrap();
    env.body = BodyType::EightBitMime;
    env.recipients[0].notify = Some(Notify::NEVER);
    env.recipients[0].orcpt = Some(OriginalRecipient::rfc822(&env.recipients[0].address));
    let m = delivery(env, "body\r\n");
    let reports = plain_transport()
        .deliver_all(&literal_route(peer.port()), std::slice::from_ref(&m))
        .await;
    assert_delivered(report(&reports, &m, 0));
    let logs = peer.finish().await;
    assert_eq!(
        logs[0].lines[1],
        "MAIL FROM:<pbx@example.com> SIZE=6 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=Q+2B1"
    );
    assert_eq!(
        logs[0].lines[2],
        "RCPT TO:<jösé@example.org> NOTIFY=NEVER ORCPT=rfc822;j+C3+B6s+C3+A9@example.org"
    );
}

#[tokio::test]
async fn a_message_needing_smtputf8_fails_at_a_server_without_it() {
    let peer = ScriptedPeer::start(vec![Script::greet("mx.test", &["8BITMIME"]).quit()]).await;
    let m = message(&["jösé@example.org"], "body\r\n");
    let reports = plain_transport()
        .deliver_all(&literal_route(peer.port()), std::slice::from_ref(&m))
        .await;
    assert_failed(
        report(&reports, &m, 0),
        "5.6.7",
        &format!(
            "{} does not support SMTPUTF8, which this message needs (non-ASCII address)",
            lit(peer.port())
        ),
    );
    peer.finish().await;
}

#[tokio::test]
async fn leading_dots_are_stuffed_and_a_missing_final_crlf_is_added() {
    let peer = ScriptedPeer::start(vec![Script::greet("mx.test", &[]).accept_one(1).quit()]).await;
    let text = "Subject: dots\r\n\r\n.\r\n..two\r\n.three\r\nlast line without newline";
    let m = message(&["a@example.org"], text);
    let reports = plain_transport()
        .deliver_all(&literal_route(peer.port()), std::slice::from_ref(&m))
        .await;
    assert_delivered(report(&reports, &m, 0));
    let logs = peer.finish().await;
    assert_eq!(
        String::from_utf8(logs[0].messages[0].clone()).unwrap(),
        format!("{text}\r\n")
    );
}

#[tokio::test]
async fn a_server_closing_with_421_mid_transaction_defers_and_the_rest_wait() {
    let peer = ScriptedPeer::start(vec![
        Script::greet("mx.test", &[])
            .on("MAIL", "250 Ok")
            .on("RCPT", "421 4.3.2 shutting down")
            .close(),
    ])
    .await;
    let first = message(&["a@example.org"], &body("one"));
    let second = message(&["b@example.org"], &body("two"));
    let reports = plain_transport()
        .deliver_all(
            &literal_route(peer.port()),
            &[first.clone(), second.clone()],
        )
        .await;
    assert_deferred(
        report(&reports, &first, 0),
        "4.3.2",
        "421 4.3.2 shutting down",
    );
    // The second message found no other host: it shares the session's fate.
    assert_deferred(
        report(&reports, &second, 0),
        "4.3.2",
        &format!("{} said: 421 4.3.2 shutting down", lit(peer.port())),
    );
    peer.finish().await;
}

#[tokio::test]
async fn local_and_reject_routes_are_not_delivered_over_smtp() {
    let t = plain_transport();
    let m = message(&["a@example.org"], &body("misrouted"));
    let reports = t
        .deliver_all(&Route::local(), std::slice::from_ref(&m))
        .await;
    assert_deferred(
        report(&reports, &m, 0),
        "4.3.5",
        "the ESMTP transport was given a local route; this is a routing or engine error",
    );
    let reply = postrider::Reply::new(550, Some("5.7.0".parse().unwrap()), "not here").unwrap();
    let reports = t
        .deliver_all(&Route::Reject { reply }, std::slice::from_ref(&m))
        .await;
    assert_failed(report(&reports, &m, 0), "5.7.0", "550 5.7.0 not here");
}

#[tokio::test]
async fn a_temporary_refusal_of_data_defers_the_accepted_recipients_and_resets() {
    let peer = ScriptedPeer::start(vec![
        Script::greet("mx.test", &["PIPELINING"])
            .expect("MAIL")
            .expect("RCPT")
            .expect("DATA")
            .send("250 Ok\n250 Ok\n451 4.3.0 temporary failure at DATA")
            .on("RSET", "250 2.0.0 Ok")
            .expect("MAIL")
            .expect("RCPT")
            .expect("DATA")
            .send("250 Ok\n250 Ok\n354 go")
            .data()
            .send("250 2.0.0 queued")
            .quit(),
    ])
    .await;
    let first = message(&["a@example.org"], &body("first"));
    let second = message(&["b@example.org"], &body("second"));
    let reports = plain_transport()
        .deliver_all(
            &literal_route(peer.port()),
            &[first.clone(), second.clone()],
        )
        .await;
    assert_deferred(
        report(&reports, &first, 0),
        "4.3.0",
        "451 4.3.0 temporary failure at DATA",
    );
    assert_delivered(report(&reports, &second, 0));
    assert_eq!(peer.finish().await[0].error, None);
}
