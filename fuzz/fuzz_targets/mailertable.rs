//! Feeds arbitrary text to the mailertable parsers (whole tables, single values, host lists,
//! smart hosts, local-host-names) and checks what every accepted table must satisfy.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postrider::route::hop::{display_hops, parse_hops};
use postrider::route::value::parse_value;
use postrider::route::{Key, LocalDomains, Mailertable, Origin, RouteTable, SmartHost};
use postrider::{Address, Domain, Route};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check_value(text);
    check_hops(text);
    let _ = SmartHost::parse(text).map(|s| s.to_string());
    let _ = LocalDomains::parse(text, Origin::named("fuzz")).map_err(|e| e.to_string());
    check_table(text);
});

/// A relay route's hops display in a form that parses back to the same hops.
fn check_value(text: &str) {
    if let Ok(Route::Relay { hops, .. }) = parse_value(text) {
        let shown = display_hops(&hops);
        assert_eq!(parse_hops(&shown).as_ref(), Ok(&hops), "{shown}");
    }
}

fn check_hops(text: &str) {
    if let Ok(hops) = parse_hops(text) {
        assert!(!hops.is_empty());
        let shown = display_hops(&hops);
        assert_eq!(parse_hops(&shown).as_ref(), Ok(&hops), "{shown}");
    }
}

fn check_table(text: &str) {
    let lines = text.split('\n').count();
    let (table, warnings) = match RouteTable::parse(text, Origin::named("fuzz")) {
        Ok(parsed) => parsed,
        Err(e) => {
            for err in e.line_errors() {
                assert!(err.line >= 1 && err.line <= lines);
                assert!(err.to_string().starts_with(&format!("fuzz:{}: ", err.line)));
            }
            return;
        }
    };
    for w in &warnings {
        assert!(w.line.is_some_and(|l| l >= 1 && l <= lines));
    }
    // Every key in the file finds an entry for its own domain at or before its line (the first
    // entry for a key wins), and an exact key finds itself.
    for (number, line) in text.split('\n').enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key_text = line.split_whitespace().next().unwrap_or_default();
        let Ok(key) = Key::parse(key_text) else { continue };
        if let Key::Exact(domain) = &key {
            let m = table.lookup(domain).expect("an exact key finds an entry");
            assert_eq!(m.key(), key);
            assert!(m.line() <= number + 1);
        }
    }
    // The router explains any address in one line.
    let Ok((router, _)) = Mailertable::builder()
        .mailertable_text("fuzz", text)
        .build()
    else {
        return;
    };
    for key in text.split_whitespace().take(8) {
        let name = key.trim_start_matches('.');
        if let Ok(domain) = Domain::parse(name)
            && let Ok(address) = Address::new("user", domain.clone())
        {
            let explained = router.explain(&address).to_string();
            assert!(!explained.contains('\n'), "{explained}");
            assert_eq!(router.lookup(&address), router.explain(&address).route);
            let sub = Domain::parse(&format!("x.{domain}"));
            if let Ok(sub) = sub
                && let Ok(address) = Address::new("user", sub)
            {
                let _ = router.explain(&address).to_string();
            }
        }
    }
}
