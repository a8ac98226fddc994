//! The durable filesystem spool.
//!
//! Each message is one file, `queue/ID` (format 3, see [`super::format`]): a header, the
//! envelope, two state slots reserved at insert, and the body. The file's name in `queue/` is
//! the commit point: a message exists when `queue/ID` holds a file whose checksums match.
//! Every process sees a file there whole; only a power loss during its insert (before the id
//! was returned, so before anyone was told of the message) can leave one whose data never
//! reached the disk, and its checksums tell it apart: empty, it is deleted; otherwise it is
//! quarantined, at the scan or at the first read of its body.
//!
//! - **insert**: create a file in `tmp/` with `O_EXCL` (or take a spare, see `spares`) and lock
//!   it; write header, envelope, slots and body, with the body's checksum (format 3); rename
//!   it into `queue/` without replacing anything (`renameat2(RENAME_NOREPLACE)`); make data
//!   and name durable, the two flushes side by side. Only then return the id. The lock becomes
//!   the message's claim.
//! - **save_state**: write the new state into the slot that does not hold the newest state,
//!   with the next sequence number and a checksum, in place, and `fdatasync` it: no new
//!   block, no rename, no directory sync. A torn write leaves the other slot, so a reader sees the previous state or
//!   the new one, never a mixture; a save that returned is never undone.
//! - **remove**: move the file out of `queue/`; the next flush of `queue/` makes that durable
//!   (an insert's, or the spool's own at most `removals::SYNC_DELAY` later, see `removals`).
//!   Once durable the file becomes a spare a later insert overwrites instead of allocating an
//!   inode.
//! - **claim**: `flock` on the message file, whose inode never changes while the message lives.
//! - **scan**: list every message; quarantine unreadable files to `corrupt/`; delete leftovers
//!   of writers that died (see `scan`). Format-1 messages (`ID.qf` + `ID.df`) are converted
//!   first (see `convert`).
//!
//! "Durable", for inserts and removals, is one of two [`CommitMode`]s. **Per file**:
//! `fdatasync` of each file (in parallel on the blocking pool, where the device merges the
//! flushes) and one group-committed `fsync` of `queue/` for the renames of a batch. **File
//! system**: when the spool has a file system of its own, one group-committed `syncfs` per
//! batch makes every file and name of the batch durable at once. Either way, concurrent callers
//! share the flushes (`group_commit`).

mod convert;
mod dirs;
mod files;
mod group_commit;
mod layout;
mod listing;
mod message;
mod removals;
mod scan;
mod spares;
mod v1;

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

use super::format::{self, FormatError};
use super::slot::{self, Fit};
use super::{
    Claim, MessageState, Quarantined, QueuePage, QueuedMessage, ScanReport, Spool, SpoolError,
};
use crate::envelope::Envelope;
use crate::queue_id::QueueId;
pub use dirs::quarantined_in;
use dirs::{make_dir, not_a_dir, probe_writable};
use files::{Created, Locked, RangeLock};
use group_commit::{Expected, Flush, GroupSync};
use layout::Layout;
use listing::Continuations;
pub use listing::Listing;
use message::ReadError;
use removals::Removals;
use spares::Spares;

/// How many fresh names an insert tries before giving up: each retry means another process
/// generated the same name, or a scan raced the creation.
const CREATE_ATTEMPTS: usize = 8;

/// Messages a streamed scan ([`Spool::scan_each`]) hands over at a time: few enough that
/// the batches in flight hold well under a megabyte, many enough that passing them costs
/// nothing beside reading the files.
const SCAN_BATCH: usize = 256;
/// Batches a streamed scan reads ahead of its caller before it waits.
const SCAN_BATCHES_AHEAD: usize = 4;

/// How a spool makes its writes durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CommitMode {
    /// [`CommitMode::FileSystem`] when the spool directory is a mount point (a file system of
    /// its own), else [`CommitMode::PerFile`].
    #[default]
    Auto,
    /// `fdatasync` of every file written, plus a group-committed `fsync` of `queue/` for the
    /// names. Right for a spool that shares its file system with other work.
    PerFile,
    /// One group-committed `syncfs` per batch of inserts and removals (state updates are
    /// `fdatasync`ed in both modes). It flushes everything dirty on the file system, so it is
    /// only right when the spool has the file system to itself.
    FileSystem,
}

/// How to open an [`FsSpool`].
///
/// ```
/// use postrider::spool::fs::{CommitMode, FsSpoolOptions};
/// let options = FsSpoolOptions::new().commit(CommitMode::PerFile);
/// assert_eq!(options.commit_mode(), CommitMode::PerFile);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct FsSpoolOptions {
    commit: CommitMode,
    read_only: bool,
}

impl FsSpoolOptions {
    /// The defaults: [`CommitMode::Auto`], writable.
    pub fn new() -> FsSpoolOptions {
        FsSpoolOptions::default()
    }

    /// Chooses how writes are made durable.
    pub fn commit(mut self, mode: CommitMode) -> FsSpoolOptions {
        self.commit = mode;
        self
    }

    /// Opens the spool for reading only (`mailq` on a spool it may not write): nothing is
    /// created, converted, cleaned up or quarantined, and every write fails with
    /// [`SpoolError::NotWritable`].
    pub fn read_only(mut self, read_only: bool) -> FsSpoolOptions {
        self.read_only = read_only;
        self
    }

    /// The commit mode asked for.
    pub fn commit_mode(&self) -> CommitMode {
        self.commit
    }
}

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
    /// PerFile or FileSystem (never Auto).
    mode: CommitMode,
    read_only: bool,
    /// Group commit of names (PerFile: `fsync` of `queue/`) or of everything (FileSystem).
    sync: GroupSync,
    /// Files of removed messages, for new ones to reuse.
    spares: Spares,
    /// Format-1 records quarantined while converting at open, reported by the next scan.
    pending_quarantine: Mutex<Vec<Quarantined>>,
    /// Listings a pager is walking through ([`Spool::list`]).
    continuations: Continuations,
    /// Removals done but not yet flushed.
    removals: Removals,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone (or the runtime that ran the delayed flush): make the last
        // removals durable now rather than leave them to the kernel's writeback.
        if let Err(e) = self.sync_removals() {
            tracing::warn!(spool = %self.layout.root.display(), error = %e,
                "could not make the last removals durable");
        }
    }
}

impl std::fmt::Debug for FsSpool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsSpool")
            .field("path", &self.inner.layout.root)
            .field("mode", &self.inner.mode)
            .field("read_only", &self.inner.read_only)
            .finish()
    }
}

impl FsSpool {
    /// Opens the spool in `dir` with the default options ([`FsSpool::open_with`]).
    pub fn open(dir: impl AsRef<Path>) -> Result<FsSpool, SpoolError> {
        FsSpool::open_with(dir, FsSpoolOptions::default())
    }

    /// Opens the spool in `dir`, creating it and its subdirectories (mode 0700) when missing,
    /// and converts any messages of spool format 1 (`queue/ID.qf` + `ID.df`) to format 3,
    /// logging "converted N messages from format 1".
    ///
    /// Fails with [`SpoolError::Config`] when `dir` is not a directory, and with
    /// [`SpoolError::NotWritable`] or [`SpoolError::NoSpace`] when a test file cannot be
    /// created in it, so a misconfigured spool is found at start-up rather than at the first
    /// message. A read-only open ([`FsSpoolOptions::read_only`]) only checks that the
    /// directories exist. This blocks (briefly, unless there is a format-1 queue to convert);
    /// call it before serving, or from a blocking thread.
    pub fn open_with(
        dir: impl AsRef<Path>,
        options: FsSpoolOptions,
    ) -> Result<FsSpool, SpoolError> {
        let layout = Layout::new(dir.as_ref());
        if options.read_only {
            for sub in [&layout.root, &layout.queue] {
                match std::fs::metadata(sub) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => return Err(not_a_dir(sub, &layout.root)),
                    Err(e) => return Err(SpoolError::io("open spool directory", sub, e)),
                }
            }
        } else {
            make_dir(&layout.root, &layout.root)?;
            for sub in [&layout.queue, &layout.tmp, &layout.corrupt] {
                make_dir(sub, &layout.root)?;
            }
            probe_writable(&layout)?;
        }
        let mode = match options.commit {
            CommitMode::Auto => match files::is_mount_point(&layout.root) {
                Ok(true) => CommitMode::FileSystem,
                Ok(false) => CommitMode::PerFile,
                Err(e) => return Err(SpoolError::io("inspect spool directory", &layout.root, e)),
            },
            other => other,
        };
        let queue = files::open_dir(&layout.queue)
            .map_err(|e| SpoolError::io("open spool directory", &layout.queue, e))?;
        let flush = match mode {
            CommitMode::FileSystem => Flush::FileSystem,
            _ => Flush::Directory,
        };
        if !options.read_only {
            // The subdirectories themselves must survive a power loss before anything is
            // committed in them.
            files::open_dir(&layout.root)
                .and_then(|d| d.sync_all())
                .map_err(|e| SpoolError::io("fsync spool directory", &layout.root, e))?;
        }
        tracing::debug!(spool = %layout.root.display(), ?mode, read_only = options.read_only,
            "spool opened");
        let spool = FsSpool {
            inner: Arc::new(Inner {
                spares: Spares::new(&layout.tmp),
                layout,
                mode,
                read_only: options.read_only,
                sync: GroupSync::new(queue, flush),
                pending_quarantine: Mutex::new(Vec::new()),
                continuations: Continuations::default(),
                removals: Removals::default(),
            }),
        };
        if !options.read_only {
            let quarantined = spool.inner.convert()?;
            spool.inner.note_quarantined(quarantined);
        }
        Ok(spool)
    }

    /// The spool directory, for diagnostics.
    pub fn path(&self) -> &Path {
        &self.inner.layout.root
    }

    /// How this spool makes writes durable ([`CommitMode::Auto`] resolved).
    pub fn commit_mode(&self) -> CommitMode {
        self.inner.mode
    }

    /// Lists the queue one message at a time, oldest first, without holding it all in memory
    /// (only the ids, 16 octets each, are read up front), for `mailq` on a large queue.
    ///
    /// Each item is a message, or the error that kept one from being read (a damaged file is
    /// [`SpoolError::Corrupt`] naming it). A message removed while the listing runs is
    /// skipped. Nothing is changed on disk: no cleanup, no conversion, no quarantine. This
    /// blocks on file I/O: iterate it on a blocking thread.
    pub fn listing(&self) -> Result<Listing, SpoolError> {
        Listing::new(self.inner.layout.clone())
    }

    /// The files earlier scans set aside in `corrupt/` because they did not read, sorted by
    /// name. They stay until an administrator removes them, and `mailq` and the doctor keep
    /// saying so: a quarantined message is mail nobody delivers. Blocks on a directory read.
    pub fn quarantined(&self) -> Result<Vec<PathBuf>, SpoolError> {
        quarantined_in(&self.inner.layout.root)
    }

    /// Makes every removal so far durable now, instead of with the next insert or at most
    /// 50 ms later ([`Spool::remove`]): for a caller that must know a deleted message cannot
    /// come back even after a power loss.
    pub async fn sync_removals(&self) -> Result<(), SpoolError> {
        self.blocking(|inner| inner.sync_removals()).await
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

/// The delayed flush of removals: after [`removals::SYNC_DELAY`], unless an insert's flush
/// covered them meanwhile (then it finds nothing to do). A flush that fails is tried again
/// after the same delay, with a warning each time, until one succeeds or the spool is closed
/// (closing it flushes them: it holds no handle meanwhile).
async fn sync_removals_later(spool: Weak<Inner>) {
    loop {
        tokio::time::sleep(removals::SYNC_DELAY).await;
        let Some(running) = spool.upgrade() else {
            return;
        };
        let flushed = tokio::task::spawn_blocking(move || {
            if running.removals.disarm() {
                running.sync_names()
            } else {
                Ok(())
            }
        })
        .await;
        match flushed {
            Ok(Ok(())) => return,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "removals not yet durable; trying again");
            }
            // The runtime is shutting down: dropping the last handle flushes them.
            Err(_) => return,
        }
        match spool.upgrade() {
            Some(inner) if inner.removals.rearm() => {}
            _ => return,
        }
    }
}

/// Files to delete if an insert fails part-way, so a failed insert leaves nothing behind; all
/// while the file is still locked, so no claim takes the message in between.
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

/// A read-only spool refuses writes before touching anything.
fn refuse_read_only(layout: &Layout) -> SpoolError {
    SpoolError::NotWritable {
        path: layout.root.clone(),
        source: io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the spool was opened read-only",
        ),
    }
}

impl Inner {
    /// Makes the renames and unlinks in `queue/` made before the call durable, the pending
    /// removals' among them, whose files then become spares.
    fn sync_names(&self) -> Result<(), SpoolError> {
        let mark = self.removals.mark();
        self.sync.sync().map_err(|e| self.flush_failed(e))?;
        self.removals_flushed(mark);
        Ok(())
    }

    /// Makes a file just renamed into `queue/` durable, its data and its name, for a writer
    /// that announced itself ([`GroupSync::expect`]). Per file, the file's `fdatasync` runs
    /// while the directory flush of its batch runs (led by whichever member gets there
    /// first), so an insert waits for one flush, not for two in a row; on a file system of
    /// the spool's own, one `syncfs` covers both.
    fn make_durable(
        &self,
        writer: Expected<'_>,
        file: &File,
        path: &Path,
    ) -> Result<(), SpoolError> {
        let mark = self.removals.mark();
        let joined = writer.join();
        if self.mode != CommitMode::FileSystem {
            file.sync_data()
                .map_err(|e| SpoolError::io("fdatasync message file", path, e))?;
        }
        joined.wait().map_err(|e| self.flush_failed(e))?;
        self.removals_flushed(mark);
        Ok(())
    }

    fn flush_failed(&self, e: io::Error) -> SpoolError {
        match self.mode {
            CommitMode::FileSystem => SpoolError::io("syncfs spool", &self.layout.root, e),
            _ => SpoolError::io("fsync spool directory", &self.layout.queue, e),
        }
    }

    /// The removals up to `mark` are durable: their files become spares.
    fn removals_flushed(&self, mark: removals::Mark) {
        for (spare, size) in self.removals.flushed(mark) {
            self.spares.keep(spare, size);
        }
    }

    /// Makes every removal made so far durable (nothing to do when none is pending).
    fn sync_removals(&self) -> Result<(), SpoolError> {
        if self.removals.any_pending() {
            self.sync_names()
        } else {
            Ok(())
        }
    }

    fn writable(&self) -> Result<(), SpoolError> {
        if self.read_only {
            Err(refuse_read_only(&self.layout))
        } else {
            Ok(())
        }
    }

    fn note_quarantined(&self, quarantined: Vec<Quarantined>) {
        if !quarantined.is_empty() {
            self.pending_quarantine
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(quarantined);
        }
    }

    fn convert(&self) -> Result<Vec<Quarantined>, SpoolError> {
        convert::convert(&self.layout, self.mode, &self.sync)
    }

    /// Inserts a message; returns its id with its file still locked, i.e. claimed.
    fn insert(
        &self,
        envelope: Envelope,
        body: Bytes,
        arrival: SystemTime,
    ) -> Result<(QueueId, Locked), SpoolError> {
        self.writable()?;
        let mut result = self.insert_file(&envelope, &body, arrival);
        if let Err(SpoolError::NoSpace { .. }) = result {
            if self.removals.any_pending() {
                // Files of recent removals are held back until the removals are durable:
                // flush them, and the message may fit into one of them.
                self.sync_removals()?;
                result = self.insert_file(&envelope, &body, arrival);
            }
            if let Err(SpoolError::NoSpace { .. }) = result {
                // Give back the space the spares hold, so the sender's retry can succeed.
                self.spares.clear();
            }
        }
        result
    }

    fn insert_file(
        &self,
        envelope: &Envelope,
        body: &Bytes,
        arrival: SystemTime,
    ) -> Result<(QueueId, Locked), SpoolError> {
        let id = QueueId::generate();
        let state = MessageState::new(envelope, body.len() as u64, arrival);
        let meta =
            format::render(&id, envelope, &state, body).map_err(|e| SpoolError::InvalidState {
                id,
                reason: e.to_string(),
            })?;
        // Announced before the write, so a flush that starts meanwhile waits for this insert's
        // rename instead of leaving it a flush of its own.
        let writer = self.sync.expect();
        let (tmp_path, file, old_len) = self.new_file(&id)?;
        let recycled = old_len.is_some();
        let mut undo = Undo {
            paths: vec![tmp_path.clone()],
        };
        {
            // A recycled file may still be open in a state update that began before its
            // message was removed: rewrite it only under the lock such updates hold, so the
            // update then finds another message's id in the header and writes nothing.
            let _range = if recycled {
                Some(
                    RangeLock::wait(&file.0)
                        .map_err(|e| SpoolError::io("lock message file", &tmp_path, e))?,
                )
            } else {
                None
            };
            files::write_parts(&file.0, &[&meta, body], old_len.unwrap_or(0), false)
                .map_err(|e| SpoolError::io("write message file", &tmp_path, e))?;
        }
        // Named before it is durable: every process sees a whole file (the writes are done),
        // and after a power loss a file whose data did not reach the disk fails its checksums
        // (format 3) and is never taken for a message. Nobody was told of it: the id is
        // returned only once data and name are durable.
        let path = self.layout.message(&id);
        match files::rename_noreplace(&tmp_path, &path) {
            Ok(()) => undo.paths.push(path.clone()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(SpoolError::Io {
                    op: "commit message file (another message has this id; refusing to replace it)",
                    path,
                    source: e,
                });
            }
            Err(e) => return Err(SpoolError::io("commit message file", &path, e)),
        }
        self.make_durable(writer, &file.0, &path)?;
        undo.disarm();
        // The lock taken at creation is what `claim` takes: holding it on makes the caller
        // the message's claimant from the first instant, with nobody else in between.
        Ok((id, file))
    }

    /// A locked file in `tmp/` to write a new message into: a spare (with its length) or a
    /// new file (`None`).
    fn new_file(&self, id: &QueueId) -> Result<(PathBuf, Locked, Option<u64>), SpoolError> {
        if let Some((path, locked, len)) = self.spares.take() {
            return Ok((path, locked, Some(len)));
        }
        for _ in 0..CREATE_ATTEMPTS {
            let path = self.layout.tmp_message(id);
            match files::create_locked(&path) {
                Ok(Created::File(f)) => return Ok((path, f, None)),
                Ok(Created::Exists) | Ok(Created::Unlinked) => continue,
                Err(e) => return Err(SpoolError::io("create message file", &path, e)),
            }
        }
        Err(SpoolError::Io {
            op: "create message file (every temporary name was taken)",
            path: self.layout.tmp.clone(),
            source: io::Error::from(io::ErrorKind::AlreadyExists),
        })
    }

    /// Opens `queue/ID`: `None` when there is no such file.
    fn open_message(
        &self,
        id: &QueueId,
        write: bool,
    ) -> Result<Option<(PathBuf, File)>, SpoolError> {
        let path = self.layout.message(id);
        match OpenOptions::new().read(true).write(write).open(&path) {
            Ok(f) => Ok(Some((path, f))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(SpoolError::io("open message file", &path, e)),
        }
    }

    /// Turns a failed read of `file` into the error to report: `NotFound` when the file was
    /// removed while we read it (what we read may be another message's), else what failed.
    fn read_failure(
        &self,
        id: &QueueId,
        path: &Path,
        file: &File,
        e: ReadError,
        op: &'static str,
    ) -> SpoolError {
        match files::still_at(file, path) {
            Ok(false) => SpoolError::NotFound(*id),
            Err(e) => SpoolError::io("inspect message file", path, e),
            Ok(true) => match e {
                ReadError::Io(e) => SpoolError::io(op, path, e),
                ReadError::Format(e) => SpoolError::Corrupt {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                },
            },
        }
    }

    /// `NotFound` unless `file` is still the one at `path` (it was not removed since opened).
    fn still_here(&self, id: &QueueId, path: &Path, file: &File) -> Result<(), SpoolError> {
        match files::still_at(file, path) {
            Ok(true) => Ok(()),
            Ok(false) => Err(SpoolError::NotFound(*id)),
            Err(e) => Err(SpoolError::io("inspect message file", path, e)),
        }
    }

    fn load(&self, id: &QueueId) -> Result<QueuedMessage, SpoolError> {
        let Some((path, file)) = self.open_message(id, false)? else {
            return v1::load(&self.layout, id);
        };
        let meta = message::read_meta(&file)
            .map_err(|e| self.read_failure(id, &path, &file, e, "read message file"))?;
        if meta.header.id != *id {
            self.still_here(id, &path, &file)?;
            return Err(SpoolError::Corrupt {
                path,
                reason: format!("it names message {}", meta.header.id),
            });
        }
        self.still_here(id, &path, &file)?;
        Ok(QueuedMessage {
            id: *id,
            envelope: meta.envelope,
            state: meta.state,
        })
    }

    fn body(&self, id: &QueueId) -> Result<Bytes, SpoolError> {
        let Some((path, file)) = self.open_message(id, false)? else {
            return v1::body(&self.layout, id);
        };
        let read = message::read_header(&file).and_then(|header| {
            if header.id != *id {
                return Err(ReadError::Format(FormatError::Inconsistent(format!(
                    "it names message {}",
                    header.id
                ))));
            }
            message::read_body(&file, &header)
        });
        let body = read.map_err(|e| {
            let failure = self.read_failure(id, &path, &file, e, "read body");
            self.quarantine_unreadable(id, failure)
        })?;
        self.still_here(id, &path, &file)?;
        Ok(Bytes::from(body))
    }

    /// A message file found unreadable after the scan (a body that fails its checksum, mostly)
    /// is moved to `corrupt/` as the scan would have, so its message stops being retried: it
    /// leaves the queue, logged, and nothing is deleted. A read-only spool leaves it in place.
    fn quarantine_unreadable(&self, id: &QueueId, failure: SpoolError) -> SpoolError {
        let SpoolError::Corrupt { reason, .. } = &failure else {
            return failure;
        };
        if self.read_only {
            return failure;
        }
        match scan::quarantine(&self.layout, id, reason.clone()) {
            Some(q) => {
                scan::sync_quarantine(&self.layout, &self.sync);
                SpoolError::Corrupt {
                    path: q.path,
                    reason: q.reason,
                }
            }
            None => SpoolError::NotFound(*id),
        }
    }

    fn save_state(&self, id: &QueueId, state: MessageState) -> Result<(), SpoolError> {
        self.writable()?;
        let Some((path, file)) = self.open_message(id, true)? else {
            return Err(SpoolError::NotFound(*id));
        };
        // Held until the write is done: a removed message's file is recycled only under it.
        let _range =
            RangeLock::wait(&file).map_err(|e| SpoolError::io("lock message file", &path, e))?;
        let header = message::read_header(&file)
            .map_err(|e| self.read_failure(id, &path, &file, e, "read message file"))?;
        if header.id != *id {
            // Recycled for another message since we opened it, or damaged.
            self.still_here(id, &path, &file)?;
            return Err(SpoolError::Corrupt {
                path,
                reason: format!("it names message {}", header.id),
            });
        }
        let slots = message::read_slots(&file, &header)
            .map_err(|e| SpoolError::io("read state slots", &path, e))?;
        let half = (header.slot_len as usize).min(slots.len());
        let (a, b) = slots.split_at(half);
        let newest = slot::newest(id, &[a, b]).ok().map(|(i, s)| (i, s.seq));
        let write = format::next_slot_write(&header, newest, &state).map_err(|e| {
            SpoolError::InvalidState {
                id: *id,
                reason: e.to_string(),
            }
        })?;
        file.write_all_at(&write.bytes, write.offset)
            .map_err(|e| SpoolError::io("write state slot", &path, e))?;
        // `fdatasync` in both commit modes: an overwrite of written blocks changes no metadata
        // the data needs, so it is one data write and a device flush (concurrent ones merged by
        // the block layer), where a `syncfs` would also commit the journal for the mtime.
        // Measured faster with 20 and 100 callers (benches/README.md).
        file.sync_data()
            .map_err(|e| SpoolError::io("fdatasync message file", &path, e))?;
        if write.fit != Fit::Whole {
            tracing::debug!(%id, fit = ?write.fit, "state shortened to fit its slot");
        }
        // Removed meanwhile by someone who did not hold the claim: the write went into the
        // removed file, harmlessly; say the message is gone.
        self.still_here(id, &path, &file)
    }

    /// Takes the message out of `queue/`; true when the caller must schedule the delayed
    /// flush that makes it durable (see `removals`).
    fn remove(&self, id: &QueueId) -> Result<bool, SpoolError> {
        self.writable()?;
        let path = self.layout.message(id);
        let spare = match self.spares.retire(&path) {
            Ok(spare) => spare,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(SpoolError::NotFound(*id)),
            Err(e) => return Err(SpoolError::io("remove message file", &path, e)),
        };
        // The spare is reused only after a flush: overwritten before the removal was
        // durable, a power loss could bring the file back under this message's name with
        // another message in it.
        Ok(self.removals.note(spare))
    }

    fn claim(&self, id: &QueueId) -> Result<Option<Claim>, SpoolError> {
        let Some((path, file)) = self.open_message(id, false)? else {
            return Err(SpoolError::NotFound(*id));
        };
        let locked = match file.try_lock() {
            Ok(()) => Locked(file),
            Err(TryLockError::WouldBlock) => return Ok(None),
            Err(TryLockError::Error(e)) => {
                return Err(SpoolError::io("lock message file", &path, e));
            }
        };
        // Locked; now make sure it is still the message: not removed since we opened it.
        self.still_here(id, &path, &locked.0)?;
        Ok(Some(Claim::new(locked)))
    }

    fn scan(&self, each: &mut dyn FnMut(QueuedMessage)) -> Result<ScanReport, SpoolError> {
        let mut report = if self.read_only {
            scan::scan(&self.layout, None, each)?
        } else {
            let quarantined = self.convert()?;
            self.note_quarantined(quarantined);
            scan::scan(&self.layout, Some(&self.sync), each)?
        };
        let earlier = std::mem::take(
            &mut *self
                .pending_quarantine
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        report.quarantined.extend(earlier);
        Ok(report)
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
        self.blocking(move |inner| inner.load(&id)).await
    }

    async fn save_state(&self, id: &QueueId, state: &MessageState) -> Result<(), SpoolError> {
        let (id, state) = (*id, state.clone());
        self.blocking(move |inner| inner.save_state(&id, state))
            .await
    }

    /// Returns once the message is out of `queue/`: no process finds it after that. Its
    /// removal is durable with the next flush of `queue/`, at the latest 50 ms later; a power
    /// loss before then can bring it back, to be delivered again (see
    /// [`FsSpool::sync_removals`]).
    async fn remove(&self, id: &QueueId) -> Result<(), SpoolError> {
        let id = *id;
        if self.blocking(move |inner| inner.remove(&id)).await? {
            tokio::spawn(sync_removals_later(Arc::downgrade(&self.inner)));
        }
        Ok(())
    }

    async fn scan(&self) -> Result<ScanReport, SpoolError> {
        self.blocking(|inner| {
            let mut messages = Vec::new();
            let mut report = inner.scan(&mut |m| messages.push(m))?;
            report.messages = messages;
            Ok(report)
        })
        .await
    }

    /// Reads on a blocking thread as [`Spool::scan`] does, and hands the messages over in
    /// batches of 256 while it reads on, at most 4 batches ahead of `each`: the caller's work
    /// (building the engine's index) overlaps the reading, and only those batches are held in
    /// full at any moment.
    async fn scan_each(
        &self,
        each: &mut (dyn FnMut(QueuedMessage) + Send),
    ) -> Result<ScanReport, SpoolError> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<QueuedMessage>>(SCAN_BATCHES_AHEAD);
        let reading = self.blocking(move |inner| {
            let mut batch = Vec::with_capacity(SCAN_BATCH);
            let report = inner.scan(&mut |m| {
                batch.push(m);
                if batch.len() == SCAN_BATCH {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(SCAN_BATCH));
                    // Fails only once the caller gave up waiting; the scan still ends its
                    // clean-up.
                    let _ = tx.blocking_send(full);
                }
            })?;
            if !batch.is_empty() {
                let _ = tx.blocking_send(batch);
            }
            Ok(report)
        });
        let handing = async {
            while let Some(batch) = rx.recv().await {
                batch.into_iter().for_each(&mut *each);
            }
        };
        let (report, ()) = tokio::join!(reading, handing);
        report
    }

    async fn claim(&self, id: &QueueId) -> Result<Option<Claim>, SpoolError> {
        let id = *id;
        self.blocking(move |inner| inner.claim(&id)).await
    }

    /// Reads only the page's messages, not the whole queue as the default does, and changes
    /// nothing on disk. The directory is read for a listing's first page; the page that
    /// continues it (`after` is the `next` just returned) goes on from that reading, so paging
    /// through the queue lists it once (see `Continuations` for what a continued page sees).
    async fn list(&self, after: Option<QueueId>, limit: usize) -> Result<QueuePage, SpoolError> {
        self.blocking(move |inner| {
            let mut listing = match after.and_then(|a| inner.continuations.take(a)) {
                Some(rest) => rest,
                None => {
                    let mut fresh = Listing::new(inner.layout.clone())?;
                    if let Some(after) = after {
                        fresh.skip_past(after);
                    }
                    fresh
                }
            };
            let page = listing.page(after, limit);
            if let Some(next) = page.next {
                inner.continuations.keep(next, listing);
            }
            Ok(page)
        })
        .await
    }
}
