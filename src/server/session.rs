//! One SMTP session: the state machine from greeting to QUIT.
//!
//! The session reads whole command lines under one deadline each, answers pipelined commands
//! together (replies are written when the client's input is drained), reads DATA and BDAT
//! under a deadline for the whole phase, and submits each message to the engine before it
//! answers `250`. Every refusal counts towards the error limit.

use std::net::IpAddr;
use std::time::SystemTime;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::address::{Address, AddressError, ReversePath};
use crate::engine::SubmitError;
use crate::envelope::{Envelope, Recipient};
use crate::queue_id::QueueId;
use crate::route::{Route, RouteError};
use crate::spool::SpoolError;
use crate::status::{Reply, Severity};

use super::access::Action;
use super::auth::{self, Password, SaslError};
use super::bdat::ChunkReader;
use super::command::{
    BodyParam, Command, CommandError, ForwardPath, MailParams, Mechanism, RcptParams, parse_command,
};
use super::data::DataReader;
use super::limits::DataDeadline;
use super::received::{Trace, received_count, received_field};
use super::relay::{ClientVerdict, has_sender_specified_route, is_loopback};
use super::reverse::{ClientName, client_name};
use super::tls::TlsInfo;
use super::{Endpoint, Shared};

/// A byte stream a session runs on: TCP, TLS over TCP, or standard input and output.
pub(crate) trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

pub(crate) type Io = BufReader<Box<dyn Stream>>;

/// Why a session ended.
#[derive(Debug)]
pub(crate) enum Ended {
    /// The client closed the connection, or it failed.
    Gone,
    /// The session said its last reply (221 or 421).
    Closed,
    /// A deadline passed.
    TimedOut,
    /// The server is shutting down.
    Shutdown,
}

/// What a command asks of the loop beyond a reply.
enum Flow {
    Continue,
    StartTls,
}

/// The mail transaction being built by MAIL, RCPT and BDAT.
struct Transaction {
    sender: ReversePath,
    params: MailParams,
    recipients: Vec<Recipient>,
    /// Recipients accepted and then thrown away (`DISCARD`).
    discarded: usize,
    /// The whole message is thrown away (`DISCARD` for the client or the sender).
    discard: bool,
    /// BDAT chunks so far.
    chunks: Option<ChunkReader>,
    /// The length of the `Received:` prefix of `chunks`.
    prefix: usize,
}

/// A line of input.
enum Line {
    Complete(Vec<u8>),
    TooLong,
}

pub(crate) struct Session<'a> {
    shared: &'a Shared,
    endpoint: &'a Endpoint,
    ip: Option<IpAddr>,
    name: ClientName,
    verdict: ClientVerdict,
    shutdown: watch::Receiver<bool>,
    helo: Option<(String, bool)>,
    tls: Option<TlsInfo>,
    user: Option<String>,
    auth_failures: u32,
    transaction: Option<Transaction>,
    errors: usize,
    out: Vec<u8>,
    /// The access verdict refused the client: only QUIT is answered positively.
    refused: bool,
    /// The messages this session handed to the engine, in order.
    queued: Vec<QueueId>,
}

impl<'a> Session<'a> {
    pub(crate) async fn new(
        shared: &'a Shared,
        endpoint: &'a Endpoint,
        ip: Option<IpAddr>,
        tls: Option<TlsInfo>,
        shutdown: watch::Receiver<bool>,
    ) -> Session<'a> {
        let name = match (&shared.resolver, ip) {
            (Some(r), Some(ip)) => client_name(r.as_ref(), ip, shared.timeouts.client_lookup).await,
            _ => ClientName::Unknown,
        };
        let policy = shared
            .policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let verdict = match ip {
            Some(ip) => policy.client(ip, name.confirmed()),
            // A session on standard input is a local user, as `sendmail -bs` trusts them.
            None => ClientVerdict {
                may_relay: true,
                entry: None,
            },
        };
        Session {
            shared,
            endpoint,
            ip,
            name,
            verdict,
            shutdown,
            helo: None,
            tls,
            user: None,
            auth_failures: 0,
            transaction: None,
            errors: 0,
            out: Vec::with_capacity(512),
            refused: false,
            queued: Vec::new(),
        }
    }

    /// Runs the session to its end, upgrading to TLS on STARTTLS; returns the ids of the
    /// messages it queued.
    pub(crate) async fn run(mut self, io: Io) -> Vec<QueueId> {
        let mut io = io;
        if !self.greet() {
            let _ = self.flush(&mut io).await;
            let _ = io.shutdown().await;
            return self.queued;
        }
        let ended = loop {
            match self.commands(&mut io).await {
                Ok(Flow::StartTls) => match self.start_tls(io).await {
                    Ok(upgraded) => io = upgraded,
                    // The handshake failed: the connection is unusable, nothing more to say.
                    Err(()) => return self.queued,
                },
                Ok(Flow::Continue) => unreachable!("commands() returns only to upgrade"),
                Err(e) => break e,
            }
        };
        match ended {
            Ended::TimedOut => self.reply("421 4.4.2 Timeout exceeded, closing connection"),
            Ended::Shutdown => self.reply(&format!(
                "421 4.3.2 {} Service shutting down, closing connection",
                self.shared.hostname
            )),
            Ended::Gone | Ended::Closed => {}
        }
        let _ = self.flush(&mut io).await;
        let _ = io.shutdown().await;
        self.queued
    }

    /// The greeting, or the access verdict's refusal. False when the session ends at once.
    fn greet(&mut self) -> bool {
        let host = self.shared.hostname.clone();
        match self.verdict.entry.as_ref().map(|m| m.action.clone()) {
            Some(Action::Reject) => {
                self.refused = true;
                self.reply(&format!("554 5.7.1 {host} Access denied"));
            }
            Some(Action::Error(r)) if r.is_transient() => {
                self.reply(&format!("421 {} {}", r.status(), r.text()));
                return false;
            }
            Some(Action::Error(r)) => {
                self.refused = true;
                self.reply(&format!("554 {} {}", r.status(), r.text()));
            }
            _ => self.reply(&format!("220 {host} ESMTP postrider")),
        }
        true
    }

    fn reply(&mut self, text: &str) {
        self.out.extend_from_slice(text.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    fn reply_with(&mut self, r: &Reply) {
        let line = r.one_line();
        self.reply(&line);
    }

    /// A refusal that counts towards the error limit.
    fn error(&mut self, text: &str) {
        self.errors += 1;
        self.reply(text);
    }

    async fn flush(&mut self, io: &mut Io) -> Result<(), Ended> {
        if !self.out.is_empty() {
            io.write_all(&self.out).await.map_err(|_| Ended::Gone)?;
            io.flush().await.map_err(|_| Ended::Gone)?;
            self.out.clear();
        }
        Ok(())
    }

    fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Reads one whole line under the command deadline, answering what is pending first when
    /// the client waits for it.
    async fn next_line(&mut self, io: &mut Io) -> Result<Line, Ended> {
        if io.buffer().is_empty() {
            self.flush(io).await?;
        }
        if self.shutting_down() {
            return Err(Ended::Shutdown);
        }
        let limit = self.shared.timeouts.command;
        let max = self.shared.limits.max_line_length;
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            r = tokio::time::timeout(limit, read_line(io, max)) => match r {
                Err(_) => Err(Ended::TimedOut),
                Ok(Err(_)) | Ok(Ok(None)) => Err(Ended::Gone),
                Ok(Ok(Some(line))) => Ok(line),
            },
            _ = shutdown.wait_for(|stop| *stop) => Err(Ended::Shutdown),
        }
    }

    /// Commands until the session ends (`Err`) or the client asks for TLS.
    async fn commands(&mut self, io: &mut Io) -> Result<Flow, Ended> {
        loop {
            let line = match self.next_line(io).await? {
                Line::Complete(l) => l,
                Line::TooLong => {
                    self.error("500 5.5.6 Line too long");
                    self.check_errors()?;
                    continue;
                }
            };
            let command = parse_command(&line);
            drop(line);
            let flow = match command {
                Ok(cmd) => self.command(cmd, io).await?,
                Err(e) => {
                    self.command_error(&e);
                    Flow::Continue
                }
            };
            if let Flow::StartTls = flow {
                return Ok(Flow::StartTls);
            }
            self.check_errors()?;
        }
    }

    fn check_errors(&mut self) -> Result<(), Ended> {
        if self.errors >= self.shared.limits.max_errors {
            self.reply("421 4.7.0 Too many errors, closing connection");
            return Err(Ended::Closed);
        }
        Ok(())
    }

    fn command_error(&mut self, e: &CommandError) {
        // An address literal is never routed; to a client that may not relay it is a relay
        // attempt like any other.
        if let CommandError::BadRecipient(AddressError::AddressLiteral { address }) = e
            && !self.may_relay()
        {
            let shown: String = address
                .chars()
                .filter(|c| !c.is_control())
                .take(100)
                .collect();
            self.error(&format!("550 5.7.1 <{shown}>... Relaying denied"));
            return;
        }
        self.errors += 1;
        self.reply_with(&e.reply());
    }

    fn may_relay(&self) -> bool {
        self.user.is_some() || (self.verdict.may_relay && !self.endpoint.kind.requires_auth())
    }

    async fn command(&mut self, cmd: Command, io: &mut Io) -> Result<Flow, Ended> {
        if self.refused {
            match cmd {
                Command::Quit => {
                    self.reply("221 2.0.0 Bye");
                    return Err(Ended::Closed);
                }
                _ => self.error("503 5.7.0 Access denied; only QUIT is accepted"),
            }
            return Ok(Flow::Continue);
        }
        // A BDAT transaction takes no other command but more BDAT, RSET, NOOP and QUIT.
        match cmd {
            Command::Ehlo(name) => self.ehlo(name, true),
            Command::Helo(name) => self.ehlo(name, false),
            Command::Mail { from, params } => self.mail(from, params),
            Command::Rcpt { to, params } => self.rcpt(to, params).await,
            Command::Data => self.data(io).await?,
            Command::Bdat { size, last } => self.bdat(size, last, io).await?,
            Command::Rset => {
                self.transaction = None;
                self.reply("250 2.0.0 OK");
            }
            Command::Noop => self.reply("250 2.0.0 OK"),
            Command::Quit => {
                self.reply("221 2.0.0 Bye");
                return Err(Ended::Closed);
            }
            Command::Vrfy(_) => self.reply("252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery"),
            Command::Help(_) => self.reply(
                "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS AUTH (RFC 5321)",
            ),
            Command::StartTls => return Ok(self.starttls_allowed()),
            Command::Auth { mechanism, initial } => self.auth(mechanism, initial, io).await?,
        }
        Ok(Flow::Continue)
    }

    fn auth_offered(&self) -> bool {
        let has = self
            .shared
            .authenticator
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_some();
        let plaintext_ok =
            self.endpoint.allow_plaintext_auth_from_loopback && self.ip.is_none_or(is_loopback);
        has && self.user.is_none() && (self.tls.is_some() || plaintext_ok)
    }

    fn ehlo(&mut self, name: String, extended: bool) {
        self.transaction = None;
        let host = self.shared.hostname.clone();
        if !extended {
            self.reply(&format!("250 {host}"));
            self.helo = Some((name, false));
            return;
        }
        let mut lines = vec![
            format!("{host} Hello {}", header_word(&name)),
            "PIPELINING".to_string(),
            format!("SIZE {}", self.shared.limits.max_message_size),
            "8BITMIME".to_string(),
            "ENHANCEDSTATUSCODES".to_string(),
            "SMTPUTF8".to_string(),
            "DSN".to_string(),
            "CHUNKING".to_string(),
        ];
        if self.endpoint.tls.is_some() && self.tls.is_none() {
            lines.push("STARTTLS".to_string());
        }
        if self.auth_offered() {
            lines.push("AUTH PLAIN LOGIN".to_string());
        }
        lines.push("HELP".to_string());
        let n = lines.len();
        for (i, l) in lines.into_iter().enumerate() {
            let sep = if i + 1 == n { ' ' } else { '-' };
            self.reply(&format!("250{sep}{l}"));
        }
        self.helo = Some((name, true));
    }

    fn starttls_allowed(&mut self) -> Flow {
        if self.tls.is_some() {
            self.error("503 5.5.1 TLS already active");
            return Flow::Continue;
        }
        if self.endpoint.tls.is_none() {
            self.error("502 5.5.1 STARTTLS not available");
            return Flow::Continue;
        }
        self.reply("220 2.0.0 Ready to start TLS");
        Flow::StartTls
    }

    /// The handshake after `220 Ready to start TLS`. Anything the client pipelined after
    /// STARTTLS was sent in the clear and is thrown away (CVE-2011-0411: a man in the middle
    /// could have put it there); the session then starts over as RFC 3207 §4.2 requires.
    async fn start_tls(&mut self, mut io: Io) -> Result<Io, ()> {
        self.flush(&mut io).await.map_err(|_| ())?;
        if !io.buffer().is_empty() {
            tracing::warn!(target: "postrider::server", "client {}: {} octets pipelined after STARTTLS discarded", self.client(), io.buffer().len());
        }
        let tls = self.endpoint.tls.as_ref().ok_or(())?.config();
        let stream = io.into_inner();
        let accept = tokio_rustls::TlsAcceptor::from(tls).accept(stream);
        let stream = match tokio::time::timeout(self.shared.timeouts.tls_handshake, accept).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::info!(target: "postrider::server", "client {}: TLS handshake failed: {e}", self.client());
                return Err(());
            }
            Err(_) => {
                tracing::info!(target: "postrider::server", "client {}: TLS handshake timed out", self.client());
                return Err(());
            }
        };
        self.tls = Some(TlsInfo::of(stream.get_ref().1));
        self.helo = None;
        self.transaction = None;
        self.user = None;
        Ok(BufReader::with_capacity(
            64 * 1024,
            Box::new(stream) as Box<dyn Stream>,
        ))
    }

    /// The client as logs show it: `name[ip]`.
    fn client(&self) -> String {
        let name = match &self.name {
            ClientName::Confirmed(n) | ClientName::Forged(n) => n.to_string(),
            ClientName::Unknown => "unknown".to_string(),
        };
        match self.ip {
            Some(ip) => format!("{name}[{ip}]"),
            None => "local".to_string(),
        }
    }

    async fn auth(
        &mut self,
        mechanism: Mechanism,
        initial: Option<String>,
        io: &mut Io,
    ) -> Result<(), Ended> {
        if self.user.is_some() {
            self.error("503 5.5.1 Already authenticated");
            return Ok(());
        }
        if self.transaction.is_some() {
            self.error("503 5.5.1 AUTH not allowed during a mail transaction");
            return Ok(());
        }
        let authenticator = self
            .shared
            .authenticator
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(authenticator) = authenticator else {
            self.error("502 5.5.1 AUTH not available");
            return Ok(());
        };
        if !self.auth_offered() {
            self.error("538 5.7.11 Encryption required for requested authentication mechanism");
            return Ok(());
        }
        let credentials = match mechanism {
            Mechanism::Plain => {
                let line = match initial {
                    Some(l) => l,
                    None => {
                        self.reply("334 ");
                        self.sasl_line(io).await?
                    }
                };
                auth::decode_plain(&line)
            }
            Mechanism::Login => {
                let user = match initial {
                    Some(l) => auth::decode_login_user(&l),
                    None => {
                        self.reply(&format!("334 {}", auth::LOGIN_USER_PROMPT));
                        let l = self.sasl_line(io).await?;
                        auth::decode_login_user(&l)
                    }
                };
                match user {
                    Ok(user) => {
                        self.reply(&format!("334 {}", auth::LOGIN_PASSWORD_PROMPT));
                        let l = self.sasl_line(io).await?;
                        auth::decode_login_password(&l).map(|p| (user, p))
                    }
                    Err(e) => Err(e),
                }
            }
            Mechanism::Other(m) => {
                self.error(&format!(
                    "504 5.5.4 Mechanism {m} is not supported (PLAIN, LOGIN)"
                ));
                return Ok(());
            }
        };
        let (user, password): (String, Password) = match credentials {
            Ok(c) => c,
            Err(SaslError::Aborted) => {
                self.error("501 5.0.0 Authentication aborted");
                return Ok(());
            }
            Err(SaslError::ForeignAuthzid) => return self.auth_failed(None).await,
            Err(e) => {
                self.error(&format!("501 5.5.2 {e}"));
                return Ok(());
            }
        };
        match authenticator.verify(&user, password).await {
            Ok(true) => {
                tracing::info!(target: "postrider::server", "client {}: authenticated as {}", self.client(), log_safe(&user));
                self.user = Some(user);
                self.reply("235 2.7.0 Authentication successful");
                Ok(())
            }
            Ok(false) => self.auth_failed(Some(&user)).await,
            Err(e) => {
                tracing::warn!(target: "postrider::server", "client {}: {e}", self.client());
                self.reply("454 4.7.0 Temporary authentication failure");
                Ok(())
            }
        }
    }

    /// A SASL continuation line (not counted as a command, but under the command deadline).
    async fn sasl_line(&mut self, io: &mut Io) -> Result<String, Ended> {
        match self.next_line(io).await? {
            Line::Complete(l) => Ok(String::from_utf8(l).unwrap_or_default()),
            Line::TooLong => Ok(String::new()),
        }
    }

    /// A wrong password: a growing pause, `535 5.7.8`, and the door after a few.
    async fn auth_failed(&mut self, user: Option<&str>) -> Result<(), Ended> {
        self.auth_failures += 1;
        self.errors += 1;
        tracing::warn!(
            target: "postrider::server",
            "client {}: authentication failed for {} ({} of {})",
            self.client(),
            user.map_or_else(|| "another user".to_string(), log_safe),
            self.auth_failures,
            self.shared.limits.max_auth_failures
        );
        tokio::time::sleep(self.shared.timeouts.auth_failure_delay * self.auth_failures).await;
        self.reply("535 5.7.8 Authentication credentials invalid");
        if self.auth_failures >= self.shared.limits.max_auth_failures {
            self.reply("421 4.7.0 Too many failed authentication attempts, closing connection");
            return Err(Ended::Closed);
        }
        Ok(())
    }

    fn mail(&mut self, from: ReversePath, params: MailParams) {
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

    async fn rcpt(&mut self, to: ForwardPath, params: RcptParams) {
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

    fn ready_for_data(&mut self) -> bool {
        match &self.transaction {
            None => self.error("503 5.5.1 Need MAIL command"),
            Some(t) if t.recipients.is_empty() && t.discarded == 0 => {
                self.error("554 5.5.1 No valid recipients")
            }
            Some(_) => return true,
        }
        false
    }

    fn trace(&self, recipients: &[Recipient]) -> String {
        let (helo, extended) = self
            .helo
            .as_ref()
            .map_or((None, false), |(h, e)| (Some(h.as_str()), *e));
        received_field(&Trace {
            helo,
            extended,
            ip: self.ip,
            name: &self.name,
            tls: self.tls.as_ref(),
            authenticated: self.user.is_some(),
            show_user: self.user.as_deref().filter(|_| self.shared.show_auth_user),
            by: &self.shared.hostname,
            for_recipient: match recipients {
                [one] => Some(&one.address),
                _ => None,
            },
            at: SystemTime::now(),
        })
    }

    /// DATA: the message under one deadline for the whole phase, then the submission.
    async fn data(&mut self, io: &mut Io) -> Result<(), Ended> {
        if !self.ready_for_data() {
            return Ok(());
        }
        if self
            .transaction
            .as_ref()
            .is_some_and(|t| t.chunks.is_some())
        {
            self.error("503 5.5.1 DATA not allowed after BDAT");
            return Ok(());
        }
        let Some(t) = self.transaction.take() else {
            return Ok(());
        };
        self.reply("354 End data with <CR><LF>.<CR><LF>");
        self.flush(io).await?;
        let received = self.trace(&t.recipients);
        let limit = self.shared.limits.max_message_size;
        let mut reader = DataReader::new(limit, received.as_bytes());
        let start = Instant::now();
        let mut deadline = DataDeadline::new(&self.shared.timeouts);
        let mut shutdown = self.shutdown.clone();
        loop {
            let left = (start + deadline.allowance()).saturating_duration_since(Instant::now());
            let chunk = tokio::select! {
                r = tokio::time::timeout(left, io.fill_buf()) => match r {
                    Err(_) => return Err(Ended::TimedOut),
                    Ok(Err(_)) | Ok(Ok([])) => return Err(Ended::Gone),
                    Ok(Ok(chunk)) => chunk,
                },
                _ = shutdown.wait_for(|stop| *stop) => return Err(Ended::Shutdown),
            };
            let (used, done) = reader.feed(chunk);
            io.consume(used);
            deadline.received(used);
            if done {
                break;
            }
        }
        let (body, too_big) = reader.finish();
        self.finish_message(t, body, received.len(), too_big).await
    }

    /// BDAT: one chunk, read whether or not it can be used (its octets are on the wire).
    async fn bdat(&mut self, size: u64, last: bool, io: &mut Io) -> Result<(), Ended> {
        let usable =
            matches!(&self.transaction, Some(t) if !t.recipients.is_empty() || t.discarded > 0);
        if !usable {
            let mut sink = ChunkReader::new(0, b"");
            self.read_chunk(&mut sink, size, io).await?;
            if self.transaction.is_none() {
                self.error("503 5.5.1 Need MAIL command");
            } else {
                self.error("554 5.5.1 No valid recipients");
            }
            return Ok(());
        }
        if let Some(t) = &self.transaction
            && t.chunks.is_none()
        {
            let received = self.trace(&t.recipients);
            let limit = self.shared.limits.max_message_size;
            if let Some(t) = &mut self.transaction {
                t.prefix = received.len();
                t.chunks = Some(ChunkReader::new(limit, received.as_bytes()));
            }
        }
        let Some(mut chunks) = self.transaction.as_mut().and_then(|t| t.chunks.take()) else {
            return Ok(());
        };
        self.read_chunk(&mut chunks, size, io).await?;
        if !last {
            if let Some(t) = &mut self.transaction {
                t.chunks = Some(chunks);
            }
            self.reply(&format!("250 2.0.0 {size} octets received"));
            return Ok(());
        }
        let Some(t) = self.transaction.take() else {
            return Ok(());
        };
        let prefix = t.prefix;
        let too_big = chunks.too_big();
        let (body, _) = chunks.finish();
        self.finish_message(t, body, prefix, too_big).await
    }

    async fn read_chunk(
        &mut self,
        chunks: &mut ChunkReader,
        size: u64,
        io: &mut Io,
    ) -> Result<(), Ended> {
        chunks.start_chunk(size);
        let start = Instant::now();
        let mut deadline = DataDeadline::new(&self.shared.timeouts);
        let mut shutdown = self.shutdown.clone();
        while !chunks.chunk_done() {
            let left = (start + deadline.allowance()).saturating_duration_since(Instant::now());
            let buf = tokio::select! {
                r = tokio::time::timeout(left, io.fill_buf()) => match r {
                    Err(_) => return Err(Ended::TimedOut),
                    Ok(Err(_)) | Ok(Ok([])) => return Err(Ended::Gone),
                    Ok(Ok(buf)) => buf,
                },
                _ = shutdown.wait_for(|stop| *stop) => return Err(Ended::Shutdown),
            };
            let used = chunks.feed(buf);
            io.consume(used);
            deadline.received(used);
        }
        Ok(())
    }

    /// Checks the message read and submits it; the reply is sent only after the engine holds
    /// it.
    async fn finish_message(
        &mut self,
        t: Transaction,
        body: bytes::Bytes,
        prefix: usize,
        too_big: bool,
    ) -> Result<(), Ended> {
        let limit = self.shared.limits.max_message_size;
        if too_big {
            self.reply(&format!(
                "552 5.3.4 Message size exceeds the limit of {limit} octets"
            ));
            return Ok(());
        }
        if received_count(body.get(prefix..).unwrap_or_default()) >= self.shared.limits.max_hops {
            self.reply("554 5.4.6 Too many hops (mail loop?)");
            return Ok(());
        }
        if t.discard || t.recipients.is_empty() {
            tracing::info!(target: "postrider::server", "client {}: message from {} discarded by the access table", self.client(), t.sender);
            self.reply("250 2.0.0 OK discarded");
            return Ok(());
        }
        let (size, nrcpt, from) = (body.len(), t.recipients.len(), t.sender.clone());
        let mut envelope = Envelope::new(t.sender, t.recipients);
        envelope.ret = t.params.ret;
        envelope.envid = t.params.envid;
        envelope.smtputf8 = t.params.smtputf8;
        match self.shared.engine.submit(envelope, body).await {
            Ok(id) => {
                tracing::info!(
                    target: "postrider::server",
                    "{id}: client={}, from={from}, size={size}, nrcpt={nrcpt}{}{}",
                    self.client(),
                    self.user.as_deref().map(|u| format!(", sasl_username={}", log_safe(u))).unwrap_or_default(),
                    self.tls.as_ref().map(|t| format!(", tls={}", t.version)).unwrap_or_default(),
                );
                self.reply(&format!("250 2.0.0 OK queued as {id}"));
                self.queued.push(id);
                Ok(())
            }
            Err(e) => {
                // `e` says "message not queued: ..." or "message refused: ..." itself.
                tracing::warn!(target: "postrider::server", "client {}, from={from}: {e}", self.client());
                let (reply, close) = submit_refusal(&e);
                self.reply(reply);
                if close { Err(Ended::Closed) } else { Ok(()) }
            }
        }
    }
}

/// The reply for a message the engine did not take, and whether the session ends with it.
/// Spool paths and OS errors go to the log, not to the client.
pub(crate) fn submit_refusal(e: &SubmitError) -> (&'static str, bool) {
    match e {
        SubmitError::TooLarge { .. } => ("552 5.3.4 Message size exceeds the fixed maximum", false),
        SubmitError::TooManyRecipients { .. } => ("452 4.5.3 Too many recipients", false),
        SubmitError::ShuttingDown => ("421 4.3.2 Service shutting down, try again later", true),
        SubmitError::Spool(SpoolError::NoSpace { .. }) => {
            ("452 4.3.1 Insufficient system storage", false)
        }
        SubmitError::Spool(_) => ("451 4.3.0 Queue file write error, try again later", false),
        _ if e.severity() == Severity::Temporary => (
            "451 4.3.0 Local error in processing, try again later",
            false,
        ),
        _ => ("554 5.6.0 Message refused: malformed envelope", false),
    }
}

/// A user name in a log line: no control characters, bounded.
fn log_safe(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(100).collect()
}

fn sanitize(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(200).collect()
}

fn header_word(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(255)
        .collect()
}

/// Reads one line ending in LF (a CR before it is dropped); `None` at end of input. A line
/// over `max` octets is read to its end but not kept.
async fn read_line(io: &mut Io, max: usize) -> std::io::Result<Option<Line>> {
    let mut line = Vec::new();
    let mut too_long = false;
    loop {
        let buf = io.fill_buf().await?;
        if buf.is_empty() {
            return Ok(None);
        }
        let (take, end) = match memchr::memchr(b'\n', buf) {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        if !too_long {
            line.extend_from_slice(&buf[..take]);
            if line.len() > max {
                too_long = true;
                line = Vec::new();
            }
        }
        io.consume(take);
        if end {
            if too_long {
                return Ok(Some(Line::TooLong));
            }
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(Some(Line::Complete(line)));
        }
    }
}

/// For [`serve_session`](super::serve_session): a reader and a writer as one stream.
pub(crate) struct Duplex<R, W> {
    pub(crate) reader: R,
    pub(crate) writer: W,
}

impl<R: AsyncRead + Unpin, W: Unpin> AsyncRead for Duplex<R, W> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.reader).poll_read(cx, buf)
    }
}

impl<R: Unpin, W: AsyncWrite + Unpin> AsyncWrite for Duplex<R, W> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.writer).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.writer).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.writer).poll_shutdown(cx)
    }
}

pub(crate) fn boxed<S: Stream + 'static>(s: S) -> Io {
    BufReader::with_capacity(64 * 1024, Box::new(s) as Box<dyn Stream>)
}
