//! OAuth2 AUTH against scripted SMTP peers: policies, the server side of the exchange, and
//! reading back the SASL strings the client sent.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use postrider::oauth2::{OAuth2Mechanism, OAuth2Policy, TokenSpec};
use postrider::route::{HopPolicy, TlsLevel};

use postrider::Mailer;
use postrider::resolve::StaticResolver;
use postrider::transport::esmtp::EsmtpTransport;

use super::esmtp::{
    DeliverAll, LOCALHOST, assert_complete, body, config, d, message, named_hop, named_route,
    policy_for, report, transport,
};
use super::smtp_peer::{Script, ScriptedPeer, TestCa, Validity, ehlo_reply};

/// The account the tests authenticate as.
pub const USER: &str = "voicemail@ourtest.com";

/// Gmail's error challenge: `{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}`.
pub const GMAIL_CHALLENGE: &str = "334 eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIiwic2NvcGUiOiJodHRwczovL21haWwuZ29vZ2xlLmNvbS8ifQ==";

/// `encrypt`, OAuth2 with `mechanism` for [`USER`], tokens from `token`.
pub fn policy(mechanism: OAuth2Mechanism, token: TokenSpec) -> HopPolicy {
    HopPolicy {
        tls: TlsLevel::Encrypt,
        oauth2: Some(OAuth2Policy {
            mechanism,
            user: USER.to_string(),
            token,
            defined_at: None,
        }),
        ..HopPolicy::default()
    }
}

/// Greeting, EHLO with STARTTLS, the handshake, EHLO again offering `auth` (`AUTH XOAUTH2`).
pub fn starttls_offering(name: &str, auth: &str) -> Script {
    Script::greet(name, &["PIPELINING", "STARTTLS"])
        .on("STARTTLS", "220 2.0.0 Ready to start TLS")
        .starttls()
        .on("EHLO ", &ehlo_reply(name, &["PIPELINING", auth]))
}

/// The decoded SASL response of an `AUTH MECHANISM RESPONSE` line.
pub fn sasl(line: &str) -> String {
    let b64 = line
        .split_whitespace()
        .nth(2)
        .unwrap_or_else(|| panic!("no initial response in {line:?}"));
    String::from_utf8(STANDARD.decode(b64).expect("base64")).expect("UTF-8")
}

/// What XOAUTH2 should carry for `token`.
pub fn xoauth2(token: &str) -> String {
    format!("user={USER}\x01auth=Bearer {token}\x01\x01")
}

/// A scripted peer for `smtp.test` with TLS from `ca`, playing `scripts` in turn.
pub async fn tls_peer(ca: &TestCa, scripts: Vec<Script>) -> ScriptedPeer {
    ScriptedPeer::start_with_tls(
        scripts,
        Some(ca.server_config(&["smtp.test"], Validity::Current)),
    )
    .await
}

/// The transport under test: `smtp.test` on loopback `port`, trusting `ca`, with policy `p`.
pub fn transport_for(ca: &TestCa, port: u16, p: HopPolicy) -> EsmtpTransport {
    let mut cfg = config();
    cfg.add_trust_anchor(ca.cert.clone()).unwrap();
    transport(
        cfg,
        StaticResolver::new().with_host(d("smtp.test"), LOCALHOST),
        policy_for(&named_hop("smtp.test", port), p),
    )
}

/// Delivers one message to alice@example.org through `smtp.test` on `port`; its report.
pub async fn one(t: &EsmtpTransport, port: u16) -> postrider::RecipientReport {
    let m = message(&["alice@example.org"], &body("oauth"));
    let reports = t
        .deliver_all(
            &named_route(Mailer::Esmtp, "smtp.test", port),
            std::slice::from_ref(&m),
        )
        .await;
    assert_complete(&reports, std::slice::from_ref(&m));
    report(&reports, &m, 0).clone()
}
