//! `examples/relay.rs` as a real process: its configuration folder and spool, a free loopback
//! port, and a raw SMTP client to talk to it line by line.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::example_binary;

/// The host name the relay is configured with.
pub const HOSTNAME: &str = "relay.test.example";

/// The `relay` example binary, refused when missing or stale (see `example_binary`).
pub fn relay_example() -> PathBuf {
    example_binary::example_binary("relay")
}

/// A running relay; killed on drop.
pub struct Relay {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    /// Everything the relay wrote to stderr so far.
    log: Arc<Mutex<String>>,
}

impl Relay {
    /// Starts the relay with a smart host on `127.0.0.1:smart_host_port` and `extra` lines of
    /// configuration.
    pub fn start(smart_host_port: u16, extra: &str) -> Relay {
        Relay::start_with(smart_host_port, extra, &[])
    }

    /// Like [`Relay::start`], with more files (name, contents) in the configuration folder.
    pub fn start_with(smart_host_port: u16, extra: &str, files: &[(&str, &str)]) -> Relay {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let config = format!(
            "hostname = \"{HOSTNAME}\"\nspool = \"spool\"\nsmart_host = \"[127.0.0.1]:{smart_host_port}\"\n{extra}"
        );
        std::fs::write(dir.path().join("relay.toml"), config).unwrap();
        Relay::start_in(dir)
    }

    /// Starts the relay again on the configuration and spool of `dir`.
    pub fn start_in(dir: tempfile::TempDir) -> Relay {
        let binary = relay_example();
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new(&binary)
                .arg("-C")
                .arg(dir.path().join("relay.toml"))
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .env(
                    "RUST_LOG",
                    "warn,postrider::route=info,postrider::transport::esmtp=info,postrider::relay=info,postrider::daemon=info,postrider::server=info",
                )
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
            if wait_listening(port, &mut child) {
                // Keep stderr drained so the relay never blocks on a full pipe; keep a copy
                // for the tests that wait for a log line.
                let log = Arc::new(Mutex::new(String::new()));
                if let Some(err) = child.stderr.take() {
                    let log = log.clone();
                    std::thread::spawn(move || {
                        for line in std::io::BufRead::lines(std::io::BufReader::new(err)) {
                            let Ok(line) = line else { break };
                            eprintln!("{line}");
                            let mut log = log.lock().unwrap();
                            log.push_str(&line);
                            log.push('\n');
                        }
                    });
                }
                return Relay {
                    child,
                    port,
                    dir,
                    log,
                };
            }
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            last = String::from_utf8_lossy(&out.stderr).into_owned();
        }
        panic!("the relay did not start listening: {last}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The configuration folder.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Sends SIGHUP (reload).
    pub fn hangup(&self) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) with a pid we spawned and still own (not yet waited for).
        assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    }

    /// How many times the relay has logged `needle` so far.
    pub fn logged(&self, needle: &str) -> usize {
        self.log.lock().unwrap().matches(needle).count()
    }

    /// Waits until the relay's stderr holds `count` lines containing `needle`.
    pub fn wait_for_log(&self, needle: &str, count: usize, limit: Duration) {
        let start = std::time::Instant::now();
        loop {
            let seen = self.log.lock().unwrap().matches(needle).count();
            if seen >= count {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "the relay did not log {needle:?} {count} times: {}",
                self.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn spool(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    /// Stops the relay as an init system does (SIGTERM), waits for it to exit, and hands back
    /// its exit code, its folder and everything it logged.
    pub fn terminate(mut self) -> (Option<i32>, tempfile::TempDir, String) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) with a pid we spawned and still own (not yet waited for).
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let code = self.child.wait().ok().and_then(|s| s.code());
        // The stderr reader thread sees the end of the pipe shortly after the exit.
        std::thread::sleep(Duration::from_millis(200));
        let log = self.log.lock().unwrap().clone();
        let dir = tempfile::tempdir().unwrap();
        (code, std::mem::replace(&mut self.dir, dir), log)
    }

    /// Kills the relay at once (SIGKILL: no shutdown) and hands back its folder.
    pub fn kill(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One way to pick a port for every peer a test starts.
pub use super::sink::free_port;

/// Waits until the process listens on `port` (see `sink::listening`).
pub fn wait_listening(port: u16, child: &mut Child) -> bool {
    for _ in 0..500 {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if super::sink::listening::listens(child.id(), std::net::Ipv4Addr::LOCALHOST, port) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A raw SMTP client: sends exactly the bytes given, reads whole (multi-line) replies.
pub struct Client {
    read: BufReader<OwnedReadHalf>,
    write: OwnedWriteHalf,
}

impl Client {
    /// Connects and returns the greeting too.
    pub async fn connect(port: u16) -> (Client, String) {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let (read, write) = stream.into_split();
        let mut c = Client {
            read: BufReader::new(read),
            write,
        };
        let greeting = c.reply().await;
        (c, greeting)
    }

    /// The next reply, all its lines joined with `\n`, without line endings.
    pub async fn reply(&mut self) -> String {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(Duration::from_secs(30), self.read.read_line(&mut line))
                .await
                .expect("a reply within 30 s")
                .unwrap();
            assert!(n > 0, "connection closed; replies so far: {lines:?}");
            let line = line.trim_end_matches(['\r', '\n']).to_string();
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                return lines.join("\n");
            }
        }
    }

    pub async fn send(&mut self, bytes: &str) {
        self.write.write_all(bytes.as_bytes()).await.unwrap();
    }

    /// Sends one command line and returns its reply.
    pub async fn command(&mut self, line: &str) -> String {
        self.send(&format!("{line}\r\n")).await;
        self.reply().await
    }

    /// True once the server has closed the connection (reads until end of input).
    pub async fn closed(&mut self) -> bool {
        let mut rest = String::new();
        matches!(
            tokio::time::timeout(Duration::from_secs(10), self.read.read_line(&mut rest)).await,
            Ok(Ok(0))
        )
    }
}
