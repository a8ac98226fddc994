//! [`LocalTransport`]: the [`Transport`] for `Route::Local`.
//!
//! For each recipient of each message it works out where the mail goes, delivers there, and
//! reports one outcome before going on to the next message:
//!
//! 1. A `Delivered-To:` field naming the recipient already means a loop: refused, 5.4.6.
//! 2. A virtusertable forward (`LocalTarget::Forward`) is queued for its address. Otherwise
//!    the local name is expanded through the aliases (and `.forward` files when configured;
//!    see [`super::expand`]): mailboxes, files and commands are delivered there and then,
//!    addresses elsewhere are queued anew with [`Reports::forward`] (same sender, ORCPT kept,
//!    `Delivered-To:` added) as Postfix's local(8) does.
//! 3. Mailboxes are the configured [`MailboxLocation`]: a Maildir or mbox file belonging to
//!    the user from the password database (unknown: `550 5.1.1 <x>... User unknown`), or an
//!    LMTP server, which knows its own users. Stored copies start with `Return-Path:` and
//!    `Delivered-To:` (over LMTP the server writes `Return-Path:` from the envelope, and each
//!    envelope recipient gets a transaction of its own so its copy carries its
//!    `Delivered-To:`).
//!
//! The recipient's outcome combines its targets': delivered when every target took the
//! message (the reply lists them, with "forwarded as QUEUEID" for queued copies); deferred
//! when any target deferred (the targets that took it will get it again at the retry, the
//! duplicate local(8) also accepts); failed when none delivered and some failed; delivered with
//! a note naming the failed targets when some delivered and the others failed for good. The
//! same final target reached through two recipients of one message gets one copy.

mod plan;
mod store;

use store::mbox_input;

use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};

use async_trait::async_trait;
use bytes::Bytes;

use crate::address::{Address, Domain};
use crate::envelope::{OriginalRecipient, Recipient};
use crate::route::{LocalTarget, Route};
use crate::status::{Diagnostic, EnhancedStatus, Outcome, Reply};
use crate::transport::esmtp::Timeouts;
use crate::transport::{Delivery, Next, RecipientReport, Reports, Transport};

use super::aliases::{Aliases, AliasesError, DuplicateAlias};
use super::config::{LmtpRecipient, LocalConfig};
use super::expand::{Expansion, FileSystem, Target, TargetSource};
use super::fsutil::Owner;
use super::lmtp::{LmtpMessage, LmtpSession};
use super::location::MailboxLocation;
use super::maildir::Maildir;
use super::mbox::{self, MboxOptions};
use super::pipe::{self, PipeJob};
use super::trace;
use super::users::{SystemUsers, User, UserDb};

/// Delivers local mail: aliases, then Maildir, mbox or LMTP, files, commands and forwards.
///
/// ```no_run
/// use std::sync::Arc;
/// use postrider::local::{LocalConfig, LocalTransport};
/// # fn demo(engine: postrider::engine::EngineBuilder) -> Result<(), Box<dyn std::error::Error>> {
/// let mut config = LocalConfig::default();
/// config.mailbox = "maildir:~/Maildir".parse()?;
/// config.aliases = Some("/etc/aliases".into());
/// let (local, _duplicates) = LocalTransport::new(config, "sipserver1.ourtest.com".parse()?)?;
/// let engine = engine.local_transport(Arc::new(local));
/// # Ok(()) }
/// ```
pub struct LocalTransport {
    config: LocalConfig,
    hostname: Domain,
    users: Arc<dyn UserDb>,
    aliases: RwLock<Arc<Aliases>>,
    mbox: MboxOptions,
    timeouts: Timeouts,
}

impl std::fmt::Debug for LocalTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalTransport")
            .field("mailbox", &self.config.mailbox.to_string())
            .field("aliases", &self.aliases().len())
            .finish()
    }
}

/// One final target of one recipient and what became of it.
#[derive(Debug)]
struct Job {
    /// How the target is shown (`\bob`, `/var/log/x`, `"|cmd"`, `jane@example.net`).
    label: String,
    kind: Kind,
    outcome: Option<Outcome>,
}

#[derive(Debug)]
enum Kind {
    Mailbox(User),
    Lmtp(String),
    File(PathBuf, User),
    Pipe(PipeJob),
    Forward(Address),
    /// The same target as an earlier recipient's job (plan, job): one copy serves both.
    Same(usize, usize),
    /// Decided while planning (unknown user, disabled, unsafe).
    Decided,
}

/// What one recipient's mail becomes.
#[derive(Debug)]
struct Plan {
    index: usize,
    address: Address,
    /// Set when the recipient is decided as a whole before any target is tried.
    outcome: Option<Outcome>,
    jobs: Vec<Job>,
    notes: Vec<String>,
}

fn reply(text: impl Into<String>) -> Reply {
    Reply::new(250, Some(EnhancedStatus::OK), text).expect("invariant: 250 with 2.0.0 agree")
}

fn user_unknown(recipient: &Address, via: Option<&str>) -> Outcome {
    let text = match via {
        None => format!("<{recipient}>... User unknown"),
        Some(user) => format!("<{recipient}>... User unknown (alias target {user})"),
    };
    Outcome::Failed(Diagnostic::remote(
        Reply::new(550, Some(EnhancedStatus::new(5, 1, 1)), text)
            .expect("invariant: 550 with 5.1.1 agree"),
    ))
}

impl LocalTransport {
    /// A transport for `config`, reading its aliases file now (none configured: no aliases).
    /// `hostname` qualifies the address given to LMTP and commands when needed.
    pub fn new(
        config: LocalConfig,
        hostname: Domain,
    ) -> Result<(LocalTransport, Vec<DuplicateAlias>), AliasesError> {
        let (aliases, duplicates) = match &config.aliases {
            Some(p) => Aliases::load(p)?,
            None => (Aliases::empty(), Vec::new()),
        };
        let mbox = MboxOptions {
            lock_timeout: config.lock_timeout,
            ..MboxOptions::default()
        };
        Ok((
            LocalTransport {
                config,
                hostname,
                users: Arc::new(SystemUsers),
                aliases: RwLock::new(Arc::new(aliases)),
                mbox,
                timeouts: Timeouts::default(),
            },
            duplicates,
        ))
    }

    /// Looks users up in `users` instead of the system's password database.
    pub fn with_users(mut self, users: Arc<dyn UserDb>) -> LocalTransport {
        self.users = users;
        self
    }

    /// Uses `aliases` instead of the configured file (until the next reload).
    pub fn with_aliases(self, aliases: Aliases) -> LocalTransport {
        *self.aliases.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(aliases);
        self
    }

    /// mbox lock settings (the stale-lock age is Dovecot's 2 minutes unless set here).
    pub fn with_mbox_options(mut self, options: MboxOptions) -> LocalTransport {
        self.mbox = options;
        self
    }

    /// Time limits of LMTP sessions.
    pub fn with_lmtp_timeouts(mut self, timeouts: Timeouts) -> LocalTransport {
        self.timeouts = timeouts;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &LocalConfig {
        &self.config
    }

    /// The user database.
    pub fn users(&self) -> &Arc<dyn UserDb> {
        &self.users
    }

    /// The aliases in use.
    pub fn aliases(&self) -> Arc<Aliases> {
        Arc::clone(&self.aliases.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Swaps in `aliases` (deliveries under way finish with the ones they started with).
    pub fn set_aliases(&self, aliases: Aliases) {
        *self.aliases.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(aliases);
    }

    /// Reads the configured aliases file again and swaps it in; on error the old aliases stay.
    pub fn reload_aliases(&self) -> Result<Vec<DuplicateAlias>, AliasesError> {
        let Some(path) = &self.config.aliases else {
            return Ok(Vec::new());
        };
        let (aliases, duplicates) = Aliases::load(path)?;
        *self.aliases.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(aliases);
        Ok(duplicates)
    }

    /// Where include and `.forward` files are read from, as configured.
    pub fn sources(&self) -> FileSystem {
        match &self.config.forward_file {
            Some(name) => FileSystem::with_forward(Arc::clone(&self.users), name.clone()),
            None => FileSystem::without_forward(),
        }
    }

    /// What mail for local name `name` becomes with this transport's aliases and `.forward`
    /// setting (blocking: it may read include files).
    pub fn expand(&self, name: &str) -> Expansion {
        self.aliases().expand_with(name, &self.sources())
    }

    fn lookup_user(&self, name: &str) -> Result<Option<User>, Outcome> {
        let found = self.users.lookup(name).and_then(|u| match u {
            None if name.chars().any(|c| c.is_ascii_uppercase()) => {
                self.users.lookup(&name.to_ascii_lowercase())
            }
            other => Ok(other),
        });
        found.map_err(|e| Outcome::deferred(EnhancedStatus::new(4, 3, 0), e.to_string()))
    }

    /// Who a file or command target runs as, or why it may not run.
    fn run_as(&self, source: &TargetSource) -> Result<User, Outcome> {
        let refuse = |why: String| Outcome::failed(EnhancedStatus::new(5, 7, 1), why);
        let default = || match self.lookup_user(&self.config.default_user)? {
            Some(u) => Ok(u),
            None => Err(Outcome::deferred(
                EnhancedStatus::new(4, 3, 5),
                format!(
                    "default_user {:?} of [local] is not a user of this system",
                    self.config.default_user
                ),
            )),
        };
        match source {
            TargetSource::Name | TargetSource::Aliases { .. } => default(),
            TargetSource::Include {
                writable_by_others: true,
                path,
                ..
            } => Err(refuse(format!(
                "refused: {} may be written by group or others, so its files and commands are not trusted",
                path.display()
            ))),
            TargetSource::Include { owner: 0, .. } => default(),
            TargetSource::Include { owner, path, .. } => match self.users.lookup_uid(*owner) {
                Ok(Some(u)) => Ok(u),
                Ok(None) => Err(refuse(format!(
                    "refused: {} belongs to uid {owner}, which is not a user",
                    path.display()
                ))),
                Err(e) => Err(Outcome::deferred(
                    EnhancedStatus::new(4, 3, 0),
                    e.to_string(),
                )),
            },
            TargetSource::Forward { user, .. } => match self.lookup_user(user)? {
                Some(u) => Ok(u),
                None => Err(refuse(format!("the owner of ~{user}/.forward is gone"))),
            },
        }
    }

    /// Delivers every planned job of one message.
    async fn run(
        &self,
        d: &Delivery,
        plans: &mut [Plan],
        lmtp: &mut Option<LmtpSession>,
        reports: &dyn Reports,
    ) {
        // One copy per final target per message.
        let mut first: std::collections::HashMap<String, (usize, usize)> = Default::default();
        for (p, plan) in plans.iter_mut().enumerate() {
            for (j, job) in plan.jobs.iter_mut().enumerate() {
                if job.outcome.is_some() {
                    continue;
                }
                let key = match &job.kind {
                    Kind::Mailbox(u) => format!("mailbox:{}", u.name),
                    Kind::Lmtp(r) => format!("lmtp:{r}"),
                    Kind::File(p, _) => format!("file:{}", p.display()),
                    Kind::Pipe(c) => format!("pipe:{}:{}", c.user.uid, c.command),
                    // Forwarded copies carry their recipient's Delivered-To: not shared.
                    Kind::Forward(_) | Kind::Same(..) | Kind::Decided => continue,
                };
                match first.get(&key) {
                    Some(&(fp, fj)) => job.kind = Kind::Same(fp, fj),
                    None => {
                        first.insert(key, (p, j));
                    }
                }
            }
        }
        self.run_lmtp(d, plans, lmtp).await;
        for plan in plans.iter_mut() {
            if plan.outcome.is_some() {
                continue;
            }
            let fields = trace::trace_fields(&d.envelope.sender, &plan.address);
            let mut forwards = Vec::new();
            for (j, job) in plan.jobs.iter_mut().enumerate() {
                if job.outcome.is_some() {
                    continue;
                }
                match &job.kind {
                    Kind::Mailbox(user) => {
                        job.outcome = Some(self.store(d, &fields, user, &plan.address).await);
                    }
                    Kind::File(path, user) => {
                        job.outcome = Some(self.append_file(d, &fields, path, user).await);
                    }
                    Kind::Pipe(p) => {
                        let input = mbox_input(d, &fields);
                        job.outcome = Some(pipe::run(p, input).await);
                    }
                    Kind::Forward(a) => forwards.push((j, a.clone())),
                    Kind::Lmtp(_) | Kind::Same(..) | Kind::Decided => {}
                }
            }
            if !forwards.is_empty() {
                let outcome = self.forward(d, plan, &forwards, reports).await;
                for (j, _) in &forwards {
                    plan.jobs[*j].outcome = Some(outcome.clone());
                }
            }
        }
        // Copies shared with an earlier recipient take that job's outcome.
        for p in 0..plans.len() {
            for j in 0..plans[p].jobs.len() {
                if let Kind::Same(fp, fj) = plans[p].jobs[j].kind {
                    let o = plans[fp].jobs[fj].outcome.clone();
                    plans[p].jobs[j].outcome = o;
                }
            }
        }
    }

    async fn forward(
        &self,
        d: &Delivery,
        plan: &Plan,
        targets: &[(usize, Address)],
        reports: &dyn Reports,
    ) -> Outcome {
        let original = &d.envelope.recipients[plan.index];
        let recipients = targets
            .iter()
            .map(|(_, a)| Recipient {
                address: a.clone(),
                notify: original.notify,
                orcpt: Some(
                    original
                        .orcpt
                        .clone()
                        .unwrap_or_else(|| OriginalRecipient::rfc822(&plan.address)),
                ),
            })
            .collect();
        let mut body = trace::delivered_to(&plan.address);
        body.extend_from_slice(&d.body);
        let copy = Delivery {
            id: d.id,
            envelope: Arc::clone(&d.envelope),
            recipients: Vec::new(),
            body: Bytes::from(body),
        };
        match reports.forward(&copy, recipients).await {
            Ok(id) => {
                let to: Vec<String> = targets.iter().map(|(_, a)| a.to_string()).collect();
                Outcome::Delivered {
                    reply: reply(format!("forwarded as {id} to {}", to.join(", "))),
                }
            }
            Err(diag) => Outcome::Deferred(diag),
        }
    }
}

/// One recipient's report from its plan.
fn report(d: &Delivery, plan: Plan) -> RecipientReport {
    let id = d.id;
    if let Some(o) = plan.outcome {
        return RecipientReport::new(id, plan.index, o, None);
    }
    let several = plan.jobs.len() > 1;
    let labelled = |job: &Job, text: &str| {
        if several {
            format!("{}: {text}", job.label)
        } else {
            text.to_string()
        }
    };
    let mut delivered = Vec::new();
    let mut deferred = None;
    let mut failed = Vec::new();
    for job in &plan.jobs {
        match &job.outcome {
            Some(Outcome::Delivered { reply }) => delivered.push(labelled(job, reply.text())),
            Some(Outcome::Deferred(diag)) => {
                if deferred.is_none() {
                    let mut d = diag.clone();
                    d.text = labelled(job, &d.text);
                    deferred = Some(d);
                }
            }
            Some(Outcome::Failed(diag)) => {
                let mut d = diag.clone();
                d.text = labelled(job, &d.text);
                failed.push(d);
            }
            None => {
                if deferred.is_none() {
                    deferred = Some(Diagnostic::local(
                        EnhancedStatus::new(4, 3, 0),
                        labelled(job, "internal: the target was not attempted"),
                    ));
                }
            }
        }
    }
    let mut notes = plan.notes;
    let outcome = if let Some(d) = deferred {
        if !delivered.is_empty() {
            notes.push(format!(
                "{} of {} targets took the message already and get it again at the retry",
                delivered.len(),
                plan.jobs.len()
            ));
        }
        Outcome::Deferred(d)
    } else if delivered.is_empty() {
        match failed.into_iter().next() {
            Some(d) => Outcome::Failed(d),
            None => Outcome::failed(
                EnhancedStatus::new(5, 1, 1),
                format!("<{}>... expands to nothing", plan.address),
            ),
        }
    } else {
        for f in &failed {
            notes.push(format!("not delivered: {}", f.text));
        }
        Outcome::Delivered {
            reply: reply(delivered.join("; ")),
        }
    };
    let note = (!notes.is_empty()).then(|| notes.join("; "));
    RecipientReport::new(id, plan.index, outcome, None).with_note(note)
}

#[async_trait]
impl Transport for LocalTransport {
    async fn deliver(&self, route: &Route, batch: &[Delivery], reports: &dyn Reports) {
        let Route::Local { target } = route else {
            for d in batch {
                let misrouted = d
                    .recipients
                    .iter()
                    .map(|&i| {
                        RecipientReport::new(
                            d.id,
                            i,
                            Outcome::deferred(
                                EnhancedStatus::new(4, 3, 5),
                                "the local transport was handed a route that is not local",
                            ),
                            None,
                        )
                    })
                    .collect();
                if reports.record(d.id, misrouted).await == Next::Stop {
                    return;
                }
            }
            return;
        };
        let mut lmtp = None;
        for d in batch {
            if reports.stopping() {
                break;
            }
            let mut plans = Vec::with_capacity(d.recipients.len());
            for &i in &d.recipients {
                plans.push(self.plan(target, d, i).await);
            }
            self.run(d, &mut plans, &mut lmtp, reports).await;
            let out = plans.into_iter().map(|p| report(d, p)).collect();
            if reports.record(d.id, out).await == Next::Stop {
                break;
            }
        }
        if let Some(s) = lmtp {
            s.quit().await;
        }
    }
}
