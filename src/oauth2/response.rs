//! What token endpoints and SMTP servers send back: a token endpoint's JSON answer (RFC 6749
//! §5.1 and §5.2) and a server's OAuth error challenge (RFC 7628 §3.2.2, Google's XOAUTH2).
//! Both are untrusted input: pure parsers, fuzzed.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

use crate::route::Secret;
use crate::status::Severity;

/// A token endpoint's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenResponse {
    /// A token was issued (RFC 6749 §5.1).
    Issued {
        /// `access_token`.
        access_token: Secret,
        /// `expires_in`, seconds.
        expires_in: Option<u64>,
        /// `refresh_token`, when the provider replaces the one used.
        refresh_token: Option<Secret>,
    },
    /// The request was refused (RFC 6749 §5.2).
    Refused {
        /// `error` (`invalid_grant`, ...).
        error: String,
        /// `error_description`, cleaned of control characters and cut to 200 characters.
        description: Option<String>,
    },
}

impl TokenResponse {
    /// How long a refusal lasts: an error about the grant or the client needs an
    /// administrator (a revoked refresh token, a deleted app registration); anything else
    /// may pass.
    pub fn refusal_severity(error: &str) -> Severity {
        match error {
            "invalid_grant"
            | "invalid_client"
            | "unauthorized_client"
            | "invalid_scope"
            | "unsupported_grant_type"
            | "invalid_request" => Severity::Permanent,
            _ => Severity::Temporary,
        }
    }
}

/// Reads a token endpoint's answer with HTTP status `status`; the error says what is wrong
/// with it.
///
/// ```
/// use postrider::oauth2::{TokenResponse, parse_token_response};
/// let body = br#"{"access_token":"ya29.a0","token_type":"Bearer","expires_in":3599}"#;
/// match parse_token_response(200, body).unwrap() {
///     TokenResponse::Issued { access_token, expires_in, .. } => {
///         assert_eq!(access_token.expose(), "ya29.a0");
///         assert_eq!(expires_in, Some(3599));
///     }
///     other => panic!("{other:?}"),
/// }
/// ```
pub fn parse_token_response(status: u16, body: &[u8]) -> Result<TokenResponse, String> {
    let value: Value = serde_json::from_slice(body).map_err(|_| {
        format!(
            "HTTP {status} with a body that is not JSON{}",
            snippet(body).map(|s| format!(" ({s})")).unwrap_or_default()
        )
    })?;
    let Value::Object(map) = value else {
        return Err(format!("HTTP {status} with JSON that is not an object"));
    };
    if let Some(error) = map.get("error") {
        let error = match error {
            Value::String(s) => clean(s, 64),
            other => clean(&other.to_string(), 64),
        };
        let description = map
            .get("error_description")
            .and_then(Value::as_str)
            .map(|d| clean(d, 200))
            .filter(|d| !d.is_empty());
        return Ok(TokenResponse::Refused { error, description });
    }
    if !(200..300).contains(&status) {
        return Err(format!("HTTP {status} without an OAuth2 error"));
    }
    let access_token = match map.get("access_token") {
        Some(Value::String(t)) if is_token(t) => Secret::new(t.clone()),
        Some(Value::String(_)) => {
            return Err("the access_token is empty or holds characters a token cannot".into());
        }
        _ => return Err("the answer has no access_token".into()),
    };
    if let Some(t) = map.get("token_type").and_then(Value::as_str)
        && !t.eq_ignore_ascii_case("bearer")
    {
        return Err(format!(
            "the token type is {:?}, not Bearer (SMTP needs a bearer token)",
            clean(t, 32)
        ));
    }
    let expires_in = match map.get("expires_in") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => n.as_u64().or_else(|| n.as_f64().map(|f| f.max(0.0) as u64)),
        // Some providers send the number as a string.
        Some(Value::String(s)) => s.trim().parse().ok(),
        Some(_) => None,
    };
    let refresh_token = map
        .get("refresh_token")
        .and_then(Value::as_str)
        .filter(|t| is_token(t))
        .map(|t| Secret::new(t.to_string()));
    Ok(TokenResponse::Issued {
        access_token,
        expires_in,
        refresh_token,
    })
}

/// Printable ASCII without spaces (RFC 6750 §2.1's b64token is narrower; providers stay
/// within this).
fn is_token(t: &str) -> bool {
    !t.is_empty() && t.len() <= 16 * 1024 && t.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// Text from the other side, fit for a log line: control characters dropped, cut.
fn clean(s: &str, max: usize) -> String {
    let s: String = s.chars().filter(|c| !c.is_control()).take(max).collect();
    s.trim().to_string()
}

/// The start of a body that is not JSON (an HTML error page), for the message.
fn snippet(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(&body[..body.len().min(80)]);
    let text = clean(&text, 60);
    (!text.is_empty()).then_some(text)
}

/// A server's answer to an access token it refuses: a 334 challenge with base64 JSON.
///
/// ```
/// use postrider::oauth2::ErrorChallenge;
/// // Gmail: {"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}
/// let c = ErrorChallenge::parse("eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIiwic2NvcGUiOiJodHRwczovL21haWwuZ29vZ2xlLmNvbS8ifQ==").unwrap();
/// assert!(c.token_rejected());
/// assert_eq!(c.scope.as_deref(), Some("https://mail.google.com/"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorChallenge {
    /// `status`: `invalid_token` (RFC 7628), `401` (Google), `insufficient_scope`, ...
    pub status: String,
    /// `scope`: the scope the server wants.
    pub scope: Option<String>,
}

impl ErrorChallenge {
    /// Reads the text of a 334 reply; `None` when it is not base64 JSON with a `status`.
    pub fn parse(text: &str) -> Option<ErrorChallenge> {
        let raw = STANDARD.decode(text.trim()).ok()?;
        let Value::Object(map) = serde_json::from_slice::<Value>(&raw).ok()? else {
            return None;
        };
        let status = match map.get("status")? {
            Value::String(s) => clean(s, 64),
            Value::Number(n) => n.to_string(),
            _ => return None,
        };
        let scope = map
            .get("scope")
            .and_then(Value::as_str)
            .map(|s| clean(s, 200));
        Some(ErrorChallenge { status, scope })
    }

    /// True when the server says the token itself is bad (expired, revoked): a fresh token
    /// may succeed where this one failed.
    pub fn token_rejected(&self) -> bool {
        matches!(self.status.as_str(), "401" | "invalid_token")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_carry_the_error_and_a_clean_description() {
        let body = br#"{"error":"invalid_grant","error_description":"AADSTS70008: The refresh token has expired\u0007."}"#;
        assert_eq!(
            parse_token_response(400, body).unwrap(),
            TokenResponse::Refused {
                error: "invalid_grant".into(),
                description: Some("AADSTS70008: The refresh token has expired.".into()),
            }
        );
        assert_eq!(
            TokenResponse::refusal_severity("invalid_grant"),
            Severity::Permanent
        );
        assert_eq!(
            TokenResponse::refusal_severity("temporarily_unavailable"),
            Severity::Temporary
        );
    }

    #[test]
    fn a_rotated_refresh_token_and_a_string_expiry_are_read() {
        let body = br#"{"access_token":"EwB4A8l6","token_type":"bearer","expires_in":"3600","refresh_token":"M.C5_BAY.-CU"}"#;
        let TokenResponse::Issued {
            expires_in,
            refresh_token,
            ..
        } = parse_token_response(200, body).unwrap()
        else {
            panic!("issued expected");
        };
        assert_eq!(expires_in, Some(3600));
        assert_eq!(refresh_token.unwrap().expose(), "M.C5_BAY.-CU");
    }

    #[test]
    fn answers_that_are_not_tokens_say_what_is_wrong() {
        assert_eq!(
            parse_token_response(502, b"<html>Bad Gateway</html>").unwrap_err(),
            "HTTP 502 with a body that is not JSON (<html>Bad Gateway</html>)"
        );
        assert_eq!(
            parse_token_response(200, br#"{"token_type":"Bearer"}"#).unwrap_err(),
            "the answer has no access_token"
        );
        assert_eq!(
            parse_token_response(200, br#"{"access_token":"a b"}"#).unwrap_err(),
            "the access_token is empty or holds characters a token cannot"
        );
        assert!(
            parse_token_response(200, br#"{"access_token":"x","token_type":"mac"}"#)
                .unwrap_err()
                .contains("not Bearer")
        );
        assert_eq!(
            parse_token_response(500, br#"{}"#).unwrap_err(),
            "HTTP 500 without an OAuth2 error"
        );
    }

    #[test]
    fn the_rfc_7628_challenge_is_read() {
        // RFC 7628 §4.3's example.
        let c = ErrorChallenge::parse(
            "eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIiwic2NvcGUiOiJleGFtcGxlX3Njb3BlIiwib3BlbmlkLWNvbmZpZ3VyYXRpb24iOiJodHRwczovL2V4YW1wbGUuY29tLy53ZWxsLWtub3duL29wZW5pZC1jb25maWd1cmF0aW9uIn0=",
        )
        .unwrap();
        assert_eq!(c.status, "invalid_token");
        assert!(c.token_rejected());
        assert_eq!(ErrorChallenge::parse("not base64!"), None);
        assert_eq!(ErrorChallenge::parse(&STANDARD.encode("{}")), None);
        let scope =
            ErrorChallenge::parse(&STANDARD.encode(r#"{"status":"insufficient_scope"}"#)).unwrap();
        assert!(!scope.token_rejected());
    }
}
