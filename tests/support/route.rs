//! Helpers for the routing tests: a configuration folder holding the sample files the issue's
//! `sendmail -bv` lines come from, and the path of the built `sendmail` example.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The sample mailertable; the line numbers matter (tests assert them).
pub const MAILERTABLE: &str = "\
# postrider sample mailertable (sendmail's format, with Postfix's [host]:port)

gmail.com         esmtp:[smtp.gmail.com]:587
# every host below corp.example
.corp.example     esmtp:mail.corporate.net
.local            local:
bad.example       error:5.7.0:550 mail to this domain is not accepted
";

/// The sample local-host-names.
pub const LOCAL_HOST_NAMES: &str = "# domains delivered on this machine\nourtest.com\n";

/// The sample TLS/credentials policy.
pub const POLICY: &str = "\
# next hop              level    credentials
[smtp.gmail.com]:587    encrypt  user@example.com:app-password
*                       may
";

/// The sample configuration; every path is relative to its folder.
pub const CONFIG: &str = "\
hostname = \"sipserver1.ourtest.com\"
spool = \"spool\"
smart_host = \"[mail.isp.net]:587\"
mailertable = \"mailertable\"
local_host_names = \"local-host-names\"
policy = \"tls-policy\"
";

/// A temporary configuration folder.
pub struct ConfigDir {
    dir: tempfile::TempDir,
}

impl ConfigDir {
    /// A folder with the sample configuration, mailertable, local-host-names and policy.
    pub fn sample() -> ConfigDir {
        let d = ConfigDir {
            dir: tempfile::tempdir().expect("create a temporary folder"),
        };
        d.write("postrider.toml", CONFIG);
        d.write("mailertable", MAILERTABLE);
        d.write("local-host-names", LOCAL_HOST_NAMES);
        d.write("tls-policy", POLICY);
        d.chmod("tls-policy", 0o600);
        d
    }

    /// The path of `name` in the folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The configuration file.
    pub fn config(&self) -> PathBuf {
        self.path("postrider.toml")
    }

    /// Replaces a file's contents.
    pub fn write(&self, name: &str, text: &str) {
        std::fs::write(self.path(name), text).expect("write a test file");
    }

    /// Sets a file's permission bits.
    pub fn chmod(&self, name: &str, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(self.path(name), std::fs::Permissions::from_mode(mode))
            .expect("chmod a test file");
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The `sendmail` example binary that `cargo test` builds next to the test binaries
/// (`target/debug/examples/sendmail`). Panics with instructions when it is missing or older
/// than the library or its source, so a stale binary is never tested.
pub fn sendmail_example() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let deps = exe
        .parent()
        .expect("the test binary lives in target/<profile>/deps");
    let profile = deps.parent().expect("deps lives in target/<profile>");
    let binary = profile.join("examples").join("sendmail");
    let how = "build it with `cargo build --examples` (a plain `cargo test` builds it too; \
               `cargo test --test NAME` does not)";
    let built =
        modified(&binary).unwrap_or_else(|| panic!("{} is missing: {how}", binary.display()));
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/sendmail.rs");
    let mut inputs: Vec<PathBuf> = vec![source];
    if let Ok(entries) = std::fs::read_dir(deps) {
        inputs.extend(entries.flatten().map(|e| e.path()).filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libpostrider-") && n.ends_with(".rlib"))
        }));
    }
    for input in inputs {
        if modified(&input).is_some_and(|t| t > built) {
            panic!(
                "{} is older than {}: {how}",
                binary.display(),
                input.display()
            );
        }
    }
    binary
}
