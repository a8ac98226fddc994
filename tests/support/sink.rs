//! Postfix's `smtp-sink` as a real SMTP server on a free loopback port, with its counters
//! (`-c`) read live and optionally every message dumped to a directory (`-d`).
#![allow(dead_code)] // also included by the benches, which use a part

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

pub const SMTP_SINK: &str = "/usr/sbin/smtp-sink";

// By path, so the benches that include this file get it too; the relay support uses it from
// here.
#[path = "listening.rs"]
pub mod listening;

/// smtp-sink's running counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Sessions ended.
    pub sessions: u64,
    /// QUIT commands seen.
    pub quits: u64,
    /// Messages received (final dot).
    pub messages: u64,
}

/// A running smtp-sink; killed on drop.
pub struct Sink {
    child: Child,
    port: u16,
    counts: Arc<Mutex<Counts>>,
    dump: Option<tempfile::TempDir>,
}

impl Sink {
    /// smtp-sink with default behaviour (PIPELINING, 8BITMIME, DSN, ENHANCEDSTATUSCODES).
    pub async fn start() -> Sink {
        Sink::start_with(&[], false).await
    }

    /// smtp-sink with extra options (`-p`, `-f RCPT`, ...), dumping each message to a
    /// directory when `dump` is set.
    pub async fn start_with(options: &[&str], dump: bool) -> Sink {
        Sink::start_at(None, options, dump).await
    }

    /// smtp-sink on a given port (a peer that "comes back" where mail was deferred).
    pub async fn start_on(port: u16, options: &[&str], dump: bool) -> Sink {
        Sink::start_at(Some(port), options, dump).await
    }

    /// smtp-sink on a given loopback address and port (one of several MX hosts on 127.0.0.x
    /// sharing a port, as a mailertable route `esmtp:domain:PORT` reaches them).
    pub async fn start_on_addr(ip: std::net::Ipv4Addr, port: u16, options: &[&str]) -> Sink {
        Sink::start_at_addr(ip, Some(port), options, false).await
    }

    async fn start_at(fixed: Option<u16>, options: &[&str], dump: bool) -> Sink {
        Sink::start_at_addr(std::net::Ipv4Addr::LOCALHOST, fixed, options, dump).await
    }

    async fn start_at_addr(
        ip: std::net::Ipv4Addr,
        fixed: Option<u16>,
        options: &[&str],
        dump: bool,
    ) -> Sink {
        assert!(
            Path::new(SMTP_SINK).exists(),
            "{SMTP_SINK} is missing: install the Debian package postfix (it provides \
             /usr/sbin/smtp-sink)"
        );
        let dump = dump.then(|| {
            let dir = tempfile::tempdir().unwrap();
            // smtp-sink writes as nobody.
            std::fs::set_permissions(
                dir.path(),
                std::os::unix::fs::PermissionsExt::from_mode(0o777),
            )
            .unwrap();
            dir
        });
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = fixed.unwrap_or_else(free_port);
            let mut cmd = Command::new(SMTP_SINK);
            cmd.args(["-u", "nobody", "-c"]).args(options);
            if let Some(dir) = &dump {
                cmd.arg("-d").arg(format!("{}/msg.", dir.path().display()));
            }
            cmd.arg(format!("{ip}:{port}"))
                .arg("1024")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true);
            let mut child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {SMTP_SINK}: {e}"));
            let counts = Arc::new(Mutex::new(Counts::default()));
            let stdout = child.stdout.take().unwrap();
            tokio::spawn(read_counts(stdout, counts.clone()));
            if wait_listening(ip, port, &mut child).await {
                return Sink {
                    child,
                    port,
                    counts,
                    dump,
                };
            }
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err).await;
            }
            last_error = err;
        }
        panic!("smtp-sink did not start: {last_error}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn counts(&self) -> Counts {
        *self.counts.lock().unwrap()
    }

    /// Waits (real time, up to `limit`) until smtp-sink has counted `messages` messages and
    /// `sessions` sessions; returns the counts either way.
    pub async fn wait_for(&self, messages: u64, sessions: u64, limit: Duration) -> Counts {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let c = self.counts();
            if (c.messages >= messages && c.sessions >= sessions)
                || std::time::Instant::now() > deadline
            {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The dumped messages (with smtp-sink's X- headers), when started with `dump`.
    pub fn dumped(&self) -> Vec<String> {
        let dir = self.dump.as_ref().expect("started without dump");
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files
            .iter()
            .map(|f| String::from_utf8_lossy(&std::fs::read(f).unwrap()).into_owned())
            .collect()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// A loopback port nothing listens on now. It is released before the caller's peer binds it,
/// so another test may take it first: a peer counts as started only once its own socket
/// listens there (`listening`).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until smtp-sink listens (see `listening`).
async fn wait_listening(ip: std::net::Ipv4Addr, port: u16, child: &mut Child) -> bool {
    for _ in 0..250 {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if let Some(pid) = child.id()
            && listening::listens(pid, ip, port)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// smtp-sink -c prints `sess=N quit=N mesg=N` followed by a carriage return, over and over.
async fn read_counts(mut out: tokio::process::ChildStdout, counts: Arc<Mutex<Counts>>) {
    let mut pending = String::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = out.read(&mut buf).await {
        if n == 0 {
            return;
        }
        pending.push_str(&String::from_utf8_lossy(&buf[..n]));
        while let Some(end) = pending.find(['\r', '\n']) {
            let record: String = pending.drain(..=end).collect();
            if let Some(c) = parse_counts(record.trim()) {
                *counts.lock().unwrap() = c;
            }
        }
    }
}

fn parse_counts(record: &str) -> Option<Counts> {
    let mut c = Counts::default();
    let mut seen = 0;
    for field in record.split_whitespace() {
        let (k, v) = field.split_once('=')?;
        let v: u64 = v.parse().ok()?;
        match k {
            "sess" => c.sessions = v,
            "quit" => c.quits = v,
            "mesg" => c.messages = v,
            _ => continue,
        }
        seen += 1;
    }
    (seen == 3).then_some(c)
}
