//! Listing the spool, quarantining unreadable records and cleaning up after dead writers.
//!
//! A scan may run while other processes insert, deliver and remove. It never deletes anything
//! that a live writer may still commit, and never deletes what an administrator may need:
//!
//! - A body without a record is either an insert in flight (its writer holds the body's lock
//!   until the record is durable), a claimed message being removed, or the leftover of a writer
//!   that died. The scan removes it only while holding its lock and after checking again that
//!   no record exists; a writer that created the file just before the scan locked it finds the
//!   file unlinked once it gets the lock, and starts again under a new id.
//! - A file in `tmp/` is deleted only while the scan holds its lock, by the same argument.
//! - A record that does not parse, names another message, or lost its body is moved to
//!   `corrupt/` together with its body, reported, and logged; nothing is deleted.

use std::collections::BTreeMap;
use std::fs::{self, File, TryLockError};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::files::{self, Locked};
use super::group_commit::DirSync;
use super::layout::{Layout, QueueFile};
use crate::queue_id::QueueId;
use crate::spool::record;
use crate::spool::{Quarantined, QueuedMessage, ScanReport, SpoolError};

/// Which of its two files a listing showed for one id.
#[derive(Default, Clone, Copy)]
struct Seen {
    record: bool,
    body: bool,
}

/// What one record turned out to be.
enum Verdict {
    Message(QueuedMessage),
    /// Removed by another process since the listing.
    Gone,
    Unreadable(String),
}

pub(crate) fn scan(layout: &Layout, queue_sync: &DirSync) -> Result<ScanReport, SpoolError> {
    let mut report = ScanReport::default();
    let mut seen: BTreeMap<QueueId, Seen> = BTreeMap::new();
    for name in list(&layout.queue)? {
        match name.to_str().and_then(QueueFile::parse) {
            Some(QueueFile::Record(id)) => seen.entry(id).or_default().record = true,
            Some(QueueFile::Body(id)) => seen.entry(id).or_default().body = true,
            None => tracing::warn!(
                file = %layout.queue.join(&name).display(),
                "ignoring a file in the spool queue that is not a body or record"
            ),
        }
    }

    // Ids sort by arrival, so walking the map in order lists the oldest first.
    for (id, files_seen) in &seen {
        if files_seen.record {
            match inspect(layout, id)? {
                Verdict::Message(m) => report.messages.push(m),
                Verdict::Gone => {}
                Verdict::Unreadable(reason) => {
                    if let Some(q) = quarantine(layout, id, reason) {
                        report.quarantined.push(q);
                    }
                }
            }
        } else if files_seen.body && remove_orphan_body(layout, id) {
            report.orphans_removed += 1;
        }
    }
    report.orphans_removed += remove_orphan_tmp_files(layout)?;

    if !report.quarantined.is_empty() {
        // Make the moves durable, so a crash cannot bring a quarantined record back.
        let synced = files::open_dir(&layout.corrupt)
            .and_then(|d| d.sync_all())
            .and_then(|()| queue_sync.sync());
        if let Err(e) = synced {
            tracing::warn!(error = %e, "could not fsync the spool after quarantining records");
        }
    }
    Ok(report)
}

fn list(dir: &Path) -> Result<Vec<std::ffi::OsString>, SpoolError> {
    let entries = fs::read_dir(dir).map_err(|e| SpoolError::io("list spool", dir, e))?;
    entries
        .map(|e| {
            e.map(|e| e.file_name())
                .map_err(|e| SpoolError::io("list spool", dir, e))
        })
        .collect()
}

fn inspect(layout: &Layout, id: &QueueId) -> Result<Verdict, SpoolError> {
    let record_path = layout.record(id);
    let Some(bytes) = files::read_if_exists(&record_path)
        .map_err(|e| SpoolError::io("read record", &record_path, e))?
    else {
        return Ok(Verdict::Gone);
    };
    let record = match record::parse(&bytes) {
        Ok(r) => r,
        Err(e) => return Ok(Verdict::Unreadable(e.to_string())),
    };
    if record.id != *id {
        return Ok(Verdict::Unreadable(format!(
            "it names message {} but is stored as {id}",
            record.id
        )));
    }
    let body_path = layout.body(id);
    let size = match fs::symlink_metadata(&body_path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // A remove deletes the record first, so a record without a body is damage, unless
            // the record too has just been removed.
            let still_there = files::exists(&record_path)
                .map_err(|e| SpoolError::io("inspect record", &record_path, e))?;
            return Ok(if still_there {
                Verdict::Unreadable(format!("its body {} is missing", body_path.display()))
            } else {
                Verdict::Gone
            });
        }
        Err(e) => return Err(SpoolError::io("inspect body", &body_path, e)),
    };
    if size != record.state.size {
        return Ok(Verdict::Unreadable(format!(
            "its body is {size} octets but the record says {}",
            record.state.size
        )));
    }
    Ok(Verdict::Message(QueuedMessage {
        id: record.id,
        envelope: record.envelope,
        state: record.state,
    }))
}

/// Moves a record and its body to `corrupt/`. `None` when the record vanished meanwhile.
fn quarantine(layout: &Layout, id: &QueueId, reason: String) -> Option<Quarantined> {
    let record_path = layout.record(id);
    let mut moved = None;
    for n in 0..1000 {
        let (record_to, body_to) = layout.quarantine(id, n);
        if files::exists(&body_to).unwrap_or(true) {
            continue;
        }
        match files::rename_noreplace(&record_path, &record_to) {
            Ok(()) => {
                moved = Some((record_to, body_to));
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(record = %record_path.display(), %reason, error = %e,
                    "unreadable spool record could not be moved to quarantine; left in place");
                return Some(Quarantined {
                    reason: format!("{reason} (left in place: moving it failed: {e})"),
                    path: record_path,
                });
            }
        }
    }
    let Some((record_to, body_to)) = moved else {
        tracing::warn!(record = %record_path.display(), %reason,
            "unreadable spool record left in place: the quarantine has no free name for it");
        return Some(Quarantined {
            reason: format!("{reason} (left in place: no free name in corrupt/)"),
            path: record_path,
        });
    };
    let body_path = layout.body(id);
    match files::rename_noreplace(&body_path, &body_to) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(body = %body_path.display(), error = %e,
            "could not move the body of a quarantined record"),
    }
    tracing::warn!(record = %record_to.display(), %reason,
        "quarantined an unreadable spool record; its message is not queued");
    Some(Quarantined {
        path: record_to,
        reason,
    })
}

/// Removes a body without a record if no writer holds it. True when it removed it.
fn remove_orphan_body(layout: &Layout, id: &QueueId) -> bool {
    let body_path = layout.body(id);
    let record_path = layout.record(id);
    let result = lock_unheld(&body_path).and_then(|file| {
        let Some(file) = file else {
            return Ok(false);
        };
        // Locked: no insert is between creating this body and committing its record. Check
        // again that it did not commit before we took the lock.
        if file.0.metadata()?.nlink() == 0 || files::exists(&record_path)? {
            return Ok(false);
        }
        fs::remove_file(&body_path).map(|()| true)
    });
    result.unwrap_or_else(|e| {
        tracing::warn!(body = %body_path.display(), error = %e,
            "could not remove the body of an interrupted insert");
        false
    })
}

/// Removes every file in `tmp/` that no writer holds. Returns how many it removed.
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
            // A spare of a spool handle (see `spares`): not the leftover of a failed insert.
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
fn lock_unheld(path: &Path) -> io::Result<Option<Locked>> {
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
