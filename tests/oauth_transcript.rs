//! The SMTP transcript (`postrider::smtp` at debug level) and every other log line never show
//! an OAuth2 access token, nor the refresh token or client secret sent to the token endpoint:
//! AUTH appears as `AUTH XOAUTH2 <redacted>`.
//!
//! Alone in its own test binary, for the reason given in `esmtp_transcript.rs`.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use postrider::Mailer;
use postrider::oauth2::{OAuth2Mechanism, TokenSpec};
use postrider::resolve::StaticResolver;
use support::esmtp::*;
use support::oauth::{GMAIL_CHALLENGE, policy, starttls_offering};
use support::smtp_peer::{ScriptedPeer, TestCa, Validity};
use support::token_endpoint::{TokenEndpoint, credentials_file, token};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_token_or_secret_reaches_the_log() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("trace")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let ca = TestCa::new("test CA");
    let endpoint = TokenEndpoint::start(
        &ca,
        vec![
            token("ya29.FIRST-ACCESS", 3599),
            token("ya29.SECOND-ACCESS", 3599),
        ],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let creds = credentials_file(dir.path(), &endpoint.url(), "1//REFRESH-SECRET");
    let peer = ScriptedPeer::start_with_tls(
        vec![
            starttls_offering("smtp.test", "AUTH XOAUTH2")
                .on("AUTH XOAUTH2 ", GMAIL_CHALLENGE)
                .on("", "535 5.7.8 Username and Password not accepted")
                .on("AUTH XOAUTH2 ", "235 2.7.0 Accepted")
                .accept_one(1)
                .quit(),
        ],
        Some(ca.server_config(&["smtp.test"], Validity::Current)),
    )
    .await;
    let mut cfg = config();
    cfg.add_trust_anchor(ca.cert.clone()).unwrap();
    let t = transport(
        cfg,
        StaticResolver::new().with_host(d("smtp.test"), LOCALHOST),
        policy_for(
            &named_hop("smtp.test", peer.port()),
            policy(OAuth2Mechanism::XOAuth2, TokenSpec::Refresh(creds)),
        ),
    );
    let m = message(&["alice@example.org"], &body("log"));
    let reports = t
        .deliver_all(
            &named_route(Mailer::Esmtp, "smtp.test", peer.port()),
            std::slice::from_ref(&m),
        )
        .await;
    assert_delivered(&reports[0]);
    assert_eq!(peer.finish().await[0].error, None);

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert_eq!(
        log.matches(">>> AUTH XOAUTH2 <redacted>").count(),
        2,
        "{log}"
    );
    for secret in [
        "FIRST-ACCESS",
        "SECOND-ACCESS",
        "REFRESH-SECRET",
        "client-secret-1",
    ] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
    // Base64 of the XOAUTH2 string would hide the token from a plain search.
    assert!(
        !log.contains("dXNlcj1"),
        "an XOAUTH2 response in the log:\n{log}"
    );
}
