//! An SMTP sink that takes a few milliseconds to answer the end of each message and counts what
//! arrived by a test header. Postfix's smtp-sink can only wait whole seconds (`-w`), and a kill
//! test needs many messages in flight at every instant: a scripted peer is right for that.
//!
//! It offers PIPELINING and answers commands in order; a message counts as arrived once its
//! data is complete (before the reply), which is exactly when a client killed before reading
//! the reply would send it again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// The header whose value identifies a message (`X-Kill-Test: 17`).
pub const ID_HEADER: &str = "X-Kill-Test";

pub struct SlowSink {
    port: u16,
    arrived: Arc<Mutex<HashMap<String, usize>>>,
    task: tokio::task::JoinHandle<()>,
}

impl SlowSink {
    /// Starts a sink on a free loopback port that waits `delay` before each `250` to a dot.
    pub async fn start(delay: Duration) -> SlowSink {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the sink");
        let port = listener.local_addr().expect("the sink's address").port();
        let arrived = Arc::new(Mutex::new(HashMap::new()));
        let counts = arrived.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let counts = counts.clone();
                tokio::spawn(async move {
                    let _ = session(stream, delay, counts).await;
                });
            }
        });
        SlowSink {
            port,
            arrived,
            task,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// How many times each test id arrived.
    pub fn arrivals(&self) -> HashMap<String, usize> {
        self.arrived.lock().unwrap().clone()
    }

    /// Arrivals in all.
    pub fn total(&self) -> usize {
        self.arrived.lock().unwrap().values().sum()
    }
}

impl Drop for SlowSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn session(
    stream: tokio::net::TcpStream,
    delay: Duration,
    counts: Arc<Mutex<HashMap<String, usize>>>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    write.write_all(b"220 slow-sink ESMTP\r\n").await?;
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" => b"250-slow-sink\r\n250-PIPELINING\r\n250 8BITMIME\r\n",
            "HELO" => b"250 slow-sink\r\n",
            "MAIL" | "RCPT" | "RSET" | "NOOP" => b"250 2.0.0 Ok\r\n",
            "QUIT" => {
                write.write_all(b"221 2.0.0 Bye\r\n").await?;
                return Ok(());
            }
            "DATA" => {
                write
                    .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                let mut id = None;
                loop {
                    line.clear();
                    if lines.read_line(&mut line).await? == 0 {
                        return Ok(());
                    }
                    if line == ".\r\n" {
                        break;
                    }
                    if id.is_none()
                        && let Some(v) = line.strip_prefix(&format!("{ID_HEADER}: "))
                    {
                        id = Some(v.trim().to_string());
                    }
                }
                if let Some(id) = id {
                    *counts.lock().unwrap().entry(id).or_default() += 1;
                }
                tokio::time::sleep(delay).await;
                b"250 2.0.0 Ok: queued\r\n"
            }
            _ => b"502 5.5.2 Command not recognized\r\n",
        };
        write.write_all(reply).await?;
    }
}
