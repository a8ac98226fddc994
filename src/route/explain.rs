//! Why a recipient routes where it does, for `sendmail -bv` and for administrators.

use std::fmt;

use crate::address::Address;

use super::table::Key;
use super::table_file::Origin;
use super::{Host, LocalTarget, NextHop, Route};

/// The rule that decided a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// The domain is listed in local-host-names.
    LocalHostNames {
        /// The file.
        file: Origin,
        /// The line.
        line: usize,
    },
    /// The domain is the configured host name (implicitly local).
    Hostname,
    /// The domain is `localhost` (implicitly local).
    Localhost,
    /// A mailertable entry.
    Mailertable {
        /// The key that matched.
        key: Key,
        /// Its line.
        line: usize,
        /// The mailertable file.
        file: Origin,
    },
    /// A virtusertable entry (the last one followed, when one led to another).
    Virtusertable {
        /// The key that matched (`info@ourtest.com`, `@ourtest.com`).
        key: String,
        /// Its line.
        line: usize,
        /// The virtusertable file.
        file: Origin,
    },
    /// A virtual domain (it appears in the virtusertable) with no entry for this address.
    VirtualDomain,
    /// No key matched: the smart host.
    SmartHost,
    /// No key matched and there is no smart host: the recipient domain's MX hosts.
    DirectMx,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::LocalHostNames { .. } => f.write_str("local-host-names"),
            Rule::Hostname => f.write_str("hostname"),
            Rule::Localhost => f.write_str("localhost"),
            Rule::Mailertable { key, line, .. } => write!(f, "mailertable:{key} (line {line})"),
            Rule::Virtusertable { key, line, .. } => {
                write!(f, "virtusertable:{key} (line {line})")
            }
            Rule::VirtualDomain => f.write_str("virtual-domain"),
            Rule::SmartHost => f.write_str("smart-host"),
            Rule::DirectMx => f.write_str("direct-mx"),
        }
    }
}

/// A recipient, its route, and the rule that chose it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// The recipient.
    pub recipient: Address,
    /// Where its mail goes.
    pub route: Route,
    /// Why.
    pub rule: Rule,
}

impl Explanation {
    /// True when the route refuses the recipient (a mailertable `error:` entry).
    pub fn is_reject(&self) -> bool {
        matches!(self.route, Route::Reject { .. })
    }
}

struct HostOnly<'a>(&'a NextHop);

impl fmt::Display for HostOnly<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.0.host, self.0.mx) {
            (Host::Name(d), true) => write!(f, "{d}"),
            (host, _) => write!(f, "[{host}]"),
        }
    }
}

struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        for c in self.0.chars() {
            match c {
                '"' | '\\' => write!(f, "\\{c}")?,
                '\n' | '\r' => f.write_str(" ")?,
                c => write!(f, "{c}")?,
            }
        }
        f.write_str("\"")
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.recipient)?;
        match &self.route {
            Route::Relay { mailer, hops } => {
                write!(f, " mailer={mailer}")?;
                for hop in hops {
                    write!(
                        f,
                        " host={} port={} mx={}",
                        HostOnly(hop),
                        hop.port_for(*mailer),
                        if hop.mx { "yes" } else { "no" }
                    )?;
                }
            }
            Route::Local { target } => match target {
                LocalTarget::Forward(to) => write!(f, " mailer=local forward={to}")?,
                t => {
                    let user = t.local_name(&self.recipient).unwrap_or_default();
                    write!(f, " mailer=local user={user}")?;
                }
            },
            Route::Reject { reply } => write!(
                f,
                " error dsn={} code={} text={}",
                reply.status(),
                reply.code(),
                Quoted(reply.text())
            )?,
        }
        write!(f, " rule={}", self.rule)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::Domain;
    use crate::route::Mailer;
    use crate::status::{EnhancedStatus, Reply};

    fn addr(s: &str) -> Address {
        Address::parse(s).unwrap()
    }

    #[test]
    fn relay_lines_show_host_port_and_mx() {
        let e = Explanation {
            recipient: addr("user@gmail.com"),
            route: Route::Relay {
                mailer: Mailer::Esmtp,
                hops: vec![NextHop::direct(
                    Host::Name(Domain::parse("smtp.gmail.com").unwrap()),
                    Some(587),
                )],
            },
            rule: Rule::Mailertable {
                key: Key::Exact(Domain::parse("gmail.com").unwrap()),
                line: 3,
                file: Origin::named("mailertable"),
            },
        };
        assert_eq!(
            e.to_string(),
            "user@gmail.com: mailer=esmtp host=[smtp.gmail.com] port=587 mx=no rule=mailertable:gmail.com (line 3)"
        );
    }

    #[test]
    fn fallback_hosts_repeat_in_order_with_default_ports() {
        let e = Explanation {
            recipient: addr("a@x.example"),
            route: Route::Relay {
                mailer: Mailer::Smtps,
                hops: vec![
                    NextHop::direct(Host::Ip("2001:db8::1".parse().unwrap()), None),
                    NextHop::mx(Domain::parse("b.example").unwrap(), Some(2465)),
                ],
            },
            rule: Rule::SmartHost,
        };
        assert_eq!(
            e.to_string(),
            "a@x.example: mailer=smtps host=[IPv6:2001:db8::1] port=465 mx=no \
             host=b.example port=2465 mx=yes rule=smart-host"
        );
    }

    #[test]
    fn error_lines_quote_the_text() {
        let e = Explanation {
            recipient: addr("x@bad.example"),
            route: Route::Reject {
                reply: Reply::new(550, Some(EnhancedStatus::new(5, 7, 0)), "say \"no\"").unwrap(),
            },
            rule: Rule::DirectMx,
        };
        assert_eq!(
            e.to_string(),
            "x@bad.example: error dsn=5.7.0 code=550 text=\"say \\\"no\\\"\" rule=direct-mx"
        );
        assert!(e.is_reject());
    }

    #[test]
    fn local_lines_show_the_user() {
        let mut e = Explanation {
            recipient: addr("aaa@ourtest.com"),
            route: Route::local(),
            rule: Rule::LocalHostNames {
                file: Origin::named("local-host-names"),
                line: 1,
            },
        };
        assert_eq!(
            e.to_string(),
            "aaa@ourtest.com: mailer=local user=aaa rule=local-host-names"
        );
        e.route = Route::Local {
            target: LocalTarget::User("postmaster".into()),
        };
        e.rule = Rule::Localhost;
        assert_eq!(
            e.to_string(),
            "aaa@ourtest.com: mailer=local user=postmaster rule=localhost"
        );
        e.route = Route::Local {
            target: LocalTarget::Forward(addr("team@partner.example")),
        };
        e.rule = Rule::Virtusertable {
            key: "aaa@ourtest.com".into(),
            line: 3,
            file: Origin::named("virtusertable"),
        };
        assert_eq!(
            e.to_string(),
            "aaa@ourtest.com: mailer=local forward=team@partner.example rule=virtusertable:aaa@ourtest.com (line 3)"
        );
    }
}
