//! The refresh-token grant (RFC 6749 §6): a long-lived refresh token, obtained once by the
//! administrator's consent, is exchanged at the provider's token endpoint for short-lived
//! access tokens.
//!
//! The credentials file is TOML, readable only by postrider (a file open to group or others
//! is reported by the policy loader and the doctor):
//!
//! ```toml
//! token_endpoint = "https://login.microsoftonline.com/TENANT-ID/oauth2/v2.0/token"
//! client_id = "00000000-0000-0000-0000-000000000000"
//! client_secret = "..."          # left out for a public client
//! refresh_token = "..."
//! scope = "https://outlook.office365.com/SMTP.Send offline_access"   # optional
//! ```
//!
//! The client authenticates with `client_id` and `client_secret` in the request body (RFC
//! 6749 §2.3.1; both Google and Microsoft take them so). A provider that answers with a new
//! refresh token (Microsoft does, and the old one eventually expires) gets it written back
//! to the file, atomically, mode 0600, only the `refresh_token` line changed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::response::{TokenResponse, parse_token_response};
use super::{AccessToken, TokenError, TokenSource};
use crate::https::{HttpsClient, HttpsUrl};
use crate::route::Secret;
use crate::status::Severity;

/// A cached access token is replaced when it has less than this left, so a session never
/// starts with a token about to expire.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// How long a token is cached when the endpoint does not say (`expires_in` is optional).
const ASSUMED_LIFETIME: Duration = Duration::from_secs(600);

/// The largest credentials file read.
const MAX_CREDENTIALS_FILE: u64 = 64 * 1024;

/// The contents of a credentials file.
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshCredentials {
    /// The provider's token endpoint.
    pub token_endpoint: HttpsUrl,
    /// The application's client id.
    pub client_id: String,
    /// Its secret (`None` for a public client).
    pub client_secret: Option<Secret>,
    /// The refresh token.
    pub refresh_token: Secret,
    /// The scope to ask for (`None`: the one granted).
    pub scope: Option<String>,
}

impl std::fmt::Debug for RefreshCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshCredentials")
            .field("token_endpoint", &self.token_endpoint)
            .field("client_id", &self.client_id)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsFile {
    token_endpoint: String,
    client_id: String,
    client_secret: Option<String>,
    refresh_token: String,
    scope: Option<String>,
}

impl RefreshCredentials {
    /// Parses a credentials file's text; errors are `line N: what` and never quote a value.
    pub fn parse(text: &str) -> Result<RefreshCredentials, String> {
        let file: CredentialsFile = toml::from_str(text).map_err(|e| {
            let offset = e.span().map(|s| s.start).unwrap_or(0).min(text.len());
            let line = 1 + text.get(..offset).unwrap_or(text).matches('\n').count();
            // toml's message quotes the offending value only for syntax errors, which do not
            // come from a well-formed secret; keep its first line.
            let message = e.message().lines().next().unwrap_or("").trim().to_string();
            format!("line {line}: {message}")
        })?;
        let token_endpoint: HttpsUrl = file
            .token_endpoint
            .parse()
            .map_err(|e| format!("token_endpoint: {e}"))?;
        let nonempty = |name: &str, v: &str| {
            if v.trim().is_empty() {
                Err(format!("{name} is empty"))
            } else {
                Ok(())
            }
        };
        nonempty("client_id", &file.client_id)?;
        nonempty("refresh_token", &file.refresh_token)?;
        Ok(RefreshCredentials {
            token_endpoint,
            client_id: file.client_id.trim().to_string(),
            client_secret: file
                .client_secret
                .filter(|s| !s.trim().is_empty())
                .map(|s| Secret::new(s.trim().to_string())),
            refresh_token: Secret::new(file.refresh_token.trim().to_string()),
            scope: file.scope.filter(|s| !s.trim().is_empty()),
        })
    }

    /// Reads and parses a credentials file.
    pub fn load(path: &Path) -> Result<RefreshCredentials, String> {
        let size = std::fs::metadata(path)
            .map_err(|e| format!("cannot read it: {e}"))?
            .len();
        if size > MAX_CREDENTIALS_FILE {
            return Err(format!(
                "it is {size} bytes long, too long for a credentials file"
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
        RefreshCredentials::parse(&text)
    }
}

struct State {
    /// The credentials as last read (the refresh token may have been replaced since).
    credentials: Option<RefreshCredentials>,
    cached: Option<AccessToken>,
}

/// Access tokens by the refresh-token grant, cached until [`REFRESH_MARGIN`] before they
/// expire. Concurrent connections share one request: the first waits for the endpoint, the
/// others for it.
pub struct RefreshGrant {
    file: PathBuf,
    client: HttpsClient,
    state: Mutex<State>,
}

impl std::fmt::Debug for RefreshGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshGrant")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl RefreshGrant {
    /// Tokens for the credentials in `file` (read when the first token is needed, and again
    /// after a failure), fetched with `client`.
    pub fn new(file: impl Into<PathBuf>, client: HttpsClient) -> RefreshGrant {
        RefreshGrant {
            file: file.into(),
            client,
            state: Mutex::new(State {
                credentials: None,
                cached: None,
            }),
        }
    }

    /// The credentials file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    fn file_error(&self, reason: String) -> TokenError {
        TokenError {
            origin: format!("the credentials file {}", self.file.display()),
            reason,
            severity: Severity::Permanent,
        }
    }

    /// A token from the endpoint, the cache replaced.
    async fn fetch(&self, state: &mut State) -> Result<AccessToken, TokenError> {
        let credentials = match &state.credentials {
            Some(c) => c.clone(),
            None => {
                let c = RefreshCredentials::load(&self.file).map_err(|r| self.file_error(r))?;
                state.credentials = Some(c.clone());
                c
            }
        };
        let endpoint = format!("the token endpoint {}", credentials.token_endpoint);
        let error = |reason: String, severity| TokenError {
            origin: endpoint.clone(),
            reason,
            severity,
        };
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", credentials.refresh_token.expose()),
            ("client_id", credentials.client_id.as_str()),
        ];
        if let Some(secret) = &credentials.client_secret {
            form.push(("client_secret", secret.expose()));
        }
        if let Some(scope) = &credentials.scope {
            form.push(("scope", scope.as_str()));
        }
        let asked = Instant::now();
        let response = self
            .client
            .post_form(&credentials.token_endpoint, &form)
            .await
            .map_err(|e| error(e.reason(), e.severity()))?;
        match parse_token_response(response.status, &response.body)
            .map_err(|r| error(r, Severity::Temporary))?
        {
            TokenResponse::Refused {
                error: code,
                description,
            } => {
                // A refusal may be cured by credentials someone has fixed in the file.
                state.credentials = None;
                let severity = TokenResponse::refusal_severity(&code);
                let what = match description {
                    Some(d) => format!("{code} ({d})"),
                    None => code,
                };
                Err(error(
                    format!(
                        "HTTP {}: the endpoint refused the refresh token: {what}",
                        response.status
                    ),
                    severity,
                ))
            }
            TokenResponse::Issued {
                access_token,
                expires_in,
                refresh_token,
            } => {
                let lifetime = expires_in.map_or(ASSUMED_LIFETIME, Duration::from_secs);
                let token = AccessToken::new(access_token.expose(), Some(asked + lifetime));
                if let Some(new) = refresh_token
                    && new != credentials.refresh_token
                {
                    if let Err(e) = rewrite_refresh_token(&self.file, new.expose()) {
                        tracing::warn!(target: "postrider::oauth2", "the token endpoint replaced the refresh token, but {} could not be updated ({e}); the new one is used until postrider restarts", self.file.display());
                    } else {
                        tracing::info!(target: "postrider::oauth2", "the token endpoint replaced the refresh token; {} updated", self.file.display());
                    }
                    if let Some(c) = &mut state.credentials {
                        c.refresh_token = new;
                    }
                }
                state.cached = Some(token.clone());
                Ok(token)
            }
        }
    }
}

fn fresh(token: &AccessToken) -> bool {
    token
        .expires
        .is_some_and(|at| at.saturating_duration_since(Instant::now()) > REFRESH_MARGIN)
}

#[async_trait]
impl TokenSource for RefreshGrant {
    async fn token(&self) -> Result<AccessToken, TokenError> {
        let mut state = self.state.lock().await;
        if let Some(t) = &state.cached
            && fresh(t)
        {
            return Ok(t.clone());
        }
        self.fetch(&mut state).await
    }

    async fn refresh(&self, rejected: &AccessToken) -> Result<Option<AccessToken>, TokenError> {
        let mut state = self.state.lock().await;
        // Another connection may have refreshed while this one was refused.
        if let Some(t) = &state.cached
            && t.expose() != rejected.expose()
            && fresh(t)
        {
            return Ok(Some(t.clone()));
        }
        state.cached = None;
        let token = self.fetch(&mut state).await?;
        Ok((token.expose() != rejected.expose()).then_some(token))
    }

    fn describe(&self) -> String {
        format!("the refresh-token grant of {}", self.file.display())
    }
}

/// Replaces the `refresh_token = ...` line of the credentials file, keeping every other
/// line; written to a temporary file beside it (mode 0600), synced and renamed over it.
fn rewrite_refresh_token(path: &Path, token: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if token.contains(['"', '\\']) {
        return Err(std::io::Error::other(
            "the new token has quotes or backslashes",
        ));
    }
    let text = std::fs::read_to_string(path)?;
    let mut replaced = false;
    let mut out = String::with_capacity(text.len() + token.len());
    for line in text.split_inclusive('\n') {
        let key = line.split('=').next().unwrap_or("").trim();
        if !replaced && key == "refresh_token" {
            let ending = if line.ends_with('\n') { "\n" } else { "" };
            // A token is printable ASCII, and without quotes or backslashes (checked above)
            // a basic string needs no escapes.
            out.push_str(&format!("refresh_token = \"{token}\"{ending}"));
            replaced = true;
        } else {
            out.push_str(line);
        }
    }
    if !replaced {
        return Err(std::io::Error::other("no refresh_token line to replace"));
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map_or_else(
        || "credentials".into(),
        |n| n.to_string_lossy().into_owned(),
    );
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(out.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# Microsoft 365 voicemail\n\
        token_endpoint = \"https://login.microsoftonline.com/tenant/oauth2/v2.0/token\"\n\
        client_id = \"app-id\"\n\
        client_secret = \"s3cret\"\n\
        refresh_token = \"0.old-refresh\"\n\
        scope = \"https://outlook.office365.com/SMTP.Send offline_access\"\n";

    #[test]
    fn a_credentials_file_is_read_and_its_secrets_stay_hidden() {
        let c = RefreshCredentials::parse(FILE).unwrap();
        assert_eq!(c.client_id, "app-id");
        assert_eq!(c.token_endpoint.host(), "login.microsoftonline.com");
        assert_eq!(c.refresh_token.expose(), "0.old-refresh");
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("old-refresh"),
            "{shown}"
        );
    }

    #[test]
    fn bad_credentials_files_name_the_line_and_never_a_value() {
        let e = RefreshCredentials::parse("client_id = \"a\"\nrefresh_tokn = \"s3cret\"\n")
            .unwrap_err();
        assert!(e.starts_with("line 2: unknown field `refresh_tokn`"), "{e}");
        assert!(!e.contains("s3cret"));
        let e = RefreshCredentials::parse(
            "token_endpoint = \"http://x.example/token\"\nclient_id = \"a\"\nrefresh_token = \"r\"\n",
        )
        .unwrap_err();
        assert!(e.starts_with("token_endpoint: "), "{e}");
        let e = RefreshCredentials::parse(
            "token_endpoint = \"https://x.example/token\"\nclient_id = \"a\"\nrefresh_token = \" \"\n",
        )
        .unwrap_err();
        assert_eq!(e, "refresh_token is empty");
    }

    #[test]
    fn a_replaced_refresh_token_is_written_back_with_only_its_line_changed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m365.oauth");
        std::fs::write(&path, FILE).unwrap();
        rewrite_refresh_token(&path, "0.new-refresh").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, FILE.replace("0.old-refresh", "0.new-refresh"));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
    }
}
