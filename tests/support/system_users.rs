//! Real system users for a test, removed again: `useradd` with a home under the test's
//! directory and no login shell, `userdel` on drop. Each name carries the test process's id
//! (`aaa-12345`), so a run never meets an account of the machine or of another run, and the
//! GECOS field marks the account as a test's: accounts a killed run left behind (their pid
//! gone) are removed by the next run that creates users. Needs root; the machine's other users
//! are never changed.

use std::path::{Path, PathBuf};
use std::process::Command;

use postrider::local::{SystemUsers, User, UserDb};

const MARK: &str = "postrider test user pid=";

/// Users created for one test.
pub struct TestUsers {
    names: Vec<String>,
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?} ({e}): install the Debian package passwd"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Removes accounts earlier test runs created whose process is gone.
fn remove_leftovers() {
    let Ok(passwd) = std::fs::read_to_string("/etc/passwd") else {
        return;
    };
    for line in passwd.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        let (Some(name), Some(gecos)) = (fields.first(), fields.get(4)) else {
            continue;
        };
        let Some(pid) = gecos.strip_prefix(MARK) else {
            continue;
        };
        let alive = pid
            .parse::<u32>()
            .is_ok_and(|p| Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            let _ = run(Command::new("userdel").arg(name));
        }
    }
}

impl TestUsers {
    /// Creates one user per base name (`aaa` becomes `aaa-PID`), each with its own group and
    /// its home `homes/NAME` (created, owned by the user, mode 0700).
    pub fn create(base_names: &[&str], homes: &Path) -> TestUsers {
        assert!(
            unsafe { libc::geteuid() } == 0,
            "creating test users needs root"
        );
        remove_leftovers();
        let pid = std::process::id();
        let mut users = TestUsers { names: Vec::new() };
        for base in base_names {
            let name = format!("{base}-{pid}");
            let home = homes.join(&name);
            run(Command::new("useradd")
                .args([
                    "--create-home",
                    "--user-group",
                    "--shell",
                    "/usr/sbin/nologin",
                ])
                .arg("--comment")
                .arg(format!("{MARK}{pid}"))
                .arg("--home-dir")
                .arg(&home)
                .arg(&name))
            .unwrap_or_else(|e| panic!("{e}"));
            users.names.push(name);
        }
        users
    }

    /// The full name of the user made from `base` (`aaa` -> `aaa-PID`).
    pub fn name(&self, base: &str) -> &str {
        let prefix = format!("{base}-");
        self.names
            .iter()
            .find(|n| n.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no test user {base}"))
    }

    /// The user made from `base`, as the system's password database has it.
    pub fn user(&self, base: &str) -> User {
        let name = self.name(base);
        SystemUsers
            .lookup(name)
            .expect("password database")
            .unwrap_or_else(|| panic!("{name} was created but is not in the password database"))
    }

    /// The home of the user made from `base`.
    pub fn home(&self, base: &str) -> PathBuf {
        self.user(base).home
    }
}

impl Drop for TestUsers {
    fn drop(&mut self) {
        for name in &self.names {
            // --remove: the home (under the test's directory) and the mail spool file.
            if let Err(e) = run(Command::new("userdel").arg("--remove").arg(name)) {
                eprintln!("warning: {e}");
            }
        }
    }
}
