//! The smart host: where mail goes when no mailertable key matches (sendmail's `SMART_HOST`,
//! Postfix's `relayhost`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::hop::{HopError, display_hops, parse_hops};
use super::value::relay_mailer;
use super::{Mailer, NextHop, Route};

/// Why a smart host setting was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmartHostError {
    /// The host list is malformed.
    #[error("smart host {text:?}: {problem}")]
    Hosts {
        /// What is wrong.
        problem: HopError,
        /// The setting.
        text: String,
    },
    /// `local:` or `error:`: a smart host relays.
    #[error(
        "smart host {text:?}: mailer {mailer} cannot relay (use esmtp, smtp, smtp8, relay or smtps)"
    )]
    NotRelay {
        /// The mailer as written.
        mailer: String,
        /// The setting.
        text: String,
    },
    /// `esmpt:[host]`: an unknown mailer prefix.
    #[error(
        "smart host {text:?}: unknown mailer {mailer:?} (known: esmtp, smtp, smtp8, relay, smtps; \
         write fallback hosts with commas: a.example,b.example)"
    )]
    UnknownMailer {
        /// The mailer as written.
        mailer: String,
        /// The setting.
        text: String,
    },
}

/// The relay that takes all mail no mailertable entry claims.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SmartHost {
    mailer: Mailer,
    hops: Vec<NextHop>,
}

impl SmartHost {
    /// A smart host over `mailer` to `hops`, tried in order. `None` if `hops` is empty.
    pub fn new(mailer: Mailer, hops: Vec<NextHop>) -> Option<SmartHost> {
        (!hops.is_empty()).then_some(SmartHost { mailer, hops })
    }

    /// Parses the setting (see the module documentation for the forms).
    pub fn parse(text: &str) -> Result<SmartHost, SmartHostError> {
        let trimmed = text.trim();
        let hosts_error = |problem| SmartHostError::Hosts {
            problem,
            text: text.to_string(),
        };
        let (mailer, hosts) = match trimmed.split_once(':') {
            Some((prefix, rest))
                if !prefix.is_empty() && prefix.bytes().all(|b| b.is_ascii_alphanumeric()) =>
            {
                let lower = prefix.to_ascii_lowercase();
                match relay_mailer(&lower) {
                    Some(m) => (m, rest),
                    None if lower == "local" || lower == "error" => {
                        return Err(SmartHostError::NotRelay {
                            mailer: prefix.to_string(),
                            text: text.to_string(),
                        });
                    }
                    // `mailhub:2525` is a single-label host with a port, not a mailer.
                    None if rest.trim().bytes().all(|b| b.is_ascii_digit()) => {
                        (Mailer::Relay, trimmed)
                    }
                    None => {
                        return Err(SmartHostError::UnknownMailer {
                            mailer: prefix.to_string(),
                            text: text.to_string(),
                        });
                    }
                }
            }
            _ => (Mailer::Relay, trimmed),
        };
        let hops = parse_hops(hosts).map_err(hosts_error)?;
        Ok(SmartHost { mailer, hops })
    }

    /// The mailer (`relay` unless the setting named one).
    pub fn mailer(&self) -> Mailer {
        self.mailer
    }

    /// The hosts, in the order to try.
    pub fn hops(&self) -> &[NextHop] {
        &self.hops
    }

    /// The route to the smart host.
    pub fn route(&self) -> Route {
        Route::Relay {
            mailer: self.mailer,
            hops: self.hops.clone(),
        }
    }
}

impl fmt::Display for SmartHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.mailer, display_hops(&self.hops))
    }
}

impl FromStr for SmartHost {
    type Err = SmartHostError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SmartHost::parse(s)
    }
}

impl Serialize for SmartHost {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SmartHost {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        SmartHost::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(text: &str) -> String {
        SmartHost::parse(text).unwrap().to_string()
    }

    #[test]
    fn every_form_sendmail_and_postfix_users_write_parses() {
        assert_eq!(shown("[smtp.gmail.com]:587"), "relay:[smtp.gmail.com]:587");
        assert_eq!(shown("smtp-relay.gmail.com"), "relay:smtp-relay.gmail.com");
        assert_eq!(shown("[192.0.2.25]"), "relay:[192.0.2.25]");
        assert_eq!(
            shown("smtps:[smtp.gmail.com]:465"),
            "smtps:[smtp.gmail.com]:465"
        );
        assert_eq!(shown("relay:[mail.isp.net]"), "relay:[mail.isp.net]");
        assert_eq!(
            shown("esmtp:[a.example],[b.example]"),
            "esmtp:[a.example],[b.example]"
        );
        assert_eq!(shown("mailhub:2525"), "relay:mailhub:2525");
    }

    #[test]
    fn a_mistyped_mailer_is_refused_rather_than_taken_for_a_host() {
        let err = SmartHost::parse("esmpt:[smtp.gmail.com]").unwrap_err();
        assert!(matches!(err, SmartHostError::UnknownMailer { .. }), "{err}");
        let err = SmartHost::parse("local:").unwrap_err();
        assert!(matches!(err, SmartHostError::NotRelay { .. }), "{err}");
    }

    #[test]
    fn bad_hosts_name_the_setting() {
        let err = SmartHost::parse("[smtp.gmail.com]:99999").unwrap_err();
        assert_eq!(
            err.to_string(),
            "smart host \"[smtp.gmail.com]:99999\": bad port \"99999\" (ports are 1 to 65535)"
        );
        assert!(SmartHost::parse("  ").is_err());
    }
}
