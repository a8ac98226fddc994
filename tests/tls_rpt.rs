//! TLS-RPT (RFC 8460) reports sent through the engine to the `_smtp._tls` `mailto:`
//! address, and the doctor's `tls-policy` check, against the in-process DNS server and the
//! HTTPS policy host.

mod support;

use std::time::Duration;

use mail_auth::report::tlsrpt::ResultType;
use mail_parser::MimeHeaders;
use postrider::config::Config;
use postrider::doctor::{Check, Doctor, DoctorOptions, Verdict};
use postrider::engine::Limits;
use postrider::tls_policy::{PolicyKind, ReportedPolicy};
use postrider::{Address, Domain};
use support::dns_server::DnsServer;
use support::engine::*;
use support::sts_server::{policy, policy_text};
use support::tls_policy::*;

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
