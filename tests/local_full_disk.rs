//! A full file system under a mailbox: the delivery defers with 4.3.1 (the message stays
//! queued for a retry), the mailbox is left exactly as it was (an mbox cut back to its size
//! before the append, no file in a Maildir's `new/` or `tmp/`, no lock left), and once there
//! is room again the next delivery goes through. The file system is a real tmpfs that small
//! messages fit into and a big one does not.

mod support;

use std::path::Path;
use std::sync::Arc;

use postrider::local::{LocalConfig, LocalTransport, StaticUsers, User};
use postrider::{Outcome, Route, Transport};
use support::local::{Recorder, delivery};
use support::tmpfs::Tmpfs;

/// A message of about `size` octets.
fn message(subject: &str, size: usize) -> Vec<u8> {
    let mut m = format!("Subject: {subject}\r\n\r\n").into_bytes();
    let mut n = 0;
    while m.len() < size {
        m.extend_from_slice(format!("{subject} line {n:06}\r\n").as_bytes());
        n += 1;
    }
    m
}

fn transport(fs: &Path, mailbox: &str) -> LocalTransport {
    let home = fs.join("bob");
    std::fs::create_dir(&home).unwrap();
    let mut config = LocalConfig::default();
    config.mailbox = mailbox.parse().unwrap();
    LocalTransport::new(config, "mx.ourtest.com".parse().unwrap())
        .unwrap()
        .0
        .with_users(Arc::new(StaticUsers::new([User::new("bob", 0, 0, home)])))
}

/// Delivers `body` to bob and returns the outcome.
async fn deliver(t: &LocalTransport, body: &[u8]) -> Outcome {
    let d = delivery("aaa@ourtest.com", &["bob@mx.ourtest.com"], body);
    let r = Recorder::new();
    t.deliver(&Route::local(), std::slice::from_ref(&d), &r)
        .await;
    r.outcome(d.id, 0)
}

fn assert_full_disk_deferral(o: &Outcome, path: &Path) {
    match o {
        Outcome::Deferred(d) => {
            assert_eq!(d.status.to_string(), "4.3.1", "{d:?}");
            assert!(d.text.contains(&path.display().to_string()), "{}", d.text);
            assert!(d.text.contains("the file system is full"), "{}", d.text);
        }
        other => panic!("a full disk must defer: {other:?}"),
    }
}

#[tokio::test]
async fn an_mbox_on_a_full_disk_defers_and_is_cut_back_to_what_it_held() {
    let fs = Tmpfs::mount("256k");
    let t = transport(&fs.path(), &format!("mbox:{}/%u.mbox", fs.path().display()));
    let mbox = fs.path().join("bob.mbox");
    assert!(matches!(
        deliver(&t, &message("first", 20_000)).await,
        Outcome::Delivered { .. }
    ));
    let before = std::fs::read(&mbox).unwrap();

    let o = deliver(&t, &message("too big", 400_000)).await;
    assert_full_disk_deferral(&o, &mbox);
    let now = std::fs::read(&mbox).unwrap();
    assert_eq!(
        now.len(),
        before.len(),
        "the failed append was not cut back"
    );
    assert!(now == before, "the mailbox changed under a failed append");
    assert!(!fs.path().join("bob.mbox.lock").exists(), "a lock was left");

    // The truncation gave the space back: the next message fits.
    assert!(matches!(
        deliver(&t, &message("second", 20_000)).await,
        Outcome::Delivered { .. }
    ));
    let after = String::from_utf8(std::fs::read(&mbox).unwrap()).unwrap();
    assert!(after.starts_with(std::str::from_utf8(&before).unwrap()));
    assert_eq!(after.matches("\nFrom aaa@ourtest.com ").count(), 1);
    assert!(!after.contains("too big"));
}

#[tokio::test]
async fn a_maildir_on_a_full_disk_defers_and_leaves_no_file_behind() {
    let fs = Tmpfs::mount("256k");
    let t = transport(&fs.path(), "maildir:~/Maildir");
    let md = fs.path().join("bob/Maildir");
    let o = deliver(&t, &message("too big", 400_000)).await;
    assert_full_disk_deferral(&o, &md.join("tmp"));
    for sub in ["new", "tmp"] {
        assert_eq!(
            std::fs::read_dir(md.join(sub)).unwrap().count(),
            0,
            "{sub}/ is not empty"
        );
    }
    assert!(matches!(
        deliver(&t, &message("small", 20_000)).await,
        Outcome::Delivered { .. }
    ));
    assert_eq!(std::fs::read_dir(md.join("new")).unwrap().count(), 1);
}
