//! The field report's story end to end: on host sipserver1, user `aaa` runs `sendmail bbb`,
//! cron mails `root`, and each message lands where Dovecot reads it. The engine routes the
//! bare names (qualified with the host name, so local), the local transport expands the
//! aliases (`root: aaa`, `postmaster: root`) and delivers into the users' Maildirs, and a
//! private Dovecot shows the mail over IMAP. The users `aaa` and `bbb` come from a temporary
//! user database (mapped to the uid Dovecot's test users have); the machine's users are not
//! touched.

mod support;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use postrider::engine::{Engine, Limits};
use postrider::local::{Aliases, LocalConfig, LocalTransport, StaticUsers};
use postrider::message::{LocalSubmission, complete_headers, extract_recipients};
use postrider::route::{Mailertable, Origin};
use postrider::spool::FsSpool;
use postrider::transport::{Reports, Transport};
use postrider::{Delivery, Domain, Envelope, Outcome, ReversePath, Route};
use support::dovecot::{Dovecot, Store};
use support::imap::Imap;

/// Nothing here leaves the host.
struct NoRelay;

#[async_trait]
impl Transport for NoRelay {
    async fn deliver(&self, route: &Route, _batch: &[Delivery], _reports: &dyn Reports) {
        panic!("local mail was routed out: {route:?}");
    }
}

/// What `sendmail -t`-less `sendmail RCPT` does with the input of user `user`: qualify the
/// recipient with the host name, complete the header, submit.
async fn sendmail(engine: &Engine, host: &Domain, user: &str, rcpt: &str, input: &[u8]) {
    let sender = ReversePath::parse(&format!("{user}@{host}")).unwrap();
    let x = extract_recipients(input, host).unwrap();
    let message = complete_headers(
        &x.message,
        &LocalSubmission {
            hostname: host,
            sender: &sender,
            full_name: None,
            date: SystemTime::now(),
            unique: &postrider::QueueId::generate().to_string(),
            uid: Some(1001),
        },
    );
    let rcpt = postrider::Address::new(rcpt, host.clone()).unwrap();
    let mut events = engine.subscribe();
    let id = engine
        .submit(Envelope::new(sender, [rcpt.clone()]), message)
        .await
        .unwrap();
    let event = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let e = events.recv().await.unwrap();
            if e.id == id {
                return e;
            }
        }
    })
    .await
    .expect("a delivery event within 30 s");
    assert!(
        matches!(event.outcome, Outcome::Delivered { .. }),
        "{}",
        event.log_line()
    );
    assert_eq!(event.mailer.name(), "local");
}

fn inbox(dovecot: &Dovecot, user: &str) -> Vec<String> {
    let mut imap = Imap::login(dovecot.imap_port, user, "test");
    let got = imap.fetch_all();
    imap.logout();
    got.into_iter()
        .map(|m| String::from_utf8(m.body).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sendmail_bbb_as_aaa_lands_in_bbbs_mailbox_and_dovecot_shows_it() {
    let dovecot = Dovecot::start(Store::Maildir);
    let host: Domain = "sipserver1.ourtest.com".parse().unwrap();
    let mut config = LocalConfig::default();
    config.mailbox = dovecot.postrider_mailbox().parse().unwrap();
    let users = StaticUsers::new([dovecot.user("aaa"), dovecot.user("bbb")]);
    let (aliases, _) = Aliases::parse(
        "# /etc/aliases\npostmaster: root\nroot: aaa\n",
        Origin::named("aliases"),
    )
    .unwrap();
    let local = LocalTransport::new(config, host.clone())
        .unwrap()
        .0
        .with_users(Arc::new(users))
        .with_aliases(aliases);
    let (router, _) = Mailertable::builder()
        .hostname(host.clone())
        .build()
        .unwrap();
    let spool = tempfile::tempdir().unwrap();
    let engine = Engine::builder()
        .hostname(host.clone())
        .spool(Arc::new(FsSpool::open(spool.path()).unwrap()))
        .router(Arc::new(router))
        .transport(Arc::new(NoRelay))
        .local_transport(Arc::new(local))
        .limits(Limits {
            queue_scan_interval: None,
            ..Limits::default()
        })
        .start()
        .await
        .unwrap();

    sendmail(
        &engine,
        &host,
        "aaa",
        "bbb",
        b"Subject: lunch?\n\nAt noon, bbb?\n",
    )
    .await;
    sendmail(
        &engine,
        &host,
        "root",
        "root",
        b"Subject: Cron <root@sipserver1> run-parts /etc/cron.daily\n\nall done\n",
    )
    .await;
    engine.shutdown().await;

    let bbb = inbox(&dovecot, "bbb");
    assert_eq!(bbb.len(), 1, "{}", dovecot.log());
    let m = &bbb[0];
    assert!(
        m.starts_with(
            "Return-Path: <aaa@sipserver1.ourtest.com>\r\nDelivered-To: bbb@sipserver1.ourtest.com\r\n"
        ),
        "{m}"
    );
    assert!(
        m.lines()
            .any(|l| l.starts_with("From: ") && l.contains("aaa@sipserver1.ourtest.com")),
        "{m}"
    );
    assert!(m.contains("\r\nSubject: lunch?\r\n"), "{m}");
    assert!(m.ends_with("\r\n\r\nAt noon, bbb?\r\n"), "{m}");
    // Cron's mail to root reached aaa through the alias.
    let aaa = inbox(&dovecot, "aaa");
    assert_eq!(aaa.len(), 1);
    assert!(
        aaa[0].contains("Delivered-To: root@sipserver1.ourtest.com\r\n"),
        "{}",
        aaa[0]
    );
    assert!(
        aaa[0].contains("Subject: Cron <root@sipserver1> run-parts"),
        "{}",
        aaa[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_with_a_local_section_assembles_an_engine_that_delivers_locally() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("aliases"),
        "postmaster: root\nroot: \\root\n",
    )
    .unwrap();
    let text = format!(
        "hostname = \"sipserver1.ourtest.com\"\nspool = \"spool\"\n[dns]\nname_servers = [\"127.0.0.1:1\"]\n\
         [local]\nmailbox = \"maildir:{}/%u/Maildir\"\naliases = \"aliases\"\n",
        dir.path().display()
    );
    let config =
        postrider::config::Config::parse(&text, dir.path().join("postrider.toml")).unwrap();
    let assembly = config.assemble().await.unwrap();
    assert!(assembly.local().is_some());
    let v = assembly
        .local()
        .unwrap()
        .verify("postmaster", "sipserver1.ourtest.com");
    assert_eq!(
        v.to_string(),
        format!(
            "postmaster... deliverable: mailer local, user root (maildir {}/root/Maildir)",
            dir.path().display()
        )
    );
    let spool = Arc::new(FsSpool::open(dir.path().join("spool")).unwrap());
    let engine = assembly.engine_builder(spool).start().await.unwrap();
    let host: Domain = "sipserver1.ourtest.com".parse().unwrap();
    sendmail(
        &engine,
        &host,
        "aaa",
        "postmaster",
        b"Subject: hi\n\nto the postmaster\n",
    )
    .await;
    engine.shutdown().await;
    let new = dir.path().join("root/Maildir/new");
    assert_eq!(std::fs::read_dir(&new).unwrap().count(), 1);
}
