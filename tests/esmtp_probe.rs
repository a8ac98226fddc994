//! `EsmtpTransport::probe`: the delivery's session setup, then QUIT, against a scripted peer
//! with real TLS (rcgen); no mail is sent, the password never appears in the report.

mod support;
use support::esmtp;
use support::smtp_peer;

use esmtp::*;
use postrider::resolve::StaticResolver;
use postrider::route::{Credentials, HopPolicy, TlsLevel};
use postrider::transport::esmtp::{
    AuthProbe, CertificateProbe, EsmtpTransport, ProbeReport, TlsProbe,
};
use postrider::{Mailer, NextHop};
use smtp_peer::{Script, ScriptedPeer, TestCa, Validity, ehlo_reply};

const USER: &str = "pbx@example.com";
const SECRET: &str = "s3cret-app-password";

fn relay_script(auth_reply: &str) -> Script {
    Script::greet("relay.test", &["STARTTLS"])
        .on("STARTTLS", "220 2.0.0 go ahead")
        .starttls()
        .on(
            "EHLO ",
            &ehlo_reply("relay.test", &["AUTH LOGIN PLAIN", "SIZE 1000"]),
        )
        .on("AUTH PLAIN ", auth_reply)
        .quit()
}

fn probing(
    ca: Option<&TestCa>,
    hop: &NextHop,
    level: TlsLevel,
    resolver: StaticResolver,
) -> EsmtpTransport {
    let mut cfg = config();
    if let Some(ca) = ca {
        cfg.add_trust_anchor(ca.cert.clone()).unwrap();
    }
    let policy = HopPolicy {
        tls: level,
        credentials: Some(Credentials::new(USER, SECRET)),
        ..HopPolicy::default()
    };
    transport(cfg, resolver, policy_for(hop, policy))
}

fn relay_resolver() -> StaticResolver {
    StaticResolver::new().with_host(d("relay.test"), LOCALHOST)
}

fn assert_no_secret(report: &ProbeReport) {
    let shown = format!("{report:?}");
    assert!(!shown.contains(SECRET), "{shown}");
}

#[tokio::test]
async fn a_probe_runs_the_setup_reports_each_step_and_quits_without_mail() {
    let ca = TestCa::new("test CA");
    let peer = ScriptedPeer::start_with_tls(
        vec![relay_script("235 2.7.0 Authentication successful")],
        Some(ca.server_config(&["relay.test"], Validity::Current)),
    )
    .await;
    let hop = named_hop("relay.test", peer.port());
    let t = probing(Some(&ca), &hop, TlsLevel::Encrypt, relay_resolver());
    let r = t.probe(Mailer::Relay, &hop).await;
    assert!(r.is_ready(), "{r:#?}");
    assert_eq!(
        r.server.as_deref(),
        Some(format!("relay.test [127.0.0.1]:{}", peer.port()).as_str())
    );
    assert_eq!(r.local, Some(LOCALHOST));
    assert_eq!(
        r.greeting.as_ref().unwrap().one_line(),
        "220 relay.test ESMTP scripted"
    );
    assert_eq!(r.capabilities.as_ref().unwrap().auth, ["LOGIN", "PLAIN"]);
    assert!(
        matches!(&r.tls, TlsProbe::Up { certificate: CertificateProbe::Valid, protocol: Some(p) } if p == "TLS 1.3"),
        "{:?}",
        r.tls
    );
    assert_eq!(r.auth, AuthProbe::Accepted { mechanism: "PLAIN" });
    assert_eq!(r.user.as_deref(), Some(USER));
    assert_no_secret(&r);
    let logs = peer.finish().await;
    assert_eq!(logs[0].error, None, "{:#?}", logs[0]);
    assert_eq!(logs[0].lines.last().unwrap(), "QUIT");
    assert!(logs[0].messages.is_empty());
}

#[tokio::test]
async fn a_refused_password_is_reported_with_the_transports_words() {
    let ca = TestCa::new("test CA");
    let peer = ScriptedPeer::start_with_tls(
        vec![relay_script("535 5.7.8 Username and Password not accepted")],
        Some(ca.server_config(&["relay.test"], Validity::Current)),
    )
    .await;
    let hop = named_hop("relay.test", peer.port());
    let t = probing(Some(&ca), &hop, TlsLevel::Verify, relay_resolver());
    let r = t.probe(Mailer::Relay, &hop).await;
    assert!(
        matches!(&r.auth, AuthProbe::Refused { reply } if reply.code() == 535),
        "{:?}",
        r.auth
    );
    assert_eq!(
        r.failure.as_ref().unwrap().text,
        format!(
            "authentication failed at relay.test:{} for {USER}: 535 5.7.8 Username and \
             Password not accepted; check the credentials for this next hop (the mail stays \
             queued)",
            peer.port()
        )
    );
    assert_no_secret(&r);
    assert_eq!(peer.finish().await[0].error, None);
}

#[tokio::test]
async fn under_encrypt_an_expired_certificate_is_reported_but_the_session_goes_on() {
    let ca = TestCa::new("test CA");
    let peer = ScriptedPeer::start_with_tls(
        vec![relay_script("235 2.7.0 ok")],
        Some(ca.server_config(&["relay.test"], Validity::Expired)),
    )
    .await;
    let hop = named_hop("relay.test", peer.port());
    let t = probing(Some(&ca), &hop, TlsLevel::Encrypt, relay_resolver());
    let r = t.probe(Mailer::Relay, &hop).await;
    assert!(r.is_ready(), "{r:#?}");
    match &r.tls {
        TlsProbe::Up {
            certificate: CertificateProbe::Invalid { reason },
            ..
        } => assert_eq!(reason, "the server's certificate has expired"),
        other => panic!("{other:?}"),
    }
    assert_eq!(peer.finish().await[0].error, None);
}

#[tokio::test]
async fn under_verify_an_untrusted_certificate_stops_the_probe_at_the_handshake() {
    let ca = TestCa::new("untrusted CA");
    let peer = ScriptedPeer::start_with_tls(
        vec![relay_script("235 2.7.0 ok")],
        Some(ca.server_config(&["relay.test"], Validity::Current)),
    )
    .await;
    let hop = named_hop("relay.test", peer.port());
    let t = probing(None, &hop, TlsLevel::Verify, relay_resolver());
    let r = t.probe(Mailer::Relay, &hop).await;
    assert!(
        matches!(&r.tls, TlsProbe::Failed { reason } if reason.contains("unknown issuer")),
        "{:?}",
        r.tls
    );
    assert_eq!(r.auth, AuthProbe::NotTried);
    assert_eq!(r.failure.as_ref().unwrap().status.to_string(), "4.7.5");
    peer.finish().await;
}

#[tokio::test]
async fn an_address_that_does_not_answer_is_listed_and_the_next_one_probed() {
    let peer = ScriptedPeer::start(vec![Script::greet("relay.test", &["PIPELINING"]).quit()]).await;
    let hop = named_hop("relay.test", peer.port());
    // 127.0.0.2 has nothing on the peer's port: refused, then 127.0.0.1 answers.
    let resolver = StaticResolver::new()
        .with_host(d("relay.test"), "127.0.0.2".parse().unwrap())
        .with_host(d("relay.test"), LOCALHOST);
    let t = transport(
        config(),
        resolver,
        policy_for(&hop, tls_policy(TlsLevel::May)),
    );
    let r = t.probe(Mailer::Relay, &hop).await;
    assert_eq!(r.unreachable.len(), 1, "{r:#?}");
    assert_eq!(
        r.unreachable[0].text,
        format!(
            "connection refused by relay.test [127.0.0.2]:{}",
            peer.port()
        )
    );
    assert!(r.is_ready(), "{r:#?}");
    assert_eq!(r.tls, TlsProbe::NotOffered);
    assert_eq!(r.auth, AuthProbe::NotConfigured);
    assert_eq!(peer.finish().await[0].error, None);
}
