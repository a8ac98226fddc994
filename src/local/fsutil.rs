//! The file system calls mailbox delivery needs beyond `std`: directories opened without
//! following symbolic links, files created relative to them, ownership checks and changes.
//!
//! Delivery usually runs as root and writes into directories users control, so every name is
//! resolved relative to a directory descriptor that was checked (owner, type) and no final
//! component is followed if it is a symbolic link: a user who points `~/Maildir/new` at
//! `/etc` gets a deferral, not a file in `/etc`.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Who a delivered file belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// The user id.
    pub uid: u32,
    /// The group id.
    pub gid: u32,
}

impl Owner {
    /// The owner to give new files: the user when running as root, else `None` (files are the
    /// running user's, the only owner an unprivileged process can give).
    pub fn for_user(uid: u32, gid: u32) -> Option<Owner> {
        // SAFETY: geteuid has no preconditions.
        (unsafe { libc::geteuid() } == 0).then_some(Owner { uid, gid })
    }
}

pub(crate) fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Opens a directory, refusing a symbolic link as its last component.
pub(crate) fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let c = cstr(path)?;
    // SAFETY: `c` is a valid C string for the duration of the call.
    let fd = check(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: `fd` was just returned by open and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens `name` inside `dir` as a directory, not following a symbolic link.
pub(crate) fn open_dir_at(dir: &OwnedFd, name: &str) -> io::Result<OwnedFd> {
    let c = cstr(Path::new(name))?;
    // SAFETY: valid descriptor and C string for the duration of the call.
    let fd = check(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: a fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Creates `name` inside `dir` with mode 0600, failing if it exists; never follows a link.
pub(crate) fn create_at(dir: &OwnedFd, name: &str) -> io::Result<File> {
    let c = cstr(Path::new(name))?;
    // SAFETY: valid descriptor and C string for the duration of the call.
    let fd = check(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o600 as libc::c_uint,
        )
    })?;
    // SAFETY: a fresh descriptor, now owned by the File.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Removes `name` inside `dir`; a name already gone is not an error.
pub(crate) fn unlink_at(dir: &OwnedFd, name: &str) -> io::Result<()> {
    let c = cstr(Path::new(name))?;
    // SAFETY: valid descriptor and C string.
    match check(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) }) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other.map(|_| ()),
    }
}

/// Moves `name` from `from` to `to` (same name), refusing to replace an existing file.
pub(crate) fn move_noreplace(from: &OwnedFd, to: &OwnedFd, name: &str) -> io::Result<()> {
    let c = cstr(Path::new(name))?;
    // SAFETY: valid descriptors and C string.
    let rc = unsafe {
        libc::renameat2(
            from.as_raw_fd(),
            c.as_ptr(),
            to.as_raw_fd(),
            c.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if !matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) {
        return Err(e);
    }
    // No RENAME_NOREPLACE here: link refuses an existing name just the same (the Maildir
    // specification's own method).
    // SAFETY: valid descriptors and C string.
    check(unsafe { libc::linkat(from.as_raw_fd(), c.as_ptr(), to.as_raw_fd(), c.as_ptr(), 0) })?;
    unlink_at(from, name)
}

/// `fsync` on a directory, so the names created or moved in it survive a power cut.
pub(crate) fn sync_dir(dir: &OwnedFd) -> io::Result<()> {
    // SAFETY: valid descriptor.
    check(unsafe { libc::fsync(dir.as_raw_fd()) }).map(|_| ())
}

/// Changes the owner of an open file or directory.
pub(crate) fn fchown(fd: &impl AsRawFd, owner: Owner) -> io::Result<()> {
    // SAFETY: valid descriptor.
    check(unsafe { libc::fchown(fd.as_raw_fd(), owner.uid, owner.gid) }).map(|_| ())
}

/// The metadata of an open descriptor.
pub(crate) fn fstat(fd: &OwnedFd) -> io::Result<std::fs::Metadata> {
    // Borrow the descriptor as a File without taking ownership of it.
    // SAFETY: the File never closes the descriptor (ManuallyDrop) and lives shorter than `fd`.
    let file = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(fd.as_raw_fd()) });
    file.metadata()
}

/// Refuses a directory (when delivering as root) that does not belong to `owner` or root:
/// whoever owns a directory decides where its names point.
pub(crate) fn check_owner(
    meta: &std::fs::Metadata,
    owner: Option<Owner>,
    path: &Path,
) -> io::Result<()> {
    if let Some(o) = owner
        && meta.uid() != o.uid
        && meta.uid() != 0
    {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} belongs to uid {}, not to the mailbox owner (uid {})",
                path.display(),
                meta.uid(),
                o.uid
            ),
        ));
    }
    Ok(())
}

/// Creates a directory with `mode` if it is missing (an existing one is fine) and gives it to
/// `owner` when it was created here.
pub(crate) fn ensure_dir(path: &Path, mode: u32, owner: Option<Owner>) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => {
            if let Some(o) = owner {
                let fd = open_dir(path)?;
                fchown(&fd, o)?;
            }
            if let Some(parent) = path.parent() {
                sync_dir(&open_dir(parent)?)?;
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn files_are_created_once_and_moved_without_replacing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("a")).unwrap();
        std::fs::create_dir(dir.path().join("b")).unwrap();
        let a = open_dir(&dir.path().join("a")).unwrap();
        let b = open_dir(&dir.path().join("b")).unwrap();
        create_at(&a, "m").unwrap().write_all(b"x").unwrap();
        assert_eq!(
            create_at(&a, "m").unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        create_at(&b, "m").unwrap();
        assert_eq!(
            move_noreplace(&a, &b, "m").unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        unlink_at(&b, "m").unwrap();
        move_noreplace(&a, &b, "m").unwrap();
        assert_eq!(std::fs::read(dir.path().join("b/m")).unwrap(), b"x");
        sync_dir(&b).unwrap();
    }

    #[test]
    fn symbolic_links_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("real")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("real"), dir.path().join("link")).unwrap();
        assert!(open_dir(&dir.path().join("link")).is_err());
        let d = open_dir(dir.path()).unwrap();
        assert!(open_dir_at(&d, "link").is_err());
        assert!(open_dir_at(&d, "real").is_ok());
    }
}
