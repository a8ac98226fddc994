//! Feeds arbitrary text to the mailertable parsers (whole tables, single values, host lists,
//! smart hosts, local-host-names) and checks what every accepted table must satisfy.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postrider::route::{display_hops, parse_hops};
use postrider::route::parse_value;
use postrider::route::{
    Key, LoadError, LocalDomains, Mailertable, Origin, RouteTable, SmartHost, Warning,
};
use postrider::{Address, Domain, Route};

/// How many line errors of one input are rendered. Every error's line number is checked, but
/// rendering all of them (one per line of a 4 KB input of garbage) was a fifth of the run time
/// and exercises the same `Display` code each time.
const ERRORS_SHOWN: usize = 1;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines = text.split('\n').count();
    check_value(text);
    check_hops(text);
    let _ = SmartHost::parse(text).map(|s| s.to_string());
    match LocalDomains::parse(text, Origin::named("fuzz")) {
        Ok((_, warnings)) => check_warnings(&warnings, lines),
        Err(e) => check_errors(&e, lines),
    }
    check_table(text, lines);
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

/// Every error names a line of the input, and shows as `origin:line: ...`.
fn check_errors(e: &LoadError, lines: usize) {
    for (i, err) in e.line_errors().iter().enumerate() {
        assert!(err.line >= 1 && err.line <= lines);
        if i < ERRORS_SHOWN {
            assert!(err.to_string().starts_with(&format!("fuzz:{}: ", err.line)));
        }
    }
}

fn check_warnings(warnings: &[Warning], lines: usize) {
    for w in warnings {
        assert!(w.line.is_some_and(|l| l >= 1 && l <= lines));
    }
}

fn check_table(text: &str, lines: usize) {
    let (table, warnings) = match RouteTable::parse(text, Origin::named("fuzz")) {
        Ok(parsed) => parsed,
        Err(e) => return check_errors(&e, lines),
    };
    check_warnings(&warnings, lines);
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
    // The router explains any address in one line, and routes as it explains.
    let Ok((router, _)) = Mailertable::builder()
        .mailertable_text("fuzz", text)
        .build()
    else {
        return;
    };
    assert_eq!(router.len(), table.len());
    for key in text.split_whitespace().take(8) {
        let name = key.trim_start_matches('.');
        let Ok(domain) = Domain::parse(name) else { continue };
        for domain in [Domain::parse(&format!("x.{domain}")).ok(), Some(domain)] {
            let Some(address) = domain.and_then(|d| Address::new("user", d).ok()) else {
                continue;
            };
            let explanation = router.explain(&address);
            let shown = explanation.to_string();
            assert!(!shown.contains('\n'), "{shown}");
            assert_eq!(router.lookup(&address), explanation.route);
        }
    }
}
