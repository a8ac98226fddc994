//! Helpers for the routing tests: a configuration folder holding the sample files the issue's
//! `sendmail -bv` lines come from, and the path of the built `sendmail` example.

use std::path::PathBuf;

use super::example_binary;

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

/// The `sendmail` example binary, refused when missing or stale (see `example_binary`).
pub fn sendmail_example() -> PathBuf {
    example_binary::example_binary("sendmail")
}
