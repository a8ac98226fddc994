//! Verdicts remembered per (domain, sending address) until their records' TTL runs out.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};

use tokio::time::Instant;

use super::verdict::SpfVerdict;
use crate::address::Domain;

/// A bounded map of verdicts with expiry times on tokio's clock (so tests can pause and
/// advance it). When full, expired entries go first, then the one that expires soonest.
#[derive(Debug)]
pub(crate) struct VerdictCache {
    capacity: usize,
    entries: Mutex<HashMap<(Domain, IpAddr), Entry>>,
}

#[derive(Debug, Clone)]
struct Entry {
    verdict: SpfVerdict,
    expires: Instant,
}

impl VerdictCache {
    /// A cache of at most `capacity` verdicts (at least 1).
    pub(crate) fn new(capacity: usize) -> VerdictCache {
        VerdictCache {
            capacity: capacity.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The verdict for (`domain`, `ip`) if one is cached and still valid.
    pub(crate) fn get(&self, domain: &Domain, ip: IpAddr) -> Option<SpfVerdict> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (domain.clone(), ip);
        match entries.get(&key) {
            Some(entry) if entry.expires > Instant::now() => Some(entry.verdict.clone()),
            Some(_) => {
                entries.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Remembers `verdict` until `expires`; a verdict that has already expired (TTL 0) is
    /// not stored.
    pub(crate) fn insert(&self, verdict: SpfVerdict, expires: Instant) {
        let now = Instant::now();
        if expires <= now {
            return;
        }
        let key = (verdict.domain.clone(), verdict.ip);
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            entries.retain(|_, e| e.expires > now);
            if entries.len() >= self.capacity
                && let Some(soonest) = entries
                    .iter()
                    .min_by_key(|(_, e)| e.expires)
                    .map(|(k, _)| k.clone())
            {
                entries.remove(&soonest);
            }
        }
        entries.insert(key, Entry { verdict, expires });
    }

    /// Forgets everything (after a DNS fix, so the next check reads the new records).
    pub(crate) fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// How many verdicts are held (expired ones included until they are noticed).
    pub(crate) fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::spf::{SpfIdentity, SpfResult};

    fn verdict(domain: &str, ip: &str) -> SpfVerdict {
        SpfVerdict {
            result: SpfResult::Pass,
            domain: Domain::parse(domain).unwrap(),
            ip: ip.parse().unwrap(),
            identity: SpfIdentity::MailFrom,
            problem: None,
            explanation: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_verdict_is_served_until_it_expires() {
        let cache = VerdictCache::new(10);
        let v = verdict("a.example", "192.0.2.1");
        cache.insert(v.clone(), Instant::now() + Duration::from_secs(30));
        assert_eq!(cache.get(&v.domain, v.ip), Some(v.clone()));
        assert_eq!(cache.get(&v.domain, "192.0.2.2".parse().unwrap()), None);
        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(cache.get(&v.domain, v.ip).is_some());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(cache.get(&v.domain, v.ip), None);
        assert_eq!(cache.len(), 0, "an expired entry is dropped when noticed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_ttl_verdict_is_not_stored() {
        let cache = VerdictCache::new(10);
        cache.insert(verdict("a.example", "192.0.2.1"), Instant::now());
        assert_eq!(cache.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_cache_drops_expired_entries_then_the_soonest_to_expire() {
        let cache = VerdictCache::new(2);
        let now = Instant::now();
        cache.insert(
            verdict("a.example", "192.0.2.1"),
            now + Duration::from_secs(10),
        );
        cache.insert(
            verdict("b.example", "192.0.2.1"),
            now + Duration::from_secs(100),
        );
        cache.insert(
            verdict("c.example", "192.0.2.1"),
            now + Duration::from_secs(50),
        );
        assert_eq!(cache.len(), 2);
        let ip = "192.0.2.1".parse().unwrap();
        assert!(
            cache
                .get(&Domain::parse("a.example").unwrap(), ip)
                .is_none()
        );
        assert!(
            cache
                .get(&Domain::parse("b.example").unwrap(), ip)
                .is_some()
        );
        assert!(
            cache
                .get(&Domain::parse("c.example").unwrap(), ip)
                .is_some()
        );

        tokio::time::advance(Duration::from_secs(60)).await;
        cache.insert(
            verdict("d.example", "192.0.2.1"),
            Instant::now() + Duration::from_secs(500),
        );
        assert!(
            cache
                .get(&Domain::parse("b.example").unwrap(), ip)
                .is_some()
        );
        assert!(
            cache
                .get(&Domain::parse("d.example").unwrap(), ip)
                .is_some()
        );
        assert_eq!(cache.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn replacing_an_entry_in_a_full_cache_evicts_nothing_else() {
        let cache = VerdictCache::new(2);
        let later = Instant::now() + Duration::from_secs(100);
        cache.insert(verdict("a.example", "192.0.2.1"), later);
        cache.insert(verdict("b.example", "192.0.2.1"), later);
        cache.insert(verdict("a.example", "192.0.2.1"), later);
        assert_eq!(cache.len(), 2);
        cache.clear();
        assert_eq!(cache.len(), 0);
    }
}
