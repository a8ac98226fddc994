//! The server's sections of `postrider.toml`: `[server]` (access control, AUTH, limits) and
//! any number of `[[listener]]` tables.
//!
//! ```toml
//! [server]
//! access = "/etc/mail/access"                 # sendmail's access file; default: none
//! mynetworks = ["127.0.0.0/8", "192.168.1.0/24"]  # clients that may relay; default: none
//! passwords = "/etc/postrider/passwd"         # user:{SCHEME}hash lines; default: no AUTH
//! received_auth_header = false                # name the AUTH user in Received: (default off)
//!
//! [server.limits]                             # every key optional; defaults shown
//! max_message_size = 10240000
//! max_recipients = 1000
//! max_line_length = 2048
//! max_errors = 20
//! max_auth_failures = 3
//! max_hops = 50
//! max_connections = 500
//! max_connections_per_client = 50
//!
//! [[listener]]
//! address = "0.0.0.0:25"
//! kind = "smtp"                               # smtp | submission | submissions
//! certificate = "/etc/ssl/certs/mail.pem"     # PEM chain, leaf first (STARTTLS / TLS)
//! key = "/etc/ssl/private/mail.key"           # PEM private key
//! allow_plaintext_auth_from_loopback = false  # AUTH without TLS from 127.0.0.1 (default off)
//! ```
//!
//! With neither `access` nor `mynetworks`, only loopback clients may relay.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::access::{AccessError, AccessTable};
use super::limits::ServerLimits;
use super::networks::{Network, Networks};
use super::passwd::{PasswdError, PasswordFile};
use super::relay::RelayPolicy;
use super::tls::{ServerTls, TlsError};
use super::{Endpoint, ListenerKind};

/// `[server]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct ServerSection {
    /// sendmail's access file.
    pub access: Option<PathBuf>,
    /// Postfix's `mynetworks`: client networks that may relay.
    pub mynetworks: Vec<Network>,
    /// The password file for AUTH.
    pub passwords: Option<PathBuf>,
    /// Name the authenticated user in `Received:`.
    pub received_auth_header: bool,
    /// `[server.limits]`.
    pub limits: LimitsSection,
}

/// `[server.limits]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
#[allow(missing_docs)] // each field is the `ServerLimits` field of the same name
pub struct LimitsSection {
    pub max_message_size: usize,
    pub max_recipients: usize,
    pub max_line_length: usize,
    pub max_errors: usize,
    pub max_auth_failures: u32,
    pub max_hops: usize,
    pub max_connections: usize,
    pub max_connections_per_client: usize,
}

impl Default for LimitsSection {
    fn default() -> Self {
        let d = ServerLimits::default();
        LimitsSection {
            max_message_size: d.max_message_size,
            max_recipients: d.max_recipients,
            max_line_length: d.max_line_length,
            max_errors: d.max_errors,
            max_auth_failures: d.max_auth_failures,
            max_hops: d.max_hops,
            max_connections: d.max_connections,
            max_connections_per_client: d.max_connections_per_client,
        }
    }
}

impl LimitsSection {
    /// As [`ServerLimits`].
    pub fn to_limits(&self) -> ServerLimits {
        ServerLimits {
            max_message_size: self.max_message_size,
            max_recipients: self.max_recipients,
            max_line_length: self.max_line_length,
            max_errors: self.max_errors,
            max_auth_failures: self.max_auth_failures,
            max_hops: self.max_hops,
            max_connections: self.max_connections,
            max_connections_per_client: self.max_connections_per_client,
        }
    }
}

impl ServerSection {
    /// Makes relative paths relative to `base` (the configuration file's folder).
    pub fn resolve_paths(&mut self, base: &Path) {
        for p in [self.access.as_mut(), self.passwords.as_mut()]
            .into_iter()
            .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }

    /// Reads the access file (if any) and builds the relay policy.
    pub fn relay_policy(&self) -> Result<RelayPolicy, AccessError> {
        let access = self.access.as_ref().map(AccessTable::load).transpose()?;
        Ok(RelayPolicy::new(
            access,
            Networks::new(self.mynetworks.clone()),
        ))
    }

    /// Reads the password file, if one is configured.
    pub fn password_file(&self) -> Result<Option<PasswordFile>, PasswdError> {
        self.passwords.as_ref().map(PasswordFile::load).transpose()
    }
}

/// One `[[listener]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawListener")]
#[non_exhaustive]
pub struct ListenerSection {
    /// Where to listen.
    pub address: SocketAddr,
    /// `smtp`, `submission` or `submissions`.
    pub kind: ListenerKind,
    /// The PEM certificate chain.
    pub certificate: Option<PathBuf>,
    /// The PEM private key.
    pub key: Option<PathBuf>,
    /// AUTH without TLS for loopback clients.
    pub allow_plaintext_auth_from_loopback: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListener {
    address: SocketAddr,
    #[serde(default = "smtp")]
    kind: ListenerKind,
    certificate: Option<PathBuf>,
    key: Option<PathBuf>,
    #[serde(default)]
    allow_plaintext_auth_from_loopback: bool,
}

fn smtp() -> ListenerKind {
    ListenerKind::Smtp
}

impl TryFrom<RawListener> for ListenerSection {
    type Error = String;
    fn try_from(r: RawListener) -> Result<Self, String> {
        match (&r.certificate, &r.key) {
            (Some(_), None) => {
                return Err(format!("listener {}: certificate without key", r.address));
            }
            (None, Some(_)) => {
                return Err(format!("listener {}: key without certificate", r.address));
            }
            (None, None) if r.kind == ListenerKind::Submissions => {
                return Err(format!(
                    "listener {}: kind submissions is TLS from the first byte and needs certificate and key",
                    r.address
                ));
            }
            _ => {}
        }
        Ok(ListenerSection {
            address: r.address,
            kind: r.kind,
            certificate: r.certificate,
            key: r.key,
            allow_plaintext_auth_from_loopback: r.allow_plaintext_auth_from_loopback,
        })
    }
}

impl ListenerSection {
    /// Makes relative paths relative to `base`.
    pub fn resolve_paths(&mut self, base: &Path) {
        for p in [self.certificate.as_mut(), self.key.as_mut()]
            .into_iter()
            .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }

    /// Reads the certificate and key (if any): the listener's TLS.
    pub fn tls(&self) -> Result<Option<Arc<ServerTls>>, TlsError> {
        match (&self.certificate, &self.key) {
            (Some(c), Some(k)) => Ok(Some(Arc::new(ServerTls::load(c, k)?))),
            _ => Ok(None),
        }
    }

    /// The endpoint, with `tls` as read by [`ListenerSection::tls`].
    pub fn endpoint(&self, tls: Option<Arc<ServerTls>>) -> Endpoint {
        let e = match tls {
            Some(t) => Endpoint::with_tls(self.kind, t),
            None => Endpoint::new(self.kind),
        };
        e.allow_plaintext_auth_from_loopback(self.allow_plaintext_auth_from_loopback)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn server_sections_parse_with_paths_relative_to_the_file() {
        let c = Config::parse(
            "[server]\naccess = \"access\"\nmynetworks = [\"192.168.1.0/24\"]\npasswords = \"/etc/postrider/passwd\"\n\n[server.limits]\nmax_recipients = 10\n\n[[listener]]\naddress = \"0.0.0.0:587\"\nkind = \"submission\"\ncertificate = \"cert.pem\"\nkey = \"key.pem\"\n\n[[listener]]\naddress = \"127.0.0.1:25\"\n",
            "/etc/postrider/postrider.toml",
        )
        .unwrap();
        assert_eq!(
            c.server.access.as_deref(),
            Some(std::path::Path::new("/etc/postrider/access"))
        );
        assert_eq!(c.server.limits.to_limits().max_recipients, 10);
        assert_eq!(c.listener.len(), 2);
        assert_eq!(
            c.listener[0].certificate.as_deref(),
            Some(std::path::Path::new("/etc/postrider/cert.pem"))
        );
        assert_eq!(c.listener[1].kind, super::ListenerKind::Smtp);
    }

    #[test]
    fn bad_listener_and_server_keys_name_the_line() {
        for (text, want) in [
            (
                "[server]\nacess = \"x\"\n",
                "c.toml:2: unknown field `acess`",
            ),
            (
                "[server]\nmynetworks = [\"192.168.1.5/24\"]\n",
                "c.toml:2: ",
            ),
            (
                "\n[[listener]]\naddress = \"0.0.0.0:465\"\nkind = \"submissions\"\n",
                "needs certificate and key",
            ),
            (
                "[[listener]]\naddress = \"0.0.0.0:25\"\nkind = \"lmtp\"\n",
                "c.toml:3: unknown variant `lmtp`",
            ),
            (
                "[[listener]]\naddress = \"0.0.0.0:25\"\ncertificate = \"c.pem\"\n",
                "certificate without key",
            ),
        ] {
            let e = Config::parse(text, "c.toml").unwrap_err().to_string();
            assert!(e.contains(want), "{want:?} not in {e:?}");
        }
    }
}
