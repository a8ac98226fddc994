//! `port25`: can this host reach a mail server on port 25? Many home, mobile and cloud
//! networks block it, and mail then sits in the queue with "Connection timed out" for days:
//! the seed case of every smart-host how-to.
//!
//! The check connects to the probe domain's first MX within a short timeout, waits (as long
//! again) for its greeting, and says QUIT. A host that cannot be reached at all (no route, an
//! address family this host lacks) is skipped for the next address; a refusal or a timeout
//! ends the check, since a block applies to every address alike.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};

use super::finding::duration;
use super::{Check, Doctor, Finding, Verdict, no_dns};
use crate::address::Domain;
use crate::resolve::{Resolver, resolve_mx_addresses};
use crate::status::Reply;
use crate::transport::esmtp::parse_reply;

/// Unreachable addresses tried before giving up.
const MAX_ATTEMPTS: usize = 4;

/// What the check found, and this host's address on the connection (for SPF).
pub(crate) struct Outcome {
    pub findings: Vec<Finding>,
    pub local: Option<(IpAddr, String)>,
}

/// How one attempt ended.
enum Attempt {
    Greeted(Reply),
    ConnectTimeout,
    Refused,
    Unreachable(io::Error),
    ConnectError(io::Error),
    NoGreeting,
    Dropped,
    Garbled(String),
}

pub(crate) async fn check(d: &Doctor) -> Outcome {
    let mut out = Outcome {
        findings: Vec::new(),
        local: None,
    };
    let Some(domain) = &d.options.probe_domain else {
        return out;
    };
    let dns = match &d.dns {
        Ok(dns) => dns,
        Err(e) => {
            out.findings.push(no_dns(Check::Port25, e));
            return out;
        }
    };
    let port = d.options.smtp_port;
    let limit = d.options.port25_timeout;
    let exchangers = match resolve_mx_addresses(dns as &dyn Resolver, domain).await {
        Ok(list) => list,
        Err(e) if e.is_temporary() => {
            out.findings.push(
                Finding::fail(
                    Check::Port25,
                    format!("cannot look up the mail servers of {domain}: {e}"),
                )
                .with_fix(
                    "check that the name servers answer ([dns] name_servers in postrider.toml, \
                     or /etc/resolv.conf): mail cannot go anywhere without DNS",
                ),
            );
            return out;
        }
        Err(e) => {
            out.findings.push(
                Finding::warn(
                    Check::Port25,
                    format!("not checked: {domain} has no usable mail server: {e}"),
                )
                .with_fix("probe a domain that receives mail (e.g. gmail.com)"),
            );
            return out;
        }
    };
    let targets = exchangers
        .iter()
        .flat_map(|(mx, addrs)| addrs.iter().map(move |ip| (&mx.host, *ip)))
        .take(MAX_ATTEMPTS);
    let mut last = None;
    for (host, ip) in targets {
        let target = SocketAddr::new(ip, port);
        let shown = format!("{host} [{ip}]{}", port_suffix(port));
        let (attempt, local) = attempt(target, limit).await;
        if let Some(local) = local {
            out.local = Some((local, format!("the connection to {shown}")));
        }
        if let Attempt::Unreachable(_) = attempt {
            last = Some((shown, attempt));
            continue;
        }
        out.findings.push(judge(d, domain, &shown, attempt, local));
        return out;
    }
    if let Some((shown, attempt)) = last {
        out.findings.push(judge(d, domain, &shown, attempt, None));
    }
    out
}

/// Connects, reads the greeting, says QUIT. Returns our end's address when connected.
async fn attempt(target: SocketAddr, limit: Duration) -> (Attempt, Option<IpAddr>) {
    let stream = match timeout(limit, TcpStream::connect(target)).await {
        Err(_) => return (Attempt::ConnectTimeout, None),
        Ok(Err(e)) => {
            let attempt = match e.kind() {
                io::ErrorKind::ConnectionRefused => Attempt::Refused,
                io::ErrorKind::HostUnreachable
                | io::ErrorKind::NetworkUnreachable
                | io::ErrorKind::AddrNotAvailable => Attempt::Unreachable(e),
                _ => Attempt::ConnectError(e),
            };
            return (attempt, None);
        }
        Ok(Ok(s)) => s,
    };
    let local = stream.local_addr().ok().map(|a| a.ip());
    (greeting(stream, limit).await, local)
}

async fn greeting(mut stream: TcpStream, limit: Duration) -> Attempt {
    let deadline = Instant::now() + limit;
    let mut buf = Vec::new();
    loop {
        match parse_reply(&buf) {
            Ok(Some((reply, _))) => {
                // Best effort: the verdict is known, a slow goodbye must not delay it.
                let bye = async {
                    stream.write_all(b"QUIT\r\n").await?;
                    stream.shutdown().await
                };
                let _ = timeout(Duration::from_millis(500), bye).await;
                return Attempt::Greeted(reply);
            }
            Ok(None) => {}
            Err(e) => return Attempt::Garbled(e.to_string()),
        }
        let mut chunk = [0u8; 1024];
        match timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return Attempt::NoGreeting,
            Ok(Ok(0)) | Ok(Err(_)) => return Attempt::Dropped,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn judge(
    d: &Doctor,
    domain: &Domain,
    shown: &str,
    attempt: Attempt,
    local: Option<IpAddr>,
) -> Finding {
    let port = d.options.smtp_port;
    let limit = duration(d.options.port25_timeout);
    let (detail, cause) = match attempt {
        Attempt::Greeted(reply) if reply.is_positive() => {
            return Finding::pass(
                Check::Port25,
                format!(
                    "outbound port {port} to {shown} (MX of {domain}) works: {}",
                    reply.one_line()
                ),
            );
        }
        Attempt::Greeted(reply) => {
            let verdict = if reply.is_permanent() {
                Verdict::Fail
            } else {
                Verdict::Warn
            };
            let from = local.map(|ip| format!(" ({ip})")).unwrap_or_default();
            let detail = format!(
                "outbound port {port} works, but {shown} (MX of {domain}) refuses this host: {}",
                reply.one_line()
            );
            let fix = format!(
                "this host's address{from} is probably on a blocklist (home and mobile \
                 addresses are listed as dynamic): {}",
                smart_host_advice(d)
            );
            return Finding::new(Check::Port25, soften(d, verdict), detail).with_fix(fix);
        }
        Attempt::ConnectTimeout => (
            format!("outbound port {port} to {shown} (MX of {domain}) timed out after {limit}"),
            "your provider probably blocks it",
        ),
        Attempt::Refused => (
            format!("outbound port {port} to {shown} (MX of {domain}): connection refused"),
            "a firewall (this host's or your provider's) probably refuses it",
        ),
        Attempt::NoGreeting => (
            format!(
                "outbound port {port} to {shown} (MX of {domain}) connected, but no greeting \
                 came within {limit}"
            ),
            "something in between (your provider's filter, a firewall) probably holds it",
        ),
        Attempt::Dropped => (
            format!(
                "outbound port {port} to {shown} (MX of {domain}) connected, but the \
                 connection was closed before the greeting"
            ),
            "something in between (your provider's filter, a firewall) probably cuts it",
        ),
        Attempt::Garbled(e) => (
            format!(
                "outbound port {port} to {shown} (MX of {domain}) answered with something \
                 that is not SMTP: {e}"
            ),
            "something in between (a proxy, a captive portal) probably intercepts it",
        ),
        Attempt::Unreachable(e) | Attempt::ConnectError(e) => (
            format!("outbound port {port} to {shown} (MX of {domain}) failed: {e}"),
            "this host has no working route to the mail servers",
        ),
    };
    Finding::new(Check::Port25, soften(d, Verdict::Fail), detail)
        .with_fix(format!("{cause}; {}", smart_host_advice(d)))
}

/// With a smart host, mail leaves through it: port 25 matters only for mailertable entries
/// that deliver straight to an MX.
fn soften(d: &Doctor, verdict: Verdict) -> Verdict {
    if d.has_smart_host() {
        verdict.min(Verdict::Warn)
    } else {
        verdict
    }
}

fn smart_host_advice(d: &Doctor) -> String {
    match &d.config.smart_host {
        Some(smart) => format!(
            "mail without a mailertable route goes through your smart host {}, so only \
             mailertable entries that deliver straight to an MX are affected: route them \
             through the smart host too",
            display_hops(smart)
        ),
        None => format!(
            "set smart_host = \"[smtp.gmail.com]:587\" (or your provider's submission server) \
             in {}, with credentials in the policy file{}",
            d.config_file(),
            match &d.config.policy {
                Some(p) => format!(" ({})", p.display()),
                None => " (policy = \"tls-policy\")".to_string(),
            }
        ),
    }
}

fn display_hops(smart: &crate::route::SmartHost) -> String {
    crate::route::display_hops(smart.hops())
}

fn port_suffix(port: u16) -> String {
    if port == 25 {
        String::new()
    } else {
        format!(":{port}")
    }
}
