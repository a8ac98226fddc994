//! A command that prints the token (msmtp's `passwordeval`, mutt's `oauth2.py`, `oama`).

use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::AsyncReadExt;

use super::{AccessToken, TokenError, TokenSource, command_program};
use crate::status::Severity;

/// How long the command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The most output read from it.
const MAX_OUTPUT: u64 = 64 * 1024;

/// Runs `/bin/sh -c COMMAND` each time a token is needed and takes the first non-empty line
/// it prints. Commands of this kind keep their own cache, so running one per connection is
/// what they expect. Messages name only the program (the rest of the line may hold a
/// secret).
#[derive(Debug, Clone)]
pub struct TokenCommand {
    command: String,
}

impl TokenCommand {
    /// Tokens printed by `command`.
    pub fn new(command: impl Into<String>) -> TokenCommand {
        TokenCommand {
            command: command.into(),
        }
    }

    async fn run(&self) -> Result<AccessToken, TokenError> {
        let error = |reason: String, severity| TokenError {
            origin: self.describe(),
            reason,
            severity,
        };
        let mut child = tokio::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&self.command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| error(format!("cannot start /bin/sh: {e}"), Severity::Temporary))?;
        let mut stdout = child.stdout.take().expect("invariant: stdout was piped");
        let mut stderr = child.stderr.take().expect("invariant: stderr was piped");
        let work = async {
            let mut out = Vec::new();
            let mut err = Vec::new();
            let mut stdout = (&mut stdout).take(MAX_OUTPUT);
            let mut stderr = (&mut stderr).take(MAX_OUTPUT);
            let (r1, r2) = tokio::join!(stdout.read_to_end(&mut out), stderr.read_to_end(&mut err));
            let status = child.wait().await;
            (r1.and(r2).and(status), out, err)
        };
        let (status, out, err) =
            tokio::time::timeout(COMMAND_TIMEOUT, work)
                .await
                .map_err(|_| {
                    error(
                        format!("it did not finish within {}s", COMMAND_TIMEOUT.as_secs()),
                        Severity::Temporary,
                    )
                })?;
        let status =
            status.map_err(|e| error(format!("running it failed: {e}"), Severity::Temporary))?;
        if !status.success() {
            let said = String::from_utf8_lossy(&err);
            let said: String = said
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or("")
                .chars()
                .filter(|c| !c.is_control())
                .take(200)
                .collect();
            let code = status
                .code()
                .map_or_else(|| "a signal".to_string(), |c| format!("status {c}"));
            let said = if said.is_empty() {
                String::new()
            } else {
                format!(": {said}")
            };
            return Err(error(
                format!("it exited with {code}{said}"),
                Severity::Temporary,
            ));
        }
        let text = String::from_utf8_lossy(&out);
        match text.lines().map(str::trim).find(|l| !l.is_empty()) {
            Some(t) if t.bytes().all(|b| (0x21..=0x7e).contains(&b)) => {
                Ok(AccessToken::new(t, None))
            }
            Some(_) => Err(error(
                "its first line of output is not a token (spaces or non-ASCII characters)".into(),
                Severity::Permanent,
            )),
            None => Err(error("it printed nothing".into(), Severity::Temporary)),
        }
    }
}

#[async_trait]
impl TokenSource for TokenCommand {
    async fn token(&self) -> Result<AccessToken, TokenError> {
        self.run().await
    }

    /// The command again: it may renew a token the server refused.
    async fn refresh(&self, rejected: &AccessToken) -> Result<Option<AccessToken>, TokenError> {
        let again = self.run().await?;
        Ok((again.expose() != rejected.expose()).then_some(again))
    }

    fn describe(&self) -> String {
        format!("the token command {}", command_program(&self.command))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_line_printed_is_the_token() {
        let t = TokenCommand::new("printf '\\n  tok-123  \\nmore\\n'")
            .token()
            .await
            .unwrap();
        assert_eq!(t.expose(), "tok-123");
    }

    #[tokio::test]
    async fn a_failing_command_says_its_status_and_first_error_line_but_not_its_arguments() {
        let e = TokenCommand::new("echo 'no account configured' >&2; exit 3 # s3cret")
            .token()
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot get an OAuth2 access token from the token command echo …: it exited with \
             status 3: no account configured"
        );
        assert!(!format!("{e:?}").contains("s3cret"));
        let e = TokenCommand::new("true").token().await.unwrap_err();
        assert_eq!(e.reason, "it printed nothing");
    }
}
