//! AUTH with an OAuth2 access token: `XOAUTH2` (Google's and Microsoft's) and `OAUTHBEARER`
//! (RFC 7628), the error challenge a server sends for a token it refuses, and one retry with a
//! fresh token when the server says the token itself was bad.

use std::sync::Arc;

use super::auth::base64_encode;
use super::classify;
use super::probe::AuthProbe;
use super::session::Session;
use super::setup::{SetupContext, SetupFailure, Step, Trace};
use super::timeouts::Phase;
use crate::oauth2::{AccessToken, ErrorChallenge, OAuth2Mechanism, OAuth2Policy, TokenSource};
use crate::status::Reply;

/// RFC 4954 §4: an AUTH command line with its initial response may be this long.
const MAX_AUTH_LINE: usize = 12288;

/// A mechanism as spoken on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wire {
    XOAuth2,
    OAuthBearer,
}

impl Wire {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Wire::XOAuth2 => "XOAUTH2",
            Wire::OAuthBearer => "OAUTHBEARER",
        }
    }

    /// What the policy asks for, among what the server offers.
    pub(crate) fn choose(wanted: OAuth2Mechanism, offered: &[String]) -> Option<Wire> {
        let has = |w: Wire| offered.iter().any(|o| o.eq_ignore_ascii_case(w.name()));
        match wanted {
            OAuth2Mechanism::XOAuth2 => has(Wire::XOAuth2).then_some(Wire::XOAuth2),
            OAuth2Mechanism::OAuthBearer => has(Wire::OAuthBearer).then_some(Wire::OAuthBearer),
            OAuth2Mechanism::Auto => [Wire::OAuthBearer, Wire::XOAuth2]
                .into_iter()
                .find(|&w| has(w)),
        }
    }
}

/// The XOAUTH2 initial response: base64 of `user=USER ^A auth=Bearer TOKEN ^A ^A`.
pub(crate) fn xoauth2_response(user: &str, token: &str) -> String {
    base64_encode(format!("user={user}\x01auth=Bearer {token}\x01\x01").as_bytes())
}

/// The OAUTHBEARER initial response (RFC 7628 §3.1): a GS2 header naming the authorization
/// identity (`,` and `=` escaped as in RFC 5801), then host, port and the bearer token.
pub(crate) fn oauthbearer_response(user: &str, host: &str, port: u16, token: &str) -> String {
    let authzid = user.replace('=', "=3D").replace(',', "=2C");
    base64_encode(
        format!("n,a={authzid},\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01")
            .as_bytes(),
    )
}

/// Fetches the hop's token before connecting, so a token endpoint that is down costs no SMTP
/// connection and no session waits on it. The failure ends the hop (another fallback hop may
/// have another policy) with a deferral that names the endpoint.
pub(super) async fn token_for(
    ctx: &SetupContext<'_>,
    oauth: &OAuth2Policy,
    trace: &mut Trace,
) -> Result<(Arc<dyn TokenSource>, AccessToken), SetupFailure> {
    let fetched = match ctx.tokens.source(&oauth.token) {
        Ok(source) => source.token().await.map(|t| (source, t)),
        Err(e) => Err(e),
    };
    fetched.map_err(|e| {
        trace.auth = AuthProbe::TokenUnavailable {
            reason: e.to_string(),
        };
        SetupFailure::EndHop(classify::token_unavailable(&oauth.user, &e))
    })
}

/// AUTH with the token, and once more with a fresh one if the server refuses the token
/// itself (expired early, revoked).
pub(super) async fn authenticate(
    s: &mut Session,
    oauth: &OAuth2Policy,
    (source, mut token): (Arc<dyn TokenSource>, AccessToken),
    trace: &mut Trace,
) -> Result<(), Step> {
    let Some(wire) = Wire::choose(oauth.mechanism, &s.caps.auth) else {
        trace.auth = AuthProbe::NoCommonMechanism {
            offered: s.caps.auth.clone(),
        };
        return Err(Step::Refused(SetupFailure::Next(
            classify::no_oauth_mechanism(&s.peer, oauth.mechanism, &s.caps.auth),
        )));
    };
    let mut retried = false;
    loop {
        let (reply, challenge) = exchange(s, wire, oauth, &token).await?;
        if reply.is_positive() {
            trace.auth = AuthProbe::Accepted {
                mechanism: wire.name(),
            };
            return Ok(());
        }
        // Without a challenge, a 535 is all a server says about a bad token.
        let token_refused = challenge
            .as_ref()
            .map_or(reply.code() == 535, ErrorChallenge::token_rejected);
        if !retried && token_refused {
            retried = true;
            match source.refresh(&token).await {
                Ok(Some(fresh)) => {
                    tracing::info!(peer = %s.peer, user = %oauth.user, "the server refused the access token; retrying with a fresh one from {}", source.describe());
                    token = fresh;
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(peer = %s.peer, user = %oauth.user, "the server refused the access token and no fresh one could be had: {e}");
                }
            }
        }
        trace.auth = AuthProbe::Refused {
            reply: reply.clone(),
        };
        let diag = classify::oauth_failed(&s.peer, oauth, wire.name(), &reply, challenge.as_ref());
        return Err(Step::Refused(if reply.is_permanent() {
            SetupFailure::EndRoute(diag)
        } else {
            SetupFailure::Next(diag)
        }));
    }
}

/// One AUTH exchange: the final reply, and the error challenge if the server sent one.
async fn exchange(
    s: &mut Session,
    wire: Wire,
    oauth: &OAuth2Policy,
    token: &AccessToken,
) -> Result<(Reply, Option<ErrorChallenge>), Step> {
    let response = match wire {
        Wire::XOAuth2 => xoauth2_response(&oauth.user, token.expose()),
        Wire::OAuthBearer => {
            let host = s
                .peer
                .name
                .as_ref()
                .map_or_else(|| s.peer.addr.to_string(), |n| n.to_string());
            oauthbearer_response(&oauth.user, &host, s.peer.port, token.expose())
        }
    };
    let name = wire.name();
    let line = format!("AUTH {name} {response}");
    let mut reply = if line.len() <= MAX_AUTH_LINE {
        s.command_secret(&line, &format!("AUTH {name} <redacted>"), Phase::Auth)
            .await?
    } else {
        // Too long for an initial response: send it after the server's empty challenge.
        let first = s.command(&format!("AUTH {name}"), Phase::Auth).await?;
        if first.code() == 334 {
            s.command_secret(&response, "<redacted>", Phase::Auth)
                .await?
        } else {
            first
        }
    };
    let mut challenge = None;
    if reply.code() == 334 {
        challenge = ErrorChallenge::parse(reply.text());
        // RFC 7628 §3.2.3: the client answers an error challenge with a dummy %x01 and gets
        // the final reply; Google's XOAUTH2 document asks for an empty response instead.
        let answer = match wire {
            Wire::OAuthBearer => "AQ==",
            Wire::XOAuth2 => "",
        };
        reply = s.command(answer, Phase::Auth).await?;
        if reply.is_intermediate() {
            // Still challenging: cancel the exchange (RFC 4954 §4).
            reply = s.command("*", Phase::Auth).await?;
        }
    }
    Ok((reply, challenge))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_xoauth2_response_matches_googles_example() {
        // https://developers.google.com/gmail/imap/xoauth2-protocol: the example's string.
        assert_eq!(
            xoauth2_response(
                "someuser@example.com",
                "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg"
            ),
            "dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52YjNSbGNrQmhkSFJoZG1semRHRXVZMjl0Q2cBAQ=="
        );
    }

    #[test]
    fn the_oauthbearer_response_matches_rfc_7628s_example_with_the_authzid_escaped() {
        // RFC 7628 §4.1 without an authzid: n,,^Ahost=server.example.com^Aport=143^A...
        let expected = b"n,a=user@example.com,\x01host=server.example.com\x01port=587\x01auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01";
        assert_eq!(
            oauthbearer_response(
                "user@example.com",
                "server.example.com",
                587,
                "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg=="
            ),
            base64_encode(expected)
        );
        let escaped = oauthbearer_response("a,b=c", "h", 25, "t");
        assert_eq!(
            escaped,
            base64_encode(b"n,a=a=2Cb=3Dc,\x01host=h\x01port=25\x01auth=Bearer t\x01\x01")
        );
    }

    #[test]
    fn auto_prefers_oauthbearer_and_an_explicit_choice_must_be_offered() {
        let offered = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            Wire::choose(
                OAuth2Mechanism::Auto,
                &offered(&["PLAIN", "XOAUTH2", "OAUTHBEARER"])
            ),
            Some(Wire::OAuthBearer)
        );
        assert_eq!(
            Wire::choose(OAuth2Mechanism::Auto, &offered(&["LOGIN", "xoauth2"])),
            Some(Wire::XOAuth2)
        );
        assert_eq!(
            Wire::choose(OAuth2Mechanism::OAuthBearer, &offered(&["XOAUTH2"])),
            None
        );
        assert_eq!(
            Wire::choose(OAuth2Mechanism::Auto, &offered(&["PLAIN"])),
            None
        );
    }
}
