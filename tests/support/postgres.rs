//! A private PostgreSQL cluster for the tests: `initdb` into a temporary directory as the
//! unprivileged `postgres` user (the server refuses to run as root), listening only on a Unix
//! socket in that directory, never on the network and never the machine's own cluster.
//!
//! `initdb` takes seconds, so each test binary shares one cluster ([`shared`]) and each test
//! takes a fresh database ([`PgCluster::database`]). The cluster is stopped when the process
//! exits (an `atexit` hook: statics are never dropped) or when a `PgCluster` of its own is
//! dropped. Without Debian's `postgresql` package the tests fail saying so.
#![allow(dead_code)]

use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

/// The socket "port": only names the socket file, since nothing listens on TCP.
const PORT: u16 = 5432;

/// One private cluster.
pub struct PgCluster {
    root: tempfile::TempDir,
    bin: PathBuf,
    stopped_on_drop: bool,
}

static SHARED: OnceLock<PgCluster> = OnceLock::new();
static SHARED_ROOT: Mutex<Option<(PathBuf, PathBuf, PathBuf)>> = Mutex::new(None);
static DATABASES: AtomicUsize = AtomicUsize::new(0);

/// The cluster this test binary shares, started on first use.
pub fn shared() -> &'static PgCluster {
    SHARED.get_or_init(|| {
        let mut cluster = PgCluster::start();
        cluster.stopped_on_drop = false;
        *SHARED_ROOT.lock().unwrap() = Some((
            cluster.bin.clone(),
            cluster.data(),
            cluster.root.path().to_path_buf(),
        ));
        // SAFETY: `stop_shared` is a plain function that lives as long as the program.
        unsafe { libc::atexit(stop_shared) };
        cluster
    })
}

extern "C" fn stop_shared() {
    if let Ok(guard) = SHARED_ROOT.lock()
        && let Some((bin, data, root)) = guard.as_ref()
    {
        let _ = pg_ctl(
            bin,
            &["-D", data.to_str().unwrap(), "-m", "immediate", "stop"],
        );
        let _ = std::fs::remove_dir_all(root);
    }
}

/// The directory of the server binaries, or a failure naming the package.
fn bin_dir() -> PathBuf {
    let base = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(base)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    versions.retain(|p| p.join("initdb").exists());
    versions.sort();
    versions.pop().unwrap_or_else(|| {
        panic!(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): \
             apt-get install -y postgresql"
        )
    })
}

fn postgres_ids() -> (libc::uid_t, libc::gid_t) {
    let name = CString::new("postgres").unwrap();
    // SAFETY: getpwnam returns a pointer into static storage or null; read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(
        !pw.is_null(),
        "there is no postgres user (apt-get install -y postgresql creates it)"
    );
    // SAFETY: non-null, checked above.
    unsafe { ((*pw).pw_uid, (*pw).pw_gid) }
}

/// Runs a server program as the postgres user.
fn as_postgres(program: &Path, args: &[&str]) -> Output {
    Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run runuser (util-linux) for {program:?}: {e}"))
}

fn pg_ctl(bin: &Path, args: &[&str]) -> Output {
    as_postgres(&bin.join("pg_ctl"), args)
}

fn check(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl PgCluster {
    /// Creates and starts a cluster of its own (stopped when dropped).
    pub fn start() -> PgCluster {
        let bin = bin_dir();
        let root = tempfile::Builder::new()
            .prefix("postrider-pg-")
            .tempdir_in("/tmp")
            .unwrap();
        let (uid, gid) = postgres_ids();
        std::os::unix::fs::chown(root.path(), Some(uid), Some(gid)).unwrap();
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let cluster = PgCluster {
            root,
            bin,
            stopped_on_drop: true,
        };
        let data = cluster.data();
        let out = as_postgres(
            &cluster.bin.join("initdb"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postrider",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        );
        check("initdb", &out);
        cluster.start_server();
        cluster
    }

    fn data(&self) -> PathBuf {
        self.root.path().join("data")
    }

    /// The directory holding the server's Unix socket.
    pub fn socket_dir(&self) -> &Path {
        self.root.path()
    }

    /// The server's log file.
    pub fn log(&self) -> PathBuf {
        self.root.path().join("log")
    }

    fn start_server(&self) {
        let opts = format!(
            "-k {} -p {PORT} -c listen_addresses='' -c max_connections=200",
            self.socket_dir().display()
        );
        let out = pg_ctl(
            &self.bin,
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-o",
                &opts,
                "-l",
                self.log().to_str().unwrap(),
                "-w",
                "start",
            ],
        );
        check("pg_ctl start", &out);
    }

    /// Stops the server (fast shutdown: sessions are disconnected, nothing committed is lost).
    pub fn stop(&self) {
        let out = pg_ctl(
            &self.bin,
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        );
        check("pg_ctl stop", &out);
    }

    /// Stops the server the way a crash would: every backend killed, no checkpoint, so the
    /// next start replays the write-ahead log.
    pub fn crash(&self) {
        let out = pg_ctl(
            &self.bin,
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
        check("pg_ctl stop -m immediate", &out);
    }

    /// Starts the server again after [`PgCluster::stop`] or [`PgCluster::crash`].
    pub fn start_again(&self) {
        self.start_server();
    }

    /// The process ids of the server: the postmaster and its children (for CPU accounting).
    pub fn pids(&self) -> Vec<u32> {
        let Ok(pidfile) = std::fs::read_to_string(self.data().join("postmaster.pid")) else {
            return Vec::new();
        };
        let Some(master) = pidfile
            .lines()
            .next()
            .and_then(|l| l.trim().parse::<u32>().ok())
        else {
            return Vec::new();
        };
        let mut pids = vec![master];
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // Field 4 (after the parenthesised command) is the parent pid.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(master) {
                pids.push(pid);
            }
        }
        pids
    }

    /// A connection string for `dbname`.
    pub fn url(&self, dbname: &str) -> String {
        format!(
            "host={} port={PORT} user=postrider dbname={dbname}",
            self.socket_dir().display()
        )
    }

    /// Creates a fresh, empty database and returns its connection string.
    pub fn database(&self) -> String {
        let n = DATABASES.fetch_add(1, Ordering::Relaxed);
        let name = format!("t{}_{n}", std::process::id());
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(&name)
    }

    /// Runs one SQL command with psql in database `dbname`; returns its unaligned output.
    pub fn psql(&self, dbname: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                self.socket_dir().to_str().unwrap(),
                "-p",
                &PORT.to_string(),
                "-U",
                "postrider",
                "-d",
                dbname,
                "-c",
                sql,
            ])
            .output()
            .expect("psql runs");
        check(&format!("psql {sql:?}"), &out);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The database name in a connection string from [`PgCluster::database`].
    pub fn dbname_of(url: &str) -> &str {
        url.rsplit("dbname=").next().unwrap()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.stopped_on_drop {
            let _ = pg_ctl(
                &self.bin,
                &[
                    "-D",
                    self.data().to_str().unwrap(),
                    "-m",
                    "immediate",
                    "stop",
                ],
            );
        }
    }
}
