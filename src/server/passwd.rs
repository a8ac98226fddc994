//! The default [`Authenticator`]: a password file as Dovecot's `passwd-file` reads it.
//!
//! One user a line, `user:{SCHEME}hash`, optionally followed by more `:`-separated fields
//! (Dovecot's uid, gid, home, ..., ignored here); `#` comments and blank lines are skipped.
//! Schemes: `SHA512-CRYPT` and `SHA256-CRYPT` (`doveadm pw -s SHA512-CRYPT`, `openssl passwd
//! -6`, `mkpasswd -m sha-512`), `ARGON2ID` and `ARGON2I` (`doveadm pw -s ARGON2ID`). A hash
//! without `{SCHEME}` is taken by its `$6$`, `$5$`, `$argon2id$` prefix. Plain-text passwords
//! (`{PLAIN}`) are refused: the file would be a list of passwords.
//!
//! ```
//! use postrider::server::passwd::PasswordFile;
//! let file = PasswordFile::parse(
//!     "# users of the MSA\nalice:{SHA512-CRYPT}$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1\n",
//!     "/etc/postrider/passwd",
//! )?;
//! assert_eq!(file.users(), 1);
//! # Ok::<(), postrider::server::passwd::PasswdError>(())
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use argon2::Argon2;
use async_trait::async_trait;
use sha_crypt::{PasswordVerifier, ShaCrypt};

use super::auth::{AuthError, Authenticator, Password};
use crate::status::Severity;

/// A hashing scheme the file may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `$6$`: SHA-512 crypt.
    Sha512Crypt,
    /// `$5$`: SHA-256 crypt.
    Sha256Crypt,
    /// `$argon2id$`.
    Argon2id,
    /// `$argon2i$`.
    Argon2i,
}

impl Scheme {
    fn by_name(name: &str) -> Option<Scheme> {
        match name.to_ascii_uppercase().as_str() {
            "SHA512-CRYPT" => Some(Scheme::Sha512Crypt),
            "SHA256-CRYPT" => Some(Scheme::Sha256Crypt),
            "ARGON2ID" => Some(Scheme::Argon2id),
            "ARGON2I" => Some(Scheme::Argon2i),
            _ => None,
        }
    }

    fn by_prefix(hash: &str) -> Option<Scheme> {
        [
            ("$6$", Scheme::Sha512Crypt),
            ("$5$", Scheme::Sha256Crypt),
            ("$argon2id$", Scheme::Argon2id),
            ("$argon2i$", Scheme::Argon2i),
        ]
        .into_iter()
        .find_map(|(p, s)| hash.starts_with(p).then_some(s))
    }

    fn verify(self, password: &[u8], hash: &str) -> bool {
        match self {
            Scheme::Sha512Crypt | Scheme::Sha256Crypt => {
                ShaCrypt::default().verify_password(password, hash).is_ok()
            }
            Scheme::Argon2id | Scheme::Argon2i => {
                Argon2::default().verify_password(password, hash).is_ok()
            }
        }
    }
}

/// What is wrong with a password file.
#[derive(Debug, thiserror::Error)]
pub enum PasswdError {
    /// The file could not be read.
    #[error("cannot read password file {}: {source}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A bad line (the hash itself is never shown).
    #[error("{}:{line}: {reason}", file.display())]
    Invalid {
        /// The file.
        file: PathBuf,
        /// The line, from 1.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

impl PasswdError {
    /// Always permanent: the administrator must fix the file.
    pub fn severity(&self) -> Severity {
        Severity::Permanent
    }
}

#[derive(Debug, Clone)]
struct Entry {
    scheme: Scheme,
    hash: String,
}

/// A SHA512-CRYPT hash of a random-looking string, checked for unknown users so that they take
/// as long as a wrong password (no user enumeration by timing).
const DECOY: &str = "$6$decoysalt$NHvnUnRqgn8hGFDTJEGU2yfWAJRjYGgctSxGQIDm88Mr.1Cfxb0lnBl03NMj3LQi6jXb4cf4J4MR12e370Omr1";

/// A password file, reloadable.
#[derive(Debug)]
pub struct PasswordFile {
    file: PathBuf,
    users: RwLock<Arc<HashMap<String, Entry>>>,
}

impl PasswordFile {
    /// Reads and parses a password file.
    pub fn load(path: impl AsRef<Path>) -> Result<PasswordFile, PasswdError> {
        let path = path.as_ref();
        let users = read(path)?;
        Ok(PasswordFile {
            file: path.to_path_buf(),
            users: RwLock::new(Arc::new(users)),
        })
    }

    /// Parses password-file text; `file` names it in errors and is re-read by [`reload`].
    ///
    /// [`reload`]: PasswordFile::reload
    pub fn parse(text: &str, file: impl AsRef<Path>) -> Result<PasswordFile, PasswdError> {
        let file = file.as_ref().to_path_buf();
        let users = parse(text, &file)?;
        Ok(PasswordFile {
            file,
            users: RwLock::new(Arc::new(users)),
        })
    }

    /// Re-reads the file; on an error the users in use stay in use.
    pub fn reload(&self) -> Result<usize, PasswdError> {
        let users = read(&self.file)?;
        let n = users.len();
        *self.users.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(users);
        Ok(n)
    }

    /// The number of users.
    pub fn users(&self) -> usize {
        self.users.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The file.
    pub fn file(&self) -> &Path {
        &self.file
    }
}

fn read(path: &Path) -> Result<HashMap<String, Entry>, PasswdError> {
    let text = std::fs::read_to_string(path).map_err(|source| PasswdError::Read {
        file: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

fn parse(text: &str, file: &Path) -> Result<HashMap<String, Entry>, PasswdError> {
    let mut users = HashMap::new();
    let mut first_line: HashMap<String, usize> = HashMap::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let bad = |reason: String| PasswdError::Invalid {
            file: file.to_path_buf(),
            line: n,
            reason,
        };
        let line = raw.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let mut fields = line.split(':');
        let user = fields.next().unwrap_or("").trim();
        let Some(password) = fields.next() else {
            return Err(bad(format!(
                "user {user:?} has no password field (user:{{SCHEME}}hash)"
            )));
        };
        if user.is_empty() {
            return Err(bad("the user name is empty".into()));
        }
        let (scheme, hash) = match password.strip_prefix('{').and_then(|p| p.split_once('}')) {
            Some((name, hash)) => match Scheme::by_name(name) {
                Some(s) => (s, hash),
                None if ["PLAIN", "CLEARTEXT", "CLEAR"]
                    .contains(&name.to_ascii_uppercase().as_str()) =>
                {
                    return Err(bad(format!(
                        "user {user:?}: plain-text passwords are refused; store a hash (doveadm pw -s SHA512-CRYPT, or openssl passwd -6)"
                    )));
                }
                None => {
                    return Err(bad(format!(
                        "user {user:?}: scheme {{{name}}} is not supported (SHA512-CRYPT, SHA256-CRYPT, ARGON2ID, ARGON2I)"
                    )));
                }
            },
            None => match Scheme::by_prefix(password) {
                Some(s) => (s, password),
                None => {
                    return Err(bad(format!(
                        "user {user:?}: the password is not {{SCHEME}}hash nor a $6$/$5$/$argon2id$ hash"
                    )));
                }
            },
        };
        if Scheme::by_prefix(hash) != Some(scheme) {
            return Err(bad(format!(
                "user {user:?}: the hash is not of the scheme {scheme:?} it is marked with"
            )));
        }
        if let Some(first) = first_line.insert(user.to_string(), n) {
            return Err(bad(format!(
                "user {user:?} is already defined on line {first}"
            )));
        }
        users.insert(
            user.to_string(),
            Entry {
                scheme,
                hash: hash.to_string(),
            },
        );
    }
    Ok(users)
}

#[async_trait]
impl Authenticator for PasswordFile {
    async fn verify(&self, user: &str, password: Password) -> Result<bool, AuthError> {
        let entry = self
            .users
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(user)
            .cloned();
        // Hashing is deliberately slow: off the async threads.
        tokio::task::spawn_blocking(move || match entry {
            Some(e) => e.scheme.verify(password.expose(), &e.hash),
            None => {
                let _ = Scheme::Sha512Crypt.verify(password.expose(), DECOY);
                false
            }
        })
        .await
        .map_err(|e| AuthError::Unavailable(format!("the password check failed to run: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `openssl passwd -6 -salt saltsalt secret`.
    const SECRET_SHA512: &str = "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1";

    #[tokio::test]
    async fn sha512_crypt_and_argon2id_hashes_verify() {
        use argon2::PasswordHasher;
        let argon = Argon2::default()
            .hash_password(b"hunter2")
            .expect("hashing works")
            .to_string();
        let f = PasswordFile::parse(
            &format!("alice:{{SHA512-CRYPT}}{SECRET_SHA512}::::\nbob:{{ARGON2ID}}{argon}\ncarol:{SECRET_SHA512}\n"),
            "passwd",
        )
        .unwrap();
        let pw = |s: &str| Password::new(s.as_bytes().to_vec());
        assert!(f.verify("alice", pw("secret")).await.unwrap());
        assert!(!f.verify("alice", pw("Secret")).await.unwrap());
        assert!(f.verify("bob", pw("hunter2")).await.unwrap());
        assert!(!f.verify("bob", pw("secret")).await.unwrap());
        assert!(f.verify("carol", pw("secret")).await.unwrap());
        assert!(!f.verify("mallory", pw("secret")).await.unwrap());
    }

    #[test]
    fn bad_lines_name_file_and_line_and_never_show_the_hash() {
        for (text, want) in [
            ("alice\n", "passwd:1: user \"alice\" has no password field"),
            (
                "# x\nalice:{PLAIN}secret\n",
                "passwd:2: user \"alice\": plain-text passwords are refused",
            ),
            ("alice:{MD5}x\n", "scheme {MD5} is not supported"),
            ("alice:secret\n", "is not {SCHEME}hash"),
            ("alice:{ARGON2ID}$6$a$b\n", "is not of the scheme"),
            (
                &format!("a:{SECRET_SHA512}\na:{SECRET_SHA512}\n"),
                "passwd:2: user \"a\" is already defined on line 1",
            ),
        ] {
            let e = PasswordFile::parse(text, "passwd").unwrap_err().to_string();
            assert!(e.contains(want), "{want:?} not in {e:?}");
            assert!(!e.contains("secret") || want.contains("plain"), "{e}");
            assert!(!e.contains("TVLlQ"), "{e}");
        }
    }
}
