//! The sendmail-compatible router: local domains, then the mailertable, then the smart host,
//! then direct delivery to the recipient domain's MX hosts.
//!
//! The tables live in an immutable snapshot behind an `RwLock<Arc<_>>`: a lookup clones the
//! `Arc` (the lock is held for that instant only) and works on the snapshot, so a
//! [`reload`](Mailertable::reload) never blocks readers for longer than a pointer swap and a
//! lookup never sees half of an old table and half of a new one.
//!
//! ```
//! use postrider::route::{Mailertable, SmartHost};
//! use postrider::{Address, Route};
//! let (router, warnings) = Mailertable::builder()
//!     .mailertable_text("mailertable", "gmail.com esmtp:[smtp.gmail.com]:587\n")
//!     .local_host_names_text("local-host-names", "ourtest.com\n")
//!     .smart_host("[mail.isp.net]".parse::<SmartHost>()?)
//!     .build()?;
//! assert!(warnings.is_empty());
//! let e = router.explain(&Address::parse("user@gmail.com")?);
//! assert_eq!(e.to_string(), "user@gmail.com: mailer=esmtp host=[smtp.gmail.com] port=587 mx=no rule=mailertable:gmail.com (line 1)");
//! assert_eq!(router.lookup(&Address::parse("aaa@ourtest.com")?), Route::Local { user: None });
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use async_trait::async_trait;

use crate::address::{Address, Domain};

use super::error::LoadError;
use super::explain::{Explanation, Rule};
use super::local::{LocalDomains, LocalSource};
use super::smart_host::SmartHost;
use super::table::{Match, RouteTable};
use super::table_file::{Origin, Warning, WarningKind};
use super::{Route, RouteError, Router};

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
        let ((table, mut warnings), (mut local, local_warnings)) = match (table, local) {
            (Ok(t), Ok(l)) => (t, l),
            (Err(LoadError::Invalid { mut errors }), Err(LoadError::Invalid { errors: more })) => {
                errors.extend(more);
                return Err(LoadError::Invalid { errors });
            }
            (Err(e), _) | (_, Err(e)) => return Err(e),
        };
        warnings.extend(local_warnings);
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
    smart_host: Option<SmartHost>,
    builder: MailertableBuilder,
}

enum Decision<'a> {
    Local(&'a LocalSource),
    Table(Match<'a>),
    Smart(&'a SmartHost),
    Direct,
}

impl Snapshot {
    fn decide(&self, domain: &Domain) -> Decision<'_> {
        if let Some(source) = self.local.lookup(domain) {
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
        match snapshot.decide(domain) {
            Decision::Local(_) => Route::Local { user: None },
            Decision::Table(m) => m.route().clone(),
            Decision::Smart(s) => s.route(),
            Decision::Direct => Route::direct_mx(domain),
        }
    }

    /// The route for `recipient` and the rule that chose it.
    pub fn explain(&self, recipient: &Address) -> Explanation {
        let snapshot = self.snapshot();
        let domain = recipient.domain();
        let (route, rule) = match snapshot.decide(domain) {
            Decision::Local(source) => (
                Route::Local { user: None },
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
        assert_eq!(
            router.lookup(&addr("a@ourtest.com")),
            Route::Local { user: None }
        );
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
