//! FsSpool across process boundaries: writers killed with SIGKILL at random moments, and
//! processes racing for the same claim.
//!
//! Each test re-executes this test binary with `POSTRIDER_SPOOL_TEST_CHILD` set, selecting
//! itself by name; the child does its part and reports on stdout, one line per event, each
//! written only after the spool call returned.

mod support;
use support::spool as spool_support;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

use bytes::Bytes;
use postrider::QueueId;
use postrider::spool::{FsSpool, Spool};
use rand::Rng;
use spool_support::{body_for, envelope, envelope_for, names, seed_of};

const CHILD_ENV: &str = "POSTRIDER_SPOOL_TEST_CHILD";
/// How long the parent waits for a child's next line before declaring it stuck: a guard
/// against a hung test, not a timing assumption.
const STUCK: Duration = Duration::from_secs(60);
const ROUNDS: usize = 24;
const INSERTERS: usize = 8;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Starts this binary running only `test`, in child mode with `role`.
fn spawn_child(test: &str, role: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1", "-q"])
        .env(CHILD_ENV, role)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// The child's stdout lines, read on a thread so the parent can wait with a limit.
fn lines(child: &mut Child) -> Receiver<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The next line with one of our event words (libtest adds its own lines).
fn next_event(rx: &Receiver<String>) -> Option<String> {
    loop {
        match rx.recv_timeout(STUCK) {
            Ok(line) if is_event(&line) => return Some(line),
            Ok(_) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => return None,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("child process stuck"),
        }
    }
}

fn is_event(line: &str) -> bool {
    [
        "inserted ",
        "saved ",
        "removing ",
        "removed ",
        "ready",
        "won",
        "lost",
    ]
    .iter()
    .any(|w| line.starts_with(w))
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
}

fn id_of(line: &str) -> QueueId {
    line.split_once(' ').unwrap().1.parse().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Crash safety

/// What the parent learned from one child's reports.
#[derive(Default)]
struct Acks {
    inserted: HashSet<QueueId>,
    saved: HashSet<QueueId>,
    removing: HashSet<QueueId>,
    removed: HashSet<QueueId>,
}

impl Acks {
    fn record(&mut self, line: &str) {
        let id = id_of(line);
        match line.split_once(' ').unwrap().0 {
            "inserted" => self.inserted.insert(id),
            "saved" => self.saved.insert(id),
            "removing" => self.removing.insert(id),
            "removed" => self.removed.insert(id),
            other => panic!("unexpected event {other}"),
        };
    }
}

/// Inserts forever from several tasks; now and then advances a message's state or removes
/// it. Each event is reported after the call returned Ok.
fn insert_forever(dir: &Path) {
    runtime().block_on(async {
        let spool = FsSpool::open(dir).unwrap();
        let tasks: Vec<_> = (0..INSERTERS)
            .map(|_| tokio::spawn(insert_loop(spool.clone())))
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
}

async fn insert_loop(spool: FsSpool) {
    loop {
        let (seed, len, roll) = {
            let mut rng = rand::rng();
            // Mostly small, sometimes large enough that the kill lands mid-write.
            let len = if rng.random_bool(0.2) {
                rng.random_range(0..256 * 1024)
            } else {
                rng.random_range(0..8 * 1024)
            };
            (rng.random::<u64>() >> 1, len, rng.random_range(0..10u8))
        };
        let id = spool
            .insert(
                &envelope_for(seed, len),
                Bytes::from(body_for(seed, len)),
                std::time::SystemTime::now(),
            )
            .await
            .unwrap();
        say(&format!("inserted {id}"));
        if roll < 3 {
            let mut state = spool.load(&id).await.unwrap().state;
            state.attempts = 1;
            spool.save_state(&id, &state).await.unwrap();
            say(&format!("saved {id}"));
        } else if roll < 5 {
            say(&format!("removing {id}"));
            spool.remove(&id).await.unwrap();
            say(&format!("removed {id}"));
        }
    }
}

#[test]
fn a_writer_killed_at_random_moments_never_loses_an_acknowledged_insert() {
    const NAME: &str = "a_writer_killed_at_random_moments_never_loses_an_acknowledged_insert";
    if let Ok(role) = std::env::var(CHILD_ENV) {
        return insert_forever(Path::new(role.strip_prefix("insert:").unwrap()));
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("spool");
    let rt = runtime();
    let mut all = Acks::default();
    let mut verified: HashSet<QueueId> = HashSet::new();
    let mut rng = rand::rng();

    for round in 0..ROUNDS {
        let mut child = spawn_child(NAME, &format!("insert:{}", root.display()));
        let rx = lines(&mut child);
        // Kill after a random number of acknowledged inserts (0 = while it is starting up),
        // with the other inserters somewhere inside their own inserts.
        let kill_after = rng.random_range(0..40);
        let mut acks = Acks::default();
        while acks.inserted.len() < kill_after {
            let line = next_event(&rx)
                .unwrap_or_else(|| panic!("round {round}: the writer exited on its own"));
            acks.record(&line);
        }
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "round {round}: {status:?}"
        );
        // Whatever it reported before dying was acknowledged too.
        while let Some(line) = next_event(&rx) {
            acks.record(&line);
        }
        all.inserted.extend(&acks.inserted);
        all.saved.extend(&acks.saved);
        all.removing.extend(&acks.removing);
        all.removed.extend(&acks.removed);

        eprintln!(
            "round {round}: {} acks {} removing",
            acks.inserted.len(),
            acks.removing.len()
        );
        let scan = rt.block_on(async {
            let spool = FsSpool::open(&root).unwrap();
            let scan = spool.scan().await.unwrap();
            // Every message listed is whole: its record reads back and its body is the one
            // its envelope describes, to the byte.
            for m in &scan.messages {
                if verified.insert(m.id) {
                    let (seed, len) = seed_of(&m.envelope);
                    assert_eq!(m.state.size, len as u64, "round {round}: {}", m.id);
                    let body = spool.body(&m.id).await.unwrap();
                    assert!(
                        body == body_for(seed, len),
                        "round {round}: body of {}",
                        m.id
                    );
                    assert_eq!(spool.load(&m.id).await.unwrap(), *m);
                }
            }
            scan
        });
        eprintln!(
            "  orphans {} listed {}",
            scan.orphans_removed,
            scan.messages.len()
        );
        assert!(
            scan.quarantined.is_empty(),
            "round {round}: a crash produced unreadable records: {:?}",
            scan.quarantined
        );
        let listed: HashSet<QueueId> = scan.messages.iter().map(|m| m.id).collect();
        for id in &all.inserted {
            assert!(
                listed.contains(id) || all.removing.contains(id),
                "round {round}: acknowledged message {id} is lost"
            );
        }
        for id in &all.removed {
            assert!(
                !listed.contains(id),
                "round {round}: removed message {id} is back"
            );
        }
        for m in &scan.messages {
            if all.saved.contains(&m.id) {
                assert_eq!(
                    m.state.attempts, 1,
                    "round {round}: saved state of {} lost",
                    m.id
                );
            }
        }
        // Nothing half-written remains once the scan has cleaned up: no temporary files, and
        // every body in the queue belongs to a listed message.
        assert!(names(&root.join("tmp")).is_empty(), "round {round}");
        let mut expected: Vec<String> = listed
            .iter()
            .flat_map(|id| [format!("{id}.df"), format!("{id}.qf")])
            .collect();
        expected.sort();
        assert_eq!(names(&root.join("queue")), expected, "round {round}");
    }
    assert!(
        all.inserted.len() >= ROUNDS,
        "only {} inserts were acknowledged in {ROUNDS} rounds",
        all.inserted.len()
    );
}

// ---------------------------------------------------------------------------------------------
// Claims across processes

/// Opens the spool, says "ready", waits for "go", tries to claim, says "won" or "lost"; a
/// winner holds the claim until its stdin closes or it is killed.
fn claim_when_told(dir: &Path, id: QueueId) {
    runtime().block_on(async {
        let spool = FsSpool::open(dir).unwrap();
        say("ready");
        let mut stdin = std::io::stdin().lock();
        let mut line = String::new();
        stdin.read_line(&mut line).unwrap();
        let claim = spool.claim(&id).await.unwrap();
        say(if claim.is_some() { "won" } else { "lost" });
        if claim.is_some() {
            // Hold it until the parent closes our stdin (or kills us).
            let _ = stdin.read_line(&mut line);
        }
        drop(claim);
    });
}

struct Contender {
    child: Child,
    stdin: ChildStdin,
    rx: Receiver<String>,
}

fn contender(test: &str, dir: &Path, id: &QueueId) -> Contender {
    let mut child = spawn_child(test, &format!("claim:{}:{id}", dir.display()));
    let stdin = child.stdin.take().unwrap();
    let rx = lines(&mut child);
    assert_eq!(next_event(&rx).as_deref(), Some("ready"));
    Contender { child, stdin, rx }
}

#[test]
fn two_processes_racing_for_a_claim_have_exactly_one_winner() {
    const NAME: &str = "two_processes_racing_for_a_claim_have_exactly_one_winner";
    if let Ok(role) = std::env::var(CHILD_ENV) {
        let (dir, id) = role
            .strip_prefix("claim:")
            .unwrap()
            .rsplit_once(':')
            .unwrap();
        return claim_when_told(Path::new(dir), id.parse().unwrap());
    }
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let spool = FsSpool::open(dir.path()).unwrap();
    let id = rt
        .block_on(spool.insert(
            &envelope(),
            Bytes::from_static(b"contested"),
            std::time::SystemTime::now(),
        ))
        .unwrap();

    for round in 0..5 {
        let mut a = contender(NAME, dir.path(), &id);
        let mut b = contender(NAME, dir.path(), &id);
        // Both are ready and waiting; release them together.
        a.stdin.write_all(b"go\n").unwrap();
        b.stdin.write_all(b"go\n").unwrap();
        let ra = next_event(&a.rx).unwrap();
        let rb = next_event(&b.rx).unwrap();
        let mut results = [ra.as_str(), rb.as_str()];
        results.sort();
        assert_eq!(results, ["lost", "won"], "round {round}");
        let (mut winner, loser) = if ra == "won" { (a, b) } else { (b, a) };
        drop(loser.stdin);
        assert!(loser.child.wait_with_output().unwrap().status.success());

        // While the winner lives, nobody else gets the message: not a third process, not us.
        let mut third = contender(NAME, dir.path(), &id);
        third.stdin.write_all(b"go\n").unwrap();
        assert_eq!(
            next_event(&third.rx).as_deref(),
            Some("lost"),
            "round {round}"
        );
        drop(third.stdin);
        assert!(third.child.wait().unwrap().success());
        assert!(
            rt.block_on(spool.claim(&id)).unwrap().is_none(),
            "round {round}"
        );

        // The winner dies without releasing anything: the kernel releases the claim.
        winner.child.kill().unwrap();
        winner.child.wait().unwrap();
        drop(winner.stdin);
        let claim = rt.block_on(spool.claim(&id)).unwrap();
        assert!(
            claim.is_some(),
            "round {round}: a dead process still holds the claim"
        );
    }
}
