//! The library's SMTP server (`postrider::server`) over real TCP on loopback, talked to line by
//! line: the command sequence, ESMTP extensions, DSN parameters reaching the envelope, BDAT,
//! smuggling, the limits, spool trouble, shutdown and the slow-client deadlines.

mod support;

use std::sync::Arc;
use std::time::Duration;

use postrider::server::{ServerLimits, ServerTimeouts};
use postrider::spool::FsSpool;
use support::engine::temp;
use support::server::{Client, Options, REFUSED_DOMAIN, TestServer, captured_log, code};
use support::tmpfs::Tmpfs;

async fn started() -> TestServer {
    TestServer::start(Options::default()).await
}

#[tokio::test]
async fn commands_out_of_order_or_malformed_get_the_right_codes() {
    // More mistakes than the default limit of 20 are made on purpose here.
    let limits = ServerLimits {
        max_errors: 100,
        ..ServerLimits::default()
    };
    let s = TestServer::start(Options {
        limits,
        ..Options::default()
    })
    .await;
    let (mut c, greeting) = Client::connect(s.addr).await;
    assert!(
        greeting.starts_with("220 mail.test.example ESMTP"),
        "{greeting}"
    );
    assert_eq!(c.code("MAIL FROM:<a@example.test>").await, "503 5.5.1");
    assert_eq!(c.code("EHLO").await, "501 5.5.4");
    assert_eq!(c.code("HELO client.example").await, "250 mail.");
    assert_eq!(
        c.code("MAIL FROM:<a@example.test> SIZE=10").await,
        "555 5.5.4"
    );
    let ehlo = c.command("EHLO client.example").await;
    for ext in [
        "PIPELINING",
        "SIZE 10240000",
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
        "SMTPUTF8",
        "DSN",
        "CHUNKING",
    ] {
        assert!(
            ehlo.lines().any(|l| &l[4..] == ext),
            "{ext} missing from {ehlo}"
        );
    }
    // No certificate, no password file: neither is offered.
    assert!(
        !ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"),
        "{ehlo}"
    );
    assert_eq!(c.code("RCPT TO:<b@example.org>").await, "503 5.5.1");
    assert_eq!(c.code("DATA").await, "503 5.5.1");
    assert_eq!(c.code("STARTTLS").await, "502 5.5.1");
    assert_eq!(c.code("AUTH PLAIN AGFAYg==").await, "502 5.5.1");
    assert_eq!(c.code("FROB").await, "500 5.5.2");
    assert_eq!(c.code("MAIL FROM:a@example.test").await, "501 5.5.4");
    assert_eq!(
        c.code("MAIL FROM:<a@example.test> SIZE=99999999").await,
        "552 5.3.4"
    );
    assert_eq!(
        c.code("MAIL FROM:<a@example.test> XFOO=1").await,
        "555 5.5.4"
    );
    assert_eq!(c.code("MAIL FROM:<a@@example.test>").await, "553 5.1.7");
    assert_eq!(
        c.code("MAIL FROM:<j\u{f6}rg@example.test>").await,
        "553 5.6.7"
    );
    assert_eq!(c.code("MAIL FROM:<>").await, "250 2.1.0");
    assert_eq!(c.code("MAIL FROM:<>").await, "503 5.5.1");
    assert_eq!(c.code("DATA").await, "554 5.5.1");
    assert_eq!(
        c.code("RCPT TO:<b@example.org> NOTIFY=SOMETIMES").await,
        "501 5.5.4"
    );
    assert_eq!(c.code("RCPT TO:<nobody>").await, "553 5.1.3");
    assert_eq!(
        c.code(&format!("RCPT TO:<x@{REFUSED_DOMAIN}>")).await,
        "550 5.7.0"
    );
    assert_eq!(c.code("NOOP").await, "250 2.0.0");
    assert_eq!(c.code("VRFY x").await, "252 2.5.2");
    assert_eq!(c.code("HELP").await, "214 2.0.0");
    assert_eq!(c.code("RSET").await, "250 2.0.0");
    assert_eq!(c.code("RCPT TO:<b@example.org>").await, "503 5.5.1");
    let long = format!("NOOP {}", "x".repeat(5000));
    assert_eq!(c.code(&long).await, "500 5.5.6");
    assert_eq!(c.code("QUIT").await, "221 2.0.0");
    assert!(c.closed().await);
}

#[tokio::test]
async fn a_pipelined_transaction_with_dsn_parameters_reaches_the_engine_intact() {
    let s = started().await;
    // Deferred, so the message stays in the spool where its envelope can be read.
    s.transport.set_rule(Box::new(|_| temp()));
    let (mut c, _) = Client::connect(s.addr).await;
    c.command("EHLO client.example").await;
    // Everything in one write, as a PIPELINING client sends it.
    c.send(
        "MAIL FROM:<pbx@example.test> RET=HDRS ENVID=QID+2B7 BODY=8BITMIME\r\n\
         RCPT TO:<alice@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;alice+2Bx@example.org\r\n\
         RCPT TO:<bob@example.org> NOTIFY=NEVER\r\n\
         DATA\r\n",
    )
    .await;
    assert_eq!(code(&c.reply().await), "250 2.1.0");
    assert_eq!(code(&c.reply().await), "250 2.1.5");
    assert_eq!(code(&c.reply().await), "250 2.1.5");
    assert!(c.reply().await.starts_with("354 "));
    let queued = c.command("Subject: test\r\n\r\n..leading dot\r\n.").await;
    assert!(queued.starts_with("250 2.0.0 OK queued as "), "{queued}");
    let msgs = s.delivered(1).await;
    let (from, to, body) = &msgs[0];
    assert_eq!(from, "<pbx@example.test>");
    assert_eq!(to, &["alice@example.org", "bob@example.org"]);
    assert!(body.starts_with("Received: from client.example (unknown [127.0.0.1])\r\n\tby mail.test.example (postrider) with ESMTP;\r\n"), "{body}");
    assert!(
        body.ends_with("Subject: test\r\n\r\n.leading dot\r\n"),
        "{body}"
    );
    // The DSN parameters are in the envelope the engine keeps.
    let stored = s.stored_envelopes().await;
    let env = &stored[0];
    assert_eq!(env.ret, Some(postrider::Ret::Hdrs));
    assert_eq!(env.envid.as_deref(), Some("QID+7"));
    let n = env.recipients[0].notify.unwrap();
    assert!(n.success && n.failure && !n.delay);
    assert_eq!(
        env.recipients[0].orcpt.as_ref().unwrap().address,
        "alice+x@example.org"
    );
    assert!(env.recipients[1].notify.unwrap().is_never());
}

#[tokio::test]
async fn bdat_chunks_make_one_message_and_bytes_are_taken_as_they_are() {
    let s = started().await;
    let (mut c, _) = Client::connect(s.addr).await;
    c.command("EHLO client.example").await;
    c.command("MAIL FROM:<a@example.test>").await;
    c.command("RCPT TO:<b@example.org>").await;
    let first = "Subject: chunks\r\n\r\n.a dot stays\r\n";
    c.send(&format!("BDAT {}\r\n{first}", first.len())).await;
    assert_eq!(
        c.reply().await,
        format!("250 2.0.0 {} octets received", first.len())
    );
    let last = "end\r\n";
    c.send(&format!("BDAT {} LAST\r\n{last}", last.len())).await;
    assert!(c.reply().await.starts_with("250 2.0.0 OK queued as "));
    // DATA after BDAT in one transaction, and BDAT without a transaction: refused, but the
    // chunk is still read so the next command is found.
    c.send("BDAT 5\r\nRSET\rRSET\r\nNOOP\r\n").await;
    assert_eq!(code(&c.reply().await), "503 5.5.1");
    assert_eq!(code(&c.reply().await), "250 2.0.0");
    let msgs = s.delivered(1).await;
    assert!(
        msgs[0]
            .2
            .ends_with("Subject: chunks\r\n\r\n.a dot stays\r\nend\r\n"),
        "{}",
        msgs[0].2
    );
}

#[tokio::test]
async fn a_bare_lf_dot_does_not_end_the_message() {
    let s = started().await;
    let (mut c, _) = Client::connect(s.addr).await;
    c.command("EHLO client.example").await;
    c.command("MAIL FROM:<a@example.test>").await;
    c.command("RCPT TO:<b@example.org>").await;
    c.command("DATA").await;
    c.send("Subject: one\r\n\r\nx\n.\nMAIL FROM:<evil@example.test>\nRCPT TO:<victim@example.org>\nDATA\nsmuggled\r\n").await;
    let r = c.command(".").await;
    assert!(r.starts_with("250 2.0.0 OK queued"), "{r}");
    let msgs = s.delivered(1).await;
    assert_eq!(msgs.len(), 1);
    assert!(msgs[0].2.contains("MAIL FROM:<evil@example.test>"));
    assert_eq!(msgs[0].1, ["b@example.org"]);
}

#[tokio::test]
async fn size_hops_and_too_many_recipients_are_refused_and_the_session_goes_on() {
    let limits = ServerLimits {
        max_message_size: 1000,
        max_recipients: 2,
        ..ServerLimits::default()
    };
    let s = TestServer::start(Options {
        limits,
        ..Options::default()
    })
    .await;
    let (mut c, _) = Client::connect(s.addr).await;
    let ehlo = c.command("EHLO client.example").await;
    assert!(ehlo.contains("250-SIZE 1000"), "{ehlo}");
    c.command("MAIL FROM:<a@example.test>").await;
    c.command("RCPT TO:<b@example.org>").await;
    c.command("RCPT TO:<c@example.org>").await;
    assert_eq!(c.code("RCPT TO:<d@example.org>").await, "452 4.5.3");
    c.command("DATA").await;
    c.send(&"x".repeat(2000)).await;
    assert_eq!(c.code("\r\n.").await, "552 5.3.4");
    c.command("MAIL FROM:<a@example.test>").await;
    c.command("RCPT TO:<b@example.org>").await;
    c.command("DATA").await;
    c.send(&"Received: from x\r\n".repeat(50)).await;
    assert_eq!(c.code("\r\n.").await, "554 5.4.6");
    c.command("MAIL FROM:<a@example.test>").await;
    c.command("RCPT TO:<b@example.org>").await;
    c.command("DATA").await;
    assert!(
        c.command("Subject: fine\r\n\r\nok\r\n.")
            .await
            .starts_with("250 2.0.0 OK queued")
    );
    assert_eq!(s.delivered(1).await.len(), 1);
}

#[tokio::test]
async fn a_client_that_keeps_making_mistakes_is_shown_the_door() {
    let s = started().await;
    let (mut c, _) = Client::connect(s.addr).await;
    for _ in 0..20 {
        assert!(c.command("FROB").await.starts_with("500 "));
    }
    let last = c.reply().await;
    assert!(last.starts_with("421 4.7.0 Too many errors"), "{last}");
    assert!(c.closed().await);
}

async fn submit_one(s: &TestServer) -> String {
    let (mut c, _) = Client::connect(s.addr).await;
    c.command("EHLO client.example").await;
    c.command("MAIL FROM:<a@example.test>").await;
    c.command("RCPT TO:<b@example.org>").await;
    c.command("DATA").await;
    c.command("Subject: x\r\n\r\nbody\r\n.").await
}

#[tokio::test]
async fn a_full_spool_answers_452_and_a_read_only_one_451_never_250() {
    let log = captured_log();
    for read_only in [false, true] {
        let fs = Tmpfs::mount("256k");
        let spool = Arc::new(FsSpool::open(fs.path().join("spool")).unwrap());
        let s = TestServer::start_with_spool(spool.clone(), Options::default()).await;
        // Deferred, so accepted messages stay in the spool.
        s.transport.set_rule(Box::new(|_| temp()));
        // (A remount needs no file open for writing: the read-only case queues nothing first.)
        if read_only {
            fs.remount_read_only();
        } else {
            assert!(submit_one(&s).await.starts_with("250 2.0.0 OK queued"));
            fs.fill();
        }
        let reply = submit_one(&s).await;
        let want = if read_only { "451 4.3.0" } else { "452 4.3.1" };
        assert_eq!(code(&reply), want, "read_only={read_only}: {reply}");
        // The log says why once, in words that do not repeat themselves.
        let text = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
        assert!(
            text.contains("from=<a@example.test>: message not queued: "),
            "{text}"
        );
        assert!(!text.contains("not queued: message not queued"), "{text}");
        use postrider::spool::Spool;
        assert_eq!(
            spool.scan().await.unwrap().messages.len(),
            usize::from(!read_only)
        );
        let engine = s.engine.clone();
        s.shutdown().await;
        engine.shutdown().await;
        drop(spool);
    }
}

#[tokio::test]
async fn shutdown_says_421_to_waiting_clients_and_serve_returns() {
    let s = started().await;
    let (mut c, _) = Client::connect(s.addr).await;
    c.command("EHLO client.example").await;
    let addr = s.addr;
    s.shutdown().await;
    let r = c.reply().await;
    assert!(
        r.starts_with("421 4.3.2 mail.test.example Service shutting down"),
        "{r}"
    );
    assert!(c.closed().await);
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still listening"
    );
}

#[tokio::test]
async fn connections_beyond_the_per_client_limit_get_421_and_others_still_get_in() {
    let limits = ServerLimits {
        max_connections_per_client: 3,
        ..ServerLimits::default()
    };
    let s = TestServer::start(Options {
        limits,
        ..Options::default()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let (c, g) = Client::connect(s.addr).await;
        assert!(g.starts_with("220 "));
        held.push(c);
    }
    let (_, refused) = Client::connect(s.addr).await;
    assert!(refused.starts_with("421 4.7.0"), "{refused}");
    let (_, other) = Client::connect_from("127.0.0.2".parse().unwrap(), s.addr).await;
    assert!(other.starts_with("220 "), "{other}");
    drop(held);
    // The slots come back when the sessions end.
    for _ in 0..200 {
        if s.server.connections() <= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (_, again) = Client::connect(s.addr).await;
    assert!(again.starts_with("220 "), "{again}");
}

/// Short deadlines so the test runs in seconds: 1 s for DATA plus 1 s per 500 octets.
fn quick() -> ServerTimeouts {
    ServerTimeouts {
        command: Duration::from_secs(2),
        data: Duration::from_secs(1),
        ..ServerTimeouts::default()
    }
}

#[tokio::test]
async fn trickling_clients_are_dropped_at_the_deadline_while_others_are_served() {
    let s = TestServer::start(Options {
        timeouts: quick(),
        ..Options::default()
    })
    .await;
    let addr = s.addr;
    // 256 clients from 64 source addresses sending one octet every 100 ms inside DATA: each
    // would keep a timer that restarts on every octet alive for ever.
    let mut tricklers = Vec::new();
    for i in 0..256u32 {
        let source = format!("127.0.1.{}", 1 + i % 64).parse().unwrap();
        tricklers.push(tokio::spawn(async move {
            let (mut c, _) = Client::connect_from(source, addr).await;
            c.command("EHLO slow.example").await;
            c.command("MAIL FROM:<slow@example.test>").await;
            c.command("RCPT TO:<b@example.org>").await;
            assert!(c.command("DATA").await.starts_with("354"));
            let started = tokio::time::Instant::now();
            // Never stops by itself (up to 10 s): only the server's deadline ends it.
            let r = c.trickle_until_reply(Duration::from_millis(100), 100).await;
            (r, started.elapsed())
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Meanwhile a normal client gets its message through.
    let start = tokio::time::Instant::now();
    let reply = submit_one(&s).await;
    assert!(reply.starts_with("250 2.0.0 OK queued"), "{reply}");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    for t in tricklers {
        let (r, took) = t.await.unwrap();
        assert!(r.starts_with("421 4.4.2"), "{r}");
        assert!(took < Duration::from_secs(3), "dropped after {took:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn one_octet_per_second_inside_data_is_dropped_after_the_deadline_of_the_phase() {
    // serve_session on an in-memory pipe: virtual time, no sockets.
    let s = TestServer::start(Options::default()).await;
    let (client, server_side) = tokio::io::duplex(4096);
    let (sr, sw) = tokio::io::split(server_side);
    let server = s.server.clone();
    let session = tokio::spawn(async move {
        let endpoint = postrider::server::Endpoint::new(postrider::server::ListenerKind::Smtp);
        postrider::server::serve_session(
            sr,
            sw,
            &server,
            &endpoint,
            Some("192.0.2.9".parse().unwrap()),
        )
        .await;
    });
    let (cr, mut cw) = tokio::io::split(client);
    let mut cr = tokio::io::BufReader::new(cr);
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let mut line = String::new();
    cr.read_line(&mut line).await.unwrap();
    cw.write_all(b"HELO x\r\nMAIL FROM:<a@example.test>\r\nRCPT TO:<u@local.example>\r\nDATA\r\n")
        .await
        .unwrap();
    for _ in 0..4 {
        line.clear();
        cr.read_line(&mut line).await.unwrap();
    }
    assert!(line.starts_with("354"), "{line}");
    let start = tokio::time::Instant::now();
    let mut sent = 0u32;
    loop {
        if cw.write_all(b"x").await.is_err() {
            break;
        }
        sent += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut peek = String::new();
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(1), cr.read_line(&mut peek)).await
            && n > 0
        {
            assert!(peek.starts_with("421 4.4.2"), "{peek}");
            break;
        }
        assert!(sent < 1000, "never dropped");
    }
    let took = start.elapsed();
    // 180 s for the phase, plus 2 ms for each octet received.
    assert!(
        took >= Duration::from_secs(180) && took < Duration::from_secs(182),
        "{took:?}"
    );
    session.await.unwrap();
}

#[tokio::test]
async fn smtputf8_addresses_are_taken_only_with_the_parameter() {
    let s = started().await;
    let (mut c, _) = Client::connect(s.addr).await;
    c.command("EHLO client.example").await;
    assert_eq!(
        c.code("MAIL FROM:<j\u{f6}rg@example.test>").await,
        "553 5.6.7"
    );
    assert_eq!(
        c.code("MAIL FROM:<j\u{f6}rg@example.test> SMTPUTF8").await,
        "250 2.1.0"
    );
    assert_eq!(
        c.code("RCPT TO:<\u{e9}l\u{e8}ve@b\u{fc}cher.example>")
            .await,
        "250 2.1.5"
    );
    c.command("DATA").await;
    assert!(
        c.command("Subject: caf\u{e9}\r\n\r\nx\r\n.")
            .await
            .starts_with("250 2.0.0 OK queued")
    );
    let msgs = s.delivered(1).await;
    assert_eq!(msgs[0].1, ["\u{e9}l\u{e8}ve@xn--bcher-kva.example"]);
}

#[tokio::test]
async fn a_session_on_standard_input_and_output_is_a_trusted_local_user() {
    // What `sendmail -bs` runs: serve_session on a reader and a writer, no client address.
    let s = started().await;
    let (client, server_side) = tokio::io::duplex(64 * 1024);
    let (sr, sw) = tokio::io::split(server_side);
    let server = s.server.clone();
    let session = tokio::spawn(async move {
        let endpoint = postrider::server::Endpoint::new(postrider::server::ListenerKind::Smtp);
        postrider::server::serve_session(sr, sw, &server, &endpoint, None).await;
    });
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut cr, mut cw) = tokio::io::split(client);
    cw.write_all(
        b"EHLO localhost\r\nMAIL FROM:<php@example.test>\r\nRCPT TO:<anyone@remote.example>\r\nDATA\r\nSubject: from PHP\r\n\r\nhi\r\n.\r\nQUIT\r\n",
    )
    .await
    .unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(30), cr.read_to_string(&mut out))
        .await
        .expect("the session ends after QUIT")
        .unwrap();
    session.await.unwrap();
    assert!(out.contains("250 2.0.0 OK queued as "), "{out}");
    assert!(out.ends_with("221 2.0.0 Bye\r\n"), "{out}");
    let msgs = s.delivered(1).await;
    assert!(
        msgs[0]
            .2
            .starts_with("Received: from localhost (local)\r\n"),
        "{}",
        msgs[0].2
    );
}
