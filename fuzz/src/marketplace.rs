//! The webhook URL guard.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use valora_marketplace::webhooks::ssrf::{AllowedNetworks, MAX_URL_LEN, UrlPolicy};

const STRICT: UrlPolicy = UrlPolicy { allow_loopback: false, allowed_networks: AllowedNetworks::NONE };
const DEVELOPMENT: UrlPolicy = UrlPolicy { allow_loopback: true, allowed_networks: AllowedNetworks::NONE };

/// `UrlPolicy::check_url` on arbitrary text, with and without the
/// development loopback exception.
///
/// Properties of an accepted URL:
/// - https (http only with the exception, for 127.0.0.1, `[::1]` or a
///   `localhost` name), a host, no user info, no fragment, at most 2048
///   bytes as given and as normalised;
/// - an IP-literal host is public by the standard library's own address
///   tests and the special-purpose ranges they leave out, including the
///   IPv4 address inside an IPv6 embedding; a host name is not an address
///   in disguise;
/// - checking the normalised URL again accepts the same URL;
/// - the exception only widens: what the strict policy accepts, the
///   development policy accepts too, and what only the development policy
///   accepts is a loopback host.
pub fn webhook_url(data: &[u8]) {
    let Ok(raw) = std::str::from_utf8(data) else { return };
    let strict = STRICT.check_url(raw);
    let development = DEVELOPMENT.check_url(raw);
    if let Ok(url) = &strict {
        check_accepted(url, false);
        assert_eq!(development.as_ref().ok(), Some(url), "the loopback exception refused what strict accepts");
    }
    if let Ok(url) = &development {
        check_accepted(url, true);
        assert!(raw.len() <= MAX_URL_LEN);
        if strict.is_err() {
            let loopback = match url.host() {
                Some(url::Host::Ipv4(ip)) => ip == Ipv4Addr::LOCALHOST,
                Some(url::Host::Ipv6(ip)) => ip == Ipv6Addr::LOCALHOST,
                Some(url::Host::Domain(name)) => {
                    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
                    name == "localhost" || name.ends_with(".localhost")
                }
                None => false,
            };
            assert!(loopback, "only the loopback exception accepted {url}");
        }
    }
}

fn check_accepted(url: &url::Url, allow_loopback: bool) {
    let policy = UrlPolicy { allow_loopback, allowed_networks: AllowedNetworks::NONE };
    assert!(url.as_str().len() <= MAX_URL_LEN);
    assert!(url.username().is_empty() && url.password().is_none(), "user info in {url}");
    assert!(url.fragment().is_none(), "fragment in {url}");
    let host = url.host().unwrap_or_else(|| panic!("no host in {url}"));
    match url.scheme() {
        "https" => {}
        "http" => assert!(allow_loopback, "http accepted without the exception: {url}"),
        other => panic!("scheme {other} accepted: {url}"),
    }
    match host {
        url::Host::Ipv4(ip) => {
            let exempt = allow_loopback && ip == Ipv4Addr::LOCALHOST;
            assert!(exempt || public_v4(ip), "refused address {ip} accepted in {url}");
        }
        url::Host::Ipv6(ip) => {
            let exempt = allow_loopback && ip == Ipv6Addr::LOCALHOST;
            assert!(exempt || public_v6(ip), "refused address {ip} accepted in {url}");
        }
        url::Host::Domain(name) => {
            let bare = name.strip_suffix('.').unwrap_or(name);
            assert!(bare.parse::<IpAddr>().is_err(), "address {name} kept as a host name in {url}");
            let bracketed = bare.strip_prefix('[').and_then(|b| b.strip_suffix(']')).unwrap_or(bare);
            assert!(bracketed.parse::<Ipv6Addr>().is_err(), "address {name} kept as a host name in {url}");
        }
    }
    if url.scheme() == "http" {
        let loopback = match host {
            url::Host::Ipv4(ip) => ip == Ipv4Addr::LOCALHOST,
            url::Host::Ipv6(ip) => ip == Ipv6Addr::LOCALHOST,
            url::Host::Domain(name) => {
                let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
                name == "localhost" || name.ends_with(".localhost")
            }
        };
        assert!(loopback, "http accepted for a host that is not loopback: {url}");
    }
    let again = policy.check_url(url.as_str());
    assert_eq!(again.as_ref().ok(), Some(url), "the normalised URL {url} is judged differently: {again:?}");
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], len: u32) -> bool {
    len == 0 || (ip.to_bits() ^ Ipv4Addr::from(net).to_bits()) >> (32 - len) == 0
}

/// Public by the standard library's tests and the special-purpose ranges
/// of RFC 6890 that those tests leave out.
fn public_v4(ip: Ipv4Addr) -> bool {
    let std_says_special = ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation();
    let special = [
        ([0, 0, 0, 0], 8),
        ([100, 64, 0, 0], 10),
        ([192, 0, 0, 0], 24),
        ([198, 18, 0, 0], 15),
        ([240, 0, 0, 0], 4),
    ];
    !std_says_special && !special.iter().any(|&(net, len)| in_v4(ip, net, len))
}

/// Public: global unicast (`2000::/3`) and none of its special-purpose
/// parts, or an embedding whose IPv4 addresses are all public.
fn public_v6(ip: Ipv6Addr) -> bool {
    if ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() || ip.is_unique_local() || ip.is_unicast_link_local() {
        return false;
    }
    let bits = ip.to_bits();
    let low = Ipv4Addr::from_bits(bits as u32);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return public_v4(v4);
    }
    if bits >> 32 == 0 {
        // IPv4-compatible.
        return public_v4(low);
    }
    if bits >> 32 == 0x0064_ff9b_0000_0000_0000_0000 {
        return public_v4(low);
    }
    if bits >> 112 == 0x2002 {
        return public_v4(Ipv4Addr::from_bits((bits >> 80) as u32));
    }
    if bits >> 96 == 0x2001_0000 {
        return public_v4(Ipv4Addr::from_bits((bits >> 64) as u32)) && public_v4(Ipv4Addr::from_bits(!(bits as u32)));
    }
    let global_unicast = bits >> 125 == 0b001;
    let documentation = bits >> 96 == 0x2001_0db8 || bits >> 108 == 0x3fff0;
    let benchmarking = bits >> 80 == 0x2001_0002_0000;
    global_unicast && !documentation && !benchmarking
}
