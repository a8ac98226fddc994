//! Listing the spool, quarantining unreadable message files and cleaning up after dead
//! writers.
//!
//! A scan may run while other processes insert, deliver and remove. It never deletes anything
//! that a live writer may still commit, and never deletes what an administrator may need:
//!
//! - A file in `queue/` is whole for every process (it is renamed there once written), so no
//!   live writer leaves anything there to clean up. A power loss can: an insert names its file
//!   before flushing it, and returns the id only after. So an **empty** file there is such an
//!   insert's, never acknowledged, whose data never reached the disk: it is deleted. A file
//!   whose checksums fail may be that too, or damage: it is quarantined like any unreadable
//!   file (a torn body is found when the body is read, see `FsSpool::body`).
//! - A file in `tmp/` is a message being written (its writer holds its lock until the rename),
//!   a spare (unlocked), or the leftover of a writer that died (unlocked). It is deleted only
//!   while the scan holds its lock; a writer that created it just before finds it unlinked
//!   once it gets the lock, and starts again under a new name.
//! - A message file that does not parse, or names another message, is moved to `corrupt/`,
//!   reported, and logged; nothing is deleted.
//!
//! A spool opened read-only is only listed: unreadable files are reported where they lie, and
//! format-1 messages (which a writable spool converts first) are read in place.

use std::fs::{self, File, TryLockError};
use std::io;
use std::path::{Path, PathBuf};

use super::files::{self, Locked};
use super::group_commit::GroupSync;
use super::layout::{Layout, QueueFile};
use super::message::{self, ReadError};
use super::v1;
use crate::queue_id::QueueId;
use crate::spool::format::FormatError;
use crate::spool::{Quarantined, QueuedMessage, ScanReport, SpoolError};

/// What one message file turned out to be.
pub(crate) enum Verdict {
    Message(QueuedMessage),
    /// Removed by another process since the listing.
    Gone,
    /// Zero octets: an insert cut short by a power loss.
    Empty,
    Unreadable(String),
}

/// Scans the spool, handing each message to `each` oldest first (the report's `messages` is
/// left empty); `sync` is the spool's group commit, `None` for a read-only spool (which
/// changes nothing on disk).
pub(crate) fn scan(
    layout: &Layout,
    sync: Option<&GroupSync>,
    each: &mut dyn FnMut(QueuedMessage),
) -> Result<ScanReport, SpoolError> {
    let mut report = ScanReport::default();
    let mut ids = Vec::new();
    let mut v1_ids = Vec::new();
    for name in list(&layout.queue)? {
        match name.to_str().and_then(QueueFile::parse) {
            Some(QueueFile::Message(id)) => ids.push(id),
            Some(QueueFile::V1Record(id)) => v1_ids.push(id),
            // A writable spool converted (or deleted as orphans) every format-1 file it could
            // lock; what is left is held by a live process of an older release.
            Some(QueueFile::V1Body(_)) => {}
            None => tracing::warn!(
                file = %layout.queue.join(&name).display(),
                "ignoring a file in the spool queue that is not a message"
            ),
        }
    }
    // Ids sort by arrival: oldest first. A read-only spool's format-1 messages, read last,
    // are merged into that order, so with any of them everything is collected first.
    ids.sort_unstable();
    let merge_v1 = sync.is_none() && !v1_ids.is_empty();
    let mut merged = Vec::new();
    let mut found = |m: QueuedMessage| {
        if merge_v1 {
            merged.push(m);
        } else {
            each(m);
        }
    };
    for id in &ids {
        match inspect(layout, id)? {
            Verdict::Message(m) => found(m),
            Verdict::Gone => {}
            Verdict::Empty if sync.is_some() => {
                report.orphans_removed += remove_empty(layout, id);
            }
            Verdict::Empty => {
                let reason = FormatError::Empty.to_string();
                report
                    .quarantined
                    .push(left_in_place(layout.message(id), reason));
            }
            Verdict::Unreadable(reason) => {
                let path = layout.message(id);
                match sync {
                    Some(_) => {
                        if let Some(q) = quarantine(layout, id, reason) {
                            report.quarantined.push(q);
                        }
                    }
                    None => report.quarantined.push(left_in_place(path, reason)),
                }
            }
        }
    }
    if merge_v1 {
        v1_ids.sort_unstable();
        for id in &v1_ids {
            match v1::inspect(layout, id)? {
                v1::Verdict::Message(r) => merged.push(QueuedMessage {
                    id: r.id,
                    envelope: r.envelope,
                    state: r.state,
                }),
                v1::Verdict::Gone => {}
                v1::Verdict::Unreadable(reason) => report
                    .quarantined
                    .push(left_in_place(layout.v1_record(id), reason)),
            }
        }
        merged.sort_by_key(|m| m.id);
        merged.into_iter().for_each(each);
    }
    let Some(sync) = sync else {
        return Ok(report);
    };
    report.orphans_removed += remove_orphan_tmp_files(layout)?;
    if !report.quarantined.is_empty() {
        sync_quarantine(layout, sync);
    }
    Ok(report)
}

fn left_in_place(path: PathBuf, reason: String) -> Quarantined {
    Quarantined {
        reason: format!("{reason} (left in place: the spool is opened read-only)"),
        path,
    }
}

/// Makes moves to `corrupt/` durable, so a crash cannot bring a quarantined file back.
pub(crate) fn sync_quarantine(layout: &Layout, sync: &GroupSync) {
    let synced = files::open_dir(&layout.corrupt)
        .and_then(|d| d.sync_all())
        .and_then(|()| sync.sync());
    if let Err(e) = synced {
        tracing::warn!(error = %e, "could not make the quarantine of spool files durable");
    }
}

/// The names in a directory.
pub(crate) fn list(dir: &Path) -> Result<Vec<std::ffi::OsString>, SpoolError> {
    let entries = fs::read_dir(dir).map_err(|e| SpoolError::io("list spool", dir, e))?;
    entries
        .map(|e| {
            e.map(|e| e.file_name())
                .map_err(|e| SpoolError::io("list spool", dir, e))
        })
        .collect()
}

/// Reads and checks one message file.
pub(crate) fn inspect(layout: &Layout, id: &QueueId) -> Result<Verdict, SpoolError> {
    let path = layout.message(id);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Verdict::Gone),
        Err(e) => return Err(SpoolError::io("open message file", &path, e)),
    };
    let gone = |file: &File| -> Result<bool, SpoolError> {
        files::still_at(file, &path)
            .map(|here| !here)
            .map_err(|e| SpoolError::io("inspect message file", &path, e))
    };
    let meta = match message::read_meta(&file) {
        Ok(meta) => meta,
        // What was read may be a recycled file's new contents if the message was removed
        // meanwhile.
        Err(_) if gone(&file)? => return Ok(Verdict::Gone),
        Err(ReadError::Io(e)) => return Err(SpoolError::io("read message file", &path, e)),
        Err(ReadError::Format(FormatError::Empty)) => return Ok(Verdict::Empty),
        Err(ReadError::Format(e)) => return Ok(Verdict::Unreadable(e.to_string())),
    };
    if meta.header.id != *id {
        if gone(&file)? {
            return Ok(Verdict::Gone);
        }
        return Ok(Verdict::Unreadable(format!(
            "it names message {} but is stored as {id}",
            meta.header.id
        )));
    }
    Ok(Verdict::Message(QueuedMessage {
        id: *id,
        envelope: meta.envelope,
        state: meta.state,
    }))
}

/// Deletes an empty message file; 1 if it did. Its deletion becomes durable with the next
/// flush of `queue/` (an insert's, a removal's or a quarantine's): a power loss before then
/// brings the empty file back, to be deleted again.
pub(crate) fn remove_empty(layout: &Layout, id: &QueueId) -> usize {
    let path = layout.message(id);
    match fs::remove_file(&path) {
        Ok(()) => {
            tracing::warn!(file = %path.display(),
                "deleted an empty spool message file: an insert cut short by a power loss, \
                 before its data reached the disk (its sender was never told it was accepted)");
            1
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e,
                "could not delete an empty spool message file");
            0
        }
    }
}

/// Moves a message file to `corrupt/`. `None` when it vanished meanwhile.
pub(crate) fn quarantine(layout: &Layout, id: &QueueId, reason: String) -> Option<Quarantined> {
    let path = layout.message(id);
    for n in 0..1000 {
        let to = layout.quarantine(id, n);
        match files::rename_noreplace(&path, &to) {
            Ok(()) => {
                tracing::warn!(file = %to.display(), %reason,
                    "quarantined an unreadable spool message file; its message is not queued");
                return Some(Quarantined { path: to, reason });
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(file = %path.display(), %reason, error = %e,
                    "unreadable spool message file could not be moved to quarantine; left in place");
                return Some(Quarantined {
                    reason: format!("{reason} (left in place: moving it failed: {e})"),
                    path,
                });
            }
        }
    }
    tracing::warn!(file = %path.display(), %reason,
        "unreadable spool message file left in place: the quarantine has no free name for it");
    Some(Quarantined {
        reason: format!("{reason} (left in place: no free name in corrupt/)"),
        path,
    })
}

/// Removes every file in `tmp/` that no writer holds. Returns how many it removed (spares,
/// which are not leftovers of failed writes, are removed without being counted).
fn remove_orphan_tmp_files(layout: &Layout) -> Result<usize, SpoolError> {
    let mut removed = 0;
    for name in list(&layout.tmp)? {
        let path: PathBuf = layout.tmp.join(&name);
        let result = lock_unheld(&path).and_then(|file| match file {
            Some(f) if f.0.metadata()?.is_file() => match fs::remove_file(&path) {
                Ok(()) => Ok(true),
                // Committed by its writer between our open and our lock.
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(e),
            },
            _ => Ok(false),
        });
        match result {
            Ok(true)
                if name
                    .to_string_lossy()
                    .starts_with(super::spares::SPARE_PREFIX) => {}
            Ok(true) => removed += 1,
            Ok(false) => {}
            Err(e) => tracing::warn!(file = %path.display(), error = %e,
                "could not remove a temporary spool file"),
        }
    }
    Ok(removed)
}

/// Opens `path` and takes its lock if nobody holds it. `None` when it is gone or held.
pub(crate) fn lock_unheld(path: &Path) -> io::Result<Option<Locked>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    match file.try_lock() {
        Ok(()) => Ok(Some(Locked(file))),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(e),
    }
}
