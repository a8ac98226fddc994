//! Per-next-hop TLS and credentials policy, keyed like Postfix's `smtp_sasl_password_maps`
//! (`[smtp.gmail.com]:587`).

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::NextHop;

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
}

impl Credentials {
    /// Builds credentials.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Credentials {
        Credentials {
            username: username.into(),
            password: Secret::new(password),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
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
}

/// The policy table: one [`HopPolicy`] per next-hop key, and a default for every other hop.
#[derive(Debug, Clone, Default)]
pub struct PolicyTable {
    entries: HashMap<String, HopPolicy>,
    default: HopPolicy,
}

impl PolicyTable {
    /// A table where every hop gets the default policy (`may`, no credentials).
    pub fn new() -> PolicyTable {
        PolicyTable::default()
    }

    /// Sets the policy for one next hop (keyed by its display form, `[host]:port`).
    pub fn insert(&mut self, hop: &NextHop, policy: HopPolicy) {
        self.entries.insert(hop.to_string(), policy);
    }

    /// Sets the policy for hops without an entry.
    pub fn set_default(&mut self, policy: HopPolicy) {
        self.default = policy;
    }

    /// The policy for a next hop.
    pub fn lookup(&self, hop: &NextHop) -> &HopPolicy {
        self.entries.get(&hop.to_string()).unwrap_or(&self.default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
