//! The README's promises that can rot: its embedding example is the crate docs' (both are
//! compiled as doctests), and the commands at its top are what exists and what CI runs.

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

#[test]
fn the_commands_at_the_top_of_the_readme_exist_and_the_test_command_is_what_ci_runs() {
    let readme = read("README.md");
    let commands: Vec<&str> = block(&readme, "```sh\n")
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .collect();
    assert_eq!(
        commands,
        ["cargo run --example voicemail -- --demo", "cargo test"]
    );
    assert!(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples/voicemail.rs")
            .exists()
    );
    let ci = read(".ci/run");
    assert!(
        ci.lines().any(|l| l.trim() == commands[1]),
        ".ci/run does not run `{}`",
        commands[1]
    );
}
