//! Idle sessions kept open between `deliver` calls, so the next call to the same next hop skips
//! the connection, greeting and EHLO (and TLS and AUTH): Postfix's connection cache.
//!
//! A session is parked only in a clean state (no open transaction) and for at most the idle
//! limit; a reaper task QUITs the ones nobody took in time. Before a parked session is reused
//! its socket is checked without blocking: a server that closed it meanwhile (or that sent
//! something unasked, such as a 421 before closing) has it discarded, so a stale connection
//! does not cost the next message a deferral.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::session::Session;

/// A session older than this is closed rather than parked again (Postfix's
/// `smtp_connection_reuse_time_limit`), so a long stream of mail does not stay on one server
/// connection forever.
const MAX_SESSION_AGE: Duration = Duration::from_secs(300);

struct Parked {
    session: Session,
    since: Instant,
}

#[derive(Default)]
struct State {
    /// Parked sessions per next hop, the most recently parked last.
    parked: HashMap<String, Vec<Parked>>,
    reaper_running: bool,
}

/// The idle sessions of one transport.
pub(crate) struct SessionCache {
    state: Arc<Mutex<State>>,
    idle: Duration,
}

impl SessionCache {
    /// Keeps idle sessions for `idle`.
    pub(crate) fn new(idle: Duration) -> SessionCache {
        SessionCache {
            state: Arc::new(Mutex::new(State::default())),
            idle,
        }
    }

    /// A live parked session for `key`, if there is one. Stale ones met on the way are closed.
    pub(crate) fn take(&self, key: &str) -> Option<Session> {
        let now = Instant::now();
        let mut stale = Vec::new();
        let found = {
            let mut state = lock(&self.state);
            let list = state.parked.get_mut(key)?;
            let mut found = None;
            // The most recently parked first: the others then age out instead of all being
            // kept barely alive.
            while let Some(p) = list.pop() {
                if now.duration_since(p.since) < self.idle && p.session.is_idle_and_open() {
                    found = Some(p.session);
                    break;
                }
                stale.push(p.session);
            }
            if list.is_empty() {
                state.parked.remove(key);
            }
            found
        };
        close_all(stale);
        found
    }

    /// Keeps `session` for the next call to `key`, or QUITs it if it is too old to keep.
    pub(crate) async fn park(&self, key: &str, session: Session) {
        if session.age() >= MAX_SESSION_AGE {
            session.quit().await;
            return;
        }
        let start_reaper = {
            let mut state = lock(&self.state);
            state
                .parked
                .entry(key.to_string())
                .or_default()
                .push(Parked {
                    session,
                    since: Instant::now(),
                });
            !std::mem::replace(&mut state.reaper_running, true)
        };
        if start_reaper {
            tokio::spawn(reap(Arc::downgrade(&self.state), self.idle));
        }
    }
}

impl SessionCache {
    /// QUITs every parked session (the policy they were set up under was replaced, or the
    /// transport is going away).
    pub(crate) fn clear(&self) {
        let parked = std::mem::take(&mut lock(&self.state).parked);
        close_all(parked.into_values().flatten().map(|p| p.session).collect());
    }
}

impl Drop for SessionCache {
    fn drop(&mut self) {
        self.clear();
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // Every update is a single push or pop: a panic elsewhere cannot leave it inconsistent.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// QUITs sessions in the background: nobody waits for their replies. Outside a runtime (a
/// transport dropped or given a new policy from a plain thread) they are only dropped, which
/// closes their connections without a QUIT.
fn close_all(sessions: Vec<Session>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    for s in sessions {
        runtime.spawn(s.quit());
    }
}

/// Closes parked sessions once they have been idle too long; ends when nothing is parked (the
/// next `park` starts a new reaper) or when the transport is gone.
async fn reap(state: Weak<Mutex<State>>, idle: Duration) {
    loop {
        let next_check = {
            let Some(state) = state.upgrade() else { return };
            let mut state = lock(&state);
            let now = Instant::now();
            let mut expired = Vec::new();
            let mut earliest: Option<Instant> = None;
            state.parked.retain(|_, list| {
                let (old, young): (Vec<Parked>, Vec<Parked>) = std::mem::take(list)
                    .into_iter()
                    .partition(|p| now.duration_since(p.since) >= idle);
                expired.extend(old.into_iter().map(|p| p.session));
                for p in &young {
                    let due = p.since + idle;
                    earliest = Some(earliest.map_or(due, |e| e.min(due)));
                }
                *list = young;
                !list.is_empty()
            });
            if earliest.is_none() {
                state.reaper_running = false;
            }
            drop(state);
            close_all(expired);
            earliest
        };
        match next_check {
            Some(t) => tokio::time::sleep_until(t).await,
            None => return,
        }
    }
}
