//! `examples/relay.rs` (the daemon over `postrider::server`) as a real process between real
//! peers: Postfix's `smtp-source` (and a raw client) in front, Postfix's `smtp-sink` as its
//! smart host behind. The protocol itself is tested against the library in `server_*.rs`.

mod support;
use support::relay;
use support::sink;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use postrider::QueueId;
use postrider::spool::{FsSpool, Spool};
use relay::{Client, HOSTNAME, Relay};
use sink::Sink;
use support::server::Client as ServerClient;

const SMTP_SOURCE: &str = "/usr/sbin/smtp-source";
const LIMIT: Duration = Duration::from_secs(60);

/// The queue id in `250 2.0.0 OK queued as ID`.
fn queued_id(reply: &str) -> QueueId {
    let id = reply
        .strip_prefix("250 2.0.0 OK queued as ")
        .unwrap_or_else(|| panic!("not a queued reply: {reply}"));
    id.parse().unwrap()
}

#[tokio::test]
async fn every_message_from_smtp_source_reaches_the_smart_host() {
    assert!(
        Path::new(SMTP_SOURCE).exists(),
        "{SMTP_SOURCE} is missing: install the Debian package postfix"
    );
    let sink = Sink::start_with(&[], true).await;
    let relay = Relay::start(sink.port(), "");
    let port = relay.port();
    // 5 parallel sessions, one message per connection, as in the Postfix comparison.
    let out = tokio::task::spawn_blocking(move || {
        Command::new(SMTP_SOURCE)
            .args(["-s", "5", "-m", "60", "-l", "3000"])
            .args(["-f", "source@example.test", "-t", "rcpt@example.org"])
            .arg(format!("127.0.0.1:{port}"))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "smtp-source: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let counts = sink.wait_for(60, 0, LIMIT).await;
    assert_eq!(counts.messages, 60, "{counts:?}");
    let dumped = sink.dumped();
    assert_eq!(dumped.len(), 60);
    for m in &dumped {
        assert!(m.contains("X-Mail-Args: <source@example.test>"), "{m}");
        assert!(m.contains("X-Rcpt-Args: <rcpt@example.org>"), "{m}");
        assert!(
            m.contains(&format!("\tby {HOSTNAME} (postrider) with SMTP")),
            "{m}"
        );
    }
    // Delivered mail leaves the spool.
    let spool = FsSpool::open(relay.spool()).unwrap();
    for _ in 0..500 {
        if spool.scan().await.unwrap().messages.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("delivered messages are still in the relay's spool");
}

#[tokio::test]
async fn a_pipelined_esmtp_transaction_is_unstuffed_and_relayed_intact() {
    let sink = Sink::start_with(&[], true).await;
    let relay = Relay::start(sink.port(), "");
    let (mut c, greeting) = Client::connect(relay.port()).await;
    assert_eq!(greeting, format!("220 {HOSTNAME} ESMTP postrider"));
    let ehlo = c.command("EHLO client.example").await;
    for line in [
        "250-PIPELINING",
        "250-SIZE 10240000",
        "250-8BITMIME",
        "250-ENHANCEDSTATUSCODES",
        "250-CHUNKING",
    ] {
        assert!(ehlo.lines().any(|l| l == line), "{ehlo}");
    }
    // MAIL, two RCPTs and DATA in one write, as a pipelining client sends them.
    c.send(
        "MAIL FROM:<a@example.test> SIZE=100 BODY=8BITMIME\r\nRCPT TO:<b@example.org>\r\n\
         RCPT TO:<c@example.org>\r\nDATA\r\n",
    )
    .await;
    assert_eq!(c.reply().await, "250 2.1.0 OK");
    assert_eq!(c.reply().await, "250 2.1.5 OK");
    assert_eq!(c.reply().await, "250 2.1.5 OK");
    assert!(c.reply().await.starts_with("354 "));
    let reply = c
        .command(
            "Subject: dots\r\n\r\n..leading dot\r\n..\r\nmiddle\r\n...two dots\r\ncaf\u{e9}\r\n.",
        )
        .await;
    let id = queued_id(&reply);
    assert_eq!(c.command("QUIT").await, "221 2.0.0 Bye");
    let counts = sink.wait_for(1, 0, LIMIT).await;
    assert_eq!(counts.messages, 1);
    let m = sink.dumped().remove(0).replace("\r\n", "\n");
    assert!(m.contains("X-Rcpt-Args: <b@example.org>"), "{m}");
    assert!(m.contains("X-Rcpt-Args: <c@example.org>"), "{m}");
    assert!(m.contains("BODY=8BITMIME"), "{m}");
    assert!(
        m.contains("\n.leading dot\n.\nmiddle\n..two dots\ncaf\u{e9}\n"),
        "{m}"
    );
    assert!(
        m.contains("Received: from client.example (localhost [127.0.0.1])\n\tby relay.test.example (postrider) with ESMTP;"),
        "{m}"
    );
    assert!(!id.to_string().is_empty());
}

#[tokio::test]
async fn the_250_comes_only_once_the_message_is_in_the_spool() {
    // The smart host does not answer: the message stays queued. Kill the relay without a
    // shutdown right after the 250: the message must be on disk under the id it named.
    let dead_port = relay::free_port();
    let relay = Relay::start(dead_port, "");
    let (mut c, _) = Client::connect(relay.port()).await;
    c.command("HELO client.example").await;
    assert_eq!(
        c.command("MAIL FROM:<a@example.test>").await,
        "250 2.1.0 OK"
    );
    assert_eq!(c.command("RCPT TO:<b@example.org>").await, "250 2.1.5 OK");
    assert!(c.command("DATA").await.starts_with("354 "));
    let id = queued_id(&c.command("Subject: keep me\r\n\r\nhello\r\n.").await);
    let spool_dir = relay.spool();
    let dir = relay.kill();
    let spool = FsSpool::open(&spool_dir).unwrap();
    let found = spool.scan().await.unwrap();
    let m = found
        .messages
        .iter()
        .find(|m| m.id == id)
        .unwrap_or_else(|| panic!("{id} is not in the spool after the 250"));
    assert_eq!(
        m.envelope.recipients[0].address.to_string(),
        "b@example.org"
    );
    let body = spool.body(&id).await.unwrap();
    assert!(String::from_utf8_lossy(&body).ends_with("Subject: keep me\r\n\r\nhello\r\n"));
    drop(dir);
}

#[tokio::test]
async fn the_log_a_file_or_pipe_receives_holds_plain_lines_without_colour_codes() {
    let dead_port = relay::free_port();
    let relay = Relay::start(dead_port, "");
    let (mut c, _) = Client::connect(relay.port()).await;
    c.command("HELO client.example").await;
    c.command("MAIL FROM:<a@example.test>").await;
    c.command("RCPT TO:<b@example.org>").await;
    c.command("DATA").await;
    let id = queued_id(&c.command("Subject: log me\r\n\r\nhello\r\n.").await);
    // The relay's stderr is a pipe here, as it is for a log file or journald.
    relay.wait_for_log(&id.to_string(), 1, LIMIT);
    assert_eq!(
        relay.logged("\u{1b}["),
        0,
        "colour codes in a log that is not a terminal"
    );
}

#[tokio::test]
async fn commands_out_of_order_or_not_offered_get_the_right_codes() {
    let sink = Sink::start().await;
    let relay = Relay::start_with(
        sink.port(),
        "mailertable = \"mailertable\"\n",
        &[(
            "mailertable",
            "refused.example  error:5.7.0:550 mail to this domain is not accepted\n",
        )],
    );
    let (mut c, _) = Client::connect(relay.port()).await;
    let code = |r: String| r.chars().take(9).collect::<String>();
    assert_eq!(
        code(c.command("MAIL FROM:<a@example.test>").await),
        "503 5.5.1"
    );
    assert_eq!(code(c.command("EHLO").await), "501 5.5.4");
    assert_eq!(code(c.command("HELO client.example").await), "250 relay");
    // ESMTP parameters need EHLO.
    assert_eq!(
        code(c.command("MAIL FROM:<a@example.test> SIZE=10").await),
        "555 5.5.4"
    );
    c.command("EHLO client.example").await;
    assert_eq!(
        code(c.command("RCPT TO:<b@example.org>").await),
        "503 5.5.1"
    );
    assert_eq!(code(c.command("DATA").await), "503 5.5.1");
    assert_eq!(code(c.command("STARTTLS").await), "502 5.5.1");
    assert_eq!(code(c.command("AUTH PLAIN AGFAYg==").await), "502 5.5.1");
    assert_eq!(code(c.command("FROB").await), "500 5.5.2");
    assert_eq!(
        code(c.command("MAIL FROM:a@example.test").await),
        "501 5.5.4"
    );
    assert_eq!(
        code(c.command("MAIL FROM:<a@example.test> SIZE=99999999").await),
        "552 5.3.4"
    );
    assert_eq!(
        code(c.command("MAIL FROM:<a@example.test> XFOO=1").await),
        "555 5.5.4"
    );
    assert_eq!(
        code(c.command("MAIL FROM:<a@@example.test>").await),
        "553 5.1.7"
    );
    assert_eq!(code(c.command("MAIL FROM:<>").await), "250 2.1.0");
    assert_eq!(code(c.command("MAIL FROM:<>").await), "503 5.5.1");
    assert_eq!(code(c.command("DATA").await), "554 5.5.1");
    assert_eq!(
        code(c.command("RCPT TO:<b@example.org> XFOO=1").await),
        "555 5.5.4"
    );
    assert_eq!(code(c.command("RCPT TO:<nobody>").await), "553 5.1.3");
    // The mailertable's error: entry answers at RCPT time.
    assert_eq!(
        code(c.command("RCPT TO:<x@refused.example>").await),
        "550 5.7.0"
    );
    assert_eq!(code(c.command("NOOP").await), "250 2.0.0");
    assert_eq!(code(c.command("VRFY x").await), "252 2.5.2");
    assert_eq!(code(c.command("RSET").await), "250 2.0.0");
    assert_eq!(
        code(c.command("RCPT TO:<b@example.org>").await),
        "503 5.5.1"
    );
    let long = format!("NOOP {}", "x".repeat(5000));
    assert_eq!(code(c.command(&long).await), "500 5.5.6");
    assert_eq!(code(c.command("QUIT").await), "221 2.0.0");
    assert!(c.closed().await);
    assert_eq!(sink.counts().messages, 0);
}

#[tokio::test]
async fn sighup_reloads_the_tables_and_keeps_the_old_ones_when_a_new_one_is_broken() {
    let sink = Sink::start().await;
    let relay = Relay::start_with(
        sink.port(),
        "mailertable = \"mailertable\"\n",
        &[(
            "mailertable",
            "refused.example  error:5.7.0:550 mail to this domain is not accepted\n",
        )],
    );
    let table = relay.dir().join("mailertable");
    let rcpt = |domain: &'static str| {
        let port = relay.port();
        async move {
            let (mut c, _) = Client::connect(port).await;
            c.command("EHLO client.example").await;
            c.command("MAIL FROM:<a@example.test>").await;
            let reply = c.command(&format!("RCPT TO:<x@{domain}>")).await;
            c.command("QUIT").await;
            reply.chars().take(9).collect::<String>()
        }
    };
    assert_eq!(rcpt("later.example").await, "250 2.1.5");

    std::fs::write(
        &table,
        "refused.example  error:5.7.0:550 mail to this domain is not accepted\n\
         later.example    error:5.7.1:550 not any more\n",
    )
    .unwrap();
    relay.hangup();
    relay.wait_for_log("routing tables reloaded", 1, LIMIT);
    relay.wait_for_log("policy replaced", 1, LIMIT);
    assert_eq!(rcpt("later.example").await, "550 5.7.1");

    std::fs::write(&table, "broken.example  frob:host\n").unwrap();
    relay.hangup();
    relay.wait_for_log("mailertable:1", 1, LIMIT);
    relay.wait_for_log("the previous ones stay in use", 1, LIMIT);
    // A reload is all or nothing: with one table broken, the policy is not replaced either.
    assert_eq!(relay.logged("policy replaced"), 1);
    // The table in use is still the second one.
    assert_eq!(rcpt("later.example").await, "550 5.7.1");
    assert_eq!(rcpt("broken.example").await, "250 2.1.5");
}

#[tokio::test]
async fn an_oversized_message_is_refused_after_its_data_and_the_session_goes_on() {
    let sink = Sink::start_with(&[], true).await;
    let relay = Relay::start(sink.port(), "");
    let (mut c, _) = Client::connect(relay.port()).await;
    c.command("EHLO client.example").await;
    c.command("MAIL FROM:<a@example.test>").await;
    c.command("RCPT TO:<b@example.org>").await;
    assert!(c.command("DATA").await.starts_with("354 "));
    let line = format!("{}\r\n", "x".repeat(998));
    let big = line.repeat(10_240_000 / line.len() + 2);
    c.send(&big).await;
    assert!(c.command(".").await.starts_with("552 5.3.4 "));
    // The transaction is over; a new one works.
    assert_eq!(
        c.command("MAIL FROM:<a@example.test>").await,
        "250 2.1.0 OK"
    );
    c.command("RCPT TO:<b@example.org>").await;
    c.command("DATA").await;
    queued_id(&c.command("Subject: small\r\n\r\nok\r\n.").await);
    assert_eq!(sink.wait_for(1, 0, LIMIT).await.messages, 1);
}

/// A message of exactly `len` octets as the client sends it (before the final dot): lines
/// ending in `ending`, the last one in CRLF as the end of data needs.
fn message_of(len: usize, ending: &str) -> String {
    let mut m = format!("Subject: size{ending}{ending}");
    let line = format!("{}{ending}", "x".repeat(78));
    while m.len() + line.len() + 80 < len {
        m.push_str(&line);
    }
    m.push_str(&"y".repeat(len - m.len() - 2));
    m.push_str("\r\n");
    assert_eq!(m.len(), len);
    m
}

#[tokio::test]
async fn the_size_limit_counts_what_the_client_sent_not_what_the_spool_holds() {
    // Issue 10: SIZE 10240000 advertised, a 10,239,900-octet message refused after DATA
    // because the relay counted its own Received: field (and, with bare LFs, the CRs that
    // normalisation adds).
    let sink = Sink::start().await;
    let relay = Relay::start(sink.port(), "");
    let (mut c, _) = Client::connect(relay.port()).await;
    let ehlo = c.command("EHLO client.example").await;
    assert!(ehlo.lines().any(|l| l == "250-SIZE 10240000"), "{ehlo}");
    for ending in ["\r\n", "\n"] {
        assert_eq!(
            c.command("MAIL FROM:<a@example.test> SIZE=10239900").await,
            "250 2.1.0 OK"
        );
        c.command("RCPT TO:<b@example.org>").await;
        assert!(c.command("DATA").await.starts_with("354 "));
        c.send(&message_of(10_239_900, ending)).await;
        let reply = c.command(".").await;
        assert!(
            reply.starts_with("250 2.0.0 OK queued as "),
            "{ending:?}: {reply}"
        );
    }
    // One octet over the limit is refused.
    c.command("MAIL FROM:<a@example.test>").await;
    c.command("RCPT TO:<b@example.org>").await;
    assert!(c.command("DATA").await.starts_with("354 "));
    c.send(&message_of(10_240_001, "\r\n")).await;
    let reply = c.command(".").await;
    assert!(
        reply.starts_with("552 5.3.4 Message size exceeds the limit of 10240000 octets"),
        "{reply}"
    );
    assert_eq!(sink.wait_for(2, 0, LIMIT).await.messages, 2);
}

#[tokio::test]
async fn a_client_that_keeps_making_mistakes_is_disconnected() {
    let sink = Sink::start().await;
    let relay = Relay::start(sink.port(), "");
    let (mut c, _) = Client::connect(relay.port()).await;
    for _ in 0..20 {
        assert!(c.command("FROB").await.starts_with("500 "));
    }
    assert!(c.reply().await.starts_with("421 4.7.0 "));
    assert!(c.closed().await);
}

#[test]
fn a_listener_whose_certificate_cannot_be_read_is_a_startup_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        "hostname = \"relay.test.example\"\nspool = \"spool\"\n\n[[listener]]\naddress = \"0.0.0.0:0\"\nkind = \"submission\"\ncertificate = \"missing.pem\"\nkey = \"key.pem\"\n",
    )
    .unwrap();
    let out = Command::new(relay::relay_example())
        .arg("-C")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    let file = dir.path().join("missing.pem");
    assert!(
        err.contains(&format!(
            "TLS certificate {}: cannot read it",
            file.display()
        )),
        "{err}"
    );
}

#[test]
fn a_broken_configuration_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        "hostname = \"relay.test.example\"\nsmart_hots = \"x\"\n",
    )
    .unwrap();
    let out = Command::new(relay::relay_example())
        .arg("-C")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("relay.toml:2"), "{err}");
}

#[tokio::test]
async fn access_rules_come_from_the_configuration_and_sighup_reloads_them() {
    let sink = Sink::start().await;
    let relay = Relay::start_with(
        sink.port(),
        "[server]\naccess = \"access\"\n",
        &[("access", "Connect:127.0.0.1 RELAY\n")],
    );
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], relay.port()));
    let rcpt = |source: &'static str| async move {
        let (mut c, _) = ServerClient::connect_from(source.parse().unwrap(), addr).await;
        c.command("EHLO client.example").await;
        c.command("MAIL FROM:<a@example.test>").await;
        let r = c.code("RCPT TO:<b@example.org>").await;
        c.command("QUIT").await;
        r
    };
    assert_eq!(rcpt("127.0.0.1").await, "250 2.1.5");
    assert_eq!(rcpt("127.0.0.2").await, "550 5.7.1");
    std::fs::write(
        relay.dir().join("access"),
        "Connect:127.0.0.1 RELAY\nConnect:127.0.0.2 RELAY\n",
    )
    .unwrap();
    relay.hangup();
    relay.wait_for_log("access control reloaded", 1, LIMIT);
    assert_eq!(rcpt("127.0.0.2").await, "250 2.1.5");
    // A broken file is refused and the rules in use stay.
    std::fs::write(relay.dir().join("access"), "Connect:127.0.0.2 MAYBE\n").unwrap();
    relay.hangup();
    relay.wait_for_log("access control not reloaded", 1, LIMIT);
    relay.wait_for_log("access:1: value \"MAYBE\"", 1, LIMIT);
    assert_eq!(rcpt("127.0.0.2").await, "250 2.1.5");
}
