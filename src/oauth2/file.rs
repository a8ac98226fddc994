//! A token kept in a file by another program (a cron job, an identity agent).

use std::path::{Path, PathBuf};

use async_trait::async_trait;

use super::{AccessToken, TokenError, TokenSource};
use crate::status::Severity;

/// The largest token file read.
const MAX_TOKEN_FILE: u64 = 64 * 1024;

/// Reads the token from a file each time one is needed (the file's first non-empty line,
/// trimmed), so a program that renews it is followed at once. Its expiry is not known.
#[derive(Debug, Clone)]
pub struct TokenFile {
    path: PathBuf,
}

impl TokenFile {
    /// Tokens from `path`.
    pub fn new(path: impl Into<PathBuf>) -> TokenFile {
        TokenFile { path: path.into() }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn read(&self) -> Result<AccessToken, TokenError> {
        let error = |reason: String, severity| TokenError {
            origin: self.describe(),
            reason,
            severity,
        };
        let meta = tokio::fs::metadata(&self.path)
            .await
            .map_err(|e| error(format!("cannot read it: {e}"), Severity::Temporary))?;
        if meta.len() > MAX_TOKEN_FILE {
            return Err(error(
                format!("it is {} bytes long, too long for a token", meta.len()),
                Severity::Permanent,
            ));
        }
        let bytes = tokio::fs::read(&self.path)
            .await
            .map_err(|e| error(format!("cannot read it: {e}"), Severity::Temporary))?;
        let text = String::from_utf8_lossy(&bytes);
        let token = text.lines().map(str::trim).find(|l| !l.is_empty());
        match token {
            Some(t) if t.bytes().all(|b| (0x21..=0x7e).contains(&b)) => {
                Ok(AccessToken::new(t, None))
            }
            Some(_) => Err(error(
                "its first line is not a token (spaces or non-ASCII characters)".into(),
                Severity::Permanent,
            )),
            None => Err(error("it is empty".into(), Severity::Temporary)),
        }
    }
}

#[async_trait]
impl TokenSource for TokenFile {
    async fn token(&self) -> Result<AccessToken, TokenError> {
        self.read().await
    }

    /// The file again: the program that keeps it may have renewed it since.
    async fn refresh(&self, rejected: &AccessToken) -> Result<Option<AccessToken>, TokenError> {
        let again = self.read().await?;
        Ok((again.expose() != rejected.expose()).then_some(again))
    }

    fn describe(&self) -> String {
        format!("the token file {}", self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_non_empty_line_is_the_token_and_a_renewed_file_is_followed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m365.token");
        std::fs::write(&path, "\n  eyJ0eXAi.first  \nignored\n").unwrap();
        let source = TokenFile::new(&path);
        let first = source.token().await.unwrap();
        assert_eq!(first.expose(), "eyJ0eXAi.first");
        assert_eq!(source.refresh(&first).await.unwrap(), None, "unchanged");
        std::fs::write(&path, "eyJ0eXAi.second\n").unwrap();
        assert_eq!(
            source.refresh(&first).await.unwrap().unwrap().expose(),
            "eyJ0eXAi.second"
        );
    }

    #[tokio::test]
    async fn a_missing_or_empty_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("none");
        let e = TokenFile::new(&path).token().await.unwrap_err();
        assert_eq!(e.origin, format!("the token file {}", path.display()));
        assert!(e.reason.starts_with("cannot read it"), "{e}");
        std::fs::write(&path, "\n\n").unwrap();
        assert_eq!(
            TokenFile::new(&path).token().await.unwrap_err().reason,
            "it is empty"
        );
    }
}
