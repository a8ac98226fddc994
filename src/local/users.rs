//! Local users: who exists, their uid, gid and home directory.
//!
//! The default source is the system's password database through `getpwnam_r` (so NSS sources
//! such as LDAP count, as they do for sendmail and Postfix). Tests and embedders that keep their
//! own users hand the transport a [`StaticUsers`] instead.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::status::Severity;

/// A local account that can receive mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The login name.
    pub name: String,
    /// The numeric user id files are owned by.
    pub uid: u32,
    /// The primary group id.
    pub gid: u32,
    /// The home directory (`~` in mailbox paths).
    pub home: PathBuf,
    /// The login shell (set for piped commands as `$SHELL`).
    pub shell: PathBuf,
    /// Supplementary groups, for commands run as this user. `None`: look them up when needed.
    pub groups: Option<Vec<u32>>,
}

impl User {
    /// A user with no supplementary groups and `/bin/sh` as shell.
    pub fn new(name: impl Into<String>, uid: u32, gid: u32, home: impl Into<PathBuf>) -> User {
        User {
            name: name.into(),
            uid,
            gid,
            home: home.into(),
            shell: PathBuf::from("/bin/sh"),
            groups: Some(Vec::new()),
        }
    }
}

/// Why a user could not be looked up (the user may well exist).
#[derive(Debug, thiserror::Error)]
pub enum UserDbError {
    /// The password database failed (an NSS source such as LDAP did not answer).
    #[error("cannot look up user {name:?} in the password database: {source}")]
    Lookup {
        /// The name looked up.
        name: String,
        /// The error `getpwnam_r` returned.
        source: io::Error,
    },
}

impl UserDbError {
    /// Always temporary: an unanswered lookup says nothing about whether the user exists.
    pub fn severity(&self) -> Severity {
        Severity::Temporary
    }
}

/// Where users are looked up.
pub trait UserDb: Send + Sync + fmt::Debug {
    /// The user named `name`, `Ok(None)` when there is none.
    fn lookup(&self, name: &str) -> Result<Option<User>, UserDbError>;

    /// The user with uid `uid` (the owner of an include file), `Ok(None)` when there is none.
    /// The default knows nobody by uid.
    fn lookup_uid(&self, uid: u32) -> Result<Option<User>, UserDbError> {
        let _ = uid;
        Ok(None)
    }
}

/// The system password database (`getpwnam_r`, so `/etc/passwd` and any NSS source).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemUsers;

impl UserDb for SystemUsers {
    fn lookup(&self, name: &str) -> Result<Option<User>, UserDbError> {
        getpwnam(name).map_err(|source| UserDbError::Lookup {
            name: name.to_string(),
            source,
        })
    }

    fn lookup_uid(&self, uid: u32) -> Result<Option<User>, UserDbError> {
        getpw(Key::Uid(uid)).map_err(|source| UserDbError::Lookup {
            name: format!("uid {uid}"),
            source,
        })
    }
}

#[derive(Clone, Copy)]
enum Key<'a> {
    Name(&'a CString),
    Uid(u32),
}

fn getpwnam(name: &str) -> io::Result<Option<User>> {
    // A name with a NUL cannot be in the database.
    let Ok(c_name) = CString::new(name) else {
        return Ok(None);
    };
    getpw(Key::Name(&c_name))
}

/// The largest buffer `getpwnam_r` is given: entries longer than this are not real users.
const MAX_PW_BUFFER: usize = 1 << 20;

fn getpw(key: Key<'_>) -> io::Result<Option<User>> {
    let mut size = 1024;
    loop {
        let mut buf = vec![0u8; size];
        // SAFETY: all-zero is a valid `passwd` (null pointers, zero ids); it is only read after
        // getpwnam_r filled it.
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call; `buf` outlives every use of `pw`.
        let rc = unsafe {
            match key {
                Key::Name(c_name) => libc::getpwnam_r(
                    c_name.as_ptr(),
                    &mut pw,
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    &mut result,
                ),
                Key::Uid(uid) => libc::getpwuid_r(
                    uid,
                    &mut pw,
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    &mut result,
                ),
            }
        };
        if rc == libc::ERANGE && size < MAX_PW_BUFFER {
            size *= 4;
            continue;
        }
        if rc != 0 {
            // glibc reports "not found" as 0 with a null result, but some NSS modules return
            // these codes for it (getpwnam_r(3), NOTES).
            if matches!(rc, libc::ENOENT | libc::ESRCH | libc::EBADF | libc::EPERM) {
                return Ok(None);
            }
            return Err(io::Error::from_raw_os_error(rc));
        }
        if result.is_null() {
            return Ok(None);
        }
        // SAFETY: on success the string fields point into `buf`, NUL-terminated.
        let text = |p: *const libc::c_char| -> String {
            if p.is_null() {
                String::new()
            } else {
                unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
            }
        };
        return Ok(Some(User {
            name: text(pw.pw_name),
            uid: pw.pw_uid,
            gid: pw.pw_gid,
            home: PathBuf::from(text(pw.pw_dir)),
            shell: PathBuf::from(text(pw.pw_shell)),
            groups: None,
        }));
    }
}

/// The supplementary groups of `user` (`getgrouplist`), for a command run as that user.
pub(crate) fn group_list(user: &User) -> io::Result<Vec<u32>> {
    if let Some(g) = &user.groups {
        return Ok(g.clone());
    }
    let c_name = CString::new(user.name.as_str())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "user name holds a NUL"))?;
    let mut n: libc::c_int = 32;
    loop {
        let mut groups = vec![0 as libc::gid_t; n as usize];
        let mut count = n;
        // SAFETY: `groups` has room for `count` entries; getgrouplist writes at most that many.
        let rc = unsafe {
            libc::getgrouplist(c_name.as_ptr(), user.gid, groups.as_mut_ptr(), &mut count)
        };
        if rc >= 0 {
            groups.truncate(count.max(0) as usize);
            return Ok(groups);
        }
        if count <= n || count > 65536 {
            return Err(io::Error::other("getgrouplist failed"));
        }
        n = count;
    }
}

/// Users given in code: for tests, and for embedders whose mail users are not system accounts.
///
/// ```
/// use postrider::local::{StaticUsers, User, UserDb};
/// let users = StaticUsers::new([User::new("bbb", 1001, 1001, "/home/bbb")]);
/// assert_eq!(users.lookup("bbb")?.unwrap().uid, 1001);
/// assert!(users.lookup("nobody-here")?.is_none());
/// # Ok::<(), postrider::local::UserDbError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct StaticUsers {
    users: HashMap<String, User>,
}

impl StaticUsers {
    /// These users and no others.
    pub fn new(users: impl IntoIterator<Item = User>) -> StaticUsers {
        StaticUsers {
            users: users.into_iter().map(|u| (u.name.clone(), u)).collect(),
        }
    }

    /// Adds or replaces a user.
    pub fn insert(&mut self, user: User) {
        self.users.insert(user.name.clone(), user);
    }
}

impl UserDb for StaticUsers {
    fn lookup(&self, name: &str) -> Result<Option<User>, UserDbError> {
        Ok(self.users.get(name).cloned())
    }

    fn lookup_uid(&self, uid: u32) -> Result<Option<User>, UserDbError> {
        Ok(self.users.values().find(|u| u.uid == uid).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_in_the_system_password_database() {
        let root = SystemUsers.lookup("root").unwrap().expect("root exists");
        assert_eq!(root.uid, 0);
        assert_eq!(root.name, "root");
        assert!(root.home.is_absolute());
    }

    #[test]
    fn an_unknown_or_impossible_name_is_none_not_an_error() {
        assert!(
            SystemUsers
                .lookup("no-such-user-postrider-test")
                .unwrap()
                .is_none()
        );
        assert!(SystemUsers.lookup("nul\0inside").unwrap().is_none());
        assert!(SystemUsers.lookup("").unwrap().is_none());
    }

    #[test]
    fn root_is_found_by_uid_too() {
        assert_eq!(SystemUsers.lookup_uid(0).unwrap().unwrap().name, "root");
    }

    #[test]
    fn root_belongs_to_its_primary_group() {
        let root = SystemUsers.lookup("root").unwrap().unwrap();
        assert!(group_list(&root).unwrap().contains(&root.gid));
    }
}
