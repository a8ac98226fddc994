//! Durable inserts per second into `FsSpool` with 1, 8 and 64 concurrent submitters, beside the
//! raw rate of the same directory: write a 4 KiB file in `tmp/`, fsync it, rename it into
//! `queue/`, fsync `queue/`, one at a time. The target is 64 submitters at 3x that raw rate.
//! Then `save_state` and `remove` per second with 20 and 100 concurrent callers, as the engine
//! calls them after every message of its sessions.
//!
//! The spool lives under `POSTRIDER_BENCH_DIR` if set, else under cargo's target tmp dir (a
//! real disk; on tmpfs fsync is free and the figures mean nothing). `POSTRIDER_BENCH_COMMIT`
//! chooses the commit mode: `per-file`, `file-system` (only on a file system of the spool's
//! own, e.g. a loop-mounted image: `benches/spool-own-fs.sh`), else automatic. Results:
//! `benches/README.md`.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use postrider::spool::{CommitMode, FsSpool, FsSpoolOptions, MessageState, RecipientStatus, Spool};
use postrider::{Address, Diagnostic, EnhancedStatus, Envelope, QueueId, Reply, ReversePath};

const BODY_LEN: usize = 4096;
/// Back-to-back measurements of raw and 64 submitters, and how long each runs.
const PAIRS: usize = 8;
const PAIR_TIME: Duration = Duration::from_millis(400);
const BASELINE_BEFORE: &str = "raw write_fsync_rename_fsyncdir/before";
const BASELINE_AFTER: &str = "raw write_fsync_rename_fsyncdir/after";

/// Every measured batch, kept to print the ratio to the target at the end.
static TOTALS: Mutex<BTreeMap<String, (u64, Duration)>> = Mutex::new(BTreeMap::new());

fn note(name: &str, n: u64, elapsed: Duration) {
    let mut totals = TOTALS.lock().unwrap();
    let t = totals.entry(name.to_string()).or_default();
    t.0 += n;
    t.1 += elapsed;
}

fn bench_root() -> PathBuf {
    let base = std::env::var_os("POSTRIDER_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    base.join(format!("spool-bench-{}", std::process::id()))
}

fn envelope() -> Envelope {
    Envelope::new(
        ReversePath::parse("pbx@example.com").unwrap(),
        [Address::parse("alice@example.org").unwrap()],
    )
}

/// The raw cost the spool is measured against, in the spool's own directories.
struct Raw {
    tmp: PathBuf,
    queue: PathBuf,
    queue_dir: File,
    next: AtomicU64,
}

impl Raw {
    fn new(spool: &Path) -> Raw {
        let queue = spool.join("queue");
        Raw {
            tmp: spool.join("tmp"),
            queue_dir: File::open(&queue).unwrap(),
            queue,
            next: AtomicU64::new(0),
        }
    }

    fn one(&self, body: &[u8], sync_dir: bool) {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let tmp = self.tmp.join(format!("raw-{n}"));
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .unwrap();
        f.write_all(body).unwrap();
        f.sync_all().unwrap();
        fs::rename(&tmp, self.queue.join(format!("raw-{n}"))).unwrap();
        if sync_dir {
            self.queue_dir.sync_all().unwrap();
        }
    }
}

/// The raw rates; `full` adds the rate without the directory fsync and the 64-thread rate,
/// which are context rather than the target's baseline.
fn raw(c: &mut Criterion, raw: &Arc<Raw>, label: &str, full: bool) {
    let body = vec![b'x'; BODY_LEN];
    let mut group = c.benchmark_group("spool_raw");
    group.throughput(Throughput::Elements(1));
    let variants: &[(&str, bool)] = if full {
        &[
            ("write_fsync_rename", false),
            ("write_fsync_rename_fsyncdir", true),
        ]
    } else {
        &[("write_fsync_rename_fsyncdir", true)]
    };
    for &(name, sync_dir) in variants {
        let id = format!("{name}/{label}");
        group.bench_function(BenchmarkId::from_parameter(&id), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    raw.one(&body, sync_dir);
                }
                let elapsed = start.elapsed();
                note(&format!("raw {id}"), iters, elapsed);
                elapsed
            })
        });
    }
    if !full {
        group.finish();
        return;
    }
    // The same, from 64 threads: what the disk and kernel allow at all.
    let id = format!("write_fsync_rename_fsyncdir_64_threads/{label}");
    group.bench_function(BenchmarkId::from_parameter(&id), |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|s| {
                for t in 0..64 {
                    let (raw, body) = (Arc::clone(raw), &body);
                    s.spawn(move || {
                        for _ in (t..iters).step_by(64) {
                            raw.one(body, true);
                        }
                    });
                }
            });
            let elapsed = start.elapsed();
            note(&format!("raw {id}"), iters, elapsed);
            elapsed
        })
    });
    group.finish();
}

/// A two-recipient envelope, as the state benches save: one recipient delivered, one deferred.
fn envelope2() -> Envelope {
    Envelope::new(
        ReversePath::parse("pbx@example.com").unwrap(),
        [
            Address::parse("alice@example.org").unwrap(),
            Address::parse("bob@example.net").unwrap(),
        ],
    )
}

/// Inserts `n` messages of the two-recipient envelope from 64 tasks (setup, not timed).
async fn fill(spool: &FsSpool, n: u64) -> Vec<QueueId> {
    let envelope = Arc::new(envelope2());
    let body = Bytes::from(vec![b'x'; BODY_LEN]);
    let tasks: Vec<_> = (0..64u64)
        .map(|t| {
            let (spool, envelope, body) = (spool.clone(), Arc::clone(&envelope), body.clone());
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for _ in (t..n).step_by(64) {
                    ids.push(
                        spool
                            .insert(&envelope, body.clone(), SystemTime::now())
                            .await
                            .unwrap(),
                    );
                }
                ids
            })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        ids.extend(t.await.unwrap());
    }
    ids
}

/// The state the engine saves after a session's message: one recipient delivered, the other
/// deferred with the server's reply.
fn state_after_attempt(mut state: MessageState, n: u32) -> MessageState {
    let now = SystemTime::now();
    state.attempts = n;
    state.next_attempt = now + Duration::from_secs(300);
    state.recipients[0].status = RecipientStatus::Delivered;
    state.recipients[0].attempts = n;
    state.recipients[0].last_attempt = Some(now);
    state.recipients[0].remote_mta = Some("mx.example.org. [192.0.2.1]".into());
    state.recipients[1].attempts = n;
    state.recipients[1].last_attempt = Some(now);
    state.recipients[1].last = Some(Diagnostic::remote(
        Reply::new(
            451,
            Some(EnhancedStatus::new(4, 7, 1)),
            "Greylisted, please try again in 300 seconds",
        )
        .unwrap(),
    ));
    state.recipients[1].remote_mta = Some("mx.example.net. [192.0.2.2]".into());
    state
}

/// `save_state` per second with 20 and 100 concurrent callers, each saving its own messages in
/// turn (every save a new state, so nothing is skipped as unchanged).
fn save_states(c: &mut Criterion, spool: &FsSpool, rt: &tokio::runtime::Runtime) {
    const PER_CALLER: u64 = 4;
    let mut group = c.benchmark_group("spool_save_state");
    group.throughput(Throughput::Elements(1));
    for callers in [20u64, 100] {
        let ids = Arc::new(rt.block_on(fill(spool, callers * PER_CALLER)));
        let state = rt.block_on(spool.load(&ids[0])).unwrap().state;
        group.bench_function(BenchmarkId::from_parameter(callers), |b| {
            b.to_async(rt).iter_custom(|iters| {
                let (spool, ids, state) = (spool.clone(), Arc::clone(&ids), state.clone());
                async move {
                    let start = Instant::now();
                    let tasks: Vec<_> = (0..callers)
                        .map(|t| {
                            let (spool, ids, state) =
                                (spool.clone(), Arc::clone(&ids), state.clone());
                            tokio::spawn(async move {
                                for (k, _) in (t..iters).step_by(callers as usize).enumerate() {
                                    let id = ids[(t + (k as u64 % PER_CALLER) * callers) as usize];
                                    let s = state_after_attempt(state.clone(), k as u32 + 1);
                                    spool.save_state(&id, &s).await.unwrap();
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.unwrap();
                    }
                    let elapsed = start.elapsed();
                    note(&format!("save_state {callers}"), iters, elapsed);
                    elapsed
                }
            })
        });
        for id in ids.iter() {
            rt.block_on(spool.remove(id)).unwrap();
        }
    }
    group.finish();
}

/// `remove` per second with 20 and 100 concurrent callers; the messages are inserted before
/// the clock starts.
fn removes(c: &mut Criterion, spool: &FsSpool, rt: &tokio::runtime::Runtime) {
    let mut group = c.benchmark_group("spool_remove");
    group.throughput(Throughput::Elements(1));
    for callers in [20u64, 100] {
        group.bench_function(BenchmarkId::from_parameter(callers), |b| {
            b.to_async(rt).iter_custom(|iters| {
                let spool = spool.clone();
                async move {
                    let ids = Arc::new(fill(&spool, iters).await);
                    let start = Instant::now();
                    let tasks: Vec<_> = (0..callers)
                        .map(|t| {
                            let (spool, ids) = (spool.clone(), Arc::clone(&ids));
                            tokio::spawn(async move {
                                for i in (t..iters).step_by(callers as usize) {
                                    spool.remove(&ids[i as usize]).await.unwrap();
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.unwrap();
                    }
                    let elapsed = start.elapsed();
                    note(&format!("remove {callers}"), iters, elapsed);
                    elapsed
                }
            })
        });
    }
    group.finish();
}

fn inserts(c: &mut Criterion, spool: &FsSpool, rt: &tokio::runtime::Runtime) {
    let body = Bytes::from(vec![b'x'; BODY_LEN]);
    let envelope = Arc::new(envelope());
    let mut group = c.benchmark_group("spool_insert");
    group.throughput(Throughput::Elements(1));
    for submitters in [1u64, 8, 64] {
        group.bench_function(BenchmarkId::from_parameter(submitters), |b| {
            b.to_async(rt).iter_custom(|iters| {
                let (spool, body, envelope) = (spool.clone(), body.clone(), Arc::clone(&envelope));
                async move {
                    let start = Instant::now();
                    let tasks: Vec<_> = (0..submitters)
                        .map(|t| {
                            let (spool, body, envelope) =
                                (spool.clone(), body.clone(), Arc::clone(&envelope));
                            tokio::spawn(async move {
                                for _ in (t..iters).step_by(submitters as usize) {
                                    spool
                                        .insert(
                                            &envelope,
                                            body.clone(),
                                            std::time::SystemTime::now(),
                                        )
                                        .await
                                        .unwrap();
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.unwrap();
                    }
                    let elapsed = start.elapsed();
                    note(&format!("insert {submitters}"), iters, elapsed);
                    elapsed
                }
            })
        });
    }
    group.finish();
}

/// Raw one-at-a-time and 64 submitters measured back to back, several times, order
/// alternating. On a shared machine the raw rate swings by 10x within a minute (other
/// processes' writes delay every flush; on ext4 without a journal, files deleted in the last
/// minutes slow every create), so only a ratio of neighbours in time is meaningful.
fn paired(spool: &FsSpool, raw: &Raw, rt: &tokio::runtime::Runtime) -> Vec<(f64, f64)> {
    let body = vec![b'x'; BODY_LEN];
    let envelope = Arc::new(envelope());
    let raw_rate = || {
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < PAIR_TIME {
            raw.one(&body, true);
            n += 1;
        }
        n as f64 / start.elapsed().as_secs_f64()
    };
    let insert_rate = || {
        rt.block_on(async {
            let start = Instant::now();
            let tasks: Vec<_> = (0..64)
                .map(|_| {
                    let (spool, envelope) = (spool.clone(), Arc::clone(&envelope));
                    let body = Bytes::from(vec![b'x'; BODY_LEN]);
                    tokio::spawn(async move {
                        let mut n = 0u64;
                        while start.elapsed() < PAIR_TIME {
                            spool
                                .insert(&envelope, body.clone(), std::time::SystemTime::now())
                                .await
                                .unwrap();
                            n += 1;
                        }
                        n
                    })
                })
                .collect();
            let mut n = 0;
            for t in tasks {
                n += t.await.unwrap();
            }
            n as f64 / start.elapsed().as_secs_f64()
        })
    };
    (0..PAIRS)
        .map(|i| {
            if i % 2 == 0 {
                let r = raw_rate();
                (r, insert_rate())
            } else {
                let s = insert_rate();
                (raw_rate(), s)
            }
        })
        .collect()
}

fn rate(name: &str) -> Option<f64> {
    let totals = TOTALS.lock().unwrap();
    totals
        .get(name)
        .map(|(n, d)| *n as f64 / d.as_secs_f64().max(f64::EPSILON))
}

fn summarize(pairs: &[(f64, f64)]) {
    let baseline = [BASELINE_BEFORE, BASELINE_AFTER]
        .iter()
        .filter_map(|n| rate(n))
        .fold(f64::NAN, f64::max);
    eprintln!("\nspool summary (mean over every batch criterion ran, warm-up included):");
    for (name, (n, d)) in TOTALS.lock().unwrap().iter() {
        eprintln!(
            "  {name:<55} {:>8.0}/s",
            *n as f64 / d.as_secs_f64().max(f64::EPSILON)
        );
    }
    if let Some(r64) = rate("insert 64") {
        eprintln!(
            "  64 submitters / one-at-a-time raw (best of before/after): {:.2}x (target >= 3x)",
            r64 / baseline
        );
    }
    if pairs.len() < 2 {
        return;
    }
    eprintln!(
        "\nback-to-back pairs, {PAIR_TIME:?} each (raw one-at-a-time with dir fsync | 64 submitters):"
    );
    let mut ratios: Vec<f64> = pairs
        .iter()
        .map(|(raw, ins)| {
            eprintln!("  {raw:>8.0}/s | {ins:>8.0}/s   {:.2}x", ins / raw);
            ins / raw
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    let n = ratios.len();
    eprintln!(
        "  median ratio {:.2}x, range {:.2}x..{:.2}x (target >= 3x)",
        (ratios[(n - 1) / 2] + ratios[n / 2]) / 2.0,
        ratios[0],
        ratios[n - 1]
    );
}

/// The file system type of `dir`, by its statfs magic number.
fn fs_type(dir: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized out-parameter.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    assert_eq!(rc, 0, "statfs {}", dir.display());
    #[allow(clippy::unnecessary_cast)]
    match st.f_type as i64 {
        0xEF53 => "ext4".into(),
        0x5846_5342 => "xfs".into(),
        0x9123_683E => "btrfs".into(),
        0x0102_1994 => "tmpfs".into(),
        other => format!("statfs type {other:#x}"),
    }
}

fn commit_mode() -> CommitMode {
    match std::env::var("POSTRIDER_BENCH_COMMIT").as_deref() {
        Ok("per-file") => CommitMode::PerFile,
        Ok("file-system") => CommitMode::FileSystem,
        Ok("auto") | Err(_) => CommitMode::Auto,
        Ok(other) => {
            panic!("POSTRIDER_BENCH_COMMIT={other}: expected per-file, file-system or auto")
        }
    }
}

fn spool_benches(c: &mut Criterion) {
    let root = bench_root();
    let spool = FsSpool::open_with(&root, FsSpoolOptions::new().commit(commit_mode())).unwrap();
    eprintln!(
        "spool bench: {} ({}), commit mode {:?}",
        root.display(),
        fs_type(&root),
        spool.commit_mode()
    );
    let raw_files = Arc::new(Raw::new(&root));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // Raw before and after, so drift during the run (other load, a filling disk) shows.
    raw(c, &raw_files, "before", true);
    inserts(c, &spool, &rt);
    raw(c, &raw_files, "after", false);
    save_states(c, &spool, &rt);
    removes(c, &spool, &rt);
    // Only when both sides ran (a `--bench` filter may have selected one).
    let pairs = if rate("insert 64").is_some() && rate(BASELINE_BEFORE).is_some() {
        paired(&spool, &raw_files, &rt)
    } else {
        Vec::new()
    };

    summarize(&pairs);
    drop(spool);
    // Deleting ~100k files can take a minute on a disk mounted with `discard`; let `rm` do it
    // after the bench has reported.
    match std::process::Command::new("rm")
        .arg("-rf")
        .arg(&root)
        .spawn()
    {
        Ok(child) => eprintln!(
            "removing {} in the background (rm, pid {})",
            root.display(),
            child.id()
        ),
        Err(e) => eprintln!("could not start rm for {}: {e}", root.display()),
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = spool_benches
}
criterion_main!(benches);
