//! sendmail's access table (`/etc/mail/access`), read as the text file it is.
//!
//! Each line is `key value`: a key optionally tagged `Connect:`, `From:` or `To:`, and one of
//! the values `OK`, `RELAY`, `REJECT`, `DISCARD`, `SKIP` or `ERROR:…`. Keys are
//!
//! - IPv4 addresses and their leading octets (`192.168.1.5`, `192.168.1`, `10`);
//! - IPv6 addresses and prefixes of whole 16-bit groups, written `IPv6:2001:db8::1` or
//!   `IPv6:2001:db8`;
//! - host and domain names (`example.com` also matches `mx.example.com`, as in sendmail);
//! - `user@domain` and `user@` (any domain).
//!
//! The most specific key wins, whatever the order of the lines (sendmail's lookup order): for
//! a client, its host name from the longest suffix down, then its address from all octets down;
//! for an address, `user@domain`, then the domain and its parents, then `user@`. At each
//! step a tagged key is tried before the untagged one. Keys are case-insensitive.
//!
//! ```
//! use postrider::server::access::{AccessTable, Action};
//! let table = AccessTable::parse(
//!     "Connect:192.168.1   RELAY\nFrom:spammer.example REJECT\nTo:ceo@corp.example ERROR:5.7.1:550 ask his assistant\n",
//!     "/etc/mail/access",
//! )?;
//! let lan = "192.168.1.20".parse().unwrap();
//! assert_eq!(table.connect(lan, None).map(|m| &m.action), Some(&Action::Relay));
//! let ceo = "ceo@corp.example".parse().unwrap();
//! assert_eq!(table.to(&ceo).unwrap().action.to_string(), "ERROR:5.7.1:550 ask his assistant");
//! # Ok::<(), postrider::server::access::AccessError>(())
//! ```

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::path::{Path, PathBuf};

use crate::address::{Address, Domain};
use crate::status::{EnhancedStatus, Reply, Severity};

use super::networks::Network;

/// What an entry says about a client, sender or recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Accept, skipping further access checks of this kind (it does not allow relaying).
    Ok,
    /// Accept and allow relaying (for a client: it may relay anywhere; for a recipient domain:
    /// anyone may send to it).
    Relay,
    /// Refuse with `550 5.7.1`.
    Reject,
    /// Accept and throw the mail away.
    Discard,
    /// Stop looking at less specific keys, as if nothing matched.
    Skip,
    /// Refuse with this reply (`ERROR:5.7.1:550 text`, `ERROR:"550 text"`).
    Error(Reply),
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Ok => f.write_str("OK"),
            Action::Relay => f.write_str("RELAY"),
            Action::Reject => f.write_str("REJECT"),
            Action::Discard => f.write_str("DISCARD"),
            Action::Skip => f.write_str("SKIP"),
            Action::Error(r) => match r.enhanced() {
                Some(s) => write!(f, "ERROR:{s}:{} {}", r.code(), r.text()),
                None => write!(f, "ERROR:{} {}", r.code(), r.text()),
            },
        }
    }
}

/// The tag of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tag {
    /// `Connect:`: the client's address or host name.
    Connect,
    /// `From:`: the envelope sender.
    From,
    /// `To:`: an envelope recipient.
    To,
    /// No tag: applies to all three.
    Any,
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Tag::Connect => "Connect:",
            Tag::From => "From:",
            Tag::To => "To:",
            Tag::Any => "",
        })
    }
}

/// An entry that matched: its action, and the key and line it came from (for logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessMatch {
    /// What to do.
    pub action: Action,
    /// The key as written in the file.
    pub key: String,
    /// Its line, from 1.
    pub line: usize,
}

/// Which clients an entry names: what a `Connect:` (or untagged) address, prefix or host
/// name key covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientKey {
    /// Addresses in this network (`192.168.1` is 192.168.1.0/24, `IPv6:2001:db8` is
    /// 2001:db8::/32).
    Network(Network),
    /// Clients whose forward-confirmed host name is this domain or below it.
    Names(Domain),
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientKey::Network(n) => write!(f, "{n}"),
            ClientKey::Names(d) => write!(f, "host names under {d}"),
        }
    }
}

/// What is wrong with one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessProblem {
    /// A key without a value.
    #[error("key {key:?} has no value (expected OK, RELAY, REJECT, DISCARD, SKIP or ERROR:...)")]
    NoValue {
        /// The key.
        key: String,
    },
    /// A value postrider does not know.
    #[error(
        "value {value:?} is not one of OK, RELAY, REJECT, DISCARD, SKIP, ERROR:5.7.1:550 text, ERROR:\"550 text\""
    )]
    BadValue {
        /// The value.
        value: String,
    },
    /// An `ERROR:` value whose reply is malformed.
    #[error("{value:?}: {reason}")]
    BadError {
        /// The value.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// A key that is none of the forms above.
    #[error("key {key:?}: {reason}")]
    BadKey {
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The same key twice.
    #[error("key {key:?} is already defined on line {first}")]
    Duplicate {
        /// The key.
        key: String,
        /// The line of the first definition.
        first: usize,
    },
}

/// Why an access file was refused: every bad line, with its number.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// The file could not be read.
    #[error("cannot read access file {}: {source}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Lines with errors.
    #[error("{}", lines.iter().map(|(n, p)| format!("{}:{n}: {p}", file.display())).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// The file.
        file: PathBuf,
        /// Line numbers (from 1) and what is wrong with each.
        lines: Vec<(usize, AccessProblem)>,
    },
}

impl AccessError {
    /// Always permanent: the administrator must fix the file.
    pub fn severity(&self) -> Severity {
        Severity::Permanent
    }
}

/// A key in canonical form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    /// IPv4 octets, 1 to 4 of them.
    V4(Vec<u8>),
    /// IPv6 groups: all 8 for an address, fewer for a prefix.
    V6(Vec<u16>),
    /// A host or domain name, lower case.
    Domain(String),
    /// `user@domain`, lower case.
    Address(String),
    /// `user@`, lower case.
    User(String),
}

/// A parsed access table.
#[derive(Debug, Clone, Default)]
pub struct AccessTable {
    entries: HashMap<(Tag, Key), AccessMatch>,
    file: PathBuf,
}

impl AccessTable {
    /// Reads and parses an access file.
    pub fn load(path: impl AsRef<Path>) -> Result<AccessTable, AccessError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| AccessError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        AccessTable::parse(&text, path)
    }

    /// Parses access-file text; `file` names it in errors.
    pub fn parse(text: &str, file: impl AsRef<Path>) -> Result<AccessTable, AccessError> {
        let file = file.as_ref().to_path_buf();
        let mut entries: HashMap<(Tag, Key), AccessMatch> = HashMap::new();
        let mut problems = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let line = raw.trim_end_matches('\r').trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = match line.find(char::is_whitespace) {
                Some(at) => (&line[..at], line[at..].trim()),
                None => (line, ""),
            };
            if value.is_empty() {
                problems.push((n, AccessProblem::NoValue { key: key.into() }));
                continue;
            }
            let parsed = parse_key(key).and_then(|k| parse_action(value).map(|a| (k, a)));
            match parsed {
                Ok((k, action)) => {
                    if let Some(first) = entries.get(&k) {
                        problems.push((
                            n,
                            AccessProblem::Duplicate {
                                key: key.into(),
                                first: first.line,
                            },
                        ));
                        continue;
                    }
                    entries.insert(
                        k,
                        AccessMatch {
                            action,
                            key: key.into(),
                            line: n,
                        },
                    );
                }
                Err(p) => problems.push((n, p)),
            }
        }
        if !problems.is_empty() {
            return Err(AccessError::Invalid {
                file,
                lines: problems,
            });
        }
        Ok(AccessTable { entries, file })
    }

    /// The file the table was read from.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries that let clients relay (`Connect:` or untagged keys naming an address, a
    /// prefix or a host name, with `RELAY`), each with the clients it covers, in line order.
    pub fn client_relay_rules(&self) -> Vec<(ClientKey, &AccessMatch)> {
        let mut rules: Vec<(ClientKey, &AccessMatch)> = self
            .entries
            .iter()
            .filter(|((tag, _), m)| {
                matches!(tag, Tag::Connect | Tag::Any) && m.action == Action::Relay
            })
            .filter_map(|((_, key), m)| {
                let covered = match key {
                    Key::V4(octets) => {
                        let mut a = [0u8; 4];
                        a[..octets.len()].copy_from_slice(octets);
                        Network::from_prefix(IpAddr::from(a), (octets.len() * 8) as u8)
                            .map(ClientKey::Network)
                    }
                    Key::V6(groups) => {
                        let mut g = [0u16; 8];
                        g[..groups.len()].copy_from_slice(groups);
                        Network::from_prefix(
                            IpAddr::from(Ipv6Addr::from(g)),
                            (groups.len() * 16) as u8,
                        )
                        .map(ClientKey::Network)
                    }
                    Key::Domain(d) => Domain::parse(d).ok().map(ClientKey::Names),
                    Key::Address(_) | Key::User(_) => None,
                };
                covered.map(|c| (c, m))
            })
            .collect();
        rules.sort_by_key(|(_, m)| m.line);
        rules
    }

    /// The entry for a connecting client: its (forward-confirmed) host name first, from the
    /// full name to its shortest parent, then its address from all octets down.
    pub fn connect(&self, ip: IpAddr, name: Option<&Domain>) -> Option<&AccessMatch> {
        let mut keys = Vec::new();
        if let Some(name) = name {
            domain_keys(name, &mut keys);
        }
        ip_keys(ip, &mut keys);
        self.first(Tag::Connect, keys)
    }

    /// The entry for an envelope sender.
    pub fn from(&self, sender: &Address) -> Option<&AccessMatch> {
        self.first(Tag::From, address_keys(sender))
    }

    /// The entry for an envelope recipient.
    pub fn to(&self, recipient: &Address) -> Option<&AccessMatch> {
        self.first(Tag::To, address_keys(recipient))
    }

    fn first(&self, tag: Tag, keys: Vec<Key>) -> Option<&AccessMatch> {
        for key in keys {
            for t in [tag, Tag::Any] {
                if let Some(m) = self.entries.get(&(t, key.clone())) {
                    return match m.action {
                        Action::Skip => None,
                        _ => Some(m),
                    };
                }
            }
        }
        None
    }
}

fn domain_keys(name: &Domain, keys: &mut Vec<Key>) {
    keys.push(Key::Domain(name.as_str().to_string()));
    keys.extend(name.parents().map(|p| Key::Domain(p.to_string())));
}

fn ip_keys(ip: IpAddr, keys: &mut Vec<Key>) {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            keys.extend((1..=4).rev().map(|n| Key::V4(o[..n].to_vec())));
        }
        IpAddr::V6(v6) => {
            // An IPv4-mapped client (`::ffff:192.0.2.1`) is looked up as the IPv4 address too.
            if let Some(v4) = v6.to_ipv4_mapped() {
                ip_keys(IpAddr::V4(v4), keys);
            }
            let g = v6.segments();
            keys.extend((1..=8).rev().map(|n| Key::V6(g[..n].to_vec())));
        }
    }
}

fn address_keys(a: &Address) -> Vec<Key> {
    let local = a.local_part().to_lowercase();
    let mut keys = vec![Key::Address(format!("{local}@{}", a.domain()))];
    domain_keys(a.domain(), &mut keys);
    keys.push(Key::User(local));
    keys
}

fn parse_key(raw: &str) -> Result<(Tag, Key), AccessProblem> {
    let bad = |reason: &str| AccessProblem::BadKey {
        key: raw.into(),
        reason: reason.into(),
    };
    let (tag, key) = match raw.split_once(':') {
        Some((t, rest)) if t.eq_ignore_ascii_case("connect") => (Tag::Connect, rest),
        Some((t, rest)) if t.eq_ignore_ascii_case("from") => (Tag::From, rest),
        Some((t, rest)) if t.eq_ignore_ascii_case("to") => (Tag::To, rest),
        _ => (Tag::Any, raw),
    };
    if key.is_empty() {
        return Err(bad("nothing after the tag"));
    }
    if let Some(v6) = strip_prefix_ci(key, "ipv6:") {
        return parse_v6(v6).map(|k| (tag, k)).ok_or_else(|| {
            bad("not an IPv6 address or a prefix of whole 16-bit groups (IPv6:2001:db8)")
        });
    }
    if key.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let octets: Option<Vec<u8>> = key.split('.').map(|o| o.parse().ok()).collect();
        return match octets {
            Some(o) if (1..=4).contains(&o.len()) => Ok((tag, Key::V4(o))),
            _ => Err(bad("not an IPv4 address or its leading octets (192.168.1)")),
        };
    }
    if let Some(user) = key.strip_suffix('@') {
        if user.is_empty() || user.contains('@') {
            return Err(bad("a user key is user@"));
        }
        return Ok((tag, Key::User(user.to_lowercase())));
    }
    if key.contains('@') {
        let a = Address::parse(key).map_err(|e| bad(&e.to_string()))?;
        return Ok((
            tag,
            Key::Address(format!("{}@{}", a.local_part().to_lowercase(), a.domain())),
        ));
    }
    // sendmail accepts a leading dot for "this domain and below"; that is what a key means
    // anyway.
    let name = key.strip_prefix('.').unwrap_or(key);
    let d = Domain::parse(name).map_err(|e| bad(&e.to_string()))?;
    Ok((tag, Key::Domain(d.as_str().to_string())))
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

fn parse_v6(s: &str) -> Option<Key> {
    if let Ok(ip) = s.parse::<Ipv6Addr>() {
        return Some(Key::V6(ip.segments().to_vec()));
    }
    // A prefix: 1 to 7 whole groups, no `::`.
    let groups: Option<Vec<u16>> = s
        .split(':')
        .map(|g| {
            if g.is_empty() || g.len() > 4 {
                None
            } else {
                u16::from_str_radix(g, 16).ok()
            }
        })
        .collect();
    groups.filter(|g| (1..8).contains(&g.len())).map(Key::V6)
}

fn parse_action(value: &str) -> Result<Action, AccessProblem> {
    match value.to_ascii_uppercase().as_str() {
        "OK" => return Ok(Action::Ok),
        "RELAY" => return Ok(Action::Relay),
        "REJECT" => return Ok(Action::Reject),
        "DISCARD" => return Ok(Action::Discard),
        "SKIP" => return Ok(Action::Skip),
        _ => {}
    }
    let Some(rest) = strip_prefix_ci(value, "error:") else {
        return Err(AccessProblem::BadValue {
            value: value.into(),
        });
    };
    parse_error_reply(rest)
        .map(Action::Error)
        .map_err(|reason| AccessProblem::BadError {
            value: value.into(),
            reason,
        })
}

/// `5.7.1:550 text`, `550 text`, `550 5.7.1 text`, or any of them in double quotes.
fn parse_error_reply(s: &str) -> Result<Reply, String> {
    let s = s.trim();
    let s = match s.strip_prefix('"') {
        Some(inner) => inner
            .strip_suffix('"')
            .ok_or("the quoted reply is not closed")?,
        None => s,
    };
    let (status, rest) = match s.split_once(':') {
        Some((dsn, rest)) if looks_like_status(dsn) => (Some(dsn), rest),
        _ => (None, s),
    };
    let (code, text) = match rest.split_once(' ') {
        Some((c, t)) => (c, t.trim()),
        None => (rest, ""),
    };
    let code: u16 = code
        .parse()
        .ok()
        .filter(|c| (400..600).contains(c))
        .ok_or("the reply code must be 4xx or 5xx")?;
    // `550 5.7.1 text`: the status may follow the code instead.
    let (status, text) = match status {
        Some(s) => (Some(s), text),
        None => match text.split_once(' ') {
            Some((s, t)) if looks_like_status(s) => (Some(s), t),
            _ if looks_like_status(text) => (Some(text), ""),
            _ => (None, text),
        },
    };
    let status = status
        .map(|s| EnhancedStatus::parse(s).map_err(|e| e.to_string()))
        .transpose()?;
    let text = if text.is_empty() {
        "Access denied"
    } else {
        text
    };
    if text.chars().any(char::is_control) {
        return Err("the reply text has control characters".into());
    }
    Reply::new(code, status, text).map_err(|e| e.to_string())
}

fn looks_like_status(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_relay_rules_say_which_clients_each_relay_entry_covers() {
        let t = AccessTable::parse(
            "Connect:192.168.1 RELAY\nConnect:10.0.0.5 RELAY\nIPv6:2001:db8 RELAY\n\
             Connect:lan.example RELAY\nConnect:192.168.2 REJECT\nTo:backup.example RELAY\n\
             From:boss@corp.example RELAY\n",
            "access",
        )
        .unwrap();
        let rules: Vec<(String, usize)> = t
            .client_relay_rules()
            .into_iter()
            .map(|(k, m)| (k.to_string(), m.line))
            .collect();
        assert_eq!(
            rules,
            [
                ("192.168.1.0/24".to_string(), 1),
                ("10.0.0.5/32".to_string(), 2),
                ("2001:db8::/32".to_string(), 3),
                ("host names under lan.example".to_string(), 4),
            ]
        );
    }

    fn table(text: &str) -> AccessTable {
        AccessTable::parse(text, "access").unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn addr(s: &str) -> Address {
        s.parse().unwrap()
    }

    fn connect(t: &AccessTable, client: &str, name: Option<&str>) -> Option<String> {
        let name = name.map(|n| Domain::parse(n).unwrap());
        t.connect(ip(client), name.as_ref())
            .map(|m| format!("{} {}", m.key, m.action))
    }

    #[test]
    fn the_longest_ip_prefix_wins_whatever_the_line_order() {
        let t = table("192.168 REJECT\nConnect:192.168.1 RELAY\n192.168.1.66 REJECT\n");
        assert_eq!(
            connect(&t, "192.168.1.5", None).as_deref(),
            Some("Connect:192.168.1 RELAY")
        );
        assert_eq!(
            connect(&t, "192.168.1.66", None).as_deref(),
            Some("192.168.1.66 REJECT")
        );
        assert_eq!(
            connect(&t, "192.168.2.1", None).as_deref(),
            Some("192.168 REJECT")
        );
        assert_eq!(connect(&t, "10.0.0.1", None), None);
        // Octets are whole: 192.168.1 does not match 192.168.10.x.
        assert_eq!(
            connect(&t, "192.168.10.1", None).as_deref(),
            Some("192.168 REJECT")
        );
    }

    #[test]
    fn a_tagged_key_beats_the_untagged_one_and_other_tags_do_not_apply() {
        let t = table("Connect:10.1 RELAY\n10.1 REJECT\nFrom:10.2 REJECT\n");
        assert_eq!(
            connect(&t, "10.1.0.1", None).as_deref(),
            Some("Connect:10.1 RELAY")
        );
        assert_eq!(connect(&t, "10.2.0.1", None), None);
    }

    #[test]
    fn ipv6_addresses_and_group_prefixes_match() {
        let t = table("IPv6:2001:db8::1 RELAY\nConnect:IPv6:2001:DB8 REJECT\n");
        assert_eq!(
            connect(&t, "2001:db8::1", None).as_deref(),
            Some("IPv6:2001:db8::1 RELAY")
        );
        assert_eq!(
            connect(&t, "2001:db8:0:1::9", None).as_deref(),
            Some("Connect:IPv6:2001:DB8 REJECT")
        );
        assert_eq!(connect(&t, "2001:db9::1", None), None);
        let v4 = table("Connect:127.0.0.1 RELAY\n");
        assert!(connect(&v4, "::ffff:127.0.0.1", None).is_some());
    }

    #[test]
    fn host_names_match_their_domains_before_addresses() {
        let t = table("Connect:lan.example RELAY\nConnect:10.9 REJECT\nbad.lan.example REJECT\n");
        assert_eq!(
            connect(&t, "10.9.0.1", Some("pbx.lan.example")).as_deref(),
            Some("Connect:lan.example RELAY")
        );
        assert_eq!(
            connect(&t, "10.9.0.1", Some("x.bad.lan.example")).as_deref(),
            Some("bad.lan.example REJECT")
        );
        assert_eq!(
            connect(&t, "10.9.0.1", None).as_deref(),
            Some("Connect:10.9 REJECT")
        );
        // "lan.example" is not a suffix of "otherlan.example".
        assert_eq!(connect(&t, "10.8.0.1", Some("otherlan.example")), None);
    }

    #[test]
    fn addresses_match_user_at_domain_then_domains_then_user_at() {
        let t = table(
            "From:boss@corp.example OK\nFrom:corp.example REJECT\nFrom:postmaster@ DISCARD\nTo:Sales@Corp.Example RELAY\n",
        );
        let f = |a: &str| t.from(&addr(a)).map(|m| m.action.clone());
        assert_eq!(f("boss@corp.example"), Some(Action::Ok));
        assert_eq!(f("BOSS@mail.CORP.example"), Some(Action::Reject));
        assert_eq!(f("intern@mx.corp.example"), Some(Action::Reject));
        assert_eq!(f("postmaster@elsewhere.example"), Some(Action::Discard));
        assert_eq!(f("postmaster@corp.example"), Some(Action::Reject));
        assert_eq!(f("a@b.example"), None);
        assert_eq!(
            t.to(&addr("sales@corp.example")).map(|m| m.action.clone()),
            Some(Action::Relay)
        );
        assert_eq!(t.to(&addr("boss@corp.example")), None);
    }

    #[test]
    fn skip_stops_the_search() {
        let t = table("Connect:10 REJECT\nConnect:10.0.0 SKIP\n");
        assert_eq!(connect(&t, "10.0.0.1", None), None);
        assert!(connect(&t, "10.1.0.1", None).is_some());
    }

    #[test]
    fn error_values_in_every_sendmail_form() {
        for (value, shown) in [
            ("ERROR:5.7.1:550 go away", "550 5.7.1 go away"),
            ("ERROR:\"550 go away\"", "550 go away"),
            ("ERROR:550 go away", "550 go away"),
            ("error:\"550 5.7.1 go away\"", "550 5.7.1 go away"),
            ("ERROR:4.7.1:450 later", "450 4.7.1 later"),
            ("ERROR:550", "550 Access denied"),
        ] {
            let t = table(&format!("Connect:10 {value}\n"));
            match &connect_match(&t).action {
                Action::Error(r) => assert_eq!(r.one_line(), shown, "{value}"),
                other => panic!("{value}: {other:?}"),
            }
        }
    }

    fn connect_match(t: &AccessTable) -> AccessMatch {
        t.connect(ip("10.0.0.1"), None).unwrap().clone()
    }

    #[test]
    fn every_bad_line_is_reported_with_file_and_line() {
        let err = AccessTable::parse(
            "# comment\n\nConnect:10 RELAY\nConnect:10 REJECT\n300.1 OK\nfoo.example MAYBE\nbar.example\nx@ ERROR:5.7.1:250 ok\nConnect: OK\nIPv6:2001:zz OK\n",
            "/etc/mail/access",
        )
        .unwrap_err();
        let msg = err.to_string();
        for want in [
            "/etc/mail/access:4: key \"Connect:10\" is already defined on line 3",
            "/etc/mail/access:5: key \"300.1\"",
            "/etc/mail/access:6: value \"MAYBE\"",
            "/etc/mail/access:7: key \"bar.example\" has no value",
            "/etc/mail/access:8: \"ERROR:5.7.1:250 ok\"",
            "/etc/mail/access:9: key \"Connect:\"",
            "/etc/mail/access:10: key \"IPv6:2001:zz\"",
        ] {
            assert!(msg.contains(want), "{want:?} not in\n{msg}");
        }
        assert_eq!(msg.lines().count(), 7, "{msg}");
    }

    #[test]
    fn crlf_lines_and_tabs_are_read() {
        let t = table("Connect:10.0.0\t\tRELAY\r\n");
        assert_eq!(connect_match(&t).action, Action::Relay);
    }
}
