//! The SMTP envelope: sender, recipients and the DSN parameters of RFC 3461.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::address::{Address, AddressError, ReversePath};

/// RFC 3461 §4.3: an ENVID is at most 100 characters.
pub const MAX_ENVID: usize = 100;

/// Why an envelope or one of its DSN parameters was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// An envelope needs at least one recipient.
    #[error("the envelope has no recipients")]
    NoRecipients,
    /// A NOTIFY value other than NEVER or a list of SUCCESS, FAILURE, DELAY.
    #[error("NOTIFY={input:?} is invalid: use NEVER, or any of SUCCESS,FAILURE,DELAY")]
    BadNotify {
        /// The value given.
        input: String,
    },
    /// A RET value other than FULL or HDRS.
    #[error("RET={input:?} is invalid: use FULL or HDRS")]
    BadRet {
        /// The value given.
        input: String,
    },
    /// An ENVID that is too long or has characters outside printable ASCII.
    #[error("ENVID {input:?} is invalid: {reason}")]
    BadEnvid {
        /// The value given.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An ORCPT that is not `addr-type;address`.
    #[error("ORCPT {input:?} is invalid: expected addr-type;address, e.g. rfc822;user@example.com")]
    BadOrcpt {
        /// The value given.
        input: String,
    },
    /// xtext with a bad `+XX` escape.
    #[error("xtext {input:?} has a bad +XX escape")]
    BadXtext {
        /// The value given.
        input: String,
    },
    /// A recipient or sender address did not parse.
    #[error(transparent)]
    Address(#[from] AddressError),
}

/// RET: whether a DSN returns the whole message or only its headers (RFC 3461 §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Ret {
    /// Return the full message.
    Full,
    /// Return the headers only.
    Hdrs,
}

impl FromStr for Ret {
    type Err = EnvelopeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "FULL" => Ok(Ret::Full),
            "HDRS" => Ok(Ret::Hdrs),
            _ => Err(EnvelopeError::BadRet {
                input: s.to_string(),
            }),
        }
    }
}

impl fmt::Display for Ret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ret::Full => "FULL",
            Ret::Hdrs => "HDRS",
        })
    }
}

/// NOTIFY: which events the sender wants a DSN for (RFC 3461 §4.1).
///
/// All three false is `NEVER`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Notify {
    /// A DSN when the message is delivered.
    pub success: bool,
    /// A DSN when delivery fails.
    pub failure: bool,
    /// A DSN when delivery is delayed.
    pub delay: bool,
}

impl Notify {
    /// `NOTIFY=NEVER`.
    pub const NEVER: Notify = Notify {
        success: false,
        failure: false,
        delay: false,
    };

    /// What an MTA does when NOTIFY is absent: report failures and delays (RFC 3461 §4.1).
    pub const DEFAULT: Notify = Notify {
        success: false,
        failure: true,
        delay: true,
    };

    /// True for `NEVER`.
    pub fn is_never(&self) -> bool {
        *self == Notify::NEVER
    }
}

impl FromStr for Notify {
    type Err = EnvelopeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || EnvelopeError::BadNotify {
            input: s.to_string(),
        };
        if s.eq_ignore_ascii_case("NEVER") {
            return Ok(Notify::NEVER);
        }
        let mut n = Notify::NEVER;
        for word in s.split(',') {
            let flag = match word.to_ascii_uppercase().as_str() {
                "SUCCESS" => &mut n.success,
                "FAILURE" => &mut n.failure,
                "DELAY" => &mut n.delay,
                _ => return Err(bad()),
            };
            if *flag {
                return Err(bad());
            }
            *flag = true;
        }
        Ok(n)
    }
}

impl fmt::Display for Notify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_never() {
            return f.write_str("NEVER");
        }
        let words: Vec<&str> = [
            (self.success, "SUCCESS"),
            (self.failure, "FAILURE"),
            (self.delay, "DELAY"),
        ]
        .into_iter()
        .filter_map(|(on, w)| on.then_some(w))
        .collect();
        f.write_str(&words.join(","))
    }
}

impl Serialize for Notify {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Notify {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// ORCPT: the original recipient as the first MTA saw it (RFC 3461 §4.2), decoded from xtext.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OriginalRecipient {
    /// The address type, almost always `rfc822` (`utf-8` under RFC 6533).
    pub addr_type: String,
    /// The address, decoded.
    pub address: String,
}

impl OriginalRecipient {
    /// The ORCPT of an address first seen here: `rfc822;user@example.com`.
    pub fn rfc822(address: &Address) -> OriginalRecipient {
        OriginalRecipient {
            addr_type: "rfc822".into(),
            address: address.to_string(),
        }
    }

    /// Parses the ESMTP parameter value `addr-type;xtext` (the wire form).
    pub fn parse_xtext(input: &str) -> Result<OriginalRecipient, EnvelopeError> {
        let (t, a) = input
            .split_once(';')
            .ok_or_else(|| EnvelopeError::BadOrcpt {
                input: input.to_string(),
            })?;
        if t.is_empty()
            || a.is_empty()
            || !t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(EnvelopeError::BadOrcpt {
                input: input.to_string(),
            });
        }
        Ok(OriginalRecipient {
            addr_type: t.to_ascii_lowercase(),
            address: xtext_decode(a)?,
        })
    }

    /// The wire form with the address xtext-encoded.
    pub fn to_xtext(&self) -> String {
        format!("{};{}", self.addr_type, xtext_encode(&self.address))
    }
}

impl fmt::Display for OriginalRecipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{};{}", self.addr_type, self.address)
    }
}

impl Serialize for OriginalRecipient {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for OriginalRecipient {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let (t, a) = s
            .split_once(';')
            .ok_or_else(|| serde::de::Error::custom(format!("ORCPT {s:?} has no ';'")))?;
        Ok(OriginalRecipient {
            addr_type: t.to_string(),
            address: a.to_string(),
        })
    }
}

/// One envelope recipient with its DSN parameters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Recipient {
    /// Where the message goes.
    pub address: Address,
    /// NOTIFY as given; `None` means the sender did not say (see [`Notify::DEFAULT`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Notify>,
    /// ORCPT as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orcpt: Option<OriginalRecipient>,
}

impl Recipient {
    /// A recipient without DSN parameters.
    pub fn new(address: Address) -> Recipient {
        Recipient {
            address,
            notify: None,
            orcpt: None,
        }
    }

    /// The NOTIFY that applies: as given, or the default (failure and delay).
    pub fn effective_notify(&self) -> Notify {
        self.notify.unwrap_or(Notify::DEFAULT)
    }
}

impl From<Address> for Recipient {
    fn from(a: Address) -> Self {
        Recipient::new(a)
    }
}

/// The body type declared with `MAIL FROM ... BODY=` (RFC 6152).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyType {
    /// Only 7-bit ASCII.
    #[default]
    SevenBit,
    /// Has octets above 127 (`BODY=8BITMIME`).
    EightBitMime,
}

/// The envelope of one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// MAIL FROM.
    pub sender: ReversePath,
    /// RCPT TO, in order.
    pub recipients: Vec<Recipient>,
    /// RET.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ret: Option<Ret>,
    /// ENVID, decoded from xtext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envid: Option<String>,
    /// BODY=; the engine sets it from the body at submission.
    #[serde(default)]
    pub body: BodyType,
    /// SMTPUTF8 was requested or is needed by an address.
    #[serde(default)]
    pub smtputf8: bool,
    /// REQUIRETLS (RFC 8689): deliver only over TLS to an authenticated server (DANE or
    /// MTA-STS `enforce`, or a `verify` policy line) that itself supports REQUIRETLS.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub requiretls: bool,
}

impl Envelope {
    /// An envelope with default DSN parameters.
    ///
    /// ```
    /// use postrider::{Address, Envelope, ReversePath};
    /// let env = Envelope::new(
    ///     ReversePath::parse("pbx@example.com")?,
    ///     [Address::parse("alice@example.org")?],
    /// );
    /// assert_eq!(env.recipients.len(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(
        sender: ReversePath,
        recipients: impl IntoIterator<Item = impl Into<Recipient>>,
    ) -> Envelope {
        Envelope {
            sender,
            recipients: recipients.into_iter().map(Into::into).collect(),
            ret: None,
            envid: None,
            body: BodyType::SevenBit,
            smtputf8: false,
            requiretls: false,
        }
    }

    /// Sets ENVID after checking it is printable ASCII of at most 100 characters.
    pub fn set_envid(&mut self, envid: &str) -> Result<(), EnvelopeError> {
        validate_envid(envid)?;
        self.envid = Some(envid.to_string());
        Ok(())
    }

    /// Checks what [`Envelope::new`] cannot: at least one recipient and a sane ENVID.
    pub fn validate(&self) -> Result<(), EnvelopeError> {
        if self.recipients.is_empty() {
            return Err(EnvelopeError::NoRecipients);
        }
        if let Some(e) = &self.envid {
            validate_envid(e)?;
        }
        Ok(())
    }

    /// True when some address needs SMTPUTF8 to be relayed, or the submitter asked for it.
    pub fn needs_smtputf8(&self) -> bool {
        self.smtputf8
            || self.sender.address().is_some_and(Address::needs_smtputf8)
            || self.recipients.iter().any(|r| r.address.needs_smtputf8())
    }
}

fn validate_envid(envid: &str) -> Result<(), EnvelopeError> {
    let bad = |reason| EnvelopeError::BadEnvid {
        input: envid.to_string(),
        reason,
    };
    if envid.is_empty() {
        return Err(bad("it is empty"));
    }
    if envid.len() > MAX_ENVID {
        return Err(bad("it is longer than 100 characters"));
    }
    if !envid.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        return Err(bad("it has characters outside printable ASCII"));
    }
    Ok(())
}

/// Encodes a string as RFC 3461 xtext: `+`, `=`, controls, space and non-ASCII become `+XX`.
pub fn xtext_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

/// Decodes RFC 3461 xtext.
pub fn xtext_decode(s: &str) -> Result<String, EnvelopeError> {
    let bad = || EnvelopeError::BadXtext {
        input: s.to_string(),
    };
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'+' {
            let hex = bytes.get(i + 1..i + 3).ok_or_else(bad)?;
            // `from_str_radix` alone would also take a sign: `++A` is not an escape.
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return Err(bad());
            }
            let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_parses_lists_and_never() {
        assert_eq!("NEVER".parse::<Notify>().unwrap(), Notify::NEVER);
        let n: Notify = "success,Delay".parse().unwrap();
        assert!(n.success && n.delay && !n.failure);
        assert_eq!(n.to_string(), "SUCCESS,DELAY");
        for bad in ["", "NEVER,SUCCESS", "SUCCESS,SUCCESS", "sometimes"] {
            assert!(bad.parse::<Notify>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn absent_notify_means_failure_and_delay() {
        let r = Recipient::new(Address::parse("a@b.example").unwrap());
        assert_eq!(r.effective_notify(), Notify::DEFAULT);
    }

    #[test]
    fn xtext_round_trips() {
        let s = "a+b=c d\u{e9}";
        let enc = xtext_encode(s);
        assert_eq!(enc, "a+2Bb+3Dc+20d+C3+A9");
        assert_eq!(xtext_decode(&enc).unwrap(), s);
        assert!(xtext_decode("abc+4").is_err());
        assert!(xtext_decode("abc+ZZ").is_err());
    }

    #[test]
    fn fuzz_regressions_an_xtext_escape_is_two_hex_digits_not_a_signed_number() {
        // Found by fuzz/address: `u8::from_str_radix("+0", 16)` is 0, so `++0` decoded to NUL.
        for bad in ["++0", "++20", "a++A"] {
            assert!(xtext_decode(bad).is_err(), "{bad:?} accepted");
        }
        assert!(OriginalRecipient::parse_xtext("rfc822;++0").is_err());
    }

    #[test]
    fn orcpt_parses_the_wire_form() {
        let o = OriginalRecipient::parse_xtext("rfc822;bob+2Bx@example.com").unwrap();
        assert_eq!(o.address, "bob+x@example.com");
        assert_eq!(o.to_xtext(), "rfc822;bob+2Bx@example.com");
        assert!(OriginalRecipient::parse_xtext("no-semicolon").is_err());
    }

    #[test]
    fn envelopes_need_a_recipient_and_a_sane_envid() {
        let mut env = Envelope::new(ReversePath::Null, Vec::<Address>::new());
        assert_eq!(env.validate(), Err(EnvelopeError::NoRecipients));
        env.recipients
            .push(Recipient::new(Address::parse("a@b.example").unwrap()));
        assert!(env.validate().is_ok());
        assert!(env.set_envid(&"x".repeat(101)).is_err());
        assert!(env.set_envid("bad\u{1}").is_err());
        assert!(env.set_envid("QID-123").is_ok());
    }

    #[test]
    fn envelope_round_trips_through_json() {
        let mut env = Envelope::new(
            ReversePath::parse("s@a.example").unwrap(),
            [Address::parse("r@b.example").unwrap()],
        );
        env.ret = Some(Ret::Hdrs);
        env.recipients[0].notify = Some(Notify::NEVER);
        env.recipients[0].orcpt = Some(OriginalRecipient::rfc822(&env.recipients[0].address));
        let json = serde_json::to_string(&env).unwrap();
        assert_eq!(serde_json::from_str::<Envelope>(&json).unwrap(), env);
    }

    #[test]
    fn requiretls_is_stored_only_when_set_and_records_without_it_read_as_unset() {
        let mut env = Envelope::new(
            ReversePath::parse("s@a.example").unwrap(),
            [Address::parse("r@b.example").unwrap()],
        );
        let plain = serde_json::to_string(&env).unwrap();
        assert!(!plain.contains("requiretls"), "{plain}");
        // A record written before the flag existed is this very JSON: it reads as unset.
        assert!(!serde_json::from_str::<Envelope>(&plain).unwrap().requiretls);
        env.requiretls = true;
        let flagged = serde_json::to_string(&env).unwrap();
        assert!(flagged.contains("\"requiretls\":true"), "{flagged}");
        assert!(
            serde_json::from_str::<Envelope>(&flagged)
                .unwrap()
                .requiretls
        );
    }
}
