//! The files of a private instance: `main.cf`, `master.cf` and the aliases source, rendered
//! from the builder's settings. Pure text; nothing here touches the disk.

use std::fmt::Write;
use std::path::PathBuf;

/// `smtpd_tls_security_level` of the instance's SMTP listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpdTls {
    /// No STARTTLS offered.
    None,
    /// STARTTLS offered, clear text accepted.
    May,
    /// STARTTLS required before MAIL.
    Encrypt,
}

impl SmtpdTls {
    fn as_postfix(self) -> &'static str {
        match self {
            SmtpdTls::None => "none",
            SmtpdTls::May => "may",
            SmtpdTls::Encrypt => "encrypt",
        }
    }
}

/// `smtp_tls_security_level` of the instance's SMTP client (mail it relays onwards).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Never STARTTLS.
    None,
    /// STARTTLS when offered, any certificate.
    May,
    /// STARTTLS required, any certificate.
    Encrypt,
    /// STARTTLS required and the certificate must chain to a CA given with
    /// `PostfixBuilder::trust_ca_pem` (names as Postfix's `verify` checks them).
    Verify,
}

impl SmtpTls {
    fn as_postfix(self) -> &'static str {
        match self {
            SmtpTls::None => "none",
            SmtpTls::May => "may",
            SmtpTls::Encrypt => "encrypt",
            SmtpTls::Verify => "verify",
        }
    }
}

/// The name of the listener every instance has.
pub const MAIN_LISTENER: &str = "smtp";

/// One more smtpd listener on its own free loopback port (e.g. a submission port with SASL),
/// with `-o` overrides of `main.cf` for that listener only.
#[derive(Debug, Clone)]
pub struct Listener {
    pub(super) name: String,
    pub(super) options: Vec<(String, String)>,
}

impl Listener {
    /// A listener the test finds again by `name` (`PrivatePostfix::listener_port`).
    pub fn smtpd(name: &str) -> Listener {
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "listener name {name:?}: use letters, digits and '-'"
        );
        Listener {
            name: name.to_string(),
            options: Vec::new(),
        }
    }

    /// `-o name=value` for this listener.
    pub fn option(mut self, name: &str, value: &str) -> Listener {
        check_parameter(name, value);
        self.options.push((name.to_string(), value.to_string()));
        self
    }
}

/// `main.cf` parameters in the order they were first set; setting one again replaces it.
#[derive(Debug, Clone, Default)]
pub struct Parameters(Vec<(String, String)>);

impl Parameters {
    pub fn set(&mut self, name: &str, value: &str) {
        check_parameter(name, value);
        match self.0.iter_mut().find(|(n, _)| n == name) {
            Some(entry) => entry.1 = value.to_string(),
            None => self.0.push((name.to_string(), value.to_string())),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Postfix would read a newline in a value as the next parameter, and a bad name as a syntax
/// error that only syslog (absent here) would report.
fn check_parameter(name: &str, value: &str) {
    assert!(
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
        "Postfix parameter name {name:?}: use letters, digits and '_'"
    );
    assert!(
        !value.contains(['\n', '\r']),
        "Postfix parameter {name}: the value {value:?} spans lines"
    );
}

/// Where an instance's files live: everything under one directory.
#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn config_dir(&self) -> PathBuf {
        self.root.join("etc")
    }
    pub fn queue_dir(&self) -> PathBuf {
        self.root.join("queue")
    }
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }
    /// Local mailboxes (`mail_spool_directory`), one file per user.
    pub fn mail_dir(&self) -> PathBuf {
        self.root.join("mail")
    }
    pub fn maillog(&self) -> PathBuf {
        self.root.join("maillog")
    }
    pub fn aliases(&self) -> PathBuf {
        self.config_dir().join("aliases")
    }
    pub fn cert(&self) -> PathBuf {
        self.config_dir().join("cert.pem")
    }
    pub fn key(&self) -> PathBuf {
        self.config_dir().join("key.pem")
    }
    /// CAs the instance's SMTP client trusts (for `SmtpTls::Verify`).
    pub fn client_cas(&self) -> PathBuf {
        self.config_dir().join("client-cas.pem")
    }
}

/// The parameters every private instance starts from; the builder's settings go on top.
pub fn base_parameters(layout: &Layout, myhostname: &str) -> Parameters {
    let path = |p: PathBuf| p.display().to_string();
    let aliases = format!("hash:{}", path(layout.aliases()));
    let mut p = Parameters::default();
    for (name, value) in [
        ("compatibility_level", "3.6".to_string()),
        ("queue_directory", path(layout.queue_dir())),
        ("data_directory", path(layout.data_dir())),
        // No syslog daemon runs here; the file must lie under one of these prefixes or the
        // postfix command stops with a fatal error that only syslog would have shown.
        ("maillog_file", path(layout.maillog())),
        ("maillog_file_prefixes", path(layout.root.clone())),
        ("myhostname", myhostname.to_string()),
        ("mydestination", "$myhostname, localhost".to_string()),
        ("myorigin", "$myhostname".to_string()),
        ("mynetworks", "127.0.0.0/8".to_string()),
        ("inet_interfaces", "loopback-only".to_string()),
        ("inet_protocols", "ipv4".to_string()),
        ("alias_maps", aliases.clone()),
        ("alias_database", aliases),
        // Local mailboxes stay in the instance, and no user's ~/.forward is read.
        ("mail_spool_directory", path(layout.mail_dir())),
        ("forward_path", String::new()),
        ("biff", "no".to_string()),
        ("append_dot_mydomain", "no".to_string()),
        // Nothing leaves loopback unless a test names a next hop.
        ("relayhost", String::new()),
        (
            "default_transport",
            "error:5.7.1 this private test instance delivers nowhere".to_string(),
        ),
        (
            "relay_transport",
            "error:5.7.1 this private test instance delivers nowhere".to_string(),
        ),
        ("smtpd_tls_cert_file", path(layout.cert())),
        ("smtpd_tls_key_file", path(layout.key())),
        (
            "smtpd_tls_security_level",
            SmtpdTls::May.as_postfix().to_string(),
        ),
        ("smtpd_tls_loglevel", "1".to_string()),
        (
            "smtp_tls_security_level",
            SmtpTls::None.as_postfix().to_string(),
        ),
        ("smtp_tls_CAfile", path(layout.client_cas())),
        ("smtp_tls_loglevel", "1".to_string()),
    ] {
        p.set(name, &value);
    }
    p
}

pub fn set_smtpd_tls(p: &mut Parameters, level: SmtpdTls) {
    p.set("smtpd_tls_security_level", level.as_postfix());
}

pub fn set_smtp_tls(p: &mut Parameters, level: SmtpTls) {
    p.set("smtp_tls_security_level", level.as_postfix());
}

pub fn render_main_cf(p: &Parameters) -> String {
    let mut out = String::from("# Generated for one test by tests/support/postfix.rs.\n");
    for (name, value) in &p.0 {
        let _ = writeln!(out, "{name} = {value}");
    }
    out
}

/// The daemons Postfix needs, all unchrooted (a chroot would need copies of /etc files under
/// the queue directory), followed by the smtpd listeners and the test's own service lines.
pub fn render_master_cf(listeners: &[(u16, Listener)], extra: &[String]) -> String {
    let mut out = String::from(
        "# Generated for one test by tests/support/postfix.rs.\n\
         # service type  private unpriv  chroot  wakeup  maxproc command\n",
    );
    for (port, listener) in listeners {
        let _ = writeln!(out, "127.0.0.1:{port} inet n - n - - smtpd");
        // The main listener logs as plain `postfix/smtpd`, the others as
        // `postfix/NAME/smtpd` (Debian's convention for submission).
        if listener.name != MAIN_LISTENER {
            let _ = writeln!(out, "  -o {{ syslog_name = postfix/{} }}", listener.name);
        }
        for (name, value) in &listener.options {
            let _ = writeln!(out, "  -o {{ {name} = {value} }}");
        }
    }
    out.push_str(DAEMONS);
    for line in extra {
        out.push_str(line);
        out.push('\n');
    }
    out
}

const DAEMONS: &str = "\
pickup     unix  n - n 60    1 pickup
cleanup    unix  n - n -     0 cleanup
qmgr       unix  n - n 300   1 qmgr
tlsmgr     unix  - - n 1000? 1 tlsmgr
rewrite    unix  - - n -     - trivial-rewrite
bounce     unix  - - n -     0 bounce
defer      unix  - - n -     0 bounce
trace      unix  - - n -     0 bounce
verify     unix  - - n -     1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n -     - proxymap
proxywrite unix  - - n -     1 proxymap
smtp       unix  - - n -     - smtp
relay      unix  - - n -     - smtp
showq      unix  n - n -     - showq
error      unix  - - n -     - error
retry      unix  - - n -     - error
discard    unix  - - n -     - discard
local      unix  - n n -     - local
anvil      unix  - - n -     1 anvil
scache     unix  - - n -     1 scache
postlog    unix-dgram n - n - 1 postlogd
";

/// The aliases source (`name: value` lines, compiled by postalias).
pub fn render_aliases(aliases: &[(String, String)]) -> String {
    let mut out = String::from("# Generated for one test by tests/support/postfix.rs.\n");
    for (name, value) in aliases {
        let _ = writeln!(out, "{name}: {value}");
    }
    out
}

pub fn check_alias(name: &str, value: &str) {
    assert!(
        !name.is_empty() && !name.contains([':', ' ', '\t', '\n', '#']),
        "alias name {name:?}: no ':', '#' or white space"
    );
    assert!(
        !value.trim().is_empty() && !value.contains(['\n', '\r']),
        "alias {name}: the value {value:?} must be one non-empty line"
    );
}
