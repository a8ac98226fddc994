//! Mailertable lookups in a 100,000-entry table of mixed exact and `.parent` keys.
//!
//! `router/*` measures `Mailertable::lookup` as the engine calls it (snapshot under the read
//! lock, local domains, table, smart host, and the cloned `Route`); `table/*` the bare
//! `RouteTable::lookup`. Figures are recorded in benches/README.md.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use postrider::route::{Mailertable, Origin, RouteTable, SmartHost};
use postrider::{Address, Domain};

const ENTRIES: usize = 100_000;

/// Half exact keys, half `.parent` keys, with the hosts sendmail users write.
fn table_text(catch_all: bool) -> String {
    let mut text = String::with_capacity(ENTRIES * 48);
    text.push_str("# generated for the route benchmark\n");
    for i in 0..ENTRIES / 2 {
        text.push_str(&format!(
            "host{i}.dom{}.example esmtp:[relay{}.example]:587\n",
            i % 1000,
            i % 7
        ));
        text.push_str(&format!(
            ".sub{i}.corp{}.net smtp:mx{}.corp.net,backup.corp.net\n",
            i % 500,
            i % 11
        ));
    }
    if catch_all {
        text.push_str(". relay:[catchall.example]\n");
    }
    text
}

fn router(text: &str) -> Mailertable {
    Mailertable::builder()
        .mailertable_text("mailertable", text)
        .local_host_names_text("local-host-names", "ourtest.com\n")
        .smart_host(
            "[smtp.gmail.com]:587"
                .parse::<SmartHost>()
                .expect("a valid smart host"),
        )
        .build()
        .expect("the generated table parses")
        .0
}

fn bench(c: &mut Criterion) {
    let with_catch_all = router(&table_text(true));
    let without = router(&table_text(false));
    assert_eq!(with_catch_all.len(), ENTRIES + 1);

    let addr = |s: &str| Address::parse(s).expect("a valid address");
    let exact = addr("user@host31337.dom337.example");
    let parent = addr("user@a.b.sub23456.corp456.net");
    let other = addr("user@nowhere.example.org");
    let local = addr("user@ourtest.com");

    let mut g = c.benchmark_group("router");
    g.bench_function("exact", |b| {
        b.iter(|| with_catch_all.lookup(black_box(&exact)))
    });
    g.bench_function("parent", |b| {
        b.iter(|| with_catch_all.lookup(black_box(&parent)))
    });
    g.bench_function("catch_all", |b| {
        b.iter(|| with_catch_all.lookup(black_box(&other)))
    });
    g.bench_function("miss_smart_host", |b| {
        b.iter(|| without.lookup(black_box(&other)))
    });
    g.bench_function("local", |b| b.iter(|| without.lookup(black_box(&local))));
    g.bench_function("explain_parent", |b| {
        b.iter(|| with_catch_all.explain(black_box(&parent)))
    });
    g.finish();

    let (table, _) = RouteTable::parse(&table_text(false), Origin::named("mailertable"))
        .expect("the generated table parses");
    let domain = |s: &str| Domain::parse(s).expect("a valid domain");
    let (exact, parent, miss) = (
        domain("host31337.dom337.example"),
        domain("a.b.sub23456.corp456.net"),
        domain("nowhere.example.org"),
    );
    let mut g = c.benchmark_group("table");
    g.bench_function("exact", |b| {
        b.iter(|| table.lookup(black_box(&exact)).map(|m| m.line()))
    });
    g.bench_function("parent", |b| {
        b.iter(|| table.lookup(black_box(&parent)).map(|m| m.line()))
    });
    g.bench_function("miss", |b| {
        b.iter(|| table.lookup(black_box(&miss)).map(|m| m.line()))
    });
    g.finish();

    let text = table_text(true);
    let mut g = c.benchmark_group("load");
    g.sample_size(10);
    g.bench_function("parse_100k", |b| {
        b.iter(|| {
            RouteTable::parse(black_box(&text), Origin::named("mailertable")).map(|t| t.0.len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
