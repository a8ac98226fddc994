//! Group commit: many writers, one flush.
//!
//! A writer whose changes must become durable calls [`GroupSync::sync`]. If no flush is
//! running, it becomes the leader and runs one; otherwise it joins the batch that will be
//! flushed next and waits. A batch's flush starts only after every member joined, so it covers
//! every change its members made before joining. While one flush runs, the next batch fills
//! up, so under load each flush serves everyone who arrived during the previous one, and the
//! rate of flushes stays at the device's limit however many writers there are.
//!
//! That alone batches little when a flush is quicker than the writes before it: on this
//! machine a directory `fsync` takes about half an insert's `fdatasync`, so each insert found
//! the previous flush over and led one of its own (0.97 directory flushes per message). So an
//! insert announces itself before it writes ([`GroupSync::expect`]), and a leader first waits
//! (at most [`MAX_WAIT`]) for the writers announced before it began, not for later ones, who
//! would keep it waiting under steady load. A lone writer waits for nobody.
//!
//! The flush is an `fsync` of the queue directory (renames and unlinks in it, when every file
//! is synced on its own) or a `syncfs` of the spool's file system (everything: file data,
//! inodes, directories), see [`Flush`].

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// The outcome of one batch's `fsync`, shared by its members (`io::Error` is not `Clone`).
type Outcome = Result<(), (io::ErrorKind, Option<i32>, String)>;

#[derive(Default)]
struct Batch {
    done: OnceLock<Outcome>,
}

struct State {
    /// The batch new arrivals join; it is synced by the next leader.
    filling: Arc<Batch>,
    /// A leader is running an `fsync` now (or waiting for expected members).
    syncing: bool,
    /// Writers that announced they will call `sync` soon ([`GroupSync::expect`]), in
    /// cohorts: the open one new writers join, and the one a leader waits for.
    open: Cohort,
    waited: Cohort,
}

/// Writers announced between two leaders.
#[derive(Default, Clone, Copy)]
struct Cohort {
    id: u64,
    writers: usize,
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
    /// Wakes a leader waiting for expected members.
    arrivals: Condvar,
    /// How long a leader waits for them ([`MAX_WAIT`]).
    max_wait: Duration,
    /// Flushes run so far.
    flushes: AtomicU64,
}

/// The longest a leader waits for writers that announced themselves: about two `fdatasync`s
/// of a busy disk here, so a member still writing when the leader came joins its flush
/// instead of needing one of its own.
const MAX_WAIT: Duration = Duration::from_millis(2);

/// A writer's announcement that it will call [`GroupSync::sync`] soon ([`GroupSync::expect`]).
pub(crate) struct Expected<'a> {
    sync: &'a GroupSync,
    cohort: Option<u64>,
}

impl<'a> Expected<'a> {
    /// Joins the next batch: [`GroupSync::sync`], no longer awaited.
    #[cfg(test)]
    pub(crate) fn sync(self) -> io::Result<()> {
        self.join().wait()
    }

    /// Joins the next batch now and waits for its flush later ([`Joined::wait`]), so the
    /// writer can do other work (flush its file's data) while the batch's flush runs: every
    /// change made before this call is covered by it.
    pub(crate) fn join(mut self) -> Joined<'a> {
        let mut state = self.sync.lock();
        if let Some(cohort) = self.cohort.take() {
            self.sync.arrived(&mut state, cohort);
        }
        Joined {
            sync: self.sync,
            batch: Arc::clone(&state.filling),
        }
    }
}

/// A writer in a batch, not yet waiting for its flush ([`Expected::join`]).
pub(crate) struct Joined<'a> {
    sync: &'a GroupSync,
    batch: Arc<Batch>,
}

impl Joined<'_> {
    /// Returns once the batch joined has been flushed: leads the flush if nobody does.
    pub(crate) fn wait(self) -> io::Result<()> {
        self.sync.wait_for(self.batch, self.sync.lock())
    }
}

impl Drop for Expected<'_> {
    fn drop(&mut self) {
        if let Some(cohort) = self.cohort {
            // The writer failed before syncing: nobody should wait for it.
            let mut state = self.sync.lock();
            self.sync.arrived(&mut state, cohort);
        }
    }
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
                open: Cohort::default(),
                waited: Cohort {
                    id: u64::MAX,
                    writers: 0,
                },
            }),
            wake: Condvar::new(),
            arrivals: Condvar::new(),
            max_wait: MAX_WAIT,
            flushes: AtomicU64::new(0),
        }
    }

    /// The number of flushes run so far.
    #[cfg(test)]
    fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }

    /// Announces a writer that is about to make changes and then call `sync` (through the
    /// returned [`Expected`]): a leader that starts a flush meanwhile waits for it (at most
    /// [`MAX_WAIT`]), so concurrent writers share one flush even when a flush is quicker than
    /// their own writes. A lone writer waits for nobody.
    pub(crate) fn expect(&self) -> Expected<'_> {
        let mut state = self.lock();
        state.open.writers += 1;
        Expected {
            sync: self,
            cohort: Some(state.open.id),
        }
    }

    /// A writer of `cohort` syncs now or never will: a leader waiting for it stops doing so.
    fn arrived(&self, state: &mut State, cohort: u64) {
        if cohort == state.waited.id && state.waited.writers > 0 {
            state.waited.writers -= 1;
            if state.waited.writers == 0 {
                self.arrivals.notify_one();
            }
        } else if cohort == state.open.id {
            state.open.writers -= 1;
        }
        // Else its leader stopped waiting for it long ago.
    }

    /// Returns once a flush that started after this call began has completed, i.e. once every
    /// change made before the call is durable.
    pub(crate) fn sync(&self) -> io::Result<()> {
        let state = self.lock();
        let mine = Arc::clone(&state.filling);
        self.wait_for(mine, state)
    }

    /// Waits until batch `mine` is flushed, leading its flush if nobody else does.
    fn wait_for(&self, mine: Arc<Batch>, mut state: MutexGuard<'_, State>) -> io::Result<()> {
        loop {
            if let Some(outcome) = mine.done.get() {
                return outcome.clone().map_err(|(kind, raw, text)| match raw {
                    Some(code) => io::Error::from_raw_os_error(code),
                    None => io::Error::new(kind, text),
                });
            }
            if !state.syncing {
                // Nobody is syncing and our batch is not done, so it is still the one filling
                // (batches are flushed in order, each by a leader who replaced it first):
                // close it and sync it.
                state.syncing = true;
                // Wait for the writers announced so far, not for those who come meanwhile:
                // under steady load there is always a newcomer.
                let next = state.open.id.wrapping_add(1);
                state.waited = std::mem::replace(
                    &mut state.open,
                    Cohort {
                        id: next,
                        writers: 0,
                    },
                );
                let deadline = Instant::now() + self.max_wait;
                while state.waited.writers > 0 {
                    let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                        break;
                    };
                    state = self
                        .arrivals
                        .wait_timeout(state, left)
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .0;
                }
                state.filling = Arc::new(Batch::default());
                drop(state);
                self.flushes.fetch_add(1, Ordering::Relaxed);
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

    fn patient(dir: &tempfile::TempDir) -> Arc<GroupSync> {
        let mut sync = GroupSync::new(File::open(dir.path()).unwrap(), Flush::Directory);
        // Long enough that a leader that waited for the wrong writer fails the test.
        sync.max_wait = Duration::from_secs(30);
        Arc::new(sync)
    }

    /// Starts a thread that syncs, and returns once it leads a flush (waiting or flushing).
    fn leader(sync: &Arc<GroupSync>) -> std::sync::mpsc::Receiver<io::Result<()>> {
        let (done, finished) = std::sync::mpsc::channel();
        let leading = Arc::clone(sync);
        std::thread::spawn(move || {
            let _ = done.send(leading.sync());
        });
        for _ in 0..5000 {
            if sync.lock().syncing {
                return finished;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!("the syncing thread never led a flush");
    }

    #[test]
    fn a_leader_waits_for_a_writer_announced_before_it_and_both_share_one_flush() {
        let dir = tempfile::tempdir().unwrap();
        let sync = patient(&dir);
        let writer = sync.expect();
        let finished = leader(&sync);
        std::thread::sleep(Duration::from_millis(20));
        assert!(finished.try_recv().is_err(), "the leader did not wait");
        writer.sync().unwrap();
        finished
            .recv_timeout(Duration::from_secs(10))
            .unwrap()
            .unwrap();
        assert_eq!(sync.flushes(), 1);
    }

    #[test]
    fn a_leader_waits_neither_for_later_writers_nor_for_one_that_gave_up() {
        let dir = tempfile::tempdir().unwrap();
        let sync = patient(&dir);
        let gave_up = sync.expect();
        let finished = leader(&sync);
        let later = sync.expect();
        drop(gave_up);
        finished
            .recv_timeout(Duration::from_secs(10))
            .expect("the leader waited for a writer announced after it")
            .unwrap();
        assert_eq!(sync.flushes(), 1);
        // The later writer leads its own flush and, alone, waits for nobody.
        later.sync().unwrap();
        assert_eq!(sync.flushes(), 2);
        let state = sync.lock();
        assert_eq!((state.open.writers, state.waited.writers), (0, 0));
    }

    #[test]
    fn a_joined_writer_is_covered_by_a_flush_another_writer_leads_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let sync = patient(&dir);
        let joined = sync.expect().join();
        // Another writer leads a flush of the batch we joined, without waiting for us (it
        // would wait 30 s for a writer announced but not joined).
        let other = Arc::clone(&sync);
        let started = Instant::now();
        std::thread::spawn(move || other.sync())
            .join()
            .unwrap()
            .unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the leader waited"
        );
        assert_eq!(sync.flushes(), 1);
        // Our flush is the one that ran: waiting leads none of our own.
        joined.wait().unwrap();
        assert_eq!(sync.flushes(), 1);
    }

    #[test]
    fn a_joined_writer_alone_leads_its_own_flush_when_it_waits() {
        let dir = tempfile::tempdir().unwrap();
        let sync = patient(&dir);
        let joined = sync.expect().join();
        assert_eq!(sync.flushes(), 0);
        joined.wait().unwrap();
        assert_eq!(sync.flushes(), 1);
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
