//! The aliases file (`/etc/aliases`, aliases(5)) as sendmail and Postfix read it.
//!
//! ```text
//! # comment
//! postmaster: root
//! root:       admin@example.net, \root
//! staff:      bob, carol,
//!             dave                      # a line starting with blanks continues the entry
//! log:        /var/log/mail-copy
//! vacation:   "|/usr/bin/vacation bob"
//! team:       :include:/etc/mail/team
//! ```
//!
//! Names are matched case-insensitively (newaliases folds them to lower case); the targets are
//! those of [`parse_targets`]. A comment or blank line ends an
//! entry. Every bad line is reported at once, each as `file:line: problem`. A name given twice
//! keeps its first entry, with a warning naming both lines (as the mailertable does).
//!
//! The file is read as it is: there is no `aliases.db` to rebuild, and a change is seen at the
//! next [`reload`](super::LocalTransport::reload_aliases).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::path::Path;

use crate::route::{Origin, ReadError};
use crate::status::Severity;

use super::expand::{self, Expansion, FileSystem, Sources};
use super::targets::{AliasTarget, TargetProblem, check_name, parse_targets};

/// What is wrong with one line of an aliases file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AliasProblem {
    /// No `:` after the name.
    #[error("no ':' after the alias name in {text:?} (expected name: target, ...)")]
    NoColon {
        /// The line.
        text: String,
    },
    /// The name before the colon is not a local name.
    #[error("bad alias name {name:?}: {reason}")]
    BadName {
        /// The name as written.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An indented line with no entry before it to continue.
    #[error("a line starting with a blank continues the entry above, but there is none")]
    StrayContinuation,
    /// The targets do not parse.
    #[error("alias {name:?}: {problem}")]
    Targets {
        /// The alias.
        name: String,
        /// What is wrong with its targets.
        problem: TargetProblem,
    },
}

/// One bad line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasLineError {
    /// The file (or name of the text).
    pub file: Origin,
    /// The line the entry starts on, from 1.
    pub line: usize,
    /// What is wrong.
    pub problem: AliasProblem,
}

impl fmt::Display for AliasLineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.problem)
    }
}

impl std::error::Error for AliasLineError {}

/// An aliases file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AliasesError {
    /// The file could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// Bad lines; one message per line, in file order.
    #[error("{}", errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// Every bad line (at least one).
        errors: Vec<AliasLineError>,
    },
}

impl AliasesError {
    /// Permanent for bad lines (an administrator must fix them); a read error decides for
    /// itself.
    pub fn severity(&self) -> Severity {
        match self {
            AliasesError::Read(e) => e.severity(),
            AliasesError::Invalid { .. } => Severity::Permanent,
        }
    }
}

/// A name given more than once: the first entry is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateAlias {
    /// The file.
    pub file: Origin,
    /// The line of the ignored entry.
    pub line: usize,
    /// The name, lower-cased.
    pub name: String,
    /// The line of the entry that is used.
    pub first_line: usize,
}

impl fmt::Display for DuplicateAlias {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: duplicate alias {:?} ignored; the entry on line {} is used",
            self.file, self.line, self.name, self.first_line
        )
    }
}

/// One alias: its targets and where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasEntry {
    /// The targets, in file order.
    pub targets: Vec<AliasTarget>,
    /// The line the entry starts on.
    pub line: usize,
}

/// A parsed aliases file.
///
/// ```
/// use postrider::local::{Aliases, Target};
/// use postrider::route::Origin;
/// let (aliases, _) = Aliases::parse("postmaster: root\nroot: \\root, ops@example.net\n",
///                                   Origin::named("aliases"))?;
/// let e = aliases.expand("PostMaster");
/// assert_eq!(e.targets.len(), 2);
/// assert!(matches!(&e.targets[0].target, Target::Mailbox(u) if u == "root"));
/// assert_eq!(e.targets[1].target.to_string(), "ops@example.net");
/// # Ok::<(), postrider::local::AliasesError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct Aliases {
    entries: HashMap<String, AliasEntry>,
    origin: Option<Origin>,
}

impl Aliases {
    /// No aliases (`postmaster` still reaches root).
    pub fn empty() -> Aliases {
        Aliases::default()
    }

    /// Parses aliases text. `origin` names the file in messages.
    pub fn parse(
        text: &str,
        origin: Origin,
    ) -> Result<(Aliases, Vec<DuplicateAlias>), AliasesError> {
        let mut entries: HashMap<String, AliasEntry> = HashMap::new();
        let mut duplicates = Vec::new();
        let mut errors = Vec::new();
        for (line, logical) in logical_lines(text) {
            let problem = |problem| AliasLineError {
                file: origin.clone(),
                line,
                problem,
            };
            let logical = match logical {
                Ok(l) => l,
                Err(p) => {
                    errors.push(problem(p));
                    continue;
                }
            };
            let Some((name, value)) = logical.split_once(':') else {
                errors.push(problem(AliasProblem::NoColon {
                    text: logical.trim().to_string(),
                }));
                continue;
            };
            let name = unquote_name(name.trim());
            if let Err(reason) = check_name(&name) {
                errors.push(problem(AliasProblem::BadName { name, reason }));
                continue;
            }
            let key = name.to_ascii_lowercase();
            let targets = match parse_targets(value.trim()) {
                Ok(t) => t,
                Err(p) => {
                    errors.push(problem(AliasProblem::Targets {
                        name: key,
                        problem: p,
                    }));
                    continue;
                }
            };
            match entries.entry(key) {
                Entry::Occupied(o) => duplicates.push(DuplicateAlias {
                    file: origin.clone(),
                    line,
                    name: o.key().clone(),
                    first_line: o.get().line,
                }),
                Entry::Vacant(v) => {
                    v.insert(AliasEntry { targets, line });
                }
            }
        }
        if !errors.is_empty() {
            return Err(AliasesError::Invalid { errors });
        }
        for d in &duplicates {
            tracing::warn!(target: "postrider::local", "{d}");
        }
        Ok((
            Aliases {
                entries,
                origin: Some(origin),
            },
            duplicates,
        ))
    }

    /// Reads and parses an aliases file.
    pub fn load(path: &Path) -> Result<(Aliases, Vec<DuplicateAlias>), AliasesError> {
        let text = crate::route::table_file::read_file(path)?;
        Aliases::parse(&text, Origin::file(path))
    }

    /// The entry for `name` (case-insensitive), if any.
    pub fn get(&self, name: &str) -> Option<&AliasEntry> {
        self.entries.get(&name.to_ascii_lowercase())
    }

    /// The file the aliases came from.
    pub fn origin(&self) -> Option<&Origin> {
        self.origin.as_ref()
    }

    /// The number of aliases.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no aliases.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.entries.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    /// What mail for local name `name` becomes: the final targets (mailboxes, addresses,
    /// files, commands), recursively, with `:include:` files read from the file system and
    /// no `.forward` files. This is what `sendmail -bv name` shows.
    pub fn expand(&self, name: &str) -> Expansion {
        expand::expand(self, name, &FileSystem::without_forward())
    }

    /// [`expand`](Aliases::expand) with `:include:` and `.forward` files read through
    /// `sources`.
    pub fn expand_with(&self, name: &str, sources: &dyn Sources) -> Expansion {
        expand::expand(self, name, sources)
    }
}

fn unquote_name(name: &str) -> String {
    match name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
        Some(inner) => inner.to_string(),
        None => name.to_string(),
    }
}

/// The entries of an aliases file: each with the line it starts on and its text with the
/// continuation lines joined, or the problem with a stray continuation line.
fn logical_lines(text: &str) -> Vec<(usize, Result<String, AliasProblem>)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out: Vec<(usize, Result<String, AliasProblem>)> = Vec::new();
    let mut open = false;
    for (i, raw) in text.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let number = i + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            open = false;
            continue;
        }
        if line.starts_with([' ', '\t']) {
            match out.last_mut() {
                Some((_, Ok(entry))) if open => {
                    entry.push(' ');
                    entry.push_str(trimmed);
                }
                Some((_, Err(_))) if open => {}
                _ => out.push((number, Err(AliasProblem::StrayContinuation))),
            }
            continue;
        }
        out.push((number, Ok(trimmed.to_string())));
        open = true;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<(Aliases, Vec<DuplicateAlias>), AliasesError> {
        Aliases::parse(text, Origin::named("aliases"))
    }

    #[test]
    fn entries_with_comments_and_continuation_lines_parse() {
        let (a, dups) = parse(
            "# Debian's file\r\npostmaster: root\r\nstaff: bob,\r\n  carol,\r\n\tdave\r\n\r\nLog: /var/log/x\n",
        )
        .unwrap();
        assert!(dups.is_empty());
        assert_eq!(a.len(), 3);
        let staff = a.get("STAFF").unwrap();
        assert_eq!(staff.line, 3);
        assert_eq!(staff.targets.len(), 3);
        assert_eq!(a.get("log").unwrap().line, 7);
        assert_eq!(a.names(), ["log", "postmaster", "staff"]);
    }

    #[test]
    fn every_bad_line_is_reported_with_file_and_line() {
        let err =
            parse("ok: bob\nno colon here\n  stray\n\nbad name: x\nx: a b\n  , c\n").unwrap_err();
        let AliasesError::Invalid { errors } = &err else {
            panic!("{err}")
        };
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [2, 5, 6], "{err}");
        let text = err.to_string();
        assert!(
            text.starts_with("aliases:2: no ':' after the alias name in \"no colon here stray\""),
            "{text}"
        );
        assert!(
            text.contains("aliases:5: bad alias name \"bad name\""),
            "{text}"
        );
        assert!(text.contains("aliases:6: alias \"x\": "), "{text}");
    }

    #[test]
    fn a_continuation_after_a_comment_is_stray() {
        let err = parse("a: b\n# note\n  c\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "aliases:3: a line starting with a blank continues the entry above, but there is none"
        );
    }

    #[test]
    fn the_first_of_two_entries_wins_with_a_warning() {
        let (a, dups) = parse("root: bob\nROOT: carol\n").unwrap();
        assert_eq!(a.get("root").unwrap().line, 1);
        assert_eq!(
            dups[0].to_string(),
            "aliases:2: duplicate alias \"root\" ignored; the entry on line 1 is used"
        );
    }

    #[test]
    fn an_empty_value_is_an_error() {
        let err = parse("nobody:\n").unwrap_err();
        assert!(err.to_string().contains("empty target"), "{err}");
    }
}
