//! A large queue: `POSTRIDER_BENCH_MESSAGES` (default 100,000) messages deferred for a dead
//! next hop, in an `FsSpool`. Measures, each once:
//!
//! - `FsSpool::open` + `scan` (what engine start-up reads), with the heap the returned report
//!   holds per message (a counting allocator) and the RSS it adds;
//! - the streaming `FsSpool::list` over the whole queue (what `mailq` reads), with the most
//!   heap it holds at any moment;
//! - `Engine::start` on that spool (scan + index; no message is due), with its RSS delta.
//!
//! With `POSTRIDER_BENCH_LOOP=1` (root) the spool is on an ext4 image of its own, loop-mounted
//! and remounted before each cold measurement, so "cold" means nothing of the spool cached;
//! otherwise it lives under `POSTRIDER_BENCH_DIR` (or `target/tmp`) and only warm figures are
//! taken. Not a criterion bench: one queue of 100,000 takes a minute to fill. Figures:
//! `benches/README.md`, "Large queue".

#[path = "support/dead_queue.rs"]
mod dead_queue;
#[path = "support/engine.rs"]
mod engine;
#[path = "support/heap.rs"]
mod heap;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use heap::{live, peak, reset_peak, rss};
use postrider::route::Mailertable;
use postrider::spool::{CommitMode, FsSpool, FsSpoolOptions, Spool};
use postrider::{Address, Envelope, ReversePath};

/// CPU time (user + system) this process has used, all threads.
fn cpu() -> Duration {
    // SAFETY: an all-zero rusage is a valid out-parameter, filled by the call.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a properly sized, writable rusage.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) }, 0);
    let t = |tv: libc::timeval| Duration::new(tv.tv_sec as u64, tv.tv_usec as u32 * 1000);
    t(u.ru_utime) + t(u.ru_stime)
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// An ext4 image of the spool's own, mounted on a temporary directory while it lives.
struct LoopFs {
    image: PathBuf,
    mount: tempfile::TempDir,
}

impl LoopFs {
    fn new(base: &Path) -> LoopFs {
        std::fs::create_dir_all(base).unwrap();
        let image = base.join(format!("large-queue-{}.img", std::process::id()));
        run("truncate", &["-s", "16G", image.to_str().unwrap()]);
        run("mkfs.ext4", &["-q", "-F", image.to_str().unwrap()]);
        let fs = LoopFs {
            image,
            mount: tempfile::tempdir().unwrap(),
        };
        fs.mount();
        fs
    }

    fn mount(&self) {
        run(
            "mount",
            &[
                "-o",
                "loop",
                self.image.to_str().unwrap(),
                self.mount.path().to_str().unwrap(),
            ],
        );
    }

    /// Unmounts and mounts again: nothing of the file system stays cached.
    fn remount(&self) {
        run("umount", &[self.mount.path().to_str().unwrap()]);
        self.mount();
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.mount.path()).status();
        let _ = std::fs::remove_file(&self.image);
    }
}

fn run(cmd: &str, args: &[&str]) {
    let status = Command::new(cmd)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(status.success(), "{cmd} {args:?}: {status}");
}

fn envelope(i: u64) -> Envelope {
    let mut e = Envelope::new(
        ReversePath::parse("pbx@example.com").unwrap(),
        [Address::parse(&format!("user{}@dead-hop{}.example", i % 1000, i % 10)).unwrap()],
    );
    e.set_envid(&format!("voicemail-{i}")).unwrap();
    e
}

fn main() {
    let n: u64 = std::env::var("POSTRIDER_BENCH_MESSAGES")
        .ok()
        .map(|v| v.parse().expect("POSTRIDER_BENCH_MESSAGES is a number"))
        .unwrap_or(100_000);
    let base = std::env::var_os("POSTRIDER_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    let loop_fs =
        (std::env::var("POSTRIDER_BENCH_LOOP").as_deref() == Ok("1")).then(|| LoopFs::new(&base));
    let root = match &loop_fs {
        Some(fs) => fs.mount.path().join("spool"),
        None => base.join(format!("large-queue-{}", std::process::id())),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mode = if loop_fs.is_some() {
        CommitMode::FileSystem
    } else {
        CommitMode::Auto
    };
    let options = FsSpoolOptions::new().commit(mode);

    let spool = FsSpool::open_with(&root, options).unwrap();
    eprintln!(
        "large queue: {n} messages in {} (commit {:?}{})",
        root.display(),
        spool.commit_mode(),
        if loop_fs.is_some() {
            ", own ext4 image"
        } else {
            ""
        }
    );
    let start = Instant::now();
    rt.block_on(dead_queue::fill(&spool, n, envelope));
    let took = start.elapsed();
    eprintln!(
        "filled: {n} inserts + {n} save_state in {took:.1?} ({:.0} messages/s)",
        n as f64 / took.as_secs_f64()
    );
    drop(spool);

    let mut report = Vec::new();
    let mut note = |line: String| {
        eprintln!("{line}");
        report.push(line);
    };
    let cold_passes: &[bool] = if loop_fs.is_some() {
        &[true, false]
    } else {
        &[false]
    };
    for &cold in cold_passes {
        let label = if cold { "cold" } else { "warm" };
        if cold && let Some(fs) = &loop_fs {
            fs.remount();
        }
        let (heap0, rss0, cpu0) = (live(), rss(), cpu());
        let start = Instant::now();
        let spool = FsSpool::open_with(&root, options).unwrap();
        let scan = rt.block_on(spool.scan()).unwrap();
        let (took, cpu1) = (start.elapsed(), cpu() - cpu0);
        assert_eq!(scan.messages.len() as u64, n);
        let (heap, rss1) = (live() - heap0, rss().saturating_sub(rss0));
        note(format!(
            "scan ({label}): {n} messages in {took:.2?} ({:.0}/s, CPU {cpu1:.2?} = {:.1} µs/message); \
             the report holds {:.0} B/message of heap ({:.1} MiB), RSS +{:.1} MiB",
            n as f64 / took.as_secs_f64(),
            cpu1.as_secs_f64() * 1e6 / n as f64,
            heap as f64 / n as f64,
            mib(heap),
            mib(rss1)
        ));
        drop(scan);

        if cold && let Some(fs) = &loop_fs {
            drop(spool);
            fs.remount();
        }
        let spool = FsSpool::open_with(&root, options).unwrap();
        let (heap0, cpu0) = (reset_peak(), cpu());
        let start = Instant::now();
        let mut count = 0u64;
        let mut recipients = 0usize;
        for m in spool.listing().unwrap() {
            recipients += m.unwrap().envelope.recipients.len();
            count += 1;
        }
        let (took, cpu1) = (start.elapsed(), cpu() - cpu0);
        assert_eq!(count, n);
        assert_eq!(recipients as u64, n);
        let peak = peak() - heap0;
        note(format!(
            "list ({label}): {n} messages in {took:.2?} ({:.0}/s, CPU {cpu1:.2?} = {:.1} µs/message); \
             at most {:.1} MiB of heap at once ({:.0} B/message)",
            n as f64 / took.as_secs_f64(),
            cpu1.as_secs_f64() * 1e6 / n as f64,
            mib(peak),
            peak as f64 / n as f64
        ));
        drop(spool);
    }

    // Engine start-up: scan and index, nothing due (every message deferred for an hour).
    let builder =
        engine::builder(Mailertable::builder().smart_host("[127.0.0.1]:1".parse().unwrap()));
    if let Some(fs) = &loop_fs {
        fs.remount();
    }
    let (heap0, rss0, cpu0) = (live(), rss(), cpu());
    let start = Instant::now();
    let spool: Arc<dyn Spool> = Arc::new(FsSpool::open_with(&root, options).unwrap());
    let engine = rt.block_on(builder.spool(spool).start()).unwrap();
    let (took, cpu1) = (start.elapsed(), cpu() - cpu0);
    // Let the scheduler take in what start() handed it.
    rt.block_on(async { tokio::time::sleep(Duration::from_millis(500)).await });
    let (heap, rss1) = (live().saturating_sub(heap0), rss().saturating_sub(rss0));
    note(format!(
        "engine start ({}): {} recovered in {took:.2?} (CPU {cpu1:.2?}); heap +{:.0} B/message \
         ({:.1} MiB), RSS +{:.0} B/message ({:.1} MiB)",
        if loop_fs.is_some() { "cold" } else { "warm" },
        engine.startup_report().recovered,
        heap as f64 / n as f64,
        mib(heap),
        rss1 as f64 / n as f64,
        mib(rss1)
    ));
    rt.block_on(engine.shutdown());

    eprintln!("\nsummary ({n} messages):");
    for line in &report {
        eprintln!("  {line}");
    }
    if loop_fs.is_none() {
        let _ = Command::new("rm").arg("-rf").arg(&root).spawn();
    }
}
