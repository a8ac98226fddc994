//! Messages per second through a receiving MTA **with STARTTLS**: postrider's listener (the
//! library's `server::daemon`, what `examples/relay` and `sendmail -bd` run) against a
//! private Postfix instance's smtpd, both relaying to the same `smtp-sink`, in one run.
//!
//! ```text
//!   this bench's client ──STARTTLS──► postrider [[listener]] smtp ─► FsSpool ─► smart host ─┐
//!   (SESSIONS in parallel)  └─────────► Postfix smtpd (private)   ─► queue   ─► relayhost  ─┴► smtp-sink
//! ```
//!
//! `smtp-source` cannot do TLS, so the client is written here: tokio + rustls (ring), a full
//! handshake for every session (resumption off: Postfix and rustls would otherwise resume in
//! different ways), then `PER_SESSION` messages of `SIZE` octets, one recipient each, one
//! command at a time as a simple mail client sends them, then QUIT. Both servers present the
//! **same certificate** (the private Postfix's leaf and CA chain, ECDSA P-256; postrider's
//! listener is pointed at Postfix's own `smtpd_tls_cert_file` and `smtpd_tls_key_file`), both
//! queues are durable and on the same disk (postrider's spool under `POSTRIDER_BENCH_DIR`, else
//! cargo's `target/tmp`; Postfix's queue under the temporary directory; a tmpfs is refused,
//! since fsync is free there). A measurement runs from the first connection until smtp-sink has
//! counted every message. The two are measured alternately, `RUNS` times per shape, and the
//! ratio postrider / Postfix is taken within each pair, then the median.
//!
//! postrider logs through a `tracing` subscriber at `info` into a file, as the daemon logs to
//! stderr; Postfix logs into its instance's `maillog`.
//!
//! Needs root (Postfix's master starts as root) and Debian's `postfix` (smtpd, smtp-sink).
//! `cargo bench --bench listener_tls`; environment: `BENCH_MESSAGES` (default 2000),
//! `BENCH_SESSIONS` (20), `BENCH_RUNS` (3), `BENCH_SIZE` (4096). Figures: `benches/README.md`,
//! section "Receiving with STARTTLS".

#[path = "../tests/support"]
mod support {
    #![allow(dead_code, unused_imports)] // the bench uses a part of the test support
    pub mod postfix;
    pub mod sink;
}

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use postrider::config::Config;
use postrider::server::daemon::Daemon;
use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject;
use support::postfix::{PrivatePostfix, SmtpdTls};
use support::sink::Sink;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// How long one measurement may take before the bench calls the server stuck.
const STUCK: Duration = Duration::from_secs(600);

fn env_number(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// What one measurement sends.
#[derive(Clone, Copy, Debug)]
struct Shape {
    messages: usize,
    sessions: usize,
    per_session: usize,
}

/// A 4 KiB-ish message: headers, then 72-character lines, CRLF, none starting with a dot.
fn message(size: usize) -> Vec<u8> {
    let mut m = b"From: bench@example.test\r\nTo: rcpt@example.test\r\nSubject: listener bench\r\n\
                  Message-ID: <bench@example.test>\r\n\r\n"
        .to_vec();
    let line = [b'x'; 70];
    while m.len() + 74 <= size {
        m.extend_from_slice(&line);
        m.extend_from_slice(b"\r\n");
    }
    m.extend_from_slice(b".\r\n");
    m
}

/// One SMTP reply (all its lines); the code and the last line.
async fn reply<S: AsyncRead + Unpin>(r: &mut BufReader<S>) -> Result<(u16, String), String> {
    let mut line = String::new();
    loop {
        line.clear();
        let n = r
            .read_line(&mut line)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("the server closed the connection".into());
        }
        if line.len() < 4 {
            return Err(format!("a short reply line {line:?}"));
        }
        if line.as_bytes()[3] != b'-' {
            let code = line[..3]
                .parse()
                .map_err(|_| format!("not a reply: {line:?}"))?;
            return Ok((code, line.trim_end().to_string()));
        }
    }
}

async fn command<S: AsyncRead + AsyncWrite + Unpin>(
    c: &mut BufReader<S>,
    line: &[u8],
    want: u16,
) -> Result<(), String> {
    c.get_mut()
        .write_all(line)
        .await
        .map_err(|e| format!("write: {e}"))?;
    let (code, text) = reply(c).await?;
    if code != want {
        return Err(format!(
            "{} answered {text:?}",
            String::from_utf8_lossy(line).trim_end()
        ));
    }
    Ok(())
}

/// One session: greeting, EHLO, STARTTLS, EHLO again, `count` transactions, QUIT. Returns
/// what the handshake negotiated (version, suite, key exchange), to show both servers agree.
async fn session(
    addr: SocketAddr,
    tls: &TlsConnector,
    count: usize,
    body: &[u8],
) -> Result<String, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
    let mut plain = BufReader::new(tcp);
    let (code, text) = reply(&mut plain).await?;
    if code != 220 {
        return Err(format!("greeting {text:?}"));
    }
    command(&mut plain, b"EHLO client.bench.test\r\n", 250).await?;
    command(&mut plain, b"STARTTLS\r\n", 220).await?;
    // The server waits for the handshake, so nothing is left in the buffer.
    let tcp = plain.into_inner();
    let name = ServerName::try_from("localhost").expect("localhost is a valid server name");
    let stream = tls
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
    let (_, state) = stream.get_ref();
    let negotiated = format!(
        "{:?} {:?} {:?}",
        state.protocol_version(),
        state.negotiated_cipher_suite().map(|s| s.suite()),
        state.negotiated_key_exchange_group().map(|g| g.name())
    );
    let mut c = BufReader::new(stream);
    command(&mut c, b"EHLO client.bench.test\r\n", 250).await?;
    for _ in 0..count {
        command(&mut c, b"MAIL FROM:<bench@example.test>\r\n", 250).await?;
        command(&mut c, b"RCPT TO:<rcpt@example.test>\r\n", 250).await?;
        command(&mut c, b"DATA\r\n", 354).await?;
        command(&mut c, body, 250).await?;
    }
    command(&mut c, b"QUIT\r\n", 221).await?;
    Ok(negotiated)
}

/// Sends `shape` to `addr` from `shape.sessions` parallel workers and waits until the sink has
/// counted every message; messages per second.
async fn measure(
    name: &str,
    addr: SocketAddr,
    tls: &TlsConnector,
    shape: Shape,
    body: &Arc<Vec<u8>>,
    sink: &Sink,
) -> f64 {
    let before = sink.counts().messages;
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..shape.sessions {
        let (tls, body, next) = (tls.clone(), body.clone(), next.clone());
        workers.spawn(async move {
            let mut negotiated = std::collections::BTreeSet::new();
            loop {
                let first = next.fetch_add(shape.per_session, Ordering::Relaxed);
                if first >= shape.messages {
                    return Ok::<_, String>(negotiated);
                }
                let count = shape.per_session.min(shape.messages - first);
                negotiated.insert(session(addr, &tls, count, &body).await?);
            }
        });
    }
    let mut negotiated = std::collections::BTreeSet::new();
    while let Some(done) = workers.join_next().await {
        match done.expect("a client worker panicked") {
            Ok(n) => negotiated.extend(n),
            Err(e) => panic!("{name}: {e}"),
        }
    }
    let target = before + shape.messages as u64;
    let got = sink.wait_for(target, 0, STUCK).await.messages;
    assert!(
        got >= target,
        "{name}: the sink counted {} of {} messages in {STUCK:?}",
        got - before,
        shape.messages
    );
    let secs = start.elapsed().as_secs_f64();
    let rate = shape.messages as f64 / secs;
    eprintln!(
        "  {name}: {} msgs in {secs:.2} s = {rate:.0} msg/s; load {}; TLS {negotiated:?}",
        shape.messages,
        load()
    );
    rate
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn bench_root() -> PathBuf {
    std::env::var_os("POSTRIDER_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")))
}

/// Refuses a tmpfs, where fsync is free and a durable queue costs nothing.
fn require_disk(dir: &Path) {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let dir = dir.canonicalize().expect("the bench directory exists");
    let fs = mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, point, fs) = (f.next()?, f.next()?, f.next()?);
            dir.starts_with(point)
                .then(|| (point.len(), fs.to_string()))
        })
        .max()
        .map(|(_, fs)| fs)
        .unwrap_or_default();
    assert!(
        fs != "tmpfs" && fs != "ramfs",
        "{} is on {fs}, where fsync is free: set POSTRIDER_BENCH_DIR (and TMPDIR, for \
         Postfix's queue) to a directory on a disk",
        dir.display()
    );
}

/// postrider's daemon on its own runtime and threads (as a separate process would have
/// them), with one STARTTLS `smtp` listener on a free port; returns its address and a
/// handle that stops it.
fn start_postrider(
    dir: &Path,
    sink_port: u16,
    cert: &Path,
    key: &Path,
) -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<()>,
) {
    let text = format!(
        "hostname = \"relay.bench.test\"\nspool = \"{}\"\nsmart_host = \"[127.0.0.1]:{sink_port}\"\n\
         [[listener]]\naddress = \"127.0.0.1:0\"\nkind = \"smtp\"\ncertificate = \"{}\"\nkey = \"{}\"\n",
        dir.join("spool").display(),
        cert.display(),
        key.display()
    );
    let config = Config::parse(&text, dir.join("postrider.toml")).expect("the bench config parses");
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime for the daemon");
        runtime.block_on(async move {
            let daemon = Daemon::start(config, &[])
                .await
                .unwrap_or_else(|e| panic!("postrider's daemon did not start: {e}"));
            let addr = daemon.listening()[0].address;
            addr_tx.send(addr).expect("the bench waits for the address");
            daemon
                .run(async move {
                    let _ = stop_rx.await;
                })
                .await;
        });
    });
    let addr = addr_rx
        .recv()
        .expect("postrider's daemon reports its address");
    (addr, stop_tx, thread)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter or `--list` from cargo's harness means nothing here.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    assert!(
        unsafe { libc::geteuid() } == 0,
        "run as root: a Postfix master starts as root"
    );
    let messages = env_number("BENCH_MESSAGES", 2000);
    let sessions = env_number("BENCH_SESSIONS", 20);
    let runs = env_number("BENCH_RUNS", 3);
    let size = env_number("BENCH_SIZE", 4096);
    let root = bench_root();
    std::fs::create_dir_all(&root).expect("the bench directory");
    require_disk(&root);
    require_disk(&std::env::temp_dir());
    let work = tempfile::tempdir_in(&root).expect("a work directory");

    let log = Arc::new(
        std::fs::File::create(work.path().join("postrider.log")).expect("the daemon's log file"),
    );
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(log)
        .with_ansi(false)
        .init();

    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime for the client");
    runtime.block_on(async {
        let sink = Sink::start().await;
        let postfix = PrivatePostfix::builder()
            .smtpd_tls(SmtpdTls::May)
            .relayhost(&format!("[127.0.0.1]:{}", sink.port()))
            .start();
        let cert = PathBuf::from(postfix.postconf("smtpd_tls_cert_file"));
        let key = PathBuf::from(postfix.postconf("smtpd_tls_key_file"));
        let (postrider, stop, daemon) = start_postrider(work.path(), sink.port(), &cert, &key);

        let mut roots = rustls::RootCertStore::empty();
        for ca in rustls::pki_types::CertificateDer::pem_slice_iter(postfix.ca_pem()) {
            roots
                .add(ca.expect("the instance's CA is PEM"))
                .expect("the instance's CA is a certificate");
        }
        let mut client = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        client.resumption = rustls::client::Resumption::disabled();
        let tls = TlsConnector::from(Arc::new(client));
        let body = Arc::new(message(size));

        eprintln!(
            "listener_tls: {} CPUs; {messages} messages of {} octets, {sessions} sessions; \
             postrider on {postrider}, Postfix on {}, smtp-sink on 127.0.0.1:{}; work in {}",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            body.len(),
            postfix.addr(),
            sink.port(),
            work.path().display()
        );
        // Warm both up (the first handshake, Postfix's first smtpd processes, the spool's
        // directories) outside the figures.
        let warm = Shape {
            messages: 50,
            sessions: 5,
            per_session: 1,
        };
        measure("warm-up postfix", postfix.addr(), &tls, warm, &body, &sink).await;
        measure("warm-up postrider", postrider, &tls, warm, &body, &sink).await;

        for per_session in [1, 20] {
            let shape = Shape {
                messages,
                sessions,
                per_session,
            };
            eprintln!("{per_session} message(s) per TLS session:");
            let (mut p, mut r, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..runs {
                let a = measure("postfix", postfix.addr(), &tls, shape, &body, &sink).await;
                let b = measure("postrider", postrider, &tls, shape, &body, &sink).await;
                println!(
                    "per_session={per_session}: postfix {a:.0} msg/s, postrider {b:.0} msg/s, ratio {:.2}",
                    b / a
                );
                p.push(a);
                r.push(b);
                ratios.push(b / a);
            }
            println!(
                "per_session={per_session}: median of {runs}: postfix {:.0} msg/s, postrider {:.0} msg/s, ratio {:.2} (pairs {:?})",
                median(p),
                median(r),
                median(ratios.clone()),
                ratios
                    .iter()
                    .map(|x| format!("{x:.2}"))
                    .collect::<Vec<_>>()
            );
        }
        let _ = stop.send(());
        // The daemon's runtime ends with its thread; join it off this runtime's workers.
        tokio::task::spawn_blocking(move || daemon.join())
            .await
            .expect("the join task")
            .expect("postrider's daemon thread ended cleanly");
        postfix.stop();
    });
}
