//! Opening a session ready for mail: connect, (implicit TLS,) greeting, EHLO or HELO, STARTTLS
//! per the hop's policy, EHLO again, and AUTH with the hop's credentials.

use super::auth::{Mechanism, base64_encode, plain_response};
use super::classify;
use super::ehlo::Capabilities;
use super::identity::names_us;
use super::session::{Peer, Session, SessionError};
use super::timeouts::Phase;
use super::tls::{TlsClient, server_name};
use crate::address::Domain;
use crate::route::{Credentials, HopPolicy, Mailer, TlsLevel};
use crate::status::Diagnostic;

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
}

/// What the setup needs to know besides the peer.
pub(crate) struct SetupContext<'a> {
    pub hostname: &'a Domain,
    pub mailer: Mailer,
    pub policy: &'a HopPolicy,
    pub tls: &'a TlsClient,
    pub timeouts: super::timeouts::Timeouts,
}

/// Opens a session to `peer`, ready for MAIL FROM.
pub(crate) async fn open(ctx: &SetupContext<'_>, peer: Peer) -> Result<Session, SetupFailure> {
    let mut s = Session::connect(peer.clone(), ctx.timeouts)
        .await
        .map_err(|e| SetupFailure::Next(classify::session_error(&e, &peer)))?;
    match prepare(ctx, &mut s).await {
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

enum Step {
    Broken(SessionError),
    Refused(SetupFailure),
}

impl From<SessionError> for Step {
    fn from(e: SessionError) -> Step {
        Step::Broken(e)
    }
}

async fn prepare(ctx: &SetupContext<'_>, s: &mut Session) -> Result<(), Step> {
    let verify = ctx.policy.tls == TlsLevel::Verify;
    let name = server_name(s.peer.name.as_ref(), s.peer.addr);
    if ctx.mailer.implicit_tls() {
        s.start_tls(ctx.tls.connector(verify), name.clone()).await?;
    }

    let greeting = s.read_reply(Phase::Greeting).await?;
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

    hello(ctx, s).await?;
    if names_us(s.caps.server_name.as_deref(), ctx.hostname) {
        return Err(Step::Refused(SetupFailure::EndHop(classify::mail_loop(
            format!("{} answers EHLO with my own name {}", s.peer, ctx.hostname),
        ))));
    }

    let level = ctx.policy.tls;
    if !s.tls && level != TlsLevel::None {
        if s.caps.starttls {
            let reply = s.command("STARTTLS", Phase::Tls).await?;
            if reply.code() == 220 {
                s.start_tls(ctx.tls.connector(verify), name).await?;
                hello(ctx, s).await?;
            } else if level.requires_tls() {
                return Err(Step::Refused(SetupFailure::Next(
                    classify::starttls_refused(&s.peer, level, &reply),
                )));
            } else {
                tracing::info!(peer = %s.peer, %reply, "STARTTLS refused; continuing without TLS (policy may)");
            }
        } else if level.requires_tls() {
            return Err(Step::Refused(SetupFailure::Next(
                classify::tls_not_offered(&s.peer, level),
            )));
        }
    }

    if let Some(creds) = &ctx.policy.credentials {
        authenticate(ctx, s, creds).await?;
    }
    Ok(())
}

/// EHLO, or HELO when EHLO is refused with 5xx (RFC 5321 §4.1.4).
async fn hello(ctx: &SetupContext<'_>, s: &mut Session) -> Result<(), Step> {
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
) -> Result<(), Step> {
    if !s.tls && !ctx.policy.auth_without_tls {
        return Err(Step::Refused(SetupFailure::Next(classify::auth_needs_tls(
            &s.peer,
            &creds.username,
        ))));
    }
    if s.caps.auth.is_empty() {
        // Many relays accept mail from known networks without AUTH; if this one does not, its
        // refusal of MAIL or RCPT says so.
        tracing::warn!(peer = %s.peer, user = %creds.username, "credentials configured but the server does not offer AUTH; sending without authenticating");
        return Ok(());
    }
    let Some(mech) = Mechanism::choose(&s.caps.auth) else {
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
        return Ok(());
    }
    if reply.is_intermediate() {
        // A challenge we have no answer for: cancel the exchange (RFC 4954 §4) so the session
        // ends cleanly.
        let _ = s.command("*", Phase::Auth).await?;
    }
    let diag = classify::auth_failed(&s.peer, &creds.username, &reply);
    if reply.is_permanent() {
        Err(Step::Refused(SetupFailure::EndRoute(diag)))
    } else {
        Err(Step::Refused(SetupFailure::Next(diag)))
    }
}
