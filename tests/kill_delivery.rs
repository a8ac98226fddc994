//! Never send twice what the next hop already took, with real processes: a queue of 1,000
//! messages, a next hop that takes a few milliseconds per message, and the delivering process —
//! `sendmail -q`, or the relay daemon — killed with SIGKILL at random moments, ten times, then
//! run to the end. Every message arrives, and each kill re-sends at most one message per
//! connection it had open (the one whose reply was on the wire). A SIGTERM re-sends nothing.

mod support;
use support::examples::{Site, run, stderr};
use support::relay::Relay;
use support::slow_sink::{ID_HEADER, SlowSink};

use std::path::Path;
use std::time::{Duration, SystemTime};

use postrider::spool::{FsSpool, Spool};
use postrider::{Address, Envelope, ReversePath};
use rand::Rng;

const MESSAGES: usize = 1000;
const KILLS: usize = 10;
/// Connections open at once to the one next hop ([queue] destination_concurrency's default):
/// the most messages a kill can catch between the end of their data and their record.
const CONNECTIONS: usize = 20;

async fn preload(spool: &Path) {
    let spool = FsSpool::open(spool).unwrap();
    for i in 0..MESSAGES {
        let env = Envelope::new(
            ReversePath::parse("pbx@ourtest.com").unwrap(),
            [Address::parse("alice@example.org").unwrap()],
        );
        let body = format!("{ID_HEADER}: {i}\r\nSubject: message {i}\r\n\r\nhello\r\n");
        spool
            .insert(&env, body.into(), SystemTime::now())
            .await
            .unwrap();
    }
}

async fn left_in(spool: &Path) -> usize {
    FsSpool::open(spool)
        .unwrap()
        .scan()
        .await
        .unwrap()
        .messages
        .len()
}

/// Every message arrived; returns the duplicates.
fn check(sink: &SlowSink, kills: usize) -> usize {
    let arrivals = sink.arrivals();
    let missing: Vec<usize> = (0..MESSAGES)
        .filter(|i| !arrivals.contains_key(&i.to_string()))
        .collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    let duplicates = sink.total() - MESSAGES;
    eprintln!("{MESSAGES} messages, {kills} kills: {duplicates} sent twice");
    assert!(
        duplicates <= kills * CONNECTIONS,
        "{duplicates} duplicates after {kills} kills: more than one per open connection per kill"
    );
    duplicates
}

fn pause() -> Duration {
    Duration::from_millis(rand::rng().random_range(50..700))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_run_killed_at_random_resends_at_most_one_message_per_connection() {
    let sink = SlowSink::start(Duration::from_millis(5)).await;
    let site = Site::new(sink.port());
    preload(&site.spool()).await;
    for _ in 0..KILLS {
        let mut child = site
            .command("sendmail")
            .arg("-q")
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        tokio::time::sleep(pause()).await;
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let mut last = site.command("sendmail");
    last.arg("-q");
    let out = run(last, "");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(left_in(&site.spool()).await, 0, "the queue is empty");
    check(&sink, KILLS);
}

fn relay_dir(sink_port: u16) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("relay.toml"),
        format!(
            "hostname = \"relay.test.example\"\nspool = \"spool\"\n\
             smart_host = \"[127.0.0.1]:{sink_port}\"\n[spf]\npolicy = \"off\"\n"
        ),
    )
    .unwrap();
    dir
}

async fn wait_until_delivered(sink: &SlowSink, spool: &Path) {
    let start = std::time::Instant::now();
    while sink.arrivals().len() < MESSAGES || left_in(spool).await > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "not delivered in 2 minutes: {} of {MESSAGES} arrived, {} queued",
            sink.arrivals().len(),
            left_in(spool).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_daemon_killed_at_random_resends_at_most_one_message_per_connection() {
    let sink = SlowSink::start(Duration::from_millis(5)).await;
    let mut dir = relay_dir(sink.port());
    preload(&dir.path().join("spool")).await;
    for _ in 0..KILLS {
        let relay = Relay::start_in(dir);
        tokio::time::sleep(pause()).await;
        dir = relay.kill();
    }
    let relay = Relay::start_in(dir);
    wait_until_delivered(&sink, &relay.spool()).await;
    let (code, _, _) = relay.terminate();
    assert_eq!(code, Some(0));
    check(&sink, KILLS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_stopped_with_sigterm_resends_nothing_and_logs_no_delivered_message_as_deferred() {
    // Slow enough that the stop comes in the middle of the queue.
    let sink = SlowSink::start(Duration::from_millis(20)).await;
    let dir = relay_dir(sink.port());
    preload(&dir.path().join("spool")).await;
    let relay = Relay::start_in(dir);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (code, dir, log) = relay.terminate();
    assert_eq!(code, Some(0), "{log}");
    let before = sink.total();
    assert!(
        before > 0 && before < MESSAGES,
        "stopped mid-queue: {before} arrived"
    );
    assert!(
        !log.contains("stat=Deferred"),
        "a graceful stop defers nothing:\n{log}"
    );
    let relay = Relay::start_in(dir);
    wait_until_delivered(&sink, &relay.spool()).await;
    relay.terminate();
    assert_eq!(check(&sink, 0), 0, "not one message sent twice");
}
