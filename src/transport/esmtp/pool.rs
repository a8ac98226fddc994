//! The connections of one transport, per next hop: how many are open, and the idle ones kept
//! between `deliver` calls so the next call to the same hop skips the connection, greeting and
//! EHLO (and TLS and AUTH): Postfix's connection cache, under the per-hop connection limit.
//!
//! Invariant: the connections open to a hop never number more than the limit. A connection is
//! counted from the moment a delivery is granted its place ([`Slot`]) until its QUIT is over,
//! whatever it is doing meanwhile: being set up, carrying mail, parked idle, or closing. So a
//! parked session keeps its hop's place, and the rules that keep mail moving follow from that:
//! - a delivery takes a parked session of its own kind first, then a free place; when the hop
//!   is full it closes the oldest parked session (of another kind: a policy generation or a
//!   `TLS-Required: No` session) and takes its place, and only when none is parked it waits;
//! - a delivery that ends while others wait for the hop hands its session to the first of them
//!   of the same kind, else closes it and hands its place on: nobody waits behind an idle
//!   connection until the reaper gets to it.
//!
//! A session is parked only in a clean state (no open transaction) and for at most the idle
//! limit; a reaper task QUITs the ones nobody took in time. Before a parked session is reused
//! its socket is checked without blocking: a server that closed it meanwhile (or that sent
//! something unasked, such as a 421 before closing) has it discarded, so a stale connection
//! does not cost the next message a deferral.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

/// A session older than this is closed rather than parked again (Postfix's
/// `smtp_connection_reuse_time_limit`), so a long stream of mail does not stay on one server
/// connection forever.
const MAX_SESSION_AGE: Duration = Duration::from_secs(300);

/// What the pool needs of a session: the ESMTP [`Session`](super::session::Session), or a
/// stand-in in the unit tests below.
pub(crate) trait Pooled: Send + Sized + 'static {
    /// Whether the server has neither closed the connection nor sent anything unasked.
    fn reusable(&self) -> bool;
    /// Time since the connection was opened.
    fn age(&self) -> Duration;
    /// Ends the session politely (QUIT, then close).
    fn quit(self) -> impl Future<Output = ()> + Send;
}

impl Pooled for super::session::Session {
    fn reusable(&self) -> bool {
        self.is_idle_and_open()
    }

    fn age(&self) -> Duration {
        super::session::Session::age(self)
    }

    fn quit(self) -> impl Future<Output = ()> + Send {
        super::session::Session::quit(self)
    }
}

/// The connections of one transport.
pub(crate) struct Pool<S: Pooled> {
    max: usize,
    /// How long a session is parked; `None`: never (each delivery ends with QUIT).
    idle: Option<Duration>,
    state: Arc<Mutex<State<S>>>,
}

struct State<S: Pooled> {
    /// Per next hop (as users write it). Entries are never removed: one small entry per hop
    /// ever used, bounded by the routing configuration and the destination domains.
    hops: HashMap<String, Hop<S>>,
    reaper_running: bool,
}

struct Hop<S: Pooled> {
    /// Connections counted against the limit: one per live [`Slot`] and one per parked
    /// session.
    open: usize,
    /// The most recently parked last.
    parked: Vec<Parked<S>>,
    /// Deliveries waiting for a place, the longest waiting first.
    waiting: VecDeque<Waiter<S>>,
}

struct Parked<S> {
    /// The kind of session: only a delivery asking for the same kind reuses it.
    kind: String,
    session: S,
    since: Instant,
}

struct Waiter<S: Pooled> {
    /// `None`: the waiter needs a new connection, not a parked one.
    kind: Option<String>,
    /// The place, with a session of the waiter's kind when one is handed over.
    grant: oneshot::Sender<(Option<S>, Slot<S>)>,
}

/// What [`Pool::acquire`] gives a delivery.
pub(crate) enum Grant<S: Pooled> {
    /// A parked session of the kind asked for, with its place.
    Reuse(S, Slot<S>),
    /// A place for a connection the delivery opens itself.
    Fresh(Slot<S>),
}

/// One connection's place under its hop's limit. Dropping it frees the place (for the first
/// waiting delivery, if any); [`Pool::finish`] instead parks it with its session.
pub(crate) struct Slot<S: Pooled> {
    hop: String,
    /// Empty once the place went to a parked session or another slot.
    pool: Weak<Mutex<State<S>>>,
}

impl<S: Pooled> Pool<S> {
    /// At most `max` connections per hop (at least 1); idle sessions kept for `idle`.
    pub(crate) fn new(max: usize, idle: Option<Duration>) -> Pool<S> {
        Pool {
            max: max.max(1),
            idle,
            state: Arc::new(Mutex::new(State {
                hops: HashMap::new(),
                reaper_running: false,
            })),
        }
    }

    /// Whether sessions are kept between deliveries.
    pub(crate) fn caches(&self) -> bool {
        self.idle.is_some()
    }

    /// A place for a connection to `hop`, with a parked session of `kind` when there is one
    /// (`kind` `None`: a new connection is wanted). Waits only while every place is taken by
    /// a delivery under way.
    pub(crate) async fn acquire(&self, hop: &str, kind: Option<&str>) -> Grant<S> {
        enum Next<S: Pooled> {
            Go(Grant<S>),
            Evict(S, Slot<S>),
            Wait(oneshot::Receiver<(Option<S>, Slot<S>)>),
        }
        let weak = Arc::downgrade(&self.state);
        let mut stale = Vec::new();
        let next = {
            let mut state = lock(&self.state);
            let h = state.hops.entry(hop.to_string()).or_insert_with(Hop::new);
            let reused = match (kind, self.idle) {
                (Some(kind), Some(idle)) => h.take_parked(kind, idle, hop, &weak, &mut stale),
                _ => None,
            };
            if let Some(session) = reused {
                Next::Go(Grant::Reuse(session, Slot::new(hop, &weak)))
            } else if h.open < self.max {
                h.open += 1;
                Next::Go(Grant::Fresh(Slot::new(hop, &weak)))
            } else if !h.parked.is_empty() {
                let oldest = h.parked.remove(0);
                Next::Evict(oldest.session, Slot::new(hop, &weak))
            } else {
                let (tx, rx) = oneshot::channel();
                h.waiting.retain(|w| !w.grant.is_closed());
                h.waiting.push_back(Waiter {
                    kind: kind.map(str::to_string),
                    grant: tx,
                });
                Next::Wait(rx)
            }
        };
        close_all(stale);
        match next {
            Next::Go(grant) => grant,
            Next::Evict(session, slot) => {
                session.quit().await;
                Grant::Fresh(slot)
            }
            Next::Wait(rx) => match rx.await {
                Ok((Some(session), slot)) => Grant::Reuse(session, slot),
                Ok((None, slot)) => Grant::Fresh(slot),
                // The pool went away meanwhile (the transport is dropped): nothing is counted
                // any more.
                Err(_) => Grant::Fresh(Slot {
                    hop: hop.to_string(),
                    pool: Weak::new(),
                }),
            },
        }
    }

    /// A place for a new connection to `hop`.
    pub(crate) async fn place(&self, hop: &str) -> Slot<S> {
        match self.acquire(hop, None).await {
            Grant::Fresh(slot) => slot,
            // Not given for no kind; should it be, the session is closed, not lost.
            Grant::Reuse(session, slot) => {
                session.quit().await;
                slot
            }
        }
    }

    /// Ends a delivery's use of `session`: handed to a delivery waiting for the same kind,
    /// else parked for the next one when sessions are kept and `clean` (no transaction open),
    /// else QUIT, its place going to the first waiting delivery.
    pub(crate) async fn finish(&self, kind: &str, session: S, slot: Slot<S>, clean: bool) {
        let keep = clean && session.age() < MAX_SESSION_AGE;
        let leftover = match self.idle {
            Some(_) if keep => self.hand_on_or_park(kind, session, slot),
            _ => Some((session, slot)),
        };
        if let Some((session, slot)) = leftover {
            session.quit().await;
            drop(slot);
        }
    }

    /// The session and its place when they must be closed and handed on instead.
    fn hand_on_or_park(&self, kind: &str, session: S, slot: Slot<S>) -> Option<(S, Slot<S>)> {
        let start_reaper = {
            let mut state = lock(&self.state);
            let Some(h) = state.hops.get_mut(&slot.hop) else {
                // Not counted by this pool (a slot left over from a dropped one).
                return Some((session, slot));
            };
            let (mut session, mut slot) = (session, slot);
            while let Some(i) = h
                .waiting
                .iter()
                .position(|w| w.kind.as_deref() == Some(kind))
            {
                let Some(w) = h.waiting.remove(i) else { break };
                match w.grant.send((Some(session), slot)) {
                    Ok(()) => return None,
                    Err((Some(s), sl)) => (session, slot) = (s, sl),
                    Err((None, _)) => unreachable!("a refused handover returns what it carried"),
                }
            }
            h.waiting.retain(|w| !w.grant.is_closed());
            if !h.waiting.is_empty() {
                return Some((session, slot));
            }
            slot.disarm();
            h.parked.push(Parked {
                kind: kind.to_string(),
                session,
                since: Instant::now(),
            });
            !std::mem::replace(&mut state.reaper_running, true)
        };
        if let Some(idle) = self.idle.filter(|_| start_reaper) {
            tokio::spawn(reap(Arc::downgrade(&self.state), idle));
        }
        None
    }

    /// QUITs every parked session (the policy they were set up under was replaced, or the
    /// transport is going away).
    pub(crate) fn clear(&self) {
        let weak = Arc::downgrade(&self.state);
        let parked: Vec<(S, Slot<S>)> = {
            let mut state = lock(&self.state);
            state
                .hops
                .iter_mut()
                .flat_map(|(name, h)| {
                    std::mem::take(&mut h.parked)
                        .into_iter()
                        .map(|p| (p.session, Slot::new(name, &weak)))
                })
                .collect()
        };
        close_all(parked);
    }
}

impl<S: Pooled> Drop for Pool<S> {
    fn drop(&mut self) {
        self.clear();
    }
}

impl<S: Pooled> Hop<S> {
    fn new() -> Hop<S> {
        Hop {
            open: 0,
            parked: Vec::new(),
            waiting: VecDeque::new(),
        }
    }

    /// The most recently parked live session of `kind`, the others then aging out instead of
    /// all being kept barely alive. Stale ones met on the way go to `stale`, each with its
    /// place.
    fn take_parked(
        &mut self,
        kind: &str,
        idle: Duration,
        hop: &str,
        pool: &Weak<Mutex<State<S>>>,
        stale: &mut Vec<(S, Slot<S>)>,
    ) -> Option<S> {
        let now = Instant::now();
        while let Some(i) = self.parked.iter().rposition(|p| p.kind == kind) {
            let p = self.parked.remove(i);
            if now.duration_since(p.since) < idle && p.session.reusable() {
                return Some(p.session);
            }
            stale.push((p.session, Slot::new(hop, pool)));
        }
        None
    }

    /// One place came free: the first delivery still waiting gets it, else the count drops.
    fn free_place(&mut self, hop: &str, pool: &Weak<Mutex<State<S>>>) {
        while let Some(w) = self.waiting.pop_front() {
            match w.grant.send((None, Slot::new(hop, pool))) {
                Ok(()) => return,
                Err((_, slot)) => slot.disarm(),
            }
        }
        self.open = self.open.saturating_sub(1);
    }
}

impl<S: Pooled> Slot<S> {
    /// A place already counted in the hop's `open`.
    fn new(hop: &str, pool: &Weak<Mutex<State<S>>>) -> Slot<S> {
        Slot {
            hop: hop.to_string(),
            pool: pool.clone(),
        }
    }

    /// Gives the place up without freeing it: it went to a parked session or another slot.
    /// Called with the pool locked, where dropping an armed slot would deadlock.
    fn disarm(mut self) {
        self.pool = Weak::new();
    }
}

impl<S: Pooled> Drop for Slot<S> {
    fn drop(&mut self) {
        let Some(state) = self.pool.upgrade() else {
            return;
        };
        let mut guard = lock(&state);
        if let Some(h) = guard.hops.get_mut(&self.hop) {
            h.free_place(&self.hop, &self.pool);
        }
    }
}

fn lock<S: Pooled>(state: &Mutex<State<S>>) -> MutexGuard<'_, State<S>> {
    // Every update completes under the lock without calling out: a panic elsewhere cannot
    // leave it inconsistent.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// QUITs sessions in the background, each freeing its place once closed: nobody waits for
/// their replies. Outside a runtime (a transport dropped or given a new policy from a plain
/// thread) they are only dropped, which closes their connections without a QUIT. Called with
/// the pool unlocked.
fn close_all<S: Pooled>(sessions: Vec<(S, Slot<S>)>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    for (session, slot) in sessions {
        runtime.spawn(async move {
            session.quit().await;
            drop(slot);
        });
    }
}

/// Closes parked sessions once they have been idle too long; ends when nothing is parked (the
/// next park starts a new reaper) or when the transport is gone.
async fn reap<S: Pooled>(state: Weak<Mutex<State<S>>>, idle: Duration) {
    loop {
        let next_check = {
            let Some(strong) = state.upgrade() else {
                return;
            };
            let mut guard = lock(&strong);
            let now = Instant::now();
            let mut expired = Vec::new();
            let mut earliest: Option<Instant> = None;
            for (name, h) in guard.hops.iter_mut() {
                let (old, young): (Vec<Parked<S>>, Vec<Parked<S>>) = std::mem::take(&mut h.parked)
                    .into_iter()
                    .partition(|p| now.duration_since(p.since) >= idle);
                expired.extend(
                    old.into_iter()
                        .map(|p| (p.session, Slot::new(name, &state))),
                );
                for p in &young {
                    let due = p.since + idle;
                    earliest = Some(earliest.map_or(due, |e| e.min(due)));
                }
                h.parked = young;
            }
            if earliest.is_none() {
                guard.reaper_running = false;
            }
            drop(guard);
            close_all(expired);
            earliest
        };
        match next_check {
            Some(t) => tokio::time::sleep_until(t).await,
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A connection that counts how many of its kind are open, and the most ever open.
    struct Conn {
        open: Arc<Counter>,
        alive: bool,
        age: Duration,
        quit_takes: Duration,
    }

    #[derive(Default)]
    struct Counter {
        now: AtomicUsize,
        most: AtomicUsize,
        quits: AtomicUsize,
    }

    impl Counter {
        fn connect(self: &Arc<Self>) -> Conn {
            let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(n, Ordering::SeqCst);
            Conn {
                open: self.clone(),
                alive: true,
                age: Duration::ZERO,
                quit_takes: Duration::from_millis(5),
            }
        }
        fn now(&self) -> usize {
            self.now.load(Ordering::SeqCst)
        }
        fn most(&self) -> usize {
            self.most.load(Ordering::SeqCst)
        }
        fn quits(&self) -> usize {
            self.quits.load(Ordering::SeqCst)
        }
    }

    impl Drop for Conn {
        fn drop(&mut self) {
            self.open.now.fetch_sub(1, Ordering::SeqCst);
        }
    }

    impl Pooled for Conn {
        fn reusable(&self) -> bool {
            self.alive
        }
        fn age(&self) -> Duration {
            self.age
        }
        async fn quit(self) {
            tokio::time::sleep(self.quit_takes).await;
            self.open.quits.fetch_add(1, Ordering::SeqCst);
        }
    }

    const HOP: &str = "[relay]:587";
    const IDLE: Duration = Duration::from_secs(2);

    /// One delivery: a place, a connection (reused or new), some work, then finish.
    async fn deliver(pool: &Pool<Conn>, counter: &Arc<Counter>, kind: &str, work: Duration) {
        let (conn, slot) = match pool.acquire(HOP, Some(kind)).await {
            Grant::Reuse(c, s) => (c, s),
            Grant::Fresh(s) => {
                tokio::time::sleep(Duration::from_millis(1)).await;
                (counter.connect(), s)
            }
        };
        tokio::time::sleep(work).await;
        pool.finish(kind, conn, slot, true).await;
    }

    #[tokio::test(start_paused = true)]
    async fn parked_sessions_count_against_the_limit_under_a_stream_of_deliveries() {
        let pool = Arc::new(Pool::new(3, Some(IDLE)));
        let counter = Arc::new(Counter::default());
        let mut all = tokio::task::JoinSet::new();
        for i in 0..60u64 {
            // Two kinds of session to one hop, so parked ones of the other kind must be
            // closed to make room.
            let kind = if i % 4 == 0 {
                "tls-required-no"
            } else {
                "normal"
            };
            let work = Duration::from_millis(3 + i % 7);
            let (pool, counter) = (pool.clone(), counter.clone());
            all.spawn(async move { deliver(&pool, &counter, kind, work).await });
            // In bursts, so that each finds sessions parked by the one before.
            if i % 6 == 5 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        while let Some(done) = all.join_next().await {
            assert!(done.is_ok(), "{done:?}");
        }
        assert!(
            counter.most() <= 3,
            "{} connections open at once",
            counter.most()
        );
        assert!(counter.most() >= 2, "the deliveries never overlapped");
        // Everything left is parked, within the limit, and closed once idle.
        assert!(counter.now() <= 3);
        tokio::time::sleep(IDLE * 2).await;
        assert_eq!(counter.now(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_delivery_gets_the_session_of_one_that_ends() {
        let pool = Pool::new(1, Some(IDLE));
        let counter = Arc::new(Counter::default());
        let first = pool.acquire(HOP, Some("k")).await;
        let Grant::Fresh(slot) = first else {
            panic!("nothing was parked")
        };
        let conn = counter.connect();
        let second = pool.acquire(HOP, Some("k"));
        tokio::pin!(second);
        assert!(
            poll_once(second.as_mut()).await.is_none(),
            "the hop is full"
        );
        pool.finish("k", conn, slot, true).await;
        let Some(Grant::Reuse(conn, slot)) = poll_once(second.as_mut()).await else {
            panic!("the session was not handed over")
        };
        assert_eq!((counter.most(), counter.quits()), (1, 0));
        pool.finish("k", conn, slot, true).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_delivery_of_another_kind_closes_a_parked_session_instead_of_waiting() {
        let pool = Pool::new(1, Some(IDLE));
        let counter = Arc::new(Counter::default());
        deliver(&pool, &counter, "old-policy", Duration::ZERO).await;
        assert_eq!(counter.now(), 1, "parked");
        let started = Instant::now();
        let Grant::Fresh(slot) = pool.acquire(HOP, Some("new-policy")).await else {
            panic!("a session of another kind was reused")
        };
        assert_eq!(
            (counter.now(), counter.quits()),
            (0, 1),
            "closed before the new one"
        );
        assert!(started.elapsed() < IDLE, "waited for the reaper");
        drop(slot);
    }

    #[tokio::test(start_paused = true)]
    async fn an_ending_delivery_closes_its_session_for_a_waiter_of_another_kind() {
        let pool = Pool::new(1, Some(IDLE));
        let counter = Arc::new(Counter::default());
        let Grant::Fresh(slot) = pool.acquire(HOP, Some("a")).await else {
            panic!("nothing was parked")
        };
        let conn = counter.connect();
        let other = pool.acquire(HOP, Some("b"));
        tokio::pin!(other);
        assert!(poll_once(other.as_mut()).await.is_none());
        pool.finish("a", conn, slot, true).await;
        assert_eq!((counter.now(), counter.quits()), (0, 1));
        assert!(matches!(
            poll_once(other.as_mut()).await,
            Some(Grant::Fresh(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_left_unclean_is_closed_and_a_waiter_gets_only_its_place() {
        let pool = Pool::new(1, Some(IDLE));
        let counter = Arc::new(Counter::default());
        let Grant::Fresh(slot) = pool.acquire(HOP, Some("k")).await else {
            panic!("nothing was parked")
        };
        let conn = counter.connect();
        let waiter = pool.acquire(HOP, Some("k"));
        tokio::pin!(waiter);
        assert!(poll_once(waiter.as_mut()).await.is_none());
        // A transaction was left open: the session must not carry another message.
        pool.finish("k", conn, slot, false).await;
        assert_eq!((counter.now(), counter.quits()), (0, 1));
        assert!(matches!(
            poll_once(waiter.as_mut()).await,
            Some(Grant::Fresh(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_past_its_age_limit_is_closed_rather_than_parked() {
        let pool = Pool::new(1, Some(IDLE));
        let counter = Arc::new(Counter::default());
        let Grant::Fresh(slot) = pool.acquire(HOP, Some("k")).await else {
            panic!("nothing was parked")
        };
        let mut conn = counter.connect();
        conn.age = MAX_SESSION_AGE;
        pool.finish("k", conn, slot, true).await;
        assert_eq!((counter.now(), counter.quits()), (0, 1));
        // Its place is free again.
        assert!(matches!(
            poll_once(Box::pin(pool.acquire(HOP, Some("k")))).await,
            Some(Grant::Fresh(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_place_given_up_by_a_cancelled_waiter_goes_to_the_next() {
        let pool: Pool<Conn> = Pool::new(1, None);
        let Grant::Fresh(slot) = pool.acquire(HOP, None).await else {
            panic!()
        };
        let cancelled = Box::pin(pool.acquire(HOP, None));
        let mut cancelled = cancelled;
        assert!(poll_once(cancelled.as_mut()).await.is_none());
        let next = pool.acquire(HOP, None);
        tokio::pin!(next);
        assert!(poll_once(next.as_mut()).await.is_none());
        drop(cancelled);
        drop(slot);
        let granted = poll_once(next.as_mut()).await;
        assert!(granted.is_some());
        // The place is still counted: a third waits.
        let third = pool.acquire(HOP, None);
        tokio::pin!(third);
        assert!(poll_once(third.as_mut()).await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn other_hops_are_not_affected() {
        let pool: Pool<Conn> = Pool::new(1, None);
        let _a = pool.acquire(HOP, None).await;
        let other = pool.acquire("example.com", None);
        tokio::pin!(other);
        assert!(poll_once(other.as_mut()).await.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_stale_parked_session_is_closed_and_a_new_one_opened() {
        let pool = Pool::new(2, Some(IDLE));
        let counter = Arc::new(Counter::default());
        let Grant::Fresh(slot) = pool.acquire(HOP, Some("k")).await else {
            panic!()
        };
        let mut conn = counter.connect();
        conn.alive = false;
        pool.finish("k", conn, slot, true).await;
        assert!(matches!(
            pool.acquire(HOP, Some("k")).await,
            Grant::Fresh(_)
        ));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(counter.quits(), 1);
    }

    async fn poll_once<F: Future + Unpin>(f: F) -> Option<F::Output> {
        tokio::time::timeout(Duration::ZERO, f).await.ok()
    }
}
