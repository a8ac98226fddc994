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
mod tests {
    use super::*;
    use crate::route::Origin;
    use std::collections::HashMap;

    #[derive(Default)]
    struct Fake {
        includes: HashMap<PathBuf, String>,
        forwards: HashMap<String, String>,
        broken: bool,
    }

    impl Sources for Fake {
        fn include(&self, path: &Path) -> io::Result<SourceFile> {
            self.includes
                .get(path)
                .map(|t| SourceFile {
                    text: t.clone(),
                    owner: 0,
                    writable_by_others: false,
                })
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
        }
        fn forward(&self, user: &str) -> io::Result<Option<(PathBuf, SourceFile)>> {
            if self.broken {
                return Err(io::Error::other("I/O error"));
            }
            Ok(self.forwards.get(user).map(|t| {
                (
                    PathBuf::from(format!("/home/{user}/.forward")),
                    SourceFile {
                        text: t.clone(),
                        owner: 1000,
                        writable_by_others: false,
                    },
                )
            }))
        }
    }

    fn aliases(text: &str) -> Aliases {
        Aliases::parse(text, Origin::named("aliases")).unwrap().0
    }

    fn shown(e: &Expansion) -> Vec<String> {
        e.targets.iter().map(|t| t.target.to_string()).collect()
    }

    #[test]
    fn aliases_expand_recursively_to_final_targets() {
        let a = aliases(
            "staff: bob, carol, ops\nops: jane@example.net, \"|/usr/bin/logger\", /var/log/ops\nbob: \\bob\n",
        );
        let e = a.expand_with("Staff", &Fake::default());
        assert_eq!(
            shown(&e),
            [
                "\\bob",
                "\\carol",
                "jane@example.net",
                "\"|/usr/bin/logger\"",
                "/var/log/ops"
            ]
        );
        assert_eq!(e.targets[2].via, ["staff", "ops"]);
        assert!(e.problems.is_empty());
    }

    #[test]
    fn a_name_that_lists_itself_keeps_a_copy() {
        let a = aliases("bob: bob, bob@home.example\n");
        let e = a.expand_with("bob", &Fake::default());
        assert_eq!(shown(&e), ["\\bob", "bob@home.example"]);
        assert!(e.problems.is_empty());
    }

    #[test]
    fn a_loop_is_reported_and_is_fatal_only_when_nothing_is_left() {
        let a = aliases("a: b\nb: c\nc: a\n");
        let e = a.expand_with("a", &Fake::default());
        assert!(e.targets.is_empty());
        assert_eq!(
            e.dead_end().unwrap().to_string(),
            "alias loop: a -> b -> c -> a"
        );
        let a = aliases("a: b, x@example.net\nb: a\n");
        let e = a.expand_with("a", &Fake::default());
        assert_eq!(shown(&e), ["x@example.net"]);
        assert!(e.dead_end().is_none());
        assert_eq!(e.problems.len(), 1);
    }

    #[test]
    fn postmaster_reaches_root_and_root_may_be_aliased() {
        let e = Aliases::empty().expand_with("postmaster", &Fake::default());
        assert_eq!(shown(&e), ["\\root"]);
        assert_eq!(e.targets[0].via, ["postmaster"]);
        let a = aliases("root: admin@example.net\n");
        let e = a.expand_with("POSTMASTER", &Fake::default());
        assert_eq!(shown(&e), ["admin@example.net"]);
        let a = aliases("postmaster: carol\n");
        assert_eq!(
            shown(&a.expand_with("postmaster", &Fake::default())),
            ["\\carol"]
        );
    }

    #[test]
    fn the_same_target_reached_twice_is_delivered_once() {
        let a = aliases("all: a, b\na: bob\nb: bob, carol\n");
        let e = a.expand_with("all", &Fake::default());
        assert_eq!(shown(&e), ["\\bob", "\\carol"]);
    }

    #[test]
    fn detail_falls_back_to_the_base_name() {
        let a = aliases("bob: robert\nbob+lists: \\lists\n");
        assert_eq!(
            shown(&a.expand_with("bob+news", &Fake::default())),
            ["\\robert"]
        );
        assert_eq!(
            shown(&a.expand_with("bob+lists", &Fake::default())),
            ["\\lists"]
        );
        assert_eq!(
            shown(&a.expand_with("carol+x", &Fake::default())),
            ["\\carol"]
        );
    }

    #[test]
    fn includes_are_read_when_expanding_and_their_failures_defer() {
        let a = aliases("team: :include:/etc/mail/team, boss\n");
        let mut fake = Fake::default();
        fake.includes.insert(
            "/etc/mail/team".into(),
            "# the team\nbob, carol,\n\ndave@example.net\n".into(),
        );
        let e = a.expand_with("team", &fake);
        assert_eq!(
            shown(&e),
            ["\\bob", "\\carol", "dave@example.net", "\\boss"]
        );
        assert!(matches!(
            &e.targets[2].source,
            TargetSource::Include { line: 4, .. }
        ));
        assert_eq!(e.targets[0].via, ["team", ":include:/etc/mail/team"]);
        let e = a.expand_with("team", &Fake::default());
        assert!(
            e.deferral()
                .unwrap()
                .to_string()
                .starts_with("cannot read :include: file /etc/mail/team")
        );
    }

    #[test]
    fn an_include_that_includes_itself_is_a_loop() {
        let a = aliases("l: :include:/l\n");
        let mut fake = Fake::default();
        fake.includes.insert("/l".into(), ":include:/l\n".into());
        let e = a.expand_with("l", &fake);
        assert!(e.dead_end().is_some(), "{e:?}");
    }

    #[test]
    fn forward_files_redirect_a_mailbox_and_self_references_keep_a_copy() {
        let mut fake = Fake::default();
        fake.forwards
            .insert("bob".into(), "\\bob, bob@home.example\n".into());
        fake.forwards
            .insert("carol".into(), "carol, \"|/bin/cat\"\n".into());
        fake.forwards.insert("empty".into(), "# nothing\n".into());
        let a = Aliases::empty();
        assert_eq!(
            shown(&a.expand_with("bob", &fake)),
            ["\\bob", "bob@home.example"]
        );
        let e = a.expand_with("carol", &fake);
        assert_eq!(shown(&e), ["\\carol", "\"|/bin/cat\""]);
        assert!(
            matches!(&e.targets[1].source, TargetSource::Forward { user, .. } if user == "carol")
        );
        assert_eq!(shown(&a.expand_with("empty", &fake)), ["\\empty"]);
        let broken = Fake {
            broken: true,
            ..Fake::default()
        };
        assert!(a.expand_with("bob", &broken).deferral().is_some());
    }

    #[test]
    fn fuzz_regression_shared_names_are_expanded_once() {
        // Found by fuzz/aliases: every level names the next two twice over (and loops back to
        // the top), so a walk that expands a name each time it is met visits 2^18 names and
        // keeps a loop report for each.
        let mut text = String::new();
        for i in 0..18 {
            text.push_str(&format!(
                "n{i}: n{0}, n{0}a, n0\nn{i}a: n{0}, n{0}a, n0\n",
                i + 1
            ));
        }
        let e = aliases(&text).expand_with("n0", &Fake::default());
        // n0 lists itself: its own mailbox.
        assert_eq!(shown(&e), ["\\n18", "\\n18a", "\\n0"]);
        assert!(e.problems.len() <= MAX_PROBLEMS);
    }

    #[test]
    fn runaway_expansion_is_bounded() {
        let mut text = String::new();
        for i in 0..30 {
            text.push_str(&format!("n{i}: n{}\n", i + 1));
        }
        let e = aliases(&text).expand_with("n0", &Fake::default());
        assert!(
            matches!(e.dead_end(), Some(ExpansionProblem::TooDeep { .. })),
            "{e:?}"
        );
        let many: Vec<String> = (0..1500).map(|i| format!("u{i}")).collect();
        let a = aliases(&format!("big: {}\n", many.join(", ")));
        let e = a.expand_with("big", &Fake::default());
        assert_eq!(e.targets.len(), MAX_TARGETS);
        assert_eq!(e.problems, [ExpansionProblem::TooMany]);
    }
}
