//! The receiving daemon as `relay` and `sendmail -bd` run it: `postrider::server::daemon`
//! plus what a program adds around it — log lines on stderr, SIGHUP to reload, SIGINT or
//! SIGTERM to stop, exit codes (sysexits.h), and `[metrics] listen` (`GET /metrics` for
//! Prometheus).

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use postrider::config::Config;
use postrider::server::daemon::{Daemon, Reloader};
use tokio::signal::unix::{Signal, SignalKind, signal};

const EX_OSERR: u8 = 71;
const EX_CONFIG: u8 = 78;

/// Runs the daemon `config` describes, plus an `smtp` listener on each of `listen`; with
/// `scan_interval`, the queue is re-read that often (`sendmail -bd -q15m`). Returns when it
/// was stopped (0), or could not start: 78 for a file to fix (its name, line and what is
/// wrong on stderr), 71 for the machine (the spool, a port).
pub fn main(
    program: &'static str,
    config: &Path,
    listen: &[SocketAddr],
    scan_interval: Option<Duration>,
) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person watching: a log file or journald gets plain lines.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let mut config = match Config::load(config) {
        Ok(c) => c,
        Err(e) => return error(program, &e, EX_CONFIG),
    };
    if let Some(interval) = scan_interval {
        config.queue.scan_interval = Some(interval);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            return error(
                program,
                &format!("cannot start the async runtime: {e}"),
                EX_OSERR,
            );
        }
    };
    runtime.block_on(async {
        // Caught from before the listeners are bound: a signal sent as soon as the port
        // answers must not find the default action (which ends the process) still in place.
        let hangup = signal(SignalKind::hangup());
        let stop = stop_signal();
        if let Some(address) = config.metrics.listen {
            // GET /metrics in Prometheus's format: what postrider records through `metrics`.
            let exporter = metrics_exporter_prometheus::PrometheusBuilder::new();
            if let Err(e) = exporter.with_http_listener(address).install() {
                return error(
                    program,
                    &format!("cannot serve metrics on {address}: {e}"),
                    EX_OSERR,
                );
            }
        }
        let daemon = match Daemon::start(config, listen).await {
            Ok(d) => d,
            Err(e) => {
                let code = if e.is_configuration() { EX_CONFIG } else { EX_OSERR };
                return error(program, &e, code);
            }
        };
        for w in daemon.warnings() {
            eprintln!("{program}: warning: {w}");
        }
        match hangup {
            Ok(hangup) => {
                tokio::spawn(reload_on_hangup(hangup, daemon.reloader()));
            }
            Err(e) => tracing::warn!(target: "postrider::daemon", "cannot catch SIGHUP ({e}): no reloading"),
        }
        daemon.run(stop).await;
        ExitCode::SUCCESS
    })
}

fn error(program: &str, e: &dyn std::fmt::Display, code: u8) -> ExitCode {
    for line in e.to_string().lines() {
        eprintln!("{program}: {line}");
    }
    ExitCode::from(code)
}

/// On SIGHUP, as `postfix reload` or a HUP to sendmail (the reloader logs each file).
async fn reload_on_hangup(mut hangup: Signal, reloader: Reloader) {
    while hangup.recv().await.is_some() {
        reloader.reload();
    }
}

/// SIGINT or SIGTERM. Both handlers are installed when this is called, not when the future
/// is first polled.
fn stop_signal() -> impl std::future::Future<Output = ()> {
    let term = signal(SignalKind::terminate());
    let interrupt = signal(SignalKind::interrupt());
    async move {
        match (term, interrupt) {
            (Ok(mut term), Ok(mut interrupt)) => {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = term.recv() => {}
                }
            }
            (Ok(mut term), Err(_)) => {
                term.recv().await;
            }
            (Err(_), _) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}
