//! One node of a shared queue: an engine on the spool `postrider.toml` names (typically
//! `spool = "postgresql://…"`, which several nodes share), delivering by the configuration, and
//! taking submissions as lines on standard input. A worker for a cluster, and the process the
//! multi-engine tests and benchmarks run, kill and restart.
//!
//! ```text
//! queue_node -C CONFIG [--node NAME] [--lease DURATION]
//! ```
//!
//! `--node` and `--lease` override the PostgreSQL spool's node name (what its leases carry:
//! `HOST:PID` by default) and lease (60 s). Once the engine runs it prints `ready`. Each input
//! line `TAG RECIPIENT` submits one small message from `queue-node@HOSTNAME` to RECIPIENT
//! with `Subject: TAG` and `X-Tag: TAG`, and prints, when the engine has answered,
//! `ok TAG QUEUE-ID` (the message is durable), `temp TAG REASON` (not queued: try again later)
//! or `perm TAG REASON` (not queued: the message is wrong). Submissions run concurrently (at
//! most 64), so answers come in any order. At the end of input the node goes on delivering;
//! SIGTERM or SIGINT shut it down. Exit status: 64 bad arguments, 78 configuration error,
//! 71 cannot open the spool.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use postrider::config::Config;
use postrider::spool::Spool;
use postrider::{Address, Envelope, ReversePath};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{Semaphore, mpsc};

const EX_USAGE: u8 = 64;
const EX_OSERR: u8 = 71;
const EX_CONFIG: u8 = 78;
const USAGE: &str = "usage: queue_node -C CONFIG [--node NAME] [--lease DURATION]";

struct Args {
    config: PathBuf,
    node: Option<String>,
    lease: Option<Duration>,
}

fn parse_args(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut config = None;
    let mut node = None;
    let mut lease = None;
    while let Some(arg) = argv.next() {
        let mut value = |what: &str| argv.next().ok_or(format!("option {arg} needs {what}"));
        match arg.as_str() {
            "-C" => config = Some(PathBuf::from(value("a file name")?)),
            "--node" => node = Some(value("a name")?),
            "--lease" => {
                let text = value("a duration such as 2s")?;
                lease = Some(
                    postrider::config::parse_duration(&text)
                        .map_err(|e| format!("--lease {text:?}: {e}"))?,
                );
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Args {
        config: config.ok_or("option -C CONFIG is required")?,
        node,
        lease,
    })
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("queue_node: {e}\n{USAGE}");
            return ExitCode::from(EX_USAGE);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person watching: a log file or journald gets plain lines.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("queue_node: cannot start the async runtime: {e}");
            return ExitCode::from(EX_OSERR);
        }
    };
    runtime.block_on(run(args))
}

async fn open_spool(config: &Config, args: &Args) -> Result<Arc<dyn Spool>, String> {
    if let Some(pg) = config.pg_spool() {
        let mut pg = pg.map_err(|e| e.to_string())?;
        if let Some(node) = &args.node {
            pg = pg.with_node(node.clone());
        }
        if let Some(lease) = args.lease {
            pg = pg.with_lease(lease).map_err(|e| e.to_string())?;
        }
        let spool = postrider::spool::PgSpool::connect(&pg)
            .await
            .map_err(|e| e.to_string())?;
        return Ok(Arc::new(spool));
    }
    config.open_spool().await.map_err(|e| e.to_string())
}

async fn run(args: Args) -> ExitCode {
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("queue_node: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let parts = match config.assemble().await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("queue_node: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let spool = match open_spool(&config, &args).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("queue_node: cannot open the spool: {e}");
            return ExitCode::from(EX_OSERR);
        }
    };
    let engine = match parts.engine_builder(spool).start().await {
        Ok(e) => e,
        Err(e) => {
            eprintln!("queue_node: {e}");
            return ExitCode::from(EX_OSERR);
        }
    };
    let sender = match ReversePath::parse(&format!("queue-node@{}", parts.hostname())) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("queue_node: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let (out, mut answers) = mpsc::unbounded_channel::<String>();
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(line) = answers.recv().await {
            if stdout.write_all(line.as_bytes()).await.is_err() || stdout.flush().await.is_err() {
                return;
            }
        }
    });
    let _ = out.send("ready\n".into());
    let reader = {
        let (engine, out) = (engine.clone(), out.clone());
        tokio::spawn(async move {
            let slots = Arc::new(Semaphore::new(64));
            let mut lines = BufReader::new(tokio::io::stdin()).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let Some((tag, to)) = line.trim().split_once(' ') else {
                    let _ = out.send(format!("perm {} expected TAG RECIPIENT\n", line.trim()));
                    continue;
                };
                let (tag, to) = (tag.to_string(), to.trim().to_string());
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (engine, out, sender) = (engine.clone(), out.clone(), sender.clone());
                tokio::spawn(async move {
                    let answer = submit(&engine, sender, &tag, &to).await;
                    let _ = out.send(answer);
                    drop(permit);
                });
            }
        })
    };
    stop_signal().await;
    reader.abort();
    engine.shutdown().await;
    drop(out);
    let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
    ExitCode::SUCCESS
}

async fn submit(
    engine: &postrider::engine::Engine,
    sender: ReversePath,
    tag: &str,
    to: &str,
) -> String {
    let rcpt = match Address::parse(to) {
        Ok(a) => a,
        Err(e) => return format!("perm {tag} {e}\n"),
    };
    let body = format!("Subject: {tag}\r\nX-Tag: {tag}\r\n\r\nqueued by a queue node\r\n");
    match engine.submit(Envelope::new(sender, [rcpt]), body).await {
        Ok(id) => format!("ok {tag} {id}\n"),
        Err(e) if e.severity() == postrider::Severity::Temporary => {
            format!("temp {tag} {}\n", e.to_string().replace('\n', " "))
        }
        Err(e) => format!("perm {tag} {}\n", e.to_string().replace('\n', " ")),
    }
}

async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the node runs until killed.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
