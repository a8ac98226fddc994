//! The engine end to end: `Engine::submit` → spool → mailertable smart host `[127.0.0.1]:PORT`
//! → `EsmtpTransport` → Postfix's `smtp-sink -u nobody -c 127.0.0.1:PORT 1024`, started here.
//!
//! A measurement submits a batch of messages from `SUBMITTERS` concurrent tasks and stops the
//! clock when smtp-sink's own counter (`-c`, updated at every final dot) has counted every one
//! of them, so a message counts only once the sink really received it. The removal of the
//! delivered messages from the spool may still be running then; it overlaps the next batch,
//! so over a sample it is paid for, as in a steady stream.
//!
//! Two spools: a durable `FsSpool` on the real disk (under `POSTRIDER_BENCH_DIR` if set, else
//! cargo's `target/tmp`; the file system type is printed, and a tmpfs is refused because its
//! fsync is free), and `MemorySpool`, to tell the spool's cost from the delivery's.
//! Figures: `benches/README.md`, section "Delivery".

#[path = "support/engine.rs"]
mod engine;
#[path = "../tests/support/sink.rs"]
mod sink;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use engine::to_smart_host;
use postrider::engine::Engine;
use postrider::spool::{FsSpool, MemorySpool, Spool};
use postrider::{Address, Envelope, ReversePath};
use sink::Sink;

/// Concurrent submitters: as many as smtp-source's `-s 20` in the Postfix comparison (and
/// Postfix's default destination concurrency).
const SUBMITTERS: usize = 20;
/// Messages per criterion iteration.
const BATCH: u64 = 200;
/// How long to wait for the sink before declaring the engine stuck.
const STUCK: Duration = Duration::from_secs(120);

fn bench_root() -> PathBuf {
    std::env::var_os("POSTRIDER_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")))
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

/// A message of `size` octets: a subject line and lines of 78 characters.
fn body(size: usize) -> Bytes {
    let mut text = String::from("Subject: delivery bench\r\n\r\n");
    while text.len() < size {
        text.push_str(&"x".repeat(78));
        text.push_str("\r\n");
    }
    Bytes::from(text)
}

fn envelope() -> Envelope {
    Envelope::new(
        ReversePath::parse("bench@example.test").unwrap(),
        [Address::parse("rcpt@example.org").unwrap()],
    )
}

/// Submits `n` messages from `SUBMITTERS` tasks; returns when the sink has counted them all.
async fn submit_and_wait(engine: &Engine, sink: &Sink, n: u64, body: &Bytes) -> Duration {
    let before = sink.counts().messages;
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(SUBMITTERS);
    for lane in 0..SUBMITTERS as u64 {
        let mine = n / SUBMITTERS as u64 + u64::from(lane < n % SUBMITTERS as u64);
        let (engine, body) = (engine.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..mine {
                engine.submit(envelope(), body.clone()).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let target = before + n;
    loop {
        let got = sink.counts().messages;
        if got >= target {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < STUCK,
            "smtp-sink counted {} of {n} messages in {STUCK:?}",
            got - before
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn delivery(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let sink = rt.block_on(Sink::start());
    let root = bench_root();
    std::fs::create_dir_all(&root).unwrap();
    let fs = fs_type(&root);
    assert_ne!(
        fs,
        "tmpfs",
        "{} is on tmpfs, where fsync is free: set POSTRIDER_BENCH_DIR to a directory on a disk",
        root.display()
    );
    let spool_dir = tempfile::Builder::new()
        .prefix("delivery-bench-")
        .tempdir_in(&root)
        .unwrap();
    eprintln!(
        "delivery bench: FsSpool in {} ({fs}); smtp-sink on 127.0.0.1:{}; {SUBMITTERS} submitters",
        spool_dir.path().display(),
        sink.port()
    );
    let fs_spool: Arc<dyn Spool> = Arc::new(FsSpool::open(spool_dir.path()).unwrap());
    let memory: Arc<dyn Spool> = Arc::new(MemorySpool::new());
    let engines = [
        (
            "fs_spool",
            rt.block_on(to_smart_host(fs_spool, sink.port())),
        ),
        (
            "memory_spool",
            rt.block_on(to_smart_host(memory, sink.port())),
        ),
    ];

    let mut group = c.benchmark_group("submit_to_smtp_sink");
    group.throughput(Throughput::Elements(BATCH));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(15));
    for (size_name, size) in [("1KiB", 1024), ("100KiB", 100 * 1024)] {
        let body = body(size);
        for (spool_name, engine) in &engines {
            group.bench_function(format!("{spool_name}/{size_name}"), |b| {
                b.to_async(&rt).iter_custom(|iters| {
                    let (engine, body, sink) = (engine.clone(), body.clone(), &sink);
                    async move { submit_and_wait(&engine, sink, iters * BATCH, &body).await }
                });
            });
        }
    }
    group.finish();

    for (name, engine) in engines {
        rt.block_on(async {
            // Every message delivered and removed: nothing may be left behind.
            let deadline = Instant::now() + STUCK;
            loop {
                let left = engine.list().await.unwrap();
                if left.is_empty() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{name}: {} message(s) still queued",
                    left.len()
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            engine.shutdown().await;
        });
    }
    drop(sink);
}

criterion_group!(benches, delivery);
criterion_main!(benches);
