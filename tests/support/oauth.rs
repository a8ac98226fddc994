//! OAuth2 AUTH against scripted SMTP peers: policies, the server side of the exchange, and
//! reading back the SASL strings the client sent.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use postrider::oauth2::{OAuth2Mechanism, OAuth2Policy, TokenSpec};
use postrider::route::{HopPolicy, TlsLevel};

use super::smtp_peer::{Script, ehlo_reply};

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
