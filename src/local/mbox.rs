//! mbox delivery: append one message to a mailbox file (`/var/mail/bob`) under the locks
//! Debian's Dovecot and mail(1) use: an `fcntl` lock, then a dotlock.
//!
//! Each message is `From SENDER DATE` (the envelope sender, `MAILER-DAEMON` for `<>`, and
//! `asctime`'s date in UTC), the message with LF line ends, and a blank line. Body lines that
//! start with `From ` get a `>` in front: **mboxo** quoting, not mboxrd. Dovecot reads mbox
//! without removing quotes again, and so do mail(1) and mutt; under mboxrd a line the sender
//! wrote as `>From ` would also be changed (to `>>From `) and every such reader would show the
//! extra `>`. mboxo changes only the lines that must change. If the file does not end with a
//! blank line, one is added before the new `From ` line.
//!
//! The append is written at the size found under the locks, flushed with `fdatasync`, and
//! after any failure the file is truncated back to that size, so a failed delivery leaves
//! the mailbox as it was. A kill cannot be caught, so the dotlock holds a journal of the size
//! before the append: the next delivery to the mailbox finds the dead holder's lock and cuts
//! off whatever part of a message it left, before appending its own. (The message itself was
//! never reported delivered, so it is still queued and is delivered again.)
//!
//! When delivering as root, a new mailbox is created with mode 0600 and given to its owner;
//! an existing one must be a regular file with one link, owned by the user (or root), and is
//! never reached through a symbolic link.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::address::ReversePath;

use super::error::{StoreError, StoreStep};
use super::fsutil::{self, Owner};
use super::lock::{self, DotLock, Found, Journal};

/// Lock settings of mbox delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MboxOptions {
    /// How long to wait for each lock.
    pub lock_timeout: Duration,
    /// When another program's dotlock counts as stale (Dovecot's
    /// `mbox_dotlock_change_timeout`).
    pub stale_after: Duration,
}

impl Default for MboxOptions {
    /// Dovecot's defaults: 5 minutes to wait, 2 minutes to stale.
    fn default() -> MboxOptions {
        MboxOptions {
            lock_timeout: Duration::from_secs(300),
            stale_after: Duration::from_secs(120),
        }
    }
}

/// The `From ` line's sender: the envelope sender without spaces, or `MAILER-DAEMON`.
fn from_word(sender: &ReversePath) -> String {
    match sender {
        ReversePath::Null => "MAILER-DAEMON".into(),
        ReversePath::Address(a) => a
            .to_string()
            .chars()
            .map(|c| if c.is_whitespace() { '_' } else { c })
            .collect(),
    }
}

/// One mbox entry: the `From ` line, the message with `From ` lines quoted (mboxo), and the
/// blank line that ends it. `message` has LF line ends.
///
/// ```
/// use postrider::local::mbox::entry;
/// use postrider::ReversePath;
/// use std::time::{Duration, UNIX_EPOCH};
/// let e = entry(&ReversePath::parse("aaa@ourtest.com")?, UNIX_EPOCH + Duration::from_secs(86400 * 365),
///               b"Subject: x\n\nFrom here\n>From there\n");
/// assert_eq!(e, b"From aaa@ourtest.com Fri Jan  1 00:00:00 1971\nSubject: x\n\n>From here\n>From there\n\n");
/// # Ok::<(), postrider::AddressError>(())
/// ```
pub fn entry(sender: &ReversePath, when: SystemTime, message: &[u8]) -> Vec<u8> {
    let from = format!(
        "From {} {}\n",
        from_word(sender),
        crate::time::asctime(when)
    );
    let mut out = Vec::with_capacity(from.len() + message.len() + message.len() / 256 + 2);
    out.extend_from_slice(from.as_bytes());
    for line in message.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b"From ") {
            out.push(b'>');
        }
        out.extend_from_slice(line);
    }
    if !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    out.push(b'\n');
    out
}

/// How many newlines must come before a new entry so that the file ends in a blank line
/// (`tail` is the file's last two octets, fewer for a short file).
fn separator_needed(tail: &[u8], size: u64) -> usize {
    if size == 0 {
        return 0;
    }
    match tail {
        [.., b'\n', b'\n'] => 0,
        [b'\n'] if size == 1 => 0,
        [.., b'\n'] => 1,
        _ => 2,
    }
}

fn open_existing(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Opens the mailbox, creating it (mode 0600, given to `owner`) when missing.
fn open_mailbox(path: &Path, owner: Option<Owner>) -> Result<File, StoreError> {
    let err = |step, e| StoreError::new(step, path, e);
    let file = match open_existing(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(path)
            {
                Ok(f) => {
                    if let Some(o) = owner {
                        fsutil::fchown(&f, o).map_err(|e| err(StoreStep::Create, e))?;
                    }
                    if let Some(dir) = path.parent() {
                        let d = fsutil::open_dir(dir).map_err(|e| err(StoreStep::Create, e))?;
                        fsutil::sync_dir(&d).map_err(|e| err(StoreStep::Sync, e))?;
                    }
                    f
                }
                // Someone else created it just now.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    open_existing(path).map_err(|e| err(StoreStep::Open, e))?
                }
                Err(e) => return Err(err(StoreStep::Create, e)),
            }
        }
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(err(
                StoreStep::Open,
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the mailbox is a symbolic link",
                ),
            ));
        }
        Err(e) => return Err(err(StoreStep::Open, e)),
    };
    let meta = file.metadata().map_err(|e| err(StoreStep::Open, e))?;
    let refuse = |why: &str| {
        err(
            StoreStep::Open,
            io::Error::new(io::ErrorKind::InvalidInput, why.to_string()),
        )
    };
    if !meta.is_file() {
        return Err(refuse("the mailbox is not a regular file"));
    }
    if meta.nlink() != 1 {
        return Err(refuse("the mailbox has more than one hard link"));
    }
    fsutil::check_owner(&meta, owner, path).map_err(|e| err(StoreStep::Open, e))?;
    Ok(file)
}

/// Cuts off what a dead delivery left, when the file is still the one it appended to and
/// nobody appended since: a partial message goes; a complete one stays (it is delivered again,
/// the duplicate the queue's at-least-once promise allows).
fn repair(file: &File, path: &Path, j: &Journal) -> io::Result<()> {
    let meta = file.metadata()?;
    if meta.dev() != j.dev || meta.ino() != j.ino {
        return Ok(());
    }
    let size = meta.len();
    if size > j.size && size < j.end {
        file.set_len(j.size)?;
        file.sync_all()?;
        tracing::warn!(target: "postrider::local", mailbox = %path.display(),
            "removed {} octets of a message a killed delivery left half-written", size - j.size);
    } else if size != j.size && size != j.end {
        tracing::warn!(target: "postrider::local", mailbox = %path.display(),
            "a killed delivery's lock was found, but the mailbox changed since ({} octets, \
             expected {} to {}); left as it is", size, j.size, j.end);
    }
    Ok(())
}

/// Appends `message` (LF line ends, trace fields added) from `sender` to the mbox at `path`.
/// Blocking: call it from a blocking thread.
pub fn deliver(
    path: &Path,
    sender: &ReversePath,
    message: &[u8],
    owner: Option<Owner>,
    options: &MboxOptions,
) -> Result<(), StoreError> {
    let body = entry(sender, SystemTime::now(), message);
    // The file may be replaced (renamed away by a reader that rewrites it) between the open
    // and the lock: then lock the new one.
    for _ in 0..5 {
        let file = open_mailbox(path, owner)?;
        lock::fcntl_lock(&file, options.lock_timeout)
            .map_err(|e| StoreError::new(StoreStep::Lock, path, e))?;
        let same = match (std::fs::symlink_metadata(path), file.metadata()) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        };
        if !same {
            lock::fcntl_unlock(&file);
            continue;
        }
        let result = append_locked(&file, path, &body, options);
        lock::fcntl_unlock(&file);
        return result;
    }
    Err(StoreError::new(
        StoreStep::Lock,
        path,
        io::Error::other("the mailbox kept being replaced while it was being locked"),
    ))
}

/// `body` with the newlines the file needs before it to end in a blank line.
fn with_separator(file: &File, path: &Path, body: &[u8]) -> Result<Vec<u8>, StoreError> {
    let size = file
        .metadata()
        .map_err(|e| StoreError::new(StoreStep::Open, path, e))?
        .len();
    let mut tail = [0u8; 2];
    let start = size.saturating_sub(2);
    let n = (size - start) as usize;
    file.read_exact_at(&mut tail[..n], start)
        .map_err(|e| StoreError::new(StoreStep::Open, path, e))?;
    let sep = separator_needed(&tail[..n], size);
    let mut data = Vec::with_capacity(sep + body.len());
    data.extend(std::iter::repeat_n(b'\n', sep));
    data.extend_from_slice(body);
    Ok(data)
}

fn append_locked(
    file: &File,
    path: &Path,
    body: &[u8],
    options: &MboxOptions,
) -> Result<(), StoreError> {
    let lock_err = |e| StoreError::new(StoreStep::Lock, path, e);
    let data = with_separator(file, path, body)?;
    let meta = file.metadata().map_err(lock_err)?;
    let (dotlock, found) = DotLock::acquire(
        path,
        &lock::journal_for(&meta, data.len() as u64),
        options.lock_timeout,
        options.stale_after,
    )
    .map_err(lock_err)?;
    let (data, meta) = match &found {
        Found::Abandoned(dead) => {
            repair(file, path, dead).map_err(|e| StoreError::new(StoreStep::Write, path, e))?;
            let data = with_separator(file, path, body)?;
            let meta = file.metadata().map_err(lock_err)?;
            dotlock
                .update(&lock::journal_for(&meta, data.len() as u64))
                .map_err(lock_err)?;
            (data, meta)
        }
        Found::Free | Found::Stale => (data, meta),
    };
    let size = meta.len();
    let written = file
        .write_all_at(&data, size)
        .map_err(|e| (StoreStep::Write, e))
        .and_then(|()| file.sync_data().map_err(|e| (StoreStep::Sync, e)));
    if let Err((step, e)) = written {
        // Put the mailbox back as it was; the message stays queued.
        if let Err(t) = file.set_len(size).and_then(|()| file.sync_all()) {
            tracing::error!(target: "postrider::local", mailbox = %path.display(),
                "could not truncate the mailbox back to {size} octets after a failed append: {t}");
        }
        return Err(StoreError::new(step, path, e));
    }
    dotlock
        .release()
        .map_err(|e| StoreError::new(StoreStep::Lock, path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sender() -> ReversePath {
        ReversePath::parse("aaa@ourtest.com").unwrap()
    }

    fn opts() -> MboxOptions {
        MboxOptions {
            lock_timeout: Duration::from_secs(2),
            stale_after: Duration::from_secs(120),
        }
    }

    #[test]
    fn entries_quote_from_lines_and_end_with_a_blank_line() {
        let e = entry(
            &ReversePath::Null,
            SystemTime::UNIX_EPOCH,
            b"a\nFrom x\n From y\nno newline",
        );
        assert_eq!(
            e,
            b"From MAILER-DAEMON Thu Jan  1 00:00:00 1970\na\n>From x\n From y\nno newline\n\n"
        );
    }

    #[test]
    fn the_separator_makes_the_file_end_in_a_blank_line() {
        assert_eq!(separator_needed(b"", 0), 0);
        assert_eq!(separator_needed(b"\n\n", 10), 0);
        assert_eq!(separator_needed(b"x\n", 10), 1);
        assert_eq!(separator_needed(b"xy", 10), 2);
        assert_eq!(separator_needed(b"\n", 1), 0);
    }

    #[test]
    fn messages_are_appended_one_after_the_other() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bob");
        deliver(&path, &sender(), b"Subject: one\n\nbody\n", None, &opts()).unwrap();
        deliver(
            &path,
            &sender(),
            b"Subject: two\n\nFrom me\n",
            None,
            &opts(),
        )
        .unwrap();
        let text = String::from_utf8(std::fs::read(&path).unwrap()).unwrap();
        let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("From ")).collect();
        assert_eq!(froms.len(), 2, "{text}");
        assert!(text.contains("\n\nFrom aaa@ourtest.com "), "{text}");
        assert!(text.ends_with("Subject: two\n\n>From me\n\n"), "{text}");
        assert!(!dir.path().join("bob.lock").exists());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn a_half_written_message_left_by_a_dead_delivery_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bob");
        deliver(&path, &sender(), b"Subject: one\n\nbody\n", None, &opts()).unwrap();
        let good = std::fs::read(&path).unwrap();
        // What a killed delivery leaves: its lock with the journal, and part of a message.
        let meta = std::fs::metadata(&path).unwrap();
        let mut dead = lock::journal_for(&meta, 500);
        dead.token ^= 1;
        std::fs::write(dir.path().join("bob.lock"), format_journal(&dead)).unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        io::Write::write_all(&mut f, b"From x Thu Jan  1 00:00:00 1970\nSubject: half").unwrap();
        deliver(&path, &sender(), b"Subject: three\n\nok\n", None, &opts()).unwrap();
        let text = std::fs::read(&path).unwrap();
        assert!(text.starts_with(&good));
        let rest = String::from_utf8(text[good.len()..].to_vec()).unwrap();
        assert!(rest.starts_with("From aaa@ourtest.com "), "{rest}");
        assert!(!rest.contains("half"), "{rest}");
    }

    #[test]
    fn a_symlinked_mailbox_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("target"), b"").unwrap();
        std::os::unix::fs::symlink(dir.path().join("target"), dir.path().join("bob")).unwrap();
        let err = deliver(&dir.path().join("bob"), &sender(), b"x\n", None, &opts()).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read(dir.path().join("target")).unwrap(), b"");
    }

    fn format_journal(j: &Journal) -> String {
        j.render()
    }
}
