//! TLS-RPT (RFC 8460): counting sessions per policy domain and sending the daily aggregate
//! report to the addresses the domain's `_smtp._tls` TXT record names.
//!
//! Every session to a domain with a policy (MTA-STS or DANE) counts as a success or as a
//! failure of one RFC 8460 result type (`starttls-not-supported`,
//! `certificate-host-mismatch`, `validation-failure`, `sts-policy-fetch-error`, ...), with
//! the MX host and address. A day is a UTC day (§4.1 suggests 24-hour windows from midnight
//! UTC); [`TlsReporter::send_due`] turns every finished day into one report per policy
//! domain (mail-auth's `TlsReport`, gzip-compressed JSON) and sends it to the addresses the
//! domain's `_smtp._tls` record names: as a `multipart/report` through the engine for
//! `mailto:` ones, so it is queued, retried and logged like any other mail, and as an HTTPS
//! POST for `https:` ones (`report_send`).
//!
//! With a state directory ([`TlsReporter::open`]) the counts are also kept in a file
//! (`report_store`), written by [`TlsReporter::flush`], so a restart keeps the day being
//! counted; [`TlsReporter::spawn`] runs the daemon's loop that flushes and sends.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mail_auth::report::tlsrpt::{
    DateRange, FailureDetails, Policy, PolicyDetails, PolicyType, ResultType, Summary, TlsReport,
};
use serde::{Deserialize, Serialize};

use super::report_store::{
    ReportStore, ReportStoreError, Stored, StoredFailure, StoredPolicy, StoredSettled,
};

use crate::address::Domain;
use crate::https::HttpsClient;

const DAY: u64 = 86_400;

/// How many days a report that could not be sent is kept and tried again. A report about a
/// week-old day has lost most of its use to the receiving domain, and a domain whose `rua`
/// never answers must not make the kept counts (and the state file) grow without end.
pub const KEEP_DAYS: u64 = 7;

/// Which policy a session was under, as the report names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ReportedPolicy {
    /// `sts`, `tlsa` or `no-policy-found`.
    pub kind: PolicyKind,
    /// The policy domain (the recipient domain).
    pub domain: Domain,
    /// The policy as text: the MTA-STS policy's lines, or the TLSA records.
    pub text: Vec<String>,
    /// The MTA-STS `mx` patterns (empty for DANE).
    pub mx: Vec<String>,
}

/// The policy types of RFC 8460 §4.3.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyKind {
    /// An MTA-STS policy.
    Sts,
    /// DANE TLSA records.
    Tlsa,
    /// A policy was announced but none could be used.
    NoPolicyFound,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct FailureKey {
    result: String,
    mx: Option<String>,
    ip: Option<IpAddr>,
    reason: Option<String>,
}

#[derive(Debug, Default)]
struct Counts {
    success: u32,
    failures: BTreeMap<FailureKey, (ResultType, u32)>,
}

type Days = HashMap<u64, BTreeMap<ReportedPolicy, Counts>>;

#[derive(Debug, Default)]
struct State {
    /// (UTC day, policy) -> counts.
    days: Days,
    /// (UTC day, policy domain) -> the addresses a kept report already went to
    /// ([`DueReport::settled`]).
    settled: HashMap<(u64, Domain), BTreeSet<String>>,
    /// Changed since the last flush.
    dirty: bool,
}

/// Collects session results and sends the daily reports.
#[derive(Debug)]
pub struct TlsReporter {
    organization: String,
    /// For `https:` reporting addresses; without one they are skipped.
    pub(super) https: Option<HttpsClient>,
    state: Mutex<State>,
    store: Option<ReportStore>,
    /// Held while a snapshot is written, so an older snapshot never lands after a newer one.
    writing: Mutex<()>,
}

/// One report ready to send.
#[derive(Debug, Clone)]
pub struct DueReport {
    /// The policy domain it is about (and whose `_smtp._tls` record says where it goes).
    pub domain: Domain,
    /// The report.
    pub report: TlsReport,
    /// The reporting addresses (`rua` URIs: `mailto:` with the address, or the `https:`
    /// URL) that already have this report or refused it for good: a report kept because
    /// some address failed for now goes at the next try only to the others, so nobody gets
    /// it twice and nobody is left out.
    pub settled: BTreeSet<String>,
}

fn day_of(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
        / DAY
}

impl TlsReporter {
    /// A reporter counting in memory only; `organization` is the report's
    /// `organization-name`.
    pub fn new(organization: impl Into<String>) -> TlsReporter {
        TlsReporter {
            organization: organization.into(),
            https: None,
            state: Mutex::new(State::default()),
            store: None,
            writing: Mutex::new(()),
        }
    }

    /// A reporter whose counts are kept in `tls-rpt/counts.json` under `state_dir`, starting
    /// from what the file holds. A file that cannot be read or is damaged is returned as the
    /// error beside a reporter that starts empty (a damaged one was moved aside, and the next
    /// flush writes a good one): the caller logs it, nothing stops.
    pub fn open(
        organization: impl Into<String>,
        state_dir: &Path,
    ) -> (TlsReporter, Option<ReportStoreError>) {
        let store = ReportStore::new(state_dir);
        let (stored, error) = match store.load() {
            Ok(s) => (s, None),
            Err(e) => (Stored::default(), Some(e)),
        };
        let reporter = TlsReporter {
            store: Some(store),
            ..TlsReporter::new(organization)
        };
        {
            let mut state = reporter.lock();
            for s in stored.settled {
                state
                    .settled
                    .entry((s.day, s.domain))
                    .or_default()
                    .extend(s.addresses);
            }
            for p in stored.counts {
                let counts = state
                    .days
                    .entry(p.day)
                    .or_default()
                    .entry(p.policy)
                    .or_default();
                counts.success += p.success;
                for f in p.failures {
                    let key = FailureKey {
                        result: format!("{:?}", f.result),
                        mx: f.mx,
                        ip: f.ip,
                        reason: f.reason,
                    };
                    counts.failures.entry(key).or_insert((f.result, 0)).1 += f.count;
                }
            }
        }
        (reporter, error)
    }

    /// Posts reports to `https:` reporting addresses with `client` (RFC 8460 §5.3.1);
    /// without one those addresses are skipped with a log line.
    pub fn with_https(mut self, client: HttpsClient) -> TlsReporter {
        self.https = Some(client);
        self
    }

    /// The counts file, when the reporter has one.
    pub fn store_path(&self) -> Option<&Path> {
        self.store.as_ref().map(ReportStore::path)
    }

    /// Writes the counts to the file when they changed since the last flush (nothing to do
    /// for a reporter in memory). On an error the counts stay marked as changed, so the next
    /// flush tries again.
    pub fn flush(&self) -> Result<(), ReportStoreError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let _writing = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        let snapshot = {
            let mut state = self.lock();
            if !state.dirty {
                return Ok(());
            }
            state.dirty = false;
            snapshot(&state)
        };
        store
            .save(snapshot)
            .inspect_err(|_| self.lock().dirty = true)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a session that met the policy.
    pub fn success(&self, policy: &ReportedPolicy, at: SystemTime) {
        let mut state = self.lock();
        state.dirty = true;
        state
            .days
            .entry(day_of(at))
            .or_default()
            .entry(policy.clone())
            .or_default()
            .success += 1;
    }

    /// Counts a session that failed the policy, and how.
    pub fn failure(
        &self,
        policy: &ReportedPolicy,
        result: ResultType,
        mx: Option<&Domain>,
        ip: Option<IpAddr>,
        reason: Option<&str>,
        at: SystemTime,
    ) {
        let key = FailureKey {
            result: format!("{result:?}"),
            mx: mx.map(|m| m.to_string()),
            ip,
            reason: reason.map(str::to_string),
        };
        let mut state = self.lock();
        state.dirty = true;
        let counts = state
            .days
            .entry(day_of(at))
            .or_default()
            .entry(policy.clone())
            .or_default();
        counts.failures.entry(key).or_insert((result, 0)).1 += 1;
    }

    /// Takes the reports of every day that ended before `now`, one per policy domain. Days
    /// more than [`KEEP_DAYS`] old (reports that kept failing to go out) are dropped instead,
    /// with a warning naming their domains.
    pub fn take_due(&self, now: SystemTime, submitter: &Domain) -> Vec<DueReport> {
        let today = day_of(now);
        let (finished, mut settled): (Vec<(u64, BTreeMap<ReportedPolicy, Counts>)>, _) = {
            let mut state = self.lock();
            let keys: Vec<u64> = state.days.keys().copied().filter(|d| *d < today).collect();
            state.dirty |= !keys.is_empty();
            let finished = keys
                .into_iter()
                .filter_map(|d| state.days.remove(&d).map(|c| (d, c)))
                .collect();
            // What a taken report already reached goes with it (and comes back with it when
            // it is put back); what belonged to a day no longer counted goes too.
            let settled: HashMap<(u64, Domain), BTreeSet<String>> = state
                .settled
                .extract_if(|(day, _), _| *day < today)
                .collect();
            (finished, settled)
        };
        let (finished, expired): (Vec<_>, Vec<_>) = finished
            .into_iter()
            .partition(|(day, _)| day + KEEP_DAYS >= today);
        for (day, policies) in expired {
            let domains: std::collections::BTreeSet<String> =
                policies.keys().map(|p| p.domain.to_string()).collect();
            tracing::warn!(target: "postrider::tls_rpt",
                "TLS reports for {} (day starting {}) not sent within {KEEP_DAYS} days; dropped",
                domains.into_iter().collect::<Vec<_>>().join(", "),
                crate::time::rfc3339(UNIX_EPOCH + Duration::from_secs(day * DAY)));
        }
        let mut out = Vec::new();
        for (day, policies) in finished {
            let mut by_domain: BTreeMap<Domain, Vec<Policy>> = BTreeMap::new();
            for (policy, counts) in policies {
                let failures: u32 = counts.failures.values().map(|(_, n)| n).sum();
                let mut details = PolicyDetails::new(
                    match policy.kind {
                        PolicyKind::Sts => PolicyType::Sts,
                        PolicyKind::Tlsa => PolicyType::Tlsa,
                        PolicyKind::NoPolicyFound => PolicyType::NoPolicyFound,
                    },
                    policy.domain.to_string(),
                );
                details.policy_string = policy.text.clone();
                details.mx_host = policy.mx.clone();
                by_domain
                    .entry(policy.domain.clone())
                    .or_default()
                    .push(Policy {
                        policy: details,
                        summary: Summary {
                            total_success: counts.success,
                            total_failure: failures,
                        },
                        failure_details: counts
                            .failures
                            .into_iter()
                            .map(|(key, (result, n))| FailureDetails {
                                result_type: result,
                                receiving_mx_hostname: key.mx,
                                receiving_ip: key.ip,
                                failed_session_count: n,
                                additional_information: key.reason,
                                ..FailureDetails::default()
                            })
                            .collect(),
                    });
            }
            for (domain, policies) in by_domain {
                let start = (day * DAY) as i64;
                let settled = settled.remove(&(day, domain.clone())).unwrap_or_default();
                out.push(DueReport {
                    settled,
                    report: TlsReport {
                        organization_name: Some(self.organization.clone()),
                        date_range: DateRange::from_timestamps(start, start + DAY as i64 - 1),
                        contact_info: Some(format!("postmaster@{submitter}")),
                        report_id: format!("{day}.{domain}@{submitter}"),
                        policies,
                    },
                    domain,
                });
            }
        }
        out
    }

    pub(super) fn put_back(&self, due: DueReport) {
        // Re-counting from the report keeps one code path for counting.
        let day = due.report.date_range.start_datetime.to_timestamp() as u64 / DAY;
        let mut state = self.lock();
        state.dirty = true;
        if !due.settled.is_empty() {
            state
                .settled
                .entry((day, due.domain.clone()))
                .or_default()
                .extend(due.settled);
        }
        let entry = state.days.entry(day).or_default();
        for p in due.report.policies {
            let kind = match p.policy.policy_type {
                PolicyType::Tlsa => PolicyKind::Tlsa,
                PolicyType::NoPolicyFound => PolicyKind::NoPolicyFound,
                _ => PolicyKind::Sts,
            };
            let key = ReportedPolicy {
                kind,
                domain: due.domain.clone(),
                text: p.policy.policy_string,
                mx: p.policy.mx_host,
            };
            let counts = entry.entry(key).or_default();
            counts.success += p.summary.total_success;
            for f in p.failure_details {
                let fk = FailureKey {
                    result: format!("{:?}", f.result_type),
                    mx: f.receiving_mx_hostname,
                    ip: f.receiving_ip,
                    reason: f.additional_information,
                };
                counts.failures.entry(fk).or_insert((f.result_type, 0)).1 += f.failed_session_count;
            }
        }
    }
}

/// The counts and settled addresses as the store keeps them, in a stable order (days, then
/// policies or domains).
fn snapshot(state: &State) -> Stored {
    let mut settled: Vec<StoredSettled> = state
        .settled
        .iter()
        .map(|((day, domain), addresses)| StoredSettled {
            day: *day,
            domain: domain.clone(),
            addresses: addresses.iter().cloned().collect(),
        })
        .collect();
    settled.sort_by(|a, b| (a.day, &a.domain).cmp(&(b.day, &b.domain)));
    Stored {
        counts: snapshot_counts(&state.days),
        settled,
    }
}

fn snapshot_counts(days: &Days) -> Vec<StoredPolicy> {
    let mut ordered: Vec<(&u64, &BTreeMap<ReportedPolicy, Counts>)> = days.iter().collect();
    ordered.sort_by_key(|(d, _)| **d);
    ordered
        .into_iter()
        .flat_map(|(day, policies)| {
            policies.iter().map(|(policy, counts)| StoredPolicy {
                day: *day,
                policy: policy.clone(),
                success: counts.success,
                failures: counts
                    .failures
                    .iter()
                    .map(|(key, (result, n))| StoredFailure {
                        result: *result,
                        mx: key.mx.clone(),
                        ip: key.ip,
                        reason: key.reason.clone(),
                        count: *n,
                    })
                    .collect(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_day_becomes_one_report_per_domain_with_its_counts() {
        let r = TlsReporter::new("Example Sender");
        let policy = ReportedPolicy {
            kind: PolicyKind::Sts,
            domain: Domain::parse("example.com").unwrap(),
            text: vec!["version: STSv1".into(), "mode: enforce".into()],
            mx: vec!["mx.example.com".into()],
        };
        let day1 = UNIX_EPOCH + Duration::from_secs(20_000 * DAY + 10);
        r.success(&policy, day1);
        r.success(&policy, day1);
        let mx = Domain::parse("mx.example.com").unwrap();
        r.failure(
            &policy,
            ResultType::CertificateHostMismatch,
            Some(&mx),
            None,
            None,
            day1,
        );
        let me = Domain::parse("pbx.example.org").unwrap();
        assert!(r.take_due(day1, &me).is_empty(), "the day is not over yet");
        let due = r.take_due(day1 + Duration::from_secs(DAY), &me);
        assert_eq!(due.len(), 1);
        let p = &due[0].report.policies[0];
        assert_eq!((p.summary.total_success, p.summary.total_failure), (2, 1));
        assert_eq!(
            p.failure_details[0].result_type,
            ResultType::CertificateHostMismatch
        );
        assert!(
            due[0]
                .report
                .to_json()
                .contains("\"certificate-host-mismatch\"")
        );
        assert!(
            r.take_due(day1 + Duration::from_secs(DAY), &me).is_empty(),
            "taken once"
        );
        r.put_back(due[0].clone());
        assert_eq!(r.take_due(day1 + Duration::from_secs(DAY), &me).len(), 1);
    }

    #[test]
    fn a_report_that_never_goes_out_is_dropped_after_a_week() {
        let r = TlsReporter::new("Example Sender");
        let policy = ReportedPolicy {
            kind: PolicyKind::Tlsa,
            domain: Domain::parse("example.net").unwrap(),
            text: vec!["3 1 1 aa".into()],
            mx: vec![],
        };
        let day1 = UNIX_EPOCH + Duration::from_secs(20_000 * DAY + 10);
        r.success(&policy, day1);
        let me = Domain::parse("pbx.example.org").unwrap();
        // Tried (and put back) on each of the seven following days.
        for late in 1..=KEEP_DAYS {
            let due = r.take_due(day1 + Duration::from_secs(late * DAY), &me);
            assert_eq!(due.len(), 1, "day {late}");
            r.put_back(due[0].clone());
        }
        assert!(
            r.take_due(day1 + Duration::from_secs((KEEP_DAYS + 1) * DAY), &me)
                .is_empty()
        );
        assert!(r.lock().days.is_empty(), "the counts are gone too");
    }

    #[test]
    fn the_addresses_a_kept_report_reached_come_back_with_it_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let policy = ReportedPolicy {
            kind: PolicyKind::Sts,
            domain: Domain::parse("example.com").unwrap(),
            text: vec!["version: STSv1".into()],
            mx: vec![],
        };
        let day1 = UNIX_EPOCH + Duration::from_secs(20_000 * DAY + 10);
        let next = day1 + Duration::from_secs(DAY);
        let me = Domain::parse("pbx.example.org").unwrap();
        let (r, error) = TlsReporter::open("Example Sender", dir.path());
        assert!(error.is_none());
        r.success(&policy, day1);
        let mut due = r.take_due(next, &me);
        assert!(due[0].settled.is_empty(), "a first try reached nobody yet");
        due[0].settled.insert("mailto:rpt@example.com".into());
        r.put_back(due.remove(0));
        r.flush().unwrap();
        drop(r);

        let (r, error) = TlsReporter::open("Example Sender", dir.path());
        assert!(error.is_none());
        let due = r.take_due(next, &me);
        assert_eq!(due.len(), 1);
        assert_eq!(
            due[0].settled.iter().collect::<Vec<_>>(),
            ["mailto:rpt@example.com"]
        );
        assert_eq!(due[0].report.policies[0].summary.total_success, 1);
        // Sent at last: nothing of it is kept.
        assert!(r.lock().settled.is_empty());
    }
}
