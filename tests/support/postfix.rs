//! Private Postfix instances for tests: each test starts its own Postfix (Debian package
//! `postfix`) with its own configuration, queue, data directory, log file, aliases, TLS
//! certificate and loopback ports, and stops it at the end. The machine's own Postfix (its
//! `/etc/postfix`, its queue, its service) is never read, changed or needed.
//!
//! ```ignore
//! let postfix = PrivatePostfix::builder()
//!     .alias("postrider-sink", "/dev/null")
//!     .smtpd_tls(SmtpdTls::May)
//!     .start();
//! // ... deliver to 127.0.0.1:postfix.port(), trust postfix.ca_pem() for verify ...
//! let got = postfix.wait_for_delivery(&qid, "postrider-sink@localhost").await;
//! assert_eq!(got.status.as_deref(), Some("sent"));
//! ```
//!
//! The recipe (DESIGN-NOTES.md, "Private Postfix instances"): write `main.cf` and `master.cf`
//! into `DIR/etc`, `postalias -c DIR/etc DIR/etc/aliases`, check the files with
//! `postconf -c DIR/etc -n` (its stderr is the only place syntax errors are shown), then
//! `postfix -c DIR/etc start` as root. No registration in `/etc/postfix/main.cf` is needed:
//! `alternate_config_directories` only restricts the set-gid commands run by other users, and
//! `multi_instance_directories` only serves postmulti. Stop with `postfix -c DIR/etc stop`,
//! then SIGKILL whatever still carries `MAIL_CONFIG=DIR/etc`.

mod config;
mod log;
mod port;
mod process;
mod tls;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub use config::{Listener, SmtpTls, SmtpdTls};
pub use log::{Received, queue_id};
pub use process::processes_of;

use config::{Layout, MAIN_LISTENER, Parameters};
use port::PortLease;

pub const POSTFIX: &str = "/usr/sbin/postfix";
pub const POSTCONF: &str = "/usr/sbin/postconf";
pub const POSTALIAS: &str = "/usr/sbin/postalias";
pub const POSTQUEUE: &str = "/usr/sbin/postqueue";

/// Instance directories are `<temp>/postrider-postfix/instance-*`.
const INSTANCE_PREFIX: &str = "instance-";
/// Who started an instance (pid and start time), for the clean-up of orphans.
pub const OWNER_FILE: &str = "owner";

/// Set (to anything) to keep each stopped instance's directory for a look at its files.
const KEEP_ENV: &str = "POSTRIDER_KEEP_POSTFIX";

/// How long `wait_for_delivery` waits for Postfix's delivery line.
const DELIVERY_WAIT: Duration = Duration::from_secs(20);

const INSTALL: &str = "install the Debian package postfix (scripts/test does)";

/// Settings of a private instance; `start` brings it up.
#[derive(Debug, Clone)]
pub struct PostfixBuilder {
    myhostname: Option<String>,
    smtpd_tls: SmtpdTls,
    smtp_tls: SmtpTls,
    trusted_cas: Vec<String>,
    relayhost: Option<String>,
    default_transport: Option<String>,
    discard_ehlo_keywords: Vec<String>,
    main_cf: Vec<(String, String)>,
    aliases: Vec<(String, String)>,
    listeners: Vec<Listener>,
    services: Vec<String>,
}

impl PostfixBuilder {
    /// `myhostname` (default `postfix-N.localhost`, unique per instance so two instances
    /// relaying to each other do not see a mail loop). `mydestination` is always
    /// `$myhostname, localhost`, and the certificate names it too.
    pub fn myhostname(mut self, name: &str) -> PostfixBuilder {
        self.myhostname = Some(name.to_string());
        self
    }

    /// `smtpd_tls_security_level` (default `may`).
    pub fn smtpd_tls(mut self, level: SmtpdTls) -> PostfixBuilder {
        self.smtpd_tls = level;
        self
    }

    /// `smtp_tls_security_level` for what the instance relays onwards (default `none`).
    pub fn smtp_tls(mut self, level: SmtpTls) -> PostfixBuilder {
        self.smtp_tls = level;
        self
    }

    /// A CA (PEM) the instance's SMTP client trusts, for `SmtpTls::Verify` (e.g. the
    /// `TestCa` of a postrider listener it relays to).
    pub fn trust_ca_pem(mut self, pem: &str) -> PostfixBuilder {
        self.trusted_cas.push(pem.to_string());
        self
    }

    /// `relayhost` (e.g. `[127.0.0.1]:2525`): mail for other domains goes there. Without
    /// it (and without `default_transport`) the instance refuses to deliver anywhere but
    /// locally, so no test talks to the Internet by mistake.
    pub fn relayhost(mut self, next_hop: &str) -> PostfixBuilder {
        self.relayhost = Some(next_hop.to_string());
        self
    }

    /// `default_transport` (and `relay_transport`), e.g. `smtp:[127.0.0.1]:2525`.
    pub fn default_transport(mut self, transport: &str) -> PostfixBuilder {
        self.default_transport = Some(transport.to_string());
        self
    }

    /// `smtpd_discard_ehlo_keywords` (e.g. `8bitmime`, `pipelining`, `starttls`).
    pub fn discard_ehlo_keywords(mut self, keywords: &[&str]) -> PostfixBuilder {
        self.discard_ehlo_keywords
            .extend(keywords.iter().map(|k| k.to_string()));
        self
    }

    /// Any `main.cf` parameter; it overrides the defaults and the settings above. A name
    /// Postfix does not know fails `start` (postconf's "unused parameter").
    pub fn main_cf(mut self, name: &str, value: &str) -> PostfixBuilder {
        self.main_cf.push((name.to_string(), value.to_string()));
        self
    }

    /// An alias, e.g. `alias("postrider-sink", "/dev/null")`.
    pub fn alias(mut self, name: &str, value: &str) -> PostfixBuilder {
        config::check_alias(name, value);
        self.aliases.push((name.to_string(), value.to_string()));
        self
    }

    /// One more smtpd listener on its own free port (`PrivatePostfix::listener_port`).
    pub fn listener(mut self, listener: Listener) -> PostfixBuilder {
        assert!(
            listener.name != MAIN_LISTENER
                && self.listeners.iter().all(|l| l.name != listener.name),
            "a listener named {:?} exists already",
            listener.name
        );
        self.listeners.push(listener);
        self
    }

    /// A raw `master.cf` service line (a `unix` or `pipe` service; continuation lines start
    /// with white space). Inet listeners go through `listener`, which picks their ports.
    pub fn service(mut self, line: &str) -> PostfixBuilder {
        self.services.push(line.trim_end().to_string());
        self
    }

    /// Starts the instance; panics with Postfix's own words when it cannot.
    pub fn start(self) -> PrivatePostfix {
        require_postfix();
        let base = std::env::temp_dir().join("postrider-postfix");
        create_public_dir(&base);
        process::sweep_orphans(&base);
        let dir = tempfile::Builder::new()
            .prefix(INSTANCE_PREFIX)
            .tempdir_in(&base)
            .unwrap_or_else(|e| {
                panic!(
                    "cannot create an instance directory in {}: {e}",
                    base.display()
                )
            });
        write(&dir.path().join(OWNER_FILE), &process::owner_stamp(), 0o644);
        // Postfix's daemons reach the data directory and the log by absolute path after
        // dropping to mail_owner, so every directory above them must be searchable.
        set_mode(dir.path(), 0o755);
        let layout = Layout {
            root: dir.path().to_path_buf(),
        };
        create_public_dir(&layout.config_dir());
        create_public_dir(&layout.queue_dir());
        // local(8) writes a mailbox as its recipient, like /var/mail (sticky, world-writable).
        create_public_dir(&layout.mail_dir());
        set_mode(&layout.mail_dir(), 0o1777);

        static NEXT: AtomicUsize = AtomicUsize::new(1);
        let myhostname = self.myhostname.clone().unwrap_or_else(|| {
            format!(
                "postfix-{}-{}.localhost",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            )
        });
        let certificate =
            tls::InstanceCertificate::new(&myhostname, &["localhost", "127.0.0.1", &myhostname]);
        write(&layout.cert(), &certificate.chain_pem, 0o644);
        write(&layout.key(), &certificate.key_pem, 0o600);
        let mut client_cas = certificate.ca_pem.clone();
        for pem in &self.trusted_cas {
            client_cas.push_str(pem);
        }
        write(&layout.client_cas(), &client_cas, 0o644);
        write(
            &layout.config_dir().join("main.cf"),
            &config::render_main_cf(&self.parameters(&layout, &myhostname)),
            0o644,
        );
        write(
            &layout.aliases(),
            &config::render_aliases(&self.aliases),
            0o644,
        );
        run(
            Command::new(POSTALIAS)
                .arg("-c")
                .arg(layout.config_dir())
                .arg(layout.aliases()),
            "compile the aliases",
        )
        .unwrap_or_else(|e| panic!("{e}"));

        // A port is only known to be ours once Postfix listens on it alone; a neighbour that
        // took it meanwhile makes the start fail (or share it), and the next round takes
        // other ports. Bounded.
        let mut last_error = String::new();
        for _ in 0..3 {
            let leases: Vec<(PortLease, Listener)> =
                std::iter::once(Listener::smtpd(MAIN_LISTENER))
                    .chain(self.listeners.iter().cloned())
                    .map(|l| (PortLease::take(&base), l))
                    .collect();
            let master_cf = config::render_master_cf(
                &leases
                    .iter()
                    .map(|(lease, l)| (lease.port(), l.clone()))
                    .collect::<Vec<_>>(),
                &self.services,
            );
            write(&layout.config_dir().join("master.cf"), &master_cf, 0o644);
            check_configuration(&layout);
            let mut instance = PrivatePostfix {
                layout: layout.clone(),
                myhostname: myhostname.clone(),
                ca_pem: certificate.ca_pem.clone(),
                leases,
                running: true,
                _dir: None,
            };
            match instance.postfix("start") {
                Ok(_) => {
                    let shared: Vec<u16> = instance
                        .leases
                        .iter()
                        .map(|(l, _)| l.port())
                        .filter(|p| port::listeners(*p) != 1)
                        .collect();
                    if shared.is_empty() {
                        instance._dir = Some(dir);
                        return instance;
                    }
                    last_error =
                        format!("another process also listens on 127.0.0.1 port(s) {shared:?}");
                }
                Err(e) => {
                    last_error = e;
                    instance.running = false;
                    if !last_error.contains("Address already in use") {
                        break;
                    }
                }
            }
            if let Err(e) = instance.shut_down() {
                last_error.push_str(&format!("; and stopping it: {e}"));
            }
        }
        panic!(
            "the private Postfix in {} did not start: {last_error}",
            layout.root.display()
        );
    }

    fn parameters(&self, layout: &Layout, myhostname: &str) -> Parameters {
        let mut p = config::base_parameters(layout, myhostname);
        config::set_smtpd_tls(&mut p, self.smtpd_tls);
        config::set_smtp_tls(&mut p, self.smtp_tls);
        if let Some(hop) = &self.relayhost {
            p.set("relayhost", hop);
            p.set("default_transport", "smtp");
            p.set("relay_transport", "relay");
        }
        if let Some(transport) = &self.default_transport {
            p.set("default_transport", transport);
            p.set("relay_transport", transport);
        }
        if !self.discard_ehlo_keywords.is_empty() {
            p.set(
                "smtpd_discard_ehlo_keywords",
                &self.discard_ehlo_keywords.join(", "),
            );
        }
        for (name, value) in &self.main_cf {
            p.set(name, value);
        }
        p
    }
}

/// A running private Postfix; stopped (and its processes killed if need be) on drop.
pub struct PrivatePostfix {
    layout: Layout,
    myhostname: String,
    ca_pem: String,
    leases: Vec<(PortLease, Listener)>,
    running: bool,
    /// Removed after the instance stopped (fields drop after `Drop::drop`).
    _dir: Option<tempfile::TempDir>,
}

impl PrivatePostfix {
    pub fn builder() -> PostfixBuilder {
        PostfixBuilder {
            myhostname: None,
            smtpd_tls: SmtpdTls::May,
            smtp_tls: SmtpTls::None,
            trusted_cas: Vec::new(),
            relayhost: None,
            default_transport: None,
            discard_ehlo_keywords: Vec::new(),
            main_cf: Vec::new(),
            aliases: Vec::new(),
            listeners: Vec::new(),
            services: Vec::new(),
        }
    }

    /// The port of the main smtpd listener on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.listener_port(MAIN_LISTENER)
    }

    /// `127.0.0.1:port()`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), self.port())
    }

    /// The port of a listener added with `PostfixBuilder::listener`.
    pub fn listener_port(&self, name: &str) -> u16 {
        self.leases
            .iter()
            .find(|(_, l)| l.name == name)
            .map(|(lease, _)| lease.port())
            .unwrap_or_else(|| panic!("this instance has no listener named {name:?}"))
    }

    pub fn myhostname(&self) -> &str {
        &self.myhostname
    }

    /// The CA that signed the smtpd certificate (names: `localhost`, `127.0.0.1`,
    /// `myhostname`): what a client trusts for `verify`.
    pub fn ca_pem(&self) -> &[u8] {
        self.ca_pem.as_bytes()
    }

    pub fn config_dir(&self) -> PathBuf {
        self.layout.config_dir()
    }

    pub fn log_path(&self) -> PathBuf {
        self.layout.maillog()
    }

    /// The directory holding `etc/`, `queue/`, `data/`, `mail/` and `maillog`.
    pub fn root(&self) -> &Path {
        &self.layout.root
    }

    /// The instance's log so far.
    pub fn log(&self) -> String {
        read_log(&self.layout.maillog())
    }

    /// The effective value of a parameter (`postconf -c DIR -h NAME`).
    pub fn postconf(&self, name: &str) -> String {
        run(
            Command::new(POSTCONF)
                .arg("-c")
                .arg(self.layout.config_dir())
                .arg("-h")
                .arg(name),
            "read a parameter",
        )
        .map(|out| String::from_utf8_lossy(&out.stdout).trim_end().to_string())
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The queue as `postqueue -p` (mailq) shows it.
    pub fn queue(&self) -> String {
        run(
            Command::new(POSTQUEUE)
                .arg("-c")
                .arg(self.layout.config_dir())
                .arg("-p"),
            "list the queue",
        )
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Waits (real time, up to 20 s) for the instance to log the delivery of message `qid` to
    /// `rcpt`; returns what it saw either way.
    pub async fn wait_for_delivery(&self, qid: &str, rcpt: &str) -> Received {
        let deadline = Instant::now() + DELIVERY_WAIT;
        loop {
            let r = log::scan(&self.log(), qid, rcpt);
            if r.status.is_some() || Instant::now() > deadline {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (real time, up to `limit`) for a log line for which `wanted` holds.
    pub async fn wait_for_log_line(
        &self,
        wanted: impl Fn(&str) -> bool,
        limit: Duration,
    ) -> Option<String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(line) = self.log().lines().find(|l| wanted(l)) {
                return Some(line.to_string());
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The instance's running processes (master and daemons).
    pub fn processes(&self) -> Vec<libc::pid_t> {
        processes_of(&self.layout.config_dir())
    }

    /// The master's pid, from `queue_directory/pid/master.pid`.
    pub fn master_pid(&self) -> libc::pid_t {
        let path = self.layout.queue_dir().join("pid/master.pid");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        text.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{}: {text:?} is no pid: {e}", path.display()))
    }

    /// Stops the instance; panics if some of its processes outlived even SIGKILL.
    pub fn stop(mut self) {
        if let Err(e) = self.shut_down() {
            panic!("{e}");
        }
    }

    /// `postfix stop`, then SIGKILL for anything of this instance still running (a failed
    /// stop, a master that died and left daemons behind).
    fn shut_down(&mut self) -> Result<(), String> {
        let stop = if self.running {
            self.running = false;
            self.postfix("stop").err()
        } else {
            None
        };
        let left = process::kill_all(&self.layout.config_dir());
        match (left.is_empty(), stop) {
            (true, _) => Ok(()),
            (false, stop) => Err(format!(
                "the private Postfix in {} left processes {left:?} running{}",
                self.layout.root.display(),
                stop.map(|e| format!(" (postfix stop: {e})"))
                    .unwrap_or_default()
            )),
        }
    }

    /// `postfix -c DIR COMMAND`; on failure, the command's output and the log's tail.
    fn postfix(&self, command: &str) -> Result<Output, String> {
        run(
            Command::new(POSTFIX)
                .arg("-c")
                .arg(self.layout.config_dir())
                .arg(command),
            command,
        )
        .map_err(|e| {
            let log = read_log(&self.layout.maillog());
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            format!(
                "{e}; its log {} ends:\n{}",
                self.layout.maillog().display(),
                tail.join("\n")
            )
        })
    }
}

impl Drop for PrivatePostfix {
    fn drop(&mut self) {
        if let Err(e) = self.shut_down() {
            // A panic here would abort a test that is already unwinding.
            eprintln!("{e}");
        }
        if std::env::var_os(KEEP_ENV).is_some()
            && let Some(dir) = self._dir.take()
        {
            let kept = dir.keep();
            // Without an owner the next start's sweep leaves it alone for an hour.
            let _ = std::fs::remove_file(kept.join(OWNER_FILE));
            eprintln!("{KEEP_ENV}: kept {}", kept.display());
        }
    }
}

/// Fails (never skips) when Postfix cannot run here, naming what to install or change.
fn require_postfix() {
    for tool in [POSTFIX, POSTCONF, POSTALIAS, POSTQUEUE] {
        assert!(Path::new(tool).exists(), "{tool} is missing: {INSTALL}");
    }
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "a private Postfix instance needs root (its master starts as root and its daemons \
         drop to mail_owner postfix): run the tests as root"
    );
}

/// Syntax errors and misspelt parameter names: the postfix command would report them only to
/// syslog (absent here, so silently), postconf reports them on stderr.
fn check_configuration(layout: &Layout) {
    let out = run(
        Command::new(POSTCONF)
            .arg("-c")
            .arg(layout.config_dir())
            .arg("-n"),
        "check main.cf",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.trim().is_empty(),
        "the generated {}/main.cf is not clean:\n{stderr}",
        layout.config_dir().display()
    );
    let out = run(
        Command::new(POSTCONF)
            .arg("-c")
            .arg(layout.config_dir())
            .arg("-M"),
        "check master.cf",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.trim().is_empty(),
        "the generated {}/master.cf is not clean:\n{stderr}",
        layout.config_dir().display()
    );
}

/// Runs a Postfix command to completion; an error says which, why, and what it printed.
fn run(cmd: &mut Command, what: &str) -> Result<Output, String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {shown} ({what}): {e}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{shown} ({what}) failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn read_log(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        // postlogd creates the file with the first line.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => panic!("cannot read {}: {e}", path.display()),
    }
}

fn create_public_dir(path: &Path) {
    std::fs::create_dir_all(path)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
    set_mode(path, 0o755);
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("cannot chmod {mode:o} {}: {e}", path.display()));
}

/// Writes a generated file dated 10 s back: Postfix's commands wait until `main.cf` (and
/// postalias until its source) is over a second old, ~2 s per instance otherwise.
fn write(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    set_mode(path, mode);
    backdate(path, Duration::from_secs(10));
}

fn backdate(path: &Path, age: Duration) {
    let when = std::time::SystemTime::now() - age;
    std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(when))
        .unwrap_or_else(|e| panic!("cannot set the time of {}: {e}", path.display()));
}
