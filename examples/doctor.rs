//! `doctor`: checks a postrider configuration against the world and says what to fix.
//!
//! ```text
//! doctor [-C CONFIG] [--probe-domain DOMAIN|none] [--smtp-port PORT] [--timeout DURATION]
//!        [--hosts-file FILE]
//! ```
//!
//! It reads the configuration (`-C`, default `/etc/postrider/postrider.toml`), runs every
//! check of [`postrider::doctor`], and prints one line per finding, with the fix indented
//! below:
//!
//! ```text
//! FAIL  hostname: unable to qualify my own domain name (sipserver1): receivers refuse mail whose EHLO name is a single label
//!       fix: add "192.168.10.10 sipserver1.ourtest.com sipserver1" to /etc/hosts or set the hostname (hostname = "sipserver1.ourtest.com" in /etc/postrider/postrider.toml)
//! FAIL  spf: SPF for ourtest.com does not authorise 203.0.113.5 (spf=fail): receivers refuse its mail
//!       fix: add "ip4:203.0.113.5" to the TXT record of ourtest.com: "v=spf1 include:_spf.google.com ip4:203.0.113.5 -all", or send through a smart host
//! FAIL  port25: outbound port 25 to gmail-smtp-in.l.google.com [142.250.102.27] (MX of gmail.com) timed out after 3s
//!       fix: your provider probably blocks it; set smart_host = "[smtp.gmail.com]:587" (or your provider's submission server) in /etc/postrider/postrider.toml, with credentials in the policy file (policy = "tls-policy")
//! PASS  mailertable: /etc/postrider/mailertable parses (4 entries)
//! PASS  policy: /etc/postrider/tls-policy parses (2 entries, with credentials)
//! PASS  spool: spool /var/spool/postrider is writable and fsync works there (3 ms to write, fsync, rename and fsync the directory)
//! doctor: 3 passed, 0 warnings, 3 failed
//! ```
//!
//! Options:
//! - `--probe-domain DOMAIN`: the domain whose MX the port-25 check connects to (default
//!   `gmail.com`); `none` skips that check.
//! - `--smtp-port PORT`: the port of that check (default 25; other ports are for testing
//!   and for firewalls that redirect).
//! - `--timeout DURATION`: how long the port-25 check waits to connect, then for the greeting
//!   (default `3s`).
//! - `--hosts-file FILE`: the hosts file the host name check reads (default `/etc/hosts`).
//!
//! Exit status: 0 when nothing failed (warnings allowed), 1 when a check failed, 64
//! (EX_USAGE) for bad arguments, 78 (EX_CONFIG) when the configuration file cannot be read or
//! parsed (errors in the mailertable or the policy file are findings: exit 1).
//!
//! `sendmail -bD` can run the same checks in one line:
//! `for f in Doctor::new(config).run().await { println!("{f}") }`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use postrider::Domain;
use postrider::config::{Config, parse_duration};
use postrider::doctor::{Doctor, DoctorOptions, Verdict};
use postrider::resolve::HostnameSources;

const EX_USAGE: u8 = 64;
const EX_CONFIG: u8 = 78;

const DEFAULT_CONFIG: &str = "/etc/postrider/postrider.toml";
const DEFAULT_PROBE_DOMAIN: &str = "gmail.com";
const USAGE: &str = "usage: doctor [-C CONFIG] [--probe-domain DOMAIN|none] [--smtp-port PORT] \
                     [--timeout DURATION] [--hosts-file FILE]";

#[derive(Debug)]
struct Args {
    config: PathBuf,
    probe_domain: Option<Domain>,
    smtp_port: u16,
    timeout: Duration,
    hosts_file: Option<PathBuf>,
}

fn parse_args(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let defaults = DoctorOptions::default();
    let mut args = Args {
        config: PathBuf::from(DEFAULT_CONFIG),
        probe_domain: Some(
            Domain::parse(DEFAULT_PROBE_DOMAIN).map_err(|e| format!("invariant: {e}"))?,
        ),
        smtp_port: defaults.smtp_port,
        timeout: defaults.port25_timeout,
        hosts_file: None,
    };
    while let Some(arg) = argv.next() {
        let (flag, glued) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| {
            glued
                .clone()
                .or_else(|| argv.next())
                .ok_or_else(|| format!("option {name} needs a value"))
        };
        match flag.as_str() {
            "-C" => args.config = PathBuf::from(value("-C")?),
            f if f.starts_with("-C") => args.config = PathBuf::from(&f[2..]),
            "--probe-domain" => {
                let v = value("--probe-domain")?;
                args.probe_domain = if v == "none" {
                    None
                } else {
                    Some(
                        Domain::parse(&v)
                            .map_err(|e| format!("--probe-domain {v:?} is not a domain: {e}"))?,
                    )
                };
            }
            "--smtp-port" => {
                let v = value("--smtp-port")?;
                args.smtp_port = v
                    .parse()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("--smtp-port {v:?} is not a port (1-65535)"))?;
            }
            "--timeout" => {
                let v = value("--timeout")?;
                args.timeout = parse_duration(&v).map_err(|e| format!("--timeout: {e}"))?;
                if args.timeout.is_zero() {
                    return Err("--timeout must be more than zero".into());
                }
            }
            "--hosts-file" => args.hosts_file = Some(PathBuf::from(value("--hosts-file")?)),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> ExitCode {
    if std::env::args().skip(1).any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("doctor: {e}\n{USAGE}");
            return ExitCode::from(EX_USAGE);
        }
    };
    // Relative paths in the configuration are relative to its folder: make that folder
    // absolute, so findings name files an operator can find from anywhere.
    let file = std::path::absolute(&args.config).unwrap_or(args.config);
    let config = match Config::load(&file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("doctor: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let mut doctor = Doctor::new(config).with_options(DoctorOptions {
        probe_domain: args.probe_domain,
        smtp_port: args.smtp_port,
        port25_timeout: args.timeout,
        ..DoctorOptions::default()
    });
    if let Some(hosts) = args.hosts_file {
        let mut sources = HostnameSources::system(None);
        sources.hosts_file = hosts;
        doctor = doctor.with_hostname_sources(&sources);
    }

    let findings = doctor.run().await;
    for finding in &findings {
        println!("{finding}");
    }
    let count = |v: Verdict| findings.iter().filter(|f| f.verdict == v).count();
    let (passed, warned, failed) = (
        count(Verdict::Pass),
        count(Verdict::Warn),
        count(Verdict::Fail),
    );
    println!(
        "doctor: {passed} passed, {warned} warning{}, {failed} failed",
        if warned == 1 { "" } else { "s" }
    );
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
