//! FsSpool across process boundaries: writers killed with SIGKILL at random moments (while
//! inserting, saving states and removing), a format-1 conversion killed at random moments, and
//! processes racing for the same claim.
//!
//! Each test re-executes this test binary with `POSTRIDER_SPOOL_TEST_CHILD` set, selecting
//! itself by name; the child does its part and reports on stdout, one line per event, each
//! written only after the spool call returned.

mod support;
use support::spool as spool_support;
use support::tmpfs::Tmpfs;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

use bytes::Bytes;
use postrider::QueueId;
use postrider::spool::fs::{CommitMode, FsSpoolOptions};
use postrider::spool::{FsSpool, MessageState, Spool};
use rand::Rng;
use spool_support::{body_for, envelope, envelope_with, names, saved_k, seed_of, state_for};

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
        "saving ",
        "saved ",
        "removing ",
        "removed ",
        "opening",
        "opened",
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

// ---------------------------------------------------------------------------------------------
// Crash safety

/// What the parent learned from the children's reports.
#[derive(Default)]
struct Acks {
    inserted: HashSet<QueueId>,
    /// The highest state number whose save returned, per message.
    saved: HashMap<QueueId, u32>,
    /// The highest state number a save was started for, per message.
    saving: HashMap<QueueId, u32>,
    removing: HashSet<QueueId>,
    removed: HashSet<QueueId>,
    saves_acked: usize,
}

impl Acks {
    /// Saves and removes started but not reported done: where the kill found the writer.
    fn in_flight(&self) -> (usize, usize) {
        let saves = self
            .saving
            .iter()
            .filter(|(id, k)| self.saved.get(id).copied().unwrap_or(0) < **k)
            .count();
        let removes = self.removing.difference(&self.removed).count();
        (saves, removes)
    }
}

impl Acks {
    fn record(&mut self, line: &str) {
        let mut words = line.split(' ');
        let event = words.next().unwrap();
        let id: QueueId = words.next().unwrap().parse().unwrap();
        let k = || -> u32 { line.rsplit(' ').next().unwrap().parse().unwrap() };
        match event {
            "inserted" => {
                self.inserted.insert(id);
            }
            "saving" => {
                self.saving.insert(id, k());
            }
            "saved" => {
                self.saved.insert(id, k());
                self.saves_acked += 1;
            }
            "removing" => {
                self.removing.insert(id);
            }
            "removed" => {
                self.removed.insert(id);
            }
            other => panic!("unexpected event {other}"),
        };
    }
}

/// Inserts forever from several tasks; each task then saves a run of states of its message
/// ([`state_for`], reported "saving ID k" before the call and "saved ID k" after it returned)
/// and sometimes removes it ("removing ID", "removed ID"), so a kill lands in every one of
/// the three.
fn insert_forever(dir: &Path, mode: CommitMode) {
    runtime().block_on(async {
        let spool = FsSpool::open_with(dir, FsSpoolOptions::new().commit(mode)).unwrap();
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
        let (seed, len, recipients, saves, remove) = {
            let mut rng = rand::rng();
            // Mostly small, sometimes large enough that the kill lands mid-write.
            let len = if rng.random_bool(0.2) {
                rng.random_range(0..256 * 1024)
            } else {
                rng.random_range(0..8 * 1024)
            };
            // Many recipients make slots that span pages, so a kill can tear a slot write.
            let recipients = if rng.random_bool(0.3) {
                rng.random_range(10..60)
            } else {
                rng.random_range(1..4)
            };
            (
                rng.random::<u64>() >> 1,
                len,
                recipients,
                rng.random_range(0..12u32),
                rng.random_bool(0.7),
            )
        };
        let (id, claim) = spool
            .insert_claimed(
                &envelope_with(seed, len, recipients),
                Bytes::from(body_for(seed, len)),
                std::time::SystemTime::now(),
            )
            .await
            .unwrap();
        say(&format!("inserted {id}"));
        let initial = spool.load(&id).await.unwrap().state;
        for k in 1..=saves {
            say(&format!("saving {id} {k}"));
            spool
                .save_state(&id, &state_for(&initial, k))
                .await
                .unwrap();
            say(&format!("saved {id} {k}"));
        }
        if remove {
            say(&format!("removing {id}"));
            spool.remove(&id).await.unwrap();
            say(&format!("removed {id}"));
        }
        drop(claim);
    }
}

/// The state a message had when it was inserted (every recipient pending, no attempts).
fn initial_state(m: &postrider::spool::QueuedMessage) -> MessageState {
    MessageState::new(&m.envelope, m.state.size, m.state.arrival)
}

#[test]
fn a_writer_killed_at_random_moments_never_loses_an_acknowledged_insert_or_save() {
    const NAME: &str =
        "a_writer_killed_at_random_moments_never_loses_an_acknowledged_insert_or_save";
    if let Ok(role) = std::env::var(CHILD_ENV) {
        let (mode, dir) = role
            .strip_prefix("insert:")
            .unwrap()
            .split_once(':')
            .unwrap();
        return insert_forever(Path::new(dir), mode_named(mode));
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("spool");
    let rt = runtime();
    let mut all = Acks::default();
    let mut verified: HashSet<QueueId> = HashSet::new();
    let mut rng = rand::rng();
    let mut states_checked = 0usize;
    let (mut kills_in_save, mut kills_in_remove) = (0usize, 0usize);

    for round in 0..ROUNDS {
        // Both commit modes: their inserts and removals make data durable in different orders.
        let mode = [CommitMode::PerFile, CommitMode::FileSystem][round % 2];
        // Messages of earlier rounds stay as their writer left them: count this round's only.
        let before = all.in_flight();
        let mut child = spawn_child(NAME, &format!("insert:{mode:?}:{}", root.display()));
        let rx = lines(&mut child);
        // Kill after a random number of events (0 = while it is starting up), with the other
        // tasks somewhere inside their own inserts, saves and removes.
        let kill_after = rng.random_range(0..120);
        let mut events = 0;
        while events < kill_after {
            let line = next_event(&rx)
                .unwrap_or_else(|| panic!("round {round}: the writer exited on its own"));
            all.record(&line);
            events += 1;
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
            all.record(&line);
        }
        let (saves, removes) = all.in_flight();
        let (saves, removes) = (saves - before.0, removes - before.1);
        kills_in_save += usize::from(saves > 0);
        kills_in_remove += usize::from(removes > 0);

        let scan = rt.block_on(async {
            let spool = FsSpool::open(&root).unwrap();
            let scan = spool.scan().await.unwrap();
            // Every message listed is whole: it reads back the same, and its body is the one
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
                }
                assert_eq!(spool.load(&m.id).await.unwrap(), *m);
            }
            scan
        });
        eprintln!(
            "round {round} ({mode:?}): {events} events, killed during {saves} saves and \
             {removes} removes, orphans {} listed {}",
            scan.orphans_removed,
            scan.messages.len()
        );
        assert!(
            scan.quarantined.is_empty(),
            "round {round}: a crash produced unreadable files: {:?}",
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
        // Every state read back is one that was written, whole (or shortened as a whole to
        // fit its slot), never older than the last save that returned and never newer than
        // the last one started.
        for m in &scan.messages {
            let k = saved_k(&initial_state(m), &m.state).unwrap_or_else(|| {
                panic!(
                    "round {round}: {} has a state nobody saved: {:?}",
                    m.id, m.state
                )
            });
            let acked = all.saved.get(&m.id).copied().unwrap_or(0);
            let started = all.saving.get(&m.id).copied().unwrap_or(0);
            assert!(
                acked <= k && k <= started,
                "round {round}: {} reads as state {k}, saved {acked}, started {started}",
                m.id
            );
            states_checked += 1;
        }
        // Nothing half-written remains once the scan has cleaned up: no temporary files, and
        // every file in the queue is a listed message.
        assert!(names(&root.join("tmp")).is_empty(), "round {round}");
        let mut expected: Vec<String> = listed.iter().map(|id| id.to_string()).collect();
        expected.sort();
        assert_eq!(names(&root.join("queue")), expected, "round {round}");
    }
    eprintln!(
        "{} inserts, {} saves, {} removes acknowledged; {states_checked} states checked; \
         {kills_in_save} kills during a save, {kills_in_remove} during a remove",
        all.inserted.len(),
        all.saves_acked,
        all.removed.len()
    );
    assert!(
        all.inserted.len() >= ROUNDS && all.saves_acked >= ROUNDS && !all.removed.is_empty(),
        "too little happened in {ROUNDS} rounds to test anything"
    );
    assert!(
        kills_in_save > 0 && kills_in_remove > 0,
        "no kill landed in a save ({kills_in_save}) or a remove ({kills_in_remove})"
    );
}

// ---------------------------------------------------------------------------------------------
// Conversion from format 1

/// Messages in each format-1 spool the conversion test converts.
const V1_MESSAGES: usize = 150;
const CONVERSION_ROUNDS: usize = 20;

/// Says "opening", opens the spool (converting it) in commit mode `mode` and says "opened".
fn open_and_report(dir: &Path, mode: CommitMode) {
    say("opening");
    let spool = FsSpool::open_with(dir, FsSpoolOptions::new().commit(mode)).unwrap();
    say("opened");
    drop(spool);
}

fn mode_named(name: &str) -> CommitMode {
    match name {
        "PerFile" => CommitMode::PerFile,
        "FileSystem" => CommitMode::FileSystem,
        other => panic!("unknown commit mode {other}"),
    }
}

/// A format-1 spool of `V1_MESSAGES` messages; returns (id, seed, len) of each.
fn v1_spool(root: &Path, rng: &mut impl Rng) -> Vec<(QueueId, u64, usize)> {
    (0..V1_MESSAGES)
        .map(|_| {
            let (seed, len) = (rng.random::<u64>() >> 1, rng.random_range(0..20_000));
            let attempts = (seed % 7) as u32;
            (
                spool_support::write_v1_message(root, seed, len, attempts),
                seed,
                len,
            )
        })
        .collect()
}

/// Every message of `want` is listed exactly once, whole, whatever format it is in now.
fn check_all_there(root: &Path, want: &[(QueueId, u64, usize)], round: usize) {
    let reader = FsSpool::open_with(root, FsSpoolOptions::new().read_only(true)).unwrap();
    let listed: Vec<_> = reader
        .listing()
        .unwrap()
        .map(|m| m.unwrap_or_else(|e| panic!("round {round}: {e}")))
        .collect();
    assert_eq!(listed.len(), want.len(), "round {round}");
    let rt = runtime();
    for (m, (id, seed, len)) in listed.iter().zip(want) {
        assert_eq!(m.id, *id, "round {round}");
        assert_eq!(seed_of(&m.envelope), (*seed, *len), "round {round}");
        assert_eq!(m.state.attempts, (seed % 7) as u32, "round {round}");
        let body = rt.block_on(reader.body(id)).unwrap();
        assert!(body == body_for(*seed, *len), "round {round}: body of {id}");
    }
}

#[test]
fn a_conversion_killed_at_random_moments_loses_nothing_and_duplicates_nothing() {
    const NAME: &str = "a_conversion_killed_at_random_moments_loses_nothing_and_duplicates_nothing";
    if let Ok(role) = std::env::var(CHILD_ENV) {
        let (mode, dir) = role.strip_prefix("open:").unwrap().split_once(':').unwrap();
        return open_and_report(Path::new(dir), mode_named(mode));
    }
    // On a tmpfs flushes cost nothing, so the time of a conversion is spread over all its
    // steps (writing, committing, deleting format 1) and the kills land in each of them.
    let fs_ = Tmpfs::mount("256m");
    let mut rng = rand::rng();
    let modes = [CommitMode::PerFile, CommitMode::FileSystem];
    // How long a whole conversion takes here, to aim the kills inside it.
    let full = |mode: CommitMode| {
        let root = fs_.path().join(format!("timing-{mode:?}"));
        v1_spool(&root, &mut rand::rng());
        let mut child = spawn_child(NAME, &format!("open:{mode:?}:{}", root.display()));
        let rx = lines(&mut child);
        assert_eq!(next_event(&rx).as_deref(), Some("opening"));
        let start = std::time::Instant::now();
        assert_eq!(next_event(&rx).as_deref(), Some("opened"));
        child.wait().unwrap();
        start.elapsed()
    };
    let full = [full(modes[0]), full(modes[1])];
    let mut interrupted = 0;
    for round in 0..CONVERSION_ROUNDS {
        let mode = modes[round % 2];
        let root = fs_.path().join(format!("round{round}"));
        let mut want = v1_spool(&root, &mut rng);
        want.sort();
        let mut child = spawn_child(NAME, &format!("open:{mode:?}:{}", root.display()));
        let rx = lines(&mut child);
        assert_eq!(next_event(&rx).as_deref(), Some("opening"), "round {round}");
        std::thread::sleep(full[round % 2].mul_f64(rng.random_range(0.0..1.0)));
        child.kill().unwrap();
        child.wait().unwrap();
        let files = names(&root.join("queue"));
        let v1 = files.iter().filter(|n| n.contains('.')).count();
        let partial = !names(&root.join("tmp")).is_empty() || (v1 > 0 && v1 < files.len());
        if partial {
            interrupted += 1;
        }
        eprintln!(
            "round {round} ({mode:?}): killed with {v1} format-1 files, {} format-2 files, {} in tmp/",
            files.len() - v1,
            names(&root.join("tmp")).len()
        );
        check_all_there(&root, &want, round);
        // The next start finishes the job: every message once, in format 2, nothing else.
        let spool = FsSpool::open_with(&root, FsSpoolOptions::new().commit(mode)).unwrap();
        let scan = runtime().block_on(spool.scan()).unwrap();
        assert!(
            scan.quarantined.is_empty(),
            "round {round}: {:?}",
            scan.quarantined
        );
        assert_eq!(
            scan.messages.iter().map(|m| m.id).collect::<Vec<_>>(),
            want.iter().map(|w| w.0).collect::<Vec<_>>(),
            "round {round}"
        );
        let mut expected: Vec<String> = want.iter().map(|w| w.0.to_string()).collect();
        expected.sort();
        assert_eq!(names(&root.join("queue")), expected, "round {round}");
        assert!(names(&root.join("tmp")).is_empty(), "round {round}");
        check_all_there(&root, &want, round);
        drop(spool);
        std::fs::remove_dir_all(&root).unwrap();
    }
    eprintln!("{interrupted} of {CONVERSION_ROUNDS} kills landed inside a conversion");
    assert!(interrupted > 0, "no kill landed inside a conversion");
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
