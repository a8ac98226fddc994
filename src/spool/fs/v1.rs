//! Messages of spool format 1 (`queue/ID.qf`, a JSON record, beside `queue/ID.df`, the body;
//! see [`crate::spool::record`]) read where they lie. A writable spool converts them at open
//! (see `convert`); these readers serve a spool opened read-only, which cannot, so that
//! `mailq` still shows every message.

use std::fs;
use std::io;

use bytes::Bytes;

use super::files;
use super::layout::Layout;
use crate::queue_id::QueueId;
use crate::spool::record::{self, SpoolRecord};
use crate::spool::{QueuedMessage, SpoolError};

/// What one format-1 message turned out to be.
pub(crate) enum Verdict {
    Message(SpoolRecord),
    /// Its record is not there (removed, or never committed).
    Gone,
    Unreadable(String),
}

/// Reads and checks a format-1 message: its record parses, names itself, and its body has the
/// size the record says.
pub(crate) fn inspect(layout: &Layout, id: &QueueId) -> Result<Verdict, SpoolError> {
    let record_path = layout.v1_record(id);
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
    let body_path = layout.v1_body(id);
    let size = match fs::symlink_metadata(&body_path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // A format-1 remove deleted the record first, so a record without a body is
            // damage, unless the record too has just been removed.
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
    Ok(Verdict::Message(record))
}

/// [`crate::spool::Spool::load`] of a format-1 message.
pub(crate) fn load(layout: &Layout, id: &QueueId) -> Result<QueuedMessage, SpoolError> {
    match inspect(layout, id)? {
        Verdict::Message(r) => Ok(QueuedMessage {
            id: r.id,
            envelope: r.envelope,
            state: r.state,
        }),
        Verdict::Gone => Err(SpoolError::NotFound(*id)),
        Verdict::Unreadable(reason) => Err(SpoolError::Corrupt {
            path: layout.v1_record(id),
            reason,
        }),
    }
}

/// [`crate::spool::Spool::body`] of a format-1 message.
pub(crate) fn body(layout: &Layout, id: &QueueId) -> Result<Bytes, SpoolError> {
    let path = layout.v1_body(id);
    files::read_if_exists(&path)
        .map_err(|e| SpoolError::io("read body", &path, e))?
        .map(Bytes::from)
        .ok_or(SpoolError::NotFound(*id))
}
