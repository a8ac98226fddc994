//! Maildir delivery (the Maildir specification as qmail and Dovecot use it).
//!
//! A message is written under a unique name in `tmp/`, flushed, moved into `new/`, and `new/`
//! is flushed: until the move, readers never see it; after the directory flush, a power cut
//! cannot lose it. `cur/`, `new/` and `tmp/` (and the Maildir itself) are created with mode
//! 0700 when missing and, when delivering as root, belong to the mailbox owner; so does every
//! message file (mode 0600).
//!
//! Unique names are `SECONDS.MMICROSPPIDQCOUNTERRRANDOM.HOST,S=SIZE,W=VSIZE`: the modern form
//! of the specification (Dovecot's own deliveries use the same fields), with `,S=` the file size
//! and `,W=` the size with CRLF line ends, which Dovecot reads instead of opening the file to
//! answer `RFC822.SIZE`. A kill at any moment leaves at worst a file in `tmp/` (Dovecot deletes
//! those after 36 hours), never a partial message in `new/`.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::error::{StoreError, StoreStep};
use super::fsutil::{self, Owner};

/// A Maildir at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Maildir {
    path: PathBuf,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The host part of unique names: `/` and `:` are reserved in them and become `\057` and
/// `\072`, as the specification says.
fn host_part() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        let mut buf = [0u8; 256];
        // SAFETY: the buffer is valid for its length; gethostname NUL-terminates on success.
        let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        let name = if rc == 0 {
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            String::from_utf8_lossy(&buf[..end]).into_owned()
        } else {
            "localhost".into()
        };
        name.replace('/', "\\057").replace(':', "\\072")
    })
}

/// A name no other delivery on any host uses: time, pid, a per-process counter and random bits.
pub(crate) fn unique_name(size: usize, vsize: usize) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "{}.M{}P{}Q{}R{:016x}.{},S={size},W={vsize}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        rand::random::<u64>(),
        host_part(),
    )
}

/// The size of `message` (LF line ends) once each LF is sent as CRLF, as IMAP counts it.
fn virtual_size(message: &[u8]) -> usize {
    message.len() + memchr::memchr_iter(b'\n', message).count()
}

impl Maildir {
    /// The Maildir at `path` (its `cur/`, `new/`, `tmp/` are created when mail arrives).
    pub fn new(path: impl Into<PathBuf>) -> Maildir {
        Maildir { path: path.into() }
    }

    /// The Maildir's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the Maildir and its three directories where missing. Missing parents are
    /// created like `mkdir -p` (mode 0755, the running user's), except the owner's home:
    /// a Maildir below a home that does not exist is refused, since creating someone's home
    /// as root would be a guess.
    pub fn create(&self, owner: Option<Owner>, home: Option<&Path>) -> Result<(), StoreError> {
        let err = |p: &Path, e| StoreError::new(StoreStep::Create, p, e);
        if !self.path.is_dir() {
            if let Some(home) = home
                && self.path.starts_with(home)
                && !home.is_dir()
            {
                return Err(err(
                    home,
                    io::Error::new(
                        io::ErrorKind::NotFound,
                        "the mailbox owner's home directory does not exist",
                    ),
                ));
            }
            if let Some(parent) = self.path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| err(parent, e))?;
            }
            fsutil::ensure_dir(&self.path, 0o700, owner).map_err(|e| err(&self.path, e))?;
        }
        for sub in ["cur", "new", "tmp"] {
            let p = self.path.join(sub);
            fsutil::ensure_dir(&p, 0o700, owner).map_err(|e| err(&p, e))?;
        }
        Ok(())
    }

    /// Delivers `message` (LF line ends, trace fields already added) and returns the path of
    /// the new file in `new/`. Blocking: call it from a blocking thread.
    pub fn deliver(
        &self,
        message: &[u8],
        owner: Option<Owner>,
        home: Option<&Path>,
    ) -> Result<PathBuf, StoreError> {
        self.create(owner, home)?;
        fn open<T>(p: &Path, r: io::Result<T>) -> Result<T, StoreError> {
            r.map_err(|e| StoreError::new(StoreStep::Open, p, e))
        }
        let root = open(&self.path, fsutil::open_dir(&self.path))?;
        let tmp_path = self.path.join("tmp");
        let new_path = self.path.join("new");
        let tmp = open(&tmp_path, fsutil::open_dir_at(&root, "tmp"))?;
        let new = open(&new_path, fsutil::open_dir_at(&root, "new"))?;
        for (fd, p) in [(&root, &self.path), (&tmp, &tmp_path), (&new, &new_path)] {
            let meta = open(p, fsutil::fstat(fd))?;
            open(p, fsutil::check_owner(&meta, owner, p))?;
        }
        let name = unique_name(message.len(), virtual_size(message));
        let file_path = tmp_path.join(&name);
        let mut file = fsutil::create_at(&tmp, &name)
            .map_err(|e| StoreError::new(StoreStep::Create, &file_path, e))?;
        let written = (|| {
            if let Some(o) = owner {
                fsutil::fchown(&file, o).map_err(|e| (StoreStep::Create, e))?;
            }
            file.write_all(message).map_err(|e| (StoreStep::Write, e))?;
            // The file is new: its size is flushed with its data.
            file.sync_data().map_err(|e| (StoreStep::Sync, e))?;
            Ok(())
        })();
        drop(file);
        if let Err((step, e)) = written {
            let _ = fsutil::unlink_at(&tmp, &name);
            return Err(StoreError::new(step, &file_path, e));
        }
        if let Err(e) = fsutil::move_noreplace(&tmp, &new, &name) {
            let _ = fsutil::unlink_at(&tmp, &name);
            return Err(StoreError::new(StoreStep::Rename, &new_path, e));
        }
        fsutil::sync_dir(&new).map_err(|e| StoreError::new(StoreStep::Sync, &new_path, e))?;
        Ok(new_path.join(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_message_lands_in_new_with_its_sizes_and_private_modes() {
        let dir = tempfile::tempdir().unwrap();
        let md = Maildir::new(dir.path().join("home/Maildir"));
        std::fs::create_dir(dir.path().join("home")).unwrap();
        let msg = b"Subject: hi\n\nline\n";
        let path = md
            .deliver(msg, None, Some(&dir.path().join("home")))
            .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), msg);
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(name.ends_with(",S=18,W=21"), "{name}");
        assert!(path.parent().unwrap().ends_with("Maildir/new"));
        for sub in ["", "cur", "new", "tmp"] {
            let mode = std::fs::metadata(md.path().join(sub))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700, "{sub}");
        }
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(std::fs::read_dir(md.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn names_are_unique_within_a_process() {
        let a = unique_name(1, 1);
        let b = unique_name(1, 1);
        assert_ne!(a, b);
        assert!(!a.contains('/') && !a.contains(':'));
    }

    #[test]
    fn a_missing_home_is_refused_rather_than_created() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("nohome");
        let md = Maildir::new(home.join("Maildir"));
        let err = md.deliver(b"x\n", None, Some(&home)).unwrap_err();
        assert!(
            err.to_string().contains("home directory does not exist"),
            "{err}"
        );
        assert!(!home.exists());
    }

    #[test]
    fn a_symlinked_new_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let md = Maildir::new(dir.path().join("Maildir"));
        md.create(None, None).unwrap();
        std::fs::remove_dir(md.path().join("new")).unwrap();
        std::fs::create_dir(dir.path().join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), md.path().join("new")).unwrap();
        assert!(md.deliver(b"x\n", None, None).is_err());
        assert_eq!(
            std::fs::read_dir(dir.path().join("elsewhere"))
                .unwrap()
                .count(),
            0
        );
    }
}
