//! Unit tests of `expand`.

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
    assert!(matches!(&e.targets[1].source, TargetSource::Forward { user, .. } if user == "carol"));
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
