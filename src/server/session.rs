//! One SMTP session: the state machine from greeting to QUIT.
//!
//! The session reads whole command lines under one deadline each, answers pipelined commands
//! together (replies are written when the client's input is drained), reads DATA and BDAT
//! under a deadline for the whole phase, and submits each message to the engine before it
//! answers `250`. Every refusal counts towards the error limit.

mod envelope;
mod message;
mod security;

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
        // RFC 8689 §4.1: offered only inside TLS (after STARTTLS or on the implicit-TLS
        // listener), where MAIL FROM ... REQUIRETLS may be given.
        if self.tls.is_some() {
            lines.push("REQUIRETLS".to_string());
        }
        lines.push("HELP".to_string());
        let n = lines.len();
        for (i, l) in lines.into_iter().enumerate() {
            let sep = if i + 1 == n { ' ' } else { '-' };
            self.reply(&format!("250{sep}{l}"));
        }
        self.helo = Some((name, true));
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
