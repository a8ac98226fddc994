//! The file operations the spool is built from, each with the durability and locking rule it
//! needs. Everything here blocks; callers run it on a blocking thread.

use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
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

/// Writes `parts` one after another from the start of `file` (one `writev`), cuts the file to
/// their total length when it was longer (`old_len`: a recycled file), and, when `sync` is
/// set, makes it durable.
///
/// `fdatasync` suffices: the size is the only metadata needed to read the data back, and it
/// is flushed with the data. A recycled file no longer than the new contents is not
/// truncated: on ext4 even a truncate to the same size frees preallocated blocks and dirties
/// the inode, which then costs the `fdatasync` a synchronous inode write (benches/README.md).
pub(crate) fn write_parts(
    file: &File,
    parts: &[&[u8]],
    old_len: u64,
    sync: bool,
) -> io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = parts.iter().map(|part| IoSlice::new(part)).collect();
    let len: u64 = parts.iter().map(|part| part.len() as u64).sum();
    let mut rest = &mut slices[..];
    let mut writer = file;
    while !rest.is_empty() {
        match writer.write_vectored(rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    if old_len > len {
        file.set_len(len)?;
    }
    if sync {
        file.sync_data()?;
    }
    Ok(())
}

/// Reads up to `len` octets at `offset`; fewer only at the end of the file.
pub(crate) fn read_at_most(file: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

/// True when `file` is still the one linked at `path`: not removed (nor removed and
/// recycled as another message's file) since it was opened.
pub(crate) fn still_at(file: &File, path: &Path) -> io::Result<bool> {
    let open = file.metadata()?;
    match fs::symlink_metadata(path) {
        Ok(named) => Ok(named.ino() == open.ino() && named.dev() == open.dev()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// A write lock on the first octet of a file (an open-file-description lock, which does not
/// interact with the `flock` a claim holds), released when dropped.
///
/// State updates hold it while they write, and a recycled file is rewritten only under it,
/// so an update that opened a message's file just before the message was removed can never
/// write into the next message that reuses the file: it waits, then finds another message's
/// id in the header.
pub(crate) struct RangeLock<'a>(&'a File);

impl<'a> RangeLock<'a> {
    /// Waits for the lock.
    pub(crate) fn wait(file: &'a File) -> io::Result<RangeLock<'a>> {
        ofd_lock(file, libc::F_WRLCK, true)?;
        Ok(RangeLock(file))
    }
}

impl Drop for RangeLock<'_> {
    fn drop(&mut self) {
        let _ = ofd_lock(self.0, libc::F_UNLCK, false);
    }
}

fn ofd_lock(file: &File, kind: libc::c_int, wait: bool) -> io::Result<()> {
    // SAFETY: an all-zero `flock` is a valid value of this plain C struct.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = 0;
    lock.l_len = 1;
    let cmd = if wait {
        libc::F_OFD_SETLKW
    } else {
        libc::F_OFD_SETLK
    };
    loop {
        // SAFETY: the descriptor is open for the borrow's lifetime and `lock` is a valid
        // `flock` the call only reads.
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), cmd, &mut lock) };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Flushes every dirty page and inode of the file system that holds `file` (`syncfs(2)`),
/// and reports a writeback error any of them had.
pub(crate) fn syncfs(file: &File) -> io::Result<()> {
    // SAFETY: the descriptor is open for the borrow's lifetime.
    if unsafe { libc::syncfs(file.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// True when `dir` is the root of a file system of its own (a mount point): its device
/// differs from its parent's. (`/` is not counted: a spool there shares it with everything.)
pub(crate) fn is_mount_point(dir: &Path) -> io::Result<bool> {
    let here = fs::metadata(dir)?;
    let parent = fs::metadata(dir.join(".."))?;
    Ok(here.dev() != parent.dev())
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
