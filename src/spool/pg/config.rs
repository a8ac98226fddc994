//! How a [`PgSpool`](super::PgSpool) reaches its database: the `spool` setting of
//! `postrider.toml`, either a connection URL or a `[spool]` table.
//!
//! ```toml
//! spool = "postgresql://postrider@db.example.com/postrider?sslmode=require"
//! ```
//!
//! ```toml
//! [spool]
//! url = "postgresql://postrider@db.example.com/postrider?sslmode=require"
//! node = "mta1"           # the name leases carry (default: host name and process id)
//! lease = "60s"           # how long a claim lasts unless renewed (renewed every third of it)
//! pool_size = 16          # database connections per engine
//! timeout = "30s"         # one spool operation at most (then a temporary error)
//! ca_file = "db-ca.pem"   # extra trust anchors for the server's certificate (PEM)
//! ```
//!
//! The URL is libpq's (`postgresql://user:password@host:port/dbname?options`, or
//! `host=/run/postgresql user=postrider dbname=postrider`); a host starting with `/` is the
//! directory of a Unix socket. TLS, when used, is always verified against the Mozilla roots and
//! `ca_file`, chain and name (libpq's `verify-full`): `sslmode=require` insists on it,
//! `prefer` (the default) uses it when the server offers it, `disable` never does.
//!
//! ```
//! use postrider::spool::pg::PgSpoolConfig;
//! let c: PgSpoolConfig = "postgresql://mta@%2Frun%2Fpostgresql/queue".parse()?;
//! assert_eq!(c.connection.get_dbname(), Some("queue"));
//! assert_eq!(c.lease, std::time::Duration::from_secs(60));
//! assert!("postgresql:///queue".parse::<PgSpoolConfig>().is_err()); // no user
//! # Ok::<(), postrider::spool::pg::PgConfigError>(())
//! ```

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// How long a claim lasts unless renewed, when the configuration says nothing.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);
/// The shortest lease accepted: renewal runs every third of it, and a lease must outlast a
/// renewal's round trip with room to spare.
pub const MIN_LEASE: Duration = Duration::from_millis(300);
/// Connections per engine, when the configuration says nothing.
pub const DEFAULT_POOL_SIZE: usize = 16;
/// How long one spool operation may take, when the configuration says nothing.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a `spool` setting was refused. The connection URL is never quoted: it may hold a
/// password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PgConfigError {
    /// The URL does not parse.
    #[error("the PostgreSQL connection URL is invalid: {0}")]
    Url(String),
    /// The URL names no user; libpq would take the operating-system user, which differs
    /// between the daemon and the administrator's shell.
    #[error("the PostgreSQL connection URL names no user (postgresql://USER@HOST/DATABASE)")]
    NoUser,
    /// The URL names no host or socket directory.
    #[error(
        "the PostgreSQL connection URL names no host (postgresql://USER@HOST/DATABASE, or \
         host=/run/postgresql for a Unix socket)"
    )]
    NoHost,
    /// A value in the `[spool]` table is out of range or unreadable.
    #[error("[spool] {key} = {value:?}: {reason}")]
    Value {
        /// The key.
        key: &'static str,
        /// The value as written.
        value: String,
        /// What is wrong.
        reason: String,
    },
}

/// The settings of a [`PgSpool`](super::PgSpool).
#[derive(Clone)]
#[non_exhaustive]
pub struct PgSpoolConfig {
    /// Where the database is and how to log in (parsed from the URL).
    pub connection: tokio_postgres::Config,
    /// The name this node's leases carry, for `mailq` and the logs; `None`: `HOST:PID`.
    pub node: Option<String>,
    /// How long a claim lasts unless renewed; a node that dies loses its claims this long
    /// after its last renewal, and the others take its messages over.
    pub lease: Duration,
    /// Database connections in the pool (one more is kept for wake-ups).
    pub pool_size: usize,
    /// The longest one spool operation may take before it fails with a temporary error.
    pub timeout: Duration,
    /// A PEM file of extra trust anchors for the server's certificate.
    pub ca_file: Option<PathBuf>,
}

impl fmt::Debug for PgSpoolConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // tokio-postgres redacts the password in its own Debug.
        f.debug_struct("PgSpoolConfig")
            .field("connection", &self.connection)
            .field("node", &self.node)
            .field("lease", &self.lease)
            .field("pool_size", &self.pool_size)
            .field("timeout", &self.timeout)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl PgSpoolConfig {
    /// The settings for `url`, with every other setting at its default.
    pub fn new(url: &str) -> Result<PgSpoolConfig, PgConfigError> {
        let connection =
            tokio_postgres::Config::from_str(url).map_err(|e| PgConfigError::Url(e.to_string()))?;
        if connection.get_user().is_none() {
            return Err(PgConfigError::NoUser);
        }
        if connection.get_hosts().is_empty() {
            return Err(PgConfigError::NoHost);
        }
        Ok(PgSpoolConfig {
            connection,
            node: None,
            lease: DEFAULT_LEASE,
            pool_size: DEFAULT_POOL_SIZE,
            timeout: DEFAULT_TIMEOUT,
            ca_file: None,
        })
    }

    /// Sets the lease, refusing one shorter than [`MIN_LEASE`].
    pub fn with_lease(mut self, lease: Duration) -> Result<PgSpoolConfig, PgConfigError> {
        if lease < MIN_LEASE {
            return Err(PgConfigError::Value {
                key: "lease",
                value: format!("{lease:?}"),
                reason: format!("shorter than the minimum of {MIN_LEASE:?}"),
            });
        }
        self.lease = lease;
        Ok(self)
    }

    /// Sets the node name.
    pub fn with_node(mut self, node: impl Into<String>) -> PgSpoolConfig {
        self.node = Some(node.into());
        self
    }

    /// Sets the pool size, refusing 0.
    pub fn with_pool_size(mut self, size: usize) -> Result<PgSpoolConfig, PgConfigError> {
        if size == 0 {
            return Err(PgConfigError::Value {
                key: "pool_size",
                value: "0".into(),
                reason: "a pool needs at least one connection".into(),
            });
        }
        self.pool_size = size;
        Ok(self)
    }

    /// Sets the operation timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> PgSpoolConfig {
        self.timeout = timeout;
        self
    }

    /// The node name leases carry: the configured one, else `HOST:PID`.
    pub fn node_name(&self) -> String {
        self.node.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "localhost".into());
            format!("{host}:{}", std::process::id())
        })
    }
}

impl FromStr for PgSpoolConfig {
    type Err = PgConfigError;

    fn from_str(url: &str) -> Result<PgSpoolConfig, PgConfigError> {
        PgSpoolConfig::new(url)
    }
}

/// The `[spool]` table as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Table {
    url: String,
    node: Option<String>,
    lease: Option<String>,
    pool_size: Option<usize>,
    timeout: Option<String>,
    ca_file: Option<PathBuf>,
}

fn duration(key: &'static str, text: &str) -> Result<Duration, PgConfigError> {
    crate::config::parse_duration(text).map_err(|reason| PgConfigError::Value {
        key,
        value: text.to_string(),
        reason,
    })
}

impl Table {
    fn into_config(self) -> Result<PgSpoolConfig, PgConfigError> {
        let mut c = PgSpoolConfig::new(&self.url)?;
        if let Some(node) = self.node {
            if node.is_empty() {
                return Err(PgConfigError::Value {
                    key: "node",
                    value: node,
                    reason: "a node name cannot be empty".into(),
                });
            }
            c = c.with_node(node);
        }
        if let Some(lease) = self.lease {
            c = c.with_lease(duration("lease", &lease)?)?;
        }
        if let Some(size) = self.pool_size {
            c = c.with_pool_size(size)?;
        }
        if let Some(timeout) = self.timeout {
            c = c.with_timeout(duration("timeout", &timeout)?);
        }
        c.ca_file = self.ca_file;
        Ok(c)
    }
}

impl<'de> Deserialize<'de> for PgSpoolConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<PgSpoolConfig, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PgSpoolConfig;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a postgresql:// URL or a [spool] table with url = \"postgresql://...\"",
                )
            }

            fn visit_str<E: de::Error>(self, url: &str) -> Result<PgSpoolConfig, E> {
                PgSpoolConfig::new(url).map_err(E::custom)
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<PgSpoolConfig, A::Error> {
                let table = Table::deserialize(de::value::MapAccessDeserializer::new(map))?;
                table.into_config().map_err(de::Error::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct File {
        spool: PgSpoolConfig,
    }

    #[test]
    fn a_url_or_a_table_parses_into_the_same_settings() {
        let f: File = toml::from_str("spool = \"postgresql://mta:secret@db.example/q\"").unwrap();
        assert_eq!(f.spool.connection.get_user(), Some("mta"));
        assert_eq!(f.spool.lease, DEFAULT_LEASE);
        let f: File = toml::from_str(
            "[spool]\nurl = \"postgresql://mta@db.example/q\"\nnode = \"mta1\"\nlease = \"90s\"\n\
             pool_size = 4\ntimeout = \"5s\"\nca_file = \"/etc/ca.pem\"\n",
        )
        .unwrap();
        assert_eq!(f.spool.node.as_deref(), Some("mta1"));
        assert_eq!(f.spool.lease, Duration::from_secs(90));
        assert_eq!(f.spool.pool_size, 4);
        assert_eq!(f.spool.timeout, Duration::from_secs(5));
        assert_eq!(f.spool.ca_file, Some(PathBuf::from("/etc/ca.pem")));
    }

    #[test]
    fn bad_settings_say_which_key_and_why_without_the_password() {
        let err = toml::from_str::<File>(
            "[spool]\nurl = \"postgresql://mta:secret@db.example/q\"\nlease = \"10ms\"\n",
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("lease") && err.contains("minimum"), "{err}");
        assert!(!err.contains("secret"), "{err}");
        let err = toml::from_str::<File>("[spool]\nurl = \"postgresql://m@h/q\"\nlaese = \"1s\"\n")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("laese"), "{err}");
        assert_eq!(
            "postgresql:///q".parse::<PgSpoolConfig>().err(),
            Some(PgConfigError::NoUser)
        );
        assert!(matches!(
            "postgresql://m@h/q?sslmode=sometimes".parse::<PgSpoolConfig>(),
            Err(PgConfigError::Url(_))
        ));
        let debug = format!(
            "{:?}",
            PgSpoolConfig::new("postgresql://m:secret@h/q").unwrap()
        );
        assert!(!debug.contains("secret"), "{debug}");
    }

    #[test]
    fn only_postgresql_urls_name_a_database() {
        use crate::spool::is_database_url;
        assert!(is_database_url("postgresql://m@h/q"));
        assert!(is_database_url("postgres://m@h/q"));
        assert!(!is_database_url("/var/spool/postrider"));
    }
}
