//! The DKIM key record in DNS (RFC 6376 §3.6.1): rendering the one to publish for a key, and
//! reading a published one (untrusted input: a pure parser, fuzzed) to check it matches.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::key::{PrivateKey, rsa_public_key_of};

/// The longest character-string in a TXT record (RFC 1035 §3.3).
const TXT_STRING: usize = 255;

/// A DKIM key record.
///
/// ```
/// use postrider::dkim::DkimRecord;
/// let r = DkimRecord::parse(b"v=DKIM1; k=ed25519; t=y; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=")?;
/// assert_eq!(r.key_type, "ed25519");
/// assert!(r.testing);
/// assert_eq!(r.public_key.len(), 32);
/// # Ok::<(), postrider::dkim::RecordError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DkimRecord {
    /// `k=`: `rsa` (the default) or `ed25519`, lower-cased.
    pub key_type: String,
    /// `p=`, decoded; empty when the key is revoked.
    pub public_key: Vec<u8>,
    /// `t=y`: the domain is testing DKIM (verifiers treat failures as no signature).
    pub testing: bool,
    /// `t=s`: the `i=` domain must be exactly `d=`.
    pub strict: bool,
}

/// Why a TXT record is not a usable DKIM key record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// `v=` is not `DKIM1`.
    #[error("its version is {0:?}, not DKIM1")]
    NotDkim(String),
    /// `v=` is present but not the first tag.
    #[error("v=DKIM1 must be its first tag")]
    VersionNotFirst,
    /// A tag appears twice.
    #[error("the tag {0}= appears twice")]
    DuplicateTag(String),
    /// Not a `tag=value; ...` list.
    #[error("it is not a tag=value list (at octet {at}: {what})")]
    Syntax {
        /// Where, from 0.
        at: usize,
        /// What was expected.
        what: &'static str,
    },
    /// No `p=` tag.
    #[error("it has no p= tag (public key)")]
    NoPublicKey,
    /// `p=` is not base64.
    #[error("its p= tag is not valid base64")]
    BadBase64,
    /// `k=` is not a key type name (letters, digits, hyphens).
    #[error("its k= tag {0:?} is not a key type")]
    BadKeyType(String),
}

impl DkimRecord {
    /// The record that publishes `key`.
    pub fn for_key(key: &PrivateKey) -> DkimRecord {
        DkimRecord {
            key_type: key.algorithm().key_type().to_string(),
            public_key: key.public_key().to_vec(),
            testing: false,
            strict: false,
        }
    }

    /// Parses the text of a TXT record (its character-strings joined).
    pub fn parse(txt: &[u8]) -> Result<DkimRecord, RecordError> {
        let tags = tag_list(txt)?;
        if let Some(pos) = tags.iter().position(|(n, _)| n == "v") {
            if pos != 0 {
                return Err(RecordError::VersionNotFirst);
            }
            let v = String::from_utf8_lossy(&tags[0].1).into_owned();
            if v != "DKIM1" {
                return Err(RecordError::NotDkim(v));
            }
        }
        let get = |name: &str| tags.iter().find(|(n, _)| n == name).map(|(_, v)| v);
        let key_type = match get("k") {
            None => "rsa".to_string(),
            // RFC 6376 §3.6.1: `rsa` or an extension name (letters, digits, hyphens).
            Some(k)
                if !k.is_empty() && k.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-') =>
            {
                String::from_utf8_lossy(k).to_ascii_lowercase()
            }
            Some(k) => {
                return Err(RecordError::BadKeyType(
                    String::from_utf8_lossy(k).chars().take(20).collect(),
                ));
            }
        };
        let p = get("p").ok_or(RecordError::NoPublicKey)?;
        let compact: Vec<u8> = p
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        let public_key = STANDARD
            .decode(&compact)
            .map_err(|_| RecordError::BadBase64)?;
        let flags: Vec<Vec<u8>> = get("t").map_or_else(Vec::new, |t| {
            t.split(|&b| b == b':')
                .map(|f| f.trim_ascii().to_ascii_lowercase())
                .collect()
        });
        Ok(DkimRecord {
            key_type,
            public_key,
            testing: flags.iter().any(|f| f == b"y"),
            strict: flags.iter().any(|f| f == b"s"),
        })
    }

    /// True when `p=` is empty: the key was revoked (RFC 6376 §3.6.1).
    pub fn is_revoked(&self) -> bool {
        self.public_key.is_empty()
    }

    /// True when both records name the same key. An RSA key may be published as
    /// `SubjectPublicKeyInfo` or as a bare `RSAPublicKey`; both forms compare equal.
    pub fn same_key(&self, other: &DkimRecord) -> bool {
        if self.key_type != other.key_type || self.is_revoked() || other.is_revoked() {
            return false;
        }
        if self.key_type == "rsa" {
            rsa_public_key_of(&self.public_key) == rsa_public_key_of(&other.public_key)
        } else {
            self.public_key == other.public_key
        }
    }

    /// The record as one string: `v=DKIM1; k=rsa; p=MIIB...`.
    pub fn text(&self) -> String {
        let mut t = format!("v=DKIM1; k={}", self.key_type);
        match (self.testing, self.strict) {
            (true, true) => t.push_str("; t=y:s"),
            (true, false) => t.push_str("; t=y"),
            (false, true) => t.push_str("; t=s"),
            (false, false) => {}
        }
        t.push_str("; p=");
        t.push_str(&STANDARD.encode(&self.public_key));
        t
    }

    /// The record as a zone-file line for `name`, its text cut into the 255-character strings
    /// a TXT record holds: `NAME. TXT "v=DKIM1; k=rsa; p=MIIB..." "...rest"`.
    pub fn zone_line(&self, name: &str) -> String {
        let text = self.text();
        let strings: Vec<String> = text
            .as_bytes()
            .chunks(TXT_STRING)
            .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
            .collect();
        format!("{name}. TXT {}", strings.join(" "))
    }
}

impl fmt::Display for DkimRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

/// The DNS name of a key record: `selector._domainkey.domain`.
pub fn record_name(selector: &str, domain: &str) -> String {
    format!("{selector}._domainkey.{domain}")
}

fn is_fws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// RFC 6376 §3.2: `tag = value` pairs separated by `;`, with folding white space around them.
/// Names are lower-cased (they are case-sensitive in the RFC, but every record seen in the
/// wild that capitalises one means the lower-case tag); values keep inner white space.
fn tag_list(txt: &[u8]) -> Result<Vec<(String, Vec<u8>)>, RecordError> {
    let mut tags: Vec<(String, Vec<u8>)> = Vec::new();
    let mut i = 0;
    loop {
        while i < txt.len() && is_fws(txt[i]) {
            i += 1;
        }
        if i == txt.len() {
            break;
        }
        let start = i;
        if !txt[i].is_ascii_alphabetic() {
            return Err(RecordError::Syntax {
                at: i,
                what: "a tag name",
            });
        }
        while i < txt.len() && (txt[i].is_ascii_alphanumeric() || txt[i] == b'_') {
            i += 1;
        }
        let name = String::from_utf8_lossy(&txt[start..i]).to_ascii_lowercase();
        while i < txt.len() && is_fws(txt[i]) {
            i += 1;
        }
        if txt.get(i) != Some(&b'=') {
            return Err(RecordError::Syntax {
                at: i,
                what: "'=' after the tag name",
            });
        }
        i += 1;
        let value_start = i;
        while i < txt.len() && txt[i] != b';' {
            i += 1;
        }
        let value = txt[value_start..i].trim_ascii().to_vec();
        if tags.iter().any(|(n, _)| *n == name) {
            return Err(RecordError::DuplicateTag(name));
        }
        tags.push((name, value));
        if i < txt.len() {
            i += 1; // the ';'
        }
    }
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dkim::key::tests::{ED25519_PEM, RSA_PKCS8_PEM};

    #[test]
    fn the_record_for_a_key_reads_back_as_the_same_key() {
        for pem in [RSA_PKCS8_PEM, ED25519_PEM] {
            let key = PrivateKey::parse(pem.as_bytes()).unwrap();
            let ours = DkimRecord::for_key(&key);
            let text = ours.text();
            assert!(text.starts_with(&format!("v=DKIM1; k={}; p=", ours.key_type)));
            let back = DkimRecord::parse(text.as_bytes()).unwrap();
            assert!(ours.same_key(&back));
        }
    }

    #[test]
    fn an_rsa_key_published_without_its_spki_wrapper_is_the_same_key() {
        let key = PrivateKey::parse(RSA_PKCS8_PEM.as_bytes()).unwrap();
        let ours = DkimRecord::for_key(&key);
        let bare = DkimRecord {
            public_key: rsa_public_key_of(&ours.public_key).to_vec(),
            ..ours.clone()
        };
        assert!(ours.same_key(&bare));
        let other = DkimRecord {
            public_key: vec![1, 2, 3],
            ..ours.clone()
        };
        assert!(!ours.same_key(&other));
    }

    #[test]
    fn records_are_read_leniently_about_white_space_and_strictly_about_tags() {
        let r = DkimRecord::parse(b" v = DKIM1 ;k=RSA;\r\n p= AQID\r\n BA== ;").unwrap();
        assert_eq!(
            (r.key_type.as_str(), r.public_key.as_slice()),
            ("rsa", &[1u8, 2, 3, 4][..])
        );
        assert!(DkimRecord::parse(b"p=").unwrap().is_revoked());
        assert_eq!(
            DkimRecord::parse(b"k=rsa; v=DKIM1; p=AQID").unwrap_err(),
            RecordError::VersionNotFirst
        );
        assert_eq!(
            DkimRecord::parse(b"v=spf1 -all").unwrap_err(),
            RecordError::NotDkim("spf1 -all".into())
        );
        assert_eq!(
            DkimRecord::parse(b"v=DKIM1; k=rsa").unwrap_err(),
            RecordError::NoPublicKey
        );
        assert_eq!(
            DkimRecord::parse(b"p=AQID; p=AQID").unwrap_err(),
            RecordError::DuplicateTag("p".into())
        );
        assert_eq!(
            DkimRecord::parse(b"p=!!").unwrap_err(),
            RecordError::BadBase64
        );
        assert!(matches!(
            DkimRecord::parse(b"just text").unwrap_err(),
            RecordError::Syntax { .. }
        ));
    }

    #[test]
    fn fuzz_regressions_a_key_type_that_is_no_name_is_refused() {
        // Found by fuzz/dkim_record: raw octets in k= made a zone line with strings longer
        // than 255 characters (and could have put a quote in it).
        let input = b"\np=;\rk=r\xff\xff\xffps.\xc2\xc2)\xc2\xb0\xb0a\xb0=\0";
        assert!(matches!(
            DkimRecord::parse(input),
            Err(RecordError::BadKeyType(_)) | Err(RecordError::Syntax { .. })
        ));
        assert!(matches!(
            DkimRecord::parse(b"k=r\"sa; p=AQID"),
            Err(RecordError::BadKeyType(_))
        ));
        assert!(matches!(
            DkimRecord::parse(b"k=; p=AQID"),
            Err(RecordError::BadKeyType(_))
        ));
        assert_eq!(
            DkimRecord::parse(b"k=x-new; p=AQID").unwrap().key_type,
            "x-new"
        );
    }

    #[test]
    fn the_zone_line_cuts_the_text_into_255_character_strings() {
        let key = PrivateKey::parse(RSA_PKCS8_PEM.as_bytes()).unwrap();
        let r = DkimRecord::for_key(&key);
        let line = r.zone_line("pbx._domainkey.example.com");
        assert!(line.starts_with("pbx._domainkey.example.com. TXT \"v=DKIM1; k=rsa; p=MIIB"));
        let strings: Vec<&str> = line.split('"').skip(1).step_by(2).collect();
        assert_eq!(strings.len(), 2, "{line}");
        assert_eq!(strings[0].len(), 255);
        assert_eq!(strings.concat(), r.text());
        assert_eq!(
            record_name("pbx", "example.com"),
            "pbx._domainkey.example.com"
        );
    }
}
