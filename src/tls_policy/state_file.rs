//! Replacing a small state file so that a crash leaves the old contents or the new, never
//! half of either: write a temporary file beside it, sync it, rename it over the old one,
//! sync the directory (the rename is only durable once the directory entry is).

use std::io::{self, Write};
use std::path::Path;

/// Writes `bytes` to `path` atomically and durably, creating the directory when missing.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .expect("invariant: a state file path is a file inside a state directory");
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .expect("invariant: a state file path names a file")
        .to_string_lossy();
    // The process id keeps two processes sharing the directory off each other's file.
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_file_holds_the_new_bytes_and_no_temporary_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("state.json");
        write_atomically(&path, b"old").unwrap();
        write_atomically(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let names: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
    }
}
