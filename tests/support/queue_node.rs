//! `examples/queue_node` as a real process: one engine of a shared queue, fed submissions on
//! its standard input, killed with SIGKILL or stopped with SIGTERM by the test.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::example_binary::example_binary;

/// What a node answered for one submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Durable, with this queue id.
    Queued(String),
    /// Not queued, temporarily (the reason).
    Temporary(String),
    /// Not queued, for good (the reason).
    Permanent(String),
}

pub struct Node {
    pub name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    answers: Arc<Mutex<Vec<(String, Answer)>>>,
    log: PathBuf,
    sent: usize,
}

impl Node {
    /// Starts a node on `config` whose leases carry `name` and last `lease`; returns once its
    /// engine runs. Its log goes to `log_dir/NAME.log`.
    pub fn start(config: &Path, name: &str, lease: &str, log_dir: &Path) -> Node {
        let binary = example_binary("queue_node");
        let log = log_dir.join(format!("{name}.log"));
        let mut child = Command::new(&binary)
            .arg("-C")
            .arg(config)
            .args(["--node", name, "--lease", lease])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let stdout = child.stdout.take().unwrap();
        let answers = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        {
            let answers = answers.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if line == "ready" {
                        let _ = ready_tx.send(());
                        continue;
                    }
                    let mut parts = line.splitn(3, ' ');
                    let (kind, tag, rest) = (
                        parts.next().unwrap_or(""),
                        parts.next().unwrap_or("").to_string(),
                        parts.next().unwrap_or("").to_string(),
                    );
                    let answer = match kind {
                        "ok" => Answer::Queued(rest),
                        "temp" => Answer::Temporary(rest),
                        _ => Answer::Permanent(rest),
                    };
                    answers.lock().unwrap().push((tag, answer));
                }
            });
        }
        let stdin = child.stdin.take();
        let mut node = Node {
            name: name.to_string(),
            child,
            stdin,
            answers,
            log,
            sent: 0,
        };
        if ready_rx.recv_timeout(Duration::from_secs(30)).is_err() {
            let _ = node.child.kill();
            panic!(
                "queue node {name} did not start:\n{}",
                std::fs::read_to_string(&node.log).unwrap_or_default()
            );
        }
        node
    }

    /// Hands the node one submission; false when it is gone (its input is closed).
    pub fn submit(&mut self, tag: &str, rcpt: &str) -> bool {
        let Some(stdin) = &mut self.stdin else {
            return false;
        };
        if writeln!(stdin, "{tag} {rcpt}")
            .and_then(|_| stdin.flush())
            .is_err()
        {
            self.stdin = None;
            return false;
        }
        self.sent += 1;
        true
    }

    /// Submissions handed over and not answered yet.
    pub fn outstanding(&self) -> usize {
        self.sent - self.answers.lock().unwrap().len()
    }

    /// Every answer so far, as (tag, answer).
    pub fn answers(&self) -> Vec<(String, Answer)> {
        self.answers.lock().unwrap().clone()
    }

    /// Waits (real time, up to `limit`) until the node has answered `n` submissions.
    pub fn wait_answers(&self, n: usize, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        loop {
            let got = self.answers.lock().unwrap().len();
            if got >= n || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL: the process dies at once, whatever it was doing.
    pub fn kill9(&mut self) {
        self.stdin = None;
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for a clean exit (at most `limit`, then SIGKILL).
    pub fn stop(&mut self, limit: Duration) {
        self.stdin = None;
        // SAFETY: sending a signal to our own child's pid has no memory effects.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill9();
    }

    /// What the node logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `postgresql://` URL for a cluster's Unix socket directory and database.
pub fn socket_url(socket_dir: &Path, dbname: &str) -> String {
    let dir: String = socket_dir
        .to_str()
        .unwrap()
        .bytes()
        .map(|b| match b {
            b'/' => "%2F".to_string(),
            b => (b as char).to_string(),
        })
        .collect();
    format!("postgresql://postrider@{dir}:5432/{dbname}")
}
