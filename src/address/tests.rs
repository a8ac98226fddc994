//! Unit tests of `address`.

use super::*;

#[test]
fn domains_are_lower_cased_and_lose_a_trailing_dot() {
    assert_eq!(
        Domain::parse("Example.COM.").unwrap().as_str(),
        "example.com"
    );
}

#[test]
fn unicode_domains_become_a_labels() {
    assert_eq!(
        Domain::parse("Bücher.Example").unwrap().as_str(),
        "xn--bcher-kva.example"
    );
}

#[test]
fn domain_limits_are_enforced() {
    assert!(matches!(
        Domain::parse("a..b"),
        Err(AddressError::EmptyLabel { .. })
    ));
    assert!(matches!(
        Domain::parse(".a.b"),
        Err(AddressError::EmptyLabel { .. })
    ));
    assert!(matches!(Domain::parse(""), Err(AddressError::Empty { .. })));
    let label = "a".repeat(64);
    assert!(matches!(
        Domain::parse(&format!("{label}.com")),
        Err(AddressError::LabelTooLong { len: 64, .. })
    ));
    assert!(Domain::parse(&format!("{}.com", "a".repeat(63))).is_ok());
    let long = vec!["abcdefghi"; 26].join("."); // 26*10-1 = 259 octets
    assert!(matches!(
        Domain::parse(&long),
        Err(AddressError::DomainTooLong { .. })
    ));
    let exact = format!("{}.{}", vec!["abcdefghi"; 24].join("."), "a".repeat(13)); // 253
    assert_eq!(exact.len(), 253);
    assert!(Domain::parse(&exact).is_ok());
}

#[test]
fn domains_refuse_characters_hosts_cannot_have() {
    for bad in [
        "exa mple.com",
        "ex_ample.com",
        "-a.com",
        "a-.com",
        "a/b.com",
    ] {
        assert!(
            matches!(Domain::parse(bad), Err(AddressError::BadDomain { .. })),
            "{bad} should be refused"
        );
    }
}

#[test]
fn a_dotted_quad_is_not_a_domain() {
    let err = Domain::parse("10.0.0.5").unwrap_err();
    assert!(err.to_string().contains("[192.0.2.1]"), "{err}");
}

#[test]
fn parents_run_from_longest_to_shortest() {
    let d = Domain::parse("a.b.example.com").unwrap();
    assert_eq!(
        d.parents().collect::<Vec<_>>(),
        ["b.example.com", "example.com", "com"]
    );
}

#[test]
fn is_within_respects_label_boundaries() {
    let d = Domain::parse("mx.example.com").unwrap();
    assert!(d.is_within(&Domain::parse("example.com").unwrap()));
    assert!(d.is_within(&d));
    assert!(!d.is_within(&Domain::parse("ample.com").unwrap()));
}

#[test]
fn addresses_keep_local_case_and_lower_the_domain() {
    let a = Address::parse("Bob@Example.COM").unwrap();
    assert_eq!(a.local_part(), "Bob");
    assert_eq!(a.domain().as_str(), "example.com");
    assert_eq!(
        Address::parse("<bob@x.org>").unwrap().to_string(),
        "bob@x.org"
    );
}

#[test]
fn needless_quotes_are_removed_and_needed_ones_kept() {
    assert_eq!(
        Address::parse("\"john\"@x.org").unwrap().to_string(),
        "john@x.org"
    );
    assert_eq!(
        Address::parse("\"john doe\"@x.org").unwrap().to_string(),
        "\"john doe\"@x.org"
    );
    assert_eq!(
        Address::parse(r#""a\"b@c"@x.org"#).unwrap().local_part(),
        r#""a\"b@c""#
    );
}

#[test]
fn bad_local_parts_are_refused_with_a_reason() {
    for bad in [
        "@x.org",
        ".a@x.org",
        "a.@x.org",
        "a..b@x.org",
        "a b@x.org",
        "\"open@x.org",
        "a,b@x.org",
    ] {
        let err = Address::parse(bad).unwrap_err();
        assert!(
            matches!(err, AddressError::BadLocalPart { .. }),
            "{bad}: {err:?}"
        );
    }
    assert!(matches!(
        Address::parse("nodomain"),
        Err(AddressError::NoDomain { .. })
    ));
}

#[test]
fn length_limits_of_rfc_5321_apply() {
    let local = "a".repeat(65);
    assert!(matches!(
        Address::parse(&format!("{local}@x.org")),
        Err(AddressError::LocalPartTooLong { len: 65, .. })
    ));
    assert!(Address::parse(&format!("{}@x.org", "a".repeat(64))).is_ok());
    let domain = format!("{}.{}", vec!["abcdefghi"; 18].join("."), "abc"); // 183
    let local = "b".repeat(64);
    let err = Address::parse(&format!("{local}@{domain}.{}", "c".repeat(10))).unwrap_err();
    assert!(
        matches!(err, AddressError::AddressTooLong { .. }),
        "{err:?}"
    );
}

#[test]
fn utf8_local_parts_need_smtputf8() {
    let a = Address::parse("jösé@example.com").unwrap();
    assert!(a.needs_smtputf8());
    assert!(!Address::parse("jose@example.com").unwrap().needs_smtputf8());
}

#[test]
fn address_literals_are_refused_with_advice() {
    let err = Address::parse("root@[127.0.0.1]").unwrap_err();
    assert!(err.to_string().contains("mailertable"));
}

#[test]
fn reverse_paths_parse_null_and_addresses() {
    assert!(ReversePath::parse("<>").unwrap().is_null());
    assert!(ReversePath::parse("").unwrap().is_null());
    let r = ReversePath::parse("<a@b.example>").unwrap();
    assert_eq!(r.to_string(), "<a@b.example>");
    assert_eq!(ReversePath::Null.to_string(), "<>");
}

#[test]
fn serde_round_trips_through_the_parsers() {
    let a = Address::parse("x@y.example").unwrap();
    let json = serde_json::to_string(&a).unwrap();
    assert_eq!(json, "\"x@y.example\"");
    assert_eq!(serde_json::from_str::<Address>(&json).unwrap(), a);
    assert!(serde_json::from_str::<Address>("\"bad address\"").is_err());
    let null = serde_json::to_string(&ReversePath::Null).unwrap();
    assert_eq!(
        serde_json::from_str::<ReversePath>(&null).unwrap(),
        ReversePath::Null
    );
}
