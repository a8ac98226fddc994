//! Where local mail is stored: a Maildir, an mbox file, or an LMTP server, written the way
//! Dovecot's `mail_location` is (`maildir:~/Maildir`, `mbox:/var/mail/%u`), parsed once.
//!
//! Paths are templates: `~` at the start is the user's home, `%u` the user name, `%d` the
//! recipient's domain, `%h` the home, `%%` a percent sign. After expansion they must be
//! absolute.
//!
//! ```
//! use postrider::local::{MailboxLocation, User};
//! let loc: MailboxLocation = "maildir:~/Maildir".parse()?;
//! let bob = User::new("bob", 1001, 1001, "/home/bob");
//! match &loc {
//!     MailboxLocation::Maildir(t) => assert_eq!(t.expand(&bob, "ourtest.com")?, std::path::Path::new("/home/bob/Maildir")),
//!     _ => unreachable!(),
//! }
//! assert_eq!(loc.to_string(), "maildir:~/Maildir");
//! let lmtp: MailboxLocation = "lmtp:unix:/run/dovecot/lmtp".parse()?;
//! assert_eq!(lmtp.to_string(), "lmtp:unix:/run/dovecot/lmtp");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

use super::users::User;

/// Why a mailbox location or path template was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocationError {
    /// No `maildir:`, `mbox:` or `lmtp:` prefix.
    #[error(
        "mailbox location {text:?} needs a format: maildir:PATH, mbox:PATH or lmtp:TARGET (e.g. \"maildir:~/Maildir\", \"mbox:/var/mail/%u\", \"lmtp:unix:/run/dovecot/lmtp\")"
    )]
    NoFormat {
        /// The text.
        text: String,
    },
    /// A `%` sequence other than `%u`, `%d`, `%h`, `%%`.
    #[error(
        "unknown {seq:?} in path template {template:?} (known: %u user, %d domain, %h home, %% percent)"
    )]
    UnknownVariable {
        /// The sequence.
        seq: String,
        /// The template.
        template: String,
    },
    /// A template that does not start with `/`, `~` or `%h`.
    #[error("path template {template:?} is not absolute (start it with /, ~/ or %h/)")]
    Relative {
        /// The template.
        template: String,
    },
    /// An LMTP target that is neither `unix:/path` nor `host:port`.
    #[error(
        "LMTP target {text:?} is not unix:/path/to/socket or IP:port (e.g. \"unix:/run/dovecot/lmtp\", \"127.0.0.1:24\")"
    )]
    BadLmtp {
        /// The text.
        text: String,
    },
    /// A user name or domain that would make a path escape its directory.
    #[error("{what} {value:?} cannot be part of a mailbox path")]
    UnsafeComponent {
        /// "user name" or "domain".
        what: &'static str,
        /// The value.
        value: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    User,
    Domain,
    Home,
}

/// A mailbox path with `~`, `%u`, `%d` and `%h`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    written: String,
    pieces: Vec<Piece>,
}

impl PathTemplate {
    /// Parses a template.
    pub fn parse(text: &str) -> Result<PathTemplate, LocationError> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        if let Some(after) = rest.strip_prefix('~') {
            if !(after.is_empty() || after.starts_with('/')) {
                // `~bob/...` would name another user's home.
                return Err(LocationError::Relative {
                    template: text.to_string(),
                });
            }
            pieces.push(Piece::Home);
            rest = after;
        }
        let mut chars = rest.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                literal.push(c);
                continue;
            }
            let piece = match chars.next() {
                Some('u') => Piece::User,
                Some('d') => Piece::Domain,
                Some('h') => Piece::Home,
                Some('%') => {
                    literal.push('%');
                    continue;
                }
                other => {
                    return Err(LocationError::UnknownVariable {
                        seq: format!("%{}", other.map(String::from).unwrap_or_default()),
                        template: text.to_string(),
                    });
                }
            };
            if !literal.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut literal)));
            }
            pieces.push(piece);
        }
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        let absolute = match pieces.first() {
            Some(Piece::Home) => true,
            Some(Piece::Text(t)) => t.starts_with('/'),
            _ => false,
        };
        if !absolute {
            return Err(LocationError::Relative {
                template: text.to_string(),
            });
        }
        Ok(PathTemplate {
            written: text.to_string(),
            pieces,
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.written
    }

    /// True when the path depends on the user (it has `~`, `%u` or `%h`).
    pub fn is_per_user(&self) -> bool {
        self.pieces
            .iter()
            .any(|p| matches!(p, Piece::User | Piece::Home))
    }

    /// The path for `user`, whose mail was addressed to `domain`.
    pub fn expand(&self, user: &User, domain: &str) -> Result<PathBuf, LocationError> {
        let safe = |what, v: &str| {
            if v.is_empty() || v.contains('/') || v.contains('\0') || v.starts_with('.') {
                Err(LocationError::UnsafeComponent {
                    what,
                    value: v.to_string(),
                })
            } else {
                Ok(())
            }
        };
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::User => {
                    safe("user name", &user.name)?;
                    out.push_str(&user.name);
                }
                Piece::Domain => {
                    safe("domain", domain)?;
                    out.push_str(domain);
                }
                Piece::Home => out.push_str(user.home.to_string_lossy().trim_end_matches('/')),
            }
        }
        Ok(PathBuf::from(out))
    }
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.written)
    }
}

/// An LMTP server: a Unix socket or a TCP address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LmtpTarget {
    /// `unix:/run/dovecot/lmtp`.
    Unix(PathBuf),
    /// `127.0.0.1:24`.
    Tcp(SocketAddr),
}

impl FromStr for LmtpTarget {
    type Err = LocationError;
    fn from_str(s: &str) -> Result<LmtpTarget, LocationError> {
        let bad = || LocationError::BadLmtp {
            text: s.to_string(),
        };
        if let Some(path) = s.strip_prefix("unix:") {
            // A relative path is resolved against the configuration's folder.
            if path.is_empty() {
                return Err(bad());
            }
            return Ok(LmtpTarget::Unix(PathBuf::from(path)));
        }
        if s.starts_with('/') {
            return Ok(LmtpTarget::Unix(PathBuf::from(s)));
        }
        let s2 = s.strip_prefix("inet:").unwrap_or(s);
        s2.parse::<SocketAddr>()
            .map(LmtpTarget::Tcp)
            .map_err(|_| bad())
    }
}

impl fmt::Display for LmtpTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LmtpTarget::Unix(p) => write!(f, "unix:{}", p.display()),
            LmtpTarget::Tcp(a) => write!(f, "{a}"),
        }
    }
}

/// Where mailbox targets are delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailboxLocation {
    /// A Maildir (`maildir:~/Maildir`).
    Maildir(PathTemplate),
    /// An mbox file (`mbox:/var/mail/%u`).
    Mbox(PathTemplate),
    /// An LMTP server that stores the mail itself (`lmtp:unix:/run/dovecot/lmtp`).
    Lmtp(LmtpTarget),
}

impl MailboxLocation {
    /// `mbox:/var/mail/%u`: what Debian's mail(1), Dovecot and sendmail expect out of the box.
    pub fn debian_default() -> MailboxLocation {
        MailboxLocation::Mbox(
            PathTemplate::parse("/var/mail/%u").expect("invariant: the default template parses"),
        )
    }

    /// The path for `user` (`None` for LMTP, which finds the mailbox itself).
    pub fn path_for(&self, user: &User, domain: &str) -> Option<Result<PathBuf, LocationError>> {
        match self {
            MailboxLocation::Maildir(t) | MailboxLocation::Mbox(t) => Some(t.expand(user, domain)),
            MailboxLocation::Lmtp(_) => None,
        }
    }
}

impl Default for MailboxLocation {
    fn default() -> MailboxLocation {
        MailboxLocation::debian_default()
    }
}

impl FromStr for MailboxLocation {
    type Err = LocationError;
    fn from_str(s: &str) -> Result<MailboxLocation, LocationError> {
        let s = s.trim();
        let Some((format, rest)) = s.split_once(':') else {
            return Err(LocationError::NoFormat { text: s.into() });
        };
        match format.to_ascii_lowercase().as_str() {
            "maildir" => Ok(MailboxLocation::Maildir(PathTemplate::parse(
                rest.trim_end_matches('/'),
            )?)),
            "mbox" => Ok(MailboxLocation::Mbox(PathTemplate::parse(rest)?)),
            "lmtp" => Ok(MailboxLocation::Lmtp(rest.parse()?)),
            _ => Err(LocationError::NoFormat { text: s.into() }),
        }
    }
}

impl fmt::Display for MailboxLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MailboxLocation::Maildir(t) => write!(f, "maildir:{t}"),
            MailboxLocation::Mbox(t) => write!(f, "mbox:{t}"),
            MailboxLocation::Lmtp(t) => write!(f, "lmtp:{t}"),
        }
    }
}

impl<'de> Deserialize<'de> for MailboxLocation {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Resolves a relative `unix:` socket path against `base` (the configuration's folder).
pub(crate) fn resolve_against(location: &mut MailboxLocation, base: &Path) {
    if let MailboxLocation::Lmtp(LmtpTarget::Unix(p)) = location
        && p.is_relative()
    {
        *p = base.join(&*p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bob() -> User {
        User::new("bob", 1001, 1001, "/home/bob/")
    }

    #[test]
    fn templates_expand_home_user_and_domain() {
        let t = PathTemplate::parse("/srv/mail/%d/%u/Maildir").unwrap();
        assert_eq!(
            t.expand(&bob(), "ourtest.com").unwrap(),
            Path::new("/srv/mail/ourtest.com/bob/Maildir")
        );
        let t = PathTemplate::parse("%h/mail/100%%").unwrap();
        assert_eq!(
            t.expand(&bob(), "x").unwrap(),
            Path::new("/home/bob/mail/100%")
        );
        assert!(t.is_per_user());
        assert!(
            !PathTemplate::parse("/var/mail/shared")
                .unwrap()
                .is_per_user()
        );
    }

    #[test]
    fn bad_templates_say_what_is_wrong() {
        assert!(matches!(
            PathTemplate::parse("Maildir"),
            Err(LocationError::Relative { .. })
        ));
        assert!(matches!(
            PathTemplate::parse("~bob/Maildir"),
            Err(LocationError::Relative { .. })
        ));
        let e = PathTemplate::parse("/var/mail/%n").unwrap_err();
        assert!(e.to_string().starts_with("unknown \"%n\""), "{e}");
        let t = PathTemplate::parse("/var/mail/%u").unwrap();
        let evil = User::new("../etc", 0, 0, "/");
        assert!(matches!(
            t.expand(&evil, "x"),
            Err(LocationError::UnsafeComponent { .. })
        ));
    }

    #[test]
    fn locations_parse_and_print_like_dovecot_writes_them() {
        for text in [
            "maildir:~/Maildir",
            "mbox:/var/mail/%u",
            "lmtp:unix:/run/dovecot/lmtp",
            "lmtp:127.0.0.1:24",
        ] {
            let l: MailboxLocation = text.parse().unwrap();
            assert_eq!(l.to_string(), text);
        }
        assert_eq!(
            "maildir:~/Maildir/"
                .parse::<MailboxLocation>()
                .unwrap()
                .to_string(),
            "maildir:~/Maildir"
        );
        assert_eq!(
            "lmtp:/run/dovecot/lmtp".parse::<MailboxLocation>().unwrap(),
            MailboxLocation::Lmtp(LmtpTarget::Unix("/run/dovecot/lmtp".into()))
        );
        assert!(matches!(
            "~/Maildir".parse::<MailboxLocation>(),
            Err(LocationError::NoFormat { .. })
        ));
        assert!(matches!(
            "lmtp:localhost".parse::<MailboxLocation>(),
            Err(LocationError::BadLmtp { .. })
        ));
        assert_eq!(MailboxLocation::default().to_string(), "mbox:/var/mail/%u");
    }
}
