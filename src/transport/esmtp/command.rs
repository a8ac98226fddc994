//! The MAIL FROM and RCPT TO command lines, with the ESMTP parameters the server supports.

use std::fmt::Write as _;

use super::ehlo::Capabilities;
use crate::envelope::{BodyType, Envelope, Recipient, xtext_encode};

/// `MAIL FROM:<sender>` with SIZE, BODY=8BITMIME, SMTPUTF8, REQUIRETLS, RET and ENVID as
/// announced.
///
/// A parameter the server did not announce is left out: sending it would get the command
/// refused (RFC 5321 §4.1.1.11).
pub fn mail_from(env: &Envelope, size: usize, caps: &Capabilities) -> String {
    let mut line = format!("MAIL FROM:{}", env.sender);
    if caps.size.is_some() {
        let _ = write!(line, " SIZE={size}");
    }
    if env.body == BodyType::EightBitMime && caps.eight_bit_mime {
        line.push_str(" BODY=8BITMIME");
    }
    if env.needs_smtputf8() && caps.smtputf8 {
        line.push_str(" SMTPUTF8");
    }
    // Only ever sent over a session the transport has checked (see deliver.rs): RFC 8689
    // §4.2.1 forbids relaying a REQUIRETLS message any other way.
    if env.requiretls && caps.requiretls {
        line.push_str(" REQUIRETLS");
    }
    if caps.dsn {
        if let Some(ret) = env.ret {
            let _ = write!(line, " RET={ret}");
        }
        if let Some(envid) = &env.envid {
            let _ = write!(line, " ENVID={}", xtext_encode(envid));
        }
    }
    line
}

/// `RCPT TO:<address>` with NOTIFY and ORCPT when the server supports DSN.
pub fn rcpt_to(rcpt: &Recipient, caps: &Capabilities) -> String {
    let mut line = format!("RCPT TO:<{}>", rcpt.address);
    if caps.dsn {
        if let Some(notify) = rcpt.notify {
            let _ = write!(line, " NOTIFY={notify}");
        }
        if let Some(orcpt) = &rcpt.orcpt {
            let _ = write!(line, " ORCPT={}", orcpt.to_xtext());
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::{Address, ReversePath};
    use crate::envelope::{Notify, OriginalRecipient, Ret};

    fn envelope() -> Envelope {
        let mut env = Envelope::new(
            ReversePath::parse("pbx@example.com").unwrap(),
            [Address::parse("alice@example.org").unwrap()],
        );
        env.ret = Some(Ret::Hdrs);
        env.envid = Some("QID 1+2".into());
        env.body = BodyType::EightBitMime;
        env.recipients[0].notify = Some(Notify {
            success: true,
            failure: true,
            delay: false,
        });
        env.recipients[0].orcpt = Some(OriginalRecipient::rfc822(&env.recipients[0].address));
        env
    }

    fn full_caps() -> Capabilities {
        Capabilities {
            size: Some(0),
            eight_bit_mime: true,
            smtputf8: true,
            dsn: true,
            ..Capabilities::default()
        }
    }

    #[test]
    fn every_supported_parameter_is_sent() {
        let env = envelope();
        assert_eq!(
            mail_from(&env, 1234, &full_caps()),
            "MAIL FROM:<pbx@example.com> SIZE=1234 BODY=8BITMIME RET=HDRS ENVID=QID+201+2B2"
        );
        assert_eq!(
            rcpt_to(&env.recipients[0], &full_caps()),
            "RCPT TO:<alice@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;alice@example.org"
        );
    }

    #[test]
    fn a_server_without_extensions_gets_bare_commands() {
        let env = envelope();
        let none = Capabilities::default();
        assert_eq!(mail_from(&env, 1234, &none), "MAIL FROM:<pbx@example.com>");
        assert_eq!(
            rcpt_to(&env.recipients[0], &none),
            "RCPT TO:<alice@example.org>"
        );
    }

    #[test]
    fn the_null_sender_and_smtputf8_are_written_as_rfc_6531_says() {
        let env = Envelope::new(
            ReversePath::Null,
            [Address::parse("jösé@example.org").unwrap()],
        );
        assert_eq!(
            mail_from(&env, 10, &full_caps()),
            "MAIL FROM:<> SIZE=10 SMTPUTF8"
        );
    }
}
