//! MTA-STS (RFC 8461) for direct MX delivery, end to end on loopback: the `_mta-sts` TXT
//! record from the in-process DNS server, the policy fetched over real HTTPS from a policy
//! host whose certificate comes from a test CA, and scripted MX hosts with real TLS (matching
//! and mismatching certificates). Also REQUIRETLS (RFC 8689) and the TLS-RPT counts.

mod support;

use std::time::Duration;

use mail_auth::report::tlsrpt::ResultType;
use postrider::Envelope;
use postrider::route::{PolicyTable, TlsLevel};
use postrider::tls_policy::{StsLookup, explain};
use support::esmtp::*;
use support::smtp_peer::{Script, ScriptedPeer, TestCa, Validity, ehlo_reply};
use support::sts_server::{PolicyAnswer, policy, policy_text};
use support::tls_policy::*;

/// Greeting, EHLO with STARTTLS, the handshake, EHLO again with `after_tls`.
fn starttls(after_tls: &[&str]) -> Script {
    Script::greet(MX, &["PIPELINING", "STARTTLS"])
        .on("STARTTLS", "220 2.0.0 Ready to start TLS")
        .starttls()
        .on("EHLO ", &ehlo_reply(MX, after_tls))
}

/// Deferred (or failed, with `failed`) with this status and a text holding every part.
#[track_caller]
fn assert_outcome(r: &postrider::RecipientReport, failed: bool, status: &str, parts: &[&str]) {
    let d = match (&r.outcome, failed) {
        (postrider::Outcome::Deferred(d), false) | (postrider::Outcome::Failed(d), true) => d,
        (other, _) => panic!("unexpected outcome {other:#?}"),
    };
    assert_eq!(d.status.to_string(), status, "{r:#?}");
    for part in parts {
        assert!(d.text.contains(part), "{part:?} not in {:?}", d.text);
    }
}

fn enforce(mx: &[&str]) -> PolicyAnswer {
    policy(&policy_text("enforce", mx, 86400))
}

async fn send(
    t: &postrider::transport::esmtp::EsmtpTransport,
    port: u16,
) -> postrider::RecipientReport {
    send_envelope(t, port, false).await
}

async fn send_envelope(
    t: &postrider::transport::esmtp::EsmtpTransport,
    port: u16,
    requiretls: bool,
) -> postrider::RecipientReport {
    let mut env = Envelope::new(
        postrider::ReversePath::parse("pbx@example.com").unwrap(),
        [postrider::Address::parse("alice@example.test").unwrap()],
    );
    env.requiretls = requiretls;
    let m = delivery(env, &body("sts"));
    let reports = t
        .deliver_all(&mx_route(port), std::slice::from_ref(&m))
        .await;
    assert_complete(&reports, std::slice::from_ref(&m));
    report(&reports, &m, 0).clone()
}

#[tokio::test]
async fn enforce_delivers_over_tls_with_a_certificate_for_the_mx_name() {
    let world = StsWorld::start(enforce(&[MX])).await;
    let dns = world.dns(Some("1")).await;
    let cache = tempfile::tempdir().unwrap();
    let tls = world.ca.server_config(&[MX], Validity::Current);
    let peer =
        ScriptedPeer::start_with_tls(vec![starttls(&[]).accept_one(1).quit()], Some(tls)).await;
    let t = world.transport(&dns, cache.path(), PolicyTable::new());
    assert_delivered(&send(&t, peer.port()).await);
    let logs = peer.finish().await;
    assert!(logs[0].tls, "{:#?}", logs[0]);
    assert_eq!(world.policy.requests(), 1);
    assert!(
        cache.path().join("example.test.json").exists(),
        "the policy is cached on disk"
    );
    let due = world
        .reporter
        .take_due(world.clock.now() + Duration::from_secs(86400), &d(OUR_NAME));
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].report.policies[0].summary.total_success, 1);
}

#[tokio::test]
async fn enforce_defers_a_mitm_certificate_naming_the_policy() {
    let world = StsWorld::start(enforce(&[MX])).await;
    let dns = world.dns(Some("1")).await;
    let cache = tempfile::tempdir().unwrap();
    // The attacker's certificate names the right host but comes from a CA nobody trusts.
    let mitm = TestCa::new("attacker").server_config(&[MX], Validity::Current);
    let peer =
        ScriptedPeer::start_with_tls(vec![starttls(&[]).accept_one(1).quit()], Some(mitm)).await;
    let t = world.transport(&dns, cache.path(), PolicyTable::new());
    let r = send(&t, peer.port()).await;
    assert_outcome(
        &r,
        false,
        "4.7.5",
        &[
            "failed: the server's certificate has an unknown issuer",
            "; TLS with a certificate valid for mx.example.test required by the MTA-STS policy of example.test (mode enforce)",
        ],
    );
    let logs = peer.finish().await;
    assert!(
        !logs[0].lines.iter().any(|l| l.starts_with("MAIL")),
        "{:#?}",
        logs[0]
    );
    let due = world
        .reporter
        .take_due(world.clock.now() + Duration::from_secs(86400), &d(OUR_NAME));
    let failure = &due[0].report.policies[0].failure_details[0];
    assert_eq!(failure.result_type, ResultType::CertificateNotTrusted);
    assert_eq!(failure.receiving_mx_hostname.as_deref(), Some(MX));
}

#[tokio::test]
async fn enforce_defers_when_starttls_is_stripped() {
    let world = StsWorld::start(enforce(&[MX])).await;
    let dns = world.dns(Some("1")).await;
    let cache = tempfile::tempdir().unwrap();
    let peer = ScriptedPeer::start(vec![Script::greet(MX, &["PIPELINING"]).quit()]).await;
    let t = world.transport(&dns, cache.path(), PolicyTable::new());
    let r = send(&t, peer.port()).await;
    assert_outcome(
        &r,
        false,
        "4.7.4",
        &[
            "does not offer STARTTLS",
            "MTA-STS policy of example.test (mode enforce)",
        ],
    );
    let logs = peer.finish().await;
    assert!(!logs[0].lines.iter().any(|l| l.starts_with("MAIL")));
    let due = world
        .reporter
        .take_due(world.clock.now() + Duration::from_secs(86400), &d(OUR_NAME));
    assert_eq!(
        due[0].report.policies[0].failure_details[0].result_type,
        ResultType::StartTlsNotSupported
    );
}

#[tokio::test]
async fn enforce_skips_an_mx_the_policy_does_not_list() {
    let world = StsWorld::start(enforce(&["mx2.example.test"])).await;
    let dns = world.dns_two_mx(Some("1")).await;
    let cache = tempfile::tempdir().unwrap();
    let tls = world
        .ca
        .server_config(&["mx2.example.test"], Validity::Current);
    // mx (127.0.0.1) would accept the mail in clear text; it must not even be asked.
    let unlisted = ScriptedPeer::start(vec![Script::greet(MX, &[]).accept_one(1).quit()]).await;
    let port = unlisted.port();
    let listed = ScriptedPeer::start_at(
        format!("127.0.0.2:{port}").parse().unwrap(),
        vec![starttls(&[]).accept_one(1).quit()],
        Some(tls),
    )
    .await;
    let t = world.transport(&dns, cache.path(), PolicyTable::new());
    assert_delivered(&send(&t, port).await);
    assert!(
        unlisted.finish().await.is_empty(),
        "the unlisted MX was contacted"
    );
    assert!(listed.finish().await[0].tls);
}

#[tokio::test]
async fn enforce_defers_when_no_mx_is_listed_and_says_which_rule() {
    let world = StsWorld::start(enforce(&["*.elsewhere.test"])).await;
    let dns = world.dns(Some("1")).await;
    let cache = tempfile::tempdir().unwrap();
    let peer = ScriptedPeer::start(vec![Script::greet(MX, &[]).accept_one(1).quit()]).await;
    let t = world.transport(&dns, cache.path(), PolicyTable::new());
    let r = send(&t, peer.port()).await;
    assert_deferred(
        &r,
        "4.7.5",
        "mx.example.test is not an MX host the MTA-STS policy of example.test allows (mode enforce; mx: *.elsewhere.test)",
    );
    assert!(peer.finish().await.is_empty());
}

#[tokio::test]
async fn testing_delivers_despite_a_bad_certificate_and_reports_it() {
    let world = StsWorld::start(policy(&policy_text("testing", &[MX], 86400))).await;
    let dns = world.dns(Some("1")).await;
    let cache = tempfile::tempdir().unwrap();
    let mitm = TestCa::new("attacker").server_config(&[MX], Validity::Current);
    let peer =
        ScriptedPeer::start_with_tls(vec![starttls(&[]).accept_one(1).quit()], Some(mitm)).await;
    let t = world.transport(&dns, cache.path(), PolicyTable::new());
    assert_delivered(&send(&t, peer.port()).await);
    assert!(peer.finish().await[0].tls);
    let due = world
        .reporter
        .take_due(world.clock.now() + Duration::from_secs(86400), &d(OUR_NAME));
    let p = &due[0].report.policies[0];
    assert_eq!(p.summary.total_failure, 1);
    assert_eq!(
        p.failure_details[0].result_type,
        ResultType::CertificateNotTrusted
    );
}

#[tokio::test]
async fn mode_none_and_no_policy_leave_delivery_opportunistic() {
    for answer in [Some(policy(&policy_text("none", &[], 86400))), None] {
        let world = StsWorld::start(answer.clone().unwrap_or_else(|| enforce(&[MX]))).await;
        // Without a TXT record the (enforcing) policy file is never fetched.
        let dns = world.dns(answer.as_ref().map(|_| "1")).await;
        let cache = tempfile::tempdir().unwrap();
        let peer = ScriptedPeer::start(vec![Script::greet(MX, &[]).accept_one(1).quit()]).await;
        let t = world.transport(&dns, cache.path(), PolicyTable::new());
        assert_delivered(&send(&t, peer.port()).await);
        assert!(!peer.finish().await[0].tls);
        assert_eq!(world.policy.requests(), usize::from(answer.is_some()));
    }
}

#[tokio::test]
async fn an_expired_policy_is_kept_while_the_policy_host_is_down_even_after_a_restart() {
    let mut world = StsWorld::start(enforce(&[MX])).await;
    let dns = world.dns(Some("1")).await;
    let cache = tempfile::tempdir().unwrap();
    let resolver = resolver(&dns);
    let first = world.mta_sts(&resolver, cache.path());
    assert!(matches!(
        first.lookup(&d(DOMAIN)).await,
        StsLookup::Policy { stale: None, .. }
    ));
    world.policy.stop().await;
    world.clock.advance(Duration::from_secs(2 * 86400));
    // A new MtaSts on the same directory is a restarted MTA.
    let restarted = world.mta_sts(&resolver, cache.path());
    match restarted.lookup(&d(DOMAIN)).await {
        StsLookup::Policy { cached, stale } => {
            assert_eq!(cached.policy.mx_list(), MX);
            assert!(stale.unwrap().contains("could not be refreshed"));
        }
        other => panic!("expected the cached policy, got {other:?}"),
    }
    // And delivery still enforces it: a stripped STARTTLS defers.
    let peer = ScriptedPeer::start(vec![Script::greet(MX, &[]).quit()]).await;
    let t = world.transport(&dns, cache.path(), PolicyTable::new());
    assert_outcome(
        &send(&t, peer.port()).await,
        false,
        "4.7.4",
        &["does not offer STARTTLS", "MTA-STS policy of example.test"],
    );
    peer.finish().await;
}

#[tokio::test]
async fn a_new_txt_id_fetches_the_policy_again() {
    let world = StsWorld::start(enforce(&[MX])).await;
    let cache = tempfile::tempdir().unwrap();
    let before = world.dns(Some("1")).await;
    let sts = world.mta_sts(&resolver(&before), cache.path());
    sts.lookup(&d(DOMAIN)).await;
    sts.lookup(&d(DOMAIN)).await;
    assert_eq!(
        world.policy.requests(),
        1,
        "an unchanged id is served from the cache"
    );
    world
        .policy
        .set(policy(&policy_text("testing", &[MX], 86400)));
    let after = world.dns(Some("2")).await;
    let sts = world.mta_sts(&resolver(&after), cache.path());
    match sts.lookup(&d(DOMAIN)).await {
        StsLookup::Policy { cached, .. } => {
            assert_eq!(cached.id, "2");
            assert_eq!(cached.policy.mode, postrider::tls_policy::StsMode::Testing);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(world.policy.requests(), 2);
}

#[tokio::test]
async fn a_policy_that_cannot_be_fetched_is_reported_and_mail_goes_as_usual() {
    let world = StsWorld::start(PolicyAnswer {
        status: 404,
        content_type: "text/html".into(),
        body: "not here".into(),
    })
    .await;
    let dns = world.dns(Some("1")).await;
    let cache = tempfile::tempdir().unwrap();
    let peer = ScriptedPeer::start(vec![Script::greet(MX, &[]).accept_one(1).quit()]).await;
    let t = world.transport(&dns, cache.path(), PolicyTable::new());
    assert_delivered(&send(&t, peer.port()).await);
    peer.finish().await;
    let due = world
        .reporter
        .take_due(world.clock.now() + Duration::from_secs(86400), &d(OUR_NAME));
    assert_eq!(
        due[0].report.policies[0].failure_details[0].result_type,
        ResultType::StsPolicyFetchError
    );
}

#[tokio::test]
async fn a_policy_file_line_for_the_hop_wins_over_mta_sts() {
    let world = StsWorld::start(enforce(&[MX])).await;
    let dns = world.dns(Some("1")).await;
    let cache = tempfile::tempdir().unwrap();
    let peer =
        ScriptedPeer::start(vec![Script::greet(MX, &["STARTTLS"]).accept_one(1).quit()]).await;
    let table = policy_for(&mx_hop(peer.port()), tls_policy(TlsLevel::None));
    let t = world.transport(&dns, cache.path(), table);
    assert_delivered(&send(&t, peer.port()).await);
    assert!(!peer.finish().await[0].tls);
    assert_eq!(world.policy.requests(), 0, "not even looked up");
}

#[tokio::test]
async fn requiretls_goes_only_to_an_authenticated_server_that_announces_it() {
    let world = StsWorld::start(enforce(&[MX])).await;
    let dns = world.dns(Some("1")).await;
    let cache = tempfile::tempdir().unwrap();
    let tls = || Some(world.ca.server_config(&[MX], Validity::Current));
    // Announced: MAIL FROM carries REQUIRETLS.
    let peer =
        ScriptedPeer::start_with_tls(vec![starttls(&["REQUIRETLS"]).accept_one(1).quit()], tls())
            .await;
    let t = world.transport(&dns, cache.path(), PolicyTable::new());
    assert_delivered(&send_envelope(&t, peer.port(), true).await);
    let logs = peer.finish().await;
    assert!(
        logs[0]
            .lines
            .iter()
            .any(|l| l.starts_with("MAIL FROM:<pbx@example.com>") && l.ends_with(" REQUIRETLS")),
        "{:#?}",
        logs[0].lines
    );
    // Not announced: returned with 5.7.30, never sent.
    let peer = ScriptedPeer::start_with_tls(vec![starttls(&[]).quit()], tls()).await;
    let r = send_envelope(&t, peer.port(), true).await;
    assert_outcome(&r, true, "5.7.30", &["does not announce REQUIRETLS"]);
    assert!(
        !peer.finish().await[0]
            .lines
            .iter()
            .any(|l| l.starts_with("MAIL"))
    );
}

#[tokio::test]
async fn requiretls_refused_by_the_first_mx_goes_to_the_second_that_announces_it() {
    let world = StsWorld::start(enforce(&[MX, "mx2.example.test"])).await;
    let dns = world.dns_two_mx(Some("1")).await;
    let cache = tempfile::tempdir().unwrap();
    // Both authenticated (MTA-STS enforce, certificates for their names); only mx2 (127.0.0.2)
    // announces REQUIRETLS.
    let first = ScriptedPeer::start_with_tls(
        vec![starttls(&[]).quit()],
        Some(world.ca.server_config(&[MX], Validity::Current)),
    )
    .await;
    let port = first.port();
    let second = ScriptedPeer::start_at(
        format!("127.0.0.2:{port}").parse().unwrap(),
        vec![
            Script::greet("mx2.example.test", &["PIPELINING", "STARTTLS"])
                .on("STARTTLS", "220 2.0.0 Ready to start TLS")
                .starttls()
                .on("EHLO ", &ehlo_reply("mx2.example.test", &["REQUIRETLS"]))
                .accept_one(1)
                .quit(),
        ],
        Some(
            world
                .ca
                .server_config(&["mx2.example.test"], Validity::Current),
        ),
    )
    .await;
    let t = world.transport(&dns, cache.path(), PolicyTable::new());
    let r = send_envelope(&t, port, true).await;
    assert_delivered(&r);
    assert_eq!(
        r.remote
            .as_ref()
            .and_then(|h| h.addr)
            .map(|a| a.to_string()),
        Some("127.0.0.2".to_string()),
        "{r:#?}"
    );
    assert!(
        !first.finish().await[0]
            .lines
            .iter()
            .any(|l| l.starts_with("MAIL")),
        "nothing was sent to the MX without REQUIRETLS"
    );
    assert!(
        second.finish().await[0]
            .lines
            .iter()
            .any(|l| l.starts_with("MAIL FROM:<pbx@example.com>") && l.ends_with(" REQUIRETLS"))
    );
}

#[tokio::test]
async fn requiretls_without_an_authenticating_policy_is_returned() {
    let world = StsWorld::start(enforce(&[MX])).await;
    let dns = world.dns(None).await; // no MTA-STS record: opportunistic TLS only
    let cache = tempfile::tempdir().unwrap();
    let tls = world.ca.server_config(&[MX], Validity::Current);
    let peer =
        ScriptedPeer::start_with_tls(vec![starttls(&["REQUIRETLS"]).quit()], Some(tls)).await;
    let t = world.transport(&dns, cache.path(), PolicyTable::new());
    assert_outcome(
        &send_envelope(&t, peer.port(), true).await,
        true,
        "5.7.10",
        &[
            "REQUIRETLS",
            "is not one (no DANE or MTA-STS enforce policy",
        ],
    );
    assert!(
        !peer.finish().await[0]
            .lines
            .iter()
            .any(|l| l.starts_with("MAIL"))
    );
}

#[tokio::test]
async fn explain_says_which_rule_applies_and_why() {
    let world = StsWorld::start(enforce(&[MX])).await;
    let dns = world.dns(Some("7")).await;
    let cache = tempfile::tempdir().unwrap();
    let resolver = resolver(&dns);
    let outbound = world.outbound(&resolver, cache.path());
    let e = explain(&d(DOMAIN), &PolicyTable::new(), Some(&outbound), &resolver).await;
    let text = e.to_string();
    assert!(
        text.starts_with("example.test: TLS as the domain publishes it"),
        "{text}"
    );
    assert!(
        text.contains("MTA-STS: mode enforce (id 7, mx: mx.example.test)"),
        "{text}"
    );
    assert!(
        text.contains("MX mx.example.test: MTA-STS enforce: TLS required"),
        "{text}"
    );
    let mut pinned = PolicyTable::new();
    pinned.insert(
        &postrider::NextHop::mx(d(DOMAIN), None),
        tls_policy(TlsLevel::Verify),
    );
    let e = explain(&d(DOMAIN), &pinned, Some(&outbound), &resolver).await;
    assert_eq!(
        e.to_string(),
        "example.test: TLS verify, pinned by the policy file (discovered policies are not consulted)"
    );
}
