//! The doctor's check of a PostgreSQL spool against a private cluster: a database in use, one
//! without the schema yet, one that does not exist, and a server that is not running.

#![cfg(feature = "postgres")] // a build without the feature has no PgSpool to test

mod support;

use std::time::Duration;

use postrider::doctor::pg_spool;
use postrider::doctor::{Check, Verdict};
use postrider::spool::pg::{PgSpool, PgSpoolConfig};
use support::postgres;

fn config(url: &str) -> PgSpoolConfig {
    PgSpoolConfig::new(url)
        .unwrap()
        .with_timeout(Duration::from_secs(5))
}

#[tokio::test]
async fn a_database_in_use_passes_with_its_schema_version_and_the_clock_skew() {
    let url = postgres::shared().database();
    drop(PgSpool::connect(&config(&url)).await.unwrap());
    let findings = pg_spool::check(&config(&url)).await;
    assert_eq!(findings.len(), 2, "{findings:#?}");
    assert!(findings.iter().all(|f| f.check == Check::Spool));
    assert_eq!(findings[0].verdict, Verdict::Pass, "{}", findings[0]);
    assert!(
        findings[0].detail.contains("schema version 1"),
        "{}",
        findings[0]
    );
    assert!(findings[0].detail.contains("postrider@"), "{}", findings[0]);
    // Same machine, same clock.
    assert_eq!(findings[1].verdict, Verdict::Pass, "{}", findings[1]);
    assert!(findings[1].detail.contains("clock skew"), "{}", findings[1]);
}

#[tokio::test]
async fn a_database_without_the_schema_warns_and_the_doctor_does_not_create_it() {
    let cluster = postgres::shared();
    let url = cluster.database();
    let findings = pg_spool::check(&config(&url)).await;
    assert_eq!(findings[0].verdict, Verdict::Warn, "{}", findings[0]);
    assert!(
        findings[0].detail.contains("no spool schema"),
        "{}",
        findings[0]
    );
    let tables = cluster.psql(
        postgres::PgCluster::dbname_of(&url),
        "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'postrider%'",
    );
    assert_eq!(tables, "0");
}

#[tokio::test]
async fn a_missing_database_fails_with_the_createdb_line() {
    let url = postgres::shared().url("notthere");
    let findings = pg_spool::check(&config(&url)).await;
    assert_eq!(findings.len(), 1);
    assert_eq!(findings[0].verdict, Verdict::Fail);
    assert!(findings[0].detail.contains("notthere"), "{}", findings[0]);
    let fix = findings[0].fix.as_deref().unwrap();
    assert!(fix.contains("createdb -O postrider notthere"), "{fix}");
}

#[tokio::test]
async fn a_server_that_is_not_running_fails_saying_to_start_it() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "host={} port=5432 user=postrider password=hunter2 dbname=q",
        dir.path().display()
    );
    let findings = pg_spool::check(&config(&url)).await;
    assert_eq!(findings.len(), 1);
    assert_eq!(findings[0].verdict, Verdict::Fail);
    let text = findings[0].to_string();
    assert!(text.contains("start PostgreSQL"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}
