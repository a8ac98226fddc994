//! Unit tests of `command`.

use super::*;

fn code(line: &str) -> String {
    match parse_command(line.as_bytes()) {
        Ok(c) => c.verb().to_string(),
        Err(e) => {
            let r = e.reply();
            format!("{} {}", r.code(), r.status())
        }
    }
}

#[test]
fn verbs_are_case_insensitive_and_arguments_checked() {
    assert_eq!(
        parse_command(b"ehlo client.example"),
        Ok(Command::Ehlo("client.example".into()))
    );
    assert_eq!(parse_command(b"HELO x junk"), Ok(Command::Helo("x".into())));
    assert_eq!(code("EHLO"), "501 5.5.4");
    assert_eq!(code("DATA now"), "501 5.5.4");
    assert_eq!(code("NOOP whatever"), "NOOP");
    assert_eq!(code("FROB"), "500 5.5.2");
    assert_eq!(code("VRFY"), "501 5.5.4");
    assert_eq!(parse_command(b"HELP"), Ok(Command::Help(None)));
    assert_eq!(parse_command(b"starttls"), Ok(Command::StartTls));
    assert_eq!(parse_command(b"QUIT"), Ok(Command::Quit));
    assert_eq!(parse_command(b"\xff\xfe"), Err(CommandError::NotUtf8));
}

#[test]
fn mail_parameters_are_parsed_into_the_envelope_types() {
    let Ok(Command::Mail { from, params }) = parse_command(
        b"MAIL FROM:<a@b.example> size=10 BODY=8bitmime SMTPUTF8 RET=FULL ENVID=x+2By AUTH=<>",
    ) else {
        panic!("not parsed")
    };
    assert_eq!(from.to_string(), "<a@b.example>");
    assert_eq!(params.size, Some(10));
    assert_eq!(params.body, Some(BodyParam::EightBitMime));
    assert!(params.smtputf8);
    assert_eq!(params.ret, Some(Ret::Full));
    assert_eq!(params.envid.as_deref(), Some("x+y"));
    assert_eq!(params.auth, None);
    assert_eq!(parse_command(b"MAIL FROM:<>").map(|c| c.verb()), Ok("MAIL"));
    assert_eq!(
        parse_command(b"MAIL FROM: <>").map(|c| c.verb()),
        Ok("MAIL")
    );
}

#[test]
fn bad_mail_parameters_get_501_and_unknown_ones_555() {
    assert_eq!(code("MAIL FROM:<a@b.example> SIZE=ten"), "501 5.5.4");
    assert_eq!(code("MAIL FROM:<a@b.example> SIZE=1 SIZE=2"), "501 5.5.4");
    assert_eq!(code("MAIL FROM:<a@b.example> RET=ALL"), "501 5.5.4");
    assert_eq!(code("MAIL FROM:<a@b.example> ENVID=a+ZZ"), "501 5.5.4");
    assert_eq!(code("MAIL FROM:<a@b.example> SMTPUTF8=yes"), "501 5.5.4");
    assert_eq!(code("MAIL FROM:<a@b.example> BODY=9BIT"), "501 5.5.4");
    assert_eq!(code("MAIL FROM:<a@b.example> XFOO=1"), "555 5.5.4");
    assert_eq!(code("MAIL FROM:<a@b.example> =1"), "501 5.5.4");
    assert_eq!(code("MAIL FROM:a@b.example"), "501 5.5.4");
    assert_eq!(code("MAIL FROM:<a@b.example>SIZE=1"), "501 5.5.4");
    assert_eq!(code("MAIL TO:<a@b.example>"), "501 5.5.4");
    assert_eq!(code("MAIL FROM:<a@@b.example>"), "553 5.1.7");
}

#[test]
fn rcpt_takes_dsn_parameters_postmaster_and_drops_source_routes() {
    let Ok(Command::Rcpt { to, params }) =
        parse_command(b"RCPT TO:<r@b.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;r+2Bx@b.example")
    else {
        panic!("not parsed")
    };
    assert_eq!(
        to,
        ForwardPath::Mailbox(Address::parse("r@b.example").unwrap())
    );
    let n = params.notify.unwrap();
    assert!(n.success && n.failure && !n.delay);
    assert_eq!(params.orcpt.unwrap().address, "r+x@b.example");
    assert_eq!(
        parse_command(b"RCPT TO:<Postmaster>").map(|c| matches!(
            c,
            Command::Rcpt {
                to: ForwardPath::Postmaster,
                ..
            }
        )),
        Ok(true)
    );
    let Ok(Command::Rcpt { to, .. }) =
        parse_command(b"RCPT TO:<@relay.example,@b.example:u@c.example>")
    else {
        panic!("source route refused")
    };
    assert_eq!(
        to,
        ForwardPath::Mailbox(Address::parse("u@c.example").unwrap())
    );
    assert_eq!(code("RCPT TO:<>"), "501 5.5.4");
    assert_eq!(code("RCPT TO:<a@b.example> NOTIFY=SOMETIMES"), "501 5.5.4");
    assert_eq!(code("RCPT TO:<a@b.example> SIZE=1"), "555 5.5.4");
    assert_eq!(code("RCPT TO:<nobody>"), "553 5.1.3");
}

#[test]
fn a_quoted_local_part_may_hold_a_closing_bracket() {
    let Ok(Command::Rcpt {
        to: ForwardPath::Mailbox(a),
        ..
    }) = parse_command(br#"RCPT TO:<"a>b"@c.example>"#)
    else {
        panic!("not parsed")
    };
    assert_eq!(a.local_part(), r#""a>b""#);
}

#[test]
fn bdat_and_auth_arguments() {
    assert_eq!(
        parse_command(b"BDAT 100 LAST"),
        Ok(Command::Bdat {
            size: 100,
            last: true
        })
    );
    assert_eq!(
        parse_command(b"bdat 0"),
        Ok(Command::Bdat {
            size: 0,
            last: false
        })
    );
    assert_eq!(code("BDAT"), "501 5.5.4");
    assert_eq!(code("BDAT -1"), "501 5.5.4");
    assert_eq!(code("BDAT 1 FIRST"), "501 5.5.4");
    assert_eq!(code("BDAT 99999999999999999999999"), "501 5.5.4");
    assert_eq!(
        parse_command(b"AUTH plain AGEAYg=="),
        Ok(Command::Auth {
            mechanism: Mechanism::Plain,
            initial: Some("AGEAYg==".into())
        })
    );
    assert_eq!(
        parse_command(b"AUTH CRAM-MD5"),
        Ok(Command::Auth {
            mechanism: Mechanism::Other("CRAM-MD5".into()),
            initial: None
        })
    );
    assert_eq!(code("AUTH"), "501 5.5.4");
}

#[test]
fn replies_never_carry_control_characters_from_the_client() {
    let e = parse_command("FR\u{7}OB\u{1b}[31m".as_bytes()).unwrap_err();
    assert!(
        !e.reply().one_line().chars().any(char::is_control),
        "{}",
        e.reply()
    );
}

#[test]
fn requiretls_is_a_flag_without_value_given_at_most_once() {
    let Ok(Command::Mail { params, .. }) = parse_command(b"MAIL FROM:<a@b.example> requiretls")
    else {
        panic!("not parsed")
    };
    assert!(params.requiretls);
    let Ok(Command::Mail { params, .. }) = parse_command(b"MAIL FROM:<a@b.example> SIZE=5") else {
        panic!("not parsed")
    };
    assert!(!params.requiretls);
    assert_eq!(code("MAIL FROM:<a@b.example> REQUIRETLS=YES"), "501 5.5.4");
    assert_eq!(code("MAIL FROM:<a@b.example> REQUIRETLS="), "501 5.5.4");
    assert_eq!(
        code("MAIL FROM:<a@b.example> REQUIRETLS SIZE=1 REQUIRETLS"),
        "501 5.5.4"
    );
    assert_eq!(code("RCPT TO:<a@b.example> REQUIRETLS"), "555 5.5.4");
}
