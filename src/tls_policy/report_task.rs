//! The daemon's TLS-RPT loop: send the reports of finished days once an hour, flush the
//! counts to their file every minute, and on request (an administrator's "send now", a
//! test moving the day on) send what is due at a given time.
//!
//! One task does all of it, so reports are never sent twice at once and a stop never cuts a
//! send in half: [`ReportTask::stop`] lets the current send finish, flushes, and joins.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot};

use super::mta_sts::Clock;
use super::report::TlsReporter;
use crate::address::{Address, Domain};
use crate::engine::Engine;
use crate::resolve::DnsResolver;

/// When the loop sends and flushes.
#[derive(Clone)]
pub struct ReportSchedule {
    /// How often finished days are looked for (RFC 8460 §4.1 asks for reports soon after
    /// the window ends: within the hour after midnight UTC).
    pub send_every: Duration,
    /// How often changed counts are written to the counts file (at most this much counting
    /// is lost to a crash; a clean stop flushes).
    pub flush_every: Duration,
    /// The time the hourly send uses.
    pub clock: Clock,
}

impl Default for ReportSchedule {
    fn default() -> ReportSchedule {
        ReportSchedule {
            send_every: Duration::from_secs(3600),
            flush_every: Duration::from_secs(60),
            clock: Arc::new(SystemTime::now),
        }
    }
}

impl std::fmt::Debug for ReportSchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReportSchedule")
            .field("send_every", &self.send_every)
            .field("flush_every", &self.flush_every)
            .finish_non_exhaustive()
    }
}

/// Where the reports go through and whom they are from.
#[derive(Debug, Clone)]
pub struct ReportSender {
    /// The engine the reports are submitted to.
    pub engine: Engine,
    /// The resolver for the `_smtp._tls` records.
    pub dns: DnsResolver,
    /// This host's name (the report id's and contact's domain).
    pub submitter: Domain,
    /// The envelope and header sender of the reports.
    pub from: Address,
}

enum Command {
    SendDue {
        now: SystemTime,
        done: oneshot::Sender<usize>,
    },
    Stop,
}

/// The running loop of [`TlsReporter::spawn`].
#[derive(Debug)]
pub struct ReportTask {
    commands: mpsc::Sender<Command>,
    handle: tokio::task::JoinHandle<()>,
}

/// Asks a running [`ReportTask`] to send now; clone it freely.
#[derive(Debug, Clone)]
pub struct ReportTrigger {
    commands: mpsc::Sender<Command>,
}

impl ReportTrigger {
    /// Sends every report due at `now` (every day that ended before it), through the loop,
    /// and returns how many messages were queued; `None` when the loop has stopped.
    pub async fn send_due(&self, now: SystemTime) -> Option<usize> {
        let (done, answer) = oneshot::channel();
        self.commands
            .send(Command::SendDue { now, done })
            .await
            .ok()?;
        answer.await.ok()
    }
}

impl ReportTask {
    /// A handle that asks this loop to send now.
    pub fn trigger(&self) -> ReportTrigger {
        ReportTrigger {
            commands: self.commands.clone(),
        }
    }

    /// Stops the loop after the send it is on (never half a send: a report taken from the
    /// counts is queued or put back), flushes the counts, and waits for it to end. Call it
    /// before shutting the engine down: the loop submits through the engine.
    pub async fn stop(self) {
        let _ = self.commands.send(Command::Stop).await;
        let _ = self.handle.await;
    }
}

impl TlsReporter {
    /// Starts the daemon's loop: reports of finished days sent every
    /// [`ReportSchedule::send_every`] (the first look is at once, so days that ended while
    /// the daemon was down go out at start), counts flushed every
    /// [`ReportSchedule::flush_every`] and when the loop stops.
    pub fn spawn(self: Arc<Self>, sender: ReportSender, schedule: ReportSchedule) -> ReportTask {
        let (commands, mut inbox) = mpsc::channel(8);
        let handle = tokio::spawn(async move {
            let mut send = tokio::time::interval(schedule.send_every);
            let mut flush = tokio::time::interval(schedule.flush_every);
            send.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = send.tick() => {
                        self.send_and_flush(&sender, (schedule.clock)()).await;
                    }
                    _ = flush.tick() => self.flush_logged(),
                    command = inbox.recv() => match command {
                        Some(Command::SendDue { now, done }) => {
                            let queued = self.send_and_flush(&sender, now).await;
                            let _ = done.send(queued);
                        }
                        Some(Command::Stop) | None => break,
                    },
                }
            }
            self.flush_logged();
        });
        ReportTask { commands, handle }
    }

    async fn send_and_flush(&self, s: &ReportSender, now: SystemTime) -> usize {
        let queued = self
            .send_due(&s.engine, &s.dns, &s.submitter, &s.from, now)
            .await;
        // At once: a day taken out and queued must not be sent again after a crash.
        self.flush_logged();
        queued
    }

    fn flush_logged(&self) {
        if let Err(e) = self.flush() {
            tracing::warn!(target: "postrider::tls_rpt", "{e}");
        }
    }
}
