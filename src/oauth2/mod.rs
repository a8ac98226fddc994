//! OAuth2 access tokens for SMTP AUTH (`XOAUTH2`, `OAUTHBEARER` of RFC 7628), as Microsoft
//! 365 and Google Workspace require of their submission servers.
//!
//! A next hop's policy line names the mechanism, the user and where the token comes from
//! ([`OAuth2Policy`], written in the policy file as `oauth2=xoauth2 user=... token-...=`, see
//! [the policy file](crate::route#the-policy-file)). Tokens come from a [`TokenSource`]; three are
//! built in:
//!
//! - [`TokenFile`]: a file holding the token, kept fresh by another program;
//! - [`TokenCommand`]: a command that prints the token (msmtp's `passwordeval` habit, e.g.
//!   `oama access user@example.com`);
//! - [`RefreshGrant`]: the RFC 6749 §6 refresh-token grant against the provider's token
//!   endpoint, with the client id, secret and refresh token from a file readable only by
//!   postrider; the access token is cached until shortly before it expires, so a connection
//!   always starts with a fresh one, and a refresh token the provider replaces is written
//!   back to the file.
//!
//! Tokens never appear in logs, errors or `Debug` output: the SMTP transcript shows
//! `<redacted>`.

mod command;
mod file;
mod refresh;
mod registry;
mod response;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;

use crate::route::Secret;
use crate::status::Severity;

pub use command::TokenCommand;
pub use file::TokenFile;
pub use refresh::{REFRESH_MARGIN, RefreshCredentials, RefreshGrant};
pub use registry::Tokens;
pub use response::{ErrorChallenge, TokenResponse, parse_token_response};

/// An access token, and until when it may be used (`None`: not known).
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken {
    token: Secret,
    /// When the provider said it expires.
    pub expires: Option<tokio::time::Instant>,
}

impl AccessToken {
    /// A token.
    pub fn new(token: impl Into<String>, expires: Option<tokio::time::Instant>) -> AccessToken {
        AccessToken {
            token: Secret::new(token),
            expires,
        }
    }

    /// The token itself, for the AUTH exchange only.
    pub fn expose(&self) -> &str {
        self.token.expose()
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &"<redacted>")
            .field("expires", &self.expires)
            .finish()
    }
}

/// No token could be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot get an OAuth2 access token from {origin}: {reason}")]
pub struct TokenError {
    /// Where it was to come from: `the token endpoint https://...`, `the token file /etc/...`.
    pub origin: String,
    /// Why, in words (never with a secret in them).
    pub reason: String,
    /// Temporary (the endpoint is down) or permanent (the refresh token was revoked: an
    /// administrator must act). Mail is deferred either way.
    pub severity: Severity,
}

/// Where a next hop's access tokens come from.
#[async_trait]
pub trait TokenSource: Send + Sync + 'static {
    /// A token to authenticate with now; a cached one while it stays valid for a while.
    async fn token(&self) -> Result<AccessToken, TokenError>;

    /// The server refused `rejected` (expired early, revoked): a fresh token, or `None` when
    /// this source has nothing better (the same token again). The default has nothing.
    async fn refresh(&self, rejected: &AccessToken) -> Result<Option<AccessToken>, TokenError> {
        let _ = rejected;
        Ok(None)
    }

    /// Where the tokens come from, for messages: `the token endpoint https://...`.
    fn describe(&self) -> String;
}

/// The SASL mechanism to send an access token with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OAuth2Mechanism {
    /// `OAUTHBEARER` (RFC 7628) when the server offers it, else `XOAUTH2`.
    #[default]
    Auto,
    /// Google's and Microsoft's `XOAUTH2`.
    XOAuth2,
    /// `OAUTHBEARER` (RFC 7628).
    OAuthBearer,
}

impl OAuth2Mechanism {
    /// The name in the policy file: `auto`, `xoauth2`, `oauthbearer`.
    pub fn name(&self) -> &'static str {
        match self {
            OAuth2Mechanism::Auto => "auto",
            OAuth2Mechanism::XOAuth2 => "xoauth2",
            OAuth2Mechanism::OAuthBearer => "oauthbearer",
        }
    }

    /// Parses a policy-file name (case-insensitive).
    pub fn from_name(name: &str) -> Option<OAuth2Mechanism> {
        [
            OAuth2Mechanism::Auto,
            OAuth2Mechanism::XOAuth2,
            OAuth2Mechanism::OAuthBearer,
        ]
        .into_iter()
        .find(|m| m.name().eq_ignore_ascii_case(name))
    }
}

/// Where a hop's tokens come from, as the policy file says.
#[derive(Clone, PartialEq, Eq)]
pub enum TokenSpec {
    /// `token-file=PATH`.
    File(PathBuf),
    /// `token-command=COMMAND` (run with `/bin/sh -c`).
    Command(String),
    /// `token-refresh=PATH`: the refresh-token grant with the credentials in PATH.
    Refresh(PathBuf),
    /// A source built in code.
    Source(SharedTokenSource),
}

impl fmt::Debug for TokenSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSpec::File(p) => f.debug_tuple("File").field(p).finish(),
            // A command line may carry a secret: only its program is shown.
            TokenSpec::Command(c) => f.debug_tuple("Command").field(&command_program(c)).finish(),
            TokenSpec::Refresh(p) => f.debug_tuple("Refresh").field(p).finish(),
            TokenSpec::Source(s) => f.debug_tuple("Source").field(&s.0.describe()).finish(),
        }
    }
}

/// The first word of a command line, with `…` when there is more: what messages show of it.
pub(crate) fn command_program(command: &str) -> String {
    let mut words = command.split_whitespace();
    match (words.next(), words.next()) {
        (Some(first), Some(_)) => format!("{first} …"),
        (Some(first), None) => first.to_string(),
        _ => String::new(),
    }
}

/// A [`TokenSource`] in a policy: compared by identity.
#[derive(Clone)]
pub struct SharedTokenSource(pub Arc<dyn TokenSource>);

impl PartialEq for SharedTokenSource {
    fn eq(&self, other: &SharedTokenSource) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SharedTokenSource {}

/// OAuth2 for one next hop: `oauth2=MECHANISM user=USER token-...=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuth2Policy {
    /// The SASL mechanism.
    pub mechanism: OAuth2Mechanism,
    /// The account (`user=` of XOAUTH2, the authorization identity of OAUTHBEARER).
    pub user: String,
    /// Where its tokens come from.
    pub token: TokenSpec,
    /// Where it was configured (`/etc/postrider/tls-policy line 3`), so a refusal can say
    /// which line to fix; `None` when given in code.
    pub defined_at: Option<String>,
}
