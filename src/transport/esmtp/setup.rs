//! Opening a session ready for mail: connect, (implicit TLS,) greeting, EHLO or HELO, STARTTLS
//! per the hop's policy, EHLO again, and AUTH with the hop's credentials.
//!
//! The same steps serve delivery and [`super::probe`]: a [`Trace`] records what each step saw,
//! so a probe reports exactly what a delivery would meet.

use super::auth::{Mechanism, base64_encode, plain_response};
use super::classify;
use std::net::IpAddr;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use super::ehlo::Capabilities;
use super::identity::names_us;
use super::oauth;
use super::probe::{AuthProbe, CertificateProbe, TlsProbe};
use super::session::{Peer, Session, SessionError};
use super::timeouts::Phase;
use super::tls::{Inspector, TlsClient, server_name};
use crate::address::Domain;
use crate::oauth2::{AccessToken, TokenSource, Tokens};
use crate::route::{Credentials, HopPolicy, Mailer, TlsLevel};
use crate::status::{Diagnostic, Reply};

/// Why a session could not be opened, and how far the failure reaches.
#[derive(Debug)]
pub(crate) enum SetupFailure {
    /// Try the next address or host of the hop.
    Next(Diagnostic),
    /// Stop trying this hop (a mail loop: the rest of the MX list is not better than us).
    EndHop(Diagnostic),
    /// Stop the whole route: every pending recipient gets this (AUTH refused with 5xx).
    EndRoute(Diagnostic),
}

impl SetupFailure {
    fn diagnostic(&self) -> &Diagnostic {
        match self {
            SetupFailure::Next(d) | SetupFailure::EndHop(d) | SetupFailure::EndRoute(d) => d,
        }
    }

    /// The diagnostic, however far the failure reaches.
    pub(crate) fn into_diagnostic(self) -> Diagnostic {
        match self {
            SetupFailure::Next(d) | SetupFailure::EndHop(d) | SetupFailure::EndRoute(d) => d,
        }
    }
}

/// What the setup needs to know besides the peer.
pub(crate) struct SetupContext<'a> {
    pub hostname: &'a Domain,
    pub mailer: Mailer,
    pub policy: &'a HopPolicy,
    pub tls: &'a TlsClient,
    pub timeouts: super::timeouts::Timeouts,
    /// For a probe of a hop whose policy is not `verify`: a connector that also checks the
    /// certificate as `verify` would, and records the answer. `None` for delivery.
    pub inspector: Option<&'a Inspector>,
    /// Where OAuth2 access tokens come from.
    pub tokens: &'a Tokens,
    /// A connector that checks the certificate against the MX host's TLSA records (DANE),
    /// used instead of the policy level's; TLS is then required.
    pub dane: Option<&'a TlsConnector>,
}

/// What a session setup saw, step by step. Delivery drops it; a probe reports it.
#[derive(Debug, Default)]
pub(crate) struct Trace {
    /// The TCP connection was made.
    pub connected: bool,
    /// Our end of the connection.
    pub local: Option<IpAddr>,
    /// The server's greeting.
    pub greeting: Option<Reply>,
    /// The last EHLO (or HELO) answer's capabilities.
    pub capabilities: Option<Capabilities>,
    /// How far TLS got.
    pub tls: TlsProbe,
    /// How far AUTH got.
    pub auth: AuthProbe,
}

/// Opens a session to `peer`, ready for MAIL FROM, recording each step in `trace`.
pub(crate) async fn open_traced(
    ctx: &SetupContext<'_>,
    peer: Peer,
    trace: &mut Trace,
) -> Result<Session, SetupFailure> {
    let token = match &ctx.policy.oauth2 {
        Some(oauth) => Some(oauth::token_for(ctx, oauth, trace).await?),
        None => None,
    };
    let mut s = Session::connect(peer.clone(), ctx.timeouts)
        .await
        .map_err(|e| SetupFailure::Next(classify::session_error(&e, &peer)))?;
    trace.connected = true;
    trace.local = s.local;
    match prepare(ctx, &mut s, token, trace).await {
        Ok(()) => Ok(s),
        Err(Step::Broken(e)) => Err(SetupFailure::Next(classify::session_error(&e, &s.peer))),
        Err(Step::Refused(f)) => {
            // The server is still talking: say goodbye properly (RFC 5321 §3.1 asks a client
            // that gets a 554 greeting to QUIT). After a 421 it is already hanging up.
            if f.diagnostic().reply.as_ref().map(|r| r.code()) != Some(421) {
                s.quit().await;
            }
            Err(f)
        }
    }
}

/// How a setup step ended early.
pub(super) enum Step {
    /// The connection broke.
    Broken(SessionError),
    /// The server refused; how far that reaches.
    Refused(SetupFailure),
}

impl From<SessionError> for Step {
    fn from(e: SessionError) -> Step {
        Step::Broken(e)
    }
}

async fn prepare(
    ctx: &SetupContext<'_>,
    s: &mut Session,
    token: Option<(Arc<dyn TokenSource>, AccessToken)>,
    trace: &mut Trace,
) -> Result<(), Step> {
    let name = server_name(s.peer.name.as_ref(), s.peer.addr);
    if ctx.mailer.implicit_tls() {
        handshake(ctx, s, name.clone(), trace).await?;
    }

    let greeting = s.read_reply(Phase::Greeting).await?;
    trace.greeting = Some(greeting.clone());
    if !greeting.is_positive() {
        return Err(Step::Refused(SetupFailure::Next(
            classify::greeting_refused(&s.peer, &greeting),
        )));
    }
    let greeting_name = greeting.text().split_whitespace().next();
    if names_us(greeting_name, ctx.hostname) {
        return Err(Step::Refused(SetupFailure::EndHop(classify::mail_loop(
            format!("{} greets me with my own name {}", s.peer, ctx.hostname),
        ))));
    }

    hello(ctx, s, trace).await?;
    if names_us(s.caps.server_name.as_deref(), ctx.hostname) {
        return Err(Step::Refused(SetupFailure::EndHop(classify::mail_loop(
            format!("{} answers EHLO with my own name {}", s.peer, ctx.hostname),
        ))));
    }

    let level = match ctx.dane {
        // DANE requires TLS whatever the hop's level says (RFC 7672 §2.2).
        Some(_) => TlsLevel::Verify,
        None => ctx.policy.tls,
    };
    if !s.tls && level != TlsLevel::None {
        if s.caps.starttls {
            let reply = s.command("STARTTLS", Phase::Tls).await?;
            if reply.code() == 220 {
                handshake(ctx, s, name, trace).await?;
                hello(ctx, s, trace).await?;
            } else {
                trace.tls = TlsProbe::Refused {
                    reply: reply.clone(),
                };
                if level.requires_tls() {
                    return Err(Step::Refused(SetupFailure::Next(
                        classify::starttls_refused(&s.peer, level, &reply),
                    )));
                }
                tracing::info!(peer = %s.peer, %reply, "STARTTLS refused; continuing without TLS (policy may)");
            }
        } else {
            trace.tls = TlsProbe::NotOffered;
            if level.requires_tls() {
                return Err(Step::Refused(SetupFailure::Next(
                    classify::tls_not_offered(&s.peer, level),
                )));
            }
        }
    }

    if let Some(creds) = &ctx.policy.credentials {
        authenticate(ctx, s, creds, trace).await?;
    } else if let (Some(oauth), Some(token)) = (&ctx.policy.oauth2, token)
        && may_authenticate(ctx, s, &oauth.user, trace)?
    {
        oauth::authenticate(s, oauth, token, trace).await?;
    }
    Ok(())
}

/// The checks before any AUTH: credentials only over TLS unless the policy allows otherwise
/// (an error), and only to a server that offers AUTH (false: send without).
fn may_authenticate(
    ctx: &SetupContext<'_>,
    s: &Session,
    user: &str,
    trace: &mut Trace,
) -> Result<bool, Step> {
    if !s.tls && !ctx.policy.auth_without_tls {
        trace.auth = AuthProbe::WithheldWithoutTls;
        return Err(Step::Refused(SetupFailure::Next(classify::auth_needs_tls(
            &s.peer, user,
        ))));
    }
    if s.caps.auth.is_empty() {
        // Many relays accept mail from known networks without AUTH; if this one does not, its
        // refusal of MAIL or RCPT says so.
        trace.auth = AuthProbe::NotOffered;
        tracing::warn!(peer = %s.peer, user = %user, "credentials configured but the server does not offer AUTH; sending without authenticating");
        return Ok(false);
    }
    Ok(true)
}

/// The TLS handshake (after 220 to STARTTLS, or at once for implicit TLS) with the connector
/// the policy asks for, or the probe's inspecting one.
async fn handshake(
    ctx: &SetupContext<'_>,
    s: &mut Session,
    name: ServerName<'static>,
    trace: &mut Trace,
) -> Result<(), Step> {
    let verify = ctx.policy.tls == TlsLevel::Verify || ctx.dane.is_some();
    let connector = match (ctx.dane, ctx.inspector) {
        (Some(dane), _) => dane,
        (None, Some(inspector)) if !verify => &inspector.connector,
        _ => ctx.tls.connector(verify),
    };
    match s.start_tls(connector, name).await {
        Ok(()) => {
            s.authenticated = verify;
            let certificate = match (verify, ctx.inspector) {
                (true, _) => CertificateProbe::Valid,
                (false, Some(inspector)) => match inspector.take() {
                    Some(Ok(())) => CertificateProbe::Valid,
                    Some(Err(reason)) => CertificateProbe::Invalid { reason },
                    None => CertificateProbe::NotChecked,
                },
                (false, None) => CertificateProbe::NotChecked,
            };
            trace.tls = TlsProbe::Up {
                protocol: s.tls_protocol.clone(),
                certificate,
            };
            Ok(())
        }
        Err(e) => {
            trace.tls = TlsProbe::Failed {
                reason: match &e {
                    SessionError::Tls { reason } => reason.clone(),
                    other => other.to_string(),
                },
            };
            Err(Step::Broken(e))
        }
    }
}

/// EHLO, or HELO when EHLO is refused with 5xx (RFC 5321 §4.1.4).
async fn hello(ctx: &SetupContext<'_>, s: &mut Session, trace: &mut Trace) -> Result<(), Step> {
    let result = say_hello(ctx, s).await;
    if result.is_ok() {
        trace.capabilities = Some(s.caps.clone());
    }
    result
}

async fn say_hello(ctx: &SetupContext<'_>, s: &mut Session) -> Result<(), Step> {
    let ehlo = s
        .command(&format!("EHLO {}", ctx.hostname), Phase::Helo)
        .await?;
    if ehlo.is_positive() {
        s.caps = Capabilities::parse(&ehlo);
        return Ok(());
    }
    if !ehlo.is_permanent() {
        return Err(Step::Refused(SetupFailure::Next(classify::helo_refused(
            &s.peer, "EHLO", &ehlo,
        ))));
    }
    let helo = s
        .command(&format!("HELO {}", ctx.hostname), Phase::Helo)
        .await?;
    if !helo.is_positive() {
        return Err(Step::Refused(SetupFailure::Next(classify::helo_refused(
            &s.peer,
            "EHLO and HELO",
            &helo,
        ))));
    }
    s.caps = Capabilities {
        server_name: helo.text().split_whitespace().next().map(str::to_string),
        ..Capabilities::default()
    };
    Ok(())
}

async fn authenticate(
    ctx: &SetupContext<'_>,
    s: &mut Session,
    creds: &Credentials,
    trace: &mut Trace,
) -> Result<(), Step> {
    if !may_authenticate(ctx, s, &creds.username, trace)? {
        return Ok(());
    }
    let Some(mech) = Mechanism::choose(&s.caps.auth) else {
        trace.auth = AuthProbe::NoCommonMechanism {
            offered: s.caps.auth.clone(),
        };
        return Err(Step::Refused(SetupFailure::Next(
            classify::no_common_mechanism(&s.peer, &s.caps.auth),
        )));
    };
    let reply = match mech {
        Mechanism::Plain => {
            s.command_secret(
                &format!("AUTH PLAIN {}", plain_response(creds)),
                "AUTH PLAIN <redacted>",
                Phase::Auth,
            )
            .await?
        }
        Mechanism::Login => {
            let mut reply = s.command("AUTH LOGIN", Phase::Auth).await?;
            if reply.code() == 334 {
                let user = base64_encode(creds.username.as_bytes());
                reply = s.command(&user, Phase::Auth).await?;
            }
            if reply.code() == 334 {
                let pass = base64_encode(creds.password.expose().as_bytes());
                reply = s.command_secret(&pass, "<redacted>", Phase::Auth).await?;
            }
            reply
        }
    };
    if reply.is_positive() {
        trace.auth = AuthProbe::Accepted {
            mechanism: mech.name(),
        };
        return Ok(());
    }
    trace.auth = AuthProbe::Refused {
        reply: reply.clone(),
    };
    if reply.is_intermediate() {
        // A challenge we have no answer for: cancel the exchange (RFC 4954 §4) so the session
        // ends cleanly.
        let _ = s.command("*", Phase::Auth).await?;
    }
    let diag = classify::auth_failed(&s.peer, creds, &reply);
    if reply.is_permanent() {
        Err(Step::Refused(SetupFailure::EndRoute(diag)))
    } else {
        Err(Step::Refused(SetupFailure::Next(diag)))
    }
}
