//! The token sources of a transport, one per source named in its policy, so a source's cache
//! outlives the connections (and the policy reloads) that use it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use rustls::RootCertStore;

use super::{RefreshGrant, TokenCommand, TokenError, TokenFile, TokenSource, TokenSpec};
use crate::https::{HttpsClient, HttpsError, HttpsOptions};
use crate::status::Severity;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    File(PathBuf),
    Command(String),
    Refresh(PathBuf),
}

/// Builds and keeps the [`TokenSource`]s a policy names. The refresh-token grant's HTTPS
/// client trusts the roots given here (a transport passes its own `tls_roots`), and is made
/// when first needed.
pub struct Tokens {
    roots: RootCertStore,
    client: OnceLock<Result<HttpsClient, HttpsError>>,
    sources: Mutex<HashMap<Key, Arc<dyn TokenSource>>>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens").finish_non_exhaustive()
    }
}

impl Tokens {
    /// Sources whose token endpoints are trusted by `roots`.
    pub fn new(roots: RootCertStore) -> Tokens {
        Tokens {
            roots,
            client: OnceLock::new(),
            sources: Mutex::new(HashMap::new()),
        }
    }

    /// Sources that fetch tokens with `client`.
    pub fn with_client(client: HttpsClient) -> Tokens {
        let tokens = Tokens::new(RootCertStore::empty());
        let _ = tokens.client.set(Ok(client));
        tokens
    }

    /// The source for `spec`: the same one every time for the same file or command.
    pub fn source(&self, spec: &TokenSpec) -> Result<Arc<dyn TokenSource>, TokenError> {
        let key = match spec {
            TokenSpec::Source(s) => return Ok(s.0.clone()),
            TokenSpec::File(p) => Key::File(p.clone()),
            TokenSpec::Command(c) => Key::Command(c.clone()),
            TokenSpec::Refresh(p) => Key::Refresh(p.clone()),
        };
        let mut sources = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = sources.get(&key) {
            return Ok(s.clone());
        }
        let source: Arc<dyn TokenSource> = match &key {
            Key::File(p) => Arc::new(TokenFile::new(p)),
            Key::Command(c) => Arc::new(TokenCommand::new(c)),
            Key::Refresh(p) => {
                let client = self
                    .client
                    .get_or_init(|| HttpsClient::new(self.roots.clone(), HttpsOptions::default()))
                    .clone()
                    .map_err(|e| TokenError {
                        origin: format!("the refresh-token grant of {}", p.display()),
                        reason: e.reason(),
                        severity: Severity::Permanent,
                    })?;
                Arc::new(RefreshGrant::new(p, client))
            }
        };
        sources.insert(key, source.clone());
        Ok(source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_spec_gives_the_same_source_so_its_cache_is_shared() {
        let tokens = Tokens::new(RootCertStore::empty());
        let spec = TokenSpec::Refresh("/etc/postrider/m365.oauth".into());
        let a = tokens.source(&spec).unwrap();
        let b = tokens.source(&spec).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let other = tokens.source(&TokenSpec::File("/x".into())).unwrap();
        assert!(!Arc::ptr_eq(&a, &other));
        assert_eq!(
            a.describe(),
            "the refresh-token grant of /etc/postrider/m365.oauth"
        );
    }
}
