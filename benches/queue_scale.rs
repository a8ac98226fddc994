//! The engine with a large queue (issue 15): `POSTRIDER_BENCH_MESSAGES` (default 100,000)
//! messages in an `FsSpool`, every one deferred for an hour for a dead next hop (ten domains
//! routed by the mailertable to `[127.0.0.1]:PORT`, where nothing listens). Measured once each:
//!
//! 1. `Engine::start` on that spool (scan + compact index), its time, and what the index costs
//!    per queued message: the live heap it adds (a counting allocator), the RSS delta, and
//!    the most heap held at once during the start;
//! 2. `mailq` of the whole queue: `Engine::list_page` pages of 1,000 rendered by
//!    `engine::mailq::Mailq` into `io::sink()`, with the most heap held at any moment
//!    (`FsSpool` reads the directory once and keeps the rest of the listing for the next
//!    page, so the heap held shows whether the listing streamed);
//! 3. the hop comes back (smtp-sink starts on the port): a flush of one domain (a tenth of the
//!    queue), the time to its first delivery and to its end;
//! 4. a flush of everything: the drain rate, beside the end-to-end rate of fresh submissions
//!    through the same engine to the same sink in the same run.
//!
//! Not a criterion bench: filling 100,000 durable messages takes minutes. The spool lives under
//! `POSTRIDER_BENCH_DIR` (else cargo's `target/tmp`) and is deleted afterwards. Figures:
//! `benches/README.md`, "Engine at scale".

#[path = "support/dead_queue.rs"]
mod dead_queue;
#[path = "support/engine.rs"]
mod engine;
#[path = "support/heap.rs"]
mod heap;
#[path = "../tests/support/sink.rs"]
mod sink;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use heap::{live, peak, reset_peak, rss};
use postrider::engine::mailq::Mailq;
use postrider::engine::{Engine, FlushFilter};
use postrider::route::Mailertable;
use postrider::spool::{FsSpool, Spool};
use postrider::{Address, Envelope, ReversePath};
use sink::Sink;

const DOMAINS: u64 = 10;

fn envelope(i: u64) -> Envelope {
    Envelope::new(
        ReversePath::parse("pbx@example.com").unwrap(),
        [Address::parse(&format!("user{}@hop{}.example", i % 1000, i % DOMAINS)).unwrap()],
    )
}

async fn start_engine(spool: Arc<dyn Spool>, port: u16) -> Engine {
    let table: String = (0..DOMAINS)
        .map(|d| format!("hop{d}.example esmtp:[127.0.0.1]:{port}\n"))
        .collect::<String>()
        + &format!("fresh.example esmtp:[127.0.0.1]:{port}\n");
    engine::builder(Mailertable::builder().mailertable_text("mailertable", table))
        .spool(spool)
        .start()
        .await
        .unwrap()
}

async fn wait_sink(sink: &Sink, target: u64, limit: Duration) -> Duration {
    let start = Instant::now();
    while sink.counts().messages < target {
        assert!(
            start.elapsed() < limit,
            "smtp-sink counted {} of {target} in {limit:?}",
            sink.counts().messages
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    start.elapsed()
}

fn main() {
    let n: u64 = std::env::var("POSTRIDER_BENCH_MESSAGES")
        .ok()
        .map(|v| v.parse().expect("POSTRIDER_BENCH_MESSAGES is a number"))
        .unwrap_or(100_000);
    let base = std::env::var_os("POSTRIDER_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    std::fs::create_dir_all(&base).unwrap();
    let root = tempfile::Builder::new()
        .prefix("queue-scale-")
        .tempdir_in(&base)
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let port = sink::free_port();
    let mut report = Vec::new();
    let mut note = |line: String| {
        eprintln!("{line}");
        report.push(line);
    };

    {
        let spool = FsSpool::open(root.path()).unwrap();
        let start = Instant::now();
        rt.block_on(dead_queue::fill(&spool, n, envelope));
        let took = start.elapsed();
        note(format!(
            "fill: {n} inserts + {n} save_state in {took:.1?} ({:.0} messages/s)",
            n as f64 / took.as_secs_f64()
        ));
    }

    // 1. Start-up.
    let (heap0, rss0) = (reset_peak(), rss());
    let start = Instant::now();
    let spool: Arc<dyn Spool> = Arc::new(FsSpool::open(root.path()).unwrap());
    let engine = rt.block_on(start_engine(spool, port));
    let took = start.elapsed();
    rt.block_on(async { tokio::time::sleep(Duration::from_millis(300)).await });
    assert_eq!(engine.startup_report().recovered as u64, n);
    let (heap, grown) = (live().saturating_sub(heap0), rss().saturating_sub(rss0));
    let start_peak = peak().saturating_sub(heap0);
    note(format!(
        "engine start: {n} recovered in {took:.2?}; index heap {:.0} B/message ({:.1} MiB), \
         RSS +{:.0} B/message ({:.1} MiB); at most {:.0} B/message of heap during the start \
         ({:.1} MiB)",
        heap as f64 / n as f64,
        heap as f64 / 1048576.0,
        grown as f64 / n as f64,
        grown as f64 / 1048576.0,
        start_peak as f64 / n as f64,
        start_peak as f64 / 1048576.0
    ));

    // 2. mailq.
    let heap0 = reset_peak();
    let start = Instant::now();
    let mut listing = Mailq::start(std::io::sink(), root.path(), n as usize).unwrap();
    let mut listed = 0u64;
    let (first, mut after) = rt.block_on(engine.list_page(None, 1000)).unwrap();
    let mut page = first;
    loop {
        for e in &page {
            listing.entry(e).unwrap();
        }
        listed += page.len() as u64;
        match after {
            Some(a) => {
                let (p, next) = rt.block_on(engine.list_page(Some(a), 1000)).unwrap();
                page = p;
                after = next;
            }
            None => break,
        }
    }
    listing.finish().unwrap();
    let took = start.elapsed();
    assert_eq!(listed, n);
    let peak = peak().saturating_sub(heap0);
    note(format!(
        "mailq: {n} messages in {took:.2?} (pages of 1,000), at most {:.1} MiB of heap at \
         once ({:.0} B/message)",
        peak as f64 / 1048576.0,
        peak as f64 / n as f64
    ));

    // 3. The hop comes back; flush one domain.
    let sink = rt.block_on(Sink::start_on(port, &[], false));
    let domain_share = (0..n).filter(|i| i % DOMAINS == 3).count() as u64;
    let start = Instant::now();
    let flush = {
        let engine = engine.clone();
        rt.spawn(async move {
            engine
                .flush(FlushFilter::RecipientDomain(
                    "hop3.example".parse().unwrap(),
                ))
                .await
                .unwrap()
        })
    };
    let first = rt.block_on(wait_sink(&sink, 1, Duration::from_secs(60)));
    let summary = rt.block_on(flush).unwrap();
    let took = start.elapsed();
    assert_eq!(summary.completed as u64, domain_share, "{summary:?}");
    note(format!(
        "flush of one domain ({domain_share} of {n}): first delivery after {first:.3?}, all \
         delivered in {took:.2?} ({:.0} messages/s)",
        domain_share as f64 / took.as_secs_f64()
    ));

    // 4. Drain the rest, then the end-to-end rate of fresh mail through the same engine.
    let rest = n - domain_share;
    let start = Instant::now();
    let flush = {
        let engine = engine.clone();
        rt.spawn(async move { engine.flush(FlushFilter::All).await.unwrap() })
    };
    let drained = rt.block_on(wait_sink(&sink, n, Duration::from_secs(1200)));
    let _ = rt.block_on(flush);
    let drain_rate = rest as f64 / drained.as_secs_f64();
    let _ = start;
    const FRESH: u64 = 10_000;
    let body = Bytes::from(vec![b'x'; 2048]);
    let start = Instant::now();
    rt.block_on(async {
        let tasks: Vec<_> = (0..20u64)
            .map(|lane| {
                let (engine, body) = (engine.clone(), body.clone());
                tokio::spawn(async move {
                    for i in (lane..FRESH).step_by(20) {
                        let env = Envelope::new(
                            ReversePath::parse("pbx@example.com").unwrap(),
                            [Address::parse(&format!("u{i}@fresh.example")).unwrap()],
                        );
                        engine.submit(env, body.clone()).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    rt.block_on(wait_sink(&sink, n + FRESH, Duration::from_secs(600)));
    let fresh_rate = FRESH as f64 / start.elapsed().as_secs_f64();
    note(format!(
        "drain: {rest} in {drained:.1?} = {drain_rate:.0} messages/s; fresh submissions end to \
         end in the same run {fresh_rate:.0} messages/s (drain/end-to-end {:.2})",
        drain_rate / fresh_rate
    ));
    rt.block_on(engine.shutdown());
    eprintln!("\nsummary ({n} messages):");
    for line in &report {
        eprintln!("  {line}");
    }
}
