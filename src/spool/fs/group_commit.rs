//! Group commit of a directory: many writers, one `fsync`.
//!
//! A writer that has renamed or unlinked entries calls [`DirSync::sync`]. If no `fsync` of the
//! directory is running, it becomes the leader and runs one; otherwise it joins the batch that
//! will be synced next and waits. A batch's `fsync` starts only after every member joined, so
//! it covers every change its members made before joining. While one `fsync` runs, the next
//! batch fills up, so under load each `fsync` serves everyone who arrived during the previous
//! one, and the rate of directory syncs stays at the device's limit however many writers there
//! are.

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

/// Shares `fsync`s of one directory among concurrent writers.
pub(crate) struct DirSync {
    dir: File,
    state: Mutex<State>,
    wake: Condvar,
}

impl DirSync {
    /// Group-commits `fsync`s of `dir` (an open directory).
    pub(crate) fn new(dir: File) -> DirSync {
        DirSync {
            dir,
            state: Mutex::new(State {
                filling: Arc::new(Batch::default()),
                syncing: false,
            }),
            wake: Condvar::new(),
        }
    }

    /// Returns once an `fsync` of the directory that started after this call began has
    /// completed, i.e. once every change made to the directory before the call is durable.
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
                let result = self.dir.sync_all();
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
        let sync = Arc::new(DirSync::new(File::open(dir.path()).unwrap()));
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
    fn a_failed_sync_is_reported_to_its_caller() {
        // A pipe refuses fsync with EINVAL: a stand-in for a disk that fails.
        let (reader, _writer) = std::io::pipe().unwrap();
        let sync = DirSync::new(File::from(std::os::fd::OwnedFd::from(reader)));
        let err = sync.sync().unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
    }
}
