//! The file operations the spool is built from, each with the durability and locking rule it
//! needs. Everything here blocks; callers run it on a blocking thread.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Mode of every file the spool creates: the owner only (mail is private).
pub(crate) const FILE_MODE: u32 = 0o600;
/// Mode of every directory the spool creates.
pub(crate) const DIR_MODE: u32 = 0o700;

/// A file this process holds `flock`ed, unlocked explicitly when dropped.
///
/// Closing our descriptor is not enough: a child process forked meanwhile (to run `mount`, a
/// local mailer, ...) holds a copy of it until it execs, and the lock belongs to the open file
/// description, so it would outlive our drop for that long.
#[derive(Debug)]
pub(crate) struct Locked(pub(crate) File);

impl Drop for Locked {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// What [`create_locked`] found.
pub(crate) enum Created {
    /// A new, empty file that this open file description holds `flock`ed.
    File(Locked),
    /// The name is taken.
    Exists,
    /// A scan removed the file between its creation and our lock (it looked like a leftover of
    /// a crashed writer); the caller must start again under a new name.
    Unlinked,
}

/// Creates `path` (never an existing file: `O_EXCL`), mode 0600, and takes an exclusive `flock`
/// on it.
///
/// Every file the spool writes is locked by its writer from creation until it is committed, so
/// a scan in any process can tell a file in flight (locked) from the leftover of a writer that
/// died (lockable). The one window, between `open` and `flock`, is closed by checking after the
/// lock that the file is still linked: a scan only unlinks a file while holding its lock.
pub(crate) fn create_locked(path: &Path) -> io::Result<Created> {
    let file = match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(Created::Exists),
        Err(e) => return Err(e),
    };
    // Blocking: only a scan can hold the lock of a file this fresh, and only for an unlink.
    file.lock()?;
    if file.metadata()?.nlink() == 0 {
        return Ok(Created::Unlinked);
    }
    Ok(Created::File(Locked(file)))
}

/// Writes all of `bytes` and makes them durable.
///
/// `fdatasync` suffices: the file is new, so its size (the only metadata needed to read the data
/// back) is flushed with the data; the timestamps are not worth a second journal write.
pub(crate) fn write_durably(file: &mut File, bytes: &[u8]) -> io::Result<()> {
    file.write_all(bytes)?;
    file.sync_data()
}

/// Renames `from` to `to` unless `to` exists (then `AlreadyExists`, and nothing changed).
///
/// A queue id collision is astronomically unlikely, but a plain `rename` would silently replace
/// another message's record, so the spool never uses one to commit a new message.
pub(crate) fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        match renameat2_noreplace(from, to) {
            // The file system or kernel has no RENAME_NOREPLACE.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) => {}
            other => return other,
        }
    }
    link_noreplace(from, to)
}

/// `rename_noreplace` for file systems without `RENAME_NOREPLACE`: `link` refuses an existing
/// target just the same.
fn link_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    fs::hard_link(from, to)?;
    // The link committed the rename; a failure to drop the old name leaves a spare link in
    // `tmp/`, which the next scan removes, and must not be reported as a failed commit.
    if let Err(e) = remove_if_exists(from) {
        tracing::warn!(path = %from.display(), error = %e, "could not remove a temporary name");
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn renameat2_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;

    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))
    };
    let (from, to) = (c(from)?, c(to)?);
    // SAFETY: both arguments are valid NUL-terminated strings that outlive the call; AT_FDCWD
    // makes relative paths relative to the working directory, as std's rename does.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Removes a file; one that is already gone is not an error (another process may have
/// finished the same cleanup).
pub(crate) fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// True when `path` exists (a dangling entry cannot occur: the spool makes no symlinks).
pub(crate) fn exists(path: &Path) -> io::Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Reads a whole file; `None` when it does not exist.
pub(crate) fn read_if_exists(path: &Path) -> io::Result<Option<Vec<u8>>> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::with_capacity(file.metadata().map(|m| m.len() as usize).unwrap_or(0));
    file.read_to_end(&mut bytes)?;
    Ok(Some(bytes))
}

/// Opens a directory for `fsync`.
pub(crate) fn open_dir(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(path)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_created_file_is_private_and_locked_against_a_second_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let Created::File(file) = create_locked(&path).unwrap() else {
            panic!("expected a new file");
        };
        assert_eq!(
            file.0.metadata().unwrap().permissions().mode() & 0o777,
            0o600
        );
        let other = File::open(&path).unwrap();
        assert!(matches!(
            other.try_lock(),
            Err(fs::TryLockError::WouldBlock)
        ));
        drop(file);
        assert!(other.try_lock().is_ok());
    }

    #[test]
    fn create_locked_never_opens_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"someone else's").unwrap();
        assert!(matches!(create_locked(&path).unwrap(), Created::Exists));
        assert_eq!(fs::read(&path).unwrap(), b"someone else's");
    }

    #[test]
    fn rename_noreplace_refuses_to_overwrite_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        fs::write(&a, b"new").unwrap();
        fs::write(&b, b"old").unwrap();
        let err = rename_noreplace(&a, &b).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&a).unwrap(), b"new");
        assert_eq!(fs::read(&b).unwrap(), b"old");
        fs::remove_file(&b).unwrap();
        rename_noreplace(&a, &b).unwrap();
        assert!(!exists(&a).unwrap());
        assert_eq!(fs::read(&b).unwrap(), b"new");
    }

    #[test]
    fn the_link_fallback_refuses_to_overwrite_too() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        fs::write(&a, b"new").unwrap();
        fs::write(&b, b"old").unwrap();
        let err = link_noreplace(&a, &b).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&b).unwrap(), b"old");
        fs::remove_file(&b).unwrap();
        link_noreplace(&a, &b).unwrap();
        assert!(!exists(&a).unwrap());
        assert_eq!(fs::read(&b).unwrap(), b"new");
    }

    #[test]
    fn removing_a_missing_file_is_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        remove_if_exists(&dir.path().join("gone")).unwrap();
        assert_eq!(read_if_exists(&dir.path().join("gone")).unwrap(), None);
    }
}
