//! Several engines on one PostgreSQL (issue 16): durable submits per second and end-to-end
//! deliveries per second with 1, 2 and 4 engines sharing one database (a private cluster started
//! here, default durability), beside one engine on `FsSpool` on the same disk, all delivering
//! to one smtp-sink. The engines run in this process (each with its own `PgSpool`: pool, leases,
//! wake-up connection, node name), so the CPU figures below are this process's and the
//! server's. Each run submits `POSTRIDER_BENCH_MESSAGES` (default 5,000) messages of 4 KiB from
//! 64 tasks spread over the engines; "submit" stops when the last `submit` returned (every
//! message durable), "end to end" when smtp-sink has counted every message.
//!
//! Needs Debian's `postgresql` and `postfix`. Figures: `benches/README.md`, "Engine at scale".

#[path = "support/engine.rs"]
mod engine;
#[path = "../tests/support/postgres.rs"]
mod postgres;
#[path = "../tests/support/sink.rs"]
mod sink;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use engine::to_smart_host;
use postrider::engine::Engine;
use postrider::spool::pg::{PgSpool, PgSpoolConfig};
use postrider::spool::{FsSpool, Spool};
use postrider::{Address, Envelope, ReversePath};
use sink::Sink;

const SUBMITTERS: usize = 64;

fn own_cpu() -> f64 {
    // SAFETY: an all-zero rusage is a valid out-parameter, filled by the call.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a properly sized, writable rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

fn cpu_of(pids: &[u32]) -> f64 {
    // SAFETY: sysconf has no memory effects.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            let rest = stat.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?)
        })
        .sum::<f64>()
        / ticks
}

/// Submits `n` messages over `engines`; returns (submit time, end-to-end time).
async fn run(engines: &[Engine], sink: &Sink, n: u64) -> (Duration, Duration) {
    let before = sink.counts().messages;
    let body = Bytes::from(vec![b'x'; 4096]);
    let start = Instant::now();
    let tasks: Vec<_> = (0..SUBMITTERS)
        .map(|lane| {
            let engine = engines[lane % engines.len()].clone();
            let body = body.clone();
            tokio::spawn(async move {
                for _ in (lane as u64..n).step_by(SUBMITTERS) {
                    let env = Envelope::new(
                        ReversePath::parse("bench@example.test").unwrap(),
                        [Address::parse("rcpt@example.org").unwrap()],
                    );
                    engine.submit(env, body.clone()).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let submitted = start.elapsed();
    while sink.counts().messages < before + n {
        assert!(start.elapsed() < Duration::from_secs(600), "stuck");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    (submitted, start.elapsed())
}

fn main() {
    let n: u64 = std::env::var("POSTRIDER_BENCH_MESSAGES")
        .ok()
        .map(|v| v.parse().expect("POSTRIDER_BENCH_MESSAGES is a number"))
        .unwrap_or(5000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cluster = postgres::PgCluster::start();
    let sink = rt.block_on(Sink::start());
    let mut lines = Vec::new();
    let mut report =
        |what: String, n: u64, (sub, e2e): (Duration, Duration), ours: f64, pg: f64| {
            let line = format!(
                "{what}: submit {:.0}/s, end to end {:.0}/s; CPU per message: ours {:.0} µs, \
             PostgreSQL {:.0} µs; CPU busy {:.0} % of 2 cores",
                n as f64 / sub.as_secs_f64(),
                n as f64 / e2e.as_secs_f64(),
                ours * 1e6 / n as f64,
                pg * 1e6 / n as f64,
                (ours + pg) / e2e.as_secs_f64() / 2.0 * 100.0
            );
            eprintln!("{line}");
            lines.push(line);
        };
    for k in [1usize, 2, 4] {
        let url = cluster.database();
        let engines: Vec<Engine> = (0..k)
            .map(|i| {
                let config = PgSpoolConfig::new(&url)
                    .unwrap()
                    .with_node(format!("bench{i}"))
                    .with_pool_size(32)
                    .unwrap();
                let spool: Arc<dyn Spool> =
                    Arc::new(rt.block_on(PgSpool::connect(&config)).unwrap());
                rt.block_on(to_smart_host(spool, sink.port()))
            })
            .collect();
        // Warm up the pools and the sink sessions.
        rt.block_on(run(&engines, &sink, 200));
        let (ours, pg) = (own_cpu(), cpu_of(&cluster.pids()));
        let times = rt.block_on(run(&engines, &sink, n));
        let (ours, pg) = (own_cpu() - ours, cpu_of(&cluster.pids()) - pg);
        report(format!("PgSpool, {k} engine(s)"), n, times, ours, pg);
        for e in engines {
            rt.block_on(e.shutdown());
        }
    }
    let base = std::env::var_os("POSTRIDER_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    std::fs::create_dir_all(&base).unwrap();
    let dir = tempfile::Builder::new()
        .prefix("shared-queue-fs-")
        .tempdir_in(&base)
        .unwrap();
    let fs: Arc<dyn Spool> = Arc::new(FsSpool::open(dir.path()).unwrap());
    let engines = vec![rt.block_on(to_smart_host(fs, sink.port()))];
    rt.block_on(run(&engines, &sink, 200));
    let ours = own_cpu();
    let times = rt.block_on(run(&engines, &sink, n));
    report("FsSpool, 1 engine".into(), n, times, own_cpu() - ours, 0.0);
    rt.block_on(engines[0].shutdown());
    eprintln!("\nsummary ({n} messages of 4 KiB, {SUBMITTERS} submitters):");
    for l in &lines {
        eprintln!("  {l}");
    }
}
