//! Feeds arbitrary text to the virtusertable parser and, when it loads, routes addresses made
//! from its keys through a router that has it: errors name lines of the input, lookups never
//! panic, and the router routes as it explains, in one line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postrider::local::Virtusertable;
use postrider::route::{Mailertable, Origin};
use postrider::Address;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines = text.split('\n').count();
    let table = match Virtusertable::parse(text, Origin::named("fuzz")) {
        Ok((t, warnings)) => {
            for w in &warnings {
                assert!(w.line.is_some_and(|l| l >= 1 && l <= lines));
            }
            t
        }
        Err(e) => {
            for err in e.line_errors().iter().take(2) {
                assert!(err.line >= 1 && err.line <= lines);
                assert!(err.to_string().starts_with(&format!("fuzz:{}: ", err.line)));
            }
            return;
        }
    };
    let Ok((router, _)) = Mailertable::builder()
        .virtusertable_text("fuzz", text)
        .local_host_names_text("local-host-names", "ourtest.com\n")
        .build()
    else {
        panic!("a virtusertable that parses alone builds a router");
    };
    for key in text.split_whitespace().take(8) {
        let domain = key.rsplit('@').next().unwrap_or(key);
        for local in ["user", "user+detail", "postmaster", "Info"] {
            let Ok(address) = Address::parse(&format!("{local}@{domain}")) else {
                continue;
            };
            let m = table.lookup(&address);
            if let Some(m) = &m {
                assert!(m.line >= 1 && m.line <= lines);
            }
            let explanation = router.explain(&address);
            let shown = explanation.to_string();
            assert!(!shown.contains('\n'), "{shown}");
            assert_eq!(router.lookup(&address), explanation.route);
        }
    }
});
