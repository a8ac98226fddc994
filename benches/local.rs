//! Local Maildir deliveries per second beside the raw rate of the same directory.
//!
//! - **raw**: write a 4 KiB file in `Maildir/tmp/`, `fdatasync`, rename it into `new/`,
//!   `fsync` `new/`: what Maildir delivery must do at the least, one at a time.
//! - **maildir**: `Maildir::deliver` (unique name, `O_EXCL` create relative to checked
//!   directory descriptors, owner checks, the same syncs).
//! - **transport**: one message at a time through `LocalTransport` (delivery setup, alias
//!   expansion, user lookup, trace fields, LF conversion, the blocking pool), as the engine
//!   calls it for a batch of one.
//! - **transport ×8**: eight such deliveries at once (the engine runs up to 20 per route),
//!   beside **raw ×8**: eight threads doing the raw sequence into the same directory.
//!
//! As in the spool bench the directory lives under `POSTRIDER_BENCH_DIR` or cargo's target
//! tmp dir (a real disk), and raw and delivery rates are also measured back to back several
//! times, because on a shared machine only neighbours in time compare. Figures:
//! `benches/README.md`.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use postrider::local::{LocalConfig, LocalTransport, Maildir, StaticUsers, User};
use postrider::transport::collect;
use postrider::{Address, Delivery, Envelope, Outcome, QueueId, ReversePath, Route};

const BODY_LEN: usize = 4096;
const PAIRS: usize = 8;
const PAIR_TIME: Duration = Duration::from_millis(500);

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
    base.join(format!("local-bench-{}", std::process::id()))
}

struct Raw {
    tmp: PathBuf,
    new: PathBuf,
    new_dir: File,
    next: AtomicU64,
}

impl Raw {
    fn new(maildir: &Path) -> Raw {
        Raw {
            tmp: maildir.join("tmp"),
            new_dir: File::open(maildir.join("new")).unwrap(),
            new: maildir.join("new"),
            next: AtomicU64::new(0),
        }
    }

    fn one(&self, body: &[u8]) {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let name = format!("raw-{}-{n}", std::process::id());
        let tmp = self.tmp.join(&name);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .unwrap();
        f.write_all(body).unwrap();
        f.sync_data().unwrap();
        std::fs::rename(&tmp, self.new.join(&name)).unwrap();
        self.new_dir.sync_all().unwrap();
    }
}

/// The raw sequence on `threads` threads for `time`: files per second.
fn raw_rate(raw: &Raw, body: &[u8], threads: usize, time: Duration) -> f64 {
    let start = Instant::now();
    let n: u64 = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut n = 0u64;
                    while start.elapsed() < time {
                        raw.one(body);
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    n as f64 / start.elapsed().as_secs_f64()
}

fn message() -> Bytes {
    let mut m = b"Subject: voicemail\r\n\r\n".to_vec();
    while m.len() < BODY_LEN {
        m.extend_from_slice(b"0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXY\r\n");
    }
    m.truncate(BODY_LEN - 2);
    m.extend_from_slice(b"\r\n");
    Bytes::from(m)
}

fn delivery(body: &Bytes) -> Delivery {
    Delivery {
        id: QueueId::generate(),
        envelope: Arc::new(Envelope::new(
            ReversePath::parse("pbx@example.com").unwrap(),
            [Address::parse("bob@ourtest.com").unwrap()],
        )),
        recipients: vec![0],
        body: body.clone(),
    }
}

async fn deliver_once(t: &LocalTransport, body: &Bytes) {
    let d = delivery(body);
    let r = collect(t, &Route::local(), std::slice::from_ref(&d)).await;
    assert!(
        matches!(r[0].outcome, Outcome::Delivered { .. }),
        "{:?}",
        r[0].outcome
    );
}

async fn transport_rate(
    t: &Arc<LocalTransport>,
    body: &Bytes,
    at_once: usize,
    time: Duration,
) -> (u64, Duration) {
    let start = Instant::now();
    let tasks: Vec<_> = (0..at_once)
        .map(|_| {
            let (t, body) = (Arc::clone(t), body.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while start.elapsed() < time {
                    deliver_once(&t, &body).await;
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut n = 0;
    for task in tasks {
        n += task.await.unwrap();
    }
    (n, start.elapsed())
}

fn benches(c: &mut Criterion) {
    let root = bench_root();
    let home = root.join("bob");
    std::fs::create_dir_all(&home).unwrap();
    // SAFETY: geteuid and getegid have no preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let bob = User::new("bob", uid, gid, &home);
    let maildir = Maildir::new(home.join("Maildir"));
    maildir.create(None, None).unwrap();
    let raw = Raw::new(maildir.path());
    let mut config = LocalConfig::default();
    config.mailbox = "maildir:~/Maildir".parse().unwrap();
    let transport = Arc::new(
        LocalTransport::new(config, "mx.ourtest.com".parse().unwrap())
            .unwrap()
            .0
            .with_users(Arc::new(StaticUsers::new([bob]))),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let body = message();
    let lf: Vec<u8> = String::from_utf8(body.to_vec())
        .unwrap()
        .replace("\r\n", "\n")
        .into_bytes();

    let mut group = c.benchmark_group("local_maildir");
    group.throughput(Throughput::Elements(1));
    group.bench_function(BenchmarkId::from_parameter("raw"), |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                raw.one(&lf);
            }
            let e = start.elapsed();
            note("raw write+fdatasync+rename+fsync new/", iters, e);
            e
        })
    });
    group.bench_function(BenchmarkId::from_parameter("maildir"), |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                maildir.deliver(&lf, None, None).unwrap();
            }
            let e = start.elapsed();
            note("Maildir::deliver", iters, e);
            e
        })
    });
    group.bench_function(BenchmarkId::from_parameter("transport"), |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (t, body) = (Arc::clone(&transport), body.clone());
            async move {
                let start = Instant::now();
                for _ in 0..iters {
                    deliver_once(&t, &body).await;
                }
                let e = start.elapsed();
                note("LocalTransport, one at a time", iters, e);
                e
            }
        })
    });
    group.bench_function(BenchmarkId::from_parameter("transport_x8"), |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (t, body) = (Arc::clone(&transport), body.clone());
            async move {
                let start = Instant::now();
                let tasks: Vec<_> = (0..8u64)
                    .map(|k| {
                        let (t, body) = (Arc::clone(&t), body.clone());
                        tokio::spawn(async move {
                            for _ in (k..iters).step_by(8) {
                                deliver_once(&t, &body).await;
                            }
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await.unwrap();
                }
                let e = start.elapsed();
                note("LocalTransport, 8 at once", iters, e);
                e
            }
        })
    });
    group.finish();

    // Back to back: raw, the transport one at a time, raw on eight threads, the transport
    // eight at once.
    let mut pairs = Vec::new();
    for _ in 0..PAIRS {
        let raw1 = raw_rate(&raw, &lf, 1, PAIR_TIME);
        let (n1, d1) = rt.block_on(transport_rate(&transport, &body, 1, PAIR_TIME));
        let raw8 = raw_rate(&raw, &lf, 8, PAIR_TIME);
        let (n8, d8) = rt.block_on(transport_rate(&transport, &body, 8, PAIR_TIME));
        pairs.push((
            raw1,
            n1 as f64 / d1.as_secs_f64(),
            raw8,
            n8 as f64 / d8.as_secs_f64(),
        ));
    }
    eprintln!("\nlocal summary (mean over every batch criterion ran, warm-up included):");
    for (name, (n, d)) in TOTALS.lock().unwrap().iter() {
        eprintln!(
            "  {name:<45} {:>8.0}/s",
            *n as f64 / d.as_secs_f64().max(f64::EPSILON)
        );
    }
    eprintln!(
        "back to back (raw x1 | transport x1 | raw x8 | transport x8 -> x1/raw x1, x8/raw x8):"
    );
    let mut r1: Vec<f64> = Vec::new();
    let mut r8: Vec<f64> = Vec::new();
    for (raw1, one, raw8, eight) in &pairs {
        eprintln!(
            "  {raw1:>7.0} | {one:>7.0} | {raw8:>7.0} | {eight:>7.0} -> {:.2}x, {:.2}x",
            one / raw1,
            eight / raw8
        );
        r1.push(one / raw1);
        r8.push(eight / raw8);
    }
    r1.sort_by(f64::total_cmp);
    r8.sort_by(f64::total_cmp);
    eprintln!(
        "  median: x1 {:.2}x of raw x1, x8 {:.2}x of raw x8",
        r1[r1.len() / 2],
        r8[r8.len() / 2]
    );
    let _ = std::fs::remove_dir_all(&root);
}

criterion_group! {
    name = local;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(local);
