//! Who may relay through the library's SMTP server: sendmail's access file and `mynetworks`
//! exercised from different loopback source addresses, the open-relay matrix (every trick of
//! sender-specified routing) refused from a client that may not relay, and the client's
//! forward-confirmed name from a real DNS server deciding a `Connect:` host-name key.

mod support;

use std::net::IpAddr;
use std::sync::Arc;

use postrider::resolve::{DnsOptions, DnsResolver, StaticResolver};
use postrider::server::RelayPolicy;
use postrider::server::access::AccessTable;
use postrider::server::networks::Networks;
use postrider::server::reverse::{ClientName, client_name};
use support::dns_server::{DnsServer, Zone};
use support::server::{Client, LOCAL_DOMAIN, Options, TestServer, code};

const ACCESS: &str = "\
# the machine's /etc/mail/access, as a sendmail administrator writes it
Connect:127.0.0.3          RELAY
Connect:127.0.0.4          REJECT
Connect:127.0.0.5          ERROR:4.7.1:450 come back later
Connect:127.0.0.6          DISCARD
Connect:lan.example        RELAY
Connect:bank.example       RELAY
From:spammer.example       REJECT
From:angry@example.test    ERROR:\"550 5.7.1 we do not take mail from you\"
To:ceo@local.example       ERROR:5.7.1:550 ask his assistant
To:backup.example          RELAY
";

fn policy() -> RelayPolicy {
    let table = AccessTable::parse(ACCESS, "/etc/mail/access").unwrap();
    RelayPolicy::new(Some(table), Networks::parse(["127.0.0.7/32"]).unwrap())
}

async fn server() -> TestServer {
    TestServer::start(Options {
        policy: policy(),
        ..Options::default()
    })
    .await
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// RCPT's reply code for each recipient, one transaction, from `source`.
async fn rcpt_codes(s: &TestServer, source: &str, rcpts: &[&str]) -> Vec<(String, String)> {
    let (mut c, greeting) = Client::connect_from(ip(source), s.addr).await;
    assert!(greeting.starts_with("220 "), "{greeting}");
    c.command("EHLO client.example").await;
    assert_eq!(
        c.code("MAIL FROM:<someone@example.test>").await,
        "250 2.1.0"
    );
    let mut out = Vec::new();
    for r in rcpts {
        out.push((r.to_string(), c.command(&format!("RCPT TO:<{r}>")).await));
    }
    c.command("QUIT").await;
    out
}

#[tokio::test]
async fn the_open_relay_matrix_is_refused_from_a_client_that_may_not_relay() {
    let s = server().await;
    let attempts = [
        "user@remote.example",
        "USER@REMOTE.EXAMPLE",
        "user@remote.example.",
        "user%remote.example@local.example",
        "user%remote.example@LOCAL.EXAMPLE.",
        "remote.example!user@local.example",
        "\"user@remote.example\"@local.example",
        "\"user%remote.example\"@local.example",
        "\"remote.example!user\"@local.example.",
        "@local.example:user@remote.example",
        "@local.example,@mail.test.example:user@remote.example",
        "user@[192.0.2.1]",
        "user@[127.0.0.1]",
        "user@[IPv6:::1]",
        "user%remote.example@[127.0.0.1]",
        "user@remote.example@local.example",
        "user@sub.local.example",
        "user@local.example.remote.example",
    ];
    for (rcpt, reply) in rcpt_codes(&s, "127.0.0.2", &attempts).await {
        assert!(
            reply.starts_with("550 5.7.1 ") && reply.ends_with("Relaying denied")
                || reply.starts_with("553 5.1.3 "),
            "<{rcpt}> was not refused: {reply}"
        );
    }
    // Mail for the local domains is taken from anyone, in any spelling.
    let local = [
        "user@local.example",
        "User@LOCAL.Example.",
        "user@mail.test.example",
        "postmaster",
        "\"john doe\"@local.example",
    ];
    for (rcpt, reply) in rcpt_codes(&s, "127.0.0.2", &local).await {
        assert_eq!(code(&reply), "250 2.1.5", "<{rcpt}>: {reply}");
    }
    assert!(s.transport.calls().is_empty());
}

#[tokio::test]
async fn access_entries_and_mynetworks_decide_by_source_address() {
    let s = server().await;
    let remote = ["user@remote.example"];
    for (source, want) in [
        ("127.0.0.2", "550 5.7.1"),
        // An access file is configured and does not list 127.0.0.1: loopback is not special.
        ("127.0.0.1", "550 5.7.1"),
        ("127.0.0.3", "250 2.1.5"),
        ("127.0.0.7", "250 2.1.5"),
    ] {
        let got = rcpt_codes(&s, source, &remote).await;
        assert_eq!(code(&got[0].1), want, "from {source}: {}", got[0].1);
    }
    // To:backup.example RELAY: anyone may send to that domain.
    let got = rcpt_codes(
        &s,
        "127.0.0.2",
        &["user@backup.example", "ceo@local.example"],
    )
    .await;
    assert_eq!(code(&got[0].1), "250 2.1.5", "{}", got[0].1);
    assert_eq!(got[1].1, "550 5.7.1 ask his assistant");
}

#[tokio::test]
async fn rejected_clients_and_senders_hear_it_and_discarded_mail_vanishes() {
    let s = server().await;
    let (mut c, greeting) = Client::connect_from(ip("127.0.0.4"), s.addr).await;
    assert!(
        greeting.starts_with("554 5.7.1 mail.test.example Access denied"),
        "{greeting}"
    );
    assert_eq!(c.code("EHLO x").await, "503 5.7.0");
    assert_eq!(c.code("QUIT").await, "221 2.0.0");
    let (mut c, greeting) = Client::connect_from(ip("127.0.0.5"), s.addr).await;
    assert_eq!(greeting, "421 4.7.1 come back later");
    assert!(c.closed().await);

    let (mut c, _) = Client::connect_from(ip("127.0.0.2"), s.addr).await;
    c.command("EHLO client.example").await;
    assert_eq!(
        c.command("MAIL FROM:<bulk@mx.spammer.example>").await,
        "550 5.7.1 <bulk@mx.spammer.example>... Access denied"
    );
    assert_eq!(
        c.command("MAIL FROM:<angry@example.test>").await,
        "550 5.7.1 we do not take mail from you"
    );

    let (mut c, _) = Client::connect_from(ip("127.0.0.6"), s.addr).await;
    c.command("EHLO client.example").await;
    c.command("MAIL FROM:<a@example.test>").await;
    c.command(&format!("RCPT TO:<u@{LOCAL_DOMAIN}>")).await;
    c.command("DATA").await;
    assert_eq!(
        c.command("Subject: x\r\n\r\ngone\r\n.").await,
        "250 2.0.0 OK discarded"
    );
    c.command("QUIT").await;
    assert!(s.transport.calls().is_empty());
    assert_eq!(s.stored_envelopes().await.len(), 0);
}

#[tokio::test]
async fn reverse_names_from_a_real_dns_server_are_confirmed_or_marked_forged() {
    // hickory answers 127.0.0.0/8 reverse lookups itself (RFC 6761 "localhost"), so the DNS
    // part is checked on documentation addresses: only the name server on loopback is asked.
    let dns = DnsServer::start(vec![
        Zone::new("2.0.192.in-addr.arpa")
            .ptr("8", "pbx.lan.example.")
            .ptr("9", "www.bank.example."),
        Zone::new("lan.example").a("pbx", "192.0.2.8"),
        Zone::new("bank.example").a("www", "198.51.100.80"),
    ])
    .await;
    let resolver = DnsResolver::with_name_servers(&[dns.addr()], DnsOptions::default()).unwrap();
    let limit = std::time::Duration::from_secs(10);
    assert_eq!(
        client_name(&resolver, ip("192.0.2.8"), limit).await,
        ClientName::Confirmed("pbx.lan.example".parse().unwrap())
    );
    assert_eq!(
        client_name(&resolver, ip("192.0.2.9"), limit).await,
        ClientName::Forged("www.bank.example".parse().unwrap())
    );
    assert_eq!(
        client_name(&resolver, ip("192.0.2.10"), limit).await,
        ClientName::Unknown
    );
}

#[tokio::test]
async fn a_forward_confirmed_name_matches_connect_keys_and_a_forged_one_never_does() {
    let resolver = StaticResolver::new()
        .with_ptr(ip("127.0.0.8"), "pbx.lan.example".parse().unwrap())
        .with_host("pbx.lan.example".parse().unwrap(), ip("127.0.0.8"))
        .with_ptr(ip("127.0.0.9"), "www.bank.example".parse().unwrap())
        .with_host("www.bank.example".parse().unwrap(), ip("198.51.100.80"));
    let s = TestServer::start(Options {
        policy: policy(),
        resolver: Some(Arc::new(resolver)),
        ..Options::default()
    })
    .await;
    let got = rcpt_codes(&s, "127.0.0.8", &["user@remote.example"]).await;
    assert_eq!(code(&got[0].1), "250 2.1.5", "{}", got[0].1);
    let got = rcpt_codes(&s, "127.0.0.9", &["user@remote.example"]).await;
    assert_eq!(
        code(&got[0].1),
        "550 5.7.1",
        "a forged name was trusted: {}",
        got[0].1
    );

    // The names go into Received: as sendmail and Postfix write them.
    let cases = [
        ("127.0.0.8", "(pbx.lan.example [127.0.0.8])"),
        (
            "127.0.0.9",
            "(www.bank.example [127.0.0.9] (may be forged))",
        ),
    ];
    for (source, _) in cases {
        let (mut c, _) = Client::connect_from(ip(source), s.addr).await;
        c.command("EHLO client.example").await;
        c.command("MAIL FROM:<a@example.test>").await;
        c.command(&format!("RCPT TO:<u{}@{LOCAL_DOMAIN}>", &source[8..]))
            .await;
        c.command("DATA").await;
        assert!(
            c.command("Subject: x\r\n\r\nbody\r\n.")
                .await
                .starts_with("250 2.0.0 OK queued")
        );
    }
    let msgs = s.delivered(2).await;
    for (source, want) in cases {
        let m = msgs
            .iter()
            .find(|m| m.1[0].starts_with(&format!("u{}@", &source[8..])))
            .unwrap();
        assert!(
            m.2.starts_with(&format!("Received: from client.example {want}\r\n")),
            "{}",
            m.2
        );
    }
}
