//! SMTP AUTH (RFC 4954): choosing a mechanism and encoding the client's responses.
//!
//! PLAIN (RFC 4616) and LOGIN are spoken. CRAM-MD5 is not: it would need an MD5 implementation
//! for a mechanism RFC 8314's TLS-everywhere world has retired, and every server that offers it
//! also offers PLAIN or LOGIN under TLS.

use crate::route::Credentials;

/// An AUTH mechanism the client can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// PLAIN, sent with an initial response.
    Plain,
    /// LOGIN: user name and password each answer a 334 prompt.
    Login,
}

impl Mechanism {
    /// The mechanism's name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
        }
    }

    /// The best mechanism among those offered (PLAIN before LOGIN), if any is spoken here.
    pub fn choose(offered: &[String]) -> Option<Mechanism> {
        let has = |m: Mechanism| offered.iter().any(|o| o.eq_ignore_ascii_case(m.name()));
        [Mechanism::Plain, Mechanism::Login]
            .into_iter()
            .find(|&m| has(m))
    }
}

/// The PLAIN initial response: base64 of `NUL user NUL password` (no authorization identity).
pub fn plain_response(c: &Credentials) -> String {
    let mut raw = Vec::with_capacity(c.username.len() + c.password.expose().len() + 2);
    raw.push(0);
    raw.extend_from_slice(c.username.as_bytes());
    raw.push(0);
    raw.extend_from_slice(c.password.expose().as_bytes());
    base64_encode(&raw)
}

/// Standard base64 with padding (RFC 4648 §4), as AUTH exchanges use.
pub fn base64_encode(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_4648_test_vectors() {
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(plain.as_bytes()), enc);
        }
    }

    #[test]
    fn the_plain_response_is_nul_user_nul_password() {
        let c = Credentials::new("tim", "tanstaaftanstaaf");
        // RFC 4616 §4's example without the authorization identity.
        assert_eq!(
            plain_response(&c),
            base64_encode(b"\0tim\0tanstaaftanstaaf")
        );
        assert_eq!(plain_response(&c), "AHRpbQB0YW5zdGFhZnRhbnN0YWFm");
    }

    #[test]
    fn plain_is_preferred_and_unknown_mechanisms_are_not_chosen() {
        let offered = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            Mechanism::choose(&offered(&["LOGIN", "PLAIN"])),
            Some(Mechanism::Plain)
        );
        assert_eq!(
            Mechanism::choose(&offered(&["CRAM-MD5", "login"])),
            Some(Mechanism::Login)
        );
        assert_eq!(Mechanism::choose(&offered(&["XOAUTH2", "CRAM-MD5"])), None);
    }
}
