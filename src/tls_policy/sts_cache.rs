//! The MTA-STS policy cache (RFC 8461 §5.1): one small JSON file per policy domain under a
//! state directory, so a restart neither forgets a policy (an attacker who can block the
//! policy host could otherwise strip TLS right after every restart) nor refetches every one.
//!
//! A file is written whole to a temporary name, synced and renamed over the old one, and
//! the directory is synced: a crash leaves the old policy or the new one, never half of
//! either. The raw policy text is stored and parsed again on reading, so a file edited by
//! hand cannot hold a policy the parser would refuse. A file that cannot be read or parsed
//! is logged with its path and treated as absent: the next delivery fetches the policy again.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::sts_policy::StsPolicy;
use crate::address::Domain;

/// A policy as fetched, with the TXT record id it was fetched under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedPolicy {
    /// The `id=` of the `_mta-sts` TXT record when the policy was fetched.
    pub id: String,
    /// When it was fetched.
    pub fetched: SystemTime,
    /// The parsed policy.
    pub policy: StsPolicy,
    /// The policy text as served (TLS-RPT reports quote it).
    pub text: String,
}

impl CachedPolicy {
    /// True once `max_age` has passed since the fetch.
    pub fn expired(&self, now: SystemTime) -> bool {
        now.duration_since(self.fetched).unwrap_or(Duration::ZERO) >= self.policy.max_age
    }
}

#[derive(Serialize, Deserialize)]
struct Stored {
    domain: String,
    id: String,
    fetched: u64,
    policy: String,
}

/// Cached policies by domain: in memory, and in files when a directory is given.
#[derive(Debug)]
pub struct StsCache {
    dir: Option<PathBuf>,
    memory: Mutex<HashMap<Domain, Option<CachedPolicy>>>,
}

impl StsCache {
    /// A cache kept in `dir` (created when missing, on the first write); `None` keeps it in
    /// memory only (tests, ephemeral embedding).
    pub fn new(dir: Option<PathBuf>) -> StsCache {
        StsCache {
            dir,
            memory: Mutex::new(HashMap::new()),
        }
    }

    /// The directory, when the cache has one.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    fn path(&self, domain: &Domain) -> Option<PathBuf> {
        // A Domain holds letters, digits, hyphens and dots between non-empty labels, so it
        // is a safe file name (no '/', never "." or "..").
        self.dir
            .as_ref()
            .map(|d| d.join(format!("{}.json", domain.as_str())))
    }

    /// The cached policy of `domain`, expired or not.
    pub fn get(&self, domain: &Domain) -> Option<CachedPolicy> {
        if let Some(hit) = self.lock().get(domain) {
            return hit.clone();
        }
        let loaded = self.path(domain).and_then(|p| read(&p, domain));
        self.lock().insert(domain.clone(), loaded.clone());
        loaded
    }

    /// Stores a policy (replacing the old one), durably when the cache has a directory.
    pub fn put(&self, domain: &Domain, cached: CachedPolicy) -> io::Result<()> {
        let result = match self.path(domain) {
            Some(path) => write(&path, domain, &cached),
            None => Ok(()),
        };
        self.lock().insert(domain.clone(), Some(cached));
        result
    }

    /// Forgets the policy of `domain` (its TXT record is gone and the policy expired).
    pub fn remove(&self, domain: &Domain) -> io::Result<()> {
        self.lock().insert(domain.clone(), None);
        match self.path(domain) {
            Some(path) => match std::fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
            None => Ok(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Domain, Option<CachedPolicy>>> {
        self.memory.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn read(path: &Path, domain: &Domain) -> Option<CachedPolicy> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(path = %path.display(), "cannot read the cached MTA-STS policy: {e}");
            return None;
        }
    };
    let parsed = serde_json::from_str::<Stored>(&text)
        .map_err(|e| e.to_string())
        .and_then(|s| {
            if s.domain != domain.as_str() {
                return Err(format!("it is for {}, not {domain}", s.domain));
            }
            let policy = StsPolicy::parse(&s.policy).map_err(|e| e.to_string())?;
            Ok(CachedPolicy {
                id: s.id,
                fetched: UNIX_EPOCH + Duration::from_secs(s.fetched),
                policy,
                text: s.policy,
            })
        });
    match parsed {
        Ok(c) => Some(c),
        Err(reason) => {
            tracing::warn!(path = %path.display(), "ignoring the cached MTA-STS policy: {reason}");
            None
        }
    }
}

fn write(path: &Path, domain: &Domain, cached: &CachedPolicy) -> io::Result<()> {
    let stored = Stored {
        domain: domain.as_str().to_string(),
        id: cached.id.clone(),
        fetched: cached
            .fetched
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs(),
        policy: cached.text.clone(),
    };
    let json = serde_json::to_vec_pretty(&stored).map_err(io::Error::other)?;
    super::state_file::write_atomically(path, &json)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cached(age: u64) -> CachedPolicy {
        let text = format!("version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: {age}\n");
        CachedPolicy {
            id: "20260101".into(),
            fetched: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            policy: StsPolicy::parse(&text).unwrap(),
            text,
        }
    }

    #[test]
    fn a_policy_survives_a_new_cache_on_the_same_directory() {
        let dir = tempfile::tempdir().unwrap();
        let domain = Domain::parse("example.com").unwrap();
        StsCache::new(Some(dir.path().into()))
            .put(&domain, cached(86400))
            .unwrap();
        let again = StsCache::new(Some(dir.path().into()));
        assert_eq!(again.get(&domain), Some(cached(86400)));
        assert!(
            again
                .get(&Domain::parse("other.example").unwrap())
                .is_none()
        );
        again.remove(&domain).unwrap();
        assert!(
            StsCache::new(Some(dir.path().into()))
                .get(&domain)
                .is_none()
        );
    }

    #[test]
    fn a_damaged_file_counts_as_no_policy() {
        let dir = tempfile::tempdir().unwrap();
        let domain = Domain::parse("example.com").unwrap();
        std::fs::write(dir.path().join("example.com.json"), "{not json").unwrap();
        assert!(
            StsCache::new(Some(dir.path().into()))
                .get(&domain)
                .is_none()
        );
    }

    #[test]
    fn expiry_follows_max_age() {
        let c = cached(100);
        assert!(!c.expired(c.fetched + Duration::from_secs(99)));
        assert!(c.expired(c.fetched + Duration::from_secs(100)));
    }
}
