//! `mailbox`: does Dovecot look for local mail where postrider puts it?
//!
//! The field report behind this check: postrider (or the MTA before it) wrote `/var/mail/bob`
//! as an mbox file while Dovecot looked for `~/Maildir`, and the user saw an empty inbox. The
//! check reads Dovecot's configuration (`/etc/dovecot/dovecot.conf` and the files it
//! `!include`s, as Dovecot does), finds the `mail_location` in effect (the last top-level one)
//! and compares it with `[local] mailbox`: same format, and the same inbox path for a sample
//! user. When they disagree it names the file and line to change and the line to write.
//! Dovecot's `%u`, `%n` (both the user: postrider's users are system users, without a domain),
//! `%d`, `%h`, `~`, the `%L` modifier and the long forms `%{user}`, `%{username}`,
//! `%{domain}`, `%{home}` are understood; anything else is reported as not comparable.

use std::io;
use std::path::{Path, PathBuf};

use crate::local::{LmtpTarget, LocalConfig, MailboxLocation, User};

use super::finding::{Check, Finding, Verdict};

/// Where Dovecot's configuration is read when nothing else is given.
pub const DEFAULT_DOVECOT_CONFIG: &str = "/etc/dovecot/dovecot.conf";

/// A setting found in a Dovecot configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DovecotSetting {
    /// The value, without quotes.
    pub value: String,
    /// The file it is set in.
    pub file: PathBuf,
    /// The line.
    pub line: usize,
}

/// Why a Dovecot configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DovecotConfigError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// `!include` nested too deep (an include loop).
    #[error("{}:{line}: !include nested more than 10 deep", file.display())]
    TooDeep {
        /// The file.
        file: PathBuf,
        /// The line.
        line: usize,
    },
}

/// Files matching `pattern` (a `*` in the last component only, as Dovecot's includes use),
/// sorted.
fn glob(pattern: &Path) -> io::Result<Vec<PathBuf>> {
    let name = pattern
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.contains('*') {
        return Ok(vec![pattern.to_path_buf()]);
    }
    let dir = pattern.parent().unwrap_or(Path::new("."));
    let (prefix, suffix) = name.split_once('*').unwrap_or((&name, ""));
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let n = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            n.len() >= prefix.len() + suffix.len() && n.starts_with(prefix) && n.ends_with(suffix)
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Reads `file` (and its includes) and returns the last top-level assignment of `key`.
pub fn find_setting(file: &Path, key: &str) -> Result<Option<DovecotSetting>, DovecotConfigError> {
    let mut found = None;
    scan(file, key, 0, &mut found)?;
    Ok(found)
}

fn scan(
    file: &Path,
    key: &str,
    depth: usize,
    found: &mut Option<DovecotSetting>,
) -> Result<(), DovecotConfigError> {
    let text = std::fs::read_to_string(file).map_err(|source| DovecotConfigError::Read {
        file: file.to_path_buf(),
        source,
    })?;
    let mut nesting = 0usize;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line
            .strip_prefix("!include_try")
            .map(|r| (r, true))
            .or_else(|| line.strip_prefix("!include").map(|r| (r, false)))
        {
            let (target, optional) = rest;
            if depth >= 10 {
                return Err(DovecotConfigError::TooDeep {
                    file: file.to_path_buf(),
                    line: i + 1,
                });
            }
            let target = target.trim().trim_matches('"');
            let path = file.parent().unwrap_or(Path::new("/")).join(target);
            let files = match glob(&path) {
                Ok(f) => f,
                Err(_) if optional => continue,
                Err(source) => return Err(DovecotConfigError::Read { file: path, source }),
            };
            for f in files {
                if optional && !f.exists() {
                    continue;
                }
                // Includes inside a section apply to that section only.
                if nesting == 0 {
                    scan(&f, key, depth + 1, found)?;
                }
            }
            continue;
        }
        if line.ends_with('{') {
            nesting += 1;
            continue;
        }
        if line.starts_with('}') {
            nesting = nesting.saturating_sub(1);
            continue;
        }
        if nesting > 0 {
            continue;
        }
        if let Some((k, v)) = line.split_once('=')
            && k.trim() == key
        {
            let v = v.split(" #").next().unwrap_or(v).trim();
            let v = v
                .strip_prefix('"')
                .and_then(|s| s.strip_suffix('"'))
                .unwrap_or(v);
            *found = Some(DovecotSetting {
                value: v.to_string(),
                file: file.to_path_buf(),
                line: i + 1,
            });
        }
    }
    Ok(())
}

/// A mail_location split into its format, root path and inbox path.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Location {
    format: String,
    root: String,
    inbox: Option<String>,
}

fn parse_location(value: &str) -> Option<Location> {
    let (format, rest) = value.split_once(':')?;
    // `::` escapes a colon inside a path.
    let rest = rest.replace("::", "\u{0}");
    let mut parts = rest.split(':').map(|p| p.replace('\u{0}', ":"));
    let root = parts.next()?;
    let mut inbox = None;
    for p in parts {
        if let Some(i) = p.strip_prefix("INBOX=") {
            inbox = Some(i.to_string());
        }
    }
    Some(Location {
        format: format.to_ascii_lowercase(),
        root,
        inbox,
    })
}

/// Expands Dovecot's variables for a sample user; `None` when the value uses one this check
/// does not know.
fn expand_dovecot(template: &str, user: &User, domain: &str) -> Option<String> {
    let home = user
        .home
        .to_string_lossy()
        .trim_end_matches('/')
        .to_string();
    let mut out = String::new();
    let mut rest = template;
    if let Some(r) = rest.strip_prefix('~') {
        out.push_str(&home);
        rest = r;
    }
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut lower = false;
        let mut var = chars.next()?;
        if var == 'L' {
            lower = true;
            var = chars.next()?;
        }
        let value = match var {
            'u' | 'n' => user.name.clone(),
            'd' => domain.to_string(),
            'h' => home.clone(),
            '%' => "%".into(),
            '{' => {
                let name: String = chars.by_ref().take_while(|&c| c != '}').collect();
                match name.as_str() {
                    "user" | "username" => user.name.clone(),
                    "domain" => domain.to_string(),
                    "home" => home.clone(),
                    _ => return None,
                }
            }
            _ => return None,
        };
        out.push_str(&if lower { value.to_lowercase() } else { value });
    }
    Some(out)
}

/// What `[local] mailbox` should say in Dovecot's words.
fn as_dovecot(ours: &MailboxLocation) -> String {
    match ours {
        MailboxLocation::Maildir(t) => format!("maildir:{t}"),
        MailboxLocation::Mbox(t) => format!("mbox:~/mail:INBOX={t}"),
        MailboxLocation::Lmtp(_) => String::new(),
    }
}

/// The check for `local` against the Dovecot configuration at `dovecot_conf`; `None` when
/// there is no Dovecot configuration there (Dovecot is not in use).
pub(crate) fn check(
    local: &LocalConfig,
    config_file: Option<&Path>,
    dovecot_conf: &Path,
) -> Option<Finding> {
    if !dovecot_conf.exists() {
        return None;
    }
    let ours = &local.mailbox;
    let toml = config_file
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "postrider.toml".into());
    if let MailboxLocation::Lmtp(target) = ours {
        return Some(match target {
            LmtpTarget::Unix(p) if !p.exists() => Finding::warn(
                Check::Mailbox,
                format!("local mail goes to Dovecot over LMTP at {}, but nothing is there", p.display()),
            )
            .with_fix(format!(
                "start Dovecot with protocols including lmtp, or set mailbox = \"lmtp:unix:PATH\" in [local] of {toml} to its service lmtp unix_listener"
            )),
            _ => Finding::pass(
                Check::Mailbox,
                format!("local mail goes to Dovecot over LMTP ({target}): Dovecot stores it where it reads it"),
            ),
        });
    }
    let setting = match find_setting(dovecot_conf, "mail_location") {
        Ok(s) => s,
        Err(e) => {
            return Some(Finding::warn(
                Check::Mailbox,
                format!("cannot check Dovecot's mail_location: {e}"),
            ));
        }
    };
    let write = as_dovecot(ours);
    let Some(setting) = setting.filter(|s| !s.value.is_empty()) else {
        return Some(
            Finding::warn(
                Check::Mailbox,
                format!(
                    "Dovecot's mail_location is not set in {}, so Dovecot guesses where mail is; postrider delivers to {ours}",
                    dovecot_conf.display()
                ),
            )
            .with_fix(format!("set mail_location = {write} in {}", dovecot_conf.display())),
        );
    };
    let at = format!("{} line {}", setting.file.display(), setting.line);
    let fix = || {
        format!(
            "change {at} to: mail_location = {write}   (or set mailbox in [local] of {toml} to match Dovecot)"
        )
    };
    let Some(theirs) = parse_location(&setting.value) else {
        return Some(Finding::warn(
            Check::Mailbox,
            format!(
                "cannot read Dovecot's mail_location = {} ({at})",
                setting.value
            ),
        ));
    };
    let (our_format, our_template) = match ours {
        MailboxLocation::Maildir(t) => ("maildir", t),
        MailboxLocation::Mbox(t) => ("mbox", t),
        MailboxLocation::Lmtp(_) => unreachable!("LMTP was handled above"),
    };
    if theirs.format != our_format {
        let detail = format!(
            "Dovecot reads {} mailboxes (mail_location = {}, {at}) but postrider delivers to {ours}: users will not see their mail",
            theirs.format, setting.value
        );
        if !matches!(theirs.format.as_str(), "maildir" | "mbox") {
            return Some(Finding::fail(Check::Mailbox, detail).with_fix(format!(
                "postrider cannot write {} mailboxes: deliver through Dovecot with mailbox = \"lmtp:unix:/run/dovecot/lmtp\" in [local] of {toml}",
                theirs.format
            )));
        }
        return Some(Finding::fail(Check::Mailbox, detail).with_fix(fix()));
    }
    let sample = User::new("bob", 1000, 1000, "/home/bob");
    let domain = "example.com";
    let their_inbox = match (our_format, &theirs.inbox) {
        ("mbox", Some(i)) => i.clone(),
        ("mbox", None) => {
            return Some(
                Finding::fail(
                    Check::Mailbox,
                    format!(
                        "Dovecot's mail_location = {} ({at}) has no INBOX=, so its inbox is not {our_template}",
                        setting.value
                    ),
                )
                .with_fix(fix()),
            );
        }
        (_, Some(i)) => i.clone(),
        (_, None) => theirs.root.clone(),
    };
    let (Some(theirs_path), Ok(ours_path)) = (
        expand_dovecot(&their_inbox, &sample, domain),
        our_template.expand(&sample, domain),
    ) else {
        return Some(Finding::warn(
            Check::Mailbox,
            format!(
                "cannot compare Dovecot's mail_location = {} ({at}) with {ours}: it uses variables this check does not know",
                setting.value
            ),
        ));
    };
    let norm = |p: &str| p.trim_end_matches('/').to_string();
    if norm(&theirs_path) == norm(&ours_path.to_string_lossy()) {
        Some(Finding::new(
            Check::Mailbox,
            Verdict::Pass,
            format!(
                "Dovecot reads local mail where postrider delivers it ({ours}; mail_location = {}, {at})",
                setting.value
            ),
        ))
    } else {
        Some(
            Finding::fail(
                Check::Mailbox,
                format!(
                    "Dovecot looks for user bob's inbox at {theirs_path} (mail_location = {}, {at}) but postrider delivers to {} ({ours})",
                    setting.value,
                    ours_path.display()
                ),
            )
            .with_fix(fix()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(mailbox: &str) -> LocalConfig {
        LocalConfig {
            mailbox: mailbox.parse().unwrap(),
            ..LocalConfig::default()
        }
    }

    fn debian_like(dir: &Path, mail_location: &str) -> PathBuf {
        std::fs::create_dir_all(dir.join("conf.d")).unwrap();
        std::fs::write(
            dir.join("dovecot.conf"),
            "# Debian\n!include_try /usr/share/dovecot/protocols.d/*.protocol\nprotocols = imap\n!include conf.d/*.conf\n!include_try local.conf\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("conf.d/10-mail.conf"),
            format!("# comments\n#mail_location = maildir:~/Maildir\n{mail_location}\nnamespace inbox {{\n  location = maildir:~/Other\n  inbox = yes\n}}\nmail_privileged_group = mail\n"),
        )
        .unwrap();
        std::fs::write(dir.join("conf.d/10-auth.conf"), "auth_mechanisms = plain\n").unwrap();
        dir.join("dovecot.conf")
    }

    #[test]
    fn the_setting_in_effect_is_found_through_includes_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let conf = debian_like(dir.path(), "mail_location = mbox:~/mail:INBOX=/var/mail/%u");
        let s = find_setting(&conf, "mail_location").unwrap().unwrap();
        assert_eq!(s.value, "mbox:~/mail:INBOX=/var/mail/%u");
        assert_eq!(s.line, 3);
        assert!(s.file.ends_with("conf.d/10-mail.conf"));
    }

    #[test]
    fn debians_default_agrees_with_postriders_default() {
        let dir = tempfile::tempdir().unwrap();
        let conf = debian_like(dir.path(), "mail_location = mbox:~/mail:INBOX=/var/mail/%u");
        let f = check(&LocalConfig::default(), None, &conf).unwrap();
        assert_eq!(f.verdict, Verdict::Pass, "{f}");
    }

    #[test]
    fn maildir_against_mbox_names_the_line_to_change() {
        let dir = tempfile::tempdir().unwrap();
        let conf = debian_like(dir.path(), "mail_location = mbox:~/mail:INBOX=/var/mail/%u");
        let f = check(
            &local("maildir:~/Maildir"),
            Some(Path::new("/etc/postrider/postrider.toml")),
            &conf,
        )
        .unwrap();
        assert_eq!(f.verdict, Verdict::Fail);
        assert!(f.detail.contains("Dovecot reads mbox mailboxes"), "{f}");
        let fix = f.fix.unwrap();
        assert!(
            fix.starts_with(&format!(
                "change {}/conf.d/10-mail.conf line 3 to: mail_location = maildir:~/Maildir",
                dir.path().display()
            )),
            "{fix}"
        );
        assert!(fix.contains("/etc/postrider/postrider.toml"), "{fix}");
    }

    #[test]
    fn the_same_format_in_another_place_is_a_failure_with_both_paths() {
        let dir = tempfile::tempdir().unwrap();
        let conf = debian_like(dir.path(), "mail_location = maildir:/srv/mail/%d/%Ln");
        let f = check(&local("maildir:~/Maildir"), None, &conf).unwrap();
        assert_eq!(f.verdict, Verdict::Fail);
        assert!(f.detail.contains("at /srv/mail/example.com/bob"), "{f}");
        assert!(f.detail.contains("delivers to /home/bob/Maildir"), "{f}");
        let conf = debian_like(dir.path(), "mail_location = maildir:%h/Maildir:LAYOUT=fs");
        assert_eq!(
            check(&local("maildir:~/Maildir/"), None, &conf)
                .unwrap()
                .verdict,
            Verdict::Pass
        );
    }

    #[test]
    fn no_setting_no_config_and_lmtp() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check(&LocalConfig::default(), None, &dir.path().join("none.conf")).is_none());
        let conf = debian_like(dir.path(), "");
        let f = check(&local("maildir:~/Maildir"), None, &conf).unwrap();
        assert_eq!(f.verdict, Verdict::Warn);
        assert!(
            f.fix
                .unwrap()
                .starts_with("set mail_location = maildir:~/Maildir in ")
        );
        let f = check(&local("lmtp:unix:/nonexistent/lmtp"), None, &conf).unwrap();
        assert_eq!(f.verdict, Verdict::Warn);
        let conf = debian_like(dir.path(), "mail_location = mdbox:~/mdbox");
        let f = check(&local("maildir:~/Maildir"), None, &conf).unwrap();
        assert!(f.fix.unwrap().contains("lmtp:unix:/run/dovecot/lmtp"));
    }
}
