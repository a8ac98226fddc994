//! The per-next-hop TLS and credentials file.
//!
//! One entry per line, fields separated by whitespace, `#` comment lines:
//!
//! ```text
//! # NEXT-HOP             [LEVEL]   [OPTION...]        [USER:PASSWORD]
//! [smtp.gmail.com]:587   encrypt   user@example.com:app-password
//! [mail.corporate.net]   verify
//! [10.0.0.5]:25          none      auth-without-tls   relay:s3cret
//! *                      may
//! ```
//!
//! - NEXT-HOP is written as routes display it (`[host]:port`, `[host]`, `host`, `[10.0.0.5]`,
//!   `[IPv6:2001:db8::1]`); `*` or `default` is the entry for every other hop. A key without a
//!   port matches the host on any port; brackets are part of the key (`[mail.example.com]` is
//!   not `mail.example.com`, as in Postfix).
//! - LEVEL is `none | may | encrypt | verify`. When it is left out and credentials are given,
//!   the level is `encrypt`, so a Postfix `sasl_passwd` line (`[smtp.gmail.com]:587 user:pass`)
//!   works unchanged and never sends the password in clear text.
//! - OPTION: `auth-without-tls` allows AUTH on a connection without TLS (needed with `none`).
//!   LEVEL and options may come in any order; each at most once.
//! - USER:PASSWORD comes last: the user is everything up to the first `:` (so it cannot contain
//!   one), the password is the rest of the line (it may contain `:` and spaces; surrounding
//!   spaces are dropped).
//! - The first entry for a key is used; a later one is reported as a warning.
//!
//! Passwords never appear in errors, warnings, logs or `Debug` output: an error about a field
//! that may hold a secret names the field's position instead of quoting it. A file with
//! passwords that group or others can read gets a warning (not an error, so a mode change
//! never stops mail), like ssh's check on keys.

use std::fmt;
use std::path::Path;

use super::hop::{HopError, parse_hop};
use super::policy::{Credentials, HopPolicy, PolicyTable, TlsLevel};
use super::table_file::{
    Origin, ReadError, Warning, WarningKind, content_lines, one_per_line, read_file,
};
use crate::status::Severity;

const OPTION_AUTH_WITHOUT_TLS: &str = "auth-without-tls";
const LEVELS: [TlsLevel; 4] = [
    TlsLevel::None,
    TlsLevel::May,
    TlsLevel::Encrypt,
    TlsLevel::Verify,
];

/// What is wrong with one policy line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyProblem {
    /// The next hop is malformed.
    #[error(
        "bad next hop {key:?}: {problem} (expected e.g. [smtp.gmail.com]:587, or * for the default)"
    )]
    BadKey {
        /// The key as written.
        key: String,
        /// What is wrong with it.
        problem: HopError,
    },
    /// The line is one field that is not a next hop (perhaps `host:user:password` with the
    /// spaces missing); not quoted, since it may hold a password.
    #[error(
        "expected NEXT-HOP [LEVEL] [OPTION...] [USER:PASSWORD] separated by spaces; \
         the line is not shown in case it holds a password"
    )]
    Unreadable,
    /// A next hop with nothing after it.
    #[error(
        "next hop {key} has no TLS level or credentials (expected e.g. {key} encrypt user@example.com:password)"
    )]
    NoPolicy {
        /// The key.
        key: String,
    },
    /// A misspelt TLS level.
    #[error(
        "unknown TLS level {written:?} (did you mean {suggestion}? levels: none, may, encrypt, verify)"
    )]
    MisspeltLevel {
        /// What was written (close to a level name, so not a secret).
        written: String,
        /// The closest level.
        suggestion: TlsLevel,
    },
    /// A field that is neither level, option nor credentials.
    #[error(
        "field {field} is not a TLS level (none, may, encrypt, verify), an option ({OPTION_AUTH_WITHOUT_TLS}) \
         or USER:PASSWORD; it is not shown in case it is a secret"
    )]
    UnknownField {
        /// The field's position on the line, from 1 (the next hop).
        field: usize,
    },
    /// `:password`.
    #[error("credentials have an empty user name (write USER:PASSWORD)")]
    EmptyUser,
    /// `user:`.
    #[error("credentials for {user:?} have an empty password")]
    EmptyPassword {
        /// The user.
        user: String,
    },
    /// Credentials that could never be sent.
    #[error(
        "credentials with TLS level none would never be sent; use may, encrypt or verify, \
         or add {OPTION_AUTH_WITHOUT_TLS} to send them without TLS"
    )]
    CredentialsNeverSent,
}

/// One bad policy line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyLineError {
    /// The file (or name of the text).
    pub file: Origin,
    /// The line, from 1.
    pub line: usize,
    /// What is wrong.
    pub problem: PolicyProblem,
}

impl fmt::Display for PolicyLineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.problem)
    }
}

impl std::error::Error for PolicyLineError {}

/// A policy file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// Lines with errors, in file order.
    #[error("{}", one_per_line(errors))]
    Invalid {
        /// Every bad line (at least one).
        errors: Vec<PolicyLineError>,
    },
}

impl PolicyError {
    /// Permanent for a bad file; a read error decides for itself.
    pub fn severity(&self) -> Severity {
        match self {
            PolicyError::Read(e) => e.severity(),
            PolicyError::Invalid { .. } => Severity::Permanent,
        }
    }
}

#[derive(Debug)]
enum PolicyKey {
    Default,
    Hop(super::NextHop),
}

impl PolicyTable {
    /// Parses policy text (see the [module documentation](self) for the format).
    pub fn parse(text: &str, origin: Origin) -> Result<(PolicyTable, Vec<Warning>), PolicyError> {
        let mut table = PolicyTable::new();
        let mut first_lines: std::collections::HashMap<String, usize> = Default::default();
        let mut warnings = Vec::new();
        let mut errors = Vec::new();
        for (line, content) in content_lines(text) {
            let (key, mut policy) = match parse_line(content) {
                Ok(parsed) => parsed,
                Err(problem) => {
                    errors.push(PolicyLineError {
                        file: origin.clone(),
                        line,
                        problem,
                    });
                    continue;
                }
            };
            let shown = match &key {
                PolicyKey::Default => "*".to_string(),
                PolicyKey::Hop(hop) => hop.to_string(),
            };
            if let Some(&first_line) = first_lines.get(&shown) {
                warnings.push(Warning::at(
                    &origin,
                    line,
                    WarningKind::DuplicateKey {
                        key: shown,
                        first_line,
                    },
                ));
                continue;
            }
            first_lines.insert(shown, line);
            if let Some(c) = &mut policy.credentials {
                c.defined_at = Some(format!("{origin} line {line}"));
            }
            match key {
                PolicyKey::Default => table.set_default(policy),
                PolicyKey::Hop(hop) => table.insert(&hop, policy),
            }
        }
        if errors.is_empty() {
            Ok((table, warnings))
        } else {
            Err(PolicyError::Invalid { errors })
        }
    }

    /// Reads and parses a policy file, warning when a file with passwords is open to group or
    /// others. Warnings are returned and logged with `tracing::warn!`.
    pub fn load(path: &Path) -> Result<(PolicyTable, Vec<Warning>), PolicyError> {
        let text = read_file(path)?;
        let origin = Origin::file(path);
        let (table, mut warnings) = PolicyTable::parse(&text, origin.clone())?;
        if table.has_credentials() {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(meta) = std::fs::metadata(path) {
                let mode = meta.permissions().mode();
                if mode & 0o077 != 0 {
                    warnings.push(Warning {
                        file: origin,
                        line: None,
                        kind: WarningKind::ReadableSecrets { mode },
                    });
                }
            }
        }
        for w in &warnings {
            w.log();
        }
        Ok((table, warnings))
    }
}

fn parse_line(content: &str) -> Result<(PolicyKey, HopPolicy), PolicyProblem> {
    let mut fields = content.split_whitespace();
    let key_text = fields.next().unwrap_or_default();
    let single_field = fields.next().is_none();
    let key = if key_text == "*" || key_text.eq_ignore_ascii_case("default") {
        PolicyKey::Default
    } else {
        match parse_hop(key_text) {
            Ok(hop) => PolicyKey::Hop(hop),
            // One field, or an `@` in the key: perhaps credentials glued to it, never echoed.
            Err(_) if single_field || key_text.contains('@') => {
                return Err(PolicyProblem::Unreadable);
            }
            Err(problem) => {
                return Err(PolicyProblem::BadKey {
                    key: key_text.to_string(),
                    problem,
                });
            }
        }
    };
    let mut policy = HopPolicy::default();
    let mut level = None;
    let mut rest = content[key_text.len()..].trim_start();
    let mut field = 1;
    while !rest.is_empty() {
        field += 1;
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let word = &rest[..end];
        if word.contains(':') {
            policy.credentials = Some(parse_credentials(rest.trim_end())?);
            break;
        }
        if word.eq_ignore_ascii_case(OPTION_AUTH_WITHOUT_TLS) {
            policy.auth_without_tls = true;
        } else if let (None, Some(l)) = (level, level_named(word)) {
            level = Some(l);
        } else if let (None, Some(suggestion)) = (level, close_level(word)) {
            return Err(PolicyProblem::MisspeltLevel {
                written: word.to_string(),
                suggestion,
            });
        } else {
            return Err(PolicyProblem::UnknownField { field });
        }
        rest = rest[end..].trim_start();
    }
    if field == 1 {
        let key = match &key {
            PolicyKey::Default => "*".to_string(),
            PolicyKey::Hop(hop) => hop.to_string(),
        };
        return Err(PolicyProblem::NoPolicy { key });
    }
    policy.tls = match level {
        Some(l) => l,
        None if policy.credentials.is_some() => TlsLevel::Encrypt,
        None => TlsLevel::May,
    };
    if policy.tls == TlsLevel::None && policy.credentials.is_some() && !policy.auth_without_tls {
        return Err(PolicyProblem::CredentialsNeverSent);
    }
    Ok((key, policy))
}

fn parse_credentials(text: &str) -> Result<Credentials, PolicyProblem> {
    let (user, password) = text
        .split_once(':')
        .expect("invariant: the credentials field contains ':'");
    if user.is_empty() {
        return Err(PolicyProblem::EmptyUser);
    }
    let password = password.trim();
    if password.is_empty() {
        return Err(PolicyProblem::EmptyPassword {
            user: user.to_string(),
        });
    }
    Ok(Credentials::new(user, password))
}

fn level_named(word: &str) -> Option<TlsLevel> {
    LEVELS
        .into_iter()
        .find(|l| l.name().eq_ignore_ascii_case(word))
}

/// The level a misspelt word was probably meant to be (at most two edits away). Only such a
/// word is quoted back in an error: anything else might be a password.
fn close_level(word: &str) -> Option<TlsLevel> {
    let word = word.to_ascii_lowercase();
    LEVELS
        .into_iter()
        .map(|l| (edit_distance(&word, l.name()), l))
        .filter(|(d, l)| *d <= 2 && 2 * *d < l.name().len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, l)| l)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = substitution.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_single_character_edits() {
        assert_eq!(edit_distance("encrpyt", "encrypt"), 2);
        assert_eq!(edit_distance("verfy", "verify"), 1);
        assert_eq!(edit_distance("", "may"), 3);
        assert_eq!(close_level("encrpyt"), Some(TlsLevel::Encrypt));
        assert_eq!(close_level("hunter2"), None);
        assert_eq!(close_level("no"), None, "too short to be a confident guess");
    }

    #[test]
    fn level_and_options_come_in_any_order_before_the_credentials() {
        let (_, p) = parse_line("[a.example] auth-without-tls none u:p").unwrap();
        assert_eq!((p.tls, p.auth_without_tls), (TlsLevel::None, true));
        assert_eq!(
            parse_line("[a.example] may verify").unwrap_err(),
            PolicyProblem::UnknownField { field: 3 }
        );
    }

    #[test]
    fn a_line_is_parsed_into_key_and_policy() {
        let (key, p) =
            parse_line("[smtp.gmail.com]:587 encrypt me@example.com:pa:ss word ").unwrap();
        assert!(matches!(key, PolicyKey::Hop(ref h) if h.to_string() == "[smtp.gmail.com]:587"));
        assert_eq!(p.tls, TlsLevel::Encrypt);
        let c = p.credentials.unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.expose()),
            ("me@example.com", "pa:ss word")
        );
    }
}
