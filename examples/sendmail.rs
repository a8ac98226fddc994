//! A sendmail-compatible command on postrider's public API: submit a message, show and run
//! the queue, explain routes, speak SMTP on standard input, and run the daemon, reading
//! `postrider.toml`.
//!
//! ```text
//! sendmail [-C CONFIG] [-t] [-i] [-f SENDER] [-F NAME] [-v] [-odb|-odi|-odq] [ADDRESS...] < message
//! sendmail [-C CONFIG] -bp                         # mailq
//! sendmail [-C CONFIG] [-v] -q[RDOMAIN|IQUEUEID|SSENDER]
//! sendmail [-C CONFIG] -bv ADDRESS...
//! sendmail [-C CONFIG] [-v] [-odb|-odi|-odq] -bs   # one SMTP session on stdin/stdout
//! sendmail [-C CONFIG] -bd [-q15m]                 # the daemon (examples/relay.rs)
//! sendmail [-C CONFIG] -bi                         # newaliases
//! ```
//!
//! **Submitting.** The message comes on standard input; a line holding only `.` ends it unless
//! `-i` (or `-oi`) is given, and a leading mbox `From ` line is dropped. Recipients are the
//! arguments (each may be an address list: `"Ann <ann@x.example>, bob"`), plus with `-t`
//! those of the `To:`, `Cc:` and `Bcc:` fields
//! (`Resent-*` when present, as sendmail does); every `Bcc:` field is removed. Addresses
//! without a domain get `@hostname`. The envelope sender is `-f`/`-r`, else the invoking
//! user's login name (from the password database, not the environment) at the host name;
//! `-N`, `-R` and `-V` set the DSN parameters. A `Received:` line is added, and `From:` (with
//! `-F`, `$NAME` or the password entry's full name), `Date:` and `Message-ID:` when missing.
//!
//! The command returns once the message is durable in the spool (exit 0; the queue id is
//! printed with `-v`). Delivery is then tried at once, as `-od` says:
//! - `-odb` (the default, sendmail's and dma's behaviour): a detached `sendmail -qI<id>`
//!   process makes the attempt, and this one exits at once;
//! - `-odi` (implied by `-v`): this process makes the attempt, shows it with `-v`, reports a
//!   permanent failure on stderr, and waits at most five minutes for it;
//! - `-odq`: queue only; the next `sendmail -q` delivers it.
//!
//! In every case a deferred or failed delivery still exits 0: the message is queued, and a
//! later queue run delivers it or the sender gets a DSN.
//!
//! **The queue.** `-bp` lists it in sendmail's `mailq` layout. `-q` runs it once, now,
//! ignoring retry times and host status (`sendmail -OTimeout.hoststatus=0m -q`): every
//! message, or with `-qR example.com` those with a pending recipient in that domain or below,
//! `-qI ID` one message, `-qS text` those whose sender contains the text. With `-v` the SMTP
//! conversation and the log line of each attempt go to stderr and a summary to stdout;
//! without it a queue run prints nothing unless something is broken, so cron stays quiet.
//! Any number of submissions and queue runs may run at once: a message is claimed (a lock
//! on its spool file) while it is attempted, so it is never delivered twice.
//!
//! **Routes.** `-bv` prints, for each address, one line saying how it routes and which rule
//! decided:
//!
//! ```text
//! user@gmail.com: mailer=esmtp host=[smtp.gmail.com] port=587 mx=no rule=mailertable:gmail.com (line 3)
//! aaa@ourtest.com: mailer=local user=aaa rule=local-host-names
//! ```
//!
//! A local address is then expanded through the aliases as a delivery would, one line per
//! final target (`postmaster... deliverable: mailer local, user root (maildir
//! /root/Maildir)`, `ghost... User unknown`, `ops... forwarded: jane@example.net` followed by
//! the forward's own route); exit 67 unless every target would take the mail.
//!
//! With `-v`, each domain the route delivers to by its MX hosts also gets the TLS rule that
//! would apply (the policy file's line, else DANE and MTA-STS as the domain publishes them).
//!
//! **Aliases.** postrider reads `[local] aliases` when it starts and on SIGHUP: there is no
//! database to rebuild. `-bi` (newaliases) checks the file as a start would and prints its
//! summary (`/etc/aliases: 12 aliases, longest 48 bytes, 310 bytes total`) and a warning for
//! each target that will not work, or every bad line with its number (exit 78).
//!
//! **SMTP on standard input.** `-bs` runs one SMTP session on standard input and output, as
//! mail clients and PHP's mailers use it, on the same server as the daemon
//! (`postrider::server::serve_session`): pipelining, `SIZE`, `8BITMIME`, `SMTPUTF8`, `DSN`,
//! `CHUNKING`, and `250 ... queued as ID` only once the message is in the spool. The invoking
//! user is local and trusted, as sendmail treats `-bs`: it may send to any address (the
//! access file's `From:` and `To:` entries and the `[server.limits]` still apply). After QUIT
//! (or the end of input) each accepted message is tried as `-od` says, as for a submission.
//!
//! **The daemon.** `-bd` is `examples/relay.rs`: the `[[listener]]`s of the configuration
//! (127.0.0.1:2525 without any), relaying by the `[server]` section's access file,
//! `mynetworks` and password file, SIGHUP to reload, SIGTERM to stop; see that program's
//! manual. `-q15m` (or `-q1h`, `-q30` minutes, `-qp`) beside `-bd` sets how often it re-reads
//! the queue for mail other processes queued; alone it is refused (use cron).
//!
//! **Options** sendmail knows but postrider does not need (`-B`, `-e*`, `-oe*`, `-om`, `-G`,
//! `-U`, `-h`, `-L`, `-m`, `-n`, `-OTimeout.*`) are accepted; others under `-o`/`-O` are
//! ignored with a warning, as sendmail does; `-bt` is not available (use `-bv`).
//!
//! **Exit status** (sysexits.h): 0 done (submitted, listed, queue run, session ended, daemon
//! stopped); 64 EX_USAGE bad arguments; 65 EX_DATAERR a malformed address or header, no
//! recipients; 67 EX_NOUSER (`-bv`) an address routed to an error; 69 EX_UNAVAILABLE a mode
//! postrider does not have (`-bt`, `-q15m` without `-bd`); 71 EX_OSERR (`-bd`) a port that
//! cannot be bound, a spool that cannot be opened; 74 EX_IOERR standard input unreadable; 75
//! EX_TEMPFAIL the message could not be queued (the caller keeps it and tries again later; with
//! `-bs` after a `421` greeting) or the queue could not be read; 78 EX_CONFIG the
//! configuration, mailertable, local-host-names, policy, access or password file or a
//! listener's certificate has an error.
//!
//! The configuration defaults to `/etc/postrider/postrider.toml`.

#[path = "common/daemon.rs"]
mod daemon;
#[path = "common/transcript.rs"]
mod transcript;

use std::collections::BTreeSet;
use std::ffi::CStr;
use std::io::{Read, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use postrider::config::{Assembly, Config};
use postrider::engine::mailq::Mailq;
use postrider::engine::scoped::{Scope, ScopedSpool};
use postrider::engine::{
    DeliveryEvent, EngineBuilder, FlushFilter, FlushSummary, Limits, QueueEntry,
};
use postrider::local::Verdict;
use postrider::message::{
    HeaderEnd, HeaderSection, LocalSubmission, complete_headers, extract_recipients,
    parse_address_list, strip_mbox_from_line, truncate_at_lone_dot,
};
use postrider::server::daemon::ServerSetup;
use postrider::server::{Endpoint, ListenerKind, serve_session};
use postrider::spool::{FsSpool, FsSpoolOptions, QueuedMessage, SpoolError};
use postrider::{
    Address, Domain, Envelope, Host, LocalTarget, Notify, Outcome, QueueId, Recipient, Ret,
    ReversePath, Route, Severity, Spool,
};

/// A line on stderr. A closed or full stderr (`2>/dev/full`, a reader that went away) never
/// stops the command: a queue run still delivers, records and releases its locks.
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// A line on stdout, as [`say!`] for stderr (`sendmail -bp | head -1` must not panic).
macro_rules! out {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

const EX_USAGE: u8 = 64;
const EX_DATAERR: u8 = 65;
const EX_NOUSER: u8 = 67;
const EX_UNAVAILABLE: u8 = 69;
const EX_SOFTWARE: u8 = 70;
const EX_OSERR: u8 = 71;
const EX_IOERR: u8 = 74;
const EX_TEMPFAIL: u8 = 75;
const EX_CONFIG: u8 = 78;

const DEFAULT_CONFIG: &str = "/etc/postrider/postrider.toml";
const USAGE: &str = "\
usage: sendmail [-C CONFIG] [-t] [-i] [-f SENDER] [-F NAME] [-v] [-odb|-odi|-odq] [ADDRESS...]
       sendmail [-C CONFIG] -bp
       sendmail [-C CONFIG] [-v] -q[RDOMAIN|IQUEUEID|SSENDER]
       sendmail [-C CONFIG] -bv ADDRESS...
       sendmail [-C CONFIG] [-v] [-odb|-odi|-odq] -bs
       sendmail [-C CONFIG] -bd [-qINTERVAL]";

/// How long an interactive submission (`-odi`, `-v`) waits for its delivery attempt before
/// leaving the message to the next queue run.
const INTERACTIVE_LIMIT: Duration = Duration::from_secs(300);

/// What the command is asked to do (sendmail's `-b` modes and `-q`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `-bm` (the default): submit a message.
    Deliver,
    /// `-bv`: verify addresses, print their routes.
    Verify,
    /// `-bp`: print the queue.
    Print,
    /// `-q`: one queue run.
    QueueRun,
    /// `-bi`, `-I`: rebuild the aliases database (there is none).
    Aliases,
    /// `-bs`: one SMTP session on standard input and output.
    Session,
    /// `-bd`: the daemon (as `examples/relay.rs`).
    Daemon,
}

/// When a submitted message is first tried (sendmail's `-od` / `DeliveryMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DeliveryMode {
    Background,
    Interactive,
    QueueOnly,
}

#[derive(Debug)]
struct Args {
    config: PathBuf,
    mode: Mode,
    /// Operands: recipient addresses.
    addresses: Vec<String>,
    extract: bool,
    sender: Option<String>,
    full_name: Option<String>,
    ignore_dots: bool,
    verbose: bool,
    delivery: Option<DeliveryMode>,
    filter: Option<FlushFilter>,
    /// `-q15m`: how often a daemon re-reads the queue (with `-bd` only).
    queue_interval: Option<Duration>,
    notify: Option<Notify>,
    ret: Option<Ret>,
    envid: Option<String>,
    /// Options accepted but ignored, to be reported.
    warnings: Vec<String>,
}

/// A refused command line: the exit status and why.
struct Refusal(u8, String);

fn usage(msg: impl Into<String>) -> Refusal {
    Refusal(EX_USAGE, msg.into())
}

/// Flags that take a value, glued (`-Cfile`) or as the next argument (`-C file`), as in
/// sendmail's getopt string. `-q` takes only a glued value.
const WITH_VALUE: &str = "ABbCDdeFfhLMNOopQRrVX";

/// sendmail's flags cluster (`-ti`) and glue their values (`-Cfile`, `-bv`, `-qR...`), with a
/// few exceptions a general-purpose parser does not model; this one walks the list by hand.
fn parse_args(mut argv: impl Iterator<Item = String>) -> Result<Args, Refusal> {
    let mut args = Args {
        config: PathBuf::from(DEFAULT_CONFIG),
        mode: Mode::Deliver,
        addresses: Vec::new(),
        extract: false,
        sender: None,
        full_name: None,
        ignore_dots: false,
        verbose: false,
        delivery: None,
        filter: None,
        queue_interval: None,
        notify: None,
        ret: None,
        envid: None,
        warnings: Vec::new(),
    };
    let mut modes: Vec<Mode> = Vec::new();
    while let Some(arg) = argv.next() {
        if arg == "--" {
            args.addresses.extend(argv.by_ref());
            break;
        }
        let Some(flags) = arg.strip_prefix('-').filter(|f| !f.is_empty()) else {
            args.addresses.push(arg);
            continue;
        };
        for (at, flag) in flags.char_indices() {
            let glued = &flags[at + flag.len_utf8()..];
            if flag == 'q' {
                // A periodic run (`-q15m`) is a daemon's setting, not a queue run now.
                if queue_flag(&mut args, glued)? {
                    modes.push(Mode::QueueRun);
                }
                break;
            }
            if WITH_VALUE.contains(flag) {
                let value = if glued.is_empty() {
                    argv.next()
                        .ok_or_else(|| usage(format!("option -{flag} needs a value")))?
                } else {
                    glued.to_string()
                };
                value_flag(&mut args, &mut modes, flag, value)?;
                break;
            }
            match flag {
                't' => args.extract = true,
                'i' => args.ignore_dots = true,
                'v' => args.verbose = true,
                'I' => modes.push(Mode::Aliases),
                // Harmless to ignore: don't alias (-n), me too (-m), relay-safe (-G), initial
                // submission (-U), connection caching (-c), old queue flags (-s, -T).
                'n' | 'm' | 'G' | 'U' | 'c' | 's' | 'T' => {}
                other => return Err(usage(format!("unknown option -{other}"))),
            }
        }
    }
    modes.dedup();
    args.mode = match modes.as_slice() {
        [] => Mode::Deliver,
        [one] => *one,
        _ => {
            return Err(usage(
                "give only one of -bm, -bp, -bv, -bi, -bs, -bd and -q",
            ));
        }
    };
    if let Some(interval) = args.queue_interval
        && args.mode != Mode::Daemon
    {
        return Err(Refusal(
            EX_UNAVAILABLE,
            format!(
                "periodic queue runs (every {} s) need a daemon: run `sendmail -bd -q...`, or \
                 `sendmail -q` from cron",
                interval.as_secs()
            ),
        ));
    }
    match args.mode {
        Mode::Print | Mode::QueueRun | Mode::Aliases | Mode::Session | Mode::Daemon
            if !args.addresses.is_empty() =>
        {
            return Err(usage(format!(
                "unexpected address {:?} with this mode",
                args.addresses[0]
            )));
        }
        Mode::Deliver if args.addresses.is_empty() && !args.extract => {
            return Err(usage(
                "no recipients: give addresses, or -t to read them from To:, Cc: and Bcc:",
            ));
        }
        _ => {}
    }
    Ok(args)
}

/// `-q`, `-qf`, `-qR...`, `-qI...`, `-qS...`: true (a queue run now). `-q15m`, `-q1h30m`,
/// `-q30` (minutes), `-qp`, `-qp15m`: false, and the interval is noted for `-bd`.
fn queue_flag(args: &mut Args, glued: &str) -> Result<bool, Refusal> {
    let Some(kind) = glued.chars().next() else {
        return Ok(true);
    };
    let value = &glued[kind.len_utf8()..];
    let filter = match kind {
        'f' if value.is_empty() => return Ok(true),
        'R' => FlushFilter::RecipientDomain(
            Domain::parse(value).map_err(|e| usage(format!("-qR needs a domain: {e}")))?,
        ),
        'I' => FlushFilter::Id(
            QueueId::parse(value)
                .map_err(|e| usage(format!("-qI needs a queue id as -bp shows it: {e}")))?,
        ),
        'S' if !value.is_empty() => FlushFilter::SenderContains(value.to_string()),
        '!' => {
            return Err(usage(
                "negated queue filters (-q!...) are not supported; use -qR, -qI or -qS",
            ));
        }
        c if c.is_ascii_digit() || c == 'p' => {
            args.queue_interval = Some(queue_interval(glued)?);
            return Ok(false);
        }
        _ => return Err(usage(format!("unknown queue option -q{glued}"))),
    };
    if args.filter.replace(filter).is_some() {
        return Err(usage("give at most one of -qR, -qI and -qS"));
    }
    Ok(true)
}

/// sendmail's queue interval: `15m`, `1h30m`, a bare number of minutes; `p` (a persistent
/// runner) alone means the default, a minute.
fn queue_interval(glued: &str) -> Result<Duration, Refusal> {
    let text = glued.strip_prefix('p').unwrap_or(glued);
    if text.is_empty() {
        return Ok(Duration::from_secs(60));
    }
    let text = if text.bytes().all(|b| b.is_ascii_digit()) {
        format!("{text}m")
    } else {
        text.to_string()
    };
    match postrider::config::parse_duration(&text) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err(usage(format!("-q{glued}: the interval must not be zero"))),
        Err(e) => Err(usage(format!("-q{glued}: {e}"))),
    }
}

fn value_flag(
    args: &mut Args,
    modes: &mut Vec<Mode>,
    flag: char,
    value: String,
) -> Result<(), Refusal> {
    let unavailable = |what: &str| Err(Refusal(EX_UNAVAILABLE, what.to_string()));
    match flag {
        'C' => args.config = PathBuf::from(value),
        'b' => modes.push(match value.as_str() {
            "v" => Mode::Verify,
            "p" => Mode::Print,
            "m" => Mode::Deliver,
            "i" => Mode::Aliases,
            "d" | "D" => Mode::Daemon,
            "s" => Mode::Session,
            "t" => return unavailable("-bt: address test mode is not available; use -bv"),
            other => return Err(usage(format!("mode -b{other} is not supported"))),
        }),
        'f' | 'r' => args.sender = Some(value),
        'F' => args.full_name = Some(value),
        'N' => {
            args.notify = Some(
                value
                    .parse()
                    .map_err(|e| usage(format!("-N {value}: {e}")))?,
            )
        }
        'R' => {
            args.ret = Some(
                value
                    .parse()
                    .map_err(|e| usage(format!("-R {value}: {e}")))?,
            )
        }
        'V' => args.envid = Some(value),
        'o' => option(args, &value, "-o"),
        'O' => long_option(args, &value),
        // Body type (postrider detects 8-bit bodies itself), error mode, hop count, log tag.
        'B' | 'e' | 'h' | 'L' => {}
        other => args
            .warnings
            .push(format!("option -{other} {value} is not supported; ignored")),
    }
    Ok(())
}

/// sendmail's one-letter `-o` options that matter here: `-oi`, `-od?`.
fn option(args: &mut Args, value: &str, how: &str) {
    let mut chars = value.chars();
    match (chars.next(), chars.as_str()) {
        (Some('i'), "") => args.ignore_dots = true,
        (Some('d'), mode) => match delivery_mode(mode) {
            Some(m) => args.delivery = Some(m),
            None => args
                .warnings
                .push(format!("delivery mode {how}{value} is unknown; ignored")),
        },
        // Error mode and "me too" do not apply: errors go back as DSNs.
        (Some('e'), _) | (Some('m'), "") => {}
        _ => args
            .warnings
            .push(format!("option {how}{value} is not supported; ignored")),
    }
}

/// `-ODeliveryMode=i`, `-OIgnoreDots`, `-OTimeout.hoststatus=0m` (what every queue run does).
fn long_option(args: &mut Args, value: &str) {
    let (name, val) = value.split_once('=').unwrap_or((value, ""));
    match name {
        "DeliveryMode" => match delivery_mode(val) {
            Some(m) => args.delivery = Some(m),
            None => args
                .warnings
                .push(format!("delivery mode -O{value} is unknown; ignored")),
        },
        "IgnoreDots" => args.ignore_dots = !matches!(val, "false" | "f" | "no" | "n"),
        n if n.starts_with("Timeout.") => {}
        _ => args
            .warnings
            .push(format!("option -O{value} is not supported; ignored")),
    }
}

fn delivery_mode(text: &str) -> Option<DeliveryMode> {
    match text {
        "b" | "background" => Some(DeliveryMode::Background),
        "i" | "interactive" => Some(DeliveryMode::Interactive),
        "q" | "queue" | "d" | "deferred" => Some(DeliveryMode::QueueOnly),
        _ => None,
    }
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(Refusal(code, message)) => {
            say!("sendmail: {message}");
            if code == EX_USAGE {
                say!("{USAGE}");
            }
            return ExitCode::from(code);
        }
    };
    for w in &args.warnings {
        say!("sendmail: warning: {w}");
    }
    match args.mode {
        Mode::Verify => verify(&args),
        Mode::Aliases => check_aliases(&args),
        Mode::Daemon => daemon::main("sendmail", &args.config, &[], args.queue_interval),
        Mode::Deliver | Mode::Print | Mode::QueueRun | Mode::Session => ExitCode::from(run(&args)),
    }
}

fn print_lines(prefix: &str, message: &dyn std::fmt::Display) {
    for line in message.to_string().lines() {
        say!("sendmail: {prefix}{line}");
    }
}

/// The configuration named by `-C`, or the exit code after its errors are printed.
fn load_config(args: &Args) -> Result<Config, u8> {
    Config::load(&args.config).map_err(|e| {
        print_lines("", &e);
        EX_CONFIG
    })
}

/// The one-threaded runtime every mode runs on.
fn runtime() -> Result<tokio::runtime::Runtime, u8> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            say!("sendmail: cannot start the async runtime: {e}");
            EX_OSERR
        })
}

/// Loads the configuration for the modes that use the engine or the spool.
fn run(args: &Args) -> u8 {
    let config = match load_config(args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    transcript::init("sendmail", args.verbose);
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let code = runtime.block_on(async {
        match args.mode {
            Mode::Print => print_queue(&config).await,
            Mode::QueueRun => queue_run(args, &config).await,
            Mode::Session => smtp_session(args, &config).await,
            _ => submit(args, &config).await,
        }
    });
    // `-bs` reads standard input on a blocking thread, and such a read cannot be cancelled:
    // one still waiting after QUIT must not keep the command from exiting.
    runtime.shutdown_background();
    code
}

// ---- -bv -------------------------------------------------------------------------------

fn verify(args: &Args) -> ExitCode {
    if args.addresses.is_empty() {
        say!("sendmail: -bv needs at least one address\n{USAGE}");
        return ExitCode::from(EX_USAGE);
    }
    let config = match load_config(args) {
        Ok(c) => c,
        Err(code) => return ExitCode::from(code),
    };
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return ExitCode::from(code),
    };
    // The policy does not change routes, but a broken one is a broken configuration: the
    // whole configuration is assembled as a delivery would.
    let parts = match runtime.block_on(assemble(&config)) {
        Ok(p) => p,
        Err(code) => return ExitCode::from(code),
    };
    let router = parts.router();
    let hostname = Some(parts.hostname().clone());
    let mut status = 0;
    for raw in &args.addresses {
        let qualified = match (&hostname, raw.contains('@')) {
            (Some(h), false) => format!("{raw}@{h}"),
            _ => raw.clone(),
        };
        let failed = match Address::parse(&qualified) {
            Ok(address) => {
                let explanation = router.explain(&address);
                out!("{explanation}");
                if args.verbose {
                    runtime.block_on(print_tls_policy(&parts, &explanation.route));
                }
                match &explanation.route {
                    Route::Local { target } => verify_local(&parts, target, &address),
                    _ => explanation.is_reject().then_some(EX_NOUSER),
                }
            }
            Err(e) => {
                out!("{raw}: bad address: {e}");
                Some(EX_DATAERR)
            }
        };
        if let (0, Some(code)) = (status, failed) {
            status = code;
        }
    }
    ExitCode::from(status)
}

/// `-bv -v`: the TLS rule for each MX domain the route delivers to directly (the policy
/// file's line, else what the domain publishes by DANE and MTA-STS); this looks the policies
/// up, so it is only done when asked.
async fn print_tls_policy(parts: &Assembly, route: &Route) {
    let Route::Relay { hops, .. } = route else {
        return;
    };
    let esmtp = parts.esmtp();
    let policy = esmtp.policy();
    for hop in hops.iter().filter(|h| h.mx) {
        if let Host::Name(domain) = &hop.host {
            let tls = esmtp.config().tls_policy.as_deref();
            let explanation =
                postrider::tls_policy::explain(domain, &policy, tls, parts.dns()).await;
            out!("{explanation}");
        }
    }
}

/// The local half of `-bv`: the aliases expanded as a delivery would, each final target
/// judged, and where each forward goes. `Some(exit code)` when the mail would not arrive.
fn verify_local(parts: &Assembly, target: &LocalTarget, address: &Address) -> Option<u8> {
    let Some(local) = parts.local() else {
        // The route is the answer; that mail to it would bounce is worth saying, not failing:
        // -bv answers how an address routes.
        say!("sendmail: warning: {address}: local delivery is not configured (no [local] section)");
        return None;
    };
    let verification = local.verify_target(target, address);
    out!("{verification}");
    for t in &verification.targets {
        if let Verdict::Forwarded(to) = &t.verdict {
            out!("{}", parts.router().explain(to));
        }
    }
    (!verification.deliverable()).then_some(EX_NOUSER)
}

// ---- -bi -------------------------------------------------------------------------------

/// `newaliases`: postrider reads the aliases file itself when it starts and on SIGHUP, so
/// there is no database to build; this checks the file as a start would and says what it
/// found (or every bad line), which is what an administrator runs newaliases to learn.
fn check_aliases(args: &Args) -> ExitCode {
    let config = match load_config(args) {
        Ok(c) => c,
        Err(code) => return ExitCode::from(code),
    };
    let Some(local) = &config.local else {
        say!(
            "sendmail: {} has no [local] section: no aliases file to check",
            args.config.display()
        );
        return ExitCode::SUCCESS;
    };
    let Some(path) = &local.aliases else {
        say!("sendmail: [local] names no aliases file: nothing to check");
        return ExitCode::SUCCESS;
    };
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return ExitCode::from(code),
    };
    // A bad line stops the assembly, naming file and line, as it would stop a start.
    let parts = match runtime.block_on(assemble(&config)) {
        Ok(p) => p,
        Err(code) => return ExitCode::from(code),
    };
    match parts.local().and_then(|l| l.check_aliases()) {
        Some(Ok(summary)) => {
            print_lines("", &summary);
            ExitCode::SUCCESS
        }
        Some(Err(e)) => {
            print_lines("", &e);
            ExitCode::from(EX_DATAERR)
        }
        None => {
            say!("sendmail: {}: not read", path.display());
            ExitCode::from(EX_SOFTWARE)
        }
    }
}

// ---- -bp -------------------------------------------------------------------------------

async fn print_queue(config: &Config) -> u8 {
    #[cfg(feature = "postgres")]
    if config.pg_spool().is_some() {
        return print_shared_queue(config).await;
    }
    // Read-only: `mailq` works for whoever may read the spool, and changes nothing in it.
    let dir = config.spool.clone();
    let listed = tokio::task::spawn_blocking(move || {
        let spool = FsSpool::open_with(&dir, FsSpoolOptions::new().read_only(true))?;
        for file in spool.quarantined()? {
            say!(
                "sendmail: warning: unreadable queue record set aside: {} (inspect it, then \
                 remove it)",
                file.display()
            );
        }
        let listing = spool.listing()?;
        // sendmail names its queue directory by its full path.
        let shown = std::fs::canonicalize(&dir).unwrap_or(dir);
        Ok::<_, SpoolError>(write_listing(&shown, listing.remaining(), listing))
    })
    .await;
    match listed {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => {
            say!("sendmail: cannot read the queue: {e}");
            EX_TEMPFAIL
        }
        Err(e) => {
            say!("sendmail: cannot read the queue: {e}");
            EX_SOFTWARE
        }
    }
}

/// The queue of a database spool, page by page through [`Spool::list`].
#[cfg(feature = "postgres")]
async fn print_shared_queue(config: &Config) -> u8 {
    let database = match config.pg_spool() {
        Some(Ok(pg)) => pg.connection.get_dbname().unwrap_or("postgres").to_string(),
        _ => "postgres".to_string(),
    };
    let spool = match config.open_spool().await {
        Ok(s) => s,
        Err(e) => {
            say!("sendmail: cannot read the queue: {e}");
            return EX_TEMPFAIL;
        }
    };
    let mut messages = Vec::new();
    let mut after = None;
    loop {
        match spool.list(after, 1_000).await {
            Ok(page) => {
                messages.extend(page.messages.into_iter().map(|m| m.message));
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            Err(e) => {
                say!("sendmail: cannot read the queue: {e}");
                return EX_TEMPFAIL;
            }
        }
    }
    let shown = PathBuf::from(format!("PostgreSQL database {database}"));
    write_listing(&shown, messages.len(), messages.into_iter().map(Ok))
}

/// Writes a `mailq` listing of `count` messages; a message that cannot be read is named on
/// stderr and the listing goes on (one damaged file must not hide the rest of the queue).
fn write_listing(
    dir: &Path,
    count: usize,
    messages: impl Iterator<Item = Result<QueuedMessage, SpoolError>>,
) -> u8 {
    let listed = Mailq::start(std::io::stdout().lock(), dir, count).and_then(|mut listing| {
        for m in messages {
            match m {
                Ok(m) => listing.entry(&QueueEntry::from(&m))?,
                Err(e) => say!("sendmail: warning: {e}"),
            }
        }
        listing.finish().map(drop)
    });
    // A reader that stopped early (`| head`) is not an error of the queue.
    match listed {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            say!("sendmail: cannot write the listing: {e}");
            EX_IOERR
        }
        _ => 0,
    }
}

// ---- -q --------------------------------------------------------------------------------

async fn queue_run(args: &Args, config: &Config) -> u8 {
    let parts = match assemble(config).await {
        Ok(p) => p,
        Err(code) => return code,
    };
    let spool = match config.open_spool().await {
        Ok(s) => s,
        Err(e) => {
            say!("sendmail: cannot run the queue: {e}");
            return EX_TEMPFAIL;
        }
    };
    let scope = match &args.filter {
        None => Scope::Everything,
        Some(f) => Scope::Matching(f.clone()),
    };
    let view = ScopedSpool::new(spool, scope);
    let engine = match one_shot(&parts, Arc::new(view)).start().await {
        Ok(e) => e,
        Err(e) => {
            say!("sendmail: cannot start the queue engine: {e}");
            return EX_TEMPFAIL;
        }
    };
    let mut events = engine.subscribe();
    let summary = engine.flush(FlushFilter::All).await;
    engine.shutdown().await;
    let summary = match summary {
        Ok(s) => s,
        Err(e) => {
            say!("sendmail: queue run failed: {e}");
            return EX_TEMPFAIL;
        }
    };
    if args.verbose {
        let mut tried = BTreeSet::new();
        let (mut sent, mut deferred, mut failed) = (0, 0, 0);
        while let Ok(e) = events.try_recv() {
            tried.insert(e.id);
            match e.outcome {
                Outcome::Delivered { .. } => sent += 1,
                Outcome::Deferred(_) => deferred += 1,
                Outcome::Failed(_) => failed += 1,
            }
        }
        out!(
            "queue run: {} message(s) tried: {sent} recipient(s) sent, {deferred} deferred, \
             {failed} failed; {} message(s) skipped (another process is delivering them), {} held",
            tried.len(),
            summary.busy,
            summary.held
        );
    }
    unrecorded_status(&summary)
}

/// 75 when some delivery could not be recorded: the spool does not know of it, and the next
/// run may deliver it again (the disk must be fixed).
fn unrecorded_status(summary: &FlushSummary) -> u8 {
    if summary.unrecorded == 0 {
        return 0;
    }
    say!(
        "sendmail: {} message(s): cannot record their delivery state in the spool (see the \
         errors above); they may be delivered again once the spool is writable",
        summary.unrecorded
    );
    EX_TEMPFAIL
}

/// The parts the configuration describes, for a command that lives for one submission or one
/// queue run; its warnings (an unqualified host name, a table's duplicate key) printed on every
/// start. The error is the exit status.
async fn assemble(config: &Config) -> Result<Assembly, u8> {
    let mut config = config.clone();
    // A session kept open after the run would only be cut at exit.
    config.esmtp.connection_cache = None;
    match config.assemble().await {
        Ok(parts) => {
            for w in parts.warnings() {
                print_lines("warning: ", w);
            }
            Ok(parts)
        }
        Err(e) => {
            print_lines("", &e);
            Err(match e.severity() {
                Severity::Temporary => EX_TEMPFAIL,
                Severity::Permanent => EX_CONFIG,
            })
        }
    }
}

/// An engine builder over `spool` for one run: no periodic rescans, and a short grace so an
/// interrupted run leaves quickly (each session still finishes the message it is on).
fn one_shot(parts: &Assembly, spool: Arc<dyn Spool>) -> EngineBuilder {
    parts.engine_builder(spool).limits(one_shot_limits(parts))
}

fn one_shot_limits(parts: &Assembly) -> Limits {
    Limits {
        queue_scan_interval: None,
        shutdown_grace: Duration::from_secs(10),
        ..parts.limits().clone()
    }
}

/// When a submitted message is first tried: `-od`, else interactive with `-v`, else in the
/// background.
fn delivery_mode_of(args: &Args) -> DeliveryMode {
    args.delivery.unwrap_or(if args.verbose {
        DeliveryMode::Interactive
    } else {
        DeliveryMode::Background
    })
}

// ---- -bs -------------------------------------------------------------------------------

/// One SMTP session on standard input and output, on the library's server, as MUAs and PHP
/// mailers run `sendmail -bs`. The invoking user is local and trusted (sendmail's view of
/// `-bs`): it may relay as a loopback client may; the `[server]` limits and the access file's
/// `From:`/`To:` entries still apply. Each accepted message is then tried as `-od` says.
async fn smtp_session(args: &Args, config: &Config) -> u8 {
    let parts = match assemble(config).await {
        Ok(p) => p,
        Err(code) => return code,
    };
    let setup = match ServerSetup::read(config) {
        Ok(s) => s,
        Err(e) => {
            print_lines("", &e);
            return EX_CONFIG;
        }
    };
    let delivery = delivery_mode_of(args);
    // Before the greeting a client can only be told "not now": 421, and the caller's
    // mailer keeps the message.
    let unavailable = |e: &dyn std::fmt::Display| {
        say!("sendmail: message not queued: {e}");
        out!(
            "421 4.3.0 {} Mail system unavailable, try again later\r",
            parts.hostname()
        );
        EX_TEMPFAIL
    };
    let spool = match config.open_spool().await {
        Ok(s) => s,
        Err(e) => return unavailable(&e),
    };
    let mut view = ScopedSpool::new(spool, Scope::Own);
    if delivery != DeliveryMode::Interactive {
        view = view.without_claims();
    }
    let limits = setup.engine_limits(one_shot_limits(&parts));
    let engine = match parts
        .engine_builder(Arc::new(view))
        .limits(limits)
        .start()
        .await
    {
        Ok(e) => e,
        Err(e) => return unavailable(&e),
    };
    let server = setup.server(engine.clone(), &parts);
    let report = serve_session(
        tokio::io::stdin(),
        tokio::io::stdout(),
        &server,
        &Endpoint::new(ListenerKind::Smtp),
        None,
    )
    .await;
    let mut status = 0;
    match delivery {
        DeliveryMode::QueueOnly => {}
        DeliveryMode::Background => {
            for id in &report.queued {
                deliver_in_background(&args.config, *id);
            }
        }
        DeliveryMode::Interactive => {
            // The engine made each first attempt as the message came in; wait for them.
            for id in &report.queued {
                let attempt =
                    tokio::time::timeout(INTERACTIVE_LIMIT, engine.flush(FlushFilter::Id(*id)));
                match attempt.await {
                    Ok(Ok(summary)) => status = status.max(unrecorded_status(&summary)),
                    Ok(Err(_)) => {}
                    Err(_) => say!(
                        "sendmail: {id}: no answer after {} s; the message stays queued for the next queue run",
                        INTERACTIVE_LIMIT.as_secs()
                    ),
                }
            }
        }
    }
    engine.shutdown().await;
    status
}

// ---- submitting ------------------------------------------------------------------------

async fn submit(args: &Args, config: &Config) -> u8 {
    // Everything that can be checked is checked before reading the message, so a broken
    // configuration does not swallow it.
    let parts = match assemble(config).await {
        Ok(p) => p,
        Err(code) => return code,
    };
    let hostname = parts.hostname().clone();
    let user = invoking_user();
    let sender = match envelope_sender(args.sender.as_deref(), &user, &hostname) {
        Ok(s) => s,
        Err(e) => {
            say!("sendmail: {e}");
            return EX_DATAERR;
        }
    };
    let mut recipients: Vec<Address> = Vec::new();
    for raw in &args.addresses {
        match argument_addresses(raw, &hostname) {
            Ok(list) => merge(&mut recipients, list),
            Err(e) => {
                say!("sendmail: {e}");
                return EX_DATAERR;
            }
        }
    }
    if let Some(envid) = &args.envid
        && let Err(e) = Envelope::new(ReversePath::Null, Vec::<Address>::new()).set_envid(envid)
    {
        say!("sendmail: -V {envid}: {e}");
        return EX_USAGE;
    }
    let delivery = delivery_mode_of(args);
    let spool = match config.open_spool().await {
        Ok(s) => s,
        Err(e) => {
            say!("sendmail: message not queued: {e}");
            return EX_TEMPFAIL;
        }
    };
    let mut view = ScopedSpool::new(spool, Scope::Own);
    if delivery != DeliveryMode::Interactive {
        // The attempt belongs to another process (or to the next queue run).
        view = view.without_claims();
    }
    let builder = one_shot(&parts, Arc::new(view));

    let mut raw = Vec::new();
    if let Err(e) = std::io::stdin().lock().read_to_end(&mut raw) {
        say!("sendmail: cannot read the message from standard input: {e}");
        return EX_IOERR;
    }
    let input = if args.ignore_dots {
        &raw[..]
    } else {
        truncate_at_lone_dot(&raw)
    };
    let input = strip_mbox_from_line(input);
    let mut message = input.to_vec();
    if args.extract {
        match extract_recipients(input, &hostname) {
            Ok(x) => {
                merge(&mut recipients, x.recipients);
                message = x.message;
            }
            Err(e) => {
                say!("sendmail: {e}");
                return EX_DATAERR;
            }
        }
    }
    if recipients.is_empty() {
        say!("sendmail: {}", no_recipients(input));
        return EX_DATAERR;
    }
    let unique = QueueId::generate();
    let full_name = args.full_name.clone().or(user.full_name);
    let message = complete_headers(
        &message,
        &LocalSubmission {
            hostname: &hostname,
            sender: &sender,
            full_name: full_name.as_deref(),
            date: SystemTime::now(),
            unique: unique.as_str(),
            uid: Some(user.uid),
        },
    );
    let mut envelope = Envelope::new(
        sender,
        recipients.into_iter().map(|address| Recipient {
            notify: args.notify,
            ..Recipient::new(address)
        }),
    );
    envelope.ret = args.ret;
    // Checked before the message was read.
    envelope.envid = args.envid.clone();

    let engine = match builder.start().await {
        Ok(e) => e,
        Err(e) => {
            say!("sendmail: message not queued: {e}");
            return EX_TEMPFAIL;
        }
    };
    let mut events = engine.subscribe();
    let id = match engine.submit(envelope, message).await {
        Ok(id) => id,
        Err(e) => {
            engine.shutdown().await;
            say!("sendmail: {e}");
            return match e.severity() {
                Severity::Temporary => EX_TEMPFAIL,
                Severity::Permanent => EX_DATAERR,
            };
        }
    };
    if args.verbose {
        say!("{id}: queued");
    }
    match delivery {
        DeliveryMode::QueueOnly => engine.shutdown().await,
        DeliveryMode::Background => {
            engine.shutdown().await;
            deliver_in_background(&args.config, id);
        }
        DeliveryMode::Interactive => {
            let attempt =
                tokio::time::timeout(INTERACTIVE_LIMIT, engine.flush(FlushFilter::Id(id)));
            let status = match attempt.await {
                Ok(Ok(summary)) => unrecorded_status(&summary),
                Ok(Err(_)) => 0,
                Err(_) => {
                    say!(
                        "sendmail: {id}: no answer after {} s; the message stays queued for the next queue run",
                        INTERACTIVE_LIMIT.as_secs()
                    );
                    0
                }
            };
            engine.shutdown().await;
            if !args.verbose {
                report_failures(&mut events, id);
            }
            return status;
        }
    }
    0
}

/// sendmail's interactive mode says which recipients failed; the sender also gets a DSN.
fn report_failures(events: &mut tokio::sync::broadcast::Receiver<DeliveryEvent>, id: QueueId) {
    while let Ok(e) = events.try_recv() {
        if e.id == id && matches!(e.outcome, Outcome::Failed(_)) {
            say!("sendmail: {}... {}", e.recipient, e.stat());
        }
    }
}

/// Starts `sendmail -qI<id>` detached, so this command returns now and the attempt goes on.
fn deliver_in_background(config: &Path, id: QueueId) {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let spawned = std::env::current_exe().and_then(|exe| {
        Command::new(exe)
            .arg("-C")
            .arg(config)
            .arg(format!("-qI{id}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: a Ctrl-C meant for the caller does not stop it.
            .process_group(0)
            .spawn()
    });
    if let Err(e) = spawned {
        say!(
            "sendmail: warning: {id}: cannot start the delivery process ({e}); the message \
             stays queued for the next queue run"
        );
    }
}

fn merge(into: &mut Vec<Address>, more: Vec<Address>) {
    for a in more {
        if !into.contains(&a) {
            into.push(a);
        }
    }
}

/// An argument is an address list, as sendmail reads it: `"Ann <ann@x>, bob"`.
fn argument_addresses(raw: &str, hostname: &Domain) -> Result<Vec<Address>, String> {
    let specs = parse_address_list(raw).map_err(|e| format!("{raw}: bad address: {e}"))?;
    if specs.is_empty() {
        return Err(format!("{raw:?}: no address"));
    }
    specs
        .into_iter()
        .map(|spec| {
            let qualified = qualify(&spec, hostname);
            Address::parse(&qualified).map_err(|e| format!("{raw}: bad address: {e}"))
        })
        .collect()
}

fn qualify(spec: &str, hostname: &Domain) -> String {
    if spec.contains('@') {
        spec.to_string()
    } else {
        format!("{spec}@{hostname}")
    }
}

fn envelope_sender(
    flag: Option<&str>,
    user: &User,
    hostname: &Domain,
) -> Result<ReversePath, String> {
    let Some(raw) = flag else {
        return Address::parse(&qualify(&user.login, hostname))
            .map(ReversePath::from)
            .map_err(|e| {
                format!(
                    "cannot make a sender address from the login name {:?}: {e}; use -f",
                    user.login
                )
            });
    };
    let trimmed = raw.trim();
    if matches!(trimmed, "<>" | "") {
        return Ok(ReversePath::Null);
    }
    let inner = trimmed
        .strip_prefix('<')
        .and_then(|s| s.strip_suffix('>'))
        .unwrap_or(trimmed);
    Address::parse(&qualify(inner, hostname))
        .map(ReversePath::from)
        .map_err(|e| format!("-f {raw}: bad sender address: {e}"))
}

/// Why there is no recipient, with the likely cause when the header ended early.
fn no_recipients(input: &[u8]) -> String {
    let base = "no recipients: the message has no To:, Cc: or Bcc: address";
    match HeaderSection::parse(input).end() {
        HeaderEnd::NotAField { line, text } => format!(
            "{base} (the header ended at line {line}, {text:?}, which is not a \"Name: value\" field)"
        ),
        _ => base.to_string(),
    }
}

/// Who runs the command.
struct User {
    login: String,
    full_name: Option<String>,
    uid: u32,
}

/// The login name of the real uid from the password database (the environment can name
/// anyone, as sendmail knows), else `$LOGNAME`/`$USER`; the full name from `-F`'s usual
/// sources: `$NAME`, else the password entry's GECOS field (`&` is the capitalised login).
fn invoking_user() -> User {
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    let mut login = None;
    let mut gecos = None;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: an all-zero passwd is a valid value that getpwuid_r overwrites.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; buf outlives the strings read below.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut found) };
    if rc == 0 && !found.is_null() {
        // SAFETY: on success pw_name and pw_gecos point to NUL-terminated strings in buf.
        let (name, full) = unsafe { (CStr::from_ptr(pwd.pw_name), CStr::from_ptr(pwd.pw_gecos)) };
        login = name.to_str().ok().map(str::to_string);
        gecos = full.to_str().ok().map(str::to_string);
    }
    let login = login
        .filter(|l| !l.is_empty())
        .or_else(|| std::env::var("LOGNAME").ok())
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| format!("uid{uid}"));
    let full_name = std::env::var("NAME").ok().or_else(|| {
        let first = gecos?.split(',').next()?.trim().to_string();
        let mut cap = login.clone();
        if let Some(c) = cap.get_mut(..1) {
            c.make_ascii_uppercase();
        }
        Some(first.replace('&', &cap)).filter(|n| !n.is_empty())
    });
    User {
        login,
        full_name,
        uid,
    }
}
