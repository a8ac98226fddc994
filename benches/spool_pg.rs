//! Durable inserts per second into `PgSpool` beside `FsSpool`, with 1, 8 and 64 concurrent
//! submitters, on the same machine and disk in the same run.
//!
//! The PostgreSQL side is a private cluster (`tests/support/postgres.rs`: `initdb` in `/tmp`,
//! Unix socket, default durability: `fsync = on`, `synchronous_commit = on`), so every insert
//! is a committed, flushed transaction. The FsSpool lives under `POSTRIDER_BENCH_DIR` if set,
//! else cargo's target tmp dir (a real disk).
//!
//! Besides criterion's figures the bench prints a summary: for each spool and submitter count,
//! a fixed-length run with the rate, the CPU used per insert by this process and by the
//! PostgreSQL server processes (from `/proc`), and WAL flushes per insert (`pg_stat_wal`), which
//! name what limits the rate. Results: `benches/README.md`.

#[path = "../tests/support/postgres.rs"]
mod postgres;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use postrider::spool::pg::{PgSpool, PgSpoolConfig};
use postrider::spool::{FsSpool, Spool};
use postrider::{Address, Envelope, ReversePath};

const BODY_LEN: usize = 4096;
const SUBMITTERS: [u64; 3] = [1, 8, 64];
/// The length of each summary run.
const SUMMARY_RUN: Duration = Duration::from_secs(3);

fn envelope() -> Envelope {
    Envelope::new(
        ReversePath::parse("pbx@example.com").unwrap(),
        [Address::parse("alice@example.org").unwrap()],
    )
}

/// `iters` inserts from `submitters` tasks; the wall time.
async fn run_inserts(spool: Arc<dyn Spool>, submitters: u64, iters: u64) -> Duration {
    let body = Bytes::from(vec![b'x'; BODY_LEN]);
    let envelope = Arc::new(envelope());
    let start = Instant::now();
    let tasks: Vec<_> = (0..submitters)
        .map(|t| {
            let (spool, body, envelope) = (spool.clone(), body.clone(), envelope.clone());
            tokio::spawn(async move {
                for _ in (t..iters).step_by(submitters as usize) {
                    spool
                        .insert(&envelope, body.clone(), SystemTime::now())
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    start.elapsed()
}

/// Inserts for `length` from `submitters` tasks; how many.
async fn run_for(spool: Arc<dyn Spool>, submitters: u64, length: Duration) -> u64 {
    let body = Bytes::from(vec![b'x'; BODY_LEN]);
    let envelope = Arc::new(envelope());
    let deadline = Instant::now() + length;
    let tasks: Vec<_> = (0..submitters)
        .map(|_| {
            let (spool, body, envelope) = (spool.clone(), body.clone(), envelope.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    spool
                        .insert(&envelope, body.clone(), SystemTime::now())
                        .await
                        .unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total
}

/// CPU seconds (user + system) of this process.
fn own_cpu() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a properly sized out-parameter.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// CPU seconds (user + system) of the given processes.
fn cpu_of(pids: &[u32]) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            let rest = stat.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            // utime and stime are fields 14 and 15, i.e. 12 and 13 after the command.
            Some(f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?)
        })
        .sum::<f64>()
        / ticks
}

fn wal_syncs(cluster: &postgres::PgCluster) -> u64 {
    cluster
        .psql("postgres", "SELECT wal_sync FROM pg_stat_wal")
        .parse()
        .unwrap_or(0)
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cluster = postgres::PgCluster::start();
    let url = cluster.database();
    let config = PgSpoolConfig::new(&url)
        .unwrap()
        .with_pool_size(64)
        .unwrap();
    let pg: Arc<dyn Spool> = Arc::new(rt.block_on(PgSpool::connect(&config)).unwrap());
    let base = std::env::var_os("POSTRIDER_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    let fs_dir = tempfile::tempdir_in(base).unwrap();
    let fs: Arc<dyn Spool> = Arc::new(FsSpool::open(fs_dir.path().join("spool")).unwrap());

    let mut group = c.benchmark_group("durable_insert");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(3));
    for (name, spool) in [("pg", &pg), ("fs", &fs)] {
        for n in SUBMITTERS {
            group.bench_function(BenchmarkId::new(name, n), |b| {
                b.to_async(&rt)
                    .iter_custom(|iters| run_inserts(spool.clone(), n, iters))
            });
        }
    }
    group.finish();

    println!("\nsummary: {SUMMARY_RUN:?} per run, 4 KiB bodies, one recipient");
    println!(
        "{:<4} {:>10} {:>12} {:>16} {:>16} {:>18}",
        "", "submitters", "inserts/s", "our CPU µs/ins", "pg CPU µs/ins", "WAL flushes/ins"
    );
    for (name, spool) in [("pg", &pg), ("fs", &fs)] {
        for n in SUBMITTERS {
            let pids = cluster.pids();
            let (ours, theirs, wal) = (own_cpu(), cpu_of(&pids), wal_syncs(&cluster));
            let start = Instant::now();
            let count = rt.block_on(run_for(spool.clone(), n, SUMMARY_RUN));
            let wall = start.elapsed().as_secs_f64();
            let ours = (own_cpu() - ours) / count as f64 * 1e6;
            let theirs = (cpu_of(&cluster.pids()) - theirs) / count as f64 * 1e6;
            let wal = (wal_syncs(&cluster) - wal) as f64 / count as f64;
            let (theirs, wal) = if name == "pg" {
                (format!("{theirs:.0}"), format!("{wal:.3}"))
            } else {
                ("-".into(), "-".into())
            };
            println!(
                "{name:<4} {n:>10} {:>12.0} {ours:>16.0} {theirs:>16} {wal:>18}",
                count as f64 / wall
            );
        }
    }
}

criterion_group!(spool_pg, benches);
criterion_main!(spool_pg);
