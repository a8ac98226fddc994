//! Postfix's `mynetworks`: the client networks, in CIDR form, that may relay.
//!
//! ```
//! use postrider::server::networks::Networks;
//! let nets = Networks::parse(["127.0.0.0/8", "192.168.1.0/24", "2001:db8::/32", "10.1.2.3"])?;
//! assert!(nets.contains("192.168.1.77".parse().unwrap()));
//! assert!(!nets.contains("192.168.2.1".parse().unwrap()));
//! assert!(nets.contains("10.1.2.3".parse().unwrap()));
//! # Ok::<(), postrider::server::networks::NetworkError>(())
//! ```

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// A bad network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a network: {reason} (write 192.168.1.0/24, 2001:db8::/32 or an address)")]
pub struct NetworkError {
    /// The text given.
    pub input: String,
    /// What is wrong.
    pub reason: &'static str,
}

/// One network: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    /// True when `ip` is in the network (an IPv4-mapped IPv6 client counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Network {
    type Err = NetworkError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason| NetworkError {
            input: s.to_string(),
            reason,
        };
        // Postfix writes IPv6 networks in brackets: [2001:db8::]/32.
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr = addr
            .strip_prefix('[')
            .and_then(|a| a.strip_suffix(']'))
            .unwrap_or(addr);
        let addr: IpAddr = addr.parse().map_err(|_| bad("not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| bad("the prefix length is out of range"))?,
        };
        let net = Network { addr, prefix };
        // 192.168.1.5/24 is almost always a typo for .0/24 or /32: refuse it, as a doubt here
        // would decide who may relay.
        if !net.contains(addr) || net.masked() != addr {
            return Err(bad("host bits are set below the prefix length"));
        }
        Ok(net)
    }
}

impl Network {
    /// The network of `addr`'s first `prefix` bits (the host bits are cleared); `None` when
    /// `prefix` is longer than the address.
    pub fn from_prefix(addr: IpAddr, prefix: u8) -> Option<Network> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then(|| {
            let net = Network { addr, prefix };
            Network {
                addr: net.masked(),
                prefix,
            }
        })
    }

    /// The network's address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits (0: every address of its family).
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    fn masked(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        }
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl<'de> Deserialize<'de> for Network {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A list of networks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Networks(Vec<Network>);

impl Networks {
    /// Parses each network.
    pub fn parse<'a>(list: impl IntoIterator<Item = &'a str>) -> Result<Networks, NetworkError> {
        list.into_iter()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map(Networks)
    }

    /// From parsed networks.
    pub fn new(list: Vec<Network>) -> Networks {
        Networks(list)
    }

    /// True when some network holds `ip`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(ip))
    }

    /// True for an empty list.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The networks, in the order given.
    pub fn iter(&self) -> impl Iterator<Item = &Network> {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_of_every_length_including_zero_and_full() {
        let all: Network = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()));
        assert!(!all.contains("::1".parse().unwrap()));
        let one: Network = "10.0.0.1/32".parse().unwrap();
        assert!(one.contains("10.0.0.1".parse().unwrap()));
        assert!(!one.contains("10.0.0.2".parse().unwrap()));
        let v6: Network = "[2001:db8::]/32".parse().unwrap();
        assert!(v6.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        let lo: Network = "127.0.0.0/8".parse().unwrap();
        assert!(lo.contains("::ffff:127.0.0.2".parse().unwrap()));
    }

    #[test]
    fn bad_networks_are_refused_with_the_reason() {
        for bad in [
            "192.168.1.5/24",
            "10.0.0.0/33",
            "example.com",
            "::/129",
            "1.2.3.4/x",
        ] {
            let e = bad.parse::<Network>().unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
    }
}
