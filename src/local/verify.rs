//! What `sendmail -bv` and `sendmail -bi` (newaliases) report about local delivery, as library
//! functions the commands call.
//!
//! [`LocalTransport::verify`] expands a local name the way a delivery would and judges each
//! final target without delivering anything:
//!
//! ```text
//! postmaster... deliverable: mailer local, user root (maildir /root/Maildir)
//! ghost... User unknown
//! ops... forwarded: jane@example.net
//! vacation... refused: delivery to commands is off (allow_pipes = false)
//! ```
//!
//! [`check_aliases`] reads an aliases file as newaliases does and answers with its summary line
//! (`/etc/aliases: 12 aliases, longest 48 bytes, 310 bytes total`) or every bad line with its
//! number, plus warnings for targets that will not work (an unknown local user, a missing
//! include file, a command while commands are off).

use std::fmt;
use std::path::Path;

use crate::address::Address;
use crate::route::LocalTarget;

use super::aliases::{Aliases, AliasesError};
use super::config::LocalConfig;
use super::expand::{ExpansionProblem, Target};
use super::location::MailboxLocation;
use super::targets::AliasTarget;
use super::transport::LocalTransport;
use super::users::{User, UserDb};

/// How one final target would fare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A mailbox of an existing user; `store` says where (`maildir /home/bob/Maildir`).
    Mailbox {
        /// The user.
        user: String,
        /// The mailbox.
        store: String,
    },
    /// No such local user.
    UserUnknown,
    /// Queued for another address (route it with the router to say where it goes).
    Forwarded(Address),
    /// A file or command that may run.
    Allowed,
    /// A file or command that would be refused, and why.
    Refused(String),
    /// It cannot be told now (the user database did not answer).
    Unknown(String),
}

/// One final target, how it was reached, and how it would fare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The name verified.
    pub name: String,
    /// The target.
    pub target: Target,
    /// The names and includes followed to it.
    pub via: Vec<String>,
    /// How it would fare.
    pub verdict: Verdict,
}

impl fmt::Display for Verified {
    /// sendmail's `-bv` line: `name... deliverable: mailer local, user bob`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.verdict, &self.target) {
            (Verdict::Mailbox { user, store }, _) => write!(
                f,
                "{}... deliverable: mailer local, user {user} ({store})",
                self.name
            ),
            (Verdict::UserUnknown, Target::Mailbox(u)) if u.eq_ignore_ascii_case(&self.name) => {
                write!(f, "{}... User unknown", self.name)
            }
            (Verdict::UserUnknown, Target::Mailbox(u)) => {
                write!(f, "{}... User unknown (alias target {u})", self.name)
            }
            (Verdict::UserUnknown, t) => write!(f, "{}... User unknown ({t})", self.name),
            (Verdict::Forwarded(a), _) => write!(f, "{}... forwarded: {a}", self.name),
            (Verdict::Allowed, Target::Pipe(c)) => {
                write!(
                    f,
                    "{}... deliverable: mailer prog, command \"{c}\"",
                    self.name
                )
            }
            (Verdict::Allowed, Target::File(p)) => {
                write!(
                    f,
                    "{}... deliverable: mailer *file*, file {}",
                    self.name,
                    p.display()
                )
            }
            (Verdict::Allowed, t) => write!(f, "{}... deliverable: {t}", self.name),
            (Verdict::Refused(why), _) => write!(f, "{}... refused: {why}", self.name),
            (Verdict::Unknown(why), _) => {
                write!(f, "{}... cannot be verified now: {why}", self.name)
            }
        }
    }
}

/// Everything `sendmail -bv name` shows for a local name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// The name.
    pub name: String,
    /// Each final target.
    pub targets: Vec<Verified>,
    /// What went wrong while expanding (loops, unreadable includes).
    pub problems: Vec<ExpansionProblem>,
}

impl Verification {
    /// True when every target would take the message (sendmail's exit 0 for `-bv`).
    pub fn deliverable(&self) -> bool {
        !self.targets.is_empty()
            && self.problems.iter().all(|p| !p.defers())
            && self.targets.iter().all(|t| {
                matches!(
                    t.verdict,
                    Verdict::Mailbox { .. } | Verdict::Forwarded(_) | Verdict::Allowed
                )
            })
    }
}

impl fmt::Display for Verification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for t in &self.targets {
            if !first {
                writeln!(f)?;
            }
            first = false;
            write!(f, "{t}")?;
        }
        for p in &self.problems {
            if !first {
                writeln!(f)?;
            }
            first = false;
            write!(f, "{}... {p}", self.name)?;
        }
        Ok(())
    }
}

fn store_of(location: &MailboxLocation, user: &User, domain: &str) -> String {
    match location {
        MailboxLocation::Lmtp(t) => format!("lmtp {t}"),
        MailboxLocation::Maildir(_) | MailboxLocation::Mbox(_) => {
            let kind = if matches!(location, MailboxLocation::Maildir(_)) {
                "maildir"
            } else {
                "mbox"
            };
            match location.path_for(user, domain) {
                Some(Ok(p)) => format!("{kind} {}", p.display()),
                Some(Err(e)) => format!("{kind}: {e}"),
                None => kind.to_string(),
            }
        }
    }
}

impl LocalTransport {
    /// What mail for local name `name` (addressed to `domain`, for `%d` paths) would become,
    /// judged target by target; nothing is delivered. Blocking (include and `.forward` files
    /// are read).
    pub fn verify(&self, name: &str, domain: &str) -> Verification {
        let expansion = self.expand(name);
        let config = self.config();
        let targets = expansion
            .targets
            .iter()
            .map(|e| {
                let verdict = match &e.target {
                    Target::Mailbox(u) => match &config.mailbox {
                        // The LMTP server knows its users; postrider cannot tell.
                        MailboxLocation::Lmtp(t) => Verdict::Mailbox {
                            user: u.clone(),
                            store: format!("lmtp {t}"),
                        },
                        location => match self.users().lookup(u) {
                            Ok(Some(user)) => Verdict::Mailbox {
                                user: user.name.clone(),
                                store: store_of(location, &user, domain),
                            },
                            Ok(None) => Verdict::UserUnknown,
                            Err(e) => Verdict::Unknown(e.to_string()),
                        },
                    },
                    Target::Remote(a) => Verdict::Forwarded(a.clone()),
                    Target::Pipe(_) if !config.allow_pipes => {
                        Verdict::Refused("delivery to commands is off (allow_pipes = false)".into())
                    }
                    Target::File(_) if !config.allow_files => {
                        Verdict::Refused("delivery to files is off (allow_files = false)".into())
                    }
                    Target::Pipe(_) | Target::File(_) => Verdict::Allowed,
                };
                Verified {
                    name: name.to_string(),
                    target: e.target.clone(),
                    via: e.via.clone(),
                    verdict,
                }
            })
            .collect();
        Verification {
            name: name.to_string(),
            targets,
            problems: expansion.problems,
        }
    }

    /// What `sendmail -bv` shows after the router's line for a recipient routed
    /// `Route::Local { target }`: the expansion of the local name the route names (the
    /// recipient's local part, or the user of a mailertable `local:user` or virtusertable
    /// entry), or the forward of a virtusertable entry naming an address elsewhere.
    ///
    /// ```no_run
    /// # fn demo(assembly: &postrider::config::Assembly, address: &postrider::Address) {
    /// let explanation = assembly.router().explain(address);
    /// println!("{explanation}");
    /// if let (postrider::Route::Local { target }, Some(local)) =
    ///     (&explanation.route, assembly.local())
    /// {
    ///     let v = local.verify_target(target, address);
    ///     println!("{v}"); // exit 67 (EX_NOUSER) unless v.deliverable()
    /// }
    /// # }
    /// ```
    pub fn verify_target(&self, target: &LocalTarget, recipient: &Address) -> Verification {
        let domain = recipient.domain().as_str();
        match target {
            LocalTarget::Forward(to) => {
                let name = recipient.to_string();
                Verification {
                    name: name.clone(),
                    targets: vec![Verified {
                        name,
                        target: Target::Remote(to.clone()),
                        via: Vec::new(),
                        verdict: Verdict::Forwarded(to.clone()),
                    }],
                    problems: Vec::new(),
                }
            }
            t => {
                let name = t.local_name(recipient).unwrap_or(recipient.local_part());
                self.verify(name, domain)
            }
        }
    }

    /// `sendmail -bi` for the configured aliases file: `None` when `[local]` names none;
    /// otherwise [`check_aliases`] with this transport's settings and user database.
    pub fn check_aliases(&self) -> Option<Result<AliasesCheck, AliasesError>> {
        let path = self.config().aliases.as_ref()?;
        Some(check_aliases(path, self.config(), self.users().as_ref()))
    }

    /// True when `name` is a user of the configured user database.
    pub fn user_exists(&self, name: &str) -> Result<bool, super::users::UserDbError> {
        Ok(self.users().lookup(name)?.is_some())
    }
}

/// What newaliases reports about a good aliases file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasesCheck {
    /// The file.
    pub file: String,
    /// How many aliases.
    pub aliases: usize,
    /// The longest right-hand side, in octets.
    pub longest: usize,
    /// All right-hand sides together, in octets.
    pub total: usize,
    /// Lines that load but will not work as meant, each `file:line: ...`.
    pub warnings: Vec<String>,
}

impl fmt::Display for AliasesCheck {
    /// newaliases' line: `/etc/aliases: 12 aliases, longest 48 bytes, 310 bytes total`, then
    /// the warnings, one per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} aliases, longest {} bytes, {} bytes total",
            self.file, self.aliases, self.longest, self.total
        )?;
        for w in &self.warnings {
            write!(f, "\nwarning: {w}")?;
        }
        Ok(())
    }
}

/// Reads and checks an aliases file for `sendmail -bi`: `Err` names every bad line; `Ok`
/// carries the summary and warnings about targets that will not work with `config` and
/// `users`.
pub fn check_aliases(
    path: &Path,
    config: &LocalConfig,
    users: &dyn UserDb,
) -> Result<AliasesCheck, AliasesError> {
    let (aliases, duplicates) = Aliases::load(path)?;
    Ok(summarise(
        &aliases,
        &path.display().to_string(),
        duplicates.iter().map(ToString::to_string).collect(),
        config,
        users,
    ))
}

fn summarise(
    aliases: &Aliases,
    file: &str,
    mut warnings: Vec<String>,
    config: &LocalConfig,
    users: &dyn UserDb,
) -> AliasesCheck {
    let (mut longest, mut total) = (0, 0);
    for name in aliases.names() {
        let Some(entry) = aliases.get(name) else {
            continue;
        };
        let rhs: Vec<String> = entry.targets.iter().map(ToString::to_string).collect();
        let len = rhs.join(", ").len();
        longest = longest.max(len);
        total += len;
        let at = |what: String| format!("{file}:{}: alias {name}: {what}", entry.line);
        for t in &entry.targets {
            match t {
                AliasTarget::Local(n) | AliasTarget::Mailbox(n) => {
                    let is_alias = matches!(t, AliasTarget::Local(_)) && aliases.get(n).is_some();
                    let lmtp = matches!(config.mailbox, MailboxLocation::Lmtp(_));
                    if !is_alias && !lmtp && matches!(users.lookup(n), Ok(None)) {
                        warnings.push(at(format!("{n} is neither an alias nor a local user")));
                    }
                }
                AliasTarget::Include(p) if !p.is_file() => {
                    warnings.push(at(format!(":include: file {} does not exist", p.display())));
                }
                AliasTarget::Pipe(c) if !config.allow_pipes => warnings.push(at(format!(
                    "\"|{c}\" will be refused (allow_pipes = false in [local])"
                ))),
                AliasTarget::File(p) if !config.allow_files => warnings.push(at(format!(
                    "{} will be refused (allow_files = false in [local])",
                    p.display()
                ))),
                _ => {}
            }
        }
    }
    AliasesCheck {
        file: file.to_string(),
        aliases: aliases.len(),
        longest,
        total,
        warnings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::StaticUsers;
    use std::sync::Arc;

    fn transport(aliases: &str) -> LocalTransport {
        let config = LocalConfig {
            mailbox: "maildir:~/Maildir".parse().unwrap(),
            ..LocalConfig::default()
        };
        let (a, _) = Aliases::parse(aliases, crate::route::Origin::named("aliases")).unwrap();
        LocalTransport::new(config, "mx.example".parse().unwrap())
            .unwrap()
            .0
            .with_users(Arc::new(StaticUsers::new([
                User::new("root", 0, 0, "/root"),
                User::new("bob", 1000, 1000, "/home/bob"),
            ])))
            .with_aliases(a)
    }

    #[test]
    fn verification_lines_read_like_sendmails() {
        let t = transport("ops: bob, ghost, jane@example.net, \"|/usr/bin/vacation bob\"\n");
        let v = t.verify("ops", "example.com");
        assert_eq!(
            v.to_string(),
            "ops... deliverable: mailer local, user bob (maildir /home/bob/Maildir)\n\
             ops... User unknown (alias target ghost)\n\
             ops... forwarded: jane@example.net\n\
             ops... refused: delivery to commands is off (allow_pipes = false)"
        );
        assert!(!v.deliverable());
        let v = t.verify("postmaster", "example.com");
        assert_eq!(
            v.to_string(),
            "postmaster... deliverable: mailer local, user root (maildir /root/Maildir)"
        );
        assert!(v.deliverable());
        assert_eq!(
            t.verify("nobody", "x").to_string(),
            "nobody... User unknown"
        );
        assert!(t.user_exists("bob").unwrap());
        assert!(!t.user_exists("ghost").unwrap());
    }

    #[test]
    fn a_routed_recipient_is_verified_by_the_name_its_route_gives() {
        let t = transport("info: bob\n");
        let a = Address::parse("info@example.com").unwrap();
        assert_eq!(
            t.verify_target(&LocalTarget::Recipient, &a).to_string(),
            "info... deliverable: mailer local, user bob (maildir /home/bob/Maildir)"
        );
        let v = t.verify_target(&LocalTarget::User("ghost".into()), &a);
        assert_eq!(v.to_string(), "ghost... User unknown");
        assert!(!v.deliverable());
        let to = Address::parse("team@partner.example").unwrap();
        let v = t.verify_target(&LocalTarget::Forward(to), &a);
        assert_eq!(
            v.to_string(),
            "info@example.com... forwarded: team@partner.example"
        );
        assert!(v.deliverable());
    }

    #[test]
    fn the_configured_aliases_file_is_checked_with_the_transports_users() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("aliases");
        std::fs::write(&p, "postmaster: root\nstaff: bob, ghost\n").unwrap();
        let config = LocalConfig {
            aliases: Some(p.clone()),
            ..LocalConfig::default()
        };
        let t = LocalTransport::new(config, "mx.example".parse().unwrap())
            .unwrap()
            .0
            .with_users(Arc::new(StaticUsers::new([
                User::new("root", 0, 0, "/root"),
                User::new("bob", 1000, 1000, "/home/bob"),
            ])));
        let c = t.check_aliases().unwrap().unwrap();
        assert_eq!(c.aliases, 2);
        assert_eq!(
            c.warnings,
            vec![format!(
                "{}:2: alias staff: ghost is neither an alias nor a local user",
                p.display()
            )]
        );
        assert!(transport("a: b\n").check_aliases().is_none());
    }

    #[test]
    fn a_loop_is_shown_and_is_not_deliverable() {
        let t = transport("a: b\nb: a\n");
        let v = t.verify("a", "x");
        assert_eq!(v.to_string(), "a... alias loop: a -> b -> a");
        assert!(!v.deliverable());
    }

    #[test]
    fn newaliases_summarises_and_warns_about_targets_that_will_not_work() {
        let (a, _) = Aliases::parse(
            "postmaster: root\nstaff: bob, ghost\nvac: \"|/usr/bin/vacation\"\nlist: :include:/nonexistent/list\n",
            crate::route::Origin::named("aliases"),
        )
        .unwrap();
        let users = StaticUsers::new([
            User::new("root", 0, 0, "/root"),
            User::new("bob", 1, 1, "/"),
        ]);
        let c = summarise(
            &a,
            "/etc/aliases",
            Vec::new(),
            &LocalConfig::default(),
            &users,
        );
        let text = c.to_string();
        assert!(
            text.starts_with("/etc/aliases: 4 aliases, longest "),
            "{text}"
        );
        assert!(
            text.contains(
                "warning: /etc/aliases:2: alias staff: ghost is neither an alias nor a local user"
            ),
            "{text}"
        );
        assert!(
            text.contains("/etc/aliases:3: alias vac: \"|/usr/bin/vacation\" will be refused"),
            "{text}"
        );
        assert!(
            text.contains(
                "/etc/aliases:4: alias list: :include: file /nonexistent/list does not exist"
            ),
            "{text}"
        );
        assert_eq!(c.warnings.len(), 3);
    }

    #[test]
    fn a_bad_aliases_file_is_an_error_naming_each_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("aliases");
        std::fs::write(&p, "ok: root\nbroken line\nx: a b\n").unwrap();
        let err = check_aliases(&p, &LocalConfig::default(), &StaticUsers::default()).unwrap_err();
        let text = err.to_string();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(
            text.lines().next().unwrap().ends_with(
                ":2: no ':' after the alias name in \"broken line\" (expected name: target, ...)"
            ),
            "{text}"
        );
    }
}
