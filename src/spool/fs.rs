//! The durable filesystem spool.
//!
//! Each message is a body file written once (`queue/ID.df`, sendmail's `df`) and a small record
//! with the envelope and delivery state (`queue/ID.qf`, sendmail's `qf`; see [`super::record`]).
//! The record is the commit point: a message exists when its record does.
//!
//! - **insert**: create the body with `O_EXCL` and lock it, write, `fdatasync`; write the record
//!   in `tmp/`, `fdatasync`, rename it into `queue/` without replacing anything; `fsync`
//!   `queue/` (shared with concurrent inserts, see `group_commit`). Only then return the id.
//! - **save_state**: write a new record in `tmp/`, `fdatasync`, rename over the old one,
//!   `fsync` `queue/`. A reader sees the old state or the new one.
//! - **remove**: move the record out of `queue/`, `fsync` `queue/`, move the body out; both
//!   become spares that later inserts overwrite instead of creating files (see `spares`).
//! - **claim**: `flock` on the body, whose inode never changes while the message lives.
//! - **scan**: list every record; quarantine unreadable ones to `corrupt/`; delete leftovers of
//!   writers that died (see `scan`).

mod files;
mod group_commit;
mod layout;
mod scan;
mod spares;

use std::fs::{DirBuilder, File, TryLockError};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

use super::record::{self, SpoolRecord};
use super::{Claim, MessageState, QueuedMessage, ScanReport, Spool, SpoolError};
use crate::envelope::Envelope;
use crate::queue_id::QueueId;
use files::{Created, Locked};
use group_commit::DirSync;
use layout::Layout;
use spares::Spares;

/// How many fresh ids an insert tries before giving up: each retry means another process
/// generated the same id in the same microsecond, or a scan raced the creation.
const CREATE_ATTEMPTS: usize = 8;

/// The crash-safe filesystem spool.
///
/// Cheap to clone: clones share the directory handles and the group commit, so an engine and
/// an admin interface can hold the same spool. Several processes may open the same directory;
/// claims, inserts and scans coordinate through `flock`.
///
/// ```no_run
/// use postrider::spool::{FsSpool, Spool};
/// use postrider::{Address, Envelope, ReversePath};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let spool = FsSpool::open("/var/spool/postrider")?;
/// let envelope = Envelope::new(
///     ReversePath::parse("pbx@example.com")?,
///     [Address::parse("alice@example.org")?],
/// );
/// let id = spool.insert(&envelope, "Subject: hi\r\n\r\nhello\r\n".into(), std::time::SystemTime::now()).await?;
/// // The message now survives a power loss.
/// let report = spool.scan().await?;
/// assert!(report.messages.iter().any(|m| m.id == id));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct FsSpool {
    inner: Arc<Inner>,
}

struct Inner {
    layout: Layout,
    /// Group commit of `queue/`, where every commit (rename or unlink) happens.
    queue_sync: DirSync,
    /// Files of removed messages, for new ones to reuse.
    spares: Spares,
}

impl std::fmt::Debug for FsSpool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsSpool")
            .field("path", &self.inner.layout.root)
            .finish()
    }
}

impl FsSpool {
    /// Opens the spool in `dir`, creating it and its subdirectories (mode 0700) when missing.
    ///
    /// Fails with [`SpoolError::Config`] when `dir` is not a directory, and with
    /// [`SpoolError::NotWritable`] or [`SpoolError::NoSpace`] when a test file cannot be
    /// created in it, so a misconfigured spool is found at start-up rather than at the first
    /// message. This blocks briefly; call it before serving, or from a blocking thread.
    pub fn open(dir: impl AsRef<Path>) -> Result<FsSpool, SpoolError> {
        let layout = Layout::new(dir.as_ref());
        make_dir(&layout.root, &layout.root)?;
        for sub in [&layout.queue, &layout.tmp, &layout.corrupt] {
            make_dir(sub, &layout.root)?;
        }
        probe_writable(&layout)?;
        let queue = files::open_dir(&layout.queue)
            .map_err(|e| SpoolError::io("open spool directory", &layout.queue, e))?;
        // The subdirectories themselves must survive a power loss before anything is committed
        // in them.
        files::open_dir(&layout.root)
            .and_then(|d| d.sync_all())
            .map_err(|e| SpoolError::io("fsync spool directory", &layout.root, e))?;
        Ok(FsSpool {
            inner: Arc::new(Inner {
                spares: Spares::new(&layout.tmp),
                layout,
                queue_sync: DirSync::new(queue),
            }),
        })
    }

    /// The spool directory, for diagnostics.
    pub fn path(&self) -> &Path {
        &self.inner.layout.root
    }

    /// Runs `f` on a blocking thread: file I/O never stalls the async runtime.
    async fn blocking<T, F>(&self, f: F) -> Result<T, SpoolError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, SpoolError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        match tokio::task::spawn_blocking(move || f(&inner)).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(SpoolError::Io {
                op: "run a spool task",
                path: self.inner.layout.root.clone(),
                source: io::Error::other(e.to_string()),
            }),
        }
    }
}

fn make_dir(path: &Path, root: &Path) -> Result<(), SpoolError> {
    let not_a_dir = || SpoolError::Config {
        path: root.to_path_buf(),
        reason: format!("{} exists and is not a directory", path.display()),
    };
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => return Ok(()),
        Ok(_) => return Err(not_a_dir()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(SpoolError::io("inspect spool directory", path, e)),
    }
    match DirBuilder::new()
        .recursive(true)
        .mode(files::DIR_MODE)
        .create(path)
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(not_a_dir()),
        Err(e) => Err(SpoolError::io("create spool directory", path, e)),
    }
}

fn probe_writable(layout: &Layout) -> Result<(), SpoolError> {
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

/// Files to delete if an insert fails part-way, so a failed insert leaves nothing behind. The
/// record goes first (it is the commit point), the body last; all while the body is still
/// locked, so no scan or claim sees the message in between.
struct Undo {
    paths: Vec<PathBuf>,
}

impl Undo {
    fn disarm(mut self) {
        self.paths.clear();
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        for path in self.paths.iter().rev() {
            if let Err(e) = files::remove_if_exists(path) {
                tracing::warn!(path = %path.display(), error = %e,
                    "could not remove a file of a failed insert; the next scan will");
            }
        }
    }
}

impl Inner {
    /// Inserts a message; returns its id with the body still locked, i.e. claimed.
    fn insert(
        &self,
        envelope: Envelope,
        body: Bytes,
        arrival: SystemTime,
    ) -> Result<(QueueId, Locked), SpoolError> {
        let result = self.insert_files(envelope, body, arrival);
        if let Err(SpoolError::NoSpace { .. }) = result {
            // Give back the space the spares hold, so the sender's retry can succeed.
            self.spares.clear();
        }
        result
    }

    fn insert_files(
        &self,
        envelope: Envelope,
        body: Bytes,
        arrival: SystemTime,
    ) -> Result<(QueueId, Locked), SpoolError> {
        let (id, body_path, mut body_file, recycled) = self.create_body()?;
        let mut undo = Undo {
            paths: vec![body_path.clone()],
        };
        let written = if recycled {
            spares::overwrite_durably(&mut body_file.0, &body)
        } else {
            files::write_durably(&mut body_file.0, &body)
        };
        written.map_err(|e| SpoolError::io("write body", &body_path, e))?;

        let state = MessageState::new(&envelope, body.len() as u64, arrival);
        let record = record::render(&SpoolRecord {
            id,
            envelope,
            state,
        });
        let (tmp_path, tmp_file) = self.write_tmp_record(&id, &record)?;
        undo.paths.push(tmp_path.clone());
        let record_path = self.layout.record(&id);
        match files::rename_noreplace(&tmp_path, &record_path) {
            Ok(()) => undo.paths.push(record_path),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(SpoolError::Io {
                    op: "commit record (another message has this id; refusing to replace it)",
                    path: record_path,
                    source: e,
                });
            }
            Err(e) => return Err(SpoolError::io("commit record", &record_path, e)),
        }
        self.sync_queue()?;
        undo.disarm();
        drop(tmp_file);
        // The lock taken at creation is what `claim` takes: holding it on makes the caller
        // the message's claimant from the first instant, with nobody else in between.
        Ok((id, body_file))
    }

    /// Creates (or takes from the spares: `true`) and locks the body file of a new id.
    fn create_body(&self) -> Result<(QueueId, PathBuf, Locked, bool), SpoolError> {
        if let Some((spare, locked)) = self.spares.take() {
            for _ in 0..CREATE_ATTEMPTS {
                let id = QueueId::generate();
                let path = self.layout.body(&id);
                // Locked all along, so a scan leaves it alone in `queue/` as in `tmp/`.
                match files::rename_noreplace(&spare, &path) {
                    Ok(()) => return Ok((id, path, locked, true)),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                    Err(_) => break,
                }
            }
            // Unusable: a scan may delete it once our lock goes.
            drop(locked);
        }
        let mut last = None;
        for _ in 0..CREATE_ATTEMPTS {
            let id = QueueId::generate();
            let path = self.layout.body(&id);
            match files::create_locked(&path) {
                Ok(Created::File(f)) => return Ok((id, path, f, false)),
                Ok(Created::Exists) => last = Some(path),
                Ok(Created::Unlinked) => last = Some(path),
                Err(e) => return Err(SpoolError::io("create body", &path, e)),
            }
        }
        let path = last.unwrap_or_else(|| self.layout.queue.clone());
        Err(SpoolError::Io {
            op: "create body (every fresh id was taken)",
            path,
            source: io::Error::from(io::ErrorKind::AlreadyExists),
        })
    }

    /// Writes `bytes` durably to a new, locked temporary record for `id`.
    fn write_tmp_record(
        &self,
        id: &QueueId,
        bytes: &[u8],
    ) -> Result<(PathBuf, Locked), SpoolError> {
        // A spare is already a locked file in `tmp/`: its name serves as the temporary one.
        if let Some((path, mut f)) = self.spares.take() {
            if let Err(e) = spares::overwrite_durably(&mut f.0, bytes) {
                let _ = files::remove_if_exists(&path);
                return Err(SpoolError::io("write record", &path, e));
            }
            return Ok((path, f));
        }
        for _ in 0..CREATE_ATTEMPTS {
            let path = self.layout.tmp_record(id);
            match files::create_locked(&path) {
                Ok(Created::File(mut f)) => {
                    if let Err(e) = files::write_durably(&mut f.0, bytes) {
                        let _ = files::remove_if_exists(&path);
                        return Err(SpoolError::io("write record", &path, e));
                    }
                    return Ok((path, f));
                }
                Ok(Created::Exists) | Ok(Created::Unlinked) => continue,
                Err(e) => return Err(SpoolError::io("create record", &path, e)),
            }
        }
        Err(SpoolError::Io {
            op: "create record (every temporary name was taken)",
            path: self.layout.tmp.clone(),
            source: io::Error::from(io::ErrorKind::AlreadyExists),
        })
    }

    fn sync_queue(&self) -> Result<(), SpoolError> {
        self.queue_sync
            .sync()
            .map_err(|e| SpoolError::io("fsync spool directory", &self.layout.queue, e))
    }

    fn read_record(&self, id: &QueueId) -> Result<SpoolRecord, SpoolError> {
        let path = self.layout.record(id);
        let bytes = files::read_if_exists(&path)
            .map_err(|e| SpoolError::io("read record", &path, e))?
            .ok_or(SpoolError::NotFound(*id))?;
        let record = record::parse(&bytes).map_err(|e| SpoolError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if record.id != *id {
            return Err(SpoolError::Corrupt {
                path,
                reason: format!("it names message {}", record.id),
            });
        }
        Ok(record)
    }

    fn body(&self, id: &QueueId) -> Result<Bytes, SpoolError> {
        let path = self.layout.body(id);
        files::read_if_exists(&path)
            .map_err(|e| SpoolError::io("read body", &path, e))?
            .map(Bytes::from)
            .ok_or(SpoolError::NotFound(*id))
    }

    fn save_state(&self, id: &QueueId, state: MessageState) -> Result<(), SpoolError> {
        let mut record = self.read_record(id)?;
        let (want, have) = (record.envelope.recipients.len(), state.recipients.len());
        if want != have {
            return Err(SpoolError::InvalidState {
                id: *id,
                reason: format!("it has {have} recipient states for {want} envelope recipients"),
            });
        }
        record.state = state;
        let (tmp_path, tmp_file) = self.write_tmp_record(id, &record::render(&record))?;
        let record_path = self.layout.record(id);
        if let Err(e) = std::fs::rename(&tmp_path, &record_path) {
            let _ = files::remove_if_exists(&tmp_path);
            return Err(SpoolError::io("replace record", &record_path, e));
        }
        drop(tmp_file);
        self.sync_queue()?;
        // A `remove` in another process between our read and our rename would leave our record
        // without a body. Callers hold the claim, which rules that out; if one did not, undo.
        let body_path = self.layout.body(id);
        if !files::exists(&body_path).map_err(|e| SpoolError::io("inspect body", &body_path, e))? {
            files::remove_if_exists(&record_path)
                .map_err(|e| SpoolError::io("remove record", &record_path, e))?;
            return Err(SpoolError::NotFound(*id));
        }
        Ok(())
    }

    fn remove(&self, id: &QueueId) -> Result<(), SpoolError> {
        let record_path = self.layout.record(id);
        let record_spare = match self.spares.retire(&record_path) {
            Ok(spare) => spare,
            // Without a record there is no message; a body alone may be an insert in flight,
            // which only a scan may judge.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(SpoolError::NotFound(*id)),
            Err(e) => return Err(SpoolError::io("remove record", &record_path, e)),
        };
        self.sync_queue()?;
        // Reused only now: overwritten before the removal was durable, a crash could bring it
        // back under this message's name with another message's record in it.
        if let Some((spare, size)) = record_spare {
            self.spares.keep(spare, size);
        }
        // Not synced: if a crash brings the body back, the next scan removes it as an orphan
        // (whatever it holds by then: without its record it is never delivered).
        let body_path = self.layout.body(id);
        match self.spares.retire(&body_path) {
            Ok(Some((spare, size))) => self.spares.keep(spare, size),
            Ok(None) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(SpoolError::io("remove body", &body_path, e)),
        }
        Ok(())
    }

    fn claim(&self, id: &QueueId) -> Result<Option<Claim>, SpoolError> {
        let body_path = self.layout.body(id);
        let file = match File::open(&body_path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(SpoolError::NotFound(*id)),
            Err(e) => return Err(SpoolError::io("open body", &body_path, e)),
        };
        let locked = match file.try_lock() {
            Ok(()) => Locked(file),
            Err(TryLockError::WouldBlock) => return Ok(None),
            Err(TryLockError::Error(e)) => return Err(SpoolError::io("lock body", &body_path, e)),
        };
        // Locked; now make sure it is still a message: not removed since we opened it, and
        // committed (an insert in flight holds the lock until its record is durable).
        let linked = locked
            .0
            .metadata()
            .map_err(|e| SpoolError::io("inspect body", &body_path, e))?
            .nlink()
            > 0;
        let record_path = self.layout.record(id);
        let committed = files::exists(&record_path)
            .map_err(|e| SpoolError::io("inspect record", &record_path, e))?;
        if !(linked && committed) {
            return Err(SpoolError::NotFound(*id));
        }
        Ok(Some(Claim::new(locked)))
    }
}

#[async_trait]
impl Spool for FsSpool {
    async fn insert(
        &self,
        envelope: &Envelope,
        body: Bytes,
        arrival: SystemTime,
    ) -> Result<QueueId, SpoolError> {
        let envelope = envelope.clone();
        self.blocking(move |inner| inner.insert(envelope, body, arrival).map(|(id, _)| id))
            .await
    }

    async fn insert_claimed(
        &self,
        envelope: &Envelope,
        body: Bytes,
        arrival: SystemTime,
    ) -> Result<(QueueId, Option<Claim>), SpoolError> {
        let envelope = envelope.clone();
        self.blocking(move |inner| {
            inner
                .insert(envelope, body, arrival)
                .map(|(id, locked)| (id, Some(Claim::new(locked))))
        })
        .await
    }

    async fn body(&self, id: &QueueId) -> Result<Bytes, SpoolError> {
        let id = *id;
        self.blocking(move |inner| inner.body(&id)).await
    }

    async fn load(&self, id: &QueueId) -> Result<QueuedMessage, SpoolError> {
        let id = *id;
        self.blocking(move |inner| {
            let r = inner.read_record(&id)?;
            Ok(QueuedMessage {
                id: r.id,
                envelope: r.envelope,
                state: r.state,
            })
        })
        .await
    }

    async fn save_state(&self, id: &QueueId, state: &MessageState) -> Result<(), SpoolError> {
        let (id, state) = (*id, state.clone());
        self.blocking(move |inner| inner.save_state(&id, state))
            .await
    }

    async fn remove(&self, id: &QueueId) -> Result<(), SpoolError> {
        let id = *id;
        self.blocking(move |inner| inner.remove(&id)).await
    }

    async fn scan(&self) -> Result<ScanReport, SpoolError> {
        self.blocking(|inner| scan::scan(&inner.layout, &inner.queue_sync))
            .await
    }

    async fn claim(&self, id: &QueueId) -> Result<Option<Claim>, SpoolError> {
        let id = *id;
        self.blocking(move |inner| inner.claim(&id)).await
    }
}
