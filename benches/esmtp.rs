//! EsmtpTransport → Postfix's smtp-sink on loopback: 4 KiB messages in batches of 100 over one
//! pipelined session per batch (the transport alone, no engine or spool). Figures go in
//! benches/README.md.

#[path = "../tests/support/sink.rs"]
mod sink;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use postrider::resolve::StaticResolver;
use postrider::route::PolicyTable;
use postrider::transport::esmtp::{EsmtpConfig, EsmtpTransport};
use postrider::{
    Address, Delivery, Domain, Envelope, Host, Mailer, NextHop, Outcome, QueueId, ReversePath,
    Route,
};

const BATCH: usize = 100;

fn batch() -> Vec<Delivery> {
    let body = Bytes::from(format!(
        "Subject: bench\r\n\r\n{}",
        ("x".repeat(78) + "\r\n").repeat(50)
    ));
    (0..BATCH)
        .map(|_| {
            let env = Envelope::new(
                ReversePath::parse("bench@example.com").unwrap(),
                [Address::parse("rcpt@example.org").unwrap()],
            );
            Delivery {
                id: QueueId::generate(),
                recipients: vec![0],
                envelope: Arc::new(env),
                body: body.clone(),
            }
        })
        .collect()
}

fn transport_to_smtp_sink(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let sink = rt.block_on(sink::Sink::start());
    let transport = Arc::new(EsmtpTransport::new(
        EsmtpConfig::new(Domain::parse("bench.postrider.test").unwrap()),
        Arc::new(StaticResolver::new()),
        Arc::new(PolicyTable::new()),
    ));
    let route = Route::Relay {
        mailer: Mailer::Esmtp,
        hops: vec![NextHop::direct(
            Host::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            Some(sink.port()),
        )],
    };
    let mut group = c.benchmark_group("esmtp_to_smtp_sink");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.measurement_time(Duration::from_secs(10));
    for sessions in [1usize, 4] {
        group.bench_function(format!("{sessions}_sessions_x_100_msgs_4KiB"), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let transport = transport.clone();
                let route = route.clone();
                async move {
                    // `iters` batches of 100, spread over `sessions` concurrent deliver calls.
                    let batches: Vec<Vec<Delivery>> = (0..iters).map(|_| batch()).collect();
                    let start = Instant::now();
                    let mut tasks = Vec::new();
                    for lane in 0..sessions {
                        let mine: Vec<Vec<Delivery>> = batches
                            .iter()
                            .skip(lane)
                            .step_by(sessions)
                            .cloned()
                            .collect();
                        let t = transport.clone();
                        let route = route.clone();
                        tasks.push(tokio::spawn(async move {
                            for b in &mine {
                                let reports = postrider::transport::collect(&*t, &route, b).await;
                                assert!(
                                    reports
                                        .iter()
                                        .all(|r| matches!(r.outcome, Outcome::Delivered { .. })),
                                    "{reports:?}"
                                );
                            }
                        }));
                    }
                    for t in tasks {
                        t.await.unwrap();
                    }
                    // Per batch of 100 messages.
                    start.elapsed()
                }
            });
        });
    }
    group.finish();
}

criterion_group!(benches, transport_to_smtp_sink);
criterion_main!(benches);
