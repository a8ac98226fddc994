//! One message over an open session: MAIL FROM, RCPT TO for each recipient, DATA, the
//! dot-stuffed body, and a per-recipient outcome from the replies.
//!
//! With PIPELINING (RFC 2920) MAIL, every RCPT and DATA leave in one write and the replies are
//! read in order; without it each command waits for its reply. A 452 "too many recipients"
//! (RFC 5321 §4.5.3.1.10) sends the remaining recipients in a further transaction on the same
//! session once the first was accepted.

use std::borrow::Cow;

use bytes::Bytes;

use super::classify::{self, reply_outcome};
use super::command;
use super::data::DotStuffer;
use super::session::{Peer, Session, SessionError, TRANSCRIPT_TARGET};
use super::timeouts::Phase;
use crate::message::{Target, downgrade};
use crate::status::{Diagnostic, EnhancedStatus, Outcome, Reply};
use crate::transport::Delivery;

/// How much of the body is stuffed and written per write (each under the data block timeout).
const CHUNK: usize = 64 * 1024;

/// The most commands pipelined before reading their replies: 100 commands of at most 512
/// octets fit any socket buffer, and a message has rarely more recipients.
const PIPELINE_GROUP: usize = 100;

/// What happened to one message.
#[derive(Debug, Default)]
pub(crate) struct MessageResult {
    /// An outcome for every recipient asked for.
    pub outcomes: Vec<(usize, Outcome)>,
    /// A transaction is still open on the server (MAIL accepted, no completed DATA): RSET it
    /// before the next message.
    pub open: bool,
    /// The session cannot go on (dropped, timed out, 421); why.
    pub lost: Option<Diagnostic>,
}

/// Sends `d` to the recipients `rcpts` (indices into its envelope, all valid).
pub(crate) async fn send_message(s: &mut Session, d: &Delivery, rcpts: &[usize]) -> MessageResult {
    let mut result = MessageResult::default();
    let fail_all = |result: &mut MessageResult, diag: Diagnostic| {
        for &i in rcpts {
            result.outcomes.push((i, classify::outcome(diag.clone())));
        }
    };
    if let Some(limit) = s.caps.size_limit()
        && d.body.len() as u64 > limit
    {
        fail_all(&mut result, classify::too_big(&s.peer, d.body.len(), limit));
        return result;
    }
    // 8-bit parts for a server without 8BITMIME, and lines too long for any server, are
    // re-encoded here; a signed message was converted before it was signed, so this leaves
    // it (and its signature) alone.
    let target = Target {
        eight_bit: s.caps.eight_bit_mime,
        utf8_headers: s.caps.smtputf8,
    };
    let body = match downgrade(&d.body, target) {
        Ok(Cow::Borrowed(_)) => d.body.clone(),
        Ok(Cow::Owned(converted)) => {
            tracing::info!(peer = %s.peer, "{}: re-encoded for {} ({} octets to {})", d.id, s.peer, d.body.len(), converted.len());
            Bytes::from(converted)
        }
        Err(e) => {
            fail_all(&mut result, classify::cannot_convert(&s.peer, &e));
            return result;
        }
    };
    if let Some(limit) = s.caps.size_limit()
        && body.len() as u64 > limit
    {
        // It fitted as submitted, but not once re-encoded for this server.
        fail_all(&mut result, classify::too_big(&s.peer, body.len(), limit));
        return result;
    }
    if d.envelope.needs_smtputf8() && !s.caps.smtputf8 {
        fail_all(&mut result, classify::smtputf8_unsupported(&s.peer));
        return result;
    }
    let mut todo = rcpts.to_vec();
    loop {
        let mut round = Round::new(&todo, s.peer.clone());
        if let Err(e) = run(s, d, &body, &mut round).await {
            let diag = classify::session_error(&e, &s.peer);
            round.abandon(Outcome::Deferred(diag.clone()), diag);
        }
        result.outcomes.append(&mut round.outcomes);
        result.open = round.open;
        if round.lost.is_some() {
            result.lost = round.lost;
            return result;
        }
        if round.too_many.is_empty() {
            return result;
        }
        if !round.delivered {
            // No progress: the rest waits for the next queue run rather than loop here.
            for (i, reply) in round.too_many {
                result
                    .outcomes
                    .push((i, Outcome::Deferred(Diagnostic::remote(reply))));
            }
            return result;
        }
        todo = round.too_many.into_iter().map(|(i, _)| i).collect();
    }
}

/// One MAIL ... DATA transaction.
struct Round<'a> {
    todo: &'a [usize],
    peer: Peer,
    outcomes: Vec<(usize, Outcome)>,
    accepted: Vec<usize>,
    too_many: Vec<(usize, Reply)>,
    open: bool,
    delivered: bool,
    lost: Option<Diagnostic>,
}

impl<'a> Round<'a> {
    fn new(todo: &'a [usize], peer: Peer) -> Round<'a> {
        Round {
            todo,
            peer,
            outcomes: Vec::new(),
            accepted: Vec::new(),
            too_many: Vec::new(),
            open: false,
            delivered: false,
            lost: None,
        }
    }

    /// Every recipient without an outcome yet gets `outcome`; the session is over.
    fn abandon(&mut self, outcome: Outcome, why: Diagnostic) {
        for &i in self.todo {
            if !self.outcomes.iter().any(|(j, _)| *j == i) {
                self.outcomes.push((i, outcome.clone()));
            }
        }
        self.accepted.clear();
        self.too_many.clear();
        self.lost = Some(why);
    }

    /// The server said 421: it is closing the connection.
    fn closing(&mut self, reply: &Reply) {
        let diag = classify::session_reply(&self.peer, reply);
        self.abandon(Outcome::Deferred(Diagnostic::remote(reply.clone())), diag);
    }

    fn mail_refused(&mut self, reply: &Reply) {
        for &i in self.todo {
            self.outcomes
                .push((i, reply_outcome(reply.clone(), &self.peer)));
        }
    }

    fn rcpt_reply(&mut self, i: usize, reply: Reply) {
        if reply.is_positive() {
            self.accepted.push(i);
        } else if too_many_recipients(&reply) {
            self.too_many.push((i, reply));
        } else {
            self.outcomes.push((i, reply_outcome(reply, &self.peer)));
        }
    }

    /// The DATA command (or the message) was refused: every accepted recipient shares it.
    fn data_refused(&mut self, reply: &Reply) {
        let outcome = if reply.is_positive() {
            Outcome::Deferred(Diagnostic {
                status: EnhancedStatus::new(4, 5, 0),
                reply: Some(reply.clone()),
                text: format!("unexpected reply to DATA from {}: {reply}", self.peer),
            })
        } else {
            reply_outcome(reply.clone(), &self.peer)
        };
        for i in std::mem::take(&mut self.accepted) {
            self.outcomes.push((i, outcome.clone()));
        }
    }
}

fn too_many_recipients(reply: &Reply) -> bool {
    reply.code() == 452
        && reply
            .enhanced()
            .is_none_or(|s| s == EnhancedStatus::new(4, 5, 3))
}

/// One transaction for `d`, whose body goes on the wire as `body` (converted for this server).
async fn run(
    s: &mut Session,
    d: &Delivery,
    body: &[u8],
    round: &mut Round<'_>,
) -> Result<(), SessionError> {
    let env = &d.envelope;
    let mail = command::mail_from(env, body.len(), &s.caps);
    let rcpts: Vec<(usize, String)> = round
        .todo
        .iter()
        .filter_map(|&i| {
            env.recipients
                .get(i)
                .map(|r| (i, command::rcpt_to(r, &s.caps)))
        })
        .collect();

    let data_reply = if s.caps.pipelining {
        let mut lines = Vec::with_capacity(rcpts.len() + 2);
        lines.push(mail);
        lines.extend(rcpts.iter().map(|(_, l)| l.clone()));
        lines.push("DATA".to_string());
        let last = lines.len() - 1;
        let mut replies = Vec::with_capacity(lines.len());
        // Groups bound what is in flight, so neither side can block writing while the other
        // is blocked writing too (RFC 2920 §3.1 on deadlock).
        for group in lines.chunks(PIPELINE_GROUP) {
            let phase = if replies.is_empty() {
                Phase::Mail
            } else {
                Phase::Rcpt
            };
            s.send_lines(group, phase).await?;
            for _ in group {
                let phase = match replies.len() {
                    0 => Phase::Mail,
                    n if n == last => Phase::DataInit,
                    _ => Phase::Rcpt,
                };
                let reply = s.read_reply(phase).await?;
                if reply.code() == 421 {
                    round.closing(&reply);
                    return Ok(());
                }
                replies.push(reply);
            }
        }
        let mut replies = replies.into_iter();
        let (Some(mail_reply), Some(data_reply)) = (replies.next(), replies.next_back()) else {
            unreachable!("invariant: MAIL and DATA were both sent and answered");
        };
        let rcpt_replies: Vec<(usize, Reply)> =
            rcpts.iter().map(|(i, _)| *i).zip(replies).collect();
        if !mail_reply.is_positive() {
            round.mail_refused(&mail_reply);
            if data_reply.code() == 354 {
                // A server that let DATA through anyway gets an empty message to end it.
                end_empty_data(s).await?;
            }
            return Ok(());
        }
        for (i, reply) in rcpt_replies {
            round.rcpt_reply(i, reply);
        }
        if round.accepted.is_empty() {
            if data_reply.code() == 354 {
                end_empty_data(s).await?;
            } else {
                round.open = true;
            }
            return Ok(());
        }
        data_reply
    } else {
        let mail_reply = s.command(&mail, Phase::Mail).await?;
        if mail_reply.code() == 421 {
            round.closing(&mail_reply);
            return Ok(());
        }
        if !mail_reply.is_positive() {
            round.mail_refused(&mail_reply);
            return Ok(());
        }
        round.open = true;
        let mut pending = rcpts.iter();
        while let Some((i, line)) = pending.next() {
            let reply = s.command(line, Phase::Rcpt).await?;
            if reply.code() == 421 {
                round.closing(&reply);
                return Ok(());
            }
            if too_many_recipients(&reply) {
                // The server will refuse the rest too; they go in the next transaction.
                for (j, _) in pending.by_ref() {
                    round.too_many.push((*j, reply.clone()));
                }
            }
            round.rcpt_reply(*i, reply);
        }
        if round.accepted.is_empty() {
            return Ok(());
        }
        let data_reply = s.command("DATA", Phase::DataInit).await?;
        if data_reply.code() == 421 {
            round.closing(&data_reply);
            return Ok(());
        }
        data_reply
    };

    round.open = true;
    if data_reply.code() != 354 {
        round.data_refused(&data_reply);
        return Ok(());
    }
    send_body(s, body).await?;
    let reply = s.read_reply(Phase::DataTerm).await?;
    round.open = false;
    if reply.is_positive() {
        round.delivered = true;
        for i in std::mem::take(&mut round.accepted) {
            round.outcomes.push((
                i,
                Outcome::Delivered {
                    reply: reply.clone(),
                },
            ));
        }
    } else {
        round.data_refused(&reply);
        if reply.code() == 421 {
            round.lost = Some(classify::session_reply(&round.peer, &reply));
        }
    }
    Ok(())
}

async fn end_empty_data(s: &mut Session) -> Result<(), SessionError> {
    tracing::debug!(target: TRANSCRIPT_TARGET, peer = %s.peer, ">>> . (no recipient accepted)");
    s.write(b".\r\n", Phase::DataBlock).await?;
    s.read_reply(Phase::DataTerm).await?;
    Ok(())
}

async fn send_body(s: &mut Session, body: &[u8]) -> Result<(), SessionError> {
    tracing::debug!(target: TRANSCRIPT_TARGET, peer = %s.peer, ">>> <message data: {} bytes>", body.len());
    let mut stuffer = DotStuffer::new();
    let mut wire = Vec::with_capacity(body.len().min(CHUNK) + CHUNK / 32 + 5);
    let mut chunks = body.chunks(CHUNK).peekable();
    while let Some(chunk) = chunks.next() {
        stuffer.push(chunk, &mut wire);
        if chunks.peek().is_some() {
            s.write(&wire, Phase::DataBlock).await?;
            wire.clear();
        }
    }
    stuffer.finish(&mut wire);
    tracing::debug!(target: TRANSCRIPT_TARGET, peer = %s.peer, ">>> .");
    s.write(&wire, Phase::DataBlock).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_452_with_4_5_3_or_no_status_means_too_many_recipients() {
        let r = |code, s: Option<EnhancedStatus>| Reply::new(code, s, "x").unwrap();
        assert!(too_many_recipients(&r(452, None)));
        assert!(too_many_recipients(&r(
            452,
            Some(EnhancedStatus::new(4, 5, 3))
        )));
        assert!(!too_many_recipients(&r(
            452,
            Some(EnhancedStatus::new(4, 2, 2))
        )));
        assert!(!too_many_recipients(&r(451, None)));
    }
}
