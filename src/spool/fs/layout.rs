//! Where each file of the spool lives, and what a directory entry's name means.
//!
//! ```text
//! SPOOL/queue/ID          a message (format 3: envelope, two state slots, body; see format.rs)
//! SPOOL/queue/ID.qf|.df   a message of format 1 (record and body), converted at open
//! SPOOL/tmp/ID.P.N.tmp    a message file being written by process P; renamed into queue/
//! SPOOL/tmp/spare.P.N     a removed message's file, kept by process P to write a new one into
//! SPOOL/corrupt/ID[.N]    message files that did not read, for the administrator
//! SPOOL/corrupt/ID[.N].qf|.df   the same for format 1
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::queue_id::QueueId;

const V1_BODY_EXT: &str = "df";
const V1_RECORD_EXT: &str = "qf";

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
    /// A message file (format 2 or 3).
    Message(QueueId),
    /// A format-1 record.
    V1Record(QueueId),
    /// A format-1 body.
    V1Body(QueueId),
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

    pub(crate) fn message(&self, id: &QueueId) -> PathBuf {
        self.queue.join(id.as_str())
    }

    pub(crate) fn v1_body(&self, id: &QueueId) -> PathBuf {
        self.queue.join(format!("{id}.{V1_BODY_EXT}"))
    }

    pub(crate) fn v1_record(&self, id: &QueueId) -> PathBuf {
        self.queue.join(format!("{id}.{V1_RECORD_EXT}"))
    }

    /// A fresh temporary name for a message file of `id`. The process id and a counter make
    /// it unique among live processes; a stale file of a dead process with the same pid is
    /// caught by `O_EXCL` and skipped by the caller.
    pub(crate) fn tmp_message(&self, id: &QueueId) -> PathBuf {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        self.tmp
            .join(format!("{id}.{}.{n}.tmp", std::process::id()))
    }

    /// The name in `corrupt/` for a quarantined message file: `ID`, or `ID.N` when an earlier
    /// quarantine of the same id is still there.
    pub(crate) fn quarantine(&self, id: &QueueId, n: u32) -> PathBuf {
        self.corrupt.join(stem(id, n))
    }

    /// Names in `corrupt/` for a quarantined format-1 message: `ID.qf`/`ID.df`, or
    /// `ID.N.qf`/`ID.N.df`.
    pub(crate) fn quarantine_v1(&self, id: &QueueId, n: u32) -> (PathBuf, PathBuf) {
        let stem = stem(id, n);
        (
            self.corrupt.join(format!("{stem}.{V1_RECORD_EXT}")),
            self.corrupt.join(format!("{stem}.{V1_BODY_EXT}")),
        )
    }
}

fn stem(id: &QueueId, n: u32) -> String {
    if n == 0 {
        id.to_string()
    } else {
        format!("{id}.{n}")
    }
}

impl QueueFile {
    /// Reads a `queue/` entry's name; anything else (an editor's backup, a stray file) is
    /// `None` and left alone.
    pub(crate) fn parse(name: &str) -> Option<QueueFile> {
        let (stem, ext) = match name.split_once('.') {
            Some((stem, ext)) => (stem, Some(ext)),
            None => (name, None),
        };
        let id = QueueId::parse(stem).ok()?;
        // Ids parse case-insensitively, but only the canonical spelling names our file.
        if id.as_str() != stem {
            return None;
        }
        match ext {
            None => Some(QueueFile::Message(id)),
            Some(V1_BODY_EXT) => Some(QueueFile::V1Body(id)),
            Some(V1_RECORD_EXT) => Some(QueueFile::V1Record(id)),
            Some(_) => None,
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
            QueueFile::parse("0PC4F8X1RZ3A7KQ2"),
            Some(QueueFile::Message(id))
        );
        assert_eq!(
            QueueFile::parse("0PC4F8X1RZ3A7KQ2.df"),
            Some(QueueFile::V1Body(id))
        );
        assert_eq!(
            QueueFile::parse("0PC4F8X1RZ3A7KQ2.qf"),
            Some(QueueFile::V1Record(id))
        );
        for other in [
            "0PC4F8X1RZ3A7KQ2.qf~",
            "0PC4F8X1RZ3A7KQ2.qf.swp",
            "0PC4F8X1RZ3A7KQ2~",
            "..qf",
            "notes.txt",
            "0pc4f8x1rz3a7kq2",
            "0PC4F8X1RZ3A7KQ",
        ] {
            assert_eq!(QueueFile::parse(other), None, "{other}");
        }
    }

    #[test]
    fn temporary_names_never_repeat_in_a_process() {
        let layout = Layout::new(Path::new("/spool"));
        let id = QueueId::generate();
        assert_ne!(layout.tmp_message(&id), layout.tmp_message(&id));
        assert!(layout.tmp_message(&id).starts_with("/spool/tmp"));
    }
}
