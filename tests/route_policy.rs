//! The per-next-hop TLS and credentials policy file: format, lookup rules, and secrets that
//! never leak into errors, warnings or Debug output.

mod support;
use support::route as route_support;

use postrider::route::parse_hop;
use postrider::route::{Origin, PolicyError, PolicyTable, TlsLevel, WarningKind};

use route_support::ConfigDir;

const SECRET: &str = "hunter2-very-secret";

fn parse(text: &str) -> Result<PolicyTable, PolicyError> {
    PolicyTable::parse(text, Origin::named("tls-policy")).map(|(t, _)| t)
}

fn errors(text: &str) -> Vec<String> {
    let err = parse(text).unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(SECRET), "a secret leaked: {shown}");
    err.to_string().lines().map(str::to_string).collect()
}

#[test]
fn entries_give_level_credentials_and_options_per_next_hop() {
    let table = parse(&format!(
        "# next hop   level   options   credentials\n\
         [smtp.gmail.com]:587  encrypt  user@example.com:{SECRET}\n\
         [mail.corporate.net]  verify\n\
         [10.0.0.5]:25  none  auth-without-tls  relay:{SECRET}:with colon and spaces \n\
         [IPv6:2001:db8::1]  may\n\
         *  encrypt\n"
    ))
    .unwrap();
    let gmail = table.lookup(&parse_hop("[smtp.gmail.com]:587").unwrap());
    assert_eq!(gmail.tls, TlsLevel::Encrypt);
    let c = gmail.credentials.as_ref().unwrap();
    assert_eq!(
        (c.username.as_str(), c.password.expose()),
        ("user@example.com", SECRET)
    );
    assert!(!gmail.auth_without_tls);

    let corp = table.lookup(&parse_hop("[mail.corporate.net]:2525").unwrap());
    assert_eq!(
        corp.tls,
        TlsLevel::Verify,
        "a key without port matches every port"
    );
    assert!(corp.credentials.is_none());

    let relay = table.lookup(&parse_hop("[10.0.0.5]:25").unwrap());
    assert_eq!(relay.tls, TlsLevel::None);
    assert!(relay.auth_without_tls);
    let password = relay.credentials.as_ref().unwrap().password.expose();
    assert_eq!(password, format!("{SECRET}:with colon and spaces"));

    assert_eq!(
        table.lookup(&parse_hop("[IPv6:2001:db8::1]").unwrap()).tls,
        TlsLevel::May
    );
    assert_eq!(
        table
            .lookup(&parse_hop("[smtp.gmail.com]:465").unwrap())
            .tls,
        TlsLevel::Encrypt,
        "another port falls to the default"
    );
    assert_eq!(
        table.lookup(&parse_hop("smtp.gmail.com").unwrap()).tls,
        TlsLevel::Encrypt
    );
    assert!(
        table
            .lookup(&parse_hop("smtp.gmail.com").unwrap())
            .credentials
            .is_none()
    );
    let debug = format!("{table:?}");
    assert!(!debug.contains(SECRET), "{debug}");
    assert!(debug.contains("user@example.com"));
}

#[test]
fn a_postfix_sasl_passwd_line_works_unchanged_and_requires_tls() {
    let table = parse(&format!("[smtp.gmail.com]:587 user@gmail.com:{SECRET}\n")).unwrap();
    let p = table.lookup(&parse_hop("[smtp.gmail.com]:587").unwrap());
    assert_eq!(p.tls, TlsLevel::Encrypt);
    assert!(p.credentials.is_some());
    assert_eq!(table.default_policy().tls, TlsLevel::May);
}

#[test]
fn bad_lines_are_reported_without_echoing_secrets() {
    let text = format!(
        "[smtp.gmail.com]:587 encrpyt user:{SECRET}\n\
         [smtp.gmail.com]:587 {SECRET}\n\
         [a.example] encrypt auth-without-tls {SECRET} user:{SECRET}\n\
         [smtp.gmail.com]:587:user:{SECRET}\n\
         [b.example] encrypt :{SECRET}\n\
         [c.example] encrypt user:\n\
         [d.example] none user:{SECRET}\n\
         [e.example]\n\
         [f.example]:99999 may\n\
         user@example.com:{SECRET} [x.example]\n"
    );
    assert_eq!(
        errors(&text),
        [
            "tls-policy:1: unknown TLS level \"encrpyt\" (did you mean encrypt? levels: none, may, encrypt, verify)",
            "tls-policy:2: field 2 is not a TLS level (none, may, encrypt, verify), an option (auth-without-tls) or USER:PASSWORD; it is not shown in case it is a secret",
            "tls-policy:3: field 4 is not a TLS level (none, may, encrypt, verify), an option (auth-without-tls) or USER:PASSWORD; it is not shown in case it is a secret",
            "tls-policy:4: expected NEXT-HOP [LEVEL] [OPTION...] [USER:PASSWORD] separated by spaces; the line is not shown in case it holds a password",
            "tls-policy:5: credentials have an empty user name (write USER:PASSWORD)",
            "tls-policy:6: credentials for \"user\" have an empty password",
            "tls-policy:7: credentials with TLS level none would never be sent; use may, encrypt or verify, or add auth-without-tls to send them without TLS",
            "tls-policy:8: next hop [e.example] has no TLS level or credentials (expected e.g. [e.example] encrypt user@example.com:password)",
            "tls-policy:9: bad next hop \"[f.example]:99999\": bad port \"99999\" (ports are 1 to 65535) (expected e.g. [smtp.gmail.com]:587, or * for the default)",
            "tls-policy:10: expected NEXT-HOP [LEVEL] [OPTION...] [USER:PASSWORD] separated by spaces; the line is not shown in case it holds a password",
        ]
    );
}

#[test]
fn a_duplicate_next_hop_keeps_the_first_entry_and_warns() {
    let (table, warnings) = PolicyTable::parse(
        "[a.example]:587 verify\n* may\n[A.example.]:587 none\ndefault encrypt\n",
        Origin::named("tls-policy"),
    )
    .unwrap();
    let shown: Vec<String> = warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "tls-policy:3: duplicate key \"[a.example]:587\" ignored; the entry on line 1 is used",
            "tls-policy:4: duplicate key \"*\" ignored; the entry on line 2 is used",
        ]
    );
    assert_eq!(
        table.lookup(&parse_hop("[a.example]:587").unwrap()).tls,
        TlsLevel::Verify
    );
    assert_eq!(table.default_policy().tls, TlsLevel::May);
}

#[test]
fn a_policy_file_with_passwords_open_to_others_loads_with_a_warning() {
    let dir = ConfigDir::sample();
    let (_, warnings) = PolicyTable::load(&dir.path("tls-policy")).unwrap();
    assert!(warnings.is_empty(), "mode 600 is quiet: {warnings:?}");
    dir.chmod("tls-policy", 0o644);
    let (table, warnings) = PolicyTable::load(&dir.path("tls-policy")).unwrap();
    assert!(table.has_credentials());
    assert_eq!(warnings.len(), 1);
    assert_eq!(
        warnings[0].kind,
        WarningKind::ReadableSecrets { mode: 0o100644 }
    );
    assert_eq!(
        warnings[0].to_string(),
        format!(
            "{}: holds passwords but can be read by group or others (mode 0644); run chmod 600 on it",
            dir.path("tls-policy").display()
        )
    );
    dir.write("tls-policy", "[mail.corporate.net] verify\n");
    let (_, warnings) = PolicyTable::load(&dir.path("tls-policy")).unwrap();
    assert!(warnings.is_empty(), "no passwords, nothing to protect");
}
