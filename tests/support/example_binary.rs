//! The example binaries that `cargo test` builds next to the test binaries, refused when stale:
//! the tests of the example commands run them as real processes.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The example binary `name` that `cargo test` builds next to the test binaries
/// (`target/debug/examples/NAME`). Panics with instructions when it is missing or older than
/// any source it was built from (cargo's dep-info file beside it lists them: the example, the
/// modules it shares, the library's sources), so a stale binary is never tested.
pub fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let deps = exe
        .parent()
        .expect("the test binary lives in target/<profile>/deps");
    let profile = deps.parent().expect("deps lives in target/<profile>");
    let binary = profile.join("examples").join(name);
    let how = "build it with `cargo build --examples` (a plain `cargo test` builds it too; \
               `cargo test --test NAME` does not)";
    let built =
        modified(&binary).unwrap_or_else(|| panic!("{} is missing: {how}", binary.display()));
    let dep_info = binary.with_extension("d");
    let text = std::fs::read_to_string(&dep_info)
        .unwrap_or_else(|e| panic!("read {}: {e} ({how})", dep_info.display()));
    for input in dep_info_sources(&text) {
        if modified(&input).is_some_and(|t| t > built) {
            panic!(
                "{} is older than {}: {how}",
                binary.display(),
                input.display()
            );
        }
    }
    binary
}

/// The sources a Makefile-style dep-info file (`target: a.rs b.rs ...`) lists; `\ ` escapes a
/// space in a path.
fn dep_info_sources(text: &str) -> Vec<PathBuf> {
    let Some(first) = text.lines().next() else {
        return Vec::new();
    };
    let Some((_, sources)) = first.split_once(": ") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut current = String::new();
    let mut chars = sources.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&' ') => {
                current.push(' ');
                chars.next();
            }
            ' ' => {
                if !current.is_empty() {
                    out.push(PathBuf::from(std::mem::take(&mut current)));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        out.push(PathBuf::from(current));
    }
    out
}
