//! Helpers for the tests of the example commands (`sendmail`, `voicemail`): the built binary,
//! refused when stale, and a configuration folder with its own spool.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use super::example_binary;
pub use example_binary::example_binary;

/// A temporary folder with `postrider.toml` (host name `sipserver1.ourtest.com`, a spool in
/// the folder, the smart host `[127.0.0.1]:PORT`) for the example commands.
pub struct Site {
    dir: tempfile::TempDir,
}

pub const HOSTNAME: &str = "sipserver1.ourtest.com";

impl Site {
    /// A site whose smart host is `[127.0.0.1]:port`.
    pub fn new(port: u16) -> Site {
        let site = Site {
            dir: tempfile::tempdir().expect("create a temporary folder"),
        };
        site.set_smart_host_port(port);
        site
    }

    /// Rewrites the configuration with another smart-host port.
    pub fn set_smart_host_port(&self, port: u16) {
        self.write(
            "postrider.toml",
            &format!(
                "hostname = \"{HOSTNAME}\"\nspool = \"spool\"\nsmart_host = \"[127.0.0.1]:{port}\"\n\
                 [spf]\npolicy = \"off\"\n"
            ),
        );
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn config(&self) -> PathBuf {
        self.path("postrider.toml")
    }

    pub fn spool(&self) -> PathBuf {
        self.path("spool")
    }

    pub fn write(&self, name: &str, text: &str) {
        std::fs::write(self.path(name), text).expect("write a test file");
    }

    /// The spool opened read-only, as `mailq` reads it (whatever its on-disk format); `None`
    /// while nothing has created it yet.
    pub fn reader(&self) -> Option<postrider::spool::FsSpool> {
        use postrider::spool::FsSpool;
        use postrider::spool::fs::FsSpoolOptions;
        if !self.spool().join("queue").is_dir() {
            return None;
        }
        Some(
            FsSpool::open_with(self.spool(), FsSpoolOptions::new().read_only(true))
                .expect("open the spool to read it"),
        )
    }

    /// The ids of the messages in the spool, oldest first, as the spool lists them.
    pub fn queued(&self) -> Vec<String> {
        let Some(spool) = self.reader() else {
            return Vec::new();
        };
        spool
            .listing()
            .expect("list the spool")
            .map(|m| m.expect("a readable queued message").id.to_string())
            .collect()
    }

    /// A queued message as the spool returns it (read without changing anything).
    pub fn queued_message(&self, id: &str) -> postrider::spool::QueuedMessage {
        self.reader()
            .unwrap_or_else(|| panic!("{id} is not queued: there is no spool"))
            .listing()
            .expect("list the spool")
            .map(|m| m.expect("a readable queued message"))
            .find(|m| m.id.as_str() == id)
            .unwrap_or_else(|| panic!("{id} is not queued"))
    }

    /// A command running example `name` with `-C` this site's configuration first.
    pub fn command(&self, name: &str) -> Command {
        let mut cmd = Command::new(example_binary(name));
        cmd.arg("-C").arg(self.config());
        cmd
    }
}

/// Runs the sendmail example of `site` with `args`, `stdin` on its standard input.
pub fn sendmail(site: &Site, args: &[&str], stdin: &str) -> Output {
    let mut cmd = site.command("sendmail");
    cmd.args(args);
    run(cmd, stdin)
}

/// Runs `cmd` with `stdin` as its standard input.
pub fn run(mut cmd: Command, stdin: &str) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the example");
    let mut input = child.stdin.take().expect("piped stdin");
    // A command that refuses its arguments exits without reading: a broken pipe is expected
    // then, and its exit status tells the test what happened.
    let _ = input.write_all(stdin.as_bytes());
    drop(input);
    child.wait_with_output().expect("wait for the example")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
