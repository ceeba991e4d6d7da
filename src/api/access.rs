//! Who may push: an optional bearer token and an optional allow-list of
//! networks for the push endpoints (`/goim/push/*`). Both are off by
//! default, as in goim; reads (online counts, nodes, metrics, health) are
//! never gated, since clients and monitoring need them.
//!
//! Owns: the CIDR grammar, the comparison of the presented token (in time
//! independent of where it differs), and the refusals: HTTP 403 with code
//! -403 for a network outside the list, HTTP 401 with code -401 for a
//! missing or wrong token. Must never: log or echo a presented token.

use std::net::IpAddr;

/// A network in CIDR form (`10.0.0.0/8`, `2001:db8::/32`, or one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix_bits: u8,
}

impl Network {
    pub fn parse(text: &str) -> Result<Network, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| format!("{text:?} is not an IP address or CIDR"))?;
        let max_bits = if addr.is_ipv4() { 32 } else { 128 };
        let prefix_bits = match prefix {
            None => max_bits,
            Some(p) => match p.trim().parse::<u8>() {
                Ok(bits) if bits <= max_bits => bits,
                _ => return Err(format!("{text:?}: the prefix must be 0 to {max_bits}")),
            },
        };
        Ok(Network { addr, prefix_bits })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 client on a dual-stack socket shows up as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.prefix_bits),
            (IpAddr::V6(net), IpAddr::V6(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.prefix_bits),
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let (whole, rest) = ((bits / 8) as usize, bits % 8);
    if a[..whole] != b[..whole] {
        return false;
    }
    rest == 0 || (a[whole] ^ b[whole]) >> (8 - rest) == 0
}

/// A push the access rules refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denial {
    pub status: u16,
    pub reason: &'static str,
    pub code: i32,
    pub message: &'static str,
}

pub const FORBIDDEN: Denial =
    Denial { status: 403, reason: "Forbidden", code: -403, message: "this network may not push" };
pub const UNAUTHORIZED: Denial =
    Denial { status: 401, reason: "Unauthorized", code: -401, message: "missing or wrong bearer token" };

/// The push API's access rules, built once from `[http]`.
#[derive(Debug, Clone, Default)]
pub struct Access {
    bearer_token: Option<String>,
    networks: Vec<Network>,
}

impl Access {
    pub fn new(bearer_token: &str, networks: &[String]) -> Result<Access, String> {
        let networks = networks.iter().map(|n| Network::parse(n)).collect::<Result<Vec<_>, _>>()?;
        let bearer_token = (!bearer_token.is_empty()).then(|| bearer_token.to_string());
        Ok(Access { bearer_token, networks })
    }

    /// Rules that let nobody push (when the configured ones cannot be built).
    pub fn deny_all() -> Access {
        Access {
            bearer_token: None,
            networks: vec![Network { addr: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), prefix_bits: 32 }],
        }
    }

    /// Whether a connection from `peer` may push (checked once per connection).
    pub fn network_allowed(&self, peer: Option<IpAddr>) -> bool {
        self.networks.is_empty() || peer.is_some_and(|ip| self.networks.iter().any(|n| n.contains(ip)))
    }

    /// The verdict on one push request from a connection whose network was
    /// `network_allowed`, carrying `authorization` (the header's value).
    pub fn check(&self, network_allowed: bool, authorization: Option<&[u8]>) -> Result<(), Denial> {
        if !network_allowed {
            return Err(FORBIDDEN);
        }
        let Some(expected) = &self.bearer_token else { return Ok(()) };
        let presented = authorization.and_then(|value| {
            let (scheme, token) = value.split_at(value.iter().position(|b| *b == b' ')?);
            scheme.eq_ignore_ascii_case(b"bearer").then(|| token.trim_ascii())
        });
        match presented {
            Some(token) if constant_time_eq(token, expected.as_bytes()) => Ok(()),
            _ => Err(UNAUTHORIZED),
        }
    }
}

/// Equal bytes, in time that depends on the lengths only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn networks_match_by_prefix_v4_v6_and_mapped() {
        let net = Network::parse("10.1.0.0/16").unwrap();
        assert!(net.contains(ip("10.1.255.3")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(net.contains(ip("::ffff:10.1.2.3")), "IPv4-mapped IPv6");
        assert!(Network::parse("0.0.0.0/0").unwrap().contains(ip("192.0.2.1")));
        let odd = Network::parse("192.168.0.128/25").unwrap();
        assert!(odd.contains(ip("192.168.0.200")) && !odd.contains(ip("192.168.0.100")));
        let v6 = Network::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:1::5")) && !v6.contains(ip("2001:db9::1")));
        assert!(!v6.contains(ip("10.1.2.3")));
        assert!(Network::parse("127.0.0.1").unwrap().contains(ip("127.0.0.1")));
        for bad in ["10.0.0.0/33", "::/129", "10.0.0/8", "abc", "10.0.0.0/x"] {
            assert!(Network::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_bearer_token_and_the_network_decide() {
        let open = Access::default();
        assert_eq!(open.check(open.network_allowed(None), None), Ok(()));
        let access = Access::new("s3cret", &["127.0.0.0/8".to_string()]).unwrap();
        assert!(access.network_allowed(Some(ip("127.0.0.1"))));
        assert!(!access.network_allowed(Some(ip("10.0.0.1"))));
        assert_eq!(access.check(false, Some(b"Bearer s3cret")), Err(FORBIDDEN));
        assert_eq!(access.check(true, Some(b"Bearer s3cret")), Ok(()));
        assert_eq!(access.check(true, Some(b"bearer   s3cret ")), Ok(()));
        for wrong in [None, Some(&b"Bearer s3cre"[..]), Some(b"Basic s3cret"), Some(b"s3cret"), Some(b"Bearer")] {
            assert_eq!(access.check(true, wrong), Err(UNAUTHORIZED), "{wrong:?}");
        }
    }
}
