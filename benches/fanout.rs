//! Fan-out (issue 15): one message to 1,000 recipients at 10 domains, routed by the mailertable
//! to 5 next hops (two domains each, a real smtp-sink per hop). The engine groups recipients
//! per next hop: one job per hop, one connection, one transaction of 200 recipients. Measured:
//! submit → every recipient's `Delivered` event, the sessions and transactions each sink
//! counted, and the most connections open to one hop at once (sampled from `/proc/net/tcp`
//! every millisecond). Then 50 such messages at once, where the per-hop connection limit
//! (`Limits::max_deliveries_per_hop`, 20 by default) is what bounds the connections.
//! Figures: `benches/README.md`, "Engine at scale".

#[path = "support/engine.rs"]
mod engine;
#[path = "../tests/support/sink.rs"]
mod sink;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use postrider::engine::{Engine, Limits};
use postrider::route::Mailertable;
use postrider::spool::{FsSpool, Spool};
use postrider::{Address, Envelope, Outcome, ReversePath};
use sink::Sink;

const HOPS: usize = 5;
const DOMAINS: usize = 10;
const RECIPIENTS: usize = 1000;

/// Established TCP connections to each port in `ports`, from /proc/net/tcp. The kernel
/// writes that file a page at a time while connections come and go, so one read can list a
/// socket twice (up to 18 duplicate lines in one read were seen here): each pair of ends
/// counts once.
fn established(ports: &[u16]) -> Vec<usize> {
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let mut counts = vec![0; ports.len()];
    let mut seen = std::collections::HashSet::new();
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 4 || fields[3] != "01" || !seen.insert((fields[1], fields[2])) {
            continue;
        }
        // The remote end of our client sockets is the sink's port.
        let Some(port) = fields[2]
            .rsplit(':')
            .next()
            .and_then(|p| u16::from_str_radix(p, 16).ok())
        else {
            continue;
        };
        if let Some(i) = ports.iter().position(|&p| p == port) {
            counts[i] += 1;
        }
    }
    counts
}

fn envelope() -> Envelope {
    Envelope::new(
        ReversePath::parse("pbx@example.com").unwrap(),
        (0..RECIPIENTS)
            .map(|i| Address::parse(&format!("user{i}@d{}.example", i % DOMAINS)).unwrap()),
    )
}

/// Submits `messages` fan-out messages at once; returns the time until every recipient was
/// delivered and the most connections seen open to one hop.
async fn run(engine: &Engine, ports: &[u16], messages: usize) -> (Duration, usize) {
    let mut events = engine.subscribe();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (stop, ports) = (stop.clone(), ports.to_vec());
        std::thread::spawn(move || {
            let mut most = 0;
            while !stop.load(Ordering::Relaxed) {
                most = most.max(established(&ports).into_iter().max().unwrap_or(0));
                std::thread::sleep(Duration::from_millis(1));
            }
            most
        })
    };
    let body = format!("Subject: fan-out\r\n\r\n{}\r\n", "x".repeat(2000));
    let start = Instant::now();
    for _ in 0..messages {
        engine.submit(envelope(), body.clone()).await.unwrap();
    }
    let mut delivered = 0;
    while delivered < messages * RECIPIENTS {
        match tokio::time::timeout(Duration::from_secs(120), events.recv())
            .await
            .expect("fan-out stuck")
        {
            Ok(e) => {
                assert!(matches!(e.outcome, Outcome::Delivered { .. }), "{e:?}");
                delivered += 1;
            }
            // More events than the channel holds: counted here, checked below by the queue
            // being empty.
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => delivered += n as usize,
            Err(e) => panic!("{e}"),
        }
    }
    while !engine.list().await.unwrap().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "fan-out left mail queued"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let took = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    (took, sampler.join().unwrap())
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let sinks: Vec<Sink> = (0..HOPS).map(|_| rt.block_on(Sink::start())).collect();
    let ports: Vec<u16> = sinks.iter().map(Sink::port).collect();
    let table: String = (0..DOMAINS)
        .map(|d| format!("d{d}.example esmtp:[127.0.0.1]:{}\n", ports[d % HOPS]))
        .collect();
    let builder = engine::builder(Mailertable::builder().mailertable_text("mailertable", table));
    let base = std::env::var_os("POSTRIDER_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    std::fs::create_dir_all(&base).unwrap();
    let dir = tempfile::Builder::new()
        .prefix("fanout-")
        .tempdir_in(&base)
        .unwrap();
    let spool: Arc<dyn Spool> = Arc::new(FsSpool::open(dir.path()).unwrap());
    let limits = Limits::default();
    let per_hop = limits.max_deliveries_per_hop;
    let engine = rt
        .block_on(builder.spool(spool).limits(limits).start())
        .unwrap();
    let mut singles = Vec::new();
    let mut most_single = 0;
    for _ in 0..10 {
        let (took, most) = rt.block_on(run(&engine, &ports, 1));
        singles.push(took);
        most_single = most_single.max(most);
    }
    singles.sort();
    let counts: Vec<_> = sinks.iter().map(Sink::counts).collect();
    eprintln!(
        "fan-out, 1 message x {RECIPIENTS} recipients at {DOMAINS} domains over {HOPS} hops, 10 runs: \
         median {:.1} ms (min {:.1}, max {:.1}); per hop after the 10 runs: {:?} transactions, \
         {:?} sessions ended; most connections open to one hop {most_single}",
        singles[5].as_secs_f64() * 1e3,
        singles[0].as_secs_f64() * 1e3,
        singles[9].as_secs_f64() * 1e3,
        counts.iter().map(|c| c.messages).collect::<Vec<_>>(),
        counts.iter().map(|c| c.sessions).collect::<Vec<_>>(),
    );
    let before: Vec<u64> = sinks.iter().map(|s| s.counts().messages).collect();
    let (took, most) = rt.block_on(run(&engine, &ports, 50));
    let after: Vec<u64> = sinks
        .iter()
        .zip(&before)
        .map(|(s, b)| s.counts().messages - b)
        .collect();
    eprintln!(
        "fan-out, 50 such messages at once ({} recipient deliveries): {took:.2?} ({:.0} \
         recipients/s); transactions per hop {after:?}; most connections open to one hop {most} \
         (limit {per_hop})",
        50 * RECIPIENTS,
        (50 * RECIPIENTS) as f64 / took.as_secs_f64()
    );
    assert!(
        most <= per_hop,
        "{most} connections open to one hop, above the limit of {per_hop}"
    );
    rt.block_on(engine.shutdown());
}
