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

/// Runs the sendmail example with `args` and `input` on standard input, as `as_user` when
/// given (its uid, gid and groups; a clean environment, so only the password database can
/// name the sender).
fn sendmail_command(
    config: &std::path::Path,
    as_user: Option<&postrider::local::User>,
    args: &[&str],
    input: &str,
) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(support::examples::example_binary("sendmail"));
    cmd.arg("-C").arg(config).args(args);
    cmd.env_clear().env("PATH", "/usr/bin:/bin");
    if let Some(u) = as_user {
        let (uid, gid) = (u.uid, u.gid);
        // std's uid() and gid() would run before pre_exec, where setgroups needs root still.
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setgroups(1, &gid) != 0 || libc::setgid(gid) != 0 || libc::setuid(uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    support::examples::run(cmd, input)
}

fn succeeded(out: &std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}\n{}{}",
        out.status,
        support::examples::stdout(out),
        support::examples::stderr(out)
    );
}

/// The seed story with nothing stood in: two real accounts on this machine (created for the
/// test and removed after it), the `sendmail` program run by `aaa` itself, the configuration's
/// `[local]` section assembled into the engine, the system password database, and Dovecot
/// reading each user's `~/Maildir` as that user. A `sendmail` run by an ordinary user cannot
/// write another user's mailbox, so `aaa`'s message is queued (`-odq`) and the queue run of
/// root (the daemon's part) delivers it; cron's mail to root is submitted as Debian's cron
/// does and reaches `aaa` through `root: aaa` in the aliases file.
#[test]
fn sendmail_run_by_the_real_user_aaa_for_bbb_lands_in_bbbs_maildir_and_dovecot_shows_it() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let open = |p: &std::path::Path, mode| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    open(dir.path(), 0o755);
    let homes = dir.path().join("home");
    std::fs::create_dir(&homes).unwrap();
    open(&homes, 0o755);
    let users = support::system_users::TestUsers::create(&["aaa", "bbb"], &homes);
    let (aaa, bbb) = (users.user("aaa"), users.user("bbb"));
    let dovecot = Dovecot::start_for_system_users();

    // Everyone may queue mail (the spool of a site without a setuid submission program).
    let spool = dir.path().join("spool");
    std::fs::create_dir(&spool).unwrap();
    open(&spool, 0o1777);
    std::fs::write(
        dir.path().join("aliases"),
        format!("# /etc/aliases\npostmaster: root\nroot: {}\n", aaa.name),
    )
    .unwrap();
    let config = dir.path().join("postrider.toml");
    std::fs::write(
        &config,
        format!(
            "hostname = \"sipserver1.ourtest.com\"\nspool = \"spool\"\n[spf]\npolicy = \"off\"\n\
             [dns]\nname_servers = [\"127.0.0.1:1\"]\n\
             [local]\nmailbox = \"{}\"\naliases = \"aliases\"\n",
            dovecot.postrider_mailbox()
        ),
    )
    .unwrap();

    let out = sendmail_command(
        &config,
        Some(&aaa),
        &["-odq", &bbb.name],
        "Subject: lunch?\n\nAt noon, bbb?\n",
    );
    succeeded(&out, "sendmail bbb as aaa");
    // What Debian's cron runs for a job's output.
    let out = sendmail_command(
        &config,
        None,
        &["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "-odq", "root"],
        "Subject: Cron <root@sipserver1> run-parts /etc/cron.daily\n\nall done\n",
    );
    succeeded(&out, "cron's sendmail root");
    let out = sendmail_command(&config, None, &["-q"], "");
    succeeded(&out, "sendmail -q as root");
    let left: Vec<_> = std::fs::read_dir(spool.join("queue"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        left.is_empty(),
        "still queued after the queue run: {left:?}\n{}",
        support::examples::stderr(&out)
    );

    let host = "sipserver1.ourtest.com";
    let got = inbox(&dovecot, &bbb.name);
    assert_eq!(got.len(), 1, "{}", dovecot.log());
    let m = &got[0];
    assert!(
        m.starts_with(&format!(
            "Return-Path: <{}@{host}>\r\nDelivered-To: {}@{host}\r\n",
            aaa.name, bbb.name
        )),
        "{m}"
    );
    assert!(m.contains("\r\nSubject: lunch?\r\n"), "{m}");
    assert!(m.ends_with("\r\n\r\nAt noon, bbb?\r\n"), "{m}");
    // The file (which Dovecot moved from new/ to cur/ when it saw it) belongs to bbb,
    // readable by nobody else.
    let files: Vec<_> = ["new", "cur"]
        .iter()
        .flat_map(|sub| std::fs::read_dir(bbb.home.join("Maildir").join(sub)).unwrap())
        .flatten()
        .collect();
    assert_eq!(files.len(), 1);
    let meta = files[0].metadata().unwrap();
    assert_eq!((meta.uid(), meta.gid()), (bbb.uid, bbb.gid));
    assert_eq!(meta.mode() & 0o777, 0o600);
    let md = std::fs::metadata(bbb.home.join("Maildir")).unwrap();
    assert_eq!((md.uid(), md.mode() & 0o777), (bbb.uid, 0o700));

    let got = inbox(&dovecot, &aaa.name);
    assert_eq!(got.len(), 1, "{}", dovecot.log());
    assert!(
        got[0].contains(&format!("Delivered-To: root@{host}\r\n")),
        "{}",
        got[0]
    );
    assert!(got[0].contains("Subject: Cron <root@sipserver1> run-parts"));
    assert!(got[0].starts_with(&format!("Return-Path: <root@{host}>\r\n")));
}

#[tokio::test]
async fn a_reload_swaps_in_new_aliases_and_virtusertable_and_a_broken_file_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write("aliases", "postmaster: root\nroot: \\root\n");
    write("virtusertable", "info@sipserver1.ourtest.com root\n");
    let text = format!(
        "hostname = \"sipserver1.ourtest.com\"\n[dns]\nname_servers = [\"127.0.0.1:1\"]\n\
         [local]\nmailbox = \"maildir:{}/%u/Maildir\"\naliases = \"aliases\"\n\
         virtusertable = \"virtusertable\"\n",
        dir.path().display()
    );
    let config =
        postrider::config::Config::parse(&text, dir.path().join("postrider.toml")).unwrap();
    let assembly = config.assemble().await.unwrap();
    let local = assembly.local().unwrap().clone();
    let info = postrider::Address::parse("info@sipserver1.ourtest.com").unwrap();
    let route_of = |a: &postrider::Address| assembly.router().explain(a).to_string();
    assert!(
        route_of(&info).contains("mailer=local user=root"),
        "{}",
        route_of(&info)
    );
    assert!(
        local
            .verify("root", "sipserver1.ourtest.com")
            .to_string()
            .starts_with("root... deliverable: mailer local, user root")
    );

    write("aliases", "postmaster: root\nroot: admin@example.net\n");
    write(
        "virtusertable",
        "info@sipserver1.ourtest.com error:nouser 550 5.1.1 no such mailbox\n",
    );
    assembly.reload(&config).unwrap();
    let forwarded = "root... forwarded: admin@example.net";
    assert_eq!(
        local.verify("root", "sipserver1.ourtest.com").to_string(),
        forwarded
    );
    assert!(
        route_of(&info).contains("error dsn=5.1.1 code=550"),
        "{}",
        route_of(&info)
    );

    // A broken aliases file: refused with its line, and neither table changes.
    write("aliases", "postmaster: root\nroot admin@example.org\n");
    write("virtusertable", "info@sipserver1.ourtest.com root\n");
    let err = assembly.reload(&config).unwrap_err();
    assert!(err.to_string().contains("aliases:2: "), "{err}");
    assert_eq!(
        local.verify("root", "sipserver1.ourtest.com").to_string(),
        forwarded
    );
    assert!(
        route_of(&info).contains("error dsn=5.1.1"),
        "{}",
        route_of(&info)
    );
}
