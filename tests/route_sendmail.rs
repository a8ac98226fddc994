//! End-to-end runs of `examples/sendmail.rs -C CONFIG -bv ...`: the exact lines scripts read, and
//! the sysexits status codes.

mod support;
use support::route as route_support;

use std::process::{Command, Output};

use route_support::{ConfigDir, sendmail_example};

fn sendmail(args: &[&str]) -> Output {
    Command::new(sendmail_example())
        .args(args)
        .output()
        .expect("run the sendmail example")
}

fn bv(dir: &ConfigDir, addresses: &[&str]) -> Output {
    let config = dir.config();
    let mut args = vec!["-C", config.to_str().unwrap(), "-bv"];
    args.extend_from_slice(addresses);
    sendmail(&args)
}

fn stdout_lines(out: &Output) -> Vec<String> {
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

const GMAIL: &str = "user@gmail.com: mailer=esmtp host=[smtp.gmail.com] port=587 mx=no rule=mailertable:gmail.com (line 3)";
const CORP: &str = "bob@hq.corp.example: mailer=esmtp host=mail.corporate.net port=25 mx=yes rule=mailertable:.corp.example (line 5)";
const BAD: &str = "x@bad.example: error dsn=5.7.0 code=550 text=\"mail to this domain is not accepted\" rule=mailertable:bad.example (line 7)";
const LOCAL: &str = "aaa@ourtest.com: mailer=local user=aaa rule=local-host-names";

#[test]
fn addresses_that_all_route_print_one_line_each_and_exit_0() {
    let dir = ConfigDir::sample();
    let out = bv(
        &dir,
        &["user@gmail.com", "bob@hq.corp.example", "aaa@ourtest.com"],
    );
    assert_eq!(
        stdout_lines(&out),
        [GMAIL, CORP, LOCAL],
        "stderr: {}",
        stderr(&out)
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        stderr(&out),
        "sendmail: warning: aaa@ourtest.com: local delivery is not configured (no [local] section)\n",
        "the sample files load without warnings; the local address is routed but would bounce"
    );
}

#[test]
fn an_error_route_prints_its_reply_and_exits_67() {
    let dir = ConfigDir::sample();
    let out = bv(
        &dir,
        &[
            "user@gmail.com",
            "bob@hq.corp.example",
            "x@bad.example",
            "aaa@ourtest.com",
        ],
    );
    assert_eq!(stdout_lines(&out), [GMAIL, CORP, BAD, LOCAL]);
    assert_eq!(out.status.code(), Some(67), "EX_NOUSER");
}

#[test]
fn unmatched_domains_go_to_the_smart_host_and_bare_users_are_local() {
    let dir = ConfigDir::sample();
    let out = bv(&dir, &["bob@corp.example", "root", "me@x.local"]);
    assert_eq!(
        stdout_lines(&out),
        [
            // .corp.example matches hosts below corp.example only, as in sendmail.
            "bob@corp.example: mailer=relay host=[mail.isp.net] port=587 mx=no rule=smart-host",
            "root@sipserver1.ourtest.com: mailer=local user=root rule=hostname",
            "me@x.local: mailer=local user=me rule=mailertable:.local (line 6)",
        ]
    );
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn without_a_smart_host_mail_goes_to_the_domains_mx() {
    let dir = ConfigDir::sample();
    dir.write(
        "postrider.toml",
        &route_support::CONFIG.replace("smart_host = \"[mail.isp.net]:587\"\n", ""),
    );
    let out = bv(&dir, &["someone@example.org"]);
    assert_eq!(
        stdout_lines(&out),
        ["someone@example.org: mailer=esmtp host=example.org port=25 mx=yes rule=direct-mx"]
    );
}

#[test]
fn a_broken_mailertable_is_a_configuration_error_exiting_78() {
    let dir = ConfigDir::sample();
    dir.write(
        "mailertable",
        &route_support::MAILERTABLE.replace(
            "error:5.7.0:550 mail to this domain is not accepted",
            "esmpt:[mail.example.com]",
        ),
    );
    let out = bv(&dir, &["user@gmail.com"]);
    assert_eq!(out.status.code(), Some(78), "EX_CONFIG");
    assert!(out.stdout.is_empty());
    let mailertable = dir.path("mailertable");
    assert_eq!(
        stderr(&out),
        format!(
            "sendmail: {}:7: unknown mailer \"esmpt\" in \"esmpt:[mail.example.com]\" \
             (known: esmtp, smtp, smtp8, relay, smtps, local, error)\n",
            mailertable.display()
        )
    );
}

#[test]
fn a_typo_in_the_configuration_exits_78_naming_the_key_and_line() {
    let dir = ConfigDir::sample();
    dir.write(
        "postrider.toml",
        &route_support::CONFIG.replace("smart_host", "smart_hots"),
    );
    let out = bv(&dir, &["user@gmail.com"]);
    assert_eq!(out.status.code(), Some(78));
    let err = stderr(&out);
    let expected = format!(
        "sendmail: {}:3: unknown field `smart_hots`",
        dir.config().display()
    );
    assert!(err.starts_with(&expected), "{err}");
}

#[test]
fn a_missing_configuration_or_a_broken_policy_exits_78() {
    let dir = ConfigDir::sample();
    let out = sendmail(&["-C", "/nonexistent/postrider.toml", "-bv", "a@b.example"]);
    assert_eq!(out.status.code(), Some(78));
    assert!(stderr(&out).starts_with("sendmail: cannot read /nonexistent/postrider.toml: "));
    dir.write(
        "tls-policy",
        "[smtp.gmail.com]:587 encrpyt user:s3cret-value\n",
    );
    let out = bv(&dir, &["a@b.example"]);
    assert_eq!(out.status.code(), Some(78));
    let err = stderr(&out);
    assert!(
        err.contains(":1: unknown TLS level \"encrpyt\" (did you mean encrypt?"),
        "{err}"
    );
    assert!(!err.contains("s3cret-value"), "{err}");
}

#[test]
fn the_config_flag_may_be_glued_to_its_value() {
    let dir = ConfigDir::sample();
    let glued = format!("-C{}", dir.config().display());
    let out = sendmail(&[&glued, "-bv", "aaa@ourtest.com"]);
    assert_eq!(stdout_lines(&out), [LOCAL]);
}

#[test]
fn usage_errors_exit_64_and_bad_addresses_65() {
    let dir = ConfigDir::sample();
    let config = dir.config();
    let config = config.to_str().unwrap();
    for args in [
        vec!["-C", config, "-bv"],
        vec!["-C", config, "-bz"],
        vec!["-C", config, "-q!x"],
        vec!["-C", config],
        vec!["-C"],
    ] {
        let out = sendmail(&args);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("usage: sendmail"), "{args:?}");
    }
    let out = bv(&dir, &["a b@x.example", "x@bad.example"]);
    assert_eq!(
        out.status.code(),
        Some(65),
        "EX_DATAERR: the first failing address decides"
    );
    assert!(stdout_lines(&out)[0].starts_with("a b@x.example: bad address: "));
}
