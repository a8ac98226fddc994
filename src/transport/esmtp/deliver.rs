//! A batch over a route: which hosts to try in which order, which failure moves on to the next
//! one, and the report for every recipient.
//!
//! Failures before any message was sent (no connection, a refusing greeting or EHLO, TLS
//! required but unavailable) move on to the next address, host and fallback hop. A session
//! that breaks part-way leaves the message in flight deferred and takes the remaining messages
//! to the next address. Recipients still pending when every host has been tried share the
//! verdict of the failures: deferred if any was temporary (with the last temporary one's
//! words), failed only if all were permanent.

use super::classify;
use super::connect;
use super::pool::{Grant, Slot};
use super::preflight::{self, Gate};
use super::probe::{CertificateProbe, TlsProbe};
use super::session::{Peer, Session};
use super::setup::{self, SetupContext, SetupFailure, Trace};
use super::timeouts::Phase;
use super::transaction;
use super::{EsmtpTransport, SpfConfig};
use crate::route::{HopPolicy, Host, Mailer, NextHop, Route, TlsLevel};
use crate::status::{Diagnostic, EnhancedStatus, Outcome};
use crate::tls_policy::{Discovered, HostRule, OutboundTls, dane};
use crate::transport::{Delivery, Next, RecipientReport, Redirect, RemoteHost, Reports};

/// The messages of a batch, the recipients still to settle, and where their outcomes go.
struct Batch<'a> {
    jobs: Vec<Job<'a>>,
    reports: &'a dyn Reports,
    /// The engine asked for no further message in this call.
    stopped: bool,
    /// REQUIRETLS messages the last session could not carry (its server is not
    /// authenticated or lacks the extension): still pending, for the next host to try.
    refused: Vec<(Diagnostic, RemoteHost)>,
}

struct Job<'a> {
    delivery: &'a Delivery,
    pending: Vec<usize>,
    /// Outcomes decided and not yet handed to `reports`.
    settled: Vec<RecipientReport>,
    /// Handed over: the message is done with in this call.
    recorded: bool,
    /// A warning that goes with every report of this message.
    note: Option<String>,
    /// The SPF pre-flight has decided this message.
    gated: bool,
}

impl<'a> Batch<'a> {
    fn new(batch: Vec<&'a Delivery>, reports: &'a dyn Reports) -> Batch<'a> {
        let mut b = Batch {
            jobs: Vec::with_capacity(batch.len()),
            reports,
            stopped: false,
            refused: Vec::new(),
        };
        for delivery in batch {
            let mut pending = Vec::with_capacity(delivery.recipients.len());
            let mut settled = Vec::new();
            for &i in &delivery.recipients {
                if pending.contains(&i) {
                    continue;
                }
                if i >= delivery.envelope.recipients.len() {
                    settled.push(RecipientReport::new(
                        delivery.id,
                        i,
                        Outcome::deferred(
                            EnhancedStatus::new(4, 3, 5),
                            format!(
                                "recipient index {i} is not in the envelope of {} (engine error)",
                                delivery.id
                            ),
                        ),
                        None,
                    ));
                    continue;
                }
                pending.push(i);
            }
            b.jobs.push(Job {
                delivery,
                pending,
                settled,
                recorded: false,
                note: None,
                gated: false,
            });
        }
        b
    }

    /// True while some message still waits for an outcome and the engine wants more.
    fn pending(&self) -> bool {
        !self.stopped && self.jobs.iter().any(|j| !j.pending.is_empty())
    }

    fn report(
        &mut self,
        job: usize,
        recipient: usize,
        outcome: Outcome,
        remote: Option<RemoteHost>,
    ) -> &mut RecipientReport {
        let job = &mut self.jobs[job];
        job.settled.push(
            RecipientReport::new(job.delivery.id, recipient, outcome, remote)
                .with_note(job.note.clone()),
        );
        job.settled
            .last_mut()
            .expect("invariant: a report was just pushed")
    }

    /// Hands every message whose recipients are all settled to the engine, in batch order;
    /// stops the batch when the engine says so.
    async fn record_settled(&mut self) {
        for j in 0..self.jobs.len() {
            let job = &mut self.jobs[j];
            if job.recorded || !job.pending.is_empty() || job.settled.is_empty() {
                continue;
            }
            job.recorded = true;
            let settled = std::mem::take(&mut job.settled);
            if self.reports.record(job.delivery.id, settled).await == Next::Stop {
                self.stopped = true;
            }
        }
    }

    /// Applies the SPF pre-flight's answer to job `j`.
    fn apply_gate(&mut self, j: usize, gate: Gate) {
        self.jobs[j].gated = true;
        match gate {
            Gate::Send(note) => self.jobs[j].note = note,
            Gate::Reroute(advice) => {
                // The engine sends it through the smart host; if it cannot, this deferral stands.
                for i in std::mem::take(&mut self.jobs[j].pending) {
                    let outcome = Outcome::deferred(EnhancedStatus::new(4, 7, 23), advice.clone());
                    self.report(j, i, outcome, None).redirect = Some(Redirect::SmartHost {
                        reason: advice.clone(),
                    });
                }
            }
            Gate::Defer(d) => {
                for i in std::mem::take(&mut self.jobs[j].pending) {
                    self.report(j, i, Outcome::Deferred(d.clone()), None);
                }
            }
        }
    }

    /// Moves the last session's REQUIRETLS refusals into `failures`; true when messages
    /// are still pending (refused ones among them), so the next host is tried.
    fn take_refused(&mut self, failures: &mut Failures) -> bool {
        for (d, remote) in self.refused.drain(..) {
            failures.record(d, Some(remote));
        }
        self.pending()
    }

    /// Every pending recipient of every message gets `outcome`.
    fn settle_all(&mut self, outcome: Outcome, remote: Option<RemoteHost>) {
        for j in 0..self.jobs.len() {
            for i in std::mem::take(&mut self.jobs[j].pending) {
                self.report(j, i, outcome.clone(), remote.clone());
            }
        }
    }
}

/// The failures met while trying hosts, for the verdict on what is left.
#[derive(Default)]
struct Failures {
    last_temporary: Option<(Diagnostic, Option<RemoteHost>)>,
    last_permanent: Option<(Diagnostic, Option<RemoteHost>)>,
}

impl Failures {
    fn record(&mut self, d: Diagnostic, remote: Option<RemoteHost>) {
        tracing::debug!(remote = ?remote, status = %d.status, "{}", d.text);
        if d.status.is_permanent() {
            self.last_permanent = Some((d, remote));
        } else {
            self.last_temporary = Some((d, remote));
        }
    }

    fn verdict(self) -> (Outcome, Option<RemoteHost>) {
        match (self.last_temporary, self.last_permanent) {
            (Some((d, r)), _) => (Outcome::Deferred(d), r),
            (None, Some((d, r))) => (Outcome::Failed(d), r),
            (None, None) => (
                Outcome::Deferred(classify::misrouted("a relay route without next hops")),
                None,
            ),
        }
    }
}

/// Whether the TLS policies a recipient domain publishes (MTA-STS, DANE) apply to a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Published {
    /// Discovered and applied (the usual case).
    Apply,
    /// Not looked up: every message of the batch carries `TLS-Required: No` without
    /// REQUIRETLS. The policy file and its default still apply.
    Ignore,
}

/// RFC 8689 §4.1: `TLS-Required: No` counts only when the message is not also REQUIRETLS.
fn asks_to_ignore_published_policy(d: &Delivery) -> bool {
    !d.envelope.requiretls && crate::message::tls_required_no(&d.body)
}

pub(super) async fn deliver(
    t: &EsmtpTransport,
    route: &Route,
    batch: &[Delivery],
    reports: &dyn Reports,
) {
    if reports.stopping() {
        return;
    }
    match route {
        Route::Relay { mailer, hops } => relay_batches(t, *mailer, hops, batch, reports).await,
        Route::Local { .. } => {
            let misrouted = Outcome::Deferred(classify::misrouted("a local route"));
            settle_every_recipient(batch, reports, misrouted).await;
        }
        Route::Reject { reply } => {
            let outcome = if reply.is_transient() || reply.is_permanent() {
                classify::outcome(Diagnostic::remote(reply.clone()))
            } else {
                Outcome::Deferred(classify::misrouted(&format!(
                    "a reject route with the non-error reply {reply}"
                )))
            };
            settle_every_recipient(batch, reports, outcome).await;
        }
    }
}

async fn settle_every_recipient(batch: &[Delivery], reports: &dyn Reports, outcome: Outcome) {
    let mut b = Batch::new(batch.iter().collect(), reports);
    b.settle_all(outcome, None);
    b.record_settled().await;
}

/// Messages with `TLS-Required: No` go in a batch of their own, after the others: a session
/// opened without the published policy never carries a message the policy protects, in this
/// call or (parked under its own key) in a later one.
async fn relay_batches(
    t: &EsmtpTransport,
    mailer: Mailer,
    hops: &[NextHop],
    batch: &[Delivery],
    reports: &dyn Reports,
) {
    let (loose, strict): (Vec<&Delivery>, Vec<&Delivery>) = batch
        .iter()
        .partition(|d| t.config.tls_policy.is_some() && asks_to_ignore_published_policy(d));
    let mut b = Batch::new(strict, reports);
    relay(t, mailer, hops, &mut b, Published::Apply).await;
    b.record_settled().await;
    if loose.is_empty() || b.stopped || reports.stopping() {
        return;
    }
    let mut b = Batch::new(loose, reports);
    relay(t, mailer, hops, &mut b, Published::Ignore).await;
    b.record_settled().await;
}

async fn relay(
    t: &EsmtpTransport,
    mailer: Mailer,
    hops: &[NextHop],
    b: &mut Batch<'_>,
    published: Published,
) {
    let mut failures = Failures::default();
    'hops: for hop in hops {
        if !b.pending() {
            return;
        }
        let (generation, table) = t.policy_in_use();
        let policy = table.lookup(hop);
        let mx_of = match (&hop.host, hop.mx) {
            (Host::Name(domain), true) => Some(domain),
            _ => None,
        };
        // SPF pre-flight for direct-to-MX delivery. With a configured public address it runs
        // before connecting, so mail that must go through the smart host never waits on a
        // blocked port 25; without one it runs in the session, on the local address.
        let spf_hop = t
            .config
            .spf
            .as_ref()
            .filter(|_| mx_of.is_some())
            .map(|spf| (spf, hop));
        if let Some((spf, egress)) =
            spf_hop.and_then(|(spf, _)| spf.egress_before_connect().map(|e| (spf, e)))
        {
            for j in 0..b.jobs.len() {
                let job = &b.jobs[j];
                if job.gated || job.pending.is_empty() || !preflight::applies(hop, job.delivery) {
                    continue;
                }
                let gate = preflight::gate(spf, egress, job.delivery, &t.config.hostname).await;
                b.apply_gate(j, gate);
            }
            if !b.pending() {
                return;
            }
        }
        // A session parked by an earlier call to this hop skips DNS, connect, EHLO, TLS, AUTH.
        let key = match published {
            Published::Apply => format!("{mailer}:{hop}#{generation}"),
            Published::Ignore => format!("{mailer}:{hop}#{generation}#tls-required-no"),
        };
        let hop_name = hop.to_string();
        let grant = t.pool.acquire(&hop_name, Some(&key)).await;
        if t.pool.caches() {
            crate::metrics::connection_cache(matches!(grant, Grant::Reuse(..)));
        }
        // The place under the hop's connection limit for the next connection opened, while
        // this call holds one.
        let mut place = match grant {
            Grant::Fresh(slot) => Some(slot),
            Grant::Reuse(session, slot) => {
                match carry(t, &key, session, slot, b, spf_hop, &mut failures).await {
                    Carried::AllSettled => return,
                    Carried::Ended => None,
                    Carried::Broke(slot) => Some(slot),
                }
            }
        };
        let candidates = match connect::candidates(hop, &*t.resolver).await {
            Ok(c) => c,
            Err(d) => {
                failures.record(d, Some(named(&hop.host.to_string())));
                continue;
            }
        };
        // TLS policies the destination publishes, unless the policy file names this hop
        // (its line wins) or the hop is not a mail domain's MX.
        let discovered = match (&t.config.tls_policy, mx_of) {
            (Some(outbound), Some(domain))
                if table.explicit(hop).is_none() && published == Published::Apply =>
            {
                Some((outbound.clone(), outbound.discover(domain).await))
            }
            _ => None,
        };
        let port = hop.port_for(mailer);
        for candidate in &candidates {
            let rule = match (&discovered, &candidate.name) {
                (Some((outbound, found)), Some(name)) => {
                    outbound.host_rule(found, name, port).await
                }
                _ => HostRule::Normal,
            };
            let watch = match (&discovered, &candidate.name) {
                (Some((outbound, found)), Some(name)) if !matches!(rule, HostRule::Normal) => {
                    Some(Watch {
                        outbound,
                        found,
                        mx: name,
                        port,
                        rule: &rule,
                    })
                }
                _ => None,
            };
            if let HostRule::Refuse { reason, result } = &rule {
                if let Some(w) = &watch {
                    w.outbound.report_failure(
                        w.found,
                        w.rule,
                        *result,
                        Some(w.mx),
                        None,
                        Some(reason),
                    );
                }
                let name = candidate.name.as_ref().map(|n| named(n.as_str()));
                failures.record(classify::tls_policy_refused(reason), name);
                continue;
            }
            let host_policy = rule_policy(policy, &rule);
            let dane = match (&rule, &candidate.name) {
                (HostRule::Dane { records }, Some(name)) => Some(dane::connector(
                    dane::DaneVerifier::new(name.as_str(), records),
                )),
                _ => None,
            };
            let inspector = matches!(rule, HostRule::StsTesting).then(|| t.tls.inspector());
            let ctx = SetupContext {
                hostname: &t.config.hostname,
                mailer,
                policy: &host_policy,
                tls: &t.tls,
                timeouts: t.config.timeouts,
                inspector: inspector.as_ref(),
                tokens: &t.tokens,
                dane: dane.as_ref(),
            };
            let addrs = match connect::addresses(candidate, mx_of, &*t.resolver).await {
                Ok(a) => a,
                Err(d) => {
                    let name = candidate.name.as_ref().map(|n| n.to_string());
                    failures.record(d, name.map(|n| named(&n)));
                    continue;
                }
            };
            if let Some(domain) = mx_of
                && let Some(local) = addrs.iter().find(|a| {
                    t.config
                        .local_addresses
                        .contains(std::net::SocketAddr::new(**a, port))
                })
            {
                // RFC 5321 §5.1: this machine is an MX of the domain; only better MX hosts
                // (those already tried) may be used.
                let host = candidate
                    .name
                    .as_ref()
                    .map_or(String::new(), |n| n.to_string());
                failures.record(
                    classify::mail_loop(format!(
                        "{host} [{local}], an MX host of {domain}, is this machine"
                    )),
                    Some(named(&host)),
                );
                continue 'hops;
            }
            for addr in addrs {
                if !b.pending() {
                    return;
                }
                let slot = match place.take() {
                    Some(slot) => slot,
                    None => t.pool.place(&hop_name).await,
                };
                let peer = Peer {
                    name: candidate.name.clone(),
                    addr,
                    port,
                };
                let mut trace = Trace::default();
                let opened = setup::open_traced(&ctx, peer.clone(), &mut trace).await;
                if let Some(w) = &watch {
                    w.report(&trace, addr);
                }
                let opened = opened.map_err(|f| match &watch {
                    Some(w) if w.rule.requires_tls() && trace.tls != TlsProbe::NotTried => {
                        w.annotate(f)
                    }
                    _ => f,
                });
                match opened {
                    Err(SetupFailure::Next(d)) => {
                        failures.record(d, Some(peer.remote()));
                        place = Some(slot);
                    }
                    Err(SetupFailure::EndHop(d)) => {
                        failures.record(d, Some(peer.remote()));
                        continue 'hops;
                    }
                    Err(SetupFailure::EndRoute(d)) => {
                        b.settle_all(classify::outcome(d), Some(peer.remote()));
                        return;
                    }
                    Ok(session) => {
                        match carry(t, &key, session, slot, b, spf_hop, &mut failures).await {
                            Carried::AllSettled => return,
                            Carried::Ended => {}
                            Carried::Broke(slot) => place = Some(slot),
                        }
                    }
                }
            }
        }
    }
    if b.pending() {
        let (outcome, remote) = failures.verdict();
        b.settle_all(outcome, remote);
    }
}

/// What became of a session that carried a batch's pending messages.
enum Carried {
    /// Every recipient is settled: the call is over.
    AllSettled,
    /// The session went back to the pool (parked, handed on or QUIT); the recipients it
    /// refused are pending, for the next host.
    Ended,
    /// The session broke, its failure recorded; its place is kept for the next connection.
    Broke(Slot<Session>),
}

/// Carries the batch's pending messages over `session`, then ends its use of it.
async fn carry(
    t: &EsmtpTransport,
    key: &str,
    mut session: Session,
    slot: Slot<Session>,
    b: &mut Batch<'_>,
    spf_hop: Option<(&SpfConfig, &NextHop)>,
    failures: &mut Failures,
) -> Carried {
    let carried = match run_jobs(t, &mut session, b, spf_hop).await {
        Ok(clean) => {
            t.pool.finish(key, session, slot, clean && !b.stopped).await;
            Carried::Ended
        }
        Err(d) => {
            failures.record(d, Some(session.peer.remote()));
            // Closed before its place serves another connection.
            drop(session);
            Carried::Broke(slot)
        }
    };
    if b.take_refused(failures) {
        carried
    } else {
        Carried::AllSettled
    }
}

/// The hop's policy with the TLS level a discovered rule asks for.
fn rule_policy(policy: &HopPolicy, rule: &HostRule) -> HopPolicy {
    let tls = match rule {
        HostRule::Dane { .. } | HostRule::StsEnforce => TlsLevel::Verify,
        HostRule::DaneUnusable => TlsLevel::Encrypt,
        HostRule::StsTesting | HostRule::Normal | HostRule::Refuse { .. } => policy.tls,
    };
    HopPolicy {
        tls,
        ..policy.clone()
    }
}

/// A session under a discovered policy: what TLS-RPT hears of it, and how a failure names
/// the policy.
struct Watch<'a> {
    outbound: &'a OutboundTls,
    found: &'a Discovered,
    mx: &'a crate::address::Domain,
    port: u16,
    rule: &'a HostRule,
}

impl Watch<'_> {
    fn report(&self, trace: &Trace, addr: std::net::IpAddr) {
        use mail_auth::report::tlsrpt::ResultType;
        let fail = |result, reason: &str| {
            self.outbound.report_failure(
                self.found,
                self.rule,
                result,
                Some(self.mx),
                Some(addr),
                Some(reason),
            )
        };
        match &trace.tls {
            TlsProbe::NotOffered => fail(ResultType::StartTlsNotSupported, "STARTTLS not offered"),
            TlsProbe::Refused { reply } => fail(
                ResultType::StartTlsNotSupported,
                &format!("STARTTLS refused: {reply}"),
            ),
            TlsProbe::Failed { reason } => {
                fail(crate::tls_policy::result_for_handshake(reason), reason)
            }
            TlsProbe::Up {
                certificate: CertificateProbe::Invalid { reason },
                ..
            } => fail(crate::tls_policy::result_for_handshake(reason), reason),
            TlsProbe::Up { .. } => self.outbound.report_success(self.found, self.rule, self.mx),
            TlsProbe::NotTried => {}
        }
    }

    /// Says which published policy required what failed.
    fn annotate(&self, failure: SetupFailure) -> SetupFailure {
        let why = match self.rule {
            HostRule::Dane { .. } | HostRule::DaneUnusable => format!(
                "TLS required by DANE: DNSSEC-signed TLSA records at _{}._tcp.{}",
                self.port, self.mx
            ),
            _ => format!(
                "TLS with a certificate valid for {} required by the MTA-STS policy of {} (mode enforce)",
                self.mx, self.found.domain
            ),
        };
        let add = |mut d: Diagnostic| {
            d.text = format!("{}; {why}", d.text);
            d
        };
        match failure {
            SetupFailure::Next(d) => SetupFailure::Next(add(d)),
            SetupFailure::EndHop(d) => SetupFailure::EndHop(add(d)),
            SetupFailure::EndRoute(d) => SetupFailure::EndRoute(add(d)),
        }
    }
}

fn named(name: &str) -> RemoteHost {
    RemoteHost {
        name: Some(name.to_string()),
        addr: None,
    }
}

/// Carries every pending message over `s`, handing each to the engine as soon as its reply is
/// read; `Ok(true)` when it ends with no transaction open (the session can carry more). An
/// error is why the session broke; the message in flight has been settled and recorded, the
/// rest are still pending.
async fn run_jobs(
    t: &EsmtpTransport,
    s: &mut Session,
    b: &mut Batch<'_>,
    spf_hop: Option<(&SpfConfig, &NextHop)>,
) -> Result<bool, Diagnostic> {
    let remote = s.peer.remote();
    let mut needs_rset = false;
    for j in 0..b.jobs.len() {
        if b.stopped || b.reports.stopping() {
            b.stopped = true;
            break;
        }
        if let Some((spf, hop)) = spf_hop
            && let Some(local) = s.local
            && !b.jobs[j].gated
            && !b.jobs[j].pending.is_empty()
            && preflight::applies(hop, b.jobs[j].delivery)
        {
            let gate = preflight::gate(
                spf,
                spf.egress_for(local),
                b.jobs[j].delivery,
                &t.config.hostname,
            )
            .await;
            b.apply_gate(j, gate);
        }
        if b.jobs[j].pending.is_empty() {
            b.record_settled().await;
            continue;
        }
        if b.jobs[j].delivery.envelope.requiretls {
            // RFC 8689 §4.2.1: only over TLS to an authenticated server that announces
            // REQUIRETLS itself, never sent otherwise. Another MX host may be one, so the
            // message stays pending for the next host (the RFC lets the client try them);
            // when none is, the refusal is its verdict (returned, 5.7.10 / 5.7.30).
            let refusal = if !s.authenticated {
                Some(classify::requiretls_unauthenticated(&s.peer))
            } else if !s.caps.requiretls {
                Some(classify::requiretls_unsupported(&s.peer))
            } else {
                None
            };
            if let Some(d) = refusal {
                b.refused.push((d, remote.clone()));
                continue;
            }
        }
        if needs_rset {
            match s.command("RSET", Phase::Rset).await {
                Ok(r) if r.is_positive() => {}
                Ok(r) => return Err(classify::session_reply(&s.peer, &r)),
                Err(e) => return Err(classify::session_error(&e, &s.peer)),
            }
        }
        let pending = std::mem::take(&mut b.jobs[j].pending);
        let result = transaction::send_message(s, b.jobs[j].delivery, &pending).await;
        for &i in &pending {
            let outcome = result
                .outcomes
                .iter()
                .find(|(k, _)| *k == i)
                .map(|(_, o)| o.clone())
                .unwrap_or_else(|| {
                    Outcome::deferred(
                        EnhancedStatus::new(4, 3, 0),
                        "internal error: the transaction gave this recipient no outcome",
                    )
                });
            let delivered = matches!(outcome, Outcome::Delivered { .. });
            // RCPT carried NOTIFY/ORCPT to a DSN-capable server: it reports from here on.
            b.report(j, i, outcome, Some(remote.clone())).dsn_passed_on = delivered && s.caps.dsn;
        }
        needs_rset = result.open;
        // The outcome is durable before the next message goes out: a crash from here on
        // re-sends nothing this session delivered.
        b.record_settled().await;
        if let Some(d) = result.lost {
            return Err(d);
        }
    }
    Ok(!needs_rset)
}
