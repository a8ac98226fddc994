//! An MTA-STS policy host on loopback: HTTPS on port 443 of a random 127.x.y.z (the client
//! fetches `https://mta-sts.<domain>/...` with no port, so the test's DNS points the name at
//! that address), a certificate from a test CA only the transport under test trusts, and an
//! answer the test can change or take away while it runs. Binding port 443 needs root.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::smtp_peer::{TestCa, Validity};

/// What the server answers to every request.
#[derive(Debug, Clone)]
pub struct PolicyAnswer {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// A policy served as `text/plain` with status 200.
pub fn policy(text: &str) -> PolicyAnswer {
    PolicyAnswer {
        status: 200,
        content_type: "text/plain".into(),
        body: text.to_string(),
    }
}

/// `version: STSv1`, `mode`, one `mx` line per pattern, `max_age`.
pub fn policy_text(mode: &str, mx: &[&str], max_age: u64) -> String {
    let mut s = format!("version: STSv1\r\nmode: {mode}\r\n");
    for m in mx {
        s.push_str(&format!("mx: {m}\r\n"));
    }
    s.push_str(&format!("max_age: {max_age}\r\n"));
    s
}

pub struct PolicyServer {
    addr: SocketAddr,
    answer: Arc<Mutex<PolicyAnswer>>,
    requests: Arc<AtomicUsize>,
    task: Option<JoinHandle<()>>,
}

impl PolicyServer {
    /// Serves `answer` for `mta-sts.<domain>` with a certificate for that name signed by `ca`.
    pub async fn start(ca: &TestCa, domain: &str, answer: PolicyAnswer) -> PolicyServer {
        let host = format!("mta-sts.{domain}");
        let acceptor = TlsAcceptor::from(ca.server_config(&[host.as_str()], Validity::Current));
        let listener = bind_443().await;
        let addr = listener.local_addr().unwrap();
        let answer = Arc::new(Mutex::new(answer));
        let requests = Arc::new(AtomicUsize::new(0));
        let (served, counted) = (answer.clone(), requests.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let served = served.clone();
                let counted = counted.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    if !read_head(&mut tls).await {
                        return;
                    }
                    counted.fetch_add(1, Ordering::SeqCst);
                    let a = served.lock().unwrap().clone();
                    let head = format!(
                        "HTTP/1.1 {} X\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        a.status,
                        a.content_type,
                        a.body.len()
                    );
                    let _ = tls.write_all(head.as_bytes()).await;
                    let _ = tls.write_all(a.body.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        PolicyServer {
            addr,
            answer,
            requests,
            task: Some(task),
        }
    }

    /// The address the policy host's A record must name.
    pub fn ip(&self) -> String {
        self.addr.ip().to_string()
    }

    /// Changes the answer for later requests.
    pub fn set(&self, answer: PolicyAnswer) {
        *self.answer.lock().unwrap() = answer;
    }

    /// How many requests were answered.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Stops listening: later fetches get "connection refused" (the policy host is down).
    pub async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for PolicyServer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

async fn bind_443() -> TcpListener {
    for _ in 0..50 {
        let o: [u8; 3] = rand::random();
        let ip = std::net::Ipv4Addr::new(127, o[0], o[1], o[2].max(2));
        if let Ok(l) = TcpListener::bind(SocketAddr::from((ip, 443))).await {
            return l;
        }
    }
    panic!("no address of 127.0.0.0/8 has port 443 free (binding it needs root)");
}

/// Reads a request head (the body of a GET is empty).
async fn read_head<S: AsyncReadExt + Unpin>(s: &mut S) -> bool {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    for _ in 0..64 {
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            return true;
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    false
}
