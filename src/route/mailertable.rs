//! The sendmail-compatible router: the virtusertable (for local and virtual domains), local
//! domains, then the mailertable, then the smart host, then direct delivery to the recipient
//! domain's MX hosts.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use async_trait::async_trait;

use crate::address::{Address, Domain};
use crate::local::{VirtualMatch, VirtualTarget, Virtusertable};
use crate::status::{EnhancedStatus, Reply};

use super::error::LoadError;
use super::explain::{Explanation, Rule};
use super::local::{LocalDomains, LocalSource};
use super::smart_host::SmartHost;
use super::table::{Match, RouteTable};
use super::table_file::{Origin, Warning, WarningKind};
use super::{LocalTarget, Route, RouteError, Router};

/// How many virtusertable entries one address may lead through (one entry naming an address
/// in another virtual domain, and so on).
const MAX_VIRTUAL_STEPS: usize = 10;

/// Where a table's text comes from; kept so a reload reads the same place again.
#[derive(Clone)]
enum Text {
    File(PathBuf),
    Inline { name: String, text: Arc<str> },
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Text::File(p) => write!(f, "File({})", p.display()),
            Text::Inline { name, text } => write!(f, "Inline({name}, {} bytes)", text.len()),
        }
    }
}

/// How to build a [`Mailertable`]. Every part is optional: with nothing set, every recipient
/// goes to its domain's MX hosts, except `localhost`, which is local.
#[derive(Debug, Clone, Default)]
pub struct MailertableBuilder {
    table: Option<Text>,
    local: Option<Text>,
    virtusertable: Option<Text>,
    hostname: Option<Domain>,
    smart_host: Option<SmartHost>,
}

impl MailertableBuilder {
    /// Reads the mailertable from a file (again on every [`Mailertable::reload`]).
    pub fn mailertable_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.table = Some(Text::File(path.into()));
        self
    }

    /// Uses mailertable text given in code; `name` stands for the file name in messages.
    pub fn mailertable_text(mut self, name: impl Into<String>, text: impl Into<String>) -> Self {
        self.table = Some(Text::Inline {
            name: name.into(),
            text: Arc::from(text.into()),
        });
        self
    }

    /// Reads local-host-names from a file (again on every reload).
    pub fn local_host_names_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.local = Some(Text::File(path.into()));
        self
    }

    /// Uses local-host-names text given in code.
    pub fn local_host_names_text(
        mut self,
        name: impl Into<String>,
        text: impl Into<String>,
    ) -> Self {
        self.local = Some(Text::Inline {
            name: name.into(),
            text: Arc::from(text.into()),
        });
        self
    }

    /// Reads the virtusertable from a file (again on every reload).
    pub fn virtusertable_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.virtusertable = Some(Text::File(path.into()));
        self
    }

    /// Uses virtusertable text given in code.
    pub fn virtusertable_text(mut self, name: impl Into<String>, text: impl Into<String>) -> Self {
        self.virtusertable = Some(Text::Inline {
            name: name.into(),
            text: Arc::from(text.into()),
        });
        self
    }

    /// The host's own name, which is implicitly local (sendmail's `$j` in class `w`).
    pub fn hostname(mut self, hostname: Domain) -> Self {
        self.hostname = Some(hostname);
        self
    }

    /// The smart host for mail no mailertable key claims.
    pub fn smart_host(mut self, smart_host: SmartHost) -> Self {
        self.smart_host = Some(smart_host);
        self
    }

    /// Sets or clears the smart host.
    pub fn smart_host_opt(mut self, smart_host: Option<SmartHost>) -> Self {
        self.smart_host = smart_host;
        self
    }

    /// Loads the tables. Warnings (duplicate keys, ...) are returned and logged with
    /// `tracing::warn!`; any bad line makes the whole load fail, naming every bad line.
    pub fn build(self) -> Result<(Mailertable, Vec<Warning>), LoadError> {
        let (snapshot, warnings) = self.load()?;
        let router = Mailertable {
            current: RwLock::new(Arc::new(snapshot)),
        };
        Ok((router, warnings))
    }

    fn load(self) -> Result<(Snapshot, Vec<Warning>), LoadError> {
        let table = match &self.table {
            None => Ok((RouteTable::empty(Origin::named("mailertable")), Vec::new())),
            Some(Text::File(p)) => RouteTable::load(p),
            Some(Text::Inline { name, text }) => RouteTable::parse(text, Origin::named(name)),
        };
        let local = match &self.local {
            None => Ok((LocalDomains::new(), Vec::new())),
            Some(Text::File(p)) => LocalDomains::load(p),
            Some(Text::Inline { name, text }) => LocalDomains::parse(text, Origin::named(name)),
        };
        let virtual_table = match &self.virtusertable {
            None => Ok(None),
            Some(Text::File(p)) => Virtusertable::load(p).map(Some),
            Some(Text::Inline { name, text }) => {
                Virtusertable::parse(text, Origin::named(name)).map(Some)
            }
        };
        let ((table, mut warnings), (mut local, local_warnings), virtual_table) =
            match (table, local, virtual_table) {
                (Ok(t), Ok(l), Ok(v)) => (t, l, v),
                (t, l, v) => {
                    // Report the bad lines of every file at once; a read error wins.
                    let mut errors = Vec::new();
                    for r in [t.err(), l.err(), v.err()].into_iter().flatten() {
                        match r {
                            LoadError::Invalid { errors: more } => errors.extend(more),
                            read => return Err(read),
                        }
                    }
                    return Err(LoadError::Invalid { errors });
                }
            };
        warnings.extend(local_warnings);
        let virtual_table = virtual_table.map(|(v, w)| {
            warnings.extend(w);
            v
        });
        if let Some(h) = &self.hostname {
            local.add_hostname(h.clone());
        }
        local.add_localhost();
        let mut shadowed: Vec<Warning> = table
            .exact_keys()
            .filter_map(|(key, line)| {
                let domain = Domain::parse(key).ok()?;
                let source = local.lookup(&domain)?;
                Some(Warning::at(
                    table.origin(),
                    line,
                    WarningKind::ShadowedByLocal {
                        key: key.to_string(),
                        local: source.to_string(),
                    },
                ))
            })
            .collect();
        shadowed.sort_by_key(|w| w.line);
        warnings.extend(shadowed);
        for w in &warnings {
            w.log();
        }
        let snapshot = Snapshot {
            table,
            local,
            virtual_table,
            smart_host: self.smart_host.clone(),
            builder: self,
        };
        Ok((snapshot, warnings))
    }
}

/// One consistent set of tables.
struct Snapshot {
    table: RouteTable,
    local: LocalDomains,
    virtual_table: Option<Virtusertable>,
    smart_host: Option<SmartHost>,
    builder: MailertableBuilder,
}

enum Decision<'a> {
    Local(&'a LocalSource),
    Virtual(Route, Rule),
    Table(Match<'a>),
    Smart(&'a SmartHost),
    Direct,
}

fn reply(code: u16, status: EnhancedStatus, text: String) -> Route {
    Route::Reject {
        reply: Reply::new(code, Some(status), text).expect("invariant: code and status agree"),
    }
}

impl Snapshot {
    fn decide(&self, recipient: &Address) -> Decision<'_> {
        let domain = recipient.domain();
        let local = self.local.lookup(domain);
        if let Some(v) = &self.virtual_table
            && (local.is_some() || v.is_virtual(domain))
        {
            if let Some((route, rule)) = self.follow_virtual(v, recipient) {
                return Decision::Virtual(route, rule);
            }
            if local.is_none() {
                return Decision::Virtual(self.virtual_miss(recipient), Rule::VirtualDomain);
            }
        }
        if let Some(source) = local {
            return Decision::Local(source);
        }
        if let Some(m) = self.table.lookup(domain) {
            return Decision::Table(m);
        }
        match &self.smart_host {
            Some(s) => Decision::Smart(s),
            None => Decision::Direct,
        }
    }

    /// An address of a virtual domain (not in local-host-names) without an entry: unknown,
    /// except `postmaster`, which every domain must accept (RFC 5321 §4.5.1).
    fn virtual_miss(&self, recipient: &Address) -> Route {
        if recipient.local_part().eq_ignore_ascii_case("postmaster") {
            return Route::Local {
                target: LocalTarget::User("postmaster".into()),
            };
        }
        reply(
            550,
            EnhancedStatus::new(5, 1, 1),
            format!("<{recipient}>... User unknown"),
        )
    }

    /// Follows virtusertable entries from `recipient`: `None` when no entry matches it.
    fn follow_virtual(&self, v: &Virtusertable, recipient: &Address) -> Option<(Route, Rule)> {
        let rule = |m: &VirtualMatch| Rule::Virtusertable {
            key: m.key.clone(),
            line: m.line,
            file: v.origin().clone(),
        };
        let mut current = recipient.clone();
        let mut seen = vec![current.to_string().to_ascii_lowercase()];
        let mut m = v.lookup(&current)?;
        for _ in 0..MAX_VIRTUAL_STEPS {
            let next = match &m.target {
                VirtualTarget::Error(r) => {
                    return Some((Route::Reject { reply: r.clone() }, rule(&m)));
                }
                VirtualTarget::User(u) => {
                    let route = Route::Local {
                        target: LocalTarget::User(u.clone()),
                    };
                    return Some((route, rule(&m)));
                }
                VirtualTarget::Address(a) => a.clone(),
            };
            let domain = next.domain();
            let local = self.local.lookup(domain).is_some();
            if !local && !v.is_virtual(domain) {
                let route = Route::Local {
                    target: LocalTarget::Forward(next),
                };
                return Some((route, rule(&m)));
            }
            let key = next.to_string().to_ascii_lowercase();
            if seen.contains(&key) {
                seen.push(key);
                let text = format!(
                    "virtusertable loop: {} (line {} of {})",
                    seen.join(" -> "),
                    m.line,
                    v.origin()
                );
                return Some((reply(554, EnhancedStatus::new(5, 4, 6), text), rule(&m)));
            }
            seen.push(key);
            match v.lookup(&next) {
                Some(found) => {
                    current = next;
                    m = found;
                }
                None if local => {
                    let route = Route::Local {
                        target: LocalTarget::User(next.local_part().to_string()),
                    };
                    return Some((route, rule(&m)));
                }
                None => return Some((self.virtual_miss(&next), rule(&m))),
            }
        }
        let text = format!(
            "virtusertable entries for <{recipient}> lead through more than {MAX_VIRTUAL_STEPS} \
             addresses (last {current})"
        );
        Some((reply(554, EnhancedStatus::new(5, 4, 6), text), rule(&m)))
    }
}

/// The sendmail-compatible [`Router`]: local domains, mailertable, smart host, direct MX.
pub struct Mailertable {
    current: RwLock<Arc<Snapshot>>,
}

impl Mailertable {
    /// Starts building a router.
    pub fn builder() -> MailertableBuilder {
        MailertableBuilder::default()
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        // A writer only swaps an Arc, so a poisoned lock still holds a whole snapshot.
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The route for `recipient` (what [`Router::route`] returns, without the async call).
    pub fn lookup(&self, recipient: &Address) -> Route {
        let snapshot = self.snapshot();
        let domain = recipient.domain();
        match snapshot.decide(recipient) {
            Decision::Local(_) => Route::local(),
            Decision::Virtual(route, _) => route,
            Decision::Table(m) => m.route().clone(),
            Decision::Smart(s) => s.route(),
            Decision::Direct => Route::direct_mx(domain),
        }
    }

    /// The route for `recipient` and the rule that chose it.
    pub fn explain(&self, recipient: &Address) -> Explanation {
        let snapshot = self.snapshot();
        let domain = recipient.domain();
        let (route, rule) = match snapshot.decide(recipient) {
            Decision::Virtual(route, rule) => (route, rule),
            Decision::Local(source) => (
                Route::local(),
                match source {
                    LocalSource::File { file, line } => Rule::LocalHostNames {
                        file: file.clone(),
                        line: *line,
                    },
                    LocalSource::Hostname => Rule::Hostname,
                    LocalSource::Localhost => Rule::Localhost,
                },
            ),
            Decision::Table(m) => (
                m.route().clone(),
                Rule::Mailertable {
                    key: m.key(),
                    line: m.line(),
                    file: snapshot.table.origin().clone(),
                },
            ),
            Decision::Smart(s) => (s.route(), Rule::SmartHost),
            Decision::Direct => (Route::direct_mx(domain), Rule::DirectMx),
        };
        Explanation {
            recipient: recipient.clone(),
            route,
            rule,
        }
    }

    /// Re-reads the files the router was built from (mailertable, local-host-names) and swaps
    /// the new tables in atomically. A table with errors is refused and the old one stays in
    /// use. Text given in code is reused as it was.
    ///
    /// Reading is blocking file I/O; from async code with large tables call it through
    /// `tokio::task::spawn_blocking`.
    pub fn reload(&self) -> Result<Vec<Warning>, LoadError> {
        let builder = self.snapshot().builder.clone();
        self.reload_from(builder)
    }

    /// Builds new tables from `builder` and swaps them in atomically; on error the old tables
    /// stay in use. Later [`reload`](Mailertable::reload)s use `builder`'s sources.
    pub fn reload_from(&self, builder: MailertableBuilder) -> Result<Vec<Warning>, LoadError> {
        match builder.load() {
            Ok((snapshot, warnings)) => {
                let entries = snapshot.table.len();
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(snapshot);
                tracing::info!(entries, "routing tables reloaded");
                Ok(warnings)
            }
            Err(e) => {
                tracing::error!("routing tables not reloaded, the previous ones stay in use: {e}");
                Err(e)
            }
        }
    }

    /// The mailertable file in use, if the router reads one.
    pub fn mailertable_path(&self) -> Option<PathBuf> {
        self.snapshot().table.origin().path().map(Path::to_path_buf)
    }

    /// The number of mailertable entries in use.
    pub fn len(&self) -> usize {
        self.snapshot().table.len()
    }

    /// True when the mailertable in use has no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for Mailertable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.snapshot();
        f.debug_struct("Mailertable")
            .field("mailertable", s.table.origin())
            .field("entries", &s.table.len())
            .field("local_domains", &s.local.len())
            .field("smart_host", &s.smart_host)
            .finish()
    }
}

#[async_trait]
impl Router for Mailertable {
    async fn route(&self, recipient: &Address) -> Result<Route, RouteError> {
        Ok(self.lookup(recipient))
    }

    fn smart_host(&self) -> Option<Route> {
        self.snapshot().smart_host.as_ref().map(SmartHost::route)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Address {
        Address::parse(s).unwrap()
    }

    #[test]
    fn localhost_and_the_hostname_are_local_without_being_listed() {
        let (router, _) = Mailertable::builder()
            .hostname(Domain::parse("sipserver1.ourtest.com").unwrap())
            .build()
            .unwrap();
        assert_eq!(
            router.explain(&addr("root@localhost")).rule,
            Rule::Localhost
        );
        assert_eq!(
            router.explain(&addr("root@sipserver1.ourtest.com")).rule,
            Rule::Hostname
        );
        assert_eq!(router.explain(&addr("me@ourtest.com")).rule, Rule::DirectMx);
    }

    #[test]
    fn a_mailertable_key_for_a_local_domain_is_reported_as_never_used() {
        let (router, warnings) = Mailertable::builder()
            .mailertable_text("mailertable", "ourtest.com esmtp:[relay.example]\n")
            .local_host_names_text("local-host-names", "ourtest.com\n")
            .build()
            .unwrap();
        assert_eq!(
            warnings.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "mailertable:1: key \"ourtest.com\" is a local domain (local-host-names:1); \
              local domains are never routed out, so this entry is never used"
            ]
        );
        assert_eq!(router.lookup(&addr("a@ourtest.com")), Route::local());
    }

    fn virtual_router() -> Mailertable {
        Mailertable::builder()
            .local_host_names_text("local-host-names", "ourtest.com\n")
            .virtusertable_text(
                "virtusertable",
                "info@ourtest.com bob\n\
                 sales@ourtest.com team@partner.example\n\
                 joe@ourtest.com error:nouser 550 No such user here\n\
                 @virt.example %1@ourtest.com\n\
                 staff@virt.example info@ourtest.com\n\
                 a@loop.example b@loop.example\n\
                 b@loop.example a@loop.example\n",
            )
            .mailertable_text(
                "mailertable",
                "partner.example esmtp:[mx.partner.example]\n",
            )
            .build()
            .unwrap()
            .0
    }

    #[test]
    fn the_virtusertable_routes_local_and_virtual_domains() {
        let r = virtual_router();
        let user = |u: &str| Route::Local {
            target: LocalTarget::User(u.into()),
        };
        assert_eq!(r.lookup(&addr("info@ourtest.com")), user("bob"));
        assert_eq!(
            r.lookup(&addr("sales@ourtest.com")),
            Route::Local {
                target: LocalTarget::Forward(addr("team@partner.example"))
            }
        );
        assert!(matches!(
            r.lookup(&addr("joe@ourtest.com")),
            Route::Reject { reply } if reply.one_line() == "550 5.1.1 No such user here"
        ));
        // No entry in a local domain: the local part, as without a virtusertable.
        assert_eq!(r.lookup(&addr("carol@ourtest.com")), Route::local());
        // A virtual domain's catch-all into a local domain, then that domain's entry.
        assert_eq!(r.lookup(&addr("ann@virt.example")), user("ann"));
        assert_eq!(r.lookup(&addr("staff@virt.example")), user("bob"));
        assert_eq!(
            r.explain(&addr("staff@virt.example")).to_string(),
            "staff@virt.example: mailer=local user=bob rule=virtusertable:info@ourtest.com (line 1)"
        );
    }

    #[test]
    fn a_virtual_domain_without_an_entry_refuses_all_but_postmaster() {
        let r = virtual_router();
        let e = r.explain(&addr("nobody@loop.example"));
        assert_eq!(e.rule, Rule::VirtualDomain);
        assert!(matches!(&e.route, Route::Reject { reply }
            if reply.one_line() == "550 5.1.1 <nobody@loop.example>... User unknown"));
        assert_eq!(
            r.lookup(&addr("PostMaster@loop.example")),
            Route::Local {
                target: LocalTarget::User("postmaster".into())
            }
        );
    }

    #[test]
    fn a_virtusertable_loop_is_refused_with_5_4_6() {
        let r = virtual_router();
        match r.lookup(&addr("a@loop.example")) {
            Route::Reject { reply } => {
                assert_eq!(reply.status(), EnhancedStatus::new(5, 4, 6));
                assert!(
                    reply
                        .text()
                        .contains("a@loop.example -> b@loop.example -> a@loop.example"),
                    "{reply}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_lines_of_all_three_tables_are_reported_together() {
        let err = Mailertable::builder()
            .mailertable_text("mailertable", "a.example nonsense\n")
            .virtusertable_text("virtusertable", "nokey\n")
            .build()
            .unwrap_err();
        let files: Vec<String> = err
            .line_errors()
            .iter()
            .map(|e| e.file.to_string())
            .collect();
        assert_eq!(files, ["mailertable", "virtusertable"]);
    }

    #[test]
    fn errors_in_both_files_are_reported_together() {
        let err = Mailertable::builder()
            .mailertable_text("mailertable", "a.example nonsense\n")
            .local_host_names_text("local-host-names", "bad_name\n")
            .build()
            .unwrap_err();
        let files: Vec<_> = err
            .line_errors()
            .iter()
            .map(|e| (e.file.to_string(), e.line))
            .collect();
        assert_eq!(
            files,
            [
                ("mailertable".to_string(), 1),
                ("local-host-names".to_string(), 1)
            ]
        );
    }

    #[test]
    fn debug_output_summarises_instead_of_dumping_the_table() {
        let (router, _) = Mailertable::builder()
            .mailertable_text("mailertable", "a.example esmtp:b.example\n")
            .build()
            .unwrap();
        let shown = format!("{router:?}");
        assert!(shown.contains("entries: 1"), "{shown}");
    }
}
