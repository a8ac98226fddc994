//! The plumbing shared by postrider's line-oriented table files (mailertable, local-host-names,
//! the TLS/credentials policy): where a text came from, its numbered content lines, warnings and
//! read errors that name the file and the line.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

use crate::status::Severity;

/// Where a table's text came from, as messages name it: a file's path, or a name the caller gave
/// to text built in code (`"mailertable"`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    name: Arc<str>,
    path: Option<Arc<Path>>,
}

impl Origin {
    /// A file; messages show its path as given.
    pub fn file(path: impl AsRef<Path>) -> Origin {
        let path = path.as_ref();
        Origin {
            name: Arc::from(path.display().to_string()),
            path: Some(Arc::from(path)),
        }
    }

    /// Text built in code; messages show `name` where a file name would be.
    pub fn named(name: impl Into<String>) -> Origin {
        Origin {
            name: Arc::from(name.into()),
            path: None,
        }
    }

    /// The file's path, when the text came from a file.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The name messages use.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Origin({})", self.name)
    }
}

/// What a [`Warning`] is about.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WarningKind {
    /// A key seen before: the first entry is used, as sendmail's `makemap` keeps the first.
    DuplicateKey {
        /// The key, normalised (lower case, no trailing dot).
        key: String,
        /// The line of the entry that is used.
        first_line: usize,
    },
    /// A mailertable key for a domain that is local: local domains are matched first, so the
    /// entry is never used.
    ShadowedByLocal {
        /// The key.
        key: String,
        /// Where the domain was made local (`local-host-names:2`, `hostname`, `localhost`).
        local: String,
    },
    /// An address literal in local-host-names (`[192.0.2.1]`): postrider refuses recipients
    /// with address literals, so it can never match.
    IgnoredAddressLiteral {
        /// The literal as written.
        literal: String,
    },
    /// A file holding passwords can be read by group or others.
    ReadableSecrets {
        /// The file's permission bits.
        mode: u32,
    },
}

impl fmt::Display for WarningKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WarningKind::DuplicateKey { key, first_line } => write!(
                f,
                "duplicate key {key:?} ignored; the entry on line {first_line} is used"
            ),
            WarningKind::ShadowedByLocal { key, local } => write!(
                f,
                "key {key:?} is a local domain ({local}); local domains are never routed out, \
                 so this entry is never used"
            ),
            WarningKind::IgnoredAddressLiteral { literal } => write!(
                f,
                "address literal {literal} ignored: postrider does not accept recipients like \
                 user@{literal}"
            ),
            WarningKind::ReadableSecrets { mode } => write!(
                f,
                "holds passwords but can be read by group or others (mode {:04o}); \
                 run chmod 600 on it",
                mode & 0o7777
            ),
        }
    }
}

/// Something an administrator should look at that does not stop a table from loading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The file (or name of the text) concerned.
    pub file: Origin,
    /// The line, when the warning is about one.
    pub line: Option<usize>,
    /// What is wrong.
    pub kind: WarningKind,
}

impl Warning {
    pub(crate) fn at(file: &Origin, line: usize, kind: WarningKind) -> Warning {
        Warning {
            file: file.clone(),
            line: Some(line),
            kind,
        }
    }

    /// Sends the warning to `tracing` at WARN level.
    pub(crate) fn log(&self) {
        tracing::warn!(file = %self.file, line = self.line, "{self}");
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file, line, self.kind),
            None => write!(f, "{}: {}", self.file, self.kind),
        }
    }
}

/// A table file that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The operating system refused (missing file, permissions, I/O error).
    #[error("cannot read {file}: {source}")]
    Io {
        /// The file.
        file: Origin,
        /// The OS error.
        source: io::Error,
    },
    /// The file is not UTF-8 (a Latin-1 comment, say).
    #[error("{file}:{line}: not valid UTF-8 (save the file as UTF-8 or plain ASCII)")]
    NotUtf8 {
        /// The file.
        file: Origin,
        /// The first line with invalid bytes.
        line: usize,
    },
}

impl ReadError {
    /// Temporary for I/O trouble that may pass (an interrupted read, a busy NFS server);
    /// permanent for a missing or unreadable file and bad encoding, which need an administrator.
    pub fn severity(&self) -> Severity {
        match self {
            ReadError::Io { source, .. }
                if !matches!(
                    source.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied
                ) =>
            {
                Severity::Temporary
            }
            _ => Severity::Permanent,
        }
    }
}

/// Reads a table file as UTF-8.
pub fn read_file(path: &Path) -> Result<String, ReadError> {
    let file = || Origin::file(path);
    let bytes = std::fs::read(path).map_err(|source| ReadError::Io {
        file: file(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let line = 1 + e.as_bytes()[..valid]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        ReadError::NotUtf8 { file: file(), line }
    })
}

/// The lines of `text` that hold content, numbered from 1, trimmed, with CR line ends, blank
/// lines and `#` comment lines left out.
pub(crate) fn content_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    text.split('\n')
        .enumerate()
        .map(|(i, line)| (i + 1, line.trim()))
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
}

/// Splits a content line into its first whitespace-separated field and the trimmed rest.
pub(crate) fn split_key(line: &str) -> (&str, &str) {
    match line.find(char::is_whitespace) {
        Some(i) => (&line[..i], line[i..].trim()),
        None => (line, ""),
    }
}

/// Joins several errors' messages one per line, for an error that reports every bad line of a
/// file at once.
pub(crate) fn one_per_line<E: fmt::Display>(errors: &[E]) -> String {
    errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_lines_skip_comments_and_blanks_and_keep_line_numbers() {
        let text = "\u{feff}# head\r\n\r\na b\r\n   # indented comment\n  c\td  \n";
        let lines: Vec<_> = content_lines(text).collect();
        assert_eq!(lines, [(3, "a b"), (5, "c\td")]);
    }

    #[test]
    fn split_key_takes_the_first_field_and_the_trimmed_rest() {
        assert_eq!(
            split_key("gmail.com \t esmtp:[x]"),
            ("gmail.com", "esmtp:[x]")
        );
        assert_eq!(split_key("lonely"), ("lonely", ""));
        assert_eq!(
            split_key("bad.example error:5.7.0:550 not  here"),
            ("bad.example", "error:5.7.0:550 not  here")
        );
    }

    #[test]
    fn a_file_that_is_not_utf8_is_refused_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mailertable");
        std::fs::write(&path, b"a.example esmtp:a\n# caf\xe9\n").unwrap();
        let err = read_file(&path).unwrap_err();
        assert!(matches!(err, ReadError::NotUtf8 { line: 2, .. }), "{err}");
        assert!(
            err.to_string()
                .ends_with(":2: not valid UTF-8 (save the file as UTF-8 or plain ASCII)")
        );
    }

    #[test]
    fn a_missing_file_is_a_permanent_error_naming_the_file() {
        let err = read_file(Path::new("/nonexistent/mailertable")).unwrap_err();
        assert_eq!(err.severity(), Severity::Permanent);
        assert!(
            err.to_string()
                .starts_with("cannot read /nonexistent/mailertable: "),
            "{err}"
        );
    }

    #[test]
    fn warnings_name_file_and_line() {
        let w = Warning::at(
            &Origin::named("mailertable"),
            9,
            WarningKind::DuplicateKey {
                key: "gmail.com".into(),
                first_line: 3,
            },
        );
        assert_eq!(
            w.to_string(),
            "mailertable:9: duplicate key \"gmail.com\" ignored; the entry on line 3 is used"
        );
    }
}
