//! Turning what went wrong into a [`Diagnostic`]: an RFC 3463 status and words an operator can
//! act on. Every text the transport reports is written here, so they read alike.
//!
//! Local statuses: 4.4.1 no answer (refused, unreachable, connect or greeting timeout), 4.4.2
//! bad connection (dropped, reset, later timeouts), 4.4.3 DNS, 4.5.0 garbled reply, 4.7.4 TLS
//! required but unavailable, 4.7.5 TLS handshake failed, 4.7.10 credentials withheld from a
//! clear-text connection, 5.3.4 message too big, 5.3.5 mail loop, 5.6.3 a message that must be
//! converted for the server and cannot be, 5.6.7 SMTPUTF8 needed.

use std::io;

use super::session::{Peer, SessionError};
use super::timeouts::Phase;
use crate::address::Domain;
use crate::message::DowngradeError;
use crate::oauth2::{ErrorChallenge, OAuth2Mechanism, OAuth2Policy, TokenError};
use crate::resolve::ResolveError;
use crate::route::{Credentials, TlsLevel};
use crate::status::{Diagnostic, EnhancedStatus, Outcome, Reply};

/// Appended to a connection timeout on port 25: the usual cause on home and cloud networks.
pub const PORT_25_HINT: &str =
    "(port 25 may be blocked by your provider; consider a smart host on port 587)";

/// A 4.x.x diagnostic defers, a 5.x.x one fails.
pub(crate) fn outcome(d: Diagnostic) -> Outcome {
    if d.status.is_permanent() {
        Outcome::Failed(d)
    } else {
        Outcome::Deferred(d)
    }
}

/// What a broken session means.
pub(crate) fn session_error(err: &SessionError, peer: &Peer) -> Diagnostic {
    let no_answer = EnhancedStatus::new(4, 4, 1);
    let bad_connection = EnhancedStatus::new(4, 4, 2);
    match err {
        SessionError::Timeout {
            phase: Phase::Connect,
        } => {
            let mut text = format!("connection timed out with {peer}");
            if peer.port == 25 {
                text.push(' ');
                text.push_str(PORT_25_HINT);
            }
            Diagnostic::local(no_answer, text)
        }
        SessionError::Timeout {
            phase: Phase::Greeting,
        } => Diagnostic::local(
            no_answer,
            format!("timeout waiting for greeting from {peer}"),
        ),
        SessionError::Timeout {
            phase: Phase::DataBlock,
        } => Diagnostic::local(
            bad_connection,
            format!("timeout sending message data to {peer}"),
        ),
        SessionError::Timeout { phase: Phase::Tls } => Diagnostic::local(
            bad_connection,
            format!("timeout during TLS handshake with {peer}"),
        ),
        SessionError::Timeout { phase } => {
            Diagnostic::local(bad_connection, format!("timeout {phase} from {peer}"))
        }
        SessionError::Closed { phase } => Diagnostic::local(
            bad_connection,
            format!("connection dropped by {peer} while {}", gerund(*phase)),
        ),
        SessionError::Io {
            phase: Phase::Connect,
            source,
        } => Diagnostic::local(no_answer, connect_failure(source, peer)),
        SessionError::Io { phase, source } => {
            let what = match source.kind() {
                io::ErrorKind::ConnectionReset => format!("connection reset by {peer}"),
                _ => format!("connection with {peer} failed ({source})"),
            };
            Diagnostic::local(bad_connection, format!("{what} while {}", gerund(*phase)))
        }
        SessionError::Protocol { phase, error } => Diagnostic::local(
            EnhancedStatus::new(4, 5, 0),
            format!(
                "{peer} sent a malformed reply while {}: {error}",
                gerund(*phase)
            ),
        ),
        SessionError::Tls { reason } => Diagnostic::local(
            EnhancedStatus::new(4, 7, 5),
            format!("TLS handshake with {peer} failed: {reason}"),
        ),
    }
}

/// "waiting for greeting" reads well after "while"; "during TLS handshake" needs a verb.
fn gerund(phase: Phase) -> String {
    match phase {
        Phase::Tls => "setting up TLS".to_string(),
        other => other.activity().to_string(),
    }
}

fn connect_failure(e: &io::Error, peer: &Peer) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => format!("connection refused by {peer}"),
        io::ErrorKind::HostUnreachable => format!("cannot connect to {peer}: host unreachable"),
        io::ErrorKind::NetworkUnreachable => {
            format!("cannot connect to {peer}: network unreachable")
        }
        _ => format!("cannot connect to {peer}: {e}"),
    }
}

/// The status a reply stands for. A 3xx where a final reply was due is a protocol error
/// (4.5.0): [`Reply::status`] has no class 3 to give.
pub(crate) fn reply_status(reply: &Reply) -> EnhancedStatus {
    match reply.code() / 100 {
        2 | 4 | 5 => reply.status(),
        _ => EnhancedStatus::new(4, 5, 0),
    }
}

/// The outcome a final reply gives a recipient: 2xx delivered, 4xx deferred, 5xx failed; a
/// 3xx (a server out of step) is deferred as a protocol error.
pub(crate) fn reply_outcome(reply: Reply, peer: &Peer) -> Outcome {
    match reply.code() / 100 {
        2 => Outcome::Delivered { reply },
        4 | 5 => outcome(Diagnostic::remote(reply)),
        _ => Outcome::Deferred(remote(
            &reply,
            format!("unexpected reply from {peer}: {reply}"),
        )),
    }
}

/// A reply that keeps its own status, with words around it.
fn remote(reply: &Reply, text: String) -> Diagnostic {
    Diagnostic {
        status: reply_status(reply),
        reply: Some(reply.clone()),
        text,
    }
}

/// A reply given as the reason for a whole session's failure (a 421, a refused RSET).
pub(crate) fn session_reply(peer: &Peer, reply: &Reply) -> Diagnostic {
    remote(reply, format!("{peer} said: {reply}"))
}

/// The greeting was not 220. A 5xx greeting only says that this server will not talk to us
/// now (Postfix's `smtp_skip_5xx_greeting`): the next address, MX host or fallback is tried,
/// and with none left the message waits — a temporary failure, never a bounce.
pub(crate) fn greeting_refused(peer: &Peer, reply: &Reply) -> Diagnostic {
    let mut d = remote(reply, format!("{peer} refused to talk to me: {reply}"));
    if d.status.is_permanent() {
        d.status = d.status.with_class(4);
        d.text
            .push_str(" (this server was skipped; the mail stays queued)");
    }
    d
}

/// EHLO and then HELO were refused, or EHLO failed temporarily.
pub(crate) fn helo_refused(peer: &Peer, command: &str, reply: &Reply) -> Diagnostic {
    remote(reply, format!("{peer} refused {command}: {reply}"))
}

/// The policy requires TLS and the server does not offer STARTTLS.
pub(crate) fn tls_not_offered(peer: &Peer, level: TlsLevel) -> Diagnostic {
    Diagnostic::local(
        EnhancedStatus::new(4, 7, 4),
        format!("TLS is required (policy {level}) but {peer} does not offer STARTTLS"),
    )
}

/// A TLS policy the destination publishes (MTA-STS, DANE) rules this MX host out; the words
/// name the policy domain and the rule.
pub(crate) fn tls_policy_refused(reason: &str) -> Diagnostic {
    Diagnostic::local(EnhancedStatus::new(4, 7, 5), reason.to_string())
}

/// A REQUIRETLS message (RFC 8689) and a session whose server was not authenticated: the
/// message must not go over it, and retrying the same route cannot change that.
pub(crate) fn requiretls_unauthenticated(peer: &Peer) -> Diagnostic {
    Diagnostic::local(
        EnhancedStatus::new(5, 7, 10),
        format!(
            "REQUIRETLS: the message may only go to an authenticated server, and {peer} is not one (no DANE or MTA-STS enforce policy, and no verify line in the policy file)"
        ),
    )
}

/// A REQUIRETLS message and a server that does not announce REQUIRETLS (RFC 8689 §4.2.1).
pub(crate) fn requiretls_unsupported(peer: &Peer) -> Diagnostic {
    Diagnostic::local(
        EnhancedStatus::new(5, 7, 30),
        format!("REQUIRETLS support required: {peer} does not announce REQUIRETLS"),
    )
}

/// The policy requires TLS and STARTTLS was refused.
pub(crate) fn starttls_refused(peer: &Peer, level: TlsLevel, reply: &Reply) -> Diagnostic {
    Diagnostic {
        status: EnhancedStatus::new(4, 7, 4),
        reply: Some(reply.clone()),
        text: format!("TLS is required (policy {level}) but {peer} refused STARTTLS: {reply}"),
    }
}

/// The server names us, or an MX is this machine.
pub(crate) fn mail_loop(detail: String) -> Diagnostic {
    Diagnostic::local(
        EnhancedStatus::new(5, 3, 5),
        format!("mail loops back to me (MX problem?): {detail}"),
    )
}

/// AUTH was refused. Even a 5xx is a deferral (Postfix's `smtp_sasl_auth_soft_bounce`): a
/// wrong password is this side's configuration to fix, and the mail must still be there when
/// it is fixed. The text names the credentials' line.
pub(crate) fn auth_failed(peer: &Peer, creds: &Credentials, reply: &Reply) -> Diagnostic {
    let mut d = remote(
        reply,
        format!(
            "authentication failed at {} for {}: {reply}",
            peer.host_port(),
            creds.username
        ),
    );
    if d.status.is_permanent() {
        d.status = d.status.with_class(4);
        match &creds.defined_at {
            Some(at) => d.text.push_str(&format!(
                "; check the user name and password in {at} (the mail stays queued)"
            )),
            None => d
                .text
                .push_str("; check the credentials for this next hop (the mail stays queued)"),
        }
    }
    d
}

/// Credentials are configured, but the connection is clear text and the policy forbids AUTH
/// there.
pub(crate) fn auth_needs_tls(peer: &Peer, user: &str) -> Diagnostic {
    Diagnostic::local(
        EnhancedStatus::new(4, 7, 10),
        format!(
            "not sending the credentials for {user} to {} over an unencrypted connection \
             ({peer} does not offer STARTTLS or the policy is \"none\"); use TLS, or allow AUTH \
             without TLS in the policy for this next hop",
            peer.host_port()
        ),
    )
}

/// No OAuth2 token for the hop: a deferral naming where it was to come from. 4.7.0 whatever
/// the cause: a revoked refresh token needs an administrator, and the mail waits for one.
pub(crate) fn token_unavailable(user: &str, err: &TokenError) -> Diagnostic {
    Diagnostic::local(
        EnhancedStatus::new(4, 7, 0),
        format!("{err} (needed to authenticate as {user})"),
    )
}

/// An OAuth2 AUTH was refused: as [`auth_failed`] (a 5xx defers too: a token without the
/// right scope, or a mailbox without SMTP AUTH, is this side's to fix), with the mechanism,
/// what the server's error challenge said and the policy line to check.
pub(crate) fn oauth_failed(
    peer: &Peer,
    oauth: &OAuth2Policy,
    mechanism: &str,
    reply: &Reply,
    challenge: Option<&ErrorChallenge>,
) -> Diagnostic {
    let said = challenge.map_or_else(String::new, |c| {
        let scope = c
            .scope
            .as_deref()
            .map(|s| format!(", scope {s}"))
            .unwrap_or_default();
        format!(" (OAuth2 status {}{scope})", c.status)
    });
    let mut d = remote(
        reply,
        format!(
            "authentication failed at {} for {} with AUTH {mechanism}: {reply}{said}",
            peer.host_port(),
            oauth.user
        ),
    );
    if d.status.is_permanent() {
        d.status = d.status.with_class(4);
        let at = oauth
            .defined_at
            .as_deref()
            .unwrap_or("the policy for this next hop");
        d.text.push_str(&format!(
            "; check the OAuth2 account and token source in {at} (the mail stays queued)"
        ));
    }
    d
}

/// The policy asks for OAuth2 and the server offers no OAuth2 mechanism (or not the one asked
/// for).
pub(crate) fn no_oauth_mechanism(
    peer: &Peer,
    wanted: OAuth2Mechanism,
    offered: &[String],
) -> Diagnostic {
    let wanted = match wanted {
        OAuth2Mechanism::Auto => "XOAUTH2 or OAUTHBEARER".to_string(),
        m => m.name().to_ascii_uppercase(),
    };
    Diagnostic::local(
        EnhancedStatus::new(4, 7, 4),
        format!(
            "{} offers AUTH {}, but the policy asks for {wanted}",
            peer.host_port(),
            offered.join(" ")
        ),
    )
}

/// The server offers AUTH, but no mechanism we speak.
pub(crate) fn no_common_mechanism(peer: &Peer, offered: &[String]) -> Diagnostic {
    Diagnostic::local(
        EnhancedStatus::new(4, 7, 4),
        format!(
            "{} offers AUTH {}, none of which postrider speaks (PLAIN, LOGIN)",
            peer.host_port(),
            offered.join(" ")
        ),
    )
}

/// The message is larger than the server's SIZE.
pub(crate) fn too_big(peer: &Peer, size: usize, limit: u64) -> Diagnostic {
    Diagnostic::local(
        EnhancedStatus::new(5, 3, 4),
        format!("message of {size} bytes exceeds the limit of {limit} bytes announced by {peer}"),
    )
}

/// The message needs SMTPUTF8 and the server does not offer it (RFC 6531 §3.4).
pub(crate) fn smtputf8_unsupported(peer: &Peer) -> Diagnostic {
    Diagnostic::local(
        EnhancedStatus::new(5, 6, 7),
        format!("{peer} does not support SMTPUTF8, which this message needs (non-ASCII address)"),
    )
}

/// The message must be converted for the server and cannot be (8-bit header fields, parts
/// nested too deep): the conversion's own status (5.6.3) and words.
pub(crate) fn cannot_convert(peer: &Peer, err: &DowngradeError) -> Diagnostic {
    Diagnostic::local(
        err.status(),
        format!(
            "{peer} does not offer SMTPUTF8 or 8BITMIME, and the message cannot be converted: {err}"
        ),
    )
}

/// The MX lookup of the destination domain failed: the resolver's own status and words.
pub(crate) fn mx_lookup(err: &ResolveError) -> Diagnostic {
    Diagnostic::local(err.status(), err.to_string())
}

/// A host's addresses could not be found. Always temporary: for an MX host the domain exists
/// (RFC 5321 leaves an unresolvable MX list temporary), and a configured relay that does not
/// resolve is a configuration error to fix, not a reason to bounce the queue.
pub(crate) fn address_lookup(
    host: &Domain,
    mx_of: Option<&Domain>,
    err: &ResolveError,
) -> Diagnostic {
    let role = match mx_of {
        Some(domain) => format!("{host} (MX of {domain})"),
        None => format!("{host} (check the smart host or mailertable entry)"),
    };
    Diagnostic::local(
        EnhancedStatus::new(4, 4, 3),
        format!("cannot find the address of {role}: {err}"),
    )
}

/// A route this transport does not handle.
pub(crate) fn misrouted(what: &str) -> Diagnostic {
    Diagnostic::local(
        EnhancedStatus::new(4, 3, 5),
        format!("the ESMTP transport was given {what}; this is a routing or engine error"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(port: u16) -> Peer {
        Peer {
            name: Some(Domain::parse("mx.isp.net").unwrap()),
            addr: "192.0.2.1".parse().unwrap(),
            port,
        }
    }

    #[test]
    fn a_connect_timeout_on_port_25_suggests_a_smart_host() {
        let d = session_error(
            &SessionError::Timeout {
                phase: Phase::Connect,
            },
            &peer(25),
        );
        assert_eq!(d.status.to_string(), "4.4.1");
        assert_eq!(
            d.text,
            "connection timed out with mx.isp.net [192.0.2.1] (port 25 may be blocked by your \
             provider; consider a smart host on port 587)"
        );
        let d587 = session_error(
            &SessionError::Timeout {
                phase: Phase::Connect,
            },
            &peer(587),
        );
        assert_eq!(
            d587.text,
            "connection timed out with mx.isp.net [192.0.2.1]:587"
        );
    }

    #[test]
    fn timeouts_name_the_phase_and_the_host() {
        let d = session_error(
            &SessionError::Timeout {
                phase: Phase::Greeting,
            },
            &peer(25),
        );
        assert_eq!(
            d.text,
            "timeout waiting for greeting from mx.isp.net [192.0.2.1]"
        );
        assert_eq!(d.status.to_string(), "4.4.1");
        let d = session_error(&SessionError::Timeout { phase: Phase::Rcpt }, &peer(25));
        assert_eq!(
            d.text,
            "timeout waiting for reply to RCPT TO from mx.isp.net [192.0.2.1]"
        );
        assert_eq!(d.status.to_string(), "4.4.2");
    }

    #[test]
    fn refused_and_dropped_connections_have_their_own_statuses() {
        let refused = session_error(
            &SessionError::Io {
                phase: Phase::Connect,
                source: io::ErrorKind::ConnectionRefused.into(),
            },
            &peer(25),
        );
        assert_eq!(
            (refused.status.to_string(), refused.text.as_str()),
            (
                "4.4.1".into(),
                "connection refused by mx.isp.net [192.0.2.1]"
            )
        );
        let dropped = session_error(
            &SessionError::Closed {
                phase: Phase::DataBlock,
            },
            &peer(25),
        );
        assert_eq!(dropped.status.to_string(), "4.4.2");
        assert_eq!(
            dropped.text,
            "connection dropped by mx.isp.net [192.0.2.1] while sending message data"
        );
    }

    #[test]
    fn an_auth_failure_names_server_and_user_but_not_the_secret() {
        let reply = Reply::new(
            535,
            Some(EnhancedStatus::new(5, 7, 8)),
            "Username and Password not accepted",
        )
        .unwrap();
        let p = Peer {
            name: Some(Domain::parse("smtp.gmail.com").unwrap()),
            addr: "192.0.2.9".parse().unwrap(),
            port: 587,
        };
        let mut creds = Credentials::new("pbx@example.com", "secret");
        creds.defined_at = Some("/etc/postrider/tls-policy line 3".into());
        let d = auth_failed(&p, &creds, &reply);
        assert_eq!(
            d.text,
            "authentication failed at smtp.gmail.com:587 for pbx@example.com: \
             535 5.7.8 Username and Password not accepted; check the user name and password \
             in /etc/postrider/tls-policy line 3 (the mail stays queued)"
        );
        assert_eq!(d.status.to_string(), "4.7.8");
        assert!(
            matches!(outcome(d), Outcome::Deferred(_)),
            "a wrong password is ours to fix: never a bounce"
        );
    }
}
