//! The README's promises that can rot: its embedding example is the crate docs' (both are
//! compiled as doctests), and the commands at its top are what exists and what CI runs.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn read(path: &str) -> String {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()))
}

/// The first fenced block that starts with `fence`, without the fences.
fn block<'a>(text: &'a str, fence: &str) -> &'a str {
    let start = text
        .find(fence)
        .unwrap_or_else(|| panic!("no {fence} block"))
        + fence.len();
    let len = text[start..].find("```").expect("a closed block");
    &text[start..start + len]
}

#[test]
fn the_readme_embedding_example_is_the_crate_docs_example() {
    let readme = read("README.md");
    let lib: String = read("src/lib.rs")
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(
        block(&lib, "```rust,no_run\n"),
        block(&readme, "```rust,no_run\n"),
        "copy the README's example into src/lib.rs (or the other way round)"
    );
}

/// The lines of a shell script that do something: no comments, blank lines or shell setup.
fn commands(script: &str) -> Vec<&str> {
    script
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter(|l| !l.starts_with("set ") && !l.starts_with("cd "))
        .collect()
}

#[test]
fn the_commands_at_the_top_of_the_readme_exist_and_the_test_command_is_what_ci_runs() {
    let readme = read("README.md");
    let commands_at_top: Vec<&str> = block(&readme, "```sh\n")
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .collect();
    assert_eq!(
        commands_at_top,
        ["cargo run --example voicemail -- --demo", "scripts/test"]
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(root.join("examples/voicemail.rs").exists());

    let test_command = root.join(commands_at_top[1]);
    let mode = std::fs::metadata(&test_command)
        .unwrap_or_else(|e| panic!("{}: {e}", test_command.display()))
        .permissions()
        .mode();
    assert_ne!(
        mode & 0o111,
        0,
        "{} is not executable",
        test_command.display()
    );
    let script = read(commands_at_top[1]);
    assert_eq!(
        commands(&script).last(),
        Some(&"exec cargo test \"$@\""),
        "{} must end by running cargo test with its arguments",
        commands_at_top[1]
    );

    assert_eq!(
        commands(&read(".ci/run")),
        [
            "cargo fmt --check",
            "cargo clippy --all-targets -- -D warnings",
            commands_at_top[1],
        ],
        ".ci/run must run fmt, clippy, then the README's test command"
    );
}
