//! Feeds arbitrary text to the aliases parser and, when it loads, expands every alias with the
//! same text standing in for every `:include:` and `.forward` file: errors name lines of the
//! input, target lists display in a form that parses back, and every expansion stays within
//! its bounds (depth, count, each target once).
#![no_main]

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};

use libfuzzer_sys::fuzz_target;
use postrider::local::expand::{MAX_DEPTH, MAX_TARGETS};
use postrider::local::{AliasTarget, Aliases, AliasesError, SourceFile, Sources, parse_targets};
use postrider::route::Origin;

/// Every include and forward file holds the fuzz input itself.
struct Echo<'a>(&'a str);

impl Sources for Echo<'_> {
    fn include(&self, _path: &Path) -> io::Result<SourceFile> {
        Ok(SourceFile {
            text: self.0.to_string(),
            owner: 0,
            writable_by_others: false,
        })
    }

    fn forward(&self, user: &str) -> io::Result<Option<(PathBuf, SourceFile)>> {
        // Only some users have one, so that mailboxes are reached too.
        if user.len() % 2 == 0 {
            return Ok(None);
        }
        Ok(Some((PathBuf::from(format!("/home/{user}/.forward")), self.include(Path::new("/"))?)))
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines = text.split('\n').count();
    if let Ok(targets) = parse_targets(text) {
        assert!(!targets.is_empty());
        let shown: Vec<String> = targets.iter().map(ToString::to_string).collect();
        let joined = shown.join(", ");
        // Commands and quoted addresses keep characters a bare list cannot hold; the others
        // must come back as they were.
        if targets
            .iter()
            .all(|t| matches!(t, AliasTarget::Local(_) | AliasTarget::Mailbox(_)))
        {
            assert_eq!(parse_targets(&joined).as_ref(), Ok(&targets), "{joined}");
        }
    }
    let aliases = match Aliases::parse(text, Origin::named("fuzz")) {
        Ok((a, duplicates)) => {
            for d in &duplicates {
                assert!(d.line >= 1 && d.line <= lines && d.first_line < d.line);
            }
            a
        }
        Err(AliasesError::Invalid { errors }) => {
            assert!(!errors.is_empty());
            for e in errors.iter().take(2) {
                assert!(e.line >= 1 && e.line <= lines);
                assert!(e.to_string().starts_with(&format!("fuzz:{}: ", e.line)));
            }
            return;
        }
        Err(e) => panic!("parsing text cannot fail to read: {e}"),
    };
    for name in aliases.names().into_iter().take(4).chain(["postmaster"]) {
        let entry_line = aliases.get(name).map(|e| e.line);
        assert!(entry_line.is_none_or(|l| l >= 1 && l <= lines));
        let e = aliases.expand_with(name, &Echo(text));
        assert!(e.targets.len() <= MAX_TARGETS);
        let mut seen = HashSet::new();
        for t in &e.targets {
            assert!(seen.insert(t.target.clone()), "{} twice", t.target);
            assert!(t.via.len() <= MAX_DEPTH);
        }
    }
});
