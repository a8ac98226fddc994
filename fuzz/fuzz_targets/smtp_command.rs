//! Feeds arbitrary bytes to the server's SMTP command parser as one command line, and checks
//! the contract the session relies on: no panic, a parsed command is consistent with the
//! line, and every refusal is a well-formed reply a client can read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postrider::server::command::{Command, ForwardPath, parse_command};

fuzz_target!(|line: &[u8]| {
    match parse_command(line) {
        Ok(cmd) => check_command(line, &cmd),
        Err(e) => {
            let reply = e.reply();
            assert!((500..600).contains(&reply.code()), "{reply:?}");
            let text = reply.one_line();
            // Client bytes echoed back must never break the reply line.
            assert!(!text.contains(['\r', '\n']), "{text:?}");
            assert!(!text.chars().any(char::is_control), "{text:?}");
            assert!(text.len() < 1024, "{} octets", text.len());
        }
    }
});

fn check_command(line: &[u8], cmd: &Command) {
    let text = std::str::from_utf8(line).expect("only UTF-8 lines parse");
    let verb = text.split(' ').next().unwrap_or("");
    assert!(verb.eq_ignore_ascii_case(cmd.verb()), "{verb:?} parsed as {}", cmd.verb());
    match cmd {
        Command::Ehlo(name) | Command::Helo(name) => {
            assert!(!name.is_empty() && !name.contains(' '));
        }
        Command::Mail { from, params } => {
            // What was parsed prints as an address that parses to itself.
            if let Some(a) = from.address() {
                assert_eq!(&postrider::Address::parse(&a.to_string()).expect("round trip"), a);
            }
            if let Some(e) = &params.envid {
                assert!(e.len() <= 100);
            }
            // REQUIRETLS is set only by a bare keyword the line carries (RFC 8689 §2).
            if params.requiretls {
                assert!(
                    text.split(' ').any(|w| w.eq_ignore_ascii_case("REQUIRETLS")),
                    "REQUIRETLS set from {text:?}"
                );
            }
        }
        Command::Rcpt { to, .. } => {
            if let ForwardPath::Mailbox(a) = to {
                assert_eq!(&postrider::Address::parse(&a.to_string()).expect("round trip"), a);
            }
        }
        Command::Bdat { size, .. } => {
            assert!(text.contains(&size.to_string()));
        }
        _ => {}
    }
}
