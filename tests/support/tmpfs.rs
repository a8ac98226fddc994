//! A small tmpfs for the tests that need a full or read-only file system (spool and doctor).
#![allow(dead_code)] // each test file uses a different subset

use std::path::PathBuf;
use std::process::Command;

/// A tmpfs mounted on a fresh directory, unmounted when dropped. Needs root (or
/// CAP_SYS_ADMIN); without it the test fails saying so.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `"64k"`).
    pub fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        mount(&[
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size},mode=0700"),
            "tmpfs",
            dir.path().to_str().unwrap(),
        ]);
        Tmpfs { dir }
    }

    /// The mount point.
    pub fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Makes the file system read-only.
    pub fn remount_read_only(&self) {
        mount(&["-o", "remount,ro", self.dir.path().to_str().unwrap()]);
    }

    /// Fills the file system until a write fails for lack of space.
    pub fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.dir.path().join("ballast")).unwrap();
        let block = [0u8; 4096];
        loop {
            if let Err(e) = f.write_all(&block) {
                assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
                return;
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let path = self.dir.path();
        let ok = Command::new("umount")
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Something still has a file open: detach now, the kernel frees it when closed.
            let _ = Command::new("umount").arg("-l").arg(path).status();
        }
    }
}

fn mount(args: &[&str]) {
    let out = Command::new("mount")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("this test needs root / mount permission: cannot run `mount {args:?}`: {e}")
        });
    assert!(
        out.status.success(),
        "this test needs root / mount permission (it mounts a small tmpfs to fill or make \
         read-only): `mount {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}
