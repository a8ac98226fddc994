//! Converting a spool of format 1 (`queue/ID.qf` + `queue/ID.df`) to format 3 (`queue/ID`),
//! at open and before every scan, so an upgrade never leaves a message behind.
//!
//! Per message, holding the format-1 body's lock (the claim of format 1, so no process of the
//! older release delivers it meanwhile): write the format-3 file in `tmp/`, make it durable,
//! rename it to `queue/ID`, make the name durable (once per batch), then delete `ID.qf` and
//! `ID.df`. The id stays the same, which is what makes a kill at any instant safe:
//!
//! - before the rename is durable: the format-1 files are intact, the temporary file is an
//!   orphan a scan deletes, and the next run converts again;
//! - after it: `queue/ID` exists beside leftovers of format 1, and the next run sees the
//!   format-3 file, checks it reads, and only deletes the leftovers. Nothing is lost, and
//!   nothing is queued twice because both forms have the same name.
//!
//! Format-1 records that do not read are quarantined as format 1 did (`corrupt/ID.qf` with its
//! body); a body without a record that nobody holds is the leftover of a format-1 insert and
//! is deleted. A message held by a live process of the older release is left for a later scan.

use std::fs::File;
use std::io;

use super::CommitMode;
use super::files::{self, Created, Locked};
use super::group_commit::GroupSync;
use super::layout::{Layout, QueueFile};
use super::scan::{self, Verdict};
use super::v1;
use crate::queue_id::QueueId;
use crate::spool::format;
use crate::spool::{Quarantined, SpoolError};

/// Messages converted per group commit.
const BATCH: usize = 64;

/// A format-3 file written but not yet committed, with the locks that keep it ours.
struct Pending {
    id: QueueId,
    tmp: std::path::PathBuf,
    _file: Locked,
    _v1_body: Locked,
}

/// Converts every format-1 message it can lock. Returns the records it quarantined.
pub(crate) fn convert(
    layout: &Layout,
    mode: CommitMode,
    sync: &GroupSync,
) -> Result<Vec<Quarantined>, SpoolError> {
    let mut records = Vec::new();
    let mut bodies = Vec::new();
    for name in scan::list(&layout.queue)? {
        match name.to_str().and_then(QueueFile::parse) {
            Some(QueueFile::V1Record(id)) => records.push(id),
            Some(QueueFile::V1Body(id)) => bodies.push(id),
            _ => {}
        }
    }
    if records.is_empty() && bodies.is_empty() {
        return Ok(Vec::new());
    }
    records.sort_unstable();
    let mut quarantined = Vec::new();
    let (mut converted, mut busy) = (0usize, 0usize);
    let mut batch = Vec::new();
    for id in &records {
        match convert_one(layout, mode, id, &mut quarantined)? {
            Step::Pending(p) => batch.push(p),
            Step::Finished => converted += 1,
            Step::Busy => busy += 1,
            Step::Skipped => {}
        }
        if batch.len() >= BATCH {
            converted += commit(layout, mode, sync, std::mem::take(&mut batch))?;
        }
    }
    converted += commit(layout, mode, sync, batch)?;
    let mut orphans = 0;
    for id in bodies
        .iter()
        .filter(|id| records.binary_search(id).is_err())
    {
        if remove_orphan_body(layout, id) {
            orphans += 1;
        }
    }
    if !quarantined.is_empty() {
        scan::sync_quarantine(layout, sync);
    }
    if converted > 0 || orphans > 0 || !quarantined.is_empty() {
        tracing::info!(spool = %layout.root.display(), converted, quarantined = quarantined.len(),
            orphans_removed = orphans,
            "converted {converted} messages from format 1");
    }
    if busy > 0 {
        tracing::warn!(spool = %layout.root.display(), busy,
            "{busy} messages of format 1 are held by another process (an older postrider still \
             running?); they are converted at a later scan");
    }
    Ok(quarantined)
}

enum Step {
    /// Written in `tmp/`, to be committed with the batch.
    Pending(Pending),
    /// An earlier, interrupted conversion had committed it: only the leftovers were deleted.
    Finished,
    /// Held by another process.
    Busy,
    /// Gone, quarantined, or left for the next run.
    Skipped,
}

fn convert_one(
    layout: &Layout,
    mode: CommitMode,
    id: &QueueId,
    quarantined: &mut Vec<Quarantined>,
) -> Result<Step, SpoolError> {
    let body_path = layout.v1_body(id);
    let v1_body = match File::open(&body_path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // inspect() below tells "removed meanwhile" from "body missing".
            return match v1::inspect(layout, id)? {
                v1::Verdict::Unreadable(reason) => {
                    quarantined.extend(quarantine_v1(layout, id, reason));
                    Ok(Step::Skipped)
                }
                _ => Ok(Step::Skipped),
            };
        }
        Err(e) => return Err(SpoolError::io("open body", &body_path, e)),
    };
    let v1_body = match v1_body.try_lock() {
        Ok(()) => Locked(v1_body),
        Err(std::fs::TryLockError::WouldBlock) => return Ok(Step::Busy),
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(SpoolError::io("lock body", &body_path, e));
        }
    };
    // Converted already by a run that was interrupted before deleting format 1?
    match scan::inspect(layout, id)? {
        Verdict::Message(_) => {
            delete_v1(layout, id);
            return Ok(Step::Finished);
        }
        Verdict::Unreadable(reason) => {
            // Damaged after it was made durable: keep it for the administrator and convert
            // the format-1 original again.
            quarantined.extend(scan::quarantine(layout, id, reason));
        }
        // Left by a power loss during an insert under this id: nothing of it to keep.
        Verdict::Empty => {
            scan::remove_empty(layout, id);
        }
        Verdict::Gone => {}
    }
    let record = match v1::inspect(layout, id)? {
        v1::Verdict::Message(r) => r,
        v1::Verdict::Gone => return Ok(Step::Skipped),
        v1::Verdict::Unreadable(reason) => {
            quarantined.extend(quarantine_v1(layout, id, reason));
            return Ok(Step::Skipped);
        }
    };
    let body = files::read_if_exists(&body_path)
        .map_err(|e| SpoolError::io("read body", &body_path, e))?
        .unwrap_or_default();
    if body.len() as u64 != record.state.size {
        quarantined.extend(quarantine_v1(
            layout,
            id,
            format!(
                "its body is {} octets but the record says {}",
                body.len(),
                record.state.size
            ),
        ));
        return Ok(Step::Skipped);
    }
    let meta = match format::render(id, &record.envelope, &record.state, &body) {
        Ok(meta) => meta,
        Err(e) => {
            quarantined.extend(quarantine_v1(
                layout,
                id,
                format!("it cannot be converted: {e}"),
            ));
            return Ok(Step::Skipped);
        }
    };
    for _ in 0..8 {
        let tmp = layout.tmp_message(id);
        match files::create_locked(&tmp) {
            Ok(Created::File(file)) => {
                let per_file = mode != CommitMode::FileSystem;
                if let Err(e) = files::write_parts(&file.0, &[&meta, &body], 0, per_file) {
                    let _ = files::remove_if_exists(&tmp);
                    return Err(SpoolError::io("write message file", &tmp, e));
                }
                return Ok(Step::Pending(Pending {
                    id: *id,
                    tmp,
                    _file: file,
                    _v1_body: v1_body,
                }));
            }
            Ok(Created::Exists) | Ok(Created::Unlinked) => continue,
            Err(e) => return Err(SpoolError::io("create message file", &tmp, e)),
        }
    }
    Ok(Step::Skipped)
}

/// Commits a batch of converted files and deletes their format-1 originals. Returns how many
/// it converted.
fn commit(
    layout: &Layout,
    mode: CommitMode,
    sync: &GroupSync,
    batch: Vec<Pending>,
) -> Result<usize, SpoolError> {
    if batch.is_empty() {
        return Ok(0);
    }
    let sync_err = |e| SpoolError::io("sync converted messages", &layout.queue, e);
    if mode == CommitMode::FileSystem {
        sync.sync().map_err(sync_err)?;
    }
    let mut committed = Vec::with_capacity(batch.len());
    for p in batch {
        let path = layout.message(&p.id);
        match files::rename_noreplace(&p.tmp, &path) {
            Ok(()) => committed.push(p),
            Err(e) => {
                // Left for the next run, which finds the format-1 files intact.
                let _ = files::remove_if_exists(&p.tmp);
                tracing::warn!(file = %path.display(), error = %e,
                    "could not commit a converted message; its format-1 files are kept");
            }
        }
    }
    sync.sync().map_err(sync_err)?;
    // Durable in format 3: the originals may go. A crash before their deletion is durable
    // only leaves leftovers the next run deletes (see the module comment).
    for p in &committed {
        delete_v1(layout, &p.id);
    }
    Ok(committed.len())
}

fn delete_v1(layout: &Layout, id: &QueueId) {
    // The record first: a body without its record is what a later run deletes as an orphan.
    for path in [layout.v1_record(id), layout.v1_body(id)] {
        if let Err(e) = files::remove_if_exists(&path) {
            tracing::warn!(file = %path.display(), error = %e,
                "could not delete a converted format-1 file; the next scan will");
        }
    }
}

/// Moves a format-1 record and its body to `corrupt/`. `None` when the record vanished.
fn quarantine_v1(layout: &Layout, id: &QueueId, reason: String) -> Option<Quarantined> {
    let record_path = layout.v1_record(id);
    for n in 0..1000 {
        let (record_to, body_to) = layout.quarantine_v1(id, n);
        if files::exists(&body_to).unwrap_or(true) {
            continue;
        }
        match files::rename_noreplace(&record_path, &record_to) {
            Ok(()) => {
                match files::rename_noreplace(&layout.v1_body(id), &body_to) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => tracing::warn!(body = %body_to.display(), error = %e,
                        "could not move the body of a quarantined record"),
                }
                tracing::warn!(record = %record_to.display(), %reason,
                    "quarantined an unreadable spool record; its message is not queued");
                return Some(Quarantined {
                    path: record_to,
                    reason,
                });
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
    Some(Quarantined {
        reason: format!("{reason} (left in place: no free name in corrupt/)"),
        path: record_path,
    })
}

/// Removes a format-1 body without a record if no writer holds it. True when it removed it.
fn remove_orphan_body(layout: &Layout, id: &QueueId) -> bool {
    let body_path = layout.v1_body(id);
    let record_path = layout.v1_record(id);
    let result = scan::lock_unheld(&body_path).and_then(|file| {
        let Some(file) = file else {
            return Ok(false);
        };
        use std::os::unix::fs::MetadataExt;
        // Locked: no format-1 insert is between creating this body and committing its
        // record. Check again that it did not commit before we took the lock.
        if file.0.metadata()?.nlink() == 0 || files::exists(&record_path)? {
            return Ok(false);
        }
        std::fs::remove_file(&body_path).map(|()| true)
    });
    result.unwrap_or_else(|e| {
        tracing::warn!(body = %body_path.display(), error = %e,
            "could not remove the body of an interrupted format-1 insert");
        false
    })
}
