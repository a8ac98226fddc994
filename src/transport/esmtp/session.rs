//! One SMTP client connection: reading replies and writing commands under per-phase time
//! limits, upgrading to TLS, and logging the conversation.
//!
//! The conversation is logged at debug level under the target `postrider::smtp`, one event
//! per line (`>>> MAIL FROM:<a@b>`, `<<< 250 2.1.0 Ok`); AUTH secrets appear as `<redacted>`.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::ehlo::Capabilities;
use super::reply::{ReplyError, parse_reply};
use super::timeouts::{Phase, Timeouts};
use super::tls::describe_handshake_error;
use crate::address::Domain;
use crate::status::Reply;
use crate::transport::RemoteHost;

/// The `tracing` target of the SMTP conversation log.
pub const TRANSCRIPT_TARGET: &str = "postrider::smtp";

/// The host at the other end, as diagnostics name it: `mx.example.com [192.0.2.1]`, with
/// `:port` when the port is not 25.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Peer {
    pub name: Option<Domain>,
    pub addr: IpAddr,
    pub port: u16,
}

impl Peer {
    pub(crate) fn remote(&self) -> RemoteHost {
        RemoteHost {
            name: self.name.as_ref().map(|d| d.to_string()),
            addr: Some(self.addr),
        }
    }

    /// `smtp.gmail.com:587` or `[192.0.2.1]:587`: how a user writes the server in a config.
    pub(crate) fn host_port(&self) -> String {
        match &self.name {
            Some(n) => format!("{n}:{}", self.port),
            None => format!("[{}]:{}", self.addr, self.port),
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(n) = &self.name {
            write!(f, "{n} ")?;
        }
        write!(f, "[{}]", self.addr)?;
        if self.port != 25 {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

/// What ended a session abnormally. [`super::classify`] turns it into a diagnostic.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    /// The phase's time limit passed.
    #[error("timeout {phase}")]
    Timeout { phase: Phase },
    /// The server closed the connection.
    #[error("connection closed {phase}")]
    Closed { phase: Phase },
    /// The connection failed (refused, reset, unreachable).
    #[error("{source} ({phase})")]
    Io { phase: Phase, source: io::Error },
    /// The server sent something that is not an SMTP reply.
    #[error("bad reply {phase}: {error}")]
    Protocol { phase: Phase, error: ReplyError },
    /// The TLS handshake failed.
    #[error("TLS handshake failed: {reason}")]
    Tls { reason: String },
}

enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Only between taking the TCP stream out for the handshake and putting the TLS one back.
    Upgrading,
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Conn::Upgrading => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Conn::Upgrading => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Conn::Upgrading => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Conn::Upgrading => Poll::Ready(Ok(())),
        }
    }
}

/// An open SMTP connection.
pub(crate) struct Session {
    conn: Conn,
    rbuf: Vec<u8>,
    pub peer: Peer,
    timeouts: Timeouts,
    /// What the server offered in its last EHLO reply (empty after HELO).
    pub caps: Capabilities,
    /// True once TLS is up (STARTTLS or implicit).
    pub tls: bool,
    /// The TLS version in use (`TLS 1.3`), once TLS is up.
    pub tls_protocol: Option<String>,
    /// True when TLS is up and the server's certificate was authenticated (`verify`, DANE,
    /// MTA-STS `enforce`): what REQUIRETLS needs.
    pub authenticated: bool,
    /// Our end of the connection: the address the SPF pre-flight checks when no public address
    /// is configured.
    pub local: Option<IpAddr>,
    /// When the connection was made.
    opened: Instant,
}

impl Session {
    /// Opens the TCP connection.
    pub(crate) async fn connect(peer: Peer, timeouts: Timeouts) -> Result<Session, SessionError> {
        let phase = Phase::Connect;
        let addr = SocketAddr::new(peer.addr, peer.port);
        tracing::debug!(target: TRANSCRIPT_TARGET, peer = %peer, "connecting");
        let stream = match timeout(phase.limit(&timeouts), TcpStream::connect(addr)).await {
            Err(_) => return Err(SessionError::Timeout { phase }),
            Ok(Err(source)) => return Err(SessionError::Io { phase, source }),
            Ok(Ok(s)) => s,
        };
        // Commands are written whole; waiting for more data to fill a segment only adds latency.
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().ok().map(|a| a.ip());
        Ok(Session {
            local,
            conn: Conn::Plain(stream),
            rbuf: Vec::with_capacity(1024),
            peer,
            timeouts,
            caps: Capabilities::default(),
            tls: false,
            tls_protocol: None,
            authenticated: false,
            opened: Instant::now(),
        })
    }

    /// How long the connection has been open.
    pub(crate) fn age(&self) -> std::time::Duration {
        self.opened.elapsed()
    }

    /// True when the server has neither closed the connection nor sent anything since its last
    /// reply, i.e. a parked session can carry another transaction. Checked without blocking,
    /// by a peek at the socket itself (not at tokio's readiness, which may not know yet).
    pub(crate) fn is_idle_and_open(&self) -> bool {
        use std::os::fd::AsRawFd;
        if !self.rbuf.is_empty() {
            return false;
        }
        let tcp = match &self.conn {
            Conn::Plain(s) => s,
            Conn::Tls(s) => s.get_ref().0,
            Conn::Upgrading => return false,
        };
        let mut byte = 0u8;
        // SAFETY: the descriptor is the open socket `tcp` owns, and the one-byte buffer
        // outlives the call; MSG_PEEK leaves any data where it is.
        let n = unsafe {
            libc::recv(
                tcp.as_raw_fd(),
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        // 0: the server closed it; > 0: it said something unasked (a 421 before closing).
        n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
    }

    /// Runs the TLS handshake on the connection (after a 220 to STARTTLS, or at once for
    /// implicit TLS). The capabilities are forgotten: RFC 3207 requires a new EHLO.
    pub(crate) async fn start_tls(
        &mut self,
        connector: &TlsConnector,
        name: ServerName<'static>,
    ) -> Result<(), SessionError> {
        if !self.rbuf.is_empty() {
            // Bytes the server sent before the handshake would be taken as if they came over
            // TLS: the STARTTLS injection attack (CVE-2011-0411 in reverse). Refuse.
            return Err(SessionError::Tls {
                reason: "the server sent unencrypted data after agreeing to STARTTLS".into(),
            });
        }
        let Conn::Plain(tcp) = std::mem::replace(&mut self.conn, Conn::Upgrading) else {
            return Err(SessionError::Tls {
                reason: "TLS is already active".into(),
            });
        };
        let phase = Phase::Tls;
        let handshake = connector.connect(name, tcp);
        match timeout(phase.limit(&self.timeouts), handshake).await {
            Err(_) => Err(SessionError::Timeout { phase }),
            Ok(Err(e)) => Err(SessionError::Tls {
                reason: describe_handshake_error(&e),
            }),
            Ok(Ok(tls)) => {
                let (_, conn) = tls.get_ref();
                tracing::debug!(
                    target: TRANSCRIPT_TARGET,
                    peer = %self.peer,
                    version = ?conn.protocol_version(),
                    cipher = ?conn.negotiated_cipher_suite().map(|c| c.suite()),
                    "TLS established"
                );
                self.tls_protocol = conn.protocol_version().map(|v| match v {
                    rustls::ProtocolVersion::TLSv1_3 => "TLS 1.3".to_string(),
                    rustls::ProtocolVersion::TLSv1_2 => "TLS 1.2".to_string(),
                    other => format!("{other:?}"),
                });
                self.conn = Conn::Tls(Box::new(tls));
                self.tls = true;
                self.caps = Capabilities::default();
                Ok(())
            }
        }
    }

    /// Reads one complete reply within the phase's time limit.
    pub(crate) async fn read_reply(&mut self, phase: Phase) -> Result<Reply, SessionError> {
        let deadline = Instant::now() + phase.limit(&self.timeouts);
        loop {
            match parse_reply(&self.rbuf) {
                Err(error) => return Err(SessionError::Protocol { phase, error }),
                Ok(Some((reply, used))) => {
                    self.rbuf.drain(..used);
                    self.log_reply(&reply);
                    return Ok(reply);
                }
                Ok(None) => {}
            }
            let mut chunk = [0u8; 4096];
            let n = match timeout_at(deadline, self.conn.read(&mut chunk)).await {
                Err(_) => return Err(SessionError::Timeout { phase }),
                Ok(Err(e)) if is_closed(&e) => return Err(SessionError::Closed { phase }),
                Ok(Err(source)) => return Err(SessionError::Io { phase, source }),
                Ok(Ok(n)) => n,
            };
            if n == 0 {
                return Err(SessionError::Closed { phase });
            }
            self.rbuf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Writes raw bytes (already logged by the caller) within the phase's time limit.
    pub(crate) async fn write(&mut self, bytes: &[u8], phase: Phase) -> Result<(), SessionError> {
        let io = async {
            self.conn.write_all(bytes).await?;
            self.conn.flush().await
        };
        match timeout(phase.limit(&self.timeouts), io).await {
            Err(_) => Err(SessionError::Timeout { phase }),
            Ok(Err(e)) if is_closed(&e) => Err(SessionError::Closed { phase }),
            Ok(Err(source)) => Err(SessionError::Io { phase, source }),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// Writes several command lines in one write (RFC 2920 pipelining, or a single command).
    pub(crate) async fn send_lines(
        &mut self,
        lines: &[String],
        phase: Phase,
    ) -> Result<(), SessionError> {
        let mut wire = Vec::with_capacity(lines.iter().map(|l| l.len() + 2).sum());
        for line in lines {
            tracing::debug!(target: TRANSCRIPT_TARGET, peer = %self.peer, ">>> {line}");
            wire.extend_from_slice(line.as_bytes());
            wire.extend_from_slice(b"\r\n");
        }
        self.write(&wire, phase).await
    }

    /// Sends one command and reads its reply.
    pub(crate) async fn command(
        &mut self,
        line: &str,
        phase: Phase,
    ) -> Result<Reply, SessionError> {
        self.send_lines(&[line.to_string()], phase).await?;
        self.read_reply(phase).await
    }

    /// Sends a line carrying a secret, logging `shown` in its place, and reads the reply.
    pub(crate) async fn command_secret(
        &mut self,
        line: &str,
        shown: &str,
        phase: Phase,
    ) -> Result<Reply, SessionError> {
        tracing::debug!(target: TRANSCRIPT_TARGET, peer = %self.peer, ">>> {shown}");
        let mut wire = Vec::with_capacity(line.len() + 2);
        wire.extend_from_slice(line.as_bytes());
        wire.extend_from_slice(b"\r\n");
        self.write(&wire, phase).await?;
        self.read_reply(phase).await
    }

    /// QUIT, waiting briefly for the reply, then closes. Errors are of no consequence here: every
    /// outcome is known by now.
    pub(crate) async fn quit(mut self) {
        if self.command("QUIT", Phase::Quit).await.is_ok() {
            let _ = timeout(Phase::Quit.limit(&self.timeouts), self.conn.shutdown()).await;
        }
    }

    fn log_reply(&self, reply: &Reply) {
        let mut lines = reply.text().split('\n').peekable();
        let status = reply
            .enhanced()
            .map(|s| format!("{s} "))
            .unwrap_or_default();
        while let Some(line) = lines.next() {
            let sep = if lines.peek().is_some() { '-' } else { ' ' };
            tracing::debug!(
                target: TRANSCRIPT_TARGET,
                peer = %self.peer,
                "<<< {}{sep}{status}{line}",
                reply.code()
            );
        }
    }
}

fn is_closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_show_the_port_only_when_it_is_not_25() {
        let p = Peer {
            name: Some(Domain::parse("mx.example.com").unwrap()),
            addr: "192.0.2.1".parse().unwrap(),
            port: 25,
        };
        assert_eq!(p.to_string(), "mx.example.com [192.0.2.1]");
        let q = Peer {
            name: None,
            port: 587,
            ..p.clone()
        };
        assert_eq!(q.to_string(), "[192.0.2.1]:587");
        assert_eq!(q.host_port(), "[192.0.2.1]:587");
        assert_eq!(p.host_port(), "mx.example.com:25");
        assert_eq!(p.remote().to_string(), "mx.example.com. [192.0.2.1]");
    }
}
