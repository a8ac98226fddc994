//! `postsuper`: delete, hold and release queued messages, as Postfix's command of that name.
//!
//! ```text
//! postsuper [-C CONFIG] -d QUEUEID...|ALL [-R DOMAIN | -S TEXT]   delete
//! postsuper [-C CONFIG] -h QUEUEID...|ALL [-R DOMAIN | -S TEXT]   hold
//! postsuper [-C CONFIG] -H QUEUEID...|ALL [-R DOMAIN | -S TEXT]   release from hold
//! ```
//!
//! `ALL` is every message; with `-R DOMAIN` only those with a pending recipient in that
//! domain or below it, with `-S TEXT` those whose sender contains the text (as `sendmail -qR`
//! and `-qS` select). A queue id `-` reads ids from standard input, one per line, as Postfix's
//! does (e.g. `mailq | awk ... | postsuper -d -`).
//!
//! It prints what it did in Postfix's words, to stderr:
//!
//! ```text
//! postsuper: Deleted: 12 messages
//! ```
//!
//! It is safe while a queue run or the relay daemon runs: each message is changed under its
//! claim (the lock a delivery holds), and one being delivered right now is tried again for a few
//! seconds, then reported as busy. A running daemon sees the change at its next attempt or
//! queue rescan.
//!
//! Exit status: 0 done; 64 bad arguments; 75 some messages stayed busy or the spool could not
//! be read or written; 78 the configuration cannot be read.

use std::io::{BufRead, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use postrider::QueueId;
use postrider::config::Config;
use postrider::engine::FlushFilter;
use postrider::engine::admin::{Action, ActionSummary, administer};

const EX_USAGE: u8 = 64;
const EX_TEMPFAIL: u8 = 75;
const EX_CONFIG: u8 = 78;

const DEFAULT_CONFIG: &str = "/etc/postrider/postrider.toml";
const USAGE: &str = "usage: postsuper [-C CONFIG] -d|-h|-H QUEUEID...|ALL [-R DOMAIN | -S TEXT]";

/// How long a message being delivered by another process is waited for.
const PATIENCE: Duration = Duration::from_secs(5);

macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

#[derive(Debug)]
struct Args {
    config: PathBuf,
    action: Action,
    /// `None`: ALL.
    ids: Option<Vec<QueueId>>,
    narrow: Option<FlushFilter>,
}

fn parse_args(argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut config = PathBuf::from(DEFAULT_CONFIG);
    let mut action = None;
    let mut targets: Vec<String> = Vec::new();
    let mut narrow = None;
    let mut argv = argv.peekable();
    while let Some(arg) = argv.next() {
        let mut value = |name: &str| {
            argv.next()
                .ok_or_else(|| format!("option {name} needs a value"))
        };
        match arg.as_str() {
            "-C" => config = PathBuf::from(value("-C")?),
            "-d" | "-h" | "-H" => {
                let a = match arg.as_str() {
                    "-d" => Action::Delete,
                    "-h" => Action::Hold,
                    _ => Action::Release,
                };
                if action.replace(a).is_some_and(|old| old != a) {
                    return Err("give only one of -d, -h and -H".into());
                }
                targets.push(value(&arg)?);
            }
            "-R" => {
                let d = value("-R")?;
                let domain = d
                    .parse()
                    .map_err(|e| format!("-R {d}: not a domain: {e}"))?;
                if narrow
                    .replace(FlushFilter::RecipientDomain(domain))
                    .is_some()
                {
                    return Err("give at most one of -R and -S".into());
                }
            }
            "-S" => {
                let text = value("-S")?;
                if text.is_empty() || narrow.replace(FlushFilter::SenderContains(text)).is_some() {
                    return Err("give at most one of -R and -S, with a text".into());
                }
            }
            other if other.starts_with('-') && other != "-" => {
                return Err(format!("unknown option {other}"));
            }
            // More ids after the first: `postsuper -d A B C`.
            _ if action.is_some() => targets.push(arg),
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    let Some(action) = action else {
        return Err("say what to do: -d (delete), -h (hold) or -H (release)".into());
    };
    let ids = if targets.iter().any(|t| t == "ALL") {
        if targets.len() > 1 {
            return Err("ALL stands alone: give it, or queue ids".into());
        }
        None
    } else {
        if narrow.is_some() {
            return Err("-R and -S narrow ALL; with queue ids they mean nothing".into());
        }
        let mut ids = Vec::new();
        for t in targets {
            if t == "-" {
                for line in std::io::stdin().lock().lines() {
                    let line = line.map_err(|e| format!("cannot read queue ids: {e}"))?;
                    let id = line.trim();
                    if !id.is_empty() {
                        ids.push(parse_id(id)?);
                    }
                }
            } else {
                ids.push(parse_id(&t)?);
            }
        }
        Some(ids)
    };
    Ok(Args {
        config,
        action,
        ids,
        narrow,
    })
}

fn parse_id(text: &str) -> Result<QueueId, String> {
    // mailq marks a message in delivery with `*` after its id.
    let text = text.trim_end_matches(['*', '!']);
    QueueId::parse(text).map_err(|e| format!("{text}: not a queue id as mailq shows it: {e}"))
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            say!("postsuper: {e}\n{USAGE}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            say!("postsuper: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            say!("postsuper: cannot start the async runtime: {e}");
            return ExitCode::from(EX_TEMPFAIL);
        }
    };
    ExitCode::from(runtime.block_on(run(&args, &config)))
}

async fn run(args: &Args, config: &Config) -> u8 {
    let spool = match config.open_spool().await {
        Ok(s) => s,
        Err(e) => {
            say!("postsuper: {e}");
            return EX_TEMPFAIL;
        }
    };
    let filters: Vec<FlushFilter> = match &args.ids {
        None => vec![args.narrow.clone().unwrap_or(FlushFilter::All)],
        Some(ids) => ids.iter().map(|id| FlushFilter::Id(*id)).collect(),
    };
    let mut total = ActionSummary::default();
    for filter in &filters {
        match administer(&*spool, args.action, filter, PATIENCE).await {
            Ok(s) => {
                total.changed += s.changed;
                total.unchanged += s.unchanged;
                total.busy.extend(s.busy);
            }
            Err(e) => {
                say!("postsuper: {e}");
                report(args.action, &total);
                return EX_TEMPFAIL;
            }
        }
    }
    report(args.action, &total);
    if total.busy.is_empty() {
        0
    } else {
        EX_TEMPFAIL
    }
}

fn report(action: Action, s: &ActionSummary) {
    let plural = |n: usize| if n == 1 { "message" } else { "messages" };
    if s.changed > 0 || s.busy.is_empty() {
        say!(
            "postsuper: {}: {} {}",
            action.done(),
            s.changed,
            plural(s.changed)
        );
    }
    for id in &s.busy {
        say!("postsuper: {id}: being delivered by another process; try again shortly");
    }
}
