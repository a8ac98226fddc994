//! What can go wrong between the spool and PostgreSQL, and whether trying again can help.
//!
//! Everything that means "the server is not there right now" is temporary: no connection, a
//! connection closed under us, the server shutting down or starting up (SQLSTATE 57P01–57P03),
//! too many connections (53300), a serialization failure or deadlock (40001, 40P01), a pool
//! with no free connection, an operation over its time limit. A submission that fails so is
//! retried by the sender; nothing is ever reported committed that was not. What an
//! administrator must fix (a refused password, a missing database, a schema newer than this
//! release) is permanent.

use std::time::Duration;

use tokio_postgres::error::SqlState;

use crate::spool::SpoolError;
use crate::status::Severity;

/// A failure of the database or of the way to it (boxed inside [`SpoolError::Database`]).
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The server or the connection to it failed.
    #[error("{}", describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// No connection could be had from the pool.
    #[error("no database connection: {}", describe_pool(.0))]
    Pool(#[from] deadpool_postgres::PoolError),
    /// The operation did not finish in time.
    #[error("no answer from the database within {0:?}")]
    Timeout(Duration),
    /// The database holds a schema written by a newer postrider.
    #[error(
        "the database's spool schema is version {found}, newer than this postrider's \
         {supported} (upgrade postrider on this node)"
    )]
    SchemaTooNew {
        /// The version in the database.
        found: i32,
        /// The newest version this release knows.
        supported: i32,
    },
    /// The TLS settings cannot be used (an unreadable `ca_file`).
    #[error("{0}")]
    Tls(String),
}

/// An error in the server's own words (tokio-postgres shows a server error as "db error").
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        ),
        None => e.to_string(),
    }
}

fn describe_pool(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(e) => describe(e),
        other => other.to_string(),
    }
}

impl PgError {
    /// Temporary when waiting may help.
    pub fn severity(&self) -> Severity {
        match self {
            PgError::Postgres(e) => postgres_severity(e),
            PgError::Pool(deadpool_postgres::PoolError::Backend(e)) => postgres_severity(e),
            PgError::Pool(deadpool_postgres::PoolError::NoRuntimeSpecified) => Severity::Permanent,
            PgError::Pool(_) | PgError::Timeout(_) => Severity::Temporary,
            PgError::SchemaTooNew { .. } | PgError::Tls(_) => Severity::Permanent,
        }
    }

    /// The [`SpoolError`] a spool operation `op` reports.
    pub fn during(self, op: &'static str) -> SpoolError {
        SpoolError::Database {
            op,
            severity: self.severity(),
            source: Box::new(self),
        }
    }
}

fn postgres_severity(e: &tokio_postgres::Error) -> Severity {
    let Some(code) = e.code() else {
        // No SQLSTATE: the connection failed or closed (I/O, TLS, the server went away).
        return Severity::Temporary;
    };
    let temporary = [
        SqlState::ADMIN_SHUTDOWN,
        SqlState::CRASH_SHUTDOWN,
        SqlState::CANNOT_CONNECT_NOW,
        SqlState::TOO_MANY_CONNECTIONS,
        SqlState::T_R_SERIALIZATION_FAILURE,
        SqlState::T_R_DEADLOCK_DETECTED,
        SqlState::LOCK_NOT_AVAILABLE,
        SqlState::QUERY_CANCELED,
        SqlState::DISK_FULL,
        SqlState::OUT_OF_MEMORY,
        SqlState::INSUFFICIENT_RESOURCES,
        SqlState::READ_ONLY_SQL_TRANSACTION,
    ];
    // Class 08 is "connection exception" (the connection broke), 53 "insufficient resources",
    // 58 "system error" (an I/O error on the server): all pass.
    let class = &code.code()[..2];
    if temporary.contains(code) || matches!(class, "08" | "53" | "58") {
        Severity::Temporary
    } else {
        Severity::Permanent
    }
}

/// Shorthand for a query failure during `op`.
pub(crate) fn db(op: &'static str) -> impl FnOnce(tokio_postgres::Error) -> SpoolError {
    move |e| PgError::from(e).during(op)
}

/// Shorthand for a pool failure during `op`.
pub(crate) fn pool(op: &'static str) -> impl FnOnce(deadpool_postgres::PoolError) -> SpoolError {
    move |e| PgError::from(e).during(op)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_timeout_is_temporary_and_a_newer_schema_is_not() {
        let e = PgError::Pool(deadpool_postgres::PoolError::Timeout(
            deadpool_postgres::TimeoutType::Wait,
        ))
        .during("insert");
        assert!(e.is_temporary());
        assert!(e.to_string().contains("insert"), "{e}");
        let e = PgError::SchemaTooNew {
            found: 9,
            supported: 1,
        }
        .during("open");
        assert!(!e.is_temporary());
        assert!(e.to_string().contains("upgrade postrider"), "{e}");
    }
}
