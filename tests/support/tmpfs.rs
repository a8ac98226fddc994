//! A small tmpfs for the tests that need a full or read-only file system (spool and doctor).
#![allow(dead_code)] // each test file uses a different subset

use std::path::PathBuf;
use std::process::Command;

/// A tmpfs mounted on a fresh directory, unmounted when dropped. Needs root (or
/// CAP_SYS_ADMIN); without it the test fails saying so.
pub struct Tmpfs {
    dir: tempfile::TempDir,
    /// Ballast files written so far.
    fills: std::sync::atomic::AtomicU32,
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
        Tmpfs {
            dir,
            fills: Default::default(),
        }
    }

    /// The mount point.
    pub fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Makes the file system read-only.
    pub fn remount_read_only(&self) {
        mount(&["-o", "remount,ro", self.dir.path().to_str().unwrap()]);
    }

    /// Fills the file system until a write fails for lack of space (the first call writes
    /// `ballast`, later ones `ballast.N`, so a second call tops up what the first
    /// left).
    pub fn fill(&self) {
        use std::io::Write;
        let name = match self
            .fills
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        {
            0 => "ballast".to_string(),
            n => format!("ballast.{n}"),
        };
        let mut f = std::fs::File::create(self.dir.path().join(name)).unwrap();
        let block = [0u8; 4096];
        loop {
            if let Err(e) = f.write_all(&block) {
                assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
                return;
            }
        }
    }
}

impl Tmpfs {
    /// Free space left to an unprivileged writer, in octets (`statvfs`).
    pub fn free_bytes(&self) -> u64 {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(self.dir.path().as_os_str().as_bytes()).unwrap();
        // SAFETY: an all-zero statvfs is a valid out-parameter, filled by the call.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `path` is NUL-terminated and `st` is a writable statvfs.
        assert_eq!(unsafe { libc::statvfs(path.as_ptr(), &mut st) }, 0);
        st.f_bavail as u64 * st.f_frsize as u64
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
