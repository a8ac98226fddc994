//! An LMTP client (RFC 2033) for a mail store that delivers itself, such as Dovecot's `lmtp`
//! service, on a Unix socket or a TCP address.
//!
//! The session is SMTP's with `LHLO` for `EHLO`, and one difference that matters: after the
//! final dot the server answers once for *each* recipient it accepted, in `RCPT` order, so one
//! mailbox can be over quota while the others took the message. Each reply becomes that
//! recipient's outcome. Replies are read by the ESMTP transport's parser and the data is
//! dot-stuffed by its stuffer.
//!
//! A full mailbox is never a reason to bounce: `5.2.2` (Dovecot's "Quota exceeded" with
//! `quota_full_tempfail = no`) is reported as a deferral with status 4.2.2, so the message waits
//! until the user makes room. Everything else keeps the class the server gave.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::address::ReversePath;
use crate::envelope::BodyType;
use crate::status::{Diagnostic, EnhancedStatus, Outcome, Reply, Severity};
use crate::transport::esmtp::{Capabilities, DotStuffer, ReplyError, Timeouts, parse_reply};

use super::location::LmtpTarget;

/// Why an LMTP session failed as a whole (every recipient of the message shares it).
#[derive(Debug, thiserror::Error)]
pub enum LmtpError {
    /// The socket could not be reached.
    #[error("cannot connect to LMTP server {target}: {source}")]
    Connect {
        /// The server.
        target: String,
        /// The OS error.
        source: io::Error,
    },
    /// Reading or writing failed, or the server closed the connection.
    #[error("LMTP server {target}: connection lost {during}: {source}")]
    Io {
        /// The server.
        target: String,
        /// What the client was doing.
        during: &'static str,
        /// The error.
        source: io::Error,
    },
    /// No answer in time.
    #[error("LMTP server {target}: no answer within {}s {during}", timeout.as_secs())]
    Timeout {
        /// The server.
        target: String,
        /// What the client was waiting for.
        during: &'static str,
        /// The limit.
        timeout: Duration,
    },
    /// The server sent something that is not a reply.
    #[error("LMTP server {target}: {source}")]
    Protocol {
        /// The server.
        target: String,
        /// What was wrong.
        source: ReplyError,
    },
    /// The server refused the session or the transaction (greeting, LHLO, MAIL, DATA).
    #[error("LMTP server {target} refused {during}: {reply}")]
    Refused {
        /// The server.
        target: String,
        /// The command refused.
        during: &'static str,
        /// Its reply.
        reply: Reply,
    },
}

impl LmtpError {
    /// Temporary, except a permanent refusal of the transaction.
    pub fn severity(&self) -> Severity {
        match self {
            LmtpError::Refused { reply, .. } if reply.is_permanent() => Severity::Permanent,
            _ => Severity::Temporary,
        }
    }

    /// The outcome for every recipient of the message.
    pub fn outcome(&self) -> Outcome {
        match self {
            LmtpError::Refused { reply, .. } => {
                let mut d = Diagnostic::remote(reply.clone());
                d.text = self.to_string();
                classify(reply, d)
            }
            LmtpError::Connect { .. } => {
                Outcome::deferred(EnhancedStatus::new(4, 4, 1), self.to_string())
            }
            LmtpError::Timeout { .. } => {
                Outcome::deferred(EnhancedStatus::new(4, 4, 2), self.to_string())
            }
            LmtpError::Io { .. } => {
                Outcome::deferred(EnhancedStatus::new(4, 4, 2), self.to_string())
            }
            LmtpError::Protocol { .. } => {
                Outcome::deferred(EnhancedStatus::new(4, 5, 0), self.to_string())
            }
        }
    }
}

/// A reply as an outcome, with a full mailbox deferred rather than failed.
fn classify(reply: &Reply, diagnostic: Diagnostic) -> Outcome {
    if reply.is_positive() {
        return Outcome::Delivered {
            reply: reply.clone(),
        };
    }
    let status = reply.status();
    if status.class() == 5 && status.subject() == 2 && status.detail() == 2 {
        let mut d = diagnostic;
        d.status = EnhancedStatus::new(4, 2, 2);
        d.text = format!("{} (deferred until the mailbox has room)", d.text);
        return Outcome::Deferred(d);
    }
    if reply.is_permanent() {
        Outcome::Failed(diagnostic)
    } else {
        Outcome::Deferred(diagnostic)
    }
}

/// The outcome of one reply to `RCPT` or to the data.
pub fn reply_outcome(reply: &Reply) -> Outcome {
    classify(reply, Diagnostic::remote(reply.clone()))
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// An open LMTP session, ready for a transaction.
pub struct LmtpSession {
    stream: Box<dyn Stream>,
    buf: Vec<u8>,
    target: String,
    timeouts: Timeouts,
    capabilities: Capabilities,
}

impl std::fmt::Debug for LmtpSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LmtpSession")
            .field("target", &self.target)
            .finish()
    }
}

/// One message for [`LmtpSession::send`].
#[derive(Debug, Clone, Copy)]
pub struct LmtpMessage<'a> {
    /// The envelope sender.
    pub sender: &'a ReversePath,
    /// What `RCPT TO` names, in order.
    pub recipients: &'a [String],
    /// The message, CRLF line ends, not dot-stuffed.
    pub body: &'a [u8],
    /// The body type declared at submission.
    pub body_type: BodyType,
    /// The envelope needs SMTPUTF8.
    pub smtputf8: bool,
}

impl LmtpSession {
    /// Connects, reads the greeting and says `LHLO hostname`.
    pub async fn connect(
        target: &LmtpTarget,
        hostname: &str,
        timeouts: Timeouts,
    ) -> Result<LmtpSession, LmtpError> {
        let name = target.to_string();
        let connect = async {
            let s: Box<dyn Stream> = match target {
                LmtpTarget::Unix(path) => Box::new(tokio::net::UnixStream::connect(path).await?),
                LmtpTarget::Tcp(addr) => Box::new(tokio::net::TcpStream::connect(addr).await?),
            };
            Ok::<_, io::Error>(s)
        };
        let stream = match tokio::time::timeout(timeouts.connect, connect).await {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => {
                return Err(LmtpError::Connect {
                    target: name,
                    source,
                });
            }
            Err(_) => {
                return Err(LmtpError::Timeout {
                    target: name,
                    during: "connecting",
                    timeout: timeouts.connect,
                });
            }
        };
        let mut s = LmtpSession {
            stream,
            buf: Vec::with_capacity(1024),
            target: name,
            timeouts,
            capabilities: Capabilities::default(),
        };
        let greeting = s
            .reply("waiting for the greeting", timeouts.greeting)
            .await?;
        if greeting.code() != 220 {
            return Err(s.refused("the session", greeting));
        }
        let lhlo = s
            .command(format!("LHLO {hostname}\r\n"), "LHLO", timeouts.helo)
            .await?;
        if !lhlo.is_positive() {
            return Err(s.refused("LHLO", lhlo));
        }
        s.capabilities = Capabilities::parse(&lhlo);
        Ok(s)
    }

    fn refused(&self, during: &'static str, reply: Reply) -> LmtpError {
        LmtpError::Refused {
            target: self.target.clone(),
            during,
            reply,
        }
    }

    async fn reply(&mut self, during: &'static str, limit: Duration) -> Result<Reply, LmtpError> {
        loop {
            match parse_reply(&self.buf) {
                Ok(Some((reply, used))) => {
                    self.buf.drain(..used);
                    return Ok(reply);
                }
                Ok(None) => {}
                Err(source) => {
                    return Err(LmtpError::Protocol {
                        target: self.target.clone(),
                        source,
                    });
                }
            }
            let mut chunk = [0u8; 4096];
            let n = match tokio::time::timeout(limit, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) => {
                    return Err(LmtpError::Io {
                        target: self.target.clone(),
                        during,
                        source: io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the server closed the connection",
                        ),
                    });
                }
                Ok(Ok(n)) => n,
                Ok(Err(source)) => {
                    return Err(LmtpError::Io {
                        target: self.target.clone(),
                        during,
                        source,
                    });
                }
                Err(_) => {
                    return Err(LmtpError::Timeout {
                        target: self.target.clone(),
                        during,
                        timeout: limit,
                    });
                }
            };
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn write(&mut self, bytes: &[u8], during: &'static str) -> Result<(), LmtpError> {
        let limit = self.timeouts.data_block;
        match tokio::time::timeout(limit, self.stream.write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(LmtpError::Io {
                target: self.target.clone(),
                during,
                source,
            }),
            Err(_) => Err(LmtpError::Timeout {
                target: self.target.clone(),
                during,
                timeout: limit,
            }),
        }
    }

    async fn command(
        &mut self,
        line: String,
        during: &'static str,
        limit: Duration,
    ) -> Result<Reply, LmtpError> {
        self.write(line.as_bytes(), during).await?;
        self.reply(during, limit).await
    }

    /// Sends one message: an outcome per recipient, in order. `Err` when the transaction
    /// failed as a whole (before any recipient got a reply of its own after the data); a
    /// session error after the data defers the recipients whose replies did not come.
    pub async fn send(&mut self, m: &LmtpMessage<'_>) -> Result<Vec<Outcome>, LmtpError> {
        let mut mail = format!("MAIL FROM:{}", m.sender);
        if m.body_type == BodyType::EightBitMime && self.capabilities.eight_bit_mime {
            mail.push_str(" BODY=8BITMIME");
        }
        if m.smtputf8 && self.capabilities.smtputf8 {
            mail.push_str(" SMTPUTF8");
        }
        mail.push_str("\r\n");
        let t = self.timeouts;
        let reply = self.command(mail, "MAIL FROM", t.mail).await?;
        if !reply.is_positive() {
            return Err(self.refused("MAIL FROM", reply));
        }
        let mut outcomes: Vec<Option<Outcome>> = vec![None; m.recipients.len()];
        let mut accepted = Vec::new();
        for (i, rcpt) in m.recipients.iter().enumerate() {
            let reply = self
                .command(format!("RCPT TO:<{rcpt}>\r\n"), "RCPT TO", t.rcpt)
                .await?;
            if reply.is_positive() {
                accepted.push(i);
            } else {
                outcomes[i] = Some(reply_outcome(&reply));
            }
        }
        if accepted.is_empty() {
            let _ = self.command("RSET\r\n".into(), "RSET", t.rset).await;
            return Ok(outcomes
                .into_iter()
                .map(|o| o.expect("invariant: every refused recipient has an outcome"))
                .collect());
        }
        let reply = self.command("DATA\r\n".into(), "DATA", t.data_init).await?;
        if reply.code() != 354 {
            return Err(self.refused("DATA", reply));
        }
        let mut wire = Vec::with_capacity(m.body.len() + m.body.len() / 64 + 8);
        let mut stuffer = DotStuffer::new();
        stuffer.push(m.body, &mut wire);
        stuffer.finish(&mut wire);
        self.write(&wire, "sending the message").await?;
        for &i in &accepted {
            match self
                .reply("waiting for the reply to the data", t.data_term)
                .await
            {
                Ok(reply) => outcomes[i] = Some(reply_outcome(&reply)),
                Err(e) => {
                    let o = e.outcome();
                    for slot in outcomes.iter_mut().filter(|o| o.is_none()) {
                        *slot = Some(o.clone());
                    }
                    break;
                }
            }
        }
        Ok(outcomes
            .into_iter()
            .map(|o| o.expect("invariant: every recipient has an outcome by now"))
            .collect())
    }

    /// Ends the session politely.
    pub async fn quit(mut self) {
        let limit = self.timeouts.quit;
        let _ = self.command("QUIT\r\n".into(), "QUIT", limit).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(code: u16, status: &str, text: &str) -> Reply {
        Reply::new(code, Some(status.parse().unwrap()), text).unwrap()
    }

    /// A scripted LMTP server: answers each line with the next reply of `script` (a reply of
    /// `""` reads the data up to the dot without answering), then closes.
    async fn scripted(script: Vec<&'static str>) -> (tempfile::TempDir, LmtpTarget) {
        use tokio::io::{AsyncBufReadExt, BufReader};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lmtp");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let (r, mut w) = s.into_split();
            let mut r = BufReader::new(r);
            w.write_all(b"220 scripted LMTP\r\n").await.unwrap();
            let mut line = String::new();
            for reply in script {
                line.clear();
                if r.read_line(&mut line).await.unwrap() == 0 {
                    return;
                }
                if line.starts_with("DATA") {
                    w.write_all(reply.as_bytes()).await.unwrap();
                    loop {
                        line.clear();
                        r.read_line(&mut line).await.unwrap();
                        if line == ".\r\n" {
                            break;
                        }
                    }
                    continue;
                }
                w.write_all(reply.as_bytes()).await.unwrap();
            }
        });
        (dir, LmtpTarget::Unix(path))
    }

    fn message<'a>(sender: &'a ReversePath, rcpts: &'a [String]) -> LmtpMessage<'a> {
        LmtpMessage {
            sender,
            recipients: rcpts,
            body: b"Subject: x\r\n\r\nbody\r\n",
            body_type: BodyType::SevenBit,
            smtputf8: false,
        }
    }

    #[tokio::test]
    async fn each_accepted_recipient_gets_its_own_reply_and_a_drop_defers_the_rest() {
        let (_dir, target) = scripted(vec![
            "250-scripted\r\n250 PIPELINING\r\n",
            "250 2.1.0 ok\r\n",
            "250 2.1.5 ok\r\n",
            "550 5.1.1 <ghost> User doesn't exist\r\n",
            "250 2.1.5 ok\r\n",
            // After DATA: the reply for the first accepted recipient, then the server dies.
            "354 go\r\n250 2.0.0 <bob> Saved\r\n",
        ])
        .await;
        let mut s = LmtpSession::connect(&target, "mx.example", Timeouts::default())
            .await
            .unwrap();
        let sender = ReversePath::parse("a@example.com").unwrap();
        let rcpts = vec!["bob".to_string(), "ghost".to_string(), "carol".to_string()];
        let o = s.send(&message(&sender, &rcpts)).await.unwrap();
        assert!(matches!(o[0], Outcome::Delivered { .. }), "{:?}", o[0]);
        assert!(
            matches!(&o[1], Outcome::Failed(d) if d.status.to_string() == "5.1.1"),
            "{:?}",
            o[1]
        );
        match &o[2] {
            Outcome::Deferred(d) => {
                assert_eq!(d.status.to_string(), "4.4.2");
                assert!(
                    d.text
                        .contains("connection lost waiting for the reply to the data"),
                    "{}",
                    d.text
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_refused_transaction_applies_to_every_recipient() {
        let (_dir, target) = scripted(vec!["250 scripted\r\n", "451 4.3.0 try later\r\n"]).await;
        let mut s = LmtpSession::connect(&target, "mx.example", Timeouts::default())
            .await
            .unwrap();
        let sender = ReversePath::parse("a@example.com").unwrap();
        let rcpts = vec!["bob".to_string()];
        let e = s.send(&message(&sender, &rcpts)).await.unwrap_err();
        assert!(matches!(e.outcome(), Outcome::Deferred(_)));
        assert!(
            e.to_string()
                .contains("refused MAIL FROM: 451 4.3.0 try later"),
            "{e}"
        );
        let gone = LmtpTarget::Unix("/nonexistent/lmtp".into());
        let e = LmtpSession::connect(&gone, "mx", Timeouts::default())
            .await
            .unwrap_err();
        assert!(matches!(e.outcome(), Outcome::Deferred(d) if d.status.to_string() == "4.4.1"));
    }

    #[test]
    fn a_full_mailbox_defers_instead_of_bouncing() {
        let o = reply_outcome(&reply(
            552,
            "5.2.2",
            "<bob> Quota exceeded (mailbox for user is full)",
        ));
        match o {
            Outcome::Deferred(d) => {
                assert_eq!(d.status.to_string(), "4.2.2");
                assert!(d.text.contains("Quota exceeded"), "{}", d.text);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            reply_outcome(&reply(550, "5.1.1", "<x> User doesn't exist")),
            Outcome::Failed(_)
        ));
        assert!(matches!(
            reply_outcome(&reply(451, "4.3.0", "later")),
            Outcome::Deferred(_)
        ));
        assert!(matches!(
            reply_outcome(&reply(250, "2.0.0", "<bob> Saved")),
            Outcome::Delivered { .. }
        ));
    }
}
