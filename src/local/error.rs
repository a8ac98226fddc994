//! Why a message could not be stored in a mailbox. Every such failure is temporary: a full
//! disk, a used-up quota, a lock held too long or a wrong permission can all be fixed, and the
//! message waits in the queue until they are (it is never bounced for them).

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::status::{Diagnostic, EnhancedStatus, Severity};

/// What the delivery was doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreStep {
    /// Creating a mailbox directory or file.
    Create,
    /// Opening the mailbox.
    Open,
    /// Taking a lock.
    Lock,
    /// Writing the message.
    Write,
    /// Flushing it to disk.
    Sync,
    /// Moving it into place.
    Rename,
}

impl fmt::Display for StoreStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StoreStep::Create => "cannot create",
            StoreStep::Open => "cannot open",
            StoreStep::Lock => "cannot lock",
            StoreStep::Write => "cannot write to",
            StoreStep::Sync => "cannot sync",
            StoreStep::Rename => "cannot move the message into",
        })
    }
}

/// A mailbox that did not take the message.
#[derive(Debug, thiserror::Error)]
#[error("{step} {}: {source}{}", path.display(), hint(source))]
pub struct StoreError {
    /// What failed.
    pub step: StoreStep,
    /// The file or directory concerned.
    pub path: PathBuf,
    /// The operating system's error.
    pub source: io::Error,
}

fn hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::ENOSPC) => " (the file system is full)",
        Some(libc::EDQUOT) => " (the mailbox owner's disk quota is used up)",
        Some(libc::EFBIG) => " (the mailbox has reached its size limit)",
        Some(libc::EROFS) => " (the file system is mounted read-only)",
        Some(libc::EACCES) | Some(libc::EPERM) => {
            " (check the owner and mode of the mailbox and its directory)"
        }
        _ => "",
    }
}

impl StoreError {
    /// A failure of `step` on `path`.
    pub fn new(step: StoreStep, path: impl Into<PathBuf>, source: io::Error) -> StoreError {
        StoreError {
            step,
            path: path.into(),
            source,
        }
    }

    /// Always temporary (see the module documentation).
    pub fn severity(&self) -> Severity {
        Severity::Temporary
    }

    /// RFC 3463: 4.3.1 for a full file system, 4.2.2 for a full mailbox (quota, size
    /// limit), 4.2.0 for everything else about the mailbox.
    pub fn status(&self) -> EnhancedStatus {
        match self.source.raw_os_error() {
            Some(libc::ENOSPC) => EnhancedStatus::new(4, 3, 1),
            Some(libc::EDQUOT) | Some(libc::EFBIG) => EnhancedStatus::new(4, 2, 2),
            _ => EnhancedStatus::new(4, 2, 0),
        }
    }

    /// The deferral reported for the recipient.
    pub fn diagnostic(&self) -> Diagnostic {
        Diagnostic::local(self.status(), self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_and_a_full_mailbox_have_their_own_status() {
        let e = |errno| {
            StoreError::new(
                StoreStep::Write,
                "/var/mail/bob",
                io::Error::from_raw_os_error(errno),
            )
        };
        assert_eq!(e(libc::ENOSPC).status().to_string(), "4.3.1");
        assert_eq!(e(libc::EDQUOT).status().to_string(), "4.2.2");
        assert_eq!(e(libc::EACCES).status().to_string(), "4.2.0");
        assert!(
            e(libc::ENOSPC)
                .to_string()
                .starts_with("cannot write to /var/mail/bob: "),
            "{}",
            e(libc::ENOSPC)
        );
        assert!(
            e(libc::ENOSPC)
                .to_string()
                .ends_with("(the file system is full)")
        );
    }
}
