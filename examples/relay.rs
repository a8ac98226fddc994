//! A small SMTP relay on postrider's public API: local clients hand it mail over SMTP, and the
//! engine queues it durably and relays it by the configured smart host, mailertable or MX.
//!
//! ```text
//! relay [-C CONFIG] [--listen 127.0.0.1:2525]
//! ```
//!
//! It is the counterpart of Postfix's `smtpd` + queue manager for programs that speak SMTP to
//! `localhost` (a PBX, a printer, a monitoring box): `250 2.0.0 OK queued as ID` is sent only
//! after [`Engine::submit`] returned, i.e. once the message would survive a power cut.
//!
//! Server side it speaks EHLO/HELO, MAIL (with `SIZE=` and `BODY=7BIT|8BITMIME`), RCPT, DATA
//! (dot-unstuffing; only `<CRLF>.<CRLF>` ends the data, so SMTP smuggling cannot split a
//! message), RSET, NOOP, VRFY (252), HELP and QUIT, and announces PIPELINING, SIZE, 8BITMIME
//! and ENHANCEDSTATUSCODES. It does not do TLS or AUTH as a server, nor DSN, SMTPUTF8, CHUNKING
//! or ETRN: those commands get `502 5.5.1` and unknown parameters `555 5.5.4`. A recipient the
//! mailertable rejects (`error:` entries) is refused at RCPT with that entry's reply.
//!
//! **No access control**: every client that can connect may relay anywhere. It therefore
//! refuses to listen on anything but a loopback address.
//!
//! Configuration: the TOML file every example reads (`postrider::config`), default
//! `/etc/postrider/postrider.toml`; all of it applies (spool, host name, smart host,
//! mailertable, local-host-names, policy, `[retry]`, `[spf]`, `[dns]`). SIGHUP re-reads the
//! mailertable, local-host-names and policy files (a file with errors is refused and the old
//! tables stay in use). Delivery log lines go to stderr (`RUST_LOG` filters them;
//! default `info`). SIGINT or SIGTERM stops taking connections and shuts the engine down.
//! Exit status (sysexits.h): 64 bad arguments, 78 configuration error, 71 cannot listen or
//! open the spool.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use postrider::config::{Assembly, Config};
use postrider::engine::{Engine, Limits, SubmitError};
use postrider::route::Mailertable;
use postrider::{Address, Domain, Envelope, Recipient, ReversePath, Route, Router, Severity};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

#[path = "relay/protocol.rs"]
mod protocol;

use protocol::{DataReader, path_argument, received_count, split_command};

const EX_USAGE: u8 = 64;
const EX_OSERR: u8 = 71;
const EX_CONFIG: u8 = 78;

const DEFAULT_CONFIG: &str = "/etc/postrider/postrider.toml";
const DEFAULT_LISTEN: &str = "127.0.0.1:2525";
const USAGE: &str = "usage: relay [-C CONFIG] [--listen 127.0.0.1:2525]";

/// Connections served at once; more get `421` and are closed.
const MAX_CONNECTIONS: usize = 256;
/// A command line longer than this is refused (RFC 5321 §4.5.3.1.4 says 512 with the CRLF;
/// extensions lengthen MAIL and RCPT, so allow more, as Postfix does).
const MAX_COMMAND_LINE: usize = 2048;
/// RFC 5321 §4.5.3.2.7: the server waits this long for the next command...
const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
/// ...and §4.5.3.2.6 for each block of message data.
const DATA_TIMEOUT: Duration = Duration::from_secs(180);
/// Mistakes a client may make before it is shown the door (Postfix's `smtpd_hard_error_limit`).
const MAX_ERRORS: usize = 20;
/// More `Received:` fields than this means a mail loop (Postfix's `hopcount_limit`).
const MAX_HOPS: usize = 50;

struct Args {
    config: PathBuf,
    listen: SocketAddr,
}

fn parse_args(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut config = PathBuf::from(DEFAULT_CONFIG);
    let mut listen = DEFAULT_LISTEN.to_string();
    while let Some(arg) = argv.next() {
        match arg.as_str() {
            "-C" => config = argv.next().ok_or("option -C needs a file name")?.into(),
            "--listen" => listen = argv.next().ok_or("option --listen needs ADDRESS:PORT")?,
            other => {
                if let Some(file) = other.strip_prefix("-C") {
                    config = file.into();
                } else if let Some(addr) = other.strip_prefix("--listen=") {
                    listen = addr.to_string();
                } else {
                    return Err(format!("unknown argument {other:?}"));
                }
            }
        }
    }
    let listen: SocketAddr = listen
        .parse()
        .map_err(|_| format!("--listen {listen:?} is not ADDRESS:PORT (e.g. 127.0.0.1:2525)"))?;
    if !listen.ip().is_loopback() {
        return Err(format!(
            "--listen {listen}: this relay has no access control, so it listens on loopback \
             addresses only (127.0.0.0/8, ::1); anything else would be an open relay"
        ));
    }
    Ok(Args { config, listen })
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("relay: {e}\n{USAGE}");
            return ExitCode::from(EX_USAGE);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("relay: cannot start the async runtime: {e}");
            return ExitCode::from(EX_OSERR);
        }
    };
    runtime.block_on(run(args))
}

/// What every connection shares.
struct Server {
    engine: Engine,
    router: Arc<Mailertable>,
    hostname: Domain,
    limits: Limits,
}

async fn run(args: Args) -> ExitCode {
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => return config_error(&e),
    };
    let parts = match config.assemble().await {
        Ok(p) => Arc::new(p),
        Err(e) => return config_error(&e),
    };
    for w in parts.warnings() {
        eprintln!("relay: warning: {w}");
    }
    let hostname = parts.hostname().clone();
    let spool = match config.open_spool().await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("relay: {e}");
            return ExitCode::from(EX_OSERR);
        }
    };
    let router = parts.router().clone();
    let limits = parts.limits().clone();
    // A daemon: the periodic queue rescans and the full shutdown grace of `[queue]`, and the
    // session cache of `[esmtp]` (a steady stream reuses its connections).
    let engine = match parts.engine_builder(spool).start().await {
        Ok(e) => e,
        Err(e) => {
            eprintln!("relay: {e}");
            return ExitCode::from(EX_OSERR);
        }
    };
    tokio::spawn(reload_on_hangup(config.clone(), parts.clone()));
    let listener = match TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("relay: cannot listen on {}: {e}", args.listen);
            engine.shutdown().await;
            return ExitCode::from(EX_OSERR);
        }
    };
    tracing::info!(target: "postrider::relay", "listening on {} as {hostname}", args.listen);
    let server = Arc::new(Server {
        engine: engine.clone(),
        router,
        hostname,
        limits,
    });
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let stop = stop_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, client)) => {
                    let server = server.clone();
                    match slots.clone().try_acquire_owned() {
                        Ok(slot) => {
                            tokio::spawn(async move {
                                serve(&server, stream, client).await;
                                drop(slot);
                            });
                        }
                        Err(_) => {
                            tokio::spawn(async move {
                                let mut stream = stream;
                                let _ = stream
                                    .write_all(b"421 4.3.2 Too many connections, try again later\r\n")
                                    .await;
                            });
                        }
                    }
                }
                // Out of descriptors, a connection reset before accept: keep serving.
                Err(e) => {
                    tracing::warn!(target: "postrider::relay", "accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = &mut stop => break,
        }
    }
    tracing::info!(target: "postrider::relay", "stopping: no new connections; shutting the queue engine down");
    drop(listener);
    engine.shutdown().await;
    ExitCode::SUCCESS
}

fn config_error(e: &dyn std::fmt::Display) -> ExitCode {
    for line in e.to_string().lines() {
        eprintln!("relay: {line}");
    }
    ExitCode::from(EX_CONFIG)
}

/// On SIGHUP, as `postfix reload` or a HUP to sendmail: re-reads the mailertable, the
/// local-host-names file and the TLS/credentials policy named by the configuration. A file
/// with errors is refused with the reason logged, and what was in use stays in use.
async fn reload_on_hangup(config: Config, parts: Arc<Assembly>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        tracing::warn!(target: "postrider::relay", "cannot catch SIGHUP: no reloading");
        return;
    };
    while hangup.recv().await.is_some() {
        match parts.reload(&config) {
            Ok(warnings) => {
                for w in warnings {
                    tracing::warn!(target: "postrider::relay", "{w}");
                }
            }
            Err(e) => tracing::error!(
                target: "postrider::relay",
                "tables not reloaded, the previous ones stay in use: {e}"
            ),
        }
    }
}

async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

// ---- one SMTP session ----------------------------------------------------------------------

/// Why a session ended early.
enum Ended {
    /// The client closed the connection or it failed.
    Gone,
    /// The client was too slow; it was told so.
    TimedOut,
}

/// The mail transaction being built by MAIL and RCPT.
struct Transaction {
    sender: ReversePath,
    recipients: Vec<Recipient>,
}

struct Session<'a> {
    server: &'a Server,
    client: SocketAddr,
    /// The HELO/EHLO argument, once given; `true` for EHLO.
    greeted: Option<(String, bool)>,
    transaction: Option<Transaction>,
    errors: usize,
    /// Replies not yet written: with PIPELINING they go out together when the client waits.
    out: Vec<u8>,
}

async fn serve(server: &Server, stream: TcpStream, client: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::with_capacity(64 * 1024, read);
    let mut session = Session {
        server,
        client,
        greeted: None,
        transaction: None,
        errors: 0,
        out: Vec::with_capacity(512),
    };
    session.reply(&format!("220 {} ESMTP postrider relay", server.hostname));
    let result = session.run(&mut reader, &mut write).await;
    if let Err(Ended::TimedOut) = result {
        session.reply("421 4.4.2 Timeout exceeded, closing connection");
    }
    let _ = write.write_all(&session.out).await;
    let _ = write.shutdown().await;
}

/// What a line of input turned out to be.
enum Line {
    Complete(Vec<u8>),
    TooLong,
}

impl Session<'_> {
    fn reply(&mut self, text: &str) {
        self.out.extend_from_slice(text.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    /// A refusal that counts towards the error limit.
    fn error(&mut self, text: &str) {
        self.errors += 1;
        self.reply(text);
    }

    async fn flush<W: AsyncWriteExt + Unpin>(&mut self, write: &mut W) -> Result<(), Ended> {
        if !self.out.is_empty() {
            write.write_all(&self.out).await.map_err(|_| Ended::Gone)?;
            self.out.clear();
        }
        Ok(())
    }

    async fn run<R, W>(&mut self, reader: &mut BufReader<R>, write: &mut W) -> Result<(), Ended>
    where
        R: tokio::io::AsyncRead + Unpin,
        W: AsyncWriteExt + Unpin,
    {
        loop {
            // Pipelined commands are answered together: write only when the client waits.
            if reader.buffer().is_empty() {
                self.flush(write).await?;
            }
            let line = match tokio::time::timeout(COMMAND_TIMEOUT, read_line(reader)).await {
                Err(_) => return Err(Ended::TimedOut),
                Ok(Err(_)) | Ok(Ok(None)) => return Err(Ended::Gone),
                Ok(Ok(Some(line))) => line,
            };
            let line = match line {
                Line::Complete(l) => l,
                Line::TooLong => {
                    self.error("500 5.5.6 Line too long");
                    continue;
                }
            };
            if self.errors > MAX_ERRORS {
                self.reply("421 4.7.0 Too many errors, closing connection");
                return Ok(());
            }
            let Ok(line) = std::str::from_utf8(&line) else {
                self.error("500 5.5.2 Command line is not valid UTF-8");
                continue;
            };
            let (verb, arg) = split_command(line);
            match verb.to_ascii_uppercase().as_str() {
                "EHLO" => self.helo(arg, true),
                "HELO" => self.helo(arg, false),
                "MAIL" => self.mail(arg),
                "RCPT" => self.rcpt(arg).await,
                "DATA" => {
                    if !arg.is_empty() {
                        self.error("501 5.5.4 Syntax: DATA (no parameters)");
                    } else if self.data_allowed() {
                        self.reply("354 End data with <CR><LF>.<CR><LF>");
                        self.flush(write).await?;
                        self.data(reader).await?;
                    }
                }
                "RSET" => {
                    self.transaction = None;
                    self.reply("250 2.0.0 OK");
                }
                "NOOP" => self.reply("250 2.0.0 OK"),
                "QUIT" => {
                    self.reply("221 2.0.0 Bye");
                    return Ok(());
                }
                "VRFY" => self.reply("252 2.5.2 Cannot VRFY user, but will accept message"),
                "HELP" => self
                    .reply("214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA RSET NOOP VRFY HELP QUIT"),
                "STARTTLS" | "AUTH" | "BDAT" | "ETRN" | "EXPN" | "TURN" | "ATRN" => {
                    self.error("502 5.5.1 Command not implemented")
                }
                _ => self.error("500 5.5.2 Command unrecognized"),
            }
        }
    }

    fn helo(&mut self, arg: &str, extended: bool) {
        let name = arg.trim();
        if name.is_empty() || name.contains(char::is_whitespace) {
            let verb = if extended { "EHLO" } else { "HELO" };
            self.error(&format!("501 5.5.4 Syntax: {verb} hostname"));
            return;
        }
        self.greeted = Some((name.to_string(), extended));
        self.transaction = None;
        let host = &self.server.hostname;
        if extended {
            let size = self.server.limits.max_message_size;
            self.reply(&format!(
                "250-{host}\r\n250-PIPELINING\r\n250-SIZE {size}\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES"
            ));
        } else {
            self.reply(&format!("250 {host}"));
        }
    }

    fn mail(&mut self, arg: &str) {
        let Some((_, extended)) = self.greeted else {
            self.error("503 5.5.1 Send HELO or EHLO first");
            return;
        };
        if self.transaction.is_some() {
            self.error("503 5.5.1 Nested MAIL command");
            return;
        }
        let Some((path, params)) = path_argument(arg, "FROM:") else {
            self.error("501 5.5.4 Syntax: MAIL FROM:<address>");
            return;
        };
        for param in params.split_whitespace() {
            if !extended {
                self.error("555 5.5.4 MAIL parameters need EHLO");
                return;
            }
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            match key.to_ascii_uppercase().as_str() {
                "SIZE" => match value.parse::<u64>() {
                    Ok(n) if n > self.server.limits.max_message_size as u64 => {
                        self.reply(&format!(
                            "552 5.3.4 Message size exceeds the limit of {} octets",
                            self.server.limits.max_message_size
                        ));
                        return;
                    }
                    Ok(_) => {}
                    Err(_) => {
                        self.error("501 5.5.4 Bad SIZE= value");
                        return;
                    }
                },
                // The engine sets the body type from the content itself.
                "BODY" if value.eq_ignore_ascii_case("7BIT") => {}
                "BODY" if value.eq_ignore_ascii_case("8BITMIME") => {}
                "BODY" => {
                    self.error("501 5.5.4 BODY= must be 7BIT or 8BITMIME");
                    return;
                }
                _ => {
                    self.error(&format!("555 5.5.4 MAIL parameter {key} not recognized"));
                    return;
                }
            }
        }
        match ReversePath::parse(path) {
            Ok(sender) => {
                self.transaction = Some(Transaction {
                    sender,
                    recipients: Vec::new(),
                });
                self.reply("250 2.1.0 OK");
            }
            Err(e) => self.error(&format!("553 5.1.7 Bad sender address: {e}")),
        }
    }

    async fn rcpt(&mut self, arg: &str) {
        let Some(t) = &self.transaction else {
            self.error("503 5.5.1 Need MAIL before RCPT");
            return;
        };
        let count = t.recipients.len();
        let Some((path, params)) = path_argument(arg, "TO:") else {
            self.error("501 5.5.4 Syntax: RCPT TO:<address>");
            return;
        };
        if let Some(param) = params.split_whitespace().next() {
            let key = param.split_once('=').map_or(param, |(k, _)| k);
            self.error(&format!("555 5.5.4 RCPT parameter {key} not recognized"));
            return;
        }
        if count >= self.server.limits.max_recipients {
            self.reply("452 4.5.3 Too many recipients");
            return;
        }
        let address = match Address::parse(path) {
            Ok(a) => a,
            Err(e) => {
                self.error(&format!("553 5.1.3 Bad recipient address: {e}"));
                return;
            }
        };
        // Refuse now what the mailertable would bounce later: no backscatter.
        if let Ok(Route::Reject { reply }) = self.server.router.route(&address).await {
            self.reply(&reply.one_line());
            return;
        }
        if let Some(t) = &mut self.transaction {
            t.recipients.push(Recipient::new(address));
        }
        self.reply("250 2.1.5 OK");
    }

    fn data_allowed(&mut self) -> bool {
        match &self.transaction {
            None => self.error("503 5.5.1 Need MAIL command"),
            Some(t) if t.recipients.is_empty() => self.error("554 5.5.1 No valid recipients"),
            Some(_) => return true,
        }
        false
    }

    /// Reads the message, then queues it; the reply is sent only after the engine holds it.
    async fn data<R: tokio::io::AsyncRead + Unpin>(
        &mut self,
        reader: &mut BufReader<R>,
    ) -> Result<(), Ended> {
        let Some(t) = self.transaction.take() else {
            return Ok(());
        };
        let limit = self.server.limits.max_message_size;
        let received = self.received_field();
        let mut data = DataReader::new(limit, received.as_bytes());
        loop {
            let chunk = match tokio::time::timeout(DATA_TIMEOUT, reader.fill_buf()).await {
                Err(_) => return Err(Ended::TimedOut),
                Ok(Err(_)) => return Err(Ended::Gone),
                Ok(Ok([])) => return Err(Ended::Gone),
                Ok(Ok(chunk)) => chunk,
            };
            let (used, done) = data.feed(chunk);
            reader.consume(used);
            if done {
                break;
            }
        }
        let (body, too_big) = data.finish();
        if too_big {
            self.reply(&format!(
                "552 5.3.4 Message size exceeds the limit of {limit} octets"
            ));
            return Ok(());
        }
        if received_count(&body[received.len()..]) >= MAX_HOPS {
            self.reply("554 5.4.6 Too many hops (mail loop?)");
            return Ok(());
        }
        let (size, nrcpt) = (body.len(), t.recipients.len());
        let from = t.sender.clone();
        let envelope = Envelope::new(t.sender, t.recipients);
        match self.server.engine.submit(envelope, body).await {
            Ok(id) => {
                tracing::info!(
                    target: "postrider::relay",
                    "{id}: client=[{}], from={from}, size={size}, nrcpt={nrcpt}",
                    self.client.ip()
                );
                self.reply(&format!("250 2.0.0 OK queued as {id}"));
            }
            Err(e) => {
                tracing::warn!(target: "postrider::relay", "message from {from} via [{}] not queued: {e}", self.client.ip());
                self.reply(&submit_refusal(&e));
            }
        }
        Ok(())
    }

    /// The trace field this relay adds (RFC 5321 §4.4).
    fn received_field(&self) -> String {
        let (helo, extended) = self
            .greeted
            .as_ref()
            .map_or(("unknown", false), |(h, e)| (h.as_str(), *e));
        // The client's name goes into a header: keep it to characters that cannot break one.
        let helo: String = helo
            .chars()
            .filter(|c| c.is_ascii_graphic() && !matches!(c, '(' | ')' | ';' | '\\'))
            .take(255)
            .collect();
        let protocol = if extended { "ESMTP" } else { "SMTP" };
        let ip = match self.client.ip() {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("IPv6:{v6}"),
        };
        format!(
            "Received: from {helo} ([{ip}])\r\n\tby {} (postrider relay) with {protocol};\r\n\t{}\r\n",
            self.server.hostname,
            postrider::time::rfc5322(SystemTime::now())
        )
    }
}

/// The SMTP reply for a message the engine did not take.
fn submit_refusal(e: &SubmitError) -> String {
    let text = e.to_string().replace(['\r', '\n'], " ");
    match e {
        SubmitError::TooLarge { .. } => format!("552 5.3.4 {text}"),
        SubmitError::TooManyRecipients { .. } => format!("452 4.5.3 {text}"),
        SubmitError::ShuttingDown => format!("421 4.3.2 {text}"),
        _ if e.severity() == Severity::Temporary => format!("451 4.3.0 {text}"),
        _ => format!("554 5.6.0 {text}"),
    }
}

/// Reads one line ending in LF (a CR before it is dropped). `None` at end of input.
async fn read_line<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
) -> std::io::Result<Option<Line>> {
    let mut line = Vec::new();
    let mut too_long = false;
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok(None);
        }
        let (take, end) = match memchr::memchr(b'\n', buf) {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        if !too_long {
            line.extend_from_slice(&buf[..take]);
            if line.len() > MAX_COMMAND_LINE {
                // Keep reading to the end of the line, without keeping it.
                too_long = true;
                line = Vec::new();
            }
        }
        reader.consume(take);
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
