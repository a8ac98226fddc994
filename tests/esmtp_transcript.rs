//! The SMTP conversation log (`postrider::smtp` at debug level) shows every command and reply
//! and never an AUTH secret.
//!
//! Alone in its own test binary: `tracing` caches per call site whether anyone listens, so a
//! capture installed with `set_default` while other tests run in the same process can miss
//! events.

mod support;
use support::esmtp;
use support::smtp_peer;

use std::io::Write;
use std::sync::{Arc, Mutex};

use esmtp::*;
use postrider::Mailer;
use postrider::resolve::StaticResolver;
use postrider::route::{Credentials, HopPolicy, TlsLevel};
use postrider::transport::esmtp::TRANSCRIPT_TARGET;
use smtp_peer::{Script, ScriptedPeer, TestCa, Validity, ehlo_reply};

const USER: &str = "pbx@example.com";
const SECRET: &str = "s3cret-app-password";

/// Collects `tracing` output (current-thread runtime: every task logs here).
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
async fn the_transcript_shows_the_dialogue_and_redacts_auth_secrets() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(format!("{TRANSCRIPT_TARGET}=debug"))
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let ca = TestCa::new("test CA");
    let tls = ca.server_config(&["mx.test"], Validity::Current);
    let login_user = base64_encode(USER.as_bytes());
    let login_pass = base64_encode(SECRET.as_bytes());
    let plain = base64_encode(format!("\0{USER}\0{SECRET}").as_bytes());
    let peer = ScriptedPeer::start_with_tls(
        vec![
            Script::greet("mx.test", &["STARTTLS"])
                .on("STARTTLS", "220 2.0.0 go ahead")
                .starttls()
                .on("EHLO", &ehlo_reply("mx.test", &["AUTH PLAIN"]))
                .on("AUTH PLAIN", "535 5.7.8 Username and Password not accepted")
                .quit(),
            Script::greet("mx.test", &["STARTTLS"])
                .on("STARTTLS", "220 2.0.0 go ahead")
                .starttls()
                .on("EHLO", &ehlo_reply("mx.test", &["AUTH LOGIN"]))
                .on("AUTH LOGIN", "334 VXNlcm5hbWU6")
                .on(&login_user, "334 UGFzc3dvcmQ6")
                .on(&login_pass, "235 2.7.0 Accepted")
                .accept_one(1)
                .quit(),
        ],
        Some(tls),
    )
    .await;
    let mut cfg = config();
    cfg.add_trust_anchor(ca.cert.clone()).unwrap();
    let hop = named_hop("mx.test", peer.port());
    let t = transport(
        cfg,
        StaticResolver::new().with_host(d("mx.test"), LOCALHOST),
        policy_for(
            &hop,
            HopPolicy {
                tls: TlsLevel::Encrypt,
                credentials: Some(Credentials::new(USER, SECRET)),
                ..HopPolicy::default()
            },
        ),
    );
    let route = named_route(Mailer::Esmtp, "mx.test", peer.port());
    let m = message(&["alice@example.org"], &body("transcript"));
    let refused = t.deliver_all(&route, std::slice::from_ref(&m)).await;
    assert!(matches!(
        report(&refused, &m, 0).outcome,
        postrider::Outcome::Deferred(_)
    ));
    let delivered = t.deliver_all(&route, std::slice::from_ref(&m)).await;
    assert_delivered(report(&delivered, &m, 0));
    assert!(peer.finish().await.iter().all(|l| l.error.is_none()));

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    for expected in [
        "<<< 220 mx.test ESMTP scripted",
        &format!(">>> EHLO {OUR_NAME}"),
        ">>> STARTTLS",
        "TLS established",
        ">>> AUTH PLAIN <redacted>",
        "<<< 535 5.7.8 Username and Password not accepted",
        ">>> AUTH LOGIN",
        &format!(">>> {login_user}"),
        ">>> <redacted>",
        "<<< 235 2.7.0 Accepted",
        ">>> MAIL FROM:<pbx@example.com>",
        ">>> <message data: ",
        ">>> QUIT",
    ] {
        assert!(log.contains(expected), "missing {expected:?} in\n{log}");
    }
    assert!(log.contains("peer=mx.test [127.0.0.1]:"), "{log}");
    for secret in [SECRET, &plain, &login_pass] {
        assert!(!log.contains(secret), "{secret:?} leaked into\n{log}");
    }
}

/// What a client sends in base64, as the SASL mechanisms encode it.
fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
