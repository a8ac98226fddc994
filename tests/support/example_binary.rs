//! The example binaries that `cargo test` builds next to the test binaries, refused when stale:
//! the tests of the example commands run them as real processes.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::SystemTime;

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The example binary `name` that `cargo test` builds next to the test binaries
/// (`target/debug/examples/NAME`). Panics with instructions when it is missing or older than
/// its sources (`examples/NAME.rs` and the `examples/common/` modules it includes) or the
/// library, so a stale binary is never tested.
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
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let source = root.join(format!("{name}.rs"));
    let text = std::fs::read_to_string(&source)
        .unwrap_or_else(|e| panic!("read {}: {e}", source.display()));
    let mut inputs = vec![source];
    // The shared modules it includes: `#[path = "common/config_engine.rs"]`.
    inputs.extend(text.lines().filter_map(|l| {
        let rest = l.trim().strip_prefix("#[path = \"")?;
        Some(root.join(rest.split('"').next()?))
    }));
    if let Ok(entries) = std::fs::read_dir(deps) {
        inputs.extend(entries.flatten().map(|e| e.path()).filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libpostrider-") && n.ends_with(".rlib"))
        }));
    }
    for input in inputs {
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
