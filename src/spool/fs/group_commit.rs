//! Group commit: many writers, one flush.
//!
//! A writer whose changes must become durable calls [`GroupSync::sync`]. If no flush is
//! running, it becomes the leader and runs one; otherwise it joins the batch that will be
//! flushed next and waits. A batch's flush starts only after every member joined, so it covers
//! every change its members made before joining. While one flush runs, the next batch fills
//! up, so under load each flush serves everyone who arrived during the previous one, and the
//! rate of flushes stays at the device's limit however many writers there are.
//!
//! The flush is an `fsync` of the queue directory (renames and unlinks in it, when every file
//! is synced on its own) or a `syncfs` of the spool's file system (everything: file data,
//! inodes, directories), see [`Flush`].

use std::fs::File;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};

/// The outcome of one batch's `fsync`, shared by its members (`io::Error` is not `Clone`).
type Outcome = Result<(), (io::ErrorKind, Option<i32>, String)>;

#[derive(Default)]
struct Batch {
    done: OnceLock<Outcome>,
}

struct State {
    /// The batch new arrivals join; it is synced by the next leader.
    filling: Arc<Batch>,
    /// A leader is running an `fsync` now.
    syncing: bool,
}

/// What one flush does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flush {
    /// `fsync` of the open directory: its entries.
    Directory,
    /// `syncfs` of the file system the open file is on: everything written to it.
    FileSystem,
}

/// Shares flushes among concurrent writers.
pub(crate) struct GroupSync {
    handle: File,
    flush: Flush,
    state: Mutex<State>,
    wake: Condvar,
}

impl GroupSync {
    /// Group-commits flushes of `handle` (an open directory).
    pub(crate) fn new(handle: File, flush: Flush) -> GroupSync {
        GroupSync {
            handle,
            flush,
            state: Mutex::new(State {
                filling: Arc::new(Batch::default()),
                syncing: false,
            }),
            wake: Condvar::new(),
        }
    }

    /// Returns once a flush that started after this call began has completed, i.e. once every
    /// change made before the call is durable.
    pub(crate) fn sync(&self) -> io::Result<()> {
        let mut state = self.lock();
        let mine = Arc::clone(&state.filling);
        loop {
            if let Some(outcome) = mine.done.get() {
                return outcome.clone().map_err(|(kind, raw, text)| match raw {
                    Some(code) => io::Error::from_raw_os_error(code),
                    None => io::Error::new(kind, text),
                });
            }
            if !state.syncing {
                // Nobody is syncing and our batch is not done, so it is still the one filling:
                // close it and sync it.
                state.syncing = true;
                state.filling = Arc::new(Batch::default());
                drop(state);
                let result = match self.flush {
                    Flush::Directory => self.handle.sync_all(),
                    Flush::FileSystem => super::files::syncfs(&self.handle),
                };
                let outcome = result
                    .as_ref()
                    .map(|_| ())
                    .map_err(|e| (e.kind(), e.raw_os_error(), e.to_string()));
                // Set before anyone can look: only the leader of this batch sets it.
                let _ = mine.done.set(outcome);
                let mut state = self.lock();
                state.syncing = false;
                drop(state);
                // Wakes this batch's members and lets one member of the next batch lead.
                self.wake.notify_all();
                return result;
            }
            state = self
                .wake
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is two fields updated together under the lock; a panic elsewhere cannot
        // leave them inconsistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Barrier;

    use super::*;

    #[test]
    fn concurrent_writers_all_return_after_a_shared_sync() {
        let dir = tempfile::tempdir().unwrap();
        let sync = Arc::new(GroupSync::new(
            File::open(dir.path()).unwrap(),
            Flush::Directory,
        ));
        let writers = 32;
        let barrier = Arc::new(Barrier::new(writers));
        let handles: Vec<_> = (0..writers)
            .map(|_| {
                let (sync, barrier) = (Arc::clone(&sync), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    barrier.wait();
                    for _ in 0..20 {
                        sync.sync().unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let state = sync.lock();
        assert!(!state.syncing);
        assert!(state.filling.done.get().is_none());
    }

    #[test]
    fn a_file_system_flush_runs_syncfs() {
        let dir = tempfile::tempdir().unwrap();
        let sync = GroupSync::new(File::open(dir.path()).unwrap(), Flush::FileSystem);
        sync.sync().unwrap();
        // A pipe refuses fsync but syncfs of its (pseudo) file system succeeds: the two
        // flushes are told apart.
        let (reader, _writer) = std::io::pipe().unwrap();
        let pipe = GroupSync::new(
            File::from(std::os::fd::OwnedFd::from(reader)),
            Flush::FileSystem,
        );
        pipe.sync().unwrap();
    }

    #[test]
    fn a_failed_sync_is_reported_to_its_caller() {
        // A pipe refuses fsync with EINVAL: a stand-in for a disk that fails.
        let (reader, _writer) = std::io::pipe().unwrap();
        let sync = GroupSync::new(
            File::from(std::os::fd::OwnedFd::from(reader)),
            Flush::Directory,
        );
        let err = sync.sync().unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
    }
}
