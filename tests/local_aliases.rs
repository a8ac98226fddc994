//! Alias expansion as the local transport performs it: mailboxes delivered there and then,
//! remote targets queued through `Reports::forward`, loops, `:include:`, unknown users,
//! postmaster, `.forward`, commands and files, and the `Delivered-To:` loop check.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use postrider::local::{Aliases, LocalConfig, LocalTransport, StaticUsers, User};
use postrider::route::Origin;
use postrider::{Address, LocalTarget, Outcome, Route, Transport};
use support::dovecot::nobody;
use support::local::{Recorder, delivered_text, delivery, queue_full};

struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new() -> Site {
        let dir = tempfile::tempdir().unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        Site { dir }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn user(&self, name: &str, uid: u32) -> User {
        let home = self.path(name);
        std::fs::create_dir_all(&home).unwrap();
        let gid = if uid == 0 { 0 } else { nobody().gid };
        std::os::unix::fs::chown(&home, Some(uid), Some(gid)).unwrap();
        User::new(name, uid, gid, home)
    }

    /// A transport delivering to `HOME/Maildir`, with users root, bob, carol and nobody.
    fn transport(&self, aliases: &str, tweak: impl FnOnce(&mut LocalConfig)) -> LocalTransport {
        let mut config = LocalConfig::default();
        config.mailbox = "maildir:~/Maildir".parse().unwrap();
        tweak(&mut config);
        let n = nobody().uid;
        let mut users = StaticUsers::new([
            self.user("root", 0),
            self.user("bob", n),
            self.user("carol", n),
        ]);
        users.insert(nobody());
        let (aliases, _) = Aliases::parse(aliases, Origin::named("aliases")).unwrap();
        LocalTransport::new(config, "mx.ourtest.com".parse().unwrap())
            .unwrap()
            .0
            .with_users(Arc::new(users))
            .with_aliases(aliases)
    }

    /// The messages in `user`'s Maildir/new, oldest first by name.
    fn mailbox(&self, user: &str) -> Vec<Vec<u8>> {
        read_maildir(&self.path(user).join("Maildir"))
    }
}

fn read_maildir(md: &Path) -> Vec<Vec<u8>> {
    let mut names: Vec<PathBuf> = match std::fs::read_dir(md.join("new")) {
        Ok(r) => r.map(|e| e.unwrap().path()).collect(),
        Err(_) => return Vec::new(),
    };
    names.sort();
    names.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

const BODY: &[u8] = b"Subject: test\r\n\r\nhello\r\n";

async fn send(
    t: &LocalTransport,
    route: &Route,
    rcpts: &[&str],
    body: &[u8],
) -> (Recorder, postrider::QueueId) {
    let d = delivery("aaa@ourtest.com", rcpts, body);
    let r = Recorder::new();
    t.deliver(route, std::slice::from_ref(&d), &r).await;
    assert_eq!(r.reports().len(), rcpts.len());
    (r, d.id)
}

fn failed_status(o: &Outcome) -> (String, String) {
    match o {
        Outcome::Failed(d) => (d.status.to_string(), d.text.clone()),
        other => panic!("not failed: {other:?}"),
    }
}

#[tokio::test]
async fn remote_targets_are_forwarded_and_mailboxes_delivered_at_once() {
    let site = Site::new();
    let t = site.transport(
        "ops: jane@example.net, \\bob, kim@partner.example\n",
        |_| {},
    );
    let (r, id) = send(&t, &Route::local(), &["ops@mx.ourtest.com"], BODY).await;
    let text = delivered_text(&r.outcome(id, 0));
    let fwd = r.forwarded();
    assert_eq!(fwd.len(), 1, "one queued copy for both remote targets");
    assert!(
        text.contains(&format!(
            "forwarded as {} to jane@example.net, kim@partner.example",
            fwd[0].id
        )),
        "{text}"
    );
    assert!(text.contains("delivered to maildir"), "{text}");
    let f = &fwd[0];
    assert_eq!(f.sender.to_string(), "<aaa@ourtest.com>");
    let rcpts: Vec<String> = f.recipients.iter().map(|r| r.address.to_string()).collect();
    assert_eq!(rcpts, ["jane@example.net", "kim@partner.example"]);
    let orcpt = f.recipients[0].orcpt.as_ref().unwrap();
    assert_eq!(
        (orcpt.addr_type.as_str(), orcpt.address.as_str()),
        ("rfc822", "ops@mx.ourtest.com")
    );
    assert!(
        f.body
            .starts_with(b"Delivered-To: ops@mx.ourtest.com\r\nSubject: test\r\n")
    );
    let mail = site.mailbox("bob");
    assert_eq!(mail.len(), 1);
    assert_eq!(
        mail[0],
        b"Return-Path: <aaa@ourtest.com>\nDelivered-To: ops@mx.ourtest.com\nSubject: test\n\nhello\n"
    );
}

#[tokio::test]
async fn a_forward_that_cannot_be_queued_defers_the_alias() {
    let site = Site::new();
    let t = site.transport("ops: jane@example.net, \\bob\n", |_| {});
    let d = delivery("aaa@ourtest.com", &["ops@mx.ourtest.com"], BODY);
    let r = Recorder::new();
    *r.forward_error.lock().unwrap() = Some(queue_full());
    t.deliver(&Route::local(), std::slice::from_ref(&d), &r)
        .await;
    let report = r.report(d.id, 0);
    match &report.outcome {
        Outcome::Deferred(diag) => {
            assert_eq!(diag.status.to_string(), "4.3.1");
            assert!(
                diag.text.starts_with("jane@example.net: the spool is full"),
                "{}",
                diag.text
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(
        report
            .note
            .unwrap()
            .contains("1 of 2 targets took the message already")
    );
}

#[tokio::test]
async fn an_alias_loop_fails_with_5_4_6() {
    let site = Site::new();
    let t = site.transport("a: b\nb: c\nc: a\n", |_| {});
    let (r, id) = send(&t, &Route::local(), &["a@mx.ourtest.com"], BODY).await;
    let (status, text) = failed_status(&r.outcome(id, 0));
    assert_eq!(status, "5.4.6");
    assert_eq!(text, "alias loop: a -> b -> c -> a");
}

#[tokio::test]
async fn unknown_users_are_refused_with_sendmails_words() {
    let site = Site::new();
    let t = site.transport("team: bob, nosuch\n", |_| {});
    let (r, id) = send(
        &t,
        &Route::local(),
        &["ghost@mx.ourtest.com", "team@mx.ourtest.com"],
        BODY,
    )
    .await;
    match r.outcome(id, 0) {
        Outcome::Failed(d) => {
            assert_eq!(
                d.reply.unwrap().one_line(),
                "550 5.1.1 <ghost@mx.ourtest.com>... User unknown"
            );
        }
        other => panic!("{other:?}"),
    }
    // The alias reached bob; its other target is named in the note.
    let report = r.report(id, 1);
    assert!(matches!(report.outcome, Outcome::Delivered { .. }));
    let note = report.note.unwrap();
    assert!(
        note.contains("User unknown (alias target nosuch)"),
        "{note}"
    );
    assert_eq!(site.mailbox("bob").len(), 1);
}

#[tokio::test]
async fn postmaster_reaches_root_without_an_alias() {
    let site = Site::new();
    let t = site.transport("", |_| {});
    let (r, id) = send(&t, &Route::local(), &["PostMaster@mx.ourtest.com"], BODY).await;
    assert!(matches!(r.outcome(id, 0), Outcome::Delivered { .. }));
    assert_eq!(site.mailbox("root").len(), 1);
}

#[tokio::test]
async fn include_files_are_read_at_delivery() {
    let site = Site::new();
    let list = site.path("staff.list");
    std::fs::write(&list, "# staff\nbob,\ncarol\n").unwrap();
    let t = site.transport(&format!("staff: :include:{}\n", list.display()), |_| {});
    let (r, id) = send(&t, &Route::local(), &["staff@mx.ourtest.com"], BODY).await;
    assert!(matches!(r.outcome(id, 0), Outcome::Delivered { .. }));
    assert_eq!(site.mailbox("bob").len(), 1);
    assert_eq!(site.mailbox("carol").len(), 1);
    // An include that cannot be read defers: it may be back at the retry.
    std::fs::remove_file(&list).unwrap();
    let (r, id) = send(&t, &Route::local(), &["staff@mx.ourtest.com"], BODY).await;
    match r.outcome(id, 0) {
        Outcome::Deferred(d) => assert!(
            d.text.starts_with("cannot read :include: file"),
            "{}",
            d.text
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_message_that_already_went_through_here_is_refused_as_a_loop() {
    let site = Site::new();
    let t = site.transport("", |_| {});
    let body = b"Delivered-To: bob@mx.ourtest.com\r\nSubject: again\r\n\r\nloop\r\n";
    let (r, id) = send(&t, &Route::local(), &["bob@mx.ourtest.com"], body).await;
    let (status, text) = failed_status(&r.outcome(id, 0));
    assert_eq!(status, "5.4.6");
    assert!(
        text.starts_with("mail forwarding loop for bob@mx.ourtest.com"),
        "{text}"
    );
    assert!(site.mailbox("bob").is_empty());
}

#[tokio::test]
async fn two_recipients_reaching_one_mailbox_get_one_copy() {
    let site = Site::new();
    let t = site.transport("info: bob\nsales: bob\n", |_| {});
    let (r, id) = send(
        &t,
        &Route::local(),
        &["info@mx.ourtest.com", "sales@mx.ourtest.com"],
        BODY,
    )
    .await;
    assert!(matches!(r.outcome(id, 0), Outcome::Delivered { .. }));
    assert!(matches!(r.outcome(id, 1), Outcome::Delivered { .. }));
    assert_eq!(site.mailbox("bob").len(), 1);
}

#[tokio::test]
async fn commands_and_files_are_refused_unless_allowed() {
    let site = Site::new();
    let out = site.path("out");
    let aliases = format!(
        "cmd: \"|cat > {}\"\nfile: {}\n",
        out.display(),
        site.path("copy").display()
    );
    let t = site.transport(&aliases, |_| {});
    let (r, id) = send(
        &t,
        &Route::local(),
        &["cmd@mx.ourtest.com", "file@mx.ourtest.com"],
        BODY,
    )
    .await;
    let (status, text) = failed_status(&r.outcome(id, 0));
    assert_eq!(status, "5.7.1");
    assert!(text.contains("allow_pipes = false"), "{text}");
    let (_, text) = failed_status(&r.outcome(id, 1));
    assert!(text.contains("allow_files = false"), "{text}");
    assert!(!out.exists());
}

#[tokio::test]
async fn allowed_commands_and_files_run_as_the_default_user() {
    let site = Site::new();
    let drop_dir = site.path("drop");
    std::fs::create_dir(&drop_dir).unwrap();
    let n = nobody();
    std::os::unix::fs::chown(&drop_dir, Some(n.uid), Some(n.gid)).unwrap();
    let out = drop_dir.join("out");
    let copy = drop_dir.join("copy");
    let aliases = format!(
        "cmd: \"|cat > {0}; id -u >> {0}\"\nfile: {1}\n",
        out.display(),
        copy.display()
    );
    let t = site.transport(&aliases, |c| {
        c.allow_pipes = true;
        c.allow_files = true;
    });
    let (r, id) = send(
        &t,
        &Route::local(),
        &["cmd@mx.ourtest.com", "file@mx.ourtest.com"],
        BODY,
    )
    .await;
    assert!(
        matches!(r.outcome(id, 0), Outcome::Delivered { .. }),
        "{:?}",
        r.outcome(id, 0)
    );
    assert!(
        matches!(r.outcome(id, 1), Outcome::Delivered { .. }),
        "{:?}",
        r.outcome(id, 1)
    );
    let got = std::fs::read_to_string(&out).unwrap();
    assert!(got.starts_with("From aaa@ourtest.com "), "{got}");
    assert!(got.contains("\nReturn-Path: <aaa@ourtest.com>\nDelivered-To: cmd@mx.ourtest.com\nSubject: test\n\nhello\n"), "{got}");
    assert!(
        got.ends_with(&format!("{}\n", n.uid)),
        "ran as nobody: {got}"
    );
    use std::os::unix::fs::MetadataExt;
    let copy_text = std::fs::read_to_string(&copy).unwrap();
    assert!(
        copy_text.starts_with("From aaa@ourtest.com "),
        "{copy_text}"
    );
    assert!(copy_text.ends_with("hello\n\n"), "{copy_text}");
    assert_eq!(std::fs::metadata(&copy).unwrap().uid(), n.uid);
    // A file nobody may not write to is not written, even though this process is root.
    let locked = site.path("root-only");
    std::fs::write(&locked, b"").unwrap();
    let t = site.transport(&format!("file: {}\n", locked.display()), |c| {
        c.allow_files = true
    });
    let (r, id) = send(&t, &Route::local(), &["file@mx.ourtest.com"], BODY).await;
    match r.outcome(id, 0) {
        Outcome::Deferred(d) => assert!(d.text.contains("may not write to it"), "{}", d.text),
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read(&locked).unwrap(), b"");
}

#[tokio::test]
async fn forward_files_redirect_mail_when_enabled() {
    let site = Site::new();
    let t = site.transport("", |c| c.forward_file = Some(".forward".into()));
    std::fs::write(site.path("bob/.forward"), "\\bob, bob@home.example\n").unwrap();
    let (r, id) = send(&t, &Route::local(), &["bob@mx.ourtest.com"], BODY).await;
    assert!(matches!(r.outcome(id, 0), Outcome::Delivered { .. }));
    assert_eq!(site.mailbox("bob").len(), 1);
    assert_eq!(
        r.forwarded()[0].recipients[0].address.to_string(),
        "bob@home.example"
    );
    // Without the setting the file is not read.
    let t = site.transport("", |_| {});
    let (r, _) = send(&t, &Route::local(), &["bob@mx.ourtest.com"], BODY).await;
    assert!(r.forwarded().is_empty());
}

#[tokio::test]
async fn a_virtusertable_forward_route_queues_a_copy_for_its_address() {
    let site = Site::new();
    let t = site.transport("", |_| {});
    let route = Route::Local {
        target: LocalTarget::Forward(Address::parse("team@partner.example").unwrap()),
    };
    let (r, id) = send(&t, &route, &["sales@ourtest.com"], BODY).await;
    let text = delivered_text(&r.outcome(id, 0));
    let fwd = r.forwarded();
    assert_eq!(
        text,
        format!("forwarded as {} to team@partner.example", fwd[0].id)
    );
    assert!(
        fwd[0]
            .body
            .starts_with(b"Delivered-To: sales@ourtest.com\r\n")
    );
    // A mailertable `local:user` route delivers to that user.
    let route = Route::Local {
        target: LocalTarget::User("carol".into()),
    };
    let (r, id) = send(&t, &route, &["anything@ourtest.com"], BODY).await;
    assert!(matches!(r.outcome(id, 0), Outcome::Delivered { .. }));
    assert_eq!(site.mailbox("carol").len(), 1);
}
