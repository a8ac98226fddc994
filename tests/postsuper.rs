//! `examples/postsuper.rs` as a real process on a real spool: delete, hold and release by queue
//! id, by recipient domain, by sender and ALL, counted in Postfix's words; a message another
//! process is delivering (it holds the claim) is reported busy, never changed under it.

mod support;
use support::examples::{Site, run, stderr};

use std::time::SystemTime;

use postrider::spool::{FsSpool, Spool};
use postrider::{Address, Envelope, QueueId, ReversePath};

async fn queue(spool: &FsSpool, from: &str, to: &str) -> QueueId {
    let env = Envelope::new(
        ReversePath::parse(from).unwrap(),
        [Address::parse(to).unwrap()],
    );
    spool
        .insert(&env, "Subject: x\r\n\r\nhi\r\n".into(), SystemTime::now())
        .await
        .unwrap()
}

fn postsuper(site: &Site, args: &[&str]) -> (Option<i32>, String) {
    let mut cmd = site.command("postsuper");
    cmd.args(args);
    let out = run(cmd, "");
    (out.status.code(), stderr(&out))
}

async fn held(spool: &FsSpool, id: &QueueId) -> bool {
    spool.load(id).await.unwrap().state.held
}

#[tokio::test]
async fn postsuper_deletes_holds_and_releases_by_id_domain_sender_and_all() {
    let site = Site::new(1);
    let spool = FsSpool::open(site.spool()).unwrap();
    let cron1 = queue(&spool, "cron@pbx.example", "root@a.example").await;
    let cron2 = queue(&spool, "cron@pbx.example", "root@b.example").await;
    let vm = queue(&spool, "voicemail@pbx.example", "alice@b.example").await;
    let other = queue(&spool, "voicemail@pbx.example", "bob@sub.c.example").await;

    let (code, err) = postsuper(&site, &["-h", "ALL", "-R", "b.example"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(err, "postsuper: Placed on hold: 2 messages\n");
    assert!(held(&spool, &cron2).await && held(&spool, &vm).await);
    assert!(!held(&spool, &cron1).await && !held(&spool, &other).await);

    let (code, err) = postsuper(&site, &["-H", vm.as_str()]);
    assert_eq!(
        (code, err.as_str()),
        (Some(0), "postsuper: Released from hold: 1 message\n")
    );
    assert!(!held(&spool, &vm).await);

    let (code, err) = postsuper(&site, &["-d", "ALL", "-S", "cron@"]);
    assert_eq!(
        (code, err.as_str()),
        (Some(0), "postsuper: Deleted: 2 messages\n")
    );
    let left: Vec<QueueId> = spool
        .scan()
        .await
        .unwrap()
        .messages
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(left.len(), 2);
    assert!(left.contains(&vm) && left.contains(&other));

    let (code, err) = postsuper(&site, &["-d", "ALL"]);
    assert_eq!(
        (code, err.as_str()),
        (Some(0), "postsuper: Deleted: 2 messages\n")
    );
    assert!(spool.scan().await.unwrap().messages.is_empty());
}

#[tokio::test]
async fn a_message_being_delivered_elsewhere_is_reported_busy_and_left_alone() {
    let site = Site::new(1);
    let spool = FsSpool::open(site.spool()).unwrap();
    let busy = queue(&spool, "a@pbx.example", "x@a.example").await;
    let free = queue(&spool, "a@pbx.example", "y@a.example").await;
    // This process plays the queue run that is delivering `busy`.
    let claim = spool.claim(&busy).await.unwrap().expect("the claim");
    let (code, err) = postsuper(&site, &["-d", "ALL"]);
    assert_eq!(code, Some(75), "{err}");
    assert!(err.contains("postsuper: Deleted: 1 message\n"), "{err}");
    assert!(
        err.contains(&format!("{busy}: being delivered by another process")),
        "{err}"
    );
    assert!(
        spool.load(&busy).await.is_ok(),
        "the claimed message is untouched"
    );
    assert!(spool.load(&free).await.is_err());
    drop(claim);
}

#[tokio::test]
async fn bad_arguments_say_what_is_wrong() {
    let site = Site::new(1);
    let (code, err) = postsuper(&site, &["-d", "NOTANID"]);
    assert_eq!(code, Some(64));
    assert!(err.contains("NOTANID: not a queue id"), "{err}");
    let (code, err) = postsuper(&site, &["-d", "ALL", "-R", "a.example", "-S", "x"]);
    assert_eq!(code, Some(64), "{err}");
    let (code, _) = postsuper(&site, &["ALL"]);
    assert_eq!(code, Some(64));
}
