//! The cost of DKIM signing at submission: `DkimSigner::sign` (the From: lookup, the
//! 8BITMIME check that finds nothing to convert, relaxed canonicalisation, SHA-256 of the
//! body and the signature) on 1 KiB and 1 MiB messages, with RSA-2048 and Ed25519, beside
//! the machine's limit for the one unavoidable per-octet step: ring's SHA-256 of the same
//! octets, measured in the same run; and the conversion of an 8-bit 1 MiB text part that
//! signing does first. Figures are recorded in benches/README.md.

use std::hint::black_box;
use std::path::Path;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use postrider::dkim::{DkimKeyConfig, DkimSigner, MessageSigner};
use postrider::{Address, Envelope, ReversePath};

fn signer(file: &str) -> DkimSigner {
    DkimSigner::load(&[DkimKeyConfig {
        domain: "ourtest.com".parse().expect("a domain"),
        selector: "bench".into(),
        key: Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/dkim")
            .join(file),
        headers: None,
    }])
    .expect("the test key loads")
}

/// A text message of `size` octets, 7-bit, 72-character lines.
fn message(size: usize) -> Bytes {
    let mut m = String::from(
        "From: Voicemail <vm@ourtest.com>\r\nTo: <alice@example.org>\r\nSubject: bench\r\n\
         Date: Mon, 30 Nov 2026 10:00:00 +0000\r\nMessage-ID: <bench@ourtest.com>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n",
    );
    let line = "The quick brown fox jumps over the lazy dog; voicemail 0123456789 abc\r\n";
    while m.len() < size {
        m.push_str(line);
    }
    m.truncate(size - 2);
    m.push_str("\r\n");
    Bytes::from(m)
}

fn bench(c: &mut Criterion) {
    let envelope = Envelope::new(
        ReversePath::parse("vm@ourtest.com").expect("an address"),
        [Address::parse("alice@example.org").expect("an address")],
    );
    let signers = [
        ("rsa2048", signer("rsa2048.pem")),
        ("ed25519", signer("ed25519.pem")),
    ];
    for (label, size) in [("1KiB", 1024usize), ("1MiB", 1024 * 1024)] {
        let msg = message(size);
        let mut group = c.benchmark_group(format!("dkim/{label}"));
        group.throughput(Throughput::Bytes(size as u64));
        if size > 64 * 1024 {
            group.sample_size(30);
        }
        group.bench_function(BenchmarkId::new("sha256", label), |b| {
            b.iter(|| ring::digest::digest(&ring::digest::SHA256, black_box(&msg)))
        });
        for (name, s) in &signers {
            group.bench_function(BenchmarkId::new(*name, label), |b| {
                b.iter(|| {
                    s.sign(black_box(&envelope), black_box(msg.clone()))
                        .expect("signing works")
                })
            });
        }
        group.finish();
    }
    // What converting before signing costs when there is something to convert: a 1 MiB
    // UTF-8 text part sent as 8bit becomes quoted-printable.
    let eight: String =
        "Grüße aus dem Büro, écoutez la pièce jointe. 0123456789\r\n".repeat(1024 * 1024 / 60);
    let msg = Bytes::from(format!(
        "From: <vm@ourtest.com>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; \
         charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{eight}"
    ));
    let mut group = c.benchmark_group("downgrade/1MiB-8bit");
    group.throughput(Throughput::Bytes(msg.len() as u64));
    group.sample_size(30);
    group.bench_function("sha256", |b| {
        b.iter(|| ring::digest::digest(&ring::digest::SHA256, black_box(&msg)))
    });
    group.bench_function("convert", |b| {
        b.iter(|| {
            postrider::message::downgrade(black_box(&msg), postrider::message::Target::SEVEN_BIT)
                .expect("converts")
                .len()
        })
    });
    for (name, s) in &signers {
        group.bench_function(*name, |b| {
            b.iter(|| {
                s.sign(black_box(&envelope), black_box(msg.clone()))
                    .expect("signing works")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
