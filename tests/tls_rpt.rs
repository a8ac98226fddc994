//! TLS-RPT (RFC 8460) reports sent through the engine to the `_smtp._tls` `mailto:`
//! address — by the reporter, and by the daemon's loop across a restart (counts kept in the
//! state directory) to a real smtp-sink mailbox — or posted to an `https:` address (a
//! loopback HTTPS endpoint with a test CA), and the doctor's `tls-policy` check, against the
//! in-process DNS server and the HTTPS policy host.

mod support;

use std::time::{Duration, SystemTime};

use mail_auth::report::tlsrpt::ResultType;
use mail_parser::MimeHeaders;
use postrider::config::Config;
use postrider::doctor::{Check, Doctor, DoctorOptions, Verdict};
use postrider::engine::Limits;
use postrider::server::daemon::Daemon;
use postrider::tls_policy::{PolicyKind, ReportedPolicy, TlsReporter};
use postrider::{Address, Domain};
use support::dns_server::DnsServer;
use support::engine::*;
use support::sink::Sink;
use support::sts_server::{policy, policy_text};
use support::tls_policy::*;
use support::token_endpoint::{Answer, TokenEndpoint};

#[tokio::test]
async fn a_finished_day_is_mailed_to_the_rua_address_through_the_engine() {
    let world = StsWorld::start(policy(&policy_text("enforce", &[MX], 86400))).await;
    let dns = DnsServer::start(vec![zone(Some("1"), &world.policy.ip(), false).txt(
        "_smtp._tls",
        "v=TLSRPTv1; rua=mailto:tls-reports@example.test",
    )])
    .await;
    let resolver = resolver(&dns);
    let policy = ReportedPolicy {
        kind: PolicyKind::Sts,
        domain: Domain::parse(DOMAIN).unwrap(),
        text: vec!["version: STSv1".into(), "mode: enforce".into()],
        mx: vec![MX.into()],
    };
    let day = world.clock.now();
    world.reporter.success(&policy, day);
    world.reporter.failure(
        &policy,
        ResultType::CertificateHostMismatch,
        Some(&Domain::parse(MX).unwrap()),
        Some("127.0.0.1".parse().unwrap()),
        None,
        day,
    );
    let h = harness(Box::new(|_| ok()), exact_retry(), Limits::default()).await;
    let me = Domain::parse("mta.test.example").unwrap();
    let from = Address::parse("postmaster@mta.test.example").unwrap();
    assert_eq!(
        world
            .reporter
            .send_due(&h.engine, &resolver, &me, &from, day)
            .await,
        0,
        "nothing is due before the day ends"
    );
    let later = day + Duration::from_secs(86400);
    assert_eq!(
        world
            .reporter
            .send_due(&h.engine, &resolver, &me, &from, later)
            .await,
        1
    );
    let mut h = h;
    let event = h.next_event_for("tls-reports@example.test").await;
    assert!(
        matches!(event.outcome, postrider::Outcome::Delivered { .. }),
        "{event:?}"
    );
    let call = &h.transport.calls_for("tls-reports@example.test")[0];
    let (sender, _, body) = &call.messages[0];
    assert_eq!(sender.to_string(), "<postmaster@mta.test.example>");
    let text = String::from_utf8_lossy(body);
    assert!(text.contains("TLS-Report-Domain: example.test"), "{text}");
    assert!(
        text.contains("report-type=\"tlsrpt\"") || text.contains("report-type=tlsrpt"),
        "{text}"
    );
    // The attachment is the gzip-compressed JSON report: decode it and read it back.
    let parsed = mail_parser::MessageParser::default()
        .parse(body.as_ref())
        .unwrap();
    let gz = parsed
        .attachments()
        .find(|a| a.is_content_type("application", "tlsrpt+gzip"))
        .expect("the report attachment")
        .contents()
        .to_vec();
    let mut json = String::new();
    std::io::Read::read_to_string(&mut flate2_reader(&gz), &mut json).unwrap();
    assert!(json.contains("\"certificate-host-mismatch\""), "{json}");
    assert!(
        json.contains("\"total-successful-session-count\":1"),
        "{json}"
    );
}

fn flate2_reader(gz: &[u8]) -> impl std::io::Read + '_ {
    mail_auth::flate2::read::GzDecoder::new(gz)
}

#[tokio::test]
async fn the_doctor_explains_the_tls_policy_of_the_probe_domain() {
    let world = StsWorld::start(policy(&policy_text(
        "enforce",
        &["*.elsewhere.test"],
        86400,
    )))
    .await;
    let dns = world.dns(Some("3")).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::parse("", dir.path().join("postrider.toml")).unwrap();
    config.spool = dir.path().join("spool");
    let doctor = Doctor::new(config)
        .with_dns(resolver(&dns))
        .with_tls_roots(world.roots())
        .with_options(DoctorOptions {
            probe_domain: Some(Domain::parse(DOMAIN).unwrap()),
            ..DoctorOptions::default()
        });
    let findings = doctor.check_tls_policy().await;
    assert_eq!(findings.len(), 1, "{findings:#?}");
    let f = &findings[0];
    assert_eq!(
        (f.check, f.verdict),
        (Check::TlsPolicy, Verdict::Warn),
        "{f}"
    );
    assert!(
        f.detail
            .contains("MTA-STS: mode enforce (id 3, mx: *.elsewhere.test)"),
        "{f}"
    );
    assert!(
        f.detail.contains("MX mx.example.test: not used: mx.example.test is not an MX host the MTA-STS policy of example.test allows"),
        "{f}"
    );
    assert!(
        !dir.path().join("spool").exists(),
        "the doctor's lookups are not cached on disk"
    );
}

/// A site whose daemon counts TLS results: mail to example.test must use TLS (MTA-STS
/// `enforce`, policy on the HTTPS host of the test CA) but its MX, a real smtp-sink, offers
/// no STARTTLS, so every attempt is a `starttls-not-supported` failure. example.test's
/// `_smtp._tls` record names tls-reports@reports.test, whose mailbox is a second smtp-sink
/// that keeps every message.
struct ReportingSite {
    _world: StsWorld,
    _dns: DnsServer,
    _mx: Sink,
    rua: Sink,
    dir: tempfile::TempDir,
}

impl ReportingSite {
    async fn start() -> ReportingSite {
        let world = StsWorld::start(policy(&policy_text("enforce", &[MX], 86400))).await;
        let dns = DnsServer::start(vec![zone(Some("1"), &world.policy.ip(), false).txt(
            "_smtp._tls",
            "v=TLSRPTv1; rua=mailto:tls-reports@reports.test",
        )])
        .await;
        let mx = Sink::start().await;
        let rua = Sink::start_with(&[], true).await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), world.ca.pem()).unwrap();
        std::fs::write(
            dir.path().join("mailertable"),
            format!(
                "{DOMAIN} esmtp:{DOMAIN}:{}\nreports.test esmtp:[127.0.0.1]:{}\n",
                mx.port(),
                rua.port()
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("postrider.toml"),
            format!(
                "hostname = \"mta.sender.test\"\nspool = \"spool\"\nmailertable = \"mailertable\"\n\
                 [spf]\npolicy = \"off\"\n\
                 [dns]\nname_servers = [\"{}\"]\ntimeout = \"2s\"\nattempts = 1\naddress_preference = \"ipv4-only\"\n\
                 [esmtp]\ntrust_anchors = \"ca.pem\"\nconnection_cache = \"off\"\n\
                 [tls]\ntls_rpt = true\n",
                dns.addr()
            ),
        )
        .unwrap();
        ReportingSite {
            _world: world,
            _dns: dns,
            _mx: mx,
            rua,
            dir,
        }
    }

    async fn daemon(&self) -> RunningDaemon {
        let config = Config::load(self.dir.path().join("postrider.toml")).unwrap();
        let daemon = Daemon::start(config, &["127.0.0.1:0".parse().unwrap()])
            .await
            .unwrap();
        let trigger = daemon
            .tls_reports()
            .expect("a daemon with [tls] tls_rpt = true runs the TLS-RPT loop");
        let engine = daemon.engine().clone();
        let reloader = daemon.reloader();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(daemon.run(async move {
            let _ = stopped.await;
        }));
        RunningDaemon {
            trigger,
            engine,
            reloader,
            stop,
            run,
        }
    }
}

struct RunningDaemon {
    trigger: postrider::tls_policy::ReportTrigger,
    engine: postrider::engine::Engine,
    reloader: postrider::server::daemon::Reloader,
    stop: tokio::sync::oneshot::Sender<()>,
    run: tokio::task::JoinHandle<()>,
}

impl RunningDaemon {
    /// Submits a message to example.test and waits for its attempt to be deferred.
    async fn defer_one(&self, n: usize) {
        let mut events = self.engine.subscribe();
        let to = Address::parse(&format!("user{n}@{DOMAIN}")).unwrap();
        let env = postrider::Envelope::new(
            postrider::ReversePath::parse("pbx@sender.test").unwrap(),
            [to.clone()],
        );
        self.engine
            .submit(env, format!("Subject: {n}\r\n\r\nhello\r\n"))
            .await
            .unwrap();
        loop {
            let e = tokio::time::timeout(Duration::from_secs(30), events.recv())
                .await
                .expect("an attempt within 30 s")
                .expect("the event stream");
            if e.recipient == to {
                assert!(
                    matches!(e.outcome, postrider::Outcome::Deferred(_)),
                    "an MX without STARTTLS under MTA-STS enforce defers: {e}"
                );
                return;
            }
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(60), self.run)
            .await
            .expect("the daemon stops within 60 s")
            .unwrap();
    }
}

/// The gzip JSON report of every report message the mailbox holds.
fn reports_in(mailbox: &Sink) -> Vec<serde_json::Value> {
    mailbox
        .dumped()
        .iter()
        .map(|text| {
            let parsed = mail_parser::MessageParser::default()
                .parse(text.as_bytes())
                .expect("a MIME message");
            let gz = parsed
                .attachments()
                .find(|a| a.is_content_type("application", "tlsrpt+gzip"))
                .expect("the report attachment")
                .contents()
                .to_vec();
            let mut json = String::new();
            std::io::Read::read_to_string(&mut flate2_reader(&gz), &mut json).unwrap();
            serde_json::from_str(&json).unwrap()
        })
        .collect()
}

#[tokio::test]
async fn the_daemon_mails_the_report_of_both_runs_of_a_day_after_a_restart_and_a_reload() {
    let site = ReportingSite::start().await;
    let first = site.daemon().await;
    first.defer_one(1).await;
    first.stop().await;
    let counts = site.dir.path().join("spool/tls-rpt/counts.json");
    assert!(counts.exists(), "a stop flushes the counts to {counts:?}");

    let second = site.daemon().await;
    let reload = second.reloader.reload();
    assert!(reload.refused.is_empty(), "{reload:?}");
    second.defer_one(2).await;
    assert_eq!(
        second.trigger.send_due(SystemTime::now()).await,
        Some(0),
        "today is not over"
    );
    // A day from now, today is a finished day (two if the test crossed midnight UTC).
    let queued = second
        .trigger
        .send_due(SystemTime::now() + Duration::from_secs(86400))
        .await
        .expect("the loop runs");
    assert!(queued >= 1, "a report is queued");
    let got = site
        .rua
        .wait_for(queued as u64, queued as u64, Duration::from_secs(30))
        .await;
    assert_eq!(got.messages, queued as u64);
    second.stop().await;

    let reports = reports_in(&site.rua);
    assert_eq!(reports.len(), queued);
    let mut failures = 0;
    for report in &reports {
        assert_eq!(report["organization-name"], "mta.sender.test", "{report}");
        for p in report["policies"].as_array().unwrap() {
            assert_eq!(p["policy"]["policy-type"], "sts", "{p}");
            assert_eq!(p["policy"]["policy-domain"], DOMAIN, "{p}");
            failures += p["summary"]["total-failure-session-count"]
                .as_u64()
                .unwrap();
            for f in p["failure-details"].as_array().unwrap() {
                assert_eq!(f["result-type"], "starttls-not-supported", "{f}");
                assert_eq!(f["receiving-mx-hostname"], MX, "{f}");
            }
        }
    }
    assert_eq!(
        failures, 2,
        "one failed session before the restart and one after the reload: {reports:?}"
    );
}

#[test]
fn a_damaged_counts_file_is_named_moved_aside_and_replaced_at_the_next_flush() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tls-rpt/counts.json");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, "{\"version\": 1, \"counts\": [tru").unwrap();
    let (reporter, error) = TlsReporter::open("postrider tests", dir.path());
    let error = error.expect("the damage is reported");
    assert!(
        error.to_string().contains(&file.display().to_string()),
        "{error}"
    );
    assert!(dir.path().join("tls-rpt/counts.json.corrupt").exists());
    let policy = ReportedPolicy {
        kind: PolicyKind::Sts,
        domain: Domain::parse(DOMAIN).unwrap(),
        text: vec!["version: STSv1".into()],
        mx: vec![MX.into()],
    };
    let day = SystemTime::now();
    reporter.success(&policy, day);
    reporter.flush().unwrap();
    drop(reporter);
    let (again, error) = TlsReporter::open("postrider tests", dir.path());
    assert!(error.is_none(), "{error:?}");
    let me = Domain::parse("mta.sender.test").unwrap();
    let due = again.take_due(day + Duration::from_secs(86400), &me);
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].report.policies[0].summary.total_success, 1);
}

/// A reporter with one failure counted for DOMAIN, whose `_smtp._tls` record names a loopback
/// HTTPS endpoint answering `answers` in turn, after `mailto` when given; and the day after.
struct HttpsReporting {
    endpoint: TokenEndpoint,
    _dns: DnsServer,
    resolver: postrider::resolve::DnsResolver,
    reporter: TlsReporter,
    h: Harness,
    later: SystemTime,
}

impl HttpsReporting {
    async fn start(answers: Vec<Answer>, mailto: Option<&str>) -> HttpsReporting {
        let ca = support::smtp_peer::TestCa::new("TLS-RPT endpoint CA");
        let endpoint = TokenEndpoint::start(&ca, answers).await;
        let https_rua = endpoint.url().replace("/token", "/tlsrpt");
        let rua = match mailto {
            Some(m) => format!("mailto:{m},{https_rua}"),
            None => https_rua,
        };
        let dns = DnsServer::start(vec![
            support::dns_server::Zone::new(&format!("{DOMAIN}."))
                .txt("_smtp._tls", &format!("v=TLSRPTv1; rua={rua}")),
        ])
        .await;
        let resolver = resolver(&dns);
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.cert.clone()).unwrap();
        let https = postrider::https::HttpsClient::new(roots, Default::default()).unwrap();
        let reporter = TlsReporter::new("postrider tests").with_https(https);
        let policy = ReportedPolicy {
            kind: PolicyKind::Sts,
            domain: Domain::parse(DOMAIN).unwrap(),
            text: vec!["version: STSv1".into(), "mode: enforce".into()],
            mx: vec![MX.into()],
        };
        let day = SystemTime::now();
        reporter.failure(
            &policy,
            ResultType::ValidationFailure,
            Some(&Domain::parse(MX).unwrap()),
            Some("127.0.0.1".parse().unwrap()),
            Some("unknown issuer"),
            day,
        );
        let h = harness(Box::new(|_| ok()), exact_retry(), Limits::default()).await;
        HttpsReporting {
            endpoint,
            _dns: dns,
            resolver,
            reporter,
            h,
            later: day + Duration::from_secs(86400),
        }
    }

    /// One run of the sender; how many reports went out.
    async fn send_due(&self) -> usize {
        let me = Domain::parse("mta.test.example").unwrap();
        let from = Address::parse("postmaster@mta.test.example").unwrap();
        self.reporter
            .send_due(&self.h.engine, &self.resolver, &me, &from, self.later)
            .await
    }
}

#[tokio::test]
async fn an_https_rua_gets_the_gzip_json_report_posted_and_a_server_error_keeps_it() {
    // The first POST meets a server error (the report is kept), the second is accepted.
    let r = HttpsReporting::start(
        vec![
            Answer::Json(503, "{}".into()),
            Answer::Json(200, "{}".into()),
        ],
        None,
    )
    .await;
    assert_eq!(r.send_due().await, 0, "503: not sent");
    assert_eq!(r.send_due().await, 1, "kept and posted at the next run");
    let (endpoint, h) = (&r.endpoint, &r.h);
    let requests = endpoint.requests();
    assert_eq!(requests.len(), 2);
    let r = &requests[1];
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/tlsrpt"));
    assert_eq!(r.content_type.as_deref(), Some("application/tlsrpt+gzip"));
    assert_eq!(requests[0].body, r.body, "the same report both times");
    let mut json = String::new();
    std::io::Read::read_to_string(&mut flate2_reader(&r.body), &mut json).unwrap();
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    let p = &report["policies"][0];
    assert_eq!(p["policy"]["policy-domain"], DOMAIN, "{report}");
    assert_eq!(p["summary"]["total-failure-session-count"], 1, "{report}");
    assert_eq!(
        p["failure-details"][0]["result-type"], "validation-failure",
        "{report}"
    );
    assert!(
        h.transport.calls_for("tls-reports@example.test").is_empty(),
        "no mail for an https address"
    );
}

#[tokio::test]
async fn a_mailto_address_that_can_never_take_the_report_is_not_tried_again_while_https_is_down() {
    // No domain: not an address mail can go to.
    let r = HttpsReporting::start(vec![Answer::Json(503, "{}".into())], Some("nobody")).await;
    assert_eq!(r.send_due().await, 0, "neither address took it");
    let me = Domain::parse("mta.test.example").unwrap();
    let kept = r.reporter.take_due(r.later, &me);
    assert_eq!(kept.len(), 1, "kept for the https address");
    assert_eq!(
        kept[0].settled.iter().collect::<Vec<_>>(),
        ["mailto:nobody"],
        "the mailto: address is settled, the https one is not"
    );
    assert!(r.h.transport.calls().is_empty(), "nothing was mailed");
}

#[tokio::test]
async fn a_report_one_address_took_is_sent_again_only_to_the_address_that_was_down() {
    const MAILBOX: &str = "tls-reports@example.test";
    let mut r = HttpsReporting::start(
        vec![
            Answer::Json(503, "{}".into()),
            Answer::Json(200, "{}".into()),
        ],
        Some(MAILBOX),
    )
    .await;
    assert_eq!(r.send_due().await, 1, "mailed; the https address was down");
    r.h.next_event_for(MAILBOX).await;
    assert_eq!(r.endpoint.requests().len(), 1);

    assert_eq!(
        r.send_due().await,
        1,
        "kept for the https address and posted to it"
    );
    assert_eq!(r.endpoint.requests().len(), 2);
    assert_eq!(r.endpoint.requests()[0].body, r.endpoint.requests()[1].body);
    // A message sent after the second run reaches the mailbox after anything that run queued.
    r.h.submit(
        "someone@example.test",
        &[MAILBOX],
        "Subject: marker\r\n\r\nmarker\r\n",
    )
    .await;
    r.h.next_event_for(MAILBOX).await;
    let calls = r.h.transport.calls_for(MAILBOX);
    let bodies: Vec<String> = calls
        .iter()
        .flat_map(|c| c.messages.iter())
        .map(|(_, _, body)| String::from_utf8_lossy(body).into_owned())
        .collect();
    assert_eq!(bodies.len(), 2, "the report once, then the marker");
    assert!(
        bodies[1].contains("Subject: marker"),
        "the mailto: address got the report twice"
    );

    assert_eq!(r.send_due().await, 0, "nothing left to send");
    assert_eq!(r.endpoint.requests().len(), 2);
}
