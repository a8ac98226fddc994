//! A small HTTPS client for the few web requests a mail transfer agent makes: the OAuth2
//! token endpoint, MTA-STS policies (RFC 8461), TLS-RPT reports to `https:` addresses
//! (RFC 8460).
//!
//! It is reqwest over rustls 0.23 with the ring provider passed explicitly (the same TLS
//! stack as SMTP; no aws-lc, no OpenSSL), HTTP/1.1, certificates checked against the trust
//! anchors it is given, no redirects (RFC 8461 §3.3 forbids them for policies; token
//! endpoints do not redirect), no proxy from the environment (an MTA's behaviour must not
//! change with a login shell's variables), a limit on the response size and on the time a
//! request may take. Errors name the URL and say what failed in an operator's words.
//!
//! ```no_run
//! use postrider::https::{HttpsClient, HttpsOptions};
//! use postrider::transport::esmtp::default_roots;
//! # async fn demo() -> Result<(), postrider::https::HttpsError> {
//! let client = HttpsClient::new(default_roots(), HttpsOptions::default())?;
//! let url = "https://mta-sts.example.com/.well-known/mta-sts.txt".parse()?;
//! let response = client.get(&url).await?;
//! println!("{} {} octets", response.status, response.body.len());
//! # Ok(()) }
//! ```

use std::error::Error as _;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rustls::RootCertStore;

use crate::status::Severity;

/// Limits of an [`HttpsClient`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpsOptions {
    /// The whole request, from connecting to the last octet of the body.
    pub timeout: Duration,
    /// Connecting (TCP and TLS handshake).
    pub connect_timeout: Duration,
    /// The largest response body accepted.
    pub max_body: usize,
}

impl Default for HttpsOptions {
    /// 30 s for a request, 10 s to connect, 64 KiB of body (RFC 8461 §3.3 caps policies at
    /// 64 KiB; token responses are a few KiB).
    fn default() -> HttpsOptions {
        HttpsOptions {
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            max_body: 64 * 1024,
        }
    }
}

/// An `https:` URL, parsed once.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpsUrl(reqwest::Url);

impl HttpsUrl {
    /// The URL as text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The host.
    pub fn host(&self) -> &str {
        self.0.host_str().unwrap_or_default()
    }
}

impl FromStr for HttpsUrl {
    type Err = HttpsError;

    fn from_str(s: &str) -> Result<HttpsUrl, HttpsError> {
        let url = reqwest::Url::parse(s.trim()).map_err(|e| HttpsError::BadUrl {
            url: s.to_string(),
            reason: e.to_string(),
        })?;
        if url.scheme() != "https" {
            return Err(HttpsError::BadUrl {
                url: s.to_string(),
                reason: "only https: URLs are used (tokens and policies must not travel in \
                         clear text)"
                    .into(),
            });
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(HttpsError::BadUrl {
                url: s.to_string(),
                reason: "it names no host".into(),
            });
        }
        Ok(HttpsUrl(url))
    }
}

impl fmt::Display for HttpsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

impl fmt::Debug for HttpsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HttpsUrl({})", self.0.as_str())
    }
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HttpsError {
    /// Not a usable `https:` URL.
    #[error("{url:?} is not a usable URL: {reason}")]
    BadUrl {
        /// The text.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The client could not be set up (no TLS protocol versions, ...).
    #[error("the HTTPS client cannot be set up: {0}")]
    Setup(String),
    /// No connection (refused, unreachable, DNS).
    #[error("cannot connect to {url}: {reason}")]
    Connect {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The TLS handshake failed (certificate not trusted, expired, wrong name).
    #[error("TLS with {url} failed: {reason}")]
    Tls {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// No complete answer in time.
    #[error("no answer from {url} within {after:?}")]
    Timeout {
        /// The URL.
        url: String,
        /// The limit.
        after: Duration,
    },
    /// The body is larger than [`HttpsOptions::max_body`].
    #[error("the answer from {url} is larger than {limit} octets")]
    TooLarge {
        /// The URL.
        url: String,
        /// The limit.
        limit: usize,
    },
    /// The exchange broke after connecting.
    #[error("the request to {url} failed: {reason}")]
    Failed {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
}

impl HttpsError {
    /// What failed, without the URL, for a message that names the URL itself: `cannot
    /// connect: Connection refused (os error 111)`.
    pub fn reason(&self) -> String {
        match self {
            HttpsError::BadUrl { reason, .. } => format!("not a usable URL: {reason}"),
            HttpsError::Setup(reason) => format!("the HTTPS client cannot be set up: {reason}"),
            HttpsError::Connect { reason, .. } => format!("cannot connect: {reason}"),
            HttpsError::Tls { reason, .. } => format!("TLS failed: {reason}"),
            HttpsError::Timeout { after, .. } => format!("no answer within {after:?}"),
            HttpsError::TooLarge { limit, .. } => {
                format!("the answer is larger than {limit} octets")
            }
            HttpsError::Failed { reason, .. } => format!("the request failed: {reason}"),
        }
    }

    /// A bad URL or setup is permanent (configuration); everything else may pass.
    pub fn severity(&self) -> Severity {
        match self {
            HttpsError::BadUrl { .. } | HttpsError::Setup(_) => Severity::Permanent,
            _ => Severity::Temporary,
        }
    }
}

/// An answer: the status and the whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpsResponse {
    /// The HTTP status code.
    pub status: u16,
    /// The `Content-Type`, when sent.
    pub content_type: Option<String>,
    /// The body (at most [`HttpsOptions::max_body`] octets).
    pub body: Bytes,
}

/// The client. Cheap to clone (connections are pooled and shared).
#[derive(Clone)]
pub struct HttpsClient {
    client: reqwest::Client,
    options: HttpsOptions,
}

impl fmt::Debug for HttpsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpsClient")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl HttpsClient {
    /// A client that trusts `roots` (e.g. [`default_roots`](crate::transport::esmtp::default_roots),
    /// or a test's own CA).
    pub fn new(roots: RootCertStore, options: HttpsOptions) -> Result<HttpsClient, HttpsError> {
        HttpsClient::build(roots, options, None)
    }

    /// A client that looks host names up with `resolver` instead of the system's resolver:
    /// MTA-STS policy hosts are found through the same DNS as the MX hosts they describe.
    pub fn with_resolver(
        roots: RootCertStore,
        options: HttpsOptions,
        resolver: Arc<dyn crate::resolve::Resolver>,
    ) -> Result<HttpsClient, HttpsError> {
        HttpsClient::build(roots, options, Some(resolver))
    }

    fn build(
        roots: RootCertStore,
        options: HttpsOptions,
        resolver: Option<Arc<dyn crate::resolve::Resolver>>,
    ) -> Result<HttpsClient, HttpsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| HttpsError::Setup(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut builder = reqwest::Client::builder();
        if let Some(resolver) = resolver {
            builder = builder.dns_resolver(Arc::new(ViaResolver(resolver)));
        }
        let client = builder
            .tls_backend_preconfigured(tls)
            .http1_only()
            .https_only(true)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(options.timeout)
            .connect_timeout(options.connect_timeout)
            .user_agent(concat!("postrider/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| HttpsError::Setup(describe(&e)))?;
        Ok(HttpsClient { client, options })
    }

    /// The limits in effect.
    pub fn options(&self) -> HttpsOptions {
        self.options
    }

    /// `GET url`.
    pub async fn get(&self, url: &HttpsUrl) -> Result<HttpsResponse, HttpsError> {
        self.send(url, self.client.get(url.0.clone())).await
    }

    /// `POST url` with an `application/x-www-form-urlencoded` body.
    pub async fn post_form(
        &self,
        url: &HttpsUrl,
        form: &[(&str, &str)],
    ) -> Result<HttpsResponse, HttpsError> {
        self.send(url, self.client.post(url.0.clone()).form(form))
            .await
    }

    /// `POST url` with `body` as `content_type` (a TLS-RPT report: RFC 8460 §5.3).
    pub async fn post(
        &self,
        url: &HttpsUrl,
        content_type: &str,
        body: Bytes,
    ) -> Result<HttpsResponse, HttpsError> {
        self.send(
            url,
            self.client
                .post(url.0.clone())
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(body),
        )
        .await
    }

    async fn send(
        &self,
        url: &HttpsUrl,
        request: reqwest::RequestBuilder,
    ) -> Result<HttpsResponse, HttpsError> {
        let shown = || url.to_string();
        let mut response = request
            .header(reqwest::header::ACCEPT, "application/json, text/plain")
            .send()
            .await
            .map_err(|e| self.classify(&e, shown()))?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let limit = self.options.max_body;
        if response.content_length().is_some_and(|n| n > limit as u64) {
            return Err(HttpsError::TooLarge {
                url: shown(),
                limit,
            });
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.classify(&e, shown()))?
        {
            if body.len() + chunk.len() > limit {
                return Err(HttpsError::TooLarge {
                    url: shown(),
                    limit,
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(HttpsResponse {
            status,
            content_type,
            body: body.freeze(),
        })
    }

    fn classify(&self, e: &reqwest::Error, url: String) -> HttpsError {
        let reason = describe(e);
        if e.is_timeout() {
            return HttpsError::Timeout {
                url,
                after: self.options.timeout,
            };
        }
        if is_tls(e) {
            return HttpsError::Tls { url, reason };
        }
        if e.is_connect() {
            return HttpsError::Connect { url, reason };
        }
        HttpsError::Failed { url, reason }
    }
}

/// reqwest's name lookup through one of ours (port 0: reqwest puts the URL's port in).
struct ViaResolver(Arc<dyn crate::resolve::Resolver>);

impl reqwest::dns::Resolve for ViaResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let resolver = self.0.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let domain = crate::address::Domain::parse(&host)
                .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e) })?;
            let addrs = resolver
                .addresses(&domain)
                .await
                .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e) })?;
            let addrs: reqwest::dns::Addrs = Box::new(
                addrs
                    .into_iter()
                    .map(|ip| std::net::SocketAddr::new(ip, 0))
                    .collect::<Vec<_>>()
                    .into_iter(),
            );
            Ok(addrs)
        })
    }
}

/// True when a rustls error is among the causes. The connector may hand it over wrapped in
/// an `io::Error` whose `source()` skips it, so rustls' own words are recognised too.
fn is_tls(e: &reqwest::Error) -> bool {
    const RUSTLS_WORDS: [&str; 6] = [
        "invalid peer certificate",
        "peer is incompatible",
        "peer misbehaved",
        "received fatal alert",
        "received corrupt message",
        "InvalidCertificate",
    ];
    let mut cause: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(c) = cause {
        if c.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        let text = c.to_string();
        if RUSTLS_WORDS.iter().any(|w| text.contains(w)) {
            return true;
        }
        if let Some(io) = c.downcast_ref::<std::io::Error>()
            && io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
        {
            return true;
        }
        cause = c.source();
    }
    false
}

/// The innermost causes of a reqwest error, which say what really happened (reqwest's own
/// message is "error sending request for url (...)").
fn describe(e: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cause: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cause = c.source();
    }
    match parts.last() {
        Some(last) => last.clone(),
        None => e.without_url_text(),
    }
}

trait WithoutUrl {
    fn without_url_text(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    fn without_url_text(&self) -> String {
        let mut s = self.to_string();
        if let Some(url) = self.url()
            && let Some(i) = s.find(&format!(" ({url})"))
        {
            s.replace_range(i..i + url.as_str().len() + 3, "");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_urls_with_a_host_are_accepted() {
        assert!(
            "https://login.example.com/oauth2/token"
                .parse::<HttpsUrl>()
                .is_ok()
        );
        let e = "http://login.example.com/token"
            .parse::<HttpsUrl>()
            .unwrap_err();
        assert!(e.to_string().contains("only https: URLs"), "{e}");
        assert_eq!(e.severity(), Severity::Permanent);
        assert!("not a url".parse::<HttpsUrl>().is_err());
        assert_eq!(
            "https://h.example/x".parse::<HttpsUrl>().unwrap().host(),
            "h.example"
        );
    }

    #[tokio::test]
    async fn a_closed_port_is_a_temporary_connect_error_naming_the_url() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let client = HttpsClient::new(RootCertStore::empty(), HttpsOptions::default()).unwrap();
        let url: HttpsUrl = format!("https://127.0.0.1:{port}/token").parse().unwrap();
        let e = client.get(&url).await.unwrap_err();
        assert!(matches!(e, HttpsError::Connect { .. }), "{e:?}");
        assert!(
            e.to_string().starts_with(&format!(
                "cannot connect to https://127.0.0.1:{port}/token: "
            )),
            "{e}"
        );
        assert_eq!(e.severity(), Severity::Temporary);
    }
}
