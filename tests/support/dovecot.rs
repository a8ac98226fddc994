//! A private Dovecot instance (Debian's `dovecot-imapd` and `dovecot-lmtpd`): its own config
//! file, base_dir, state_dir and log in a temporary directory, IMAP on a free loopback port, an
//! LMTP Unix socket, a static passdb (every password is `test`) and a static userdb whose users
//! are all the system user `nobody`, with their mail under `DIR/mail/USER/`. The machine's
//! `/etc/dovecot` and its running services are never touched. Stopped on drop.
//!
//! [`Dovecot::start_for_system_users`] serves the machine's own users instead (the passwd
//! userdb, `mail_location = maildir:~/Maildir`), for tests with real accounts
//! (`support::system_users`).

use super::sink::free_port;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use postrider::local::{SystemUsers, User, UserDb};

/// Where the instance keeps mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// `maildir:DIR/mail/%u/Maildir`.
    Maildir,
    /// `mbox:DIR/mail/%u/mail:INBOX=DIR/mail/%u/inbox`, with Debian's lock settings.
    Mbox,
}

const INSTALL: &str = "install the Debian packages dovecot-imapd and dovecot-lmtpd \
                       (apt-get install -y dovecot-imapd dovecot-lmtpd)";

pub struct Dovecot {
    dir: tempfile::TempDir,
    pub imap_port: u16,
    pub store: Store,
    config: PathBuf,
    system_users: bool,
}

/// The system user every Dovecot test user maps to.
pub fn nobody() -> User {
    SystemUsers
        .lookup("nobody")
        .expect("password database")
        .expect("the system has a user nobody")
}

impl Dovecot {
    /// Starts an instance; fails (naming the packages) when Dovecot is not installed.
    pub fn start(store: Store) -> Dovecot {
        Self::start_with(store, "")
    }

    /// Starts an instance with `extra` appended to its configuration (a quota, say).
    pub fn start_with(store: Store, extra: &str) -> Dovecot {
        Self::launch(store, extra, false)
    }

    /// Starts an instance for the system's users: each logs in with password `test`, and
    /// their mail is `~/Maildir` in the home the password database gives, read as that user.
    pub fn start_for_system_users() -> Dovecot {
        Self::launch(Store::Maildir, "", true)
    }

    fn launch(store: Store, extra: &str, system_users: bool) -> Dovecot {
        for bin in [
            "/usr/sbin/dovecot",
            "/usr/lib/dovecot/imap",
            "/usr/lib/dovecot/lmtp",
        ] {
            assert!(Path::new(bin).exists(), "{bin} is missing: {INSTALL}");
        }
        let dir = tempfile::Builder::new()
            .prefix("postrider-dovecot")
            .tempdir()
            .unwrap();
        let root = dir.path();
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
        for d in ["run", "state", "mail"] {
            std::fs::create_dir(root.join(d)).unwrap();
        }
        let nobody = nobody();
        // Dovecot runs as nobody for every user and creates each user's directory itself.
        std::os::unix::fs::chown(root.join("mail"), Some(nobody.uid), Some(nobody.gid)).unwrap();
        let port = free_port();
        let location = match store {
            Store::Maildir if system_users => "maildir:~/Maildir".to_string(),
            Store::Maildir => format!("maildir:{}/mail/%u/Maildir", root.display()),
            Store::Mbox => format!(
                "mbox:{0}/mail/%u/mail:INBOX={0}/mail/%u/inbox",
                root.display()
            ),
        };
        let config = root.join("dovecot.conf");
        let text = format!(
            r#"# A private instance for postrider's tests.
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/log
info_log_path = {root}/log
protocols = imap lmtp
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
default_internal_user = nobody
default_login_user = nobody
default_internal_group = nogroup
mail_location = {location}
mbox_read_locks = fcntl
mbox_write_locks = fcntl dotlock
passdb {{
  driver = static
  args = password=test
}}
{userdb}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service lmtp {{
  unix_listener lmtp {{
    mode = 0666
  }}
}}
service stats {{
  unix_listener stats-reader {{
    mode = 0666
  }}
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
{extra}
"#,
            root = root.display(),
            userdb = if system_users {
                "userdb {\n  driver = passwd\n}".to_string()
            } else {
                format!(
                    "userdb {{\n  driver = static\n  args = uid={} gid={} home={}/mail/%u\n}}",
                    nobody.uid,
                    nobody.gid,
                    root.display()
                )
            },
        );
        std::fs::write(&config, text).unwrap();
        // The daemon keeps the standard error it was started with: a file, not a pipe that
        // would never reach end-of-file.
        let stderr = std::fs::File::create(root.join("stderr")).unwrap();
        let status = Command::new("/usr/sbin/dovecot")
            .arg("-c")
            .arg(&config)
            .stdin(std::process::Stdio::null())
            .stdout(stderr.try_clone().unwrap())
            .stderr(stderr)
            .status()
            .unwrap_or_else(|e| panic!("cannot run dovecot ({e}): {INSTALL}"));
        assert!(
            status.success(),
            "dovecot did not start: {}{}",
            std::fs::read_to_string(root.join("stderr")).unwrap_or_default(),
            std::fs::read_to_string(root.join("log")).unwrap_or_default()
        );
        let d = Dovecot {
            dir,
            imap_port: port,
            store,
            config,
            system_users,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
            || !d.lmtp_socket().exists()
        {
            assert!(
                Instant::now() < deadline,
                "dovecot did not listen on 127.0.0.1:{port} within 20 s: {}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    /// The instance's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The LMTP socket.
    pub fn lmtp_socket(&self) -> PathBuf {
        self.dir.path().join("run/lmtp")
    }

    /// The home of test user `user` (created on first use).
    pub fn home(&self, user: &str) -> PathBuf {
        self.dir.path().join("mail").join(user)
    }

    /// A postrider user for test user `user`: the uid and gid Dovecot uses, its home here. The
    /// home is created (owned by nobody) if missing.
    pub fn user(&self, user: &str) -> User {
        let nobody = nobody();
        let home = self.home(user);
        if !home.exists() {
            std::fs::create_dir(&home).unwrap();
            std::os::unix::fs::chown(&home, Some(nobody.uid), Some(nobody.gid)).unwrap();
        }
        User::new(user, nobody.uid, nobody.gid, home)
    }

    /// The `mailbox` value for postrider that matches this instance's `mail_location`.
    pub fn postrider_mailbox(&self) -> String {
        match self.store {
            Store::Maildir if self.system_users => "maildir:~/Maildir".to_string(),
            Store::Maildir => format!("maildir:{}/mail/%u/Maildir", self.dir().display()),
            Store::Mbox => format!("mbox:{}/mail/%u/inbox", self.dir().display()),
        }
    }

    /// The instance's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = Command::new("/usr/sbin/dovecot")
            .arg("-c")
            .arg(&self.config)
            .arg("stop")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        let pid = self.dir.path().join("run/master.pid");
        let deadline = Instant::now() + Duration::from_secs(10);
        while pid.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
