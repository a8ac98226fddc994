//! The accept loop, in the shape of mini-redis's `server::run`: accept until the shutdown
//! future completes, one task per session, connection limits checked before a session
//! starts, then tell every session to finish (`421` at its next command) and wait for them.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::session::{Duplex, Session, boxed};
use super::tls::TlsInfo;
use super::{Endpoint, Server, Shared};
use crate::queue_id::QueueId;

/// Serves one listener until `shutdown` completes, then lets every session end (each says
/// `421` at its next command; a message being submitted is finished first) and returns.
///
/// A `submissions` endpoint without TLS refuses every connection with `421` and logs why;
/// check endpoints with [`Endpoint::check`] at start-up.
pub async fn serve(
    listener: TcpListener,
    server: Server,
    endpoint: Endpoint,
    shutdown: impl Future<Output = ()>,
) {
    let (stop, stopped) = watch::channel(false);
    let endpoint = Arc::new(endpoint);
    let mut sessions = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let shared = server.shared.clone();
                    match Slot::take(&shared, peer.ip()) {
                        Ok(slot) => {
                            let endpoint = endpoint.clone();
                            let stopped = stopped.clone();
                            sessions.spawn(async move {
                                connection(&slot.shared, &endpoint, stream, peer, stopped).await;
                                drop(slot);
                            });
                        }
                        Err(reply) => {
                            tracing::info!(target: "postrider::server", "client [{}]: refused: {reply}", peer.ip());
                            sessions.spawn(async move {
                                let mut stream = stream;
                                let _ = stream.write_all(format!("{reply}\r\n").as_bytes()).await;
                                let _ = stream.shutdown().await;
                            });
                        }
                    }
                }
                // Out of descriptors, a connection reset before accept: keep serving.
                Err(e) => {
                    tracing::warn!(target: "postrider::server", "accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    let _ = stop.send(true);
    while sessions.join_next().await.is_some() {}
}

async fn connection(
    shared: &Shared,
    endpoint: &Endpoint,
    stream: TcpStream,
    peer: SocketAddr,
    stopped: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    if endpoint.kind == super::ListenerKind::Submissions {
        let Some(tls) = &endpoint.tls else {
            tracing::error!(target: "postrider::server", "submissions listener without a certificate: connection from [{}] refused", peer.ip());
            let mut stream = stream;
            let _ = stream.write_all(b"421 4.3.0 TLS not configured\r\n").await;
            return;
        };
        let accept = tokio_rustls::TlsAcceptor::from(tls.config()).accept(stream);
        let stream = match tokio::time::timeout(shared.timeouts.tls_handshake, accept).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::info!(target: "postrider::server", "client [{}]: TLS handshake failed: {e}", peer.ip());
                return;
            }
            Err(_) => {
                tracing::info!(target: "postrider::server", "client [{}]: TLS handshake timed out", peer.ip());
                return;
            }
        };
        let info = TlsInfo::of(stream.get_ref().1);
        let session = Session::new(shared, endpoint, Some(peer.ip()), Some(info), stopped).await;
        session.run(boxed(stream)).await;
        return;
    }
    let session = Session::new(shared, endpoint, Some(peer.ip()), None, stopped).await;
    session.run(boxed(stream)).await;
}

/// What one session of [`serve_session`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionReport {
    /// The messages it handed to the engine (each answered `250 ... queued as ID`), in order:
    /// for a program that delivers them itself afterwards, as `sendmail -bs -odi` does.
    pub queued: Vec<QueueId>,
}

/// Runs one session on `reader` and `writer` until QUIT or end of input: `sendmail -bs`, or
/// a daemon that accepts connections itself (inetd style). `client` is the peer's address;
/// `None` is a local user, who may relay as a loopback client may.
pub async fn serve_session<R, W>(
    reader: R,
    writer: W,
    server: &Server,
    endpoint: &Endpoint,
    client: Option<IpAddr>,
) -> SessionReport
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    // Never told to stop: the session ends with its input.
    let (_keep, stopped) = watch::channel(false);
    let session = Session::new(&server.shared, endpoint, client, None, stopped).await;
    let queued = session.run(boxed(Duplex { reader, writer })).await;
    SessionReport { queued }
}

/// A place among the server's sessions, given back on drop.
struct Slot {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Slot {
    fn take(shared: &Arc<Shared>, ip: IpAddr) -> Result<Slot, String> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let limits = &shared.limits;
        let mut c = shared.connections.lock().unwrap_or_else(|p| p.into_inner());
        if c.total >= limits.max_connections {
            return Err(format!(
                "421 4.3.2 {} Too many connections, try again later",
                shared.hostname
            ));
        }
        let mine = c.per_client.entry(ip).or_insert(0);
        if *mine >= limits.max_connections_per_client {
            return Err(format!(
                "421 4.7.0 {} Too many connections from your address, try again later",
                shared.hostname
            ));
        }
        *mine += 1;
        c.total += 1;
        Ok(Slot {
            shared: shared.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self
            .shared
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_client.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_client.remove(&self.ip);
            }
        }
    }
}
