//! Per-next-hop TLS and credentials policy, keyed like Postfix's `smtp_sasl_password_maps`
//! (`[smtp.gmail.com]:587`).

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::NextHop;
use crate::oauth2::OAuth2Policy;

/// How much TLS a connection to a next hop needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsLevel {
    /// Never STARTTLS.
    None,
    /// STARTTLS when offered; clear text when not (opportunistic, the default for MX delivery).
    #[default]
    May,
    /// TLS required, certificate not checked.
    Encrypt,
    /// TLS required with a valid certificate for the host name.
    Verify,
}

impl TlsLevel {
    /// The level's name as written in the policy file.
    pub fn name(&self) -> &'static str {
        match self {
            TlsLevel::None => "none",
            TlsLevel::May => "may",
            TlsLevel::Encrypt => "encrypt",
            TlsLevel::Verify => "verify",
        }
    }

    /// True for `encrypt` and `verify`.
    pub fn requires_tls(&self) -> bool {
        matches!(self, TlsLevel::Encrypt | TlsLevel::Verify)
    }
}

impl fmt::Display for TlsLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A password that never shows in `Debug`, `Display` or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret itself, for the AUTH exchange only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// SMTP AUTH credentials for a next hop.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name (often an email address).
    pub username: String,
    /// The password; never printed.
    pub password: Secret,
    /// Where they were configured (`/etc/postrider/tls-policy line 3`), so a refusal can say
    /// which line to fix; `None` when given in code.
    pub defined_at: Option<String>,
}

impl Credentials {
    /// Builds credentials.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Credentials {
        Credentials {
            username: username.into(),
            password: Secret::new(password),
            defined_at: None,
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("defined_at", &self.defined_at)
            .finish()
    }
}

/// The policy for one next hop.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HopPolicy {
    /// TLS requirement.
    pub tls: TlsLevel,
    /// Credentials for AUTH, if the hop needs them.
    pub credentials: Option<Credentials>,
    /// Allow AUTH over a connection without TLS (off unless the policy says so).
    pub auth_without_tls: bool,
    /// AUTH with an OAuth2 access token (XOAUTH2, OAUTHBEARER) instead of a password; at most
    /// one of this and `credentials` is set.
    pub oauth2: Option<OAuth2Policy>,
}

impl HopPolicy {
    /// The account AUTH uses, from the credentials or the OAuth2 policy.
    pub fn auth_user(&self) -> Option<&str> {
        self.credentials
            .as_ref()
            .map(|c| c.username.as_str())
            .or_else(|| self.oauth2.as_ref().map(|o| o.user.as_str()))
    }
}

/// The policy table: one [`HopPolicy`] per next hop, and a default for every other hop.
///
/// A lookup tries the next hop exactly as the route names it (host, brackets and port), then
/// the same host without a port (so `[mail.example.com]` covers every port), then the default.
/// The file format is in [the route module](crate::route#the-policy-file).
#[derive(Debug, Clone, Default)]
pub struct PolicyTable {
    entries: HashMap<NextHop, HopPolicy>,
    default: HopPolicy,
}

impl PolicyTable {
    /// A table where every hop gets the default policy (`may`, no credentials).
    pub fn new() -> PolicyTable {
        PolicyTable::default()
    }

    /// Sets the policy for one next hop (written in the file as `[host]:port`).
    pub fn insert(&mut self, hop: &NextHop, policy: HopPolicy) {
        self.entries.insert(hop.clone(), policy);
    }

    /// Sets the policy for hops without an entry.
    pub fn set_default(&mut self, policy: HopPolicy) {
        self.default = policy;
    }

    /// The policy for hops without an entry.
    pub fn default_policy(&self) -> &HopPolicy {
        &self.default
    }

    /// The policy for a next hop: its exact entry, else the entry for the same host without a
    /// port, else the default.
    pub fn lookup(&self, hop: &NextHop) -> &HopPolicy {
        self.explicit(hop).unwrap_or(&self.default)
    }

    /// The entry that names `hop` (exactly, or the same host without a port), not the
    /// default: a line an administrator wrote for this hop, which wins over a TLS policy
    /// the destination publishes (MTA-STS, DANE).
    pub fn explicit(&self, hop: &NextHop) -> Option<&HopPolicy> {
        if let Some(p) = self.entries.get(hop) {
            return Some(p);
        }
        if hop.port.is_some() {
            let any_port = NextHop {
                port: None,
                ..hop.clone()
            };
            if let Some(p) = self.entries.get(&any_port) {
                return Some(p);
            }
        }
        None
    }

    /// The number of entries besides the default.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when only the default applies.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every policy of the table, the default first.
    pub(crate) fn policies(&self) -> impl Iterator<Item = &HopPolicy> {
        std::iter::once(&self.default).chain(self.entries.values())
    }

    /// True when any entry (or the default) holds credentials.
    pub fn has_credentials(&self) -> bool {
        self.default.credentials.is_some() || self.entries.values().any(|p| p.credentials.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::address::Domain;
    use crate::route::Host;

    fn hop(host: &str, port: Option<u16>) -> NextHop {
        NextHop::direct(Host::Name(Domain::parse(host).unwrap()), port)
    }

    #[test]
    fn lookup_tries_exact_then_any_port_then_the_default() {
        let mut t = PolicyTable::new();
        let verify = HopPolicy {
            tls: TlsLevel::Verify,
            ..HopPolicy::default()
        };
        let encrypt = HopPolicy {
            tls: TlsLevel::Encrypt,
            ..HopPolicy::default()
        };
        t.insert(&hop("smtp.gmail.com", Some(587)), encrypt.clone());
        t.insert(&hop("mail.example.com", None), verify.clone());
        assert_eq!(t.lookup(&hop("smtp.gmail.com", Some(587))), &encrypt);
        assert_eq!(
            t.lookup(&hop("smtp.gmail.com", Some(465))),
            &HopPolicy::default()
        );
        assert_eq!(
            t.lookup(&hop("smtp.gmail.com", None)),
            &HopPolicy::default()
        );
        assert_eq!(t.lookup(&hop("mail.example.com", Some(2525))), &verify);
        let mx = NextHop::mx(Domain::parse("mail.example.com").unwrap(), None);
        assert_eq!(
            t.lookup(&mx),
            &HopPolicy::default(),
            "brackets are part of the key"
        );
    }

    #[test]
    fn credentials_never_show_the_password() {
        let c = Credentials::new("user@example.com", "app-password-123");
        let shown = format!(
            "{c:?} {:?}",
            HopPolicy {
                credentials: Some(c.clone()),
                ..HopPolicy::default()
            }
        );
        assert!(!shown.contains("app-password-123"), "{shown}");
        assert!(shown.contains("user@example.com"));
        assert_eq!(c.password.expose(), "app-password-123");
    }
}
