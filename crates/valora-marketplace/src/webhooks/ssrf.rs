//! The guard that keeps webhook URLs from reaching internal addresses.
//!
//! Sellers choose the URLs that the marketplace POSTs to, so a URL must not
//! lead the marketplace into its own network: loopback, private ranges, the
//! cloud metadata address and every other address class that is not public.
//! Three checks work together:
//!
//! - [`UrlPolicy::check_url`] checks the URL's shape without touching the
//!   network, and checks an IP-literal host right away;
//! - [`UrlPolicy::resolve`] resolves a host name and checks every address,
//!   so a seller hears about a bad URL when registering it;
//! - [`GuardedResolver`] is the DNS resolver of the delivery client, so the
//!   connection goes only to an address that passed the check at connect
//!   time, even when the name resolved differently at registration.
//!
//! reqwest calls no resolver for an IP-literal host, and by default follows
//! redirects and uses the proxies named in the environment. A client built
//! with [`GuardedResolver`] therefore runs `check_url` on every URL it sends
//! to, and is built with `redirect(reqwest::redirect::Policy::none())` and
//! `no_proxy()`.
//!
//! IPv6 addresses that carry an IPv4 address (IPv4-mapped `::ffff:0:0/96`,
//! IPv4-compatible `::/96`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16` and
//! Teredo `2001::/32`) are refused when the IPv4 address they carry is
//! refused. IPv6 addresses outside `2000::/3`, the global unicast range, are
//! refused as reserved unless they are one of those embeddings.
//!
//! An operator whose receivers run inside its own network lists those
//! networks in [`AllowedNetworks`]; addresses inside them pass although
//! they are not public. Every other address is judged as without the list.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// Longest accepted webhook URL, in bytes, before and after normalisation.
pub const MAX_URL_LEN: usize = 2048;

/// What a webhook URL may point at.
#[derive(Clone, Debug, Default)]
pub struct UrlPolicy {
    /// Development only: allow receivers on 127.0.0.1 and ::1 (and http for
    /// them). Every other refused class stays refused.
    ///
    /// The exception covers exactly 127.0.0.1 and ::1, and the `localhost`
    /// names when they resolve to them. The rest of 127.0.0.0/8 stays
    /// refused: a development receiver listens on 127.0.0.1, while other
    /// loopback addresses host local services of their own (127.0.0.53 is
    /// systemd-resolved's stub, 127.0.1.1 often names the machine). If the
    /// exception is left on outside development by mistake, it exposes two
    /// addresses rather than all of 127.0.0.0/8. IPv4-mapped and other
    /// embedded forms of 127.0.0.1 also stay refused, so the exception has
    /// one spelling per family.
    pub allow_loopback: bool,
    /// Networks the operator allows receivers in, although their addresses
    /// are not public (`VALORA_WEBHOOK_ALLOW_NETWORKS`).
    ///
    /// An address inside one of them passes [`UrlPolicy::check_ip`],
    /// [`UrlPolicy::resolve`] and [`GuardedResolver`] whatever its class.
    /// Every address outside them is judged as without the list, so a name
    /// with one address inside and one refused address outside stays
    /// refused. An IPv6 address that carries an IPv4 address (IPv4-mapped,
    /// NAT64 and the other embeddings) is judged by that IPv4 address alone,
    /// even when the IPv6 address is inside a listed network. To allow such
    /// a receiver, list the IPv4 network itself.
    ///
    /// A URL whose host is an IP literal inside one of these networks may
    /// use http as well as https. Such a delivery crosses only the listed
    /// network, where it travels in the clear: the signature still proves
    /// where it came from, but anyone on that network can read it. A host
    /// name still needs https, because its addresses can change after the
    /// check to public ones, which would carry the delivery unencrypted
    /// across the internet.
    pub allowed_networks: AllowedNetworks,
}

/// Networks in which webhook receivers may have addresses that are not
/// public, as set by the operator.
///
/// Built by [`AllowedNetworks::parse`], which rejects networks that would
/// open more than the operator's receivers. These are `0.0.0.0/0`, `::/0`,
/// and any network that contains a cloud metadata address (169.254.169.254
/// or fd00:ec2::254) or an unspecified address (0.0.0.0 or ::). A
/// connection to an unspecified address reaches the marketplace's own host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowedNetworks(Option<Arc<[IpNet]>>);

/// The cloud metadata addresses, which no allowed network may contain.
const METADATA_ADDRESSES: [IpAddr; 2] =
    [IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)), IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254))];

/// The unspecified addresses, which no allowed network may contain.
const UNSPECIFIED_ADDRESSES: [IpAddr; 2] = [IpAddr::V4(Ipv4Addr::UNSPECIFIED), IpAddr::V6(Ipv6Addr::UNSPECIFIED)];

impl AllowedNetworks {
    /// No network: every address that is not public is refused.
    pub const NONE: Self = Self(None);

    /// Parses a comma-separated list of CIDR networks (`10.20.0.0/16`,
    /// `fd12:3456::/48`) and single addresses (`10.20.1.5`, `fd12::5`).
    /// Blanks around entries and empty entries are ignored. Host bits of a
    /// network are cleared, so `10.20.1.5/16` means `10.20.0.0/16`.
    pub fn parse(list: &str) -> Result<Self, BadNetwork> {
        let mut networks: Vec<IpNet> = Vec::new();
        for entry in list.split(',').map(str::trim).filter(|entry| !entry.is_empty()) {
            let network = match entry.parse::<IpNet>() {
                Ok(network) => network,
                Err(_) => entry
                    .parse::<IpAddr>()
                    .map(IpNet::from)
                    .map_err(|_| BadNetwork::Malformed { entry: entry.to_owned() })?,
            };
            if network.prefix_len() == 0 {
                let family = if matches!(network, IpNet::V4(_)) { "IPv4" } else { "IPv6" };
                return Err(BadNetwork::Everything { entry: entry.to_owned(), family });
            }
            if let Some(&address) = METADATA_ADDRESSES.iter().find(|address| network.contains(*address)) {
                return Err(BadNetwork::CloudMetadata { entry: entry.to_owned(), address });
            }
            if let Some(&address) = UNSPECIFIED_ADDRESSES.iter().find(|address| network.contains(*address)) {
                return Err(BadNetwork::Unspecified { entry: entry.to_owned(), address });
            }
            let network = network.trunc();
            if !networks.contains(&network) {
                networks.push(network);
            }
        }
        Ok(if networks.is_empty() { Self::NONE } else { Self(Some(networks.into())) })
    }

    /// Returns the networks in the order given, with host bits cleared.
    pub fn networks(&self) -> &[IpNet] {
        self.0.as_deref().unwrap_or_default()
    }

    /// Returns whether no network is allowed.
    pub fn is_empty(&self) -> bool {
        self.networks().is_empty()
    }

    /// Returns whether `ip` is inside an allowed network. An IPv4 address
    /// is never inside an IPv6 network, nor the reverse.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.networks().iter().any(|network| network.contains(&ip))
    }
}

impl fmt::Display for AllowedNetworks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, network) in self.networks().iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            write!(f, "{network}")?;
        }
        Ok(())
    }
}

/// An entry of an allowed-network list that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadNetwork {
    /// The entry is neither an IP address nor a CIDR network.
    #[error("entry {entry:?} is not an IP address or CIDR network")]
    Malformed {
        /// The entry as given.
        entry: String,
    },
    /// The entry is `0.0.0.0/0` or `::/0`.
    #[error("entry {entry:?} allows every {family} address, which turns the guard off")]
    Everything {
        /// The entry as given.
        entry: String,
        /// `IPv4` or `IPv6`.
        family: &'static str,
    },
    /// The entry contains a cloud metadata address.
    #[error("entry {entry:?} contains {address}, the cloud metadata address, which can hand out cloud credentials")]
    CloudMetadata {
        /// The entry as given.
        entry: String,
        /// The metadata address inside the entry.
        address: IpAddr,
    },
    /// The entry contains an unspecified address.
    #[error(
        "entry {entry:?} contains {address}, the unspecified address, which connects to the marketplace's own host"
    )]
    Unspecified {
        /// The entry as given.
        entry: String,
        /// The unspecified address inside the entry.
        address: IpAddr,
    },
}

impl BadNetwork {
    /// Returns the entry as given.
    pub fn entry(&self) -> &str {
        match self {
            Self::Malformed { entry }
            | Self::Everything { entry, .. }
            | Self::CloudMetadata { entry, .. }
            | Self::Unspecified { entry, .. } => entry,
        }
    }
}

/// The reason a webhook URL is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UrlProblem {
    /// The URL is longer than [`MAX_URL_LEN`] bytes, as given or once
    /// normalised.
    #[error("is {len} bytes long; webhook URLs must be at most {max} bytes", max = MAX_URL_LEN)]
    TooLong {
        /// Length in bytes.
        len: usize,
    },
    /// The text does not parse as an absolute URL.
    #[error("is not a valid absolute URL ({0}); expected a URL such as https://hooks.example.com/valora")]
    Malformed(url::ParseError),
    /// The scheme is not https (nor http for an allowed loopback host or
    /// an IP-literal host inside an allowed network).
    #[error("uses {scheme}; webhook URLs must use https")]
    Scheme {
        /// The URL's scheme, lowercased.
        scheme: String,
    },
    /// The URL carries a user name or a password.
    #[error("contains user info; webhook URLs must not carry a user name or password")]
    UserInfo,
    /// The URL names no host.
    #[error("has no host; webhook URLs must name a host, as in https://hooks.example.com/valora")]
    MissingHost,
    /// The URL has a fragment.
    #[error("has a fragment (#...); webhook URLs must not have one")]
    Fragment,
    /// The host is an IP address of a refused class.
    #[error("points at {0}; webhook receivers must be on public addresses")]
    RefusedAddress(RefusedAddress),
    /// The host name resolves to at least one address of a refused class.
    #[error("host {host} resolves to {address}; every address of a webhook host must be public")]
    RefusedHost {
        /// The host name as resolved.
        host: String,
        /// The first refused address.
        address: RefusedAddress,
    },
    /// A `localhost` name resolves to an address that is not loopback.
    #[error("host {host} resolves to {ip}; a localhost name must resolve only to 127.0.0.1 or ::1")]
    LocalhostNotLoopback {
        /// The host name as resolved.
        host: String,
        /// The address that is not loopback.
        ip: IpAddr,
    },
    /// The host name has no address.
    #[error("host {host} does not resolve ({reason}); webhook URLs must name a host that has public addresses")]
    DoesNotResolve {
        /// The host name as looked up.
        host: String,
        /// The resolver's error message.
        reason: String,
    },
}

/// A refused address, with the class and range it falls in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefusedAddress {
    /// The address checked.
    pub ip: IpAddr,
    /// The IPv4 address carried inside an IPv6 address, when that is what
    /// was refused.
    pub embedded: Option<(Embedding, Ipv4Addr)>,
    /// The refused class.
    pub class: AddressClass,
    /// The range, as text (for example `10.0.0.0/8`).
    pub range: &'static str,
}

impl fmt::Display for RefusedAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.embedded {
            None => write!(f, "{}, {} ({})", self.ip, self.class, self.range),
            Some((embedding, v4)) => {
                write!(f, "{} ({} {}), {} ({})", self.ip, embedding.describe(), v4, self.class, self.range)
            }
        }
    }
}

/// A format in which an IPv6 address carries an IPv4 address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Embedding {
    /// IPv4-mapped, `::ffff:a.b.c.d`.
    Mapped,
    /// IPv4-compatible, `::a.b.c.d` (deprecated).
    Compatible,
    /// NAT64 well-known prefix, `64:ff9b::a.b.c.d`.
    Nat64,
    /// 6to4, `2002:AABB:CCDD::/48`.
    SixToFour,
    /// Teredo's server address, bits 32 to 63 of `2001::/32`.
    TeredoServer,
    /// Teredo's client address, the inverted last 32 bits of `2001::/32`.
    TeredoClient,
}

impl Embedding {
    fn describe(self) -> &'static str {
        match self {
            Self::Mapped => "IPv4-mapped address of",
            Self::Compatible => "IPv4-compatible address of",
            Self::Nat64 => "NAT64 address of",
            Self::SixToFour => "6to4 address of",
            Self::TeredoServer => "Teredo address with server",
            Self::TeredoClient => "Teredo address with client",
        }
    }
}

/// An address class that webhook receivers may not be in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressClass {
    /// 0.0.0.0/8 and `::`.
    Unspecified,
    /// 127.0.0.0/8 and `::1`.
    Loopback,
    /// 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16 and unique-local `fc00::/7`.
    Private,
    /// Carrier-grade NAT shared space, 100.64.0.0/10.
    CarrierGradeNat,
    /// 169.254.0.0/16 and `fe80::/10`.
    LinkLocal,
    /// The cloud metadata service: 169.254.169.254 and `fd00:ec2::254`.
    CloudMetadata,
    /// 224.0.0.0/4 and `ff00::/8`.
    Multicast,
    /// 255.255.255.255.
    Broadcast,
    /// 240.0.0.0/4, and IPv6 outside `2000::/3` that no other class covers.
    Reserved,
    /// 198.18.0.0/15 and `2001:2::/48`.
    Benchmarking,
    /// 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, `2001:db8::/32` and
    /// `3fff::/20`.
    Documentation,
    /// IETF protocol assignments, 192.0.0.0/24.
    ProtocolAssignments,
    /// Deprecated site-local `fec0::/10`.
    SiteLocal,
    /// Discard-only `100::/64`.
    DiscardOnly,
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unspecified => "an unspecified address",
            Self::Loopback => "a loopback address",
            Self::Private => "a private address",
            Self::CarrierGradeNat => "a carrier-grade NAT address",
            Self::LinkLocal => "a link-local address",
            Self::CloudMetadata => "the cloud metadata address",
            Self::Multicast => "a multicast address",
            Self::Broadcast => "the broadcast address",
            Self::Reserved => "a reserved address",
            Self::Benchmarking => "a benchmarking address",
            Self::Documentation => "a documentation address",
            Self::ProtocolAssignments => "an IETF protocol assignments address",
            Self::SiteLocal => "a site-local address",
            Self::DiscardOnly => "a discard-only address",
        })
    }
}

/// One refused range: network, prefix length, class, text.
type V4Range = (Ipv4Addr, u32, AddressClass, &'static str);
type V6Range = (Ipv6Addr, u32, AddressClass, &'static str);

/// Refused IPv4 ranges. The first match names the class, so the narrower
/// ranges come first.
const V4_REFUSED: &[V4Range] = &[
    (
        Ipv4Addr::new(169, 254, 169, 254),
        32,
        AddressClass::CloudMetadata,
        "169.254.169.254, in link-local 169.254.0.0/16",
    ),
    (Ipv4Addr::BROADCAST, 32, AddressClass::Broadcast, "255.255.255.255"),
    (Ipv4Addr::new(0, 0, 0, 0), 8, AddressClass::Unspecified, "0.0.0.0/8"),
    (Ipv4Addr::new(127, 0, 0, 0), 8, AddressClass::Loopback, "127.0.0.0/8"),
    (Ipv4Addr::new(10, 0, 0, 0), 8, AddressClass::Private, "10.0.0.0/8"),
    (Ipv4Addr::new(172, 16, 0, 0), 12, AddressClass::Private, "172.16.0.0/12"),
    (Ipv4Addr::new(192, 168, 0, 0), 16, AddressClass::Private, "192.168.0.0/16"),
    (Ipv4Addr::new(100, 64, 0, 0), 10, AddressClass::CarrierGradeNat, "100.64.0.0/10"),
    (Ipv4Addr::new(169, 254, 0, 0), 16, AddressClass::LinkLocal, "169.254.0.0/16"),
    (Ipv4Addr::new(224, 0, 0, 0), 4, AddressClass::Multicast, "224.0.0.0/4"),
    (Ipv4Addr::new(240, 0, 0, 0), 4, AddressClass::Reserved, "240.0.0.0/4"),
    (Ipv4Addr::new(198, 18, 0, 0), 15, AddressClass::Benchmarking, "198.18.0.0/15"),
    (Ipv4Addr::new(192, 0, 2, 0), 24, AddressClass::Documentation, "192.0.2.0/24"),
    (Ipv4Addr::new(198, 51, 100, 0), 24, AddressClass::Documentation, "198.51.100.0/24"),
    (Ipv4Addr::new(203, 0, 113, 0), 24, AddressClass::Documentation, "203.0.113.0/24"),
    (Ipv4Addr::new(192, 0, 0, 0), 24, AddressClass::ProtocolAssignments, "192.0.0.0/24"),
];

/// Refused IPv6 ranges checked before the embedded IPv4 forms.
const V6_REFUSED_FIRST: &[V6Range] = &[
    (
        Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254),
        128,
        AddressClass::CloudMetadata,
        "fd00:ec2::254, in unique-local fc00::/7",
    ),
    (Ipv6Addr::UNSPECIFIED, 128, AddressClass::Unspecified, "::"),
    (Ipv6Addr::LOCALHOST, 128, AddressClass::Loopback, "::1"),
];

/// Refused IPv6 ranges checked after the embedded IPv4 forms.
const V6_REFUSED: &[V6Range] = &[
    (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7, AddressClass::Private, "unique-local fc00::/7"),
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10, AddressClass::LinkLocal, "fe80::/10"),
    (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10, AddressClass::SiteLocal, "fec0::/10"),
    (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8, AddressClass::Multicast, "ff00::/8"),
    (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32, AddressClass::Documentation, "2001:db8::/32"),
    (Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20, AddressClass::Documentation, "3fff::/20"),
    (Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0), 48, AddressClass::Benchmarking, "2001:2::/48"),
    (Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0), 64, AddressClass::DiscardOnly, "100::/64"),
];

/// Text of the range refused for IPv6 outside the global unicast range.
const OUTSIDE_GLOBAL_UNICAST: &str = "outside 2000::/3, the global unicast range";

fn v4_in(ip: u32, net: Ipv4Addr, len: u32) -> bool {
    len == 0 || (ip ^ net.to_bits()) >> (32 - len) == 0
}

fn v6_in(ip: u128, net: Ipv6Addr, len: u32) -> bool {
    len == 0 || (ip ^ net.to_bits()) >> (128 - len) == 0
}

fn classify_v4(ip: Ipv4Addr) -> Option<(AddressClass, &'static str)> {
    let bits = ip.to_bits();
    V4_REFUSED.iter().find(|(net, len, _, _)| v4_in(bits, *net, *len)).map(|&(_, _, class, range)| (class, range))
}

/// Returns the IPv4 addresses that an IPv6 address carries, in the
/// embedding formats this guard recognises. Teredo carries two.
fn embedded_v4(ip: Ipv6Addr) -> [Option<(Embedding, Ipv4Addr)>; 2] {
    let bits = ip.to_bits();
    // The `as u32` casts keep the low 32 bits on purpose.
    let low = bits as u32;
    if bits >> 32 == 0xffff {
        [Some((Embedding::Mapped, Ipv4Addr::from_bits(low))), None]
    } else if bits >> 32 == 0 {
        [Some((Embedding::Compatible, Ipv4Addr::from_bits(low))), None]
    } else if bits >> 32 == 0x0064_ff9b_0000_0000_0000_0000 {
        [Some((Embedding::Nat64, Ipv4Addr::from_bits(low))), None]
    } else if bits >> 112 == 0x2002 {
        [Some((Embedding::SixToFour, Ipv4Addr::from_bits((bits >> 80) as u32))), None]
    } else if bits >> 96 == 0x2001_0000 {
        [
            Some((Embedding::TeredoServer, Ipv4Addr::from_bits((bits >> 64) as u32))),
            Some((Embedding::TeredoClient, Ipv4Addr::from_bits(!low))),
        ]
    } else {
        [None, None]
    }
}

fn classify_v6(ip: Ipv6Addr) -> Option<RefusedAddress> {
    let bits = ip.to_bits();
    let refused = |embedded, (class, range)| RefusedAddress { ip: IpAddr::V6(ip), embedded, class, range };
    let in_table = |table: &[V6Range]| {
        table.iter().find(|(net, len, _, _)| v6_in(bits, *net, *len)).map(|&(_, _, class, range)| (class, range))
    };
    if let Some(found) = in_table(V6_REFUSED_FIRST) {
        return Some(refused(None, found));
    }
    let carried = embedded_v4(ip);
    if carried.iter().any(Option::is_some) {
        // An embedding is judged by the IPv4 address it carries alone.
        return carried
            .into_iter()
            .flatten()
            .find_map(|(embedding, v4)| classify_v4(v4).map(|found| refused(Some((embedding, v4)), found)));
    }
    if let Some(found) = in_table(V6_REFUSED) {
        return Some(refused(None, found));
    }
    if bits >> 125 != 0b001 {
        return Some(refused(None, (AddressClass::Reserved, OUTSIDE_GLOBAL_UNICAST)));
    }
    None
}

/// Returns whether `ip` is one of the two addresses that `allow_loopback` admits.
fn is_development_loopback(ip: IpAddr) -> bool {
    ip == IpAddr::V4(Ipv4Addr::LOCALHOST) || ip == IpAddr::V6(Ipv6Addr::LOCALHOST)
}

/// Returns whether `name` is `localhost` or ends in `.localhost`, with or
/// without the trailing dot, in any case. These names are reserved for loopback.
fn is_localhost_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

fn is_loopback_host(host: &Host<&str>) -> bool {
    match host {
        Host::Ipv4(ip) => is_development_loopback(IpAddr::V4(*ip)),
        Host::Ipv6(ip) => is_development_loopback(IpAddr::V6(*ip)),
        Host::Domain(name) => is_localhost_name(name),
    }
}

/// Returns whether `host` is an IP literal inside one of `networks`.
fn is_allowed_literal(networks: &AllowedNetworks, host: &Host<&str>) -> bool {
    match host {
        Host::Ipv4(ip) => networks.contains(IpAddr::V4(*ip)),
        Host::Ipv6(ip) => networks.contains(IpAddr::V6(*ip)),
        Host::Domain(_) => false,
    }
}

impl UrlPolicy {
    /// Parses and checks a URL without touching the network: https only
    /// (http only for a loopback host when allow_loopback, and for an
    /// IP-literal host inside `allowed_networks`), no user info, a
    /// host, no fragment, at most 2048 bytes; an IP-literal host (any
    /// encoding the url crate normalises, e.g. decimal 2130706433, hex
    /// 0x7f.1, octal, IPv6 brackets, IPv4-mapped IPv6) is checked with
    /// check_ip right here.
    ///
    /// A loopback host is 127.0.0.1, `[::1]` or a `localhost` name;
    /// [`UrlPolicy::resolve`] and [`GuardedResolver`] hold a `localhost`
    /// name to loopback addresses.
    pub fn check_url(&self, raw: &str) -> Result<Url, UrlProblem> {
        if raw.len() > MAX_URL_LEN {
            return Err(UrlProblem::TooLong { len: raw.len() });
        }
        let url = Url::parse(raw).map_err(|error| match error {
            url::ParseError::EmptyHost => UrlProblem::MissingHost,
            other => UrlProblem::Malformed(other),
        })?;
        if url.as_str().len() > MAX_URL_LEN {
            return Err(UrlProblem::TooLong { len: url.as_str().len() });
        }
        let host = url.host();
        match url.scheme() {
            "https" => {}
            "http" if self.allow_loopback && host.as_ref().is_some_and(is_loopback_host) => {}
            "http" if host.as_ref().is_some_and(|host| is_allowed_literal(&self.allowed_networks, host)) => {}
            other => return Err(UrlProblem::Scheme { scheme: other.to_owned() }),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlProblem::UserInfo);
        }
        if url.fragment().is_some() {
            return Err(UrlProblem::Fragment);
        }
        match host {
            None => return Err(UrlProblem::MissingHost),
            Some(Host::Ipv4(ip)) => self.check_ip(IpAddr::V4(ip))?,
            Some(Host::Ipv6(ip)) => self.check_ip(IpAddr::V6(ip))?,
            Some(Host::Domain(_)) => {}
        }
        Ok(url)
    }

    /// Checks one address.
    ///
    /// With `allow_loopback`, 127.0.0.1 and ::1 pass; every other refused
    /// address stays refused, including the rest of 127.0.0.0/8 and
    /// embedded forms of 127.0.0.1 such as `::ffff:127.0.0.1`.
    ///
    /// An address inside `allowed_networks` passes, unless it is an IPv6
    /// address refused for the IPv4 address it carries, or a cloud
    /// metadata address (which [`AllowedNetworks::parse`] already keeps out
    /// of every network).
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), UrlProblem> {
        match self.refusal(ip) {
            None => Ok(()),
            Some(refused) => Err(UrlProblem::RefusedAddress(refused)),
        }
    }

    /// Resolves the URL's host (tokio's lookup_host, with the URL's port or
    /// 443/80) and checks EVERY address; any refused address refuses the
    /// whole URL (a host that resolves to both a public and a private
    /// address is refused). Returns the addresses to connect to.
    ///
    /// The URL goes through [`UrlPolicy::check_url`] first, so this also
    /// refuses a URL that was parsed elsewhere. An IP-literal host is
    /// returned as it is, without a lookup.
    pub async fn resolve(&self, url: &Url) -> Result<Vec<SocketAddr>, UrlProblem> {
        let url = self.check_url(url.as_str())?;
        // check_url admits only http and https, which both have a default.
        let port = url.port_or_known_default().unwrap_or(443);
        match url.host() {
            None => Err(UrlProblem::MissingHost),
            Some(Host::Ipv4(ip)) => Ok(vec![SocketAddr::new(IpAddr::V4(ip), port)]),
            Some(Host::Ipv6(ip)) => Ok(vec![SocketAddr::new(IpAddr::V6(ip), port)]),
            Some(Host::Domain(name)) => self.resolve_name(name, port).await,
        }
    }

    fn refusal(&self, ip: IpAddr) -> Option<RefusedAddress> {
        if self.allow_loopback && is_development_loopback(ip) {
            return None;
        }
        let refused = match ip {
            IpAddr::V4(v4) => classify_v4(v4).map(|(class, range)| RefusedAddress { ip, embedded: None, class, range }),
            IpAddr::V6(v6) => classify_v6(v6),
        }?;
        let allowed = refused.embedded.is_none()
            && refused.class != AddressClass::CloudMetadata
            && self.allowed_networks.contains(ip);
        if allowed { None } else { Some(refused) }
    }

    /// Looks a name up and checks every address it has.
    ///
    /// NOTE: the lookup has no timeout of its own, so callers bound it. The
    /// delivery client's connect timeout covers [`GuardedResolver`].
    async fn resolve_name(&self, name: &str, port: u16) -> Result<Vec<SocketAddr>, UrlProblem> {
        let found = tokio::net::lookup_host((name, port))
            .await
            .map_err(|error| UrlProblem::DoesNotResolve { host: name.to_owned(), reason: error.to_string() })?;
        self.check_resolved(name, found)
    }

    /// Checks every address that `name` resolved to; one refused address
    /// refuses the name. Returns the addresses without repeats.
    fn check_resolved(
        &self,
        name: &str,
        found: impl IntoIterator<Item = SocketAddr>,
    ) -> Result<Vec<SocketAddr>, UrlProblem> {
        let localhost = is_localhost_name(name);
        let mut addrs: Vec<SocketAddr> = Vec::new();
        for addr in found {
            let ip = addr.ip();
            if let Some(address) = self.refusal(ip) {
                return Err(UrlProblem::RefusedHost { host: name.to_owned(), address });
            }
            if localhost && !is_development_loopback(ip) {
                return Err(UrlProblem::LocalhostNotLoopback { host: name.to_owned(), ip });
            }
            if !addrs.contains(&addr) {
                addrs.push(addr);
            }
        }
        if addrs.is_empty() {
            return Err(UrlProblem::DoesNotResolve { host: name.to_owned(), reason: "no addresses".to_owned() });
        }
        Ok(addrs)
    }
}

/// A reqwest DNS resolver that only ever returns addresses passing the
/// policy, so that the connection goes to a checked address (no DNS
/// rebinding between check and connect).
///
/// A name with any refused address fails as a whole, as in
/// [`UrlPolicy::resolve`]. The error is a [`UrlProblem`] inside reqwest's
/// connect error.
#[derive(Clone, Debug, Default)]
pub struct GuardedResolver {
    policy: UrlPolicy,
}

impl GuardedResolver {
    /// A resolver that applies `policy` to every address it returns.
    pub fn new(policy: UrlPolicy) -> Self {
        Self { policy }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            // Port 0: reqwest puts the URL's port, or the scheme's, in its place.
            match policy.resolve_name(name.as_str(), 0).await {
                Ok(addrs) => Ok(Box::new(addrs.into_iter()) as Addrs),
                Err(problem) => {
                    if !matches!(problem, UrlProblem::DoesNotResolve { .. }) {
                        tracing::warn!(host = name.as_str(), %problem, "webhook host refused at connect time");
                    }
                    Err(problem.into())
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::str::FromStr;

    const STRICT: UrlPolicy = UrlPolicy { allow_loopback: false, allowed_networks: AllowedNetworks::NONE };
    const DEV: UrlPolicy = UrlPolicy { allow_loopback: true, allowed_networks: AllowedNetworks::NONE };

    /// Asserts that `url` is refused with `class` and a message containing `word`.
    fn expect_refused(policy: UrlPolicy, url: &str, class: AddressClass, word: &str) {
        match policy.check_url(url) {
            Err(problem @ UrlProblem::RefusedAddress(refused)) => {
                assert_eq!(refused.class, class, "{url}: {problem}");
                let message = problem.to_string();
                assert!(message.contains(word), "{url}: message {message:?} does not name {word:?}");
                assert!(message.contains(&class.to_string()), "{url}: {message}");
            }
            other => panic!("{url}: expected a refused address, got {other:?}"),
        }
    }

    #[test]
    fn refuses_every_class_in_every_encoding() {
        use AddressClass::*;
        let cases: &[(&str, AddressClass, &str)] = &[
            // unspecified
            ("https://0.0.0.0/", Unspecified, "unspecified"),
            ("https://0/", Unspecified, "unspecified"),
            ("https://0x0/", Unspecified, "unspecified"),
            ("https://0.1.2.3/", Unspecified, "unspecified"),
            ("https://[::]/", Unspecified, "unspecified"),
            ("https://[0:0:0:0:0:0:0:0]/", Unspecified, "unspecified"),
            ("https://[::ffff:0.0.0.0]/", Unspecified, "unspecified"),
            ("https://[::2]/", Unspecified, "unspecified"),
            // loopback
            ("https://127.0.0.1/", Loopback, "loopback"),
            ("https://127.0.0.1:8443/hook", Loopback, "loopback"),
            ("https://2130706433/", Loopback, "loopback"),
            ("https://0x7f000001/", Loopback, "loopback"),
            ("https://0X7F000001/", Loopback, "loopback"),
            ("https://0x7f.1/", Loopback, "loopback"),
            ("https://0X7F.0X0.0X0.0X1/", Loopback, "loopback"),
            ("https://0177.0.0.1/", Loopback, "loopback"),
            ("https://017700000001/", Loopback, "loopback"),
            ("https://127.1/", Loopback, "loopback"),
            ("https://127.0.1/", Loopback, "loopback"),
            ("https://127.0.0.1./", Loopback, "loopback"),
            ("https://127.255.255.254/", Loopback, "loopback"),
            ("https://%31%32%37.0.0.1/", Loopback, "loopback"),
            ("https://\u{ff11}\u{ff12}\u{ff17}.\u{ff10}.\u{ff10}.\u{ff11}/", Loopback, "loopback"),
            ("https:\\\\127.0.0.1\\hook", Loopback, "loopback"),
            ("https://127.0.\n0.1/", Loopback, "loopback"),
            ("HTTPS://127.0.0.1/", Loopback, "loopback"),
            ("https://[::1]/", Loopback, "loopback"),
            ("https://[0:0:0:0:0:0:0:1]/", Loopback, "loopback"),
            ("https://[::ffff:127.0.0.1]/", Loopback, "loopback"),
            ("https://[::FFFF:7F00:1]/", Loopback, "loopback"),
            ("https://[::127.0.0.1]/", Loopback, "loopback"),
            ("https://[64:ff9b::127.0.0.1]/", Loopback, "loopback"),
            ("https://[2002:7f00:1::]/", Loopback, "loopback"),
            // private
            ("https://10.0.0.5/", Private, "private"),
            ("https://10.255.255.255/", Private, "private"),
            ("https://167772165/", Private, "private"),
            ("https://0xa.0.0.5/", Private, "private"),
            ("https://012.0.0.5/", Private, "private"),
            ("https://10.5/", Private, "private"),
            ("https://172.16.0.1/", Private, "private"),
            ("https://172.31.255.254/", Private, "private"),
            ("https://0xac100001/", Private, "private"),
            ("https://192.168.1.1/", Private, "private"),
            ("https://192.168.257/", Private, "private"),
            ("https://[fc00::1]/", Private, "private"),
            ("https://[fd12:3456::1]/", Private, "private"),
            ("https://[FDFF:FFFF::1]/", Private, "private"),
            ("https://[::ffff:10.0.0.5]/", Private, "private"),
            ("https://[::ffff:a00:5]/", Private, "private"),
            ("https://[::10.0.0.5]/", Private, "private"),
            ("https://[64:ff9b::10.0.0.5]/", Private, "private"),
            ("https://[64:FF9B::A00:5]/", Private, "private"),
            ("https://[2002:a00:5::1]/", Private, "private"),
            ("https://[2002:c0a8:101::]/", Private, "private"),
            // Teredo: server 65.54.227.120, client !0xf5fffffa = 10.0.0.5
            ("https://[2001:0:4136:e378:8000:63bf:f5ff:fffa]/", Private, "private"),
            // Teredo: server 10.0.0.5, client public
            ("https://[2001:0:a00:5::a247:28f1]/", Private, "private"),
            // carrier-grade NAT
            ("https://100.64.0.1/", CarrierGradeNat, "carrier-grade NAT"),
            ("https://100.127.255.254/", CarrierGradeNat, "carrier-grade NAT"),
            ("https://1681915905/", CarrierGradeNat, "carrier-grade NAT"),
            ("https://[::ffff:100.64.0.1]/", CarrierGradeNat, "carrier-grade NAT"),
            // link-local
            ("https://169.254.1.1/", LinkLocal, "link-local"),
            ("https://169.254.0.0/", LinkLocal, "link-local"),
            ("https://[fe80::1]/", LinkLocal, "link-local"),
            ("https://[FEBF::1]/", LinkLocal, "link-local"),
            ("https://[::ffff:169.254.1.1]/", LinkLocal, "link-local"),
            // cloud metadata
            ("https://169.254.169.254/", CloudMetadata, "169.254.169.254, the cloud metadata address"),
            ("https://169.254.169.254/latest/meta-data/", CloudMetadata, "metadata"),
            ("https://2852039166/", CloudMetadata, "metadata"),
            ("https://0xa9fea9fe/", CloudMetadata, "metadata"),
            ("https://0251.0376.0251.0376/", CloudMetadata, "metadata"),
            ("https://169.254.43518/", CloudMetadata, "metadata"),
            ("https://[fd00:ec2::254]/", CloudMetadata, "metadata"),
            ("https://[FD00:EC2:0:0:0:0:0:254]/", CloudMetadata, "metadata"),
            ("https://[::ffff:169.254.169.254]/", CloudMetadata, "metadata"),
            ("https://[64:ff9b::a9fe:a9fe]/", CloudMetadata, "metadata"),
            ("https://[2002:a9fe:a9fe::]/", CloudMetadata, "metadata"),
            // multicast
            ("https://224.0.0.1/", Multicast, "multicast"),
            ("https://239.255.255.250/", Multicast, "multicast"),
            ("https://[ff02::1]/", Multicast, "multicast"),
            ("https://[FF05::1:3]/", Multicast, "multicast"),
            ("https://[::ffff:224.0.0.1]/", Multicast, "multicast"),
            // broadcast
            ("https://255.255.255.255/", Broadcast, "broadcast"),
            ("https://4294967295/", Broadcast, "broadcast"),
            ("https://0xffffffff/", Broadcast, "broadcast"),
            ("https://[::ffff:255.255.255.255]/", Broadcast, "broadcast"),
            // reserved
            ("https://240.0.0.1/", Reserved, "reserved"),
            ("https://254.255.255.255/", Reserved, "reserved"),
            ("https://[::ffff:240.0.0.1]/", Reserved, "reserved"),
            ("https://[4000::1]/", Reserved, "reserved"),
            ("https://[64:ff9b:1::a00:5]/", Reserved, "reserved"),
            ("https://[::ffff:0:a00:5]/", Reserved, "reserved"),
            // benchmarking
            ("https://198.18.0.1/", Benchmarking, "benchmarking"),
            ("https://198.19.255.254/", Benchmarking, "benchmarking"),
            ("https://[2001:2::1]/", Benchmarking, "benchmarking"),
            ("https://[::ffff:198.18.0.1]/", Benchmarking, "benchmarking"),
            // documentation
            ("https://192.0.2.1/", Documentation, "documentation"),
            ("https://198.51.100.7/", Documentation, "documentation"),
            ("https://203.0.113.9/", Documentation, "documentation"),
            ("https://[2001:db8::1]/", Documentation, "documentation"),
            ("https://[2001:DB8:FFFF::1]/", Documentation, "documentation"),
            ("https://[3fff::1]/", Documentation, "documentation"),
            ("https://[::ffff:192.0.2.1]/", Documentation, "documentation"),
            // IETF protocol assignments
            ("https://192.0.0.1/", ProtocolAssignments, "protocol assignments"),
            ("https://192.0.0.170/", ProtocolAssignments, "protocol assignments"),
            ("https://[::ffff:192.0.0.8]/", ProtocolAssignments, "protocol assignments"),
            // site-local
            ("https://[fec0::1]/", SiteLocal, "site-local"),
            ("https://[FEFF::1]/", SiteLocal, "site-local"),
            // discard-only
            ("https://[100::1]/", DiscardOnly, "discard-only"),
            ("https://[100::ffff:ffff:ffff:ffff]/", DiscardOnly, "discard-only"),
        ];
        for &(url, class, word) in cases {
            expect_refused(STRICT, url, class, word);
            if class != Loopback {
                expect_refused(DEV, url, class, word);
            }
        }
    }

    #[test]
    fn messages_name_address_and_embedding() {
        let problem = STRICT.check_url("https://[2002:a00:5::1]/").unwrap_err();
        assert_eq!(
            problem.to_string(),
            "points at 2002:a00:5::1 (6to4 address of 10.0.0.5), a private address (10.0.0.0/8); \
             webhook receivers must be on public addresses"
        );
        let UrlProblem::RefusedAddress(address) = STRICT.check_url("https://10.0.0.5/").unwrap_err() else {
            panic!("expected a refused address");
        };
        let problem = UrlProblem::RefusedHost { host: "internal.example.com".to_owned(), address };
        assert!(
            problem.to_string().starts_with("host internal.example.com resolves to 10.0.0.5, a private address"),
            "{problem}"
        );
    }

    #[test]
    fn accepts_public_addresses_and_names() {
        for url in [
            "https://93.184.215.14/",
            "https://[2606:2800:21f:cb07:6820:80da:af6b:1a8c]/",
            "https://[2606:2800:21F:CB07:6820:80DA:AF6B:1A8C]:8443/hook",
            "https://[::ffff:93.184.215.14]/",
            "https://[64:ff9b::5db8:d70e]/",
            "https://[2002:5db8:d70e::1]/",
            "https://1572395790/",
            "https://hooks.example.com/valora?tenant=7",
            "https://hooks.example.com./valora",
            "https://172.15.255.255/",
            "https://172.32.0.0/",
            "https://100.63.255.255/",
            "https://100.128.0.0/",
            "https://169.253.255.255/",
            "https://169.255.0.0/",
            "https://198.17.255.255/",
            "https://198.20.0.0/",
            "https://192.0.1.255/",
            "https://192.0.3.0/",
            "https://223.255.255.255/",
            "https://1.0.0.0/",
            "https://126.255.255.255/",
            "https://128.0.0.0/",
        ] {
            assert!(STRICT.check_url(url).is_ok(), "{url}: {:?}", STRICT.check_url(url));
            assert!(DEV.check_url(url).is_ok(), "{url}: {:?}", DEV.check_url(url));
        }
    }

    #[test]
    fn loopback_exception_is_narrow() {
        for url in ["http://127.0.0.1:8080/hook", "http://[::1]:8080/hook", "https://127.0.0.1:8443/", "https://[::1]/"]
        {
            assert!(DEV.check_url(url).is_ok(), "{url}: {:?}", DEV.check_url(url));
        }
        assert!(DEV.check_url("http://localhost:8080/hook").is_ok());
        assert!(DEV.check_ip(IpAddr::V4(Ipv4Addr::LOCALHOST)).is_ok());
        assert!(DEV.check_ip(IpAddr::V6(Ipv6Addr::LOCALHOST)).is_ok());

        // The rest of 127.0.0.0/8 and the embedded spellings stay refused.
        for url in [
            "http://127.0.0.2:8080/",
            "https://127.0.0.2/",
            "https://127.1.2.3/",
            "https://127.0.0.53/",
            "https://[::ffff:127.0.0.1]/",
            "https://[::127.0.0.1]/",
            "https://[64:ff9b::7f00:1]/",
        ] {
            let problem = DEV.check_url(url).unwrap_err();
            assert!(
                matches!(problem, UrlProblem::RefusedAddress(RefusedAddress { class: AddressClass::Loopback, .. }))
                    || matches!(problem, UrlProblem::Scheme { .. }),
                "{url}: {problem:?}"
            );
        }

        // http stays refused everywhere else, with or without the exception.
        for url in
            ["http://93.184.215.14/", "http://hooks.example.com/", "http://[2606:2800:21f:cb07:6820:80da:af6b:1a8c]/"]
        {
            assert_eq!(DEV.check_url(url).unwrap_err(), UrlProblem::Scheme { scheme: "http".to_owned() }, "{url}");
        }
        for url in ["http://127.0.0.1:8080/hook", "http://[::1]:8080/hook", "http://localhost:8080/"] {
            assert_eq!(STRICT.check_url(url).unwrap_err(), UrlProblem::Scheme { scheme: "http".to_owned() }, "{url}");
        }
        assert!(matches!(STRICT.check_ip(IpAddr::V4(Ipv4Addr::LOCALHOST)), Err(UrlProblem::RefusedAddress(_))));
        assert!(matches!(STRICT.check_ip(IpAddr::V6(Ipv6Addr::LOCALHOST)), Err(UrlProblem::RefusedAddress(_))));
    }

    #[test]
    fn refuses_bad_shapes() {
        let http = STRICT.check_url("http://hooks.example.com/").unwrap_err();
        assert_eq!(http, UrlProblem::Scheme { scheme: "http".to_owned() });
        assert_eq!(http.to_string(), "uses http; webhook URLs must use https");
        for (url, scheme) in [
            ("ftp://hooks.example.com/", "ftp"),
            ("file:///etc/passwd", "file"),
            ("javascript:alert(1)", "javascript"),
            ("ws://hooks.example.com/", "ws"),
            ("gopher://hooks.example.com/", "gopher"),
        ] {
            assert_eq!(STRICT.check_url(url).unwrap_err(), UrlProblem::Scheme { scheme: scheme.to_owned() }, "{url}");
        }
        for url in
            ["https://user:pw@hooks.example.com/", "https://user@hooks.example.com/", "https://:pw@hooks.example.com/"]
        {
            let problem = STRICT.check_url(url).unwrap_err();
            assert_eq!(problem, UrlProblem::UserInfo, "{url}");
            assert!(problem.to_string().contains("user info"));
        }
        for url in ["https://", "https:///", "https://:443/hook", "https://?x=1"] {
            let problem = STRICT.check_url(url).unwrap_err();
            assert_eq!(problem, UrlProblem::MissingHost, "{url}");
            assert!(problem.to_string().contains("no host"));
        }
        for url in ["https://hooks.example.com/#section", "https://hooks.example.com/#"] {
            let problem = STRICT.check_url(url).unwrap_err();
            assert_eq!(problem, UrlProblem::Fragment, "{url}");
            assert!(problem.to_string().contains("fragment"));
        }
        for url in ["hooks.example.com/valora", "https://exa mple.com/", "https://256.0.0.1/", "https://[::1/", ""] {
            assert!(
                matches!(STRICT.check_url(url), Err(UrlProblem::Malformed(_))),
                "{url}: {:?}",
                STRICT.check_url(url)
            );
        }
    }

    #[test]
    fn refuses_overlong_urls() {
        let base = "https://hooks.example.com/";
        let fits = format!("{base}{}", "a".repeat(MAX_URL_LEN - base.len()));
        assert!(STRICT.check_url(&fits).is_ok());
        let over = format!("{fits}a");
        let problem = STRICT.check_url(&over).unwrap_err();
        assert_eq!(problem, UrlProblem::TooLong { len: MAX_URL_LEN + 1 });
        assert!(problem.to_string().contains("at most 2048 bytes"), "{problem}");
        // Short as given, too long once normalised: each space becomes %20.
        let spaces = format!("{base}a{}b", " ".repeat(1000));
        assert!(spaces.len() <= MAX_URL_LEN);
        assert!(matches!(STRICT.check_url(&spaces), Err(UrlProblem::TooLong { .. })));
    }

    #[tokio::test]
    async fn resolve_refuses_localhost_unless_allowed() {
        for raw in ["https://localhost/hook", "https://localhost:8443/hook"] {
            let url = Url::parse(raw).unwrap();
            match STRICT.resolve(&url).await {
                Err(problem @ UrlProblem::RefusedHost { .. }) => {
                    let UrlProblem::RefusedHost { host, address } = &problem else { unreachable!() };
                    assert_eq!(host, "localhost");
                    assert_eq!(address.class, AddressClass::Loopback);
                    assert!(problem.to_string().contains("host localhost resolves to"), "{problem}");
                    assert!(problem.to_string().contains("loopback"), "{problem}");
                }
                other => panic!("{raw}: expected a refused host, got {other:?}"),
            }
        }
        for (raw, port) in [
            ("https://localhost/hook", 443),
            ("https://localhost:8443/hook", 8443),
            ("http://localhost/hook", 80),
            ("http://localhost:8080/hook", 8080),
        ] {
            let url = DEV.check_url(raw).unwrap();
            let addrs = DEV.resolve(&url).await.unwrap();
            assert!(!addrs.is_empty(), "{raw}");
            for addr in addrs {
                assert!(is_development_loopback(addr.ip()), "{raw}: {addr}");
                assert_eq!(addr.port(), port, "{raw}");
            }
        }
    }

    #[tokio::test]
    async fn resolve_reports_unresolved_names() {
        let url = STRICT.check_url("https://hooks.valora-test.invalid/hook").unwrap();
        let problem = STRICT.resolve(&url).await.unwrap_err();
        assert!(
            matches!(&problem, UrlProblem::DoesNotResolve { host, .. } if host == "hooks.valora-test.invalid"),
            "{problem:?}"
        );
        assert!(problem.to_string().starts_with("host hooks.valora-test.invalid does not resolve"), "{problem}");
    }

    #[tokio::test]
    async fn resolve_checks_literals_without_lookup() {
        let public = Url::parse("https://93.184.215.14/hook").unwrap();
        assert_eq!(STRICT.resolve(&public).await.unwrap(), vec![SocketAddr::from(([93, 184, 215, 14], 443))]);
        let v6 = Url::parse("https://[2606:2800:21f:cb07:6820:80da:af6b:1a8c]:8443/").unwrap();
        assert_eq!(STRICT.resolve(&v6).await.unwrap().len(), 1);
        let private = Url::parse("https://10.0.0.5/hook").unwrap();
        assert!(matches!(STRICT.resolve(&private).await, Err(UrlProblem::RefusedAddress(_))));
        let http = Url::parse("http://93.184.215.14/hook").unwrap();
        assert!(matches!(STRICT.resolve(&http).await, Err(UrlProblem::Scheme { .. })));
        let dev = Url::parse("http://127.0.0.1:8080/hook").unwrap();
        assert_eq!(DEV.resolve(&dev).await.unwrap(), vec![SocketAddr::from(([127, 0, 0, 1], 8080))]);
    }

    #[test]
    fn localhost_names() {
        for name in ["localhost", "LOCALHOST", "localhost.", "hooks.localhost", "a.b.Localhost."] {
            assert!(is_localhost_name(name), "{name}");
        }
        for name in ["localhost.example.com", "notlocalhost", "localhostx", "example.com"] {
            assert!(!is_localhost_name(name), "{name}");
        }
    }

    async fn guarded(policy: UrlPolicy, name: &str) -> Result<Vec<SocketAddr>, UrlProblem> {
        let resolver = GuardedResolver::new(policy);
        match Resolve::resolve(&resolver, Name::from_str(name).unwrap()).await {
            Ok(addrs) => Ok(addrs.collect()),
            Err(error) => Err(error.downcast_ref::<UrlProblem>().cloned().expect("the error is a UrlProblem")),
        }
    }

    #[tokio::test]
    async fn guarded_resolver_refuses_localhost() {
        let problem = guarded(STRICT, "localhost").await.unwrap_err();
        assert!(
            matches!(&problem, UrlProblem::RefusedHost { address, .. } if address.class == AddressClass::Loopback),
            "{problem:?}"
        );
    }

    #[tokio::test]
    async fn guarded_resolver_allows_dev_loopback() {
        let addrs = guarded(DEV, "localhost").await.unwrap();
        assert!(!addrs.is_empty());
        assert!(addrs.iter().all(|addr| is_development_loopback(addr.ip())), "{addrs:?}");
    }

    #[tokio::test]
    async fn guarded_resolver_reports_unresolved_names() {
        let problem = guarded(DEV, "hooks.valora-test.invalid").await.unwrap_err();
        assert!(matches!(problem, UrlProblem::DoesNotResolve { .. }), "{problem:?}");
    }

    /// A production policy that allows the given networks.
    fn allowing(list: &str) -> UrlPolicy {
        UrlPolicy { allow_loopback: false, allowed_networks: AllowedNetworks::parse(list).unwrap() }
    }

    const INTERNAL: &str = "10.20.0.0/16, fd12:3456::/48,192.168.7.9";

    #[test]
    fn allowed_networks_pass() {
        let policy = allowing(INTERNAL);
        for url in [
            "https://10.20.0.0/",
            "https://10.20.1.2:8443/hook",
            "https://10.20.255.255/",
            "https://169083394/",
            "https://0xa.0x14.1.2/",
            "https://192.168.7.9/",
            "https://[fd12:3456::1]/",
            "https://[fd12:3456:0:ffff:ffff:ffff:ffff:ffff]/",
            // Public addresses pass as before.
            "https://93.184.215.14/",
            "https://hooks.example.com/",
        ] {
            assert!(policy.check_url(url).is_ok(), "{url}: {:?}", policy.check_url(url));
        }
        assert!(policy.check_ip(IpAddr::V4(Ipv4Addr::new(10, 20, 1, 2))).is_ok());
        assert!(STRICT.check_ip(IpAddr::V4(Ipv4Addr::new(10, 20, 1, 2))).is_err());
    }

    #[test]
    fn neighbours_of_allowed_networks_stay_refused() {
        use AddressClass::*;
        let policy = allowing(INTERNAL);
        for (url, class, word) in [
            ("https://10.21.0.0/", Private, "10.0.0.0/8"),
            ("https://10.19.255.255/", Private, "10.0.0.0/8"),
            ("https://192.168.7.8/", Private, "192.168.0.0/16"),
            ("https://192.168.7.10/", Private, "192.168.0.0/16"),
            ("https://[fd12:3456:1::]/", Private, "fc00::/7"),
            ("https://[fd12:3457::1]/", Private, "fc00::/7"),
            ("https://[fd12:3455:ffff::1]/", Private, "fc00::/7"),
            ("https://127.0.0.1/", Loopback, "127.0.0.0/8"),
            ("https://[::1]/", Loopback, "::1"),
            ("https://169.254.169.254/", CloudMetadata, "169.254.169.254"),
            // IPv6 forms of an allowed IPv4 address are judged as without the list.
            ("https://[::ffff:10.20.1.2]/", Private, "IPv4-mapped address of 10.20.1.2"),
            ("https://[64:ff9b::a14:102]/", Private, "NAT64 address of 10.20.1.2"),
            ("https://[2002:a14:102::]/", Private, "6to4 address of 10.20.1.2"),
        ] {
            expect_refused(policy.clone(), url, class, word);
        }
    }

    #[test]
    fn embeddings_in_allowed_networks_stay_refused() {
        let policy = allowing("64:ff9b::/96, 2002::/16");
        for url in ["https://[64:ff9b::a9fe:a9fe]/", "https://[64:ff9b::7f00:1]/", "https://[2002:a00:5::]/"] {
            assert!(matches!(policy.check_url(url), Err(UrlProblem::RefusedAddress(_))), "{url}");
        }
        assert!(policy.check_url("https://[64:ff9b::5db8:d70e]/").is_ok());
    }

    #[test]
    fn http_only_for_allowed_literals() {
        let policy = allowing(INTERNAL);
        for url in [
            "http://10.20.1.2/hook",
            "http://10.20.1.2:8080/hook",
            "http://[fd12:3456::1]:8080/",
            "http://192.168.7.9/",
        ] {
            assert!(policy.check_url(url).is_ok(), "{url}: {:?}", policy.check_url(url));
        }
        for url in [
            // Names need https even when they resolve into the network.
            "http://hooks.internal.example/",
            "http://localhost:8080/",
            // Literals outside the networks, public or not.
            "http://10.21.0.1/",
            "http://93.184.215.14/",
            "http://127.0.0.1:8080/",
            "http://[::1]:8080/",
            // An IPv6 form of an allowed IPv4 address is not inside the network.
            "http://[::ffff:10.20.1.2]/",
        ] {
            assert_eq!(policy.check_url(url).unwrap_err(), UrlProblem::Scheme { scheme: "http".to_owned() }, "{url}");
        }
        for url in ["ftp://10.20.1.2/", "ws://10.20.1.2/"] {
            assert!(matches!(policy.check_url(url), Err(UrlProblem::Scheme { .. })), "{url}");
        }
    }

    #[test]
    fn names_resolving_into_allowed_networks() {
        let policy = allowing(INTERNAL);
        let host = "hooks.internal.example";
        let inside = SocketAddr::from(([10, 20, 1, 2], 443));
        let inside_v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::from_str("fd12:3456::7").unwrap()), 443);
        let public = SocketAddr::from(([93, 184, 215, 14], 443));
        let outside = SocketAddr::from(([10, 21, 0, 1], 443));
        assert_eq!(policy.check_resolved(host, [inside, inside_v6, inside]).unwrap(), vec![inside, inside_v6]);
        // Every address passes on its own: one allowed, one public.
        assert_eq!(policy.check_resolved(host, [inside, public]).unwrap(), vec![inside, public]);
        // One allowed address does not carry a refused one.
        for found in
            [vec![inside, outside], vec![outside, inside], vec![inside_v6, SocketAddr::from(([127, 0, 0, 1], 443))]]
        {
            match policy.check_resolved(host, found.clone()) {
                Err(UrlProblem::RefusedHost { host: refused_host, address }) => {
                    assert_eq!(refused_host, host);
                    assert!(!policy.allowed_networks.contains(address.ip), "{found:?}: {address}");
                }
                other => panic!("{found:?}: expected a refused host, got {other:?}"),
            }
        }
        assert!(matches!(STRICT.check_resolved(host, [inside]), Err(UrlProblem::RefusedHost { .. })));
    }

    #[tokio::test]
    async fn https_names_into_allowed_networks_pass() {
        // localhost resolves to 127.0.0.1, ::1 or both, from the hosts file.
        let policy = allowing("127.0.0.1, ::1");
        let url = policy.check_url("https://localhost:8443/hook").unwrap();
        let addrs = policy.resolve(&url).await.unwrap();
        assert!(!addrs.is_empty());
        assert!(addrs.iter().all(|addr| is_development_loopback(addr.ip()) && addr.port() == 8443), "{addrs:?}");
        let addrs = guarded(policy.clone(), "localhost").await.unwrap();
        assert!(addrs.iter().all(|addr| is_development_loopback(addr.ip())), "{addrs:?}");
        assert!(policy.check_url("http://localhost:8080/hook").is_err());
        assert!(guarded(allowing("10.20.0.0/16"), "localhost").await.is_err());
    }

    #[test]
    fn parses_allowed_networks() {
        assert_eq!(AllowedNetworks::parse("").unwrap(), AllowedNetworks::NONE);
        assert_eq!(AllowedNetworks::parse(" , ,").unwrap(), AllowedNetworks::NONE);
        assert!(AllowedNetworks::default().is_empty());
        let parsed = AllowedNetworks::parse(" 10.20.1.5/16 ,, fd12:3456::9/48,10.20.0.0/16, 127.0.0.1 ,::1").unwrap();
        assert_eq!(parsed.to_string(), "10.20.0.0/16,fd12:3456::/48,127.0.0.1/32,::1/128");
        assert!(parsed.contains(IpAddr::V4(Ipv4Addr::new(10, 20, 200, 1))));
        assert!(!parsed.contains(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))));
        // An IPv4 network holds no IPv6 address, not even its mapped form.
        assert!(!parsed.contains(IpAddr::V6(Ipv4Addr::new(10, 20, 1, 1).to_ipv6_mapped())));
        for entry in [
            "10.0.0.0/33",
            "10.0.0.0/8/8",
            "10.0.0.256",
            "010.0.0.1",
            "hooks.example.com",
            "[::1]",
            "::1/129",
            "10.0.0.0/",
            "*",
        ] {
            let problem = AllowedNetworks::parse(&format!("10.20.0.0/16,{entry}")).unwrap_err();
            assert_eq!(problem, BadNetwork::Malformed { entry: entry.to_owned() });
            assert_eq!(problem.entry(), entry);
            assert!(problem.to_string().contains(&format!("{entry:?}")), "{problem}");
        }
    }

    #[test]
    fn refuses_dangerous_allowed_networks() {
        for (entry, word) in [
            ("0.0.0.0/0", "every IPv4 address"),
            ("::/0", "every IPv6 address"),
            ("169.254.169.254", "169.254.169.254, the cloud metadata address"),
            ("169.254.169.254/32", "cloud metadata"),
            ("169.254.0.0/16", "cloud metadata"),
            ("169.254.169.0/24", "cloud metadata"),
            ("128.0.0.0/1", "cloud metadata"),
            ("fd00:ec2::254", "fd00:ec2::254, the cloud metadata address"),
            ("fd00:ec2::/32", "cloud metadata"),
            ("fd00::/8", "cloud metadata"),
            ("fc00::/7", "cloud metadata"),
            ("0.0.0.0", "0.0.0.0, the unspecified address"),
            ("0.0.0.0/8", "unspecified"),
            ("::", "contains ::, the unspecified address"),
            ("::/127", "unspecified"),
        ] {
            let problem = AllowedNetworks::parse(&format!("10.20.0.0/16, {entry}")).unwrap_err();
            assert_eq!(problem.entry(), entry, "{problem}");
            let message = problem.to_string();
            assert!(message.contains(&format!("{entry:?}")), "{message}");
            assert!(message.contains(word), "{entry}: {message}");
        }
        // Neighbours of the metadata addresses are fine.
        for entry in ["169.254.170.0/24", "169.254.169.255", "fd00:ec2::253", "fd00:ec3::/32", "::1", "0.0.0.1"] {
            assert!(AllowedNetworks::parse(entry).is_ok(), "{entry}");
        }
    }

    /// Refused IPv4 ranges, written out apart from the guard's own table.
    const REFUSED_V4: &[([u8; 4], u32)] = &[
        ([0, 0, 0, 0], 8),
        ([127, 0, 0, 0], 8),
        ([10, 0, 0, 0], 8),
        ([172, 16, 0, 0], 12),
        ([192, 168, 0, 0], 16),
        ([100, 64, 0, 0], 10),
        ([169, 254, 0, 0], 16),
        ([224, 0, 0, 0], 4),
        ([255, 255, 255, 255], 32),
        ([240, 0, 0, 0], 4),
        ([198, 18, 0, 0], 15),
        ([192, 0, 2, 0], 24),
        ([198, 51, 100, 0], 24),
        ([203, 0, 113, 0], 24),
        ([192, 0, 0, 0], 24),
    ];

    /// Refused IPv6 ranges that carry no IPv4 address.
    const REFUSED_V6: &[(&str, u32)] = &[
        ("::", 128),
        ("::1", 128),
        ("fc00::", 7),
        ("fe80::", 10),
        ("fd00:ec2::254", 128),
        ("ff00::", 8),
        ("2001:db8::", 32),
        ("3fff::", 20),
        ("2001:2::", 48),
        ("fec0::", 10),
        ("100::", 64),
        ("4000::", 2),
    ];

    fn inside_v4(range: usize, host: u32) -> Ipv4Addr {
        let (net, len) = REFUSED_V4[range];
        let mask = if len == 32 { 0 } else { u32::MAX >> len };
        Ipv4Addr::from_bits(u32::from_be_bytes(net) | (host & mask))
    }

    fn inside_v6(range: usize, host: u128) -> Ipv6Addr {
        let (net, len) = REFUSED_V6[range];
        let mask = if len == 128 { 0 } else { u128::MAX >> len };
        Ipv6Addr::from_bits(Ipv6Addr::from_str(net).unwrap().to_bits() | (host & mask))
    }

    /// Returns every IPv6 form that carries `v4`.
    fn embeddings(v4: Ipv4Addr, server: Ipv4Addr, rest: u64) -> Vec<Ipv6Addr> {
        let v4 = u128::from(v4.to_bits());
        vec![
            Ipv6Addr::from_bits(0xffff_0000_0000 | v4),
            Ipv6Addr::from_bits(v4),
            Ipv6Addr::from_bits((0x0064_ff9b_u128 << 96) | v4),
            Ipv6Addr::from_bits((0x2002_u128 << 112) | (v4 << 80) | u128::from(rest & 0xffff_ffff_ffff)),
            // Teredo: public server, the refused address as the client.
            Ipv6Addr::from_bits(
                (0x2001_0000_u128 << 96)
                    | (u128::from(server.to_bits()) << 64)
                    | (u128::from(rest >> 32) << 32)
                    | (!v4 & 0xffff_ffff),
            ),
            // Teredo: the refused address as the server.
            Ipv6Addr::from_bits((0x2001_0000_u128 << 96) | (v4 << 64) | u128::from(rest)),
        ]
    }

    fn is_refused_v4(ip: Ipv4Addr) -> bool {
        (0..REFUSED_V4.len()).any(|range| {
            let (net, len) = REFUSED_V4[range];
            len == 0 || (ip.to_bits() ^ u32::from_be_bytes(net)) >> (32 - len) == 0
        })
    }

    proptest! {
        #[test]
        fn allowed_networks_widen_only_inside(n in any::<u32>(), m in any::<u128>()) {
            let policy = allowing(INTERNAL);
            // Half of the cases in 10.20.0.0/16 or fd12:3456::/48 and the
            // network next to it, half anywhere.
            let v4 = if n & 1 == 0 {
                Ipv4Addr::from_bits((10 << 24) | ((20 + (n >> 31)) << 16) | ((n >> 1) & 0xffff))
            } else {
                Ipv4Addr::from_bits(n)
            };
            let v6 = if m & 1 == 0 {
                Ipv6Addr::from_bits((((0xfd12_3456_0000_u128) | (m >> 127)) << 80) | ((m >> 1) & ((1 << 80) - 1)))
            } else {
                Ipv6Addr::from_bits(m)
            };
            for ip in [IpAddr::V4(v4), IpAddr::V6(v6)] {
                let strict = STRICT.check_ip(ip);
                let allowed = policy.check_ip(ip);
                if strict.is_ok() {
                    prop_assert!(allowed.is_ok(), "{}", ip);
                } else {
                    prop_assert_eq!(allowed.is_ok(), policy.allowed_networks.contains(ip), "{}", ip);
                }
            }
        }

        #[test]
        fn refused_v4_and_embeddings_refused(range in 0..REFUSED_V4.len(), host in any::<u32>(), rest in any::<u64>()) {
            let ip = inside_v4(range, host);
            let refused = STRICT.check_ip(IpAddr::V4(ip));
            prop_assert!(matches!(refused, Err(UrlProblem::RefusedAddress(_))), "{}", ip);
            if ip != Ipv4Addr::LOCALHOST {
                prop_assert!(DEV.check_ip(IpAddr::V4(ip)).is_err(), "{}", ip);
            }
            let server = Ipv4Addr::new(65, 54, 227, 120);
            for v6 in embeddings(ip, server, rest) {
                prop_assert!(STRICT.check_ip(IpAddr::V6(v6)).is_err(), "{} carrying {}", v6, ip);
                if v6 != Ipv6Addr::LOCALHOST {
                    prop_assert!(DEV.check_ip(IpAddr::V6(v6)).is_err(), "{} carrying {}", v6, ip);
                }
            }
        }

        #[test]
        fn refused_v6_is_refused(range in 0..REFUSED_V6.len(), host in any::<u128>()) {
            let ip = inside_v6(range, host);
            prop_assert!(STRICT.check_ip(IpAddr::V6(ip)).is_err(), "{}", ip);
            if ip != Ipv6Addr::LOCALHOST {
                prop_assert!(DEV.check_ip(IpAddr::V6(ip)).is_err(), "{}", ip);
            }
            let url = format!("https://[{ip}]/");
            prop_assert!(matches!(STRICT.check_url(&url), Err(UrlProblem::RefusedAddress(_))), "{}", url);
        }

        #[test]
        fn integer_encodings_of_v4_refused(range in 0..REFUSED_V4.len(), host in any::<u32>()) {
            let ip = inside_v4(range, host);
            let n = ip.to_bits();
            let [a, b, c, d] = ip.octets();
            let encodings = [
                format!("https://{n}/"),
                format!("https://0x{n:x}/"),
                format!("https://0X{n:X}/"),
                format!("https://0{n:o}/"),
                format!("https://0x{a:x}.0x{b:x}.0x{c:x}.0x{d:x}/"),
                format!("https://0{a:o}.0{b:o}.0{c:o}.0{d:o}/"),
                format!("https://{a}.{b}.{}/", u32::from(c) << 8 | u32::from(d)),
                format!("https://{a}.{}/", u32::from(b) << 16 | u32::from(c) << 8 | u32::from(d)),
                format!("https://{ip}./"),
            ];
            for url in encodings {
                match STRICT.check_url(&url) {
                    Err(UrlProblem::RefusedAddress(refused)) => prop_assert_eq!(refused.ip, IpAddr::V4(ip), "{}", url),
                    other => prop_assert!(false, "{}: {:?}", url, other),
                }
            }
        }

        #[test]
        fn public_v4_is_accepted(n in any::<u32>()) {
            let ip = Ipv4Addr::from_bits(n);
            prop_assume!(!is_refused_v4(ip));
            prop_assert!(STRICT.check_ip(IpAddr::V4(ip)).is_ok(), "{}", ip);
            prop_assert!(STRICT.check_url(&format!("https://{n}/")).is_ok(), "{}", ip);
            let mapped = ip.to_ipv6_mapped();
            prop_assert!(STRICT.check_ip(IpAddr::V6(mapped)).is_ok(), "{}", mapped);
        }

        #[test]
        fn public_v6_is_accepted(host in any::<u128>()) {
            // Inside 2000::/3, outside its refused and embedding ranges.
            let ip = Ipv6Addr::from_bits((0b001_u128 << 125) | (host >> 3));
            let top = ip.segments();
            prop_assume!(top[0] != 0x2002 && top[0] != 0x3fff && !(top[0] == 0x2001 && matches!(top[1], 0 | 2 | 0xdb8)));
            prop_assert!(STRICT.check_ip(IpAddr::V6(ip)).is_ok(), "{}", ip);
        }
    }
}
