//! Three engines share one queue on a real PostgreSQL (a private cluster) and deliver to a real
//! smtp-sink: each engine is `examples/queue_node`, built through `postrider.toml` with
//! `spool = "postgresql://…"`, a process of its own that the test kills with SIGKILL at random
//! moments and restarts. Every accepted message is delivered, none is lost, duplicates stay
//! within what the killed engine had in flight, and its leased messages are delivered by the
//! others once the lease ends. A PostgreSQL restart in the middle of submissions answers them
//! with temporary errors, never with a queue id, and the engines recover on their own.
//!
//! Needs Debian's `postgresql` and `postfix` (for smtp-sink).

mod support;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use rand::Rng;
use support::postgres::PgCluster;
use support::queue_node::{Answer, Node, socket_url};
use support::sink::Sink;

/// Lease of the nodes: short, so that a killed node's messages come back quickly.
const LEASE: Duration = Duration::from_secs(2);

fn write_config(dir: &Path, url: &str, sink_port: u16) -> std::path::PathBuf {
    let path = dir.join("postrider.toml");
    std::fs::write(
        &path,
        format!(
            "hostname = \"node.test.example\"\n\
             spool = \"{url}\"\n\
             smart_host = \"[127.0.0.1]:{sink_port}\"\n\
             [queue]\n\
             scan_interval = \"10s\"\n\
             shutdown_grace = \"2s\"\n"
        ),
    )
    .unwrap();
    path
}

/// The `X-Tag` of every message the sink received, with how often it came.
fn delivered_tags(sink: &Sink) -> HashMap<String, usize> {
    let mut tags = HashMap::new();
    for message in sink.dumped() {
        if let Some(tag) = message
            .lines()
            .find_map(|l| l.strip_prefix("X-Tag: "))
            .map(|t| t.trim().to_string())
        {
            *tags.entry(tag).or_insert(0) += 1;
        }
    }
    tags
}

/// Waits (real time, at most `limit`) until the sink holds every tag of `accepted`.
async fn wait_delivered(
    sink: &Sink,
    accepted: &HashSet<String>,
    limit: Duration,
) -> HashMap<String, usize> {
    let deadline = Instant::now() + limit;
    loop {
        let counted = sink.counts().messages as usize;
        if counted >= accepted.len() {
            let tags = delivered_tags(sink);
            if accepted.iter().all(|t| tags.contains_key(t)) || Instant::now() > deadline {
                return tags;
            }
        }
        if Instant::now() > deadline {
            return delivered_tags(sink);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn leased_by(cluster: &PgCluster, db: &str, node: &str) -> HashSet<String> {
    cluster
        .psql(
            db,
            &format!(
                "SELECT id FROM postrider_messages WHERE lease_owner = '{node}' \
                 AND lease_until > now()"
            ),
        )
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

fn still_queued(cluster: &PgCluster, db: &str, ids: &HashSet<String>) -> usize {
    if ids.is_empty() {
        return 0;
    }
    let list: Vec<String> = ids.iter().map(|i| format!("'{i}'")).collect();
    cluster
        .psql(
            db,
            &format!(
                "SELECT count(*) FROM postrider_messages WHERE id IN ({})",
                list.join(",")
            ),
        )
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_engines_deliver_ten_thousand_messages_while_one_is_killed_at_random_ten_times() {
    const MESSAGES: usize = 10_000;
    const ROUNDS: usize = 10;
    const WINDOW: usize = 32;
    let cluster = PgCluster::start();
    let db_url = cluster.database();
    let db = PgCluster::dbname_of(&db_url).to_string();
    let sink = Sink::start_with(&[], true).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &socket_url(cluster.socket_dir(), &db),
        sink.port(),
    );
    let lease = format!("{}s", LEASE.as_secs());
    let mut generation = [1usize; 3];
    let names = ["a", "b", "c"];
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| Node::start(&config, &format!("{}1", names[i]), &lease, dir.path()))
        .collect();
    let mut retired: Vec<Node> = Vec::new();
    let mut rng = rand::rng();
    let mut in_flight_at_kill = 0usize;
    let mut takeover = Vec::new();
    let per_round = MESSAGES / (ROUNDS + 1);
    let mut next = 0usize;
    let started = Instant::now();
    for round in 0..=ROUNDS {
        let end = if round == ROUNDS {
            MESSAGES
        } else {
            next + per_round
        };
        let kill_after = next + rng.random_range(0..per_round);
        let victim = rng.random_range(0..3);
        while next < end {
            let node = next % 3;
            // At most WINDOW submissions waiting per node, as SMTP clients wait for their
            // 250: what a killed node had not answered is all that can go unanswered.
            let wait = Instant::now();
            while nodes[node].outstanding() >= WINDOW && wait.elapsed() < Duration::from_secs(30) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let tag = format!("m{next}");
            if !nodes[node].submit(&tag, "rcpt@sink.test") {
                // Its input is gone: hand the message to the next node.
                let other = (node + 1) % 3;
                assert!(nodes[other].submit(&tag, "rcpt@sink.test"));
            }
            next += 1;
            if round < ROUNDS && next == kill_after {
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..300))).await;
                let name = nodes[victim].name.clone();
                nodes[victim].kill9();
                let killed_at = Instant::now();
                let leased = leased_by(&cluster, &db, &name);
                in_flight_at_kill += leased.len();
                generation[victim] += 1;
                let fresh = Node::start(
                    &config,
                    &format!("{}{}", names[victim], generation[victim]),
                    &lease,
                    dir.path(),
                );
                retired.push(std::mem::replace(&mut nodes[victim], fresh));
                // Its leased messages must be delivered by the others once the lease ends.
                let limit = LEASE + Duration::from_secs(5);
                while still_queued(&cluster, &db, &leased) > 0 && killed_at.elapsed() < limit {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let left = still_queued(&cluster, &db, &leased);
                assert_eq!(
                    left,
                    0,
                    "round {round}: {left} of the {} messages {name} held are still queued {:?} \
                     after the kill",
                    leased.len(),
                    killed_at.elapsed()
                );
                takeover.push((leased.len(), killed_at.elapsed()));
            }
        }
    }
    // Every answer the nodes gave (a killed node's unanswered submissions are unknown).
    let total = |nodes: &Vec<Node>| -> usize { nodes.iter().map(|n| n.answers().len()).sum() };
    let mut seen = total(&nodes);
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = total(&nodes);
        if now == seen {
            break;
        }
        seen = now;
    }
    let answers: Vec<(String, Answer)> = nodes
        .iter()
        .chain(&retired)
        .flat_map(|n| n.answers())
        .collect();
    let accepted: HashSet<String> = answers
        .iter()
        .filter(|(_, a)| matches!(a, Answer::Queued(_)))
        .map(|(t, _)| t.clone())
        .collect();
    let refused: Vec<&(String, Answer)> = answers
        .iter()
        .filter(|(_, a)| !matches!(a, Answer::Queued(_)))
        .collect();
    assert!(
        refused.is_empty(),
        "refused submissions: {:?}",
        &refused[..refused.len().min(5)]
    );
    assert!(
        accepted.len() >= MESSAGES - WINDOW * ROUNDS,
        "only {} of {MESSAGES} answered: the killed nodes cannot have had that many unanswered",
        accepted.len()
    );
    let tags = wait_delivered(&sink, &accepted, Duration::from_secs(180)).await;
    let lost: Vec<&String> = accepted.iter().filter(|t| !tags.contains_key(*t)).collect();
    let duplicates: usize = tags.values().map(|n| n - 1).sum();
    let took = started.elapsed();
    eprintln!(
        "shared queue: {} accepted, {} delivered ({} duplicates, bound {in_flight_at_kill}), \
         {ROUNDS} kills, take-over (messages held, time to delivered) {takeover:?}, {took:?}",
        accepted.len(),
        tags.len(),
        duplicates
    );
    assert!(
        lost.is_empty(),
        "{} accepted messages never arrived, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    assert!(
        duplicates <= in_flight_at_kill,
        "{duplicates} duplicates, more than the {in_flight_at_kill} messages the killed nodes held"
    );
    for n in &mut nodes {
        n.stop(Duration::from_secs(10));
    }
    assert_eq!(
        cluster.psql(&db, "SELECT count(*) FROM postrider_messages"),
        "0",
        "the queue is empty at the end"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_postgresql_restarts_submissions_fail_temporarily_and_the_engines_recover() {
    let cluster = PgCluster::start();
    let db_url = cluster.database();
    let db = PgCluster::dbname_of(&db_url).to_string();
    let sink = Sink::start_with(&[], true).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &socket_url(cluster.socket_dir(), &db),
        sink.port(),
    );
    let mut nodes: Vec<Node> = ["a", "b", "c"]
        .iter()
        .map(|n| Node::start(&config, n, "2s", dir.path()))
        .collect();
    let submit_round = |nodes: &mut Vec<Node>, prefix: &str, n: usize| {
        for i in 0..n {
            assert!(nodes[i % 3].submit(&format!("{prefix}{i}"), "rcpt@sink.test"));
        }
    };
    let answered = |nodes: &Vec<Node>| -> usize { nodes.iter().map(|n| n.answers().len()).sum() };
    submit_round(&mut nodes, "before", 600);
    let deadline = Instant::now() + Duration::from_secs(60);
    while answered(&nodes) < 600 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(answered(&nodes), 600);

    cluster.stop();
    submit_round(&mut nodes, "down", 90);
    let deadline = Instant::now() + Duration::from_secs(90);
    while answered(&nodes) < 690 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let during: Vec<(String, Answer)> = nodes
        .iter()
        .flat_map(|n| n.answers())
        .filter(|(t, _)| t.starts_with("down"))
        .collect();
    assert_eq!(
        during.len(),
        90,
        "every submission is answered while the database is down"
    );
    for (tag, answer) in &during {
        assert!(
            matches!(answer, Answer::Temporary(_)),
            "{tag} was answered {answer:?} while PostgreSQL was stopped"
        );
    }

    cluster.start_again();
    // The first uses of connections the restart broke may fail; the engines recover alone.
    let mut after_accepted = 0;
    for attempt in 0..20 {
        let before = answered(&nodes);
        submit_round(&mut nodes, &format!("after{attempt}-"), 30);
        let deadline = Instant::now() + Duration::from_secs(30);
        while answered(&nodes) < before + 30 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let prefix = format!("after{attempt}-");
        after_accepted = nodes
            .iter()
            .flat_map(|n| n.answers())
            .filter(|(t, a)| t.starts_with(&prefix) && matches!(a, Answer::Queued(_)))
            .count();
        if after_accepted == 30 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        after_accepted, 30,
        "the engines did not recover after the restart"
    );

    let accepted: HashSet<String> = nodes
        .iter()
        .flat_map(|n| n.answers())
        .filter(|(_, a)| matches!(a, Answer::Queued(_)))
        .map(|(t, _)| t)
        .collect();
    let tags = wait_delivered(&sink, &accepted, Duration::from_secs(120)).await;
    let lost: Vec<&String> = accepted.iter().filter(|t| !tags.contains_key(*t)).collect();
    assert!(
        lost.is_empty(),
        "{} accepted messages lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    assert!(
        !tags.keys().any(|t| t.starts_with("down")),
        "a submission refused while the database was down was delivered"
    );
    for n in &mut nodes {
        n.stop(Duration::from_secs(10));
    }
    let left = cluster.psql(&db, "SELECT count(*) FROM postrider_messages");
    assert_eq!(left, "0", "{}", nodes[0].log());
}
