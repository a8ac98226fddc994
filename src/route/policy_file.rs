//! The per-next-hop TLS and credentials file.

use std::fmt;
use std::path::{Path, PathBuf};

use super::hop::{HopError, parse_hop};
use super::policy::{Credentials, HopPolicy, PolicyTable, TlsLevel};
use super::table_file::{
    Origin, ReadError, Warning, WarningKind, content_lines, one_per_line, read_file,
};
use crate::oauth2::{OAuth2Mechanism, OAuth2Policy, TokenSpec};
use crate::status::Severity;

const OPTION_AUTH_WITHOUT_TLS: &str = "auth-without-tls";
const OPTION_OAUTH2: &str = "oauth2";
const OPTION_USER: &str = "user";
const OPTION_TOKEN_FILE: &str = "token-file";
const OPTION_TOKEN_REFRESH: &str = "token-refresh";
const OPTION_TOKEN_COMMAND: &str = "token-command";
/// Options written `name=value`.
const VALUED_OPTIONS: [&str; 5] = [
    OPTION_OAUTH2,
    OPTION_USER,
    OPTION_TOKEN_FILE,
    OPTION_TOKEN_REFRESH,
    OPTION_TOKEN_COMMAND,
];
const LEVELS: [TlsLevel; 4] = [
    TlsLevel::None,
    TlsLevel::May,
    TlsLevel::Encrypt,
    TlsLevel::Verify,
];

/// What is wrong with one policy line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyProblem {
    /// The next hop is malformed.
    #[error(
        "bad next hop {key:?}: {problem} (expected e.g. [smtp.gmail.com]:587, or * for the default)"
    )]
    BadKey {
        /// The key as written.
        key: String,
        /// What is wrong with it.
        problem: HopError,
    },
    /// The line is one field that is not a next hop (perhaps `host:user:password` with the
    /// spaces missing); not quoted, since it may hold a password.
    #[error(
        "expected NEXT-HOP [LEVEL] [OPTION...] [USER:PASSWORD] separated by spaces; \
         the line is not shown in case it holds a password"
    )]
    Unreadable,
    /// A next hop with nothing after it.
    #[error(
        "next hop {key} has no TLS level or credentials (expected e.g. {key} encrypt user@example.com:password)"
    )]
    NoPolicy {
        /// The key.
        key: String,
    },
    /// A misspelt TLS level.
    #[error(
        "unknown TLS level {written:?} (did you mean {suggestion}? levels: none, may, encrypt, verify)"
    )]
    MisspeltLevel {
        /// What was written (close to a level name, so not a secret).
        written: String,
        /// The closest level.
        suggestion: TlsLevel,
    },
    /// A field that is neither level, option nor credentials.
    #[error(
        "field {field} is not a TLS level (none, may, encrypt, verify), an option ({OPTION_AUTH_WITHOUT_TLS}) \
         or USER:PASSWORD; it is not shown in case it is a secret"
    )]
    UnknownField {
        /// The field's position on the line, from 1 (the next hop).
        field: usize,
    },
    /// `:password`.
    #[error("credentials have an empty user name (write USER:PASSWORD)")]
    EmptyUser,
    /// `user:`.
    #[error("credentials for {user:?} have an empty password")]
    EmptyPassword {
        /// The user.
        user: String,
    },
    /// Credentials that could never be sent.
    #[error(
        "credentials with TLS level none would never be sent; use may, encrypt or verify, \
         or add {OPTION_AUTH_WITHOUT_TLS} to send them without TLS"
    )]
    CredentialsNeverSent,
    /// `oauth2=` names no mechanism postrider speaks.
    #[error(
        "unknown OAuth2 mechanism {written:?} (write oauth2=xoauth2, oauth2=oauthbearer or oauth2=auto)"
    )]
    UnknownOAuth2Mechanism {
        /// What was written.
        written: String,
    },
    /// An option given twice.
    #[error("the option {option} is given twice")]
    DuplicateOption {
        /// The option.
        option: &'static str,
    },
    /// `name=` with nothing after the `=`.
    #[error("the option {option}= has no value")]
    EmptyOption {
        /// The option.
        option: &'static str,
    },
    /// `user=` or `token-...=` without `oauth2`.
    #[error("{option}= belongs to OAuth2: add oauth2 (e.g. oauth2=xoauth2) to the line")]
    WithoutOAuth2 {
        /// The option.
        option: &'static str,
    },
    /// `oauth2` without `user=`.
    #[error("oauth2 needs the account: add user=ADDRESS")]
    OAuth2WithoutUser,
    /// `oauth2` without a token source.
    #[error(
        "oauth2 needs a token source: add token-file=PATH, token-refresh=PATH or token-command=COMMAND"
    )]
    OAuth2WithoutToken,
    /// Two token sources.
    #[error("give one token source (token-file=, token-refresh= or token-command=), not two")]
    SeveralTokenSources,
    /// `oauth2` and `USER:PASSWORD` on one line.
    #[error("a line has oauth2 or USER:PASSWORD, not both")]
    OAuth2AndPassword,
}

/// One bad policy line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyLineError {
    /// The file (or name of the text).
    pub file: Origin,
    /// The line, from 1.
    pub line: usize,
    /// What is wrong.
    pub problem: PolicyProblem,
}

impl fmt::Display for PolicyLineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.problem)
    }
}

impl std::error::Error for PolicyLineError {}

/// A policy file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// Lines with errors, in file order.
    #[error("{}", one_per_line(errors))]
    Invalid {
        /// Every bad line (at least one).
        errors: Vec<PolicyLineError>,
    },
}

impl PolicyError {
    /// Permanent for a bad file; a read error decides for itself.
    pub fn severity(&self) -> Severity {
        match self {
            PolicyError::Read(e) => e.severity(),
            PolicyError::Invalid { .. } => Severity::Permanent,
        }
    }
}

#[derive(Debug)]
enum PolicyKey {
    Default,
    Hop(super::NextHop),
}

impl PolicyTable {
    /// Parses policy text (see [the format](crate::route#the-policy-file)).
    pub fn parse(text: &str, origin: Origin) -> Result<(PolicyTable, Vec<Warning>), PolicyError> {
        let mut table = PolicyTable::new();
        let mut first_lines: std::collections::HashMap<String, usize> = Default::default();
        let mut warnings = Vec::new();
        let mut errors = Vec::new();
        let base = origin.path().and_then(Path::parent);
        for (line, content) in content_lines(text) {
            let (key, mut policy) = match parse_line(content, base) {
                Ok(parsed) => parsed,
                Err(problem) => {
                    errors.push(PolicyLineError {
                        file: origin.clone(),
                        line,
                        problem,
                    });
                    continue;
                }
            };
            let shown = match &key {
                PolicyKey::Default => "*".to_string(),
                PolicyKey::Hop(hop) => hop.to_string(),
            };
            if let Some(&first_line) = first_lines.get(&shown) {
                warnings.push(Warning::at(
                    &origin,
                    line,
                    WarningKind::DuplicateKey {
                        key: shown,
                        first_line,
                    },
                ));
                continue;
            }
            first_lines.insert(shown, line);
            if let Some(c) = &mut policy.credentials {
                c.defined_at = Some(format!("{origin} line {line}"));
            }
            if let Some(o) = &mut policy.oauth2 {
                o.defined_at = Some(format!("{origin} line {line}"));
            }
            match key {
                PolicyKey::Default => table.set_default(policy),
                PolicyKey::Hop(hop) => table.insert(&hop, policy),
            }
        }
        if errors.is_empty() {
            Ok((table, warnings))
        } else {
            Err(PolicyError::Invalid { errors })
        }
    }

    /// Reads and parses a policy file, warning when a file with passwords is open to group or
    /// others. Warnings are returned and logged with `tracing::warn!`.
    pub fn load(path: &Path) -> Result<(PolicyTable, Vec<Warning>), PolicyError> {
        let text = read_file(path)?;
        let origin = Origin::file(path);
        let (table, mut warnings) = PolicyTable::parse(&text, origin.clone())?;
        use std::os::unix::fs::PermissionsExt;
        let readable = |file: &Path| {
            std::fs::metadata(file)
                .ok()
                .map(|m| m.permissions().mode())
                .filter(|mode| mode & 0o077 != 0)
        };
        if table.has_credentials()
            && let Some(mode) = readable(path)
        {
            warnings.push(Warning {
                file: origin,
                line: None,
                kind: WarningKind::ReadableSecrets { mode },
            });
        }
        let mut token_files: Vec<&Path> = table
            .policies()
            .filter_map(|p| match p.oauth2.as_ref().map(|o| &o.token) {
                Some(TokenSpec::File(f) | TokenSpec::Refresh(f)) => Some(f.as_path()),
                _ => None,
            })
            .collect();
        token_files.sort();
        token_files.dedup();
        for file in token_files {
            if let Some(mode) = readable(file) {
                warnings.push(Warning {
                    file: Origin::file(file),
                    line: None,
                    kind: WarningKind::ReadableSecrets { mode },
                });
            }
        }
        for w in &warnings {
            w.log();
        }
        Ok((table, warnings))
    }
}

/// What an OAuth2 line has said so far.
#[derive(Default)]
struct OAuth2Words {
    mechanism: Option<OAuth2Mechanism>,
    user: Option<String>,
    token: Option<TokenSpec>,
    /// The first option that needs `oauth2`, for the error when it is missing.
    needs_oauth2: Option<&'static str>,
}

fn parse_line(content: &str, base: Option<&Path>) -> Result<(PolicyKey, HopPolicy), PolicyProblem> {
    let mut fields = content.split_whitespace();
    let key_text = fields.next().unwrap_or_default();
    let single_field = fields.next().is_none();
    let key = if key_text == "*" || key_text.eq_ignore_ascii_case("default") {
        PolicyKey::Default
    } else {
        match parse_hop(key_text) {
            Ok(hop) => PolicyKey::Hop(hop),
            // One field, or an `@` in the key: perhaps credentials glued to it, never echoed.
            Err(_) if single_field || key_text.contains('@') => {
                return Err(PolicyProblem::Unreadable);
            }
            Err(problem) => {
                return Err(PolicyProblem::BadKey {
                    key: key_text.to_string(),
                    problem,
                });
            }
        }
    };
    let mut policy = HopPolicy::default();
    let mut level = None;
    let mut oauth = OAuth2Words::default();
    let mut rest = content[key_text.len()..].trim_start();
    let mut field = 1;
    while !rest.is_empty() {
        field += 1;
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let word = &rest[..end];
        if let Some((name, value)) = word.split_once('=')
            && let Some(option) = VALUED_OPTIONS
                .into_iter()
                .find(|o| o.eq_ignore_ascii_case(name))
        {
            if option == OPTION_TOKEN_COMMAND {
                // The command is the rest of the line.
                let command = rest[name.len() + 1..].trim();
                if command.is_empty() {
                    return Err(PolicyProblem::EmptyOption { option });
                }
                set_token(&mut oauth, option, TokenSpec::Command(command.to_string()))?;
                break;
            }
            if value.is_empty() {
                return Err(PolicyProblem::EmptyOption { option });
            }
            match option {
                OPTION_OAUTH2 => set_mechanism(&mut oauth, value)?,
                OPTION_USER => {
                    if oauth.user.replace(value.to_string()).is_some() {
                        return Err(PolicyProblem::DuplicateOption { option });
                    }
                    oauth.needs_oauth2.get_or_insert(option);
                }
                OPTION_TOKEN_FILE => {
                    set_token(&mut oauth, option, TokenSpec::File(resolve(base, value)))?
                }
                _ => set_token(&mut oauth, option, TokenSpec::Refresh(resolve(base, value)))?,
            }
        } else if word.eq_ignore_ascii_case(OPTION_OAUTH2) {
            set_mechanism(&mut oauth, "auto")?;
        } else if word.contains(':') {
            policy.credentials = Some(parse_credentials(rest.trim_end())?);
            break;
        } else if word.eq_ignore_ascii_case(OPTION_AUTH_WITHOUT_TLS) {
            policy.auth_without_tls = true;
        } else if let (None, Some(l)) = (level, level_named(word)) {
            level = Some(l);
        } else if let (None, Some(suggestion)) = (level, close_level(word)) {
            return Err(PolicyProblem::MisspeltLevel {
                written: word.to_string(),
                suggestion,
            });
        } else {
            return Err(PolicyProblem::UnknownField { field });
        }
        rest = rest[end..].trim_start();
    }
    if field == 1 {
        let key = match &key {
            PolicyKey::Default => "*".to_string(),
            PolicyKey::Hop(hop) => hop.to_string(),
        };
        return Err(PolicyProblem::NoPolicy { key });
    }
    match oauth.mechanism {
        Some(mechanism) => {
            if policy.credentials.is_some() {
                return Err(PolicyProblem::OAuth2AndPassword);
            }
            let user = oauth.user.ok_or(PolicyProblem::OAuth2WithoutUser)?;
            let token = oauth.token.ok_or(PolicyProblem::OAuth2WithoutToken)?;
            policy.oauth2 = Some(OAuth2Policy {
                mechanism,
                user,
                token,
                defined_at: None,
            });
        }
        None => {
            if let Some(option) = oauth.needs_oauth2 {
                return Err(PolicyProblem::WithoutOAuth2 { option });
            }
        }
    }
    let authenticates = policy.credentials.is_some() || policy.oauth2.is_some();
    policy.tls = match level {
        Some(l) => l,
        None if authenticates => TlsLevel::Encrypt,
        None => TlsLevel::May,
    };
    if policy.tls == TlsLevel::None && authenticates && !policy.auth_without_tls {
        return Err(PolicyProblem::CredentialsNeverSent);
    }
    Ok((key, policy))
}

fn set_mechanism(oauth: &mut OAuth2Words, name: &str) -> Result<(), PolicyProblem> {
    let mechanism =
        OAuth2Mechanism::from_name(name).ok_or_else(|| PolicyProblem::UnknownOAuth2Mechanism {
            written: name.chars().take(40).collect(),
        })?;
    if oauth.mechanism.replace(mechanism).is_some() {
        return Err(PolicyProblem::DuplicateOption {
            option: OPTION_OAUTH2,
        });
    }
    Ok(())
}

fn set_token(
    oauth: &mut OAuth2Words,
    option: &'static str,
    spec: TokenSpec,
) -> Result<(), PolicyProblem> {
    if oauth.token.replace(spec).is_some() {
        return Err(PolicyProblem::SeveralTokenSources);
    }
    oauth.needs_oauth2.get_or_insert(option);
    Ok(())
}

/// A path from the file, relative to the file's folder when it is relative.
fn resolve(base: Option<&Path>, value: &str) -> PathBuf {
    let path = Path::new(value);
    match base {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path.to_path_buf(),
    }
}

fn parse_credentials(text: &str) -> Result<Credentials, PolicyProblem> {
    let (user, password) = text
        .split_once(':')
        .expect("invariant: the credentials field contains ':'");
    if user.is_empty() {
        return Err(PolicyProblem::EmptyUser);
    }
    let password = password.trim();
    if password.is_empty() {
        return Err(PolicyProblem::EmptyPassword {
            user: user.to_string(),
        });
    }
    Ok(Credentials::new(user, password))
}

fn level_named(word: &str) -> Option<TlsLevel> {
    LEVELS
        .into_iter()
        .find(|l| l.name().eq_ignore_ascii_case(word))
}

/// The level a misspelt word was probably meant to be (at most two edits away). Only such a
/// word is quoted back in an error: anything else might be a password.
fn close_level(word: &str) -> Option<TlsLevel> {
    let word = word.to_ascii_lowercase();
    LEVELS
        .into_iter()
        .map(|l| (edit_distance(&word, l.name()), l))
        .filter(|(d, l)| *d <= 2 && 2 * *d < l.name().len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, l)| l)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = substitution.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_single_character_edits() {
        assert_eq!(edit_distance("encrpyt", "encrypt"), 2);
        assert_eq!(edit_distance("verfy", "verify"), 1);
        assert_eq!(edit_distance("", "may"), 3);
        assert_eq!(close_level("encrpyt"), Some(TlsLevel::Encrypt));
        assert_eq!(close_level("hunter2"), None);
        assert_eq!(close_level("no"), None, "too short to be a confident guess");
    }

    #[test]
    fn level_and_options_come_in_any_order_before_the_credentials() {
        let (_, p) = parse_line("[a.example] auth-without-tls none u:p", None).unwrap();
        assert_eq!((p.tls, p.auth_without_tls), (TlsLevel::None, true));
        assert_eq!(
            parse_line("[a.example] may verify", None).unwrap_err(),
            PolicyProblem::UnknownField { field: 3 }
        );
    }

    #[test]
    fn a_line_is_parsed_into_key_and_policy() {
        let (key, p) = parse_line(
            "[smtp.gmail.com]:587 encrypt me@example.com:pa:ss word ",
            None,
        )
        .unwrap();
        assert!(matches!(key, PolicyKey::Hop(ref h) if h.to_string() == "[smtp.gmail.com]:587"));
        assert_eq!(p.tls, TlsLevel::Encrypt);
        let c = p.credentials.unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.expose()),
            ("me@example.com", "pa:ss word")
        );
    }

    fn oauth(line: &str) -> Result<HopPolicy, PolicyProblem> {
        parse_line(line, Some(Path::new("/etc/postrider"))).map(|(_, p)| p)
    }

    #[test]
    fn an_oauth2_line_names_mechanism_user_and_token_source() {
        let p = oauth(
            "[smtp.office365.com]:587 oauth2=xoauth2 user=vm@example.com token-refresh=m365.oauth",
        )
        .unwrap();
        assert_eq!(
            p.tls,
            TlsLevel::Encrypt,
            "OAuth2 without a level means encrypt"
        );
        assert_eq!(
            p.oauth2,
            Some(OAuth2Policy {
                mechanism: OAuth2Mechanism::XOAuth2,
                user: "vm@example.com".into(),
                token: TokenSpec::Refresh("/etc/postrider/m365.oauth".into()),
                defined_at: None,
            })
        );
        assert_eq!(p.auth_user(), Some("vm@example.com"));
        let p = oauth("[smtp.gmail.com]:465 verify OAUTH2 user=a@b.example token-file=/run/tok")
            .unwrap();
        let o = p.oauth2.unwrap();
        assert_eq!(o.mechanism, OAuth2Mechanism::Auto);
        assert_eq!(o.token, TokenSpec::File("/run/tok".into()));
    }

    #[test]
    fn a_token_command_takes_the_rest_of_the_line_and_is_never_shown() {
        let p = oauth(
            "[smtp.gmail.com]:587 oauth2=oauthbearer user=a@b.example token-command=oama access a@b.example --pass=s3cret",
        )
        .unwrap();
        let o = p.oauth2.unwrap();
        assert_eq!(
            o.token,
            TokenSpec::Command("oama access a@b.example --pass=s3cret".into())
        );
        assert!(!format!("{o:?}").contains("s3cret"));
    }

    #[test]
    fn incomplete_or_contradictory_oauth2_lines_say_what_is_missing() {
        let e = |line: &str| oauth(line).unwrap_err();
        assert_eq!(
            e("[h.example] oauth2 token-file=/t"),
            PolicyProblem::OAuth2WithoutUser
        );
        assert_eq!(
            e("[h.example] oauth2 user=u"),
            PolicyProblem::OAuth2WithoutToken
        );
        assert_eq!(
            e("[h.example] user=u token-file=/t"),
            PolicyProblem::WithoutOAuth2 { option: "user" }
        );
        assert_eq!(
            e("[h.example] oauth2 user=u token-file=/t token-refresh=/r"),
            PolicyProblem::SeveralTokenSources
        );
        assert_eq!(
            e("[h.example] oauth2=xoauth user=u token-file=/t"),
            PolicyProblem::UnknownOAuth2Mechanism {
                written: "xoauth".into()
            }
        );
        assert_eq!(
            e("[h.example] oauth2 user=u token-file=/t u:password"),
            PolicyProblem::OAuth2AndPassword
        );
        assert_eq!(
            e("[h.example] none oauth2 user=u token-file=/t"),
            PolicyProblem::CredentialsNeverSent
        );
        assert_eq!(
            e("[h.example] oauth2 user= token-file=/t"),
            PolicyProblem::EmptyOption { option: "user" }
        );
        assert_eq!(
            e("[h.example] oauth2 oauth2=auto user=u token-file=/t"),
            PolicyProblem::DuplicateOption { option: "oauth2" }
        );
    }
}
