//! STARTTLS and AUTH inside a session: when each is allowed, the TLS upgrade, the SASL
//! exchange and what failed attempts cost the client.

use super::*;

impl Session<'_> {
    pub(super) fn starttls_allowed(&mut self) -> Flow {
        if self.tls.is_some() {
            self.error("503 5.5.1 TLS already active");
            return Flow::Continue;
        }
        if self.endpoint.tls.is_none() {
            self.error("502 5.5.1 STARTTLS not available");
            return Flow::Continue;
        }
        self.reply("220 2.0.0 Ready to start TLS");
        Flow::StartTls
    }

    /// The handshake after `220 Ready to start TLS`. Anything the client pipelined after
    /// STARTTLS was sent in the clear and is thrown away (CVE-2011-0411: a man in the middle
    /// could have put it there); the session then starts over as RFC 3207 §4.2 requires.
    pub(super) async fn start_tls(&mut self, mut io: Io) -> Result<Io, ()> {
        self.flush(&mut io).await.map_err(|_| ())?;
        if !io.buffer().is_empty() {
            tracing::warn!(target: "postrider::server", "client {}: {} octets pipelined after STARTTLS discarded", self.client(), io.buffer().len());
        }
        let tls = self.endpoint.tls.as_ref().ok_or(())?.config();
        let stream = io.into_inner();
        let accept = tokio_rustls::TlsAcceptor::from(tls).accept(stream);
        let stream = match tokio::time::timeout(self.shared.timeouts.tls_handshake, accept).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::info!(target: "postrider::server", "client {}: TLS handshake failed: {e}", self.client());
                return Err(());
            }
            Err(_) => {
                tracing::info!(target: "postrider::server", "client {}: TLS handshake timed out", self.client());
                return Err(());
            }
        };
        self.tls = Some(TlsInfo::of(stream.get_ref().1));
        self.helo = None;
        self.transaction = None;
        self.user = None;
        Ok(BufReader::with_capacity(
            64 * 1024,
            Box::new(stream) as Box<dyn Stream>,
        ))
    }

    /// The client as logs show it: `name[ip]`.
    pub(super) fn client(&self) -> String {
        let name = match &self.name {
            ClientName::Confirmed(n) | ClientName::Forged(n) => n.to_string(),
            ClientName::Unknown => "unknown".to_string(),
        };
        match self.ip {
            Some(ip) => format!("{name}[{ip}]"),
            None => "local".to_string(),
        }
    }

    pub(super) async fn auth(
        &mut self,
        mechanism: Mechanism,
        initial: Option<String>,
        io: &mut Io,
    ) -> Result<(), Ended> {
        if self.user.is_some() {
            self.error("503 5.5.1 Already authenticated");
            return Ok(());
        }
        if self.transaction.is_some() {
            self.error("503 5.5.1 AUTH not allowed during a mail transaction");
            return Ok(());
        }
        let authenticator = self
            .shared
            .authenticator
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(authenticator) = authenticator else {
            self.error("502 5.5.1 AUTH not available");
            return Ok(());
        };
        if !self.auth_offered() {
            self.error("538 5.7.11 Encryption required for requested authentication mechanism");
            return Ok(());
        }
        let credentials = match mechanism {
            Mechanism::Plain => {
                let line = match initial {
                    Some(l) => l,
                    None => {
                        self.reply("334 ");
                        self.sasl_line(io).await?
                    }
                };
                auth::decode_plain(&line)
            }
            Mechanism::Login => {
                let user = match initial {
                    Some(l) => auth::decode_login_user(&l),
                    None => {
                        self.reply(&format!("334 {}", auth::LOGIN_USER_PROMPT));
                        let l = self.sasl_line(io).await?;
                        auth::decode_login_user(&l)
                    }
                };
                match user {
                    Ok(user) => {
                        self.reply(&format!("334 {}", auth::LOGIN_PASSWORD_PROMPT));
                        let l = self.sasl_line(io).await?;
                        auth::decode_login_password(&l).map(|p| (user, p))
                    }
                    Err(e) => Err(e),
                }
            }
            Mechanism::Other(m) => {
                self.error(&format!(
                    "504 5.5.4 Mechanism {m} is not supported (PLAIN, LOGIN)"
                ));
                return Ok(());
            }
        };
        let (user, password): (String, Password) = match credentials {
            Ok(c) => c,
            Err(SaslError::Aborted) => {
                self.error("501 5.0.0 Authentication aborted");
                return Ok(());
            }
            Err(SaslError::ForeignAuthzid) => return self.auth_failed(None).await,
            Err(e) => {
                self.error(&format!("501 5.5.2 {e}"));
                return Ok(());
            }
        };
        match authenticator.verify(&user, password).await {
            Ok(true) => {
                tracing::info!(target: "postrider::server", "client {}: authenticated as {}", self.client(), log_safe(&user));
                self.user = Some(user);
                self.reply("235 2.7.0 Authentication successful");
                Ok(())
            }
            Ok(false) => self.auth_failed(Some(&user)).await,
            Err(e) => {
                tracing::warn!(target: "postrider::server", "client {}: {e}", self.client());
                self.reply("454 4.7.0 Temporary authentication failure");
                Ok(())
            }
        }
    }

    /// A SASL continuation line (not counted as a command, but under the command deadline).
    pub(super) async fn sasl_line(&mut self, io: &mut Io) -> Result<String, Ended> {
        match self.next_line(io).await? {
            Line::Complete(l) => Ok(String::from_utf8(l).unwrap_or_default()),
            Line::TooLong => Ok(String::new()),
        }
    }

    /// A wrong password: a growing pause, `535 5.7.8`, and the door after a few.
    pub(super) async fn auth_failed(&mut self, user: Option<&str>) -> Result<(), Ended> {
        self.auth_failures += 1;
        self.errors += 1;
        tracing::warn!(
            target: "postrider::server",
            "client {}: authentication failed for {} ({} of {})",
            self.client(),
            user.map_or_else(|| "another user".to_string(), log_safe),
            self.auth_failures,
            self.shared.limits.max_auth_failures
        );
        tokio::time::sleep(self.shared.timeouts.auth_failure_delay * self.auth_failures).await;
        self.reply("535 5.7.8 Authentication credentials invalid");
        if self.auth_failures >= self.shared.limits.max_auth_failures {
            self.reply("421 4.7.0 Too many failed authentication attempts, closing connection");
            return Err(Ended::Closed);
        }
        Ok(())
    }
}
