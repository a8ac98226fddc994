//! The spool's tables, created and migrated by the library.
//!
//! `postrider_schema` lists the migrations applied, one row each. Opening a spool takes a
//! transaction-scoped advisory lock (so engines starting together migrate once), applies every
//! migration the database lacks in order, each recorded in the same transaction, and refuses a
//! database whose schema is newer than this release knows.
//!
//! Version 1:
//! - `postrider_messages`: one row per message, the part that changes: the delivery state
//!   (`jsonb`, the same JSON as a file spool record's `state`), the columns the queue is
//!   searched by (`next_attempt`, `held`), the lease (`lease_owner`, `lease_until`,
//!   `generation`: the fencing number, raised by every claim) and an administrator's action
//!   waiting for the current holder (`admin_request`, `admin_at`). Kept narrow and with
//!   free space in each page (`fillfactor`) because it is rewritten after every attempt.
//! - `postrider_contents`: the envelope and the body, written once, deleted with the message
//!   (`ON DELETE CASCADE`). A separate table so that a state update never copies them.

use deadpool_postgres::Client;

use super::error::{PgError, db};
use crate::spool::SpoolError;

/// The newest schema version this release writes and reads.
pub const SCHEMA_VERSION: i32 = 1;

/// Serialises migrations between nodes starting at once (an arbitrary constant: "postride").
const MIGRATION_LOCK: i64 = 0x706f_7374_7269_6465;

/// The migrations, in order; the index + 1 is the version each one produces.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE postrider_messages (
    id            text        PRIMARY KEY,
    generation    bigint      NOT NULL,
    lease_owner   text,
    lease_until   timestamptz,
    next_attempt  timestamptz NOT NULL,
    held          boolean     NOT NULL,
    recipients    integer     NOT NULL,
    state         jsonb       NOT NULL,
    admin_request text        CHECK (admin_request IN ('hold', 'release', 'delete')),
    admin_at      timestamptz
) WITH (fillfactor = 70);
CREATE INDEX postrider_messages_due ON postrider_messages (next_attempt) WHERE NOT held;
CREATE INDEX postrider_messages_leased ON postrider_messages (lease_until)
    WHERE lease_until IS NOT NULL;
CREATE TABLE postrider_contents (
    id       text  PRIMARY KEY REFERENCES postrider_messages (id) ON DELETE CASCADE,
    envelope jsonb NOT NULL,
    body     bytea NOT NULL
);
"#];

/// Brings the database's schema up to [`SCHEMA_VERSION`]; returns the version found before.
pub(crate) async fn migrate(client: &mut Client) -> Result<i32, SpoolError> {
    let tx = client.transaction().await.map_err(db("migrate schema"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(db("lock for schema migration"))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS postrider_schema (
             version    integer     PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await
    .map_err(db("create postrider_schema"))?;
    let found: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM postrider_schema",
            &[],
        )
        .await
        .map_err(db("read schema version"))?
        .get(0);
    if found > SCHEMA_VERSION {
        return Err(PgError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        }
        .during("open"));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = index as i32 + 1;
        tx.batch_execute(sql)
            .await
            .map_err(db("apply schema migration"))?;
        tx.execute(
            "INSERT INTO postrider_schema (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(db("record schema migration"))?;
        tracing::info!(target: "postrider::spool", "spool database schema migrated to version {version}");
    }
    tx.commit().await.map_err(db("commit schema migration"))?;
    Ok(found)
}

/// The schema version in the database (0: none yet), without changing anything.
pub(crate) async fn version(client: &tokio_postgres::Client) -> Result<i32, SpoolError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('postrider_schema') IS NOT NULL", &[])
        .await
        .map_err(db("look for postrider_schema"))?
        .get(0);
    if !exists {
        return Ok(0);
    }
    Ok(client
        .query_one(
            "SELECT coalesce(max(version), 0) FROM postrider_schema",
            &[],
        )
        .await
        .map_err(db("read schema version"))?
        .get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_migration_has_its_version() {
        assert_eq!(MIGRATIONS.len() as i32, SCHEMA_VERSION);
    }
}
