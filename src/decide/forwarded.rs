//! Who the client is behind a proxy: `X-Forwarded-For`, `Forwarded` (RFC 7239) and
//! `X-Real-IP` say, but only a proxy jwtguard trusts may say it; from anyone else those
//! headers are ignored.

use std::net::IpAddr;
use std::str::FromStr;

use crate::Headers;

/// A network: an address and how many leading bits of it count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    bits: u8,
}

impl FromStr for Cidr {
    type Err = String;

    /// `10.0.0.0/8`, `2001:db8::/32`, or one address (`127.0.0.1`, `::1`).
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (addr, bits) = match s.split_once('/') {
            Some((addr, bits)) => (addr, Some(bits)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or a CIDR network"))?;
        let addr = addr.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(bits) => bits
                .parse::<u8>()
                .ok()
                .filter(|b| *b <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length is not in 0..={max}"))?,
        };
        Ok(Cidr { addr, bits })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.bits)
    }
}

impl Cidr {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.bits)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.bits))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The one header a trusted proxy names the client in (nginx `real_ip_header`), when
/// the operator says which: the others are then ignored, since a proxy that sets
/// `X-Real-IP` may pass on the `X-Forwarded-For` its client made up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientIpHeader {
    /// `X-Forwarded-For`: its rightmost address that is not a trusted proxy.
    XForwardedFor,
    /// `Forwarded` (RFC 7239): its rightmost `for=` that is not a trusted proxy.
    Forwarded,
    /// `X-Real-IP`: one address, in one header.
    XRealIp,
}

impl FromStr for ClientIpHeader {
    type Err = String;

    fn from_str(s: &str) -> Result<ClientIpHeader, String> {
        [Self::XForwardedFor, Self::Forwarded, Self::XRealIp]
            .into_iter()
            .find(|h| h.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("{s:?}: not X-Forwarded-For, Forwarded or X-Real-IP"))
    }
}

impl ClientIpHeader {
    /// The header's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::XForwardedFor => "X-Forwarded-For",
            Self::Forwarded => "Forwarded",
            Self::XRealIp => "X-Real-IP",
        }
    }
}

/// The proxies whose forwarding headers are believed, and which header, if one is named.
#[derive(Clone, Debug, Default)]
pub(crate) struct Trusted {
    networks: Vec<Cidr>,
    header: Option<ClientIpHeader>,
}

impl Trusted {
    pub(crate) fn new(networks: &[Cidr]) -> Trusted {
        Trusted {
            networks: networks.to_vec(),
            header: None,
        }
    }

    /// Believes only `header` (all three, first found, when `None`).
    pub(crate) fn reading(self, header: Option<ClientIpHeader>) -> Trusted {
        Trusted { header, ..self }
    }

    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        self.networks.iter().any(|net| net.contains(ip))
    }

    /// The client behind `peer`, when `peer` is a trusted proxy and says who it is: from
    /// `X-Forwarded-For` (every such header, in order), else `Forwarded`'s `for=`, else
    /// `X-Real-IP`; or from the one header named ([`Trusted::reading`]). In a list, the rightmost address that is not a trusted proxy (the
    /// addresses left of it could be anything its sender made up); the leftmost when all
    /// are trusted. `None` when the peer is not trusted, says nothing, or says something
    /// that is not an address (`unknown`, an obfuscated name, garbage): nothing is
    /// guessed.
    pub(crate) fn client<H: Headers + ?Sized>(
        &self,
        peer: Option<IpAddr>,
        headers: &H,
    ) -> Option<IpAddr> {
        if !peer.is_some_and(|p| self.contains(p)) {
            return None;
        }
        let read = |h| self.header.is_none_or(|named| named == h);
        let mut forwarded_for = headers.values("X-Forwarded-For").peekable();
        if read(ClientIpHeader::XForwardedFor) && forwarded_for.peek().is_some() {
            let hops = forwarded_for.flat_map(|v| v.split(','));
            return self.rightmost_untrusted(hops.map(str::trim));
        }
        let mut forwarded = headers.values("Forwarded").peekable();
        if read(ClientIpHeader::Forwarded) && forwarded.peek().is_some() {
            let hops = forwarded.flat_map(|v| v.split(',')).map(|element| {
                element
                    .split(';')
                    .filter_map(|pair| pair.split_once('='))
                    .find(|(name, _)| name.trim().eq_ignore_ascii_case("for"))
                    .map_or("", |(_, value)| value.trim().trim_matches('"'))
            });
            return self.rightmost_untrusted(hops);
        }
        if !read(ClientIpHeader::XRealIp) {
            return None;
        }
        let mut real = headers.values("X-Real-IP");
        match (real.next(), real.next()) {
            (Some(one), None) => parse_hop(one.trim()),
            _ => None,
        }
    }

    fn rightmost_untrusted<'a>(&self, hops: impl Iterator<Item = &'a str>) -> Option<IpAddr> {
        let hops: Vec<&str> = hops.collect();
        let mut leftmost = None;
        for hop in hops.iter().rev() {
            let ip = parse_hop(hop)?;
            if !self.contains(ip) {
                return Some(ip);
            }
            leftmost = Some(ip);
        }
        leftmost
    }
}

/// One hop: an address, with a port or not (`192.0.2.1`, `192.0.2.1:80`, `2001:db8::1`,
/// `[2001:db8::1]:80`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(addr) = hop.parse::<std::net::SocketAddr>() {
        return Some(addr.ip().to_canonical());
    }
    hop.strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|ip| ip.parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(nets: &[&str]) -> Trusted {
        Trusted::new(&nets.iter().map(|n| n.parse().unwrap()).collect::<Vec<_>>())
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn networks_parse_and_match() {
        let t = trusted(&["10.0.0.0/8", "192.168.1.7", "2001:db8::/32", "::1"]);
        for yes in [
            "10.1.2.3",
            "192.168.1.7",
            "2001:db8:ffff::1",
            "::1",
            "::ffff:10.9.9.9",
        ] {
            assert!(t.contains(yes.parse().unwrap()), "{yes}");
        }
        for no in ["11.0.0.1", "192.168.1.8", "2001:db9::1", "::2", "127.0.0.1"] {
            assert!(!t.contains(no.parse().unwrap()), "{no}");
        }
        for bad in ["10.0.0.0/33", "::/129", "10.0.0", "host", "10.0.0.0/x", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        assert!(trusted(&["0.0.0.0/0"]).contains("8.8.8.8".parse().unwrap()));
    }

    #[test]
    fn a_named_header_is_the_only_one_believed() {
        let spoofed = [
            ("X-Forwarded-For", "198.51.100.9"),
            ("Forwarded", "for=198.51.100.8"),
            ("X-Real-IP", "203.0.113.7"),
        ];
        let peer = "127.0.0.1".parse().ok();
        let t = trusted(&["127.0.0.1"]);
        assert_eq!(t.client(peer, &spoofed[..]), ip("198.51.100.9"));
        let real = t.clone().reading(Some(ClientIpHeader::XRealIp));
        assert_eq!(real.client(peer, &spoofed[..]), ip("203.0.113.7"));
        assert_eq!(real.client(peer, &spoofed[..2]), None);
        let fwd = t.reading(Some("forwarded".parse().unwrap()));
        assert_eq!(fwd.client(peer, &spoofed[..]), ip("198.51.100.8"));
        assert!("X-Client".parse::<ClientIpHeader>().is_err());
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_hop_from_a_trusted_peer() {
        let t = trusted(&["127.0.0.1", "10.0.0.0/8"]);
        let from = |peer: &str, headers: &[(&str, &str)]| t.client(peer.parse().ok(), headers);
        let xff = |v| [("X-Forwarded-For", v)];
        // From a trusted peer.
        assert_eq!(from("127.0.0.1", &xff("203.0.113.7")), ip("203.0.113.7"));
        assert_eq!(
            from("127.0.0.1", &xff("6.6.6.6, 203.0.113.7, 10.0.0.2")),
            ip("203.0.113.7")
        );
        assert_eq!(
            from("127.0.0.1", &xff("10.0.0.3, 10.0.0.2")),
            ip("10.0.0.3")
        );
        assert_eq!(
            from("127.0.0.1", &xff("203.0.113.7:5000")),
            ip("203.0.113.7")
        );
        assert_eq!(
            from("127.0.0.1", &xff("[2001:db8::7]:443")),
            ip("2001:db8::7")
        );
        assert_eq!(from("127.0.0.1", &xff("2001:db8::7")), ip("2001:db8::7"));
        assert_eq!(
            from(
                "127.0.0.1",
                &[
                    ("X-Forwarded-For", "6.6.6.6"),
                    ("X-Forwarded-For", "203.0.113.7")
                ]
            ),
            ip("203.0.113.7")
        );
        // Garbage is not guessed at.
        assert_eq!(from("127.0.0.1", &xff("unknown")), None);
        assert_eq!(from("127.0.0.1", &xff("203.0.113.7, garbage")), None);
        // Forwarded, then X-Real-IP.
        let fwd = |v| [("Forwarded", v)];
        assert_eq!(
            from("127.0.0.1", &fwd("for=203.0.113.7;proto=http")),
            ip("203.0.113.7")
        );
        assert_eq!(
            from("127.0.0.1", &fwd(r#"for="[2001:db8::7]:80", for=10.0.0.2"#)),
            ip("2001:db8::7")
        );
        assert_eq!(from("127.0.0.1", &fwd("for=_hidden")), None);
        assert_eq!(
            from("127.0.0.1", &[("X-Real-IP", "203.0.113.9")]),
            ip("203.0.113.9")
        );
        assert_eq!(
            from(
                "127.0.0.1",
                &[
                    ("X-Real-IP", "203.0.113.9"),
                    ("X-Forwarded-For", "203.0.113.7")
                ]
            ),
            ip("203.0.113.7")
        );
        assert_eq!(from("127.0.0.1", &[]), None);
        // From anyone else, nothing is believed.
        assert_eq!(from("203.0.113.50", &xff("1.2.3.4")), None);
        assert_eq!(from("203.0.113.50", &[("X-Real-IP", "1.2.3.4")]), None);
        assert_eq!(t.client(None, &xff("1.2.3.4")), None);
        // No trusted proxies at all: never.
        assert_eq!(
            Trusted::default().client(ip("127.0.0.1"), &xff("1.2.3.4")),
            None
        );
    }
}
