//! Load through the library's SMTP server: 200 concurrent clients, 5 messages each, into an
//! engine on an `FsSpool` that relays to Postfix's smtp-sink. Every message acknowledged with
//! 250 must reach the sink exactly once; the peak RSS of the whole test process (server,
//! engine and clients) is printed.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use postrider::server::{Endpoint, ListenerKind, Server, ServerLimits, serve};
use postrider::spool::FsSpool;
use support::server::{Client, engine_relaying_to};
use support::sink::Sink;
use tokio::sync::watch;

const CLIENTS: usize = 200;
const MESSAGES: usize = 5;

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_times_five_messages_each_arrive_exactly_once() {
    let sink = Sink::start_with(&[], true).await;
    let dir = tempfile::tempdir().unwrap();
    let (engine, router, hostname) = engine_relaying_to(
        sink.port(),
        Arc::new(FsSpool::open(dir.path().join("spool")).unwrap()),
    )
    .await;
    let limits = ServerLimits {
        max_connections_per_client: CLIENTS,
        ..ServerLimits::default()
    };
    let server = Server::builder(engine.clone(), router, hostname)
        .limits(limits)
        .build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, mut stopped) = watch::channel(false);
    let served = tokio::spawn(serve(
        listener,
        server,
        Endpoint::new(ListenerKind::Smtp),
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        },
    ));

    let start = Instant::now();
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        clients.push(tokio::spawn(async move {
            let (mut s, greeting) = Client::connect(addr).await;
            assert!(greeting.starts_with("220 "), "{greeting}");
            s.command("EHLO load.example").await;
            let mut acked = Vec::new();
            for m in 0..MESSAGES {
                let tag = format!("load-{c}-{m}");
                s.send(&format!(
                    "MAIL FROM:<client{c}@example.test>\r\nRCPT TO:<rcpt{c}@example.org>\r\nDATA\r\n"
                ))
                .await;
                assert_eq!(&s.reply().await[..3], "250");
                assert_eq!(&s.reply().await[..3], "250");
                assert_eq!(&s.reply().await[..3], "354");
                let body = format!("Subject: {tag}\r\nX-Tag: {tag}\r\n\r\n{}\r\n.", "x".repeat(3000));
                let r = s.command(&body).await;
                if r.starts_with("250 2.0.0 OK queued as ") {
                    acked.push(tag);
                } else {
                    panic!("{tag}: {r}");
                }
            }
            s.command("QUIT").await;
            acked
        }));
    }
    let mut acked = Vec::new();
    for c in clients {
        acked.extend(c.await.unwrap());
    }
    let accepted_in = start.elapsed();
    assert_eq!(acked.len(), CLIENTS * MESSAGES);
    let counts = sink
        .wait_for((CLIENTS * MESSAGES) as u64, 0, Duration::from_secs(120))
        .await;
    let delivered_in = start.elapsed();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for m in sink.dumped() {
        let tag = m
            .lines()
            .find_map(|l| l.strip_prefix("X-Tag: "))
            .unwrap_or_else(|| panic!("a message without X-Tag: {m}"))
            .trim()
            .to_string();
        *seen.entry(tag).or_default() += 1;
    }
    for tag in &acked {
        assert_eq!(
            seen.get(tag),
            Some(&1),
            "{tag} arrived {:?} times",
            seen.get(tag)
        );
    }
    assert_eq!(
        seen.len(),
        acked.len(),
        "the sink holds messages nobody acknowledged"
    );
    eprintln!(
        "server load: {} messages from {CLIENTS} concurrent clients accepted in {:.2} s, at the sink after {:.2} s ({} messages counted); peak RSS {} MiB",
        acked.len(),
        accepted_in.as_secs_f64(),
        delivered_in.as_secs_f64(),
        counts.messages,
        peak_rss_kib() / 1024
    );
    let _ = stop.send(true);
    served.await.unwrap();
    engine.shutdown().await;
}
