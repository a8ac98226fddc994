//! Sending due TLS-RPT reports where the policy domain's `_smtp._tls` record says (RFC 8460
//! §3): `mailto:` addresses get a mail through the engine (§5.3.2), `https:` ones a POST of
//! the gzip-compressed JSON (§5.3.1).

use std::io::Write;
use std::time::SystemTime;

use bytes::Bytes;
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::mta_sts::{ReportUri, TlsRpt};

use super::report::{DueReport, TlsReporter};
use crate::address::{Address, Domain, ReversePath};
use crate::engine::Engine;
use crate::envelope::Envelope;
use crate::https::{HttpsClient, HttpsUrl};
use crate::resolve::DnsResolver;
use crate::status::Severity;

const TARGET: &str = "postrider::tls_rpt";

/// RFC 8460 §5.3 / §6.4: the media type of a gzip-compressed report.
pub const TLSRPT_GZIP: &str = "application/tlsrpt+gzip";

/// What became of one report.
#[derive(Debug, Default)]
struct Sent {
    /// Queued as mail, or accepted by an `https:` address.
    delivered: bool,
    /// Some address failed in a way that may pass (DNS, connection, 5xx).
    temporary: bool,
    /// The addresses that now have it or refused it for good ([`DueReport::settled`]).
    settled: Vec<String>,
}

impl Sent {
    /// Adds what became of the report at some more of its addresses.
    fn add(&mut self, more: Sent) {
        self.delivered |= more.delivered;
        self.temporary |= more.temporary;
        self.settled.extend(more.settled);
    }
}

/// How an address is named in [`DueReport::settled`].
fn mailto_key(address: &str) -> String {
    format!("mailto:{address}")
}

impl TlsReporter {
    /// Sends every due report: looks up the domain's `_smtp._tls` record, submits the
    /// report to its `mailto:` addresses from `from` and posts it to its `https:` ones.
    /// Returns how many reports went out to some address in this call (queued as mail, or
    /// accepted by an `https:` address). A domain without a usable record is skipped with a
    /// log line. A report that met a temporary failure at some address (a failed TXT lookup,
    /// an HTTPS endpoint down, a full spool) is put back for the next call, which sends it
    /// only to the addresses it has not reached yet ([`DueReport::settled`]): nobody gets it
    /// twice, and one address that is down does not cost the others their report.
    pub async fn send_due(
        &self,
        engine: &Engine,
        dns: &DnsResolver,
        submitter: &Domain,
        from: &Address,
        now: SystemTime,
    ) -> usize {
        let mut sent = 0;
        for mut due in self.take_due(now, submitter) {
            let outcome = self.send_one(&due, engine, dns, submitter, from).await;
            if outcome.delivered {
                sent += 1;
            }
            if outcome.temporary {
                due.settled.extend(outcome.settled);
                tracing::info!(target: TARGET, domain = %due.domain, reached = due.settled.len(),
                    "TLS report kept for the next run, for the addresses it has not reached");
                self.put_back(due);
            }
        }
        sent
    }

    async fn send_one(
        &self,
        due: &DueReport,
        engine: &Engine,
        dns: &DnsResolver,
        submitter: &Domain,
        from: &Address,
    ) -> Sent {
        let records = match dns.txt_records("_smtp._tls", &due.domain).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(target: TARGET, domain = %due.domain, "cannot look up the TLS-RPT record: {e}");
                return Sent {
                    temporary: true,
                    ..Sent::default()
                };
            }
        };
        let mut mailto = Vec::new();
        let mut https = Vec::new();
        let mut named = 0;
        for uri in records
            .iter()
            .filter(|r| r.starts_with(b"v=TLSRPTv1"))
            .filter_map(|r| TlsRpt::parse(r).ok())
            .flat_map(|r| r.rua)
        {
            named += 1;
            match uri {
                ReportUri::Mail(m) if !due.settled.contains(&mailto_key(&m)) => mailto.push(m),
                ReportUri::Http(url) if !due.settled.contains(&url) => https.push(url),
                _ => {}
            }
        }
        let mut sent = Sent::default();
        if !mailto.is_empty() {
            sent.add(mail(due, &mailto, engine, submitter, from).await);
        }
        if !https.is_empty() {
            sent.add(self.post(due, &https).await);
        }
        if named == 0 {
            tracing::info!(target: TARGET, domain = %due.domain, "no TLS-RPT address; report dropped");
        }
        sent
    }

    /// Posts the report to each `https:` address; each 2xx answer is a delivery (§5.3.1).
    async fn post(&self, due: &DueReport, urls: &[String]) -> Sent {
        let mut sent = Sent::default();
        let Some(client) = &self.https else {
            tracing::info!(target: TARGET, domain = %due.domain, "no HTTPS client for https TLS-RPT addresses; skipped");
            return sent;
        };
        let body = match gzip_json(due) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(target: TARGET, domain = %due.domain, "cannot compress the TLS report: {e}");
                return sent;
            }
        };
        for url in urls {
            match post_to(client, url, body.clone()).await {
                Ok(()) => {
                    tracing::info!(target: TARGET, domain = %due.domain, %url, "TLS report posted");
                    sent.delivered = true;
                    sent.settled.push(url.clone());
                }
                Err((Severity::Temporary, reason)) => {
                    tracing::warn!(target: TARGET, domain = %due.domain, %url, "TLS report not posted, to be tried again: {reason}");
                    sent.temporary = true;
                }
                Err((Severity::Permanent, reason)) => {
                    tracing::warn!(target: TARGET, domain = %due.domain, %url, "TLS report not posted: {reason}");
                    sent.settled.push(url.clone());
                }
            }
        }
        sent
    }
}

async fn post_to(client: &HttpsClient, url: &str, body: Bytes) -> Result<(), (Severity, String)> {
    let parsed: HttpsUrl = url
        .parse()
        .map_err(|e: crate::https::HttpsError| (Severity::Permanent, e.to_string()))?;
    let response = client
        .post(&parsed, TLSRPT_GZIP, body)
        .await
        .map_err(|e| (e.severity(), e.to_string()))?;
    match response.status {
        200..=299 => Ok(()),
        // A server error may pass; anything else is the endpoint refusing the report.
        status @ 500..=599 => Err((Severity::Temporary, format!("HTTP status {status}"))),
        status => Err((Severity::Permanent, format!("HTTP status {status}"))),
    }
}

fn gzip_json(due: &DueReport) -> std::io::Result<Bytes> {
    let mut gz = mail_auth::flate2::write::GzEncoder::new(
        Vec::new(),
        mail_auth::flate2::Compression::default(),
    );
    gz.write_all(due.report.to_json().as_bytes())?;
    Ok(gz.finish()?.into())
}

/// Submits the report as mail to `rua` (RFC 8460 §5.3.2).
async fn mail(
    due: &DueReport,
    rua: &[String],
    engine: &Engine,
    submitter: &Domain,
    from: &Address,
) -> Sent {
    // One message for every mailto: address: queued, it is the engine's to deliver to each.
    // What can never be mailed (no usable address, a report that cannot be built) is settled
    // too, so that a report kept for an https address that is down does not try it again.
    let every = || rua.iter().map(|m| mailto_key(m)).collect();
    let never = || Sent {
        settled: every(),
        ..Sent::default()
    };
    let recipients: Vec<Address> = rua.iter().filter_map(|m| Address::parse(m).ok()).collect();
    if recipients.is_empty() {
        tracing::info!(target: TARGET, domain = %due.domain, "no usable mailto: TLS-RPT address");
        return never();
    }
    let body = match due.report.to_rfc5322(
        due.domain.as_str(),
        submitter.as_str(),
        from.to_string().as_str(),
        rua.iter().map(String::as_str),
    ) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(target: TARGET, domain = %due.domain, "cannot build the TLS report: {e}");
            return never();
        }
    };
    let envelope = Envelope::new(ReversePath::Address(from.clone()), recipients);
    match engine.submit(envelope, body.into_bytes()).await {
        Ok(id) => {
            tracing::info!(target: TARGET, domain = %due.domain, %id, "TLS report queued");
            Sent {
                delivered: true,
                temporary: false,
                settled: every(),
            }
        }
        // A full spool or a stopping engine may pass.
        Err(e) if e.severity() == Severity::Temporary => {
            tracing::warn!(target: TARGET, domain = %due.domain, "cannot queue the TLS report, to be tried again: {e}");
            Sent {
                temporary: true,
                ..Sent::default()
            }
        }
        Err(e) => {
            tracing::warn!(target: TARGET, domain = %due.domain, "cannot queue the TLS report: {e}");
            never()
        }
    }
}
