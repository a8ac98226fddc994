//! SMTP AUTH as a server (RFC 4954): the `Authenticator` trait and the PLAIN (RFC 4616) and
//! LOGIN exchanges, decoded without I/O.
//!
//! A password lives in a [`Password`], which wipes its memory when dropped, has no `Debug` or
//! `Display` that shows it, and is dropped as soon as the check is done.
//!
//! ```
//! use postrider::server::auth::decode_plain;
//! // "\0alice\0secret" in base64
//! let (user, password) = decode_plain("AGFsaWNlAHNlY3JldA==")?;
//! assert_eq!(user, "alice");
//! assert_eq!(password.expose(), b"secret");
//! assert_eq!(format!("{password:?}"), "Password(..)");
//! # Ok::<(), postrider::server::auth::SaslError>(())
//! ```

use std::fmt;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

use crate::status::Severity;

/// A password received from a client. Wiped on drop; never printed.
pub struct Password(Zeroizing<Vec<u8>>);

impl Password {
    /// Wraps bytes (taking them, so no other copy remains with the caller).
    pub fn new(bytes: Vec<u8>) -> Password {
        Password(Zeroizing::new(bytes))
    }

    /// The password's bytes, for the check.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(..)")
    }
}

/// Why a SASL response could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    /// Not base64: `501 5.5.2`.
    #[error("the response is not valid base64")]
    NotBase64,
    /// PLAIN's `authzid NUL user NUL password` shape is wrong: `501 5.5.2`.
    #[error("the PLAIN response is not authzid\\0user\\0password")]
    BadPlain,
    /// The user name is not UTF-8 or is empty: `501 5.5.2`.
    #[error("the user name is empty or not UTF-8")]
    BadUser,
    /// An authorization identity other than the user: `535 5.7.8` (postrider does not let one
    /// user act as another).
    #[error("acting as another user is not allowed")]
    ForeignAuthzid,
    /// The client sent `*`: `501 5.0.0`.
    #[error("authentication aborted by the client")]
    Aborted,
}

/// Why an authenticator could not decide.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The password store could not be read or a check failed to run: `454 4.7.0`.
    #[error("authentication is temporarily unavailable: {0}")]
    Unavailable(String),
}

impl AuthError {
    /// Always temporary: the client may try again later.
    pub fn severity(&self) -> Severity {
        Severity::Temporary
    }
}

/// Checks a user's password. The default is [`PasswordFile`](super::passwd::PasswordFile).
#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// `Ok(true)` when `password` is right for `user`. An implementation must not log the
    /// password, and should take about as long for an unknown user as for a wrong password.
    async fn verify(&self, user: &str, password: Password) -> Result<bool, AuthError>;
}

/// Decodes one base64 line of a SASL exchange; `*` is the client's abort (RFC 4954 §4).
pub fn decode_response(line: &str) -> Result<Zeroizing<Vec<u8>>, SaslError> {
    let line = line.trim();
    if line == "*" {
        return Err(SaslError::Aborted);
    }
    // RFC 4954 §4: "=" is an empty initial response.
    if line == "=" {
        return Ok(Zeroizing::new(Vec::new()));
    }
    STANDARD
        .decode(line)
        .map(Zeroizing::new)
        .map_err(|_| SaslError::NotBase64)
}

/// Decodes a PLAIN response into the user and the password.
pub fn decode_plain(line: &str) -> Result<(String, Password), SaslError> {
    let raw = decode_response(line)?;
    let mut parts = raw.splitn(3, |&b| b == 0);
    let (Some(authzid), Some(user), Some(password)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::BadPlain);
    };
    let user = user_name(user)?;
    if !authzid.is_empty() && authzid != user.as_bytes() {
        return Err(SaslError::ForeignAuthzid);
    }
    Ok((user, Password::new(password.to_vec())))
}

/// Decodes LOGIN's user-name line.
pub fn decode_login_user(line: &str) -> Result<String, SaslError> {
    user_name(&decode_response(line)?)
}

/// Decodes LOGIN's password line.
pub fn decode_login_password(line: &str) -> Result<Password, SaslError> {
    let raw = decode_response(line)?;
    Ok(Password::new(raw.to_vec()))
}

fn user_name(raw: &[u8]) -> Result<String, SaslError> {
    let s = std::str::from_utf8(raw).map_err(|_| SaslError::BadUser)?;
    if s.is_empty() || s.chars().any(char::is_control) || s.len() > 256 {
        return Err(SaslError::BadUser);
    }
    Ok(s.to_string())
}

/// `334` prompts of the LOGIN mechanism, base64 of `Username:` and `Password:`.
pub const LOGIN_USER_PROMPT: &str = "VXNlcm5hbWU6";
/// See [`LOGIN_USER_PROMPT`].
pub const LOGIN_PASSWORD_PROMPT: &str = "UGFzc3dvcmQ6";

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &[u8]) -> String {
        STANDARD.encode(s)
    }

    #[test]
    fn plain_takes_an_empty_or_equal_authzid_only() {
        let (u, p) = decode_plain(&b64(b"alice\0alice\0pw")).unwrap();
        assert_eq!((u.as_str(), p.expose()), ("alice", &b"pw"[..]));
        assert_eq!(
            decode_plain(&b64(b"bob\0alice\0pw")).unwrap_err(),
            SaslError::ForeignAuthzid
        );
        assert_eq!(
            decode_plain(&b64(b"alice\0pw")).unwrap_err(),
            SaslError::BadPlain
        );
        assert_eq!(
            decode_plain(&b64(b"\0\0pw")).unwrap_err(),
            SaslError::BadUser
        );
        assert_eq!(decode_plain("!!!").unwrap_err(), SaslError::NotBase64);
        assert_eq!(decode_plain("*").unwrap_err(), SaslError::Aborted);
        // A NUL inside the password is part of it.
        let (_, p) = decode_plain(&b64(b"\0alice\0p\0w")).unwrap();
        assert_eq!(p.expose(), b"p\0w");
    }

    #[test]
    fn login_lines_decode() {
        assert_eq!(decode_login_user(&b64(b"alice")).unwrap(), "alice");
        assert_eq!(
            decode_login_password(&b64(b"s3cret")).unwrap().expose(),
            b"s3cret"
        );
        assert_eq!(decode_login_user("=").unwrap_err(), SaslError::BadUser);
        assert_eq!(
            String::from_utf8(STANDARD.decode(LOGIN_USER_PROMPT).unwrap()).unwrap(),
            "Username:"
        );
    }
}
