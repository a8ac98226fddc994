//! The queue's storage: the `Spool` trait, the per-message delivery state, and two spools.
//!
//! A spool holds each message's envelope and body, which never change, and its delivery state,
//! which is replaced atomically whenever it changes. [`FsSpool`] is the durable one (one file
//! per message, the state updated in place: see [`format`](mod@format) and [`slot`]); [`MemorySpool`] is
//! for tests and for embedders that accept losing the queue on restart. With the `postgres`
//! feature, `PgSpool` keeps the queue in PostgreSQL so that several engines share it.
//!
//! Beyond the core methods, the trait has provided methods for a queue shared by several
//! engines (see [`shared`]): due work in batches ([`Spool::claim_due`], [`Spool::next_due`]),
//! wake-ups when mail arrives elsewhere ([`Spool::wakeups`]) and administration from any node
//! ([`Spool::list`], [`Spool::admin`]). Their defaults are built on the core methods, so every
//! spool answers them.

pub mod format;
pub mod fs;
pub mod memory;
#[cfg(feature = "postgres")]
pub mod pg;
pub mod record;
pub mod shared;
pub mod slot;

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::envelope::Envelope;
use crate::queue_id::QueueId;
use crate::status::{Diagnostic, Severity};

pub use fs::{CommitMode, FsSpool, FsSpoolOptions, Listing};
pub use memory::MemorySpool;
#[cfg(feature = "postgres")]
pub use pg::PgSpool;
pub use shared::{
    AdminAction, AdminOutcome, ClaimedMessage, Lease, ListedMessage, QueuePage, Wakeups,
};

/// True when a `spool` setting names a database (`postgresql://…` or `postgres://…`) rather
/// than a directory.
pub fn is_database_url(value: &str) -> bool {
    value.starts_with("postgresql://") || value.starts_with("postgres://")
}

/// Where one recipient stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecipientStatus {
    /// Not yet delivered; `last` says why if an attempt was made.
    Pending,
    /// The next hop accepted it.
    Delivered,
    /// Permanently failed (a DSN went to the sender unless NOTIFY said otherwise).
    Failed,
}

/// The delivery state of one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientState {
    /// Pending, delivered or failed.
    pub status: RecipientStatus,
    /// How many attempts were made for this recipient.
    #[serde(default)]
    pub attempts: u32,
    /// When the last attempt ended.
    #[serde(default, with = "crate::time::serde_rfc3339_opt")]
    pub last_attempt: Option<SystemTime>,
    /// Why the last attempt did not deliver (for `mailq` and the DSN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<Diagnostic>,
    /// The host that gave the last answer, as the log shows it (`mx.example.com. [192.0.2.1]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_mta: Option<String>,
}

impl RecipientState {
    /// A recipient nobody has tried yet.
    pub fn pending() -> RecipientState {
        RecipientState {
            status: RecipientStatus::Pending,
            attempts: 0,
            last_attempt: None,
            last: None,
            remote_mta: None,
        }
    }
}

/// The mutable part of a queued message: what the engine rewrites after every attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageState {
    /// When the message entered the queue.
    #[serde(with = "crate::time::serde_rfc3339")]
    pub arrival: SystemTime,
    /// Body size in octets.
    pub size: u64,
    /// The earliest time of the next attempt.
    #[serde(with = "crate::time::serde_rfc3339")]
    pub next_attempt: SystemTime,
    /// Delivery attempts so far (each queue run that tried at least one recipient).
    #[serde(default)]
    pub attempts: u32,
    /// An administrator put the message on hold: it is not delivered until released.
    #[serde(default)]
    pub held: bool,
    /// The delay warning DSN was sent.
    #[serde(default)]
    pub warned: bool,
    /// One entry per envelope recipient, in the same order.
    pub recipients: Vec<RecipientState>,
}

impl MessageState {
    /// The state of a message that just arrived: every recipient pending, due now.
    pub fn new(envelope: &Envelope, size: u64, arrival: SystemTime) -> MessageState {
        MessageState {
            arrival,
            size,
            next_attempt: arrival,
            attempts: 0,
            held: false,
            warned: false,
            recipients: envelope
                .recipients
                .iter()
                .map(|_| RecipientState::pending())
                .collect(),
        }
    }

    /// True when no recipient is pending any more.
    pub fn is_done(&self) -> bool {
        self.recipients
            .iter()
            .all(|r| r.status != RecipientStatus::Pending)
    }
}

/// A message as a spool scan or load returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedMessage {
    /// Its id.
    pub id: QueueId,
    /// Its envelope (never changes).
    pub envelope: Envelope,
    /// Its delivery state.
    pub state: MessageState,
}

/// A message file (or format-1 record) that could not be read, moved aside by a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    /// Where the file now lies (e.g. `SPOOL/corrupt/0PC4F8X1RZ3A7KQ2`).
    pub path: PathBuf,
    /// Why it was set aside.
    pub reason: String,
}

/// What a scan found.
#[derive(Debug, Clone, Default)]
pub struct ScanReport {
    /// Every message in the queue, oldest first (empty from [`Spool::scan_each`], which
    /// hands them out instead).
    pub messages: Vec<QueuedMessage>,
    /// Files that did not read and were moved to quarantine by this scan (or, for a spool
    /// opened read-only, reported where they lie).
    pub quarantined: Vec<Quarantined>,
    /// Leftovers of interrupted inserts that were deleted (temporary files, bodies without a
    /// record, message files left empty by a power loss during their insert).
    pub orphans_removed: usize,
}

impl ScanReport {
    /// Hands the messages to `each` in order, and returns the rest of the report (as
    /// [`Spool::scan_each`] does).
    pub(crate) fn hand_out(mut self, each: &mut dyn FnMut(QueuedMessage)) -> ScanReport {
        std::mem::take(&mut self.messages)
            .into_iter()
            .for_each(each);
        self
    }
}

/// Holds a message for delivery by one engine or process; dropping it releases the claim.
///
/// For [`FsSpool`] this is an `flock` on the message's file, which the kernel releases when
/// the process dies, so a crashed engine never leaves a message locked. For a spool with
/// leases, dropping starts the release in the background; [`Claim::release`] waits for it.
pub struct Claim {
    guard: Box<dyn ClaimGuard>,
}

/// What keeps a claim alive, for a spool whose release takes a round trip (a database lease):
/// dropping the guard must release the claim (in the background if need be); `release` does
/// it now.
pub trait ClaimGuard: Send + Sync + 'static {
    /// Ends the claim and returns once other engines can claim the message. The default drops
    /// the guard.
    fn release(self: Box<Self>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move { drop(self) })
    }
}

/// A guard whose drop releases at once (a lock, a set entry).
struct Plain<T>(T);

impl<T: Send + Sync + 'static> ClaimGuard for Plain<T> {}

impl Claim {
    /// Wraps whatever keeps the claim alive (a locked file, a set entry) and releases it when
    /// dropped.
    pub fn new(guard: impl Send + Sync + 'static) -> Claim {
        Claim {
            guard: Box::new(Plain(guard)),
        }
    }

    /// Wraps a guard that can also be released and waited for.
    pub fn with_guard(guard: impl ClaimGuard) -> Claim {
        Claim {
            guard: Box::new(guard),
        }
    }

    /// Releases the claim and returns once another engine can claim the message (dropping
    /// the claim releases it too, but may finish later).
    pub async fn release(self) {
        self.guard.release().await
    }
}

impl std::fmt::Debug for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Claim")
    }
}

/// Spool failures. A failed `insert` means the message was NOT accepted.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The file system is full (ENOSPC) or the quota is exhausted (EDQUOT).
    #[error("spool {path} is full: {source} (free disk space, then retry)")]
    NoSpace {
        /// The file being written.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The spool is read-only or not writable by this process.
    #[error(
        "spool {path} is not writable: {source} (check the mount and the directory's owner and mode)"
    )]
    NotWritable {
        /// The file or directory concerned.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Any other I/O failure.
    #[error("spool {op} failed on {path}: {source}")]
    Io {
        /// What the spool was doing ("write body", "fsync directory", ...).
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// No such message in the spool.
    #[error("no message {0} in the spool")]
    NotFound(QueueId),
    /// A message's file exists but cannot be read.
    #[error("spool file {path} is corrupt: {reason}")]
    Corrupt {
        /// The file (for a database spool: the table and the id).
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A caller asked to save a state that does not fit the message, e.g. with a different
    /// number of recipients than its envelope; saving it would make the record unreadable.
    #[error("refusing to save the state of {id}: {reason}")]
    InvalidState {
        /// The message.
        id: QueueId,
        /// What does not fit.
        reason: String,
    },
    /// Another engine or process holds the message (its claim or lease is live), so a write
    /// without that claim was refused and nothing changed.
    #[error("message {0} is being delivered by another engine or process; try again shortly")]
    Busy(QueueId),
    /// The caller's claim is no longer the message's current one: its lease ended and another
    /// engine took the message over, or an administrator changed the message meanwhile. The
    /// outcome was not written, so it cannot overwrite the newer state (fencing).
    #[error(
        "the claim on message {id} was lost (its lease ended and another engine took the \
         message over); this attempt's outcome was not written"
    )]
    LeaseLost {
        /// The message.
        id: QueueId,
    },
    /// The database behind the spool failed or could not be reached.
    #[error("spool database: {op} failed: {source}")]
    Database {
        /// What the spool was doing ("insert", "claim", ...).
        op: &'static str,
        /// Temporary (the server is down, restarting, overloaded, or a transaction conflicted)
        /// or permanent (the schema or the configuration is wrong).
        severity: Severity,
        /// What the database or its client said.
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// The spool configuration is unusable (a path that is not a directory, ...).
    #[error("spool at {path}: {reason}")]
    Config {
        /// The spool directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl SpoolError {
    /// Classifies an I/O error on `path` during `op`, singling out a full disk and a read-only
    /// spool because an operator fixes those differently.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> SpoolError {
        let path = path.into();
        match source.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => SpoolError::NoSpace { path, source },
            Some(libc::EROFS) | Some(libc::EACCES) | Some(libc::EPERM) => {
                SpoolError::NotWritable { path, source }
            }
            _ => SpoolError::Io { op, path, source },
        }
    }

    /// Temporary for I/O trouble (the caller may retry later); permanent for a missing or
    /// corrupt message and a bad configuration.
    pub fn severity(&self) -> Severity {
        match self {
            SpoolError::NoSpace { .. }
            | SpoolError::NotWritable { .. }
            | SpoolError::Io { .. }
            | SpoolError::Busy(_) => Severity::Temporary,
            SpoolError::Database { severity, .. } => *severity,
            SpoolError::NotFound(_)
            | SpoolError::LeaseLost { .. }
            | SpoolError::Corrupt { .. }
            | SpoolError::InvalidState { .. }
            | SpoolError::Config { .. } => Severity::Permanent,
        }
    }

    /// True when retrying later may succeed.
    pub fn is_temporary(&self) -> bool {
        self.severity() == Severity::Temporary
    }
}

/// How an engine finds the due work of a spool ([`Spool::scheduling`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheduling {
    /// The engine reads the whole queue when it starts, keeps a compact index of it (a few
    /// hundred octets a message) and claims each message by id when it is due; a rescan every
    /// [`Limits::queue_scan_interval`](crate::engine::Limits) picks up what other processes
    /// changed. For a spool that one long-running engine owns, where other processes are
    /// one-shot commands ([`FsSpool`], [`MemorySpool`]).
    Index,
    /// The engine keeps only the messages it is working on: it takes due work in batches
    /// ([`Spool::claim_due`]), sleeps until [`Spool::next_due`] or a [`Spool::wakeups`] notice,
    /// and administers through [`Spool::list`] and [`Spool::admin`]. For a queue that several
    /// engines share and that no one node should hold (`PgSpool`).
    Batches,
}

/// Durable storage for queued messages.
///
/// Implementations must make `insert` durable before it returns (the "250 OK" moment) and make
/// `save_state` an atomic replacement: after a crash a reader sees the old state or the new one,
/// never a mixture.
#[async_trait]
pub trait Spool: Send + Sync + 'static {
    /// Stores a new message, arrived at `arrival`, with every recipient pending and the first
    /// attempt due at once ([`MessageState::new`]); returns its id once it would survive a
    /// power loss. The engine passes the arrival time because it owns the clock.
    async fn insert(
        &self,
        envelope: &Envelope,
        body: Bytes,
        arrival: SystemTime,
    ) -> Result<QueueId, SpoolError>;

    /// Stores a new message like [`Spool::insert`] and hands it back already claimed, so that
    /// no other engine or process can touch it between its arrival and the caller's first
    /// attempt; the caller then needs neither [`Spool::claim`] nor [`Spool::load`] before it.
    /// The claim is `None` when the spool cannot do both in one step (the default, which only
    /// inserts): the caller then claims and loads as for any queued message.
    async fn insert_claimed(
        &self,
        envelope: &Envelope,
        body: Bytes,
        arrival: SystemTime,
    ) -> Result<(QueueId, Option<Claim>), SpoolError> {
        Ok((self.insert(envelope, body, arrival).await?, None))
    }

    /// The message body as it was inserted. [`SpoolError::Corrupt`] when it is not what was
    /// inserted (a checksum fails); a spool that can, takes such a message out of the queue
    /// then (`FsSpool` moves its file to `corrupt/`), so it is neither sent nor retried.
    async fn body(&self, id: &QueueId) -> Result<Bytes, SpoolError>;

    /// The envelope and current state of one message, re-read from storage. The engine calls
    /// this after [`Spool::claim`], because another process may have advanced the state.
    async fn load(&self, id: &QueueId) -> Result<QueuedMessage, SpoolError>;

    /// Replaces the delivery state of a message atomically.
    async fn save_state(&self, id: &QueueId, state: &MessageState) -> Result<(), SpoolError>;

    /// Deletes a message (delivered, bounced or deleted by an administrator). Once it returns
    /// no caller finds the message. An implementation may make the deletion durable a little
    /// later ([`FsSpool`] does with its next flush, at most 50 ms later): a crash of the
    /// machine in between brings the message back to be delivered again, never loses one.
    async fn remove(&self, id: &QueueId) -> Result<(), SpoolError>;

    /// Every message in the spool, oldest first; cleans up after interrupted inserts and
    /// quarantines unreadable records.
    async fn scan(&self) -> Result<ScanReport, SpoolError>;

    /// The same scan, handing each message to `each` as it is read (oldest first) instead of
    /// collecting them; the report's `messages` is empty. A caller that keeps less than the
    /// whole message (the engine's index keeps under 300 octets of one) then never holds every
    /// message in full at once, which for a large queue is most of the memory a start-up
    /// takes. The default collects [`Spool::scan`] and hands its messages out; [`FsSpool`]
    /// streams them from its reading thread.
    async fn scan_each(
        &self,
        each: &mut (dyn FnMut(QueuedMessage) + Send),
    ) -> Result<ScanReport, SpoolError> {
        Ok(self.scan().await?.hand_out(each))
    }

    /// Tries to claim a message for delivery: `None` when another engine or process holds it.
    async fn claim(&self, id: &QueueId) -> Result<Option<Claim>, SpoolError>;

    /// How an engine should find this spool's due work. The default, [`Scheduling::Index`],
    /// suits a spool one engine owns; a spool shared by several engines answers
    /// [`Scheduling::Batches`] and should override [`Spool::claim_due`] and
    /// [`Spool::next_due`] (their defaults scan the whole spool).
    fn scheduling(&self) -> Scheduling {
        Scheduling::Index
    }

    /// Claims up to `limit` messages that are due by `due_by`, not held, and not claimed by
    /// anyone, earliest due first, and returns them loaded. The default scans the whole spool
    /// and claims one message at a time; a spool with an index answers from it.
    async fn claim_due(
        &self,
        due_by: SystemTime,
        limit: usize,
    ) -> Result<Vec<ClaimedMessage>, SpoolError> {
        shared::claim_due_by_scan(self, due_by, limit).await
    }

    /// When the earliest message that is not held becomes due (or, for a message claimed by
    /// someone else, when it may be taken over at the earliest); `None` for an empty queue.
    /// The engine sleeps until then unless [`Spool::wakeups`] says otherwise.
    async fn next_due(&self) -> Result<Option<SystemTime>, SpoolError> {
        shared::next_due_by_scan(self).await
    }

    /// A stream telling this engine that work may have become due because of another engine
    /// or process (mail submitted there, a claim released, an administrator's release).
    /// `None` (the default) when the spool cannot tell: the engine then rescans on a timer.
    /// Call it inside the tokio runtime.
    fn wakeups(&self) -> Option<Wakeups> {
        None
    }

    /// One page of the whole queue in id (arrival) order: up to `limit` messages whose id
    /// sorts after `after` (`None`: from the start), with who holds each one where the spool
    /// can tell. The default scans the whole spool.
    async fn list(&self, after: Option<QueueId>, limit: usize) -> Result<QueuePage, SpoolError> {
        shared::list_by_scan(self, after, limit).await
    }

    /// Holds, releases, flushes or deletes one message, whichever engine is delivering it; `at`
    /// is the caller's "now" (a release or flush makes the message due then). The default
    /// claims the message, applies the action and drops the claim, and answers
    /// [`AdminOutcome::Busy`] when someone else holds it; a shared spool records the action for
    /// the holder to apply when its attempt ends ([`AdminOutcome::Deferred`]).
    async fn admin(
        &self,
        id: &QueueId,
        action: AdminAction,
        at: SystemTime,
    ) -> Result<AdminOutcome, SpoolError> {
        shared::admin_by_claim(self, id, action, at).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_and_a_read_only_spool_are_told_apart() {
        let full = SpoolError::io("write", "/s", io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(matches!(full, SpoolError::NoSpace { .. }));
        assert!(full.is_temporary());
        assert!(full.to_string().contains("full"));
        let ro = SpoolError::io("write", "/s", io::Error::from_raw_os_error(libc::EROFS));
        assert!(matches!(ro, SpoolError::NotWritable { .. }));
        let other = SpoolError::io("write", "/s", io::Error::from_raw_os_error(libc::EIO));
        assert!(matches!(other, SpoolError::Io { op: "write", .. }));
    }
}
