//! A reader for `/etc/resolv.conf`: the lines a mail transfer agent needs (name servers,
//! search list, timeout and attempts), with glibc's meanings.
//!
//! Lines glibc would ignore are ignored here too, but each one is reported with its file and
//! line so an operator can see why a name server was not used.

use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::Duration;

use crate::address::Domain;

/// resolv.conf cannot name a port: name servers listen on 53.
pub(crate) const DNS_PORT: u16 = 53;

/// What a resolv.conf says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ResolvConf {
    /// `nameserver` lines, in order.
    pub name_servers: Vec<SocketAddr>,
    /// The last `search` or `domain` line (glibc: the last one wins).
    pub search: Vec<Domain>,
    /// `options timeout:N`.
    pub timeout: Option<Duration>,
    /// `options attempts:N` (tries per name server).
    pub attempts: Option<u32>,
    /// Lines that were ignored, as `origin:line: why`.
    pub warnings: Vec<String>,
}

impl ResolvConf {
    /// Parses resolv.conf text; `origin` (usually the file's path) prefixes the warnings.
    pub(crate) fn parse(text: &str, origin: &str) -> ResolvConf {
        let mut conf = ResolvConf::default();
        for (index, raw) in text.lines().enumerate() {
            let line = raw.split(['#', ';']).next().unwrap_or_default().trim();
            let mut words = line.split_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            let warn = |why: String| format!("{origin}:{}: {why}", index + 1);
            match keyword {
                "nameserver" => match words.next().map(parse_server) {
                    Some(Ok(addr)) => conf.name_servers.push(addr),
                    Some(Err(why)) => conf.warnings.push(warn(why)),
                    None => conf
                        .warnings
                        .push(warn("\"nameserver\" without an address".into())),
                },
                "domain" | "search" => {
                    conf.search.clear();
                    for word in words {
                        match Domain::parse(word) {
                            Ok(d) => conf.search.push(d),
                            Err(e) => conf
                                .warnings
                                .push(warn(format!("search domain {word:?} ignored: {e}"))),
                        }
                    }
                }
                "options" => {
                    for word in words {
                        if let Some(n) = word.strip_prefix("timeout:") {
                            match n.parse::<u64>() {
                                Ok(secs) if secs > 0 => {
                                    conf.timeout = Some(Duration::from_secs(secs.min(30)))
                                }
                                _ => conf.warnings.push(warn(format!("{word:?} ignored"))),
                            }
                        } else if let Some(n) = word.strip_prefix("attempts:") {
                            match n.parse::<u32>() {
                                Ok(tries) if tries > 0 => conf.attempts = Some(tries.min(5)),
                                _ => conf.warnings.push(warn(format!("{word:?} ignored"))),
                            }
                        }
                    }
                }
                // sortlist, lookup, family: not used for mail routing.
                "sortlist" | "lookup" | "family" => {}
                other => conf
                    .warnings
                    .push(warn(format!("unknown keyword {other:?} ignored"))),
            }
        }
        conf
    }
}

/// `192.0.2.53`, `2001:db8::53`, `fe80::1%eth0` (a link-local address with its interface).
fn parse_server(word: &str) -> Result<SocketAddr, String> {
    if let Ok(ip) = word.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, DNS_PORT));
    }
    if let Some((addr, zone)) = word.split_once('%')
        && let Ok(v6) = addr.parse::<Ipv6Addr>()
    {
        let scope = zone
            .parse::<u32>()
            .ok()
            .or_else(|| interface_index(zone))
            .ok_or_else(|| format!("name server {word:?} ignored: no interface {zone:?}"))?;
        return Ok(SocketAddr::V6(SocketAddrV6::new(v6, DNS_PORT, 0, scope)));
    }
    Err(format!(
        "name server {word:?} ignored: not an IP address (resolv.conf cannot name a host or a port)"
    ))
}

fn interface_index(name: &str) -> Option<u32> {
    let c_name = std::ffi::CString::new(name).ok()?;
    // SAFETY: `c_name` is a valid NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    (index != 0).then_some(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_servers_search_and_options_are_read() {
        let conf = ResolvConf::parse(
            "# generated\n\
             nameserver 192.0.2.53\n\
             nameserver 2001:db8::53 # secondary\n\
             domain old.example\n\
             search corp.example example.com\n\
             options ndots:2 timeout:1 attempts:3 rotate\n",
            "resolv.conf",
        );
        assert_eq!(
            conf.name_servers,
            vec![
                "192.0.2.53:53".parse::<SocketAddr>().unwrap(),
                "[2001:db8::53]:53".parse().unwrap()
            ]
        );
        assert_eq!(
            conf.search,
            vec![
                Domain::parse("corp.example").unwrap(),
                Domain::parse("example.com").unwrap()
            ]
        );
        assert_eq!(conf.timeout, Some(Duration::from_secs(1)));
        assert_eq!(conf.attempts, Some(3));
        assert!(conf.warnings.is_empty(), "{:?}", conf.warnings);
    }

    #[test]
    fn bad_lines_are_reported_with_file_and_line() {
        let conf = ResolvConf::parse(
            "nameserver dns.example.com\nnameserver 192.0.2.1:5353\nfrobnicate yes\nnameserver 192.0.2.2\n",
            "/etc/resolv.conf",
        );
        assert_eq!(
            conf.name_servers,
            vec!["192.0.2.2:53".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(conf.warnings.len(), 3, "{:?}", conf.warnings);
        assert!(conf.warnings[0].starts_with("/etc/resolv.conf:1: "));
        assert!(conf.warnings[1].contains("\"192.0.2.1:5353\""));
        assert!(conf.warnings[2].starts_with("/etc/resolv.conf:3: unknown keyword"));
    }

    #[test]
    fn a_numeric_zone_id_is_accepted_for_link_local_servers() {
        let conf = ResolvConf::parse("nameserver fe80::1%2\n", "r");
        match conf.name_servers[0] {
            SocketAddr::V6(v6) => assert_eq!(v6.scope_id(), 2),
            other => panic!("{other}"),
        }
    }
}
