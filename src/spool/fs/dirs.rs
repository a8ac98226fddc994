//! The spool's directories: creating them, checking they are directories and writable, and
//! listing what scans set aside in `corrupt/`.

use std::fs::DirBuilder;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use super::layout::Layout;
use super::{files, scan};
use crate::spool::SpoolError;

/// [`FsSpool::quarantined`](super::FsSpool::quarantined) for the spool in `root` without opening it (the doctor looks at
/// a spool it may not be allowed to open); a spool without `corrupt/` has nothing set aside.
pub fn quarantined_in(root: &Path) -> Result<Vec<PathBuf>, SpoolError> {
    let layout = Layout::new(root);
    let mut names = match scan::list(&layout.corrupt) {
        Err(SpoolError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok(Vec::new());
        }
        other => other?,
    };
    names.sort_unstable();
    Ok(names.into_iter().map(|n| layout.corrupt.join(n)).collect())
}

pub(super) fn not_a_dir(path: &Path, root: &Path) -> SpoolError {
    SpoolError::Config {
        path: root.to_path_buf(),
        reason: format!("{} exists and is not a directory", path.display()),
    }
}

pub(super) fn make_dir(path: &Path, root: &Path) -> Result<(), SpoolError> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => return Ok(()),
        Ok(_) => return Err(not_a_dir(path, root)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(SpoolError::io("inspect spool directory", path, e)),
    }
    match DirBuilder::new()
        .recursive(true)
        .mode(files::DIR_MODE)
        .create(path)
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(not_a_dir(path, root)),
        Err(e) => Err(SpoolError::io("create spool directory", path, e)),
    }
}

pub(super) fn probe_writable(layout: &Layout) -> Result<(), SpoolError> {
    let probe = layout
        .tmp
        .join(format!("open-probe.{}.tmp", std::process::id()));
    // A stale probe of a dead process with our pid is in the way: remove it and go on.
    files::remove_if_exists(&probe).map_err(|e| SpoolError::io("write test", &probe, e))?;
    match files::create_locked(&probe) {
        Ok(_) => {
            files::remove_if_exists(&probe).map_err(|e| SpoolError::io("write test", &probe, e))
        }
        Err(e) => Err(SpoolError::io("write test", &layout.tmp, e)),
    }
}
