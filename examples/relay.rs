//! An SMTP relay daemon: a thin program over `postrider::server`. Clients hand it mail over
//! SMTP (a PBX on the LAN, a mail client with a password, programs on `localhost`), and the
//! engine queues it durably and relays it by the configured smart host, mailertable or MX.
//!
//! ```text
//! relay [-C CONFIG] [--listen ADDRESS:PORT]...
//! ```
//!
//! Listeners come from the configuration's `[[listener]]` tables (`smtp`, `submission`,
//! `submissions`, each with its certificate and key); each `--listen` adds an `smtp` listener
//! without TLS; with neither, it listens on 127.0.0.1:2525. Who may relay is the `[server]`
//! section's business (sendmail's access file, `mynetworks`; with neither, loopback clients
//! only), AUTH checks its password file; see `postrider::server::config`. It may listen on any
//! address: a listener that nothing allows to relay relays for nobody.
//!
//! `250 2.0.0 OK queued as ID` is sent only after the engine holds the message. SIGHUP
//! re-reads the mailertable, local-host-names, the policy file, the access file, the password
//! file and every listener's certificate; a file with errors is refused (logged) and what was
//! in use stays in use. SIGINT or SIGTERM stops taking connections, says `421` to the
//! sessions at their next command, and shuts the engine down. Log lines go to stderr
//! (`RUST_LOG`, default `info`). Exit status (sysexits.h): 64 bad arguments, 78 configuration
//! error (a file, line and what is wrong; an unreadable certificate names the file), 71 cannot
//! listen or open the spool.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use postrider::config::{Assembly, Config};
use postrider::server::auth::Authenticator;
use postrider::server::passwd::PasswordFile;
use postrider::server::{Endpoint, ListenerKind, Server, ServerTls, serve};
use tokio::net::TcpListener;
use tokio::sync::watch;

const EX_USAGE: u8 = 64;
const EX_OSERR: u8 = 71;
const EX_CONFIG: u8 = 78;

const DEFAULT_CONFIG: &str = "/etc/postrider/postrider.toml";
const DEFAULT_LISTEN: &str = "127.0.0.1:2525";
const USAGE: &str = "usage: relay [-C CONFIG] [--listen ADDRESS:PORT]...";

struct Args {
    config: PathBuf,
    listen: Vec<SocketAddr>,
}

fn parse_args(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut config = PathBuf::from(DEFAULT_CONFIG);
    let mut listen = Vec::new();
    while let Some(arg) = argv.next() {
        let value = match arg.as_str() {
            "-C" => {
                config = argv.next().ok_or("option -C needs a file name")?.into();
                continue;
            }
            "--listen" => argv.next().ok_or("option --listen needs ADDRESS:PORT")?,
            other => {
                if let Some(file) = other.strip_prefix("-C") {
                    config = file.into();
                    continue;
                }
                match other.strip_prefix("--listen=") {
                    Some(a) => a.to_string(),
                    None => return Err(format!("unknown argument {other:?}")),
                }
            }
        };
        listen.push(value.parse().map_err(|_| {
            format!("--listen {value:?} is not ADDRESS:PORT (e.g. 127.0.0.1:2525)")
        })?);
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

/// One listener to open: where, and its endpoint (kind, TLS).
struct Listen {
    address: SocketAddr,
    endpoint: Endpoint,
}

/// What SIGHUP re-reads.
struct Reloadable {
    config: Config,
    parts: Arc<Assembly>,
    server: Server,
    passwords: Option<Arc<PasswordFile>>,
    certificates: Vec<Arc<ServerTls>>,
}

fn config_error(e: &dyn std::fmt::Display) -> ExitCode {
    for line in e.to_string().lines() {
        eprintln!("relay: {line}");
    }
    ExitCode::from(EX_CONFIG)
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
    // Everything the listeners need is read before anything starts: a bad file is a clean
    // configuration error, not a half-started daemon.
    let policy = match config.server.relay_policy() {
        Ok(p) => p,
        Err(e) => return config_error(&e),
    };
    let passwords = match config.server.password_file() {
        Ok(p) => p.map(Arc::new),
        Err(e) => return config_error(&e),
    };
    let mut listens = Vec::new();
    let mut certificates = Vec::new();
    for l in &config.listener {
        let tls = match l.tls() {
            Ok(t) => t,
            Err(e) => return config_error(&e),
        };
        certificates.extend(tls.clone());
        listens.push(Listen {
            address: l.address,
            endpoint: l.endpoint(tls),
        });
    }
    for address in &args.listen {
        listens.push(Listen {
            address: *address,
            endpoint: Endpoint::new(ListenerKind::Smtp),
        });
    }
    if listens.is_empty() {
        listens.push(Listen {
            address: DEFAULT_LISTEN
                .parse()
                .expect("invariant: the default address parses"),
            endpoint: Endpoint::new(ListenerKind::Smtp),
        });
    }

    if let Some(address) = config.metrics.listen {
        // GET /metrics in Prometheus's format: what postrider records through `metrics`.
        let exporter = metrics_exporter_prometheus::PrometheusBuilder::new();
        if let Err(e) = exporter.with_http_listener(address).install() {
            eprintln!("relay: cannot serve metrics on {address}: {e}");
            return ExitCode::from(EX_OSERR);
        }
    }
    let spool = match config.open_spool().await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("relay: {e}");
            return ExitCode::from(EX_OSERR);
        }
    };
    let server_limits = config.server.limits.to_limits();
    // The engine's own limit leaves room for the Received: field the server adds.
    let mut limits = parts.limits().clone();
    limits.max_message_size = limits
        .max_message_size
        .max(server_limits.max_message_size + 16 * 1024);
    let router = parts.router().clone();
    // A daemon: the periodic queue rescans and the shutdown grace of `[queue]`, and the
    // session cache of `[esmtp]`.
    let engine = match parts.engine_builder(spool).limits(limits).start().await {
        Ok(e) => e,
        Err(e) => {
            eprintln!("relay: {e}");
            return ExitCode::from(EX_OSERR);
        }
    };
    let mut builder = Server::builder(engine.clone(), router.clone(), hostname.clone())
        .relay_policy(policy)
        .limits(server_limits)
        .received_auth_header(config.server.received_auth_header);
    builder = builder.resolver(Arc::new(parts.dns().clone()));
    if let Some(p) = &passwords {
        builder = builder.authenticator(p.clone() as Arc<dyn Authenticator>);
    }
    let server = builder.build();

    let mut bound = Vec::new();
    for l in listens {
        match TcpListener::bind(l.address).await {
            Ok(listener) => bound.push((listener, l)),
            Err(e) => {
                eprintln!("relay: cannot listen on {}: {e}", l.address);
                engine.shutdown().await;
                return ExitCode::from(EX_OSERR);
            }
        }
    }
    tokio::spawn(reload_on_hangup(Reloadable {
        config: config.clone(),
        parts: parts.clone(),
        server: server.clone(),
        passwords,
        certificates,
    }));
    let (stop, stopped) = watch::channel(false);
    let mut tasks = Vec::new();
    for (listener, l) in bound {
        tracing::info!(
            target: "postrider::relay",
            "listening on {} ({}{}) as {hostname}",
            l.address,
            l.endpoint.kind(),
            if l.endpoint.tls().is_some() { ", TLS" } else { "" }
        );
        let mut stopped = stopped.clone();
        tasks.push(tokio::spawn(serve(
            listener,
            server.clone(),
            l.endpoint,
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            },
        )));
    }
    stop_signal().await;
    tracing::info!(target: "postrider::relay", "stopping: no new connections; sessions end, then the queue engine");
    let _ = stop.send(true);
    for t in tasks {
        let _ = t.await;
    }
    engine.shutdown().await;
    ExitCode::SUCCESS
}

/// On SIGHUP, as `postfix reload` or a HUP to sendmail. Each file is read whole first; one
/// with errors is refused with the reason logged, and what was in use stays in use.
async fn reload_on_hangup(r: Reloadable) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        tracing::warn!(target: "postrider::relay", "cannot catch SIGHUP: no reloading");
        return;
    };
    while hangup.recv().await.is_some() {
        // The router and the transport log their own outcome.
        match r.parts.reload(&r.config) {
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
        match r.config.server.relay_policy() {
            Ok(p) => {
                r.server.set_relay_policy(p);
                tracing::info!(target: "postrider::relay", "access control reloaded");
            }
            Err(e) => tracing::error!(
                target: "postrider::relay",
                "access control not reloaded, the previous one stays in use: {e}"
            ),
        }
        if let Some(p) = &r.passwords {
            match p.reload() {
                Ok(n) => {
                    tracing::info!(target: "postrider::relay", "password file reloaded: {n} users")
                }
                Err(e) => tracing::error!(
                    target: "postrider::relay",
                    "password file not reloaded, the previous one stays in use: {e}"
                ),
            }
        }
        for tls in &r.certificates {
            match tls.reload() {
                Ok(()) => {
                    tracing::info!(target: "postrider::relay", "certificate {} reloaded", tls.certificate_file().display())
                }
                Err(e) => tracing::error!(
                    target: "postrider::relay",
                    "certificate not reloaded, the previous one stays in use: {e}"
                ),
            }
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
