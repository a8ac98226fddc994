//! A sendmail-compatible command line on postrider's public API.
//!
//! ```text
//! sendmail [-C CONFIG] -bv ADDRESS...
//! ```
//!
//! `-bv` prints, for each address, one line saying how it routes and which rule decided:
//!
//! ```text
//! user@gmail.com: mailer=esmtp host=[smtp.gmail.com] port=587 mx=no rule=mailertable:gmail.com (line 3)
//! aaa@ourtest.com: mailer=local user=aaa rule=local-host-names
//! ```
//!
//! An address without `@` is qualified with the host name, as sendmail does. Exit status
//! (sysexits.h): 0 when every address routes; 67 (EX_NOUSER) when an address gets an error
//! route; 65 (EX_DATAERR) for a malformed address (the first failing address decides); 64
//! (EX_USAGE) for bad arguments; 78 (EX_CONFIG) when the configuration, the mailertable,
//! local-host-names or the policy file has an error.
//!
//! The configuration defaults to `/etc/postrider/postrider.toml`. More modes (`-t`, `-f`, `-bp`,
//! `-q`, `-qR...`) come with the engine; the argument parser below is shaped for them.

use std::path::PathBuf;
use std::process::ExitCode;

use postrider::Address;
use postrider::config::Config;

const EX_USAGE: u8 = 64;
const EX_DATAERR: u8 = 65;
const EX_NOUSER: u8 = 67;
const EX_CONFIG: u8 = 78;

const DEFAULT_CONFIG: &str = "/etc/postrider/postrider.toml";
const USAGE: &str = "usage: sendmail [-C CONFIG] -bv ADDRESS...";

/// What the command is asked to do (sendmail's `-b` modes and friends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `-bv`: verify addresses, print their routes.
    Verify,
}

#[derive(Debug)]
struct Args {
    config: PathBuf,
    mode: Option<Mode>,
    /// Operands: recipient addresses.
    addresses: Vec<String>,
}

/// sendmail's flags glue their values (`-Cfile`, `-bv`, `-qR...`) or take the next argument
/// (`-C file`), which a general-purpose parser does not model; this one walks the list by hand.
fn parse_args(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut args = Args {
        config: PathBuf::from(DEFAULT_CONFIG),
        mode: None,
        addresses: Vec::new(),
    };
    while let Some(arg) = argv.next() {
        if arg == "--" {
            args.addresses.extend(argv.by_ref());
            break;
        }
        let Some(flag) = arg.strip_prefix('-').filter(|f| !f.is_empty()) else {
            args.addresses.push(arg);
            continue;
        };
        let (letter, glued) = flag.split_at(1);
        match letter {
            "C" => {
                let value = if glued.is_empty() {
                    argv.next().ok_or("option -C needs a file name")?
                } else {
                    glued.to_string()
                };
                args.config = PathBuf::from(value);
            }
            "b" => {
                args.mode = Some(match glued {
                    "v" => Mode::Verify,
                    "" => return Err("option -b needs a mode letter (-bv)".into()),
                    other => return Err(format!("mode -b{other} is not supported yet")),
                })
            }
            _ => return Err(format!("option -{flag} is not supported yet")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("sendmail: {e}\n{USAGE}");
            return ExitCode::from(EX_USAGE);
        }
    };
    match args.mode {
        Some(Mode::Verify) => verify(&args),
        None => {
            eprintln!("sendmail: only -bv is implemented so far\n{USAGE}");
            ExitCode::from(EX_USAGE)
        }
    }
}

fn print_lines(prefix: &str, message: &dyn std::fmt::Display) {
    for line in message.to_string().lines() {
        eprintln!("sendmail: {prefix}{line}");
    }
}

fn verify(args: &Args) -> ExitCode {
    if args.addresses.is_empty() {
        eprintln!("sendmail: -bv needs at least one address\n{USAGE}");
        return ExitCode::from(EX_USAGE);
    }
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            print_lines("", &e);
            return ExitCode::from(EX_CONFIG);
        }
    };
    let router = match config.build_router() {
        Ok((router, warnings)) => {
            for w in &warnings {
                print_lines("warning: ", w);
            }
            router
        }
        Err(e) => {
            print_lines("", &e);
            return ExitCode::from(EX_CONFIG);
        }
    };
    // The policy does not change routes, but a broken one is a broken configuration.
    match config.load_policy() {
        Ok((_, warnings)) => {
            for w in &warnings {
                print_lines("warning: ", w);
            }
        }
        Err(e) => {
            print_lines("", &e);
            return ExitCode::from(EX_CONFIG);
        }
    }
    let hostname = config.hostname();
    let mut status = 0;
    for raw in &args.addresses {
        let qualified = match (&hostname, raw.contains('@')) {
            (Some(h), false) => format!("{raw}@{h}"),
            _ => raw.clone(),
        };
        let failed = match Address::parse(&qualified) {
            Ok(address) => {
                let explanation = router.explain(&address);
                println!("{explanation}");
                explanation.is_reject().then_some(EX_NOUSER)
            }
            Err(e) => {
                println!("{raw}: bad address: {e}");
                Some(EX_DATAERR)
            }
        };
        if let (0, Some(code)) = (status, failed) {
            status = code;
        }
    }
    ExitCode::from(status)
}
