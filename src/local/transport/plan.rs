//! What one recipient's delivery consists of: the aliases expanded, each final target checked
//! (user, mailbox, file or command allowed, who it runs as) and made a job, before anything is
//! written.

use super::store::base;
use super::*;

impl LocalTransport {
    /// Works out the jobs of one recipient.
    pub(super) async fn plan(&self, target: &LocalTarget, d: &Delivery, index: usize) -> Plan {
        let recipient = &d.envelope.recipients[index];
        let address = recipient.address.clone();
        let mut plan = Plan {
            index,
            address: address.clone(),
            outcome: None,
            jobs: Vec::new(),
            notes: Vec::new(),
        };
        if trace::has_delivered_to(&d.body, &address) {
            plan.outcome = Some(Outcome::failed(
                EnhancedStatus::new(5, 4, 6),
                format!(
                    "mail forwarding loop for {address}: the message already has Delivered-To: {address}"
                ),
            ));
            return plan;
        }
        let name = match target {
            LocalTarget::Forward(to) => {
                plan.jobs.push(Job {
                    label: to.to_string(),
                    kind: Kind::Forward(to.clone()),
                    outcome: None,
                });
                return plan;
            }
            t => t
                .local_name(&address)
                .unwrap_or(address.local_part())
                .to_string(),
        };
        let aliases = self.aliases();
        let sources = self.sources();
        let lookup_name = name.clone();
        let expansion =
            match tokio::task::spawn_blocking(move || aliases.expand_with(&lookup_name, &sources))
                .await
            {
                Ok(e) => e,
                Err(e) => {
                    plan.outcome = Some(Outcome::deferred(
                        EnhancedStatus::new(4, 3, 0),
                        format!("alias expansion failed: {e}"),
                    ));
                    return plan;
                }
            };
        if let Some(p) = expansion.deferral() {
            plan.outcome = Some(Outcome::deferred(
                EnhancedStatus::new(4, 3, 5),
                p.to_string(),
            ));
            return plan;
        }
        if let Some(p) = expansion.dead_end() {
            plan.outcome = Some(Outcome::failed(EnhancedStatus::new(5, 4, 6), p.to_string()));
            return plan;
        }
        plan.notes
            .extend(expansion.problems.iter().map(ToString::to_string));
        let domain = address.domain().as_str().to_string();
        for e in expansion.targets {
            let label = e.target.to_string();
            let (kind, outcome) = match e.target {
                Target::Remote(a) => (Kind::Forward(a), None),
                Target::Mailbox(user) => match &self.config.mailbox {
                    MailboxLocation::Lmtp(_) => {
                        let rcpt = match self.config.lmtp_recipient {
                            LmtpRecipient::User => user,
                            LmtpRecipient::UserAtDomain => format!("{user}@{domain}"),
                        };
                        (Kind::Lmtp(rcpt), None)
                    }
                    _ => match self.lookup_user(&user) {
                        Ok(Some(u)) => (Kind::Mailbox(u), None),
                        Ok(None) => {
                            let via =
                                (!user.eq_ignore_ascii_case(base(&name))).then_some(user.as_str());
                            (Kind::Decided, Some(user_unknown(&address, via)))
                        }
                        Err(o) => (Kind::Decided, Some(o)),
                    },
                },
                Target::File(path) => {
                    if !self.config.allow_files {
                        (
                            Kind::Decided,
                            Some(Outcome::failed(
                                EnhancedStatus::new(5, 7, 1),
                                format!(
                                    "delivery to file {} is not allowed (allow_files = false in [local])",
                                    path.display()
                                ),
                            )),
                        )
                    } else {
                        match self.run_as(&e.source) {
                            Ok(u) => (Kind::File(path, u), None),
                            Err(o) => (Kind::Decided, Some(o)),
                        }
                    }
                }
                Target::Pipe(command) => {
                    if !self.config.allow_pipes {
                        (
                            Kind::Decided,
                            Some(Outcome::failed(
                                EnhancedStatus::new(5, 7, 1),
                                format!(
                                    "delivery to command \"{command}\" is not allowed (allow_pipes = false in [local])"
                                ),
                            )),
                        )
                    } else {
                        match self.run_as(&e.source) {
                            Ok(u) => (
                                Kind::Pipe(PipeJob {
                                    command,
                                    user: u,
                                    sender: d
                                        .envelope
                                        .sender
                                        .address()
                                        .map(ToString::to_string)
                                        .unwrap_or_default(),
                                    recipient: address.to_string(),
                                    local: address.local_part().to_string(),
                                    domain: domain.clone(),
                                    timeout: self.config.command_timeout,
                                }),
                                None,
                            ),
                            Err(o) => (Kind::Decided, Some(o)),
                        }
                    }
                }
            };
            plan.jobs.push(Job {
                label,
                kind,
                outcome,
            });
        }
        plan
    }
}
