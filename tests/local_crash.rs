//! Crash safety of local delivery: an engine with the local transport delivering a queue of
//! messages (up to 1.5 MB) into a Maildir or an mbox file is killed with SIGKILL at random
//! moments, round after round, then run to the end. Every message must be in the mailbox,
//! complete, at least once; a second copy may exist only for a delivery the kill caught
//! between the write and the spool's record (at most as many per kill as deliveries run at
//! once); and no mbox may ever hold part of a message.
//!
//! Each test re-executes this binary with `POSTRIDER_LOCAL_CRASH_CHILD` set, selecting its own
//! child test by name.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use postrider::engine::{Engine, Limits, RetryPolicy};
use postrider::local::{LocalConfig, LocalTransport, StaticUsers, User};
use postrider::route::Mailertable;
use postrider::spool::{FsSpool, Spool};
use postrider::transport::{Reports, Transport};
use postrider::{Address, Delivery, Envelope, ReversePath, Route};
use rand::Rng;

const CHILD_ENV: &str = "POSTRIDER_LOCAL_CRASH_CHILD";
const ROUNDS: usize = 24;
const MESSAGES: usize = 400;
/// Deliveries the child runs at once for the local route.
const PER_HOP: usize = 4;

fn message(i: usize) -> Vec<u8> {
    let size = match (i % 10, i % 3) {
        (0, _) => 1_000_000,
        (_, 0) => 64_000,
        _ => 2_000,
    };
    let mut m =
        format!("Subject: message {i}\r\nMessage-ID: <{i}@crash.test>\r\n\r\n").into_bytes();
    let mut n = 0;
    while m.len() < size {
        m.extend_from_slice(format!("message {i} line {n:06} of its body\r\n").as_bytes());
        n += 1;
    }
    m
}

/// The message as the mailbox stores it: trace fields added, LF line ends.
fn stored(i: usize) -> Vec<u8> {
    let mut m = b"Return-Path: <aaa@ourtest.com>\r\nDelivered-To: bob@ourtest.com\r\n".to_vec();
    m.extend_from_slice(&message(i));
    String::from_utf8(m)
        .unwrap()
        .replace("\r\n", "\n")
        .into_bytes()
}

/// Relay routes never occur here; an engine needs a transport for them all the same.
struct NoRelay;

#[async_trait]
impl Transport for NoRelay {
    async fn deliver(&self, _route: &Route, _batch: &[Delivery], _reports: &dyn Reports) {
        panic!("no relay route expected");
    }
}

fn bob(dir: &Path) -> User {
    User::new("bob", 0, 0, dir.join("bob"))
}

/// The child: start an engine on the spool and deliver until the queue is empty.
fn child(format: &str, dir: &Path) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut config = LocalConfig::default();
        config.mailbox = match format {
            "maildir" => format!("maildir:{}/bob/Maildir", dir.display()),
            _ => format!("mbox:{}/bob/mbox", dir.display()),
        }
        .parse()
        .unwrap();
        let local = LocalTransport::new(config, "mx.ourtest.com".parse().unwrap())
            .unwrap()
            .0
            .with_users(Arc::new(StaticUsers::new([bob(dir)])));
        let (router, _) = Mailertable::builder()
            .local_host_names_text("local-host-names", "ourtest.com\n")
            .build()
            .unwrap();
        let engine = Engine::builder()
            .hostname("mx.ourtest.com".parse().unwrap())
            .spool(Arc::new(FsSpool::open(dir.join("spool")).unwrap()))
            .router(Arc::new(router))
            .transport(Arc::new(NoRelay))
            .local_transport(Arc::new(local))
            .retry(RetryPolicy {
                initial: Duration::from_millis(100),
                max_interval: Duration::from_millis(500),
                ..RetryPolicy::default()
            })
            .limits(Limits {
                max_deliveries_per_hop: PER_HOP,
                max_batch_messages: 4,
                queue_scan_interval: None,
                ..Limits::default()
            })
            .start()
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(300);
        while !engine.list().await.unwrap().is_empty() {
            assert!(Instant::now() < deadline, "the queue did not drain");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        engine.shutdown().await;
    });
}

fn run_child(test: &str, format: &str, dir: &Path, kill_after: Option<Duration>) -> bool {
    let mut c = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1", "-q"])
        .env(CHILD_ENV, format!("{format}:{}", dir.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    match kill_after {
        Some(after) => {
            let start = Instant::now();
            while start.elapsed() < after {
                if let Some(status) = c.try_wait().unwrap() {
                    assert!(status.success(), "child failed: {status}");
                    return false;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            c.kill().unwrap();
            c.wait().unwrap();
            true
        }
        None => {
            let status = c.wait().unwrap();
            assert!(status.success(), "final child failed: {status}");
            false
        }
    }
}

fn queued(dir: &Path) -> usize {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        FsSpool::open(dir.join("spool"))
            .unwrap()
            .scan()
            .await
            .unwrap()
            .messages
            .len()
    })
}

fn setup(messages: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("bob")).unwrap();
    enqueue(dir.path(), 0..messages);
    dir
}

/// Queues messages `range` (their numbers pick their bodies) for bob.
fn enqueue(dir: &Path, range: std::ops::Range<usize>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let spool = FsSpool::open(dir.join("spool")).unwrap();
        for i in range {
            let env = Envelope::new(
                ReversePath::parse("aaa@ourtest.com").unwrap(),
                [Address::parse("bob@ourtest.com").unwrap()],
            );
            spool
                .insert(&env, Bytes::from(message(i)), SystemTime::now())
                .await
                .unwrap();
        }
    });
}

/// Kills the child ROUNDS times (at least), then lets one run to the end. When the queue
/// drains before enough kills (a fast disk), another MESSAGES messages are queued, so every
/// kill can catch deliveries however quick the machine is. Returns the kills and the number
/// of messages queued in all.
fn crash_rounds(test: &str, format: &str, dir: &Path) -> (usize, usize) {
    let mut rng = rand::rng();
    let mut kills = 0;
    let mut rounds = 0;
    let mut total = MESSAGES;
    while kills < ROUNDS && rounds < ROUNDS * 4 {
        rounds += 1;
        let after = Duration::from_millis(rng.random_range(10..150));
        if run_child(test, format, dir, Some(after)) {
            kills += 1;
        }
        if queued(dir) == 0 && kills < ROUNDS {
            enqueue(dir, total..total + MESSAGES);
            total += MESSAGES;
        }
    }
    run_child(test, format, dir, None);
    assert_eq!(queued(dir), 0, "the last run emptied the queue");
    (kills, total)
}

/// Checks the copies found: each message at least once, duplicates within the bound.
fn check_copies(copies: &[Vec<u8>], kills: usize, total: usize) {
    let expected: HashMap<Vec<u8>, usize> = (0..total).map(|i| (stored(i), i)).collect();
    eprintln!("{} copies of {total} messages", copies.len());
    let mut count = vec![0usize; total];
    for c in copies {
        let Some(&i) = expected.get(c) else {
            let head = String::from_utf8_lossy(&c[..c.len().min(200)]);
            panic!(
                "a stored message is not one that was sent ({} octets): {head}",
                c.len()
            );
        };
        count[i] += 1;
    }
    let missing: Vec<usize> = (0..total).filter(|&i| count[i] == 0).collect();
    assert!(missing.is_empty(), "messages never delivered: {missing:?}");
    let duplicates: usize = count.iter().map(|c| c - 1).sum();
    assert!(
        duplicates <= kills * PER_HOP,
        "{duplicates} duplicates after {kills} kills (at most {PER_HOP} deliveries at once)"
    );
    eprintln!("{kills} kills, {duplicates} duplicate deliveries");
}

fn child_dir() -> Option<(String, PathBuf)> {
    let v = std::env::var(CHILD_ENV).ok()?;
    let (format, dir) = v.split_once(':')?;
    Some((format.to_string(), PathBuf::from(dir)))
}

#[test]
fn maildir_deliveries_survive_sigkill_at_random_moments() {
    if let Some((format, dir)) = child_dir() {
        return child(&format, &dir);
    }
    let dir = setup(MESSAGES);
    let (kills, total) = crash_rounds(
        "maildir_deliveries_survive_sigkill_at_random_moments",
        "maildir",
        dir.path(),
    );
    assert!(
        kills >= ROUNDS,
        "only {kills} kills: the deliveries were too quick"
    );
    let md = dir.path().join("bob/Maildir");
    let mut copies = Vec::new();
    for e in std::fs::read_dir(md.join("new")).unwrap() {
        copies.push(std::fs::read(e.unwrap().path()).unwrap());
    }
    // Files a kill left in tmp/ are invisible to readers (Dovecot deletes them after 36 h).
    let leftovers = std::fs::read_dir(md.join("tmp")).unwrap().count();
    eprintln!("{leftovers} files left in tmp/");
    check_copies(&copies, kills, total);
}

/// Splits an mbox into its messages (the `From ` line and the final blank line removed).
/// The bodies sent hold no `From ` lines, so every `From ` line after a blank line (or at the
/// start) begins a message.
fn mbox_messages(text: &[u8]) -> Vec<Vec<u8>> {
    let mut starts = Vec::new();
    let mut pos = 0;
    for line in text.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b"From ") && (pos == 0 || text[..pos].ends_with(b"\n\n")) {
            starts.push(pos);
        }
        pos += line.len();
    }
    assert!(
        text.is_empty() || starts.first() == Some(&0),
        "the mbox does not start with a From line"
    );
    let mut out = Vec::new();
    for (k, &s) in starts.iter().enumerate() {
        let end = starts.get(k + 1).copied().unwrap_or(text.len());
        let entry = &text[s..end];
        let after_from = entry.iter().position(|&b| b == b'\n').unwrap() + 1;
        let body = entry[after_from..]
            .strip_suffix(b"\n")
            .unwrap_or_else(|| panic!("message at offset {s} does not end with a blank line"));
        out.push(body.to_vec());
    }
    out
}

#[test]
fn mbox_deliveries_survive_sigkill_and_never_leave_a_partial_message() {
    if let Some((format, dir)) = child_dir() {
        return child(&format, &dir);
    }
    let dir = setup(MESSAGES);
    let (kills, total) = crash_rounds(
        "mbox_deliveries_survive_sigkill_and_never_leave_a_partial_message",
        "mbox",
        dir.path(),
    );
    assert!(
        kills >= ROUNDS,
        "only {kills} kills: the deliveries were too quick"
    );
    let text = std::fs::read(dir.path().join("bob/mbox")).unwrap();
    let copies = mbox_messages(&text);
    check_copies(&copies, kills, total);
    assert!(
        !dir.path().join("bob/mbox.lock").exists(),
        "a lock was left behind"
    );
}

#[test]
fn a_killed_append_is_cut_off_before_the_next_message() {
    // The same repair the rounds above rely on, forced: a half-written message with its
    // holder's lock, then one more delivery by a fresh engine.
    if let Some((format, dir)) = child_dir() {
        return child(&format, &dir);
    }
    let dir = setup(3);
    run_child(
        "a_killed_append_is_cut_off_before_the_next_message",
        "mbox",
        dir.path(),
        None,
    );
    let mbox = dir.path().join("bob/mbox");
    let whole = std::fs::read(&mbox).unwrap();
    // A dead process's lock and the first 1000 octets of another message.
    let meta = std::fs::metadata(&mbox).unwrap();
    use std::os::unix::fs::MetadataExt;
    let journal = format!(
        "postrider pid=999999 token=0000000000000001 host={} dev={} ino={} size={} end={}\n",
        hostname(),
        meta.dev(),
        meta.ino(),
        meta.len(),
        meta.len() + 5000
    );
    std::fs::write(dir.path().join("bob/mbox.lock"), journal).unwrap();
    let mut partial = whole.clone();
    partial.extend_from_slice(&b"From aaa@ourtest.com Thu Jan  1 00:00:00 1970\nSubject: half"[..]);
    partial.extend(std::iter::repeat_n(b'z', 1000));
    std::fs::write(&mbox, &partial).unwrap();
    // One more message through a fresh engine.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let spool = FsSpool::open(dir.path().join("spool")).unwrap();
        let env = Envelope::new(
            ReversePath::parse("aaa@ourtest.com").unwrap(),
            [Address::parse("bob@ourtest.com").unwrap()],
        );
        spool
            .insert(&env, Bytes::from(message(1)), SystemTime::now())
            .await
            .unwrap();
    });
    run_child(
        "a_killed_append_is_cut_off_before_the_next_message",
        "mbox",
        dir.path(),
        None,
    );
    let text = std::fs::read(&mbox).unwrap();
    assert!(text.starts_with(&whole));
    let rest = mbox_messages(&text[whole.len()..]);
    assert_eq!(rest, vec![stored(1)]);
}

fn hostname() -> String {
    let out = Command::new("hostname").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}
