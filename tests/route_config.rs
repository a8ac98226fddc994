//! The TOML configuration: defaults, errors naming file and line, relative paths, and the
//! helpers that build the router and the policy table from it.

mod support;
use support::route as route_support;

use std::path::Path;

use postrider::config::{Config, ConfigError};
use postrider::route::parse_hop;
use postrider::route::{Rule, TlsLevel};
use postrider::{Address, Route};

use route_support::ConfigDir;

#[test]
fn the_sample_configuration_builds_its_router_and_policy() {
    let dir = ConfigDir::sample();
    let config = Config::load(dir.config()).unwrap();
    assert_eq!(config.spool, dir.path("spool"));
    assert_eq!(
        config.hostname.as_ref().unwrap().as_str(),
        "sipserver1.ourtest.com"
    );
    assert_eq!(
        config.smart_host.as_ref().unwrap().to_string(),
        "relay:[mail.isp.net]:587"
    );

    let (router, warnings) = config.build_router().unwrap();
    assert!(warnings.is_empty());
    assert_eq!(router.mailertable_path(), Some(dir.path("mailertable")));
    let rule = |a: &str| router.explain(&Address::parse(a).unwrap()).rule;
    assert_eq!(rule("a@ourtest.com").to_string(), "local-host-names");
    assert_eq!(rule("root@sipserver1.ourtest.com"), Rule::Hostname);
    assert_eq!(rule("a@example.net"), Rule::SmartHost);
    assert!(matches!(
        rule("a@gmail.com"),
        Rule::Mailertable { line: 3, .. }
    ));

    let (policy, warnings) = config.load_policy().unwrap();
    assert!(warnings.is_empty());
    let gmail = policy.lookup(&parse_hop("[smtp.gmail.com]:587").unwrap());
    assert_eq!(gmail.tls, TlsLevel::Encrypt);
    assert!(gmail.credentials.is_some());
}

#[test]
fn without_files_only_localhost_and_the_hostname_are_local_and_mail_goes_direct() {
    let config = Config::parse(
        "hostname = \"mx.example\"\n",
        "/etc/postrider/postrider.toml",
    )
    .unwrap();
    let (router, _) = config.build_router().unwrap();
    assert_eq!(
        router.lookup(&Address::parse("a@mx.example").unwrap()),
        Route::local()
    );
    let a = Address::parse("a@example.org").unwrap();
    assert_eq!(router.lookup(&a), Route::direct_mx(a.domain()));
    let (policy, _) = config.load_policy().unwrap();
    assert!(policy.is_empty());
}

#[test]
fn a_configured_file_that_is_missing_is_an_error_naming_it() {
    let config = Config::parse("mailertable = \"nope\"\n", "/nonexistent/postrider.toml").unwrap();
    let err = config.build_router().unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cannot read /nonexistent/nope: "),
        "{err}"
    );
}

#[test]
fn bad_values_are_errors_naming_file_and_line() {
    let cases: &[(&str, usize, &str)] = &[
        (
            "spool = \"/q\"\nhostname = \"bad_host\"\n",
            2,
            "is not a valid host name",
        ),
        (
            "smart_host = \"esmpt:[smtp.gmail.com]\"\n",
            1,
            "unknown mailer \"esmpt\"",
        ),
        (
            "\n\nspool = 3\n",
            3,
            "invalid type: integer `3`, expected path",
        ),
        (
            "mailertable = \"a\"\nmailertable = \"b\"\n",
            2,
            "duplicate key",
        ),
        (
            "[bogus_section]\nafter = 5\n",
            1,
            "unknown field `bogus_section`",
        ),
        ("smart_host = \"[unclosed\n", 1, ""),
    ];
    for (text, line, fragment) in cases {
        let err = Config::parse(text, Path::new("/etc/postrider/postrider.toml")).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("/etc/postrider/postrider.toml:{line}: ")),
            "{text:?}: {msg}"
        );
        assert!(msg.contains(fragment), "{text:?}: {msg}");
        assert!(matches!(err, ConfigError::Invalid { line: l, .. } if l == *line));
    }
}
