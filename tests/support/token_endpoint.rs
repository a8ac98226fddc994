//! An OAuth2 token endpoint on loopback over real TLS (a certificate for 127.0.0.1 from a
//! test CA that only the test trusts): each request gets the next scripted answer, and every
//! request's form (and raw body and content type: a TLS-RPT report endpoint too) is
//! recorded. HTTP/1.1, one request per connection (`Connection: close`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::smtp_peer::{TestCa, Validity};

/// One answer.
#[derive(Debug, Clone)]
pub enum Answer {
    /// This status and JSON body.
    Json(u16, String),
    /// Close the connection without answering.
    Close,
}

/// `{"access_token": TOKEN, "token_type": "Bearer", "expires_in": SECONDS}`.
pub fn token(access: &str, expires_in: u64) -> Answer {
    Answer::Json(
        200,
        format!(r#"{{"access_token":"{access}","token_type":"Bearer","expires_in":{expires_in}}}"#),
    )
}

/// A recorded request.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub form: HashMap<String, String>,
    /// The `Content-Type` sent, if any.
    pub content_type: Option<String>,
    /// The body as sent (a TLS-RPT report is gzip, not a form).
    pub body: Vec<u8>,
}

pub struct TokenEndpoint {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
    task: JoinHandle<()>,
}

impl TokenEndpoint {
    /// Serves `answers` in order (then closes further connections), with a certificate for
    /// 127.0.0.1 signed by `ca`.
    pub async fn start(ca: &TestCa, answers: Vec<Answer>) -> TokenEndpoint {
        let config = ca.server_config(&["127.0.0.1"], Validity::Current);
        let acceptor = TlsAcceptor::from(config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = requests.clone();
        let task = tokio::spawn(async move {
            let mut answers = answers.into_iter();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let answer = answers.next().unwrap_or(Answer::Close);
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    continue;
                };
                let Some(request) = read_request(&mut tls).await else {
                    continue;
                };
                recorded.lock().unwrap().push(request);
                if let Answer::Json(status, body) = answer {
                    let head = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = tls.write_all(head.as_bytes()).await;
                    let _ = tls.write_all(body.as_bytes()).await;
                    let _ = tls.shutdown().await;
                }
            }
        });
        TokenEndpoint {
            addr,
            requests,
            task,
        }
    }

    /// `https://127.0.0.1:PORT/token`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}/token", self.addr.port())
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for TokenEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn read_request<S: AsyncReadExt + Unpin>(s: &mut S) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut first = head.lines().next()?.split_whitespace();
    let method = first.next()?.to_string();
    let path = first.next()?.to_string();
    let header = |name: &str| {
        head.lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
    };
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let content_type = header("content-type");
    while buf.len() < head_end + length {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let raw = buf[head_end..].to_vec();
    let body = String::from_utf8_lossy(&raw).into_owned();
    let form = body
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect();
    Some(Request {
        method,
        path,
        form,
        content_type,
        body: raw,
    })
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` an octet.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A credentials file for the refresh-token grant against `endpoint`, mode 0600.
pub fn credentials_file(
    dir: &std::path::Path,
    endpoint: &str,
    refresh: &str,
) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("m365.oauth");
    std::fs::write(
        &path,
        format!(
            "# test tenant\ntoken_endpoint = \"{endpoint}\"\nclient_id = \"client-1\"\n\
             client_secret = \"client-secret-1\"\nrefresh_token = \"{refresh}\"\n\
             scope = \"https://outlook.office365.com/SMTP.Send offline_access\"\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}
