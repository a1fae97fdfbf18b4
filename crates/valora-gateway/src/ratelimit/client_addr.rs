//! The client address of a request: the TCP peer, unless the peer is a
//! trusted proxy, in which case the right-most `X-Forwarded-For` hop that is
//! not itself a trusted proxy.
//!
//! Clients append to `X-Forwarded-For` freely, but each proxy appends the
//! address it saw, so only the hops added by trusted proxies (the right end)
//! can be believed. Reading from the right and stopping at the first
//! untrusted hop means a client cannot choose its own address.

use std::net::IpAddr;

use http::HeaderMap;
use ipnet::IpNet;

/// Networks whose requests may carry a trusted `X-Forwarded-For`.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies {
    networks: Vec<IpNet>,
}

/// A trusted-proxy entry that is not an address or network.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IP address or CIDR network such as 10.0.0.0/8")]
pub struct BadProxy(pub String);

impl TrustedProxies {
    /// Parses a comma-separated list of addresses and CIDR networks.
    pub fn parse(list: &str) -> Result<Self, BadProxy> {
        let mut networks = Vec::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let network = match entry.parse::<IpNet>() {
                Ok(network) => network,
                Err(_) => entry.parse::<IpAddr>().map(IpNet::from).map_err(|_| BadProxy(entry.to_owned()))?,
            };
            networks.push(network);
        }
        Ok(Self { networks })
    }

    fn trusts(&self, addr: IpAddr) -> bool {
        let addr = canonical(addr);
        self.networks.iter().any(|n| n.contains(&addr))
    }

    /// The client address of a request from `peer` with `headers`.
    pub fn client_addr(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return peer;
        }
        let mut client = peer;
        for value in headers.get_all("x-forwarded-for").iter().rev() {
            let Ok(value) = value.to_str() else { return client };
            for hop in value.rsplit(',').map(str::trim) {
                let Some(addr) = parse_hop(hop) else { return client };
                client = addr;
                if !self.trusts(addr) {
                    return addr;
                }
            }
        }
        client
    }
}

/// An `X-Forwarded-For` hop: an address, optionally with a port or in
/// brackets.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(addr) = hop.parse::<IpAddr>() {
        return Some(canonical(addr));
    }
    if let Ok(socket) = hop.parse::<std::net::SocketAddr>() {
        return Some(canonical(socket.ip()));
    }
    hop.strip_prefix('[').and_then(|h| h.strip_suffix(']')).and_then(|h| h.parse().ok()).map(canonical)
}

/// IPv4-mapped IPv6 addresses count as their IPv4 address.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append("x-forwarded-for", value.parse().unwrap());
        }
        map
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarding_table() {
        let proxies = TrustedProxies::parse("10.0.0.0/8, 192.0.2.1").unwrap();
        let cases: &[(&str, &[&str], &str)] = &[
            // An untrusted peer's header is ignored entirely.
            ("203.0.113.9", &["1.2.3.4"], "203.0.113.9"),
            // A trusted proxy: the hop it added is the client.
            ("10.1.1.1", &["198.51.100.7"], "198.51.100.7"),
            // A client prepends a fake hop: the right-most untrusted hop wins.
            ("10.1.1.1", &["1.1.1.1, 198.51.100.7"], "198.51.100.7"),
            // Two trusted proxies in a row are skipped.
            ("10.1.1.1", &["198.51.100.7, 10.2.2.2"], "198.51.100.7"),
            ("192.0.2.1", &["198.51.100.7", "10.2.2.2"], "198.51.100.7"),
            // Garbage stops the walk at the last good hop.
            ("10.1.1.1", &["198.51.100.7, not-an-ip"], "10.1.1.1"),
            // Ports and brackets are understood.
            ("10.1.1.1", &["198.51.100.7:5555"], "198.51.100.7"),
            ("10.1.1.1", &["[2001:db8::1]"], "2001:db8::1"),
            // All hops trusted: the left-most is the best known.
            ("10.1.1.1", &["10.3.3.3"], "10.3.3.3"),
            // No header from a trusted proxy: the proxy itself.
            ("10.1.1.1", &[], "10.1.1.1"),
            // An IPv4-mapped peer counts as IPv4.
            ("::ffff:10.1.1.1", &["198.51.100.7"], "198.51.100.7"),
        ];
        for (peer, forwarded, expected) in cases {
            assert_eq!(proxies.client_addr(ip(peer), &headers(forwarded)), ip(expected), "{peer} {forwarded:?}");
        }
    }

    #[test]
    fn no_proxies_means_the_peer() {
        let proxies = TrustedProxies::default();
        assert_eq!(proxies.client_addr(ip("127.0.0.1"), &headers(&["1.2.3.4"])), ip("127.0.0.1"));
        assert_eq!(TrustedProxies::parse("10.0.0.0/33").unwrap_err(), BadProxy("10.0.0.0/33".into()));
    }
}
