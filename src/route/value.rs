//! The mailertable value grammar: `mailer:hosts` for the relaying mailers, `local:` and
//! `local:user`, and `error:D.S.N:CODE text`.

use crate::status::{EnhancedStatus, Reply, StatusError};

use super::hop::{HopError, parse_hops};
use super::{LocalTarget, Mailer, Route};

/// The mailer names a mailertable may use, in the order error messages list them.
pub const MAILER_NAMES: [&str; 7] = ["esmtp", "smtp", "smtp8", "relay", "smtps", "local", "error"];

const KNOWN: &str = "esmtp, smtp, smtp8, relay, smtps, local, error";

/// Why an `error:` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErrorSpecProblem {
    /// No three-digit reply code.
    #[error("no reply code")]
    NoCode,
    /// The code is not three digits.
    #[error("{code:?} is not a reply code")]
    BadCode {
        /// What was written.
        code: String,
    },
    /// A 2xx or 3xx code: an error route must refuse.
    #[error("reply code {code} does not refuse mail (use 4xx to defer, 5xx to fail)")]
    NotFailure {
        /// The code.
        code: u16,
    },
    /// A bad enhanced status, or one that disagrees with the code.
    #[error(transparent)]
    Status(#[from] StatusError),
}

/// Why a mailertable value was refused. Every message quotes the whole value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// Nothing after the key.
    #[error("empty value")]
    Empty,
    /// No `mailer:` prefix.
    #[error("no mailer in {value:?}; write mailer:host, e.g. esmtp:{value}")]
    NoMailer {
        /// The value.
        value: String,
    },
    /// A mailer postrider does not know (a typo, or a sendmail mailer such as `procmail`).
    #[error("unknown mailer {mailer:?} in {value:?} (known: {KNOWN})")]
    UnknownMailer {
        /// The mailer as written.
        mailer: String,
        /// The value.
        value: String,
    },
    /// `esmtp:` with nothing after it.
    #[error("mailer {mailer} needs a host in {value:?}, e.g. {mailer}:[mail.example.com]")]
    NoHost {
        /// The mailer.
        mailer: Mailer,
        /// The value.
        value: String,
    },
    /// The host list is malformed.
    #[error("{problem} in {value:?}")]
    Hosts {
        /// What is wrong with the list.
        problem: HopError,
        /// The value.
        value: String,
    },
    /// `local:` followed by something that is not a user name.
    #[error("bad local user {user:?} in {value:?} (expected a user name such as local:postmaster)")]
    LocalUser {
        /// The user as written.
        user: String,
        /// The value.
        value: String,
    },
    /// A malformed `error:` value.
    #[error(
        "{problem} in {value:?} (expected error:D.S.N:CODE text, e.g. error:5.7.0:550 mail to this domain is not accepted)"
    )]
    ErrorSpec {
        /// What is wrong.
        problem: ErrorSpecProblem,
        /// The value.
        value: String,
    },
    /// sendmail's `%1` substitution: refused rather than misrouted.
    #[error(
        "sendmail macro {token:?} in {value:?} is not supported; write one entry per domain with the host spelled out"
    )]
    Macro {
        /// The macro (`%1`).
        token: String,
        /// The value.
        value: String,
    },
}

/// Parses a mailertable value (the text after the key) into a route.
pub fn parse_value(value: &str) -> Result<Route, ValueError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(ValueError::Empty);
    }
    if let Some(i) = value
        .as_bytes()
        .windows(2)
        .position(|w| w[0] == b'%' && w[1].is_ascii_digit())
    {
        return Err(ValueError::Macro {
            token: value[i..i + 2].to_string(),
            value: value.to_string(),
        });
    }
    let (mailer, rest) = match value.split_once(':') {
        Some((m, rest)) if !m.is_empty() && m.bytes().all(|b| b.is_ascii_alphanumeric()) => {
            (m, rest.trim())
        }
        _ => {
            return Err(ValueError::NoMailer {
                value: value.to_string(),
            });
        }
    };
    match mailer.to_ascii_lowercase().as_str() {
        "local" => parse_local(rest, value),
        "error" => parse_error(rest).map_err(|problem| ValueError::ErrorSpec {
            problem,
            value: value.to_string(),
        }),
        name => match relay_mailer(name) {
            Some(m) => parse_relay(m, rest, value),
            None => Err(ValueError::UnknownMailer {
                mailer: mailer.to_string(),
                value: value.to_string(),
            }),
        },
    }
}

/// The relaying mailer with this (lower-case) name.
pub(crate) fn relay_mailer(name: &str) -> Option<Mailer> {
    Some(match name {
        "esmtp" => Mailer::Esmtp,
        "smtp" => Mailer::Smtp,
        "smtp8" => Mailer::Smtp8,
        "relay" => Mailer::Relay,
        "smtps" => Mailer::Smtps,
        _ => return None,
    })
}

fn parse_relay(mailer: Mailer, hosts: &str, value: &str) -> Result<Route, ValueError> {
    if hosts.is_empty() {
        return Err(ValueError::NoHost {
            mailer,
            value: value.to_string(),
        });
    }
    let hops = parse_hops(hosts).map_err(|problem| ValueError::Hosts {
        problem,
        value: value.to_string(),
    })?;
    Ok(Route::Relay { mailer, hops })
}

fn parse_local(user: &str, value: &str) -> Result<Route, ValueError> {
    if user.is_empty() {
        return Ok(Route::local());
    }
    if !is_user_name(user) {
        return Err(ValueError::LocalUser {
            user: user.to_string(),
            value: value.to_string(),
        });
    }
    Ok(Route::Local {
        target: LocalTarget::User(user.to_string()),
    })
}

/// An RFC 5321 dot-string: what a local user may be named without quoting.
fn is_user_name(s: &str) -> bool {
    let atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c);
    s.len() <= crate::address::MAX_LOCAL_PART
        && s.split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(atext))
}

/// `[D.S.N:]CODE [text]`, the code and text optionally in double quotes (access-map style).
fn parse_error(spec: &str) -> Result<Route, ErrorSpecProblem> {
    let (status, rest) = match spec.split_once(':') {
        Some((s, rest)) if s.contains('.') && !s.contains(char::is_whitespace) => {
            (Some(EnhancedStatus::parse(s.trim())?), rest.trim())
        }
        _ => (None, spec),
    };
    let rest = match rest.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(unquoted) => unquoted.trim(),
        None => rest,
    };
    let (code, text) = match rest.find(char::is_whitespace) {
        Some(i) => (&rest[..i], rest[i..].trim()),
        None => (rest, ""),
    };
    if code.is_empty() {
        return Err(ErrorSpecProblem::NoCode);
    }
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ErrorSpecProblem::BadCode {
            code: code.to_string(),
        });
    }
    let code: u16 = code.parse().map_err(|_| ErrorSpecProblem::BadCode {
        code: code.to_string(),
    })?;
    if !(400..600).contains(&code) {
        return Err(ErrorSpecProblem::NotFailure { code });
    }
    // sendmail sends an empty text as is; a DSN reader deserves to know who refused.
    let text = match text {
        "" if code >= 500 => "mail for this domain is refused by the mailertable",
        "" => "mail for this domain is deferred by the mailertable",
        t => t,
    };
    let reply = Reply::new(code, status, text)?;
    Ok(Route::Reject { reply })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(value: &str) -> Reply {
        match parse_value(value).unwrap() {
            Route::Reject { reply } => reply,
            other => panic!("{value}: {other:?}"),
        }
    }

    #[test]
    fn error_values_carry_status_code_and_text() {
        let r = reply("error:5.7.0:550 mail to this domain is not accepted");
        assert_eq!(
            r.one_line(),
            "550 5.7.0 mail to this domain is not accepted"
        );
        let r = reply("error:4.4.1:451 try later");
        assert!(r.is_transient());
        assert_eq!(r.status().to_string(), "4.4.1");
        let r = reply("error:550 no such domain here");
        assert_eq!(r.enhanced(), None);
        assert_eq!(r.status().to_string(), "5.0.0");
        let r = reply("error:5.7.1:\"550 Go away\"");
        assert_eq!(r.one_line(), "550 5.7.1 Go away");
        let r = reply("ERROR:5.1.2:550");
        assert_eq!(
            r.text(),
            "mail for this domain is refused by the mailertable"
        );
    }

    #[test]
    fn malformed_error_values_say_what_is_wrong() {
        let cases: &[(&str, &str)] = &[
            ("error:", "no reply code"),
            ("error:5.7.0:", "no reply code"),
            ("error:5.7.0:55 x", "\"55\" is not a reply code"),
            ("error:nouser", "\"nouser\" is not a reply code"),
            ("error:250 ok", "reply code 250 does not refuse mail"),
            ("error:5.7:550 x", "\"5.7\" is not an enhanced status code"),
            (
                "error:4.4.1:550 x",
                "reply code 550 and enhanced status 4.4.1 disagree",
            ),
        ];
        for (value, start) in cases {
            let err = parse_value(value).unwrap_err().to_string();
            assert!(err.starts_with(start), "{value}: {err}");
            assert!(err.contains(&format!("in {value:?}")), "{err}");
        }
    }

    #[test]
    fn local_values_name_an_optional_user() {
        assert_eq!(parse_value("local:").unwrap(), Route::local());
        assert_eq!(
            parse_value("local:postmaster").unwrap(),
            Route::Local {
                target: LocalTarget::User("postmaster".into())
            }
        );
        let err = parse_value("local:a b").unwrap_err();
        assert_eq!(
            err.to_string(),
            "bad local user \"a b\" in \"local:a b\" (expected a user name such as local:postmaster)"
        );
    }

    #[test]
    fn an_unknown_mailer_lists_the_known_ones() {
        let err = parse_value("esmpt:[mail.example.com]").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown mailer \"esmpt\" in \"esmpt:[mail.example.com]\" \
             (known: esmtp, smtp, smtp8, relay, smtps, local, error)"
        );
    }

    #[test]
    fn a_value_without_mailer_suggests_one() {
        let err = parse_value("[mail.example.com]:587").unwrap_err();
        assert_eq!(
            err.to_string(),
            "no mailer in \"[mail.example.com]:587\"; write mailer:host, e.g. esmtp:[mail.example.com]:587"
        );
    }

    #[test]
    fn sendmail_macros_are_refused_not_misrouted() {
        let err = parse_value("esmtp:%1.mx.example.com").unwrap_err();
        assert!(
            matches!(err, ValueError::Macro { ref token, .. } if token == "%1"),
            "{err}"
        );
    }

    #[test]
    fn a_relay_mailer_needs_a_host() {
        let err = parse_value("smtps:").unwrap_err();
        assert_eq!(
            err.to_string(),
            "mailer smtps needs a host in \"smtps:\", e.g. smtps:[mail.example.com]"
        );
    }

    #[test]
    fn mailer_names_are_case_insensitive() {
        assert!(matches!(
            parse_value("ESMTP:[a.example]").unwrap(),
            Route::Relay {
                mailer: Mailer::Esmtp,
                ..
            }
        ));
        assert_eq!(MAILER_NAMES.join(", "), KNOWN);
    }
}
