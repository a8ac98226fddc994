//! The example binaries that `cargo test` builds next to the test binaries, refused when stale:
//! the tests of the example commands run them as real processes.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The example binary `name` that `cargo test` builds next to the test binaries
/// (`target/debug/examples/NAME`). Panics with instructions when it is missing or older than
/// any source under `examples/` or the library, so a stale binary is never tested.
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
    // Every source under examples/ (a program and the modules it shares with the others).
    let mut inputs = Vec::new();
    sources(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples"),
        &mut inputs,
    );
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

/// Every `.rs` file under `dir`, recursively.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}
