//! MAIL and RCPT: the sender and each recipient checked (access rules, relaying, routes,
//! limits) before the message is taken.

use super::*;

impl Session<'_> {
    pub(super) fn mail(&mut self, from: ReversePath, params: MailParams) {
        let Some((_, extended)) = &self.helo else {
            self.error("503 5.5.1 Send HELO or EHLO first");
            return;
        };
        let extended = *extended;
        if self.transaction.is_some() {
            self.error("503 5.5.1 Nested MAIL command");
            return;
        }
        if self.endpoint.kind.requires_auth() && self.user.is_none() {
            self.error("530 5.7.0 Authentication required");
            return;
        }
        if !extended && params != MailParams::default() {
            self.error("555 5.5.4 MAIL parameters need EHLO");
            return;
        }
        // RFC 8689 §4.1: REQUIRETLS is taken only over TLS; 5.7.10 is "Encryption Needed".
        if params.requiretls && self.tls.is_none() {
            self.error("530 5.7.10 REQUIRETLS needs a TLS session: send STARTTLS first");
            return;
        }
        let limit = self.shared.limits.max_message_size;
        if params.size.is_some_and(|s| s > limit as u64) {
            self.error(&format!(
                "552 5.3.4 Message size exceeds the limit of {limit} octets"
            ));
            return;
        }
        if params.body == Some(BodyParam::BinaryMime) {
            self.error("555 5.5.4 BODY=BINARYMIME is not supported");
            return;
        }
        if !params.smtputf8 && from.address().is_some_and(Address::needs_smtputf8) {
            self.error("553 5.6.7 A non-ASCII address needs the SMTPUTF8 parameter");
            return;
        }
        let mut discard = matches!(
            self.verdict.entry.as_ref().map(|m| &m.action),
            Some(Action::Discard)
        );
        if let Some(sender) = from.address() {
            let policy = self
                .shared
                .policy
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            match policy.sender(sender).map(|m| m.action.clone()) {
                Some(Action::Reject) => {
                    self.error(&format!("550 5.7.1 <{sender}>... Access denied"));
                    return;
                }
                Some(Action::Error(r)) => {
                    self.errors += 1;
                    self.reply_with(&r);
                    return;
                }
                Some(Action::Discard) => discard = true,
                _ => {}
            }
        }
        self.transaction = Some(Transaction {
            sender: from,
            params,
            recipients: Vec::new(),
            discarded: 0,
            discard,
            chunks: None,
            prefix: 0,
        });
        self.reply("250 2.1.0 OK");
    }

    pub(super) async fn rcpt(&mut self, to: ForwardPath, params: RcptParams) {
        let Some(t) = &self.transaction else {
            self.error("503 5.5.1 Need MAIL before RCPT");
            return;
        };
        if t.chunks.is_some() {
            self.error("503 5.5.1 RCPT not allowed after BDAT");
            return;
        }
        if t.recipients.len() + t.discarded >= self.shared.limits.max_recipients {
            self.reply("452 4.5.3 Too many recipients");
            return;
        }
        let smtputf8 = t.params.smtputf8;
        let (address, postmaster) = match to {
            ForwardPath::Postmaster => {
                match Address::new("postmaster", self.shared.hostname.clone()) {
                    Ok(a) => (a, true),
                    Err(e) => {
                        self.error(&format!("553 5.1.3 {e}"));
                        return;
                    }
                }
            }
            ForwardPath::Mailbox(a) => (a, false),
        };
        if !smtputf8 && address.needs_smtputf8() {
            self.error("553 5.6.7 A non-ASCII address needs the SMTPUTF8 parameter");
            return;
        }
        let policy = self
            .shared
            .policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut discard = false;
        let mut listed_relay = false;
        match policy.recipient(&address).map(|m| m.action.clone()) {
            Some(Action::Reject) => {
                self.error(&format!("550 5.7.1 <{address}>... Access denied"));
                return;
            }
            Some(Action::Error(r)) => {
                self.errors += 1;
                self.reply_with(&r);
                return;
            }
            Some(Action::Discard) => discard = true,
            Some(Action::Relay) => listed_relay = true,
            _ => {}
        }
        let may_relay = self.may_relay() || (listed_relay && !self.endpoint.kind.requires_auth());
        let denied = format!("550 5.7.1 <{address}>... Relaying denied");
        let route = if postmaster {
            Ok(Route::local())
        } else {
            self.shared.router.route(&address).await
        };
        match route {
            // Whether the recipient is local is not known yet: nobody is refused for good.
            Err(RouteError::Temporary { reason }) => {
                tracing::warn!(target: "postrider::server", "routing <{address}> failed: {reason}");
                self.reply("451 4.3.0 Temporary routing failure, try again later");
                return;
            }
            Ok(Route::Local { .. }) => {
                if has_sender_specified_route(&address) && !may_relay {
                    self.error(&denied);
                    return;
                }
            }
            _ if !may_relay => {
                tracing::info!(target: "postrider::server", "client {}: relaying to <{address}> denied", self.client());
                self.error(&denied);
                return;
            }
            Ok(Route::Relay { .. }) => {}
            // Refused now, not bounced later: no backscatter.
            Ok(Route::Reject { reply }) => {
                self.errors += 1;
                self.reply_with(&reply);
                return;
            }
            Err(RouteError::Permanent { reason }) => {
                self.error(&format!("550 5.1.2 <{address}>... {}", sanitize(&reason)));
                return;
            }
        }
        let Some(t) = &mut self.transaction else {
            return;
        };
        if discard {
            t.discarded += 1;
        } else {
            t.recipients.push(Recipient {
                address,
                notify: params.notify,
                orcpt: params.orcpt,
            });
        }
        self.reply("250 2.1.5 OK");
    }
}
