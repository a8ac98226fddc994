//! Idle latency (issue 15): one message at a time, from `Engine::submit` to the `250` of a
//! loopback smtp-sink (the engine's `Delivered` event, emitted when the reply arrives), on a
//! durable `FsSpool` and on `MemorySpool` (to tell the spool's share), beside the disk's own
//! latency for one durable write (create, write 1 KiB, `fdatasync`, rename, `fsync` of the
//! directory) measured in the same run. Target: p50 ≤ 5 ms, p99 ≤ 20 ms.
//!
//! `POSTRIDER_BENCH_SAMPLES` (default 1,000) messages after 50 for warm-up; the spool under
//! `POSTRIDER_BENCH_DIR` (else cargo's `target/tmp`). Figures: `benches/README.md`,
//! "Engine at scale".

#[path = "support/engine.rs"]
mod engine;
#[path = "../tests/support/sink.rs"]
mod sink;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::to_smart_host;
use postrider::engine::Engine;
use postrider::spool::{FsSpool, MemorySpool, Spool};
use postrider::{Address, Envelope, Outcome, ReversePath};
use sink::Sink;

fn percentiles(mut v: Vec<Duration>) -> String {
    v.sort();
    let at = |p: f64| v[((v.len() as f64 * p) as usize).min(v.len() - 1)];
    format!(
        "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        at(0.50).as_secs_f64() * 1e3,
        at(0.90).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        v[v.len() - 1].as_secs_f64() * 1e3
    )
}

async fn one_at_a_time(engine: &Engine, samples: usize) -> Vec<Duration> {
    let mut events = engine.subscribe();
    let body = format!("Subject: idle\r\n\r\n{}\r\n", "x".repeat(1000));
    let mut out = Vec::with_capacity(samples);
    for i in 0..samples + 50 {
        let env = Envelope::new(
            ReversePath::parse("pbx@example.com").unwrap(),
            [Address::parse("rcpt@example.org").unwrap()],
        );
        let start = Instant::now();
        let id = engine.submit(env, body.clone()).await.unwrap();
        loop {
            let e = tokio::time::timeout(Duration::from_secs(30), events.recv())
                .await
                .expect("no delivery within 30 s")
                .unwrap();
            if e.id == id {
                assert!(matches!(e.outcome, Outcome::Delivered { .. }), "{e:?}");
                break;
            }
        }
        if i >= 50 {
            out.push(start.elapsed());
        }
        // Idle: the next message comes after the queue has settled.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    out
}

/// One durable small file, the way a spool makes one: the disk's latency floor.
fn raw_durable(dir: &Path, samples: usize) -> Vec<Duration> {
    let d = std::fs::File::open(dir).unwrap();
    (0..samples)
        .map(|i| {
            let start = Instant::now();
            let tmp = dir.join(format!("t{i}"));
            let mut f = std::fs::File::create(&tmp).unwrap();
            f.write_all(&[b'x'; 1024]).unwrap();
            f.sync_data().unwrap();
            std::fs::rename(&tmp, dir.join(format!("f{i}"))).unwrap();
            d.sync_all().unwrap();
            start.elapsed()
        })
        .collect()
}

fn main() {
    let samples: usize = std::env::var("POSTRIDER_BENCH_SAMPLES")
        .ok()
        .map(|v| v.parse().expect("POSTRIDER_BENCH_SAMPLES is a number"))
        .unwrap_or(1000);
    let base = std::env::var_os("POSTRIDER_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    std::fs::create_dir_all(&base).unwrap();
    let dir = tempfile::Builder::new()
        .prefix("idle-latency-")
        .tempdir_in(&base)
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let sink = rt.block_on(Sink::start());
    let raw_dir = dir.path().join("raw");
    std::fs::create_dir_all(&raw_dir).unwrap();
    let raw = raw_durable(&raw_dir, samples.min(500));
    let fs: Arc<dyn Spool> = Arc::new(FsSpool::open(dir.path().join("spool")).unwrap());
    let fs_engine = rt.block_on(to_smart_host(fs, sink.port()));
    let fs_lat = rt.block_on(one_at_a_time(&fs_engine, samples));
    rt.block_on(fs_engine.shutdown());
    let mem_engine = rt.block_on(to_smart_host(Arc::new(MemorySpool::new()), sink.port()));
    let mem_lat = rt.block_on(one_at_a_time(&mem_engine, samples));
    rt.block_on(mem_engine.shutdown());
    eprintln!("idle latency, submit -> 250 at smtp-sink, {samples} messages one at a time:");
    eprintln!("  FsSpool:     {}", percentiles(fs_lat));
    eprintln!("  MemorySpool: {}", percentiles(mem_lat));
    eprintln!(
        "  the disk alone, one durable file + directory sync: {}",
        percentiles(raw)
    );
}
