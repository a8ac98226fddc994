//! EsmtpTransport's TLS levels, implicit TLS, and AUTH against a scripted peer with real TLS
//! (certificates made by rcgen at test time).

mod support;
use support::esmtp;
use support::smtp_peer;

use std::sync::Arc;

use esmtp::*;
use postrider::resolve::StaticResolver;
use postrider::route::{Credentials, HopPolicy, TlsLevel};
use postrider::transport::esmtp::EsmtpTransport;
use postrider::{Mailer, Route};
use smtp_peer::{Script, ScriptedPeer, TestCa, Validity, ehlo_reply};

const USER: &str = "pbx@example.com";
const SECRET: &str = "s3cret-app-password";

fn resolver() -> StaticResolver {
    StaticResolver::new().with_host(d("mx.test"), LOCALHOST)
}

/// A transport trusting `ca`, with `policy` for `[mx.test]:port`.
fn tls_transport(ca: &TestCa, port: u16, policy: HopPolicy) -> EsmtpTransport {
    let mut cfg = config();
    cfg.add_trust_anchor(ca.cert.clone()).unwrap();
    transport(
        cfg,
        resolver(),
        policy_for(&named_hop("mx.test", port), policy),
    )
}

fn peer_name(port: u16) -> String {
    format!("mx.test [127.0.0.1]:{port}")
}

/// Greeting, EHLO offering STARTTLS, STARTTLS, handshake, EHLO again with `after_tls`.
fn starttls_script(after_tls: &[&str]) -> Script {
    Script::greet("mx.test", &["PIPELINING", "STARTTLS"])
        .on("STARTTLS", "220 2.0.0 Ready to start TLS")
        .starttls()
        .on("EHLO ", &ehlo_reply("mx.test", after_tls))
}

async fn one(t: &EsmtpTransport, route: &Route) -> postrider::RecipientReport {
    let m = message(&["alice@example.org"], &body("tls"));
    let reports = t.deliver_all(route, std::slice::from_ref(&m)).await;
    assert_complete(&reports, std::slice::from_ref(&m));
    report(&reports, &m, 0).clone()
}

#[tokio::test]
async fn may_upgrades_with_starttls_and_says_ehlo_again() {
    let ca = TestCa::new("test CA");
    let tls = ca.server_config(&["mx.test"], Validity::Current);
    let peer =
        ScriptedPeer::start_with_tls(vec![starttls_script(&[]).accept_one(1).quit()], Some(tls))
            .await;
    let t = tls_transport(&ca, peer.port(), tls_policy(TlsLevel::May));
    let r = one(&t, &named_route(Mailer::Esmtp, "mx.test", peer.port())).await;
    assert_delivered(&r);
    assert_eq!(r.remote.unwrap().to_string(), "mx.test. [127.0.0.1]");
    let logs = peer.finish().await;
    assert_eq!(logs[0].error, None, "{:#?}", logs[0]);
    assert!(logs[0].tls);
    assert_eq!(
        logs[0].lines[..3],
        [
            format!("EHLO {OUR_NAME}"),
            "STARTTLS".into(),
            format!("EHLO {OUR_NAME}")
        ]
    );
}

#[tokio::test]
async fn may_delivers_in_clear_text_when_starttls_is_not_offered() {
    let ca = TestCa::new("test CA");
    let peer = ScriptedPeer::start(vec![
        Script::greet("mx.test", &["PIPELINING"])
            .accept_one(1)
            .quit(),
    ])
    .await;
    let t = tls_transport(&ca, peer.port(), tls_policy(TlsLevel::May));
    assert_delivered(&one(&t, &named_route(Mailer::Esmtp, "mx.test", peer.port())).await);
    assert!(!peer.finish().await[0].tls);
}

#[tokio::test]
async fn none_never_starts_tls_even_when_offered() {
    let ca = TestCa::new("test CA");
    let peer = ScriptedPeer::start(vec![
        Script::greet("mx.test", &["STARTTLS"]).accept_one(1).quit(),
    ])
    .await;
    let t = tls_transport(&ca, peer.port(), tls_policy(TlsLevel::None));
    assert_delivered(&one(&t, &named_route(Mailer::Esmtp, "mx.test", peer.port())).await);
    let logs = peer.finish().await;
    assert_eq!(logs[0].error, None, "{:#?}", logs[0]);
}

#[tokio::test]
async fn encrypt_defers_when_the_server_does_not_offer_starttls() {
    let ca = TestCa::new("test CA");
    let peer = ScriptedPeer::start(vec![Script::greet("mx.test", &["PIPELINING"]).quit()]).await;
    let t = tls_transport(&ca, peer.port(), tls_policy(TlsLevel::Encrypt));
    let r = one(&t, &named_route(Mailer::Esmtp, "mx.test", peer.port())).await;
    assert_deferred(
        &r,
        "4.7.4",
        &format!(
            "TLS is required (policy encrypt) but {} does not offer STARTTLS",
            peer_name(peer.port())
        ),
    );
    assert_eq!(peer.finish().await[0].error, None);
}

#[tokio::test]
async fn encrypt_defers_when_starttls_is_refused() {
    let ca = TestCa::new("test CA");
    let peer = ScriptedPeer::start(vec![
        Script::greet("mx.test", &["STARTTLS"])
            .on(
                "STARTTLS",
                "454 4.7.0 TLS not available due to local problem",
            )
            .quit(),
    ])
    .await;
    let t = tls_transport(&ca, peer.port(), tls_policy(TlsLevel::Encrypt));
    let r = one(&t, &named_route(Mailer::Esmtp, "mx.test", peer.port())).await;
    assert_deferred(
        &r,
        "4.7.4",
        &format!(
            "TLS is required (policy encrypt) but {} refused STARTTLS: \
             454 4.7.0 TLS not available due to local problem",
            peer_name(peer.port())
        ),
    );
    peer.finish().await;
}

#[tokio::test]
async fn encrypt_accepts_a_certificate_nobody_vouches_for() {
    let trusted = TestCa::new("trusted CA");
    let stranger = TestCa::new("unknown CA");
    let tls = stranger.server_config(&["somewhere.else"], Validity::Expired);
    let peer =
        ScriptedPeer::start_with_tls(vec![starttls_script(&[]).accept_one(1).quit()], Some(tls))
            .await;
    let t = tls_transport(&trusted, peer.port(), tls_policy(TlsLevel::Encrypt));
    assert_delivered(&one(&t, &named_route(Mailer::Esmtp, "mx.test", peer.port())).await);
    assert!(peer.finish().await[0].tls);
}

#[tokio::test]
async fn verify_delivers_to_a_server_with_a_valid_certificate_for_its_name() {
    let ca = TestCa::new("test CA");
    let tls = ca.server_config(&["mx.test"], Validity::Current);
    let peer =
        ScriptedPeer::start_with_tls(vec![starttls_script(&[]).accept_one(1).quit()], Some(tls))
            .await;
    let t = tls_transport(&ca, peer.port(), tls_policy(TlsLevel::Verify));
    assert_delivered(&one(&t, &named_route(Mailer::Esmtp, "mx.test", peer.port())).await);
    assert!(peer.finish().await[0].tls);
}

#[tokio::test]
async fn verify_checks_an_address_literal_against_the_ip_san() {
    let ca = TestCa::new("test CA");
    let tls = ca.server_config(&["127.0.0.1"], Validity::Current);
    let peer =
        ScriptedPeer::start_with_tls(vec![starttls_script(&[]).accept_one(1).quit()], Some(tls))
            .await;
    let mut cfg = config();
    cfg.add_trust_anchor(ca.cert.clone()).unwrap();
    let hop = literal_hop(peer.port());
    let t = transport(
        cfg,
        StaticResolver::new(),
        policy_for(&hop, tls_policy(TlsLevel::Verify)),
    );
    assert_delivered(&one(&t, &literal_route(peer.port())).await);
    assert!(peer.finish().await[0].tls);
}

/// A `verify` delivery to a server presenting `tls`; returns the report.
async fn verify_against(
    trusted: &TestCa,
    tls: Arc<rustls::ServerConfig>,
) -> (postrider::RecipientReport, u16) {
    let peer = ScriptedPeer::start_with_tls(
        vec![
            Script::greet("mx.test", &["STARTTLS"])
                .on("STARTTLS", "220 2.0.0 go ahead")
                .starttls(),
        ],
        Some(tls),
    )
    .await;
    let t = tls_transport(trusted, peer.port(), tls_policy(TlsLevel::Verify));
    let r = one(&t, &named_route(Mailer::Esmtp, "mx.test", peer.port())).await;
    let port = peer.port();
    let logs = peer.finish().await;
    assert!(!logs[0].tls, "the handshake must not complete");
    (r, port)
}

#[tokio::test]
async fn verify_defers_with_the_reason_when_the_certificate_has_expired() {
    let ca = TestCa::new("test CA");
    let (r, port) = verify_against(&ca, ca.server_config(&["mx.test"], Validity::Expired)).await;
    assert_deferred(
        &r,
        "4.7.5",
        &format!(
            "TLS handshake with {} failed: the server's certificate has expired",
            peer_name(port)
        ),
    );
}

#[tokio::test]
async fn verify_defers_with_the_reason_when_the_issuer_is_unknown() {
    let trusted = TestCa::new("trusted CA");
    let stranger = TestCa::new("self-made CA");
    let (r, port) = verify_against(
        &trusted,
        stranger.server_config(&["mx.test"], Validity::Current),
    )
    .await;
    assert_deferred(
        &r,
        "4.7.5",
        &format!(
            "TLS handshake with {} failed: the server's certificate has an unknown issuer \
             (not signed by a trusted CA)",
            peer_name(port)
        ),
    );
}

#[tokio::test]
async fn verify_defers_with_the_reason_when_the_name_does_not_match() {
    let ca = TestCa::new("test CA");
    let (r, port) = verify_against(&ca, ca.server_config(&["other.test"], Validity::Current)).await;
    assert_deferred(
        &r,
        "4.7.5",
        &format!(
            "TLS handshake with {} failed: the server's certificate does not match the host \
             name mx.test (it names other.test)",
            peer_name(port)
        ),
    );
}

#[tokio::test]
async fn smtps_starts_tls_before_the_greeting() {
    let ca = TestCa::new("test CA");
    let tls = ca.server_config(&["mx.test"], Validity::Current);
    let peer = ScriptedPeer::start_with_tls(
        vec![
            Script::new()
                .starttls()
                .send("220 mx.test ESMTP over TLS")
                .on("EHLO", &ehlo_reply("mx.test", &["AUTH PLAIN"]))
                .accept_one(1)
                .quit(),
        ],
        Some(tls),
    )
    .await;
    let t = tls_transport(&ca, peer.port(), tls_policy(TlsLevel::Verify));
    assert_delivered(&one(&t, &named_route(Mailer::Smtps, "mx.test", peer.port())).await);
    let logs = peer.finish().await;
    assert_eq!(logs[0].error, None, "{:#?}", logs[0]);
    assert!(logs[0].tls);
    assert!(!logs[0].lines.iter().any(|l| l == "STARTTLS"));
}

fn with_credentials(tls: TlsLevel) -> HopPolicy {
    HopPolicy {
        tls,
        credentials: Some(Credentials::new(USER, SECRET)),
        ..HopPolicy::default()
    }
}

fn plain_ir() -> String {
    base64_encode(format!("\0{USER}\0{SECRET}").as_bytes())
}

#[tokio::test]
async fn auth_plain_is_sent_after_starttls() {
    let ca = TestCa::new("test CA");
    let tls = ca.server_config(&["mx.test"], Validity::Current);
    let peer = ScriptedPeer::start_with_tls(
        vec![
            starttls_script(&["AUTH LOGIN PLAIN"])
                .on(&format!("AUTH PLAIN {}", plain_ir()), "235 2.7.0 Accepted")
                .accept_one(1)
                .quit(),
        ],
        Some(tls),
    )
    .await;
    let t = tls_transport(&ca, peer.port(), with_credentials(TlsLevel::Encrypt));
    assert_delivered(&one(&t, &named_route(Mailer::Esmtp, "mx.test", peer.port())).await);
    let logs = peer.finish().await;
    assert_eq!(logs[0].error, None, "{:#?}", logs[0]);
}

#[tokio::test]
async fn auth_login_answers_the_username_and_password_prompts() {
    let ca = TestCa::new("test CA");
    let tls = ca.server_config(&["mx.test"], Validity::Current);
    let peer = ScriptedPeer::start_with_tls(
        vec![
            starttls_script(&["AUTH LOGIN"])
                .on("AUTH LOGIN", "334 VXNlcm5hbWU6")
                .on(&base64_encode(USER.as_bytes()), "334 UGFzc3dvcmQ6")
                .on(&base64_encode(SECRET.as_bytes()), "235 2.7.0 Accepted")
                .accept_one(1)
                .quit(),
        ],
        Some(tls),
    )
    .await;
    let t = tls_transport(&ca, peer.port(), with_credentials(TlsLevel::May));
    assert_delivered(&one(&t, &named_route(Mailer::Esmtp, "mx.test", peer.port())).await);
    assert_eq!(peer.finish().await[0].error, None);
}

#[tokio::test]
async fn a_535_defers_ends_the_route_and_names_server_and_user_but_not_the_secret() {
    let ca = TestCa::new("test CA");
    let tls = ca.server_config(&["mx.test"], Validity::Current);
    let peer = ScriptedPeer::start_with_tls(
        vec![
            starttls_script(&["AUTH PLAIN"])
                .on("AUTH PLAIN", "535 5.7.8 Username and Password not accepted")
                .quit(),
        ],
        Some(tls),
    )
    .await;
    // A fallback hop exists, but a refused password is final for the route.
    let fallback = ScriptedPeer::start(vec![Script::greet("fallback.test", &[]).drain()]).await;
    let t = tls_transport(&ca, peer.port(), with_credentials(TlsLevel::Encrypt));
    let route = Route::Relay {
        mailer: Mailer::Esmtp,
        hops: vec![
            named_hop("mx.test", peer.port()),
            literal_hop(fallback.port()),
        ],
    };
    let r = one(&t, &route).await;
    // Postfix's smtp_sasl_auth_soft_bounce: a wrong password is fixed on this side, so the
    // mail waits for the fix instead of bouncing.
    assert_deferred(
        &r,
        "4.7.8",
        &format!(
            "authentication failed at mx.test:{} for {USER}: \
             535 5.7.8 Username and Password not accepted; check the credentials for this \
             next hop (the mail stays queued)",
            peer.port()
        ),
    );
    assert!(
        fallback.finish().await.is_empty(),
        "the fallback hop was tried"
    );
    assert_eq!(peer.finish().await[0].error, None);
}

#[tokio::test]
async fn credentials_are_not_sent_over_clear_text_unless_the_policy_allows_it() {
    let ca = TestCa::new("test CA");
    let peer = ScriptedPeer::start(vec![
        Script::greet("mx.test", &["AUTH PLAIN"]).quit(),
        Script::greet("mx.test", &["AUTH PLAIN"])
            .on(&format!("AUTH PLAIN {}", plain_ir()), "235 2.7.0 ok")
            .accept_one(1)
            .quit(),
    ])
    .await;
    let t = tls_transport(&ca, peer.port(), with_credentials(TlsLevel::May));
    let r = one(&t, &named_route(Mailer::Esmtp, "mx.test", peer.port())).await;
    assert_deferred(
        &r,
        "4.7.10",
        &format!(
            "not sending the credentials for {USER} to mx.test:{port} over an unencrypted \
             connection ({} does not offer STARTTLS or the policy is \"none\"); use TLS, or \
             allow AUTH without TLS in the policy for this next hop",
            peer_name(peer.port()),
            port = peer.port()
        ),
    );
    let allowed = tls_transport(
        &ca,
        peer.port(),
        HopPolicy {
            auth_without_tls: true,
            ..with_credentials(TlsLevel::May)
        },
    );
    assert_delivered(
        &one(
            &allowed,
            &named_route(Mailer::Esmtp, "mx.test", peer.port()),
        )
        .await,
    );
    let logs = peer.finish().await;
    assert!(logs.iter().all(|l| l.error.is_none()), "{logs:#?}");
    assert!(!logs[0].lines.iter().any(|l| l.starts_with("AUTH")));
}

#[tokio::test]
async fn a_server_offering_only_unknown_mechanisms_is_reported() {
    let ca = TestCa::new("test CA");
    let tls = ca.server_config(&["mx.test"], Validity::Current);
    let peer = ScriptedPeer::start_with_tls(
        vec![starttls_script(&["AUTH CRAM-MD5 XOAUTH2"]).quit()],
        Some(tls),
    )
    .await;
    let t = tls_transport(&ca, peer.port(), with_credentials(TlsLevel::Encrypt));
    let r = one(&t, &named_route(Mailer::Esmtp, "mx.test", peer.port())).await;
    assert_deferred(
        &r,
        "4.7.4",
        &format!(
            "mx.test:{} offers AUTH CRAM-MD5 XOAUTH2, none of which postrider speaks (PLAIN, LOGIN)",
            peer.port()
        ),
    );
    peer.finish().await;
}

#[test]
fn trust_anchors_from_pem_are_counted_and_garbage_is_refused() {
    let ca = TestCa::new("pem CA");
    let pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        base64_encode(&ca.cert)
    );
    let mut cfg = config();
    let before = cfg.tls_roots.len();
    assert_eq!(
        cfg.add_trust_anchors_pem(pem.as_bytes(), "ca.pem").unwrap(),
        1
    );
    assert_eq!(cfg.tls_roots.len(), before + 1);
    let err = cfg
        .add_trust_anchors_pem(b"not a certificate", "junk.pem")
        .unwrap_err();
    assert!(err.to_string().contains("junk.pem"), "{err}");
}

/// What a client sends in base64, as the SASL mechanisms encode it.
fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
