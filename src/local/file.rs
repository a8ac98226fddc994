//! `/path/file` delivery: the message appended to a file in mbox format (the same locks,
//! quoting and truncation on failure as a mailbox), on behalf of the user the target belongs
//! to.
//!
//! The append itself is done by this process, so when running as root the user's right to
//! write is checked first, as the kernel would check it for that user: an existing file must
//! be writable by the user (owner, group or other bits, with the user's groups), a new one
//! needs a directory the user may write to, and is created as the user's with mode 0600.
//! Symbolic links are never followed for the file itself.

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::address::ReversePath;

use super::error::{StoreError, StoreStep};
use super::fsutil::Owner;
use super::mbox::{self, MboxOptions};
use super::users::{User, group_list};

/// True when `user` (with `groups`) may write to something with this metadata.
fn may_write(meta: &std::fs::Metadata, user: &User, groups: &[u32]) -> bool {
    if user.uid == 0 {
        return true;
    }
    let mode = meta.permissions().mode();
    if meta.uid() == user.uid {
        return mode & 0o200 != 0;
    }
    if meta.gid() == user.gid || groups.contains(&meta.gid()) {
        return mode & 0o020 != 0;
    }
    mode & 0o002 != 0
}

fn denied(path: &Path, user: &User) -> StoreError {
    StoreError::new(
        StoreStep::Open,
        path,
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("user {} may not write to it", user.name),
        ),
    )
}

/// Appends `message` (LF line ends, trace fields added) to `path` on behalf of `user`.
/// Blocking.
pub fn deliver(
    path: &Path,
    sender: &ReversePath,
    message: &[u8],
    user: &User,
    options: &MboxOptions,
) -> Result<(), StoreError> {
    let owner = Owner::for_user(user.uid, user.gid);
    if owner.is_some() {
        let groups = group_list(user).map_err(|e| StoreError::new(StoreStep::Open, path, e))?;
        match std::fs::symlink_metadata(path) {
            Ok(meta) => {
                if !may_write(&meta, user, &groups) {
                    return Err(denied(path, user));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let dir = path.parent().unwrap_or(Path::new("/"));
                let meta = std::fs::metadata(dir)
                    .map_err(|e| StoreError::new(StoreStep::Create, dir, e))?;
                if !may_write(&meta, user, &groups) {
                    return Err(denied(dir, user));
                }
            }
            Err(e) => return Err(StoreError::new(StoreStep::Open, path, e)),
        }
    }
    // An existing file may belong to someone else who lets the user write (a shared log):
    // ownership is not checked for it, the write permission above is.
    let exists = path.exists();
    mbox::deliver(
        path,
        sender,
        message,
        if exists { None } else { owner },
        options,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_permission_is_judged_for_the_user_not_the_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"").unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        let stranger = User::new("stranger", 54321, 54321, "/");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let meta600 = std::fs::metadata(&path).unwrap();
        assert!(!may_write(&meta600, &stranger, &[]));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(may_write(
            &std::fs::metadata(&path).unwrap(),
            &stranger,
            &[]
        ));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660)).unwrap();
        let m = std::fs::metadata(&path).unwrap();
        assert!(may_write(&m, &stranger, &[m.gid()]));
        let _ = meta;
    }
}
