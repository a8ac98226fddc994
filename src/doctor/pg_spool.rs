//! `spool` for a PostgreSQL spool: the database answers, its spool schema is one this release
//! reads, and this node's clock agrees with the server's.
//!
//! The check only reads: it connects outside any pool, reads `postrider_schema` and the
//! server's `clock_timestamp()`, and disconnects; the schema is created or migrated by the
//! first engine that starts, never by the doctor.
//!
//! Leases run on the server's clock, so skew cannot make two nodes hold one message; but due
//! times are written by each node's own clock, so a node whose clock is ahead delivers retries
//! early and one behind delivers them late. More than [`SKEW_WARN`] is a warning.

use std::time::{Duration, SystemTime};

use super::{Check, Finding};
use crate::spool::pg::PgSpoolConfig;
use crate::spool::pg::schema::{self, SCHEMA_VERSION};

/// Clock skew above this is a warning.
pub const SKEW_WARN: Duration = Duration::from_secs(1);

/// Runs the check for `config`.
pub async fn check(config: &PgSpoolConfig) -> Vec<Finding> {
    let place = describe(config);
    let tls = match crate::spool::pg::connector(config) {
        Ok(tls) => tls,
        Err(e) => {
            return vec![
                Finding::fail(Check::Spool, format!("spool database {place}: {e}"))
                    .with_fix("correct ca_file in the [spool] table (a PEM file of certificates)"),
            ];
        }
    };
    let mut connection = config.connection.clone();
    if connection.get_connect_timeout().is_none() {
        connection.connect_timeout(config.timeout);
    }
    let connected = tokio::time::timeout(config.timeout, connection.connect(tls)).await;
    let (client, driver) = match connected {
        Ok(Ok((client, conn))) => (client, tokio::spawn(conn)),
        Ok(Err(e)) => return vec![unreachable(config, &place, &e)],
        Err(_) => {
            return vec![
                Finding::fail(
                    Check::Spool,
                    format!(
                        "spool database {place} did not answer within {:?}",
                        config.timeout
                    ),
                )
                .with_fix(
                    "check that PostgreSQL runs there and that no firewall drops the connection",
                ),
            ];
        }
    };
    let mut findings = Vec::new();
    match tokio::time::timeout(config.timeout, schema::version(&client)).await {
        Ok(Ok(found)) => findings.push(version_finding(&place, found)),
        Ok(Err(e)) => findings.push(Finding::fail(
            Check::Spool,
            format!("spool database {place}: cannot read the schema version: {e}"),
        )),
        Err(_) => findings.push(Finding::fail(
            Check::Spool,
            format!(
                "spool database {place}: no answer to a query within {:?}",
                config.timeout
            ),
        )),
    }
    let before = SystemTime::now();
    let server = tokio::time::timeout(
        config.timeout,
        client.query_one("SELECT clock_timestamp()", &[]),
    )
    .await;
    let after = SystemTime::now();
    match server {
        Ok(Ok(row)) => match row.try_get::<_, SystemTime>(0) {
            Ok(server) => findings.push(skew_finding(&place, before, server, after)),
            Err(e) => findings.push(Finding::warn(
                Check::Spool,
                format!("spool database {place}: the server's clock could not be read: {e}"),
            )),
        },
        Ok(Err(e)) => findings.push(Finding::warn(
            Check::Spool,
            format!("spool database {place}: the server's clock could not be read: {e}"),
        )),
        Err(_) => findings.push(Finding::warn(
            Check::Spool,
            format!("spool database {place}: the server's clock could not be read in time"),
        )),
    }
    drop(client);
    driver.abort();
    findings
}

/// `user@host:port/dbname` (or the socket directory), never the password.
fn describe(config: &PgSpoolConfig) -> String {
    let c = &config.connection;
    let host = match c.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "?".into(),
    };
    let port = c.get_ports().first().copied().unwrap_or(5432);
    let user = c.get_user().unwrap_or("?");
    let db = c.get_dbname().unwrap_or(user);
    format!("{user}@{host}:{port}/{db}")
}

fn unreachable(config: &PgSpoolConfig, place: &str, e: &tokio_postgres::Error) -> Finding {
    use tokio_postgres::error::SqlState;
    let detail = format!(
        "spool database {place} cannot be used: {}",
        crate::spool::pg::describe_error(e)
    );
    let user = config.connection.get_user().unwrap_or("postrider");
    let db = config.connection.get_dbname().unwrap_or(user);
    let fix = match e.code() {
        Some(c) if *c == SqlState::INVALID_CATALOG_NAME => {
            format!("create the database: createdb -O {user} {db} (as a PostgreSQL superuser)")
        }
        Some(c)
            if *c == SqlState::INVALID_PASSWORD
                || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION =>
        {
            format!(
                "check the user and password in the spool URL, and that pg_hba.conf on the server \
                 lets {user} connect to {db} from this host"
            )
        }
        Some(_) => "see the server's message above".to_string(),
        None => "start PostgreSQL there, or correct the host and port of the spool URL \
                 (a host starting with / is a Unix socket directory)"
            .to_string(),
    };
    Finding::fail(Check::Spool, detail).with_fix(fix)
}

fn version_finding(place: &str, found: i32) -> Finding {
    if found == SCHEMA_VERSION {
        Finding::pass(
            Check::Spool,
            format!("spool database {place} answers; spool schema version {found}"),
        )
    } else if found == 0 {
        Finding::warn(
            Check::Spool,
            format!("spool database {place} answers but holds no spool schema yet"),
        )
        .with_fix(
            "nothing to do if the database user may create tables: the first engine to start \
             creates schema version 1",
        )
    } else if found < SCHEMA_VERSION {
        Finding::pass(
            Check::Spool,
            format!(
                "spool database {place} answers; spool schema version {found}, which the next \
                 engine to start migrates to {SCHEMA_VERSION}"
            ),
        )
    } else {
        Finding::fail(
            Check::Spool,
            format!(
                "spool database {place} holds spool schema version {found}, newer than this \
                 postrider's {SCHEMA_VERSION}"
            ),
        )
        .with_fix("upgrade postrider on this node to the release the other nodes run")
    }
}

/// The server's clock minus ours, estimated at the middle of the round trip (seconds,
/// positive when the server is ahead), and the round trip.
pub fn skew(before: SystemTime, server: SystemTime, after: SystemTime) -> (f64, Duration) {
    let rtt = after.duration_since(before).unwrap_or_default();
    let middle = before + rtt / 2;
    let skew = match server.duration_since(middle) {
        Ok(ahead) => ahead.as_secs_f64(),
        Err(behind) => -behind.duration().as_secs_f64(),
    };
    (skew, rtt)
}

fn skew_finding(place: &str, before: SystemTime, server: SystemTime, after: SystemTime) -> Finding {
    let (skew, rtt) = skew(before, server, after);
    let detail = format!(
        "clock skew between this node and spool database {place}: {skew:+.3} s (round trip {} ms)",
        rtt.as_millis()
    );
    if skew.abs() <= SKEW_WARN.as_secs_f64() + rtt.as_secs_f64() / 2.0 {
        Finding::pass(Check::Spool, detail)
    } else {
        Finding::warn(Check::Spool, detail).with_fix(
            "run NTP (chrony or systemd-timesyncd) on this node and on the database server: \
             retries are scheduled by each node's clock",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skew_is_measured_from_the_middle_of_the_round_trip() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let (s, rtt) = skew(
            t,
            t + Duration::from_millis(2_050),
            t + Duration::from_millis(100),
        );
        assert!((s - 2.0).abs() < 1e-9, "{s}");
        assert_eq!(rtt, Duration::from_millis(100));
        let (s, _) = skew(t, t - Duration::from_secs(3), t);
        assert!((s + 3.0).abs() < 1e-9, "{s}");
        let f = skew_finding("x", t, t + Duration::from_secs(5), t);
        assert_eq!(f.verdict, super::super::Verdict::Warn);
        assert!(f.detail.contains("+5.000 s"), "{}", f.detail);
        let f = skew_finding("x", t, t + Duration::from_millis(20), t);
        assert_eq!(f.verdict, super::super::Verdict::Pass);
    }

    #[test]
    fn a_newer_schema_fails_and_a_missing_one_only_warns() {
        use super::super::Verdict;
        assert_eq!(version_finding("x", SCHEMA_VERSION).verdict, Verdict::Pass);
        assert_eq!(version_finding("x", 0).verdict, Verdict::Warn);
        let f = version_finding("x", SCHEMA_VERSION + 1);
        assert_eq!(f.verdict, Verdict::Fail);
        assert!(f.fix.unwrap().contains("upgrade"));
    }
}
