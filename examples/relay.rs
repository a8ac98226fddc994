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

#[path = "common/daemon.rs"]
mod daemon;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

const EX_USAGE: u8 = 64;

const DEFAULT_CONFIG: &str = "/etc/postrider/postrider.toml";
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
    match parse_args(std::env::args().skip(1)) {
        Ok(args) => daemon::main("relay", &args.config, &args.listen, None),
        Err(e) => {
            eprintln!("relay: {e}\n{USAGE}");
            ExitCode::from(EX_USAGE)
        }
    }
}
