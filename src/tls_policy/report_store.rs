//! TLS-RPT counts on disk: one small JSON file, `tls-rpt/counts.json` under the state
//! directory, so a restart does not lose the day being counted (RFC 8460 §4.1 reports whole
//! 24-hour windows; a report of half a day would understate every failure).
//!
//! The file is replaced atomically (see `state_file`), so a crash leaves the last flushed
//! counts. A file that cannot be parsed is moved aside to `counts.json.corrupt` (kept for
//! the administrator) and the counts start empty: losing a day's counts is better than a
//! daemon that does not start.

use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use mail_auth::report::tlsrpt::ResultType;
use serde::{Deserialize, Serialize};

use super::report::ReportedPolicy;
use crate::status::Severity;

/// The format's version, so a later layout can tell an old file from garbage.
const VERSION: u32 = 1;

/// The counts of one policy on one day, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredPolicy {
    pub day: u64,
    pub policy: ReportedPolicy,
    pub success: u32,
    pub failures: Vec<StoredFailure>,
}

/// One failure kind of a policy on a day, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredFailure {
    pub result: ResultType,
    pub mx: Option<String>,
    pub ip: Option<IpAddr>,
    pub reason: Option<String>,
    pub count: u32,
}

/// The reporting addresses a kept report already reached (or that refused it for good), so
/// its next try goes only to the others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredSettled {
    pub day: u64,
    pub domain: crate::address::Domain,
    pub addresses: Vec<String>,
}

/// Everything the file holds.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Stored {
    pub counts: Vec<StoredPolicy>,
    pub settled: Vec<StoredSettled>,
}

#[derive(Serialize, Deserialize)]
struct File {
    version: u32,
    counts: Vec<StoredPolicy>,
    /// Absent from files written before it existed: read as none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    settled: Vec<StoredSettled>,
}

/// Why the counts file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ReportStoreError {
    /// The file exists but cannot be read (permissions, I/O).
    #[error("cannot read the TLS-RPT counts {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The file is not a counts file; it was moved aside and the counts start empty.
    #[error(
        "the TLS-RPT counts {} are damaged ({reason}); moved to {} and counting starts again",
        path.display(),
        kept.display()
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
        /// Where the damaged file now is.
        kept: PathBuf,
    },
    /// The counts cannot be written (a full or read-only disk); they stay in memory.
    #[error("cannot write the TLS-RPT counts {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

impl ReportStoreError {
    /// Reading and writing may work later (a disk that comes back); a damaged file was
    /// already dealt with and will not come back.
    pub fn severity(&self) -> Severity {
        match self {
            ReportStoreError::Read { .. } | ReportStoreError::Write { .. } => Severity::Temporary,
            ReportStoreError::Corrupt { .. } => Severity::Permanent,
        }
    }
}

/// The counts file of a state directory.
#[derive(Debug, Clone)]
pub(crate) struct ReportStore {
    path: PathBuf,
}

impl ReportStore {
    /// The store below `state_dir`.
    pub fn new(state_dir: &Path) -> ReportStore {
        ReportStore {
            path: state_dir.join("tls-rpt").join("counts.json"),
        }
    }

    /// The stored counts; none when the file does not exist yet. A damaged file is moved
    /// aside (the error says where) and reads as none.
    pub fn load(&self) -> Result<Stored, ReportStoreError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Stored::default()),
            Err(source) => {
                return Err(ReportStoreError::Read {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let reason = match serde_json::from_slice::<File>(&bytes) {
            Ok(f) if f.version == VERSION => {
                return Ok(Stored {
                    counts: f.counts,
                    settled: f.settled,
                });
            }
            Ok(f) => format!("format version {}, this program reads {VERSION}", f.version),
            Err(e) => e.to_string(),
        };
        let kept = self.path.with_extension("json.corrupt");
        if let Err(source) = std::fs::rename(&self.path, &kept) {
            // Cannot move it: it is overwritten at the next flush instead, which is what a
            // read-only directory would refuse anyway.
            tracing::warn!(path = %self.path.display(), "cannot move the damaged TLS-RPT counts aside: {source}");
        }
        Err(ReportStoreError::Corrupt {
            path: self.path.clone(),
            reason,
            kept,
        })
    }

    /// Replaces what is stored with `stored`.
    pub fn save(&self, stored: Stored) -> Result<(), ReportStoreError> {
        let file = File {
            version: VERSION,
            counts: stored.counts,
            settled: stored.settled,
        };
        let write = |path: &Path| {
            let json = serde_json::to_vec(&file).map_err(io::Error::other)?;
            super::state_file::write_atomically(path, &json)
        };
        write(&self.path).map_err(|source| ReportStoreError::Write {
            path: self.path.clone(),
            source,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
