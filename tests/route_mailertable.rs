//! The mailertable router through the public API: precedence, every value form, error messages
//! with line numbers, duplicate keys, and reloads.

mod support;
use support::route as route_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use postrider::route::{LoadError, Mailertable, MailertableBuilder, Rule, SmartHost, WarningKind};
use postrider::{Address, Route, Router, Severity};

use route_support::ConfigDir;

/// Every value form the issue lists, and keys that exercise precedence. Line numbers matter.
const TABLE: &str = "\
# every value form
esmtp.example        esmtp:mx.relay.example
smtp.example         smtp:[smtp.relay.example]
relay.example        relay:[10.0.0.5]
gmail.com            esmtp:[smtp.gmail.com]:587
port.example         esmtp:host.relay.example:2525
brackets.example     esmtp:[a.relay.example]:[b.relay.example]
comma.example        esmtp:a.relay.example,b.relay.example
smtps.example        smtps:[smtps.relay.example]:465
local.example        local:
user.example         local:postmaster
bad.example          error:5.7.0:550 mail to this domain is not accepted
later.example        error:4.4.1:451 try later
v6.example           esmtp:[IPv6:2001:db8::1]
smtp8.example        smtp8:[IPv6:2001:db8::2]:2525
# precedence: parents before the exact key in the file, a longer parent after both
.example.org         esmtp:[parent.relay.example]
deep.b.example.org   esmtp:[exact.relay.example]
.b.example.org       esmtp:[b-parent.relay.example]
Upper.Example.       esmtp:[upper.relay.example]
ourtest.com          esmtp:[never.relay.example]
";

fn router(table: &str, smart_host: Option<&str>) -> Mailertable {
    let builder: MailertableBuilder = Mailertable::builder()
        .mailertable_text("mailertable", table)
        .local_host_names_text("local-host-names", "ourtest.com\n")
        .hostname("sipserver1.ourtest.com".parse().unwrap())
        .smart_host_opt(smart_host.map(|s| s.parse::<SmartHost>().unwrap()));
    builder.build().unwrap().0
}

fn explain(router: &Mailertable, address: &str) -> String {
    router
        .explain(&Address::parse(address).unwrap())
        .to_string()
}

#[test]
fn every_value_form_and_precedence_rule_routes_as_sendmail_would() {
    let r = router(TABLE, Some("[mail.isp.net]:587"));
    let cases: &[(&str, &str)] = &[
        // value forms
        (
            "a@esmtp.example",
            "mailer=esmtp host=mx.relay.example port=25 mx=yes rule=mailertable:esmtp.example (line 2)",
        ),
        (
            "a@smtp.example",
            "mailer=smtp host=[smtp.relay.example] port=25 mx=no rule=mailertable:smtp.example (line 3)",
        ),
        (
            "a@relay.example",
            "mailer=relay host=[10.0.0.5] port=25 mx=no rule=mailertable:relay.example (line 4)",
        ),
        (
            "a@gmail.com",
            "mailer=esmtp host=[smtp.gmail.com] port=587 mx=no rule=mailertable:gmail.com (line 5)",
        ),
        (
            "a@port.example",
            "mailer=esmtp host=host.relay.example port=2525 mx=yes rule=mailertable:port.example (line 6)",
        ),
        (
            "a@brackets.example",
            "mailer=esmtp host=[a.relay.example] port=25 mx=no host=[b.relay.example] port=25 mx=no rule=mailertable:brackets.example (line 7)",
        ),
        (
            "a@comma.example",
            "mailer=esmtp host=a.relay.example port=25 mx=yes host=b.relay.example port=25 mx=yes rule=mailertable:comma.example (line 8)",
        ),
        (
            "a@smtps.example",
            "mailer=smtps host=[smtps.relay.example] port=465 mx=no rule=mailertable:smtps.example (line 9)",
        ),
        (
            "a@local.example",
            "mailer=local user=a rule=mailertable:local.example (line 10)",
        ),
        (
            "a@user.example",
            "mailer=local user=postmaster rule=mailertable:user.example (line 11)",
        ),
        (
            "a@bad.example",
            "error dsn=5.7.0 code=550 text=\"mail to this domain is not accepted\" rule=mailertable:bad.example (line 12)",
        ),
        (
            "a@later.example",
            "error dsn=4.4.1 code=451 text=\"try later\" rule=mailertable:later.example (line 13)",
        ),
        (
            "a@v6.example",
            "mailer=esmtp host=[IPv6:2001:db8::1] port=25 mx=no rule=mailertable:v6.example (line 14)",
        ),
        (
            "a@smtp8.example",
            "mailer=smtp8 host=[IPv6:2001:db8::2] port=2525 mx=no rule=mailertable:smtp8.example (line 15)",
        ),
        // local domains first, never routed out, even with a mailertable key
        ("a@ourtest.com", "mailer=local user=a rule=local-host-names"),
        (
            "a@OurTest.COM.",
            "mailer=local user=a rule=local-host-names",
        ),
        (
            "root@sipserver1.ourtest.com",
            "mailer=local user=root rule=hostname",
        ),
        ("root@localhost", "mailer=local user=root rule=localhost"),
        (
            "a@mail.ourtest.com",
            "mailer=relay host=[mail.isp.net] port=587 mx=no rule=smart-host",
        ),
        // the exact key wins over every parent, whatever the file order
        (
            "a@deep.b.example.org",
            "mailer=esmtp host=[exact.relay.example] port=25 mx=no rule=mailertable:deep.b.example.org (line 18)",
        ),
        // the longest parent wins, even when it comes later in the file
        (
            "a@x.b.example.org",
            "mailer=esmtp host=[b-parent.relay.example] port=25 mx=no rule=mailertable:.b.example.org (line 19)",
        ),
        (
            "a@x.y.b.example.org",
            "mailer=esmtp host=[b-parent.relay.example] port=25 mx=no rule=mailertable:.b.example.org (line 19)",
        ),
        (
            "a@c.example.org",
            "mailer=esmtp host=[parent.relay.example] port=25 mx=no rule=mailertable:.example.org (line 17)",
        ),
        // a .parent key does not match the parent itself
        (
            "a@example.org",
            "mailer=relay host=[mail.isp.net] port=587 mx=no rule=smart-host",
        ),
        (
            "a@b.example.org",
            "mailer=esmtp host=[parent.relay.example] port=25 mx=no rule=mailertable:.example.org (line 17)",
        ),
        // a key without a leading dot matches only that domain
        (
            "a@mail.gmail.com",
            "mailer=relay host=[mail.isp.net] port=587 mx=no rule=smart-host",
        ),
        // keys and domains are case-insensitive; trailing dots are ignored on both
        (
            "a@UPPER.example",
            "mailer=esmtp host=[upper.relay.example] port=25 mx=no rule=mailertable:upper.example (line 20)",
        ),
        (
            "a@Gmail.COM.",
            "mailer=esmtp host=[smtp.gmail.com] port=587 mx=no rule=mailertable:gmail.com (line 5)",
        ),
    ];
    for (address, expected) in cases {
        let line = explain(&r, address);
        let (_, rest) = line.split_once(": ").unwrap();
        assert_eq!(rest, *expected, "{address}");
    }
}

#[test]
fn the_catch_all_takes_what_no_other_key_matches_before_the_smart_host() {
    let r = router(
        "gmail.com esmtp:[smtp.gmail.com]:587\n.   relay:[catchall.example]\n",
        Some("[mail.isp.net]:587"),
    );
    assert_eq!(
        explain(&r, "a@anywhere.example"),
        "a@anywhere.example: mailer=relay host=[catchall.example] port=25 mx=no rule=mailertable:. (line 2)"
    );
    assert_eq!(
        explain(&r, "a@ourtest.com"),
        "a@ourtest.com: mailer=local user=a rule=local-host-names"
    );
}

#[test]
fn without_smart_host_unmatched_mail_goes_direct_to_the_recipient_domains_mx() {
    let r = router("gmail.com esmtp:[smtp.gmail.com]:587\n", None);
    let address = Address::parse("a@sub.example.net").unwrap();
    let e = r.explain(&address);
    assert_eq!(e.rule, Rule::DirectMx);
    assert_eq!(e.route, Route::direct_mx(address.domain()));
    assert_eq!(
        e.to_string(),
        "a@sub.example.net: mailer=esmtp host=sub.example.net port=25 mx=yes rule=direct-mx"
    );
}

#[test]
fn a_smart_host_with_a_mailer_prefix_uses_that_mailer() {
    let r = router("", Some("smtps:[smtp.gmail.com]:465"));
    assert_eq!(
        explain(&r, "a@x.example"),
        "a@x.example: mailer=smtps host=[smtp.gmail.com] port=465 mx=no rule=smart-host"
    );
}

#[test]
fn the_error_mailer_defers_with_4xx_and_fails_with_5xx() {
    let r = router(TABLE, None);
    let severity = |a: &str| match r.lookup(&Address::parse(a).unwrap()) {
        Route::Reject { reply } => reply.status().is_temporary(),
        other => panic!("{a}: {other:?}"),
    };
    assert!(severity("a@later.example"), "451 is temporary");
    assert!(!severity("a@bad.example"), "550 is permanent");
}

#[tokio::test]
async fn the_router_trait_gives_the_same_routes_as_lookup() {
    let r = router(TABLE, Some("[mail.isp.net]:587"));
    let address = Address::parse("user@gmail.com").unwrap();
    let expected = r.lookup(&address);
    let dyn_router: Arc<dyn Router> = Arc::new(r);
    assert_eq!(dyn_router.route(&address).await.unwrap(), expected);
    assert!(matches!(expected, Route::Relay { .. }));
}

fn load_errors(table: &str) -> Vec<String> {
    let err = Mailertable::builder()
        .mailertable_text("mailertable", table)
        .build()
        .unwrap_err();
    assert_eq!(err.severity(), Severity::Permanent);
    err.to_string().lines().map(str::to_string).collect()
}

#[test]
fn every_bad_line_is_reported_with_file_line_and_the_offending_text() {
    let table = "\
# header
gmail.com esmtp:[smtp.gmail.com]:587
a.example
b.example esmpt:[mail.example.com]
c.example [mail.example.com]
d.example esmtp:
e.example esmtp:[mail.example.com]:99999
f.example esmtp:[mail.example.com]:0
g.example esmtp:exa_mple.com
h.example esmtp:[mail.example.com
i.example esmtp:%1.mx.example.com
j.example error:2.0.0:250 fine
k.example local:a b
[10.0.0.5] esmtp:[mail.example.com]
*.example.com esmtp:[mail.example.com]
l..example esmtp:[mail.example.com]
m.example error:5.7.0:450 mixed
n.example esmtp:[mail.example.com] # trailing comment
o.example esmtp:[IPv6:zz::1]
";
    let errors = load_errors(table);
    let expected = [
        "mailertable:3: key \"a.example\" has no value (expected e.g. a.example esmtp:[mail.example.com])",
        "mailertable:4: unknown mailer \"esmpt\" in \"esmpt:[mail.example.com]\" (known: esmtp, smtp, smtp8, relay, smtps, local, error)",
        "mailertable:5: no mailer in \"[mail.example.com]\"; write mailer:host, e.g. esmtp:[mail.example.com]",
        "mailertable:6: mailer esmtp needs a host in \"esmtp:\", e.g. esmtp:[mail.example.com]",
        "mailertable:7: bad port \"99999\" (ports are 1 to 65535) in \"esmtp:[mail.example.com]:99999\"",
        "mailertable:8: bad port \"0\" (ports are 1 to 65535) in \"esmtp:[mail.example.com]:0\"",
        "mailertable:9: bad host \"exa_mple.com\": domain \"exa_mple.com\" is not a valid host name: character '_' is not allowed (letters, digits and '-' only) in \"esmtp:exa_mple.com\"",
        "mailertable:10: \"[mail.example.com\" has no closing \"]\" in \"esmtp:[mail.example.com\"",
        "mailertable:11: sendmail macro \"%1\" in \"esmtp:%1.mx.example.com\" is not supported; write one entry per domain with the host spelled out",
        "mailertable:12: reply code 250 does not refuse mail (use 4xx to defer, 5xx to fail) in \"error:2.0.0:250 fine\" (expected error:D.S.N:CODE text, e.g. error:5.7.0:550 mail to this domain is not accepted)",
        "mailertable:13: bad local user \"a b\" in \"local:a b\" (expected a user name such as local:postmaster)",
        "mailertable:14: bad key \"[10.0.0.5]\": address literals are not routed (postrider refuses recipients like user@[192.0.2.1])",
        "mailertable:15: bad key \"*.example.com\": wildcards are not supported; .example.com matches every host below example.com",
        "mailertable:16: bad key \"l..example\": domain \"l..example\" has an empty label",
        "mailertable:17: reply code 450 and enhanced status 5.7.0 disagree on success/temporary/permanent in \"error:5.7.0:450 mixed\" (expected error:D.S.N:CODE text, e.g. error:5.7.0:550 mail to this domain is not accepted)",
        "mailertable:18: \"[mail.example.com] # trailing comment\" looks like a trailing comment; comments must be on a line of their own in \"esmtp:[mail.example.com] # trailing comment\"",
        "mailertable:19: bad IPv6 address \"IPv6:zz::1\" in \"esmtp:[IPv6:zz::1]\"",
    ];
    assert_eq!(errors, expected);
}

#[test]
fn crlf_files_parse_like_unix_ones() {
    let r = router(
        "# dos\r\ngmail.com\tesmtp:[smtp.gmail.com]:587\r\n\r\n.corp.example esmtp:mail.corporate.net\r\n",
        None,
    );
    assert_eq!(
        explain(&r, "a@x.corp.example"),
        "a@x.corp.example: mailer=esmtp host=mail.corporate.net port=25 mx=yes rule=mailertable:.corp.example (line 4)"
    );
}

#[test]
fn a_duplicate_key_keeps_the_first_entry_and_warns_naming_both_lines() {
    let (r, warnings) = Mailertable::builder()
        .mailertable_text(
            "mailertable",
            "gmail.com esmtp:[smtp.gmail.com]:587\n.corp.example esmtp:a.example\nGMAIL.com. esmtp:[other.example]\n.corp.example esmtp:b.example\n",
        )
        .build()
        .unwrap();
    let shown: Vec<String> = warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "mailertable:3: duplicate key \"gmail.com\" ignored; the entry on line 1 is used",
            "mailertable:4: duplicate key \".corp.example\" ignored; the entry on line 2 is used",
        ]
    );
    assert_eq!(
        warnings[0].kind,
        WarningKind::DuplicateKey {
            key: "gmail.com".into(),
            first_line: 1
        }
    );
    assert!(explain(&r, "a@gmail.com").ends_with("rule=mailertable:gmail.com (line 1)"));
}

#[test]
fn reload_swaps_in_a_new_table_and_refuses_a_broken_one() {
    let dir = ConfigDir::sample();
    let (r, _) = Mailertable::builder()
        .mailertable_file(dir.path("mailertable"))
        .local_host_names_file(dir.path("local-host-names"))
        .build()
        .unwrap();
    let gmail = Address::parse("user@gmail.com").unwrap();
    assert!(
        r.explain(&gmail)
            .to_string()
            .contains("host=[smtp.gmail.com] port=587")
    );

    dir.write(
        "mailertable",
        "# moved\ngmail.com smtps:[smtp.gmail.com]:465\n",
    );
    dir.write("local-host-names", "ourtest.com\nother.example\n");
    assert!(r.reload().unwrap().is_empty());
    assert_eq!(
        r.explain(&gmail).to_string(),
        "user@gmail.com: mailer=smtps host=[smtp.gmail.com] port=465 mx=no rule=mailertable:gmail.com (line 2)"
    );
    assert!(matches!(
        r.lookup(&Address::parse("a@other.example").unwrap()),
        Route::Local { .. }
    ));

    dir.write(
        "mailertable",
        "gmail.com esmtp:[smtp.gmail.com]:587\nbroken.example esmpt:x\n",
    );
    let err = r.reload().unwrap_err();
    assert!(matches!(err, LoadError::Invalid { .. }));
    assert!(err.to_string().ends_with("mailertable:2: unknown mailer \"esmpt\" in \"esmpt:x\" (known: esmtp, smtp, smtp8, relay, smtps, local, error)"), "{err}");
    assert!(
        r.explain(&gmail).to_string().contains("mailer=smtps"),
        "the previous table stays in use"
    );

    dir.write("mailertable", "gmail.com esmtp:[smtp.gmail.com]:587\n");
    std::fs::remove_file(dir.path("local-host-names")).unwrap();
    let err = r.reload().unwrap_err();
    assert!(err.to_string().starts_with("cannot read "), "{err}");
    assert!(matches!(
        r.lookup(&Address::parse("a@other.example").unwrap()),
        Route::Local { .. }
    ));
}

#[test]
fn readers_never_see_a_half_reloaded_table() {
    // The same key on a different line with a different host in each table: an explanation
    // mixing the two tables would pair a host with the other table's line.
    let table_a = "a.example esmtp:[one.example]\n";
    let table_b = "# b\na.example esmtp:[two.example]\n";
    let builder = |t: &str| Mailertable::builder().mailertable_text("mailertable", t);
    let r = Arc::new(builder(table_a).build().unwrap().0);
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (r, stop) = (Arc::clone(&r), Arc::clone(&stop));
            std::thread::spawn(move || {
                let a = Address::parse("x@a.example").unwrap();
                let mut seen = [0u32; 2];
                while !stop.load(Ordering::Relaxed) || seen == [0, 0] {
                    let line = r.explain(&a).to_string();
                    if line.contains("[one.example]") {
                        assert!(line.ends_with("(line 1)"), "{line}");
                        seen[0] += 1;
                    } else {
                        assert!(
                            line.contains("[two.example]") && line.ends_with("(line 2)"),
                            "{line}"
                        );
                        seen[1] += 1;
                    }
                }
                seen
            })
        })
        .collect();
    for i in 0..500 {
        let t = if i % 2 == 0 { table_b } else { table_a };
        r.reload_from(builder(t)).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.join().unwrap();
    }
}
