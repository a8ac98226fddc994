//! Removals whose durability comes from the next flush of `queue/`.
//!
//! A removal is a rename out of `queue/` (or an unlink). Waiting for its own flush of the
//! directory made every delivered message cost a second group commit, the largest single cost
//! of relaying (benches/README.md, "Removals"). Now the rename returns at once and becomes
//! durable with the next flush of `queue/` that starts after it: an insert's, which under load
//! comes within a millisecond, or at the latest the spool's own, [`SYNC_DELAY`] later. What a
//! power loss in that window can do is bring a delivered message back, to be delivered again:
//! never lose one. This is also what Postfix and sendmail do (they unlink a delivered queue
//! file and do not fsync its directory). A process that is killed loses nothing: the rename is
//! in the kernel.
//!
//! A removed file is recycled ([`super::spares`]) only once its removal is durable: rewritten
//! before, a power loss could bring the old name back with a new message inside.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// The longest a removal waits for a flush when no insert flushes `queue/` meanwhile: short
/// enough that a power loss repeats at most the deliveries of this last moment, long enough
/// that a queue draining thousands of messages a second (removals only) flushes twenty times
/// a second, not once per message.
pub(crate) const SYNC_DELAY: Duration = Duration::from_millis(50);

/// A removed file to keep as a spare once durable: its name in `tmp/` and its size.
pub(crate) type Spare = (PathBuf, u64);

/// The removals of one spool handle not yet known to be durable.
#[derive(Default)]
pub(crate) struct Removals {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The number the next removal gets.
    next: u64,
    /// Removals not yet flushed, oldest first, each with the spare it left (if any).
    pending: VecDeque<(u64, Option<Spare>)>,
    /// A delayed flush is scheduled.
    armed: bool,
}

/// Taken before a flush starts: the removals noted before it are the ones the flush covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mark(u64);

impl Removals {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update is a push, a drain or a flag under the lock: a panic elsewhere cannot
        // leave the state inconsistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Notes a removal whose rename is done. True when no delayed flush is scheduled: the
    /// caller must schedule one (and has, as far as later callers are concerned).
    pub(crate) fn note(&self, spare: Option<Spare>) -> bool {
        let mut state = self.lock();
        let n = state.next;
        state.next += 1;
        state.pending.push_back((n, spare));
        !std::mem::replace(&mut state.armed, true)
    }

    /// The mark to take just before a flush of `queue/` begins.
    pub(crate) fn mark(&self) -> Mark {
        Mark(self.lock().next)
    }

    /// A flush that began after `mark` succeeded: the removals noted before the mark are
    /// durable. Returns the spares they left, now safe to reuse.
    pub(crate) fn flushed(&self, mark: Mark) -> Vec<Spare> {
        let mut state = self.lock();
        let mut spares = Vec::new();
        while state.pending.front().is_some_and(|(n, _)| *n < mark.0) {
            if let Some((_, Some(spare))) = state.pending.pop_front() {
                spares.push(spare);
            }
        }
        spares
    }

    /// The delayed flush is running: removals noted from now on schedule another. True when
    /// any removal is still waiting (the flush has work).
    pub(crate) fn disarm(&self) -> bool {
        let mut state = self.lock();
        state.armed = false;
        !state.pending.is_empty()
    }

    /// A delayed flush failed: schedule it again unless a later removal already has. True
    /// when the caller must schedule it.
    pub(crate) fn rearm(&self) -> bool {
        let mut state = self.lock();
        !state.pending.is_empty() && !std::mem::replace(&mut state.armed, true)
    }

    /// True when some removal is not yet known to be durable.
    pub(crate) fn any_pending(&self) -> bool {
        !self.lock().pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spare(name: &str) -> Option<Spare> {
        Some((PathBuf::from(name), 1))
    }

    #[test]
    fn only_the_first_removal_after_a_flush_schedules_the_delayed_one() {
        let removals = Removals::default();
        assert!(removals.note(spare("a")));
        assert!(!removals.note(None));
        assert!(removals.disarm());
        // Noted while the delayed flush runs: it may have missed this one.
        assert!(removals.note(spare("b")));
    }

    #[test]
    fn a_flush_releases_only_the_removals_made_before_it_began() {
        let removals = Removals::default();
        removals.note(spare("a"));
        removals.note(None);
        let mark = removals.mark();
        removals.note(spare("b"));
        let released = removals.flushed(mark);
        assert_eq!(released, vec![(PathBuf::from("a"), 1)]);
        assert!(removals.any_pending());
        let later = removals.mark();
        assert_eq!(removals.flushed(later), vec![(PathBuf::from("b"), 1)]);
        assert!(!removals.any_pending());
        assert!(!removals.disarm());
    }

    #[test]
    fn a_failed_delayed_flush_is_scheduled_again_once() {
        let removals = Removals::default();
        removals.note(spare("a"));
        assert!(removals.disarm());
        // The flush failed: nothing was released.
        assert!(removals.rearm());
        assert!(!removals.rearm());
        assert!(!removals.note(None));
        let mark = removals.mark();
        removals.flushed(mark);
        assert!(!removals.disarm());
        assert!(!removals.rearm());
    }
}
