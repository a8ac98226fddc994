//! Where each file of the spool lives, and what a directory entry's name means.
//!
//! ```text
//! SPOOL/queue/ID.df      the body, written once (its inode carries the claim lock)
//! SPOOL/queue/ID.qf      the record (envelope + state), replaced atomically on every change
//! SPOOL/tmp/ID.P.N.tmp   a record being written by process P; renamed into queue/ when durable
//! SPOOL/tmp/spare.P.N    a removed message's file, kept by process P to write a new one into
//! SPOOL/corrupt/         records that did not parse, with their bodies, for the administrator
//! ```
//!
//! Bodies and records share one directory so one directory `fsync` commits both.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::queue_id::QueueId;

const BODY_EXT: &str = "df";
const RECORD_EXT: &str = "qf";

/// The directories of one spool.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub(crate) root: PathBuf,
    pub(crate) queue: PathBuf,
    pub(crate) tmp: PathBuf,
    pub(crate) corrupt: PathBuf,
}

/// What a file in `queue/` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QueueFile {
    Body(QueueId),
    Record(QueueId),
}

impl Layout {
    pub(crate) fn new(root: &Path) -> Layout {
        Layout {
            root: root.to_path_buf(),
            queue: root.join("queue"),
            tmp: root.join("tmp"),
            corrupt: root.join("corrupt"),
        }
    }

    pub(crate) fn body(&self, id: &QueueId) -> PathBuf {
        self.queue.join(format!("{id}.{BODY_EXT}"))
    }

    pub(crate) fn record(&self, id: &QueueId) -> PathBuf {
        self.queue.join(format!("{id}.{RECORD_EXT}"))
    }

    /// A fresh temporary name for a record of `id`. The process id and a counter make it
    /// unique among live processes; a stale file of a dead process with the same pid is
    /// caught by `O_EXCL` and skipped by the caller.
    pub(crate) fn tmp_record(&self, id: &QueueId) -> PathBuf {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        self.tmp
            .join(format!("{id}.{}.{n}.tmp", std::process::id()))
    }

    /// Names in `corrupt/` for a quarantined message: `ID.qf`/`ID.df`, or `ID.N.qf`/`ID.N.df`
    /// when an earlier quarantine of the same id is still there.
    pub(crate) fn quarantine(&self, id: &QueueId, n: u32) -> (PathBuf, PathBuf) {
        let stem = if n == 0 {
            id.to_string()
        } else {
            format!("{id}.{n}")
        };
        (
            self.corrupt.join(format!("{stem}.{RECORD_EXT}")),
            self.corrupt.join(format!("{stem}.{BODY_EXT}")),
        )
    }
}

impl QueueFile {
    /// Reads a `queue/` entry's name; anything else (an editor's backup, a stray file) is
    /// `None` and left alone.
    pub(crate) fn parse(name: &str) -> Option<QueueFile> {
        let (stem, ext) = name.split_once('.')?;
        let id = QueueId::parse(stem).ok()?;
        // Ids parse case-insensitively, but only the canonical spelling names our file.
        if id.as_str() != stem {
            return None;
        }
        match ext {
            BODY_EXT => Some(QueueFile::Body(id)),
            RECORD_EXT => Some(QueueFile::Record(id)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_file_names_are_read_strictly() {
        let id = QueueId::parse("0PC4F8X1RZ3A7KQ2").unwrap();
        assert_eq!(
            QueueFile::parse("0PC4F8X1RZ3A7KQ2.df"),
            Some(QueueFile::Body(id))
        );
        assert_eq!(
            QueueFile::parse("0PC4F8X1RZ3A7KQ2.qf"),
            Some(QueueFile::Record(id))
        );
        for other in [
            "0PC4F8X1RZ3A7KQ2",
            "0PC4F8X1RZ3A7KQ2.qf~",
            "0PC4F8X1RZ3A7KQ2.qf.swp",
            "..qf",
            "notes.txt",
            "0pc4f8x1rz3a7kq2.qf",
        ] {
            assert_eq!(QueueFile::parse(other), None, "{other}");
        }
    }

    #[test]
    fn temporary_names_never_repeat_in_a_process() {
        let layout = Layout::new(Path::new("/spool"));
        let id = QueueId::generate();
        assert_ne!(layout.tmp_record(&id), layout.tmp_record(&id));
        assert!(layout.tmp_record(&id).starts_with("/spool/tmp"));
    }
}
