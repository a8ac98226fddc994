//! Local delivery read back by the real reader: a private Dovecot instance serves what
//! postrider delivered to a Maildir, to an mbox file and over LMTP, and IMAP gives back
//! exactly the bytes that were delivered, while an IMAP reader polls the mailbox during the
//! deliveries and never sees a partial message.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use postrider::local::{LocalConfig, LocalTransport, StaticUsers};
use postrider::transport::collect;
use postrider::{Outcome, Route};
use support::dovecot::{Dovecot, Store};
use support::imap::Imap;
use support::local::{Recorder, delivery};

const SENDER: &str = "aaa@ourtest.com";

/// Messages that exercise what a store may change: `From ` and `>From ` lines, a lone dot, a
/// line starting with a dot, UTF-8, a long body and one without a final line end.
fn messages() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = vec![
        b"Subject: plain\r\n\r\nhello bbb\r\n".to_vec(),
        b"Subject: from lines\r\n\r\nFrom the start\r\n>From quoted already\r\n From indented\r\n".to_vec(),
        b"Subject: dots\r\n\r\n.\r\n..two\r\n.leading\r\n".to_vec(),
        "Subject: =?UTF-8?Q?caf=C3=A9?=\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nCaf\u{e9} \u{2014} \u{1f600}\r\n"
            .as_bytes()
            .to_vec(),
    ];
    let mut big = b"Subject: big\r\n\r\n".to_vec();
    for i in 0..3000 {
        big.extend_from_slice(format!("line {i:05} of a long voicemail transcript\r\n").as_bytes());
    }
    v.push(big);
    v
}

fn transport(dovecot: &Dovecot, users: &[&str]) -> LocalTransport {
    let mut config = LocalConfig::default();
    config.mailbox = dovecot.postrider_mailbox().parse().unwrap();
    let users = StaticUsers::new(users.iter().map(|u| dovecot.user(u)));
    LocalTransport::new(config, "mx.ourtest.com".parse().unwrap())
        .unwrap()
        .0
        .with_users(Arc::new(users))
}

fn lmtp_transport(dovecot: &Dovecot) -> LocalTransport {
    let mut config = LocalConfig::default();
    config.mailbox = format!("lmtp:unix:{}", dovecot.lmtp_socket().display())
        .parse()
        .unwrap();
    LocalTransport::new(config, "mx.ourtest.com".parse().unwrap())
        .unwrap()
        .0
}

/// What a stored copy holds: postrider's trace fields, then the message as submitted.
fn stored(body: &[u8], rcpt: &str) -> Vec<u8> {
    let mut v = format!("Return-Path: <{SENDER}>\r\nDelivered-To: {rcpt}\r\n").into_bytes();
    v.extend_from_slice(body);
    v
}

/// Polls the mailbox over IMAP until `want` messages are there (or 60 s pass); every message
/// seen on the way must be one of `allowed`, complete. Returns the final contents.
struct Reader {
    polls: Arc<AtomicUsize>,
    done: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Vec<u8>>>,
}

fn reader(port: u16, user: &'static str, allowed: Vec<Vec<u8>>, want: usize) -> Reader {
    let polls = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let (p, dn) = (polls.clone(), done.clone());
    let thread = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        let (polls, done) = (p, dn);
        loop {
            let mut imap = Imap::login(port, user, "test");
            let got = imap.fetch_all();
            imap.logout();
            polls.fetch_add(1, Ordering::SeqCst);
            for m in &got {
                assert!(
                    allowed.contains(&m.body),
                    "IMAP showed a message that was not delivered as such:\n{}",
                    String::from_utf8_lossy(&m.body)
                );
            }
            if (got.len() >= want && done.load(Ordering::SeqCst)) || Instant::now() > deadline {
                return got.into_iter().map(|m| m.body).collect();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    Reader {
        polls,
        done,
        thread,
    }
}

impl Reader {
    /// Waits (up to 10 s) until the reader has looked at the mailbox again.
    async fn next_poll(&self) {
        let seen = self.polls.load(Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.polls.load(Ordering::SeqCst) <= seen + 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn finish(self) -> (usize, Vec<Vec<u8>>) {
        self.done.store(true, Ordering::SeqCst);
        let polls = self.polls.clone();
        let got = tokio::task::spawn_blocking(move || self.thread.join().unwrap())
            .await
            .unwrap();
        (polls.load(Ordering::SeqCst), got)
    }
}

/// Delivers the messages one after the other, letting the reader look between them, so it
/// sees the mailbox in every intermediate state.
async fn deliver_one_by_one(t: &LocalTransport, rcpt: &str, msgs: &[Vec<u8>], r: &Reader) {
    for m in msgs {
        r.next_poll().await;
        let d = delivery(SENDER, &[rcpt], m);
        let reports = collect(t, &Route::local(), std::slice::from_ref(&d)).await;
        assert_eq!(reports.len(), 1);
        assert!(
            matches!(reports[0].outcome, Outcome::Delivered { .. }),
            "{:?}",
            reports[0].outcome
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maildir_deliveries_read_back_over_imap_byte_for_byte() {
    let dovecot = Dovecot::start(Store::Maildir);
    let t = transport(&dovecot, &["bbb"]);
    let msgs = messages();
    let expected: Vec<Vec<u8>> = msgs.iter().map(|m| stored(m, "bbb@ourtest.com")).collect();
    let r = reader(dovecot.imap_port, "bbb", expected.clone(), msgs.len());
    deliver_one_by_one(&t, "bbb@ourtest.com", &msgs, &r).await;
    let (polls, got) = r.finish().await;
    assert!(
        polls > msgs.len(),
        "the reader ran alongside the deliveries"
    );
    assert_eq!(got, expected, "log: {}", dovecot.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mbox_deliveries_read_back_over_imap_with_from_lines_quoted() {
    let dovecot = Dovecot::start(Store::Mbox);
    let t = transport(&dovecot, &["bbb"]);
    let msgs = messages();
    // Dovecot does not remove mbox quoting when it reads: a `From ` body line arrives as
    // `>From `, and nothing else changes (mboxo: `>From ` stays as the sender wrote it).
    let expected: Vec<Vec<u8>> = msgs
        .iter()
        .map(|m| {
            let s = stored(m, "bbb@ourtest.com");
            let text = String::from_utf8(s).unwrap();
            text.replace("\r\nFrom the start", "\r\n>From the start")
                .into_bytes()
        })
        .collect();
    let r = reader(dovecot.imap_port, "bbb", expected.clone(), msgs.len());
    deliver_one_by_one(&t, "bbb@ourtest.com", &msgs, &r).await;
    let (polls, got) = r.finish().await;
    assert!(
        polls > msgs.len(),
        "the reader ran alongside the deliveries"
    );
    assert_eq!(got, expected, "log: {}", dovecot.log());
    let inbox = std::fs::read(dovecot.home("bbb").join("inbox")).unwrap();
    // Dovecot may hold its own dotlock while it syncs; postrider's is gone.
    let lock = std::fs::read_to_string(dovecot.home("bbb").join("inbox.lock")).unwrap_or_default();
    assert!(!lock.starts_with("postrider "), "{lock}");
    assert!(inbox.starts_with(b"From aaa@ourtest.com "));
}

/// Over LMTP, Dovecot writes `Return-Path:` (and, for a transaction with one recipient, its
/// own `Delivered-To:` and `Received: ... for`) above what postrider sent: `Delivered-To:`
/// and the message. Returns what follows Dovecot's fields.
fn after_dovecot_fields(got: &[u8]) -> &[u8] {
    let text = String::from_utf8_lossy(got);
    assert!(
        text.starts_with(&format!("Return-Path: <{SENDER}>\r\n")),
        "{text}"
    );
    let mut pos = 0;
    let mut in_received = false;
    for line in got.split_inclusive(|&b| b == b'\n') {
        let folded = line.starts_with(b" ") || line.starts_with(b"\t");
        if line.starts_with(b"Received: ") {
            in_received = true;
        } else if in_received && !folded {
            return &got[pos..];
        }
        pos += line.len();
    }
    panic!("no message after Dovecot's Received: field: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lmtp_deliveries_read_back_over_imap_byte_for_byte() {
    let dovecot = Dovecot::start(Store::Maildir);
    let t = lmtp_transport(&dovecot);
    let msgs = messages();
    // One LMTP transaction per message, two recipients each.
    let batch: Vec<_> = msgs
        .iter()
        .map(|m| delivery(SENDER, &["bbb@ourtest.com", "ccc@ourtest.com"], m))
        .collect();
    let reports = collect(&t, &Route::local(), &batch).await;
    assert_eq!(reports.len(), 2 * msgs.len());
    for r in &reports {
        assert!(
            matches!(r.outcome, Outcome::Delivered { .. }),
            "{:?}",
            r.outcome
        );
    }
    for user in ["bbb", "ccc"] {
        let mut imap = Imap::login(dovecot.imap_port, user, "test");
        let got = imap.fetch_all();
        imap.logout();
        assert_eq!(got.len(), msgs.len(), "{}", dovecot.log());
        for (g, m) in got.iter().zip(&msgs) {
            let mut sent = format!("Delivered-To: {user}@ourtest.com\r\n").into_bytes();
            sent.extend_from_slice(m);
            assert_eq!(
                String::from_utf8_lossy(after_dovecot_fields(&g.body)),
                String::from_utf8_lossy(&sent)
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_lmtp_mailbox_over_quota_defers_while_the_other_recipient_gets_the_message() {
    let dovecot = Dovecot::start_with(
        Store::Maildir,
        "mail_plugins = $mail_plugins quota\nplugin {\n  quota = maildir:User quota\n  quota_rule = *:storage=4K\n}\n",
    );
    let t = lmtp_transport(&dovecot);
    let filler = delivery(
        SENDER,
        &["bbb@ourtest.com"],
        &[b"Subject: fill\r\n\r\n".as_slice(), &[b'x'; 2500], b"\r\n"].concat(),
    );
    let r = collect(&t, &Route::local(), std::slice::from_ref(&filler)).await;
    assert!(
        matches!(r[0].outcome, Outcome::Delivered { .. }),
        "{:?}",
        r[0].outcome
    );
    let big = delivery(
        SENDER,
        &["bbb@ourtest.com", "ccc@ourtest.com"],
        &[b"Subject: big\r\n\r\n".as_slice(), &[b'y'; 2500], b"\r\n"].concat(),
    );
    let recorder = Recorder::new();
    postrider::Transport::deliver(&t, &Route::local(), std::slice::from_ref(&big), &recorder).await;
    match recorder.outcome(big.id, 0) {
        Outcome::Deferred(d) => {
            assert_eq!(d.status.to_string(), "4.2.2", "{d:?}");
            assert!(d.text.contains("uota"), "{}", d.text);
        }
        other => panic!("bbb over quota: {other:?}\n{}", dovecot.log()),
    }
    assert!(matches!(
        recorder.outcome(big.id, 1),
        Outcome::Delivered { .. }
    ));
}
