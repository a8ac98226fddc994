//! Recycled files: a removed message's file is renamed into `tmp/` as a spare instead of being
//! unlinked, and later inserts write into it instead of creating a new file.
//!
//! Creating a file costs an inode allocation, done under the directory's lock, so every insert
//! into `queue/` waits for it; on ext4 without a journal the allocator also skips each inode
//! freed in the last 30 s to 5 min, scanning past all of them, which at a steady thousand
//! messages a second made allocation most of the spool's CPU (benches/README.md). A spool that
//! removes as fast as it inserts reuses its own files and allocates none.
//!
//! A spare is an ordinary file in `tmp/` that nobody holds locked, so a scan in any process
//! removes it like any leftover (it is not counted as an orphan); the pool then holds a name
//! that is gone, which `take` skips. Taking one follows the protocol of a new file: open,
//! lock, check it is still linked. Only small files are kept (a spare keeps its blocks), and
//! only a few, so little disk space is held; `clear` gives it all back when the disk is full.

use std::collections::VecDeque;
use std::fs::{OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use super::files::{self, Locked};

/// The most spares kept: enough for the removals of a few delivered batches at once (a batch
/// is up to 50 messages), which later inserts then consume.
const MAX_SPARES: usize = 512;
/// Files larger than this are unlinked, not kept: a spare keeps its blocks.
const MAX_SPARE_SIZE: u64 = 256 * 1024;
/// The most bytes all spares may hold.
const MAX_SPARE_BYTES: u64 = 32 << 20;
/// Spares looked at per `take` before giving up (some may be gone or still locked).
const TAKE_ATTEMPTS: usize = 4;
/// How spare names begin (`tmp/spare.PID.N`).
pub(crate) const SPARE_PREFIX: &str = "spare.";

/// The spares of one spool handle.
pub(crate) struct Spares {
    tmp: PathBuf,
    pool: Mutex<Pool>,
    next: AtomicU64,
    /// This process's id, part of every spare's name: read once (glibc does not cache it, and
    /// a removal is frequent).
    pid: u32,
}

#[derive(Default)]
struct Pool {
    /// Spare names with their sizes, the oldest first (the likeliest to be unlocked).
    files: VecDeque<(PathBuf, u64)>,
    bytes: u64,
}

impl Pool {
    fn has_room(&self, size: u64) -> bool {
        self.files.len() < MAX_SPARES && self.bytes + size <= MAX_SPARE_BYTES
    }

    fn push(&mut self, path: PathBuf, size: u64) {
        self.bytes += size;
        self.files.push_back((path, size));
    }

    fn pop(&mut self) -> Option<(PathBuf, u64)> {
        let (path, size) = self.files.pop_front()?;
        self.bytes -= size;
        Some((path, size))
    }
}

impl Spares {
    pub(crate) fn new(tmp: &Path) -> Spares {
        Spares {
            tmp: tmp.to_path_buf(),
            pool: Mutex::new(Pool::default()),
            next: AtomicU64::new(0),
            pid: std::process::id(),
        }
    }

    fn pool(&self) -> MutexGuard<'_, Pool> {
        // Each update is one push or pop: a panic elsewhere cannot leave it inconsistent.
        self.pool
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A spare, open for writing and locked by us, its name in `tmp/` and its length; `None`
    /// when there is none to take. Its old contents are still there: overwrite it, and
    /// truncate it when the new contents are shorter.
    pub(crate) fn take(&self) -> Option<(PathBuf, Locked, u64)> {
        for _ in 0..TAKE_ATTEMPTS {
            let (path, size) = self.pool().pop()?;
            let Ok(file) = OpenOptions::new().write(true).open(&path) else {
                continue; // removed by a scan
            };
            match file.try_lock() {
                Ok(()) => {}
                // Still locked (the claim of the message it belonged to, not yet released):
                // it will be free later.
                Err(TryLockError::WouldBlock) => {
                    self.keep(path, size);
                    continue;
                }
                Err(TryLockError::Error(_)) => continue,
            }
            let locked = Locked(file);
            // A scan unlinks a spare only while holding its lock: one that did so between our
            // open and our lock leaves us an unlinked file.
            match locked.0.metadata() {
                Ok(m) if m.nlink() > 0 && m.is_file() => return Some((path, locked, m.len())),
                _ => continue,
            }
        }
        None
    }

    /// Takes `path` out of its directory: renamed to a spare name in `tmp/` when it is small
    /// and the pool has room (`Some((spare, size))`: hand it to [`Spares::keep`] once the
    /// removal is durable), else unlinked (`None`). A missing `path` is `NotFound`, as for an
    /// unlink. A full disk never stops it: a rename that would need a new directory block
    /// falls back to the unlink, which frees space.
    pub(crate) fn retire(&self, path: &Path) -> io::Result<Option<(PathBuf, u64)>> {
        let size = std::fs::symlink_metadata(path)?.len();
        if size <= MAX_SPARE_SIZE && self.pool().has_room(size) {
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            let spare = self.tmp.join(format!("{SPARE_PREFIX}{}.{n}", self.pid));
            match files::rename_noreplace(path, &spare) {
                Ok(()) => return Ok(Some((spare, size))),
                // A name left by a dead process with our pid: unlink instead.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)) => {}
                Err(e) => return Err(e),
            }
        }
        std::fs::remove_file(path).map(|()| None)
    }

    /// Puts a spare into the pool (or unlinks it when the pool is full).
    pub(crate) fn keep(&self, spare: PathBuf, size: u64) {
        let mut pool = self.pool();
        if pool.has_room(size) {
            pool.push(spare, size);
        } else {
            drop(pool);
            let _ = files::remove_if_exists(&spare);
        }
    }

    /// Unlinks every spare: gives their space back (a full disk) or tidies up (the spool is
    /// closed).
    pub(crate) fn clear(&self) {
        let spares: Vec<PathBuf> = {
            let mut pool = self.pool();
            pool.bytes = 0;
            pool.files.drain(..).map(|(path, _)| path).collect()
        };
        for spare in spares {
            // Never one a writer holds: we hold none of the pool's locks, and a taken spare
            // has left the pool.
            let _ = files::remove_if_exists(&spare);
        }
    }
}

impl Drop for Spares {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retired_file_is_reused_with_its_old_contents_gone() {
        let dir = tempfile::tempdir().unwrap();
        let spares = Spares::new(dir.path());
        let old = dir.path().join("old");
        std::fs::write(&old, b"a much longer old message").unwrap();
        let ino = std::fs::metadata(&old).unwrap().ino();
        let (spare, size) = spares.retire(&old).unwrap().expect("kept as a spare");
        assert!(!old.exists());
        spares.keep(spare, size);
        let (path, locked, old_len) = spares.take().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), ino);
        assert_eq!(old_len, 25);
        files::write_parts(&locked.0, &[b"new"], old_len, true).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert!(spares.take().is_none());
    }

    #[test]
    fn large_files_are_unlinked_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let spares = Spares::new(dir.path());
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; MAX_SPARE_SIZE as usize + 1]).unwrap();
        assert!(spares.retire(&big).unwrap().is_none());
        assert!(!big.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_spare_removed_by_a_scan_or_still_locked_is_not_taken() {
        let dir = tempfile::tempdir().unwrap();
        let spares = Spares::new(dir.path());
        for name in ["a", "b"] {
            let p = dir.path().join(name);
            std::fs::write(&p, b"x").unwrap();
            let (spare, size) = spares.retire(&p).unwrap().unwrap();
            spares.keep(spare, size);
        }
        let first = spares.pool().files.front().cloned().unwrap().0;
        std::fs::remove_file(&first).unwrap();
        let second = spares.pool().files.back().cloned().unwrap().0;
        let holder = std::fs::File::open(&second).unwrap();
        holder.lock().unwrap();
        assert!(spares.take().is_none());
        drop(holder);
        assert_eq!(spares.take().unwrap().0, second);
    }

    #[test]
    fn a_missing_file_cannot_be_retired() {
        let dir = tempfile::tempdir().unwrap();
        let spares = Spares::new(dir.path());
        let err = spares.retire(&dir.path().join("gone")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn dropping_the_pool_unlinks_the_spares() {
        let dir = tempfile::tempdir().unwrap();
        let spares = Spares::new(dir.path());
        let p = dir.path().join("a");
        std::fs::write(&p, b"x").unwrap();
        let (spare, size) = spares.retire(&p).unwrap().unwrap();
        spares.keep(spare, size);
        drop(spares);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
