//! `spool`: the spool directory takes a message durably. A file is created (mode 0600),
//! written, fsynced, renamed, the directory fsynced, and the file removed: the steps a spool
//! insert takes. A read-only mount, a full disk, a missing permission or a path through a
//! regular file each give a FAIL that names the step and the fix.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{Check, Finding};

const PROBE_SIZE: usize = 4096;

pub(crate) fn check(dir: &Path, low_space: u64) -> Vec<Finding> {
    let shown = dir.display();
    match fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => vec![
            Finding::fail(Check::Spool, format!("spool {shown} is not a directory")).with_fix(
                format!("move {shown} away, or set spool = to a directory in the configuration"),
            ),
        ],
        Ok(_) => match write_test(dir) {
            Ok(elapsed) => {
                let mut findings = vec![Finding::pass(
                    Check::Spool,
                    format!(
                        "spool {shown} is writable and fsync works there ({} ms to write, \
                         fsync, rename and fsync the directory)",
                        elapsed.as_millis()
                    ),
                )];
                findings.extend(space(dir, low_space));
                findings.extend(quarantine(dir));
                findings
            }
            Err(failure) => vec![failure.finding(dir, &format!("spool {shown} is not writable"))],
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => missing(dir),
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => vec![not_a_directory(dir)],
        Err(e) => vec![
            Finding::fail(Check::Spool, format!("spool {shown} cannot be read: {e}"))
                .with_fix(fix_for(&e, dir)),
        ],
    }
}

/// Records a scan could not read lie in `corrupt/` until someone looks at them: mail that
/// nobody will deliver, so the doctor warns for as long as they are there.
fn quarantine(dir: &Path) -> Option<Finding> {
    let files = match crate::spool::fs::quarantined_in(dir) {
        Ok(files) => files,
        Err(e) => {
            return Some(Finding::warn(
                Check::Spool,
                format!("cannot look for quarantined records: {e}"),
            ));
        }
    };
    let first = files.first()?;
    let folder = first.parent().unwrap_or(dir);
    Some(
        Finding::warn(
            Check::Spool,
            format!(
                "{} unreadable queue record(s) set aside in {} (the first: {}): nobody will \
                 deliver them",
                files.len(),
                folder.display(),
                first.display()
            ),
        )
        .with_fix(format!(
            "inspect the files in {}, requeue \
             what you can with sendmail, then remove them",
            folder.display()
        )),
    )
}

/// postrider creates a missing spool at start; check that it can.
fn missing(dir: &Path) -> Vec<Finding> {
    let shown = dir.display();
    let Some(parent) = dir
        .ancestors()
        .skip(1)
        .map(|a| {
            if a.as_os_str().is_empty() {
                Path::new(".")
            } else {
                a
            }
        })
        .find(|a| a.exists())
    else {
        return vec![Finding::fail(
            Check::Spool,
            format!("spool {shown} does not exist, and no folder above it does"),
        )];
    };
    if !parent.is_dir() {
        return vec![not_a_directory(dir)];
    }
    match write_test(parent) {
        Ok(_) => vec![Finding::pass(
            Check::Spool,
            format!(
                "spool {shown} does not exist yet; postrider creates it at start in {}, where \
                 writing and fsync work",
                parent.display()
            ),
        )],
        Err(failure) => vec![failure.finding(
            parent,
            &format!(
                "spool {shown} does not exist and cannot be created in {}",
                parent.display()
            ),
        )],
    }
}

/// A folder on the spool's path is a regular file.
fn not_a_directory(dir: &Path) -> Finding {
    let file = dir
        .ancestors()
        .skip(1)
        .find(|a| a.is_file())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| dir.to_path_buf());
    Finding::fail(
        Check::Spool,
        format!(
            "spool {} cannot be used: {} is a file, not a directory",
            dir.display(),
            file.display()
        ),
    )
    .with_fix(format!(
        "set spool = to a directory in the configuration (the default is {})",
        crate::config::DEFAULT_SPOOL
    ))
}

/// Which step of the test failed, and how.
struct Failure {
    step: &'static str,
    path: PathBuf,
    error: io::Error,
}

impl Failure {
    fn finding(&self, dir: &Path, what: &str) -> Finding {
        Finding::fail(
            Check::Spool,
            format!(
                "{what}: cannot {} {}: {}",
                self.step,
                self.path.display(),
                self.error
            ),
        )
        .with_fix(fix_for(&self.error, dir))
    }
}

/// Create, write, fsync, rename, fsync the directory, remove. Cleans up after a failure.
fn write_test(dir: &Path) -> Result<std::time::Duration, Failure> {
    let started = Instant::now();
    let stem = format!(
        ".postrider-doctor.{}.{}",
        std::process::id(),
        rand::random::<u32>()
    );
    let tmp = dir.join(&stem);
    let done = dir.join(format!("{stem}.done"));
    let fail = |step, path: &Path| {
        let path = path.to_path_buf();
        move |error| Failure { step, path, error }
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(fail("create", &tmp))?;
    let result = (|| {
        file.write_all(&[b'x'; PROBE_SIZE])
            .map_err(fail("write", &tmp))?;
        file.sync_all().map_err(fail("fsync", &tmp))?;
        fs::rename(&tmp, &done).map_err(fail("rename", &tmp))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(fail("fsync the directory", dir))?;
        Ok(())
    })();
    drop(file);
    let removed = fs::remove_file(&done).or_else(|_| fs::remove_file(&tmp));
    result?;
    removed.map_err(fail("remove", &done))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(fail("fsync the directory", dir))?;
    Ok(started.elapsed())
}

fn fix_for(e: &io::Error, dir: &Path) -> String {
    let shown = dir.display();
    match e.raw_os_error() {
        Some(libc::EROFS) => format!(
            "the file system holding {shown} is mounted read-only: remount it read-write \
             (mount -o remount,rw MOUNT-POINT; see findmnt -T {shown}), or set spool = to a \
             directory on a writable file system"
        ),
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => format!(
            "the file system holding {shown} is full (or over quota): free space there (df -h \
             {shown}), or move the spool to a larger file system"
        ),
        Some(libc::EACCES) | Some(libc::EPERM) => format!(
            "the user postrider runs as may not write there: chown that user {shown}, and \
             chmod 700 {shown}"
        ),
        Some(libc::ENOTDIR) => format!(
            "a part of the path {shown} is a file: set spool = to a directory in the \
             configuration"
        ),
        Some(libc::EIO) => format!(
            "the disk holding {shown} reports I/O errors: check it (dmesg) before trusting it \
             with mail"
        ),
        _ => format!("make {shown} a writable directory, or set spool = to one"),
    }
}

/// A warning when the spool's file system is nearly full.
fn space(dir: &Path, low_space: u64) -> Option<Finding> {
    let free = free_bytes(dir)?;
    (free < low_space).then(|| {
        Finding::warn(
            Check::Spool,
            format!(
                "only {} MiB free on the file system holding spool {}",
                free / (1024 * 1024),
                dir.display()
            ),
        )
        .with_fix(format!(
            "free space there (df -h {}): a full spool refuses new mail",
            dir.display()
        ))
    })
}

fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs only writes into `st`; zeroed is a valid bit pattern for the struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid NUL-terminated string and `st` outlives the call.
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    #[allow(clippy::useless_conversion)] // the field types differ between platforms
    Some(u64::from(st.f_bavail).saturating_mul(u64::from(st.f_frsize)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writable_directory_passes_and_is_left_clean() {
        let dir = tempfile::tempdir().unwrap();
        let findings = check(dir.path(), 0);
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(findings[0].verdict, super::super::Verdict::Pass);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_spool_below_a_regular_file_fails_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("queue");
        fs::write(&file, b"").unwrap();
        let findings = check(&file.join("spool"), 0);
        assert_eq!(findings[0].verdict, super::super::Verdict::Fail);
        assert!(
            findings[0]
                .detail
                .contains(&format!("{} is a file, not a directory", file.display())),
            "{}",
            findings[0].detail
        );
    }

    #[test]
    fn low_free_space_is_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let findings = check(dir.path(), u64::MAX);
        assert_eq!(findings.len(), 2, "{findings:?}");
        assert_eq!(findings[1].verdict, super::super::Verdict::Warn);
        assert!(findings[1].detail.contains("MiB free"));
    }

    #[test]
    fn records_set_aside_in_corrupt_are_a_warning_naming_the_folder_until_removed() {
        let dir = tempfile::tempdir().unwrap();
        let corrupt = dir.path().join("corrupt");
        fs::create_dir(&corrupt).unwrap();
        assert_eq!(check(dir.path(), 0).len(), 1, "an empty corrupt/ is fine");
        fs::write(corrupt.join("0AAAAAAAAAAAAAAA"), b"damaged").unwrap();
        fs::write(corrupt.join("0AAAAAAAAAAAAAAB.qf"), b"damaged").unwrap();
        let findings = check(dir.path(), 0);
        assert_eq!(findings.len(), 2, "{findings:?}");
        assert_eq!(findings[1].verdict, super::super::Verdict::Warn);
        assert!(
            findings[1].detail.starts_with(&format!(
                "2 unreadable queue record(s) set aside in {}",
                corrupt.display()
            )),
            "{}",
            findings[1].detail
        );
        fs::remove_dir_all(&corrupt).unwrap();
        assert_eq!(check(dir.path(), 0).len(), 1);
    }
}
