//! The `[local]` section of `postrider.toml`.
//!
//! ```toml
//! [local]
//! mailbox = "mbox:/var/mail/%u"        # maildir:PATH | mbox:PATH | lmtp:unix:/path | lmtp:IP:PORT
//!                                      #   (default mbox:/var/mail/%u, as Debian's Dovecot reads)
//! lmtp_recipient = "%u"                # what LMTP's RCPT TO names: "%u" (user) or "%u@%d"
//! aliases = "/etc/aliases"             # default: none (postmaster still reaches root)
//! virtusertable = "virtusertable"      # default: none
//! allow_pipes = false                  # "|command" targets (default false)
//! allow_files = false                  # "/path/file" targets (default false)
//! forward_file = ".forward"            # read ~user/.forward (default: not read)
//! default_user = "nobody"              # commands and files from the aliases file run as this user
//! lock_timeout = "5m"                  # how long to wait for an mbox lock
//! command_timeout = "1000s"            # how long a "|command" may run (Postfix's default)
//! ```
//!
//! Relative paths are resolved against the configuration file's folder.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::location::{MailboxLocation, resolve_against};

/// How an LMTP `RCPT TO` names the mailbox's owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LmtpRecipient {
    /// `RCPT TO:<bob>`: the local user name (Dovecot's system-user setups).
    #[default]
    User,
    /// `RCPT TO:<bob@ourtest.com>`: the user at the recipient's domain (Dovecot setups keyed
    /// by full address, or `auth_username_format = %Ln`).
    UserAtDomain,
}

impl<'de> Deserialize<'de> for LmtpRecipient {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "%u" | "%n" => Ok(LmtpRecipient::User),
            "%u@%d" | "%n@%d" => Ok(LmtpRecipient::UserAtDomain),
            _ => Err(serde::de::Error::custom(format!(
                "lmtp_recipient {s:?} is not \"%u\" (the user) or \"%u@%d\" (user@domain)"
            ))),
        }
    }
}

/// `[local]`: how mail for local users is delivered.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct LocalConfig {
    /// Where mailbox targets go.
    pub mailbox: MailboxLocation,
    /// What LMTP's `RCPT TO` names.
    pub lmtp_recipient: LmtpRecipient,
    /// The aliases file.
    pub aliases: Option<PathBuf>,
    /// The virtusertable file (read by the router).
    pub virtusertable: Option<PathBuf>,
    /// Deliver to `|command` targets.
    pub allow_pipes: bool,
    /// Deliver to `/path/file` targets.
    pub allow_files: bool,
    /// The name of the per-user forward file in each home (`.forward`); `None`: not read.
    pub forward_file: Option<String>,
    /// The user commands and files named in the aliases file (or a root-owned include file)
    /// run as.
    pub default_user: String,
    /// How long to wait for an mbox lock before deferring.
    #[serde(deserialize_with = "de_duration")]
    pub lock_timeout: Duration,
    /// How long a command may run before it is killed and the delivery deferred.
    #[serde(deserialize_with = "de_duration")]
    pub command_timeout: Duration,
}

impl Default for LocalConfig {
    fn default() -> LocalConfig {
        LocalConfig {
            mailbox: MailboxLocation::default(),
            lmtp_recipient: LmtpRecipient::default(),
            aliases: None,
            virtusertable: None,
            allow_pipes: false,
            allow_files: false,
            forward_file: None,
            default_user: "nobody".into(),
            lock_timeout: Duration::from_secs(300),
            command_timeout: Duration::from_secs(1000),
        }
    }
}

impl LocalConfig {
    /// Resolves relative paths against `base` (the configuration file's folder).
    pub fn resolve_paths(&mut self, base: &Path) {
        for p in [self.aliases.as_mut(), self.virtusertable.as_mut()]
            .into_iter()
            .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        resolve_against(&mut self.mailbox, base);
    }
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    crate::config::parse_duration(&s).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_parses_and_unknown_keys_are_refused() {
        let c: LocalConfig = toml::from_str(
            "mailbox = \"lmtp:unix:run/lmtp\"\nlmtp_recipient = \"%u@%d\"\naliases = \"aliases\"\n\
             virtusertable = \"/etc/mail/virtusertable\"\nallow_pipes = true\nallow_files = true\n\
             forward_file = \".forward\"\ndefault_user = \"mail\"\nlock_timeout = \"30s\"\n\
             command_timeout = \"1m\"\n",
        )
        .unwrap();
        let mut c = c;
        c.resolve_paths(Path::new("/etc/postrider"));
        assert_eq!(
            c.aliases.as_deref(),
            Some(Path::new("/etc/postrider/aliases"))
        );
        assert_eq!(c.mailbox.to_string(), "lmtp:unix:/etc/postrider/run/lmtp");
        assert_eq!(c.lmtp_recipient, LmtpRecipient::UserAtDomain);
        assert_eq!(c.lock_timeout, Duration::from_secs(30));
        let err = toml::from_str::<LocalConfig>("mailbox_format = \"mbox\"\n").unwrap_err();
        assert!(
            err.to_string().contains("unknown field `mailbox_format`"),
            "{err}"
        );
        let err = toml::from_str::<LocalConfig>("mailbox = \"Maildir\"\n").unwrap_err();
        assert!(err.to_string().contains("needs a format"), "{err}");
    }

    #[test]
    fn the_defaults_are_safe_for_an_embedder() {
        let c = LocalConfig::default();
        assert!(!c.allow_pipes && !c.allow_files);
        assert!(c.forward_file.is_none());
        assert_eq!(c.mailbox.to_string(), "mbox:/var/mail/%u");
    }
}
