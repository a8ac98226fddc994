//! The queue as `mailq` (`sendmail -bp`) shows it: sendmail's layout (queue.c's
//! `print_single_queue`), with 16-character ids, written one message at a time so a queue of
//! any size is listed without holding it in memory.
//!
//! ```text
//!                 /var/spool/postrider (1 request)
//! -------Q-ID----- --Size-- -----Q-Time----- ------------Sender/Recipient-----------
//! 0PC4F8X1RZ3A7KQ2      543 Tue Apr 12 11:21 <root@sipserver1.ourtest.com>
//!                  (Deferred: Connection timed out with ourtest.com.)
//!                                          <me@ourtest.com>
//!                 Total requests: 1
//! ```
//!
//! sendmail shows one status per message under the sender; postrider keeps one per recipient,
//! so a reason line precedes each run of pending recipients that share it (one line, as in
//! sendmail, when they all do). Reasons are not cut at 60 characters: the advice at their end
//! is the useful part. Delivered and failed recipients are not listed.
//!
//! ```
//! use postrider::engine::mailq::Mailq;
//! let mut out = Vec::new();
//! let mut listing = Mailq::start(&mut out, std::path::Path::new("/var/spool/postrider"), 0)?;
//! listing.finish()?;
//! assert_eq!(String::from_utf8(out)?, "/var/spool/postrider is empty\n\t\tTotal requests: 0\n");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::io::{self, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use super::admin::{QueueEntry, RecipientEntry};
use crate::spool::{QueuedMessage, RecipientStatus};

impl From<&QueuedMessage> for QueueEntry {
    /// The entry for a message read from the spool; `in_flight` is false, since finding out
    /// would take the message's lock, which could make the process delivering it skip it.
    fn from(m: &QueuedMessage) -> QueueEntry {
        QueueEntry {
            id: m.id,
            size: m.state.size,
            arrival: m.state.arrival,
            sender: m.envelope.sender.clone(),
            held: m.state.held,
            in_flight: false,
            next_attempt: m.state.next_attempt,
            attempts: m.state.attempts,
            recipients: m
                .envelope
                .recipients
                .iter()
                .zip(&m.state.recipients)
                .map(|(r, s)| RecipientEntry {
                    address: r.address.clone(),
                    status: s.status,
                    last: s.last.clone(),
                })
                .collect(),
        }
    }
}

/// A `mailq` listing being written: the heading (which needs the count), each entry as it
/// comes, then the total.
pub struct Mailq<W: Write> {
    out: W,
    count: usize,
    date: fn(SystemTime) -> String,
}

impl<W: Write> Mailq<W> {
    /// Writes the heading for `count` messages in the queue directory `dir` (shown as given:
    /// sendmail shows the full path), with arrival times in local time.
    pub fn start(out: W, dir: &Path, count: usize) -> io::Result<Mailq<W>> {
        Mailq::start_with_dates(out, dir, count, local_ctime16)
    }

    /// [`Mailq::start`] with another rendering of arrival times (tests use UTC).
    pub fn start_with_dates(
        mut out: W,
        dir: &Path,
        count: usize,
        date: fn(SystemTime) -> String,
    ) -> io::Result<Mailq<W>> {
        if count == 0 {
            writeln!(out, "{} is empty", dir.display())?;
        } else {
            let plural = if count == 1 { "" } else { "s" };
            writeln!(out, "\t\t{} ({count} request{plural})", dir.display())?;
            out.write_all(
                b"-------Q-ID----- --Size-- -----Q-Time----- ------------Sender/Recipient-----------\n",
            )?;
        }
        Ok(Mailq { out, count, date })
    }

    /// Writes one message.
    pub fn entry(&mut self, e: &QueueEntry) -> io::Result<()> {
        let flag = if e.in_flight { '*' } else { ' ' };
        write!(
            self.out,
            "{}{flag}{:>8} {} {}",
            e.id,
            e.size,
            (self.date)(e.arrival),
            e.sender
        )?;
        if e.held {
            self.out
                .write_all(b"\n     QUARANTINE: held by an administrator")?;
        }
        let mut shown: Option<&str> = None;
        for r in e
            .recipients
            .iter()
            .filter(|r| r.status == RecipientStatus::Pending)
        {
            if let Some(d) = &r.last
                && shown != Some(d.text.as_str())
            {
                write!(self.out, "\n{:17}(Deferred: {})", "", d.text)?;
                shown = Some(d.text.as_str());
            }
            write!(self.out, "\n\t\t\t\t\t <{}>", r.address)?;
        }
        self.out.write_all(b"\n")
    }

    /// Writes the total and hands the writer back.
    pub fn finish(mut self) -> io::Result<W> {
        writeln!(self.out, "\t\tTotal requests: {}", self.count)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// ctime(3)'s first 16 characters in local time, as mailq shows arrival: `Tue Apr 12 11:21`.
pub fn local_ctime16(t: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .try_into()
        .unwrap_or(libc::time_t::MAX);
    // SAFETY: an all-zero `tm` is a valid value; localtime_r only writes into it.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the duration of the call.
    let converted = unsafe { !libc::localtime_r(&secs, &mut tm).is_null() };
    let day = usize::try_from(tm.tm_wday).ok().and_then(|d| DAYS.get(d));
    let month = usize::try_from(tm.tm_mon).ok().and_then(|m| MONTHS.get(m));
    match (converted, day, month) {
        (true, Some(day), Some(month)) => format!(
            "{day} {month} {:>2} {:02}:{:02}",
            tm.tm_mday, tm.tm_hour, tm.tm_min
        ),
        _ => crate::time::rfc3339(t).chars().take(16).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::{Address, ReversePath};
    use crate::queue_id::QueueId;
    use crate::status::{Diagnostic, EnhancedStatus};
    use std::time::Duration;

    fn utc(t: SystemTime) -> String {
        crate::time::rfc3339(t)[..16].to_string()
    }

    fn recipient(addr: &str, status: RecipientStatus, why: Option<&str>) -> RecipientEntry {
        RecipientEntry {
            address: Address::parse(addr).unwrap(),
            status,
            last: why.map(|w| Diagnostic::local(EnhancedStatus::new(4, 4, 1), w)),
        }
    }

    #[test]
    fn each_run_of_pending_recipients_sharing_a_reason_gets_one_reason_line() {
        let arrival = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let e = QueueEntry {
            id: QueueId::parse("0PC4F8X1RZ3A7KQ2").unwrap(),
            size: 543,
            arrival,
            sender: ReversePath::parse("root@sipserver1.ourtest.com").unwrap(),
            held: true,
            in_flight: false,
            next_attempt: arrival,
            attempts: 2,
            recipients: vec![
                recipient("a@x.example", RecipientStatus::Pending, Some("timed out")),
                recipient("b@x.example", RecipientStatus::Pending, Some("timed out")),
                recipient("c@y.example", RecipientStatus::Delivered, None),
                recipient("d@z.example", RecipientStatus::Pending, Some("refused")),
            ],
        };
        let mut listing = Mailq::start_with_dates(Vec::new(), Path::new("/q"), 1, utc).unwrap();
        listing.entry(&e).unwrap();
        let text = String::from_utf8(listing.finish().unwrap()).unwrap();
        assert_eq!(
            text,
            format!(
                "\t\t/q (1 request)\n\
                 -------Q-ID----- --Size-- -----Q-Time----- ------------Sender/Recipient-----------\n\
                 0PC4F8X1RZ3A7KQ2      543 {} <root@sipserver1.ourtest.com>\n     \
                 QUARANTINE: held by an administrator\n\
                 {pad}(Deferred: timed out)\n\
                 \t\t\t\t\t <a@x.example>\n\
                 \t\t\t\t\t <b@x.example>\n\
                 {pad}(Deferred: refused)\n\
                 \t\t\t\t\t <d@z.example>\n\
                 \t\tTotal requests: 1\n",
                utc(arrival),
                pad = " ".repeat(17)
            )
        );
    }

    #[test]
    fn arrival_times_are_sixteen_characters_of_ctime() {
        let t = UNIX_EPOCH + Duration::from_secs(1_460_460_096);
        assert_eq!(local_ctime16(t).len(), 16);
    }
}
