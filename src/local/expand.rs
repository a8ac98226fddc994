//! Alias expansion: what mail for a local name becomes, as local(8) and sendmail work it out.
//!
//! - A name with an alias is replaced by the alias' targets, recursively; a name without one
//!   is a mailbox (after its `.forward` file, when those are read). `name+detail` falls back to
//!   `name` when it has no alias of its own.
//! - A name that lists itself (`bob: bob, bob@home.example`) or a `.forward` that names its
//!   owner is that user's mailbox: the "keep a copy" idiom. A name met again further up the
//!   chain is a loop: that branch adds nothing (everything it could reach is already being
//!   expanded) and is reported; only when nothing at all is left is the loop an error.
//! - `postmaster` without an alias is root's (RFC 5321 §4.5.1: it must always be deliverable).
//! - The same final target reached twice is delivered once.
//! - At most [`MAX_DEPTH`] levels and [`MAX_TARGETS`] targets, so a runaway include cannot eat
//!   the machine.
//!
//! Files are read through [`Sources`], so the expansion itself is pure and testable.

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::address::Address;

use super::aliases::Aliases;
use super::targets::{AliasTarget, TargetProblem, parse_targets_lenient};
use super::users::UserDb;

/// The deepest chain of names and includes followed (sendmail's `MaxAliasRecursion` is 10;
/// nested mailing lists in the field go deeper).
pub const MAX_DEPTH: usize = 20;

/// The most final targets one name may expand to.
pub const MAX_TARGETS: usize = 1000;

/// A final target: where one copy of the message goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// The mailbox of this local user.
    Mailbox(String),
    /// An address elsewhere: a copy is queued for it.
    Remote(Address),
    /// Append to this file in mbox format.
    File(PathBuf),
    /// Run this command with the message on its standard input.
    Pipe(String),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Mailbox(u) => write!(f, "\\{u}"),
            Target::Remote(a) => write!(f, "{a}"),
            Target::File(p) => write!(f, "{}", p.display()),
            Target::Pipe(c) => write!(f, "\"|{c}\""),
        }
    }
}

/// Where a target was written: it decides who a command or file delivery runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSource {
    /// The name itself (a mailbox reached without any alias).
    Name,
    /// The aliases file, at this line.
    Aliases {
        /// The line of the alias entry.
        line: usize,
    },
    /// An `:include:` file.
    Include {
        /// The file.
        path: PathBuf,
        /// Its line.
        line: usize,
        /// The file's owner (commands and files it names run as this user, unless root).
        owner: u32,
        /// Group or others may write the file: its commands and files are not trusted.
        writable_by_others: bool,
    },
    /// A user's `.forward` file.
    Forward {
        /// The user (commands and files run as this user).
        user: String,
        /// The file.
        path: PathBuf,
    },
}

/// One final target with how it was reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expanded {
    /// Where the copy goes.
    pub target: Target,
    /// The names and includes followed to get here, first to last (`postmaster`, `root`).
    pub via: Vec<String>,
    /// Where the target was written.
    pub source: TargetSource,
}

/// Something that went wrong while expanding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpansionProblem {
    /// A chain of names came back to an earlier one.
    #[error("alias loop: {}", chain.join(" -> "))]
    Loop {
        /// The names, from the first occurrence to the repeat.
        chain: Vec<String>,
    },
    /// More than [`MAX_DEPTH`] levels.
    #[error("aliases nested more than {MAX_DEPTH} deep: {}", chain.join(" -> "))]
    TooDeep {
        /// The chain where expansion stopped.
        chain: Vec<String>,
    },
    /// More than [`MAX_TARGETS`] final targets.
    #[error("more than {MAX_TARGETS} targets; the rest were dropped")]
    TooMany,
    /// An include file could not be read.
    #[error("cannot read :include: file {}: {error}", path.display())]
    Include {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: String,
    },
    /// A line of an include or `.forward` file is malformed.
    #[error("{}:{line}: {problem}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The line.
        line: usize,
        /// What is wrong.
        problem: TargetProblem,
    },
    /// A `.forward` file could not be read (so where the user wants mail is unknown).
    #[error("cannot read {}: {error}", path.display())]
    Forward {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: String,
    },
    /// A `.forward` file that others could have written was ignored (mail goes to the mailbox).
    #[error("{} ignored: {reason}", path.display())]
    UnsafeForward {
        /// The file.
        path: PathBuf,
        /// Why it is not trusted.
        reason: String,
    },
}

impl ExpansionProblem {
    /// True when the problem may pass without anyone fixing a file (an I/O error), or when
    /// acting on the partial result could misdeliver: the recipient must then be deferred.
    pub fn defers(&self) -> bool {
        matches!(
            self,
            ExpansionProblem::Include { .. }
                | ExpansionProblem::Syntax { .. }
                | ExpansionProblem::Forward { .. }
        )
    }
}

/// What a name expands to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expansion {
    /// The name expanded.
    pub name: String,
    /// The final targets, each once, in the order reached.
    pub targets: Vec<Expanded>,
    /// What went wrong on the way.
    pub problems: Vec<ExpansionProblem>,
}

impl Expansion {
    /// The first problem that must defer the recipient (see [`ExpansionProblem::defers`]).
    pub fn deferral(&self) -> Option<&ExpansionProblem> {
        self.problems.iter().find(|p| p.defers())
    }

    /// The loop or depth problem that left nothing to deliver, if that is what happened.
    pub fn dead_end(&self) -> Option<&ExpansionProblem> {
        if !self.targets.is_empty() {
            return None;
        }
        self.problems.iter().find(|p| {
            matches!(
                p,
                ExpansionProblem::Loop { .. } | ExpansionProblem::TooDeep { .. }
            )
        })
    }
}

/// An include or `.forward` file's text and who may have written it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// The text.
    pub text: String,
    /// The owner's uid.
    pub owner: u32,
    /// Group or others may write it.
    pub writable_by_others: bool,
}

/// Where expansion reads `:include:` and `.forward` files.
pub trait Sources {
    /// The include file at `path`.
    fn include(&self, path: &Path) -> io::Result<SourceFile>;
    /// The `.forward` file of local user `user`: `Ok(None)` when forward files are not read,
    /// the user is unknown, or has none.
    fn forward(&self, user: &str) -> io::Result<Option<(PathBuf, SourceFile)>>;
}

/// Reads include files (and `.forward` files, when given a user database) from the file
/// system.
#[derive(Debug, Clone)]
pub struct FileSystem {
    forward: Option<(Arc<dyn UserDb>, String)>,
}

impl FileSystem {
    /// Include files only.
    pub fn without_forward() -> FileSystem {
        FileSystem { forward: None }
    }

    /// Include files, and each user's `file_name` (`.forward`) in the home `users` gives.
    pub fn with_forward(users: Arc<dyn UserDb>, file_name: impl Into<String>) -> FileSystem {
        FileSystem {
            forward: Some((users, file_name.into())),
        }
    }
}

/// Files bigger than this are not alias lists.
const MAX_SOURCE_FILE: u64 = 1 << 20;

fn read_source(path: &Path) -> io::Result<SourceFile> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    if meta.len() > MAX_SOURCE_FILE {
        return Err(io::Error::other(format!(
            "{} octets is too big for a list of addresses",
            meta.len()
        )));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_SOURCE_FILE).read_to_end(&mut bytes)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not valid UTF-8"))?;
    Ok(SourceFile {
        text,
        owner: meta.uid(),
        writable_by_others: meta.mode() & 0o022 != 0,
    })
}

impl Sources for FileSystem {
    fn include(&self, path: &Path) -> io::Result<SourceFile> {
        read_source(path)
    }

    fn forward(&self, user: &str) -> io::Result<Option<(PathBuf, SourceFile)>> {
        let Some((users, name)) = &self.forward else {
            return Ok(None);
        };
        let Some(u) = users.lookup(user).map_err(io::Error::other)? else {
            return Ok(None);
        };
        let path = u.home.join(name);
        match read_source(&path) {
            Ok(f) => Ok(Some((path, f))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            // A home directory the delivering process may not enter has no usable .forward.
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// `bob+lists` -> `bob`.
fn base_name(name: &str) -> &str {
    match name.find('+') {
        Some(i) if i > 0 => &name[..i],
        _ => name,
    }
}

struct Walk<'a> {
    aliases: &'a Aliases,
    sources: &'a dyn Sources,
    out: Vec<Expanded>,
    seen: HashSet<Target>,
    problems: Vec<ExpansionProblem>,
    full: bool,
    /// Names and includes already expanded in full: meeting one again adds nothing (its
    /// targets are out already), and expanding it again would make the walk exponential in
    /// the number of names that share it.
    done: HashSet<String>,
}

/// At most this many problems are kept; past it they say nothing new.
const MAX_PROBLEMS: usize = 100;

pub(crate) fn expand(aliases: &Aliases, name: &str, sources: &dyn Sources) -> Expansion {
    let mut walk = Walk {
        aliases,
        sources,
        out: Vec::new(),
        seen: HashSet::new(),
        problems: Vec::new(),
        full: false,
        done: HashSet::new(),
    };
    let mut chain = Vec::new();
    walk.name(name, &mut chain, &TargetSource::Name);
    Expansion {
        name: name.to_string(),
        targets: walk.out,
        problems: walk.problems,
    }
}

impl Walk<'_> {
    fn push(&mut self, target: Target, chain: &[String], source: &TargetSource) {
        if self.seen.contains(&target) {
            return;
        }
        if self.out.len() >= MAX_TARGETS {
            if !self.full {
                self.full = true;
                self.problems.push(ExpansionProblem::TooMany);
            }
            return;
        }
        self.seen.insert(target.clone());
        self.out.push(Expanded {
            target,
            via: chain.to_vec(),
            source: source.clone(),
        });
    }

    fn deep(&mut self, chain: &[String]) -> bool {
        if chain.len() >= MAX_DEPTH {
            self.problem(ExpansionProblem::TooDeep {
                chain: chain.to_vec(),
            });
            return true;
        }
        false
    }

    fn problem(&mut self, p: ExpansionProblem) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(p);
        }
    }

    fn name(&mut self, name: &str, chain: &mut Vec<String>, source: &TargetSource) {
        let key = name.to_ascii_lowercase();
        if self.done.contains(&key) && !chain.contains(&key) {
            return;
        }
        self.name_once(name, key.clone(), chain, source);
        self.done.insert(key);
    }

    fn name_once(
        &mut self,
        name: &str,
        key: String,
        chain: &mut Vec<String>,
        source: &TargetSource,
    ) {
        if let Some(pos) = chain.iter().position(|c| *c == key) {
            if pos + 1 == chain.len() {
                // The name lists itself: its own mailbox.
                self.push(Target::Mailbox(base_name(name).to_string()), chain, source);
            } else {
                let mut looped = chain[pos..].to_vec();
                looped.push(key);
                self.problem(ExpansionProblem::Loop { chain: looped });
            }
            return;
        }
        if self.deep(chain) {
            return;
        }
        let entry = match self.aliases.get(&key) {
            Some(e) => Some((key.clone(), e)),
            None => {
                let base = base_name(&key);
                (base != key)
                    .then(|| self.aliases.get(base).map(|e| (base.to_string(), e)))
                    .flatten()
            }
        };
        if let Some((matched, entry)) = entry {
            chain.push(matched);
            let source = TargetSource::Aliases { line: entry.line };
            for t in &entry.targets {
                self.target(t, chain, &source);
            }
            chain.pop();
            return;
        }
        let user = base_name(name);
        if user.eq_ignore_ascii_case("postmaster") && !chain.iter().any(|c| c == "root") {
            chain.push("postmaster".to_string());
            self.name("root", chain, &TargetSource::Name);
            chain.pop();
            return;
        }
        match self.sources.forward(user) {
            Ok(None) => self.push(Target::Mailbox(user.to_string()), chain, source),
            Ok(Some((path, file))) => self.forward(user, path, file, chain, source),
            Err(e) => self.problem(ExpansionProblem::Forward {
                path: PathBuf::from(format!("~{user}/.forward")),
                error: e.to_string(),
            }),
        }
    }

    fn forward(
        &mut self,
        user: &str,
        path: PathBuf,
        file: SourceFile,
        chain: &mut Vec<String>,
        source: &TargetSource,
    ) {
        // sendmail's and Postfix's rule: only the user (or root) may have written it.
        if file.writable_by_others {
            self.problem(ExpansionProblem::UnsafeForward {
                path,
                reason: "group or others may write it (chmod go-w)".into(),
            });
            self.push(Target::Mailbox(user.to_string()), chain, source);
            return;
        }
        let before = self.out.len();
        let problems_before = self.problems.len();
        chain.push(user.to_ascii_lowercase());
        let fsource = TargetSource::Forward {
            user: user.to_string(),
            path: path.clone(),
        };
        self.list(&file.text, &path, chain, |_| fsource.clone());
        chain.pop();
        if self.out.len() == before && self.problems.len() == problems_before {
            // An empty .forward means nothing to forward to: keep the mail.
            self.push(Target::Mailbox(user.to_string()), chain, source);
        }
    }

    /// The targets of an include or `.forward` file, line by line.
    fn list(
        &mut self,
        text: &str,
        path: &Path,
        chain: &mut Vec<String>,
        source_for: impl Fn(usize) -> TargetSource,
    ) {
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match parse_targets_lenient(line) {
                Ok(targets) => {
                    let source = source_for(i + 1);
                    for t in &targets {
                        self.target(t, chain, &source);
                    }
                }
                Err(problem) => self.problem(ExpansionProblem::Syntax {
                    path: path.to_path_buf(),
                    line: i + 1,
                    problem,
                }),
            }
        }
    }

    fn target(&mut self, t: &AliasTarget, chain: &mut Vec<String>, source: &TargetSource) {
        match t {
            AliasTarget::Local(n) => self.name(n, chain, source),
            AliasTarget::Mailbox(n) => {
                self.push(Target::Mailbox(base_name(n).to_string()), chain, source)
            }
            AliasTarget::Remote(a) => self.push(Target::Remote(a.clone()), chain, source),
            AliasTarget::File(p) => self.push(Target::File(p.clone()), chain, source),
            AliasTarget::Pipe(c) => self.push(Target::Pipe(c.clone()), chain, source),
            AliasTarget::Include(p) => self.include(p, chain),
        }
    }

    fn include(&mut self, path: &Path, chain: &mut Vec<String>) {
        let key = format!(":include:{}", path.display());
        if self.done.contains(&key) && !chain.contains(&key) {
            return;
        }
        self.include_once(path, key.clone(), chain);
        self.done.insert(key);
    }

    fn include_once(&mut self, path: &Path, key: String, chain: &mut Vec<String>) {
        if let Some(pos) = chain.iter().position(|c| *c == key) {
            let mut looped = chain[pos..].to_vec();
            looped.push(key);
            self.problem(ExpansionProblem::Loop { chain: looped });
            return;
        }
        if self.deep(chain) {
            return;
        }
        match self.sources.include(path) {
            Ok(file) => {
                chain.push(key);
                let (owner, writable) = (file.owner, file.writable_by_others);
                self.list(&file.text, path, chain, |line| TargetSource::Include {
                    path: path.to_path_buf(),
                    line,
                    owner,
                    writable_by_others: writable,
                });
                chain.pop();
            }
            Err(e) => self.problem(ExpansionProblem::Include {
                path: path.to_path_buf(),
                error: e.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests;
