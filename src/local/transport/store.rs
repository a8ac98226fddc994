//! Carrying out the jobs: a mailbox (Maildir or mbox), a file, or an LMTP session for every
//! mailbox job of a message.

use super::*;

impl LocalTransport {
    pub(super) async fn store(
        &self,
        d: &Delivery,
        fields: &[u8],
        user: &User,
        address: &Address,
    ) -> Outcome {
        let domain = address.domain().as_str();
        let path = match self.config.mailbox.path_for(user, domain) {
            Some(Ok(p)) => p,
            Some(Err(e)) => {
                return Outcome::deferred(EnhancedStatus::new(4, 3, 5), e.to_string());
            }
            None => {
                return Outcome::deferred(
                    EnhancedStatus::new(4, 3, 5),
                    "internal: LMTP mailbox in the file path",
                );
            }
        };
        let message = trace::to_lf(&[fields, &d.body]);
        let owner = Owner::for_user(user.uid, user.gid);
        let home = user.home.clone();
        let location = self.config.mailbox.clone();
        let sender = d.envelope.sender.clone();
        let options = self.mbox;
        let shown = path.display().to_string();
        let result = tokio::task::spawn_blocking(move || match location {
            MailboxLocation::Maildir(_) => Maildir::new(&path)
                .deliver(&message, owner, Some(&home))
                .map(|_| format!("delivered to maildir {}", path.display())),
            _ => mbox::deliver(&path, &sender, &message, owner, &options)
                .map(|()| format!("delivered to mailbox {}", path.display())),
        })
        .await;
        match result {
            Ok(Ok(text)) => Outcome::Delivered { reply: reply(text) },
            Ok(Err(e)) => Outcome::Deferred(e.diagnostic()),
            Err(e) => Outcome::deferred(
                EnhancedStatus::new(4, 3, 0),
                format!("delivery to {shown} was interrupted: {e}"),
            ),
        }
    }

    pub(super) async fn append_file(
        &self,
        d: &Delivery,
        fields: &[u8],
        path: &std::path::Path,
        user: &User,
    ) -> Outcome {
        let message = trace::to_lf(&[fields, &d.body]);
        let sender = d.envelope.sender.clone();
        let options = self.mbox;
        let (path, user) = (path.to_path_buf(), user.clone());
        let result = tokio::task::spawn_blocking(move || {
            crate::local::file::deliver(&path, &sender, &message, &user, &options)
                .map(|()| format!("delivered to file {}", path.display()))
        })
        .await;
        match result {
            Ok(Ok(text)) => Outcome::Delivered { reply: reply(text) },
            Ok(Err(e)) => Outcome::Deferred(e.diagnostic()),
            Err(e) => Outcome::deferred(
                EnhancedStatus::new(4, 3, 0),
                format!("file delivery was interrupted: {e}"),
            ),
        }
    }

    /// Sends the LMTP targets, one transaction per envelope recipient: each copy carries its
    /// recipient's `Delivered-To:` (the loop check needs it, and an LMTP server adds its own
    /// only when a transaction has a single recipient).
    pub(super) async fn run_lmtp(
        &self,
        d: &Delivery,
        plans: &mut [Plan],
        lmtp: &mut Option<LmtpSession>,
    ) {
        let MailboxLocation::Lmtp(target) = &self.config.mailbox else {
            return;
        };
        for plan in plans.iter_mut() {
            if plan.outcome.is_some() {
                continue;
            }
            let mut slots = Vec::new();
            let mut rcpts = Vec::new();
            for (j, job) in plan.jobs.iter().enumerate() {
                if let (Kind::Lmtp(r), None) = (&job.kind, &job.outcome) {
                    slots.push(j);
                    rcpts.push(r.clone());
                }
            }
            if rcpts.is_empty() {
                continue;
            }
            let mut body = trace::delivered_to(&plan.address);
            body.extend_from_slice(&d.body);
            let session = match lmtp.take() {
                Some(s) => Ok(s),
                None => LmtpSession::connect(target, self.hostname.as_str(), self.timeouts).await,
            };
            let outcomes = match session {
                Ok(mut s) => {
                    let m = LmtpMessage {
                        sender: &d.envelope.sender,
                        recipients: &rcpts,
                        body: &body,
                        body_type: d.envelope.body,
                        smtputf8: d.envelope.smtputf8,
                    };
                    match s.send(&m).await {
                        Ok(o) => {
                            *lmtp = Some(s);
                            o
                        }
                        Err(e) => vec![e.outcome(); rcpts.len()],
                    }
                }
                Err(e) => vec![e.outcome(); rcpts.len()],
            };
            for (j, o) in slots.into_iter().zip(outcomes) {
                plan.jobs[j].outcome = Some(o);
            }
        }
    }
}

/// `bob+x` -> `bob`, for comparing a mailbox with the name it was reached from.
pub(super) fn base(name: &str) -> &str {
    match name.find('+') {
        Some(i) if i > 0 => &name[..i],
        _ => name,
    }
}

/// What a command reads: an mbox entry without quoting.
pub(super) fn mbox_input(d: &Delivery, fields: &[u8]) -> Vec<u8> {
    let from = format!(
        "From {} {}\n",
        d.envelope
            .sender
            .address()
            .map(|a| a.to_string().replace(char::is_whitespace, "_"))
            .unwrap_or_else(|| "MAILER-DAEMON".into()),
        crate::time::asctime(std::time::SystemTime::now())
    );
    trace::to_lf(&[from.as_bytes(), fields, &d.body])
}
