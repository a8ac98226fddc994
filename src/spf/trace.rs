//! mail-auth's cache hooks, used to learn the TTLs it hides.
//!
//! mail-auth 0.13's `SpfOutput` carries no TTL, but every lookup it makes calls
//! `ResolverCache::get` before asking DNS and `ResolverCache::insert(key, value, valid_until)`
//! after an answer. [`Recorder`] answers no `get` (so every lookup really happens) and keeps
//! the earliest `valid_until`: a verdict is valid as long as every record it was built from.
//! [`Seeded`] also hands mail-auth the top-level record the checker already fetched, so that
//! record is not asked for twice.

use std::borrow::Borrow;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

use mail_auth::spf::Spf;
use mail_auth::{ResolverCache, Txt};
use tokio::time::Instant;

use super::lookup::from_std;

/// Keeps the earliest expiry of the answers mail-auth received.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    earliest: Mutex<Option<Instant>>,
}

impl Recorder {
    /// The earliest expiry seen, if any answer came in.
    pub(crate) fn earliest(&self) -> Option<Instant> {
        *self.earliest.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn note(&self, valid_until: std::time::Instant) {
        let expires = from_std(valid_until);
        let mut earliest = self.earliest.lock().unwrap_or_else(PoisonError::into_inner);
        *earliest = Some(earliest.map_or(expires, |e| e.min(expires)));
    }
}

impl<K, V> ResolverCache<K, V> for Recorder {
    fn get<Q>(&self, _: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        None
    }

    fn remove<Q>(&self, _: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        None
    }

    fn insert(&self, _: K, _: V, valid_until: std::time::Instant) {
        self.note(valid_until);
    }
}

/// The TXT cache: answers for the one record already fetched, records the rest.
pub(crate) struct Seeded<'a> {
    /// The absolute name (`ourtest.com.`), as mail-auth asks for it.
    pub(crate) name: Box<str>,
    pub(crate) spf: Arc<Spf>,
    pub(crate) recorder: &'a Recorder,
}

impl ResolverCache<Box<str>, Txt> for Seeded<'_> {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let seeded: &Q = self.name.borrow();
        (seeded == name).then(|| Txt::Spf(self.spf.clone()))
    }

    fn remove<Q>(&self, _: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        None
    }

    fn insert(&self, _: Box<str>, _: Txt, valid_until: std::time::Instant) {
        self.recorder.note(valid_until);
    }
}
