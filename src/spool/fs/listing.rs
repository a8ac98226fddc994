//! A listing of the queue that reads one message at a time (`mailq` of a large queue).

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::layout::{Layout, QueueFile};
use super::scan::{self, Verdict};
use super::v1;
use crate::queue_id::QueueId;
use crate::spool::{ListedMessage, QueuePage, QueuedMessage, SpoolError};

/// The messages of an [`super::FsSpool`], oldest first, read as the iteration reaches them
/// (see [`super::FsSpool::listing`]).
///
/// Holds only the sorted ids (16 octets a message). An item is `Err` for a message that could
/// not be read (a damaged file is [`SpoolError::Corrupt`] with its path); the listing goes on
/// after it. Format-1 messages not yet converted (a spool opened read-only) are read in place.
///
/// ```no_run
/// use postrider::spool::FsSpool;
///
/// # fn demo() -> Result<(), postrider::SpoolError> {
/// let spool = FsSpool::open("/var/spool/postrider")?;
/// let listing = spool.listing()?;
/// println!("{} requests", listing.remaining());
/// for message in listing {
///     let message = message?;
///     println!("{} {}", message.id, message.envelope.sender);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Listing {
    layout: Layout,
    entries: std::vec::IntoIter<(QueueId, bool)>,
}

impl Listing {
    pub(super) fn new(layout: Layout) -> Result<Listing, SpoolError> {
        let mut entries = Vec::new();
        for name in scan::list(&layout.queue)? {
            match name.to_str().and_then(QueueFile::parse) {
                Some(QueueFile::Message(id)) => entries.push((id, false)),
                Some(QueueFile::V1Record(id)) => entries.push((id, true)),
                _ => {}
            }
        }
        entries.sort_unstable();
        // A message both converted and not yet deleted in format 1 (a conversion in progress)
        // is listed once, as format 3.
        entries.dedup_by_key(|(id, _)| *id);
        Ok(Listing {
            layout,
            entries: entries.into_iter(),
        })
    }

    /// Leaves out every message whose id sorts at or before `after` (the ids are sorted, so
    /// this is a search, not a pass over the queue).
    pub(super) fn skip_past(&mut self, after: QueueId) {
        let skip = self
            .entries
            .as_slice()
            .partition_point(|(id, _)| *id <= after);
        if skip > 0 {
            self.entries.nth(skip - 1);
        }
    }

    /// One page of [`crate::spool::Spool::list`]: up to `limit` messages from where the
    /// listing stands. A message that cannot be read is left out (and logged): the next scan
    /// quarantines it, and one damaged file must not hide the rest of the queue from an
    /// administrator. `after` is where the page started, the page's `next` when it is empty.
    pub(super) fn page(&mut self, after: Option<QueueId>, limit: usize) -> QueuePage {
        let mut messages = Vec::new();
        while messages.len() < limit {
            let Some((id, format_one)) = self.entries.next() else {
                break;
            };
            match self.read(&id, format_one) {
                Ok(Some(message)) => messages.push(ListedMessage {
                    message,
                    lease: None,
                }),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(%id, error = %e, "queue listing skips a message it cannot read")
                }
            }
        }
        let next = if self.entries.len() > 0 {
            messages.last().map(|m| m.message.id).or(after)
        } else {
            None
        };
        QueuePage { messages, next }
    }

    /// How many messages are still to come (an upper bound: messages removed meanwhile are
    /// skipped).
    pub fn remaining(&self) -> usize {
        self.entries.len()
    }

    fn read(&self, id: &QueueId, format_one: bool) -> Result<Option<QueuedMessage>, SpoolError> {
        if format_one {
            return match v1::inspect(&self.layout, id)? {
                v1::Verdict::Message(r) => Ok(Some(QueuedMessage {
                    id: r.id,
                    envelope: r.envelope,
                    state: r.state,
                })),
                // Converted since the directory was read: it is in format 3 now.
                v1::Verdict::Gone => self.read(id, false),
                v1::Verdict::Unreadable(reason) => Err(SpoolError::Corrupt {
                    path: self.layout.v1_record(id),
                    reason,
                }),
            };
        }
        match scan::inspect(&self.layout, id)? {
            Verdict::Message(m) => Ok(Some(m)),
            // Not a message (a power loss cut its insert short); the next scan deletes it.
            Verdict::Gone | Verdict::Empty => Ok(None),
            Verdict::Unreadable(reason) => Err(SpoolError::Corrupt {
                path: self.layout.message(id),
                reason,
            }),
        }
    }
}

impl Iterator for Listing {
    type Item = Result<QueuedMessage, SpoolError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (id, format_one) = self.entries.next()?;
            match self.read(&id, format_one) {
                Ok(Some(m)) => return Some(Ok(m)),
                Ok(None) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.entries.len()))
    }
}

/// The rest of listings whose last page was handed out, so that the page after it continues
/// from the same reading of the directory instead of listing (and sorting) 100,000 names
/// again: paging through a large queue reads its directory once.
///
/// A continued listing sees the queue as it was when its first page was read, less the
/// messages removed since; messages queued since are in the next listing from the start (their
/// ids sort after everything listed, so a pager misses nothing older than its first page).
#[derive(Debug, Default)]
pub(super) struct Continuations {
    kept: Mutex<Vec<Continuation>>,
}

#[derive(Debug)]
struct Continuation {
    next: QueueId,
    kept_at: Instant,
    rest: Listing,
}

/// Listings kept at once: a few administrators paging at the same time (each 17 octets a
/// queued message: 1.7 MiB for 100,000).
const KEPT: usize = 8;

/// A listing not continued for this long is read again: a pager that slow is not walking the
/// queue in one go.
const FRESH_FOR: Duration = Duration::from_secs(60);

impl Continuations {
    /// The listing whose last page ended at `after`, if it is kept and fresh.
    pub(super) fn take(&self, after: QueueId) -> Option<Listing> {
        let mut kept = self.fresh();
        let at = kept.iter().position(|c| c.next == after)?;
        // `remove`, not `swap_remove`: the list stays oldest first for `keep` to evict from.
        Some(kept.remove(at).rest)
    }

    /// Keeps the rest of a listing whose page ended at `next`, dropping the oldest kept one
    /// when there are too many.
    pub(super) fn keep(&self, next: QueueId, rest: Listing) {
        let mut kept = self.fresh();
        if kept.len() >= KEPT {
            kept.remove(0);
        }
        kept.push(Continuation {
            next,
            kept_at: Instant::now(),
            rest,
        });
    }

    /// The kept listings, oldest first, without those gone stale.
    fn fresh(&self) -> MutexGuard<'_, Vec<Continuation>> {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        kept.retain(|c| c.kept_at.elapsed() < FRESH_FOR);
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty() -> Listing {
        Listing {
            layout: Layout::new(std::path::Path::new("/nonexistent")),
            entries: Vec::new().into_iter(),
        }
    }

    #[test]
    fn a_full_set_of_kept_listings_gives_way_oldest_first_even_after_one_was_taken() {
        let kept = Continuations::default();
        let ids: Vec<QueueId> = (0..=KEPT).map(|_| QueueId::generate()).collect();
        for id in &ids[..KEPT] {
            kept.keep(*id, empty());
        }
        // A pager continues the oldest listing and keeps its rest again: it is now the newest.
        let first = kept.take(ids[0]).expect("kept");
        kept.keep(ids[0], first);
        kept.keep(ids[KEPT], empty());
        assert!(kept.take(ids[1]).is_none(), "the oldest gave way");
        for id in ids.iter().filter(|id| **id != ids[1]) {
            assert!(kept.take(*id).is_some(), "{id} was dropped instead");
        }
    }
}
