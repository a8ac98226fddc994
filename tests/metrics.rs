//! Metrics: the engine records through the `metrics` facade (an embedder's recorder gets
//! them: here Prometheus's, installed in-process, on tokio's paused clock with a scripted
//! transport), and the relay daemon serves them over HTTP from `[metrics] listen`, scraped here
//! after it relayed a real message to a real smtp-sink.

mod support;

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use postrider::engine::Limits;
use support::engine::*;
use support::relay::{Client, Relay, free_port};
use support::sink::Sink;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The recorder of this test binary (a process has one global recorder).
fn recorder() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        PrometheusBuilder::new()
            .install_recorder()
            .expect("the only recorder of this process")
    })
}

/// The value of the sample whose line starts with `series` (name and labels as rendered).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(start_paused = true)]
async fn an_embedders_recorder_gets_outcomes_by_next_hop_deferral_classes_and_queue_gauges() {
    let handle = recorder();
    let rule: Rule = Box::new(|a| match a.local_part() {
        "ok" => ok(),
        "later" => temp(),
        _ => perm(),
    });
    let mut h = harness(rule, exact_retry(), Limits::default()).await;
    h.submit(
        "pbx@sender.example",
        &[
            "ok@metrics.example",
            "later@metrics.example",
            "no@metrics.example",
        ],
        "x\r\n",
    )
    .await;
    for _ in 0..4 {
        // Three outcomes and the bounce's delivery.
        h.next_event().await;
    }
    settle().await;
    let text = handle.render();
    let hop = "next_hop=\"metrics.example\"";
    assert_eq!(
        sample(
            &text,
            &format!("postrider_deliveries_total{{outcome=\"delivered\",{hop}}}")
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            &format!("postrider_deliveries_total{{outcome=\"deferred\",{hop}}}")
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "postrider_deferrals_total{class=\"4.3\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "postrider_submissions_total{result=\"queued\"}"),
        Some(2.0),
        "the message and its bounce: {text}"
    );
    assert!(
        text.contains("postrider_spool_insert_seconds_count 2")
            || text.contains("postrider_spool_insert_seconds{quantile=\"0.5\"}"),
        "{text}"
    );
    assert_eq!(
        sample(&text, "postrider_queue_messages"),
        Some(1.0),
        "the deferred message stays queued: {text}"
    );
    assert!(
        sample(&text, "postrider_queue_bytes").is_some_and(|b| b >= 3.0),
        "{text}"
    );
    assert!(text.contains("# HELP postrider_deliveries_total"), "{text}");
}

async fn scrape(port: u16) -> String {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut out))
        .await
        .expect("the exporter answers within 10 s")
        .unwrap();
    out
}

#[tokio::test]
async fn the_relay_daemon_serves_its_metrics_for_prometheus() {
    let sink = Sink::start().await;
    let metrics_port = free_port();
    let relay = Relay::start(
        sink.port(),
        &format!("[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n"),
    );
    let (mut c, _) = Client::connect(relay.port()).await;
    c.command("EHLO client.example").await;
    assert!(
        c.command("MAIL FROM:<a@example.com>")
            .await
            .starts_with("250")
    );
    assert!(
        c.command("RCPT TO:<b@example.org>")
            .await
            .starts_with("250")
    );
    assert!(c.command("DATA").await.starts_with("354"));
    let queued = c.command("Subject: scraped\r\n\r\nhello\r\n.").await;
    assert!(queued.starts_with("250"), "{queued}");
    c.command("QUIT").await;
    sink.wait_for(1, 0, Duration::from_secs(30)).await;
    let hop = format!("next_hop=\"[127.0.0.1]:{}\"", sink.port());
    let mut text = String::new();
    for _ in 0..50 {
        text = scrape(metrics_port).await;
        if sample(
            &text,
            &format!("postrider_deliveries_total{{outcome=\"delivered\",{hop}}}"),
        ) == Some(1.0)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(
        sample(
            &text,
            &format!("postrider_deliveries_total{{outcome=\"delivered\",{hop}}}")
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "postrider_connection_cache_total{result=\"miss\"}"),
        Some(1.0),
        "{text}"
    );
    assert!(text.contains("postrider_spool_insert_seconds"), "{text}");
    assert!(
        text.contains("postrider_delivery_attempt_seconds"),
        "{text}"
    );
    drop(relay);
}
