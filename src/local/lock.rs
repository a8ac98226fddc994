//! The two mbox locks Debian's Dovecot and mail(1) use: an `fcntl` write lock on the mailbox,
//! then a dotlock (`MAILBOX.lock`). Debian configures `mbox_write_locks = fcntl dotlock` and
//! `mbox_read_locks = fcntl`: writers take both in that order (taking them in the same order
//! as Dovecot is what keeps two writers from each holding one and waiting for the other), and
//! readers are kept out by the `fcntl` lock.
//!
//! The `fcntl` lock is an open-file-description lock (`F_OFD_SETLK`): it conflicts with the
//! classic POSIX locks Dovecot takes, but belongs to the open file rather than the process,
//! so two threads of one process exclude each other and closing an unrelated descriptor of
//! the same file does not drop it.
//!
//! The dotlock is made the NFS-safe way (liblockfile's): a uniquely named file is written and
//! then hard-linked to `MAILBOX.lock`, so the lock appears at once with its contents. Those
//! contents are a small journal: who holds it and the mailbox's size before the append. A
//! holder that died (its process is gone) left the lock behind; the next postrider delivery
//! reads the journal and cuts a half-written message off before appending (see
//! [`super::mbox`]). A lock of another program is taken over once it is older than
//! `stale_after` (Dovecot's `mbox_dotlock_change_timeout`, 2 minutes).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// How often a held lock is tried again.
const RETRY: Duration = Duration::from_millis(50);

/// Takes an `fcntl` write lock on the whole of `file`, waiting up to `timeout`.
pub(crate) fn fcntl_lock(file: &File, timeout: Duration) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        // SAFETY: all-zero is a valid flock; the fields that matter are set below.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = libc::F_WRLCK as libc::c_short;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
        fl.l_start = 0;
        fl.l_len = 0;
        // SAFETY: valid descriptor and flock (l_pid 0, as OFD locks require).
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EACCES) | Some(libc::EINTR) => {}
            _ => return Err(e),
        }
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "another program held its fcntl lock for more than {}s",
                    timeout.as_secs()
                ),
            ));
        }
        std::thread::sleep(RETRY);
    }
}

/// Releases the `fcntl` lock (closing the file would too; this makes it explicit, before the
/// file's last descriptor goes).
pub(crate) fn fcntl_unlock(file: &File) {
    // SAFETY: as in fcntl_lock.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_UNLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: valid descriptor and flock.
    unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
}

/// What a postrider dotlock records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Journal {
    pub pid: u32,
    pub token: u64,
    pub host: String,
    pub dev: u64,
    pub ino: u64,
    /// The mailbox's size before the append.
    pub size: u64,
    /// Its size once the append is complete.
    pub end: u64,
}

impl Journal {
    pub(crate) fn render(&self) -> String {
        format!(
            "postrider pid={} token={:016x} host={} dev={} ino={} size={} end={}\n",
            self.pid, self.token, self.host, self.dev, self.ino, self.size, self.end
        )
    }

    pub(crate) fn parse(text: &str) -> Option<Journal> {
        let rest = text.trim_end().strip_prefix("postrider ")?;
        let mut j = Journal {
            pid: 0,
            token: 0,
            host: String::new(),
            dev: 0,
            ino: 0,
            size: 0,
            end: 0,
        };
        let mut seen = 0;
        for field in rest.split(' ') {
            let (k, v) = field.split_once('=')?;
            match k {
                "pid" => j.pid = v.parse().ok()?,
                "token" => j.token = u64::from_str_radix(v, 16).ok()?,
                "host" => j.host = v.to_string(),
                "dev" => j.dev = v.parse().ok()?,
                "ino" => j.ino = v.parse().ok()?,
                "size" => j.size = v.parse().ok()?,
                "end" => j.end = v.parse().ok()?,
                _ => return None,
            }
            seen += 1;
        }
        (seen == 7).then_some(j)
    }

    /// True when the process that wrote this journal is gone.
    fn holder_is_dead(&self) -> bool {
        if self.host != host() {
            return false;
        }
        if self.pid == std::process::id() {
            // Our pid: alive only if it is this very process (not an earlier one that had
            // the same pid before a restart).
            return self.token != process_token();
        }
        // SAFETY: kill with signal 0 only checks whether the process exists.
        let rc = unsafe { libc::kill(self.pid as libc::pid_t, 0) };
        rc != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
    }
}

/// A random number fixed for the life of this process.
fn process_token() -> u64 {
    static TOKEN: OnceLock<u64> = OnceLock::new();
    *TOKEN.get_or_init(rand::random)
}

fn host() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        let mut buf = [0u8; 256];
        // SAFETY: the buffer is valid for its length.
        let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        if rc != 0 {
            return "localhost".into();
        }
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end])
            .chars()
            .filter(|c| c.is_ascii_graphic() && *c != '=')
            .collect()
    })
}

/// What was found when a dotlock was taken.
#[derive(Debug)]
pub(crate) enum Found {
    /// The lock was free.
    Free,
    /// A dead postrider delivery's lock, with its journal: the caller repairs the mailbox.
    Abandoned(Journal),
    /// Another program's lock, older than `stale_after`, taken over.
    Stale,
}

/// A held dotlock; dropping it removes the lock file.
#[derive(Debug)]
pub(crate) struct DotLock {
    path: PathBuf,
    held: bool,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl DotLock {
    /// Takes `MAILBOX.lock` for `mailbox`, recording `journal`, waiting up to `timeout` for a
    /// live holder and taking over dead or stale locks.
    pub(crate) fn acquire(
        mailbox: &Path,
        journal: &Journal,
        timeout: Duration,
        stale_after: Duration,
    ) -> io::Result<(DotLock, Found)> {
        let mut lock_name = mailbox.as_os_str().to_owned();
        lock_name.push(".lock");
        let path = PathBuf::from(lock_name);
        let mut temp_name = path.as_os_str().to_owned();
        temp_name.push(format!(
            ".{}.{}.{}",
            host(),
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let temp = PathBuf::from(temp_name);
        let result = Self::acquire_via(&path, &temp, journal, timeout, stale_after);
        let _ = std::fs::remove_file(&temp);
        result
    }

    fn acquire_via(
        path: &Path,
        temp: &Path,
        journal: &Journal,
        timeout: Duration,
        stale_after: Duration,
    ) -> io::Result<(DotLock, Found)> {
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(temp)?;
            f.write_all(journal.render().as_bytes())?;
            f.sync_data()?;
        }
        let deadline = Instant::now() + timeout;
        let mut found = Found::Free;
        loop {
            match std::fs::hard_link(temp, path) {
                Ok(()) => {
                    return Ok((
                        DotLock {
                            path: path.to_path_buf(),
                            held: true,
                        },
                        found,
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            match inspect(path, stale_after)? {
                Holder::Gone => continue,
                Holder::Dead(j) => {
                    // Remove it only if it is still the lock we read (another delivery may
                    // have replaced it meanwhile; then wait for that one).
                    if remove_if_unchanged(path, &j.render())? {
                        found = Found::Abandoned(j);
                    }
                    continue;
                }
                Holder::Stale(text) => {
                    tracing::warn!(target: "postrider::local", lock = %path.display(),
                        "taking over a stale lock file ({} old)", stale_after.as_secs());
                    if remove_if_unchanged(path, &text)? {
                        found = Found::Stale;
                    }
                    continue;
                }
                Holder::Live => {}
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "{} has been held for more than {}s by another delivery or mail reader",
                        path.display(),
                        timeout.as_secs()
                    ),
                ));
            }
            std::thread::sleep(RETRY);
        }
    }

    /// Replaces the journal of a held lock (after a repair changed the mailbox's size).
    pub(crate) fn update(&self, journal: &Journal) -> io::Result<()> {
        let mut temp = self.path.as_os_str().to_owned();
        temp.push(format!(".{}.{}.update", host(), std::process::id()));
        let temp = PathBuf::from(temp);
        std::fs::write(&temp, journal.render())?;
        // We hold the lock, so nobody else replaces it meanwhile; rename swaps it whole.
        std::fs::rename(&temp, &self.path).inspect_err(|_| {
            let _ = std::fs::remove_file(&temp);
        })
    }

    /// The lock file's path.
    #[cfg(test)]
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the lock.
    pub(crate) fn release(mut self) -> io::Result<()> {
        self.held = false;
        std::fs::remove_file(&self.path)
    }
}

impl Drop for DotLock {
    fn drop(&mut self) {
        if self.held {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

enum Holder {
    Gone,
    Live,
    Dead(Journal),
    Stale(String),
}

fn inspect(path: &Path, stale_after: Duration) -> io::Result<Holder> {
    let mut text = String::new();
    let meta = match File::open(path) {
        Ok(mut f) => {
            let meta = f.metadata()?;
            let _ = Read::by_ref(&mut f).take(4096).read_to_string(&mut text);
            meta
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Holder::Gone),
        Err(e) => return Err(e),
    };
    if let Some(j) = Journal::parse(&text) {
        return Ok(if j.holder_is_dead() {
            Holder::Dead(j)
        } else {
            Holder::Live
        });
    }
    let age = SystemTime::now()
        .duration_since(meta.modified().unwrap_or(SystemTime::now()))
        .unwrap_or_default();
    Ok(if age > stale_after {
        Holder::Stale(text)
    } else {
        Holder::Live
    })
}

/// Removes the lock file if it still holds `text`. Racy only against another taker of the same
/// stale lock, which then finds it gone and tries the link again.
fn remove_if_unchanged(path: &Path, text: &str) -> io::Result<bool> {
    let mut now = String::new();
    match File::open(path) {
        Ok(mut f) => {
            let _ = Read::by_ref(&mut f).take(4096).read_to_string(&mut now);
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    }
    if now != text {
        return Ok(false);
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// A journal for appending `len` octets to `file`, whose size is `size` now.
pub(crate) fn journal_for(meta: &std::fs::Metadata, len: u64) -> Journal {
    Journal {
        pid: std::process::id(),
        token: process_token(),
        host: host().to_string(),
        dev: meta.dev(),
        ino: meta.ino(),
        size: meta.len(),
        end: meta.len() + len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal() -> Journal {
        Journal {
            pid: 4242,
            token: 0xabc,
            host: "mx".into(),
            dev: 1,
            ino: 2,
            size: 100,
            end: 150,
        }
    }

    #[test]
    fn journals_round_trip_and_foreign_text_is_not_one() {
        let j = journal();
        assert_eq!(Journal::parse(&j.render()), Some(j));
        assert_eq!(Journal::parse("4242:mx\n"), None);
        assert_eq!(Journal::parse(""), None);
        assert_eq!(Journal::parse("postrider pid=1\n"), None);
    }

    #[test]
    fn a_lock_is_exclusive_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let mbox = dir.path().join("bob");
        let meta = File::create(&mbox).unwrap().metadata().unwrap();
        let j = journal_for(&meta, 10);
        let (lock, found) =
            DotLock::acquire(&mbox, &j, Duration::from_secs(1), Duration::from_secs(120)).unwrap();
        assert!(matches!(found, Found::Free));
        assert_eq!(
            Journal::parse(&std::fs::read_to_string(lock.path()).unwrap()),
            Some(j.clone())
        );
        let err = DotLock::acquire(
            &mbox,
            &j,
            Duration::from_millis(120),
            Duration::from_secs(120),
        )
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "{err}");
        lock.release().unwrap();
        let (again, _) =
            DotLock::acquire(&mbox, &j, Duration::from_secs(1), Duration::from_secs(120)).unwrap();
        drop(again);
        assert!(!dir.path().join("bob.lock").exists());
        // No temporary link names are left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_dead_holders_lock_is_taken_over_with_its_journal() {
        let dir = tempfile::tempdir().unwrap();
        let mbox = dir.path().join("bob");
        let meta = File::create(&mbox).unwrap().metadata().unwrap();
        let mut dead = journal_for(&meta, 10);
        dead.token ^= 1; // this pid, but an earlier process
        std::fs::write(dir.path().join("bob.lock"), dead.render()).unwrap();
        let (_lock, found) = DotLock::acquire(
            &mbox,
            &journal_for(&meta, 5),
            Duration::from_secs(1),
            Duration::from_secs(120),
        )
        .unwrap();
        assert!(matches!(found, Found::Abandoned(j) if j == dead));
    }

    #[test]
    fn a_foreign_lock_is_respected_until_stale() {
        let dir = tempfile::tempdir().unwrap();
        let mbox = dir.path().join("bob");
        let meta = File::create(&mbox).unwrap().metadata().unwrap();
        std::fs::write(dir.path().join("bob.lock"), "12345\n").unwrap();
        let j = journal_for(&meta, 5);
        assert!(
            DotLock::acquire(
                &mbox,
                &j,
                Duration::from_millis(100),
                Duration::from_secs(120)
            )
            .is_err()
        );
        std::thread::sleep(Duration::from_millis(30));
        let (_lock, found) =
            DotLock::acquire(&mbox, &j, Duration::from_secs(1), Duration::from_millis(10)).unwrap();
        assert!(matches!(found, Found::Stale));
    }

    #[test]
    fn fcntl_locks_exclude_a_second_open_of_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bob");
        let a = File::create(&path).unwrap();
        let b = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        fcntl_lock(&a, Duration::from_secs(1)).unwrap();
        let err = fcntl_lock(&b, Duration::from_millis(100)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        fcntl_unlock(&a);
        fcntl_lock(&b, Duration::from_millis(100)).unwrap();
    }
}
