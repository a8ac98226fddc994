//! Feeds arbitrary bytes to the parsers of what OAuth2 peers send: a token endpoint's JSON
//! answer and an SMTP server's base64 error challenge.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postrider::oauth2::{ErrorChallenge, TokenResponse, parse_token_response};

fuzz_target!(|data: &[u8]| {
    let status = data.first().map_or(200, |b| 100 + u16::from(*b) * 2);
    match parse_token_response(status, data) {
        Ok(TokenResponse::Issued { access_token, .. }) => {
            let t = access_token.expose();
            assert!(!t.is_empty() && t.bytes().all(|b| (0x21..=0x7e).contains(&b)));
        }
        Ok(TokenResponse::Refused { error, description }) => {
            assert!(!error.chars().any(char::is_control));
            assert!(description.is_none_or(|d| d.chars().count() <= 200 && !d.chars().any(char::is_control)));
        }
        Err(why) => assert!(!why.is_empty()),
    }
    let text = String::from_utf8_lossy(data);
    if let Some(c) = ErrorChallenge::parse(&text) {
        assert!(!c.status.chars().any(char::is_control));
        let _ = c.token_rejected();
    }
});
