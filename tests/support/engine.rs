//! A scripted transport and a domain-based router for engine tests. The transport is the seam:
//! it answers per recipient by a rule the test sets (and may change mid-test), records every
//! call with the engine clock's time, and can take virtual time to answer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use postrider::engine::{Clock, DeliveryEvent, Engine, Limits, RetryPolicy};
use postrider::spool::MemorySpool;
use postrider::transport::{Next, Reports};
use postrider::{
    Address, Delivery, EnhancedStatus, Outcome, RecipientReport, RemoteHost, Reply, ReversePath,
    Route, RouteError, Router, Transport,
};

/// How the scripted transport answers one recipient.
pub type Rule = Box<dyn Fn(&Address) -> Outcome + Send + Sync>;

/// One call of the transport.
#[derive(Debug, Clone)]
pub struct Call {
    pub at: SystemTime,
    pub route: Route,
    pub messages: Vec<(ReversePath, Vec<Address>, Bytes)>,
}

pub struct ScriptedTransport {
    rule: Mutex<Rule>,
    pub calls: Mutex<Vec<Call>>,
    clock: Clock,
    /// Virtual time each call takes.
    pub latency: Mutex<Duration>,
    running: AtomicUsize,
    pub max_running: AtomicUsize,
    /// Answer like a next hop that advertised DSN (it takes over success/delay notices).
    pub dsn_capable: std::sync::atomic::AtomicBool,
    /// Every message handed to the engine's `Reports::record`, with the virtual time.
    pub recorded: Mutex<Vec<(postrider::QueueId, SystemTime)>>,
    /// Every message the transport started to send, with the virtual time.
    pub sent: Mutex<Vec<(postrider::QueueId, SystemTime)>>,
}

impl ScriptedTransport {
    pub fn new(clock: Clock, rule: Rule) -> Arc<ScriptedTransport> {
        Arc::new(ScriptedTransport {
            rule: Mutex::new(rule),
            calls: Mutex::new(Vec::new()),
            clock,
            latency: Mutex::new(Duration::ZERO),
            running: AtomicUsize::new(0),
            max_running: AtomicUsize::new(0),
            dsn_capable: std::sync::atomic::AtomicBool::new(false),
            recorded: Mutex::new(Vec::new()),
            sent: Mutex::new(Vec::new()),
        })
    }

    pub fn set_rule(&self, rule: Rule) {
        *self.rule.lock().unwrap() = rule;
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// Calls that carried mail for `rcpt`.
    pub fn calls_for(&self, rcpt: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| {
                c.messages
                    .iter()
                    .any(|(_, rs, _)| rs.iter().any(|r| r.to_string() == rcpt))
            })
            .collect()
    }
}

#[async_trait]
impl Transport for ScriptedTransport {
    async fn deliver(&self, route: &Route, batch: &[Delivery], reports: &dyn Reports) {
        let now_running = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(now_running, Ordering::SeqCst);
        self.calls.lock().unwrap().push(Call {
            at: self.clock.now(),
            route: route.clone(),
            messages: batch
                .iter()
                .map(|d| {
                    (
                        d.envelope.sender.clone(),
                        d.recipients
                            .iter()
                            .map(|&i| d.envelope.recipients[i].address.clone())
                            .collect(),
                        d.body.clone(),
                    )
                })
                .collect(),
        });
        // Each message takes `latency` of virtual time, and is reported as it ends, as a
        // session reports each message when the reply to its data arrives.
        let latency = *self.latency.lock().unwrap();
        for d in batch {
            if reports.stopping() {
                break;
            }
            self.sent.lock().unwrap().push((d.id, self.clock.now()));
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            let mut out = Vec::new();
            for &i in &d.recipients {
                let outcome = (self.rule.lock().unwrap())(&d.envelope.recipients[i].address);
                let dsn_passed_on = matches!(outcome, Outcome::Delivered { .. })
                    && self.dsn_capable.load(Ordering::SeqCst);
                let mut r = RecipientReport::new(
                    d.id,
                    i,
                    outcome,
                    Some(RemoteHost {
                        name: Some("mx.test.example".into()),
                        addr: Some("127.0.0.1".parse().unwrap()),
                    }),
                );
                r.dsn_passed_on = dsn_passed_on;
                out.push(r);
            }
            self.recorded.lock().unwrap().push((d.id, self.clock.now()));
            if reports.record(d.id, out).await == Next::Stop {
                break;
            }
        }
        self.running.fetch_sub(1, Ordering::SeqCst);
    }
}

pub fn ok() -> Outcome {
    Outcome::from_reply(Reply::new(250, Some(EnhancedStatus::OK), "Ok: queued").unwrap())
}

pub fn temp() -> Outcome {
    Outcome::from_reply(
        Reply::new(451, Some(EnhancedStatus::new(4, 3, 0)), "try again later").unwrap(),
    )
}

pub fn perm() -> Outcome {
    Outcome::from_reply(
        Reply::new(550, Some(EnhancedStatus::new(5, 1, 1)), "no such user here").unwrap(),
    )
}

pub fn unreachable() -> Outcome {
    Outcome::deferred(
        EnhancedStatus::new(4, 4, 1),
        "Connection timed out with mx.test.example.",
    )
}

/// Routes by domain: `reject.example` → `error:5.7.0:550`, `later.example` → `error:4.4.1:451`,
/// anything else → direct MX.
pub struct DomainRouter;

#[async_trait]
impl Router for DomainRouter {
    async fn route(&self, rcpt: &Address) -> Result<Route, RouteError> {
        Ok(match rcpt.domain().as_str() {
            "reject.example" => Route::Reject {
                reply: Reply::new(
                    550,
                    Some(EnhancedStatus::new(5, 7, 0)),
                    "mail to this domain is not accepted",
                )
                .unwrap(),
            },
            "later.example" => Route::Reject {
                reply: Reply::new(451, Some(EnhancedStatus::new(4, 4, 1)), "try later").unwrap(),
            },
            _ => Route::direct_mx(rcpt.domain()),
        })
    }
}

pub struct Harness {
    pub engine: Engine,
    pub transport: Arc<ScriptedTransport>,
    pub spool: MemorySpool,
    pub events: tokio::sync::broadcast::Receiver<DeliveryEvent>,
}

pub fn exact_retry() -> RetryPolicy {
    RetryPolicy {
        jitter: 0.0,
        ..RetryPolicy::default()
    }
}

/// The default limits, with the spool re-read every `interval` (as an engine that shares its
/// spool with other processes does).
pub fn rescanning_every(interval: Duration) -> Limits {
    Limits {
        queue_scan_interval: Some(interval),
        ..Limits::default()
    }
}

pub async fn harness(rule: Rule, retry: RetryPolicy, limits: Limits) -> Harness {
    harness_on(MemorySpool::new(), rule, retry, limits).await
}

pub async fn harness_on(
    spool: MemorySpool,
    rule: Rule,
    retry: RetryPolicy,
    limits: Limits,
) -> Harness {
    let clock = Clock::tokio();
    let transport = ScriptedTransport::new(clock, rule);
    let engine = Engine::builder()
        .hostname("mta.test.example".parse().unwrap())
        .spool(Arc::new(spool.clone()))
        .router(Arc::new(DomainRouter))
        .transport(transport.clone())
        .retry(retry)
        .limits(limits)
        .clock(clock)
        .start()
        .await
        .unwrap();
    let events = engine.subscribe();
    Harness {
        engine,
        transport,
        spool,
        events,
    }
}

impl Harness {
    /// The next event; fails the test if none comes within 30 virtual days.
    pub async fn next_event(&mut self) -> DeliveryEvent {
        tokio::time::timeout(Duration::from_secs(30 * 86_400), self.events.recv())
            .await
            .expect("no delivery event within 30 virtual days")
            .expect("event stream closed")
    }

    /// The next event for `rcpt`, skipping others.
    pub async fn next_event_for(&mut self, rcpt: &str) -> DeliveryEvent {
        loop {
            let e = self.next_event().await;
            if e.recipient.to_string() == rcpt {
                return e;
            }
        }
    }

    pub async fn submit(&self, from: &str, to: &[&str], body: &str) -> postrider::QueueId {
        let env = postrider::Envelope::new(
            ReversePath::parse(from).unwrap(),
            to.iter().map(|t| Address::parse(t).unwrap()),
        );
        self.engine.submit(env, body.to_string()).await.unwrap()
    }
}

/// Lets the engine's tasks run until everything is idle, without moving virtual time much.
pub async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(1)).await;
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}
